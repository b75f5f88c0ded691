"""Alerts (issue 6): a webhook receiver on 127.0.0.1 records what :class:`rotator.notify.AlertHub` sends for a
failing policy across passes, once per ``alert_every``; Slack payloads; failing notifiers; ``expiring``; and
``state_file`` keeping the dedup across ``rotator once`` processes.

The in-process tests run real passes (the emulator over HTTP, the file store in ``tmp_path``) with one
test-driven clock shared by the engine, the emulator and the hub. The ``state_file`` and failing-notifier
tests run the real ``rotator once`` as a subprocess with ``--now``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from rotator import config as config_mod
from rotator.engine import UNSERVED, PassReport
from rotator.notify import AlertHub
from rotator.runtime.app import App, build
from tests.support.consumers import WebhookReceiver, webhook_receiver
from tests.support.e2e import CHECKOUT, T0, Harness, at, free_port, harness

#: a policy whose only target lives in a store whose path is a regular file: every write fails
BROKEN: dict[str, Any] = dict(CHECKOUT, name="broken", targets=[{"store": "bad", "secret": "broken/momento"}])
#: a policy whose role the issuer does not know: every create fails before a key is made. The preflight of a
#: mutating command refuses such a config before any pass (tests/bad_input), so the in-process tests build
#: with preflight=False: they are about what a pass does when the issuer refuses under it (a custom role
#: deleted while the daemon runs)
GHOST: dict[str, Any] = dict(
    CHECKOUT, name="ghost", role="no-such-role", targets=[{"store": "local", "secret": "ghost/k"}]
)
#: for ``rotator once`` (which runs the preflight): a policy whose only target breaks at write time, past the
#: preflight: its directory is writable but ``versions`` in it is a regular file (see :func:`break_ghost`)
UNWRITABLE_GHOST: dict[str, Any] = dict(CHECKOUT, name="ghost", targets=[{"store": "local", "secret": "ghost/k"}])


def break_ghost(h: Harness) -> None:
    d = h.secrets
    for part in (d, d / "ghost", d / "ghost" / "k"):
        part.mkdir(mode=0o700, exist_ok=True)
    (d / "ghost" / "k" / "versions").write_text("a file where the store makes a directory\n")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def rx() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


class World:
    """An app built in this process whose engine, emulator and alert hub share the test's clock."""

    def __init__(self, h: Harness, policies: list[dict[str, Any]], alerts: dict[str, Any]) -> None:
        self.h = h
        (h.root / "not-a-dir").write_text("a file where the 'bad' store expects a directory\n")
        data = h.config_data(
            policies,
            stores={
                "local": {"type": "file", "path": str(h.secrets)},
                "bad": {"type": "file", "path": str(h.root / "not-a-dir")},
            },
            alerts=alerts,
        )
        self.config = config_mod.from_mapping(data)
        self.clock: Callable[[], datetime] = h.clock.as_datetime
        self.app: App = build(self.config, clock=self.clock, preflight=False)
        self.hub = AlertHub(self.config.alerts, clock=self.clock)

    def pass_at(self, t: datetime) -> tuple[PassReport, list[str]]:
        """One pass at ``t`` handed to the hub; returns the report and the kinds of alert sent."""
        self.h.clock.set(t)
        report = self.app.engine.run_pass()
        return report, [f"{a.policy}/{a.kind}" for a in self.hub.handle(report)]

    def close(self) -> None:
        self.app.close()


def webhook(rx: WebhookReceiver, **kw: Any) -> dict[str, Any]:
    return {"notifiers": [{"type": "webhook", "url": rx.url}], "alert_before": "10m", **kw}


@pytest.fixture
def world_factory(h: Harness) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(policies: list[dict[str, Any]], alerts: dict[str, Any]) -> World:
        w = World(h, policies, alerts)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


# ---- once per alert_every ------------------------------------------------------------------------------


def test_a_policy_failing_on_every_pass_alerts_once_per_alert_every(
    world_factory: Callable[..., World], rx: WebhookReceiver
) -> None:
    w = world_factory([CHECKOUT, GHOST], webhook(rx, alert_every="1h"))
    for m in (0, 1, 5, 20, 40, 59):
        report, _ = w.pass_at(at(m))
        assert not next(p for p in report.policies if p.policy == "ghost").ok
    assert len(rx.events("rotation_failed", "ghost")) == 1
    w.pass_at(at(61))  # alert_every after the first alert: it may be sent again
    failed = rx.events("rotation_failed", "ghost")
    assert len(failed) == 2, failed
    assert [e["time"] for e in failed] == [at(0).isoformat(), at(61).isoformat()]
    assert rx.events(policy="checkout") == []


def test_a_failing_store_alerts_once_per_alert_every_across_waiting_passes(
    world_factory: Callable[..., World], rx: WebhookReceiver
) -> None:
    # the 'bad' store's path is a file: every publish fails. The planner creates a key, fails to store it,
    # waits orphan_after (10m) for the unstored keys, sweeps them and tries again: the policy never recovers
    w = world_factory([CHECKOUT, BROKEN], webhook(rx, alert_every="1h"))
    oks = []
    for m in (0, 1, 2, 5, 10, 11, 12, 20, 30, 45, 59):
        report, _ = w.pass_at(at(m))
        broken = next(p for p in report.policies if p.policy == "broken")
        oks.append(broken.ok)
    assert (w.h.root / "not-a-dir").is_file()  # nothing could ever be stored
    # failing passes and 'waiting' passes alternate, and a waiting pass is not ok either: no target serves a key
    assert oks == [False] * len(oks)
    assert broken.error == UNSERVED
    failed = rx.events("rotation_failed", "broken")
    assert len(failed) == 1, [e["time"] for e in failed]


def test_a_policy_that_recovers_alerts_again_at_once_when_it_fails_again(h: Harness, rx: WebhookReceiver) -> None:
    # the same policy: first with an unknown role (fails), then fixed (a key is made: ok), then broken again
    alerts = webhook(rx, alert_every="1h")
    hub: AlertHub | None = None
    for m, role in ((0, "no-such-role"), (1, "operator"), (2, "no-such-role")):
        cfg = config_mod.from_mapping(h.config_data([dict(GHOST, role=role)], alerts=alerts))
        hub = hub or AlertHub(cfg.alerts, clock=h.clock.as_datetime)
        h.clock.set(at(m))
        with build(cfg, clock=h.clock.as_datetime, preflight=False) as app:
            report = app.engine.run_pass(force=["ghost"] if m == 2 else ())
        assert report.ok is (role == "operator"), report.to_json()
        hub.handle(report)
    assert [e["time"] for e in rx.events("rotation_failed", "ghost")] == [at(0).isoformat(), at(2).isoformat()]


# ---- payloads ------------------------------------------------------------------------------------------


def test_the_webhook_payload_names_the_event_policy_and_time(
    world_factory: Callable[..., World], rx: WebhookReceiver
) -> None:
    w = world_factory([GHOST], webhook(rx))
    w.pass_at(at(0))
    (body,) = rx.received
    assert body["source"] == "rotator"
    assert body["event"] == "rotation_failed"
    assert body["policy"] == "ghost"
    assert "no-such-role" in body["message"]
    assert body["details"]["errors"], body
    assert body["time"] == at(0).isoformat()
    assert rx.requests[0]["headers"]["content-type"] == "application/json"


def test_a_slack_notifier_posts_a_text_message(world_factory: Callable[..., World], rx: WebhookReceiver) -> None:
    w = world_factory([GHOST], {"notifiers": [{"type": "slack", "url": rx.url}]})
    w.pass_at(at(0))
    (body,) = rx.received
    assert set(body) == {"text"}
    assert "rotation of ghost failed" in body["text"]
    assert body["text"].startswith(":rotating_light: rotator:")


# ---- failing notifiers ---------------------------------------------------------------------------------


def test_a_failing_notifier_is_logged_and_the_others_still_get_the_alert(
    world_factory: Callable[..., World], rx: WebhookReceiver
) -> None:
    with webhook_receiver(status=500) as refusing:
        down = f"http://127.0.0.1:{free_port()}/hook"
        w = world_factory(
            [CHECKOUT, GHOST],
            {
                "notifiers": [
                    {"type": "webhook", "url": refusing.url},
                    {"type": "webhook", "url": down},
                    {"type": "webhook", "url": rx.url},
                ],
                "alert_before": "10m",
            },
        )
        with structlog.testing.capture_logs() as logs:
            report, sent = w.pass_at(at(0))
        assert sent == ["ghost/rotation_failed"]
        assert len(refusing.received) == 1
    assert [e["policy"] for e in rx.events("rotation_failed")] == ["ghost"]
    failures = [e for e in logs if e["event"] == "notifier failed"]
    assert len(failures) == 2, logs
    assert all(e["alert"] == "rotation_failed" for e in failures)
    # the healthy policy's rotation is untouched by the failing notifiers
    checkout = next(p for p in report.policies if p.policy == "checkout")
    assert checkout.ok
    assert (w.h.secrets / "checkout/momento/current").exists()


def test_once_with_failing_notifiers_still_rotates_healthy_policies(h: Harness) -> None:
    with webhook_receiver(status=500) as refusing:
        down = f"http://127.0.0.1:{free_port()}/hook"
        break_ghost(h)
        cfg = h.write_config(
            [CHECKOUT, UNWRITABLE_GHOST],
            alerts={"notifiers": [{"type": "webhook", "url": refusing.url}, {"type": "webhook", "url": down}]},
        )
        r = h.run("-c", str(cfg), "once", now=T0)
        assert len(refusing.received) == 1, r.explain()
    assert r.returncode == 1, r.explain()  # ghost failed
    by_policy = {p["policy"]: p for p in r.summary()["policies"]}
    assert by_policy["checkout"]["ok"] is True
    assert [x["ok"] for x in by_policy["checkout"]["results"]] == [True]
    assert by_policy["ghost"]["ok"] is False
    assert len(r.events("notifier failed")) == 2, r.explain()
    assert h.live_ids("checkout") == [h.newest_id("checkout")]


# ---- expiring ------------------------------------------------------------------------------------------


def _expiring_world(h: Harness, rx: WebhookReceiver, role: str) -> tuple[PassReport, list[str]]:
    """checkout gets its key at T0 (lifetime 1h, due at 39m); at 45m (15m left, alert_before 30m) a pass runs
    with the policy's role set to ``role``."""
    alerts = webhook(rx, alert_before="30m")
    first = config_mod.from_mapping(h.config_data([CHECKOUT], alerts=alerts))
    h.clock.set(T0)
    with build(first, clock=h.clock.as_datetime) as app:
        assert app.engine.run_pass().ok
    later = config_mod.from_mapping(h.config_data([dict(CHECKOUT, role=role)], alerts=alerts))
    h.clock.set(at(45))
    with build(later, clock=h.clock.as_datetime, preflight=False) as app:
        report = app.engine.run_pass()
    hub = AlertHub(later.alerts, clock=h.clock.as_datetime)
    return report, [a.kind for a in hub.handle(report)]


def test_expiring_fires_when_a_held_key_is_within_alert_before_and_the_rotation_failed(
    h: Harness, rx: WebhookReceiver
) -> None:
    report, kinds = _expiring_world(h, rx, role="no-such-role")
    assert not report.ok
    assert sorted(kinds) == ["expiring", "rotation_failed"]
    (alert,) = rx.events("expiring", "checkout")
    (key_id,) = h.live_ids("checkout")
    assert alert["details"] == {
        "target": "local:checkout/momento",
        "key_id": key_id,
        "expires_at": at(60).isoformat(),
    }
    assert "expires in 15m" in alert["message"]


def test_no_expiring_alert_when_the_rotation_succeeded(h: Harness, rx: WebhookReceiver) -> None:
    report, kinds = _expiring_world(h, rx, role="operator")
    assert report.ok
    assert [r.action.kind for p in report.policies for r in p.results] == ["create"]
    assert kinds == []
    assert rx.received == []


def test_no_expiring_alert_outside_alert_before(world_factory: Callable[..., World], rx: WebhookReceiver) -> None:
    w = world_factory([CHECKOUT], webhook(rx, alert_before="30m"))
    w.pass_at(at(0))
    _, kinds = w.pass_at(at(20))  # 40m left: outside alert_before, not due
    assert kinds == []
    assert rx.received == []


# ---- state_file across `rotator once` runs -------------------------------------------------------------


def sent_at(events: list[dict[str, Any]]) -> list[int]:
    """The minutes after T0 at which the alerts were sent (``--now`` runs on at real speed: rounded)."""
    return [round((datetime.fromisoformat(e["time"]) - T0).total_seconds() / 60) for e in events]


def _once(h: Harness, cfg: Path, minutes: float) -> None:
    r = h.run("-c", str(cfg), "once", now=at(minutes))
    assert r.returncode == 1, r.explain()  # ghost fails every time: its key reaches no target
    assert r.summary()["policies"][0]["ok"] is False


def test_state_file_keeps_the_dedup_across_once_runs(h: Harness, rx: WebhookReceiver) -> None:
    state = h.root / "alerts-state.json"
    break_ghost(h)
    cfg = h.write_config([UNWRITABLE_GHOST], alerts=webhook(rx, alert_every="1h", state_file=str(state)))
    _once(h, cfg, 0)
    _once(h, cfg, 1)
    assert len(rx.events("rotation_failed", "ghost")) == 1
    assert state.exists()
    _once(h, cfg, 61)
    assert sent_at(rx.events("rotation_failed", "ghost")) == [0, 61]


def test_without_state_file_each_once_run_alerts(h: Harness, rx: WebhookReceiver) -> None:
    break_ghost(h)
    cfg = h.write_config([UNWRITABLE_GHOST], alerts=webhook(rx, alert_every="1h"))
    _once(h, cfg, 0)
    _once(h, cfg, 1)
    assert len(rx.events("rotation_failed", "ghost")) == 2
