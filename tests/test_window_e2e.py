"""Change windows end to end (issue 24): real ``rotator`` processes, the Momento emulator over HTTP, the file
store, a fake clock (``--now``).

- A key due on Saturday rotates at Monday's window opening, not before; ``plan`` and ``status`` say it waits
  and until when; the old key is revoked after grace, outside the window (consumers do not see a revoke).
- A key that would lapse before the next opening (a freeze covers Monday's window) rotates on Saturday, with
  the warning, the ``outside_window`` alert and the note.
- The daemon wakes at the window opening (not at its next interval) and rotates then.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.servers.aws_rollouts import AwsRollouts
from tests.servers.moto_server import TEST_ENV, MotoServer, moto, moto_server  # noqa: F401
from tests.support.consumers import WebhookReceiver, webhook_receiver
from tests.support.e2e import ROTATOR, Harness, free_port, harness

pytestmark = pytest.mark.slow

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
SAT = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)  # a Saturday
MON_OPEN = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)  # Monday 09:00 UTC: the window opens
NEXT_MON_OPEN = MON_OPEN + timedelta(days=7)
WINDOW = {"cron": "0 9 * * MON", "duration": "4h", "timezone": "UTC"}
#: the first key: due (22 days after it was made, less clock_skew) on Saturday at 13:59, expires Sunday week
FIRST = SAT - timedelta(days=22) + timedelta(hours=2)


def checkout(**fields: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": "checkout",
        "role": "operator",
        "lifetime": "30d",
        "rotate_before": "8d",
        "grace": "1h",
        "orphan_after": "10m",
        "window": WINDOW,
        "targets": [{"store": "local", "secret": "checkout/momento", "format": "json"}],
    }
    p.update(fields)
    return p


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def rx() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def once(h: Harness, cfg: Path, now: datetime) -> dict[str, Any]:
    run = h.run("-c", str(cfg), "once", now=now)
    assert run.returncode == 0, run.explain()
    assert not JWT.search(run.stdout + run.stderr), "a key in rotator's output"
    summary: dict[str, Any] = run.summary()
    return summary


def only(summary: dict[str, Any]) -> dict[str, Any]:
    (p,) = summary["policies"]
    return dict(p)


def test_a_key_due_on_saturday_rotates_at_mondays_window_opening(h: Harness) -> None:
    cfg = h.write_config([checkout()])
    s = once(h, cfg, FIRST)  # no key yet: the first one is made at once, window or not
    assert s["counts"]["created"] == 1
    (k1,) = h.live_ids("checkout")

    for now in (SAT + timedelta(hours=3), SAT + timedelta(days=1), MON_OPEN - timedelta(minutes=1)):
        s = once(h, cfg, now)
        p = only(s)
        assert s["counts"]["created"] == 0 and p["phase"] == "awaiting-window", p
        assert p["window_opens"] == "2031-03-03T09:00:00+00:00", p
        assert any("waits for the window opening at 2031-03-03T09:00:00Z" in n for n in p["notes"]), p
        assert h.live_ids("checkout") == [k1]

    run = h.run("-c", str(cfg), "plan", now=SAT + timedelta(hours=3))
    assert run.returncode == 0, run.explain()
    (planned,) = run.stdout_json_lines()
    assert planned["phase"] == "awaiting-window" and planned["planned"] == []
    assert planned["window_opens"] == "2031-03-03T09:00:00+00:00"
    status = h.run("-c", str(cfg), "status", "--json", now=SAT + timedelta(hours=3))
    assert status.returncode == 0, status.explain()
    (entry,) = status.stdout_json_lines()[0]["policies"]
    assert entry["phase"] == "awaiting-window" and entry["window_opens"] == "2031-03-03T09:00:00+00:00", entry
    human = h.run("-c", str(cfg), "status", now=SAT + timedelta(hours=3))
    assert "waits for the window opening at 2031-03-03T09:00:00Z" in human.stdout, human.stdout

    s = once(h, cfg, MON_OPEN + timedelta(minutes=1))  # the window is open: rotated
    assert s["counts"]["created"] == 1, s
    k2 = h.newest_id("checkout")
    assert set(h.live_ids("checkout")) == {k1, k2}
    s = once(h, cfg, MON_OPEN + timedelta(hours=1, minutes=5))  # grace over: the old key goes
    assert s["counts"]["revoked"] == 1 and h.live_ids("checkout") == [k2]
    made = [k.issued_at for k in h.policy_keys("checkout")]
    assert made[1] >= MON_OPEN and made[1] < MON_OPEN + timedelta(hours=4), made


def test_a_key_that_would_lapse_before_the_next_opening_rotates_now_with_a_warning(
    h: Harness, rx: WebhookReceiver
) -> None:
    # a release freeze covers Monday's window: the next opening is Monday week, after the key expires
    freeze = [{"from": "2031-03-02T00:00:00Z", "to": "2031-03-04T00:00:00Z", "reason": "release 7.2"}]
    cfg = h.write_config([checkout()], freeze=freeze, alerts={"notifiers": [{"type": "webhook", "url": rx.url}]})
    once(h, cfg, FIRST)
    (k1,) = h.live_ids("checkout")
    s = once(h, cfg, SAT + timedelta(hours=3))
    assert s["counts"]["created"] == 1, s  # rotated on Saturday: waiting would let it lapse
    (note,) = [n for n in only(s)["notes"] if n.startswith("! outside window")]
    assert "expires at 2031-03-09T14:00:00Z" in note and "2031-03-10T09:00:00Z" in note, note
    assert "rotating now, outside its window (0 9 * * MON for 4h (UTC))" in note, note
    (alert,) = rx.events("outside_window", "checkout")
    assert "rotating now" in alert["message"], alert
    assert k1 in h.live_ids("checkout") and len(h.live_ids("checkout")) == 2


def test_the_daemon_wakes_at_the_window_opening_and_rotates_then(h: Harness) -> None:
    port = free_port()
    cfg = h.write_config([checkout()], interval="10m", http={"listen": f"127.0.0.1:{port}"})
    once(h, cfg, FIRST)
    start = MON_OPEN - timedelta(seconds=4)
    h.clock.set(start)
    log_path = h.root / "daemon.stderr"
    env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [ROTATOR, "-c", str(cfg), "run", "--now", start.isoformat()],
            cwd=h.work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(h.live_ids("checkout")) < 2:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert len(h.live_ids("checkout")) == 2, log_path.read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    events = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.startswith("{")]
    waited = [e for e in events if "waits for the window opening" in str(e.get("event"))]
    assert waited, "the first pass did not wait for the window"
    # the pass that rotated ran at the opening (the daemon's clock runs on from --now), ten minutes before the
    # next regular pass
    names = [e.get("event") for e in events]
    assert "created key" in names, names
    assert names.index("created key") > names.index(waited[0]["event"]), names  # waited, then woke and rotated
    assert not JWT.search(log_path.read_text())


def test_a_pass_in_which_a_due_key_waits_reads_no_store_counted_at_the_server(
    h: Harness,
    moto: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting costs what a steady pass costs: the key listing, and not one call to the store (counted by the
    proxy in front of moto's Secrets Manager)."""
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    with AwsRollouts(moto.url, clock=h.clock) as aws:
        store = {"type": "aws", "region": "us-east-1", "endpoint_url": aws.url}
        policy = checkout(targets=[{"store": "sm", "secret": "checkout/momento"}])
        cfg = h.write_config([policy], stores={"sm": store}, drift_check_every="never")
        once(h, cfg, FIRST)
        assert aws.requests, "the first pass wrote the secret through the proxy"
        aws.requests.clear()
        for now in (SAT + timedelta(hours=3), SAT + timedelta(days=1, hours=6)):
            s = once(h, cfg, now)
            assert only(s)["phase"] == "awaiting-window"
        assert aws.requests == [], aws.requests
        s = once(h, cfg, MON_OPEN + timedelta(minutes=1))
        assert s["counts"]["created"] == 1 and aws.requests  # the window opened: read, then written
