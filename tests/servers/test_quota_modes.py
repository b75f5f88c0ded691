"""The quota modes of the local test servers, driven through the SDK clients rotator uses.

GCP Secret Manager (``SecretManagerServiceClient``, REST transport), Azure Key Vault (``SecretClient``) and AWS
Secrets Manager (boto3, through the fault proxy in front of moto). Each server's mode is off by default; switched
on at a small scale or with small limits and a fake clock, the request past a limit is refused the way the service
documents it, the window recovers, the counters count, and the SDKs' own retries are seen for what they do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager

from rotator.errors import StoreUnavailable
from rotator.stores.base import TargetRef
from rotator.stores.gcp import GcpSecretManagerStore, StoreConfig, TargetOptions, open_store
from tests.servers.azure_keyvault import KV_QUOTAS, KeyVaultServer, StaticTokenCredential, running_keyvault
from tests.servers.fault_proxy import AWS_OPERATION_QUOTAS, AWS_QUOTAS, FaultProxy, QuotaBook
from tests.servers.gcp_secretmanager import GCP_QUOTAS, SecretManagerServer, running_secretmanager
from tests.servers.moto_server import MotoServer, running_moto

PROJECT = "quota-project"


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---- the sliding window itself -------------------------------------------------------------------------------


def _book(limit: int, window: float, **kw: Any) -> QuotaBook:
    from tests.servers.fault_proxy import Quota

    return QuotaBook([Quota("q", limit, window, "scope", "test")], **kw)


def test_the_window_slides_instead_of_resetting(clock: FakeClock) -> None:
    book = _book(2, 10.0, clock=clock)
    assert book.admit([("q", "a")]) is None  # t=0
    clock.advance(9)
    assert book.admit([("q", "a")]) is None  # t=9
    clock.advance(1.5)
    assert book.admit([("q", "a")]) is None  # t=10.5: the first left the window at t=10
    clock.advance(0.5)
    # t=11: two admitted in (1, 11]; a fixed window starting at t=10 would admit a second one here
    refusal = book.admit([("q", "a")])
    assert refusal is not None and refusal.retry_after == pytest.approx(8.0)  # t=9 leaves at t=19
    assert refusal.retry_after_header == "8"
    assert book.admit([("q", "b")]) is None  # another scope key has its own window
    assert (book.served("q", "a"), book.throttled("q", "a"), book.served("q", "b")) == (3, 1, 1)


def test_scale_shortens_every_window_and_keeps_the_limits(clock: FakeClock) -> None:
    book = _book(2, 10.0, clock=clock, scale=10)
    assert book.window("q") == 1.0 and book.quotas["q"].limit == 2
    assert book.admit([("q", "a")]) is None and book.admit([("q", "a")]) is None
    assert book.admit([("q", "a")]) is not None
    clock.advance(1.0)
    assert book.admit([("q", "a")]) is None
    assert book.stats()["quotas"]["q"] | {"by_scope": None} == {
        "limit": 2,
        "window": 1.0,
        "documented_window": 10.0,
        "scope": "scope",
        "source": "test",
        "served": 3,
        "throttled": 1,
        "by_scope": None,
    }
    with pytest.raises(ValueError, match="scale"):
        _book(2, 10.0, scale=0)
    with pytest.raises(KeyError, match="no quota named 'nope'"):
        _book(2, 10.0, limits={"nope": 1})


def test_a_request_under_several_quotas_counts_against_all_or_none(clock: FakeClock) -> None:
    from tests.servers.fault_proxy import Quota

    book = QuotaBook([Quota("big", 10, 60, "p", "t"), Quota("small", 1, 1, "s", "t")], clock=clock)
    assert book.admit([("big", "p"), ("small", "s")]) is None
    refusal = book.admit([("big", "p"), ("small", "s")])
    assert refusal is not None and refusal.quota.name == "small"
    # the refused request used none of "big"
    assert (book.served("big"), book.throttled("big"), book.throttled("small")) == (1, 0, 1)
    assert (book.requests_served, book.requests_throttled) == (1, 1)


def test_documented_numbers() -> None:
    """The tables carry the numbers of the pages they cite (the comments beside them quote the pages)."""
    gcp = {q.name: (q.limit, q.window) for q in GCP_QUOTAS}
    assert gcp == {
        "AccessRequestsPerMinutePerProject": (90_000, 60.0),
        "ReadRequestsPerMinutePerProject": (600, 60.0),
        "WriteRequestsPerMinutePerProject": (600, 60.0),
        "AddOrUpdatePerSecondPerSecret": (2, 1.0),
        "AddOrUpdatePerMinutePerSecret": (120, 60.0),
        "VersionStatePerSecondPerVersion": (1, 1.0),
        "VersionStatePerMinutePerVersion": (60, 60.0),
    }
    assert {q.name: (q.limit, q.window) for q in KV_QUOTAS} == {
        "SecretCreatePer10Seconds": (300, 10.0),
        "SecretOtherPer10Seconds": (4_000, 10.0),
    }
    aws = {q.name: (q.limit, q.window) for q in AWS_QUOTAS}
    assert aws["WriteApisPerSecond"] == (50, 1.0)
    assert aws["GetSecretValuePerSecond"] == (10_000, 1.0) and aws["DescribeSecretPerSecond"] == (40_000, 1.0)
    assert {op for op, q in AWS_OPERATION_QUOTAS.items() if q == "WriteApisPerSecond"} == {
        "PutSecretValue",
        "RemoveRegionsFromReplication",
        "ReplicateSecretToRegion",
        "StopReplicationToReplica",
        "UpdateSecret",
        "UpdateSecretVersionStage",
    }
    assert set(AWS_OPERATION_QUOTAS.values()) == set(aws)
    assert all(q.source for q in (*GCP_QUOTAS, *KV_QUOTAS, *AWS_QUOTAS))


# ---- GCP Secret Manager ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sm_server() -> Iterator[SecretManagerServer]:
    with running_secretmanager() as s:
        yield s


@pytest.fixture
def sm(sm_server: SecretManagerServer) -> Iterator[SecretManagerServer]:
    sm_server.reset()
    yield sm_server
    sm_server.reset()


@pytest.fixture
def gcp(sm: SecretManagerServer) -> Iterator[Any]:
    client = secretmanager.SecretManagerServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": sm.endpoint}
    )
    yield client
    client.transport.close()


def _gcp_secret(client: Any, secret_id: str) -> str:
    client.create_secret(
        request={"parent": f"projects/{PROJECT}", "secret_id": secret_id, "secret": {"replication": {"automatic": {}}}}
    )
    return f"projects/{PROJECT}/secrets/{secret_id}"


def _add(client: Any, name: str, data: bytes = b"v") -> Any:
    return client.add_secret_version(request={"parent": name, "payload": {"data": data}})


def test_gcp_quota_mode_is_off_by_default(sm: SecretManagerServer, gcp: Any) -> None:
    name = _gcp_secret(gcp, "off")
    for i in range(12):  # far past 2 per second per secret
        _add(gcp, name, str(i).encode())
    assert sm.quotas is None
    assert sm.count("AddSecretVersion", status=200) == 12 and sm.count(status=429) == 0


def test_gcp_write_quota_refuses_with_resource_exhausted_and_recovers(
    sm: SecretManagerServer, gcp: Any, clock: FakeClock
) -> None:
    book = sm.enforce_quotas(scale=10, clock=clock, limits={"WriteRequestsPerMinutePerProject": 3})
    for i in range(3):
        _gcp_secret(gcp, f"w{i}")
    with pytest.raises(gexc.TooManyRequests) as info:
        _gcp_secret(gcp, "w3")
    err = info.value
    assert err.code == 429 and err.reason == "RATE_LIMIT_EXCEEDED" and err.domain == "googleapis.com"
    body = err.response.json()["error"]
    assert body["code"] == 429 and body["status"] == "RESOURCE_EXHAUSTED"
    assert body["message"].startswith("Quota exceeded for quota metric 'Write requests' and limit 'Write requests")
    info_detail = next(d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
    assert info_detail["metadata"] == {
        "consumer": f"projects/{PROJECT}",
        "service": "secretmanager.googleapis.com",
        "quota_metric": "secretmanager.googleapis.com/write_requests",
        "quota_limit": "WriteRequestsPerMinutePerProject",
        "quota_limit_value": "3",
    }
    assert "Retry-After" not in err.response.headers
    with pytest.raises(KeyError):
        sm.secret(PROJECT, "w3")  # a refused request is not carried out
    gcp.get_secret(name=f"projects/{PROJECT}/secrets/w0")  # reads have their own quota
    clock.advance(60 / 10)  # scale 10: the minute is 6 seconds long
    _gcp_secret(gcp, "w3")
    assert book.served("WriteRequestsPerMinutePerProject", f"projects/{PROJECT}") == 4
    assert book.throttled("WriteRequestsPerMinutePerProject", f"projects/{PROJECT}") == 1
    assert book.served("ReadRequestsPerMinutePerProject") == 1
    stats = book.stats()
    assert (stats["scale"], stats["served"], stats["throttled"]) == (10.0, 5, 1)
    assert stats["quotas"]["WriteRequestsPerMinutePerProject"]["window"] == 6.0


def test_gcp_add_version_per_secret_at_the_documented_rate(sm: SecretManagerServer, gcp: Any, clock: FakeClock) -> None:
    sm.enforce_quotas(clock=clock)  # documented numbers: 2 per second per secret
    name = _gcp_secret(gcp, "per-secret")
    other = _gcp_secret(gcp, "other-secret")
    _add(gcp, name)
    _add(gcp, name)
    with pytest.raises(gexc.TooManyRequests) as info:
        _add(gcp, name)
    assert info.value.response.json()["error"]["details"][0]["metadata"]["quota_limit"] == (
        "AddOrUpdatePerSecondPerSecret"
    )
    # UpdateSecret shares the per-secret counter; another secret has its own
    with pytest.raises(gexc.TooManyRequests):
        gcp.update_secret(
            request={"secret": {"name": name, "labels": {"a": "b"}}, "update_mask": {"paths": ["labels"]}}
        )
    _add(gcp, other)
    clock.advance(1.0)
    _add(gcp, name)
    assert [v.number for v in sm.secret(PROJECT, "per-secret").versions.values()] == [1, 2, 3]
    assert sm.quotas is not None and sm.quotas.throttled("AddOrUpdatePerSecondPerSecret", name) == 2


def test_gcp_version_state_changes_per_version(sm: SecretManagerServer, gcp: Any, clock: FakeClock) -> None:
    sm.enforce_quotas(clock=clock)  # 1 per second per secret version
    name = _gcp_secret(gcp, "states")
    _add(gcp, name)
    clock.advance(1)
    _add(gcp, name)
    gcp.disable_secret_version(name=f"{name}/versions/1")
    with pytest.raises(gexc.TooManyRequests):
        gcp.enable_secret_version(name=f"{name}/versions/1")
    gcp.disable_secret_version(name=f"{name}/versions/2")  # another version
    clock.advance(1)
    gcp.enable_secret_version(name=f"{name}/versions/1")


def test_gcp_read_quota_at_the_documented_600_per_minute(sm: SecretManagerServer, gcp: Any, clock: FakeClock) -> None:
    sm.put_version(PROJECT, "read-me", b"x")
    sm.enforce_quotas(clock=clock)
    name = f"projects/{PROJECT}/secrets/read-me"
    for _ in range(600):
        gcp.get_secret(name=name)
    with pytest.raises(gexc.TooManyRequests):
        gcp.get_secret_version(name=f"{name}/versions/1")  # GetSecretVersion is a read too
    # access requests have their own, far larger quota
    assert gcp.access_secret_version(name=f"{name}/versions/1", retry=None).payload.data == b"x"
    clock.advance(30)
    with pytest.raises(gexc.TooManyRequests):  # a sliding minute: the 600 are still in it
        gcp.list_secret_versions(request={"parent": name})
    clock.advance(30)
    assert list(gcp.list_secret_versions(request={"parent": name}))


def test_gcp_concurrent_clients_get_exactly_the_limit(sm: SecretManagerServer, clock: FakeClock) -> None:
    """16 clients at once, as the benchmark's workers: exactly ``limit`` are served, the rest refused."""
    import threading

    sm.put_version(PROJECT, "busy", b"x")
    book = sm.enforce_quotas(clock=clock, limits={"ReadRequestsPerMinutePerProject": 20})
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = secretmanager.SecretManagerServiceClient(
            transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": sm.endpoint}
        )
        try:
            for _ in range(5):
                try:
                    client.get_secret(name=f"projects/{PROJECT}/secrets/busy")
                    outcome = "served"
                except gexc.TooManyRequests:
                    outcome = "throttled"
                with lock:
                    outcomes.append(outcome)
        finally:
            client.transport.close()

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (outcomes.count("served"), outcomes.count("throttled")) == (20, 60)
    assert (book.served(), book.throttled()) == (20, 60)


def test_gcp_library_default_retry_does_not_retry_a_rest_429(
    sm: SecretManagerServer, gcp: Any, clock: FakeClock
) -> None:
    """AccessSecretVersion's default retry is for ``ResourceExhausted`` (gRPC); over REST a 429 is its parent
    ``TooManyRequests``, so the library gives up at once and the caller decides."""
    sm.put_version(PROJECT, "access-me", b"x")
    sm.enforce_quotas(clock=clock, limits={"AccessRequestsPerMinutePerProject": 1})
    name = f"projects/{PROJECT}/secrets/access-me/versions/1"
    gcp.access_secret_version(name=name)
    started = time.monotonic()
    with pytest.raises(gexc.TooManyRequests) as info:
        gcp.access_secret_version(name=name)  # the library's default retry in force
    assert not isinstance(info.value, gexc.ResourceExhausted)
    assert time.monotonic() - started < 1.5  # the default retry would first wait about 2 seconds
    assert sm.count("AccessSecretVersion", status=429) == 1


def test_gcp_constructor_switch_survives_reset(clock: FakeClock) -> None:
    with running_secretmanager(quota_scale=60, quota_clock=clock) as server:
        assert server.quotas is not None and server.quotas.window("WriteRequestsPerMinutePerProject") == 1.0
        server.quotas.admit([("WriteRequestsPerMinutePerProject", "projects/p")])
        server.reset()
        assert server.quotas is not None and server.quotas.requests_served == 0  # fresh windows, mode kept
        server.quotas_off()
        assert server.quotas is None


def _gcp_store(sm: SecretManagerServer, attempts: int) -> GcpSecretManagerStore:
    config = StoreConfig.model_validate(
        {
            "type": "gcp",
            "project": PROJECT,
            "transport": "rest",
            "retry": {"attempts": attempts, "initial_backoff": 0.001, "max_backoff": 0.005},
        }
    )
    store = open_store(
        "sm-quota", config, credentials=AnonymousCredentials(), client_options={"api_endpoint": sm.endpoint}
    )
    assert isinstance(store, GcpSecretManagerStore)
    return store


def test_gcp_store_retries_a_throttled_read_then_gives_up(sm: SecretManagerServer, clock: FakeClock) -> None:
    sm.enforce_quotas(clock=clock, limits={"ReadRequestsPerMinutePerProject": 1})
    store = _gcp_store(sm, attempts=3)
    ref = TargetRef("sm-quota", "store-read", "p", TargetOptions(store="sm-quota", secret="store-read"))
    try:
        assert not store.inspect(ref).exists  # one read: the quota's only one
        store._cache.clear()
        with pytest.raises(StoreUnavailable):
            store.inspect(ref)  # every attempt refused: the clock does not move
        assert sm.count("GetSecret", status=429) == 3
        clock.advance(60)
        store._cache.clear()
        assert not store.inspect(ref).exists
    finally:
        store.close()


# ---- Azure Key Vault ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kv_server() -> Iterator[KeyVaultServer]:
    with running_keyvault() as server:
        yield server


@pytest.fixture
def kv(kv_server: KeyVaultServer) -> Iterator[KeyVaultServer]:
    kv_server.reset()
    yield kv_server
    kv_server.reset()


def _kv_client(kv: KeyVaultServer, **kw: Any) -> Any:
    from azure.keyvault.secrets import SecretClient

    return SecretClient(
        kv.url, StaticTokenCredential(kv.token), connection_verify=kv.ca_path, verify_challenge_resource=False, **kw
    )


@pytest.fixture
def kv_raw(kv: KeyVaultServer) -> Iterator[Any]:
    """A SecretClient that does not retry: each refusal is seen as sent."""
    client = _kv_client(kv, retry_total=0)
    yield client
    client.close()


def test_kv_quota_mode_is_off_by_default(kv: KeyVaultServer, kv_raw: Any) -> None:
    kv_raw.set_secret("off", "v")
    for _ in range(20):
        kv_raw.get_secret("off")
    assert kv.quotas is None and all(status != 429 for _, _, status in kv.requests)


def test_kv_other_transactions_refused_with_throttled_and_retry_after(
    kv: KeyVaultServer, kv_raw: Any, clock: FakeClock
) -> None:
    from azure.core.exceptions import HttpResponseError

    book = kv.enforce_quotas(scale=2, clock=clock, limits={"SecretOtherPer10Seconds": 3})
    kv_raw.set_secret("s", "v")  # a CREATE: its own limit
    for _ in range(3):
        kv_raw.get_secret("s")
    clock.advance(1.0)
    with pytest.raises(HttpResponseError) as info:
        kv_raw.get_secret("s")
    resp = info.value.response
    assert resp.status_code == 429
    assert resp.json() == {
        "error": {
            "code": "Throttled",
            "message": "Request was not processed because too many requests were received. "
            "Reason: VaultRequestTypeLimitReached",
        }
    }
    assert info.value.error.code == "Throttled"
    # scale 2: the 10 seconds are 5; the first GET leaves the window 4 seconds from now
    assert resp.headers["Retry-After"] == "4"
    kv_raw.set_secret("s", "v2")  # CREATE is counted apart
    clock.advance(4.0)
    assert kv_raw.get_secret("s").value == "v2"
    assert book.served("SecretOtherPer10Seconds", kv.url) == 4
    assert book.throttled("SecretOtherPer10Seconds", kv.url) == 1
    assert book.served("SecretCreatePer10Seconds") == 2


def test_kv_throttled_requests_do_not_count(kv: KeyVaultServer, kv_raw: Any, clock: FakeClock) -> None:
    """ "Failed requests that return a 429 do not count towards the throttle limits tracked by Key Vault"."""
    from azure.core.exceptions import HttpResponseError

    kv.enforce_quotas(clock=clock, limits={"SecretOtherPer10Seconds": 2})
    kv_raw.set_secret("n", "v")
    kv_raw.get_secret("n")
    clock.advance(5)
    kv_raw.get_secret("n")
    for _ in range(3):
        with pytest.raises(HttpResponseError):
            kv_raw.get_secret("n")
    clock.advance(5)  # the first GET left the window; the three refused ones never entered it
    kv_raw.get_secret("n")


def test_kv_create_limit_at_the_documented_300(kv: KeyVaultServer, kv_raw: Any, clock: FakeClock) -> None:
    from azure.core.exceptions import HttpResponseError

    kv.enforce_quotas(clock=clock)
    for i in range(300):
        kv_raw.set_secret(f"c{i % 7}", str(i))
    with pytest.raises(HttpResponseError) as info:
        kv_raw.set_secret("c0", "over")
    assert info.value.status_code == 429 and info.value.response.headers["Retry-After"] == "10"
    assert sum(kv.version_count(f"c{i}") for i in range(7)) == 300  # the refused PUT made no version


def test_kv_retry_after_can_be_left_out(kv: KeyVaultServer, kv_raw: Any, clock: FakeClock) -> None:
    from azure.core.exceptions import HttpResponseError

    kv.enforce_quotas(clock=clock, limits={"SecretCreatePer10Seconds": 1}, retry_after=False)
    kv_raw.set_secret("x", "1")
    with pytest.raises(HttpResponseError) as info:
        kv_raw.set_secret("x", "2")
    assert info.value.status_code == 429 and "Retry-After" not in info.value.response.headers


def test_kv_sdk_waits_for_retry_after_and_succeeds(kv: KeyVaultServer) -> None:
    """azure-core's RetryPolicy honours Retry-After: with retries on, the SDK waits the second and gets through."""
    kv.enforce_quotas(scale=10, limits={"SecretOtherPer10Seconds": 1})  # real clock; the window is 1 s
    client = _kv_client(kv, retry_total=2, retry_backoff_factor=0.01)
    try:
        client.set_secret("r", "v")
        client.get_secret("r")
        started = time.monotonic()
        assert client.get_secret("r").value == "v"
        assert time.monotonic() - started >= 0.9  # Retry-After: 1
    finally:
        client.close()
    assert kv.quotas is not None
    assert (kv.quotas.served("SecretOtherPer10Seconds"), kv.quotas.throttled("SecretOtherPer10Seconds")) == (2, 1)


def test_kv_constructor_switch_survives_reset(clock: FakeClock) -> None:
    with running_keyvault(quota_scale=5, quota_clock=clock) as server:
        assert server.quotas is not None and server.quotas.window("SecretOtherPer10Seconds") == 2.0
        server.quotas.admit([("SecretOtherPer10Seconds", server.url)])
        server.reset()
        assert server.quotas is not None and server.quotas.requests_served == 0  # fresh windows, mode kept


# ---- AWS Secrets Manager, through the fault proxy in front of moto -----------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    moto_server.reset()
    return moto_server


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.url) as p:
        yield p


@pytest.fixture
def aws_client(proxy: FaultProxy) -> Callable[..., Any]:
    opened: list[Any] = []
    session = boto3.session.Session()

    def make(region: str = "us-east-1", attempts: int = 1, mode: str = "standard") -> Any:
        config = Config(retries={"mode": mode, "total_max_attempts": attempts})
        opened.append(session.client("secretsmanager", region_name=region, endpoint_url=proxy.url, config=config))
        return opened[-1]

    yield make
    for c in opened:
        c.close()


def test_aws_quota_mode_is_off_by_default(proxy: FaultProxy, aws_client: Callable[..., Any]) -> None:
    sm = aws_client()
    sm.create_secret(Name="off", SecretString="0")
    for i in range(60):  # more than 50 writes in well under a second
        sm.put_secret_value(SecretId="off", SecretString=str(i))
    assert proxy.quotas is None and proxy.faults == []


def test_aws_write_apis_share_50_per_second_per_region(
    proxy: FaultProxy, aws_client: Callable[..., Any], clock: FakeClock
) -> None:
    sm, eu = aws_client(), aws_client("eu-west-1")
    sm.create_secret(Name="w", SecretString="0")
    eu.create_secret(Name="w", SecretString="0")
    book = proxy.enforce_quotas(clock=clock)  # the documented 50 per second
    vid = sm.put_secret_value(SecretId="w", SecretString="1")["VersionId"]
    for i in range(48):
        sm.put_secret_value(SecretId="w", SecretString=f"x{i}")
    sm.update_secret_version_stage(SecretId="w", VersionStage="AWSPENDING", MoveToVersionId=vid)  # the 50th
    with pytest.raises(ClientError) as info:
        sm.put_secret_value(SecretId="w", SecretString="over")
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    assert "retry-after" not in err["ResponseMetadata"]["HTTPHeaders"]
    assert sm.get_secret_value(SecretId="w")["SecretString"] == "x47"  # reads: another quota; "over" never arrived
    eu.put_secret_value(SecretId="w", SecretString="eu")  # another region: its own quota
    clock.advance(1.0)
    sm.put_secret_value(SecretId="w", SecretString="after")
    assert book.served("WriteApisPerSecond", "us-east-1") == 51
    assert book.throttled("WriteApisPerSecond", "us-east-1") == 1
    assert book.served("WriteApisPerSecond", "eu-west-1") == 1
    assert book.served("GetSecretValuePerSecond", "us-east-1") == 1
    # every request seen is logged, the refused one and the other region's too; none was an injected fault
    assert proxy.count("PutSecretValue") == 52 and proxy.faults == []


def test_aws_botocore_retries_throttling_then_raises(
    proxy: FaultProxy, aws_client: Callable[..., Any], clock: FakeClock
) -> None:
    """botocore's standard mode retries ThrottlingException (max_attempts in all); with the window frozen every
    attempt is refused and the last refusal is raised."""
    sm = aws_client(attempts=3)
    sm.create_secret(Name="r", SecretString="0")
    book = proxy.enforce_quotas(clock=clock, limits={"DescribeSecretPerSecond": 1})
    sm.describe_secret(SecretId="r")
    with pytest.raises(ClientError) as info:
        sm.describe_secret(SecretId="r")
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert book.throttled("DescribeSecretPerSecond", "us-east-1") == 3


def test_aws_scale_and_clear(proxy: FaultProxy, aws_client: Callable[..., Any], clock: FakeClock) -> None:
    sm = aws_client()
    book = proxy.enforce_quotas(scale=4, clock=clock, limits={"CreateSecretPerSecond": 1})
    assert book.window("CreateSecretPerSecond") == 0.25
    sm.create_secret(Name="a", SecretString="0")
    with pytest.raises(ClientError):
        sm.create_secret(Name="b", SecretString="0")
    clock.advance(0.25)
    sm.create_secret(Name="b", SecretString="0")
    proxy.clear()  # empties the windows and counters, the mode stays
    assert proxy.quotas is book and book.stats()["served"] == 0
    sm.create_secret(Name="c", SecretString="0")
    proxy.quotas_off()
    sm.create_secret(Name="d", SecretString="0")
    sm.create_secret(Name="e", SecretString="0")


def test_aws_constructor_switch(moto: MotoServer, clock: FakeClock) -> None:
    with FaultProxy(moto.url, quota_scale=2, quota_clock=clock) as p:
        assert p.quotas is not None and p.quotas.window("WriteApisPerSecond") == 0.5
