"""The ``ecs`` reload target, through boto3, over HTTP, against moto's server behind the deployment lifecycle
that ECS documents (tests/servers/aws_rollouts.py: moto rewrites its one deployment in place)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from rotator.errors import ReloadConflict, ReloadError
from rotator.reload.base import ReloadContext, ReloadTarget
from rotator.reload.base import open_target as open_any_target
from rotator.reload.ecs import EcsReload, ReloadConfig, open_target
from tests.servers.aws_rollouts import AwsRollouts
from tests.servers.moto_server import MotoServer, moto, moto_server  # noqa: F401
from tests.support.crash import SimulatedCrash, count_calls, crash_after

REGION = "us-east-1"
CLUSTER = "prod"
KEY = "key-2f1c"


@pytest.fixture
def aws(moto: MotoServer) -> Iterator[AwsRollouts]:  # noqa: F811
    with AwsRollouts(moto.url) as proxy:
        yield proxy


@pytest.fixture
def raw(aws: AwsRollouts) -> Iterator[Any]:
    """A plain boto3 ECS client through the proxy: sets up services and plays the other writers."""
    client = boto3.client("ecs", region_name=REGION, endpoint_url=aws.url)
    client.create_cluster(clusterName=CLUSTER)
    client.register_task_definition(
        family="app", containerDefinitions=[{"name": "app", "image": "example/app:1", "memory": 128}]
    )
    yield client
    client.close()


@pytest.fixture
def service(raw: Any, aws: AwsRollouts) -> Callable[..., str]:
    """Create a service that has been running steadily for a while; its ARN."""

    def make(name: str, desired: int = 2, **kw: Any) -> str:
        arn = raw.create_service(cluster=CLUSTER, serviceName=name, taskDefinition="app", desiredCount=desired, **kw)[
            "service"
        ]["serviceArn"]
        if kw.get("deploymentController", {}).get("type", "ECS") == "ECS":
            aws.ecs_complete(f"{CLUSTER}/{name}")
        return str(arn)

    return make


@pytest.fixture
def target(aws: AwsRollouts) -> Iterator[Callable[..., EcsReload]]:
    opened: list[EcsReload] = []

    def make(services: list[str], **kw: Any) -> EcsReload:
        cfg = ReloadConfig(
            type="ecs",
            cluster=kw.pop("cluster", CLUSTER),
            services=services,
            region=REGION,
            endpoint_url=kw.pop("endpoint_url", aws.url),
            **kw,
        )
        t = open_target(cfg, ReloadContext("checkout"))
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


def _published() -> datetime:
    """The key's publication time: after the services' current deployments were created."""
    time.sleep(0.01)
    return datetime.now(UTC)


def _states(t: EcsReload, published_at: datetime) -> dict[str, str]:
    return {s.unit: s.state for s in t.observe(KEY, published_at)}


def _by_unit(t: EcsReload, published_at: datetime) -> dict[str, Any]:
    return {s.unit: s for s in t.observe(KEY, published_at)}


# ---- the lifecycle -----------------------------------------------------------------------------------------


def test_pending_then_reload_then_rolling_then_done(
    service: Callable[..., str], target: Callable[..., EcsReload], aws: AwsRollouts
) -> None:
    service("web")
    service("api")
    t = target(["web", "api"])
    published = _published()
    assert isinstance(t, ReloadTarget)
    assert (t.name, t.type, t.capabilities.observable, t.capabilities.rollout) == ("ecs:prod", "ecs", True, True)
    before = _by_unit(t, published)
    assert {u: s.state for u, s in before.items()} == {"web": "pending", "api": "pending"}
    assert before["web"].since is None and "before the key was published" in before["web"].detail

    t.reload("web", KEY, None, published)
    deps = aws.deployments(f"{CLUSTER}/web")
    assert [d["status"] for d in deps] == ["PRIMARY", "ACTIVE"]  # the old tasks run on while the new start

    web = _by_unit(t, published)["web"]
    assert web.state == "rolling" and "0 of 2 tasks running" in web.detail
    assert web.since is not None and web.since >= published
    assert abs(web.since.timestamp() - deps[0]["createdAt"]) < 0.01
    assert _states(t, published)["api"] == "pending"  # one unit at a time

    aws.ecs_tasks_started(f"{CLUSTER}/web")
    web = _by_unit(t, published)["web"]
    assert web.state == "rolling" and "1 older deployment(s) draining" in web.detail
    aws.ecs_complete(f"{CLUSTER}/web")
    web = _by_unit(t, published)["web"]
    assert web.state == "done" and "2 of 2 tasks running" in web.detail and web.since is not None


def test_observe_is_one_describe_services_per_ten_services(
    service: Callable[..., str], target: Callable[..., EcsReload]
) -> None:
    names = [f"svc-{i}" for i in range(12)]
    for n in names:
        service(n, desired=1)
    t = target(names)
    published = _published()
    with count_calls("ecs") as calls:
        states = _states(t, published)
    assert states == dict.fromkeys(names, "pending")
    assert calls == [("ecs", "DescribeServices", "200")] * 2


def test_a_service_arn_is_a_unit_named_by_the_service(
    service: Callable[..., str], target: Callable[..., EcsReload]
) -> None:
    arn = service("web")
    t = target([arn], cluster=f"arn:aws:ecs:{REGION}:123456789012:cluster/{CLUSTER}")
    published = _published()
    assert t.name == "ecs:prod"
    assert _states(t, published) == {"web": "pending"}
    t.reload("web", KEY, None, published)
    assert _states(t, published) == {"web": "rolling"}


def test_the_registry_opens_it(aws: AwsRollouts) -> None:
    t = open_any_target(ReloadConfig(type="ecs", cluster="prod", services=["web"]), ReloadContext("checkout"))
    assert isinstance(t, EcsReload)
    t.close()


# ---- idempotence -------------------------------------------------------------------------------------------


def test_a_pass_killed_right_after_update_service_does_not_restart_again(
    service: Callable[..., str], target: Callable[..., EcsReload], aws: AwsRollouts
) -> None:
    service("web")
    published = _published()
    first = target(["web"])
    assert _states(first, published) == {"web": "pending"}
    with pytest.raises(SimulatedCrash), crash_after(2, service="ecs") as seen:  # DescribeServices, UpdateService
        first.reload("web", KEY, None, published)
    assert [op for _, op, _ in seen] == ["DescribeServices", "UpdateService"]
    assert aws.count("ecs:UpdateService") == 1

    # the next pass, in a new process: the deployment created after the publication is the evidence, so the
    # unit is never pending again and the planner starts nothing (it starts a rolling unit again only after
    # reload_timeout)
    second = target(["web"])
    assert _states(second, published) == {"web": "rolling"}
    # a reload asked for without an observation first refuses to restart a service already rolling for the key
    fresh = target(["web"])
    with pytest.raises(ReloadConflict, match="started after the key was published"):
        fresh.reload("web", KEY, None, published)
    assert aws.count("ecs:UpdateService") == 1
    aws.ecs_complete(f"{CLUSTER}/web")
    assert _states(second, published) == {"web": "done"}


def test_a_deployment_someone_else_started_since_the_observation_is_a_conflict(
    service: Callable[..., str], target: Callable[..., EcsReload], aws: AwsRollouts, raw: Any
) -> None:
    service("web")
    published = _published()
    t = target(["web"])
    assert _states(t, published) == {"web": "pending"}
    raw.update_service(cluster=CLUSTER, service="web", forceNewDeployment=True)  # another pass, or a person
    with pytest.raises(ReloadConflict, match="changed since it was observed"):
        t.reload("web", KEY, None, published)
    assert aws.count("ecs:UpdateService") == 1  # the other writer's only
    assert _states(t, published) == {"web": "rolling"}  # and it counts: its tasks read the new key


def test_a_deployment_started_before_the_publication_does_not_count(
    service: Callable[..., str], target: Callable[..., EcsReload], raw: Any
) -> None:
    service("web")
    raw.update_service(cluster=CLUSTER, service="web", forceNewDeployment=True)  # still rolling, old key
    published = _published()
    t = target(["web"])
    assert _states(t, published) == {"web": "pending"}
    t.reload("web", KEY, None, published)
    assert _states(t, published) == {"web": "rolling"}


# ---- failures ----------------------------------------------------------------------------------------------


def test_a_failed_rollout_is_failed_and_can_be_started_again(
    service: Callable[..., str], target: Callable[..., EcsReload], aws: AwsRollouts
) -> None:
    service("web")
    published = _published()
    t = target(["web"])
    t.observe(KEY, published)
    t.reload("web", KEY, None, published)
    aws.ecs_fail(f"{CLUSTER}/web")
    web = _by_unit(t, published)["web"]
    assert web.state == "failed" and "circuit breaker" in web.detail and web.since is not None
    # the planner starts a failed unit again after reload_timeout: the deployment it saw is still PRIMARY
    t.reload("web", KEY, None, published)
    assert aws.count("ecs:UpdateService") == 2
    assert _states(t, published) == {"web": "rolling"}


def test_behind_a_classic_load_balancer_done_is_every_task_running(
    service: Callable[..., str], target: Callable[..., EcsReload], aws: AwsRollouts
) -> None:
    service("web")
    aws.ecs_classic_load_balancer(f"{CLUSTER}/web")
    published = _published()
    t = target(["web"])
    t.observe(KEY, published)
    t.reload("web", KEY, None, published)
    assert "rolloutState" not in aws.deployments(f"{CLUSTER}/web")[0]
    assert _states(t, published) == {"web": "rolling"}
    aws.ecs_tasks_started(f"{CLUSTER}/web")
    assert _states(t, published) == {"web": "rolling"}  # the old deployment is still listed
    aws.ecs_complete(f"{CLUSTER}/web")
    assert _states(t, published) == {"web": "done"}


def test_missing_and_deleted_services_are_unknown(
    service: Callable[..., str], target: Callable[..., EcsReload], raw: Any
) -> None:
    service("web")
    service("old")
    raw.delete_service(cluster=CLUSTER, service="old", force=True)
    published = _published()
    t = target(["web", "ghost", "old"])
    got = _by_unit(t, published)
    assert got["web"].state == "pending"
    assert (
        got["ghost"].state == "unknown" and got["ghost"].detail == "service ghost not found in cluster prod (MISSING)"
    )
    assert got["old"].state == "unknown" and "INACTIVE" in got["old"].detail
    with pytest.raises(ReloadError, match="not found or not active"):
        t.reload("ghost", KEY, None, published)


def test_a_service_ecs_does_not_deploy_is_unknown(
    service: Callable[..., str], target: Callable[..., EcsReload]
) -> None:
    service("blue-green", deploymentController={"type": "CODE_DEPLOY"})
    t = target(["blue-green"])
    (status,) = t.observe(KEY, _published())
    assert status.state == "unknown" and "CODE_DEPLOY" in status.detail


def test_an_unknown_cluster_makes_every_unit_unknown_and_reload_an_error(
    raw: Any, target: Callable[..., EcsReload], aws: AwsRollouts
) -> None:
    t = target(["web", "api"], cluster="nope")
    published = _published()
    got = t.observe(KEY, published)
    assert [(s.unit, s.state) for s in got] == [("web", "unknown"), ("api", "unknown")]
    assert all("cluster nope not found" in s.detail for s in got)
    with pytest.raises(ReloadError, match="cluster nope not found") as info:
        t.reload("web", KEY, None, published)
    assert info.value.target == "ecs:nope" and info.value.unit == "web"
    assert aws.count("ecs:UpdateService") == 0


def test_access_denied_names_the_permission(
    service: Callable[..., str], target: Callable[..., EcsReload], aws: AwsRollouts
) -> None:
    service("web")
    published = _published()
    t = target(["web"])
    denied = (
        "User: arn:aws:sts::123456789012:assumed-role/rotator/x is not authorized to perform: {op} on resource: "
        "arn:aws:ecs:us-east-1:123456789012:service/prod/web because no identity-based policy allows the {op} action"
    )
    aws.fail_next("ecs:DescribeServices", 400, "AccessDeniedException", denied.format(op="ecs:DescribeServices"))
    (status,) = t.observe(KEY, published)
    assert status.state == "unknown"
    assert "grant ecs:DescribeServices on arn:aws:ecs:us-east-1:<account>:service/prod/web" in status.detail

    aws.fail_next("ecs:UpdateService", 400, "AccessDeniedException", denied.format(op="ecs:UpdateService"))
    with pytest.raises(ReloadError, match="grant ecs:UpdateService on") as info:
        t.reload("web", KEY, None, published)
    assert not isinstance(info.value, ReloadConflict)
    assert _states(t, published) == {"web": "pending"}


def test_an_unreachable_endpoint_is_unknown_not_an_exception(target: Callable[..., EcsReload]) -> None:
    t = target(["web"], endpoint_url="http://127.0.0.1:9", timeout=0.5)
    (status,) = t.observe(KEY, _published())
    assert status.state == "unknown" and "EndpointConnectionError" in status.detail


def test_moto_alone_rewrites_its_one_deployment_in_place(
    moto: MotoServer,  # noqa: F811
) -> None:
    """The fidelity gap tests/servers/aws_rollouts.py fills: no ACTIVE deployment beside the new PRIMARY."""
    client = boto3.client("ecs", region_name=REGION, endpoint_url=moto.url)
    client.create_cluster(clusterName=CLUSTER)
    client.register_task_definition(family="app", containerDefinitions=[{"name": "a", "image": "x", "memory": 64}])
    client.create_service(cluster=CLUSTER, serviceName="web", taskDefinition="app", desiredCount=2)
    before = client.describe_services(cluster=CLUSTER, services=["web"])["services"][0]["deployments"]
    after = client.update_service(cluster=CLUSTER, service="web", forceNewDeployment=True)["service"]["deployments"]
    assert len(before) == len(after) == 1 and before[0]["id"] != after[0]["id"]
    assert after[0]["rolloutState"] == before[0]["rolloutState"]
    client.close()


# ---- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cluster": "prod cluster"}, "not an ECS cluster name"),
        ({"cluster": "x" * 256}, "not an ECS cluster name"),
        ({"cluster": "arn:aws:ecs:us-east-1:123:cluster/prod"}, "not an ECS cluster name"),
        ({"services": []}, "at least 1"),
        ({"services": ["web/api"]}, "not an ECS service name"),
        ({"services": ["web", "web"]}, "names service web twice"),
        ({"services": ["arn:aws:ecs:us-east-1:123456789012:service/other/web"]}, "is in cluster 'other'"),
        ({"services": ["arn:aws:ecs:eu-west-1:123456789012:service/prod/web"]}, "contradicts the ARNs"),
        ({"region": "mars"}, "not an AWS region"),
        ({"endpoint_url": "localhost:4566"}, "not an http"),
        ({"timeout": 0}, "greater than 0"),
        ({"tag": True}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(change: dict[str, Any], message: str) -> None:
    raw = {"type": "ecs", "cluster": "prod", "services": ["web"], "region": REGION, **change}
    with pytest.raises(ValidationError, match=message):
        ReloadConfig.model_validate(raw)


def test_config_accepts_names_and_arns() -> None:
    cfg = ReloadConfig.model_validate(
        {
            "type": "ecs",
            "cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/prod_1",
            "services": ["web-1", "arn:aws:ecs:eu-west-1:123456789012:service/prod_1/api", "A" * 255],
            "timeout": "5s",
        }
    )
    assert cfg.client_region == "eu-west-1" and cfg.timeout == 5.0
