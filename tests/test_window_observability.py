"""What a waiting or out-of-window rotation shows (issue 24): the metrics, the CloudWatch figures and alerts."""

from __future__ import annotations

from datetime import timedelta

from rotator.engine import PassReport, PolicyReport
from rotator.metrics import Metrics, emf_documents
from rotator.model import KeyInfo, Plan, SecretState, StoredVersion
from rotator.notify import AlertsConfig, alerts_for
from rotator.planner import OUTSIDE_WINDOW_NOTE
from tests.support.e2e import T0
from tests.test_metrics import value

KEY = KeyInfo("k1", "r", "x [rotator:checkout]", T0 - timedelta(days=28), T0 + timedelta(days=2))
OPENS = T0 + timedelta(days=1)


TID = "local:checkout/momento"


def report(plan: Plan, *, read: bool = False) -> PassReport:
    """A pass's report; ``read``: the pass read the target (which holds k1)."""
    pr = PolicyReport("checkout", plan, keys=(KEY,), target_ids=(TID,))
    if read:
        pr.targets = {TID: SecretState(True, (StoredVersion("v1", "k1", KEY.issued_at, True),), "k1", KEY.issued_at)}
    return PassReport(T0, T0, False, [pr])


WAITING = Plan("checkout", "awaiting-window", current_key="k1", window_opens=OPENS, notes=("k1 waits",))
DUE = Plan("checkout", "due", current_key="k1")


def test_the_waiting_gauge_and_the_opening_follow_the_plan() -> None:
    m = Metrics()
    m.observe(report(WAITING))
    assert value(m, "rotator_policy_waiting_for_window", policy="checkout") == 1
    assert value(m, "rotator_policy_window_opens_timestamp_seconds", policy="checkout") == OPENS.timestamp()
    # the key's expiry is still reported while it waits (the alert rule needs both)
    expires = value(
        m, "rotator_target_key_expiry_timestamp_seconds", policy="checkout", target="local:checkout/momento"
    )
    assert expires == KEY.expires_at.timestamp()  # type: ignore[union-attr]
    m.observe(report(Plan("checkout", "steady", current_key="k1")))
    assert value(m, "rotator_policy_waiting_for_window", policy="checkout") == 0
    assert value(m, "rotator_policy_window_opens_timestamp_seconds", policy="checkout") == 0
    m.close()


def test_the_expiring_alert_leaves_out_a_key_waiting_for_its_window() -> None:
    cfg = AlertsConfig(alert_before=timedelta(days=3))
    assert [a.kind for a in alerts_for(report(WAITING), cfg, T0)] == []
    assert [a.kind for a in alerts_for(report(WAITING, read=True), cfg, T0)] == []
    assert [a.kind for a in alerts_for(report(DUE, read=True), cfg, T0)] == ["expiring"]


def test_a_rotation_outside_the_window_alerts_with_the_note() -> None:
    note = f"{OUTSIDE_WINDOW_NOTE} for checkout: key k1 is due and expires at ...: rotating now, outside its window"
    alerts = alerts_for(report(Plan("checkout", "due", current_key="k1", notes=(note,))), AlertsConfig(), T0)
    (alert,) = [a for a in alerts if a.kind == "outside_window"]
    assert alert.message == note.removeprefix("! ")


def test_cloudwatch_watches_the_soonest_expiry_of_keys_not_waiting_for_a_window() -> None:
    (summary, *_) = emf_documents(report(WAITING))
    assert summary["MinKeyExpiresInSeconds"] == [2 * 86400]
    assert "MinKeyExpiresInSecondsNotWaitingForWindow" not in summary
    (summary, *_) = emf_documents(report(DUE, read=True))
    assert summary["MinKeyExpiresInSecondsNotWaitingForWindow"] == [2 * 86400]
    docs = emf_documents(report(WAITING))
    assert any(d.get("WaitingForWindow") == [1] for d in docs), docs
