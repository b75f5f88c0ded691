"""The ``kubernetes`` reload target, through the kubernetes client's ApiClient, over HTTP, against the test API
server's apps/v1 workloads and rollout controller (tests/servers/kube_api.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.errors import ReloadConflict, ReloadError
from rotator.pickup.kubernetes import CheckConfig as PickupConfig
from rotator.reload.base import ReloadContext
from rotator.reload.kubernetes import (
    KEY_ID_ANNOTATION,
    RESTARTED_AT_ANNOTATION,
    KubernetesReload,
    ReloadConfig,
    open_target,
)
from tests.servers.kube_api import KubeApiServer, running_kube_api

NS = "payments"
K1, K2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kube_server() -> Iterator[KubeApiServer]:
    with running_kube_api() as server:
        yield server


@pytest.fixture
def kube(kube_server: KubeApiServer) -> Iterator[KubeApiServer]:
    kube_server.reset()
    yield kube_server
    kube_server.reset()


def make(
    kube: KubeApiServer, *, kind: str = "Deployment", token: str | None = None, pickup: tuple[Any, ...] = (), **cfg: Any
) -> KubernetesReload:
    body = {"type": "kubernetes", "namespace": NS, "kind": kind, **cfg}
    if "names" not in cfg and "selector" not in cfg:
        body["names"] = ["checkout"]
    client = kube.api_client(token) if token else kube.api_client()
    ctx = ReloadContext("checkout", pickup, injected={"api_client": client})
    return open_target(ReloadConfig.model_validate(body), ctx)


def published(minutes_ago: float = 1) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes_ago)


def states(t: KubernetesReload, key_id: str = K2, at: datetime | None = None) -> dict[str, str]:
    return {s.unit: s.state for s in t.observe(key_id, at or published())}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_pending_then_restart_then_rolling_then_done(kube: KubeApiServer, kind: str) -> None:
    kube.add_workload(NS, kind, "checkout", replicas=3)
    t = make(kube, kind=kind)
    when = published()
    assert states(t, at=when) == {"checkout": "pending"}
    t.reload("checkout", K2, None, when)
    (patch,) = kube.workload_patches(NS, kind, "checkout")
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert annotations[KEY_ID_ANNOTATION] == K2 and RESTARTED_AT_ANNOTATION in annotations
    assert patch["metadata"]["resourceVersion"]  # a compare-and-set
    (s,) = t.observe(K2, when)
    assert s.state == "rolling" and s.since is not None and s.since >= when.replace(microsecond=0)
    kube.step(NS, kind, "checkout")
    assert states(t, at=when) == {"checkout": "rolling"}
    kube.run_rollout(NS, kind, "checkout")
    (s,) = t.observe(K2, when)
    assert s.state == "done", s
    # the new pods carry the annotation: every pod of the workload started after the restart
    pods = kube.workload_pods(NS, kind, "checkout")
    assert pods and all(p["metadata"]["annotations"].get(KEY_ID_ANNOTATION) == K2 for p in pods)
    # a reload already done is never pending again, for this key; for the next key it is
    assert states(t, at=when) == {"checkout": "done"}
    assert states(t, "33333333-3333-4333-8333-333333333333", at=datetime.now(UTC) + timedelta(seconds=5)) == {
        "checkout": "pending"
    }


def test_a_restart_by_someone_else_after_the_publication_counts(kube: KubeApiServer) -> None:
    when = published(5)
    later = (when + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.add_workload(NS, "Deployment", "checkout", template_annotations={RESTARTED_AT_ANNOTATION: later})
    assert states(make(kube), at=when) == {"checkout": "done"}
    earlier = (when - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.add_workload(NS, "Deployment", "other", template_annotations={RESTARTED_AT_ANNOTATION: earlier})
    assert states(make(kube, names=["other"]), at=when) == {"other": "pending"}


def test_a_stale_resource_version_is_a_conflict_and_nothing_restarts(kube: KubeApiServer) -> None:
    kube.add_workload(NS, "Deployment", "checkout")
    t = make(kube)
    other = make(kube)

    def between(method: str, path: str) -> None:
        if method == "PATCH" and not kube.workload_patches(NS, "Deployment", "checkout"):
            kube.on_request(None)
            other.reload("checkout", K2, None, published())  # another pass restarts it first

    kube.on_request(between)
    with pytest.raises(ReloadConflict):
        t.reload("checkout", K2, None, published())
    assert len(kube.workload_patches(NS, "Deployment", "checkout")) == 1


def test_waits_for_the_synced_secret_before_restarting(kube: KubeApiServer) -> None:
    kube.add_workload(NS, "Deployment", "checkout")
    kube.put_secret(NS, "momento-checkout", {"momento.json": json.dumps({"keyId": K1})})
    check = PickupConfig.model_validate(
        {"type": "kubernetes", "namespace": NS, "secret": {"name": "momento-checkout"}, "pods": {"selector": "app=x"}}
    )
    t = make(kube, pickup=(check,))
    (s,) = t.observe(K2, published())
    assert s.state == "waiting" and "momento-checkout" in s.detail
    kube.put_secret(NS, "momento-checkout", {"momento.json": json.dumps({"keyId": K2})})
    assert states(t) == {"checkout": "pending"}


def test_with_a_synced_secret_only_rotators_own_restart_counts(kube: KubeApiServer) -> None:
    when = published(5)
    later = (when + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.add_workload(NS, "Deployment", "checkout", template_annotations={RESTARTED_AT_ANNOTATION: later})
    kube.put_secret(NS, "momento-checkout", {"momento.json": json.dumps({"keyId": K2})})
    check = PickupConfig.model_validate({"type": "kubernetes", "namespace": NS, "secret": {"name": "momento-checkout"}})
    assert states(make(kube, pickup=(check,)), at=when) == {"checkout": "pending"}


def test_a_stalled_deployment_fails_past_its_progress_deadline(kube: KubeApiServer) -> None:
    kube.add_workload(NS, "Deployment", "checkout", progress_deadline_seconds=60)
    t = make(kube)
    when = published()
    t.reload("checkout", K2, None, when)
    kube.stall_rollout(NS, "Deployment", "checkout")
    kube.step(NS, "Deployment", "checkout")
    assert states(t, at=when) == {"checkout": "rolling"}
    real = kube.clock
    kube.clock = lambda: real() + timedelta(seconds=120)
    try:
        kube.step(NS, "Deployment", "checkout")
        (s,) = t.observe(K2, when)
    finally:
        kube.clock = real
    assert s.state == "failed" and "ProgressDeadlineExceeded" in s.detail


def test_on_delete_statefulset_fails_with_the_fix(kube: KubeApiServer) -> None:
    kube.add_workload(NS, "StatefulSet", "checkout", update_strategy="OnDelete")
    t = make(kube, kind="StatefulSet")
    t.reload("checkout", K2, None, published())
    (s,) = t.observe(K2, published())
    assert s.state == "failed" and "RollingUpdate" in s.detail


def test_selector_units_and_an_empty_selector(kube: KubeApiServer) -> None:
    kube.add_workload(NS, "Deployment", "checkout", labels={"app": "checkout", "team": "pay"})
    kube.add_workload(NS, "Deployment", "checkout-worker", labels={"app": "worker", "team": "pay"})
    kube.add_workload(NS, "Deployment", "billing", labels={"app": "billing", "team": "fin"})
    assert states(make(kube, selector="team=pay")) == {"checkout": "pending", "checkout-worker": "pending"}
    (s,) = make(kube, selector="team=nobody").observe(K2, published())
    assert s.state == "unknown" and "no Deployment matches" in s.detail


def test_missing_workload_and_refusals_are_unknown_or_errors_naming_the_grant(kube: KubeApiServer) -> None:
    (s,) = make(kube, names=["gone"]).observe(K2, published())
    assert s.state == "unknown" and "not found" in s.detail
    kube.add_workload(NS, "Deployment", "checkout")
    role = {
        "kind": "Role",
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["checkout"], "verbs": ["get"]}
        ],
    }
    kube.grant_role("read-only", role)
    t = make(kube, token="read-only")
    assert states(t) == {"checkout": "pending"}
    with pytest.raises(ReloadError, match=r"forbidden: patch deployments\.apps in namespace payments"):
        t.reload("checkout", K2, None, published())
    kube.grant_role("nothing", {"kind": "Role", "rules": []})
    (s,) = make(kube, token="nothing").observe(K2, published())
    assert s.state == "unknown" and "forbidden: get deployments.apps" in s.detail


def test_the_shipped_reload_role_is_enough_for_a_whole_reload(kube: KubeApiServer) -> None:
    """deploy/kubernetes/components/reload/rbac.yaml, as shipped, grants what observe, the synced-Secret read,
    the restart and the rollout watch need: least privilege proved by doing."""
    docs = yaml.safe_load_all((REPO / "deploy/kubernetes/components/reload/rbac.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "Role")
    kube.grant_role("rotator-sa", role)
    kube.add_workload(NS, "Deployment", "checkout")
    kube.put_secret(NS, "momento-checkout", {"momento.json": json.dumps({"keyId": K2})})
    check = PickupConfig.model_validate({"type": "kubernetes", "namespace": NS, "secret": {"name": "momento-checkout"}})
    t = make(kube, token="rotator-sa", pickup=(check,))
    when = published()
    assert states(t, at=when) == {"checkout": "pending"}
    t.reload("checkout", K2, None, when)
    kube.run_rollout(NS, "Deployment", "checkout")
    assert states(t, at=when) == {"checkout": "done"}


def test_an_unreachable_api_server_is_unknown(kube: KubeApiServer) -> None:
    kube.add_workload(NS, "Deployment", "checkout")
    kube.fail_next(503, times=5)
    (s,) = make(kube).observe(K2, published())
    assert s.state == "unknown" and "503" in s.detail
