"""The Lambda entry points, through boto3 against moto's server and the Momento emulator over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from rotator.issuers.emulator import Emulator
from rotator.runtime import lambda_handler
from rotator.runtime.native_rotation import NativeRotationError
from tests.servers.fault_proxy import FaultProxy
from tests.servers.moto_server import MotoServer, point_rotation_at_lambda, running_moto

REGION = "us-east-1"
SECRET = "momento/lambda-demo"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with running_moto() as server:
        yield server


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def env(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    moto_server.reset()
    emu = Emulator(tmp_path / "emu.db", bootstrap_key_file=tmp_path / "owner.key")
    url = emu.start()
    config = {
        "issuer": {
            "type": "momento",
            "url": url,
            "management_key": {"file": str(tmp_path / "owner.key")},
            "endpoint": "cell-4-us-west-2-1.prod.a.momentohq.com",
        },
        "log_level": "warning",
        "jitter": "0s",  # no random start delay before a create: these tests run one pass at a time
        "defaults": {"lifetime": "30d", "rotate_before": "7d", "grace": "1h"},
        "stores": {"aws": {"type": "aws", "region": REGION, "endpoint_url": moto_server.url}},
        "policies": [{"name": "lambda-demo", "role": "operator", "targets": [{"store": "aws", "secret": SECRET}]}],
    }
    monkeypatch.setenv("ROTATOR_CONFIG_YAML", json.dumps(config))
    lambda_handler.reset()
    raw = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_server.url)
    yield {"emulator": emu, "raw": raw, "config": config, "moto": moto_server}
    lambda_handler.reset()
    emu.stop()


def _current(raw: Any) -> dict[str, Any]:
    value = raw.get_secret_value(SecretId=SECRET, VersionStage="AWSCURRENT")["SecretString"]
    return dict(json.loads(value))


def test_scheduled_handler_runs_a_pass_and_returns_a_summary(env: dict[str, Any]) -> None:
    summary = lambda_handler.scheduled_handler({}, None)
    assert summary["ok"] and summary["counts"]["created"] == 1
    stored = _current(env["raw"])
    live = {k.key_id for k, _ in env["emulator"].list_key_infos()}
    assert stored["keyId"] in live
    again = lambda_handler.scheduled_handler({}, None)
    zero = ("created", "published", "retired", "reloaded", "revoked", "skipped", "failed")
    assert again["counts"] == dict.fromkeys(zero, 0)


def test_scheduled_handler_runs_only_the_shard_in_rotator_shard(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rotator.shard import shard_of

    mine = shard_of("lambda-demo", 3)
    monkeypatch.setenv("ROTATOR_SHARD", f"{(mine + 1) % 3}/3")  # another function's shard: nothing to do here
    other = lambda_handler.scheduled_handler({}, None)
    assert other["ok"] and other["policies"] == []
    assert all(k.policy != "lambda-demo" for k, _ in env["emulator"].list_key_infos())  # no key was created
    monkeypatch.setenv("ROTATOR_SHARD", f"{mine}/3")
    summary = lambda_handler.scheduled_handler({}, None)
    assert [p["policy"] for p in summary["policies"]] == ["lambda-demo"]
    assert summary["counts"]["created"] == 1


def test_scheduled_handler_raises_when_the_pass_fails(env: dict[str, Any]) -> None:
    env["emulator"].failure_rate = 1.0
    env["emulator"].failure_statuses = (500,)
    env["config"]["issuer"]["max_attempts"] = 1
    os.environ["ROTATOR_CONFIG_YAML"] = json.dumps(env["config"])
    lambda_handler.reset()
    with pytest.raises(lambda_handler.RotationFailed, match="rotation failed"):
        lambda_handler.scheduled_handler({}, None)


def _enable_rotation(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the secret's native rotation at a (do-nothing) moto Lambda that stands for rotator's function."""
    fn = point_rotation_at_lambda(env["moto"], SECRET, "rotator-rotation", REGION)
    monkeypatch.setenv("ROTATOR_LAMBDA_ARN", fn)
    env["function"] = fn
    lambda_handler.reset()
    return str(fn)


def _start_rotation(env: dict[str, Any]) -> str:
    """Start a rotation as Secrets Manager does: a new version id labelled AWSPENDING, without a value yet
    ("During rotation, Secrets Manager creates an AWSPENDING version ID before creating the new secret version",
    DescribeSecret API reference); its id is the ClientRequestToken of every step. moto's RotateSecret makes that
    version (and invokes its do-nothing stand-in Lambda); the test then calls the steps itself.

    moto refuses RotateSecret while AWSPENDING sits on the AWSCURRENT version (AWS documents that state as a
    finished rotation) and forgets the rotation Lambda unless it is named again, so both are handled here.
    """
    raw = env["raw"]
    for vid, labels in raw.describe_secret(SecretId=SECRET).get("VersionIdsToStages", {}).items():
        if "AWSPENDING" in labels:
            raw.update_secret_version_stage(SecretId=SECRET, VersionStage="AWSPENDING", RemoveFromVersionId=vid)
    token = str(uuid.uuid4())
    raw.rotate_secret(SecretId=SECRET, ClientRequestToken=token, RotationLambdaARN=env["function"])
    assert raw.describe_secret(SecretId=SECRET)["VersionIdsToStages"][token] == ["AWSPENDING"]
    return token


def _marked_keys(env: dict[str, Any]) -> list[str]:
    return [k.key_id for k, _ in env["emulator"].list_key_infos() if k.policy == "lambda-demo"]


def _step(step: str, token: str, secret_id: str = SECRET) -> dict[str, Any]:
    return lambda_handler.rotation_handler({"Step": step, "SecretId": secret_id, "ClientRequestToken": token}, None)


def test_native_rotation_four_steps_replayed(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    lambda_handler.scheduled_handler({}, None)
    old = _current(env["raw"])["keyId"]
    _enable_rotation(env, monkeypatch)
    token = _start_rotation(env)
    arn = env["raw"].describe_secret(SecretId=SECRET)["ARN"]
    created = _step("createSecret", token, arn)
    assert created["status"] == "created"
    assert _step("createSecret", token)["status"].startswith("done")  # replay: no second key
    assert _step("setSecret", token)["status"].startswith("nothing")
    assert _step("testSecret", token)["key_id"] == created["key_id"]
    assert _step("testSecret", token)["status"] == "ok"
    assert _step("finishSecret", token)["status"] == "AWSCURRENT moved"
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        assert _step(step, token)["status"].startswith("done")  # every step replays as a no-op
    stored = _current(env["raw"])
    assert stored["keyId"] == created["key_id"]
    stages = env["raw"].describe_secret(SecretId=SECRET)["VersionIdsToStages"]
    assert "AWSPREVIOUS" in next(labels for vid, labels in stages.items() if vid != token and labels)
    live = {k.key_id for k, _ in env["emulator"].list_key_infos()}
    assert {old, created["key_id"]} <= live  # the old key is not revoked by the rotation itself
    marked = [k for k, _ in env["emulator"].list_key_infos() if k.policy == "lambda-demo"]
    assert len(marked) == 2


def test_native_rotation_steps_out_of_order_fail_cleanly(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    lambda_handler.scheduled_handler({}, None)
    before = _current(env["raw"])
    _enable_rotation(env, monkeypatch)
    token = _start_rotation(env)
    for step in ("testSecret", "finishSecret"):
        with pytest.raises(NativeRotationError, match="createSecret did not finish"):
            _step(step, token)
    assert _current(env["raw"]) == before
    _step("createSecret", token)
    newer = _start_rotation(env)  # a newer rotation takes AWSPENDING over
    _step("createSecret", newer)
    with pytest.raises(NativeRotationError, match="not AWSPENDING"):
        _step("finishSecret", token)
    assert _current(env["raw"]) == before


def test_native_rotation_refuses_a_token_secrets_manager_did_not_stage(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the old handler went ahead with createSecret for an unknown token: it minted a Momento key and took
    # AWSPENDING from the rotation really in progress
    lambda_handler.scheduled_handler({}, None)
    _enable_rotation(env, monkeypatch)
    in_progress = _start_rotation(env)
    keys_before = _marked_keys(env)
    stages_before = env["raw"].describe_secret(SecretId=SECRET)["VersionIdsToStages"]
    stray = str(uuid.uuid4())
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        with pytest.raises(NativeRotationError, match="no stage for rotation"):
            _step(step, stray)
    assert _marked_keys(env) == keys_before  # no key created
    assert env["raw"].describe_secret(SecretId=SECRET)["VersionIdsToStages"] == stages_before
    # the rotation in progress goes on undisturbed
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        _step(step, in_progress)
    assert "AWSCURRENT" in env["raw"].describe_secret(SecretId=SECRET)["VersionIdsToStages"][in_progress]


def test_a_due_pass_leaves_a_native_rotation_in_flight_alone(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the old store let the pass stage its own key: PutSecretValue moved AWSPENDING off the native token,
    # and the rotation's finishSecret then failed
    lambda_handler.scheduled_handler({}, None)
    old = _current(env["raw"])["keyId"]
    _enable_rotation(env, monkeypatch)
    token = _start_rotation(env)
    _step("createSecret", token)
    app = lambda_handler.get_app()
    later = datetime.now(UTC) + timedelta(days=24)  # past rotate_before: the policy is due
    app.engine.clock = lambda: later
    keys_before = _marked_keys(env)
    summary = lambda_handler.scheduled_handler({}, None)
    # the pass only observes a secret its native rotation writes: no key of its own, no write, not a failure
    assert summary["ok"] and summary["counts"]["created"] == 0 and summary["counts"]["failed"] == 0
    assert _marked_keys(env) == keys_before
    assert any("native rotation" in n for n in summary["policies"][0]["notes"])
    stages = env["raw"].describe_secret(SecretId=SECRET)["VersionIdsToStages"]
    assert [vid for vid, labels in stages.items() if "AWSPENDING" in labels] == [token]
    app.engine.clock = lambda: datetime.now(UTC)
    for step in ("setSecret", "testSecret", "finishSecret"):
        _step(step, token)
    assert _current(env["raw"])["keyId"] not in (old, None)
    assert "AWSCURRENT" in env["raw"].describe_secret(SecretId=SECRET)["VersionIdsToStages"][token]


def test_create_secret_passes_the_rotation_token_to_put_secret_value(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lambda_handler.scheduled_handler({}, None)
    _enable_rotation(env, monkeypatch)
    token = _start_rotation(env)
    rotation_token = str(uuid.uuid4())  # Secrets Manager's RotationToken: 36-256 characters of [A-Za-z0-9-]
    with FaultProxy(env["moto"].url) as proxy:
        env["config"]["stores"]["aws"]["endpoint_url"] = proxy.url
        monkeypatch.setenv("ROTATOR_CONFIG_YAML", json.dumps(env["config"]))
        lambda_handler.reset()
        lambda_handler.rotation_handler(
            {"Step": "createSecret", "SecretId": SECRET, "ClientRequestToken": token, "RotationToken": rotation_token},
            None,
        )
        puts = proxy.params("PutSecretValue")
        lambda_handler.reset()
    assert [(p["ClientRequestToken"], p.get("RotationToken")) for p in puts] == [(token, rotation_token)]


def test_native_rotation_refuses_an_unknown_secret_and_a_bad_event(env: dict[str, Any]) -> None:
    from rotator.errors import ConfigError

    with pytest.raises(ConfigError, match="no policy has an aws target"):
        _step("createSecret", str(uuid.uuid4()), "other/secret")
    with pytest.raises(NativeRotationError, match="not a Secrets Manager rotation event"):
        lambda_handler.rotation_handler({"Step": "dropSecret"}, None)


def test_a_pass_after_native_rotation_revokes_the_old_key_after_grace(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lambda_handler.scheduled_handler({}, None)
    old = _current(env["raw"])["keyId"]
    _enable_rotation(env, monkeypatch)
    token = _start_rotation(env)
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        _step(step, token)
    new = _current(env["raw"])["keyId"]
    # inside grace: nothing is revoked
    summary = lambda_handler.scheduled_handler({}, None)
    assert summary["counts"]["revoked"] == 0
    app = lambda_handler.get_app()
    later = datetime.now(UTC) + timedelta(hours=2)
    app.engine.clock = lambda: later
    summary = lambda_handler.scheduled_handler({}, None)
    assert summary["counts"]["revoked"] == 1
    live = {k.key_id for k, _ in env["emulator"].list_key_infos()}
    assert new in live and old not in live


def test_the_lambda_path_loads_no_azure_google_or_apscheduler(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lambda_handler.scheduled_handler({}, None)
    _enable_rotation(env, monkeypatch)
    token = _start_rotation(env)
    script = (
        "import json, sys\n"
        "import rotator.runtime.lambda_handler as h\n"
        "s = h.scheduled_handler({}, None)\n"
        f"t = {token!r}\n"
        "for step in ('createSecret', 'setSecret', 'testSecret', 'finishSecret'):\n"
        f"    h.rotation_handler({{'Step': step, 'SecretId': {SECRET!r}, 'ClientRequestToken': t}}, None)\n"
        # nor httpx: the Momento client speaks urllib3, which botocore has loaded anyway (cold start)
        "no = {'azure', 'google', 'apscheduler', 'kubernetes', 'httpx'}\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & no)\n"
        "print(json.dumps({'ok': s['ok'], 'loaded': bad}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"ok": True, "loaded": []}
