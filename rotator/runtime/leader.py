"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics, for ``rotator run``.

With ``leader_election: {enabled: true}`` several replicas of the daemon (a Deployment with ``replicas: 2``)
share one Lease; the replica holding it runs passes, the others stand by. The Lease is the whole protocol:

- **acquire**: ``GET`` the Lease; ``POST`` it when there is none (409 ``AlreadyExists``: another replica won).
  A Lease whose ``holderIdentity`` is another's is taken only when it has not changed for its
  ``leaseDurationSeconds``, measured on *this* process's monotonic clock from the moment this process last saw
  it change (client-go's ``observedTime``): the ``renewTime`` written in it is for people (``kubectl get
  lease``), never compared across machines, so clock skew between nodes does not matter. An empty holder
  (a released Lease) is taken at once.
- **renew**: the holder writes ``renewTime`` every ``retry_period`` with a ``PUT`` that carries the
  ``metadata.resourceVersion`` it read: the API server's optimistic concurrency turns two writers into one
  winner and one 409 ``Conflict`` (then this process reads the Lease again at its next try).
- **lose**: leadership ends ``renew_deadline`` after the start of the last successful write, whether or not
  the thread doing the renewing is stuck (:meth:`LeaseElector.is_leader` is computed from the clock). Since
  ``renew_deadline < lease_duration``, the leader gives up at least ``lease_duration - renew_deadline``
  before another replica may take over; that gap is the margin for the action in flight. A holder that finds
  the Lease held by another (it was paused past the deadline, and someone took over) steps down at once.
- **release**: on a clean stop the holder writes an empty ``holderIdentity`` (``leaseDurationSeconds: 1``), so a
  standby takes over at its next try instead of after ``lease_duration``.

Fields written: ``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime`` (kept while the same holder
renews), ``renewTime``, ``leaseTransitions`` (+1 whenever the holder changes). Times are ``MicroTime``: RFC 3339
with exactly six fractional digits, which the API server requires (see :func:`lease_time`).

The API is reached through the ``kubernetes`` client library (extra ``momento-rotator[k8s]``), with the credentials of
:func:`rotator.kube.load_api_client` (the in-cluster service account, or a kubeconfig), and each request
is bounded by :class:`rotator.kube.KubeApi`: a total deadline of half the ``renew_deadline`` (at least 0.5 s)
and an answer of at most 64 KiB.
Requests are recorded with ``record_call("kubernetes", "get-lease" | "create-lease" | "update-lease", status)``.
Nothing here raises for an API failure: an election that cannot reach the API server just does not lead.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from rotator import httpio
from rotator.config import LeaderElectionConfig
from rotator.errors import ConfigError, ConfigIssue, MissingExtraError
from rotator.observability import get_logger, record_call

log = get_logger()

SERVICE = "kubernetes"
RBAC_HINT = "deploy/kubernetes/components/leader-election"
#: a Lease is a few hundred bytes; an answer larger than this is not one
MAX_BODY = 64 * 1024


def lease_time(t: datetime) -> datetime:
    """``t`` as a Lease time: UTC, and never on a whole second.

    ``acquireTime``/``renewTime`` are ``MicroTime``, which the API server parses with exactly six fractional
    digits. The client library turns the time into text with ``datetime.isoformat()``, which leaves the
    fraction out when the microseconds are 0: such a write would be refused (400), once in a million writes.
    Moving those times by one microsecond keeps every write valid.
    """
    t = t.astimezone(UTC)
    return t.replace(microsecond=1) if t.microsecond == 0 else t


def parse_lease_time(value: Any) -> datetime | None:
    """A ``MicroTime`` as read back (text, or a datetime from an older client), or None."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return None


def default_identity() -> str:
    """This process's candidate name: the pod name (``HOSTNAME``) and a random suffix, like client-go's
    ``hostname_uuid``, so a restarted container never mistakes its predecessor's Lease for its own."""
    host = os.environ.get("HOSTNAME") or socket.gethostname() or "rotator"
    return f"{host}_{secrets.token_hex(4)}"


class LeaseConflict(Exception):
    """409: the Lease changed since it was read (``Conflict``) or was created meanwhile (``AlreadyExists``);
    or 404 on an update: it was deleted since it was read."""


class LeaseApiFailure(Exception):
    """Any other answer, or none: ``why`` says which (a status and a permission hint, or an error class)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class LeaseClient:
    """``GET``/``POST``/``PUT`` of one Lease as plain JSON objects, through a ``kubernetes.client.ApiClient``'s
    credentials and connection pool, each request bounded by :class:`rotator.kube.KubeApi` (``timeout``
    seconds in total, an answer of at most :data:`MAX_BODY` bytes).

    Raises: LeaseConflict (409), LeaseApiFailure (anything else but success and, for :meth:`get`, 404).
    """

    def __init__(self, api_client: Any, namespace: str, name: str, *, timeout: float) -> None:
        from rotator.kube import KubeApi

        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self._api = KubeApi(api_client, timeout=timeout, max_body=MAX_BODY)
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"
        self._path = f"{self._collection}/{quote(name, safe='')}"

    def get(self) -> dict[str, Any] | None:
        """The Lease, or None when there is none."""
        try:
            return self._call("get-lease", "get", lambda: self._api.request("GET", self._path))
        except _NotFound:
            return None

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        return self._call("create-lease", "create", lambda: self._api.request("POST", self._collection, body=body))

    def replace(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """``PUT`` ``lease`` (as read: its ``metadata.resourceVersion`` is the precondition) with ``spec``."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": dict(lease.get("metadata") or {}),
            "spec": spec,
        }
        return self._call("update-lease", "update", lambda: self._api.request("PUT", self._path, body=body))

    def _call(self, op: str, verb: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        import urllib3

        from rotator.kube import KubeStatus

        try:
            data = fn()
        except KubeStatus as exc:
            record_call(SERVICE, op, exc.status)
            if exc.status == 404 and verb == "get":
                raise _NotFound from None
            if exc.status == 409 or (exc.status == 404 and verb == "update"):
                raise LeaseConflict(op) from None  # changed, or deleted, since it was read: read it again
            raise LeaseApiFailure(self._explain(exc.status, verb)) from None
        except httpio.DeadlineExceeded:
            record_call(SERVICE, op, "DeadlineExceeded")
            raise LeaseApiFailure(f"no answer within {self.timeout:g}s") from None
        except httpio.BodyTooLarge as exc:
            record_call(SERVICE, op, "BodyTooLarge")
            raise LeaseApiFailure(f"unreadable answer: {exc}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            record_call(SERVICE, op, type(exc).__name__)
            raise LeaseApiFailure(f"unreachable: {type(exc).__name__}") from None
        except ValueError as exc:
            record_call(SERVICE, op, type(exc).__name__)
            raise LeaseApiFailure(f"unreadable answer: {type(exc).__name__}") from None
        record_call(SERVICE, op, 200)
        return data

    def _explain(self, status: int, verb: str) -> str:
        ns = self.namespace
        if status == 403:
            return f"forbidden: {verb} leases.coordination.k8s.io in namespace {ns} is not granted (see {RBAC_HINT})"
        if status == 401:
            return "unauthorized: the API server rejected rotator's credentials"
        if status == 404:
            return f"not found: no namespace {ns}?"
        if status == 0:
            return "unreachable: no HTTP answer"
        return f"status {status}"

    def close(self) -> None:
        self._api.close()


class _NotFound(Exception):
    pass


@dataclass(frozen=True)
class LeaderState:
    """What :meth:`LeaseElector.state` reports (for /healthz and logs)."""

    leader: bool
    identity: str
    #: the holder this process last saw in the Lease ("" for none or released; None before the first read)
    holder: str | None


class LeaseElector:
    """Campaigns for one Lease in a background thread (:meth:`start`) and keeps it while it can.

    ``on_change(leader)`` is called from that thread whenever leadership starts or ends (including at the
    deadline when a renewal is stuck). :meth:`try_acquire_or_renew` is one attempt, usable without the thread.
    Thread-safe. Times: ``lease_duration``, ``renew_deadline``, ``retry_period`` in seconds; ``monotonic`` measures
    every interval, ``wall`` only stamps ``acquireTime``/``renewTime``.
    """

    def __init__(
        self,
        client: LeaseClient,
        *,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_change: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        self.client = client
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_change = on_change
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.RLock()
        self._attempt = threading.Lock()  # one try (or release) at a time
        #: the Lease as last read or written, and (monotonic) when its spec was last seen to change
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        #: (monotonic) start of the last successful acquire or renew while leading; None: not leading
        self._renewed_at: float | None = None
        self._announced = False  # what on_change was last told
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_problem: str | None = None

    # -- state --------------------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True while the last successful write of the Lease started less than ``renew_deadline`` ago."""
        with self._lock:
            return self._renewed_at is not None and self._monotonic() - self._renewed_at < self.renew_deadline

    def state(self) -> LeaderState:
        with self._lock:
            holder = None if self._observed is None else _spec(self._observed).get("holderIdentity") or ""
            return LeaderState(self.is_leader(), self.identity, holder)

    def _lead_until(self) -> float | None:
        with self._lock:
            return None if self._renewed_at is None else self._renewed_at + self.renew_deadline

    # -- one attempt --------------------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's ``tryAcquireOrRenew``): True when this process holds the Lease now.

        Never raises for the API: a failure is logged (once per kind) and is False.
        """
        with self._attempt:
            started = self._monotonic()
            try:
                ok = self._attempt_once()
            except LeaseConflict:
                log.debug("lease changed meanwhile", lease=self.client.name, identity=self.identity)
                ok = False
            except LeaseApiFailure as exc:
                if exc.why != self._last_problem:
                    log.warning(
                        "leader election: the Lease could not be read or written",
                        lease=f"{self.client.namespace}/{self.client.name}",
                        why=exc.why,
                    )
                self._last_problem = exc.why
                ok = False
            else:
                self._last_problem = None
            with self._lock:
                if ok:
                    self._renewed_at = started
            return ok

    def _attempt_once(self) -> bool:
        now = lease_time(self._wall())
        with self._lock:
            observed = self._observed
            leading = self.is_leader()
        # fast path, as client-go: the holder renews with the Lease it wrote last, no GET first
        if leading and observed is not None:
            try:
                spec = self._renewed_spec(_spec(observed), now)
                self._observe(self.client.replace(observed, spec))
                return True
            except LeaseConflict:
                pass  # someone else wrote it: read it and decide below
        lease = self.client.get()
        if lease is None:
            spec = self._fresh_spec(now, transitions=0)
            self._observe(self.client.create(spec))
            log.info("leader election: created the Lease", lease=self.client.name, identity=self.identity)
            return True
        self._observe(lease)
        spec = _spec(lease)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            with self._lock:
                self._renewed_at = None  # held by another: whatever this process thought, it does not lead
                duration = _int(spec.get("leaseDurationSeconds"), default=int(self.lease_duration))
                if self._monotonic() < self._observed_at + duration:
                    return False
            log.info("leader election: taking over an expired Lease", lease=self.client.name, previous=holder)
        if holder == self.identity:
            new_spec = self._renewed_spec(spec, now)
        else:
            new_spec = self._fresh_spec(now, transitions=_int(spec.get("leaseTransitions"), default=0) + 1)
        self._observe(self.client.replace(lease, new_spec))
        return True

    def _fresh_spec(self, now: datetime, *, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _renewed_spec(self, spec: dict[str, Any], now: datetime) -> dict[str, Any]:
        acquired = parse_lease_time(spec.get("acquireTime"))
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": lease_time(acquired) if acquired is not None else now,
            "renewTime": now,
            "leaseTransitions": _int(spec.get("leaseTransitions"), default=0),
        }

    def _observe(self, lease: dict[str, Any]) -> None:
        with self._lock:
            if self._observed is None or _spec(self._observed) != _spec(lease):
                self._observed_at = self._monotonic()
            self._observed = lease

    # -- release ------------------------------------------------------------------------------------------

    def release(self) -> bool:
        """Give the Lease up (client-go's ``release``): an empty holder, so a standby takes it at once.

        Only while leading; True when the release was written. Leadership ends here either way.
        """
        with self._attempt:
            with self._lock:
                observed, leading = self._observed, self.is_leader()
                self._renewed_at = None
            self._announce()
            if not leading or observed is None:
                return False
            now = lease_time(self._wall())
            spec = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": _int(_spec(observed).get("leaseTransitions"), default=0),
            }
            try:
                self._observe(self.client.replace(observed, spec))
            except (LeaseConflict, LeaseApiFailure) as exc:
                why = exc.why if isinstance(exc, LeaseApiFailure) else "the Lease changed meanwhile"
                log.warning("leader election: could not release the Lease", lease=self.client.name, why=why)
                return False
            log.info("leader election: released the Lease", lease=self.client.name, identity=self.identity)
            return True

    # -- the campaign thread ------------------------------------------------------------------------------

    def start(self) -> None:
        """Campaign in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="rotator-leader", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """End the campaign; with ``release``, give up the Lease if this process holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_deadline + self.client.timeout)
            self._thread = None
        if release:
            self.release()
        else:
            with self._lock:
                self._renewed_at = None
            self._announce()

    def running(self) -> bool:
        """Whether the campaign thread is alive (the daemon's /healthz fails when it is not)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as exc:  # never let the campaign die: a dead thread would hold no Lease forever
                log.error("leader election: unexpected error", error=type(exc).__name__)
            self._announce()
            # wake at the next try, or at the deadline if it comes first (so on_change(False) is on time)
            delay = self.retry_period
            until = self._lead_until()
            if until is not None:
                delay = max(0.0, min(delay, until - self._monotonic()))
            self._stop.wait(delay)
            self._announce()

    def _announce(self) -> None:
        leader = self.is_leader()
        with self._lock:
            if leader == self._announced:
                return
            self._announced = leader
        log.info(
            "leader election: leading" if leader else "leader election: not leading",
            lease=f"{self.client.namespace}/{self.client.name}",
            identity=self.identity,
        )
        if self.on_change is not None:
            try:
                self.on_change(leader)
            except Exception as exc:
                log.error("leader election: the change handler failed", error=type(exc).__name__, leader=leader)


def _spec(lease: dict[str, Any]) -> dict[str, Any]:
    spec = lease.get("spec")
    return spec if isinstance(spec, dict) else {}


def _int(value: Any, *, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def lease_namespace(cfg: LeaderElectionConfig) -> str:
    """``namespace``, else the pod's own (``service_account_dir``/namespace). Raises ConfigError."""
    if cfg.namespace:
        return cfg.namespace
    path = os.path.join(cfg.service_account_dir, "namespace")
    try:
        with open(path) as f:
            ns = f.read().strip()
    except OSError as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    "leader_election.namespace",
                    f"not set, and the pod's namespace cannot be read from {path} ({exc.strerror}): set "
                    "leader_election.namespace, or mount the service account token (automountServiceAccountToken)",
                )
            ]
        ) from None
    if not ns:
        raise ConfigError([ConfigIssue("leader_election.namespace", f"not set, and {path} is empty: set it")])
    return ns


def open_elector(
    cfg: LeaderElectionConfig,
    *,
    on_change: Callable[[bool], None] | None = None,
    api_client: Any = None,
    identity: str | None = None,
) -> LeaseElector:
    """A :class:`LeaseElector` for ``cfg`` (not started), talking through ``api_client`` or one loaded from
    the in-cluster service account or kubeconfig.

    Raises: MissingExtraError (``momento-rotator[k8s]``), ConfigError (no namespace, no usable credentials).
    """
    try:
        import kubernetes  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("k8s", exc.name or "kubernetes") from exc
    from rotator.kube import load_api_client

    namespace = lease_namespace(cfg)
    if api_client is None:

        def config_error(message: str) -> Exception:
            remedy = (
                "; in a pod, mount the ServiceAccount token (deploy/kubernetes/components/leader-election does), "
                "elsewhere set leader_election.kubeconfig"
            )
            return ConfigError([ConfigIssue("leader_election", message + remedy)])

        api_client = load_api_client(
            in_cluster=cfg.in_cluster,
            kubeconfig=cfg.kubeconfig,
            context=cfg.context,
            service_account_dir=cfg.service_account_dir,
            what="the Lease's Kubernetes API",
            error=config_error,
        )
    renew_deadline = cfg.renew_deadline.total_seconds()
    # a stuck request must not outlast the deadline by much: the thread checks the deadline between requests
    client = LeaseClient(api_client, namespace, cfg.lease_name, timeout=max(0.5, renew_deadline / 2))
    return LeaseElector(
        client,
        identity=identity or default_identity(),
        lease_duration=cfg.lease_duration.total_seconds(),
        renew_deadline=renew_deadline,
        retry_period=cfg.retry_period.total_seconds(),
        on_change=on_change,
    )
