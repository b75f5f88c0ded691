"""The contract every :class:`~rotator.stores.base.SecretStore` keeps, as a pytest test class.

A backend's test module subclasses :class:`StoreContract` and provides four fixtures, each against the real
service or a local server that speaks its protocol (never a patched SDK):

- ``store``: an opened store;
- ``other_store``: a second store opened on the same service (another process's view: its own client, its
  own caches), for the concurrent-promote case;
- ``make_ref``: ``(secret) -> TargetRef``: a fresh secret in that store, with the store's default options;
- ``plant_foreign``: ``(ref, text) -> None``: make ``text`` the secret's current value the way a person or
  another tool would (the service's own API, or a file written by hand), not through rotator.

What it checks, in the words of :class:`~rotator.stores.base.SecretStore`'s docstrings: a missing secret
does not exist; stage is idempotent and reads back exactly; promote makes current, is idempotent, can make an
older staged key current again, and honours ``expect_current`` (a compare-and-set: a stale expectation, or a
concurrent promote by another instance, raises StorePreconditionFailed and changes nothing); retire disables
old versions only, refuses the current one and ignores unknown keys; not-found semantics for read, promote
and retire; a value rotator did not write is reported as foreign and never silently replaced by a stage;
no plaintext in a repr, a state or an error; and the capabilities the store declares are the ones it has.

Run it with ``pytest`` (the ``momento-rotator[testing]`` extra installs it); ``docs/stores/README.md`` shows a whole
backend test module.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from rotator.errors import StoreConflict, StoreError, StoreNotFound, StorePreconditionFailed
from rotator.model import SecretText
from rotator.quotas import Charge
from rotator.stores.base import (
    NativeRotation,
    PreflightProblem,
    SecretStore,
    StoreCapabilities,
    TargetRef,
    VersionMeta,
)

__all__ = ["MakeRef", "PlantForeign", "StoreContract", "meta", "value"]

MakeRef = Callable[[str], TargetRef]
PlantForeign = Callable[[TargetRef, str], None]


def meta(key_id: str, policy: str = "contract") -> VersionMeta:
    """What the engine records beside a new version (a 30-day key of policy ``policy``)."""
    return VersionMeta(
        key_id=key_id,
        policy=policy,
        expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(days=30),
        content_type="application/json",
    )


def value(key_id: str) -> SecretText:
    """A JSON payload naming ``key_id``, with a random part no test could guess (to find it in output)."""
    return SecretText(f'{{"apiKey": "secret-{key_id}-{uuid.uuid4().hex}", "keyId": "{key_id}"}}')


def fresh(make_ref: MakeRef) -> TargetRef:
    return make_ref(f"contract-{uuid.uuid4().hex[:12]}")


def key() -> str:
    return str(uuid.uuid4())


def _rotate_to(store: SecretStore, ref: TargetRef, *key_ids: str) -> None:
    for k in key_ids:
        store.stage(ref, value(k), meta(k))
        store.promote(ref, k)


class StoreContract:
    """Behaviour shared by every store (see the module docstring for the fixtures a subclass provides)."""

    # ---- a new secret ----------------------------------------------------------------------------------

    def test_missing_secret_does_not_exist(self, store: SecretStore, make_ref: MakeRef) -> None:
        state = store.inspect(fresh(make_ref))
        assert not state.exists
        assert state.current_key_id is None

    def test_staged_value_reads_back(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        v = value(k1)
        store.stage(ref, v, meta(k1))
        assert store.read(ref, k1) == v
        state = store.inspect(ref)
        assert state.exists
        assert state.holds(k1)

    def test_promote_makes_current(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        store.stage(ref, value(k1), meta(k1))
        store.promote(ref, k1)
        state = store.inspect(ref)
        assert state.current_key_id == k1
        assert state.current_since is not None
        assert not state.foreign

    # ---- idempotency -----------------------------------------------------------------------------------

    def test_stage_is_idempotent(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        v = value(k1)
        store.stage(ref, v, meta(k1))
        store.stage(ref, v, meta(k1))
        store.promote(ref, k1)
        store.stage(ref, v, meta(k1))
        state = store.inspect(ref)
        assert [x.key_id for x in state.versions].count(k1) == 1
        assert state.current_key_id == k1

    def test_promote_is_idempotent(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        store.stage(ref, value(k1), meta(k1))
        store.promote(ref, k1)
        since = store.inspect(ref).current_since
        store.promote(ref, k1)
        state = store.inspect(ref)
        assert state.current_key_id == k1
        assert state.current_since == since

    # ---- a second key ----------------------------------------------------------------------------------

    def test_second_key_replaces_first_and_first_stays_readable(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1, k2 = fresh(make_ref), key(), key()
        v1, v2 = value(k1), value(k2)
        store.stage(ref, v1, meta(k1))
        store.promote(ref, k1)
        store.stage(ref, v2, meta(k2))
        store.promote(ref, k2)
        state = store.inspect(ref)
        assert state.current_key_id == k2
        assert state.holds(k1)
        assert store.read(ref, k1) == v1
        assert store.read(ref, k2) == v2
        assert [x.key_id for x in state.versions if x.current] == [k2]

    def test_promote_an_older_staged_key_makes_it_current_again(self, store: SecretStore, make_ref: MakeRef) -> None:
        # two passes racing can leave a target current on the older of two new keys; the next pass then
        # promotes the newer one, which some stores hold as an older version
        ref, k1, k2 = fresh(make_ref), key(), key()
        v1 = value(k1)
        store.stage(ref, v1, meta(k1))
        store.stage(ref, value(k2), meta(k2))
        store.promote(ref, k2)
        store.promote(ref, k1)
        assert store.inspect(ref).current_key_id == k1
        assert store.read(ref, k1) == v1

    # ---- compare-and-set -------------------------------------------------------------------------------

    def test_promote_with_the_expected_current_switches(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1, k2 = fresh(make_ref), key(), key()
        store.stage(ref, value(k1), meta(k1))
        store.promote(ref, k1, expect_current=None)  # nothing current yet
        store.stage(ref, value(k2), meta(k2))
        store.promote(ref, k2, expect_current=k1)
        assert store.inspect(ref).current_key_id == k2
        store.promote(ref, k2, expect_current=k1)  # already current: a no-op, whatever was expected
        assert store.inspect(ref).current_key_id == k2

    def test_promote_with_a_stale_expectation_fails_and_changes_nothing(
        self, store: SecretStore, make_ref: MakeRef
    ) -> None:
        ref, k1, k2 = fresh(make_ref), key(), key()
        _rotate_to(store, ref, k1, k2)
        before = store.inspect(ref)
        with pytest.raises(StorePreconditionFailed):
            store.promote(ref, k1, expect_current=k1)  # k2 is current, not k1
        after = store.inspect(ref)
        assert after.current_key_id == k2
        assert after.current_since == before.current_since
        with pytest.raises(StorePreconditionFailed):
            store.promote(ref, k1, expect_current=None)  # a rotator-written key is current, not none

    def test_a_concurrent_promote_by_another_instance_loses(
        self, store: SecretStore, other_store: SecretStore, make_ref: MakeRef
    ) -> None:
        """Two passes (two processes) read k1 as current and each publish a new key. With a conditional
        write (``compare_and_set: conditional``) the second promote, expecting k1, fails and the target holds
        the first writer's key. Without one (``read-then-write``) the store promises less, and the kit checks
        that: nothing is lost, the target holds one of the two new keys and both read back."""
        ref, k1, mine, theirs = fresh(make_ref), key(), key(), key()
        _rotate_to(store, ref, k1)
        assert other_store.inspect(ref).current_key_id == k1
        v_mine, v_theirs = value(mine), value(theirs)
        store.stage(ref, v_mine, meta(mine))
        other_store.stage(ref, v_theirs, meta(theirs))
        other_store.promote(ref, theirs, expect_current=k1)
        refused = False
        try:
            store.promote(ref, mine, expect_current=k1)
        except StorePreconditionFailed:
            refused = True
        if store.capabilities.compare_and_set == "conditional":
            assert refused, "a conditional store let a promote made from a stale view through"
            assert store.inspect(ref).current_key_id == theirs
            assert other_store.inspect(ref).current_key_id == theirs
        else:
            assert other_store.inspect(ref).current_key_id in (mine, theirs)
            assert other_store.read(ref, mine) == v_mine and other_store.read(ref, theirs) == v_theirs

    # ---- retire ----------------------------------------------------------------------------------------

    def test_retire_disables_old_key_only(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1, k2 = fresh(make_ref), key(), key()
        v2 = value(k2)
        store.stage(ref, value(k1), meta(k1))
        store.promote(ref, k1)
        store.stage(ref, v2, meta(k2))
        store.promote(ref, k2)
        store.retire(ref, k1)
        store.retire(ref, k1)  # idempotent
        state = store.inspect(ref)
        assert k1 not in state.enabled_key_ids()
        assert state.current_key_id == k2
        assert store.read(ref, k2) == v2

    def test_retire_refuses_current_key(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        _rotate_to(store, ref, k1)
        with pytest.raises(StoreConflict):
            store.retire(ref, k1)
        assert store.inspect(ref).current_key_id == k1

    def test_retire_unknown_key_is_noop(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        _rotate_to(store, ref, k1)
        store.retire(ref, key())
        assert store.inspect(ref).current_key_id == k1

    # ---- not found -------------------------------------------------------------------------------------

    def test_read_unknown_key_is_not_found(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        store.stage(ref, value(k1), meta(k1))
        with pytest.raises(StoreNotFound):
            store.read(ref, key())

    def test_promote_unknown_key_is_not_found(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = fresh(make_ref), key()
        _rotate_to(store, ref, k1)
        with pytest.raises(StoreNotFound):
            store.promote(ref, key())
        assert store.inspect(ref).current_key_id == k1

    def test_a_missing_secret_is_not_found_to_read_and_promote_and_a_noop_to_retire(
        self, store: SecretStore, make_ref: MakeRef
    ) -> None:
        ref = fresh(make_ref)
        with pytest.raises(StoreNotFound):
            store.read(ref, key())
        with pytest.raises(StoreNotFound):
            store.promote(ref, key())
        store.retire(ref, key())
        assert not store.inspect(ref).exists

    # ---- values rotator did not write ------------------------------------------------------------------

    def test_a_foreign_value_is_reported_and_never_shown(
        self, store: SecretStore, make_ref: MakeRef, plant_foreign: PlantForeign
    ) -> None:
        ref, text = fresh(make_ref), f"hand-written-{uuid.uuid4().hex}"
        plant_foreign(ref, text)
        state = store.inspect(ref)
        assert state.exists and state.foreign
        assert state.current_key_id is None
        assert text not in repr(state) + repr(store)

    def test_a_stage_never_silently_replaces_a_foreign_value(
        self, store: SecretStore, make_ref: MakeRef, plant_foreign: PlantForeign
    ) -> None:
        """Without the target's ``adopt``, staging over a foreign current value either refuses
        (StoreConflict, nothing written) or stages beside it, leaving it current until promote."""
        ref, text, k1 = fresh(make_ref), f"hand-written-{uuid.uuid4().hex}", key()
        plant_foreign(ref, text)
        try:
            store.stage(ref, value(k1), meta(k1))
        except StoreConflict as exc:
            assert text not in str(exc)
            state = store.inspect(ref)
            assert state.foreign and not state.holds(k1)
            return
        state = store.inspect(ref)
        assert state.holds(k1)
        assert state.foreign and state.current_key_id is None

    # ---- no plaintext ----------------------------------------------------------------------------------

    def test_state_and_errors_never_show_values(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1, k2 = fresh(make_ref), key(), key()
        v1, v2 = value(k1), value(k2)
        store.stage(ref, v1, meta(k1))
        store.promote(ref, k1)
        store.stage(ref, v2, meta(k2))
        store.promote(ref, k2)
        shown = repr(store.inspect(ref)) + repr(store) + repr(store.read(ref, k1)) + str(store.read(ref, k1))
        failures: list[StoreError] = []
        for attempt in (
            lambda: store.read(ref, "missing-" + k1),
            lambda: store.promote(ref, k1, expect_current=k1),
            lambda: store.retire(ref, k2),
        ):
            try:
                attempt()
            except StoreError as exc:
                failures.append(exc)
        assert len(failures) == 3, failures
        shown += "".join(str(e) + repr(e) for e in failures)
        for v in (v1, v2):
            assert v.reveal() not in shown
        assert "secret-" + k1 not in shown and "secret-" + k2 not in shown

    # ---- what the store declares -----------------------------------------------------------------------

    def test_the_store_declares_what_it_is(self, store: SecretStore, make_ref: MakeRef) -> None:
        assert isinstance(store, SecretStore)
        caps = store.capabilities
        assert isinstance(caps, StoreCapabilities)
        assert caps.compare_and_set in ("conditional", "read-then-write")
        assert isinstance(store.name, str) and store.name
        if caps.native_rotation:
            assert isinstance(store, NativeRotation)
        problems = store.preflight([fresh(make_ref)])
        assert isinstance(problems, list) and all(isinstance(p, PreflightProblem) for p in problems)
        if not caps.preflight:
            assert problems == []

    def test_the_request_costs_it_declares_are_charges(self, store: SecretStore, make_ref: MakeRef) -> None:
        """What a publish and an inspect cost, per quota scope (the engine orders and admits work by it)."""
        ref = fresh(make_ref)
        for cost in (store.publish_cost(ref), store.inspect_cost(ref)):
            assert isinstance(cost, tuple)
            for charge, n in cost:
                assert isinstance(charge, Charge) and isinstance(n, int) and n >= 1
                assert charge.quota.limit is None or charge.quota.limit >= 1

    def test_a_store_that_stages_as_current_says_so(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1, k2 = fresh(make_ref), key(), key()
        _rotate_to(store, ref, k1)
        store.stage(ref, value(k2), meta(k2))
        current = store.inspect(ref).current_key_id
        assert current == (k2 if store.capabilities.stage_makes_current else k1)
