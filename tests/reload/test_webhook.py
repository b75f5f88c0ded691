"""The ``webhook`` reload target against real receivers on 127.0.0.1 (HTTP, and HTTPS with a throwaway CA).

Every receiver checks each request with ``standardwebhooks.Webhook(secret).verify(body, headers)``: the
signature is verified by the library, independently of how the target signed it. Hostile receivers (one
that never answers, one that drips its headers or its body a byte at a time, one whose answer never ends)
must end in a ReloadError within the timeout.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import io
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from rotator.errors import ConfigError, ReloadError
from rotator.observability import API_CALLS, REDACTED, configure_logging, redact_text
from rotator.redaction import JWT_RE
from rotator.reload import base
from rotator.reload.webhook import (
    ATTEMPTS,
    EVENT_TYPE,
    MAX_ANSWER,
    ReloadConfig,
    WebhookTarget,
    event_body,
    message_id,
    open_target,
)
from tests.servers.loopback import serve, shut

ENV = "ROTATOR_TEST_RELOAD_WEBHOOK_SECRET"
POLICY = "checkout"
KEY, OTHER_KEY = "k0002", "k0003"
PUBLISHED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EXPIRES = PUBLISHED + timedelta(days=30)
#: what a receiver puts in its error answers: it must never reach a message
BODY_TEXT = "RECEIVER-BODY-TEXT-do-not-quote"


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


# ---- the receiver -------------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    #: the verified payload, or the WebhookVerificationError the library raised
    verified: Any


@dataclass
class Receiver:
    """A Standard Webhooks receiver. ``answers`` are used one per request (the last one repeats): an HTTP
    status, or a hostile behaviour: ``hang``, ``drip-body``, ``drip-body-close``,
    ``drip-headers``, ``huge-length``, ``endless``."""

    secret: str
    url: str = ""
    answers: list[Any] = field(default_factory=lambda: [200])
    retry_after: str | None = None
    requests: list[Received] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self) -> Any:
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    @property
    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the other test servers (and most receivers) answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verified: Any = Webhook(rx.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                verified = exc
            with rx.lock:
                rx.requests.append(Received(headers, body, verified))
            answer = rx.next_answer()
            with contextlib.suppress(OSError):  # the client gave up (a cap or a deadline): the hostile answers
                self._answer(answer)

        def _answer(self, answer: Any) -> None:
            if isinstance(answer, int):
                text = f"{BODY_TEXT} status {answer}".encode()
                self.send_response(answer)
                if 300 <= answer < 400:
                    self.send_header("Location", "https://elsewhere.example/hook")
                if rx.retry_after is not None:
                    self.send_header("Retry-After", rx.retry_after)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            elif answer == "hang":
                rx.stop.wait(30)
            elif answer == "drip-headers":
                for c in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                    if rx.stop.wait(0.1):
                        return
                    self.wfile.write(bytes([c]))
                    self.wfile.flush()
            elif answer in ("drip-body", "drip-body-close"):
                self.send_response(200)
                self.send_header("Content-Length", "30")  # 3 s of body: three times the timeout
                if answer == "drip-body-close":
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                for _ in range(30):
                    if rx.stop.wait(0.1):
                        return
                    self.wfile.write(BODY_TEXT[:1].encode())
                    self.wfile.flush()
            elif answer == "huge-length":
                self.send_response(200)
                self.send_header("Content-Length", str(100 * 1024 * 1024))
                self.end_headers()
                chunk = BODY_TEXT.encode() * 4096
                while not rx.stop.is_set():
                    self.wfile.write(chunk)
            elif answer == "endless":
                # HTTP/1.0, no Content-Length: the body ends only when the connection does (never, here)
                self.send_response(200)
                self.end_headers()
                chunk = BODY_TEXT.encode() * 4096
                while not rx.stop.is_set():
                    self.wfile.write(chunk)
            else:  # pragma: no cover - a typo in a test
                raise AssertionError(answer)

    return Handler


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = _new_secret()
    monkeypatch.setenv(ENV, value)
    return value


@pytest.fixture
def receiver(secret: str) -> Iterator[Receiver]:
    rx = Receiver(secret)
    httpd, thread = serve(_handler(rx), "webhook-receiver")
    rx.url = f"http://127.0.0.1:{httpd.server_address[1]}/hooks/momento"
    yield rx
    rx.stop.set()
    shut(httpd, thread)


MakeTarget = Callable[..., WebhookTarget]


@pytest.fixture
def make_target() -> Iterator[MakeTarget]:
    opened: list[WebhookTarget] = []

    def make(url: str, *, policy: str = POLICY, **cfg: Any) -> WebhookTarget:
        config = ReloadConfig.model_validate({"type": "webhook", "url": url, "secret": {"env": ENV}, **cfg})
        target = base.open_target(config, base.ReloadContext(policy=policy))
        assert isinstance(target, WebhookTarget)
        opened.append(target)
        return target

    yield make
    for t in opened:
        t.close()


@pytest.fixture
def calls() -> Iterator[list[tuple[str, str, str]]]:
    seen: list[tuple[str, str, str]] = []

    def listener(service: str, operation: str, status: str) -> None:
        if service == "webhook":
            seen.append((service, operation, status))

    API_CALLS.add_listener(listener)
    yield seen
    API_CALLS.remove_listener(listener)


def _reload(target: WebhookTarget, key_id: str = KEY) -> None:
    target.reload(target.unit, key_id, EXPIRES, PUBLISHED)


def _failure(target: WebhookTarget, key_id: str = KEY) -> ReloadError:
    with pytest.raises(ReloadError) as info:
        _reload(target, key_id)
    return info.value


def _assert_clean(exc: BaseException, secret: str) -> None:
    text = _exception_text(exc)
    assert secret not in text
    assert secret.removeprefix("whsec_") not in text
    assert BODY_TEXT not in text
    assert "?" not in str(exc)  # the URL is shown without its query


# ---- the contract -------------------------------------------------------------------------------------------


def test_the_target_declares_it_cannot_be_observed(receiver: Receiver, make_target: MakeTarget) -> None:
    t = make_target(receiver.url)
    assert isinstance(t, base.ReloadTarget)
    assert t.type == "webhook"
    assert t.capabilities == base.ReloadCapabilities(observable=False, rollout=False)
    assert t.name == f"webhook:{receiver.url.split('/')[2]}"


def test_observe_reports_the_unit_pending_without_any_request(receiver: Receiver, make_target: MakeTarget) -> None:
    t = make_target(receiver.url + "?token=observe-query-token-1")
    [status] = t.observe(KEY, PUBLISHED)
    assert status.state == "pending"
    assert status.unit == receiver.url  # no query
    assert status.key_id == KEY
    assert status.type == "webhook"
    assert status.target == t.name
    assert (status.observable, status.rollout) == (False, False)
    assert receiver.requests == []


def test_a_2xx_answer_is_success_and_the_library_verifies_the_signature(
    receiver: Receiver, make_target: MakeTarget, calls: list[tuple[str, str, str]]
) -> None:
    before = int(time.time())
    _reload(make_target(receiver.url))
    [req] = receiver.requests
    assert not isinstance(req.verified, Exception), req.verified
    assert req.verified == {
        "type": EVENT_TYPE,
        "timestamp": "2024-05-01T12:00:00Z",
        "data": {
            "policy": POLICY,
            "key_id": KEY,
            "expires_at": "2024-05-31T12:00:00Z",
            "published_at": "2024-05-01T12:00:00Z",
        },
    }
    assert req.headers["content-type"] == "application/json"
    assert req.headers["webhook-id"].startswith("msg_")
    assert "." not in req.headers["webhook-id"]
    assert before <= int(req.headers["webhook-timestamp"]) <= int(time.time())  # the send time
    assert req.headers["webhook-signature"].startswith("v1,")
    # and by hand, as the spec words it: base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))
    key = base64.b64decode(receiver.secret.removeprefix("whsec_"))
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body
    assert (
        req.headers["webhook-signature"] == "v1," + base64.b64encode(hmac.new(key, signed, "sha256").digest()).decode()
    )
    assert calls == [("webhook", "post", "200")]


@pytest.mark.parametrize("status", [201, 202, 204, 299])
def test_every_2xx_is_success(status: int, receiver: Receiver, make_target: MakeTarget) -> None:
    receiver.answers = [status]
    _reload(make_target(receiver.url))
    assert len(receiver.requests) == 1


def test_a_never_expiring_key_sends_null(receiver: Receiver, make_target: MakeTarget) -> None:
    t = make_target(receiver.url)
    t.reload(t.unit, KEY, None, PUBLISHED)
    assert receiver.requests[0].verified["data"]["expires_at"] is None


def test_a_wrong_secret_fails_the_receivers_verification(
    receiver: Receiver, make_target: MakeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver's check is real: a target with another secret is refused by the library."""
    monkeypatch.setenv(ENV, _new_secret())
    _reload(make_target(receiver.url))
    assert isinstance(receiver.requests[0].verified, WebhookVerificationError)


def test_a_resend_has_the_same_id_and_another_key_or_policy_another(
    receiver: Receiver, make_target: MakeTarget
) -> None:
    t = make_target(receiver.url)
    _reload(t)
    _reload(t)
    _reload(t, OTHER_KEY)
    _reload(make_target(receiver.url, policy="reporting"))
    _reload(make_target(receiver.url + "/other"))
    ids = receiver.ids
    assert ids[0] == ids[1]
    assert receiver.requests[0].body == receiver.requests[1].body  # the event is the same; only the send differs
    assert len(set(ids[1:])) == 4
    assert all(not isinstance(r.verified, Exception) for r in receiver.requests)
    assert ids[0] == message_id(POLICY, KEY, receiver.url)


def test_the_body_holds_no_key_material(receiver: Receiver, make_target: MakeTarget) -> None:
    _reload(make_target(receiver.url))
    body = receiver.requests[0].body.decode()
    assert not JWT_RE.search(body)
    assert "eyJ" not in body
    # even a key id shaped like a key could not carry one out
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4eHh4eCJ9.c2lnbmF0dXJlc2ln"
    assert jwt_like not in event_body(POLICY, jwt_like, None, PUBLISHED).decode()


def test_a_wrong_unit_is_refused(receiver: Receiver, make_target: MakeTarget) -> None:
    t = make_target(receiver.url)
    with pytest.raises(ReloadError):
        t.reload("https://another.example/hook", KEY, EXPIRES, PUBLISHED)
    assert receiver.requests == []


# ---- failures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 400, 401, 403, 404, 410, 422])
def test_a_non_2xx_answer_fails_at_once_naming_the_status(
    status: int, receiver: Receiver, make_target: MakeTarget, secret: str, calls: list[tuple[str, str, str]]
) -> None:
    receiver.answers = [status]
    t = make_target(receiver.url + "?token=query-credential-value")
    exc = _failure(t)
    assert f"HTTP {status}" in str(exc)
    assert receiver.url in str(exc)
    assert "query-credential-value" not in _exception_text(exc)
    assert exc.unit == receiver.url
    assert exc.target == t.name
    _assert_clean(exc, secret)
    assert len(receiver.requests) == 1  # not retried (a 3xx is not followed)
    assert calls == [("webhook", "post", str(status))]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_and_429_are_retried_a_bounded_number_of_times(
    status: int, receiver: Receiver, make_target: MakeTarget, secret: str, calls: list[tuple[str, str, str]]
) -> None:
    receiver.answers = [status]
    started = time.monotonic()
    exc = _failure(make_target(receiver.url))
    assert time.monotonic() - started < 5
    assert f"HTTP {status} ({ATTEMPTS} attempts)" in str(exc)
    _assert_clean(exc, secret)
    assert len(receiver.requests) == ATTEMPTS
    assert len(set(receiver.ids)) == 1  # every attempt is the same message
    assert all(not isinstance(r.verified, Exception) for r in receiver.requests)  # each one signed afresh
    assert calls == [("webhook", "post", str(status))] * ATTEMPTS


def test_a_retry_that_gets_a_2xx_is_success(receiver: Receiver, make_target: MakeTarget) -> None:
    receiver.answers = [503, 502, 200]
    receiver.retry_after = "0"
    _reload(make_target(receiver.url))
    assert len(receiver.requests) == 3


def test_a_retry_after_past_the_budget_is_not_waited_for(
    receiver: Receiver, make_target: MakeTarget, secret: str
) -> None:
    receiver.answers = [503]
    receiver.retry_after = "5"
    started = time.monotonic()
    exc = _failure(make_target(receiver.url, timeout=1))
    assert time.monotonic() - started < 1.5
    assert "HTTP 503" in str(exc)
    assert len(receiver.requests) == 1
    _assert_clean(exc, secret)


def test_a_refused_connection_fails_naming_the_error_class(
    make_target: MakeTarget, secret: str, calls: list[tuple[str, str, str]]
) -> None:
    url = f"http://127.0.0.1:{_free_port()}/hook"
    started = time.monotonic()
    exc = _failure(make_target(url))
    assert time.monotonic() - started < 5
    assert "ConnectError" in str(exc)
    assert url in str(exc)
    _assert_clean(exc, secret)
    assert calls == [("webhook", "post", "ConnectError")] * ATTEMPTS


@pytest.mark.parametrize(
    "answer",
    [
        "hang",
        "drip-headers",
        "drip-body",
        "drip-body-close",  # was a rotator.httpio bug: http.client drops conn.sock after the headers
    ],
)
def test_a_hostile_receiver_ends_within_the_timeout(
    answer: str, receiver: Receiver, make_target: MakeTarget, secret: str, calls: list[tuple[str, str, str]]
) -> None:
    receiver.answers = [answer]
    started = time.monotonic()
    exc = _failure(make_target(receiver.url, timeout=1))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0, elapsed
    assert "no answer within 1s" in str(exc)
    _assert_clean(exc, secret)
    assert len(receiver.requests) == 1  # the budget is spent: no retry
    assert calls == [("webhook", "post", "DeadlineExceeded")]


@pytest.mark.parametrize("answer", ["huge-length", "endless"])
def test_an_answer_over_the_cap_is_refused_unread(
    answer: str, receiver: Receiver, make_target: MakeTarget, secret: str, calls: list[tuple[str, str, str]]
) -> None:
    """``endless`` never ends: reading it to its end would run into the deadline instead of the cap."""
    receiver.answers = [answer]
    started = time.monotonic()
    exc = _failure(make_target(receiver.url, timeout=10))
    assert time.monotonic() - started < 5
    assert f"more than {MAX_ANSWER} bytes" in str(exc)
    _assert_clean(exc, secret)
    assert calls == [("webhook", "post", "BodyTooLarge")]


# ---- TLS ------------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_receiver(secret: str) -> Iterator[tuple[Receiver, str]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    rx = Receiver(secret)
    httpd, thread = serve(_handler(rx), "webhook-receiver-tls", tls=ctx)
    rx.url = f"https://127.0.0.1:{httpd.server_address[1]}/hooks/momento"
    with tempfile.TemporaryDirectory(prefix="webhook-ca-") as d:
        ca_file = Path(d) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        yield rx, str(ca_file)
    rx.stop.set()
    shut(httpd, thread)


def test_https_with_a_ca_bundle(tls_receiver: tuple[Receiver, str], make_target: MakeTarget) -> None:
    rx, ca_file = tls_receiver
    _reload(make_target(rx.url, ca_bundle=ca_file))
    assert not isinstance(rx.requests[0].verified, Exception)


def test_https_to_an_untrusted_certificate_fails_without_retry(
    tls_receiver: tuple[Receiver, str], make_target: MakeTarget, secret: str
) -> None:
    rx, _ = tls_receiver
    exc = _failure(make_target(rx.url))
    assert "TLSError" in str(exc)
    assert "attempts" not in str(exc)
    assert rx.requests == []
    _assert_clean(exc, secret)


# ---- no leak -------------------------------------------------------------------------------------------------


def test_the_secret_never_reaches_a_log_an_exception_or_a_repr(
    receiver: Receiver, make_target: MakeTarget, secret: str
) -> None:
    saved = structlog.get_config()
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    buf = io.StringIO()
    texts: list[str] = []
    try:
        configure_logging("debug", stream=buf, json=True)
        t = make_target(receiver.url)
        _reload(t)
        receiver.answers = [503, 500, 404]  # two retries logged, then a failure
        with pytest.raises(ReloadError) as info:
            _reload(t)
        texts.append(_exception_text(info.value))
        structlog.get_logger("rotator").error("reload failed", error=str(info.value), target=repr(t))
        texts += [repr(t), repr(vars(t)), repr(t.config), str(t.observe(KEY, PUBLISHED))]
    finally:
        structlog.configure(**saved)
        root.handlers, root.level = saved_root[0], saved_root[1]
    logs = buf.getvalue()
    assert "retrying" in logs  # the retries were logged
    for text in [logs, *texts]:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
        assert BODY_TEXT not in text
    # pinned: whatever quotes it later is scrubbed
    assert redact_text(f"x {secret} y") == f"x {REDACTED} y"
    assert redact_text(secret.removeprefix("whsec_")) == REDACTED


# ---- config --------------------------------------------------------------------------------------------------


def _config(**cfg: Any) -> ReloadConfig:
    return ReloadConfig.model_validate({"type": "webhook", "secret": {"env": ENV}, **cfg})


def _locs(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/momento",
        "http://10.0.0.1/hook",
        "ftp://127.0.0.1/hook",
        "hooks.example.com/hook",
        "https:///nohost",
        "https://hooks.example.com/hook#frag",
        "https://hooks.example.com/ho ok",
        "https://hooks.example.com:99999/hook",
    ],
)
def test_a_bad_url_names_the_field(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        _config(url=url)
    assert _locs(info.value) == [("url",)]


def test_plain_http_to_a_remote_host_is_refused_and_its_credentials_are_pinned() -> None:
    with pytest.raises(ValidationError) as info:
        _config(url="http://user:url-password-0042@hooks.example.com/momento?sig=url-query-token-0042")
    assert "plain http" in str(info.value)
    scrubbed = redact_text(str(info.value))
    assert "url-password-0042" not in scrubbed
    assert "url-query-token-0042" not in scrubbed


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]:9/hook"])
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert _config(url=url).url == url


def test_unknown_settings_and_bad_env_names_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        _config(url="https://hooks.example.com/h", headers={"X": "y"})
    assert _locs(info.value) == [("headers",)]
    with pytest.raises(ValidationError) as info:
        ReloadConfig.model_validate({"type": "webhook", "url": "https://h.example/h", "secret": {"env": "NOT A NAME"}})
    assert _locs(info.value) == [("secret", "env")]
    with pytest.raises(ValidationError) as info:
        ReloadConfig.model_validate({"type": "webhook", "url": "https://h.example/h", "secret": "whsec_literal"})
    assert _locs(info.value) == [("secret",)]
    with pytest.raises(ValidationError) as info:
        _config(url="https://hooks.example.com/h", timeout=0)
    assert _locs(info.value) == [("timeout",)]
    assert _config(url="https://hooks.example.com/h", timeout="500ms").timeout == 0.5


def test_a_missing_secret_names_the_field_and_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError) as info:
        open_target(_config(url="https://hooks.example.com/h"), base.ReloadContext(policy=POLICY))
    assert "secret.env" in str(info.value)
    assert ENV in str(info.value)
    assert POLICY in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "   ",
        base64.b64encode(os.urandom(32)).decode(),  # no whsec_ prefix
        "whsec_" + "not base64 at all!!",
        "whsec_" + base64.b64encode(os.urandom(8)).decode(),  # too short: the spec asks for 24 to 64 bytes
        "whsec_" + base64.b64encode(os.urandom(100)).decode(),  # too long
        "whsec_",
    ],
)
def test_a_malformed_secret_names_the_field_and_the_env_var_never_the_value(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ConfigError) as info:
        open_target(_config(url="https://hooks.example.com/h"), base.ReloadContext(policy=POLICY))
    text = _exception_text(info.value)
    assert "secret.env" in text
    assert ENV in text
    if value.strip() and value.strip() != "whsec_":
        assert value not in text
        assert value.removeprefix("whsec_") not in text


def test_an_unpadded_secret_is_accepted(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    raw = os.urandom(25)  # 25 bytes: base64 with one '=' of padding
    monkeypatch.setenv(ENV, "whsec_" + base64.b64encode(raw).decode().rstrip("="))
    receiver.secret = "whsec_" + base64.b64encode(raw).decode()
    t = open_target(_config(url=receiver.url), base.ReloadContext(policy=POLICY))
    try:
        _reload(t)
    finally:
        t.close()
    assert not isinstance(receiver.requests[0].verified, Exception)


def test_a_ca_bundle_that_cannot_be_loaded_names_the_field(secret: str, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    for path in (bad, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError) as info:
            open_target(_config(url="https://hooks.example.com/h", ca_bundle=str(path)), base.ReloadContext(POLICY))
        assert "ca_bundle" in str(info.value)


def test_the_registry_opens_a_webhook_target(secret: str) -> None:
    cfg = base.backend("webhook").ReloadConfig.model_validate(
        {
            "type": "webhook",
            "url": "https://user:pw-in-url-0042@hooks.example.com/m?sig=q-token-0042",
            "secret": {"env": ENV},
        }
    )
    t = base.open_target(cfg, base.ReloadContext(policy=POLICY))
    try:
        assert t.name == "webhook:hooks.example.com"
        [status] = t.observe(KEY, PUBLISHED)
        assert status.unit == "https://hooks.example.com/m"
        assert "0042" not in repr(t) + str(status)
        assert json.dumps(status.id)  # a plain label
    finally:
        t.close()
