"""The AWS Secrets Manager store, through boto3, over HTTP, against moto's server (and a fault proxy)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import structlog
from botocore.config import Config
from pydantic import ValidationError

from rotator.errors import (
    StoreConflict,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.model import SecretText
from rotator.stores.aws import (
    AwsSecretsManagerStore,
    StoreConfig,
    TargetOptions,
    key_id_of,
    open_store,
    replica_kms_key,
    version_id_for,
)
from rotator.stores.base import TargetRef, VersionMeta
from tests.servers.fault_proxy import Fault, FaultProxy
from tests.servers.moto_server import MotoServer, point_rotation_at_lambda, running_moto
from tests.stores.contract import StoreContract
from tests.support.crash import SimulatedCrash, count_calls, crash_after

REGION = "us-east-1"
POLICY = "checkout-api"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    moto_server.reset()
    return moto_server


def _config(endpoint: str, **kw: Any) -> StoreConfig:
    return StoreConfig(type="aws", region=REGION, endpoint_url=endpoint, **kw)


@pytest.fixture(scope="module")
def session(moto_server: MotoServer) -> boto3.session.Session:
    """One boto3 session for the module: it caches the service model, so each store opens fast."""
    return boto3.session.Session()


@pytest.fixture
def open_aws(moto: MotoServer, session: boto3.session.Session) -> Iterator[Callable[..., AwsSecretsManagerStore]]:
    """Open stores against moto (or a given endpoint); all are closed after the test."""
    opened: list[AwsSecretsManagerStore] = []

    def _open(endpoint: str | None = None, **kw: Any) -> AwsSecretsManagerStore:
        s = open_store("aws-test", _config(endpoint or moto.url, **kw), session=session)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def store(open_aws: Callable[..., AwsSecretsManagerStore]) -> AwsSecretsManagerStore:
    return open_aws()


@pytest.fixture
def make_ref() -> Callable[[str], TargetRef]:
    return lambda secret: _ref(secret)


@pytest.fixture
def raw(moto: MotoServer, session: boto3.session.Session) -> Any:
    """A plain boto3 client on moto, to set up and check state behind the store's back."""
    client = session.client("secretsmanager", region_name=REGION, endpoint_url=moto.url)
    yield client
    client.close()


def _ref(secret: str, **opts: Any) -> TargetRef:
    return TargetRef("aws-test", secret, POLICY, TargetOptions(store="aws-test", secret=secret, **opts))


def _meta(key_id: str) -> VersionMeta:
    return VersionMeta(key_id, POLICY, datetime.now(UTC) + timedelta(days=30), "application/json")


def _value(key_id: str) -> SecretText:
    return SecretText(json.dumps({"apiKey": f"key-material-{uuid.uuid4().hex}", "keyId": key_id}))


def _rotate(store: AwsSecretsManagerStore, ref: TargetRef, key_id: str, value: SecretText | None = None) -> SecretText:
    """One publish as the engine does it: inspect, stage, read back, promote."""
    value = value or _value(key_id)
    store.inspect(ref)
    store.stage(ref, value, _meta(key_id))
    assert store.read(ref, key_id) == value
    store.promote(ref, key_id)
    return value


def _labels(raw: Any, secret: str) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in raw.describe_secret(SecretId=secret)["VersionIdsToStages"].items()}


class TestAwsContract(StoreContract):
    """The shared store contract, against moto."""

    @pytest.fixture
    def other_store(self, open_aws: Callable[..., AwsSecretsManagerStore]) -> AwsSecretsManagerStore:
        return open_aws()

    @pytest.fixture
    def plant_foreign(self, raw: Any) -> Callable[[TargetRef, str], None]:
        return lambda ref, text: raw.create_secret(Name=ref.secret, SecretString=text)


# ---- rotations -------------------------------------------------------------------------------------------


def test_three_rotations_keep_current_and_previous_right(store: AwsSecretsManagerStore, raw: Any) -> None:
    ref = _ref("momento/three-rotations")
    keys = [str(uuid.uuid4()) for _ in range(3)]
    values = []
    for i, key in enumerate(keys):
        values.append(_rotate(store, ref, key))
        labels = _labels(raw, ref.secret)
        assert "AWSCURRENT" in labels[version_id_for(key)]
        current = raw.get_secret_value(SecretId=ref.secret, VersionStage="AWSCURRENT")
        assert current["SecretString"] == values[i].reveal()
        if i > 0:
            assert "AWSPREVIOUS" in labels[version_id_for(keys[i - 1])]
            previous = raw.get_secret_value(SecretId=ref.secret, VersionStage="AWSPREVIOUS")
            assert previous["SecretString"] == values[i - 1].reveal()
        assert sum("AWSCURRENT" in v for v in labels.values()) == 1
        assert sum("AWSPREVIOUS" in v for v in labels.values()) == (1 if i > 0 else 0)
        assert store.inspect(ref).current_key_id == key


def test_new_secret_is_created_with_tags_kms_key_and_replicas(
    open_aws: Callable[..., AwsSecretsManagerStore], raw: Any
) -> None:
    store = open_aws(kms_key_id="alias/rotator", tags={"team": "payments"}, replica_regions=["us-west-2"])
    ref = _ref("momento/created", tags={"env": "prod"})
    key = str(uuid.uuid4())
    store.stage(ref, _value(key), _meta(key))
    described = raw.describe_secret(SecretId=ref.secret)
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags == {"managed-by": "rotator", "rotator-policy": POLICY, "team": "payments", "env": "prod"}
    assert described["KmsKeyId"] == "alias/rotator"
    assert [r["Region"] for r in described["ReplicationStatus"]] == ["us-west-2"]


def test_version_id_names_the_key() -> None:
    key = str(uuid.uuid4())
    assert version_id_for(key) == f"rotator-{key}"
    for k in (key, "short", "k-1", "ключ", "x" * 56, "a_b" * 9):
        vid = version_id_for(k)
        assert 32 <= len(vid) <= 64
        assert key_id_of(vid) == k
    assert key_id_of(str(uuid.uuid4())) is None  # console/CLI versions are random uuids
    with pytest.raises(ValueError, match="cannot be encoded"):
        version_id_for("x" * 57 + "_")


def test_key_ids_that_are_not_uuids_round_trip(store: AwsSecretsManagerStore, raw: Any) -> None:
    ref = _ref("momento/endpoint")
    key = "endpoint-0badf00d"  # what the engine uses for format key's endpoint secret
    value = _rotate(store, ref, key)
    assert store.inspect(ref).current_key_id == key
    assert store.read(ref, key) == value
    assert version_id_for(key).startswith("rotatorx") and version_id_for(key) in _labels(raw, ref.secret)


def test_stale_pending_is_cleared_before_staging(store: AwsSecretsManagerStore, raw: Any) -> None:
    ref = _ref("momento/stale-pending")
    _rotate(store, ref, str(uuid.uuid4()))
    stale = str(uuid.uuid4())  # an earlier rotation staged this and died
    raw.put_secret_value(
        SecretId=ref.secret, SecretString="half-done", ClientRequestToken=stale, VersionStages=["AWSPENDING"]
    )
    k2 = str(uuid.uuid4())
    with structlog.testing.capture_logs() as logs:
        _rotate(store, ref, k2)
    labels = _labels(raw, ref.secret)
    assert "AWSPENDING" not in labels[stale]
    assert [v for v, ls in labels.items() if "AWSPENDING" in ls] == [version_id_for(k2)]
    assert "AWSCURRENT" in labels[version_id_for(k2)]
    assert any("stale AWSPENDING" in e["event"] and e["version"] == stale for e in logs)


def test_foreign_current_value_is_refused_without_adopt(store: AwsSecretsManagerStore, raw: Any) -> None:
    raw.create_secret(Name="momento/foreign", SecretString="written by hand")
    ref = _ref("momento/foreign")
    state = store.inspect(ref)
    assert state.foreign and state.current_key_id is None
    key = str(uuid.uuid4())
    with pytest.raises(StoreConflict, match="adopt: true"):
        store.stage(ref, _value(key), _meta(key))
    assert raw.get_secret_value(SecretId=ref.secret, VersionStage="AWSCURRENT")["SecretString"] == ("written by hand")


def test_foreign_current_value_is_taken_over_with_adopt(store: AwsSecretsManagerStore, raw: Any) -> None:
    first = raw.create_secret(Name="momento/adopted", SecretString="written by hand")
    ref = _ref("momento/adopted", adopt=True)
    key = str(uuid.uuid4())
    value = _rotate(store, ref, key)
    state = store.inspect(ref)
    assert state.current_key_id == key and not state.foreign
    assert "AWSPREVIOUS" in _labels(raw, ref.secret)[first["VersionId"]]
    assert raw.get_secret_value(SecretId=ref.secret, VersionStage="AWSCURRENT")["SecretString"] == value.reveal()


def test_secret_of_another_policy_is_refused(store: AwsSecretsManagerStore) -> None:
    ref = _ref("momento/shared")
    _rotate(store, ref, str(uuid.uuid4()))
    other = TargetRef("aws-test", ref.secret, "another-policy", ref.options)
    key = str(uuid.uuid4())
    store.inspect(other)
    with pytest.raises(StoreConflict, match="managed by rotator policy 'checkout-api'"):
        store.stage(other, _value(key), _meta(key))


def _foreign_lambda(moto: MotoServer, raw: Any, secret: str, name: str) -> str:
    """Point ``secret``'s native rotation at a (do-nothing) Lambda function ``name``; return its ARN."""
    return point_rotation_at_lambda(moto, secret, name, REGION)


def test_foreign_rotation_lambda_is_refused(store: AwsSecretsManagerStore, raw: Any, moto: MotoServer) -> None:
    ref = _ref("momento/native-rotation")
    _rotate(store, ref, str(uuid.uuid4()))
    fn = _foreign_lambda(moto, raw, ref.secret, "someone-elses-rotation")
    key = str(uuid.uuid4())
    store.inspect(ref)
    with pytest.raises(StoreConflict, match="someone-elses-rotation") as info:
        store.stage(ref, _value(key), _meta(key))
    assert fn in str(info.value)


def test_secret_rotated_natively_by_rotator_is_observed_not_written_by_a_pass(
    store: AwsSecretsManagerStore, raw: Any, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one writer per secret: a pass's PutSecretValue would take AWSPENDING from a native rotation in flight
    ref = _ref("momento/own-rotation")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    _rotate(store, ref, k1)
    _rotate(store, ref, k2)
    fn = _foreign_lambda(moto, raw, ref.secret, "rotator-rotation")
    monkeypatch.setenv("ROTATOR_LAMBDA_ARN", fn)
    in_flight = str(uuid.uuid4())  # what Secrets Manager staged for the rotation it started
    raw.rotate_secret(SecretId=ref.secret, ClientRequestToken=in_flight, RotationLambdaARN=fn)
    before = _labels(raw, ref.secret)
    assert before[in_flight] == ["AWSPENDING"]
    assert store.inspect(ref).current_key_id == k2  # observed
    k3 = str(uuid.uuid4())
    with pytest.raises(StoreConflict, match=r"rotator's rotation function .* one writer") as info:
        store.stage(ref, _value(k3), _meta(k3))
    assert fn in str(info.value)
    with pytest.raises(StoreConflict, match="one writer"):
        store.promote(ref, k1)
    assert _labels(raw, ref.secret) == before  # AWSPENDING stays on the native rotation's token
    store.retire(ref, k1)  # old keys are still retired (then revoked) after grace
    assert version_id_for(k1) not in {v for v, ls in _labels(raw, ref.secret).items() if ls}


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("AWS_LAMBDA_FUNCTION_NAME", "rotator-rotation"),  # a name alone proves nothing
        ("ROTATOR_LAMBDA_ARN", "arn:aws:lambda:us-east-1:999999999999:function:rotator-rotation"),  # other account
        ("ROTATOR_LAMBDA_ARN", "arn:aws:lambda:eu-west-1:123456789012:function:rotator-rotation"),  # other region
    ],
)
def test_rotator_function_is_recognised_by_arn_not_by_name(
    store: AwsSecretsManagerStore,
    raw: Any,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    value: str,
) -> None:
    ref = _ref("momento/same-name")
    _rotate(store, ref, str(uuid.uuid4()))
    fn = _foreign_lambda(moto, raw, ref.secret, "rotator-rotation")
    assert fn != value
    monkeypatch.setenv(env, value)
    key = str(uuid.uuid4())
    store.inspect(ref)
    with pytest.raises(StoreConflict, match="not rotator"):
        store.stage(ref, _value(key), _meta(key))


def test_secret_scheduled_for_deletion_is_refused(store: AwsSecretsManagerStore, raw: Any) -> None:
    ref = _ref("momento/deleted")
    _rotate(store, ref, str(uuid.uuid4()))
    raw.delete_secret(SecretId=ref.secret, RecoveryWindowInDays=7)
    with pytest.raises(StoreConflict, match="restore-secret"):
        store.inspect(ref)
    key = str(uuid.uuid4())
    with pytest.raises(StoreConflict, match="scheduled for deletion"):
        store.stage(ref, _value(key), _meta(key))


def test_retired_version_is_unlabelled_and_unreadable(store: AwsSecretsManagerStore, raw: Any) -> None:
    ref = _ref("momento/retired")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    _rotate(store, ref, k1)
    _rotate(store, ref, k2)
    store.retire(ref, k1)
    labels = _labels(raw, ref.secret)
    assert labels.get(version_id_for(k1), []) == []
    assert labels[version_id_for(k2)] == ["AWSCURRENT"]  # the AWSPENDING promote left is tidied too
    retired = [v for v in store.inspect(ref).versions if v.key_id == k1]
    assert all(not v.enabled for v in retired)
    with pytest.raises(StoreNotFound, match="retired"):
        store.read(ref, k1)


def test_arn_target_that_does_not_exist_is_not_created(store: AwsSecretsManagerStore) -> None:
    ref = _ref("arn:aws:secretsmanager:us-east-1:123456789012:secret:momento/missing-AbCdEf")
    key = str(uuid.uuid4())
    with pytest.raises(StoreNotFound, match="by name"):
        store.stage(ref, _value(key), _meta(key))


def test_secret_named_by_arn_is_written(store: AwsSecretsManagerStore, raw: Any) -> None:
    arn = raw.create_secret(Name="momento/by-arn")["ARN"]
    ref = _ref(arn)
    key = str(uuid.uuid4())
    _rotate(store, ref, key)
    assert store.inspect(ref).current_key_id == key


# ---- API calls -------------------------------------------------------------------------------------------


def test_rotation_costs_at_most_four_calls(store: AwsSecretsManagerStore) -> None:
    ref = _ref("momento/counted")
    _rotate(store, ref, str(uuid.uuid4()))
    with count_calls("aws-secretsmanager") as calls:
        _rotate(store, ref, str(uuid.uuid4()))
    assert [op for _, op, _ in calls] == [
        "DescribeSecret",
        "PutSecretValue",
        "GetSecretValue",
        "UpdateSecretVersionStage",
    ]
    assert all(status == "200" for _, _, status in calls)


def test_repeated_stage_and_promote_make_no_calls_after_inspect(store: AwsSecretsManagerStore) -> None:
    ref = _ref("momento/no-op")
    key = str(uuid.uuid4())
    value = _rotate(store, ref, key)
    store.inspect(ref)
    with count_calls("aws-secretsmanager") as calls:
        store.stage(ref, value, _meta(key))
        store.promote(ref, key)
    assert calls == []


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_crash_between_calls_then_rerun_converges(
    open_aws: Callable[..., AwsSecretsManagerStore], raw: Any, crash_at: int
) -> None:
    ref = _ref("momento/crashed")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    _rotate(open_aws(), ref, k1)
    v2 = _value(k2)  # the rerun publishes the same key (copied from wherever it landed)
    dying = open_aws()
    with pytest.raises(SimulatedCrash), crash_after(crash_at, service="aws-secretsmanager"):
        _rotate(dying, ref, k2, v2)
    fresh = open_aws()  # a new process: nothing cached
    _rotate(fresh, ref, k2, v2)
    state = fresh.inspect(ref)
    assert state.current_key_id == k2
    labels = _labels(raw, ref.secret)
    assert "AWSPREVIOUS" in labels[version_id_for(k1)]
    assert sorted(v.key_id or "" for v in state.versions) == sorted([k1, k2])


def test_stale_cache_after_a_concurrent_promote_is_recovered(
    open_aws: Callable[..., AwsSecretsManagerStore], raw: Any
) -> None:
    ref = _ref("momento/concurrent")
    k1, k2, k3 = (str(uuid.uuid4()) for _ in range(3))
    a, b = open_aws(), open_aws()
    _rotate(a, ref, k1)
    a.inspect(ref)
    b.inspect(ref)
    a.stage(ref, _value(k2), _meta(k2))
    b.stage(ref, _value(k3), _meta(k3))
    a.promote(ref, k2)  # a's view is current: k1 -> k2
    b.promote(ref, k3)  # b still believes k1 is current: the swap fails, b looks again and retries
    labels = _labels(raw, ref.secret)
    assert "AWSCURRENT" in labels[version_id_for(k3)]
    assert "AWSPREVIOUS" in labels[version_id_for(k2)]


# ---- Secrets Manager as AWS documents it (tests/servers/fault_proxy.py AwsSemantics in front of moto) -----


@pytest.fixture
def aws_proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """moto behind a proxy that answers as AWS does where moto differs (deprecated versions, repeated puts)."""
    with FaultProxy(moto.url, aws_semantics=True, page_size=2) as p:
        yield p


class TestAwsContractWithAwsSemantics(StoreContract):
    """The shared store contract, against moto answering as AWS does."""

    @pytest.fixture
    def store(self, open_aws: Callable[..., AwsSecretsManagerStore], aws_proxy: FaultProxy) -> AwsSecretsManagerStore:
        return open_aws(aws_proxy.url)

    @pytest.fixture
    def other_store(
        self, open_aws: Callable[..., AwsSecretsManagerStore], aws_proxy: FaultProxy
    ) -> AwsSecretsManagerStore:
        return open_aws(aws_proxy.url)

    @pytest.fixture
    def plant_foreign(self, raw: Any) -> Callable[[TargetRef, str], None]:
        return lambda ref, text: raw.create_secret(Name=ref.secret, SecretString=text)


def test_aws_semantics_leave_deprecated_versions_out(
    open_aws: Callable[..., AwsSecretsManagerStore], aws_proxy: FaultProxy, raw: Any
) -> None:
    store = open_aws(aws_proxy.url)
    ref = _ref("momento/deprecated")
    k1, k2, k3 = (str(uuid.uuid4()) for _ in range(3))
    for k in (k1, k2, k3):
        _rotate(store, ref, k)
    assert _labels(raw, ref.secret)[version_id_for(k1)] == []  # moto lists it with no labels
    through = boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws_proxy.url)
    assert version_id_for(k1) not in through.describe_secret(SecretId=ref.secret)["VersionIdsToStages"]
    assert [v.key_id for v in store.inspect(ref).versions if v.key_id == k1] == []
    # a repeated put "succeeds but does nothing": no VersionStages in the answer, no label moves
    again = through.put_secret_value(
        SecretId=ref.secret,
        ClientRequestToken=version_id_for(k3),
        SecretString=raw.get_secret_value(SecretId=ref.secret, VersionId=version_id_for(k3))["SecretString"],
        VersionStages=["AWSPENDING"],
    )
    assert "VersionStages" not in again
    with pytest.raises(through.exceptions.ResourceExistsException):
        through.put_secret_value(
            SecretId=ref.secret,
            ClientRequestToken=version_id_for(k3),
            SecretString="other",
            VersionStages=["AWSPENDING"],
        )
    through.close()


def test_a_retired_key_published_again_becomes_current(
    open_aws: Callable[..., AwsSecretsManagerStore], aws_proxy: FaultProxy, raw: Any
) -> None:
    # an endpoint going A -> B -> C -> A, or a pass publishing a key another pass retired meanwhile: the key's
    # version exists without labels, so AWS leaves it out of DescribeSecret and ignores the repeated put.
    # The old store took "no VersionStages" for "AWSPENDING", and the read-back found a retired version on
    # every pass: the target stayed on the old key
    store = open_aws(aws_proxy.url)
    ref = _ref("momento/republished")
    k1, k2, k3 = (str(uuid.uuid4()) for _ in range(3))
    v1 = _rotate(store, ref, k1)
    _rotate(store, ref, k2)
    _rotate(store, ref, k3)
    store.retire(ref, k1)
    assert _labels(raw, ref.secret)[version_id_for(k1)] == []
    fresh = open_aws(aws_proxy.url)
    _rotate(fresh, ref, k1, v1)
    assert fresh.inspect(ref).current_key_id == k1
    labels = _labels(raw, ref.secret)
    assert "AWSCURRENT" in labels[version_id_for(k1)] and "AWSPREVIOUS" in labels[version_id_for(k3)]
    assert raw.get_secret_value(SecretId=ref.secret, VersionStage="AWSCURRENT")["SecretString"] == v1.reveal()


def test_current_since_is_found_on_a_later_page_of_list_secret_version_ids(
    open_aws: Callable[..., AwsSecretsManagerStore], moto: MotoServer, raw: Any
) -> None:
    # the old store read one page only: with the current version on page 2, current_since was None
    with FaultProxy(moto.url, aws_semantics=True, page_size=1) as proxy:
        proxy.filter_answer("DescribeSecret", lambda answer: answer.pop("LastChangedDate", None))
        store = open_aws(proxy.url)
        ref = _ref("momento/paged")
        keys = [str(uuid.uuid4()) for _ in range(3)]
        for k in keys:
            _rotate(store, ref, k)
        state = store.inspect(ref)
        assert state.current_key_id == keys[-1]
        assert state.current_since is not None
        assert proxy.count("ListSecretVersionIds") >= 2
        assert any(p.get("NextToken") for p in proxy.params("ListSecretVersionIds"))


def _start_native_rotation(moto: MotoServer, raw: Any, secret: str) -> str:
    """A rotation as Secrets Manager starts it: a version labelled AWSPENDING without a value yet."""
    fn = _foreign_lambda(moto, raw, secret, "someone-elses-rotation")
    token = str(uuid.uuid4())
    raw.rotate_secret(SecretId=secret, ClientRequestToken=token, RotationLambdaARN=fn)
    assert _labels(raw, secret)[token] == ["AWSPENDING"]
    return token


def test_an_empty_pending_version_is_read_once_not_at_every_inspect(
    open_aws: Callable[..., AwsSecretsManagerStore], aws_proxy: FaultProxy, moto: MotoServer, raw: Any
) -> None:
    store = open_aws(aws_proxy.url)
    ref = _ref("momento/empty-pending")
    _rotate(store, ref, str(uuid.uuid4()))
    token = _start_native_rotation(moto, raw, ref.secret)
    aws_proxy.clear()
    for _ in range(3):
        state = store.inspect(ref)
        assert [v.key_id for v in state.versions if v.version == token] == [None]
    # AWS answers ResourceNotFoundException for a version without a value; the old store asked every time
    assert aws_proxy.count("GetSecretValue") == 1


def test_an_empty_pending_version_filled_later_is_seen(
    moto: MotoServer, session: boto3.session.Session, raw: Any
) -> None:
    store = open_store("aws-test", _config(moto.url), session=session, describe_ttl=0)
    ref = _ref("momento/filled-pending")
    _rotate(store, ref, str(uuid.uuid4()))
    token = _start_native_rotation(moto, raw, ref.secret)
    assert [v.key_id for v in store.inspect(ref).versions if v.version == token] == [None]
    k2 = str(uuid.uuid4())
    raw.put_secret_value(  # the rotation function's createSecret, in another process
        SecretId=ref.secret, ClientRequestToken=token, SecretString=_value(k2).reveal(), VersionStages=["AWSPENDING"]
    )
    # "no value" is remembered for describe_ttl only (0 here): the filled version is read again
    assert [v.key_id for v in store.inspect(ref).versions if v.version == token] == [k2]
    store.close()


def test_replicas_are_encrypted_with_the_configured_kms_key(
    open_aws: Callable[..., AwsSecretsManagerStore], aws_proxy: FaultProxy
) -> None:
    store = open_aws(aws_proxy.url, kms_key_id="alias/rotator", replica_regions=["us-west-2", "eu-west-1"])
    ref = _ref("momento/replicated")
    key = str(uuid.uuid4())
    store.stage(ref, _value(key), _meta(key))
    through = boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws_proxy.url)
    described = through.describe_secret(SecretId=ref.secret)
    through.close()
    # the old store sent AddReplicaRegions without KmsKeyId: the replicas used aws/secretsmanager
    assert {r["Region"]: r["KmsKeyId"] for r in described["ReplicationStatus"]} == {
        "us-west-2": "alias/rotator",
        "eu-west-1": "alias/rotator",
    }


def test_replica_kms_keys_per_region() -> None:
    mrk = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"
    assert replica_kms_key(mrk, "eu-west-1") == mrk.replace("us-east-1", "eu-west-1")
    assert replica_kms_key("alias/rotator", "eu-west-1") == "alias/rotator"
    assert replica_kms_key("mrk-1234abcd12ab34cd56ef1234567890ab", "eu-west-1").startswith("mrk-")
    alias_arn = "arn:aws:kms:us-east-1:123456789012:alias/rotator"
    assert replica_kms_key(alias_arn, "eu-west-1") == "arn:aws:kms:eu-west-1:123456789012:alias/rotator"
    single = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    with pytest.raises(ValueError, match="single-Region KMS key"):
        replica_kms_key(single, "eu-west-1")
    with pytest.raises(ValidationError, match="single-Region KMS key"):
        StoreConfig(type="aws", kms_key_id=single, replica_regions=["eu-west-1"])
    with pytest.raises(ValidationError, match="single-Region KMS key"):
        TargetOptions(store="aws", secret="s", kms_key_id=single, replica_regions=["eu-west-1"])


# ---- compare-and-set promote (expect_current) -------------------------------------------------------------


def test_promote_with_expect_current_moves_when_current_matches(store: AwsSecretsManagerStore, raw: Any) -> None:
    ref = _ref("momento/cas-ok")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    _rotate(store, ref, k1)
    store.inspect(ref)
    store.stage(ref, _value(k2), _meta(k2))
    with count_calls("aws-secretsmanager") as calls:
        store.promote(ref, k2, expect_current=k1)
    # the conditional move is the one call: it names the version AWSCURRENT leaves (RemoveFromVersionId)
    assert [(op, status) for _, op, status in calls] == [("UpdateSecretVersionStage", "200")]
    labels = _labels(raw, ref.secret)
    assert "AWSCURRENT" in labels[version_id_for(k2)] and "AWSPREVIOUS" in labels[version_id_for(k1)]
    store.promote(ref, k2, expect_current=k1)  # already current: a no-op, whatever was expected


def test_promote_with_expect_none_takes_over_a_foreign_value(store: AwsSecretsManagerStore, raw: Any) -> None:
    first = raw.create_secret(Name="momento/cas-adopt", SecretString="written by hand")["VersionId"]
    ref = _ref("momento/cas-adopt", adopt=True)
    k1 = str(uuid.uuid4())
    store.inspect(ref)
    store.stage(ref, _value(k1), _meta(k1))
    with pytest.raises(StorePreconditionFailed, match="holds key none, not " + k1[:8]):
        store.promote(ref, k1, expect_current=k1 + "-not-current")
    store.promote(ref, k1, expect_current=None)  # None: no rotator-written current value
    labels = _labels(raw, ref.secret)
    assert "AWSCURRENT" in labels[version_id_for(k1)] and "AWSPREVIOUS" in labels[first]


def test_promote_with_expect_current_refuses_after_another_writer_promoted(
    open_aws: Callable[..., AwsSecretsManagerStore], raw: Any
) -> None:
    ref = _ref("momento/cas-race")
    k1, k2, k3 = (str(uuid.uuid4()) for _ in range(3))
    a, b = open_aws(), open_aws()
    _rotate(a, ref, k1)
    a.inspect(ref)
    a.stage(ref, _value(k2), _meta(k2))  # a read k1 as current and staged k2
    _rotate(b, ref, k3)  # meanwhile b promotes k3
    before = _labels(raw, ref.secret)
    with count_calls("aws-secretsmanager") as calls, pytest.raises(StorePreconditionFailed) as info:
        a.promote(ref, k2, expect_current=k1)
    assert f"holds key {k3}, not {k1}" in str(info.value)
    assert _labels(raw, ref.secret) == before  # nothing moved
    ops = [(op, status) for _, op, status in calls]
    # a's cached view still said k1: its conditional move was refused by Secrets Manager, then a looked again
    assert ops == [("UpdateSecretVersionStage", "InvalidParameterException"), ("DescribeSecret", "200")]
    assert a.inspect(ref).current_key_id == k3


def test_promote_with_expect_current_refuses_a_fresh_mismatch_without_a_move(
    store: AwsSecretsManagerStore, raw: Any
) -> None:
    ref = _ref("momento/cas-mismatch")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    _rotate(store, ref, k1)
    store.stage(ref, _value(k2), _meta(k2))
    before = _labels(raw, ref.secret)
    with count_calls("aws-secretsmanager") as calls, pytest.raises(StorePreconditionFailed):
        store.promote(ref, k2, expect_current=str(uuid.uuid4()))
    assert "UpdateSecretVersionStage" not in [op for _, op, _ in calls]
    assert _labels(raw, ref.secret) == before


# ---- faults ----------------------------------------------------------------------------------------------


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.url) as p:
        yield p


def test_throttling_is_retried(open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy) -> None:
    store = open_aws(proxy.url)
    ref = _ref("momento/throttled")
    _rotate(store, ref, str(uuid.uuid4()))
    proxy.inject("throttle", times=2, operation="PutSecretValue")
    key = str(uuid.uuid4())
    with count_calls("aws-secretsmanager") as calls:
        _rotate(store, ref, key)
    assert store.inspect(ref).current_key_id == key
    assert proxy.faults == [("PutSecretValue", "throttle")] * 2
    puts = [status for _, op, status in calls if op == "PutSecretValue"]
    assert puts == ["ThrottlingException", "ThrottlingException", "200"]


def test_persistent_500_is_unavailable(open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy) -> None:
    store = open_aws(proxy.url, max_attempts=2)
    proxy.inject("error500", times=100)
    ref = _ref("momento/broken")
    with pytest.raises(StoreUnavailable, match="DescribeSecret") as info:
        store.inspect(ref)
    assert info.value.store == "aws-test" and info.value.secret == ref.secret
    assert proxy.count("DescribeSecret") == 2


def test_dropped_connection_is_retried_then_unavailable(
    open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy
) -> None:
    store = open_aws(proxy.url, max_attempts=2)
    ref = _ref("momento/dropped")
    proxy.inject("drop", times=1)
    assert not store.inspect(ref).exists
    proxy.inject("drop", times=2)
    with pytest.raises(StoreUnavailable, match="ConnectionClosedError"):
        store.inspect(ref)


def test_rate_of_throttles_still_converges(open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy) -> None:
    store = open_aws(proxy.url)
    proxy.set_rate("throttle", 0.3)
    ref = _ref("momento/flaky")
    key = str(uuid.uuid4())
    _rotate(store, ref, key)
    assert store.inspect(ref).current_key_id == key
    assert proxy.faults  # the seeded rate did throttle something


def test_cas_promote_whose_answer_is_lost_is_confirmed_by_a_second_look(
    open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy, raw: Any
) -> None:
    store = open_aws(proxy.url, max_attempts=1)  # no botocore retry: the store itself sees the lost answer
    ref = _ref("momento/cas-lost-answer")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    _rotate(store, ref, k1)
    store.stage(ref, _value(k2), _meta(k2))
    proxy.inject("drop_after", operation="UpdateSecretVersionStage")  # the move is made, the answer lost
    store.promote(ref, k2, expect_current=k1)
    assert proxy.count("UpdateSecretVersionStage") == 1  # decided by reading again, not by sending it again
    assert "AWSCURRENT" in _labels(raw, ref.secret)[version_id_for(k2)]


def test_cas_promote_that_never_arrived_is_not_resent(
    open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy, raw: Any
) -> None:
    store = open_aws(proxy.url, max_attempts=1)
    ref = _ref("momento/cas-dropped")
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    _rotate(store, ref, k1)
    store.stage(ref, _value(k2), _meta(k2))
    proxy.inject("drop", operation="UpdateSecretVersionStage")  # never reached Secrets Manager
    with pytest.raises(StoreUnavailable, match="UpdateSecretVersionStage"):
        store.promote(ref, k2, expect_current=k1)
    assert proxy.count("UpdateSecretVersionStage") == 1
    assert "AWSCURRENT" in _labels(raw, ref.secret)[version_id_for(k1)]
    store.promote(ref, k2, expect_current=k1)  # the next pass: the same conditional move, now answered
    assert "AWSCURRENT" in _labels(raw, ref.secret)[version_id_for(k2)]


def test_access_denied_names_the_iam_action(open_aws: Callable[..., AwsSecretsManagerStore], proxy: FaultProxy) -> None:
    store = open_aws(proxy.url)
    ref = _ref("momento/denied")
    _rotate(store, ref, str(uuid.uuid4()))
    proxy.inject(Fault.error(400, "AccessDeniedException", "User is not authorized"), operation="PutSecretValue")
    key = str(uuid.uuid4())
    with pytest.raises(StorePermissionError, match="secretsmanager:PutSecretValue") as info:
        store.stage(ref, _value(key), _meta(key))
    assert "momento/denied" in str(info.value)


def test_not_found_maps_to_typed_errors(store: AwsSecretsManagerStore) -> None:
    ref = _ref("momento/nowhere")
    assert not store.inspect(ref).exists
    with pytest.raises(StoreNotFound):
        store.read(ref, str(uuid.uuid4()))
    with pytest.raises(StoreNotFound):
        store.promote(ref, str(uuid.uuid4()))
    store.retire(ref, str(uuid.uuid4()))  # nothing to retire: no-op


def test_client_config_override_is_merged(moto: MotoServer) -> None:
    store = open_store("aws-test", _config(moto.url, max_attempts=5), botocore_config=Config(connect_timeout=2))
    try:
        assert not store.inspect(_ref("momento/merged")).exists
    finally:
        store.close()
        store.close()  # idempotent


# ---- config models ---------------------------------------------------------------------------------------


def test_importing_the_module_does_not_import_boto3() -> None:
    code = (
        "import sys, rotator.stores.aws; "
        "bad = [m for m in ('boto3', 'botocore') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "secret",
    [
        "momento/checkout-api",
        "a",
        "x" * 512,
        "a+b=c.d@e_f-g",
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:momento/checkout-api-AbCdEf",
        "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:k-AbCdEf",
    ],
)
def test_valid_secret_names_and_arns(secret: str) -> None:
    assert TargetOptions(store="aws", secret=secret).secret == secret


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("has space", "not a valid secret"),
        ("", "not a valid secret"),
        ("x" * 513, "not a valid secret"),
        ("momento/ключ", "not a valid secret"),
        ("arn:aws:secretsmanager:us-west-2:1234:secret:x", "not a valid Secrets Manager ARN"),
        ("arn:aws:s3:::bucket", "not a valid Secrets Manager ARN"),
        ("arn:aws:secretsmanager:US-WEST-2:123456789012:secret:x", "not a valid Secrets Manager ARN"),
    ],
)
def test_invalid_secret_names_are_rejected_clearly(secret: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as info:
        TargetOptions(store="aws", secret=secret)
    assert "secret name" in str(info.value) and "ARN" in str(info.value)


def test_target_region_must_match_the_arn() -> None:
    with pytest.raises(ValidationError, match="contradicts the secret ARN"):
        TargetOptions(
            store="aws", secret="arn:aws:secretsmanager:us-west-2:123456789012:secret:x-AbCdEf", region="eu-west-1"
        )


def test_target_options_reject_unknown_fields_and_bad_overrides() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TargetOptions.model_validate({"store": "aws", "secret": "s", "vault": "x"})
    with pytest.raises(ValidationError, match="not an AWS region"):
        TargetOptions(store="aws", secret="s", replica_regions=["mars"])
    with pytest.raises(ValidationError, match="set by rotator itself"):
        TargetOptions(store="aws", secret="s", tags={"managed-by": "me"})


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("region", "US-EAST-1", "not an AWS region"),
        ("region", "us-east", "not an AWS region"),
        ("endpoint_url", "localhost:4566", "not an http"),
        ("max_attempts", 0, "between 1 and 20"),
        ("tags", {"aws:x": "y"}, "reserved by AWS"),
        ("vault_url", "https://x", "Extra inputs are not permitted"),
    ],
)
def test_store_config_is_validated(field: str, value: object, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        StoreConfig.model_validate({"type": "aws", field: value})


def test_store_config_accepts_the_documented_fields() -> None:
    cfg = StoreConfig.model_validate(
        {
            "type": "aws",
            "region": "us-gov-west-1",
            "endpoint_url": "https://vpce-1.secretsmanager.example",
            "profile": "prod",
            "max_attempts": 4,
            "kms_key_id": "alias/momento",
            "tags": {"team": "x"},
            "replica_regions": ["eu-central-1"],
        }
    )
    assert cfg.max_attempts == 4 and cfg.replica_regions == ["eu-central-1"]


def test_the_timeout_bounds_each_attempt_and_is_checked() -> None:
    """``timeout`` is what one HTTP attempt may take in total (the bounded send's deadline): 30 s by default, as
    configured otherwise, and a value outside 1s..10m is refused naming the field."""
    import boto3

    from rotator.stores.aws import REQUEST_TIMEOUT, StoreConfig, open_store

    session = boto3.session.Session(region_name=REGION)
    default = open_store("sm", StoreConfig(type="aws", region=REGION), session=session)
    short = open_store("sm", {"type": "aws", "region": REGION, "timeout": "5s"}, session=session)
    try:
        assert default._request_timeout == REQUEST_TIMEOUT == 30.0
        assert short._request_timeout == 5.0
    finally:
        default.close()
        short.close()
    for bad in ("0s", "11m"):
        with pytest.raises(ValidationError, match="timeout"):
            StoreConfig(type="aws", region=REGION, timeout=bad)
