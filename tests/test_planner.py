"""The lifecycle rules, one scenario each, on hand-made observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotator.config import Policy
from rotator.model import (
    CreateKey,
    KeyInfo,
    Observation,
    PickupVerdict,
    Publish,
    Retire,
    Revoke,
    SecretState,
    StoredVersion,
    TargetObservation,
)
from rotator.planner import Options, due_at, plan
from tests.test_planner_properties import make_config

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY: Policy = make_config(1).policy("p0")  # lifetime 1h, rotate_before 20m, grace 5m, orphan_after 10m
A, B = (t.id for t in POLICY.targets)


def key(key_id: str, issued_ago: timedelta, lifetime: timedelta | None = timedelta(hours=1)) -> KeyInfo:
    issued = NOW - issued_ago
    return KeyInfo(key_id, "r-operator", "x [rotator:p0]", issued, issued + lifetime if lifetime else None)


def state(*versions: tuple[str, bool], since: timedelta = timedelta(hours=1)) -> SecretState:
    vs = tuple(StoredVersion(f"v-{k}", k, NOW - since, current) for k, current in versions)
    cur = next((k for k, c in versions if c), None)
    return SecretState(True, vs, cur, NOW - since if cur else None)


def obs(keys: list[KeyInfo], a: SecretState | None, b: SecretState | None, **kw: object) -> Observation:
    targets = {
        A: TargetObservation(A, a, None if a else "unreachable"),
        B: TargetObservation(B, b, None if b else "unreachable"),
    }
    return Observation(tuple(keys), targets, **kw)  # type: ignore[arg-type]


def test_steady_state_needs_no_store_reads() -> None:
    p = plan(POLICY, Observation((key("k1", timedelta(minutes=10)),)), NOW)
    assert p.phase == "steady" and not p.needs_targets and p.actions == ()
    assert p.wake_at == NOW + timedelta(minutes=30)


def test_a_young_key_is_verified_in_the_stores() -> None:
    p = plan(POLICY, Observation((key("k1", timedelta(minutes=10)),)), NOW, Options(verify_for=timedelta(hours=1)))
    assert p.needs_targets


def test_due_key_asks_for_the_stores() -> None:
    p = plan(POLICY, Observation((key("k1", timedelta(minutes=45)),)), NOW)
    assert p.needs_targets


def test_no_key_creates_one() -> None:
    p = plan(POLICY, obs([], SecretState(False), SecretState(False)), NOW)
    assert p.phase == "no-key" and p.actions == (CreateKey("p0", p.actions[0].reason),)  # type: ignore[union-attr]


def test_due_key_is_replaced() -> None:
    k1 = key("k1", timedelta(minutes=45))
    p = plan(POLICY, obs([k1], state(("k1", True)), state(("k1", True))), NOW)
    assert p.phase == "due" and isinstance(p.actions[0], CreateKey)


def test_due_time_allows_for_clock_skew() -> None:
    k1 = key("k1", timedelta(minutes=39, seconds=45))
    assert due_at(POLICY, k1, timedelta(seconds=30)) == k1.issued_at + timedelta(minutes=39, seconds=30)
    p = plan(
        POLICY, obs([k1], state(("k1", True)), state(("k1", True))), NOW, Options(clock_skew=timedelta(seconds=30))
    )
    assert isinstance(p.actions[0], CreateKey)


def test_fresh_unheld_key_is_waited_for_not_duplicated() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=2))
    p = plan(POLICY, obs([k1, k2], state(("k1", True)), state(("k1", True))), NOW)
    assert not any(isinstance(a, CreateKey) for a in p.actions)
    assert p.wake_at == k2.issued_at + POLICY.orphan_after


def test_pending_key_is_not_waited_for_when_the_wait_would_eat_the_margin() -> None:
    # found by the chaos stall run: a pass died after creating k2 late in k1's life; waiting out orphan_after
    # for it would leave k1 2 minutes (less than grace) when the next key is made, so a key is made now
    k1, k2 = key("k1", timedelta(minutes=50)), key("k2", timedelta(minutes=2))
    p = plan(POLICY, obs([k1, k2], state(("k1", True)), state(("k1", True))), NOW)
    assert p.phase == "due" and any(isinstance(a, CreateKey) for a in p.actions)
    assert not any("waiting for key" in n for n in p.notes)


def test_the_wait_for_a_pending_key_leaves_room_for_grace_and_the_next_pass() -> None:
    # k1 expires in 15m, k2's wait ends in 8m: 7m left, enough for grace (5m) alone, not with a 3m interval
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=2))
    o = obs([k1, k2], state(("k1", True)), state(("k1", True)))
    assert not any(
        isinstance(a, CreateKey) for a in plan(POLICY, o, NOW, Options(interval=timedelta(minutes=2))).actions
    )
    assert any(isinstance(a, CreateKey) for a in plan(POLICY, o, NOW, Options(interval=timedelta(minutes=3))).actions)


def test_a_pending_key_older_than_the_pass_deadline_is_not_waited_for() -> None:
    # its creator starts no mutation after pass_timeout: past that (and clock_skew) nobody will publish it
    k1, k2 = key("k1", timedelta(minutes=41)), key("k2", timedelta(minutes=3))
    o = obs([k1, k2], state(("k1", True)), state(("k1", True)))
    waits = plan(POLICY, o, NOW, Options(pass_timeout=timedelta(minutes=5)))
    assert not any(isinstance(a, CreateKey) for a in waits.actions)
    assert waits.wake_at == k2.issued_at + timedelta(minutes=5)
    p = plan(POLICY, o, NOW, Options(pass_timeout=timedelta(minutes=2), clock_skew=timedelta(seconds=30)))
    assert any(isinstance(a, CreateKey) for a in p.actions)
    assert Revoke("p0", "k2", "orphan: created but never stored", (), orphan=True) not in p.actions  # swept later


def test_expired_key_is_replaced_even_while_another_is_pending() -> None:
    k1, k2 = key("k1", timedelta(minutes=61)), key("k2", timedelta(minutes=2))
    p = plan(POLICY, obs([k1, k2], state(("k1", True)), state(("k1", True))), NOW)
    assert p.phase == "expired" and any(isinstance(a, CreateKey) for a in p.actions)


def test_orphan_is_swept_after_orphan_after() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=11))
    p = plan(POLICY, obs([k1, k2], state(("k1", True)), state(("k1", True))), NOW)
    assert Revoke("p0", "k2", "orphan: created but never stored", (), orphan=True) in p.actions
    assert any(isinstance(a, CreateKey) for a in p.actions)


def test_partially_published_key_is_copied_to_the_other_target() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=1))
    p = plan(POLICY, obs([k1, k2], state(("k1", False), ("k2", True)), state(("k1", True))), NOW)
    assert p.actions == (Publish("p0", "k2", B, A),)
    assert p.phase == "publishing"


def test_staged_but_not_promoted_key_is_finished() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=1))
    p = plan(POLICY, obs([k1, k2], state(("k1", True), ("k2", False)), state(("k1", True))), NOW)
    assert set(p.actions) == {Publish("p0", "k2", A, A), Publish("p0", "k2", B, A)}


def test_old_key_is_kept_during_grace() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=3))
    a = state(("k1", False), ("k2", True), since=timedelta(minutes=3))
    p = plan(POLICY, obs([k1, k2], a, a), NOW)
    assert p.actions == () and p.phase == "awaiting-pickup"
    assert p.wake_at == NOW + timedelta(minutes=2)


def test_old_key_is_retired_then_revoked_after_grace() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=6))
    a = state(("k1", False), ("k2", True), since=timedelta(minutes=6))
    p = plan(POLICY, obs([k1, k2], a, a), NOW)
    assert p.actions == (Revoke("p0", "k1", "replaced", (A, B)),)


def test_grace_counts_from_the_last_target() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=9))
    early = state(("k1", False), ("k2", True), since=timedelta(minutes=9))
    late = state(("k1", False), ("k2", True), since=timedelta(minutes=1))
    p = plan(POLICY, obs([k1, k2], early, late), NOW)
    assert not any(isinstance(a, Revoke) for a in p.actions)


def test_unreadable_target_blocks_revocation() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=30))
    a = state(("k1", False), ("k2", True), since=timedelta(minutes=30))
    p = plan(POLICY, obs([k1, k2], a, None), NOW)
    assert p.actions == ()
    assert any("could not be read" in n for n in p.notes)


def test_failed_pickup_blocks_revocation_and_emergency_does_not_wait() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=1))
    a = state(("k1", False), ("k2", True), since=timedelta(minutes=1))
    lag = (PickupVerdict("http", "k2", False, ("http://c1",)),)
    p = plan(POLICY, obs([k1, k2], a, a, pickup=lag), NOW)
    assert not any(isinstance(x, Revoke) for x in p.actions)
    e = plan(POLICY, obs([k1, k2], a, a, pickup=lag), NOW, Options(emergency=True))
    assert Revoke("p0", "k1", "emergency: replaced", (A, B)) in e.actions


def test_key_vanished_from_issuer_is_replaced_loudly() -> None:
    p = plan(POLICY, obs([], state(("gone", True)), state(("gone", True))), NOW)
    assert isinstance(p.actions[0], CreateKey)
    assert any(n.startswith("!") and "no longer lists" in n for n in p.notes)


def test_versions_of_keys_the_issuer_dropped_are_retired() -> None:
    k2 = key("k2", timedelta(minutes=30))
    a = state(("k1", False), ("k2", True), since=timedelta(minutes=30))
    p = plan(POLICY, obs([k2], a, state(("k2", True))), NOW)
    assert p.actions == (Retire("p0", "k1", A, "the issuer no longer lists this key"),)


def test_never_expiring_keys_rotate_every() -> None:
    never = Policy(**{**POLICY.__dict__, "lifetime": None, "rotate_before": None, "rotate_every": timedelta(days=7)})
    k1 = key("k1", timedelta(days=8), lifetime=None)
    assert due_at(never, k1) == k1.issued_at + timedelta(days=7)
    p = plan(never, obs([k1], state(("k1", True)), state(("k1", True))), NOW)
    assert isinstance(p.actions[0], CreateKey)


def test_plan_is_pure() -> None:
    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=6))
    a = state(("k1", False), ("k2", True), since=timedelta(minutes=6))
    o = obs([k1, k2], a, a)
    assert plan(POLICY, o, NOW) == plan(POLICY, o, NOW)


def test_unreadable_target_blocks_the_orphan_sweep() -> None:
    # found by the property test: the unreadable target may be the one that holds the "orphan"
    k1 = key("k1", timedelta(minutes=30))
    p = plan(POLICY, obs([k1], None, SecretState(False)), NOW)
    assert not any(isinstance(a, Revoke) for a in p.actions)


def test_two_lost_keys_and_no_key_held_backs_off() -> None:
    k1, k2 = key("k1", timedelta(minutes=3)), key("k2", timedelta(minutes=1))
    p = plan(POLICY, obs([k1, k2], SecretState(False), SecretState(False)), NOW)
    assert not any(isinstance(a, CreateKey) for a in p.actions)
    one = plan(POLICY, obs([k2], SecretState(False), SecretState(False)), NOW)
    assert any(isinstance(a, CreateKey) for a in one.actions)


def test_keys_issued_in_the_same_second_prefer_the_current_one() -> None:
    # the issuer dates keys to the second; found by the native-rotation test, where the old key won the tie
    k_old, k_new = key("kz-old", timedelta(minutes=10)), key("ka-new", timedelta(minutes=10))
    a = state(("kz-old", False), ("ka-new", True), since=timedelta(minutes=1))
    p = plan(POLICY, obs([k_old, k_new], a, a), NOW)
    assert p.current_key == "ka-new"
    assert not any(isinstance(x, Publish) for x in p.actions)


def test_a_target_its_native_rotation_writes_is_observed_not_written() -> None:
    """Issue 11 item 3: one writer per secret. A due policy whose target A is rotated natively by rotator's
    own rotation function creates no key; the key that rotation staged (AWSPENDING) is neither copied nor
    revoked; once it is current there, the pass copies it to B and revokes the old key after grace."""
    from dataclasses import replace

    k1, k2 = key("k1", timedelta(minutes=45)), key("k2", timedelta(minutes=1))
    a = state(("k1", True), ("k2", False))
    a = replace(a, native=True, versions=(a.versions[0], replace(a.versions[1], pending=True)))
    p = plan(POLICY, obs([k1, k2], a, state(("k1", True))), NOW)
    assert not any(isinstance(x, CreateKey | Publish | Revoke) for x in p.actions), p.actions
    # the native rotation finished: k2 is current in A, k1 is AWSPREVIOUS
    done = replace(state(("k2", True), ("k1", False), since=timedelta(minutes=10)), native=True)
    p = plan(POLICY, obs([k1, k2], done, state(("k1", True))), NOW)
    assert p.actions == (Publish("p0", "k2", B, A),)
    p = plan(POLICY, obs([k1, k2], done, state(("k2", True), ("k1", False), since=timedelta(minutes=6))), NOW)
    assert Revoke("p0", "k1", "replaced", (A, B)) in p.actions
    # the same due policy without native rotation creates a key
    p = plan(POLICY, obs([k1], state(("k1", True)), state(("k1", True))), NOW)
    assert any(isinstance(x, CreateKey) for x in p.actions)
