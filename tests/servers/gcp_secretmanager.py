"""A local GCP Secret Manager that the real ``SecretManagerServiceClient(transport="rest")`` talks to over HTTP.

No Secret Manager emulator can be installed here, so the project keeps this small over-the-wire double. It
speaks the parts of the Secret Manager v1 REST API that rotator and its tests use, the way the service does:

- ``POST /v1/projects/P/secrets?secretId=S`` (create; 409 ``ALREADY_EXISTS`` for a duplicate),
  ``GET /v1/projects/P/secrets/S``, ``PATCH /v1/projects/P/secrets/S?updateMask=...`` (``labels``,
  ``annotations``, ``versionAliases``; each masked map is replaced whole);
- ``POST .../secrets/S:addVersion`` with ``dataCrc32c`` checking (400 ``INVALID_ARGUMENT`` on a mismatch);
  versions are numbered 1, 2, 3... per secret and never reused;
- ``GET .../versions/{N|latest|alias}:access`` (``latest`` is the most recently created version whatever its
  state, as the service documents it; a disabled or destroyed version gives 400 ``FAILED_PRECONDITION``),
  ``GET .../versions/{N|latest|alias}``;
- ``GET .../versions?pageSize=&pageToken=&filter=`` newest first, paged with ``nextPageToken``;
  ``filter`` understands ``state:ENABLED`` / ``state:DISABLED`` / ``state:DESTROYED``;
- ``POST .../versions/N:enable|:disable|:destroy`` with an optional version ``etag``;
- eventual consistency (:attr:`SecretManagerServer.stale_for`): Google documents that only adding a version
  and then reading it by its number is strongly consistent; a secret's metadata, its etag, its aliases and
  ``latest`` may lag (https://cloud.google.com/secret-manager/docs/reference/consistency). With ``stale_for`` set,
  GetSecret, ``latest`` and alias lookups answer with the state of that many seconds ago, while writes are
  still checked against the real etag;
- etags on secrets and versions: a write carrying a stale ``etag`` gives 400 ``FAILED_PRECONDITION``, the
  shape the service uses over REST; every change gives a new etag;
- validation of secret ids, labels, annotations (key syntax, total size under 16 KiB) and version aliases
  (syntax, ``latest``/``new`` reserved, at most 50, must name an existing, not destroyed version);
- enums as numbers when the request says ``$alt=json;enum-encoding=int`` (the client always does), as names
  otherwise; int64 fields (``dataCrc32c``, alias targets) as decimal strings, like proto3 JSON;
- error bodies ``{"error": {"code", "message", "status"}}``;
- injectable faults: :meth:`SecretManagerServer.fail_next` queues statuses (429 ``RESOURCE_EXHAUSTED``,
  503 ``UNAVAILABLE``, 504 ``DEADLINE_EXCEEDED``, 0 for a reset connection) for the next matching requests,
  instead of carrying them out or, with ``after=True``, after carrying them out (the answer lost: an
  ``addVersion`` resent then makes a second version, which is why the client library gives AddSecretVersion
  no default retry), :attr:`SecretManagerServer.fail_rate` fails a
  seeded random share of them, :meth:`SecretManagerServer.deny` answers 403 ``PERMISSION_DENIED`` for an
  operation, and :attr:`SecretManagerServer.before` runs a hook before a request is served (to interleave a
  concurrent writer deterministically);
- a quota mode, off by default (:meth:`SecretManagerServer.enforce_quotas`, or ``quota_scale=`` when
  constructing): the request-rate quotas of the Secret Manager quotas page (:data:`GCP_QUOTAS`) per project, per
  secret and per secret version, over sliding windows (:class:`tests.servers.fault_proxy.QuotaBook`), a request
  beyond one answered 429 ``RESOURCE_EXHAUSTED`` with the ``google.rpc.ErrorInfo`` of a rate quota, and served and
  throttled counts per quota and scope in :attr:`SecretManagerServer.quotas`.

Everything the server saw is in :attr:`SecretManagerServer.requests` as ``(method, operation, path, status)``.
Bound to 127.0.0.1 on a free port; use :func:`running_secretmanager` (or ``start``/``stop``) from a fixture.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c

from tests.servers.fault_proxy import Quota, QuotaBook, Refusal
from tests.servers.loopback import serve, shut

SECRET_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,255}$")
ANNOTATION_KEY_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
ALIAS_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,62}$")
MAX_ANNOTATION_BYTES = 16 * 1024
MAX_ALIASES = 50
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_PAGE_SIZE = 25000

STATES = {1: "ENABLED", 2: "DISABLED", 3: "DESTROYED"}
ENABLED, DISABLED, DESTROYED = 1, 2, 3

#: HTTP status -> the google.rpc status name the service puts in error bodies
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: which IAM permission each operation needs (for 403 messages)
PERMISSIONS = {
    "CreateSecret": "secretmanager.secrets.create",
    "GetSecret": "secretmanager.secrets.get",
    "UpdateSecret": "secretmanager.secrets.update",
    "DeleteSecret": "secretmanager.secrets.delete",
    "AddSecretVersion": "secretmanager.versions.add",
    "AccessSecretVersion": "secretmanager.versions.access",
    "GetSecretVersion": "secretmanager.versions.get",
    "ListSecretVersions": "secretmanager.versions.list",
    "EnableSecretVersion": "secretmanager.versions.enable",
    "DisableSecretVersion": "secretmanager.versions.disable",
    "DestroySecretVersion": "secretmanager.versions.destroy",
}


_QUOTAS_PAGE = "Secret Manager quotas and limits, https://cloud.google.com/secret-manager/quotas"

#: Secret Manager's request-rate quotas, as "Secret Manager quotas and limits" lists them
#: (https://cloud.google.com/secret-manager/quotas). The names are the ``quota_limit`` of the ErrorInfo a refusal
#: carries. "These quotas apply to each Google Cloud project and are shared across all applications and IP addresses
#: using that project" (same page): the project ones are counted per ``projects/P`` of the request path.
GCP_QUOTAS: tuple[Quota, ...] = (
    # "Access request | 90,000 per minute per project"; "An access request is any call to the access API method"
    Quota("AccessRequestsPerMinutePerProject", 90_000, 60.0, "project", _QUOTAS_PAGE),
    # "Read request | 600 per minute per project"; "A read request is any non-mutating operation (an operation that
    # does not modify a secret version) except for access requests. Examples include listing secrets and fetching
    # secret metadata."
    Quota("ReadRequestsPerMinutePerProject", 600, 60.0, "project", _QUOTAS_PAGE),
    # "Write request | 600 per minute per project"; "A write request is any mutating operation (an operation that
    # modifies or deletes a secret or secret version). Examples include creating, updating, or deleting a secret, or
    # adding, enabling, disabling, or destroying a secret version."
    Quota("WriteRequestsPerMinutePerProject", 600, 60.0, "project", _QUOTAS_PAGE),
    # "Soft-enforced rate limits for modifying secrets and secret versions": for "AddSecretVersion and UpdateSecret
    # operations", "Global secret | 2 requests per second (2 qps) per secret, and 120 requests per minute (120 qpm)
    # per secret". The two operations share one counter per secret here: the table gives one limit for both, and
    # the shared reading is the stricter one. "Soft-enforcement allows us to continue serving requests beyond their
    # quota as long as our backend systems can handle the load": the service may serve more; this server never
    # does, so a client that fits here fits there.
    Quota(
        "AddOrUpdatePerSecondPerSecret", 2, 1.0, "secret", _QUOTAS_PAGE, "AddSecretVersion and UpdateSecret share it"
    ),
    Quota(
        "AddOrUpdatePerMinutePerSecret", 120, 60.0, "secret", _QUOTAS_PAGE, "AddSecretVersion and UpdateSecret share it"
    ),
    # for "EnableSecretVersion, DisableSecretVersion, and DestroySecretVersion operations": "Global secret | 1 request
    # per second (1 qps) per secret version, and 60 requests per minute (60 qpm) per secret version"
    Quota("VersionStatePerSecondPerVersion", 1, 1.0, "secret version", _QUOTAS_PAGE),
    Quota("VersionStatePerMinutePerVersion", 60, 60.0, "secret version", _QUOTAS_PAGE),
)

#: how a refusal names each quota: (quota metric, display name of the metric, display name of the limit)
_QUOTA_LABELS = {
    "AccessRequestsPerMinutePerProject": ("access_requests", "Access requests", "Access requests per minute"),
    "ReadRequestsPerMinutePerProject": ("read_requests", "Read requests", "Read requests per minute"),
    "WriteRequestsPerMinutePerProject": ("write_requests", "Write requests", "Write requests per minute"),
    "AddOrUpdatePerSecondPerSecret": (
        "secret_modifications",
        "Secret modifications",
        "Secret modifications per second per secret",
    ),
    "AddOrUpdatePerMinutePerSecret": (
        "secret_modifications",
        "Secret modifications",
        "Secret modifications per minute per secret",
    ),
    "VersionStatePerSecondPerVersion": (
        "version_state_changes",
        "Secret version state changes",
        "Secret version state changes per second per secret version",
    ),
    "VersionStatePerMinutePerVersion": (
        "version_state_changes",
        "Secret version state changes",
        "Secret version state changes per minute per secret version",
    ),
}

# the operation classes of the quotas page, as quoted beside GCP_QUOTAS: AccessSecretVersion is an access request,
# every other non-mutating operation a read, every mutating one a write
_READS = frozenset({"GetSecret", "GetSecretVersion", "ListSecretVersions"})
_WRITES = frozenset(
    {
        "CreateSecret",
        "UpdateSecret",
        "DeleteSecret",
        "AddSecretVersion",
        "EnableSecretVersion",
        "DisableSecretVersion",
        "DestroySecretVersion",
    }
)


def _quota_checks(op: str, args: list[str]) -> list[tuple[str, str]]:
    """The (quota, scope key) pairs one request counts against (the operation classes of the quotas page)."""
    project = f"projects/{args[0]}"
    if op == "AccessSecretVersion":
        checks = [("AccessRequestsPerMinutePerProject", project)]
    elif op in _READS:
        checks = [("ReadRequestsPerMinutePerProject", project)]
    elif op in _WRITES:
        checks = [("WriteRequestsPerMinutePerProject", project)]
    else:
        return []
    if op in ("AddSecretVersion", "UpdateSecret"):
        secret = f"{project}/secrets/{args[1]}"
        checks += [("AddOrUpdatePerSecondPerSecret", secret), ("AddOrUpdatePerMinutePerSecret", secret)]
    elif op in ("EnableSecretVersion", "DisableSecretVersion", "DestroySecretVersion"):
        version = f"{project}/secrets/{args[1]}/versions/{args[2]}"
        checks += [("VersionStatePerSecondPerVersion", version), ("VersionStatePerMinutePerVersion", version)]
    return checks


def _quota_exceeded(refusal: Refusal) -> _Reply:
    """The answer to a request beyond a rate quota.

    Over HTTP/REST "Google Cloud returns an HTTP 429 TOO MANY REQUESTS status code" (Troubleshoot quota errors,
    https://cloud.google.com/docs/quotas/troubleshoot), in the JSON mapping of ``google.rpc.Status``
    (``{"error": {"code", "message", "status", "details"}}``, API design guide, Errors,
    https://cloud.google.com/apis/design/errors) with the canonical status ``RESOURCE_EXHAUSTED`` and an
    ``ErrorInfo`` whose reason is ``RATE_LIMIT_EXCEEDED``: "The request is denied because there is not enough rate
    quota for the consumer", with ``consumer``, ``service``, ``quota_metric`` and ``quota_limit`` in its metadata
    (``google.api.ErrorReason``, google/api/error_reason.proto, https://github.com/googleapis/googleapis). The
    message has the form Google's quota system writes ("Quota exceeded for quota metric ... and limit ... of
    service ... for consumer ..."). Modelled, not documented for Secret Manager: the metric ids
    (``secretmanager.googleapis.com/write_requests``...), the limit ids (the quota names of :data:`GCP_QUOTAS`),
    ``quota_limit_value`` (the enforced limit, which the service also reports in its quota errors), and the same
    answer for the per-secret soft limits, whose refusal no page shows. No ``Retry-After`` and no ``RetryInfo``
    detail: no page promises either, so a client must back off on its own.

    google-api-core turns a REST 429 into ``TooManyRequests`` (its HTTP mapping), not its subclass
    ``ResourceExhausted`` (the gRPC one): the library's default retry of AccessSecretVersion
    (``if_exception_type(ResourceExhausted, ServiceUnavailable)``) does not retry it over REST; rotator's store
    passes ``retry=None`` and retries 429s itself.
    """
    metric, metric_name, limit_name = _QUOTA_LABELS.get(refusal.quota.name, (refusal.quota.name, "", ""))
    consumer = refusal.key.split("/secrets/")[0]
    message = (
        f"Quota exceeded for quota metric '{metric_name}' and limit '{limit_name}' of service "
        f"'secretmanager.googleapis.com' for consumer '{consumer.replace('projects/', 'project_number:')}'."
    )
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {
                "consumer": consumer,
                "service": "secretmanager.googleapis.com",
                "quota_metric": f"secretmanager.googleapis.com/{metric}",
                "quota_limit": refusal.quota.name,
                "quota_limit_value": str(refusal.quota.limit),
            },
        },
    ]
    return _Reply(429, {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _etag() -> str:
    return f'"{uuid.uuid4().hex[:14]}"'


@dataclass
class Version:
    number: int
    data: bytes | None
    crc32c: int
    create_time: str
    state: int = ENABLED
    etag: str = field(default_factory=_etag)
    client_checksum: bool = False
    destroy_time: str | None = None


@dataclass(frozen=True)
class _View:
    """The secret's metadata, aliases and newest version number as they were at one moment."""

    etag: str
    labels: dict[str, str]
    annotations: dict[str, str]
    aliases: dict[str, int]
    newest: int | None


@dataclass
class Secret:
    project: str
    secret_id: str
    replication: dict[str, Any]
    create_time: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    versions: dict[int, Version] = field(default_factory=dict)
    next_version: int = 1
    etag: str = field(default_factory=_etag)
    #: what an eventually consistent read may still serve: ``(monotonic time, _View)`` after each change
    history: list[tuple[float, _View]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"projects/{self.project}/secrets/{self.secret_id}"

    def snap(self) -> None:
        """Record the state after a change, for reads that lag (:attr:`SecretManagerServer.stale_for`)."""
        newest = max(self.versions) if self.versions else None
        view = _View(self.etag, dict(self.labels), dict(self.annotations), dict(self.aliases), newest)
        self.history.append((time.monotonic(), view))
        del self.history[:-200]

    def view(self, stale_for: float) -> _View:
        """What a metadata read returns: the state ``stale_for`` seconds ago (the first recorded state when the
        secret is younger), or now."""
        newest = max(self.versions) if self.versions else None
        now = _View(self.etag, dict(self.labels), dict(self.annotations), dict(self.aliases), newest)
        if stale_for <= 0 or not self.history:
            return now
        cutoff = time.monotonic() - stale_for
        older = [v for t, v in self.history if t <= cutoff]
        return older[-1] if older else self.history[0][1]

    def latest(self) -> Version | None:
        """The most recently created version, whatever its state: "latest" is "an alias to the most recently
        created SecretVersion" (https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/access),
        so when that version is disabled, accessing ``latest`` fails even if older versions are enabled."""
        return max(self.versions.values(), key=lambda v: v.number) if self.versions else None


@dataclass
class Fault:
    status: int
    method: str | None
    op: str | None
    after: bool = False

    def matches(self, method: str, op: str) -> bool:
        return (self.method is None or self.method == method) and (self.op is None or self.op == op)


class _Reply(Exception):  # control flow inside the handler
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _error(status: int, message: str, code: str | None = None) -> _Reply:
    return _Reply(status, {"error": {"code": status, "message": message, "status": code or STATUS_NAMES[status]}})


class SecretManagerServer:
    """The state and the request handling; :meth:`start` serves it on ``127.0.0.1:<free port>``."""

    def __init__(
        self, *, seed: int = 0, quota_scale: float | None = None, quota_clock: Callable[[], float] | None = None
    ) -> None:
        self._lock = threading.RLock()
        self.secrets: dict[str, Secret] = {}
        self.requests: list[tuple[str, str, str, int]] = []
        self.faults: deque[Fault] = deque()
        self.fail_rate = 0.0
        self.fail_rate_status = 503
        self.denied: set[str] = set()
        #: eventual consistency: GetSecret, ``latest`` and aliases answer as of this many seconds ago (0: now)
        self.stale_for = 0.0
        #: called as ``before(method, op, path)`` before a request is served (outside the faults)
        self.before: Callable[[str, str, str], None] | None = None
        self._random = random.Random(seed)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: the quota mode's book (windows and counters), or ``None`` while the mode is off (the default)
        self.quotas: QuotaBook | None = None
        self._quota_setup = (quota_scale, quota_clock)
        if quota_scale is not None:
            self.enforce_quotas(scale=quota_scale, clock=quota_clock)

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SecretManagerServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd, self._thread = serve(Handler, "gcp-secretmanager")
        return self

    def stop(self) -> None:
        shut(self._httpd, self._thread)
        self._httpd, self._thread = None, None

    def __enter__(self) -> SecretManagerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ---------------------------------------------------------------------------------------

    def fail_next(
        self, status: int, *, times: int = 1, method: str | None = None, op: str | None = None, after: bool = False
    ) -> None:
        """Answer the next ``times`` requests matching ``method``/``op`` (``"AddSecretVersion"``...) with ``status``.

        With ``after``, the request is carried out first and then answered with the fault: the answer was lost
        (a 503 or 504 from a front end, DEADLINE_EXCEEDED) although the change was made. Status ``0`` closes the
        connection without any answer (a reset), the request carried out or not as ``after`` says.
        """
        with self._lock:
            for _ in range(times):
                self.faults.append(Fault(status, method, op, after))

    def enforce_quotas(
        self,
        *,
        scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        limits: dict[str, int] | None = None,
    ) -> QuotaBook:
        """Refuse requests beyond Secret Manager's request-rate quotas (:data:`GCP_QUOTAS`) with 429.

        ``scale`` multiplies every rate (``scale=10``: ten times the documented rate, each window a tenth as
        long), ``limits`` overrides limits by quota name, ``clock`` replaces ``time.monotonic``; see
        :class:`~tests.servers.fault_proxy.QuotaBook`. Quotas are checked before injected faults and denials; a
        refused request is not carried out and uses no quota.
        """
        book = QuotaBook(GCP_QUOTAS, scale=scale, clock=clock, limits=limits)
        with self._lock:
            self.quotas = book
        return book

    def quotas_off(self) -> None:
        """Leave quota mode (the book, with its counters, is dropped)."""
        with self._lock:
            self.quotas = None

    def deny(self, op: str) -> None:
        """Answer 403 ``PERMISSION_DENIED`` to every ``op`` request (e.g. ``"UpdateSecret"``)."""
        if op not in PERMISSIONS:
            raise ValueError(f"unknown operation {op!r}")
        with self._lock:
            self.denied.add(op)

    def allow_all(self) -> None:
        with self._lock:
            self.denied.clear()

    def reset(self) -> None:
        with self._lock:
            self.secrets.clear()
            self.requests.clear()
            self.faults.clear()
            self.denied.clear()
            self.fail_rate = 0.0
            self.before = None
            self.stale_for = 0.0
            # quota mode as constructed: off, or on with fresh windows and counters
            scale, clock = self._quota_setup
            self.quotas = None if scale is None else QuotaBook(GCP_QUOTAS, scale=scale, clock=clock)

    def secret(self, project: str, secret_id: str) -> Secret:
        """The stored secret (for assertions), raising KeyError when absent."""
        with self._lock:
            return self.secrets[f"projects/{project}/secrets/{secret_id}"]

    def put_version(self, project: str, secret_id: str, data: bytes) -> int:
        """Add a version directly, as another tool would (creates the secret when missing)."""
        with self._lock:
            name = f"projects/{project}/secrets/{secret_id}"
            s = self.secrets.get(name)
            if s is None:
                s = self.secrets[name] = Secret(project, secret_id, {"automatic": {}}, _now())
            v = Version(s.next_version, data, google_crc32c.value(data), _now())
            s.versions[v.number] = v
            s.next_version += 1
            s.snap()
            return v.number

    def touch(self, project: str, secret_id: str, annotations: dict[str, str] | None = None) -> None:
        """Change the secret (and its etag) as a concurrent writer would."""
        with self._lock:
            s = self.secret(project, secret_id)
            if annotations:
                s.annotations.update(annotations)
            s.etag = _etag()
            s.snap()

    def count(self, op: str | None = None, *, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1 for (_, o, _, st) in self.requests if (op is None or o == op) and (status is None or st == status)
            )

    # -- request handling ------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        ints = "json;enum-encoding=int" in query.get("$alt", [""])[0]
        op, args = _operation(method, path)
        hook = self.before
        if hook is not None and op != "Unknown":
            hook(method, op, path)
        with self._lock:
            try:
                if op == "Unknown":
                    raise _error(404, f"Method not found: {method} {path}", "NOT_FOUND")
                book = self.quotas
                if book is not None:
                    refusal = book.admit(_quota_checks(op, args))
                    if refusal is not None:
                        raise _quota_exceeded(refusal)
                late = self._maybe_fail(method, op)
                if op in self.denied:
                    resource = f"projects/{args[0]}" + (f"/secrets/{args[1]}" if len(args) > 1 else "")
                    raise _error(
                        403,
                        f"Permission '{PERMISSIONS[op]}' denied for resource '{resource}' (or it may not exist).",
                    )
                status, out = 200, self._dispatch(op, args, query, _json(body), ints)
                if late is not None:
                    raise _fault(late.status)
            except _Reply as reply:
                status, out = reply.status, reply.body
            self.requests.append((method, op, path, status))
            return status, out

    def _maybe_fail(self, method: str, op: str) -> Fault | None:
        """Raise the first queued fault for this request, or return it when it applies after the request."""
        for i, f in enumerate(self.faults):
            if f.matches(method, op):
                del self.faults[i]
                if f.after:
                    return f
                raise _fault(f.status)
        if self.fail_rate and self._random.random() < self.fail_rate:
            raise _fault(self.fail_rate_status)
        return None

    def _dispatch(self, op: str, args: list[str], query: dict[str, list[str]], body: dict[str, Any], ints: bool) -> Any:
        if op == "CreateSecret":
            return self._create(args[0], query, body)
        name = f"projects/{args[0]}/secrets/{args[1]}"
        secret = self.secrets.get(name)
        if secret is None:
            raise _error(404, f"Secret [{name}] not found or has no versions.")
        if op == "GetSecret":
            return _secret_json(secret, self.stale_for)
        if op == "DeleteSecret":
            del self.secrets[name]
            return {}
        if op == "UpdateSecret":
            return self._update(secret, query, body)
        if op == "AddSecretVersion":
            return self._add(secret, body, ints)
        if op == "ListSecretVersions":
            return self._list(secret, query, ints)
        version = self._resolve(secret, args[2])
        if op == "GetSecretVersion":
            return _version_json(secret, version, ints)
        if op == "AccessSecretVersion":
            if version.state != ENABLED:
                raise _error(
                    400,
                    f"Secret Version [{secret.name}/versions/{version.number}] is in {STATES[version.state]} state.",
                    "FAILED_PRECONDITION",
                )
            assert version.data is not None
            return {
                "name": f"{secret.name}/versions/{version.number}",
                "payload": {"data": base64.b64encode(version.data).decode(), "dataCrc32c": str(version.crc32c)},
            }
        # enable / disable / destroy
        etag = body.get("etag")
        if etag and etag != version.etag:
            raise _error(
                400, "The etag provided in the request does not match the resource's etag.", "FAILED_PRECONDITION"
            )
        if version.state == DESTROYED:
            raise _error(
                400,
                f"Secret Version [{secret.name}/versions/{version.number}] is in DESTROYED state.",
                "FAILED_PRECONDITION",
            )
        if op == "EnableSecretVersion":
            version.state = ENABLED
        elif op == "DisableSecretVersion":
            version.state = DISABLED
        else:
            version.state, version.data, version.destroy_time = DESTROYED, None, _now()
        version.etag = _etag()
        secret.snap()
        return _version_json(secret, version, ints)

    def _create(self, project: str, query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        secret_id = query.get("secretId", [""])[0]
        if not SECRET_ID_RE.match(secret_id):
            raise _error(
                400,
                "Secret ID must be 1-255 characters long and contain only letters, numbers, "
                f"hyphens and underscores: {secret_id!r}",
            )
        name = f"projects/{project}/secrets/{secret_id}"
        if name in self.secrets:
            raise _error(409, f"Secret [{name}] already exists.", "ALREADY_EXISTS")
        replication = body.get("replication")
        if not isinstance(replication, dict) or not (
            "automatic" in replication or "userManaged" in replication or "user_managed" in replication
        ):
            raise _error(400, "Secret.replication is required: automatic or userManaged.")
        um = replication.get("userManaged") or replication.get("user_managed")
        if um is not None and not (isinstance(um, dict) and um.get("replicas")):
            raise _error(400, "Secret.replication.user_managed.replicas must not be empty.")
        labels = _check_labels(body.get("labels") or {})
        annotations = _check_annotations(body.get("annotations") or {})
        if body.get("versionAliases"):
            raise _error(400, "A new secret has no versions to alias.")
        s = Secret(project, secret_id, replication, _now(), labels, annotations)
        self.secrets[name] = s
        s.snap()
        return _secret_json(s)

    def _update(self, secret: Secret, query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        mask = [p.strip() for p in ",".join(query.get("updateMask", [])).split(",") if p.strip()]
        if not mask:
            raise _error(400, "update_mask is required.")
        etag = body.get("etag")
        if etag and etag != secret.etag:
            raise _error(
                400, "The etag provided in the request does not match the resource's etag.", "FAILED_PRECONDITION"
            )
        labels, annotations, aliases = secret.labels, secret.annotations, secret.aliases
        for path in mask:
            if path == "labels":
                labels = _check_labels(body.get("labels") or {})
            elif path == "annotations":
                annotations = _check_annotations(body.get("annotations") or {})
            elif path in ("versionAliases", "version_aliases"):
                aliases = self._check_aliases(secret, body.get("versionAliases") or {})
            else:
                raise _error(400, f"Unsupported field in update_mask: {path!r}.")
        secret.labels, secret.annotations, secret.aliases = labels, annotations, aliases
        secret.etag = _etag()
        secret.snap()
        return _secret_json(secret)

    def _check_aliases(self, secret: Secret, raw: dict[str, Any]) -> dict[str, int]:
        if len(raw) > MAX_ALIASES:
            raise _error(400, f"A secret can have at most {MAX_ALIASES} version aliases.")
        out: dict[str, int] = {}
        for alias, target in raw.items():
            if not ALIAS_RE.match(alias) or alias.lower() in ("latest", "new"):
                raise _error(400, f"Invalid version alias {alias!r}.")
            try:
                number = int(target)
            except (TypeError, ValueError):
                raise _error(400, f"Version alias {alias!r} must name a version number.") from None
            v = secret.versions.get(number)
            if v is None or v.state == DESTROYED:
                raise _error(400, f"Version alias {alias!r} refers to a non-existent or destroyed version {number}.")
            out[alias] = number
        return out

    def _add(self, secret: Secret, body: dict[str, Any], ints: bool) -> Any:
        payload = body.get("payload") or {}
        try:
            data = base64.b64decode(payload.get("data", ""), validate=True)
        except (binascii.Error, ValueError):
            raise _error(400, "SecretPayload.data is not valid base64.") from None
        if len(data) > MAX_PAYLOAD_BYTES:
            raise _error(400, "SecretPayload.data exceeds the 64 KiB limit.")
        crc = google_crc32c.value(data)
        given = payload.get("dataCrc32c")
        if given is not None and int(given) != crc:
            raise _error(400, "Checksum mismatch: data_crc32c does not match the payload data.")
        v = Version(secret.next_version, data, crc, _now(), client_checksum=given is not None)
        secret.versions[v.number] = v
        secret.next_version += 1
        secret.snap()
        return _version_json(secret, v, ints)

    def _list(self, secret: Secret, query: dict[str, list[str]], ints: bool) -> Any:
        size = int(query.get("pageSize", ["0"])[0] or 0) or MAX_PAGE_SIZE
        if not 0 < size <= MAX_PAGE_SIZE:
            raise _error(400, f"page_size must be between 1 and {MAX_PAGE_SIZE}.")
        flt = query.get("filter", [""])[0].strip()
        versions = sorted(secret.versions.values(), key=lambda v: v.number, reverse=True)
        if flt:
            m = re.fullmatch(r"state\s*[:=]\s*(ENABLED|DISABLED|DESTROYED)", flt)
            if not m:
                raise _error(400, f"Unsupported filter {flt!r}.")
            versions = [v for v in versions if STATES[v.state] == m.group(1)]
        token = query.get("pageToken", [""])[0]
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except (binascii.Error, ValueError):
                raise _error(400, "Invalid page token.") from None
        page = versions[start : start + size]
        out: dict[str, Any] = {"versions": [_version_json(secret, v, ints) for v in page], "totalSize": len(versions)}
        if start + size < len(versions):
            out["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return out

    def _resolve(self, secret: Secret, ref: str) -> Version:
        # a version named by its number is read strongly consistently; `latest` and aliases may lag
        view = secret.view(self.stale_for)
        if ref == "latest":
            v = secret.versions.get(view.newest) if view.newest is not None else None
            if v is None:
                raise _error(404, f"Secret [{secret.name}] not found or has no versions.")
            return v
        if ref.isdigit():
            found = secret.versions.get(int(ref))
        else:
            number = view.aliases.get(ref)
            found = None if number is None else secret.versions.get(number)
        if found is None:
            raise _error(404, f"Secret Version [{secret.name}/versions/{ref}] not found.")
        return found


def _fault(status: int) -> _Reply:
    if status == 0:
        return _Reply(0, {})
    messages = {
        429: "Quota exceeded for quota metric 'Access requests' and limit 'Access requests per minute'.",
        500: "Internal error encountered.",
        503: "The service is currently unavailable.",
        504: "Deadline expired before operation could complete.",
    }
    return _error(status, messages.get(status, f"injected fault {status}"), STATUS_NAMES.get(status, "UNKNOWN"))


_SECRET_PATH = r"projects/([^/]+)/secrets/([^/:]+)"


def _operation(method: str, path: str) -> tuple[str, list[str]]:
    routes: list[tuple[str, str, str]] = [
        ("POST", r"/v1/projects/([^/]+)/secrets", "CreateSecret"),
        ("GET", rf"/v1/{_SECRET_PATH}", "GetSecret"),
        ("PATCH", rf"/v1/{_SECRET_PATH}", "UpdateSecret"),
        ("DELETE", rf"/v1/{_SECRET_PATH}", "DeleteSecret"),
        ("POST", rf"/v1/{_SECRET_PATH}:addVersion", "AddSecretVersion"),
        ("GET", rf"/v1/{_SECRET_PATH}/versions", "ListSecretVersions"),
        ("GET", rf"/v1/{_SECRET_PATH}/versions/([^/:]+):access", "AccessSecretVersion"),
        ("GET", rf"/v1/{_SECRET_PATH}/versions/([^/:]+)", "GetSecretVersion"),
        ("POST", rf"/v1/{_SECRET_PATH}/versions/(\d+):enable", "EnableSecretVersion"),
        ("POST", rf"/v1/{_SECRET_PATH}/versions/(\d+):disable", "DisableSecretVersion"),
        ("POST", rf"/v1/{_SECRET_PATH}/versions/(\d+):destroy", "DestroySecretVersion"),
    ]
    for m, pattern, op in routes:
        match = re.fullmatch(pattern, path)
        if m == method and match:
            return op, list(match.groups())
    return "Unknown", []


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise _error(400, "Invalid JSON payload received.") from None
    if not isinstance(data, dict):
        raise _error(400, "Invalid JSON payload received: expected an object.")
    return data


def _check_labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, dict) or len(labels) > 64:
        raise _error(400, "A secret can have at most 64 labels.")
    for k, v in labels.items():
        if not LABEL_KEY_RE.match(k) or not isinstance(v, str) or not LABEL_VALUE_RE.match(v):
            raise _error(400, f"Invalid label {k!r}: keys match [a-z][a-z0-9_-]{{0,62}}, values [a-z0-9_-]{{0,63}}.")
    return dict(labels)


def _check_annotations(annotations: Any) -> dict[str, str]:
    if not isinstance(annotations, dict):
        raise _error(400, "Secret.annotations must be a map.")
    size = 0
    for k, v in annotations.items():
        if not ANNOTATION_KEY_RE.match(k) or len(k.encode()) > 128 or not isinstance(v, str):
            raise _error(400, f"Invalid annotation key {k!r}.")
        size += len(k.encode()) + len(v.encode())
    if size >= MAX_ANNOTATION_BYTES:
        raise _error(400, f"The total size of annotation keys and values must be less than 16KiB (got {size} bytes).")
    return dict(annotations)


def _secret_json(s: Secret, stale_for: float = 0.0) -> dict[str, Any]:
    view = s.view(stale_for)
    out: dict[str, Any] = {
        "name": s.name,
        "replication": s.replication,
        "createTime": s.create_time,
        "etag": view.etag,
    }
    if view.labels:
        out["labels"] = dict(view.labels)
    if view.annotations:
        out["annotations"] = dict(view.annotations)
    if view.aliases:
        out["versionAliases"] = {k: str(v) for k, v in view.aliases.items()}
    return out


def _version_json(s: Secret, v: Version, ints: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f"{s.name}/versions/{v.number}",
        "createTime": v.create_time,
        "state": v.state if ints else STATES[v.state],
        "etag": v.etag,
        "clientSpecifiedPayloadChecksum": v.client_checksum,
        "replicationStatus": {"automatic": {}},
    }
    if v.destroy_time:
        out["destroyTime"] = v.destroy_time
    return out


class _Handler(BaseHTTPRequestHandler):
    owner: SecretManagerServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid the 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, out = self.owner.handle(self.command, self.path, body)
        if status == 0:  # a reset: no answer at all
            self.close_connection = True
            return
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve


@contextmanager
def running_secretmanager(**kwargs: Any) -> Iterator[SecretManagerServer]:
    """A started server, stopped on exit."""
    server = SecretManagerServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
