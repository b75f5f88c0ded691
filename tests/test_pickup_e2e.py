"""Pickup end to end (issue 7): consumer HTTP servers on 127.0.0.1 switch to the new key at moments the test
chooses; the old key is revoked only after the last consumer switched, never before; a consumer that never
switches blocks revocation and, past ``max_wait``, sends ``pickup_overdue`` (once per ``alert_every``);
``revoke_after`` revokes anyway; ``rotator rotate POLICY --yes`` starts a rotation with normal grace.

Passes run in this process (real ``http`` pickup check, emulator over HTTP, file store in ``tmp_path``) with
one test-driven clock; ``rotator status`` and ``rotator rotate`` run as subprocesses with ``--now``.

Timeline: the policy's first key ``k1`` is made at T0 (lifetime 30d, rotate_before 7d: due at T0+23d-1m);
``k2`` replaces it at T1 = T0+23d; grace is 1h.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator import config as config_mod
from rotator.engine import PassReport
from rotator.notify import AlertHub
from rotator.runtime.app import App, build
from tests.support.consumers import KeyIdConsumer, WebhookReceiver, consumers, webhook_receiver
from tests.support.e2e import T0, Harness, Run, current_payload, harness, payload_key_id

T1 = T0 + timedelta(days=23)
SECRET = "checkout/momento"


def policy(urls: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "checkout",
        "role": "operator",
        "lifetime": "30d",
        "rotate_before": "7d",
        "grace": "1h",
        "orphan_after": "10m",
        "targets": [{"store": "local", "secret": SECRET}],
        "pickup": [{"type": "http", "urls": urls, "timeout": "2s"}],
        **extra,
    }


@dataclass
class World:
    h: Harness
    app: App
    cfg_path: Path
    consumers: list[KeyIdConsumer]
    hub: AlertHub
    k1: str = ""
    k2: str = ""

    def pass_at(self, t: datetime, **kw: Any) -> PassReport:
        self.h.clock.set(t)
        report = self.app.engine.run_pass(**kw)
        assert report.ok, report.to_json()
        self.hub.handle(report)
        return report

    def live(self) -> list[str]:
        return self.h.live_ids("checkout")

    def held(self) -> str:
        return payload_key_id("json", current_payload(self.h.secret_dir(SECRET)))

    def notes(self, report: PassReport) -> list[str]:
        (p,) = report.policies
        return list(p.plan.notes) if p.plan else []

    def status(self, t: datetime) -> dict[str, Any]:
        """``rotator status --json`` at ``t`` (a subprocess): the policy's entry."""
        r = self.h.run("-c", str(self.cfg_path), "status", "--json", now=t)
        assert r.returncode == 0, r.explain()
        entry: dict[str, Any] = r.stdout_json_lines()[0]["policies"][0]
        return entry


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def rx() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def make_world(h: Harness, rx: WebhookReceiver) -> Iterator[Any]:
    """``make_world(n, **policy_extra)``: n consumers (on k1), k1 at T0, k2 published at T1."""
    opened: list[Any] = []

    def make(n: int, **extra: Any) -> World:
        cm = consumers(*([None] * n))
        cs = cm.__enter__()
        opened.append(cm)
        cfg_path = h.write_config(
            [policy([c.url for c in cs], **extra)],
            alerts={"notifiers": [{"type": "webhook", "url": rx.url}], "alert_every": "6h", "alert_before": "1h"},
        )
        cfg = config_mod.load(cfg_path)
        app = build(cfg, clock=h.clock.as_datetime)
        opened.append(app)
        w = World(h, app, cfg_path, cs, AlertHub(cfg.alerts, clock=h.clock.as_datetime))
        w.pass_at(T0)
        (w.k1,) = w.live()
        for c in cs:
            c.switch(w.k1)
        w.pass_at(T1)
        w.k2 = w.held()
        assert w.k2 != w.k1 and w.live() == [w.k1, w.k2]
        return w

    yield make
    for o in reversed(opened):
        if isinstance(o, App):
            o.close()
        else:
            o.__exit__(None, None, None)


# ---- revocation follows the last consumer --------------------------------------------------------------


def test_the_old_key_is_revoked_right_after_the_last_consumer_switches(make_world: Any) -> None:
    w: World = make_world(3)
    c1, c2, c3 = w.consumers
    c1.switch(w.k2)
    steps = [
        (T1 + timedelta(minutes=30), None),  # in grace
        (T1 + timedelta(hours=1, minutes=1), c2),  # grace over; c2 and c3 lag; then c2 switches
        (T1 + timedelta(hours=2), c3),  # c3 lags; then c3 switches
    ]
    for t, switches_after in steps:
        report = w.pass_at(t)
        assert w.live() == [w.k1, w.k2], f"the old key was revoked at {t} while a consumer still used it"
        assert [r.action.kind for p in report.policies for r in p.results] == []
        if switches_after is not None:
            switches_after.switch(w.k2)
    report = w.pass_at(T1 + timedelta(hours=2, minutes=1))
    assert [(r.action.kind, getattr(r.action, "key_id", None), r.ok) for r in report.policies[0].results] == [
        ("revoke", w.k1, True)
    ]
    assert w.live() == [w.k2]
    assert w.held() == w.k2


def test_consumers_are_not_asked_during_grace(make_world: Any) -> None:
    w: World = make_world(2)
    w.pass_at(T1 + timedelta(minutes=59))
    assert [c.asked for c in w.consumers] == [0, 0]
    w.pass_at(T1 + timedelta(hours=1, minutes=1))
    assert [c.asked for c in w.consumers] == [1, 1]


def test_status_names_the_lagging_consumers_and_since_when(make_world: Any) -> None:
    w: World = make_world(3)
    c1, c2, c3 = w.consumers
    c1.switch(w.k2)
    t = T1 + timedelta(hours=1, minutes=1)
    entry = w.status(t)
    assert entry["phase"] == "awaiting-pickup"
    assert entry["key_id"] == w.k2
    (note,) = [n for n in entry["notes"] if "pickup" in n]
    assert f"{c2.url} (reports {w.k1})" in note
    assert f"{c3.url} (reports {w.k1})" in note
    assert c1.url not in note
    assert "since 2031-03-24T12:00:00Z" in note  # when the last target took k2 (T1)
    c2.switch(w.k2)
    entry = w.status(t + timedelta(hours=1))
    (note,) = [n for n in entry["notes"] if "pickup" in n]
    assert c2.url not in note and f"{c3.url} (reports {w.k1})" in note
    assert w.live() == [w.k1, w.k2]  # status changed nothing


# ---- a consumer that never switches -------------------------------------------------------------------


def test_a_consumer_that_never_switches_blocks_revocation_and_alerts_once_per_alert_every(
    make_world: Any, rx: WebhookReceiver
) -> None:
    w: World = make_world(2, max_wait="12h")
    stuck, moved = w.consumers
    moved.switch(w.k2)
    sent_at: dict[float, int] = {}
    for hours in (1.1, 11.9, 12.1, 13, 18, 18.2, 30):
        w.pass_at(T1 + timedelta(hours=hours))
        sent_at[hours] = len(rx.events("pickup_overdue", "checkout"))
        assert w.live() == [w.k1, w.k2], f"revoked at T1+{hours}h with a consumer on the old key"
    # nothing before max_wait; the first at 12.1h; again alert_every (6h) later, at 18.2h; and at 30h
    assert sent_at == {1.1: 0, 11.9: 0, 12.1: 1, 13: 1, 18: 1, 18.2: 2, 30: 3}
    first = rx.events("pickup_overdue")[0]
    assert stuck.url in first["message"] and moved.url not in first["message"]
    assert w.k2 in first["message"]


def test_revoke_after_revokes_even_though_a_consumer_lags(make_world: Any) -> None:
    w: World = make_world(2, max_wait="12h", revoke_after="48h")
    stuck, moved = w.consumers
    moved.switch(w.k2)
    w.pass_at(T1 + timedelta(hours=47, minutes=59))
    assert w.live() == [w.k1, w.k2]
    report = w.pass_at(T1 + timedelta(hours=48, minutes=1))
    assert [(r.action.kind, getattr(r.action, "key_id", None)) for r in report.policies[0].results] == [
        ("revoke", w.k1)
    ]
    assert w.live() == [w.k2]
    assert any("revoking anyway" in n and stuck.url in n for n in w.notes(report)), w.notes(report)


# ---- rotator rotate POLICY --yes ----------------------------------------------------------------------


def rotate(w: World, t: datetime) -> Run:
    r = w.h.run("-c", str(w.cfg_path), "rotate", "checkout", "--yes", now=t)
    assert r.returncode == 0, r.explain()
    return r


def test_rotate_yes_rotates_now_and_keeps_the_old_key_for_grace_and_pickup(h: Harness) -> None:
    with consumers(None) as (c,):
        cfg_path = h.write_config([policy([c.url])])
        h.clock.set(T0)
        cfg = config_mod.load(cfg_path)
        with build(cfg, clock=h.clock.as_datetime) as app:
            assert app.engine.run_pass().ok
            (k1,) = h.live_ids("checkout")
            c.switch(k1)
            w = World(h, app, cfg_path, [c], AlertHub(cfg.alerts, clock=h.clock.as_datetime), k1=k1)
            t = T0 + timedelta(days=1)  # long before k1 is due
            out = rotate(w, t).stdout_json_lines()[-1]
            assert out["ok"] is True and out["emergency"] is False
            assert out["passes"][0]["counts"]["created"] == 1
            k2 = w.held()
            assert k2 != k1
            assert w.live() == [k1, k2], "rotate revoked the old key at once"
            w.pass_at(t + timedelta(minutes=59))  # in grace
            assert w.live() == [k1, k2]
            w.pass_at(t + timedelta(hours=2))  # grace over, the consumer still on k1
            assert w.live() == [k1, k2]
            c.switch(k2)
            w.pass_at(t + timedelta(hours=2, minutes=1))
            assert w.live() == [k2]


def test_rotate_does_nothing_while_a_rotation_is_under_way(make_world: Any) -> None:
    w: World = make_world(1)
    out = rotate(w, T1 + timedelta(minutes=5)).stdout_json_lines()[-1]
    assert out["ok"] is True
    assert out["passes"][0]["counts"]["created"] == 0
    assert w.live() == [w.k1, w.k2]
    assert w.held() == w.k2


def test_status_shows_when_the_old_key_dies_while_consumers_lag(make_world: Any) -> None:
    w: World = make_world(1)
    entry = w.status(T1 + timedelta(hours=1, minutes=1))
    assert entry["phase"] == "awaiting-pickup"
    k1_expires = (T0 + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")  # 2031-03-31T12:00:00
    assert any(k1_expires in n for n in entry["notes"]), entry["notes"]
