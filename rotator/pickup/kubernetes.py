"""The ``kubernetes`` pickup check: evidence from the Kubernetes API that consumers run with the new key.

Two kinds of evidence, either or both (both must agree when both are configured):

- ``pods``: every *Ready* pod matching the label ``selector`` in ``namespace`` must have started at or after
  the moment the new key was published (``published_at``), i.e. it was restarted (by Reloader, a rollout,
  ...) after the key reached the store, so it read the new key when its containers started. A pod's start is
  the **earliest** ``state.running.startedAt`` of its containers (only of ``container`` when configured),
  falling back to ``status.startTime`` when no container reports one. Container start times are more exact
  than ``status.startTime`` (which the kubelet sets before pulling images, and which does not move when a
  container restarts inside the same pod); the earliest, not the latest, so that a restarted sidecar does not
  vouch for an application container that still runs with the old key. Pods that are not Ready are ignored
  (they serve nothing); no Ready pod at all is no evidence, so the check lags with ``no ready pods match``.
  Kubernetes times have whole seconds: a pod started in the same second as the publication may count as
  older, which only costs one more restart or pass, never an early revocation.
- ``secret``: a Kubernetes Secret synced from the store (External Secrets, the Secrets Store CSI driver's
  sync) must hold the new key id. The data entry ``key`` (the only entry when unset) is base64-decoded and
  read as ``format``: ``json`` -> its ``keyId`` field (else the ``jti`` of its ``apiKey``); ``env`` -> the
  ``MOMENTO_KEY_ID=`` line (else the ``jti`` of ``MOMENTO_API_KEY=``); ``key`` -> the raw key's ``jti``.
  The decoded value lives only in a :class:`~rotator.model.SecretText`; only the key id it holds ever
  appears in a verdict, and errors are reported by kind, never with the value or a library message.

RBAC: ``list`` (and ``get``) on ``pods`` and ``get`` on the named secret, in ``namespace``; see
``deploy/kubernetes/pickup-rbac.yaml``. A 403 makes the check lag with the permission to grant
(``forbidden: get secrets in namespace X``). A consumer group that cannot be read (401/403/404/5xx, no
connection) lags; the check never raises for it.

Calls: one ``list-pods`` per 500 matching pods and one ``get-secret``, each recorded with
``record_call("kubernetes", op, <HTTP status or error class>)``. ``kubernetes`` (extra ``momento-rotator[k8s]``) is
imported by :func:`open_check` only.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator import kube
from rotator.errors import MissingExtraError
from rotator.keys import payload_key_id
from rotator.kube import KubeApi, load_api_client
from rotator.model import PickupVerdict, SecretText
from rotator.observability import get_logger
from rotator.pickup.base import Timeout

SERVICE = "kubernetes"
#: pods asked for per list request
PAGE_SIZE = 500
MAX_PAGES = 200
#: the largest page of pods read (500 pods of ~15 KB are ~7.5 MB); a larger answer makes the check lag
MAX_PODS_PAGE = 32 * 1024 * 1024
#: the largest Secret read (the API server's own limit on a Secret's data is 1 MiB, base64 adds a third)
MAX_SECRET = 4 * 1024 * 1024
RBAC_HINT = "deploy/kubernetes/pickup-rbac.yaml"

_DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN_RE = re.compile(
    r"^(?=.{1,253}\Z)"
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\Z"
)
_DATA_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]{1,253}\Z")

log = get_logger()


class PodsEvidence(BaseModel):
    """``pods``: every Ready pod matching ``selector`` started after the key was published."""

    model_config = ConfigDict(extra="forbid")

    #: a label selector, e.g. ``app=checkout`` or ``app=checkout,tier!=canary``
    selector: str = Field(min_length=1)
    #: judge a pod by this container's start only (default: the earliest start of all its containers)
    container: str | None = None


class SecretEvidence(BaseModel):
    """``secret``: a synced Kubernetes Secret holds the new key id."""

    model_config = ConfigDict(extra="forbid")

    name: str
    #: the data entry holding the payload; default: the Secret's only entry
    key: str | None = None
    format: Literal["json", "env", "key"] = "json"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_SUBDOMAIN_RE.match(v):
            raise ValueError(f"{v!r} is not a Secret name (lower case DNS subdomain, e.g. momento-checkout)")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not _DATA_KEY_RE.match(v):
            raise ValueError(f"{v!r} is not a Secret data key (letters, digits, '-', '_' and '.')")
        return v


class CheckConfig(BaseModel):
    """``pickup: [{type: kubernetes, namespace, pods?: {selector, container?}, secret?: {name, key?, format?}}]``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["kubernetes"]
    namespace: str
    pods: PodsEvidence | None = None
    secret: SecretEvidence | None = None
    #: kubeconfig file (default: $KUBECONFIG or ~/.kube/config); used when not in-cluster
    kubeconfig: str | None = None
    #: kubeconfig context (default: its current context)
    context: str | None = None
    #: in-cluster service account; None = in-cluster when KUBERNETES_SERVICE_HOST is set, else kubeconfig
    in_cluster: bool | None = None
    #: seconds (or a duration like ``10s``) to wait for each API request
    timeout: Timeout = 10.0

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not _DNS_LABEL_RE.match(v):
            raise ValueError(f"{v!r} is not a namespace name (lower case DNS label, e.g. payments)")
        return v

    @model_validator(mode="after")
    def _evidence(self) -> CheckConfig:
        if self.pods is None and self.secret is None:
            raise ValueError("give pods: {selector: ...}, secret: {name: ...}, or both")
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError("in_cluster: true uses the pod's service account; drop kubeconfig and context")
        return self


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def key_id_in(fmt: str, payload: SecretText) -> str | None:
    """The key id a stored payload of format ``fmt`` holds (:func:`rotator.keys.payload_key_id`, the one
    rule), or ``None``. Never raises, never shows the payload."""
    return payload_key_id(payload, fmt)


class KubernetesCheck:
    """The ``kubernetes`` check of one policy. Thread-safe; :meth:`close` releases a client it created."""

    def __init__(self, config: CheckConfig, api_client: Any, *, owns_client: bool) -> None:
        self.config = config
        self._owns_client = owns_client
        self._pods_api = KubeApi(api_client, timeout=config.timeout, max_body=MAX_PODS_PAGE)
        self._secret_api = KubeApi(api_client, timeout=config.timeout, max_body=MAX_SECRET)
        self._namespace_path = f"/api/v1/namespaces/{quote(config.namespace, safe='')}"
        ns = config.namespace
        parts = []
        if config.pods is not None:
            parts.append(f"{ns}/{config.pods.selector}")
        if config.secret is not None:
            parts.append(f"{ns}/secret/{config.secret.name}")
        self.name = "kubernetes:" + "+".join(parts)

    def check(self, policy: str, key_id: str, published_at: datetime) -> PickupVerdict:
        """Whether the matching Ready pods all started at or after ``published_at`` and the Secret holds
        ``key_id``. Never raises for an answer it cannot get: that consumer group lags."""
        published_at = _aware(published_at)
        lagging: list[str] = []
        details: list[str] = []
        if self.config.pods is not None:
            lag, detail = self._check_pods(self.config.pods, published_at)
            lagging += lag
            details.append(detail)
        if self.config.secret is not None:
            lag, detail = self._check_secret(self.config.secret, key_id)
            lagging += lag
            details.append(detail)
        ok = not lagging
        log.debug("pickup checked", check=self.name, policy=policy, key_id=key_id, ok=ok, lagging=lagging)
        return PickupVerdict(check=self.name, key_id=key_id, ok=ok, lagging=tuple(lagging), detail="; ".join(details))

    # -- pods -------------------------------------------------------------------------------------------

    def _check_pods(self, pods: PodsEvidence, published_at: datetime) -> tuple[list[str], str]:
        ns = self.config.namespace
        group = f"pods {pods.selector}"
        items: list[Any] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            query: dict[str, str | int] = {"labelSelector": pods.selector, "limit": PAGE_SIZE}
            if token:
                query["continue"] = token
            problem, result = self._call("list-pods", "list", "pods", lambda q=query: self._list_pods(q))
            if problem is not None:
                return [f"{group} ({problem})"], f"cannot list pods {pods.selector} in namespace {ns}: {problem}"
            page = result.get("items")
            items.extend(p for p in (page if isinstance(page, list) else []) if isinstance(p, dict))
            token = _get(result, "metadata", "continue")
            if not isinstance(token, str) or not token:
                break
        ready = [p for p in items if _is_ready(p)]
        if not ready:
            return [f"{group} (no ready pods match)"], f"no ready pods match {pods.selector} in namespace {ns}"
        lagging: list[str] = []
        for pod in ready:
            name = _get(pod, "metadata", "name")
            name = name if isinstance(name, str) else "?"
            started = _started(pod, pods.container)
            if isinstance(started, str):
                lagging.append(f"pod {name} ({started})")
            elif started < published_at:
                lagging.append(f"pod {name} (started {_iso(started)}, key published {_iso(published_at)})")
        if lagging:
            return lagging, f"{len(lagging)} of {len(ready)} ready pod(s) {pods.selector} predate the key"
        return [], f"all {len(ready)} ready pod(s) {pods.selector} started after the key was published"

    def _list_pods(self, query: dict[str, str | int]) -> dict[str, Any]:
        return self._pods_api.request("GET", f"{self._namespace_path}/pods", query=query)

    # -- secret -----------------------------------------------------------------------------------------

    def _check_secret(self, secret: SecretEvidence, key_id: str) -> tuple[list[str], str]:
        ns = self.config.namespace
        label = f"secret {secret.name}"
        problem, result = self._call(
            "get-secret",
            "get",
            "secrets",
            lambda: self._secret_api.request("GET", f"{self._namespace_path}/secrets/{quote(secret.name, safe='')}"),
        )
        if problem is not None:
            return [f"{label} ({problem})"], f"cannot read secret {secret.name} in namespace {ns}: {problem}"
        data = result.get("data")
        held, why = self._held_key_id(secret, dict(data) if isinstance(data, dict) else {})
        if held is None:
            return [f"{label} ({why})"], f"secret {secret.name} in namespace {ns}: {why}"
        if held != key_id:
            return [f"{label} (holds {held})"], f"secret {secret.name} in namespace {ns} holds {held}, not {key_id}"
        return [], f"secret {secret.name} holds {key_id}"

    @staticmethod
    def _held_key_id(secret: SecretEvidence, data: dict[str, Any]) -> tuple[str | None, str]:
        """``(key id, "")`` or ``(None, why)``; ``why`` names data keys and formats, never values."""
        if secret.key is None:
            if len(data) != 1:
                names = ", ".join(sorted(data)) or "none"
                return None, f"has {len(data)} data entries ({names}); set secret.key"
            entry = next(iter(data))
        else:
            entry = secret.key
            if entry not in data:
                return None, f"no data entry {entry}"
        raw = data[entry]
        if not isinstance(raw, str):
            return None, f"data entry {entry} is empty"
        try:
            payload = SecretText(base64.b64decode(raw, validate=True).decode("utf-8"))
        except (binascii.Error, ValueError):
            return None, f"data entry {entry} is not base64-encoded UTF-8"
        held = key_id_in(secret.format, payload)
        if held is None:
            return None, f"no key id in data entry {entry} read as {secret.format}"
        return held, ""

    # -- plumbing ---------------------------------------------------------------------------------------

    def _call(self, op: str, verb: str, resource: str, fn: Any) -> tuple[str | None, Any]:
        """Run one API request: ``(None, result)`` or ``(why it failed, None)``, recorded once either way."""
        forbidden = f"{verb} {resource} in namespace {self.config.namespace}"
        return kube.call(
            SERVICE,
            op,
            fn,
            timeout=self.config.timeout,
            explain=lambda e: kube.explain(e.status, e.reason, forbidden=forbidden, rbac_hint=RBAC_HINT),
        )

    def close(self) -> None:
        if self._owns_client:
            self._pods_api.close()


def _get(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...`` of a JSON object, or None where a step is missing or not an object."""
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def _list(obj: Any, *path: str) -> list[dict[str, Any]]:
    value = _get(obj, *path)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _time(value: Any) -> datetime | None:
    """A Kubernetes ``Time`` (RFC 3339, ``2026-01-02T03:04:05Z``), or None when absent or not one."""
    if not isinstance(value, str):
        return None
    try:
        return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in _list(pod, "status", "conditions"))


def _started(pod: dict[str, Any], container: str | None) -> datetime | str:
    """When ``pod`` (its ``container``) last started, or why that cannot be told."""
    starts: list[datetime] = []
    seen = False
    for cs in _list(pod, "status", "containerStatuses"):
        if container is not None and cs.get("name") != container:
            continue
        seen = True
        started = _time(_get(cs, "state", "running", "startedAt"))
        if started is not None:
            starts.append(started)
    if container is not None and not seen:
        return f"no container {container}"
    if starts:
        return min(starts)
    start_time = _time(_get(pod, "status", "startTime"))
    if start_time is not None:
        return start_time
    return "no start time"


def _load_client(cfg: CheckConfig) -> Any:
    return load_api_client(in_cluster=cfg.in_cluster, kubeconfig=cfg.kubeconfig, context=cfg.context)


def open_check(config: BaseModel, *, api_client: Any = None) -> KubernetesCheck:
    """A :class:`KubernetesCheck` for ``config``, talking through ``api_client`` (a
    ``kubernetes.client.ApiClient``; tests inject one) or a client loaded from the in-cluster service account
    or kubeconfig (``in_cluster``, ``kubeconfig``, ``context``).

    Raises: MissingExtraError (``momento-rotator[k8s]`` is not installed), PickupError (no usable credentials).
    """
    cfg = config if isinstance(config, CheckConfig) else CheckConfig.model_validate(config.model_dump())
    try:
        import kubernetes  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("k8s", exc.name or "kubernetes") from exc
    if api_client is not None:
        return KubernetesCheck(cfg, api_client, owns_client=False)
    return KubernetesCheck(cfg, _load_client(cfg), owns_client=True)
