"""Leader election on a Lease (rotator.runtime.leader), through the real ``kubernetes`` client over HTTP against
the local API server (tests/servers/kube_api.py). Each elector has its own monotonic clock that the test moves,
as two pods' clocks would (they never compare times with each other); the thread tests run on real time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from rotator.config import LeaderElectionConfig
from rotator.errors import ConfigError
from rotator.runtime.leader import LeaseClient, LeaseElector, lease_namespace, open_elector
from tests.servers.kube_api import KubeApiServer, running_kube_api

NS, NAME = "rotator", "rotator"
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "components" / "leader-election" / "rbac.yaml"
LEASE, RENEW, RETRY = 15.0, 10.0, 2.0


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def server() -> Iterator[KubeApiServer]:
    with running_kube_api() as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(server: KubeApiServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


MakeElector = Callable[..., tuple[LeaseElector, Clock]]


@pytest.fixture
def make(server: KubeApiServer) -> Iterator[MakeElector]:
    clients: list[LeaseClient] = []

    def make_elector(
        identity: str,
        *,
        token: str = "test",
        client_class: type[LeaseClient] = LeaseClient,
        wall: Callable[[], datetime] | None = None,
        **kw: Any,
    ) -> tuple[LeaseElector, Clock]:
        client = client_class(server.api_client(token), NS, NAME, timeout=5)
        clients.append(client)
        clock = Clock()
        times = {"lease_duration": LEASE, "renew_deadline": RENEW, "retry_period": RETRY, **kw}
        extra: dict[str, Any] = {"wall": wall} if wall is not None else {}
        return LeaseElector(client, identity=identity, monotonic=clock, **times, **extra), clock

    yield make_elector
    for c in clients:
        c.close()


def spec(server: KubeApiServer) -> dict[str, Any]:
    lease = server.lease(NS, NAME)
    assert lease is not None
    s: dict[str, Any] = lease["spec"]
    return s


def verbs(server: KubeApiServer) -> list[tuple[str, int]]:
    return [(m, status) for m, path, status in server.requests if "/leases" in path]


# ---- acquire and renew ------------------------------------------------------------------------------------


def test_the_first_candidate_creates_the_lease_and_leads(server: KubeApiServer, make: MakeElector) -> None:
    a, _ = make("pod-a_1")
    assert a.try_acquire_or_renew() is True
    assert a.is_leader()
    s = spec(server)
    assert s["holderIdentity"] == "pod-a_1"
    assert s["leaseDurationSeconds"] == 15
    assert s["leaseTransitions"] == 0
    assert s["acquireTime"] == s["renewTime"]
    assert verbs(server) == [("GET", 404), ("POST", 201)]


def test_the_holder_renews_keeping_acquire_time_and_transitions(server: KubeApiServer, make: MakeElector) -> None:
    a, clock = make("pod-a_1")
    assert a.try_acquire_or_renew()
    first = server.lease(NS, NAME)
    assert first is not None
    time.sleep(0.01)  # a later renewTime on the wall clock
    clock.advance(RETRY)
    assert a.try_acquire_or_renew()
    second = server.lease(NS, NAME)
    assert second is not None
    assert second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert second["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert second["spec"]["renewTime"] > first["spec"]["renewTime"]
    assert second["spec"]["leaseTransitions"] == 0
    # the holder renews with the Lease it wrote last: one PUT, no GET
    assert verbs(server)[-1:] == [("PUT", 200)] and len(verbs(server)) == 3


def test_lease_times_keep_six_fractional_digits_on_a_whole_second(server: KubeApiServer, make: MakeElector) -> None:
    # the API server refuses a MicroTime without exactly six digits; isoformat() drops them on a whole second
    a, clock = make("pod-a_1", wall=lambda: datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC))
    assert a.try_acquire_or_renew()
    clock.advance(RETRY)
    assert a.try_acquire_or_renew()
    assert a.release()
    assert [status for _, status in verbs(server)] == [404, 201, 200, 200]
    assert spec(server)["renewTime"].startswith("2026-12-03T06:00:00.0000")


# ---- takeover -----------------------------------------------------------------------------------------------


def test_no_takeover_before_the_lease_expires_on_the_candidates_own_clock(
    server: KubeApiServer, make: MakeElector
) -> None:
    a, _ = make("pod-a_1")
    b, b_clock = make("pod-b_2")
    assert a.try_acquire_or_renew()
    assert b.try_acquire_or_renew() is False  # b sees the Lease for the first time: its clock starts now
    b_clock.advance(LEASE - 0.5)
    assert b.try_acquire_or_renew() is False
    assert not b.is_leader()
    assert spec(server)["holderIdentity"] == "pod-a_1"
    assert b.state().holder == "pod-a_1"


def test_a_renewal_restarts_the_candidates_wait(server: KubeApiServer, make: MakeElector) -> None:
    a, a_clock = make("pod-a_1")
    b, b_clock = make("pod-b_2")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    b_clock.advance(LEASE - 1)
    a_clock.advance(RETRY)
    assert a.try_acquire_or_renew()  # b has not seen this renewal yet
    assert not b.try_acquire_or_renew()  # now it has: its wait starts again
    b_clock.advance(LEASE - 1)
    assert not b.try_acquire_or_renew()


def test_takeover_after_expiry_and_the_old_holder_steps_down(server: KubeApiServer, make: MakeElector) -> None:
    a, a_clock = make("pod-a_1")
    b, b_clock = make("pod-b_2")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    b_clock.advance(LEASE + 0.1)  # a stopped renewing (it was paused, or died)
    assert b.try_acquire_or_renew()
    assert b.is_leader()
    s = spec(server)
    assert s["holderIdentity"] == "pod-b_2"
    assert s["leaseTransitions"] == 1
    # a resumes within its own deadline: the Lease says b, so a steps down at once
    a_clock.advance(RETRY)
    assert a.is_leader()  # as far as a's clock knows
    assert a.try_acquire_or_renew() is False
    assert not a.is_leader()
    assert spec(server)["holderIdentity"] == "pod-b_2"


def test_the_leader_gives_up_at_the_renew_deadline_when_it_cannot_renew(
    server: KubeApiServer, make: MakeElector
) -> None:
    a, clock = make("pod-a_1")
    assert a.try_acquire_or_renew()
    server.fail_next(503, times=50)
    clock.advance(RETRY)
    assert a.try_acquire_or_renew() is False
    assert a.is_leader()  # 2 s of the 10 s renew deadline gone
    clock.advance(RENEW - RETRY - 0.01)
    assert a.is_leader()
    clock.advance(0.02)
    assert not a.is_leader()  # the deadline, counted from the start of the last good write
    assert spec(server)["holderIdentity"] == "pod-a_1"  # nobody wrote: a standby still waits its lease_duration


# ---- races --------------------------------------------------------------------------------------------------


class _Interleaved(LeaseClient):
    """Runs ``between`` after this client's GET answered and before its write: another elector's whole try."""

    between: Callable[[], None] | None = None

    def get(self) -> dict[str, Any] | None:
        lease = super().get()
        between, self.between = self.between, None
        if between is not None:
            between()
        return lease


def test_two_candidates_creating_at_once_make_one_leader(server: KubeApiServer, make: MakeElector) -> None:
    a, _ = make("pod-a_1", client_class=_Interleaved)
    b, _ = make("pod-b_2")
    won: list[bool] = []
    a.client.between = lambda: won.append(b.try_acquire_or_renew())  # type: ignore[attr-defined]
    assert a.try_acquire_or_renew() is False  # its POST came second: 409 AlreadyExists
    assert won == [True]
    assert b.is_leader() and not a.is_leader()
    assert ("POST", 409) in verbs(server)
    assert server.lease_writes(NS, NAME) == [("POST", "pod-b_2")]


def test_two_candidates_taking_a_released_lease_at_once_make_one_leader(
    server: KubeApiServer, make: MakeElector
) -> None:
    old, _ = make("pod-old_0")
    assert old.try_acquire_or_renew() and old.release()
    a, _ = make("pod-a_1", client_class=_Interleaved)
    b, _ = make("pod-b_2")
    won: list[bool] = []
    a.client.between = lambda: won.append(b.try_acquire_or_renew())  # type: ignore[attr-defined]
    assert a.try_acquire_or_renew() is False  # its PUT carried the resourceVersion b had replaced: 409 Conflict
    assert won == [True]
    assert b.is_leader() and not a.is_leader()
    assert verbs(server)[-1] == ("PUT", 409)
    assert spec(server)["holderIdentity"] == "pod-b_2"
    assert spec(server)["leaseTransitions"] == 1


def test_many_candidates_at_once_make_exactly_one_leader(server: KubeApiServer, make: MakeElector) -> None:
    electors = [make(f"pod-{i}_x")[0] for i in range(6)]
    start = threading.Barrier(len(electors))
    results: dict[str, bool] = {}

    def campaign(e: LeaseElector) -> None:
        start.wait()
        results[e.identity] = e.try_acquire_or_renew()

    threads = [threading.Thread(target=campaign, args=(e,)) for e in electors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [i for i, ok in results.items() if ok]
    assert len(winners) == 1, results
    assert spec(server)["holderIdentity"] == winners[0]
    assert [e.identity for e in electors if e.is_leader()] == winners


# ---- release --------------------------------------------------------------------------------------------------


def test_release_empties_the_holder_and_a_standby_takes_over_at_once(server: KubeApiServer, make: MakeElector) -> None:
    a, _ = make("pod-a_1")
    b, _ = make("pod-b_2")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release() is True
    assert not a.is_leader()
    s = spec(server)
    assert s["holderIdentity"] == "" and s["leaseDurationSeconds"] == 1 and s["leaseTransitions"] == 0
    assert b.try_acquire_or_renew()  # no wait: nobody holds it
    assert spec(server)["leaseTransitions"] == 1
    assert a.release() is False  # not leading: nothing written
    assert server.lease_writes(NS, NAME)[-1] == ("PUT", "pod-b_2")


def test_the_campaign_thread_leads_renews_and_releases_on_stop(server: KubeApiServer, make: MakeElector) -> None:
    changes: list[bool] = []
    a, _ = make("pod-a_1", lease_duration=3, renew_deadline=2, retry_period=0.1)
    a._monotonic = time.monotonic  # the thread runs on real time
    a.on_change = changes.append
    a.start()
    try:
        deadline = time.monotonic() + 10
        while not a.is_leader() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.is_leader()
        time.sleep(0.5)
        renewals = [w for w in server.lease_writes(NS, NAME) if w == ("PUT", "pod-a_1")]
        assert len(renewals) >= 2, server.lease_writes(NS, NAME)
    finally:
        a.stop(release=True)
    assert changes == [True, False]
    assert spec(server)["holderIdentity"] == ""
    assert not a.is_leader()


def test_the_campaign_thread_reports_the_loss_at_the_deadline(server: KubeApiServer, make: MakeElector) -> None:
    changes: list[tuple[bool, float]] = []
    a, _ = make("pod-a_1", lease_duration=3, renew_deadline=1, retry_period=0.2)
    a._monotonic = time.monotonic
    a.on_change = lambda leader: changes.append((leader, time.monotonic()))
    a.start()
    try:
        deadline = time.monotonic() + 10
        while not a.is_leader() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.is_leader()
        server.fail_next(500, times=10_000)
        failing_since = time.monotonic()
        while a.is_leader() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        a.stop(release=False)
        server.reset()
    assert [leader for leader, _ in changes] == [True, False]
    lost_after = changes[1][1] - failing_since
    assert lost_after <= 1.0 + 0.5, lost_after  # within the renew deadline (plus scheduling slack)


# ---- RBAC: the component's Role, through the server's RBAC -------------------------------------------------------


def _role() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    return role


def test_the_components_role_is_enough_for_the_election(server: KubeApiServer, make: MakeElector) -> None:
    server.grant_role("elector", _role())
    a, _ = make("pod-a_1", token="elector")
    b, b_clock = make("pod-b_2", token="elector")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    b_clock.advance(LEASE + 1)
    assert b.try_acquire_or_renew()
    assert b.release()
    assert all(status != 403 for _, status in verbs(server)), verbs(server)


def test_a_role_without_update_cannot_lead_and_says_what_is_missing(server: KubeApiServer, make: MakeElector) -> None:
    role = _role()
    role["rules"] = [r for r in role["rules"] if "update" not in r["verbs"]] + [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}
    ]
    server.grant_role("weak", role)
    old, _ = make("pod-old_0")
    assert old.try_acquire_or_renew() and old.release()  # a Lease exists: taking it needs update
    a, _ = make("pod-a_1", token="weak")
    with structlog.testing.capture_logs() as logs:
        assert a.try_acquire_or_renew() is False
        assert a.try_acquire_or_renew() is False
    assert not a.is_leader()
    assert ("PUT", 403) in verbs(server)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1, logs  # once per kind of failure, not at every try
    assert warnings[0]["why"].startswith("forbidden: update leases.coordination.k8s.io in namespace rotator")
    assert "components/leader-election" in warnings[0]["why"]


def test_a_role_in_another_namespace_grants_nothing(server: KubeApiServer, make: MakeElector) -> None:
    role = _role()
    role["metadata"]["namespace"] = "elsewhere"
    server.grant_role("elsewhere", role)
    a, _ = make("pod-a_1", token="elsewhere")
    assert a.try_acquire_or_renew() is False
    assert verbs(server) == [("GET", 403)]


# ---- the test server's concurrency rules themselves --------------------------------------------------------------


def test_the_server_refuses_stale_missing_and_duplicate_writes(server: KubeApiServer) -> None:
    from kubernetes import client as k8s

    api = k8s.CoordinationV1Api(server.api_client())
    body = {"metadata": {"name": NAME}, "spec": {"holderIdentity": "x", "leaseDurationSeconds": 5}}
    try:
        with pytest.raises(k8s.ApiException) as missing:
            api.read_namespaced_lease(NAME, NS)
        assert missing.value.status == 404
        created = api.create_namespaced_lease(NS, body)
        with pytest.raises(k8s.ApiException) as duplicate:
            api.create_namespaced_lease(NS, body)
        assert duplicate.value.status == 409 and "AlreadyExists" in str(duplicate.value.body)
        rv = created.metadata.resource_version
        fresh = {**body, "metadata": {"name": NAME, "resourceVersion": rv}}
        api.replace_namespaced_lease(NAME, NS, fresh)
        with pytest.raises(k8s.ApiException) as stale:
            api.replace_namespaced_lease(NAME, NS, fresh)  # the same resourceVersion again: now stale
        assert stale.value.status == 409 and "Conflict" in str(stale.value.body)
        with pytest.raises(k8s.ApiException) as unconditional:
            api.replace_namespaced_lease(NAME, NS, body)
        assert unconditional.value.status == 422
        with pytest.raises(k8s.ApiException) as bad_time:
            api.create_namespaced_lease(
                NS, {**body, "metadata": {"name": "other"}, "spec": {"renewTime": "2026-12-03T06:00:00Z"}}
            )
        assert bad_time.value.status == 400
    finally:
        api.api_client.close()


# ---- config: namespace and credentials ------------------------------------------------------------------------


def test_the_namespace_defaults_to_the_pods_own(tmp_path: Path) -> None:
    (tmp_path / "namespace").write_text("payments\n")
    assert lease_namespace(LeaderElectionConfig(service_account_dir=str(tmp_path))) == "payments"
    assert lease_namespace(LeaderElectionConfig(namespace="ops", service_account_dir=str(tmp_path))) == "ops"
    with pytest.raises(
        ConfigError, match=r"leader_election\.namespace: not set, and the pod's namespace cannot be read"
    ):
        lease_namespace(LeaderElectionConfig(service_account_dir=str(tmp_path / "none")))


def test_open_elector_uses_the_in_cluster_service_account_over_https(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_kube_api(tls=True) as tls_server:
        sa = tmp_path / "serviceaccount"
        for name, value in tls_server.service_account(sa, namespace="ops").items():
            monkeypatch.setenv(name, value)
        cfg = LeaderElectionConfig(enabled=True, service_account_dir=str(sa), lease_name="rotator-ops")
        elector = open_elector(cfg, identity="pod-a_1")
        try:
            assert elector.try_acquire_or_renew()
            assert tls_server.lease("ops", "rotator-ops") is not None
        finally:
            elector.client.close()


def test_open_elector_without_credentials_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    (tmp_path / "namespace").write_text("rotator")
    cfg = LeaderElectionConfig(enabled=True, service_account_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"leader_election: .*in-cluster service account"):
        open_elector(cfg)


# ---- the config block ---------------------------------------------------------------------------------------------

BASE_CONFIG: dict[str, Any] = {
    "issuer": {"type": "emulator"},
    "stores": {"local": {"type": "file", "path": "/tmp/rotator-test-unused"}},
    "policies": [
        {"name": "a", "role": "operator", "description": "a", "targets": [{"store": "local", "secret": "a/k"}]}
    ],
}


def _issues(block: dict[str, Any]) -> list[tuple[str, str]]:
    from rotator.config import from_mapping

    try:
        from_mapping({**BASE_CONFIG, "leader_election": block})
    except ConfigError as exc:
        return [(i.path, i.message) for i in exc.issues]
    return []


def test_the_config_block_defaults_to_off_with_client_go_timings() -> None:
    from rotator.config import from_mapping

    le = from_mapping(BASE_CONFIG).leader_election
    assert le.enabled is False
    assert (le.lease_name, le.namespace) == ("rotator", None)
    assert [t.total_seconds() for t in (le.lease_duration, le.renew_deadline, le.retry_period)] == [15, 10, 2]
    assert _issues({"enabled": True, "lease_duration": "30s", "renew_deadline": "20s", "retry_period": "5s"}) == []


@pytest.mark.parametrize(
    ("block", "path", "words"),
    [
        ({"renew_deadline": "15s"}, "leader_election.renew_deadline", "must be shorter than lease_duration (15s)"),
        ({"lease_duration": "5s"}, "leader_election.renew_deadline", "must be shorter than lease_duration (5s)"),
        ({"retry_period": "10s"}, "leader_election.retry_period", "must be shorter than renew_deadline (10s)"),
        ({"retry_period": "0s"}, "leader_election.retry_period", "more than 0s"),
        (
            {"lease_duration": "2.5s", "renew_deadline": "2s", "retry_period": "1s"},
            "leader_election.lease_duration",
            "whole number",
        ),
        ({"lease_name": "Rotator_1"}, "leader_election.lease_name", "not a Lease name"),
        ({"namespace": "Ops"}, "leader_election.namespace", "not a namespace name"),
        ({"enable": True}, "leader_election.enable", "unknown field"),
        ({"in_cluster": True, "kubeconfig": "/k"}, "leader_election.kubeconfig", "drop kubeconfig"),
    ],
)
def test_bad_timings_and_names_are_config_errors_naming_the_field(block: dict[str, Any], path: str, words: str) -> None:
    issues = _issues(block)
    assert len(issues) == 1, issues
    assert issues[0][0] == path and words in issues[0][1], issues


def test_a_lease_deleted_under_the_leader_is_created_again(server: KubeApiServer, make: MakeElector) -> None:
    a, clock = make("pod-a_1")
    assert a.try_acquire_or_renew()
    with server._lock:  # someone ran `kubectl delete lease rotator`
        server.leases.clear()
    clock.advance(RETRY)
    assert a.try_acquire_or_renew()  # the renewal's PUT is a 404; it reads again and creates the Lease
    assert [m for m, _ in verbs(server)][-3:] == ["PUT", "GET", "POST"]
    assert spec(server)["holderIdentity"] == "pod-a_1"
