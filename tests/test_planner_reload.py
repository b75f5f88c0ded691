"""The reload rules of the planner (issue 23), one scenario each, on hand-made observations.

Order: publish to every target -> reload (at most reload_max_parallel rollouts at once) -> rollouts done ->
grace and pickup -> revoke. Reload state comes only from the observation (what the services show).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from rotator.config import Policy
from rotator.model import PickupVerdict, Publish, Reload, ReloadStatus, Revoke
from rotator.planner import RELOAD_FAILED_NOTE, Options, plan
from rotator.reload.kubernetes import ReloadConfig
from tests.test_planner import NOW, POLICY, key, obs, state

K8S = ReloadConfig.model_validate({"type": "kubernetes", "namespace": "payments", "kind": "Deployment", "names": ["a"]})
RELOADING: Policy = dataclasses.replace(
    POLICY, reload=(K8S,), reload_max_parallel=2, reload_timeout=timedelta(minutes=15)
)
T = "kubernetes:payments/Deployment"
OLD, NEW = key("k1", timedelta(minutes=50)), key("k2", timedelta(minutes=20))


def both_new(since: timedelta = timedelta(minutes=10)) -> tuple:  # type: ignore[type-arg]
    return state(("k1", False), ("k2", True), since=since), state(("k1", False), ("k2", True), since=since)


def unit(name: str, st: str, since: timedelta | None = None, *, key_id: str = "k2", **kw: object) -> ReloadStatus:
    return ReloadStatus(T, name, "kubernetes", key_id, st, NOW - since if since else None, **kw)  # type: ignore[arg-type]


def reloads(p: object) -> list[Reload]:
    return [a for a in p.actions if isinstance(a, Reload)]  # type: ignore[attr-defined]


def revokes(p: object) -> list[Revoke]:
    return [a for a in p.actions if isinstance(a, Revoke)]  # type: ignore[attr-defined]


def test_reload_targets_are_observed_once_every_target_holds_the_new_key() -> None:
    p = plan(RELOADING, obs([OLD, NEW], *both_new()), NOW)
    assert p.needs_reload == "k2" and not revokes(p) and not reloads(p)
    assert p.phase == "reloading"


def test_no_reload_while_a_target_lacks_the_new_key() -> None:
    a, _ = both_new()
    b = state(("k1", True), since=timedelta(hours=1))
    p = plan(RELOADING, obs([OLD, NEW], a, b, reloads=(unit("a", "pending"),)), NOW)
    assert any(isinstance(x, Publish) for x in p.actions)
    assert not reloads(p) and not revokes(p) and p.needs_reload is None


def test_pending_units_start_up_to_reload_max_parallel() -> None:
    units = tuple(unit(n, "pending") for n in "abc")
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=units), NOW)
    assert [r.unit for r in reloads(p)] == ["a", "b"]
    assert not revokes(p)
    assert any("wait for a slot" in n for n in p.notes)


def test_rolling_units_take_their_slots() -> None:
    units = (unit("a", "rolling", timedelta(minutes=2)), unit("b", "pending"), unit("c", "pending"))
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=units), NOW)
    assert [r.unit for r in reloads(p)] == ["b"]
    assert p.wake_at is not None and p.wake_at <= NOW + timedelta(minutes=13)


def test_an_emergency_starts_every_reload_at_once_and_does_not_wait_for_them() -> None:
    units = tuple(unit(n, "pending") for n in "abcd")
    p = plan(RELOADING, obs([OLD, NEW], *both_new(timedelta(0)), reloads=units), NOW, Options(emergency=True))
    assert [r.unit for r in reloads(p)] == list("abcd")
    assert [r.key_id for r in revokes(p)] == ["k1"]


def test_old_key_stays_until_every_rollout_is_done() -> None:
    units = (unit("a", "done", timedelta(minutes=8)), unit("b", "rolling", timedelta(minutes=1)))
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=units), NOW)
    assert not revokes(p) and not reloads(p)
    assert any("reloads: 1 of 2 done" in n for n in p.notes)


def test_done_rollouts_are_pickup_evidence_without_other_checks() -> None:
    units = (unit("a", "done", timedelta(minutes=8)), unit("b", "done", timedelta(minutes=7)))
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=units), NOW)
    assert [r.key_id for r in revokes(p)] == ["k1"] and not reloads(p)


def test_done_rollouts_still_wait_for_grace() -> None:
    units = (unit("a", "done", timedelta(minutes=1)),)
    p = plan(RELOADING, obs([OLD, NEW], *both_new(timedelta(minutes=2)), reloads=units), NOW)
    assert not revokes(p) and any("grace" in n for n in p.notes)


def test_done_rollouts_and_pickup_checks_must_both_agree() -> None:
    with_pickup = dataclasses.replace(RELOADING, pickup=(K8S,))  # any config: the planner only counts them
    units = (unit("a", "done", timedelta(minutes=8)),)
    first = plan(with_pickup, obs([OLD, NEW], *both_new(), reloads=units), NOW)
    assert first.needs_pickup == "k2" and not revokes(first)
    lag = (PickupVerdict("http", "k2", False, ("pod-1",)),)
    p = plan(with_pickup, obs([OLD, NEW], *both_new(), reloads=units, pickup=lag), NOW)
    assert not revokes(p)
    ok = (PickupVerdict("http", "k2", True),)
    p = plan(with_pickup, obs([OLD, NEW], *both_new(), reloads=units, pickup=ok), NOW)
    assert revokes(p)


def test_a_timed_out_rollout_is_reported_and_started_again() -> None:
    units = (unit("a", "rolling", timedelta(minutes=16)),)
    p = plan(RELOADING, obs([OLD, NEW], *both_new(timedelta(minutes=20)), reloads=units), NOW)
    assert [r.unit for r in reloads(p)] == ["a"] and not revokes(p)
    assert any(n.startswith(RELOAD_FAILED_NOTE) and "reload_timeout" in n for n in p.notes)


def test_a_failed_rollout_is_retried_once_per_reload_timeout() -> None:
    recent = (unit("a", "failed", timedelta(minutes=3), detail="ProgressDeadlineExceeded"),)
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=recent), NOW)
    assert not reloads(p) and not revokes(p)
    assert any(n.startswith(RELOAD_FAILED_NOTE) for n in p.notes)
    assert p.wake_at == NOW + timedelta(minutes=12)
    old = (unit("a", "failed", timedelta(minutes=15)),)
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=old), NOW)
    assert [r.unit for r in reloads(p)] == ["a"] and not revokes(p)


def test_revoke_after_does_not_override_an_unfinished_reload() -> None:
    hurried = dataclasses.replace(RELOADING, pickup=(K8S,), revoke_after=timedelta(minutes=5))
    units = (unit("a", "failed", timedelta(minutes=1)),)
    lag = (PickupVerdict("http", "k2", False, ("pod-1",)),)
    p = plan(hurried, obs([OLD, NEW], *both_new(timedelta(minutes=30)), reloads=units, pickup=lag), NOW)
    assert not revokes(p)


def test_waiting_and_unknown_units_block_and_start_nothing() -> None:
    for st in ("waiting", "unknown"):
        units = (unit("a", st, detail="the synced Secret does not hold k2 yet"),)
        p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=units), NOW)
        assert not reloads(p) and not revokes(p), st
        assert any(f"a {st}" in n for n in p.notes)


def test_statuses_for_another_key_are_not_evidence() -> None:
    units = (unit("a", "done", timedelta(minutes=30), key_id="k1"),)
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=units), NOW)
    assert not revokes(p)


def test_signals_are_sent_on_every_pass_while_old_keys_wait_and_do_not_block() -> None:
    hook = ReloadStatus("webhook:x", "https://x/reload", "webhook", "k2", "pending", rollout=False, observable=False)
    p = plan(RELOADING, obs([OLD, NEW], *both_new(timedelta(minutes=2)), reloads=(hook,)), NOW)
    assert [r.target for r in reloads(p)] == ["webhook:x"] and not revokes(p)  # grace still runs
    p = plan(RELOADING, obs([OLD, NEW], *both_new(), reloads=(hook,)), NOW)
    assert [r.target for r in reloads(p)] == ["webhook:x"] and revokes(p)


def test_a_policy_without_reload_targets_is_unchanged() -> None:
    p = plan(POLICY, obs([OLD, NEW], *both_new()), NOW)
    assert p.needs_reload is None and revokes(p)


def test_steady_state_observes_no_reloads() -> None:
    p = plan(RELOADING, obs([NEW], state(("k2", True)), state(("k2", True))), NOW)
    assert p.needs_reload is None and not reloads(p) and p.phase == "steady"
