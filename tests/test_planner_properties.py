"""Property tests of the lifecycle: random sequences of passes, crashes between any two API calls, passes
that interleave, failing stores and clock jumps, run through the real planner and engine over the in-memory
issuer and store. The invariants of DESIGN section 2 are checked at every revocation and after every pass.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config import Config, from_mapping
from rotator.engine import UNSERVED, Engine
from rotator.model import KeyInfo
from rotator.observability import API_CALLS
from tests.support.crash import SimulatedCrash, count_calls, crash_after
from tests.support.memory import MemoryIssuer, MemoryStore, SimClock

GRACE = timedelta(minutes=5)
ORPHAN = timedelta(minutes=10)
INTERVAL = timedelta(minutes=1)
MUTATING = {"create_key", "revoke_key", "stage", "promote", "retire"}


def make_config(policies: int = 2) -> Config:
    return from_mapping(
        {
            "issuer": {"type": "emulator", "endpoint": "cell-1-us-east-1-1.emulator.local"},
            "interval": "1m",
            "clock_skew": "30s",
            "pass_timeout": "5m",
            "drift_check_every": "never",
            "verify_for": "15m",
            "concurrency": 1,
            "defaults": {"lifetime": "1h", "rotate_before": "20m", "grace": "5m", "orphan_after": "10m"},
            "stores": {"a": {"type": "file", "path": "/nonexistent"}, "b": {"type": "file", "path": "/nonexistent"}},
            "policies": [
                {
                    "name": f"p{i}",
                    "role": "operator",
                    "targets": [{"store": "a", "secret": f"s{i}"}, {"store": "b", "secret": f"s{i}", "format": "env"}],
                }
                for i in range(policies)
            ],
        }
    )


class Sim:
    def __init__(self, policies: int = 2) -> None:
        self.clock = SimClock(datetime(2026, 1, 1, tzinfo=UTC))
        self.config = make_config(policies)
        self.issuer = MemoryIssuer(self.clock)
        self.stores = {"a": MemoryStore("a", self.clock), "b": MemoryStore("b", self.clock)}
        self.engine = Engine(
            self.config, self.issuer, self.stores, endpoint="cell-1-us-east-1-1.emulator.local", clock=self.clock
        )
        self.violations: list[str] = []
        self.issuer.on_revoke = self.check_revoke
        self.emergency = False

    def targets(self, policy: str) -> list[tuple[MemoryStore, str]]:
        p = self.config.policy(policy)
        return [(self.stores[t.store], t.secret) for t in p.targets]

    def check_revoke(self, key: KeyInfo) -> None:
        now = self.clock()
        assert key.policy is not None
        for store, secret in self.targets(key.policy):
            current, ended = store.last_current(secret, key.key_id)
            if current:
                self.violations.append(f"revoked {key.key_id} while {store.name}:{secret} holds it as current")
            elif ended is not None and now - ended < GRACE:
                self.violations.append(
                    f"revoked {key.key_id} {now - ended} after {store.name}:{secret} stopped holding it (< grace)"
                )

    def live(self) -> dict[str, KeyInfo]:
        return {k.key_id: k for k in self.issuer.keys.values() if k.key_id not in self.issuer.revoked}

    def check_targets_live(self, where: str) -> None:
        now, live = self.clock(), self.live()
        for p in self.config.names():
            for store, secret in self.targets(p):
                k = store.current_key(secret)
                if k is None and self.backing_off(p):
                    continue  # no key yet, and two keys were lost: the planner waits orphan_after (documented)
                if k is None or k not in live:
                    self.violations.append(f"{where}: {store.name}:{secret} holds {k}, not a live key")
                elif live[k].expires_at is not None and live[k].expires_at <= now:  # type: ignore[operator]
                    self.violations.append(f"{where}: {store.name}:{secret} holds expired key {k}")

    def backing_off(self, policy: str) -> bool:
        now = self.clock()
        held_ever = any(
            store.secrets.get(secret) and store.secrets[secret].history for store, secret in self.targets(policy)
        )
        fresh = [k for k in self.live().values() if k.policy == policy and now - k.issued_at < ORPHAN]
        return not held_ever and len(fresh) >= 2

    def clean_pass(self, where: str, *, check_idempotent: bool = True) -> None:
        # a drift-checking pass: a target that missed a key in a failed pass may otherwise be caught up
        # only by a later drift check, by design
        report = self.engine.run_pass(read_targets=True)
        # a policy backing off (no target ever held a key, two keys lost to crashes: the planner waits
        # orphan_after before creating another, documented) is reported unserved, rightly: nothing else may fail
        failed = [p for p in report.policies if not p.ok]
        assert report.error is None and not report.deadline_passed, report.to_json()
        assert all(p.error == UNSERVED and self.backing_off(p.policy) for p in failed), report.to_json()
        self.check_targets_live(where)
        if check_idempotent:
            with count_calls() as calls:
                again = self.engine.run_pass()
            mutations = [c for c in calls if c[1] in MUTATING]
            if mutations:
                self.violations.append(
                    f"{where}: a second pass at the same time mutated: {mutations} {again.to_json()['counts']}"
                )


step = st.one_of(
    st.tuples(st.just("advance"), st.integers(1, 60)),
    st.tuples(st.just("jump"), st.integers(60, 4 * 3600)),
    st.tuples(st.just("pass"), st.just(0)),
    st.tuples(st.just("crash"), st.integers(1, 14)),
    st.tuples(st.just("fail"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("interleave"), st.integers(0, 2)),
    st.tuples(st.just("interleave-crash"), st.integers(1, 10)),
    st.tuples(st.just("stall"), st.integers(1, 12)),
)


def run_program(program: list[tuple[str, Any]]) -> Sim:
    sim = Sim()
    API_CALLS.reset()
    jumped = True  # until a first clean pass, targets may hold nothing
    for i, (op, arg) in enumerate(program):
        where = f"step {i} {op}({arg})"
        if op == "advance":
            sim.clock.advance(arg)
            # run the pass that the schedule guarantees at least once per interval
            sim.clean_pass(where, check_idempotent=False) if not jumped else sim.engine.run_pass()
        elif op == "jump":
            sim.clock.advance(arg)
            jumped = True
        elif op == "pass":
            sim.clean_pass(where)
            jumped = False
        elif op == "crash":
            try:
                with crash_after(arg):
                    sim.engine.run_pass()
            except SimulatedCrash:
                pass
        elif op == "fail":
            sim.stores[arg].failing = True
            try:
                sim.engine.run_pass()
            finally:
                sim.stores[arg].failing = False
        elif op == "interleave":
            # pass A observes and plans; B runs whole passes (and time moves a little); then A acts on what
            # it saw, which may be stale
            stale = sim.engine.observe()
            for _ in range(arg):
                sim.engine.run_pass()
                sim.clock.advance(20)
            sim.engine.execute(stale)
        elif op == "interleave-crash":
            stale = sim.engine.observe()
            try:
                with crash_after(arg):
                    sim.engine.run_pass()
            except SimulatedCrash:
                pass
            sim.engine.execute(stale)
        elif op == "stall":
            # pass A observes and plans, then stalls (no deadline here: this is the compare-and-set's test)
            # while other passes go on for up to an hour, then acts on its old plan
            stale = sim.engine.observe()
            for _ in range(arg):
                sim.clock.advance(300)
                sim.engine.run_pass()
            sim.engine.execute(stale)
        assert not sim.violations, sim.violations
    return sim


def converge(sim: Sim) -> None:
    """Two clean passes converge; after grace and orphan_after, no orphan is left."""
    sim.clean_pass("converge 1")
    sim.clean_pass("converge 2")
    for p in sim.config.names():
        held = {store.current_key(secret) for store, secret in sim.targets(p)}
        assert len(held) == 1, f"{p}: targets disagree after two passes: {held}"
    sim.clock.advance((GRACE + ORPHAN).total_seconds() + 1)
    sim.clean_pass("settle 1")
    sim.clean_pass("settle 2")
    now = sim.clock()
    for p in sim.config.names():
        keys = [k for k in sim.live().values() if k.policy == p]
        held = {store.current_key(secret) for store, secret in sim.targets(p)}
        assert len(held) == 1
        (active,) = held
        for k in keys:
            if k.key_id == active:
                continue
            ever_held = any(store.last_current(secret, k.key_id) != (False, None) for store, secret in sim.targets(p))
            if not ever_held:
                assert now - k.issued_at < ORPHAN, f"{p}: orphan {k.key_id} left behind"
            else:
                since = max(s.secrets[sec].current_since for s, sec in sim.targets(p))  # type: ignore[type-var]
                assert now - since < GRACE, f"{p}: old key {k.key_id} kept past grace"
        assert len(keys) <= 3, f"{p}: {len(keys)} live keys"
    assert not sim.violations, sim.violations


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=30))
def test_invariants_hold_over_random_programs(program: list[tuple[str, Any]]) -> None:
    sim = run_program(program)
    converge(sim)


def test_three_rotations_keep_one_live_key_per_policy() -> None:
    sim = Sim()
    sim.clean_pass("start")
    for _ in range(3 * 40):
        sim.clock.advance(60)
        sim.clean_pass("tick", check_idempotent=False)
    created = [k for k in sim.issuer.created if sim.issuer.keys[k].policy == "p0"]
    assert len(created) >= 3
    assert not sim.violations
    # every revoked key was revoked at least grace after its replacement became current
    live_p0 = [k for k in sim.live().values() if k.policy == "p0"]
    assert 1 <= len(live_p0) <= 2


def test_crash_between_every_pair_of_calls_converges() -> None:
    # measure how many calls a rotation takes, then crash after each of them in turn
    probe = Sim(policies=1)
    probe.clean_pass("start")
    probe.clock.advance(41 * 60)
    with count_calls() as calls:
        probe.engine.run_pass()
    n = len(calls)
    assert n >= 6
    for k in range(1, n + 1):
        sim = Sim(policies=1)
        sim.clean_pass("start")
        sim.clock.advance(41 * 60)
        try:
            with crash_after(k):
                sim.engine.run_pass()
        except SimulatedCrash:
            pass
        converge(sim)
