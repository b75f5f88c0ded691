"""The ``kubernetes`` reload target: a rollout restart of Deployments, StatefulSets or DaemonSets.

``reload: [{type: kubernetes, namespace: payments, kind: Deployment, names: [checkout]}]`` (or ``selector:
app=checkout`` instead of ``names``). Each workload is one unit.

**Restart** as ``kubectl rollout restart`` does it: a patch of the pod template's annotations, which makes
the workload's controller replace every pod (https://kubernetes.io/docs/reference/kubectl/generated/kubectl_rollout/kubectl_rollout_restart/).
rotator writes two annotations on ``spec.template.metadata``: ``kubectl.kubernetes.io/restartedAt`` (the
restart time, RFC 3339, the annotation kubectl writes) and ``rotator.momento.dev/key-id`` (the new key's
**id**, never the key). The patch is a JSON merge patch carrying the ``metadata.resourceVersion`` just read,
so it is a compare-and-set: two passes cannot both restart the workload (the second gets 409 Conflict;
https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions).

**Observed state** (no memory of rotator's own): a workload whose template carries the key id annotation, or
whose ``restartedAt`` is at or after the key's publication (someone else restarted it since: its pods read
the new key too), has been reloaded for that key; otherwise it is ``pending``. How far the rollout got is
decided as ``kubectl rollout status`` decides it (kubectl/pkg/polymorphichelpers/rollout_status.go):

- Deployment: ``status.observedGeneration`` >= ``metadata.generation``; the ``Progressing`` condition with
  reason ``ProgressDeadlineExceeded`` is a failure; then ``updatedReplicas`` >= ``spec.replicas``, no old
  replicas left (``status.replicas`` <= ``updatedReplicas``) and ``availableReplicas`` >= ``updatedReplicas``;
- StatefulSet: ``updateStrategy`` must be ``RollingUpdate`` (``OnDelete`` restarts nothing by itself: a
  failure that says so); ``observedGeneration`` caught up, ``readyReplicas`` >= ``spec.replicas``, with a
  ``partition`` ``updatedReplicas`` >= replicas - partition, else ``updateRevision == currentRevision``;
- DaemonSet: ``RollingUpdate`` only; ``observedGeneration`` caught up, ``updatedNumberScheduled`` and
  ``numberAvailable`` >= ``desiredNumberScheduled``.

**After a synced Secret**: when the policy's ``kubernetes`` pickup check in the same namespace names a
``secret`` (External Secrets, the CSI driver's sync), a workload is restarted only once that Secret holds the
new key id (``waiting`` until then): a restart before the sync would reload the old key.

RBAC: ``get``/``list`` and ``patch`` on the workloads (``apps`` group), ``get`` on the synced Secret; see
``deploy/kubernetes/components/reload``. Calls: per observe one GET per named workload (or one LIST per 500
for a selector) plus one GET of the synced Secret; per restart one GET and one PATCH.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rotator import kube
from rotator.errors import MissingExtraError, ReloadConflict, ReloadError
from rotator.kube import KubeApi, load_api_client
from rotator.model import ReloadStatus
from rotator.observability import get_logger
from rotator.pickup.base import Timeout
from rotator.pickup.kubernetes import _DNS_LABEL_RE, _DNS_SUBDOMAIN_RE, KubernetesCheck  # one rule for names
from rotator.pickup.kubernetes import CheckConfig as PickupConfig
from rotator.reload.base import ReloadCapabilities, ReloadContext

SERVICE = "kubernetes"
KEY_ID_ANNOTATION = "rotator.momento.dev/key-id"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
RBAC_HINT = "deploy/kubernetes/components/reload"
#: workloads asked for per list request, and the largest page read (a Deployment object is a few KB)
PAGE_SIZE = 500
MAX_PAGES = 20
MAX_LIST = 32 * 1024 * 1024
MAX_OBJECT = 2 * 1024 * 1024

Kind = Literal["Deployment", "StatefulSet", "DaemonSet"]
RESOURCE: dict[str, str] = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


log = get_logger()


class ReloadConfig(BaseModel):
    """``{type: kubernetes, namespace, kind, names: [...] | selector: ...}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["kubernetes"]
    namespace: str
    kind: Kind
    names: list[str] | None = Field(None, min_length=1)
    selector: str | None = Field(None, min_length=1)
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    timeout: Timeout = 10.0

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not _DNS_LABEL_RE.match(v):
            raise ValueError(f"{v!r} is not a namespace name (lower case DNS label, e.g. payments)")
        return v

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or ():
            if not _DNS_SUBDOMAIN_RE.match(name):
                raise ValueError(f"{name[:80]!r} is not a workload name (lower case DNS subdomain, e.g. checkout)")
        if v is not None and len(set(v)) != len(v):
            raise ValueError("names a workload twice")
        return v

    @model_validator(mode="after")
    def _one_way(self, info: ValidationInfo) -> ReloadConfig:
        if (self.names is None) == (self.selector is None):
            raise ValueError(
                "give either names: [checkout, ...] or selector: app=checkout (a label selector), not both or neither"
            )
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError("in_cluster: true uses the pod's service account; drop kubeconfig and context")
        if isinstance(info.context, dict) and info.context.get("runtime") == "lambda" and not self.kubeconfig:
            raise ValueError(
                "the Lambda runtime cannot reach this cluster: a Lambda has no in-cluster service account and no "
                "~/.kube; set kubeconfig: to a file packaged with the function (an EKS cluster's endpoint and an "
                "exec credential), or run this policy from the CronJob or the container"
            )
        return self


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def rollout_status(kind: str, obj: dict[str, Any]) -> tuple[Literal["rolling", "done", "failed"], str]:
    """Whether the workload's rollout is complete, as ``kubectl rollout status`` decides it."""
    generation = _int(_get(obj, "metadata", "generation"))
    spec, status = _get(obj, "spec"), _get(obj, "status")
    spec = spec if isinstance(spec, dict) else {}
    status = status if isinstance(status, dict) else {}
    observed = _int(status.get("observedGeneration"))
    if kind == "Deployment":
        if generation > observed:
            return "rolling", "waiting for the deployment spec update to be observed"
        conditions = status.get("conditions")
        for c in conditions if isinstance(conditions, list) else ():
            if isinstance(c, dict) and c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
                return "failed", "exceeded its progress deadline (ProgressDeadlineExceeded)"
        replicas = spec.get("replicas")
        want = _int(replicas) if replicas is not None else 1
        updated = _int(status.get("updatedReplicas"))
        if updated < want:
            return "rolling", f"{updated} of {want} new replicas updated"
        if _int(status.get("replicas")) > updated:
            return "rolling", f"{_int(status.get('replicas')) - updated} old replicas pending termination"
        if _int(status.get("availableReplicas")) < updated:
            return "rolling", f"{_int(status.get('availableReplicas'))} of {updated} updated replicas available"
        return "done", f"{updated} replicas updated and available"
    strategy = _get(spec, "updateStrategy", "type") or "RollingUpdate"
    if strategy != "RollingUpdate":
        return "failed", f"updateStrategy {strategy}: pods are not replaced until deleted; use RollingUpdate"
    if kind == "StatefulSet":
        if observed == 0 or generation > observed:
            return "rolling", "waiting for the statefulset spec update to be observed"
        replicas = spec.get("replicas")
        want = _int(replicas) if replicas is not None else 1
        ready = _int(status.get("readyReplicas"))
        if ready < want:
            return "rolling", f"{ready} of {want} pods ready"
        partition = _get(spec, "updateStrategy", "rollingUpdate", "partition")
        if isinstance(partition, int) and partition > 0:
            updated = _int(status.get("updatedReplicas"))
            if updated < want - partition:
                return "rolling", f"{updated} of {want - partition} pods updated (partition {partition})"
            return "done", f"partitioned roll out complete: {updated} new pods"
        if status.get("updateRevision") != status.get("currentRevision"):
            return "rolling", f"{_int(status.get('updatedReplicas'))} pods at the new revision"
        return "done", f"{ready} pods at the new revision"
    # DaemonSet
    if generation > observed:
        return "rolling", "waiting for the daemon set spec update to be observed"
    desired = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    if updated < desired:
        return "rolling", f"{updated} of {desired} updated pods scheduled"
    available = _int(status.get("numberAvailable"))
    if available < desired:
        return "rolling", f"{available} of {desired} updated pods available"
    return "done", f"{desired} pods updated and available"


class KubernetesReload:
    """The ``kubernetes`` reload target of one policy. Thread-safe; :meth:`close` releases a client it created."""

    type = "kubernetes"
    capabilities = ReloadCapabilities(observable=True, rollout=True)

    def __init__(self, config: ReloadConfig, context: ReloadContext, api_client: Any, *, owns_client: bool) -> None:
        self.config = config
        self._clock = context.clock or (lambda: datetime.now(UTC))
        self._owns = owns_client
        self._list_api = KubeApi(api_client, timeout=config.timeout, max_body=MAX_LIST)
        self._api = KubeApi(api_client, timeout=config.timeout, max_body=MAX_OBJECT)
        ns = quote(config.namespace, safe="")
        self._resource = RESOURCE[config.kind]
        self._path = f"/apis/apps/v1/namespaces/{ns}/{self._resource}"
        where = f"{config.namespace}/{config.kind}"
        self.name = f"kubernetes:{where}" + (f"[{config.selector}]" if config.selector else "")
        self._synced: KubernetesCheck | None = None
        for check in context.pickup:
            if isinstance(check, PickupConfig) and check.namespace == config.namespace and check.secret is not None:
                only_secret = check.model_copy(update={"pods": None})
                self._synced = KubernetesCheck(only_secret, api_client, owns_client=False)
                break

    # -- observe -----------------------------------------------------------------------------------------

    def observe(self, key_id: str, published_at: datetime) -> list[ReloadStatus]:
        workloads, problem = self._workloads()
        if problem is not None:
            unit = ",".join(self.config.names) if self.config.names else f"selector:{self.config.selector}"
            return [self._status(unit, key_id, "unknown", detail=problem)]
        waiting: str | None = None
        if self._synced is not None and any(
            self._reloaded_for(obj, key_id, published_at) is None for obj in workloads.values() if obj is not None
        ):
            verdict = self._synced.check("", key_id, published_at)
            if not verdict.ok:
                waiting = f"the synced Secret does not hold key {key_id} yet: {verdict.detail}"
        out: list[ReloadStatus] = []
        for name, obj in workloads.items():
            if obj is None:
                out.append(self._status(name, key_id, "unknown", detail=f"{self.config.kind} not found"))
                continue
            since = self._reloaded_for(obj, key_id, published_at)
            if since is None:
                if waiting is not None:
                    out.append(self._status(name, key_id, "waiting", detail=waiting))
                else:
                    out.append(self._status(name, key_id, "pending"))
                continue
            state, detail = rollout_status(self.config.kind, obj)
            out.append(self._status(name, key_id, state, since if isinstance(since, datetime) else None, detail))
        return out

    def _status(
        self, unit: str, key_id: str, state: Any, since: datetime | None = None, detail: str = ""
    ) -> ReloadStatus:
        return ReloadStatus(self.name, unit, self.type, key_id, state, since, detail)

    def _reloaded_for(self, obj: dict[str, Any], key_id: str, published_at: datetime) -> datetime | bool | None:
        """When the workload was restarted for ``key_id`` (``True``: it was, at an unknown time), or None.

        A restart by someone else after the publication counts too, unless a synced Secret is configured:
        then only rotator's own restart does, which waited for the sync (another may have come before it)."""
        annotations = _get(obj, "spec", "template", "metadata", "annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        restarted = _time(annotations.get(RESTARTED_AT_ANNOTATION))
        if annotations.get(KEY_ID_ANNOTATION) == key_id:
            return restarted if restarted is not None else True
        # restarted since the key was published (kubectl rollout restart, Reloader): its new pods read it too.
        # restartedAt has whole seconds: a restart in the second of the publication does not count
        if self._synced is None and restarted is not None and restarted > published_at.replace(microsecond=0):
            return restarted
        return None

    def _workloads(self) -> tuple[dict[str, dict[str, Any] | None], str | None]:
        """name -> the workload object (None: not found), or why they could not be read."""
        out: dict[str, dict[str, Any] | None] = {}
        if self.config.names is not None:
            for name in self.config.names:
                problem, obj = self._call("get-" + self._resource[:-1], "get", lambda n=name: self._get_one(n))
                if problem == "not found":
                    out[name] = None
                elif problem is not None:
                    return {}, problem
                else:
                    out[name] = obj
            return out, None
        token: str | None = None
        for _ in range(MAX_PAGES):
            query: dict[str, str | int] = {"labelSelector": self.config.selector or "", "limit": PAGE_SIZE}
            if token:
                query["continue"] = token
            problem, page = self._call(
                "list-" + self._resource, "list", lambda q=query: self._list_api.request("GET", self._path, query=q)
            )
            if problem is not None:
                return {}, problem
            for item in page.get("items") or ():
                name = _get(item, "metadata", "name")
                if isinstance(name, str):
                    out[name] = item
            token = _get(page, "metadata", "continue")
            if not isinstance(token, str) or not token:
                break
        if not out:
            ns = self.config.namespace
            return {}, f"no {self.config.kind} matches selector {self.config.selector} in namespace {ns}"
        return out, None

    def _get_one(self, name: str) -> dict[str, Any]:
        return self._api.request("GET", f"{self._path}/{quote(name, safe='')}")

    # -- reload ------------------------------------------------------------------------------------------

    def reload(self, unit: str, key_id: str, expires_at: datetime | None, published_at: datetime) -> None:
        """Patch the pod template's annotations (compare-and-set on the resourceVersion just read)."""
        problem, obj = self._call("get-" + self._resource[:-1], "get", lambda: self._get_one(unit))
        if problem is not None:
            raise ReloadError(f"cannot read {self.config.kind} {unit}: {problem}", target=self.name, unit=unit)
        rv = _get(obj, "metadata", "resourceVersion")
        patch = {
            "metadata": {"resourceVersion": rv},
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {RESTARTED_AT_ANNOTATION: _iso(self._clock()), KEY_ID_ANNOTATION: key_id}
                    }
                }
            },
        }
        problem, _ = self._call(
            "patch-" + self._resource[:-1],
            "patch",
            lambda: self._api.request(
                "PATCH", f"{self._path}/{quote(unit, safe='')}", body=patch, content_type="application/merge-patch+json"
            ),
        )
        if problem == "conflict":
            raise ReloadConflict(f"{self.config.kind} {unit} changed since it was read", target=self.name, unit=unit)
        if problem is not None:
            raise ReloadError(f"cannot restart {self.config.kind} {unit}: {problem}", target=self.name, unit=unit)
        log.info("rollout restart", reload=f"{self.name}/{unit}", key_id=key_id)

    # -- plumbing ----------------------------------------------------------------------------------------

    def _call(self, op: str, verb: str, fn: Any) -> tuple[str | None, Any]:
        """One API request: ``(None, result)`` or ``(why it failed, None)``, recorded once either way."""
        forbidden = f"{verb} {self._resource}.apps in namespace {self.config.namespace}"
        return kube.call(
            SERVICE,
            op,
            fn,
            timeout=self.config.timeout,
            explain=lambda e: kube.explain(e.status, e.reason, forbidden=forbidden, rbac_hint=RBAC_HINT),
        )

    def close(self) -> None:
        if self._owns:
            self._api.close()


def open_target(config: BaseModel, context: ReloadContext) -> KubernetesReload:
    """A :class:`KubernetesReload` through ``context.injected["api_client"]`` (tests inject one) or a client
    from the in-cluster service account or kubeconfig. Raises MissingExtraError, ReloadError."""
    cfg = config if isinstance(config, ReloadConfig) else ReloadConfig.model_validate(config.model_dump())
    try:
        import kubernetes  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("k8s", exc.name or "kubernetes") from exc
    api_client = context.injected.get("api_client")
    if api_client is not None:
        return KubernetesReload(cfg, context, api_client, owns_client=False)
    client = load_api_client(
        in_cluster=cfg.in_cluster,
        kubeconfig=cfg.kubeconfig,
        context=cfg.context,
        what="reload kubernetes",
        error=lambda m: ReloadError(m),
    )
    return KubernetesReload(cfg, context, client, owns_client=True)
