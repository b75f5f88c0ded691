"""No minted key ever reaches a log line, an exception's text or a ``repr``.

Full rotations of three policies run in this process (logging configured by rotator itself, JSON into a
buffer, at debug level) and once more as a subprocess: ``checkout`` (json) and ``reporting`` (env + key) rotate
and revoke normally; ``broken`` writes to a target whose ``versions`` directory is a plain file, so every
publish fails. Afterwards every plaintext is collected (every stored version's key, the emulator's bootstrap
key, a revoked management key) and searched for in everything captured.
"""

from __future__ import annotations

import io
import json
import logging
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import structlog

from rotator import config as config_mod
from rotator import keys as keyfmt
from rotator.engine import Engine
from rotator.errors import RotatorError
from rotator.issuers.momento import MomentoIssuer
from rotator.model import SecretText
from rotator.observability import REDACTED, configure_logging, redact_text
from rotator.runtime.app import build
from rotator.stores.base import TargetRef
from rotator.stores.file import FileStore
from tests.support.e2e import (
    CHECKOUT,
    ENDPOINT,
    REPORTING,
    SECRETS,
    T0,
    Run,
    free_port,
    harness,
    stored_plaintexts,
)

BROKEN: dict[str, Any] = {
    **CHECKOUT,
    "name": "broken",
    "description": "a target that cannot be written",
    "targets": [{"store": "local", "secret": "broken/momento"}],
}
# anything shaped like a JWT (every key the emulator mints is one)
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class CorruptingStore(FileStore):
    """A file store whose read-back returns something other than what was written (-> StoreIntegrityError)."""

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        return SecretText(super().read(ref, key_id).reveal() + " ")


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


@dataclass
class Captured:
    logs: str = ""
    subprocess_output: str = ""
    exceptions: list[str] = field(default_factory=list)
    reprs: list[str] = field(default_factory=list)
    plaintexts: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    out = Captured()
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    buf = io.StringIO()
    try:
        with harness(tmp_path_factory.mktemp("no-leak")) as h:
            # retired values are kept (destroy_after), so that every key minted is known to look for below
            local_store = {"type": "file", "path": str(h.secrets), "destroy_after": "30d"}
            cfg_path = h.write_config([CHECKOUT, REPORTING, BROKEN], stores={"local": local_store})
            for d in (h.secrets, h.secrets / "broken", h.secrets / "broken" / "momento"):
                d.mkdir(mode=0o700)  # private, as the file store requires of its directories
            (h.secrets / "broken" / "momento" / "versions").write_text("not a directory\n")
            cfg = config_mod.load(cfg_path)
            configure_logging("debug", stream=buf, json=True)
            now = [T0]

            with build(cfg, clock=lambda: now[0]) as app:
                # create, rotate, revoke after each grace; then status-like reads of every target
                for t in (T0, T0 + timedelta(minutes=40), T0 + timedelta(minutes=47), T0 + timedelta(minutes=51)):
                    now[0] = t
                    h.clock.set(t)
                    report = app.engine.run_pass()
                    status = app.engine.run_pass(dry_run=True, read_targets=True)
                    for rep in (report, status):
                        out.reprs += [repr(rep), json.dumps(rep.to_json(), default=str)]
                        for pr in rep.policies:
                            out.reprs += [repr(pr.plan), repr(pr.targets), repr(pr.keys), repr(pr.results)]
                            out.exceptions += [r.error for r in pr.results if r.error]
                            out.exceptions += [pr.error] if pr.error else []
                            out.exceptions += list(pr.target_errors.values())
                out.reprs += [repr(app), repr(vars(app.engine)), repr(app.issuer), repr(app.stores), repr(cfg)]
                local = app.stores["local"]
                for secret in SECRETS:
                    policy = "checkout" if secret.startswith("checkout") else "reporting"
                    out.reprs.append(repr(local.inspect(TargetRef("local", secret, policy))))
                    # a retired version cannot be read: StoreNotFound
                    old = h.revoked_ids(policy)[0]
                    with pytest.raises(RotatorError) as info:
                        local.read(TargetRef("local", secret, policy), old)
                    out.exceptions.append(_exception_text(info.value))

                # a read-back that does not match: StoreIntegrityError, through the engine
                corrupt = CorruptingStore("local", h.secrets, clock=lambda: now[0])
                engine = Engine(cfg, app.issuer, {"local": corrupt}, endpoint=ENDPOINT, clock=lambda: now[0])
                rep = engine.run_pass(only=["checkout"], force=["checkout"])
                errors = [r.error for pr in rep.policies for r in pr.results if r.error]
                assert any("StoreIntegrityError" in e for e in errors), rep.to_json()
                out.exceptions += errors
                out.reprs += [repr(rep), json.dumps(rep.to_json(), default=str)]

            # a refused (revoked) management key and an unreachable issuer, seen by the client
            second = h.emulator.mint("owner", "second owner")
            with MomentoIssuer(h.url, h.emulator.bootstrap_key) as admin:
                admin.revoke_key(second.info.key_id)
            out.plaintexts.add(second.api_key.reveal())
            for url in (h.url, f"http://127.0.0.1:{free_port()}"):
                with MomentoIssuer(url, second.api_key, max_attempts=1, timeout=1) as client:
                    with pytest.raises(RotatorError) as info:
                        client.list_keys()
                    out.exceptions.append(_exception_text(info.value))
                    out.reprs.append(repr(client))
            # misuse of keys: Momento's wording, never the key
            for call in (
                lambda: keyfmt.require_endpoint(second.api_key, None),
                lambda: keyfmt.require_endpoint(second.api_key, ENDPOINT, expect="v1"),
                lambda: keyfmt.parse_api_key("json", SecretText(second.api_key.reveal() + "}")),
            ):
                with pytest.raises(RotatorError) as info:
                    call()
                out.exceptions.append(_exception_text(info.value))

            # the same as a subprocess: a rotation is due for checkout and reporting, broken fails again
            r: Run = h.run("-c", str(cfg_path), "--log-level", "debug", "once", now=T0 + timedelta(minutes=95))
            assert r.returncode == 1, r.explain()  # broken's publish failed
            assert r.summary()["counts"]["created"] >= 2, r.explain()
            out.subprocess_output = r.stdout + r.stderr

            out.plaintexts |= stored_plaintexts(h.secrets)
            out.plaintexts.add(h.bootstrap_key)
    finally:
        structlog.configure(**saved_structlog)
        root.handlers, root.level = saved_root[0], saved_root[1]
    out.logs = buf.getvalue()
    yield out


def _leaks(texts: list[str], plaintexts: set[str]) -> list[str]:
    found = []
    for i, text in enumerate(texts):
        for key in plaintexts:
            if key in text:
                found.append(f"text #{i} holds a key: {text[:200]!r}")
        if JWT_RE.search(text):
            found.append(f"text #{i} holds a JWT-shaped string: {text[:200]!r}")
    return found


def test_the_run_minted_many_keys(captured: Captured) -> None:
    # not vacuous: 4 checkout keys (+1 forced), 3 reporting keys, the bootstrap key, a revoked owner key
    assert len(captured.plaintexts) >= 9
    assert all(JWT_RE.fullmatch(k) for k in captured.plaintexts)


def test_no_key_in_log_lines(captured: Captured) -> None:
    lines = captured.logs.splitlines()
    events = {json.loads(ln).get("event") for ln in lines}
    assert {"created key", "published key", "revoked key", "publish failed"} <= events
    assert _leaks(lines, captured.plaintexts) == []


def test_no_key_in_exception_texts(captured: Captured) -> None:
    kinds = " ".join(captured.exceptions)
    for name in ("StoreError", "StoreNotFound", "StoreIntegrityError", "IssuerAuthError", "IssuerUnavailable",
                 "KeyFormatError"):
        assert name in kinds, name
    assert _leaks(captured.exceptions, captured.plaintexts) == []


def test_no_key_in_reprs_of_reports_plans_and_states(captured: Captured) -> None:
    assert len(captured.reprs) > 20
    assert _leaks(captured.reprs, captured.plaintexts) == []


def test_no_key_in_subprocess_output(captured: Captured) -> None:
    assert '"event": "created key"' in captured.subprocess_output
    assert _leaks([captured.subprocess_output], captured.plaintexts) == []


def test_log_lines_bind_policy_target_key_id_and_action(captured: Captured) -> None:
    lines = [json.loads(ln) for ln in captured.logs.splitlines()]
    published = [e for e in lines if e.get("event") == "published key"]
    assert published
    for e in published:
        assert {"policy", "target", "key_id", "action", "level", "timestamp"} <= set(e), e
    revoked = [e for e in lines if e.get("event") == "revoked key"]
    assert revoked
    for e in revoked:
        assert {"policy", "key_id", "action"} <= set(e), e
        assert e["action"] == "revoke"


# ---- the redaction processor: the last line of defence ---------------------------------------------------


def test_redact_text_scrubs_a_jwt() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJ0IjoiZyIsImp0aSI6ImsifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert redact_text(f"key={token} end") == f"key={REDACTED} end"


def test_redact_text_scrubs_a_registered_secret_text() -> None:
    value = "plain-secret-without-any-shape-42"
    secret = SecretText(value)  # registered while alive
    assert redact_text(f"oops: {value}!") == f"oops: {REDACTED}!"
    assert secret.reveal() == value  # keep it alive until here


def test_redact_text_scrubs_a_v1_key() -> None:
    import base64

    v1 = base64.b64encode(json.dumps({"endpoint": ENDPOINT, "api_key": "x" * 40}).encode()).decode()
    assert v1 not in redact_text(f"key {v1}")


@contextmanager
def _logging_saved() -> Iterator[None]:
    """configure_logging may be called inside: structlog's config and the root logger are put back after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers, root.level = saved_root[0], saved_root[1]


def test_the_redaction_processor_scrubs_what_rotator_logs_by_mistake() -> None:
    buf = io.StringIO()
    value = "another-plain-secret-value-0042"
    secret = SecretText(value)
    with _logging_saved():
        configure_logging("info", stream=buf, json=True)
        structlog.get_logger("rotator").info("oops", leaked=value, nested={"k": [value]}, error=f"failed: {value}")
        logging.getLogger("httpx").warning("header was %s", value)
    text = buf.getvalue()
    assert value not in text
    assert text.count(REDACTED) == 4
    assert secret.reveal() == value


def test_a_library_logging_an_exception_or_a_stack_goes_through_the_redactor_too() -> None:
    """A library's stdlib record carries more than its message: the traceback of ``log.exception`` (the
    exception's text may hold what a hostile peer sent back, a key included) and ``stack_info``. The handler
    formats those after the filters ran, so the redactor must see them before."""
    buf = io.StringIO()
    value = "yet-another-plain-secret-0043"
    secret = SecretText(value)
    with _logging_saved():
        configure_logging("info", stream=buf, json=True)
        try:
            raise ValueError(f"peer answered {value}")
        except ValueError:
            logging.getLogger("urllib3.connectionpool").exception("request failed")
        logging.getLogger("azure.core").warning("retrying", stack_info=True)
    text = buf.getvalue()
    assert "request failed" in text and "ValueError: peer answered " + REDACTED in text, text
    assert "retrying" in text and "Stack (most recent call last)" in text, text
    assert value not in text
    assert secret.reveal() == value


def test_logs_are_json_lines_off_a_terminal_and_readable_on_one() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe, tty = io.StringIO(), Terminal()
    with _logging_saved():
        configure_logging("info", stream=pipe)
        structlog.get_logger("rotator").info("hello", policy="p")
        configure_logging("info", stream=tty)
        structlog.get_logger("rotator").info("hello", policy="p")
    assert json.loads(pipe.getvalue())["policy"] == "p"
    with pytest.raises(ValueError):
        json.loads(tty.getvalue())
    assert "hello" in tty.getvalue()
    assert "policy=p" in tty.getvalue()


# ---- credentials from the config: pinned for the life of the process (issue 22) ------------------------------
# (the end-to-end failure scenarios, with real processes, are in tests/test_hostile_peers.py)


def test_a_pinned_credential_is_scrubbed_after_its_last_reference_is_gone() -> None:
    import gc

    from rotator.model import SECRETS as REGISTRY

    token = "pinned-" + "c0ffee" * 4
    held = SecretText(token)
    del held
    gc.collect()
    assert token in redact_text(f"x {token} y")  # a weakly held plaintext is gone with its SecretText
    REGISTRY.pin(token)
    assert redact_text(f"x {token} y") == f"x {REDACTED} y"


def test_user_info_and_query_values_of_a_url_are_pinned() -> None:
    from rotator.model import SECRETS as REGISTRY

    REGISTRY.pin_url("https://svc-user:s3cret-password-42@hooks.example.com/x?token=query-token-1234567&a=b")
    text = redact_text("failed: svc-user:s3cret-password-42 and query-token-1234567")
    assert "s3cret-password-42" not in text and "query-token-1234567" not in text


def test_everything_the_cli_prints_passes_the_redactor() -> None:
    from rotator.model import SECRETS as REGISTRY
    from rotator.runtime.cli import RedactingStream

    REGISTRY.pin("printed-credential-0123456789")
    stream = io.StringIO()
    RedactingStream(stream).write('{"summary": "printed-credential-0123456789"}\n')
    assert "printed-credential" not in stream.getvalue()
    assert REDACTED in stream.getvalue()
