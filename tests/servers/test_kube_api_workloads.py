"""The test Kubernetes API server's apps/v1 workloads and rollout controller (tests/servers/kube_api.py), through
the real ``kubernetes`` client and raw HTTP: what each modelled behaviour of the API server and the Deployment,
StatefulSet and DaemonSet controllers looks like from outside."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.servers.kube_api import (
    KEY_ID_ANNOTATION,
    KubeApiServer,
    RolloutError,
    Rule,
    rollout_status,
    running_kube_api,
)

NS = "shop"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KINDS = ("Deployment", "StatefulSet", "DaemonSet")
RESOURCE = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
RESTART = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}


class Clock:
    """A server clock the test moves."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def module_server() -> Iterator[KubeApiServer]:
    with running_kube_api() as s:
        yield s


@pytest.fixture
def server(module_server: KubeApiServer) -> Iterator[KubeApiServer]:
    module_server.reset()
    yield module_server
    module_server.reset()


@pytest.fixture
def clock(server: KubeApiServer) -> Clock:
    c = Clock(T0)
    server.clock = c
    return c


@pytest.fixture
def api(server: KubeApiServer) -> Iterator[Any]:
    api_client = server.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def apps(api: Any) -> Any:
    return client.AppsV1Api(api)


@pytest.fixture
def core(api: Any) -> Any:
    return client.CoreV1Api(api)


def raw(
    server: KubeApiServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/strategic-merge-patch+json",
    token: str = "test",
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    r = urllib3.PoolManager().request(method, server.url + path, body=data, headers=headers)
    return r.status, json.loads(r.data)


def path(kind: str, name: str | None = None) -> str:
    base = f"/apis/apps/v1/namespaces/{NS}/{RESOURCE[kind]}"
    return f"{base}/{name}" if name else base


def patch(server: KubeApiServer, kind: str, name: str, body: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
    return raw(server, "PATCH", path(kind, name), body, **kw)


def status(server: KubeApiServer, kind: str, name: str) -> dict[str, Any]:
    obj = server.workload(NS, kind, name)
    assert obj is not None
    return dict(obj["status"])


def done(server: KubeApiServer, kind: str, name: str) -> bool:
    obj = server.workload(NS, kind, name)
    assert obj is not None
    return rollout_status(obj)[1]


def live_pods(server: KubeApiServer, kind: str, name: str) -> list[dict[str, Any]]:
    return [p for p in server.workload_pods(NS, kind, name) if "deletionTimestamp" not in p["metadata"]]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def json_payload(key_id: str) -> str:
    return json.dumps({"apiKey": f"secret-key-for-{key_id}-xxxxxxxx", "endpoint": "cell.example", "keyId": key_id})


# ---- reading ----------------------------------------------------------------------------------------------


def test_each_kind_reads_through_the_client_as_its_model(server: KubeApiServer, apps: Any) -> None:
    server.add_workload(NS, "Deployment", "web", replicas=3)
    server.add_workload(NS, "StatefulSet", "db", replicas=2)
    server.add_workload(NS, "DaemonSet", "agent", replicas=4)

    d = apps.read_namespaced_deployment("web", NS)
    assert (d.kind, d.api_version, d.metadata.generation) == ("Deployment", "apps/v1", 1)
    assert d.spec.selector.match_labels == {"app": "web"} and d.spec.replicas == 3
    assert d.spec.strategy.rolling_update.max_surge == 1 and d.spec.strategy.rolling_update.max_unavailable == 0
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    s = apps.read_namespaced_stateful_set("db", NS)
    assert s.status.current_revision == s.status.update_revision and s.status.current_revision.startswith("db-")
    assert s.spec.update_strategy.rolling_update.partition == 0  # the API server's default
    ds = apps.read_namespaced_daemon_set("agent", NS)
    assert ds.status.desired_number_scheduled == 4 and ds.status.number_ready == 4
    assert ds.metadata.annotations["deprecated.daemonset.template.generation"] == "1"


def test_a_missing_workload_is_a_404_status(server: KubeApiServer, apps: Any) -> None:
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment("nope", NS)
    assert exc.value.status == 404
    body = json.loads(exc.value.body)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotFound", 404)
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    code, body = patch(server, "StatefulSet", "nope", RESTART)
    assert (code, body["reason"]) == (404, "NotFound")


def test_list_filters_by_label_selector_and_pages(server: KubeApiServer, apps: Any) -> None:
    server.add_workload(NS, "Deployment", "a", labels={"app": "a", "tier": "web"})
    server.add_workload(NS, "Deployment", "b", labels={"app": "b", "tier": "web"})
    server.add_workload(NS, "Deployment", "c", labels={"app": "c", "tier": "db"})
    server.add_workload("elsewhere", "Deployment", "d", labels={"app": "d", "tier": "web"})
    server.add_workload(NS, "StatefulSet", "e", labels={"app": "e", "tier": "web"})

    listed = apps.list_namespaced_deployment(NS, label_selector="tier=web")
    assert [d.metadata.name for d in listed.items] == ["a", "b"]
    assert [d.metadata.name for d in apps.list_namespaced_deployment(NS, label_selector="tier notin (web)").items] == [
        "c"
    ]
    assert [s.metadata.name for s in apps.list_namespaced_stateful_set(NS).items] == ["e"]
    first = apps.list_namespaced_deployment(NS, limit=2)
    assert [d.metadata.name for d in first.items] == ["a", "b"] and first.metadata.remaining_item_count == 1
    rest = apps.list_namespaced_deployment(NS, limit=2, _continue=first.metadata._continue)
    assert [d.metadata.name for d in rest.items] == ["c"] and rest.metadata._continue is None

    code, body = raw(server, "GET", path("Deployment") + "?labelSelector=tier%3Dweb")
    assert (code, body["kind"], body["apiVersion"]) == (200, "DeploymentList", "apps/v1")
    assert all("kind" not in item and "apiVersion" not in item for item in body["items"])
    code, body = raw(server, "GET", path("Deployment") + "?labelSelector=tier%3D%3D%3D")
    assert (code, body["reason"]) == (400, "BadRequest")


def test_a_new_workload_is_rolled_out_with_ready_pods_the_pod_list_sees(
    server: KubeApiServer, core: Any, clock: Clock
) -> None:
    for kind in KINDS:
        obj = server.add_workload(
            NS, kind, kind.lower(), replicas=3, labels={"app": kind.lower()}, template_annotations={"team": "x"}
        )
        assert obj["metadata"]["generation"] == obj["status"]["observedGeneration"] == 1
        assert rollout_status(obj)[1], rollout_status(obj)
        pods = core.list_namespaced_pod(NS, label_selector=f"app={kind.lower()}").items
        assert len(pods) == 3
        for pod in pods:
            assert pod.metadata.annotations["team"] == "x"
            assert pod.metadata.owner_references[0].controller is True
            assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
            assert pod.status.start_time == T0
            assert pod.status.container_statuses[0].state.running.started_at == T0
    st = status(server, "Deployment", "deployment")
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"]) == (3, 3, 3, 3)
    assert [(c["type"], c["status"], c["reason"]) for c in st["conditions"]] == [
        ("Available", "True", "MinimumReplicasAvailable"),
        ("Progressing", "True", "NewReplicaSetAvailable"),
    ]
    sts_pods = sorted(p["metadata"]["name"] for p in server.workload_pods(NS, "StatefulSet", "statefulset"))
    assert sts_pods == ["statefulset-0", "statefulset-1", "statefulset-2"]
    nodes = sorted(p["spec"]["nodeName"] for p in server.workload_pods(NS, "DaemonSet", "daemonset"))
    assert nodes == ["node-0", "node-1", "node-2"]


# ---- patching ---------------------------------------------------------------------------------------------


def test_a_strategic_merge_patch_merges_maps_and_bumps_the_generation(server: KubeApiServer, apps: Any) -> None:
    server.add_workload(NS, "Deployment", "web", template_annotations={"keep": "me", "drop": "me"})
    before = server.workload(NS, "Deployment", "web")
    assert before is not None
    body = {"spec": {"template": {"metadata": {"annotations": {"restarted": "1", "drop": None}}}}}
    # a dict body: the client sends application/strategic-merge-patch+json
    after = apps.patch_namespaced_deployment("web", NS, body)
    assert after.spec.template.metadata.annotations == {"keep": "me", "restarted": "1"}
    assert after.metadata.generation == 2
    assert int(after.metadata.resource_version) > int(before["metadata"]["resourceVersion"])
    assert after.spec.template.spec.containers[0].name == "app"  # untouched parts stay
    assert after.status.observed_generation == 1  # the controller has not seen it yet
    assert rollout_status(server.workload(NS, "Deployment", "web") or {}) == (
        "Waiting for deployment spec update to be observed...",
        False,
    )
    assert server.workload_patches(NS, "Deployment", "web") == [body]


def test_strategic_merge_merges_containers_by_name_where_a_merge_patch_replaces_the_list(
    server: KubeApiServer,
) -> None:
    server.add_workload(NS, "Deployment", "web")
    smp = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "example/sidecar:1"}]}}}}
    code, body = patch(server, "Deployment", "web", smp)
    assert code == 200
    assert [c["name"] for c in body["spec"]["template"]["spec"]["containers"]] == ["app", "sidecar"]
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}
    code, body = patch(server, "Deployment", "web", delete)
    assert [c["name"] for c in body["spec"]["template"]["spec"]["containers"]] == ["app"]

    merge = {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "example/only:1"}]}}}}
    code, body = patch(server, "Deployment", "web", merge, content_type="application/merge-patch+json")
    assert code == 200
    assert body["spec"]["template"]["spec"]["containers"] == [{"name": "only", "image": "example/only:1"}]
    assert body["metadata"]["generation"] == 4


def test_generation_follows_the_strategies_and_a_no_op_patch_writes_nothing(server: KubeApiServer) -> None:
    for kind in KINDS:
        server.add_workload(NS, kind, "w")
        rv = server.workload(NS, kind, "w")["metadata"]["resourceVersion"]  # type: ignore[index]

        # metadata.labels is no desired state: a write (new resourceVersion), the same generation
        code, body = patch(server, kind, "w", {"metadata": {"labels": {"app": "w", "extra": "1"}}})
        assert code == 200 and body["metadata"]["generation"] == 1
        assert int(body["metadata"]["resourceVersion"]) > int(rv)
        # the same patch again changes nothing: not written, the resourceVersion stays
        rv = body["metadata"]["resourceVersion"]
        code, body = patch(server, kind, "w", {"metadata": {"labels": {"extra": "1"}}})
        assert code == 200 and body["metadata"]["resourceVersion"] == rv
        # status belongs to the status subresource: a patch of it changes nothing
        code, body = patch(
            server, kind, "w", {"status": {"observedGeneration": 99}}, content_type="application/merge-patch+json"
        )
        assert body["status"]["observedGeneration"] == 1 and body["metadata"]["resourceVersion"] == rv
        # any change of spec bumps it, not only spec.template (PrepareForUpdate in the strategies)
        code, body = patch(server, kind, "w", {"spec": {"revisionHistoryLimit": 3}})
        assert body["metadata"]["generation"] == 2, kind
        code, body = patch(server, kind, "w", RESTART)
        assert body["metadata"]["generation"] == 3, kind
        assert len(server.workload_patches(NS, kind, "w")) == 5

    # a Deployment's metadata.annotations bump it too ("annotations are copied from deployments to their
    # replica sets"); a StatefulSet's do not
    _, body = patch(server, "Deployment", "w", {"metadata": {"annotations": {"note": "x"}}})
    assert body["metadata"]["generation"] == 4
    _, body = patch(server, "StatefulSet", "w", {"metadata": {"annotations": {"note": "x"}}})
    assert body["metadata"]["generation"] == 3
    # a DaemonSet's template change bumps its templateGeneration, which a client cannot set
    _, body = patch(
        server, "DaemonSet", "w", {"metadata": {"annotations": {"deprecated.daemonset.template.generation": "9"}}}
    )
    assert body["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "2"


def test_a_stale_resource_version_in_the_patch_is_a_409_conflict(server: KubeApiServer, apps: Any) -> None:
    obj = server.add_workload(NS, "StatefulSet", "db")
    read_rv = obj["metadata"]["resourceVersion"]
    code, _ = patch(server, "StatefulSet", "db", {"metadata": {"labels": {"app": "db", "someone": "else"}}})
    assert code == 200
    stale = {"metadata": {"resourceVersion": read_rv}, **RESTART}
    code, body = patch(server, "StatefulSet", "db", stale)
    assert code == 409
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Conflict", 409)
    assert body["message"] == (
        'Operation cannot be fulfilled on statefulsets.apps "db": the object has been modified; please apply your '
        "changes to the latest version and try again"
    )
    assert server.workload(NS, "StatefulSet", "db")["metadata"]["generation"] == 1  # type: ignore[index]
    assert server.workload_patches(NS, "StatefulSet", "db") == [
        {"metadata": {"labels": {"app": "db", "someone": "else"}}}
    ]
    # the version just read is accepted, through the client as well
    current = apps.read_namespaced_stateful_set("db", NS).metadata.resource_version
    done_patch = apps.patch_namespaced_stateful_set("db", NS, {"metadata": {"resourceVersion": current}, **RESTART})
    assert done_patch.metadata.generation == 2


def test_a_json_patch_list_is_applied_and_a_failed_test_op_is_422(server: KubeApiServer, apps: Any) -> None:
    server.add_workload(NS, "Deployment", "web")
    ops = [{"op": "add", "path": "/spec/template/metadata/annotations", "value": {"restarted": "1"}}]
    # a list body: the client sends application/json-patch+json
    assert apps.patch_namespaced_deployment("web", NS, ops).spec.template.metadata.annotations == {"restarted": "1"}
    code, body = patch(
        server,
        "Deployment",
        "web",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}, {"op": "remove", "path": "/spec/paused"}],
        content_type="application/json-patch+json",
    )
    assert (code, body["reason"]) == (422, "Invalid")
    code, body = patch(server, "Deployment", "web", {"not": "a list"}, content_type="application/json-patch+json")
    assert (code, body["reason"]) == (400, "BadRequest")


def test_validation_refuses_what_the_api_server_refuses(server: KubeApiServer) -> None:
    server.add_workload(NS, "Deployment", "web")
    code, body = patch(server, "Deployment", "web", {"spec": {"selector": {"matchLabels": {"app": "other"}}}})
    assert (code, body["reason"]) == (422, "Invalid") and "spec.selector" in body["message"]
    code, body = patch(server, "Deployment", "web", {"spec": {"template": {"metadata": {"labels": {"app": "x"}}}}})
    assert code == 422 and "`selector` does not match template `labels`" in body["message"]
    code, body = patch(server, "Deployment", "web", {"spec": {"replicas": -1}})
    assert code == 422 and "spec.replicas" in body["message"]
    assert server.workload(NS, "Deployment", "web")["metadata"]["generation"] == 1  # type: ignore[index]
    assert server.workload_patches(NS, "Deployment", "web") == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/apply-patch+yaml", "text/plain", "application/xml"]
)
def test_other_content_types_are_415(server: KubeApiServer, content_type: str) -> None:
    server.add_workload(NS, "Deployment", "web")
    code, body = patch(server, "Deployment", "web", RESTART, content_type=content_type)
    assert code == 415
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "UnsupportedMediaType", 415)
    assert body["message"].startswith(
        "the body of the request was in an unknown format - accepted media types include:"
    )
    assert server.workload(NS, "Deployment", "web")["metadata"]["generation"] == 1  # type: ignore[index]


def test_a_charset_parameter_does_not_change_the_patch_type(server: KubeApiServer) -> None:
    server.add_workload(NS, "Deployment", "web")
    code, body = patch(server, "Deployment", "web", RESTART, content_type="application/merge-patch+json; charset=utf-8")
    assert code == 200 and body["metadata"]["generation"] == 2


def test_other_methods_are_not_served(server: KubeApiServer) -> None:
    server.add_workload(NS, "Deployment", "web")
    code, body = raw(server, "PUT", path("Deployment", "web"), {"kind": "Deployment"})
    assert (code, body["reason"]) == (405, "MethodNotAllowed")


# ---- RBAC, faults, hooks ----------------------------------------------------------------------------------


def test_rbac_rules_for_the_apps_group_allow_only_their_verbs(server: KubeApiServer, apps: Any) -> None:
    server.add_workload(NS, "Deployment", "web")
    server.grant_role(
        "reader",
        {
            "kind": "Role",
            "metadata": {"name": "reader", "namespace": NS},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}],
        },
        user="system:serviceaccount:shop:reader",
    )
    assert raw(server, "GET", path("Deployment", "web"), token="reader")[0] == 200
    assert raw(server, "GET", path("Deployment"), token="reader")[0] == 200
    code, body = patch(server, "Deployment", "web", RESTART, token="reader")
    assert code == 403
    assert (body["kind"], body["reason"]) == ("Status", "Forbidden")
    assert body["message"] == (
        'deployments.apps "web" is forbidden: User "system:serviceaccount:shop:reader" cannot patch resource '
        '"deployments" in API group "apps" in the namespace "shop"'
    )
    assert server.workload(NS, "Deployment", "web")["metadata"]["generation"] == 1  # type: ignore[index]
    # 403 comes before 415 and 404: authorization runs before the handler
    assert patch(server, "Deployment", "web", RESTART, token="reader", content_type="text/plain")[0] == 403
    assert patch(server, "Deployment", "missing", RESTART, token="reader")[0] == 403
    # other resources of the group, and the core group, are not granted
    assert raw(server, "GET", path("StatefulSet"), token="reader")[0] == 403

    server.add_token("core-only", [Rule(frozenset({"*"}), frozenset({"deployments"}))])
    assert raw(server, "GET", path("Deployment", "web"), token="core-only")[0] == 403
    server.add_token(
        "patcher",
        [Rule(frozenset({"patch"}), frozenset({"deployments"}), frozenset({"web"}), NS, frozenset({"apps"}))],
    )
    assert patch(server, "Deployment", "web", RESTART, token="patcher")[0] == 200
    assert raw(server, "GET", path("Deployment", "web"), token="patcher")[0] == 403
    assert raw(server, "GET", path("Deployment", "web"), token="unknown")[0] == 401


def test_fail_next_on_request_and_count_cover_workload_requests(server: KubeApiServer, apps: Any) -> None:
    server.add_workload(NS, "Deployment", "web")
    seen: list[tuple[str, str]] = []
    server.on_request(lambda method, p: seen.append((method, p)))
    server.fail_next(503)
    code, body = patch(server, "Deployment", "web", RESTART)
    assert (code, body["reason"]) == (503, "ServiceUnavailable")
    assert server.workload_patches(NS, "Deployment", "web") == []
    assert patch(server, "Deployment", "web", RESTART)[0] == 200
    apps.read_namespaced_deployment("web", NS)
    assert seen == [("PATCH", path("Deployment", "web"))] * 2 + [("GET", path("Deployment", "web"))]
    assert server.count("deployments") == 3
    assert [s for m, _, s in server.requests if m == "PATCH"] == [503, 200]


# ---- the rollout controller ---------------------------------------------------------------------------------


def test_a_deployment_rolls_one_pod_at_a_time_with_surge_and_no_unavailability(
    server: KubeApiServer, clock: Clock
) -> None:
    server.add_workload(NS, "Deployment", "web", replicas=3, labels={"app": "web"}, template_annotations={"a": "1"})
    old_names = {p["metadata"]["name"] for p in server.workload_pods(NS, "Deployment", "web")}
    assert patch(server, "Deployment", "web", RESTART)[0] == 200
    seen: list[tuple[int, int, int, int]] = []
    reasons: list[str] = []
    while len(seen) < 20:
        clock.advance(10)
        if not server.step(NS, "Deployment", "web"):
            break
        st = status(server, "Deployment", "web")
        assert st["observedGeneration"] == 2
        seen.append(
            (
                st.get("replicas", 0),
                st.get("updatedReplicas", 0),
                st.get("readyReplicas", 0),
                st.get("availableReplicas", 0),
            )
        )
        live = live_pods(server, "Deployment", "web")
        assert len(live) <= 4  # maxSurge 1
        assert sum(1 for p in live if ready(p)) >= 3  # maxUnavailable 0
        progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
        reasons.append(progressing["reason"])
        assert progressing["status"] == "True"
    # replicas + 1 steps that change the status, and one more for the last old pod to finish terminating
    assert seen == [(4, 1, 3, 3), (4, 2, 3, 3), (4, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)]
    assert reasons == ["NewReplicaSetCreated"] + ["ReplicaSetUpdated"] * 2 + ["NewReplicaSetAvailable"] * 2
    obj = server.workload(NS, "Deployment", "web")
    assert obj is not None and rollout_status(obj) == ('deployment "web" successfully rolled out', True)
    assert obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    progressing = next(c for c in obj["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
    pods = server.workload_pods(NS, "Deployment", "web")
    assert len(pods) == 3 and not old_names & {p["metadata"]["name"] for p in pods}
    starts = sorted(p["status"]["startTime"] for p in pods)
    assert starts == ["2024-05-01T12:00:10Z", "2024-05-01T12:00:20Z", "2024-05-01T12:00:30Z"]
    for pod in pods:
        assert pod["metadata"]["annotations"] == {"a": "1", "kubectl.kubernetes.io/restartedAt": "now"}
        assert pod["metadata"]["labels"]["app"] == "web" and "pod-template-hash" in pod["metadata"]["labels"]
        assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] == pod["status"]["startTime"]


def test_a_replaced_pod_is_listed_terminating_until_the_next_step(server: KubeApiServer, core: Any) -> None:
    server.add_workload(NS, "Deployment", "web", replicas=1)
    old = server.workload_pods(NS, "Deployment", "web")[0]["metadata"]["name"]
    patch(server, "Deployment", "web", RESTART)
    server.step()
    server.step()  # the new pod is Ready; the old one is deleted gracefully
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(NS, label_selector="app=web").items}
    assert len(pods) == 2 and pods[old].metadata.deletion_timestamp is not None
    assert status(server, "Deployment", "web")["replicas"] == 1  # controllers no longer count it
    server.step()
    assert old not in {p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="app=web").items}


def test_a_statefulset_replaces_pods_from_the_highest_ordinal_one_at_a_time(server: KubeApiServer) -> None:
    server.add_workload(NS, "StatefulSet", "db", replicas=3)
    first = status(server, "StatefulSet", "db")
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in server.workload_pods(NS, "StatefulSet", "db")}
    patch(server, "StatefulSet", "db", RESTART)
    assert rollout_status(server.workload(NS, "StatefulSet", "db") or {})[0] == (
        "Waiting for statefulset spec update to be observed..."
    )
    order: list[str] = []
    while server.step(NS, "StatefulSet", "db"):
        live = live_pods(server, "StatefulSet", "db")
        assert sum(1 for p in live if not ready(p)) + (3 - len(live)) <= 1  # one pod at a time
        for p in server.workload_pods(NS, "StatefulSet", "db"):
            if p["metadata"]["uid"] != uids[p["metadata"]["name"]] and p["metadata"]["name"] not in order:
                order.append(p["metadata"]["name"])
        st = status(server, "StatefulSet", "db")
        if st["updateRevision"] != st["currentRevision"]:
            assert st["currentRevision"] == first["currentRevision"]
    assert order == ["db-2", "db-1", "db-0"]
    st = status(server, "StatefulSet", "db")
    assert st["updateRevision"] != first["updateRevision"]
    assert st["currentRevision"] == st["updateRevision"]
    assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"], st["currentReplicas"]) == (3, 3, 3, 3)
    assert done(server, "StatefulSet", "db")
    for p in server.workload_pods(NS, "StatefulSet", "db"):
        assert p["metadata"]["labels"]["controller-revision-hash"] == st["updateRevision"]


def test_statefulset_on_delete_updates_nothing_until_pods_are_deleted(server: KubeApiServer) -> None:
    server.add_workload(NS, "StatefulSet", "db", replicas=3, update_strategy="OnDelete")
    first = status(server, "StatefulSet", "db")
    patch(server, "StatefulSet", "db", RESTART)
    assert server.run_rollout() == 1  # the controller observes the new revision, and replaces nothing
    st = status(server, "StatefulSet", "db")
    assert st["observedGeneration"] == 2 and st["updateRevision"] != first["updateRevision"]
    assert "updatedReplicas" not in st and st["currentReplicas"] == 3  # omitempty
    with pytest.raises(RolloutError, match="only available for RollingUpdate"):
        rollout_status(server.workload(NS, "StatefulSet", "db") or {})

    server.remove_pod(NS, "db-1")
    server.run_rollout()
    revisions = {
        p["metadata"]["name"]: p["metadata"]["labels"]["controller-revision-hash"]
        for p in server.workload_pods(NS, "StatefulSet", "db")
    }
    assert revisions == {"db-0": first["updateRevision"], "db-1": st["updateRevision"], "db-2": first["updateRevision"]}
    assert status(server, "StatefulSet", "db")["updatedReplicas"] == 1

    server.remove_pod(NS, "db-0")
    server.remove_pod(NS, "db-2")
    server.run_rollout()
    st = status(server, "StatefulSet", "db")
    assert (st["updatedReplicas"], st["readyReplicas"]) == (3, 3)
    # kubernetes/kubernetes#73492: OnDelete never promotes currentRevision (and currentReplicas drops to 0)
    assert st["currentRevision"] == first["currentRevision"] and "currentReplicas" not in st
    server.ondelete_promotes_current_revision = True  # the fix of kubernetes/kubernetes#136833
    server.step()
    assert status(server, "StatefulSet", "db")["currentRevision"] == st["updateRevision"]


def test_a_partitioned_statefulset_updates_only_ordinals_from_the_partition(server: KubeApiServer) -> None:
    server.add_workload(NS, "StatefulSet", "db", replicas=3)
    body = {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 2}}, "template": RESTART["spec"]["template"]}}
    patch(server, "StatefulSet", "db", body)
    server.run_rollout()
    st = status(server, "StatefulSet", "db")
    assert st["updatedReplicas"] == 1 and st["currentRevision"] != st["updateRevision"]
    assert rollout_status(server.workload(NS, "StatefulSet", "db") or {}) == (
        "partitioned roll out complete: 1 new pods have been updated...",
        True,
    )


def test_a_daemonset_replaces_one_node_at_a_time(server: KubeApiServer) -> None:
    server.add_workload(NS, "DaemonSet", "agent", replicas=4)
    patch(server, "DaemonSet", "agent", RESTART)
    steps = 0
    while server.step(NS, "DaemonSet", "agent"):
        steps += 1
        st = status(server, "DaemonSet", "agent")
        assert st["desiredNumberScheduled"] == 4 and st["numberMisscheduled"] == 0
        assert st.get("numberAvailable", 0) >= 3  # maxUnavailable 1
        assert len({p["spec"]["nodeName"] for p in live_pods(server, "DaemonSet", "agent")}) == 4
    st = status(server, "DaemonSet", "agent")
    assert (st["updatedNumberScheduled"], st["numberAvailable"], st["numberReady"], st["observedGeneration"]) == (
        4,
        4,
        4,
        2,
    )
    assert steps == 5 and done(server, "DaemonSet", "agent")  # nodes + 1
    assert {
        p["metadata"]["labels"]["pod-template-generation"] for p in server.workload_pods(NS, "DaemonSet", "agent")
    } == {"2"}


def test_a_daemonset_on_delete_waits_for_deleted_pods(server: KubeApiServer) -> None:
    server.add_workload(NS, "DaemonSet", "agent", replicas=2, update_strategy="OnDelete")
    patch(server, "DaemonSet", "agent", RESTART)
    server.run_rollout()
    assert status(server, "DaemonSet", "agent").get("updatedNumberScheduled", 0) == 0
    victim = server.workload_pods(NS, "DaemonSet", "agent")[0]["metadata"]["name"]
    server.remove_pod(NS, victim)
    server.run_rollout()
    assert status(server, "DaemonSet", "agent")["updatedNumberScheduled"] == 1


def test_a_recreate_deployment_stops_every_old_pod_first(server: KubeApiServer) -> None:
    server.add_workload(NS, "Deployment", "web", replicas=3, update_strategy="Recreate")
    patch(server, "Deployment", "web", RESTART)
    server.step()
    assert live_pods(server, "Deployment", "web") == [] and len(server.workload_pods(NS, "Deployment", "web")) == 3
    server.step()
    assert [ready(p) for p in server.workload_pods(NS, "Deployment", "web")] == [False] * 3
    server.run_rollout()
    assert done(server, "Deployment", "web")


def test_scaling_follows_spec_replicas_and_zero_counts_are_left_out(server: KubeApiServer, apps: Any) -> None:
    server.add_workload(NS, "Deployment", "web", replicas=2)
    patch(server, "Deployment", "web", {"spec": {"replicas": 3}})
    server.run_rollout()
    assert len(live_pods(server, "Deployment", "web")) == 3 and done(server, "Deployment", "web")
    patch(server, "Deployment", "web", {"spec": {"replicas": 0}})
    server.run_rollout()
    assert server.workload_pods(NS, "Deployment", "web") == []
    st = status(server, "Deployment", "web")
    # every DeploymentStatus int is omitempty: 0 is not serialised, and the client reads None
    assert set(st) == {"observedGeneration", "conditions"}
    read = apps.read_namespaced_deployment("web", NS)
    assert read.status.replicas is None and read.status.available_replicas is None
    assert rollout_status(server.workload(NS, "Deployment", "web") or {})[1] is True


def test_a_stalled_deployment_exceeds_its_progress_deadline(server: KubeApiServer, clock: Clock) -> None:
    server.add_workload(NS, "Deployment", "web", replicas=2, progress_deadline_seconds=600)
    server.stall_rollout(NS, "Deployment", "web")
    patch(server, "Deployment", "web", RESTART)
    assert server.step() is True  # the new pod is created, and never becomes Ready
    clock.advance(300)
    assert server.step() is False
    st = status(server, "Deployment", "web")
    assert (st["replicas"], st["updatedReplicas"], st["availableReplicas"]) == (3, 1, 2)
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetCreated")
    assert progressing["lastUpdateTime"] == "2024-05-01T12:00:00Z"
    assert rollout_status(server.workload(NS, "Deployment", "web") or {})[1] is False

    clock.advance(301)  # 601 s after the last progress
    assert server.step() is True
    progressing = next(c for c in status(server, "Deployment", "web")["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert progressing["message"].endswith("has timed out progressing.")
    assert progressing["lastTransitionTime"] == "2024-05-01T12:10:01Z"
    with pytest.raises(RolloutError, match='deployment "web" exceeded its progress deadline'):
        rollout_status(server.workload(NS, "Deployment", "web") or {})
    assert sorted(ready(p) for p in live_pods(server, "Deployment", "web")) == [False, True, True]

    server.stall_rollout(NS, "Deployment", "web", stalled=False)
    server.run_rollout()
    progressing = next(c for c in status(server, "Deployment", "web")["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
    assert done(server, "Deployment", "web")


def test_a_stalled_statefulset_and_daemonset_do_not_progress(server: KubeApiServer) -> None:
    for kind in ("StatefulSet", "DaemonSet"):
        server.add_workload(NS, kind, "w", replicas=3)
        server.stall_rollout(NS, kind, "w")
        patch(server, kind, "w", RESTART)
        server.run_rollout()
        obj = server.workload(NS, kind, "w")
        assert obj is not None and rollout_status(obj)[1] is False
        assert sum(1 for p in live_pods(server, kind, "w") if not ready(p)) == 1


# ---- the consumer model -------------------------------------------------------------------------------------


def test_pods_hold_the_key_they_read_at_start_until_they_are_replaced(server: KubeApiServer) -> None:
    server.put_secret(NS, "momento", {"payload": json_payload("k1")})
    server.add_workload(NS, "Deployment", "web", replicas=2, consumer_secret=("momento", "payload"))
    assert server.running_key_ids(NS, "Deployment", "web") == {"k1"}
    env = server.workload(NS, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["env"]  # type: ignore[index]
    assert env == [{"name": "MOMENTO_API_KEY", "valueFrom": {"secretKeyRef": {"name": "momento", "key": "payload"}}}]

    server.put_secret(NS, "momento", {"payload": json_payload("k2")})
    server.run_rollout()
    assert server.running_key_ids(NS, "Deployment", "web") == {"k1"}  # env is read at start only

    patch(server, "Deployment", "web", RESTART)
    server.step()
    assert server.running_key_ids(NS, "Deployment", "web") == {"k1", "k2"}
    server.run_rollout()
    assert server.running_key_ids(NS, "Deployment", "web") == {"k2"}
    assert all(
        p["metadata"]["annotations"][KEY_ID_ANNOTATION] == "k2" for p in server.workload_pods(NS, "Deployment", "web")
    )


def test_the_env_format_and_all_running_key_ids(server: KubeApiServer) -> None:
    server.put_secret(NS, "env", {"momento.env": "MOMENTO_API_KEY=secret-value-xxxxxxxx\nMOMENTO_KEY_ID=e1\n"})
    server.put_secret(NS, "json", {"current": json_payload("j1")})
    server.add_workload(NS, "StatefulSet", "db", replicas=2, consumer_secret=("env", "momento.env"))
    server.add_workload(NS, "DaemonSet", "agent", replicas=2, consumer_secret=("json", "current"))
    server.add_workload(NS, "Deployment", "plain", replicas=1)
    assert server.running_key_ids(NS, "StatefulSet", "db") == {"e1"}
    assert server.running_key_ids(NS, "Deployment", "plain") == set()
    assert server.all_running_key_ids() == {"e1", "j1"}


def test_a_missing_secret_keeps_the_container_waiting(server: KubeApiServer, clock: Clock) -> None:
    server.add_workload(NS, "Deployment", "web", replicas=1, consumer_secret=("momento", "payload"))
    pod = server.workload_pods(NS, "Deployment", "web")[0]
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError", "message": 'secret "momento" not found'}
    assert not ready(pod) and server.running_key_ids(NS, "Deployment", "web") == set()
    assert not done(server, "Deployment", "web")
    clock.advance(60)
    server.put_secret(NS, "momento", {"payload": json_payload("k9")})
    server.run_rollout()
    pod = server.workload_pods(NS, "Deployment", "web")[0]
    assert (
        ready(pod) and pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] == "2024-05-01T12:01:00Z"
    )
    assert server.running_key_ids(NS, "Deployment", "web") == {"k9"} and done(server, "Deployment", "web")


# ---- auto rollout -------------------------------------------------------------------------------------------


def test_auto_rollout_steps_in_real_time_until_stopped(server: KubeApiServer) -> None:
    server.put_secret(NS, "momento", {"payload": json_payload("k1")})
    server.add_workload(NS, "Deployment", "web", replicas=2, consumer_secret=("momento", "payload"))
    server.add_workload(NS, "StatefulSet", "db", replicas=2, consumer_secret=("momento", "payload"))
    server.put_secret(NS, "momento", {"payload": json_payload("k2")})
    server.auto_rollout(0.02)
    try:
        for kind, name in (("Deployment", "web"), ("StatefulSet", "db")):
            assert patch(server, kind, name, RESTART)[0] == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            server.all_running_key_ids() == {"k2"}
            and done(server, "Deployment", "web")
            and done(server, "StatefulSet", "db")
        ):
            time.sleep(0.02)
        assert server.all_running_key_ids() == {"k2"}
        assert done(server, "Deployment", "web") and done(server, "StatefulSet", "db")
    finally:
        server.stop_auto_rollout()
    patch(server, "Deployment", "web", {"spec": {"template": {"metadata": {"annotations": {"again": "1"}}}}})
    time.sleep(0.1)
    assert status(server, "Deployment", "web")["observedGeneration"] == 2  # nothing steps any more
