"""The Kubernetes Secret store, driven through the real ``kubernetes`` client against the local API server
(tests/servers/kube_api.py): the whole store contract kit, then what is particular to Secrets (the layout of
data entries and annotations, the resourceVersion compare-and-set, create, RBAC with the shipped Role, the
preflight) and a real ``rotator once`` through a kubeconfig."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from pydantic import ValidationError

from rotator.errors import (
    ConfigError,
    StoreConflict,
    StoreError,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.model import SecretText
from rotator.stores.base import ANY_CURRENT, TargetRef, VersionMeta
from rotator.stores.kubernetes import (
    CURRENT_ANNOTATION,
    CURRENT_SINCE_ANNOTATION,
    RBAC_HINT,
    STORE_TYPE,
    VERSIONS_ANNOTATION,
    KubernetesSecretStore,
    StoreConfig,
    TargetOptions,
    open_store,
)
from tests.servers.hostile_issuer import HostileIssuer, replace
from tests.servers.kube_api import KubeApiServer, running_kube_api
from tests.stores.contract import StoreContract
from tests.support.e2e import T0, harness

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy" / "kubernetes" / "components" / "secret-store" / "rbac.yaml"
NS = "apps"
STORE = "k8s"


# ---- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube_server() -> Iterator[KubeApiServer]:
    with running_kube_api() as server:
        yield server


@pytest.fixture
def kube(kube_server: KubeApiServer) -> Iterator[KubeApiServer]:
    kube_server.reset()
    yield kube_server
    kube_server.reset()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_config(**overrides: Any) -> StoreConfig:
    return StoreConfig.model_validate({"type": "kubernetes", "namespace": NS, "create": True, **overrides})


@pytest.fixture
def open_k8s(kube: KubeApiServer, sleeps: list[float]) -> Iterator[Callable[..., KubernetesSecretStore]]:
    """Stores on the local API server, each with its own ApiClient (like another process)."""
    opened: list[tuple[KubernetesSecretStore, Any]] = []

    def make(*, token: str = "test", api_client: Any = None, **overrides: Any) -> KubernetesSecretStore:
        client = api_client or kube.api_client(token)
        store = open_store(STORE, make_config(**overrides), api_client=client, sleep=sleeps.append)
        opened.append((store, client))
        return store

    yield make
    for store, client in opened:
        store.close()
        client.close()


@pytest.fixture
def store(open_k8s: Callable[..., KubernetesSecretStore]) -> KubernetesSecretStore:
    return open_k8s()


def target(secret: str, **options: Any) -> TargetRef:
    return TargetRef(STORE, secret, "checkout", TargetOptions(store=STORE, secret=secret, **options))


@pytest.fixture
def make_ref() -> Callable[[str], TargetRef]:
    return target


@pytest.fixture
def ref() -> TargetRef:
    return target(f"momento-{uuid.uuid4().hex[:12]}")


def meta(key_id: str, content_type: str = "application/json") -> VersionMeta:
    return VersionMeta(key_id, "checkout", datetime(2031, 1, 2, tzinfo=UTC), content_type)


def value(key_id: str) -> SecretText:
    return SecretText(f'{{"apiKey": "plaintext-{key_id}-{uuid.uuid4().hex}", "keyId": "{key_id}"}}')


def rotate(store: KubernetesSecretStore, ref: TargetRef, *key_ids: str) -> dict[str, SecretText]:
    values = {}
    for k in key_ids:
        values[k] = value(k)
        store.stage(ref, values[k], meta(k))
        store.promote(ref, k)
    return values


def key() -> str:
    return str(uuid.uuid4())


def writes(kube: KubeApiServer) -> list[tuple[str, str, int]]:
    return [r for r in kube.requests if r[0] in ("PUT", "POST") and "/secrets" in r[1]]


class TestKubernetesContract(StoreContract):
    """The shared store contract, against the local API server (a missing Secret is created: ``create: true``)."""

    @pytest.fixture
    def other_store(self, open_k8s: Callable[..., KubernetesSecretStore]) -> KubernetesSecretStore:
        return open_k8s()

    @pytest.fixture
    def plant_foreign(self, kube: KubeApiServer) -> Callable[[TargetRef, str], None]:
        # a Secret as `kubectl create secret generic NAME --from-literal=momento.json=...` makes it
        return lambda ref, text: kube.put_secret(NS, ref.secret, {"momento.json": text})


# ---- the layout ---------------------------------------------------------------------------------------------


def _key_value(key_id: str) -> str:
    return jwt.encode({"t": "g", "jti": key_id}, "a-signing-secret-for-tests-only-0123456789", algorithm="HS256")


@pytest.mark.parametrize(
    "fmt, entry, make",
    [
        ("json", "momento.json", lambda k: f'{{"apiKey": "plaintext-{k}", "keyId": "{k}"}}'),
        ("env", "momento.env", lambda k: f"MOMENTO_API_KEY=plaintext-{k}\nMOMENTO_KEY_ID={k}\n"),
        ("key", "momento.key", _key_value),
    ],
)
def test_each_format_writes_its_default_data_key(
    store: KubernetesSecretStore, kube: KubeApiServer, fmt: str, entry: str, make: Callable[[str], str]
) -> None:
    name = f"momento-{fmt}"
    extra = {"endpoint_secret": f"{name}-endpoint"} if fmt == "key" else {}
    ref = target(name, format=fmt, **extra)
    assert isinstance(ref.options, TargetOptions) and ref.options.key == entry
    k1 = key()
    store.stage(ref, SecretText(make(k1)), meta(k1))
    store.promote(ref, k1)
    assert kube.secret_data(NS, name) == {entry: make(k1)}
    assert store.inspect(ref).current_key_id == k1
    if fmt == "key":  # the endpoint Secret holds its own entry
        endpoint = ref.with_secret(f"{name}-endpoint")
        store.stage(endpoint, SecretText("cell-1.example"), meta("endpoint-1", "text/plain"))
        assert kube.secret_data(NS, f"{name}-endpoint") == {"momento.endpoint": "cell-1.example"}
        assert store.inspect(endpoint).current_key_id == "endpoint-1"


def test_a_configured_key_names_the_entry(store: KubernetesSecretStore, kube: KubeApiServer) -> None:
    ref = target("momento-env", format="env", key="MOMENTO_ENV")
    k1 = key()
    store.stage(ref, SecretText(f"MOMENTO_API_KEY=x\nMOMENTO_KEY_ID={k1}\n"), meta(k1))
    assert set(kube.secret_data(NS, "momento-env") or {}) == {"MOMENTO_ENV"}


def test_data_holds_the_current_and_unretired_values_only_and_no_value_is_in_the_metadata(
    store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef
) -> None:
    k1, k2, k3 = key(), key(), key()
    values = rotate(store, ref, k1, k2)
    assert kube.secret_data(NS, ref.secret) == {
        "momento.json": values[k2].reveal(),
        "momento.json.v1": values[k1].reveal(),
    }
    store.retire(ref, k1)
    assert kube.secret_data(NS, ref.secret) == {"momento.json": values[k2].reveal()}
    values.update(rotate(store, ref, k3))
    assert kube.secret_data(NS, ref.secret) == {
        "momento.json": values[k3].reveal(),
        "momento.json.v2": values[k2].reveal(),
    }
    obj = kube.secret(NS, ref.secret)
    assert obj is not None
    metadata = json.dumps(obj["metadata"])
    for v in values.values():
        assert v.reveal() not in metadata and "plaintext-" not in metadata
    annotations = obj["metadata"]["annotations"]
    history = json.loads(annotations[VERSIONS_ANNOTATION])
    assert [(e["version"], e["key_id"], e["enabled"]) for e in history] == [
        (1, k1, False),
        (2, k2, True),
        (3, k3, True),
    ]
    assert set(history[0]) == {"version", "key_id", "policy", "created", "enabled", "expires_at"}
    assert annotations[CURRENT_ANNOTATION] == k3
    assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rotator"
    state = store.inspect(ref)
    assert [(v.version, v.key_id, v.current, v.enabled) for v in state.versions] == [
        ("1", k1, False, False),
        ("2", k2, False, True),
        ("3", k3, True, True),
    ]


def test_promoting_back_swaps_the_entries(store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef) -> None:
    k1, k2 = key(), key()
    values = rotate(store, ref, k1, k2)
    store.promote(ref, k1, expect_current=k2)
    assert kube.secret_data(NS, ref.secret) == {
        "momento.json": values[k1].reveal(),
        "momento.json.v2": values[k2].reveal(),
    }
    assert store.read(ref, k2) == values[k2]


def test_the_history_keeps_twenty_retired_versions(store: KubernetesSecretStore, kube: KubeApiServer) -> None:
    ref = target("momento-many")
    previous = None
    for _ in range(25):
        k = key()
        rotate(store, ref, k)
        if previous is not None:
            store.retire(ref, previous)
        previous = k
    obj = kube.secret(NS, "momento-many")
    assert obj is not None
    history = json.loads(obj["metadata"]["annotations"][VERSIONS_ANNOTATION])
    assert len(history) == 21 and sum(e["enabled"] for e in history) == 1
    assert set(obj["data"]) == {"momento.json"}


# ---- the compare-and-set ----------------------------------------------------------------------------------------


def _interleave(kube: KubeApiServer, method: str, secret: str, act: Callable[[], None]) -> list[str]:
    """Run ``act`` right before the first ``method`` of ``secret``'s path reaches the server (once)."""
    done: list[str] = []

    def hook(m: str, path: str) -> None:
        aimed = path.endswith("/secrets") if method == "POST" else path.endswith(f"/secrets/{secret}")
        if m == method and aimed and not done:
            done.append(path)
            act()

    kube.on_request(hook)
    return done


def test_a_concurrent_write_between_read_and_put_is_a_precondition_failure_and_changes_nothing(
    store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef
) -> None:
    k1, k2 = key(), key()
    values = rotate(store, ref, k1)
    before = kube.secret_data(NS, ref.secret)
    hit = _interleave(kube, "PUT", ref.secret, lambda: kube.touch_secret(NS, ref.secret))
    with pytest.raises(StorePreconditionFailed) as caught:
        store.stage(ref, value(k2), meta(k2))
    assert hit
    assert kube.secret_data(NS, ref.secret) == before == {"momento.json": values[k1].reveal()}
    obj = kube.secret(NS, ref.secret)
    assert obj is not None and obj["metadata"]["labels"]["touched"] == "yes"  # the other writer's change stays
    assert ("PUT", f"/api/v1/namespaces/{NS}/secrets/{ref.secret}", 409) in kube.requests
    assert store.inspect(ref).current_key_id == k1
    # the message says what happened, never the API server's own message
    assert "changed since read" in str(caught.value) and "the object has been modified" not in str(caught.value)


def test_a_promote_back_raced_by_another_writer_fails_and_changes_nothing(
    store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef
) -> None:
    k1, k2 = key(), key()
    rotate(store, ref, k1, k2)
    before = kube.secret_data(NS, ref.secret)
    _interleave(kube, "PUT", ref.secret, lambda: kube.touch_secret(NS, ref.secret))
    with pytest.raises(StorePreconditionFailed):
        store.promote(ref, k1, expect_current=k2)
    assert kube.secret_data(NS, ref.secret) == before
    kube.on_request(None)
    assert store.inspect(ref).current_key_id == k2


def test_retire_reads_again_after_a_conflict(store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef) -> None:
    k1, k2 = key(), key()
    rotate(store, ref, k1, k2)
    _interleave(kube, "PUT", ref.secret, lambda: kube.touch_secret(NS, ref.secret))
    store.retire(ref, k1)  # the first PUT meets 409; the retry, after a fresh GET, lands
    assert k1 not in store.inspect(ref).enabled_key_ids()
    assert [status for *_, status in writes(kube)] == [201, 200, 409, 200]  # create, stage, retire twice


def test_a_secret_created_meanwhile_is_a_precondition_failure(
    store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef
) -> None:
    k1 = key()
    _interleave(kube, "POST", ref.secret, lambda: kube.put_secret(NS, ref.secret, {}))
    with pytest.raises(StorePreconditionFailed, match="created meanwhile"):
        store.stage(ref, value(k1), meta(k1))
    assert kube.secret_data(NS, ref.secret) == {}


def test_promote_checks_the_expectation_before_not_found(store: KubernetesSecretStore, ref: TargetRef) -> None:
    k1 = key()
    rotate(store, ref, k1)
    with pytest.raises(StorePreconditionFailed):
        store.promote(ref, key(), expect_current="someone-else")
    with pytest.raises(StoreNotFound):
        store.promote(ref, key(), expect_current=k1)
    with pytest.raises(StoreNotFound):
        store.promote(ref, key(), expect_current=ANY_CURRENT)


# ---- create, foreign, immutable -----------------------------------------------------------------------------------


def test_without_create_a_missing_secret_is_not_found_with_the_remedy_and_nothing_is_created(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer, ref: TargetRef
) -> None:
    store = open_k8s(create=False)
    k1 = key()
    with pytest.raises(StoreNotFound) as caught:
        store.stage(ref, value(k1), meta(k1))
    message = str(caught.value)
    assert f"kubectl -n {NS} create secret generic {ref.secret}" in message
    assert "create: true" in message and RBAC_HINT in message
    assert kube.secret(NS, ref.secret) is None
    assert writes(kube) == []


def test_without_create_an_existing_empty_secret_is_filled(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer, ref: TargetRef
) -> None:
    kube.put_secret(NS, ref.secret, {"other": "kept"})  # kubectl create secret generic, with an entry of its own
    store = open_k8s(create=False)
    k1 = key()
    values = rotate(store, ref, k1)
    assert kube.secret_data(NS, ref.secret) == {"other": "kept", "momento.json": values[k1].reveal()}
    assert not store.inspect(ref).foreign


def test_a_created_secret_carries_the_configured_labels(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer, ref: TargetRef
) -> None:
    store = open_k8s(labels={"team": "payments"})
    rotate(store, ref, key())
    obj = kube.secret(NS, ref.secret)
    assert obj is not None and obj["type"] == "Opaque"
    assert obj["metadata"]["labels"] == {"team": "payments", "app.kubernetes.io/managed-by": "rotator"}


def test_a_hand_edited_current_value_is_foreign_and_adopt_replaces_it(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer, ref: TargetRef
) -> None:
    store = open_k8s()
    k1, k2 = key(), key()
    rotate(store, ref, k1)
    obj = kube.secret(NS, ref.secret)
    assert obj is not None
    edited = f'{{"apiKey": "by-hand", "keyId": "{key()}"}}'
    kube.secrets[(NS, ref.secret)]["data"]["momento.json"] = base64.b64encode(edited.encode()).decode()
    state = store.inspect(ref)
    assert state.foreign and state.current_key_id is None
    with pytest.raises(StoreConflict, match="adopt: true"):
        store.stage(ref, value(k2), meta(k2))
    adopting = target(ref.secret, adopt=True)
    v2 = value(k2)
    store.stage(adopting, v2, meta(k2))
    # the value edited by hand is not kept; the version it replaced is reported retired (its value is gone)
    assert kube.secret_data(NS, ref.secret) == {"momento.json": v2.reveal()}
    state = store.inspect(adopting)
    assert state.current_key_id == k2 and not state.foreign
    assert k1 not in state.enabled_key_ids()


def test_a_value_where_the_history_records_no_current_key_is_foreign(
    store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef
) -> None:
    rotate(store, ref, key())
    kube.secrets[(NS, ref.secret)]["metadata"]["annotations"][CURRENT_ANNOTATION] = "someone-else"
    state = store.inspect(ref)
    assert state.foreign and state.current_key_id is None


def test_an_unreachable_api_server_is_unavailable_and_named(open_k8s: Callable[..., KubernetesSecretStore]) -> None:
    store = open_k8s(api_client=_client("http://user:pw@127.0.0.1:9"))
    with pytest.raises(StoreUnavailable, match=r"cannot reach the Kubernetes API at http://127\.0\.0\.1:9 ") as caught:
        store.inspect(target("momento-x"))
    assert "pw" not in str(caught.value)


def test_an_immutable_secret_is_refused(store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef) -> None:
    kube.put_secret(NS, ref.secret, {})
    kube.secrets[(NS, ref.secret)]["immutable"] = True
    k1 = key()
    with pytest.raises(StoreConflict, match="immutable"):
        store.stage(ref, value(k1), meta(k1))
    assert writes(kube) == []


def test_another_targets_history_is_not_taken_over(store: KubernetesSecretStore, ref: TargetRef) -> None:
    rotate(store, ref, key())
    other = target(ref.secret, key="another.json")
    with pytest.raises(StoreConflict, match=r"data key 'momento\.json'"):
        store.inspect(other)


def test_data_over_one_mebibyte_is_refused_before_it_is_sent(
    store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef
) -> None:
    k1, k2 = key(), key()
    big = "x" * (600 * 1024)
    store.stage(ref, SecretText(f'{{"apiKey": "{big}", "keyId": "{k1}"}}'), meta(k1))
    sent = len(writes(kube))
    with pytest.raises(StoreError, match="1 MiB") as caught:
        store.stage(ref, SecretText(f'{{"apiKey": "{big}", "keyId": "{k2}"}}'), meta(k2))
    assert big not in str(caught.value)
    assert len(writes(kube)) == sent
    assert store.inspect(ref).current_key_id == k1


# ---- errors and RBAC ----------------------------------------------------------------------------------------------


def test_a_403_names_the_verb_the_namespace_and_the_rbac_component(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer, ref: TargetRef
) -> None:
    from tests.servers.kube_api import Rule

    kube.put_secret(NS, ref.secret, {})
    kube.add_token("read-only", [Rule(frozenset({"get"}), frozenset({"secrets"}), namespace=NS)])
    kube.add_token("nothing", [])
    k1 = key()
    v1 = value(k1)
    with pytest.raises(StorePermissionError) as caught:
        open_k8s(token="read-only").stage(ref, v1, meta(k1))
    message = str(caught.value)
    assert "may not update" in message and f"namespace {NS}" in message and RBAC_HINT in message
    assert v1.reveal() not in message and "is forbidden: User" not in message  # never the server's own text
    with pytest.raises(StorePermissionError, match="may not get"):
        open_k8s(token="nothing").inspect(ref)
    with pytest.raises(StorePermissionError, match="credentials"):
        open_k8s(token="unknown").inspect(ref)


def _role() -> dict[str, Any]:
    (role,) = [d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "Role"]
    return dict(role)


def test_the_shipped_role_grants_exactly_get_and_update_on_the_named_secrets() -> None:
    role = _role()
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["momento-checkout-api"],
            "verbs": ["get", "update"],
        }
    ]
    comments = " ".join(line.lstrip("#").strip() for line in RBAC.read_text().splitlines() if line.startswith("#"))
    assert "RBAC cannot restrict `create` by resourceName" in comments
    assert '#   verbs: ["create"]' in RBAC.read_text()  # the opt-in, commented out


def test_a_whole_rotation_needs_only_the_shipped_role(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer
) -> None:
    role = _role()
    ns, name = role["metadata"]["namespace"], role["rules"][0]["resourceNames"][0]
    kube.grant_role("rotator-sa", role)
    kube.put_secret(ns, name, {})  # created once by hand, as the Role's comment says
    store = open_k8s(token="rotator-sa", namespace=ns, create=False)
    ref = target(name)
    assert store.preflight([ref]) == []
    k1, k2 = key(), key()
    v1, v2 = value(k1), value(k2)
    store.stage(ref, v1, meta(k1))
    assert store.read(ref, k1) == v1
    store.promote(ref, k1, expect_current=None)
    store.stage(ref, v2, meta(k2))
    assert store.read(ref, k2) == v2
    store.promote(ref, k2, expect_current=k1)
    store.retire(ref, k1)
    state = store.inspect(ref)
    assert state.current_key_id == k2 and state.enabled_key_ids() == {k2}
    assert {s for *_, s in kube.requests} <= {200, 201}  # nothing was refused on the way

    # a Secret that does not exist: without create, the remedy; with create, a 403 naming create
    missing = target("momento-not-created")
    with pytest.raises(StorePermissionError, match="may not get"):  # not under resourceNames
        store.inspect(missing)
    kube.grant_role("rotator-sa", {**role, "rules": [{**role["rules"][0], "resourceNames": [name, missing.secret]}]})
    with pytest.raises(StoreNotFound, match="create secret generic momento-not-created"):
        store.stage(missing, v1, meta(k1))
    creating = open_k8s(token="rotator-sa", namespace=ns, create=True)
    with pytest.raises(StorePermissionError) as caught:
        creating.stage(missing, v1, meta(k1))
    assert "may not create secrets" in str(caught.value) and "RBAC cannot limit create" in str(caught.value)
    assert kube.secret(ns, missing.secret) is None
    problems = creating.preflight([missing])
    assert len(problems) == 1 and "may not create" in problems[0].message


def test_repr_and_errors_never_show_a_value(store: KubernetesSecretStore, ref: TargetRef) -> None:
    k1, k2 = key(), key()
    values = rotate(store, ref, k1, k2)
    assert repr(store) == f"KubernetesSecretStore(name='{STORE}', namespace='{NS}')"
    shown = repr(store.inspect(ref)) + repr(store.read(ref, k1)) + str(store.read(ref, k2))
    for attempt in (
        lambda: store.retire(ref, k2),
        lambda: store.promote(ref, k1, expect_current=k1),
        lambda: store.read(ref, "missing"),
    ):
        with pytest.raises(StoreError) as caught:
            attempt()
        shown += str(caught.value) + repr(caught.value)
    for v in values.values():
        assert v.reveal() not in shown
    assert "plaintext-" not in shown


# ---- retries and lost answers ---------------------------------------------------------------------------------


def test_a_read_is_sent_again_after_a_5xx(
    store: KubernetesSecretStore, kube: KubeApiServer, ref: TargetRef, sleeps: list[float]
) -> None:
    rotate(store, ref, key())
    kube.fail_next(503)
    assert store.inspect(ref).exists
    assert sleeps == [0.2]
    kube.fail_next(500, times=3)
    with pytest.raises(StoreUnavailable, match="500 InternalError"):
        store.inspect(ref)


def test_a_write_whose_answer_is_lost_is_checked_not_resent(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer, ref: TargetRef
) -> None:
    with HostileIssuer(kube.url) as proxy:
        store = open_k8s(api_client=_client(proxy.url))
        k1, k2 = key(), key()
        rotate(store, ref, k1)
        path = f"/api/v1/namespaces/{NS}/secrets/{ref.secret}"
        proxy.on(
            "PUT", path, replace(500, b'{"kind": "Status", "code": 500}', forward=True)
        )  # it lands; the answer lies
        v2 = value(k2)
        store.stage(ref, v2, meta(k2))
        assert proxy.count("PUT", path) == 1
        assert store.read(ref, k2) == v2
        proxy.on("PUT", path, replace(503, b'{"kind": "Status", "code": 503}'))  # refused, never carried out
        k3 = key()
        with pytest.raises(StoreUnavailable):
            store.stage(ref, value(k3), meta(k3))
        assert proxy.count("PUT", path) == 1 + 3
        assert store.inspect(ref).current_key_id == k2


def _client(url: str) -> Any:
    from kubernetes import client

    return client.ApiClient(client.Configuration(host=url, api_key={"authorization": "Bearer test"}))


# ---- preflight ----------------------------------------------------------------------------------------------------


def test_preflight_reports_what_would_fail_and_writes_nothing(
    open_k8s: Callable[..., KubernetesSecretStore], kube: KubeApiServer
) -> None:
    from tests.servers.kube_api import Rule

    kube.put_secret(NS, "momento-foreign", {"momento.json": "by hand"})
    kube.put_secret(NS, "momento-ok", {})
    kube.put_secret(NS, "momento-read-only", {})
    kube.put_secret(NS, "momento-ok-key", {})
    refs = [
        target("momento-ok"),
        target("momento-missing"),
        target("momento-foreign"),
        target("momento-read-only"),
        target("momento-ok-key", format="key", endpoint_secret="momento-missing-endpoint"),
    ]
    kube.add_token(
        "partial",
        [
            Rule(frozenset({"get"}), frozenset({"secrets"}), namespace=NS),
            Rule(
                frozenset({"update"}),
                frozenset({"secrets"}),
                frozenset({"momento-ok", "momento-foreign", "momento-ok-key"}),
                NS,
            ),
        ],
    )
    store = open_k8s(token="partial", create=False)
    problems = {(p.index, p.field): p.message for p in store.preflight(refs)}
    assert set(problems) == {(1, "secret"), (2, "secret"), (3, "secret"), (4, "endpoint_secret")}
    assert "create secret generic momento-missing" in problems[(1, "secret")]
    assert "adopt: true" in problems[(2, "secret")] and "by hand" not in problems[(2, "secret")]
    assert "may not update" in problems[(3, "secret")]
    assert "momento-missing-endpoint" in problems[(4, "endpoint_secret")]
    assert writes(kube) == []
    assert any(path.endswith("/selfsubjectaccessreviews") for _, path, _ in kube.requests)


def test_preflight_that_cannot_tell_reports_nothing(open_k8s: Callable[..., KubernetesSecretStore]) -> None:
    store = open_k8s(api_client=_client("http://127.0.0.1:9"))  # nothing listens there
    assert store.preflight([target("momento-x")]) == []


# ---- config ---------------------------------------------------------------------------------------------------


def test_target_options_check_kubernetes_names() -> None:
    with pytest.raises(ValidationError, match=r"not a Kubernetes Secret name.*'momento-checkout-api'"):
        TargetOptions(store="k", secret="Momento/Checkout_API")
    with pytest.raises(ValidationError, match="not a Secret data key"):
        TargetOptions(store="k", secret="s", key="bad key")
    with pytest.raises(ValidationError, match="not a Secret data key"):
        TargetOptions(store="k", secret="s", key="..hidden")
    with pytest.raises(ValidationError, match=r"\.v<N>"):
        TargetOptions(store="k", secret="s", key="momento.v2")
    with pytest.raises(ValidationError, match="another Secret"):
        TargetOptions(store="k", secret="s", format="key", endpoint_secret="s")
    with pytest.raises(ValidationError, match="namespace name"):
        TargetOptions(store="k", secret="s", namespace="Payments")
    assert TargetOptions(store="k", secret="s", format="env").key == "momento.env"
    with pytest.raises(ValidationError, match="in_cluster"):
        StoreConfig.model_validate({"type": "kubernetes", "in_cluster": True, "kubeconfig": "x"})
    with pytest.raises(ValidationError, match="managed-by"):
        StoreConfig.model_validate({"type": "kubernetes", "labels": {"app.kubernetes.io/managed-by": "me"}})
    assert make_config(timeout="3s").timeout == timedelta(seconds=3)
    with pytest.raises(ValidationError, match="timeout"):
        make_config(timeout="0s")


def test_the_namespace_defaults_to_the_pods_own(tmp_path: Path, kube: KubeApiServer) -> None:
    (tmp_path / "namespace").write_text("payments\n")
    client = kube.api_client()
    try:
        cfg = StoreConfig.model_validate({"type": "kubernetes", "service_account_dir": str(tmp_path)})
        assert open_store("s", cfg, api_client=client).namespace == "payments"
        empty = tmp_path / "empty"
        empty.mkdir()
        cfg = StoreConfig.model_validate({"type": "kubernetes", "service_account_dir": str(empty)})
        with pytest.raises(ConfigError, match=r"stores\.s\.namespace: not set"):
            open_store("s", cfg, api_client=client)
    finally:
        client.close()


def test_a_config_with_a_kubernetes_store_validates(tmp_path: Path) -> None:
    from rotator import config

    cfg = config.from_mapping(
        {
            "issuer": {"type": "emulator"},
            "stores": {"k8s": {"type": "kubernetes", "namespace": "payments", "timeout": "5s"}},
            "policies": [
                {
                    "name": "checkout",
                    "role": "operator",
                    "lifetime": "30d",
                    "rotate_before": "7d",
                    "targets": [{"store": "k8s", "secret": "momento-checkout-api", "adopt": True}],
                }
            ],
        }
    )
    (t,) = cfg.policies[0].targets
    assert isinstance(t.options, TargetOptions) and t.options.key == "momento.json" and t.options.adopt
    with pytest.raises(ConfigError, match=r"targets\[0\]\.secret"):
        config.from_mapping(
            {
                "issuer": {"type": "emulator"},
                "stores": {"k8s": {"type": "kubernetes"}},
                "policies": [{"name": "c", "role": "operator", "targets": [{"store": "k8s", "secret": "A_B"}]}],
            }
        )
    assert STORE_TYPE.capabilities.stage_makes_current and STORE_TYPE.capabilities.compare_and_set == "conditional"


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": server}}],  # plain HTTP
                "users": [{"name": "rotator", "user": {"token": "test"}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "rotator"}}],
                "current-context": "local",
            }
        )
    )
    return path


def test_a_loaded_client_keeps_a_connection_per_worker(
    tmp_path: Path, kube: KubeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """As tests/stores/test_connection_pools.py for the other stores: 16 workers at once over one store neither
    queue for a connection nor open and drop ones (the client library's pool holds 5 per CPU)."""
    import logging
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from rotator.stores.base import POOL_CONNECTIONS, StoreSpec
    from rotator.stores.registry import open_store as open_registered

    cfg = make_config(kubeconfig=str(_kubeconfig(tmp_path / "kubeconfig", kube.url)), in_cluster=False)
    store = open_registered(StoreSpec(STORE, "kubernetes", cfg))
    try:
        assert isinstance(store, KubernetesSecretStore)
        workers = 16
        barrier = threading.Barrier(workers)

        def inspect(i: int) -> bool:
            barrier.wait()
            return store.inspect(target(f"pool-{i}")).exists

        caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
        with ThreadPoolExecutor(workers) as pool:
            for _ in range(3):
                assert not any(pool.map(inspect, range(workers)))
        assert [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()] == []
        assert workers <= POOL_CONNECTIONS
    finally:
        store.close()


# ---- a real `rotator once` -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rotator_once_rotates_into_a_secret_through_a_kubeconfig(tmp_path: Path, kube: KubeApiServer) -> None:
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", kube.url)
    policy = {
        "name": "checkout",
        "role": "operator",
        "lifetime": "1h",
        "rotate_before": "20m",
        "grace": "5m",
        "orphan_after": "10m",
        "targets": [{"store": "k8s", "secret": "momento-checkout-api"}],
    }
    stores = {
        "k8s": {
            "type": "kubernetes",
            "namespace": NS,
            "kubeconfig": str(kubeconfig),
            "in_cluster": False,
            "create": True,
        }
    }
    with harness(tmp_path) as h:
        cfg = h.write_config([policy], stores=stores)
        run = h.run("-c", str(cfg), "once", now=T0)
        assert run.returncode == 0, run.explain()
        assert run.summary()["ok"] is True
        (live,) = h.live_ids("checkout")
        data = kube.secret_data(NS, "momento-checkout-api")
        assert data is not None and set(data) == {"momento.json"}
        payload = json.loads(data["momento.json"])
        assert payload["keyId"] == live and payload["apiKey"]
        obj = kube.secret(NS, "momento-checkout-api")
        assert obj is not None
        annotations = obj["metadata"]["annotations"]
        assert annotations[CURRENT_ANNOTATION] == live
        assert annotations[CURRENT_SINCE_ANNOTATION].startswith(T0.strftime("%Y-%m-%dT%H:%M"))  # the engine's clock
        assert payload["apiKey"] not in json.dumps(obj["metadata"]) and payload["apiKey"] not in run.stdout + run.stderr

        # a second pass 45 minutes on (the key is due): a new key current, the old one kept for grace
        run = h.run("-c", str(cfg), "once", now=T0 + timedelta(minutes=45))
        assert run.returncode == 0, run.explain()
        data = kube.secret_data(NS, "momento-checkout-api")
        assert data is not None and set(data) == {"momento.json", "momento.json.v1"}
        assert json.loads(data["momento.json"])["keyId"] == h.newest_id("checkout")
        assert json.loads(data["momento.json.v1"])["keyId"] == live


# ---- the test API server's Secret writes, through the typed client ----------------------------------------------


def test_the_api_server_models_secret_writes_as_kubernetes_does(kube: KubeApiServer) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api_client = kube.api_client()
    core = client.CoreV1Api(api_client)

    def status(fn: Callable[[], Any]) -> tuple[int, str]:
        with pytest.raises(ApiException) as caught:
            fn()
        return caught.value.status, json.loads(caught.value.body)["reason"]

    def body(name: str, rv: str | None = None, **data: str) -> Any:
        meta = client.V1ObjectMeta(name=name, resource_version=rv)
        return client.V1Secret(metadata=meta, string_data=data or None)

    try:
        created = core.create_namespaced_secret(NS, body("s1", a="1"))
        rv1 = created.metadata.resource_version
        assert base64.b64decode(created.data["a"]) == b"1" and created.string_data is None
        assert status(lambda: core.create_namespaced_secret(NS, body("s1"))) == (409, "AlreadyExists")
        assert status(lambda: core.create_namespaced_secret(NS, body("s2", rv="5"))) == (400, "BadRequest")
        updated = core.replace_namespaced_secret("s1", NS, body("s1", rv=rv1, a="2"))
        rv2 = updated.metadata.resource_version
        assert rv2 != rv1 and updated.metadata.uid == created.metadata.uid
        # a stale resourceVersion is a conflict; none at all is an unconditional update (Secrets allow it)
        assert status(lambda: core.replace_namespaced_secret("s1", NS, body("s1", rv=rv1, a="3"))) == (409, "Conflict")
        assert kube.secret_data(NS, "s1") == {"a": "2"}
        core.replace_namespaced_secret("s1", NS, body("s1", a="4"))
        assert kube.secret_data(NS, "s1") == {"a": "4"}
        assert status(lambda: core.replace_namespaced_secret("nope", NS, body("nope"))) == (404, "NotFound")
        assert status(lambda: core.create_namespaced_secret(NS, body("s3", **{"bad key": "x"}))) == (422, "Invalid")
        assert status(lambda: core.create_namespaced_secret(NS, body("s3", a="x" * (1024 * 1024 + 1)))) == (
            422,
            "Invalid",
        )
        core.create_namespaced_secret(NS, body("s3", a="x" * (1024 * 1024)))  # exactly 1 MiB is allowed
        raw = kube.api_client()
        try:
            answer = raw.call_api(
                *raw.param_serialize(
                    "POST",
                    f"/api/v1/namespaces/{NS}/secrets",
                    header_params={"Content-Type": "application/json"},
                    body={"metadata": {"name": "s4"}, "data": {"a": "not base64!"}},
                    auth_settings=["BearerToken"],
                )
            )
            assert answer.status == 400
        finally:
            raw.close()
        kube.secrets[(NS, "s1")]["immutable"] = True
        assert status(lambda: core.replace_namespaced_secret("s1", NS, body("s1", a="5"))) == (422, "Invalid")
    finally:
        api_client.close()


def test_the_api_server_authorises_secret_writes_with_rbac(kube: KubeApiServer) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    kube.put_secret(NS, "named", {})
    kube.grant_role(
        "limited",
        {
            **_role(),
            "metadata": {"namespace": NS},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": ["named"],
                    "verbs": ["get", "update", "create"],
                }
            ],
        },
    )
    api_client = kube.api_client("limited")
    core = client.CoreV1Api(api_client)
    try:
        secret = core.read_namespaced_secret("named", NS)
        core.replace_namespaced_secret("named", NS, secret)
        with pytest.raises(ApiException) as caught:  # resourceNames never allow a create: it names no object
            core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="named-2")))
        assert caught.value.status == 403
        review = client.AuthorizationV1Api(api_client).create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        namespace=NS, verb="update", resource="secrets", name="named"
                    )
                )
            )
        )
        assert review.status.allowed is True
    finally:
        api_client.close()
