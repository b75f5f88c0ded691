"""The SAM template grants only what rotator uses, on named resources (cfn-lint checks the rest in make test)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "aws-lambda" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form intrinsics (!Ref, !GetAtt, !Sub...) as {"Fn": value}."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def _template() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return data


def _statements(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "Effect" in node and "Action" in node:
            out.append(node)
        for v in node.values():
            out.extend(_statements(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_statements(v))
    return out


def test_no_statement_grants_a_wildcard_resource() -> None:
    statements = _statements(_template()["Resources"])
    assert statements, "the template grants nothing?"
    for st in statements:
        resources = st.get("Resource")
        flat = resources if isinstance(resources, list) else [resources]
        assert "*" not in flat, st
        assert all(not (isinstance(r, str) and r.endswith(":*")) for r in flat), st


def test_secrets_manager_actions_are_limited_to_what_the_store_calls() -> None:
    used = {
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:CreateSecret",
        "secretsmanager:TagResource",
        "secretsmanager:ListSecretVersionIds",
        "secretsmanager:ReplicateSecretToRegions",  # replica_regions
    }
    granted = set()
    for st in _statements(_template()["Resources"]):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        granted |= {a for a in actions if a.startswith("secretsmanager:")}
    assert granted <= used, granted - used
    assert "secretsmanager:PutSecretValue" in granted


def test_the_scheduled_function_has_reserved_concurrency_one_and_a_failure_destination() -> None:
    resources = _template()["Resources"]
    functions = {k: v for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function"}
    scheduled = [v for v in functions.values() if v["Properties"].get("Handler", "").endswith("scheduled_handler")]
    assert len(scheduled) == 1
    props = scheduled[0]["Properties"]
    assert props["ReservedConcurrentExecutions"] == 1
    assert "OnFailure" in str(props.get("EventInvokeConfig", {})) or "DeadLetterQueue" in props


def test_the_rotation_function_has_no_reserved_concurrency_of_one() -> None:
    # Secrets Manager throttles rotations when the rotation function's reserved concurrency is below 10
    resources = _template()["Resources"]
    functions = {k: v for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function"}
    rotation = [v for v in functions.values() if v["Properties"].get("Handler", "").endswith("rotation_handler")]
    assert len(rotation) == 1
    reserved = rotation[0]["Properties"].get("ReservedConcurrentExecutions")
    assert reserved is None or reserved >= 10, reserved


def _function_statements(handler_suffix: str) -> list[dict[str, Any]]:
    """The IAM statements of the managed policies a function runs with."""
    resources = _template()["Resources"]
    fns = [
        v
        for v in resources.values()
        if v.get("Type") == "AWS::Serverless::Function" and v["Properties"]["Handler"].endswith(handler_suffix)
    ]
    assert len(fns) == 1
    out: list[dict[str, Any]] = []
    for policy in fns[0]["Properties"]["Policies"]:
        assert set(policy) == {"Ref"}, policy  # managed policies of this template only
        out.extend(_statements(resources[policy["Ref"]]))
    return out


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    granted: set[str] = set()
    for st in statements:
        granted |= set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    return granted


def test_the_rotation_function_is_granted_only_what_the_four_steps_call() -> None:
    # the old template gave it the scheduled pass's policy: CreateSecret, TagResource, ReplicateSecretToRegions, SQS
    granted = _actions(_function_statements("rotation_handler"))
    assert {a for a in granted if a.startswith("secretsmanager:")} == {
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:ListSecretVersionIds",
    }
    assert not {a for a in granted if a.startswith("sqs:")}
    scheduled = _actions(_function_statements("scheduled_handler"))
    assert {"secretsmanager:CreateSecret", "sqs:SendMessage"} <= scheduled


def test_kms_grants_cover_every_region_the_config_writes_to() -> None:
    # the old template allowed KMS only through secretsmanager.<the stack's region>, and took one key ARN
    template = _template()
    assert template["Parameters"]["KmsKeyArns"]["Type"] == "CommaDelimitedList"
    kms = [
        st
        for handler in ("scheduled_handler", "rotation_handler")
        for st in _function_statements(handler)
        if any(str(a).startswith("kms:") for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]))
    ]
    assert len(kms) == 2
    for st in kms:
        assert st["Resource"] == {"Ref": "KmsKeyArns"}
        assert st["Condition"] == {"StringLike": {"kms:ViaService": "secretsmanager.*.amazonaws.com"}}


# ---- the ARN parameters refuse a secret name that would match every secret ----------------------------------

_SECRET_ARN_PARAMS = ["ManagedSecretArns", "ManagementKeySecretArn"]
_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"

#: secret names that are only wildcards: IAM would match every secret of the region with them
WILDCARD_ONLY_NAMES = ["*", "**", "?", "??", "?*", "*?", "*?*", "??????", "*" * 40]
#: names that start with a wildcard: every secret name ends in -XXXXXX, so '*-??????' matches every secret too
LEADING_WILDCARD_NAMES = ["*-??????", "*-*", "?*-??????", "*/*", "*momento*"]
#: real names and name prefixes with a trailing wildcard
REAL_NAMES = [
    "momento/*",
    "prod/checkout-*",
    "momento/alpha-??????",
    "prod/checkout-AbC123",
    "rotator-management-key-??????",
    "a",
    "team_a/key+v=1.x@corp-*",
]
#: what the pattern refused before and still refuses: other partitions' wildcards, other services, no name
OTHER_REFUSED = [
    "arn:aws:secretsmanager:*:123456789012:secret:momento/*",
    "arn:aws:secretsmanager:us-east-1:*:secret:momento/*",
    "arn:aws:secretsmanager:us-east-1:12345678901:secret:momento/*",
    "arn:aws:ssm:us-east-1:123456789012:parameter/momento",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:momento/a b",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:momento/*\n",
    "*",
    "",
]


def _secret_arn_patterns(template: dict[str, Any]) -> dict[str, re.Pattern[str]]:
    """The AllowedPattern of every parameter that takes Secrets Manager ARNs, compiled (CloudFormation uses Java
    regex and matches the whole value: Python's fullmatch does the same for these patterns)."""
    out = {
        name: re.compile(p["AllowedPattern"])
        for name, p in template["Parameters"].items()
        if ":secretsmanager:" in p.get("AllowedPattern", "")
    }
    assert set(out) == set(_SECRET_ARN_PARAMS), set(out)
    return out


@pytest.mark.parametrize("param", _SECRET_ARN_PARAMS)
@pytest.mark.parametrize("name", WILDCARD_ONLY_NAMES + LEADING_WILDCARD_NAMES)
def test_the_secret_arn_parameters_refuse_a_name_that_is_only_or_starts_with_a_wildcard(name: str, param: str) -> None:
    # the old pattern ([A-Za-z0-9/_+=.@?*-]+ after secret:) took all of these: Get/Put/Create/Tag on every secret
    assert _secret_arn_patterns(_template())[param].fullmatch(_ARN + name) is None, (param, name)


@pytest.mark.parametrize("param", _SECRET_ARN_PARAMS)
@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
@pytest.mark.parametrize("name", REAL_NAMES)
def test_the_secret_arn_parameters_accept_real_names_and_prefixes(name: str, partition: str, param: str) -> None:
    arn = f"arn:{partition}:secretsmanager:eu-west-1:123456789012:secret:{name}"
    assert _secret_arn_patterns(_template())[param].fullmatch(arn) is not None, (param, arn)


@pytest.mark.parametrize("param", _SECRET_ARN_PARAMS)
@pytest.mark.parametrize("value", OTHER_REFUSED)
def test_the_secret_arn_parameters_keep_refusing_what_they_refused(value: str, param: str) -> None:
    assert _secret_arn_patterns(_template())[param].fullmatch(value) is None, (param, value)


@pytest.mark.parametrize("param", _SECRET_ARN_PARAMS)
def test_the_secret_arn_parameters_say_why_a_value_is_refused(param: str) -> None:
    text = _template()["Parameters"][param].get("ConstraintDescription", "")
    assert "only wildcards" in text and "every secret" in text, (param, text)


def test_reload_permissions_are_exactly_what_the_reload_targets_call_on_the_named_resources() -> None:
    """ecs: DescribeServices (observe) and UpdateService (forceNewDeployment); lambda: GetFunctionConfiguration
    (observe, the read before the write) and UpdateFunctionConfiguration; each only when its parameter is
    given, and only on the ARNs it lists (docs/reload.md)."""
    by_sid = {st.get("Sid"): st for st in _statements(_template()["Resources"])}
    ecs, fn = by_sid["ReloadEcsServices"], by_sid["ReloadFunctions"]
    assert sorted(ecs["Action"]) == ["ecs:DescribeServices", "ecs:UpdateService"]
    assert ecs["Resource"] == {"Ref": "ReloadEcsServiceArns"}
    assert sorted(fn["Action"]) == ["lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration"]
    assert fn["Resource"] == {"Ref": "ReloadFunctionArns"}
    text = (Path(__file__).resolve().parents[1] / "deploy/aws-lambda/template.yaml").read_text()
    assert "- ReloadsEcs\n            - Sid: ReloadEcsServices" in text
    assert "- ReloadsFunctions\n            - Sid: ReloadFunctions" in text
    params = _template()["Parameters"]

    ecs_re, fn_re = params["ReloadEcsServiceArns"]["AllowedPattern"], params["ReloadFunctionArns"]["AllowedPattern"]
    assert re.match(ecs_re, "arn:aws:ecs:eu-west-1:123456789012:service/prod/checkout")
    assert not re.match(ecs_re, "arn:aws:ecs:eu-west-1:123456789012:service/prod/*")
    assert re.match(fn_re, "arn:aws:lambda:eu-west-1:123456789012:function:checkout-worker")
    assert not re.match(fn_re, "arn:aws:lambda:eu-west-1:123456789012:function:*")
    assert not re.match(fn_re, "arn:aws:lambda:eu-west-1:123456789012:function:checkout-worker:prod")


def test_the_readme_builds_the_package_from_the_wheel_pip_makes() -> None:
    """deploy/aws-lambda/README.md's step 4 installs the wheel ``pip wheel`` wrote, found by a glob: the glob
    must match the distribution's wheel name (``momento_rotator-...``; ``rotator-*.whl`` matched nothing once
    the distribution was renamed). ``bench/cold_start.py --lambda`` runs the block itself."""
    import tomllib

    name = tomllib.loads((TEMPLATE.parents[2] / "pyproject.toml").read_text())["project"]["name"]
    wheel = re.sub(r"[-_.]+", "_", name).lower()  # the wheel file name's normalisation (PEP 427 / PEP 503)
    readme = (TEMPLATE.parent / "README.md").read_text()
    step4 = readme.split("\n## 4.", 1)[1].split("\n## ", 1)[0]
    globs = re.findall(r"build/lambda-wheels/(\S+?\.whl)", step4)
    assert globs == [f"{wheel}-*.whl"], globs
