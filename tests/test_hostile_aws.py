"""A hostile or broken AWS endpoint: every request the AWS Secrets Manager store and the SNS notifier make ends
within its total deadline per attempt (times botocore's attempts) plus a second, and reads a bounded answer.

Real boto3 clients talk HTTP to moto's server on 127.0.0.1 through ``tests/servers/hostile_issuer.py``'s
``HostileIssuer`` (a generic rewriting proxy), which drips, bloats or answers for it. Before
:mod:`rotator.botohttp`, botocore's timeouts were per socket read (60 s each: an answer dripped a byte at a time
never ended) and every answer, error answers included, was read whole. Nothing is patched in rotator or an SDK.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from rotator import botohttp
from rotator.config import SnsConfig
from rotator.errors import StoreUnavailable
from rotator.model import SecretText
from rotator.notify import SnsNotifier
from rotator.observability import API_CALLS
from rotator.stores.aws import (
    MAX_ANSWER,
    SERVICE,
    AwsSecretsManagerStore,
    StoreConfig,
    TargetOptions,
    open_store,
    version_id_for,
)
from rotator.stores.base import TargetRef
from tests.servers.hostile_issuer import Behaviour, HostileIssuer, drip, drip_headers, huge_body
from tests.servers.moto_server import MotoServer, running_moto
from tests.support.e2e import CHECKOUT, at, harness

pytestmark = pytest.mark.timeout(40)  # without the bounded send, a dripped answer holds a call for ever

REGION = "us-east-1"
#: the store's total per HTTP attempt in these tests, and its attempts (botocore's adaptive retries)
TIMEOUT, ATTEMPTS = 1.0, 2
#: what botocore's backoff adds between attempts at most (non-throttling: rand() * 50 ms * 2**i), plus a second
SLACK = 1.0
BIG = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    moto_server.reset()
    return moto_server


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[HostileIssuer]:
    with HostileIssuer(moto.url) as p:
        yield p


@pytest.fixture
def raw(moto: MotoServer) -> Iterator[Any]:
    client = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto.url)
    yield client
    client.close()


@pytest.fixture
def store(proxy: HostileIssuer) -> Iterator[AwsSecretsManagerStore]:
    s = open_store(
        "aws-hostile",
        StoreConfig(type="aws", region=REGION, endpoint_url=proxy.url, max_attempts=ATTEMPTS),
        session=boto3.session.Session(),
        request_timeout=TIMEOUT,
    )
    yield s
    s.close()


def huge(size: int = BIG, status: int = 200) -> Behaviour:
    """An answer of ``size`` bytes without a length (chunked), streamed: nothing can refuse it up front."""
    return huge_body(size, status, "application/x-amz-json-1.1")


def _ref(secret: str) -> TargetRef:
    return TargetRef("aws-hostile", secret, "checkout", TargetOptions(store="aws-hostile", secret=secret))


def _seed(raw: Any, secret: str) -> str:
    """A secret whose current version rotator wrote (the key's version id); the key id."""
    key = str(uuid.uuid4())
    raw.create_secret(Name=secret, SecretString=json.dumps({"keyId": key}), ClientRequestToken=version_id_for(key))
    return key


def _timed(fn: Callable[[], Any]) -> tuple[BaseException, float]:
    t = time.monotonic()
    with pytest.raises(StoreUnavailable) as failure:
        fn()
    return failure.value, time.monotonic() - t


CALLS: dict[str, Callable[[AwsSecretsManagerStore, TargetRef, str], Any]] = {
    "DescribeSecret": lambda s, ref, key: s.inspect(ref),
    "GetSecretValue": lambda s, ref, key: s.read(ref, key),
}


@pytest.mark.parametrize("operation", list(CALLS))
@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(drip_headers(0.05), id="dripped-headers"),
        pytest.param(drip(0.05), id="dripped-body"),  # moto's own answer, a byte every 50 ms: 15 s and more
    ],
)
def test_a_dripping_endpoint_fails_each_attempt_at_its_deadline(
    store: AwsSecretsManagerStore, proxy: HostileIssuer, raw: Any, operation: str, behaviour: Behaviour
) -> None:
    ref = _ref(f"momento/drip-{operation}")
    key = _seed(raw, ref.secret)
    call = CALLS[operation]
    call(store, ref, key)  # through the proxy, answered at once: fine
    proxy.on("POST", "/", behaviour)
    proxy.calls.clear()
    API_CALLS.reset()
    error, took = _timed(lambda: call(store, ref, key))
    assert took < TIMEOUT * ATTEMPTS + SLACK, took
    assert f"Secrets Manager {operation} failed after retries: ReadTimeoutError" in str(error), error
    assert "aws-hostile" in str(error) and ref.secret in str(error)
    # botocore's retries and its needs-retry hook are untouched: each attempt reached the endpoint and was counted
    assert proxy.count("POST", "/") == ATTEMPTS
    assert API_CALLS.snapshot()[(SERVICE, operation, "ReadTimeoutError")] == ATTEMPTS


@pytest.mark.parametrize("operation", list(CALLS))
@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_huge_answer_is_refused_at_the_cap(
    store: AwsSecretsManagerStore, proxy: HostileIssuer, raw: Any, operation: str, status: int
) -> None:
    ref = _ref(f"momento/huge-{operation}-{status}")
    key = _seed(raw, ref.secret)
    call = CALLS[operation]
    call(store, ref, key)
    proxy.on("POST", "/", huge(status=status))
    error, took = _timed(lambda: call(store, ref, key))
    assert took < TIMEOUT * ATTEMPTS + SLACK, took
    assert f"Secrets Manager {operation} failed after retries: ResponseTooLargeError" in str(error), error
    assert isinstance(error.__cause__, botohttp.ResponseTooLargeError)
    assert f"is larger than {MAX_ANSWER} bytes" in str(error.__cause__)


def test_a_bounded_store_still_writes_and_reads_through_the_proxy(
    store: AwsSecretsManagerStore, proxy: HostileIssuer, raw: Any
) -> None:
    """The whole round trip through the bounded send, then a dripping endpoint in the middle of a rotation: the
    write fails at its deadline and the secret keeps its current version."""
    from rotator.stores.base import VersionMeta

    def meta(key: str) -> VersionMeta:
        return VersionMeta(key_id=key, policy="checkout", expires_at=None, content_type="application/json")

    ref = _ref("momento/roundtrip")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    value = SecretText(json.dumps({"keyId": k1}))
    store.stage(ref, value, meta(k1))
    store.promote(ref, k1)
    assert store.read(ref, k1).reveal() == value.reveal()
    before = raw.describe_secret(SecretId=ref.secret)["VersionIdsToStages"]
    proxy.on("POST", "/", drip_headers(0.05))
    _, took = _timed(lambda: store.stage(ref, SecretText(json.dumps({"keyId": k2})), meta(k2)))
    assert took < 3 * (TIMEOUT * ATTEMPTS + SLACK), took  # at most the describe and the put
    proxy.on("POST", "/", None)
    assert store.inspect(ref).current_key_id == k1
    after = raw.describe_secret(SecretId=ref.secret)["VersionIdsToStages"]
    assert {v: sorted(ls) for v, ls in after.items() if "AWSCURRENT" in ls} == {
        v: sorted(ls) for v, ls in before.items() if "AWSCURRENT" in ls
    }


# ---- SNS ----------------------------------------------------------------------------------------------------


def test_an_sns_publish_to_a_dripping_endpoint_ends_within_its_bound(moto: MotoServer, proxy: HostileIssuer) -> None:
    from botocore.exceptions import ReadTimeoutError

    from rotator.notify import Alert

    topic = boto3.client("sns", region_name=REGION, endpoint_url=moto.url).create_topic(Name="rotator")["TopicArn"]
    notifier = SnsNotifier(SnsConfig(type="sns", topic_arn=topic, region=REGION, endpoint_url=proxy.url), timeout=1.0)
    alert = Alert("rotation_failed", "checkout", "rotation of checkout failed")
    notifier.send(alert, at(0))  # through the proxy, answered at once: fine
    assert proxy.count("POST", "/") == 1
    proxy.on("POST", "/", drip_headers(0.05))
    proxy.calls.clear()
    t = time.monotonic()
    with pytest.raises(ReadTimeoutError) as failure:
        notifier.send(alert, at(0))
    took = time.monotonic() - t
    assert took < 1.0 * SnsNotifier.ATTEMPTS + SLACK, took
    assert proxy.count("POST", "/") == SnsNotifier.ATTEMPTS
    assert "?" not in str(failure.value)


# ---- a real `rotator once` ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_rotator_once_against_a_dripping_secrets_manager_exits_1_in_bounded_time(
    tmp_path: Path, moto: MotoServer, proxy: HostileIssuer, raw: Any
) -> None:
    """A real ``rotator once`` whose ``aws`` store's endpoint drips its answers: with one attempt per call each
    store call fails at the store's total deadline (its ``timeout``, 3 s here where the default is 30 s; the
    pass makes two: the target's inspect, and the publish's look before it writes), the pass exits 1 and the
    secret is as it was. Before the bounded send the first DescribeSecret never ended."""
    from rotator.stores.aws import REQUEST_TIMEOUT

    timeout = 3.0
    secret = "checkout/momento"
    policy = {**CHECKOUT, "targets": [{"store": "aws", "secret": secret}]}
    with harness(tmp_path) as h:
        store = {"type": "aws", "region": REGION, "endpoint_url": moto.url, "max_attempts": 1}
        direct = h.write_config([policy], name="direct.yaml", stores={"aws": store})
        h.once_in_process(direct, at(0))  # a first rotation, straight to moto: the secret holds a key
        before = raw.describe_secret(SecretId=secret)["VersionIdsToStages"]
        value = raw.get_secret_value(SecretId=secret)["SecretString"]
        (held,) = h.live_ids("checkout")

        proxy.on("POST", "/", drip_headers(0.05))
        proxy.calls.clear()
        cfg = h.write_config([policy], stores={"aws": {**store, "endpoint_url": proxy.url, "timeout": "3s"}})
        t = time.monotonic()
        run = h.run("-c", str(cfg), "once", now=at(45), timeout=REQUEST_TIMEOUT * 4)  # the key is due at 39m
        took = time.monotonic() - t
        calls = proxy.count("POST", "/")
        assert run.returncode == 1, run.explain()
        assert 1 <= calls <= 3, calls
        # each call held for the configured 3 s, not the default 30 s (the first call alone would take that)
        assert timeout * calls - 1 < took < timeout * calls + 10 < REQUEST_TIMEOUT, (took, calls)
        assert "DescribeSecret failed after retries: ReadTimeoutError" in run.stdout, run.explain()
        proxy.on("POST", "/", None)
        assert raw.describe_secret(SecretId=secret)["VersionIdsToStages"] == before
        assert raw.get_secret_value(SecretId=secret)["SecretString"] == value
        assert held in h.live_ids("checkout")
