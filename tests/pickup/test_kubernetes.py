"""The ``kubernetes`` pickup check, through the real ``kubernetes`` client against the local API server."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from pydantic import ValidationError

from rotator.errors import PickupError
from rotator.model import PickupVerdict
from rotator.pickup import base
from rotator.pickup import kubernetes as kube
from rotator.pickup.kubernetes import CheckConfig, KubernetesCheck, open_check
from tests.servers.kube_api import KubeApiServer, Rule, running_kube_api
from tests.support.crash import SimulatedCrash, count_calls, crash_after

NS = "payments"
OLD, NEW = "k0001", "k0002"
PUBLISHED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BEFORE = PUBLISHED - timedelta(hours=2)
AFTER = PUBLISHED + timedelta(minutes=3)
APP = {"app": "checkout"}
ENDPOINT = "cell-4-us-west-2-1.prod.a.momentohq.com"
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "pickup-rbac.yaml"


def v2_key(key_id: str) -> str:
    """A v2-shaped Momento key (a JWT with ``t: g``) whose jti is ``key_id``; long and recognisable."""
    return jwt.encode({"t": "g", "jti": key_id, "id": "plaintext-marker"}, "s" * 32, algorithm="HS256")


def payload(fmt: str, key_id: str) -> str:
    key = v2_key(key_id)
    if fmt == "json":
        return json.dumps({"apiKey": key, "endpoint": ENDPOINT, "keyId": key_id})
    if fmt == "env":
        return f"MOMENTO_API_KEY={key}\nMOMENTO_ENDPOINT={ENDPOINT}\nMOMENTO_KEY_ID={key_id}\n"
    return key


def assert_no_plaintext(v: PickupVerdict) -> None:
    text = repr(v) + v.detail + " ".join(v.lagging)
    for kid in (OLD, NEW):
        assert v2_key(kid) not in text
        assert v2_key(kid).split(".")[1] not in text
    assert "plaintext-marker" not in text and "eyJ" not in text and "MOMENTO_API_KEY" not in text


@pytest.fixture(scope="module")
def server() -> Iterator[KubeApiServer]:
    with running_kube_api() as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(server: KubeApiServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


MakeCheck = Callable[..., KubernetesCheck]


@pytest.fixture
def make_check(server: KubeApiServer) -> Iterator[MakeCheck]:
    clients: list[Any] = []

    def make(token: str = "test", **cfg: Any) -> KubernetesCheck:
        client = server.api_client(token)
        clients.append(client)
        return open_check(CheckConfig.model_validate({"type": "kubernetes", "namespace": NS, **cfg}), api_client=client)

    yield make
    for c in clients:
        c.close()


def pods_check(make_check: MakeCheck, selector: str = "app=checkout", **kw: Any) -> KubernetesCheck:
    return make_check(pods={"selector": selector, **kw})


# ---- pods -------------------------------------------------------------------------------------------------


def test_pods_restarted_after_the_publication_are_ok(server: KubeApiServer, make_check: MakeCheck) -> None:
    for i in range(3):
        server.add_pod(NS, f"checkout-{i}", labels=APP, started_at=AFTER + timedelta(seconds=i))
    v = pods_check(make_check).check("checkout", NEW, PUBLISHED)
    assert v.ok, v
    assert v.check == "kubernetes:payments/app=checkout"
    assert "all 3 ready pod(s)" in v.detail


def test_a_pod_started_exactly_at_the_publication_counts_as_restarted(
    server: KubeApiServer, make_check: MakeCheck
) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=PUBLISHED)
    assert pods_check(make_check).check("checkout", NEW, PUBLISHED).ok


def test_one_old_pod_lags_and_is_named(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-new", labels=APP, started_at=AFTER)
    server.add_pod(NS, "checkout-old", labels=APP, started_at=BEFORE)
    v = pods_check(make_check).check("checkout", NEW, PUBLISHED)
    assert not v.ok
    assert v.lagging == ("pod checkout-old (started 2024-05-01T10:00:00Z, key published 2024-05-01T12:00:00Z)",)
    assert "1 of 2 ready pod(s)" in v.detail


def test_the_old_pod_being_replaced_makes_it_ok(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-a", labels=APP, started_at=BEFORE)
    check = pods_check(make_check)
    assert not check.check("checkout", NEW, PUBLISHED).ok
    server.remove_pod(NS, "checkout-a")
    server.add_pod(NS, "checkout-b", labels=APP, started_at=AFTER)
    assert check.check("checkout", NEW, PUBLISHED).ok


def test_an_old_pod_that_is_not_ready_is_ignored(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-new", labels=APP, started_at=AFTER)
    server.add_pod(NS, "checkout-stuck", labels=APP, started_at=BEFORE, ready=False)
    assert pods_check(make_check).check("checkout", NEW, PUBLISHED).ok


def test_no_matching_pods_lags(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "other", labels={"app": "billing"}, started_at=AFTER)
    server.add_pod("elsewhere", "checkout-x", labels=APP, started_at=AFTER)
    v = pods_check(make_check).check("checkout", NEW, PUBLISHED)
    assert not v.ok
    assert v.lagging == ("pods app=checkout (no ready pods match)",)
    assert "no ready pods match app=checkout in namespace payments" in v.detail


def test_matching_pods_that_are_all_not_ready_lag(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-starting", labels=APP, started_at=AFTER, ready=False)
    assert pods_check(make_check).check("checkout", NEW, PUBLISHED).lagging == (
        "pods app=checkout (no ready pods match)",
    )


def test_the_selector_picks_the_pods(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-old-canary", labels={"app": "checkout", "track": "canary"}, started_at=BEFORE)
    server.add_pod(NS, "billing-old", labels={"app": "billing"}, started_at=BEFORE)
    server.add_pod(NS, "checkout-new", labels={"app": "checkout", "track": "stable"}, started_at=AFTER)
    assert pods_check(make_check, "app=checkout,track!=canary").check("checkout", NEW, PUBLISHED).ok
    assert pods_check(make_check, "app in (checkout),track notin (canary)").check("checkout", NEW, PUBLISHED).ok
    lagging = pods_check(make_check, "app in (checkout,billing)").check("checkout", NEW, PUBLISHED).lagging
    assert sorted(x.split(" ")[1] for x in lagging) == ["billing-old", "checkout-old-canary"]


def test_a_bad_selector_lags_with_the_status(server: KubeApiServer, make_check: MakeCheck) -> None:
    v = pods_check(make_check, "app=(nope").check("checkout", NEW, PUBLISHED)
    assert v.lagging == ("pods app=(nope (status 400 BadRequest)",)


def test_containers_restarted_after_the_publication_count(server: KubeApiServer, make_check: MakeCheck) -> None:
    # the pod is old but its only container was restarted after the key was published: it read the new key
    server.add_pod(NS, "checkout-0", labels=APP, started_at=BEFORE, containers={"app": AFTER})
    assert pods_check(make_check).check("checkout", NEW, PUBLISHED).ok


def test_a_restarted_sidecar_does_not_vouch_for_an_old_container(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=BEFORE, containers={"app": BEFORE, "proxy": AFTER})
    v = pods_check(make_check).check("checkout", NEW, PUBLISHED)
    assert v.lagging == ("pod checkout-0 (started 2024-05-01T10:00:00Z, key published 2024-05-01T12:00:00Z)",)


def test_the_named_container_alone_decides(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=BEFORE, containers={"app": AFTER, "proxy": BEFORE})
    assert pods_check(make_check, container="app").check("checkout", NEW, PUBLISHED).ok
    assert not pods_check(make_check, container="proxy").check("checkout", NEW, PUBLISHED).ok
    assert pods_check(make_check, container="worker").check("checkout", NEW, PUBLISHED).lagging == (
        "pod checkout-0 (no container worker)",
    )


def test_pods_are_read_page_by_page(
    server: KubeApiServer, make_check: MakeCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "PAGE_SIZE", 2)
    for i in range(5):
        server.add_pod(NS, f"checkout-{i}", labels=APP, started_at=AFTER)
    server.add_pod(NS, "checkout-9-old", labels=APP, started_at=BEFORE)  # sorts last: on the third page
    with count_calls("kubernetes") as calls:
        v = pods_check(make_check).check("checkout", NEW, PUBLISHED)
    assert [x.split(" ")[1] for x in v.lagging] == ["checkout-9-old"]
    assert calls == [("kubernetes", "list-pods", "200")] * 3


# ---- secret -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "env", "key"])
def test_a_synced_secret_holding_the_new_key_id_is_ok(server: KubeApiServer, make_check: MakeCheck, fmt: str) -> None:
    server.put_secret(NS, "momento-checkout", {"payload": payload(fmt, NEW)})
    v = make_check(secret={"name": "momento-checkout", "format": fmt}).check("checkout", NEW, PUBLISHED)
    assert v.ok, v
    assert v.check == "kubernetes:payments/secret/momento-checkout"
    assert_no_plaintext(v)


@pytest.mark.parametrize("fmt", ["json", "env", "key"])
def test_a_synced_secret_holding_the_old_key_id_lags(server: KubeApiServer, make_check: MakeCheck, fmt: str) -> None:
    server.put_secret(NS, "momento-checkout", {"payload": payload(fmt, OLD)})
    v = make_check(secret={"name": "momento-checkout", "format": fmt}).check("checkout", NEW, PUBLISHED)
    assert not v.ok
    assert v.lagging == (f"secret momento-checkout (holds {OLD})",)
    assert_no_plaintext(v)


def test_the_named_data_entry_is_read(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"MOMENTO_API_KEY": v2_key(NEW), "MOMENTO_ENDPOINT": "cell-1.example"})
    check = make_check(secret={"name": "momento", "key": "MOMENTO_API_KEY", "format": "key"})
    assert check.check("checkout", NEW, PUBLISHED).ok


def test_several_entries_without_a_key_lag_naming_the_entries(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"apiKey": v2_key(NEW), "endpoint": "cell-1.example"})
    v = make_check(secret={"name": "momento", "format": "key"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == ("secret momento (has 2 data entries (apiKey, endpoint); set secret.key)",)
    assert_no_plaintext(v)


def test_a_missing_data_entry_lags(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"other": payload("json", NEW)})
    v = make_check(secret={"name": "momento", "key": "payload"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == ("secret momento (no data entry payload)",)


def test_json_without_key_id_falls_back_to_the_api_keys_jti(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"payload": json.dumps({"apiKey": v2_key(NEW)})})
    assert make_check(secret={"name": "momento"}).check("checkout", NEW, PUBLISHED).ok


def test_env_without_key_id_falls_back_to_the_api_keys_jti(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"payload": f'export MOMENTO_API_KEY="{v2_key(OLD)}"\n'})
    v = make_check(secret={"name": "momento", "format": "env"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"secret momento (holds {OLD})",)
    assert_no_plaintext(v)


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("json", "not json " + v2_key(NEW)),
        ("json", json.dumps([v2_key(NEW)])),
        ("env", "API=" + v2_key(NEW)),
        ("key", "plaintext-marker-not-a-jwt"),
    ],
)
def test_a_payload_without_a_key_id_lags_without_showing_it(
    server: KubeApiServer, make_check: MakeCheck, fmt: str, value: str
) -> None:
    server.put_secret(NS, "momento", {"payload": value})
    v = make_check(secret={"name": "momento", "format": fmt}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == (f"secret momento (no key id in data entry payload read as {fmt})",)
    assert_no_plaintext(v)


def test_data_that_is_not_base64_lags_without_showing_it(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_raw_secret(NS, "momento", {"payload": "plaintext-marker:" + v2_key(NEW)})
    v = make_check(secret={"name": "momento"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == ("secret momento (data entry payload is not base64-encoded UTF-8)",)
    assert_no_plaintext(v)


def test_a_missing_secret_lags(make_check: MakeCheck) -> None:
    with count_calls("kubernetes") as calls:
        v = make_check(secret={"name": "momento-checkout"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == ("secret momento-checkout (not found)",)
    assert "cannot read secret momento-checkout in namespace payments" in v.detail
    assert calls == [("kubernetes", "get-secret", "404")]


def test_a_forbidden_secret_lags_naming_the_permission(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"payload": payload("json", NEW)})
    server.add_token("pods-only", [Rule(frozenset({"get", "list"}), frozenset({"pods"}), namespace=NS)])
    v = make_check(token="pods-only", secret={"name": "momento"}).check("checkout", NEW, PUBLISHED)
    assert not v.ok
    (entry,) = v.lagging
    assert entry.startswith("secret momento (forbidden: get secrets in namespace payments is not granted")
    assert "pickup-rbac.yaml" in entry
    assert_no_plaintext(v)


def test_forbidden_pods_lag_naming_the_permission(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=AFTER)
    server.add_token("secrets-only", [Rule(frozenset({"get"}), frozenset({"secrets"}), namespace=NS)])
    v = make_check(token="secrets-only", pods={"selector": "app=checkout"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging[0].startswith("pods app=checkout (forbidden: list pods in namespace payments is not granted")


def test_rejected_credentials_lag(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"payload": payload("json", NEW)})
    v = make_check(token="wrong", secret={"name": "momento"}).check("checkout", NEW, PUBLISHED)
    assert v.lagging == ("secret momento (unauthorized: the API server rejected rotator's credentials)",)


def test_a_server_error_lags(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.put_secret(NS, "momento", {"payload": payload("json", NEW)})
    server.fail_next(500)
    check = make_check(secret={"name": "momento"})
    assert check.check("checkout", NEW, PUBLISHED).lagging == ("secret momento (status 500 InternalError)",)
    assert check.check("checkout", NEW, PUBLISHED).ok


def test_an_unreachable_api_server_lags(server: KubeApiServer) -> None:
    from kubernetes import client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration(host=f"http://127.0.0.1:{port}", api_key={"authorization": "Bearer test"})
    cfg.retries = 0
    api: Any = client.ApiClient(cfg)
    try:
        check = open_check(
            CheckConfig.model_validate(
                {"type": "kubernetes", "namespace": NS, "pods": {"selector": "app=x"}, "secret": {"name": "m"}}
            ),
            api_client=api,
        )
        v = check.check("checkout", NEW, PUBLISHED)
    finally:
        api.close()
    assert len(v.lagging) == 2
    assert all("(unreachable: " in x for x in v.lagging)


# ---- both, RBAC, plumbing ---------------------------------------------------------------------------------


def test_pods_and_secret_must_both_agree(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=AFTER)
    server.put_secret(NS, "momento", {"payload": payload("json", OLD)})
    check = make_check(pods={"selector": "app=checkout"}, secret={"name": "momento"})
    assert check.name == "kubernetes:payments/app=checkout+payments/secret/momento"
    assert check.check("checkout", NEW, PUBLISHED).lagging == (f"secret momento (holds {OLD})",)
    server.put_secret(NS, "momento", {"payload": payload("json", NEW)})
    assert check.check("checkout", NEW, PUBLISHED).ok


def test_the_shipped_role_grants_exactly_what_the_check_needs(server: KubeApiServer, make_check: MakeCheck) -> None:
    docs = list(yaml.safe_load_all(RBAC.read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rotator-pickup"}
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    grants = sorted(
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"]), tuple(r.get("resourceNames", ())))
        for r in role["rules"]
    )
    assert grants == [
        (("",), ("pods",), ("get", "list"), ()),
        (("",), ("secrets",), ("get",), ("momento-checkout-api",)),
    ]
    ns = role["metadata"]["namespace"]
    server.grant_role("pickup", role)
    server.add_pod(ns, "checkout-0", labels=APP, started_at=AFTER)
    server.put_secret(ns, "momento-checkout-api", {"payload": payload("json", NEW)})
    server.put_secret(ns, "another-secret", {"payload": payload("json", NEW)})
    client = server.api_client("pickup")
    try:
        ok = open_check(
            CheckConfig.model_validate(
                {
                    "type": "kubernetes",
                    "namespace": ns,
                    "pods": {"selector": "app=checkout"},
                    "secret": {"name": "momento-checkout-api"},
                }
            ),
            api_client=client,
        )
        assert ok.check("checkout", NEW, PUBLISHED).ok
        other = open_check(
            CheckConfig.model_validate({"type": "kubernetes", "namespace": ns, "secret": {"name": "another-secret"}}),
            api_client=client,
        )
        assert "forbidden" in other.check("checkout", NEW, PUBLISHED).lagging[0]
    finally:
        client.close()


def test_the_shipped_manifests_are_valid_kubernetes_objects() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all(RBAC.read_text()):
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_every_api_call_is_recorded_once(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=AFTER)
    server.put_secret(NS, "momento", {"payload": payload("json", NEW)})
    with count_calls("kubernetes") as calls:
        make_check(pods={"selector": "app=checkout"}, secret={"name": "momento"}).check("checkout", NEW, PUBLISHED)
    assert calls == [("kubernetes", "list-pods", "200"), ("kubernetes", "get-secret", "200")]
    assert server.count() == 2


def test_a_crash_inside_record_call_is_not_swallowed(server: KubeApiServer, make_check: MakeCheck) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=AFTER)
    check = make_check(pods={"selector": "app=checkout"}, secret={"name": "momento"})
    with crash_after(1, service="kubernetes"), pytest.raises(SimulatedCrash):
        check.check("checkout", NEW, PUBLISHED)
    assert server.count("secrets") == 0


def test_open_check_through_the_registry(server: KubeApiServer) -> None:
    server.add_pod(NS, "checkout-0", labels=APP, started_at=AFTER)
    client = server.api_client()
    try:
        cfg = CheckConfig.model_validate({"type": "kubernetes", "namespace": NS, "pods": {"selector": "app=checkout"}})
        check = base.open_check(cfg, api_client=client)
        assert isinstance(check, base.PickupCheck)
        assert check.check("checkout", NEW, PUBLISHED).ok
    finally:
        client.close()


def _kubeconfig(tmp_path: Path, server: KubeApiServer, token: str = "test") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": server.url}}],
                "users": [{"name": "rotator", "user": {"token": token}}, {"name": "nobody", "user": {"token": "x"}}],
                "contexts": [
                    {"name": "local", "context": {"cluster": "local", "user": "rotator"}},
                    {"name": "stranger", "context": {"cluster": "local", "user": "nobody"}},
                ],
                "current-context": "stranger",
            }
        )
    )
    return path


def test_a_kubeconfig_and_context_are_loaded(
    server: KubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    server.add_pod(NS, "checkout-0", labels=APP, started_at=AFTER)
    body = {
        "type": "kubernetes",
        "namespace": NS,
        "pods": {"selector": "app=checkout"},
        "kubeconfig": str(_kubeconfig(tmp_path, server)),
    }
    check = open_check(CheckConfig.model_validate({**body, "context": "local"}))
    try:
        assert check.check("checkout", NEW, PUBLISHED).ok
    finally:
        check.close()
    stranger = open_check(CheckConfig.model_validate(body))  # current-context: rejected credentials
    try:
        assert "unauthorized" in stranger.check("checkout", NEW, PUBLISHED).lagging[0]
    finally:
        stranger.close()


def test_a_missing_kubeconfig_is_a_pickup_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = CheckConfig.model_validate(
        {"type": "kubernetes", "namespace": NS, "secret": {"name": "m"}, "kubeconfig": str(tmp_path / "none")}
    )
    with pytest.raises(PickupError, match="cannot load kubeconfig"):
        open_check(cfg)


def test_in_cluster_is_chosen_when_the_service_host_is_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # outside a pod there is no service-account token: the in-cluster loader is what fails
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    cfg = CheckConfig.model_validate(
        {"type": "kubernetes", "namespace": NS, "secret": {"name": "m"}, "kubeconfig": str(tmp_path / "none")}
    )
    with pytest.raises(PickupError, match="in-cluster service account"):
        open_check(cfg)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"pods": {"selector": ""}},
        {"pods": {"selector": "app=x", "extra": 1}},
        {"secret": {"name": "Bad_Name"}},
        {"secret": {"name": "ok", "format": "yaml"}},
        {"secret": {"name": "ok", "key": "a/b"}},
        {"secret": {"name": "ok"}, "in_cluster": True, "kubeconfig": "/k"},
        {"secret": {"name": "ok"}, "namespace": "Payments"},
        {"secret": {"name": "ok"}, "timeout": 0},
    ],
)
def test_bad_configs_are_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CheckConfig.model_validate({"type": "kubernetes", "namespace": NS, **body})


def test_key_id_in_reads_each_format() -> None:
    from rotator.model import SecretText

    assert kube.key_id_in("json", SecretText(payload("json", NEW))) == NEW
    assert kube.key_id_in("env", SecretText(payload("env", NEW))) == NEW
    assert kube.key_id_in("key", SecretText(payload("key", NEW))) == NEW
    assert kube.key_id_in("key", SecretText(base64.b64encode(b"junk").decode())) is None
