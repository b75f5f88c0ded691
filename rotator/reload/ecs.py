"""The ``ecs`` reload target: a new deployment of Amazon ECS services (extra ``momento-rotator[aws]``).

``reload: [{type: ecs, cluster: prod, services: [checkout, billing]}]``. Each service is one unit. A task reads
its secrets (the task definition's ``secrets[].valueFrom``) when it starts, so the running tasks keep the old
key until they are replaced.

**Restart**: ``UpdateService(cluster, service, forceNewDeployment=True)``, what ``aws ecs update-service
--force-new-deployment`` does: ECS starts a new ``PRIMARY`` deployment of the same task definition and drains
the old one (now ``ACTIVE``) by the service's deployment configuration. Nothing else on the service changes.

**Observed state** (no memory of rotator's own), from one ``DescribeServices`` per 10 services: the service's
``PRIMARY`` deployment (the Deployment data type: "PRIMARY: the most recent deployment of a service; ACTIVE: a
service deployment that still has running tasks, but are in the process of being replaced with a new PRIMARY
deployment"):

- created before the key was published: ``pending`` (its tasks may have read the old key);
- created at or after it: reloaded for the key (whoever started it: every task it starts reads the new key);
  then ``failed`` when its ``rolloutState`` is ``FAILED`` (the circuit breaker stopped it), ``rolling`` while
  an older deployment is still listed, ``rolloutState`` is ``IN_PROGRESS`` or fewer tasks run than desired,
  ``done`` when it is the only deployment and its ``rolloutState`` is ``COMPLETED`` (services behind a Classic
  Load Balancer report no ``rolloutState``: then when ``runningCount == desiredCount``). ``since`` is the
  deployment's ``createdAt``.

A service that is missing, ``DRAINING`` or ``INACTIVE``, or whose deployments ECS does not control
(``CODE_DEPLOY``, ``EXTERNAL``: ``forceNewDeployment`` is an ECS rolling-update feature), is ``unknown`` with the
reason; a refused or failed ``DescribeServices`` makes every unit it covered ``unknown`` with the permission to
grant. ``observe`` never raises.

**Idempotence**: the deployment's ``createdAt`` is the evidence; no tag is written. A pass killed right after
``UpdateService`` leaves a deployment created after the key was published, so the next pass observes
``rolling``/``done`` and starts nothing. A tag would be a second write that is not atomic with the deployment
(a pass killed between the two leaves a restarted service without it, or a tag without a restart) and would
need ``ecs:TagResource`` too. ECS has no conditional ``UpdateService``, so :meth:`EcsReload.reload` first
describes the service again and refuses (:class:`rotator.errors.ReloadConflict`) when its ``PRIMARY``
deployment is no longer the one :meth:`EcsReload.observe` saw (another pass, or a person, deployed since). Two
passes that observe the same deployment and update within the same few milliseconds can still both deploy:
the cost is one extra rolling restart, never a missed one.

IAM: ``ecs:DescribeServices`` and ``ecs:UpdateService`` on the service ARNs
(``arn:aws:ecs:<region>:<account>:service/<cluster>/<service>``). Calls: ``ceil(services / 10)`` per observe, two
per reload. Every HTTP attempt goes through :func:`rotator.botohttp.bound` (a total deadline of ``timeout``
seconds, an answer of at most ``MAX_ANSWER`` bytes) and is counted by :func:`rotator.observability.record_call`
(service ``ecs``); botocore's ``adaptive`` retry mode retries throttling, 5xx and dropped connections.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator.errors import MissingExtraError, ReloadConflict, ReloadError, RotatorError
from rotator.model import ReloadState, ReloadStatus
from rotator.observability import get_logger
from rotator.pickup.base import Timeout
from rotator.redaction import redact_text
from rotator.reload.base import ReloadCapabilities, ReloadContext

SERVICE = "ecs"
#: services per DescribeServices request (the API's limit)
BATCH = 10
#: bytes of answer read at most: ten services with their last 100 events and deployments are a few hundred KiB
MAX_ANSWER = 8 * 1024 * 1024
#: HTTP attempts per call, the first included (botocore adaptive retry mode)
MAX_ATTEMPTS = 5
#: connections kept open to the endpoint: as many as ``reload_max_parallel`` may start at once
POOL_CONNECTIONS = 100

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}\Z")
_REGION_RE = re.compile(r"^[a-z]{2,}(-[a-z]+)+-\d{1,2}\Z")
_CLUSTER_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:ecs:(?P<region>[a-z0-9-]+):\d{12}:cluster/(?P<name>[A-Za-z0-9_-]{1,255})\Z"
)
_SERVICE_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:ecs:(?P<region>[a-z0-9-]+):\d{12}:service/(?:(?P<cluster>[A-Za-z0-9_-]{1,255})/)?"
    r"(?P<name>[A-Za-z0-9_-]{1,255})\Z"
)
_NAMING = "up to 255 letters, digits, hyphens and underscores"

log = get_logger()


def _shown(value: str) -> str:
    return repr(value[:80] + ("..." if len(value) > 80 else ""))


class ReloadConfig(BaseModel):
    """``{type: ecs, cluster, services: [...], region, endpoint_url, timeout}``.

    ``cluster`` and each of ``services`` is a name or an ARN; a service ARN of the long format names its cluster,
    which must be ``cluster``. ``region`` defaults to an ARN's region, then to boto3's chain (``AWS_REGION``);
    ``endpoint_url`` points at a VPC endpoint or a test server; ``timeout``: seconds one HTTP attempt may take.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["ecs"]
    cluster: str
    services: list[str] = Field(min_length=1)
    region: str | None = None
    endpoint_url: str | None = None
    timeout: Timeout = 10.0

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, v: str) -> str:
        if not (_NAME_RE.fullmatch(v) or _CLUSTER_ARN_RE.fullmatch(v)):
            raise ValueError(
                f"{_shown(v)} is not an ECS cluster name ({_NAMING}) or cluster ARN "
                "(arn:aws:ecs:<region>:<12-digit account>:cluster/<name>)"
            )
        return v

    @field_validator("services")
    @classmethod
    def _services(cls, v: list[str]) -> list[str]:
        for s in v:
            if not (_NAME_RE.fullmatch(s) or _SERVICE_ARN_RE.fullmatch(s)):
                raise ValueError(
                    f"{_shown(s)} is not an ECS service name ({_NAMING}) or service ARN "
                    "(arn:aws:ecs:<region>:<12-digit account>:service/<cluster>/<name>)"
                )
        names = [service_name(s) for s in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"names service {', '.join(twice)} twice")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not _REGION_RE.fullmatch(v):
            raise ValueError(f"{_shown(v)} is not an AWS region name (like 'us-west-2' or 'eu-central-1')")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ReloadConfig:
        cluster = cluster_name(self.cluster)
        regions = {r for r in (_arn_region(self.cluster), *(_arn_region(s) for s in self.services)) if r}
        if self.region is not None and regions - {self.region}:
            raise ValueError(f"region {self.region!r} contradicts the ARNs, which are in {', '.join(sorted(regions))}")
        if len(regions) > 1:
            raise ValueError(f"the ARNs name several regions ({', '.join(sorted(regions))}): use one target per region")
        for s in self.services:
            m = _SERVICE_ARN_RE.fullmatch(s)
            if m and m.group("cluster") and m.group("cluster") != cluster:
                raise ValueError(f"service ARN {s} is in cluster {m.group('cluster')!r}, not {cluster!r}")
        return self

    @property
    def client_region(self) -> str | None:
        """The region to call: ``region``, else the one the ARNs name, else None (boto3's chain decides)."""
        if self.region is not None:
            return self.region
        return next((r for r in (_arn_region(self.cluster), *(_arn_region(s) for s in self.services)) if r), None)


def cluster_name(cluster: str) -> str:
    """The name of a cluster given by name or ARN."""
    m = _CLUSTER_ARN_RE.fullmatch(cluster)
    return m.group("name") if m else cluster


def service_name(service: str) -> str:
    """The name of a service given by name or ARN (a service ARN's last path segment)."""
    m = _SERVICE_ARN_RE.fullmatch(service)
    return m.group("name") if m else service


def _arn_region(value: str) -> str | None:
    m = _CLUSTER_ARN_RE.fullmatch(value) or _SERVICE_ARN_RE.fullmatch(value)
    return m.group("region") if m else None


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def primary_deployment(service: dict[str, Any]) -> dict[str, Any] | None:
    """The service's ``PRIMARY`` deployment, or None."""
    for d in service.get("deployments") or ():
        if isinstance(d, dict) and d.get("status") == "PRIMARY":
            return d
    return None


def rollout_state(service: dict[str, Any], published_at: datetime) -> tuple[ReloadState, datetime | None, str]:
    """(state, since, detail) of one ACTIVE service with respect to a key published at ``published_at``."""
    controller = (service.get("deploymentController") or {}).get("type") or "ECS"
    if controller != "ECS":
        return (
            "unknown",
            None,
            f"the service's deployment controller is {controller}: rotator restarts services of the rolling update "
            "(ECS) deployment type only; restart it through its controller",
        )
    primary = primary_deployment(service)
    created = _utc(primary.get("createdAt")) if primary is not None else None
    if primary is None or created is None:
        return "unknown", None, "ECS lists no PRIMARY deployment with a creation time"
    dep_id = str(primary.get("id") or "?")
    if created < published_at:
        return "pending", None, f"deployment {dep_id} started {_iso(created)}, before the key was published"
    deployments = [d for d in service.get("deployments") or () if isinstance(d, dict)]
    rollout = primary.get("rolloutState")
    running, desired = _int(primary.get("runningCount")), _int(primary.get("desiredCount"))
    if rollout == "FAILED":
        reason = redact_text(str(primary.get("rolloutStateReason") or ""))[:200]
        return "failed", created, f"deployment {dep_id} failed" + (f": {reason}" if reason else "")
    older = len(deployments) - 1
    tasks = f"deployment {dep_id}: {running} of {desired} tasks running"
    if older > 0:
        return "rolling", created, f"{tasks}; {older} older deployment(s) draining"
    if rollout == "IN_PROGRESS" or running < desired:
        return "rolling", created, tasks
    if rollout == "COMPLETED" or (rollout is None and running == desired):
        return "done", created, tasks
    return "rolling", created, tasks + (f" (rolloutState {rollout})" if rollout else "")


class _ServiceError(Exception):
    """A ClientError from ECS, unwrapped (internal: always translated before leaving the target)."""

    def __init__(self, code: str, message: str, status: int | None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.status = status


_DENIED = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "IncompleteSignature",
}


class EcsReload:
    """The ``ecs`` reload target of one policy. Thread-safe (boto3 clients are; the rest is under a lock)."""

    type = "ecs"
    capabilities = ReloadCapabilities(observable=True, rollout=True)

    def __init__(self, config: ReloadConfig, context: ReloadContext) -> None:
        self.config = config
        self.cluster = cluster_name(config.cluster)
        self.name = f"ecs:{self.cluster}"
        #: unit (service name) -> the name or ARN the config gave, sent as it is
        self._refs = {service_name(s): s for s in config.services}
        self._session = context.injected.get("session")
        self._endpoint = config.endpoint_url or context.injected.get("endpoint_url")
        self._region = config.client_region
        self._lock = threading.Lock()
        self._client: Any = None
        self._send: Any = None
        #: unit -> the PRIMARY deployment id the last observe saw (a cache for compare-and-set, never state)
        self._seen: dict[str, str] = {}

    # -- observe -----------------------------------------------------------------------------------------

    def observe(self, key_id: str, published_at: datetime) -> list[ReloadStatus]:
        published_at = _utc(published_at) or published_at
        units = list(self._refs)
        out: list[ReloadStatus] = []
        for batch in _chunks(units, BATCH):
            try:
                services, missing = self._describe(batch)
            except (_ServiceError, RotatorError) as exc:
                detail = self._explain(exc, "DescribeServices", batch)
                out.extend(self._status(u, key_id, "unknown", detail=detail) for u in batch)
                continue
            for unit in batch:
                svc = services.get(unit)
                if svc is None:
                    reason = missing.get(unit, "MISSING")
                    detail = f"service {unit} not found in cluster {self.cluster} ({reason})"
                    out.append(self._status(unit, key_id, "unknown", detail=detail))
                    continue
                status = svc.get("status")
                if status != "ACTIVE":
                    detail = f"service {unit} is {status} (deleted or being deleted): nothing to restart"
                    out.append(self._status(unit, key_id, "unknown", detail=detail))
                    continue
                primary = primary_deployment(svc)
                if primary is not None and primary.get("id"):
                    with self._lock:
                        self._seen[unit] = str(primary["id"])
                state, since, detail = rollout_state(svc, published_at)
                out.append(self._status(unit, key_id, state, since, detail))
        return out

    def _status(
        self, unit: str, key_id: str, state: ReloadState, since: datetime | None = None, detail: str = ""
    ) -> ReloadStatus:
        return ReloadStatus(self.name, unit, self.type, key_id, state, since, detail)

    def _describe(self, units: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(unit -> service, unit -> failure reason) from one DescribeServices."""
        resp = self._call("describe_services", cluster=self.config.cluster, services=[self._refs[u] for u in units])
        services: dict[str, dict[str, Any]] = {}
        for svc in resp.get("services") or ():
            if isinstance(svc, dict) and isinstance(svc.get("serviceName"), str):
                services[svc["serviceName"]] = svc
        missing: dict[str, str] = {}
        for f in resp.get("failures") or ():
            if isinstance(f, dict) and isinstance(f.get("arn"), str):
                missing[f["arn"].rsplit("/", 1)[-1]] = str(f.get("reason") or "MISSING")
        return services, missing

    # -- reload ------------------------------------------------------------------------------------------

    def reload(self, unit: str, key_id: str, expires_at: datetime | None, published_at: datetime) -> None:
        """Start a new deployment of service ``unit`` (``forceNewDeployment``), unless its PRIMARY deployment
        changed since :meth:`observe` saw it (ReloadConflict). Raises ReloadError naming the permission."""
        if unit not in self._refs:
            raise ReloadError("not a service of this reload target", target=self.name, unit=unit)
        published_at = _utc(published_at) or published_at
        try:
            services, missing = self._describe([unit])
        except (_ServiceError, RotatorError) as exc:
            raise ReloadError(self._explain(exc, "DescribeServices", [unit]), target=self.name, unit=unit) from exc
        svc = services.get(unit)
        if svc is None or svc.get("status") != "ACTIVE":
            why = missing.get(unit, "MISSING") if svc is None else str(svc.get("status"))
            raise ReloadError(
                f"service not found or not active in cluster {self.cluster} ({why})", target=self.name, unit=unit
            )
        primary = primary_deployment(svc)
        current = str(primary.get("id")) if primary is not None and primary.get("id") else None
        with self._lock:
            seen = self._seen.get(unit)
        if seen is not None and current != seen:
            raise ReloadConflict(
                f"the service's PRIMARY deployment changed since it was observed ({seen} -> {current})",
                target=self.name,
                unit=unit,
            )
        if seen is None:
            state, _, _ = rollout_state(svc, published_at)
            if state in ("rolling", "done"):
                raise ReloadConflict(
                    f"deployment {current} was started after the key was published: not restarting again",
                    target=self.name,
                    unit=unit,
                )
        try:
            resp = self._call(
                "update_service", cluster=self.config.cluster, service=self._refs[unit], forceNewDeployment=True
            )
        except (_ServiceError, RotatorError) as exc:
            raise ReloadError(self._explain(exc, "UpdateService", [unit]), target=self.name, unit=unit) from exc
        new = primary_deployment(resp.get("service") or {})
        new_id = str(new.get("id")) if new is not None and new.get("id") else None
        with self._lock:
            if new_id is not None:
                self._seen[unit] = new_id
            else:
                self._seen.pop(unit, None)
        log.info("ecs new deployment", reload=f"{self.name}/{unit}", key_id=key_id, deployment=new_id)

    # -- plumbing ----------------------------------------------------------------------------------------

    def _service_arn(self, unit: str) -> str:
        ref = self._refs[unit]
        if ref.startswith("arn:"):
            return ref
        region = self._region or "<region>"
        return f"arn:aws:ecs:{region}:<account>:service/{self.cluster}/{unit}"

    def _explain(self, exc: BaseException, operation: str, units: list[str]) -> str:
        """Why a call failed, for a status detail or a ReloadError: the permission to grant, never a value."""
        if not isinstance(exc, _ServiceError):
            return str(exc)
        message = redact_text(exc.message)[:300]
        if exc.code in _DENIED:
            arns = ", ".join(self._service_arn(u) for u in units)
            return f"access denied ({exc.code}): grant ecs:{operation} on {arns}; AWS said: {message}"
        if exc.code == "ClusterNotFoundException":
            return f"cluster {self.cluster} not found ({operation}: {message})"
        if exc.code == "ServiceNotFoundException":
            return f"service not found in cluster {self.cluster} ({operation}: {message})"
        if exc.code == "ServiceNotActiveException":
            return f"the service is not active ({operation}: {message})"
        if exc.code in {"ThrottlingException", "ServerException"} or (exc.status or 0) >= 500 or exc.status == 429:
            return f"ECS {operation} kept failing after retries ({exc.code})"
        return f"ECS {operation} failed ({exc.code}): {message}"

    def _ecs(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from rotator import botohttp  # imports botocore: installed whenever a client is made
                except ImportError as exc:
                    raise MissingExtraError("aws", "boto3") from exc
                self._client, self._send = botohttp.client(
                    "ecs",
                    session=self._session,
                    region=self._region,
                    endpoint=self._endpoint,
                    config=botohttp.retry_config(MAX_ATTEMPTS, POOL_CONNECTIONS),
                    timeout=self.config.timeout,
                    max_body=MAX_ANSWER,
                    record_as=SERVICE,
                )
            return self._client

    def _call(self, op: str, **params: Any) -> dict[str, Any]:
        """One ECS call. Raises _ServiceError for an answered error, ReloadError for everything else."""
        try:
            from botocore import exceptions as bex
        except ImportError as exc:
            raise MissingExtraError("aws", "boto3") from exc
        operation = "".join(p.capitalize() for p in op.split("_"))
        try:
            result: dict[str, Any] = getattr(self._ecs(), op)(**params)
            return result
        except bex.ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise _ServiceError(str(err.get("Code", "Unknown")), str(err.get("Message", "")), status) from exc
        except bex.NoCredentialsError as exc:
            raise ReloadError(
                f"no AWS credentials found for ecs:{operation} (set a profile, environment credentials or an "
                "instance/task/Lambda role)"
            ) from exc
        except bex.NoRegionError as exc:
            raise ReloadError("no AWS region: set 'region' on the ecs reload target, or AWS_REGION") from exc
        except bex.ParamValidationError:
            raise ReloadError(f"ECS {operation} request rejected by parameter validation") from None
        except bex.BotoCoreError as exc:
            raise ReloadError(f"ECS {operation} failed after retries: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the HTTP connection pools. Idempotent."""
        with self._lock:
            client, send, self._client, self._send = self._client, self._send, None, None
        if client is not None:
            client.close()
        if send is not None:
            send.close()



def open_target(config: BaseModel, context: ReloadContext) -> EcsReload:
    """An :class:`EcsReload`; the boto3 client is made at the first call (``context.injected``: ``session``, a
    ``boto3.session.Session``; ``endpoint_url``, used when the config names none). Raises MissingExtraError
    without boto3."""
    cfg = config if isinstance(config, ReloadConfig) else ReloadConfig.model_validate(config.model_dump())
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("aws", "boto3") from exc
    return EcsReload(cfg, context)
