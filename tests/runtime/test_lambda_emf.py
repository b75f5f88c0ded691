"""The scheduled Lambda's CloudWatch metrics: a pass through the handler (boto3 against moto's server, the
Momento emulator over HTTP) prints Embedded Metric Format lines, checked here against the EMF specification,
and the SAM template's metric alarms name only metrics and dimensions those lines carry.

The rules checked are the specification's ("Specification: Embedded metric format", Amazon CloudWatch User
Guide, docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
a log event is one JSON object with nothing before or after it; ``_aws`` holds ``Timestamp`` (epoch
milliseconds) and ``CloudWatchMetrics``, an array of MetricDirectives, each with ``Namespace``, ``Dimensions``
(an array of DimensionSets, each at most 30 keys, every key a string member of the root) and ``Metrics`` (at
most 100 MetricDefinitions, each ``Name`` a member of the root holding a number or an array of at most 100
numbers, ``Unit`` a CloudWatch unit).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from rotator.metrics import EMF_METRICS
from rotator.observability import configure_logging
from rotator.runtime import lambda_handler
from tests.runtime.test_lambda import SECRET, _current, env, moto_server  # noqa: F401  (fixtures)
from tests.test_lambda_template import _template

#: CloudWatch's units (MetricDatum.Unit in the CloudWatch API reference)
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def check_emf(line: str) -> dict[str, Any]:
    """One EMF log event, checked against the specification; returns the parsed document."""
    assert line == line.strip() and line.startswith("{") and line.endswith("}"), line
    doc = json.loads(line)
    assert isinstance(doc, dict)
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000  # milliseconds
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for d in directives:
        assert isinstance(d["Namespace"], str) and 1 <= len(d["Namespace"]) <= 1024
        for dimension_set in d["Dimensions"]:
            assert 1 <= len(dimension_set) <= 30, dimension_set
            for key in dimension_set:
                assert isinstance(doc.get(key), str) and doc[key].strip(), (key, doc)
        assert 1 <= len(d["Metrics"]) <= 100
        for m in d["Metrics"]:
            assert set(m) <= {"Name", "Unit", "StorageResolution"}, m
            value = doc.get(m["Name"])
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100, m
            assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values), (m, value)
            assert m.get("Unit", "None") in UNITS, m
    return doc


def emf_docs(text: str) -> list[dict[str, Any]]:
    return [check_emf(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def metrics_of(doc: dict[str, Any]) -> dict[str, float]:
    """Each metric's one value (Powertools writes a value as an array of one)."""
    names = [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    out = {}
    for n in names:
        v = doc[n]
        if isinstance(v, list):
            assert len(v) == 1, (n, v)
            v = v[0]
        out[n] = v
    return out


def dims_of(doc: dict[str, Any]) -> list[list[str]]:
    return [s for d in doc["_aws"]["CloudWatchMetrics"] for s in d["Dimensions"]]


def test_a_pass_through_the_handler_prints_its_figures_as_emf(
    env: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROTATOR_METRICS_SERVICE", "rotator-prod")
    # first pass: creates and publishes; its figures are the targets as the pass found them (empty)
    assert lambda_handler.scheduled_handler({}, None)["ok"]
    out = capsys.readouterr().out
    docs = emf_docs(out)
    assert len(docs) == 2, out  # the pass and the policy: no target held a key yet
    for d in docs:
        assert {x["Namespace"] for x in d["_aws"]["CloudWatchMetrics"]} == {"rotator"}
        assert d["service"] == "rotator-prod"
    whole, policy = docs
    assert dims_of(whole) == [["service"]]
    m = metrics_of(whole)
    assert m["PassOk"] == 1 and m["IssuerUp"] == 1 and m["Rotations"] == 1 and m["RotationsFailed"] == 0
    assert m["PoliciesFailed"] == 0 and m["PassDurationSeconds"] >= 0
    assert "MinKeyExpiresInSeconds" not in m
    assert sorted(dims_of(policy)[0]) == ["policy", "service"] and policy["policy"] == "lambda-demo"
    assert metrics_of(policy) == {
        "PolicyOk": 1,
        "Rotations": 1,
        "RotationsFailed": 0,
        "AwaitingPickup": 0,
        "PickupOverdue": 0,
        "WaitingForWindow": 0,
    }
    # second pass: steady; the target holds the 30-day key just made
    assert lambda_handler.scheduled_handler({}, None)["ok"]
    out += capsys.readouterr().out
    whole, policy, target = emf_docs(out)[2:]
    m = metrics_of(whole)
    assert m["PassOk"] == 1 and m["Rotations"] == 0
    assert 30 * 86400 - 120 < m["MinKeyExpiresInSeconds"] <= 30 * 86400
    assert m["MinKeyExpiresInSecondsNotWaitingForWindow"] == m["MinKeyExpiresInSeconds"]  # no window waits
    assert metrics_of(policy)["Rotations"] == 0
    assert sorted(dims_of(target)[0]) == ["policy", "service", "target"] and len(dims_of(target)) == 1
    assert target["policy"] == "lambda-demo" and SECRET in target["target"]
    assert metrics_of(target) == {"KeyExpiresInSeconds": m["MinKeyExpiresInSeconds"]}
    stored = _current(env["raw"])
    assert target["key_id"] == stored["keyId"]
    assert stored["apiKey"] not in out  # the key id is there; the key never is


def test_a_failing_pass_reports_itself_before_the_invocation_fails(
    env: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env["emulator"].failure_rate = 1.0
    env["emulator"].failure_statuses = (500,)
    env["config"]["issuer"]["max_attempts"] = 1
    monkeypatch.setenv("ROTATOR_CONFIG_YAML", json.dumps(env["config"]))
    lambda_handler.reset()
    with pytest.raises(lambda_handler.RotationFailed):
        lambda_handler.scheduled_handler({}, None)
    docs = emf_docs(capsys.readouterr().out)
    whole = metrics_of(docs[0])
    assert whole["PassOk"] == 0 and whole["IssuerUp"] == 0 and whole["PoliciesFailed"] == 1
    assert "MinKeyExpiresInSeconds" not in whole  # nothing is known about the targets' keys
    assert [d["policy"] for d in docs[1:]] == ["lambda-demo"]
    assert metrics_of(docs[1])["PolicyOk"] == 0


def test_the_namespace_can_be_set_per_deployment(
    env: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROTATOR_METRICS_NAMESPACE", "team-a/rotator")
    lambda_handler.scheduled_handler({}, None)
    docs = emf_docs(capsys.readouterr().out)
    assert docs and all(x["Namespace"] == "team-a/rotator" for d in docs for x in d["_aws"]["CloudWatchMetrics"])
    assert all(d["service"] == "rotator" for d in docs)  # the default


def test_the_checker_rejects_what_the_specification_forbids() -> None:
    good = {
        "_aws": {
            "Timestamp": 1_764_000_000_000,
            "CloudWatchMetrics": [
                {"Namespace": "rotator", "Dimensions": [["service"]], "Metrics": [{"Name": "PassOk", "Unit": "Count"}]}
            ],
        },
        "service": "rotator",
        "PassOk": 1,
    }
    check_emf(json.dumps(good))
    for broken in (
        {**good, "PassOk": "1"},  # a metric value must be a number
        {k: v for k, v in good.items() if k != "service"},  # a dimension key must be a root member
        {**good, "_aws": {**good["_aws"], "Timestamp": 1_764_000_000}},  # seconds, not milliseconds
    ):
        with pytest.raises(AssertionError):
            check_emf(json.dumps(broken))
    with pytest.raises(AssertionError):
        check_emf("START " + json.dumps(good))  # nothing may come before the object


def test_emit_never_raises() -> None:
    out, log = io.StringIO(), io.StringIO()
    configure_logging("info", stream=log, json=True)
    lambda_handler.emit_metrics(object(), out)  # type: ignore[arg-type]  # not a report: logged, not raised
    assert out.getvalue() == ""
    assert "could not build the CloudWatch metric lines" in log.getvalue()


def test_the_sam_alarms_watch_metrics_the_handler_prints() -> None:
    resources = _template()["Resources"]
    alarms = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"]["Namespace"] == "rotator"
    }
    assert {"KeyExpiringAlarm", "KeyExpiresWithinADayAlarm", "PassesNotSucceedingAlarm"} <= set(alarms)
    for name, a in alarms.items():
        assert a["MetricName"] in EMF_METRICS, name
        assert [d["Name"] for d in a["Dimensions"]] == ["service"], name  # the pass document's dimension set
        assert a["Dimensions"][0]["Value"] == {"Ref": "AWS::StackName"}, name
        assert a["AlarmActions"] == {"If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    scheduled = resources["SchedulerFunction"]["Properties"]
    assert scheduled["Environment"]["Variables"]["ROTATOR_METRICS_SERVICE"] == {"Ref": "AWS::StackName"}
    # function errors alarm too (Lambda's own metric), on the same topic
    errors = resources["SchedulerErrorsAlarm"]["Properties"]
    assert errors["Namespace"] == "AWS/Lambda" and errors["MetricName"] == "Errors"
