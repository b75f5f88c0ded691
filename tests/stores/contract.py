"""The contract every SecretStore keeps. A backend's test module subclasses :class:`StoreContract` and
provides two fixtures: ``store`` (an opened store) and ``make_ref`` (``(secret) -> TargetRef`` for a fresh
secret in that store).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from rotator.errors import StoreConflict, StoreNotFound
from rotator.model import SecretText
from rotator.stores.base import SecretStore, TargetRef, VersionMeta

MakeRef = Callable[[str], TargetRef]


def _meta(key_id: str, policy: str = "contract") -> VersionMeta:
    return VersionMeta(
        key_id=key_id,
        policy=policy,
        expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(days=30),
        content_type="application/json",
    )


def _value(key_id: str) -> SecretText:
    return SecretText(f'{{"apiKey": "secret-{key_id}-{uuid.uuid4().hex}", "keyId": "{key_id}"}}')


def _fresh(make_ref: MakeRef) -> TargetRef:
    return make_ref(f"contract-{uuid.uuid4().hex[:12]}")


class StoreContract:
    """Behaviour shared by every store."""

    def test_missing_secret_does_not_exist(self, store: SecretStore, make_ref: MakeRef) -> None:
        state = store.inspect(_fresh(make_ref))
        assert not state.exists
        assert state.current_key_id is None

    def test_staged_value_reads_back(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        value = _value(k1)
        store.stage(ref, value, _meta(k1))
        assert store.read(ref, k1) == value
        state = store.inspect(ref)
        assert state.exists
        assert state.holds(k1)

    def test_promote_makes_current(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        store.stage(ref, _value(k1), _meta(k1))
        store.promote(ref, k1)
        state = store.inspect(ref)
        assert state.current_key_id == k1
        assert state.current_since is not None
        assert not state.foreign

    def test_stage_is_idempotent(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        value = _value(k1)
        store.stage(ref, value, _meta(k1))
        store.stage(ref, value, _meta(k1))
        store.promote(ref, k1)
        store.stage(ref, value, _meta(k1))
        state = store.inspect(ref)
        assert [v.key_id for v in state.versions].count(k1) == 1
        assert state.current_key_id == k1

    def test_promote_is_idempotent(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        store.stage(ref, _value(k1), _meta(k1))
        store.promote(ref, k1)
        since = store.inspect(ref).current_since
        store.promote(ref, k1)
        state = store.inspect(ref)
        assert state.current_key_id == k1
        assert state.current_since == since

    def test_second_key_replaces_first_and_first_stays_readable(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1, k2 = _fresh(make_ref), str(uuid.uuid4()), str(uuid.uuid4())
        v1, v2 = _value(k1), _value(k2)
        store.stage(ref, v1, _meta(k1))
        store.promote(ref, k1)
        store.stage(ref, v2, _meta(k2))
        store.promote(ref, k2)
        state = store.inspect(ref)
        assert state.current_key_id == k2
        assert state.holds(k1)
        assert store.read(ref, k1) == v1
        assert store.read(ref, k2) == v2
        current = [v for v in state.versions if v.current]
        assert [v.key_id for v in current] == [k2]

    def test_promote_an_older_staged_key_makes_it_current_again(self, store: SecretStore, make_ref: MakeRef) -> None:
        # two passes racing can leave a target current on the older of two new keys; the next pass then
        # promotes the newer one, which some stores hold as an older version
        ref, k1, k2 = _fresh(make_ref), str(uuid.uuid4()), str(uuid.uuid4())
        v1 = _value(k1)
        store.stage(ref, v1, _meta(k1))
        store.stage(ref, _value(k2), _meta(k2))
        store.promote(ref, k2)
        store.promote(ref, k1)
        state = store.inspect(ref)
        assert state.current_key_id == k1
        assert store.read(ref, k1) == v1

    def test_retire_disables_old_key_only(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1, k2 = _fresh(make_ref), str(uuid.uuid4()), str(uuid.uuid4())
        v2 = _value(k2)
        store.stage(ref, _value(k1), _meta(k1))
        store.promote(ref, k1)
        store.stage(ref, v2, _meta(k2))
        store.promote(ref, k2)
        store.retire(ref, k1)
        store.retire(ref, k1)  # idempotent
        state = store.inspect(ref)
        assert k1 not in state.enabled_key_ids()
        assert state.current_key_id == k2
        assert store.read(ref, k2) == v2

    def test_retire_refuses_current_key(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        store.stage(ref, _value(k1), _meta(k1))
        store.promote(ref, k1)
        with pytest.raises(StoreConflict):
            store.retire(ref, k1)
        assert store.inspect(ref).current_key_id == k1

    def test_retire_unknown_key_is_noop(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        store.stage(ref, _value(k1), _meta(k1))
        store.promote(ref, k1)
        store.retire(ref, str(uuid.uuid4()))
        assert store.inspect(ref).current_key_id == k1

    def test_read_unknown_key_is_not_found(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        store.stage(ref, _value(k1), _meta(k1))
        with pytest.raises(StoreNotFound):
            store.read(ref, str(uuid.uuid4()))

    def test_promote_unknown_key_is_not_found(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        store.stage(ref, _value(k1), _meta(k1))
        store.promote(ref, k1)
        with pytest.raises(StoreNotFound):
            store.promote(ref, str(uuid.uuid4()))
        assert store.inspect(ref).current_key_id == k1

    def test_state_and_errors_never_show_values(self, store: SecretStore, make_ref: MakeRef) -> None:
        ref, k1 = _fresh(make_ref), str(uuid.uuid4())
        value = _value(k1)
        store.stage(ref, value, _meta(k1))
        store.promote(ref, k1)
        shown = repr(store.inspect(ref)) + repr(store) + repr(store.read(ref, k1)) + str(store.read(ref, k1))
        try:
            store.read(ref, "missing-" + k1)
        except StoreNotFound as exc:
            shown += str(exc) + repr(exc)
        assert value.reveal() not in shown
        assert "secret-" + k1 not in shown
