"""The window rules of the planner (issue 24): a due rotation starts only inside the policy's window and
outside every freeze, unless waiting would leave the key too little time before it expires."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from rotator.config import Policy
from rotator.model import (
    CreateKey,
    KeyInfo,
    Observation,
    Publish,
    Revoke,
    SecretState,
    StoredVersion,
    TargetObservation,
)
from rotator.planner import OUTSIDE_WINDOW_NOTE, Options, plan
from rotator.reload.kubernetes import ReloadConfig
from rotator.windows import Freeze, WindowConfig
from tests.test_planner import POLICY

A, B = (t.id for t in POLICY.targets)
#: Monday to Thursday, 09:00-15:00 in Berlin (UTC+2 in June: 07:00-13:00 UTC)
WEEKDAYS = WindowConfig(cron="0 9 * * MON-THU", duration=timedelta(hours=6), timezone="Europe/Berlin")
WEEKLY: Policy = dataclasses.replace(
    POLICY, lifetime=timedelta(days=30), rotate_before=timedelta(days=7), grace=timedelta(hours=1), window=WEEKDAYS
)
SAT = datetime(2026, 6, 6, 12, 0, tzinfo=UTC)  # a Saturday
MON_OPEN = datetime(2026, 6, 8, 7, 0, tzinfo=UTC)  # Monday 09:00 in Berlin
OPTS = Options(interval=timedelta(minutes=1), clock_skew=timedelta(minutes=1))


def key(key_id: str, issued: datetime, lifetime: timedelta = timedelta(days=30)) -> KeyInfo:
    return KeyInfo(key_id, "r-operator", "x [rotator:p0]", issued, issued + lifetime)


def held(now: datetime, *versions: tuple[str, bool]) -> SecretState:
    since = now - timedelta(days=20)
    vs = tuple(StoredVersion(f"v-{k}", k, since, current) for k, current in versions)
    return SecretState(True, vs, next((k for k, c in versions if c), None), since)


def observe(keys: list[KeyInfo], now: datetime, *versions: tuple[str, bool]) -> Observation:
    st = held(now, *versions)
    return Observation(tuple(keys), {A: TargetObservation(A, st, None), B: TargetObservation(B, st, None)})


def creates(p: object) -> list[CreateKey]:
    return [a for a in p.actions if isinstance(a, CreateKey)]  # type: ignore[attr-defined]


def due_on_saturday() -> KeyInfo:
    # due 7 days before expiry (less 1m of skew): Saturday 11:59; expires the next Saturday
    return key("k1", SAT + timedelta(days=7) - timedelta(days=30))


def test_a_key_due_on_saturday_waits_for_mondays_opening_without_reading_the_stores() -> None:
    k = due_on_saturday()
    p = plan(WEEKLY, Observation((k,)), SAT, OPTS)
    assert p.phase == "awaiting-window" and not p.needs_targets and not p.actions
    assert p.window_opens == MON_OPEN and p.wake_at == MON_OPEN
    assert any("waits for the window opening at 2026-06-08T07:00:00Z" in n for n in p.notes), p.notes
    # with the stores read (a drift check), the same decision
    full = plan(WEEKLY, observe([k], SAT, ("k1", True)), SAT, OPTS)
    assert full.phase == "awaiting-window" and not creates(full) and full.window_opens == MON_OPEN


def test_inside_the_window_the_due_key_is_rotated() -> None:
    k = due_on_saturday()
    p = plan(WEEKLY, observe([k], MON_OPEN, ("k1", True)), MON_OPEN, OPTS)
    assert len(creates(p)) == 1 and p.window_opens is None and p.phase == "due"
    fast = plan(WEEKLY, Observation((k,)), MON_OPEN + timedelta(hours=5, minutes=59), OPTS)
    assert fast.needs_targets  # due and open: the pass reads the stores and rotates


def test_a_key_that_would_lapse_before_the_opening_rotates_now_with_a_warning() -> None:
    k = key("k1", SAT - timedelta(days=29, hours=23))  # expires Saturday 13:00, an hour from now
    p = plan(WEEKLY, observe([k], SAT, ("k1", True)), SAT, OPTS)
    assert len(creates(p)) == 1 and p.window_opens is None
    (note,) = [n for n in p.notes if n.startswith(OUTSIDE_WINDOW_NOTE)]
    assert "expires at 2026-06-06T13:00:00Z" in note and "2026-06-08T07:00:00Z" in note
    assert "grace + interval + clock_skew (1h2m)" in note


def test_the_safety_margin_is_exactly_grace_interval_and_clock_skew_before_expiry() -> None:
    margin = WEEKLY.grace + OPTS.interval + OPTS.clock_skew
    just_enough = key("k1", MON_OPEN + margin - timedelta(days=30))
    p = plan(WEEKLY, observe([just_enough], SAT, ("k1", True)), SAT, OPTS)
    assert not creates(p) and p.window_opens == MON_OPEN
    short = key("k1", MON_OPEN + margin - timedelta(days=30, seconds=1))
    p = plan(WEEKLY, observe([short], SAT, ("k1", True)), SAT, OPTS)
    assert len(creates(p)) == 1 and any(n.startswith(OUTSIDE_WINDOW_NOTE) for n in p.notes)


def test_with_reload_targets_the_margin_includes_reload_timeout() -> None:
    k8s = ReloadConfig.model_validate({"type": "kubernetes", "namespace": "n", "kind": "Deployment", "names": ["a"]})
    reloading = dataclasses.replace(WEEKLY, reload=(k8s,), reload_timeout=timedelta(minutes=15))
    k = key("k1", MON_OPEN + timedelta(hours=1, minutes=10) - timedelta(days=30))  # 1h10m left at the opening
    assert not creates(plan(WEEKLY, observe([k], SAT, ("k1", True)), SAT, OPTS))
    p = plan(reloading, observe([k], SAT, ("k1", True)), SAT, OPTS)
    assert len(creates(p)) == 1
    assert any("grace + interval + clock_skew + reload_timeout (1h17m)" in n for n in p.notes), p.notes


def test_a_freeze_holds_a_rotation_back_even_inside_the_window() -> None:
    freeze = Freeze.model_validate({"from": "2026-06-08T00:00:00Z", "to": "2026-06-09T00:00:00Z", "reason": "release"})
    frozen = dataclasses.replace(WEEKLY, freezes=(freeze,))
    k = due_on_saturday()
    p = plan(frozen, observe([k], MON_OPEN, ("k1", True)), MON_OPEN, OPTS)
    tue_open = MON_OPEN + timedelta(days=1)
    assert not creates(p) and p.window_opens == tue_open, p
    assert any("release" in n for n in p.notes)
    no_window = dataclasses.replace(frozen, window=None)
    p = plan(no_window, observe([k], MON_OPEN, ("k1", True)), MON_OPEN, OPTS)
    assert p.window_opens == datetime(2026, 6, 9, tzinfo=UTC)  # a freeze alone: it ends at its end
    p = plan(no_window, observe([k], MON_OPEN, ("k1", True)), datetime(2026, 6, 9, tzinfo=UTC), OPTS)
    assert len(creates(p)) == 1


def test_a_requested_rotation_an_expired_key_and_no_key_do_not_wait() -> None:
    k = due_on_saturday()
    assert len(creates(plan(WEEKLY, observe([k], SAT, ("k1", True)), SAT, dataclasses.replace(OPTS, force=True))))
    fresh = key("k1", SAT - timedelta(days=1))
    assert len(creates(plan(WEEKLY, observe([fresh], SAT, ("k1", True)), SAT, dataclasses.replace(OPTS, force=True))))
    gone = key("k1", SAT - timedelta(days=31))
    p = plan(WEEKLY, observe([gone], SAT, ("k1", True)), SAT, OPTS)
    assert len(creates(p)) == 1 and p.phase == "expired"
    p = plan(
        WEEKLY,
        Observation((), {A: TargetObservation(A, held(SAT), None), B: TargetObservation(B, held(SAT), None)}),
        SAT,
        OPTS,
    )
    assert len(creates(p)) == 1 and p.phase == "no-key"


def test_a_started_rotation_publishes_and_revokes_outside_the_window() -> None:
    old = due_on_saturday()
    new = key("k2", SAT - timedelta(hours=3))  # created inside Friday's... any window: it exists now
    half = Observation(
        (old, new),
        {
            A: TargetObservation(A, held(SAT, ("k1", False), ("k2", True)), None),
            B: TargetObservation(B, held(SAT, ("k1", True)), None),
        },
    )
    p = plan(WEEKLY, half, SAT, OPTS)
    assert [a.target for a in p.actions if isinstance(a, Publish)] == [B] and not creates(p)
    st = SecretState(
        True,
        (
            StoredVersion("v-k1", "k1", SAT - timedelta(days=20), False),
            StoredVersion("v-k2", "k2", SAT - timedelta(hours=2), True),
        ),
        "k2",
        SAT - timedelta(hours=2),
    )
    done = Observation((old, new), {A: TargetObservation(A, st, None), B: TargetObservation(B, st, None)})
    p = plan(WEEKLY, done, SAT, OPTS)
    assert [a.key_id for a in p.actions if isinstance(a, Revoke)] == ["k1"]


def test_a_key_that_never_expires_waits_for_the_window_whatever_the_time() -> None:
    forever = dataclasses.replace(WEEKLY, lifetime=None, rotate_before=None, rotate_every=timedelta(days=30))
    k = KeyInfo("k1", "r-operator", "x [rotator:p0]", SAT - timedelta(days=40), None)
    p = plan(forever, observe([k], SAT, ("k1", True)), SAT, OPTS)
    assert not creates(p) and p.window_opens == MON_OPEN
