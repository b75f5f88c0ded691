"""The ``lambda`` reload target, through boto3, over HTTP, against moto's server behind the RevisionId and
LastUpdateStatus behaviour Lambda documents (tests/servers/aws_rollouts.py: moto has neither)."""

from __future__ import annotations

import io
import json
import logging
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import structlog
from pydantic import ValidationError

from rotator.errors import ReloadConflict, ReloadError
from rotator.observability import configure_logging
from rotator.reload.base import ReloadContext, ReloadTarget
from rotator.reload.lambda_fn import LambdaReload, ReloadConfig, open_target
from tests.servers.aws_rollouts import AwsRollouts
from tests.servers.moto_server import MotoServer, moto, moto_server  # noqa: F401
from tests.support.crash import SimulatedCrash, count_calls, crash_after

REGION = "us-east-1"
KEY = "key-7b3e"
OLD_KEY = "key-0a9d"
#: values the functions' other variables hold: none may reach a log line, a status or an exception
SECRETS = {
    "DATABASE_PASSWORD": "hunter2-db-password-9f8e7d",
    "STRIPE_TOKEN": "sk_live_51Habcdefghijklmnop",
    "MOMENTO_API_KEY": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrZXkifQ.c2lnbmF0dXJl",
}


@pytest.fixture
def aws(moto: MotoServer) -> Iterator[AwsRollouts]:  # noqa: F811
    moto.configure({"lambda": {"use_docker": False}})
    with AwsRollouts(moto.url) as proxy:
        yield proxy


@pytest.fixture
def raw(aws: AwsRollouts, moto: MotoServer) -> Iterator[Any]:  # noqa: F811
    """A plain boto3 Lambda client through the proxy: sets up functions and plays the other writers."""
    client = boto3.client("lambda", region_name=REGION, endpoint_url=aws.url)
    yield client
    client.close()


@pytest.fixture
def function(raw: Any, moto: MotoServer) -> Callable[..., str]:  # noqa: F811
    """Create a function whose environment holds secrets and the old key id; its ARN."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=moto.url)
    role = iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    iam.close()
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return None\n")

    def make(name: str, variables: dict[str, str] | None = None) -> str:
        env = {**SECRETS, "MOMENTO_KEY_ID": OLD_KEY} if variables is None else variables
        return str(
            raw.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=role,
                Handler="index.handler",
                Code={"ZipFile": code.getvalue()},
                Environment={"Variables": env},
            )["FunctionArn"]
        )

    return make


@pytest.fixture
def target(aws: AwsRollouts) -> Iterator[Callable[..., LambdaReload]]:
    opened: list[LambdaReload] = []

    def make(functions: list[str], **kw: Any) -> LambdaReload:
        cfg = ReloadConfig(
            type="lambda", functions=functions, region=REGION, endpoint_url=kw.pop("endpoint_url", aws.url), **kw
        )
        t = open_target(cfg, ReloadContext("checkout"))
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


def _published() -> datetime:
    time.sleep(0.01)
    return datetime.now(UTC)


def _variables(raw: Any, name: str) -> dict[str, str]:
    return dict(raw.get_function_configuration(FunctionName=name)["Environment"]["Variables"])


def _by_unit(t: LambdaReload, published_at: datetime) -> dict[str, Any]:
    return {s.unit: s for s in t.observe(KEY, published_at)}


def _states(t: LambdaReload, published_at: datetime) -> dict[str, str]:
    return {s.unit: s.state for s in t.observe(KEY, published_at)}


# ---- the lifecycle -----------------------------------------------------------------------------------------


def test_pending_then_reload_then_rolling_then_done_keeping_every_other_variable(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts, raw: Any
) -> None:
    function("worker")
    function("api")
    t = target(["worker", "api"])
    assert isinstance(t, ReloadTarget)
    assert (t.name, t.type, t.capabilities.observable, t.capabilities.rollout) == (
        "lambda:us-east-1",
        "lambda",
        True,
        True,
    )
    published = _published()
    before = _by_unit(t, published)
    assert {u: s.state for u, s in before.items()} == {"worker": "pending", "api": "pending"}
    assert before["worker"].detail == "MOMENTO_KEY_ID is another key id" and before["worker"].since is None

    revision = aws.lambda_revision("worker")
    t.reload("worker", KEY, None, published)
    assert _variables(raw, "worker") == {**SECRETS, "MOMENTO_KEY_ID": KEY}  # every other variable kept exactly
    assert aws.lambda_revision("worker") != revision and aws.lambda_status("worker") == "InProgress"

    worker = _by_unit(t, published)["worker"]
    assert worker.state == "rolling" and "InProgress" in worker.detail
    assert worker.since is not None and worker.since >= published.replace(microsecond=0)
    assert _states(t, published)["api"] == "pending"

    aws.lambda_finish("worker")
    worker = _by_unit(t, published)["worker"]
    assert worker.state == "done" and worker.since is not None


def test_an_unset_variable_is_added(
    function: Callable[..., str], target: Callable[..., LambdaReload], raw: Any, aws: AwsRollouts
) -> None:
    function("worker", {"DATABASE_PASSWORD": SECRETS["DATABASE_PASSWORD"]})
    t = target(["worker"], variable="APP_KEY_ID")
    published = _published()
    (status,) = t.observe(KEY, published)
    assert status.state == "pending" and status.detail == "APP_KEY_ID is unset"
    t.reload("worker", KEY, None, published)
    assert _variables(raw, "worker") == {"DATABASE_PASSWORD": SECRETS["DATABASE_PASSWORD"], "APP_KEY_ID": KEY}


def test_a_function_arn_is_a_unit_named_by_the_function(
    function: Callable[..., str], target: Callable[..., LambdaReload]
) -> None:
    arn = function("worker")
    t = target([arn])
    published = _published()
    assert _states(t, published) == {"worker": "pending"}
    t.reload("worker", KEY, None, published)
    assert _states(t, published) == {"worker": "rolling"}


def test_calls_are_counted(function: Callable[..., str], target: Callable[..., LambdaReload]) -> None:
    function("worker")
    t = target(["worker"])
    published = _published()
    with count_calls("lambda") as calls:
        t.observe(KEY, published)
        t.reload("worker", KEY, None, published)
    assert [op for _, op, _ in calls] == [
        "GetFunctionConfiguration",
        "GetFunctionConfiguration",
        "UpdateFunctionConfiguration",
    ]


# ---- idempotence and conflicts -----------------------------------------------------------------------------


def test_a_pass_killed_right_after_the_update_does_not_update_again(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts
) -> None:
    function("worker")
    published = _published()
    first = target(["worker"])
    with pytest.raises(SimulatedCrash), crash_after(2, service="lambda"):
        first.reload("worker", KEY, None, published)
    assert aws.count("lambda:UpdateFunctionConfiguration") == 1

    second = target(["worker"])  # the next pass, in a new process
    assert _states(second, published) == {"worker": "rolling"}
    aws.lambda_finish("worker")
    assert _states(second, published) == {"worker": "done"}
    with pytest.raises(ReloadConflict, match="already holds key id"):
        second.reload("worker", KEY, None, published)
    assert aws.count("lambda:UpdateFunctionConfiguration") == 1


def test_a_function_changed_since_the_observation_is_a_conflict(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts, raw: Any
) -> None:
    function("worker")
    published = _published()
    t = target(["worker"])
    assert _states(t, published) == {"worker": "pending"}
    raw.update_function_configuration(FunctionName="worker", Description="someone else's change")
    aws.lambda_finish("worker")
    with pytest.raises(ReloadConflict, match="changed since it was observed"):
        t.reload("worker", KEY, None, published)
    assert aws.count("lambda:UpdateFunctionConfiguration") == 1  # the other writer's only
    assert _variables(raw, "worker")["MOMENTO_KEY_ID"] == OLD_KEY


def test_a_revision_changed_between_read_and_write_is_a_conflict_and_loses_nothing(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts, raw: Any
) -> None:
    function("worker")
    published = _published()
    t = target(["worker"])

    def other_writer() -> None:  # a person adds a variable between rotator's read and its write
        env = {**_variables(raw, "worker"), "FEATURE_FLAG": "on"}
        raw.update_function_configuration(FunctionName="worker", Environment={"Variables": env})
        aws.lambda_finish("worker")

    aws.before_next("lambda:UpdateFunctionConfiguration", other_writer)
    with pytest.raises(ReloadConflict, match="PreconditionFailedException"):
        t.reload("worker", KEY, None, published)
    # rotator's write was refused: the variable the other writer added is there, the key id is not
    assert _variables(raw, "worker") == {**SECRETS, "MOMENTO_KEY_ID": OLD_KEY, "FEATURE_FLAG": "on"}
    assert _states(t, published) == {"worker": "pending"}
    t.reload("worker", KEY, None, published)  # the next pass
    assert _variables(raw, "worker") == {**SECRETS, "MOMENTO_KEY_ID": KEY, "FEATURE_FLAG": "on"}


def test_an_update_in_progress_is_a_conflict(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts, raw: Any
) -> None:
    function("worker")
    raw.update_function_code(FunctionName="worker", ZipFile=b"PK\x05\x06" + b"\x00" * 18)  # a deploy in flight
    published = _published()
    t = target(["worker"])
    assert _states(t, published) == {"worker": "pending"}
    with pytest.raises(ReloadConflict, match="ResourceConflictException"):
        t.reload("worker", KEY, None, published)
    assert _variables(raw, "worker")["MOMENTO_KEY_ID"] == OLD_KEY


# ---- failures ----------------------------------------------------------------------------------------------


def test_a_failed_update_is_failed_with_its_reason_code_and_can_be_started_again(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts
) -> None:
    function("worker")
    published = _published()
    t = target(["worker"])
    t.reload("worker", KEY, None, published)
    aws.lambda_finish(
        "worker", failed="InvalidConfiguration", reason=f"bad value {SECRETS['DATABASE_PASSWORD']} for a variable"
    )
    (status,) = t.observe(KEY, published)
    assert status.state == "failed" and "InvalidConfiguration" in status.detail
    assert SECRETS["DATABASE_PASSWORD"] not in status.detail and status.since is not None
    t.reload("worker", KEY, None, published)  # the planner starts a failed unit again after reload_timeout
    assert aws.count("lambda:UpdateFunctionConfiguration") == 2
    assert _states(t, published) == {"worker": "rolling"}


def test_an_unknown_function_is_unknown_and_reload_an_error(
    target: Callable[..., LambdaReload], aws: AwsRollouts
) -> None:
    t = target(["ghost"])
    published = _published()
    (status,) = t.observe(KEY, published)
    assert status.state == "unknown" and "function ghost not found" in status.detail
    with pytest.raises(ReloadError, match="not found") as info:
        t.reload("ghost", KEY, None, published)
    assert (info.value.target, info.value.unit) == ("lambda:us-east-1", "ghost")
    assert aws.count("lambda:UpdateFunctionConfiguration") == 0


def test_access_denied_names_the_permission(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts
) -> None:
    function("worker")
    published = _published()
    t = target(["worker"])
    aws.fail_next("lambda:GetFunctionConfiguration", 403, "AccessDeniedException", "not authorized")
    (status,) = t.observe(KEY, published)
    assert status.state == "unknown"
    assert (
        status.detail
        == "access denied (AccessDeniedException): grant lambda:GetFunctionConfiguration on function worker"
    )
    aws.fail_next("lambda:UpdateFunctionConfiguration", 403, "AccessDeniedException", "not authorized")
    with pytest.raises(ReloadError, match="grant lambda:UpdateFunctionConfiguration on function worker"):
        t.reload("worker", KEY, None, published)


def test_an_environment_lambda_cannot_show_is_never_written(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts, raw: Any
) -> None:
    function("worker")
    aws.lambda_environment_error("worker")
    published = _published()
    t = target(["worker"])
    (status,) = t.observe(KEY, published)
    assert status.state == "unknown" and "kms:Decrypt" in status.detail
    with pytest.raises(ReloadError, match="kms:Decrypt"):
        t.reload("worker", KEY, None, published)
    assert aws.count("lambda:UpdateFunctionConfiguration") == 0


def test_moto_alone_has_no_revision_id_so_nothing_is_written(
    function: Callable[..., str],
    target: Callable[..., LambdaReload],
    moto: MotoServer,  # noqa: F811
    raw: Any,
) -> None:
    """The fidelity gap tests/servers/aws_rollouts.py fills; rotator refuses an unconditional write."""
    function("worker")
    direct = boto3.client("lambda", region_name=REGION, endpoint_url=moto.url)
    cfg = direct.get_function_configuration(FunctionName="worker")
    assert "RevisionId" not in cfg and cfg["LastUpdateStatus"] == "Successful"
    direct.update_function_configuration(FunctionName="worker", Description="x", RevisionId="not-the-revision")
    assert direct.get_function_configuration(FunctionName="worker")["LastUpdateStatus"] == "Successful"
    direct.close()
    t = target(["worker"], endpoint_url=moto.url)
    with pytest.raises(ReloadError, match="no RevisionId"):
        t.reload("worker", KEY, None, _published())
    assert _variables(raw, "worker")["MOMENTO_KEY_ID"] == OLD_KEY


# ---- nothing but the key id leaves ----------------------------------------------------------------------------


def test_no_variable_value_reaches_a_log_a_status_or_an_exception(
    function: Callable[..., str], target: Callable[..., LambdaReload], aws: AwsRollouts, raw: Any
) -> None:
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    buf = io.StringIO()
    texts: list[str] = []

    def keep(exc: BaseException) -> None:
        texts.append("".join(traceback.format_exception(exc)) + repr(exc) + str(exc))

    try:
        configure_logging("debug", stream=buf, json=True)
        for name in ("worker", "api", "busy"):
            function(name)
        t = target(["worker", "api", "busy", "ghost"])
        published = _published()
        statuses = list(t.observe(KEY, published))
        t.reload("worker", KEY, None, published)
        aws.lambda_finish("worker", failed="InvalidConfiguration", reason=f"value {SECRETS['STRIPE_TOKEN']} rejected")
        statuses += t.observe(KEY, published)
        # errors whose AWS message quotes every value (Lambda's messages are never repeated)
        quoted = " ".join(SECRETS.values())
        aws.fail_next("lambda:UpdateFunctionConfiguration", 400, "InvalidParameterValueException", quoted)
        aws.fail_next("lambda:GetFunctionConfiguration", 403, "AccessDeniedException", quoted)
        statuses += t.observe(KEY, published)
        for unit in ("api", "ghost"):
            with pytest.raises(ReloadError) as info:
                t.reload(unit, KEY, None, published)
            keep(info.value)
        raw.update_function_configuration(FunctionName="busy", Description="in flight")
        with pytest.raises(ReloadConflict) as conflict:
            t.reload("busy", KEY, None, published)
        keep(conflict.value)
        aws.fail_next("lambda:UpdateFunctionConfiguration", 412, "PreconditionFailedException", quoted)
        aws.lambda_finish("busy")
        with pytest.raises(ReloadConflict) as precondition:
            t.reload("busy", KEY, None, published)
        keep(precondition.value)
        aws.lambda_environment_error("api")
        statuses += t.observe(KEY, published)
        texts += [repr(s) for s in statuses] + [repr(t), repr(vars(t))]
    finally:
        structlog.configure(**saved_structlog)
        root.handlers, root.level = saved_root[0], saved_root[1]
    logs = buf.getvalue()
    assert KEY in logs and "lambda configuration updated" in logs
    assert any("InvalidParameterValueException" in x for x in texts)
    for value in SECRETS.values():
        assert value not in logs
        assert not [x for x in texts if value in x], value
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]  # (moto's server logs too)
    assert {"event": "lambda configuration updated", "key_id": KEY} in [
        {k: e.get(k) for k in ("event", "key_id")} for e in events
    ]


# ---- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"functions": []}, "at least 1"),
        ({"functions": ["my function"]}, "not a Lambda function name"),
        ({"functions": ["f" * 65]}, "not a Lambda function name"),
        ({"functions": ["arn:aws:lambda:us-east-1:123:function:f"]}, "not a Lambda function name"),
        ({"functions": ["arn:aws:lambda:us-east-1:123456789012:function:f:live"]}, "names version or alias 'live'"),
        ({"functions": ["worker", "123456789012:function:worker"]}, "names function worker twice"),
        ({"functions": ["arn:aws:lambda:eu-west-1:123456789012:function:f"]}, "contradicts the ARNs"),
        (
            {
                "region": None,
                "functions": [
                    "arn:aws:lambda:eu-west-1:123456789012:function:a",
                    "arn:aws:lambda:us-west-2:123456789012:function:b",
                ],
            },
            "several regions",
        ),
        ({"variable": "1KEY"}, "not an environment variable name"),
        ({"variable": "K"}, "not an environment variable name"),
        ({"variable": "MOMENTO-KEY"}, "not an environment variable name"),
        ({"variable": "AWS_REGION"}, "reserved by Lambda"),
        ({"endpoint_url": "lambda.local"}, "not an http"),
        ({"timeout": 301}, "less than or equal to 300"),
        ({"publish": True}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(change: dict[str, Any], message: str) -> None:
    raw = {"type": "lambda", "functions": ["worker"], "region": REGION, **change}
    with pytest.raises(ValidationError, match=message):
        ReloadConfig.model_validate(raw)


def test_config_accepts_names_and_arns() -> None:
    cfg = ReloadConfig.model_validate(
        {
            "type": "lambda",
            "functions": [
                "worker_1",
                "123456789012:function:api",
                "arn:aws:lambda:eu-west-1:123456789012:function:jobs:$LATEST",
            ],
        }
    )
    assert cfg.client_region == "eu-west-1" and cfg.variable == "MOMENTO_KEY_ID"
    t = open_target(cfg, ReloadContext("checkout"))
    assert t.name == "lambda:eu-west-1"
    t.close()
