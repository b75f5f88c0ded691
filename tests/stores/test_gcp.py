"""The GCP Secret Manager store, driven through the real client (REST transport) against the local server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager
from pydantic import ValidationError

from rotator.errors import (
    StoreConflict,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.model import SecretText
from rotator.quotas import RateLimits
from rotator.stores.base import TargetRef, VersionMeta
from rotator.stores.gcp import GcpSecretManagerStore, StoreConfig, TargetOptions, key_id_in, open_store
from tests.servers.gcp_secretmanager import DESTROYED, DISABLED, ENABLED, SecretManagerServer, running_secretmanager
from tests.stores.contract import MakeRef, StoreContract
from tests.support.crash import SimulatedCrash, count_calls, crash_after

PROJECT = "test-project"
SERVICE = "gcp-secretmanager"


@pytest.fixture(scope="module")
def server() -> Iterator[SecretManagerServer]:
    with running_secretmanager() as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(server: SecretManagerServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


StoreFactory = Callable[..., GcpSecretManagerStore]


@pytest.fixture
def make_store(server: SecretManagerServer) -> Iterator[StoreFactory]:
    opened: list[GcpSecretManagerStore] = []

    def make(
        *,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        limits: RateLimits | None = None,
        **cfg: Any,
    ) -> GcpSecretManagerStore:
        body: dict[str, Any] = {
            "type": "gcp",
            "project": PROJECT,
            "transport": "rest",
            "retry": {"attempts": 4, "initial_backoff": 0.001, "max_backoff": 0.005},
        }
        body.update(cfg)
        s = open_store(
            "sm-test",
            StoreConfig.model_validate(body),
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": server.endpoint},
            clock=clock,
            sleep=sleep,
            limits=limits if limits is not None else RateLimits(enabled=False),  # the quotas: test_quotas_gcp.py
        )
        assert isinstance(s, GcpSecretManagerStore)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store: StoreFactory) -> GcpSecretManagerStore:
    return make_store()


def _ref(secret: str, policy: str = "contract", **opts: Any) -> TargetRef:
    return TargetRef("sm-test", secret, policy, TargetOptions(store="sm-test", secret=secret, **opts))


@pytest.fixture
def make_ref() -> MakeRef:
    return _ref


class TestGcpContract(StoreContract):
    @pytest.fixture
    def other_store(self, make_store: StoreFactory) -> GcpSecretManagerStore:
        return make_store()

    @pytest.fixture
    def plant_foreign(self, server: SecretManagerServer) -> Callable[[TargetRef, str], None]:
        return lambda ref, text: server.put_version(PROJECT, ref.secret, text.encode())


# ---- helpers -----------------------------------------------------------------------------------------------


def _fresh_ref(**opts: Any) -> TargetRef:
    return _ref(f"gcp-{uuid.uuid4().hex[:12]}", **opts)


def _key() -> str:
    return str(uuid.uuid4())


def _meta(key_id: str) -> VersionMeta:
    return VersionMeta(key_id, "contract", datetime(2030, 1, 1, tzinfo=UTC), "application/json")


def _value(key_id: str) -> SecretText:
    return SecretText(json.dumps({"apiKey": f"secret-{uuid.uuid4().hex}", "endpoint": "cell.example", "keyId": key_id}))


def _rotate(store: GcpSecretManagerStore, ref: TargetRef, key_id: str | None = None) -> tuple[str, SecretText]:
    k = key_id or _key()
    v = _value(k)
    store.stage(ref, v, _meta(k))
    assert store.read(ref, k) == v
    store.promote(ref, k)
    return k, v


def _access(server: SecretManagerServer, ref: TargetRef, version: str) -> str:
    client = secretmanager.SecretManagerServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": server.endpoint}
    )
    try:
        resp = client.access_secret_version(name=f"projects/{PROJECT}/secrets/{ref.secret}/versions/{version}")
        return bytes(resp.payload.data).decode()
    finally:
        client.transport.close()


def _entries(server: SecretManagerServer, ref: TargetRef) -> dict[int, dict[str, Any]]:
    ann = server.secret(PROJECT, ref.secret).annotations
    return {int(k.removeprefix("rotator-v")): json.loads(v) for k, v in ann.items() if k.startswith("rotator-v")}


def _versions_holding(server: SecretManagerServer, ref: TargetRef, key_id: str) -> list[int]:
    s = server.secret(PROJECT, ref.secret)
    return sorted(
        n for n, v in s.versions.items() if v.data is not None and key_id_in(v.data.decode()) == key_id
    )


# ---- what is written where ---------------------------------------------------------------------------------


def test_labels_annotations_and_aliases(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    k1, _ = _rotate(store, ref)
    k2, v2 = _rotate(store, ref)
    s = server.secret(PROJECT, ref.secret)
    assert s.labels == {"managed-by": "rotator", "rotator-policy": "contract"}
    assert s.aliases == {"current": 2, "previous": 1}
    assert s.annotations["rotator-schema"] == "1"
    entries = _entries(server, ref)
    assert {n: (e["key"], e["state"]) for n, e in entries.items()} == {1: (k1, "live"), 2: (k2, "live")}
    assert entries[2]["expires"] == "2030-01-01T00:00:00Z"
    assert "promoted_at" in entries[2]
    assert _access(server, ref, "current") == v2.reveal()
    assert _access(server, ref, "latest") == v2.reveal()


def test_versions_are_sent_with_crc32c(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    _rotate(store, ref)
    assert server.secret(PROJECT, ref.secret).versions[1].client_checksum


def test_server_rejects_crc32c_mismatch(server: SecretManagerServer) -> None:
    client = secretmanager.SecretManagerServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": server.endpoint}
    )
    client.create_secret(parent=f"projects/{PROJECT}", secret_id="crc", secret={"replication": {"automatic": {}}})
    with pytest.raises(gexc.BadRequest, match="Checksum mismatch"):
        client.add_secret_version(
            request={"parent": f"projects/{PROJECT}/secrets/crc", "payload": {"data": b"abc", "data_crc32c": 12345}}
        )
    assert server.secret(PROJECT, "crc").versions == {}
    client.transport.close()


def test_user_managed_replication_and_project_override(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    store = make_store(replication={"locations": ["us-east1", "europe-west4"]})
    ref = _fresh_ref(project="other-project-1")
    _rotate(store, ref)
    s = server.secret("other-project-1", ref.secret)
    assert s.replication == {"userManaged": {"replicas": [{"location": "us-east1"}, {"location": "europe-west4"}]}}


def test_inspect_in_steady_state_is_one_get(store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    k, _ = _rotate(store, ref)
    with count_calls(SERVICE) as calls:
        state = store.inspect(ref)
    assert [op for _, op, _ in calls] == ["GetSecret"]
    assert state.current_key_id == k
    assert [v.version for v in state.versions if v.current] == ["1"]


# ---- calls per rotation ------------------------------------------------------------------------------------


def test_calls_per_rotation(store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    with count_calls(SERVICE) as first:
        store.inspect(ref)
        k1, _ = _rotate(store, ref)
    assert [op for _, op, _ in first] == [
        "GetSecret",
        "CreateSecret",
        "AddSecretVersion",
        "AccessSecretVersion",
        "UpdateSecret",
    ]
    with count_calls(SERVICE) as second:
        store.inspect(ref)
        k2, v2 = _rotate(store, ref)
    assert [op for _, op, _ in second] == [
        "GetSecret",
        "UpdateSecret",
        "AddSecretVersion",
        "AccessSecretVersion",
        "UpdateSecret",
    ]
    with count_calls(SERVICE) as again:  # a pass repeating the publish right after changes nothing
        store.stage(ref, v2, _meta(k2))
        store.promote(ref, k2)
    assert again == []
    with count_calls(SERVICE) as retire:
        store.retire(ref, k1)
    assert [op for _, op, _ in retire] == ["DisableSecretVersion", "UpdateSecret"]


# ---- retire, disable, destroy ------------------------------------------------------------------------------


def test_retire_disables_and_latest_still_resolves_to_current(
    server: SecretManagerServer, store: GcpSecretManagerStore
) -> None:
    ref = _fresh_ref()
    k1, _ = _rotate(store, ref)
    _, v2 = _rotate(store, ref)
    store.retire(ref, k1)
    s = server.secret(PROJECT, ref.secret)
    assert s.versions[1].state == DISABLED
    assert s.versions[2].state == ENABLED
    assert s.aliases == {"current": 2}  # `previous` pointed at the retired version
    assert _entries(server, ref)[1]["state"] == "retired"
    assert _access(server, ref, "latest") == v2.reveal()
    assert _access(server, ref, "current") == v2.reveal()


def test_retire_destroys_versions_disabled_long_enough(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = make_store(destroy_after="7d", clock=lambda: now[0])
    ref = _fresh_ref()
    k1, _ = _rotate(store, ref)
    k2, _ = _rotate(store, ref)
    store.retire(ref, k1)
    now[0] += timedelta(days=6)
    k3, _ = _rotate(store, ref)
    store.retire(ref, k2)
    s = server.secret(PROJECT, ref.secret)
    assert (s.versions[1].state, s.versions[2].state) == (DISABLED, DISABLED)  # 6 days: not yet
    now[0] += timedelta(days=2)
    _rotate(store, ref)
    store.retire(ref, k3)
    assert s.versions[1].state == DESTROYED
    assert s.versions[2].state == DISABLED  # disabled only 2 days ago
    assert sorted(_entries(server, ref)) == [2, 3, 4]


def test_a_year_of_weekly_rotations_destroys_every_version_due(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    """Issue 11 item 8: with keep_retired 3 and destroy_after 30d, pruning the bookkeeping used to forget
    versions before they were due, so nothing was ever destroyed and old versions stayed DISABLED, untracked."""
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = make_store(keep_retired=3, destroy_after="30d", clock=lambda: now[0])
    ref = _fresh_ref()
    keys = [_rotate(store, ref)[0]]
    per_week: list[int] = []
    for _ in range(52):
        now[0] += timedelta(days=7)
        with count_calls(SERVICE) as calls:
            store.inspect(ref)
            keys.append(_rotate(store, ref)[0])
            now[0] += timedelta(hours=1)  # grace
            store.inspect(ref)
            store.retire(ref, keys[-2])
        per_week.append(len(calls))
        now[0] -= timedelta(hours=1)
    s = server.secret(PROJECT, ref.secret)
    entries = _entries(server, ref)
    states = {n: v.state for n, v in s.versions.items()}
    assert len(states) == 53
    disabled = sorted(n for n, st in states.items() if st == DISABLED)
    # retired weekly, destroyed by the first retire 30 days or more later: the last 5 retired are still due
    assert disabled == list(range(48, 53))
    assert all(states[n] == DESTROYED for n in range(1, 48))
    assert all(entries[n]["state"] == "retired" for n in disabled)  # every version still to destroy is tracked
    assert sorted(entries) == [*disabled, 53]  # destroyed versions are forgotten, nothing else
    assert states[53] == ENABLED and s.aliases == {"current": 53}
    # per rotation: the calls do not grow (one DestroySecretVersion more once versions come due)
    assert max(per_week) - min(per_week) <= 1 and per_week[-1] == per_week[10]


def test_versions_due_for_destruction_are_never_pruned_over_the_budget(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = make_store(keep_retired=0, destroy_after="400d", clock=lambda: now[0])
    ref = _fresh_ref()
    keys = [_rotate(store, ref)[0]]
    for _ in range(70):  # 70 full entries do not fit in the annotations budget: retired ones are shortened
        now[0] += timedelta(days=1)
        keys.append(_rotate(store, ref)[0])
        store.retire(ref, keys[-2])
    entries = _entries(server, ref)
    assert sorted(entries) == list(range(1, 72))
    assert all(entries[n]["state"] == "retired" and "retired_at" in entries[n] for n in range(1, 71))


def test_retiring_a_staged_key_above_current_leaves_latest_on_the_current_key(
    server: SecretManagerServer, store: GcpSecretManagerStore
) -> None:
    """Issue 11 item 7: `latest` is the most recently created version whatever its state. A key staged and
    never promoted (a pass that died, an orphan) and then retired left a DISABLED version above the current
    one, so every consumer reading `latest` got FAILED_PRECONDITION."""
    ref = _fresh_ref()
    k1, v1 = _rotate(store, ref)
    k2 = _stage(store, ref)  # version 2, never promoted
    store.inspect(ref)
    store.retire(ref, k2)  # the planner retires the orphan before revoking it
    s = server.secret(PROJECT, ref.secret)
    assert s.versions[2].state == DISABLED
    latest = s.latest()
    assert latest is not None and latest.state == ENABLED
    assert _access(server, ref, "latest") == v1.reveal()
    assert _access(server, ref, "current") == v1.reveal()
    state = store.inspect(ref)
    assert state.current_key_id == k1
    assert store.read(ref, k1) == v1
    # the key's versions are all retired with it later
    _rotate(store, ref)
    store.retire(ref, k1)
    s = server.secret(PROJECT, ref.secret)
    assert [n for n, v in s.versions.items() if v.state == ENABLED] == [max(s.versions)]
    assert _versions_holding(server, ref, k1) == [1, 3]


def test_destroy_after_must_be_at_least_an_hour() -> None:
    with pytest.raises(ValidationError, match="destroy_after must be at least 1h"):
        StoreConfig(type="gcp", project=PROJECT, destroy_after="10m")  # type: ignore[arg-type]


def test_old_retired_entries_are_pruned(server: SecretManagerServer, make_store: StoreFactory) -> None:
    store = make_store(keep_retired=2)
    ref = _fresh_ref()
    keys = [_rotate(store, ref)[0]]
    for _ in range(5):
        keys.append(_rotate(store, ref)[0])
        store.retire(ref, keys[-2])
    entries = _entries(server, ref)
    assert sorted(entries) == [4, 5, 6]
    assert [entries[n]["state"] for n in (4, 5, 6)] == ["retired", "retired", "live"]
    assert all(server.secret(PROJECT, ref.secret).versions[n].state == DISABLED for n in range(1, 6))


# ---- concurrency: two passes racing on the etag ------------------------------------------------------------


def test_two_stores_staging_on_stale_etags_both_land(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    a, b = make_store(), make_store()
    ref = _fresh_ref()
    _rotate(a, ref)
    a.inspect(ref)
    b.inspect(ref)  # b now holds a copy that a's next write makes stale
    ka, va = _key(), _value("x")
    kb, vb = _key(), _value("y")
    a.stage(ref, va, _meta(ka))
    b.stage(ref, vb, _meta(kb))
    assert server.count("UpdateSecret", status=400) == 1  # b lost the etag race once, re-read and redid it
    assert a.read(ref, kb) == vb
    assert b.read(ref, ka) == va
    entries = _entries(server, ref)
    assert {entries[n]["key"] for n in (2, 3)} == {ka, kb}
    a.promote(ref, ka)
    assert a.inspect(ref).current_key_id == ka


def test_an_etag_conflict_backs_off_before_the_retry(server: SecretManagerServer, make_store: StoreFactory) -> None:
    """Issue 11 item 5: a stale etag is retried after a pause, not at once (few writes/s per secret)."""
    slept: list[float] = []
    a = make_store()
    b = make_store(sleep=slept.append, retry={"attempts": 3, "initial_backoff": "200ms", "max_backoff": "1s"})
    ref = _fresh_ref()
    _rotate(a, ref)
    b.inspect(ref)
    _stage(a, ref)  # b's copy is stale now
    _stage(b, ref)
    assert server.count("UpdateSecret", status=400) == 1
    assert len(slept) == 1 and 0.1 <= slept[0] <= 0.2


def test_addversion_numbers_swapped_by_a_concurrent_stage_are_settled(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    """a records v2 and is about to add; b (stale copy) records v3 but adds first and gets 2; a then gets 3.
    Both move their entries to the numbers they got, and no entry points at the other key's version."""
    a, b = make_store(), make_store()
    ref = _fresh_ref()
    _rotate(a, ref)
    b.inspect(ref)
    ka, kb = _key(), _key()
    va, vb = _value(ka), _value(kb)
    fired = threading.Event()

    def before(method: str, op: str, path: str) -> None:
        if op == "AddSecretVersion" and not fired.is_set():
            fired.set()
            b.stage(ref, vb, _meta(kb))  # runs to completion while a's addVersion waits

    server.before = before
    a.stage(ref, va, _meta(ka))
    server.before = None
    assert _versions_holding(server, ref, kb) == [2]
    assert _versions_holding(server, ref, ka) == [3]
    entries = _entries(server, ref)
    assert (entries[2]["key"], entries[3]["key"]) == (kb, ka)
    assert a.read(ref, ka) == va and a.read(ref, kb) == vb
    state = a.inspect(ref)
    assert {v.key_id for v in state.versions} >= {ka, kb}


def test_promote_and_retire_racing_both_apply(server: SecretManagerServer, make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    ref = _fresh_ref()
    k0, _ = _rotate(a, ref)
    k1, _ = _rotate(a, ref)
    k2, v2 = _key(), _value("z")
    a.stage(ref, v2, _meta(k2))
    a.inspect(ref)
    b.inspect(ref)
    a.promote(ref, k2)  # current 3, previous 2
    b.retire(ref, k0)  # on a stale copy: disables v1, then its PATCH conflicts, re-reads and redoes
    s = server.secret(PROJECT, ref.secret)
    assert s.aliases == {"current": 3, "previous": 2}
    assert s.versions[1].state == DISABLED
    entries = _entries(server, ref)
    assert (entries[1]["state"], entries[2]["key"], entries[3]["state"]) == ("retired", k1, "live")
    assert server.count("UpdateSecret", status=400) == 1
    assert _access(server, ref, "latest") == v2.reveal()


def test_many_concurrent_stages_each_get_their_own_version(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    ref = _fresh_ref()
    _rotate(make_store(), ref)
    stores = [make_store(conflict_retries=30) for _ in range(5)]
    keys = [_key() for _ in stores]
    values = [_value(k) for k in keys]
    for s in stores:
        s.inspect(ref)
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            stores[i].stage(ref, values[i], _meta(keys[i]))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(server.secret(PROJECT, ref.secret).versions) == 1 + len(stores)
    entries = _entries(server, ref)
    for k, v in zip(keys, values, strict=True):
        [n] = _versions_holding(server, ref, k)
        assert entries[n]["key"] == k
        assert stores[0].read(ref, k) == v


def test_retire_racing_a_promote_of_the_same_key_undoes_its_disable(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    a, b = make_store(), make_store()
    ref = _fresh_ref()
    _rotate(a, ref)
    k2, v2 = _key(), _value("w")
    a.stage(ref, v2, _meta(k2))
    b.inspect(ref)  # b sees k2 staged, not current: retirable (e.g. an orphan sweep)
    fired = threading.Event()

    def before(method: str, op: str, path: str) -> None:
        if op == "DisableSecretVersion" and not fired.is_set():
            fired.set()
            a.promote(ref, k2)  # lands while b's disable is on its way

    server.before = before
    with pytest.raises(StoreConflict, match="became current while it was being retired"):
        b.retire(ref, k2)
    server.before = None
    s = server.secret(PROJECT, ref.secret)
    assert s.aliases["current"] == 2
    assert s.versions[2].state == ENABLED
    assert _access(server, ref, "current") == v2.reveal()


# ---- promote as a compare-and-set -------------------------------------------------------------------------


def _stage(store: GcpSecretManagerStore, ref: TargetRef) -> str:
    k = _key()
    store.stage(ref, _value(k), _meta(k))
    return k


def test_promote_with_the_expected_current_switches(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    k1 = _stage(store, ref)
    store.promote(ref, k1, expect_current=None)  # nothing current yet
    k2 = _stage(store, ref)
    store.promote(ref, k2, expect_current=k1)
    assert server.secret(PROJECT, ref.secret).aliases == {"current": 2, "previous": 1}
    store.promote(ref, k2, expect_current=k1)  # promoting the current key again: a no-op, whatever expected
    assert store.inspect(ref).current_key_id == k2


def test_promote_refuses_when_another_pass_promoted_first(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    a, b = make_store(), make_store()
    ref = _fresh_ref()
    k1, _ = _rotate(a, ref)
    assert a.inspect(ref).current_key_id == k1
    k2 = _stage(a, ref)
    k3 = _stage(b, ref)
    b.promote(ref, k3, expect_current=k1)
    before = dict(server.secret(PROJECT, ref.secret).annotations)
    with pytest.raises(StorePreconditionFailed, match=f"holds key {k3}, not {k1}"):
        a.promote(ref, k2, expect_current=k1)
    s = server.secret(PROJECT, ref.secret)
    assert s.aliases["current"] == 3
    assert s.annotations == before  # nothing changed
    assert a.inspect(ref).current_key_id == k3


def test_promote_refuses_when_a_writer_switches_between_its_read_and_its_write(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    """The alias update carries the etag read with the alias: a switch landing in between fails it (400), and
    the re-read finds the current key is no longer the expected one."""
    a, b = make_store(), make_store()
    ref = _fresh_ref()
    k1, _ = _rotate(a, ref)
    k2 = _stage(a, ref)
    k3 = _stage(b, ref)
    a.inspect(ref)  # a's copy: k1 current, k2 and k3 staged
    fired = threading.Event()

    def before(method: str, op: str, path: str) -> None:
        if op == "UpdateSecret" and not fired.is_set():
            fired.set()
            b.promote(ref, k3)  # lands while a's UpdateSecret is on its way

    server.before = before
    with pytest.raises(StorePreconditionFailed):
        a.promote(ref, k2, expect_current=k1)
    server.before = None
    assert server.count("UpdateSecret", status=400) == 1  # a's conditional write was refused on the etag
    s = server.secret(PROJECT, ref.secret)
    assert s.aliases == {"current": 3, "previous": 1}
    assert _entries(server, ref)[2]["state"] == "staged"
    assert _access(server, ref, "current") == a.read(ref, k3).reveal()


def test_promote_on_a_stale_cached_copy_checks_a_fresh_read(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    a, b = make_store(), make_store()
    ref = _fresh_ref()
    _rotate(a, ref)
    k2 = _stage(a, ref)  # a's cache: k1 current
    k3 = _stage(b, ref)
    b.promote(ref, k3)
    a.promote(ref, k2, expect_current=k3)  # the caller read k3 as current after a's cache was filled
    assert server.secret(PROJECT, ref.secret).aliases == {"current": 2, "previous": 3}


def test_promote_expecting_nothing_refuses_a_current_version(
    server: SecretManagerServer, store: GcpSecretManagerStore
) -> None:
    ref = _fresh_ref()
    k1, _ = _rotate(store, ref)
    k2 = _stage(store, ref)
    with pytest.raises(StorePreconditionFailed):
        store.promote(ref, k2, expect_current=None)
    assert store.inspect(ref).current_key_id == k1


# ---- eventual consistency (issue 11 item 6) ---------------------------------------------------------------


def test_under_lagging_metadata_reads_a_store_sees_its_own_writes(
    server: SecretManagerServer, store: GcpSecretManagerStore
) -> None:
    """GetSecret, aliases and `latest` may answer with an older state; reading a version by number may not."""
    server.stale_for = 60.0  # every metadata read answers with the state of a minute ago (here: the creation)
    ref = _fresh_ref()
    k1, v1 = _rotate(store, ref)  # the read-back reads version 1 by its number
    with pytest.raises(gexc.NotFound):
        _access(server, ref, "current")  # a consumer does not see the alias yet
    state = store.inspect(ref)  # the GetSecret answer predates the promote: it is recognised as stale
    assert state.current_key_id == k1
    k2, v2 = _rotate(store, ref)
    assert store.inspect(ref).current_key_id == k2
    assert store.read(ref, k1) == v1
    store.retire(ref, k1)
    server.stale_for = 0.0
    s = server.secret(PROJECT, ref.secret)
    assert s.aliases == {"current": 2} and s.versions[1].state == DISABLED
    assert _access(server, ref, "current") == v2.reveal()


def test_a_stale_etag_from_a_lagging_read_backs_off_until_the_write_lands(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    a = make_store()
    slept: list[float] = []
    b = make_store(sleep=lambda t: (slept.append(t), time.sleep(t)), conflict_retries=20,
                   retry={"attempts": 4, "initial_backoff": "50ms", "max_backoff": "100ms"})
    ref = _fresh_ref()
    _rotate(a, ref)
    server.stale_for = 0.4
    k2 = _stage(a, ref)  # b's reads keep answering with the secret as it was before this, for 0.4 s
    k3 = _stage(b, ref)
    server.stale_for = 0.0
    assert server.count("UpdateSecret", status=400) >= 1 and len(slept) >= 1
    entries = _entries(server, ref)
    assert {entries[n]["key"] for n in (2, 3)} == {k2, k3}
    assert _versions_holding(server, ref, k3) != [] and len(server.secret(PROJECT, ref.secret).versions) == 3


def test_grace_starts_after_the_promote_is_visible_to_every_reader(
    server: SecretManagerServer, make_store: StoreFactory
) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    store = make_store(clock=lambda: t0, visibility_lag="2m")
    ref = _fresh_ref()
    _rotate(store, ref)
    assert store.inspect(ref).current_since == t0 + timedelta(minutes=2)
    assert StoreConfig(type="gcp", project=PROJECT).visibility_lag == timedelta(minutes=5)


# ---- crashes between calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_stage_after_a_crash_adds_the_key_once(make_store: StoreFactory, server: SecretManagerServer, n: int) -> None:
    ref = _fresh_ref()
    _rotate(make_store(), ref)
    k = _key()
    v = _value(k)
    with pytest.raises(SimulatedCrash), crash_after(n, service=SERVICE):
        make_store().stage(ref, v, _meta(k))  # GetSecret, UpdateSecret (entry), AddSecretVersion
    rerun = make_store()
    rerun.stage(ref, v, _meta(k))
    assert _versions_holding(server, ref, k) == [2]
    assert rerun.read(ref, k) == v
    rerun.promote(ref, k)
    assert rerun.inspect(ref).current_key_id == k


@pytest.mark.parametrize("n", [1, 2, 3])
def test_first_stage_after_a_crash_adds_the_key_once(
    make_store: StoreFactory, server: SecretManagerServer, n: int
) -> None:
    ref = _fresh_ref()
    k = _key()
    v = _value(k)
    with pytest.raises(SimulatedCrash), crash_after(n, service=SERVICE):
        make_store().stage(ref, v, _meta(k))  # GetSecret (404), CreateSecret, AddSecretVersion
    rerun = make_store()
    rerun.stage(ref, v, _meta(k))
    assert _versions_holding(server, ref, k) == [1]
    assert rerun.read(ref, k) == v


def test_recovery_recognises_the_key_in_a_differently_rendered_payload(
    make_store: StoreFactory, server: SecretManagerServer
) -> None:
    ref = _fresh_ref()
    _rotate(make_store(), ref)
    k = _key()
    with pytest.raises(SimulatedCrash), crash_after(3, service=SERVICE):
        make_store().stage(ref, _value(k), _meta(k))
    again = _value(k)  # same key id, other bytes (e.g. copied from another target)
    make_store().stage(ref, again, _meta(k))
    assert _versions_holding(server, ref, k) == [2]


def test_entry_without_a_version_is_not_reported(make_store: StoreFactory) -> None:
    ref = _fresh_ref()
    _rotate(make_store(), ref)
    k = _key()
    with pytest.raises(SimulatedCrash), crash_after(2, service=SERVICE):
        make_store().stage(ref, _value(k), _meta(k))  # died after recording the entry, before addVersion
    assert not make_store().inspect(ref).holds(k)


def test_promote_of_an_entry_whose_version_was_never_added_is_not_found(make_store: StoreFactory) -> None:
    ref = _fresh_ref()
    k1, _ = _rotate(make_store(), ref)
    k = _key()
    with pytest.raises(SimulatedCrash), crash_after(2, service=SERVICE):
        make_store().stage(ref, _value(k), _meta(k))
    store = make_store()
    with pytest.raises(StoreNotFound, match="stage it again"):
        store.promote(ref, k)
    assert store.inspect(ref).current_key_id == k1


def test_version_added_by_someone_else_moves_the_entry(
    make_store: StoreFactory, server: SecretManagerServer, store: GcpSecretManagerStore
) -> None:
    ref = _fresh_ref()
    _rotate(store, ref)
    server.put_version(PROJECT, ref.secret, b"hand-written")  # becomes v2
    k, _ = _rotate(make_store(), ref)
    assert _versions_holding(server, ref, k) == [3]
    entries = _entries(server, ref)
    assert sorted(entries) == [1, 3]
    assert entries[3]["key"] == k
    assert store.inspect(ref).current_key_id == k


# ---- foreign secrets ---------------------------------------------------------------------------------------


def test_foreign_secret_is_reported_and_not_overwritten(
    server: SecretManagerServer, store: GcpSecretManagerStore
) -> None:
    ref = _fresh_ref()
    server.put_version(PROJECT, ref.secret, b"someone else's value")
    state = store.inspect(ref)
    assert state.exists and state.foreign and state.current_key_id is None
    k = _key()
    with pytest.raises(StoreConflict, match="adopt"):
        store.stage(ref, _value(k), _meta(k))
    assert len(server.secret(PROJECT, ref.secret).versions) == 1


def test_adopt_takes_over_a_foreign_secret(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref(adopt=True)
    server.put_version(PROJECT, ref.secret, b"someone else's value")
    k, v = _rotate(store, ref)
    state = store.inspect(ref)
    assert state.current_key_id == k and not state.foreign
    assert _access(server, ref, "latest") == v.reveal()
    assert server.secret(PROJECT, ref.secret).labels["managed-by"] == "rotator"


def test_empty_precreated_secret_is_used(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    client = secretmanager.SecretManagerServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": server.endpoint}
    )
    client.create_secret(parent=f"projects/{PROJECT}", secret_id=ref.secret, secret={"replication": {"automatic": {}}})
    client.transport.close()
    assert not store.inspect(ref).foreign
    k, _ = _rotate(store, ref)
    assert store.inspect(ref).current_key_id == k


def test_secret_of_another_policy_is_refused(store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    _rotate(store, ref)
    other = TargetRef(ref.store, ref.secret, "someone-else", ref.options)
    k = _key()
    with pytest.raises(StoreConflict, match="managed by rotator policy 'contract'"):
        store.stage(other, _value(k), _meta(k))


# ---- throttling and errors ---------------------------------------------------------------------------------


def test_429_and_503_are_retried(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    server.fail_next(503, op="GetSecret")
    server.fail_next(429, times=2, op="AddSecretVersion")
    with count_calls(SERVICE) as calls:
        k, _ = _rotate(store, ref)
    assert [(op, st) for _, op, st in calls if op in ("GetSecret", "AddSecretVersion")] == [
        ("GetSecret", "503"),
        ("GetSecret", "404"),
        ("AddSecretVersion", "429"),
        ("AddSecretVersion", "429"),
        ("AddSecretVersion", "200"),
    ]
    assert store.inspect(ref).current_key_id == k


@pytest.mark.parametrize("status", [503, 504, 500, 0])
def test_an_addversion_whose_answer_was_lost_is_not_sent_again(
    server: SecretManagerServer, store: GcpSecretManagerStore, status: int
) -> None:
    """Issue 11 item 5: the version was made but the answer lost (0: the connection reset). Resending would
    make a second ENABLED version of the key; rotator reads the next version number back and finds it."""
    ref = _fresh_ref()
    _rotate(store, ref)
    k = _key()
    v = _value(k)
    server.fail_next(status, op="AddSecretVersion", after=True)
    with count_calls(SERVICE) as calls:
        store.stage(ref, v, _meta(k))
    assert _versions_holding(server, ref, k) == [2]
    assert len(server.secret(PROJECT, ref.secret).versions) == 2
    assert [op for _, op, _ in calls].count("AddSecretVersion") == 1
    assert store.read(ref, k) == v
    store.promote(ref, k)
    assert store.inspect(ref).current_key_id == k


def test_an_addversion_that_did_not_land_is_sent_again_after_looking(
    server: SecretManagerServer, store: GcpSecretManagerStore
) -> None:
    ref = _fresh_ref()
    _rotate(store, ref)
    k = _key()
    server.fail_next(503, op="AddSecretVersion")  # refused before anything was made
    with count_calls(SERVICE) as calls:
        store.stage(ref, _value(k), _meta(k))
    assert [(op, st) for _, op, st in calls if op != "GetSecret"] == [
        ("UpdateSecret", "200"),
        ("AddSecretVersion", "503"),
        ("AccessSecretVersion", "404"),  # version 2 does not exist: it was not made
        ("AddSecretVersion", "200"),
    ]
    assert _versions_holding(server, ref, k) == [2]


def test_retries_stop_at_the_deadline(server: SecretManagerServer, make_store: StoreFactory) -> None:
    store = make_store(retry={"attempts": 30, "initial_backoff": "20ms", "max_backoff": "20ms", "deadline": "0.1s"})
    server.fail_next(503, times=30, op="GetSecret")
    with count_calls(SERVICE) as calls, pytest.raises(StoreUnavailable, match="GetSecret kept failing"):
        store.inspect(_fresh_ref())
    assert 2 <= len(calls) < 30


def test_default_retries_outlast_a_per_minute_quota() -> None:
    retry = StoreConfig(type="gcp", project=PROJECT).retry
    assert retry.deadline >= timedelta(seconds=60)
    waits = [min(retry.initial_backoff.total_seconds() * retry.multiplier**i, retry.max_backoff.total_seconds())
             for i in range(retry.attempts - 1)]
    assert sum(waits) / 2 >= 60  # full jitter: on average half of each ceiling


def test_random_throttling_is_absorbed(server: SecretManagerServer, make_store: StoreFactory) -> None:
    store = make_store(retry={"attempts": 10, "initial_backoff": 0.001, "max_backoff": 0.002})
    ref = _fresh_ref()
    server.fail_rate, server.fail_rate_status = 0.3, 429
    keys = [_rotate(store, ref)[0] for _ in range(3)]
    server.fail_rate = 0.0
    assert server.count(status=429) > 0
    assert store.inspect(ref).current_key_id == keys[-1]
    assert len(server.secret(PROJECT, ref.secret).versions) == 3


def test_persistent_503_is_unavailable(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    server.fail_next(503, times=10, op="GetSecret")
    with count_calls(SERVICE) as calls, pytest.raises(StoreUnavailable, match="GetSecret kept failing") as err:
        store.inspect(_fresh_ref())
    assert len(calls) == 4  # retry.attempts
    assert "sm-test" in str(err.value)


@pytest.mark.parametrize(
    ("op", "role"),
    [
        ("AddSecretVersion", "roles/secretmanager.secretVersionAdder"),
        ("CreateSecret", "roles/secretmanager.admin"),
        ("AccessSecretVersion", "roles/secretmanager.secretAccessor"),
        ("UpdateSecret", "roles/secretmanager.admin"),
    ],
)
def test_403_names_the_secret_and_the_role(
    server: SecretManagerServer, store: GcpSecretManagerStore, op: str, role: str
) -> None:
    ref = _fresh_ref()
    if op != "CreateSecret":
        _rotate(store, ref)
    server.deny(op)
    with pytest.raises(StorePermissionError) as err:
        _rotate(store, ref)
    msg = str(err.value)
    assert role in msg and ref.secret in msg and "sm-test" in msg


def test_retire_needs_the_version_manager_role(server: SecretManagerServer, store: GcpSecretManagerStore) -> None:
    ref = _fresh_ref()
    k1, _ = _rotate(store, ref)
    _rotate(store, ref)
    server.deny("DisableSecretVersion")
    with pytest.raises(StorePermissionError, match=r"roles/secretmanager\.secretVersionManager"):
        store.retire(ref, k1)


# ---- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("project", ["my-project-123", "abcdef", "123456789012"])
def test_valid_projects(project: str) -> None:
    assert StoreConfig(type="gcp", project=project).project == project


@pytest.mark.parametrize("project", ["My-Project", "proj", "1project", "my_project", "project-", "a" * 31, ""])
def test_invalid_project_is_rejected(project: str) -> None:
    with pytest.raises(ValidationError, match="is not a GCP project: use a project id"):
        StoreConfig(type="gcp", project=project)


@pytest.mark.parametrize("secret", ["momento/checkout", "has.dot", "", "x" * 256, "spa ce"])
def test_invalid_secret_id_is_rejected(secret: str) -> None:
    with pytest.raises(ValidationError, match="is not a valid Secret Manager secret id"):
        TargetOptions(store="sm", secret=secret)


def test_invalid_target_project_and_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="is not a GCP project"):
        TargetOptions(store="sm", secret="ok", project="Nope")
    with pytest.raises(ValidationError, match="Extra inputs"):
        TargetOptions.model_validate({"store": "sm", "secret": "ok", "region": "us-east1"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        StoreConfig.model_validate({"type": "gcp", "project": PROJECT, "vault_url": "x"})


def test_bad_replication_location_is_rejected() -> None:
    with pytest.raises(ValidationError, match="not GCP locations"):
        StoreConfig.model_validate({"type": "gcp", "project": PROJECT, "replication": {"locations": ["Mars"]}})


def test_missing_credentials_file_is_a_permission_error(tmp_path: Any) -> None:
    cfg = StoreConfig(type="gcp", project=PROJECT, transport="rest", credentials_file=str(tmp_path / "nope.json"))
    with pytest.raises(StorePermissionError, match="credentials_file"):
        open_store("sm", cfg)


def test_unsupported_credentials_file_type_is_named(tmp_path: Any) -> None:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"type": "gdch_service_account"}))
    cfg = StoreConfig(type="gcp", project=PROJECT, transport="rest", credentials_file=str(path))
    with pytest.raises(StorePermissionError, match="unsupported credentials type 'gdch_service_account'"):
        open_store("sm", cfg)


def test_grpc_transport_is_the_default() -> None:
    store = open_store("sm", StoreConfig(type="gcp", project=PROJECT), credentials=AnonymousCredentials())
    assert isinstance(store, GcpSecretManagerStore)
    assert "grpc" in type(store._client.transport).__name__.lower()
    store.close()
    store.close()


def test_module_import_does_not_import_google() -> None:
    code = (
        "import sys, rotator.stores.gcp\n"
        "loaded = [m for m in sys.modules if m == 'google' or m.startswith('google.')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- payload parsing ---------------------------------------------------------------------------------------


def _jwt(claims: dict[str, Any]) -> str:
    def seg(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{seg({'alg': 'HS256', 'typ': 'JWT'})}.{seg(claims)}.c2ln"


def test_key_id_in_every_payload_format() -> None:
    key = _jwt({"jti": "key-1", "t": "g"})
    assert key_id_in(json.dumps({"apiKey": key, "keyId": "key-1"})) == "key-1"
    assert key_id_in(f"MOMENTO_API_KEY={key}\nMOMENTO_ENDPOINT=e\nMOMENTO_KEY_ID=key-1\n") == "key-1"
    assert key_id_in(f"MOMENTO_API_KEY={key}\nMOMENTO_ENDPOINT=e\n") == "key-1"
    assert key_id_in(key) == "key-1"
    assert key_id_in("not a key") is None
    assert key_id_in("{broken") is None


# ---- end to end with the engine and the Momento emulator --------------------------------------------------

ENDPOINT = "cell-4-us-west-2-1.prod.a.momentohq.com"


class _World:
    """The Momento emulator, the engine and a GCP store on the local server, sharing one fake clock."""

    def __init__(self, server: SecretManagerServer, tmp: Any, make_store: StoreFactory) -> None:
        from rotator.config import from_mapping
        from rotator.issuers.emulator import Emulator
        from rotator.issuers.momento import MomentoIssuer

        self.server = server
        self.make_store = make_store
        self.now = float(int(datetime(2030, 1, 1, tzinfo=UTC).timestamp()))
        self.emulator = Emulator(tmp / "emu.db", clock=lambda: self.now, bootstrap_key_file=tmp / "owner.key", seed=1)
        self.emulator.start()
        self.issuer = MomentoIssuer(self.emulator.url, self.emulator.bootstrap_key, timeout=5.0, sleep=lambda s: None)
        self.config = from_mapping(
            {
                "issuer": {"type": "emulator", "endpoint": ENDPOINT},
                "defaults": {"lifetime": "30d", "rotate_before": "25%", "grace": "1h", "orphan_after": "15m"},
                "drift_check_every": "never",
                "stores": {"sm": {"type": "gcp", "project": PROJECT, "transport": "rest"}},
                "policies": [
                    {
                        "name": "checkout",
                        "role": "operator",
                        "targets": [
                            {"store": "sm", "secret": "momento-checkout"},
                            {"store": "sm", "secret": "momento-checkout-env", "format": "env"},
                        ],
                    }
                ],
            }
        )
        self.secrets = ("momento-checkout", "momento-checkout-env")
        self.restart()

    def clock(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def restart(self) -> None:
        """A new process: a new engine and a new store client (nothing cached)."""
        from rotator.engine import Engine

        self.store = self.make_store(clock=self.clock)
        self.engine = Engine(self.config, self.issuer, {"sm": self.store}, endpoint=ENDPOINT, clock=self.clock)

    def run(self) -> Any:
        return self.engine.run_pass()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def close(self) -> None:
        self.issuer.close()
        self.emulator.stop()

    def live_keys(self) -> list[str]:
        return [k.key_id for k in self.issuer.list_keys() if k.policy == "checkout"]

    def assert_converged(self) -> str:
        """One live key at the issuer; every target holds it as current, once, and `latest` resolves to it."""
        [live] = self.live_keys()
        for secret in self.secrets:
            ref = _ref(secret, "checkout")
            state = self.store.inspect(ref)
            assert state.current_key_id == live, secret
            s = self.server.secret(PROJECT, secret)
            held = [key_id_in(v.data.decode()) for v in s.versions.values() if v.data is not None]
            assert len(held) == len(set(held)), f"a key was added twice to {secret}"
            latest = s.latest()
            assert latest is not None and latest.data is not None
            assert key_id_in(latest.data.decode()) == live
            enabled = {key_id_in(v.data.decode()) for v in s.versions.values() if v.state == ENABLED and v.data}
            assert enabled <= {live} | set(self.live_keys())
        return live


@pytest.fixture
def world(server: SecretManagerServer, tmp_path: Any, make_store: StoreFactory) -> Iterator[_World]:
    w = _World(server, tmp_path, make_store)
    yield w
    w.close()


DAY = 86400.0


def test_three_rotations_end_to_end(world: _World) -> None:
    with count_calls(SERVICE) as first:
        report = world.run()
    assert report.ok
    assert len(first) == 5 * len(world.secrets)
    keys = [world.assert_converged()]
    for _ in range(3):
        world.advance(2 * 3600)  # past verify_for: the engine stops re-reading the targets
        with count_calls(SERVICE) as steady:
            assert world.run().ok
        assert steady == []  # nothing due: no Secret Manager call at all  # nothing due: no Secret Manager call at all
        world.advance(23 * DAY)  # past rotate_before (25% of 30d left)
        with count_calls(SERVICE) as rotation:
            assert world.run().ok
        assert len(rotation) == 5 * len(world.secrets)  # GetSecret, UpdateSecret, addVersion, access, UpdateSecret
        world.advance(2 * 3600)  # past grace
        with count_calls(SERVICE) as revoke:
            assert world.run().ok
        # GetSecret (observe), GetSecret (re-read right before the revoke), DisableSecretVersion, UpdateSecret
        assert len(revoke) == 4 * len(world.secrets)
        keys.append(world.assert_converged())
    assert len(set(keys)) == 4
    s = world.server.secret(PROJECT, "momento-checkout")
    assert [s.versions[n].state for n in (1, 2, 3, 4)] == [DISABLED, DISABLED, DISABLED, ENABLED]
    assert s.aliases == {"current": 4}


def _rotation_pass_calls(world: _World) -> int:
    world.run()
    world.advance(23 * DAY)
    with count_calls() as calls:
        world.run()
    return len(calls)


def test_crash_between_any_two_calls_of_a_rotation_converges(
    server: SecretManagerServer, tmp_path: Any, make_store: StoreFactory
) -> None:
    probe = _World(server, tmp_path / "probe", make_store)
    total = _rotation_pass_calls(probe)
    probe.close()
    assert total >= 10
    for n in range(1, total + 1):
        server.reset()
        w = _World(server, tmp_path / f"crash-{n}", make_store)
        try:
            w.run()
            first = w.assert_converged()
            w.advance(23 * DAY)
            with pytest.raises(SimulatedCrash), crash_after(n):
                w.run()
            w.restart()
            for _ in range(10):  # later passes, 20 minutes apart: past orphan_after (15m) and grace (1h)
                assert w.run().ok, f"crash after call {n}: a later pass failed"
                w.advance(20 * 60)
            live = w.assert_converged()
            assert live != first, f"crash after call {n}: the rotation did not complete"
        finally:
            w.close()
