"""Stale plans and stalled passes (issue 10): every mutation re-checks fresh state, and the pass deadline stops
a pass that ran past ``pass_timeout``. In-process, over the in-memory issuer and stores, for breadth; the proof
with real processes and signals is tests/chaos/.
"""

from __future__ import annotations

from typing import Any

from rotator.engine import Engine
from rotator.model import IssuedKey, Revoke
from rotator.stores.base import TargetRef
from tests.test_planner_properties import Sim


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rotated(sim: Sim) -> tuple[str, str]:
    """Bring p0 to a finished rotation past grace: (old key, new key), the old one due for revocation."""
    sim.clean_pass("start")
    old = sim.stores["a"].current_key("s0")
    sim.clock.advance(41 * 60)  # past rotate_before (20m of a 1h lifetime)
    sim.clean_pass("rotate", check_idempotent=False)
    new = sim.stores["a"].current_key("s0")
    assert old and new and old != new
    sim.clock.advance(6 * 60)  # past grace (5m)
    return old, new


def test_a_stale_revoke_is_skipped_when_a_target_holds_the_key_again() -> None:
    sim = Sim(policies=1)
    old, _new = rotated(sim)
    stale = sim.engine.observe()
    assert Revoke("p0", old, "replaced", ("a:s0", "b:s0")) in stale.policies[0].plan.actions  # type: ignore[union-attr]
    # after the plan was made, target a:s0 went back to the old key (another writer, a rollback)
    sim.stores["a"].promote(TargetRef("a", "s0", "p0"), old)
    sim.engine.execute(stale)
    (result,) = stale.policies[0].results
    assert result.ok and result.skipped and f"holds key {old} as current" in result.skipped
    assert old not in sim.issuer.revoked
    assert not sim.violations


def test_a_plan_made_before_another_pass_created_a_key_does_not_create_a_second_one() -> None:
    sim = Sim(policies=1)
    sim.clean_pass("start")
    sim.clock.advance(41 * 60)
    stale = sim.engine.observe()  # plans a create
    assert any(a.kind == "create" for a in stale.policies[0].plan.actions)  # type: ignore[union-attr]
    sim.engine.run_pass()  # another pass creates and publishes the new key
    created = len(sim.issuer.created)
    sim.engine.execute(stale)
    assert len(sim.issuer.created) == created
    (result,) = [r for r in stale.policies[0].results if r.action.kind == "create"]
    assert result.skipped and "another pass created key" in result.skipped


class RacingStore:
    """Runs ``during`` (another pass) right after this pass stages, before it promotes: the window the
    re-list before create cannot close, which the promote's compare-and-set must."""

    def __init__(self, inner: Any, during: Any) -> None:
        self._inner, self._during, self.name = inner, during, inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def stage(self, *a: Any, **k: Any) -> None:
        self._inner.stage(*a, **k)
        during, self._during = self._during, None
        if during is not None:
            during()


class BlindIssuer:
    def __init__(self, inner: Any, hide: Any) -> None:
        self._inner, self._hide = inner, hide

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def list_keys(self) -> list[Any]:
        hidden = self._hide()
        return [k for k in self._inner.list_keys() if k.key_id not in hidden]


def test_a_pass_that_loses_the_promote_race_stops_publishing_its_key() -> None:
    sim = Sim(policies=1)
    sim.clean_pass("start")
    sim.clock.advance(41 * 60)
    # the other pass listed the keys before this one created its key, so it does not know it
    blind = BlindIssuer(sim.issuer, hide=lambda: {sim.issuer.created[-1]})
    other = Engine(sim.config, blind, sim.stores, endpoint=sim.engine.endpoint, clock=sim.clock)  # type: ignore[arg-type]
    racing = {"a": RacingStore(sim.stores["a"], lambda: other.run_pass()), "b": sim.stores["b"]}
    mine = Engine(sim.config, sim.issuer, racing, endpoint=other.endpoint, clock=sim.clock)  # type: ignore[arg-type]
    report = mine.run_pass()
    (result,) = [r for r in report.policies[0].results if r.action.kind == "create"]
    lost = result.key_id
    # the other pass took our staged, unlisted (to it) copy in a:s0 for a leftover and retired it, so our
    # read-back failed there; in b:s0 the other pass's key arrived between our stage and our promote
    assert "disabled" in result.detail["a:s0"]
    assert result.skipped and "b:s0 changed while publishing" in result.skipped
    winner = sim.stores["a"].current_key("s0")
    assert winner != lost and sim.stores["b"].current_key("s0") == winner
    # the loser's staged copy was disabled at once: it is never served, and it is revoked in time
    assert all(not v.enabled for v in sim.stores["a"].secrets["s0"].versions if v.key_id == lost)
    sim.clock.advance(11 * 60)
    sim.clean_pass("settle", check_idempotent=False)
    assert lost in sim.issuer.revoked
    assert not sim.violations


class StallingIssuer:
    """An issuer whose create_key takes ``stall`` seconds of monotonic time (a paused process, a hung call)."""

    def __init__(self, inner: Any, mono: FakeMonotonic, stall: float) -> None:
        self._inner, self._mono, self._stall = inner, mono, stall

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_key(self, *a: Any, **k: Any) -> IssuedKey:
        issued: IssuedKey = self._inner.create_key(*a, **k)
        self._mono.t += self._stall
        return issued


def test_a_pass_past_its_deadline_starts_no_further_mutation() -> None:
    sim = Sim(policies=2)
    sim.clean_pass("start")
    sim.clock.advance(41 * 60)
    mono = FakeMonotonic()
    issuer = StallingIssuer(sim.issuer, mono, stall=301)  # pass_timeout is 5m
    engine = Engine(
        sim.config,
        issuer,
        sim.stores,
        endpoint=sim.engine.endpoint,
        clock=sim.clock,
        monotonic=mono,  # type: ignore[arg-type]
    )
    before = {n: s.mutations for n, s in sim.stores.items()}
    report = engine.run_pass()
    assert report.deadline_passed and not report.ok and report.exit_code == 1
    assert report.to_json()["deadline_passed"] is True
    assert len(sim.issuer.created) == 3  # the first pass's two keys, then one: the second policy's never started
    assert {n: s.mutations for n, s in sim.stores.items()} == before  # nothing staged after the stall
    results = [r for p in report.policies for r in p.results]
    assert len(results) == 1 and results[0].deadline and "deadline passed" in (results[0].error or "")
    # the next pass (a fresh deadline) publishes the key the stalled pass created, or sweeps it
    assert sim.engine.run_pass().ok
    sim.check_targets_live("after")
    assert not sim.violations
