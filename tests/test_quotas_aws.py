"""Client-side request quotas in the AWS store (issue 27), over real HTTP: boto3 -> the fault proxy in its quota mode
(the documented per-region rates of Secrets Manager, refused as AWS refuses them) -> moto.

- one :class:`RateLimits` shared by every worker keeps a region's write rate inside the quota: the proxy refuses
  nothing, and the pass takes about ``writes / limit`` seconds; the same work without the limiter is refused;
- a limit the client believes larger than the server's (another client shares the quota) is cut by the first
  refusals, after which the refusals stop;
- ``publish_cost`` is what one publish sends, counted at the server;
- the ``quotas:`` override reaches the limiter, and a bad one is a config error naming the field.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from pydantic import ValidationError

from rotator.config import from_mapping
from rotator.errors import ConfigError, StoreUnavailable
from rotator.model import SecretText
from rotator.quotas import HEADROOM, Charge, RateLimits
from rotator.stores.aws import (
    AWS_QUOTAS,
    OPERATION_QUOTAS,
    STORE_TYPE,
    AwsSecretsManagerStore,
    StoreConfig,
    TargetOptions,
    open_store,
)
from rotator.stores.base import StoreContext, StoreSpec, TargetRef, VersionMeta
from tests.servers.fault_proxy import AWS_QUOTAS as SERVER_QUOTAS
from tests.servers.fault_proxy import FaultProxy
from tests.servers.moto_server import MotoServer, running_moto
from tests.support.e2e import ENDPOINT

REGION = "us-east-1"
POLICY = "quota-test"
WORKERS = 12
PUBLISHES = 4
LIMIT = 20
#: botocore's standard retries, stated where a test must see the shared limiter alone (the store's own mode with
#: rate limits on; adaptive mode would slow one client after a refusal with a token bucket of its own)
STANDARD = Config(retries={"mode": "standard", "total_max_attempts": 8})


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    moto_server.reset()
    return moto_server


@pytest.fixture(scope="module")
def session(moto_server: MotoServer) -> boto3.session.Session:
    return boto3.session.Session()


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.url, aws_semantics=True) as p:
        yield p


@pytest.fixture
def open_aws(proxy: FaultProxy, session: boto3.session.Session) -> Iterator[Callable[..., AwsSecretsManagerStore]]:
    opened: list[AwsSecretsManagerStore] = []

    def _open(limits: RateLimits | None = None, botocore_config: Any = None, **config: Any) -> AwsSecretsManagerStore:
        cfg = StoreConfig(type="aws", region=REGION, endpoint_url=proxy.url, **config)
        opened.append(open_store("aws-quota", cfg, session=session, limits=limits, botocore_config=botocore_config))
        return opened[-1]

    yield _open
    for s in opened:
        s.close()


def _ref(secret: str) -> TargetRef:
    return TargetRef("aws-quota", secret, POLICY, TargetOptions(store="aws-quota", secret=secret))


def _meta(key_id: str) -> VersionMeta:
    return VersionMeta(key_id, POLICY, datetime.now(UTC) + timedelta(days=30), "application/json")


def _value(key_id: str) -> SecretText:
    return SecretText(json.dumps({"apiKey": f"key-material-{uuid.uuid4().hex}", "keyId": key_id}))


def _publish(store: AwsSecretsManagerStore, ref: TargetRef) -> None:
    """One publish as the engine makes it: inspect, stage, read back, promote."""
    key_id = str(uuid.uuid4())
    value = _value(key_id)
    store.inspect(ref)
    store.stage(ref, value, _meta(key_id))
    assert store.read(ref, key_id) == value
    store.promote(ref, key_id)


def _prepared(store: AwsSecretsManagerStore, n: int, prefix: str) -> list[TargetRef]:
    """``n`` secrets that rotator already writes (created and published once, quota mode off)."""
    refs = [_ref(f"momento/{prefix}-{i}") for i in range(n)]
    for ref in refs:
        _publish(store, ref)
    return refs


def _in_threads(work: Callable[[TargetRef], None], refs: list[TargetRef]) -> tuple[float, list[BaseException]]:
    """Run ``work`` for every ref at once, one thread each; (seconds from start to the last end, the errors)."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(refs) + 1)

    def run(ref: TargetRef) -> None:
        start.wait()
        try:
            work(ref)
        except BaseException as exc:  # collected, asserted by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ref,)) for ref in refs]
    for t in threads:
        t.start()
    start.wait()
    began = time.monotonic()
    for t in threads:
        t.join(60)
    return time.monotonic() - began, errors


def _write_charge(store: AwsSecretsManagerStore, ref: TargetRef) -> Charge:
    return next(c for c, _ in store.publish_cost(ref) if c.quota.name == "write")


# ---- the declaration ---------------------------------------------------------------------------------------


def test_the_quotas_are_the_documented_ones() -> None:
    """The numbers the test server enforces (which quotes the pages), named short, per region."""
    ours = {q.name: (q.limit, q.window) for q in AWS_QUOTAS}
    server = {q.name: (q.limit, q.window) for q in SERVER_QUOTAS}
    assert ours["write"] == server["WriteApisPerSecond"] == (50, 1.0)
    assert ours["get"] == server["GetSecretValuePerSecond"] == (10_000, 1.0)
    assert ours["describe"] == server["DescribeSecretPerSecond"] == (40_000, 1.0)
    assert ours["create"] == server["CreateSecretPerSecond"]
    assert ours["list_versions"] == server["ListSecretVersionIdsPerSecond"]
    assert ours["tag"] == server["TagApisPerSecond"]
    assert all(q.service == "secretsmanager" and q.scope == "region" and q.source for q in AWS_QUOTAS)
    from tests.servers.fault_proxy import AWS_OPERATION_QUOTAS

    writes = {op for op, q in OPERATION_QUOTAS.items() if q == "write"}
    assert writes == {op for op, q in AWS_OPERATION_QUOTAS.items() if q == "WriteApisPerSecond"}


def test_publish_cost_is_what_one_publish_sends(
    open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy
) -> None:
    limits = RateLimits()
    store = open_aws(limits)
    (ref,) = _prepared(store, 1, "cost")
    proxy.clear()
    before = _admitted(limits)
    _publish(store, ref)
    seen = Counter(OPERATION_QUOTAS[op] for op in proxy.requests)
    cost = store.publish_cost(ref)
    assert {c.quota.name: n for c, n in cost} == dict(seen) == {"write": 2, "describe": 1, "get": 1}
    assert {c.key for c, _ in cost} == {REGION}
    assert [(c.quota.name, c.key, n) for c, n in store.inspect_cost(ref)] == [("describe", REGION, 1)]
    # and the limiter was charged with every one of them, in the same scopes
    assert _admitted(limits) - before == Counter({(c.quota.name, c.key): n for c, n in cost})


def _admitted(limits: RateLimits) -> Counter[tuple[str, str]]:
    return Counter({(s["quota"], s["scope"]): s["admitted"] for s in limits.stats()})


# ---- shared across workers ---------------------------------------------------------------------------------


def test_workers_share_the_region_write_quota(
    open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy
) -> None:
    """12 workers publish at once through one store, 4 publishes each, with the write quota 20/1s on both sides:
    the proxy refuses nothing (the headroom the limiter keeps at 20 or more absorbs a request that arrives late),
    and the 96 writes take about 96 / 19 windows. Without the limiter the same work is refused."""
    refs = _prepared(open_aws(RateLimits(enabled=False)), WORKERS, "shared")
    limits = RateLimits()
    store = open_aws(limits, botocore_config=STANDARD, quotas={"write": f"{LIMIT}/1s"})
    time.sleep(1.0)  # the preparation's writes leave the server's window
    book = proxy.enforce_quotas(limits={"WriteApisPerSecond": LIMIT})

    def publishes(through: AwsSecretsManagerStore) -> Callable[[TargetRef], None]:
        def run(ref: TargetRef) -> None:
            for _ in range(PUBLISHES):
                _publish(through, ref)

        return run

    elapsed, errors = _in_threads(publishes(store), refs)
    print("shared:", round(elapsed, 2), "s", book.stats()["served"], "served", book.stats()["throttled"], "refused")

    assert errors == []
    writes = 2 * PUBLISHES * WORKERS
    assert book.served("WriteApisPerSecond", REGION) == writes
    assert book.throttled() <= writes // 100, book.stats()  # at most 1%: none, as a rule
    per_window = int(LIMIT * HEADROOM)
    windows = (writes - 1) // per_window  # full windows waited before the last write goes out
    assert windows * 1.0 <= elapsed <= (windows + 1) * 1.04 + 3.0, elapsed
    assert limits.limit(_write_charge(store, refs[0])) == LIMIT  # never cut

    # the control: the same burst without the limiter, and no retries: the server refuses
    time.sleep(1.0)
    book.reset()
    once = Config(retries={"mode": "standard", "total_max_attempts": 1})
    bare = open_aws(RateLimits(enabled=False), botocore_config=once)
    _, errors = _in_threads(publishes(bare), refs)
    print("control:", book.stats()["throttled"], "refused", len(errors), "publishes failed")
    assert book.throttled("WriteApisPerSecond", REGION) > 0
    assert errors and all(isinstance(e, StoreUnavailable) for e in errors)


# ---- adapting to refusals ----------------------------------------------------------------------------------


def test_refusals_cut_the_limit_then_stop(open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy) -> None:
    """The client keeps 10 writes a second, the server allows 5 (another client uses the rest): the first
    refusals cut the client's limit to what the server allows, and a second round is not refused at all.

    Each refusal cuts the limit, those of one burst too (rotator/quotas.py cuts once per refusal): botocore's
    jittered backoff spreads the refused writes, so two refusals (10 -> 7 -> 4) in every measured run; eight
    workers against the documented 50 had five to eight refusals in the first burst and the limit at 1 to 4."""
    workers = 6
    refs = _prepared(open_aws(RateLimits(enabled=False)), workers, "adapt")
    limits = RateLimits()
    # standard retries: adaptive mode's own token bucket would hide what the shared limiter does
    store = open_aws(limits, botocore_config=STANDARD, quotas={"write": "10/1s"})
    charge = _write_charge(store, refs[0])
    time.sleep(1.0)
    book = proxy.enforce_quotas(limits={"WriteApisPerSecond": 5})

    def stage_twice(ref: TargetRef) -> None:
        for _ in range(2):
            key_id = str(uuid.uuid4())
            store.stage(ref, _value(key_id), _meta(key_id))

    first, errors = _in_threads(stage_twice, refs)
    refused, cut = book.throttled("WriteApisPerSecond", REGION), limits.limit(charge)
    print("adapt: first round", round(first, 2), "s", refused, "refused; limit", cut)
    assert errors == []  # botocore's retries got every write through
    assert refused > 0
    assert cut is not None and 1 <= cut <= 5  # 10 -> 7 -> 4: cut to what the server allows
    assert refused <= 4, refused

    second, errors = _in_threads(stage_twice, refs)
    print("adapt: second round", round(second, 2), "s", book.throttled() - refused, "refused")
    assert errors == []
    assert book.throttled() == refused  # no refusal in the second round
    assert limits.limit(charge) == cut
    assert book.served("WriteApisPerSecond", REGION) == 4 * workers
    assert second >= (2 * workers - 1) // cut - 0.5


# ---- the config override -----------------------------------------------------------------------------------


def test_the_override_reaches_the_limiter_and_a_bad_one_is_a_config_error(
    open_aws: Callable[..., AwsSecretsManagerStore],
) -> None:
    store = open_aws(RateLimits(), quotas={"write": "25/1s", "describe": None, "get": "600/1m"})
    cost = {c.quota.name: c.quota for c, _ in store.publish_cost(_ref("momento/override"))}
    assert (cost["write"].limit, cost["write"].window) == (25, 1.0)
    assert cost["describe"].limit is None  # no limit: only refusals pace it
    assert (cost["get"].limit, cost["get"].window) == (600, 60.0)

    with pytest.raises(ValidationError) as info:
        StoreConfig(type="aws", quotas={"writes": "5/1s"})
    (err,) = info.value.errors()
    assert err["loc"] == ("quotas",) and "unknown quota 'writes'" in err["msg"] and "list_versions" in err["msg"]

    data = {
        "issuer": {
            "type": "momento",
            "url": "http://127.0.0.1:9",
            "management_key": {"file": "/nonexistent/owner.key"},
            "endpoint": ENDPOINT,
        },
        "stores": {"sm": {"type": "aws", "region": REGION, "quotas": {"write": "fifty a second"}}},
        "policies": [{"name": "a", "role": "operator", "targets": [{"store": "sm", "secret": "a"}]}],
    }
    with pytest.raises(ConfigError) as cfg_info:
        from_mapping(data, source="test.yaml")
    (issue,) = [str(i) for i in cfg_info.value.issues]
    assert issue.startswith("stores.sm.quotas: ") and "write" in issue and "50/1s" in issue


def test_a_store_opened_by_the_runtime_charges_the_contexts_limiter(
    proxy: FaultProxy, session: boto3.session.Session
) -> None:
    limits = RateLimits()
    spec = StoreSpec("aws-quota", "aws", StoreConfig(type="aws", region=REGION, endpoint_url=proxy.url))
    store = STORE_TYPE.open(spec, StoreContext(limits=limits, options={"session": session}))
    try:
        assert not store.inspect(_ref("momento/ctx")).exists
    finally:
        store.close()
    assert [(s["quota"], s["scope"], s["admitted"]) for s in limits.stats()] == [("describe", REGION, 1)]
