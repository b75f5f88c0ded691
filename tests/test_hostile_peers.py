"""Consumers and webhooks that are slow, huge, hostile or failing: every call ends within its deadline, no
credential from the config reaches any output, alerts never hold up a pass (issue 22, items 3, 4 and 7).

Real ``rotator`` processes against servers on 127.0.0.1 (the emulator behind the hostile-issuer proxy, key-id
consumers, webhook receivers); in-process only where a single notifier call is measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rotator.config import SlackConfig, WebhookConfig
from rotator.notify import Alert, AlertHub, NotifierError, SlackNotifier, WebhookNotifier, slack_escape
from tests.servers.hostile_issuer import HostileIssuer, replace
from tests.support.consumers import KeyIdConsumer, webhook_receiver
from tests.support.e2e import CHECKOUT, ROTATOR, T0, Harness, at, harness

WEBHOOK_TOKEN = "wh-query-token-3141592653"
HEADER_TOKEN = "hdr-bearer-token-2718281828"
SLACK_SECRET = "XyZslackHookSecret0123456789"
PICKUP_TOKEN = "pickup-token-1618033988"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def proxy(h: Harness) -> Iterator[HostileIssuer]:
    with HostileIssuer(h.url) as p:
        yield p


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Dripping(BaseHTTPRequestHandler):
    """Answers 200 with a 10 KB body announced, sent one byte a second."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "10000")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(10000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1)

    do_GET = do_POST = _answer


class Huge(BaseHTTPRequestHandler):
    """Answers 200 with 100 MiB, chunked (no length to refuse up front)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = b"x" * 65536
        with contextlib.suppress(OSError):
            for _ in range(1600):
                self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = _answer


ALERT = Alert("rotation_failed", "checkout", "rotation of checkout failed: <!channel> <https://evil.example|click>")


# ---- one notifier call: deadline and size -------------------------------------------------------------------


@pytest.mark.parametrize("server", [Dripping, Huge])
def test_a_webhook_that_drips_or_floods_ends_within_its_timeout(server: type[BaseHTTPRequestHandler]) -> None:
    with serving(server) as url:
        n = WebhookNotifier(WebhookConfig(type="webhook", url=url + "/hook", timeout=timedelta(seconds=2)))
        started = time.monotonic()
        with pytest.raises(NotifierError) as err:
            n.send(ALERT, T0)
        took = time.monotonic() - started
    assert took < 2 + 1, f"took {took:.1f}s"
    assert url not in str(err.value)


def test_slack_text_is_escaped_so_it_cannot_ping_or_disguise_links() -> None:
    assert slack_escape("<!channel> & <https://a|b>") == "&lt;!channel&gt; &amp; &lt;https://a|b&gt;"
    with webhook_receiver() as hook:
        SlackNotifier(SlackConfig(type="slack", url=hook.url)).send(ALERT, T0)
        (body,) = hook.wait_for(1)
    assert "<!channel>" not in body["text"]
    assert "&lt;!channel&gt;" in body["text"]
    assert "<https://evil.example|click>" not in body["text"]


def test_the_alert_state_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    from rotator.config import AlertsConfig

    state = tmp_path / "alerts.json"
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    (tmp_path / "alerts.tmp").symlink_to(outside)  # the fixed name the state was saved through before
    hub = AlertHub(AlertsConfig(state_file=str(state)), notifiers=[])
    hub._sent["checkout/rotation_failed"] = T0.isoformat()
    hub._save()
    assert outside.read_text() == "untouched"
    assert json.loads(state.read_text()) == {"checkout/rotation_failed": T0.isoformat()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alerts.json", "alerts.tmp", "outside.txt"]


# ---- real processes: credentials never reach an output -------------------------------------------------------


def _run(h: Harness, cfg: Path, *args: str, env: dict[str, str], now: Any) -> Any:
    from tests.support.e2e import run_rotator

    h.clock.set(now)
    return run_rotator(*args, "--config", str(cfg), cwd=h.work, now=now, env=env)


def test_failing_notifiers_never_show_their_url_or_headers(h: Harness, proxy: HostileIssuer) -> None:
    with webhook_receiver(status=500) as hook, webhook_receiver(status=403) as slack:
        alerts = {
            "notifiers": [
                {
                    "type": "webhook",
                    "url": f"{hook.url}?token={WEBHOOK_TOKEN}",
                    # a token read from the environment with a trailing newline: refused, never quoted
                    "headers": {"Authorization": {"env": "HOOK_TOKEN"}, "X-Other": {"env": "OTHER_TOKEN"}},
                },
                {"type": "slack", "url": f"{slack.url}/services/T000/B000/{SLACK_SECRET}"},
            ]
        }
        cfg = h.write_config([CHECKOUT], url=proxy.url, issuer={"max_attempts": 1}, alerts=alerts)
        proxy.on("POST", "/api-keys", replace(500, b'{"code":"internal","message":"boom"}'))
        r = _run(h, cfg, "once", env={"HOOK_TOKEN": f"Bearer {HEADER_TOKEN}\n", "OTHER_TOKEN": HEADER_TOKEN}, now=T0)
        assert r.returncode == 1, r.explain()
        assert r.events("notifier failed"), r.explain()
        assert len(slack.received) == 1  # the alerts were sent (and failed), so their errors were logged
    out = r.stdout + r.stderr
    for secret in (WEBHOOK_TOKEN, HEADER_TOKEN, SLACK_SECRET):
        assert secret not in out, f"{secret} leaked:\n{out}"
    assert "answered HTTP 403" in out


def test_a_pickup_token_a_consumer_echoes_appears_in_no_output(h: Harness, proxy: HostileIssuer) -> None:
    consumer = KeyIdConsumer(PICKUP_TOKEN)  # it "reports" the token rotator sent it as its key id
    try:
        policy = {
            **CHECKOUT,
            "pickup": [
                {"type": "http", "urls": [consumer.url], "timeout": "2s", "auth_header": {"env": "PICKUP_TOKEN"}}
            ],
        }
        cfg = h.write_config([policy], url=proxy.url)
        env = {"PICKUP_TOKEN": PICKUP_TOKEN}
        runs = [_run(h, cfg, "once", env=env, now=T0), _run(h, cfg, "once", env=env, now=at(40))]
        runs.append(_run(h, cfg, "once", env=env, now=at(50)))
        runs.append(_run(h, cfg, "status", env=env, now=at(50)))
        page = h.root / "status.html"
        runs.append(_run(h, cfg, "status", "--html", str(page), env=env, now=at(50)))
    finally:
        consumer.stop()
    out = "".join(r.stdout + r.stderr for r in runs) + (page.read_text() if page.exists() else "")
    assert "reports [REDACTED]" in out, out  # the lagging consumer was reported, its echo scrubbed
    assert PICKUP_TOKEN not in out


# ---- real processes: a hung webhook never delays the next pass -----------------------------------------------


def test_a_hung_webhook_does_not_hold_up_the_daemons_passes(h: Harness, proxy: HostileIssuer) -> None:
    with webhook_receiver() as hook:
        hook.delay = 8.0  # answers after 8 s (its timeout is 10 s)
        alerts = {"notifiers": [{"type": "webhook", "url": hook.url, "timeout": "10s"}]}
        cfg = h.write_config(
            [CHECKOUT], url=proxy.url, issuer={"max_attempts": 1}, alerts=alerts, interval="1s", pass_timeout="5s"
        )
        proxy.on("POST", "/api-keys", replace(500, b'{"code":"internal","message":"boom"}'))
        h.clock.set(T0)
        env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
        proc = subprocess.Popen(
            [ROTATOR, "run", "--config", str(cfg)], cwd=h.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            time.sleep(6)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
    passes = err.decode().count('"pass finished"')
    # with the alert sent on the pass's own thread the first pass held the lock for 8 s: one pass in 6 s
    assert passes >= 3, err.decode()[-3000:]
    assert hook.received, "the alert was sent"

