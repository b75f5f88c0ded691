"""GCP Secret Manager store (``type: gcp``; extra ``momento-rotator[gcp]``).

One target is one secret ``projects/<project>/secrets/<secret>``; each key rotator publishes is one secret
version. Secret Manager versions carry no metadata of their own, so what rotator knows about them lives on the
secret, written with etag-guarded updates (read, change, ``PATCH`` with the etag; on a mismatch read again
and redo the change):

- labels ``managed-by=rotator`` and ``rotator-policy=<policy>``;
- one annotation per version rotator wrote, ``rotator-v<N>`` = compact JSON
  ``{"key": <key id>, "state": "staged"|"live"|"retired", "at": <staged>, "expires": <key expiry>,
  "promoted_at": <made current>, "retired_at": <disabled>}`` (times ISO 8601 UTC, seconds), plus
  ``rotator-schema: "1"``. Entries of destroyed versions are dropped; without ``destroy_after`` only the
  ``keep_retired`` newest retired entries are kept, with it every entry of a version still to be destroyed
  is (shortened near the limit), so the annotations stay below Secret Manager's 16 KiB;
- the version aliases ``current`` (the version :meth:`~GcpSecretManagerStore.promote` made current) and
  ``previous`` (the one before it, until it is retired).

``add_secret_version`` makes the new version ``latest`` at once: consumers that read ``latest`` pick a key up
when it is staged, consumers that read the alias ``current`` when it is promoted (rotator stages, reads back
and promotes in one go, so the two differ for seconds). ``latest`` is the most recently created version
whatever its state, so retiring never leaves a disabled version above the current one: when it would (a key
staged, never promoted, then retired), the current key is added again as the newest version.

Staging is crash-safe without listing versions: the entry for the new version is written *before*
``addVersion``, with the number the version will get (the highest number rotator knows of, plus one). If the
service hands out another number (someone else added a version in between) the entry is moved to the real
number. A crash between the two calls leaves an entry in state ``staged`` whose version may not exist; the next
``stage`` of that key reads that version back (one ``access``) and compares the payload (or the key id in it:
the ``keyId`` of a JSON payload, the ``MOMENTO_KEY_ID=`` line of an env payload, the ``jti`` claim of a raw
v2 key) before deciding whether to add a version, so a key is never added twice.

Only "add a version, then access it by that number" is strongly consistent; metadata, etags, aliases and
``latest`` may lag (https://cloud.google.com/secret-manager/docs/reference/consistency). So the read-back reads the
version by number, a GetSecret answering an etag this process's own write replaced is taken as stale (the
write's answer is used instead), and ``current_since`` is the promote plus ``visibility_lag``, so grace starts
only once readers of ``current`` can see the new key.

Calls per rotation of one target: ``inspect`` 1 (GET), ``stage`` 2 (PATCH, addVersion; create + addVersion
for a new secret), ``read`` 1 (access), ``promote`` 1 (PATCH); ``retire`` later costs 2 (disable, PATCH).
Reads made by ``inspect`` (and the results of writes) are reused by the following write for ``cache_for``
(default 60 s); every write carries the etag, so a stale copy costs one retry, never a lost update.

Errors are caught by their google.api_core base classes, so the gRPC (default) and REST transports behave the
same: 429/500/503/504 and connection errors of idempotent calls are retried by ``google.api_core.retry.Retry``
(exponential backoff, jitter, ``retry.deadline``); an AddSecretVersion is never resent blindly (it is read
back by number first, :meth:`GcpSecretManagerStore._add_version`); then they raise
:class:`~rotator.errors.StoreUnavailable`; 403 raises :class:`~rotator.errors.StorePermissionError` naming
the permission and the role to grant. ``google.*`` is imported by :func:`open_store` only.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rotator.durations import Duration
from rotator.errors import (
    MissingExtraError,
    StoreConflict,
    StoreError,
    StoreIntegrityError,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.keys import payload_key_id
from rotator.model import SecretState, SecretText, StoredVersion
from rotator.observability import get_logger, record_call
from rotator.quotas import Charge, Quota, RateLimits, apply_overrides, check_overrides
from rotator.stores.base import (
    ANY_CURRENT,
    POOL_CONNECTIONS,
    BaseTargetOptions,
    Expect,
    SecretStore,
    StoreBase,
    StoreContext,
    StoreSpec,
    StoreType,
    TargetRef,
    VersionMeta,
)

SERVICE = "gcp-secretmanager"

_QUOTAS_PAGE = "Secret Manager quotas and limits, https://cloud.google.com/secret-manager/quotas"
#: Secret Manager's request-rate quotas (the quotas page), kept on the client side (rotator/quotas.py; a store's
#: ``quotas:`` overrides them). Per project: "Access requests per minute" 90,000, "Read requests per minute" 600
#: (every non-mutating call but AccessSecretVersion), "Write requests per minute" 600 (create, update, delete,
#: add version, enable, disable, destroy); per secret (global secrets), AddSecretVersion and UpdateSecret together
#: 2 per second and 120 per minute. Over quota: 429 RESOURCE_EXHAUSTED, no Retry-After. (Enable, disable and
#: destroy are also limited per version, 1 per second: rotator changes a version's state once, not charged.)
GCP_QUOTAS: tuple[Quota, ...] = (
    Quota("secretmanager", "access", 90_000, 60.0, "project", _QUOTAS_PAGE),
    Quota("secretmanager", "read", 600, 60.0, "project", _QUOTAS_PAGE),
    Quota("secretmanager", "write", 600, 60.0, "project", _QUOTAS_PAGE),
    Quota("secretmanager", "secret_writes", 2, 1.0, "secret", _QUOTAS_PAGE),
    Quota("secretmanager", "secret_writes_per_minute", 120, 60.0, "secret", _QUOTAS_PAGE),
)
#: which project quota an operation counts against (AddSecretVersion and UpdateSecret also against the secret's)
_OPERATION_QUOTA = {
    "AccessSecretVersion": "access",
    "GetSecret": "read",
    "GetSecretVersion": "read",
    "ListSecretVersions": "read",
    "ListSecrets": "read",
}
_SECRET_WRITES = frozenset({"AddSecretVersion", "UpdateSecret"})
#: the quota metric a refusal's ErrorInfo names (``secretmanager.googleapis.com/<metric>``) -> rotator's quotas
_REFUSED_METRIC = {
    "access_requests": ("access",),
    "read_requests": ("read",),
    "write_requests": ("write",),
    "secret_modifications": ("secret_writes", "secret_writes_per_minute"),
}


def _refused(charges: tuple[Charge, ...], exc: Any) -> tuple[Charge, ...]:
    """The charges of a refused request whose quota was full: the one its ErrorInfo's ``quota_metric`` names (a
    secret's own limit must not cut the project's write limit, nor the reverse); all of them when the answer
    names none that rotator knows."""
    metadata = getattr(exc, "metadata", None)
    metric = str(metadata.get("quota_metric", "")) if isinstance(metadata, dict) else ""
    names = _REFUSED_METRIC.get(metric.rsplit("/", 1)[-1])
    picked = tuple(c for c in charges if names is not None and c.quota.name in names)
    return picked or charges

PROJECT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\Z")
PROJECT_NUMBER_RE = re.compile(r"^[1-9][0-9]{0,19}\Z")
SECRET_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,255}\Z")
LOCATION_RE = re.compile(r"^[a-z]+(?:-[a-z]+)*[0-9]+\Z")

MANAGED_BY = ("managed-by", "rotator")
POLICY_LABEL = "rotator-policy"
ENTRY_PREFIX = "rotator-v"
SCHEMA_KEY, SCHEMA = "rotator-schema", "1"
CURRENT, PREVIOUS = "current", "previous"
STAGED, LIVE, RETIRED = "staged", "live", "retired"
#: annotations budget: Secret Manager refuses 16 KiB and more (keys and values, all annotations)
ANNOTATION_LIMIT = 16 * 1024
ANNOTATION_BUDGET = 14 * 1024
#: version states as the API numbers them
_ENABLED, _DISABLED, _DESTROYED = 1, 2, 3

#: operation -> (IAM permission, the narrowest predefined role holding it)
PERMISSIONS: dict[str, tuple[str, str]] = {
    "GetSecret": ("secretmanager.secrets.get", "roles/secretmanager.viewer"),
    "CreateSecret": ("secretmanager.secrets.create", "roles/secretmanager.admin on the project"),
    "UpdateSecret": ("secretmanager.secrets.update", "roles/secretmanager.admin"),
    "AddSecretVersion": ("secretmanager.versions.add", "roles/secretmanager.secretVersionAdder"),
    "AccessSecretVersion": ("secretmanager.versions.access", "roles/secretmanager.secretAccessor"),
    "GetSecretVersion": ("secretmanager.versions.get", "roles/secretmanager.secretVersionManager"),
    "ListSecretVersions": ("secretmanager.versions.list", "roles/secretmanager.secretVersionManager"),
    "EnableSecretVersion": ("secretmanager.versions.enable", "roles/secretmanager.secretVersionManager"),
    "DisableSecretVersion": ("secretmanager.versions.disable", "roles/secretmanager.secretVersionManager"),
    "DestroySecretVersion": ("secretmanager.versions.destroy", "roles/secretmanager.secretVersionManager"),
}
CUSTOM_ROLE_HINT = "or the custom role rotatorSecretWriter from deploy/gcp"

T = TypeVar("T")


def _log() -> Any:
    return get_logger(store_type="gcp")


# ---- configuration ----------------------------------------------------------------------------------------


def _check_project(value: str) -> str:
    if PROJECT_ID_RE.match(value) or PROJECT_NUMBER_RE.match(value):
        return value
    raise ValueError(
        f"{value!r} is not a GCP project: use a project id (6-30 characters: lowercase letters, digits and "
        "hyphens, starting with a letter and not ending with a hyphen, e.g. 'my-project-123') or a project number"
    )


def _check_secret_id(value: str) -> str:
    if SECRET_ID_RE.match(value):
        return value
    raise ValueError(
        f"{value!r} is not a valid Secret Manager secret id: use 1-255 letters, digits, '-' and '_' "
        "(no '/' or '.'), e.g. 'momento-checkout-api'"
    )


class UserManagedReplication(BaseModel):
    """Replicas in the listed locations only (``replication: {locations: [us-east1, europe-west1]}``)."""

    model_config = ConfigDict(extra="forbid")

    locations: list[str] = Field(min_length=1)

    @field_validator("locations")
    @classmethod
    def _locations(cls, v: list[str]) -> list[str]:
        bad = [loc for loc in v if not LOCATION_RE.match(loc)]
        if bad:
            raise ValueError(f"{bad} are not GCP locations: use region names like us-east1 or europe-west4")
        if len(set(v)) != len(v):
            raise ValueError("each location may be listed once")
        return v


Replication = Literal["automatic"] | UserManagedReplication


class RetrySettings(BaseModel):
    """Retries of throttled (429) and failing (500/503/504, connection errors) calls.

    The defaults outlast a per-minute quota (600 writes a minute per project, and a few writes a second on one
    secret: https://cloud.google.com/secret-manager/quotas): up to 12 attempts within 2 minutes.
    """

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(default=12, ge=1, le=30)
    initial_backoff: Duration = timedelta(milliseconds=500)
    max_backoff: Duration = timedelta(seconds=20)
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    #: stop retrying one call this long after its first attempt
    deadline: Duration = timedelta(minutes=2)


class StoreConfig(BaseModel):
    """``stores.<name>`` for ``type: gcp``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["gcp"]
    #: project id or number holding the secrets (a target may override it)
    project: str
    transport: Literal["grpc", "rest"] = "grpc"
    #: API endpoint override (``api_endpoint``), e.g. a regional or private endpoint
    endpoint: str | None = None
    #: a service-account key or external-account (workload identity federation) file; else ADC
    credentials_file: str | None = None
    #: replication of secrets rotator creates (existing secrets are left as they are)
    replication: Replication = "automatic"
    #: destroy versions that have been disabled for this long (at the next retire); never when unset
    destroy_after: Duration | None = None
    #: deadline of one API request
    timeout: Duration = timedelta(seconds=30)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    #: how often an etag-guarded update is re-read and retried when another writer got there first
    conflict_retries: int = Field(default=10, ge=1, le=100)
    #: reuse a secret read this recently as the base of a write (0 turns it off)
    cache_for: Duration = timedelta(seconds=60)
    #: retired versions still listed in the secret's annotations (older ones stay disabled, unlisted)
    keep_retired: int = Field(default=10, ge=0, le=50)
    #: how long a promote may take to be seen by every reader of the alias ``current`` (aliases and metadata
    #: are eventually consistent): the grace period of the old key starts this long after the promote
    visibility_lag: Duration = timedelta(minutes=5)
    quotas: dict[str, str | None] = Field(
        default_factory=dict,
        description="Overrides of Secret Manager's documented request quotas (access 90000/1m, read 600/1m and "
        "write 600/1m per project; secret_writes 2/1s and secret_writes_per_minute 120/1m per secret), e.g. "
        'write: "1200/1m" after a quota increase; null: no limit, only refusals pace it.',
    )

    _project = field_validator("project")(classmethod(lambda cls, v: _check_project(v)))
    _quotas = field_validator("quotas")(classmethod(lambda cls, v: check_overrides(GCP_QUOTAS, v)))

    @field_validator("destroy_after")
    @classmethod
    def _destroy_after(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(hours=1):
            raise ValueError("destroy_after must be at least 1h: a destroyed version can never be read again")
        return v


class TargetOptions(BaseTargetOptions):
    """A target on a GCP store: ``{store, secret, format?, endpoint_secret?, project?, replication?, adopt?}``."""

    #: the project holding this secret, when not the store's
    project: str | None = None
    #: replication for this secret when rotator creates it, when not the store's
    replication: Replication | None = None
    #: take over a secret that already holds versions rotator did not write
    adopt: bool = False

    _secret = field_validator("secret")(classmethod(lambda cls, v: _check_secret_id(v)))

    @field_validator("endpoint_secret")
    @classmethod
    def _endpoint_secret(cls, v: str | None) -> str | None:
        return None if v is None else _check_secret_id(v)

    @field_validator("project")
    @classmethod
    def _project(cls, v: str | None) -> str | None:
        return None if v is None else _check_project(v)


# ---- what rotator keeps on the secret ---------------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _entry_key(version: int) -> str:
    return f"{ENTRY_PREFIX}{version}"


_ENTRY_KEY_RE = re.compile(rf"^{ENTRY_PREFIX}([1-9][0-9]*)\Z")


@dataclass(frozen=True)
class _Entry:
    """What rotator recorded about one version (annotation ``rotator-v<N>``)."""

    version: int
    key_id: str
    state: str
    at: str | None = None
    expires: str | None = None
    promoted_at: str | None = None
    retired_at: str | None = None

    def dump(self) -> str:
        data = {
            "key": self.key_id,
            "state": self.state,
            "at": self.at,
            "expires": self.expires,
            "promoted_at": self.promoted_at,
            "retired_at": self.retired_at,
        }
        return json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))

    @classmethod
    def load(cls, version: int, text: str) -> _Entry | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            return None
        state = data.get("state")
        if state not in (STAGED, LIVE, RETIRED):
            return None

        def s(name: str) -> str | None:
            v = data.get(name)
            return v if isinstance(v, str) else None

        return cls(version, data["key"], state, s("at"), s("expires"), s("promoted_at"), s("retired_at"))


@dataclass(frozen=True)
class _Secret:
    """A secret as last read: etag, labels, annotations and aliases (never a value)."""

    name: str
    etag: str
    labels: dict[str, str]
    annotations: dict[str, str]
    aliases: dict[str, int]

    @property
    def entries(self) -> dict[int, _Entry]:
        return _entries_of(self.annotations)

    def of_key(self, key_id: str) -> list[_Entry]:
        """The entries holding ``key_id``, newest version first."""
        return sorted((e for e in self.entries.values() if e.key_id == key_id), key=lambda e: -e.version)

    @property
    def head(self) -> int:
        """The highest version number this secret's metadata mentions."""
        return max([*self.entries, *self.aliases.values(), 0])


def _entries_of(annotations: dict[str, str]) -> dict[int, _Entry]:
    out: dict[int, _Entry] = {}
    for k, v in annotations.items():
        m = _ENTRY_KEY_RE.match(k)
        if m:
            e = _Entry.load(int(m.group(1)), v)
            if e is not None:
                out[e.version] = e
    return out


def _annotations_size(annotations: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


@dataclass(frozen=True)
class _Change:
    labels: dict[str, str]
    annotations: dict[str, str]
    aliases: dict[str, int]


def key_id_in(payload: str) -> str | None:
    """The key id a stored payload names (:func:`rotator.keys.payload_key_id`, the one rule)."""
    return payload_key_id(payload)


def _holds(data: bytes, value: SecretText, key_id: str) -> bool:
    """Whether a version's payload is ``value``, or another rendering of the same key."""
    return data == value.reveal().encode() or key_id_in(data.decode(errors="replace")) == key_id


# ---- errors -----------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """A non-retryable API error the calling method decides about; never leaves a public method."""

    def __init__(self, kind: str, op: str, status: str, message: str) -> None:
        super().__init__(f"{op}: {status}: {message}")
        self.kind = kind  # not_found | exists | etag | precondition | bad_request | other
        self.op = op
        self.status = status
        self.message = message


class _CurrentRaced(Exception):
    """A concurrent promote made a version current while retire was disabling it."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def _short(message: str) -> str:
    # REST errors read "<METHOD> <url>: <message>"; keep the message
    head, sep, rest = message.partition(": ")
    return rest if sep and head.split(" ", 1)[0] in ("GET", "POST", "PATCH", "DELETE", "PUT") else message


# ---- the store --------------------------------------------------------------------------------------------


class GcpSecretManagerStore(StoreBase):
    """A :class:`~rotator.stores.base.SecretStore` on GCP Secret Manager (see the module docstring)."""

    def __init__(
        self,
        name: str,
        config: StoreConfig,
        client: Any,
        *,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        self.name = name
        self.config = config
        self._client = client
        self._g = gexc
        self._auth = auth_exc
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep or time.sleep
        self._random = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._cache: dict[str, tuple[float, _Secret | None]] = {}
        #: per secret, the etags this process's own writes replaced: a read answering one of them is stale
        self._superseded: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._closed = False
        #: the process's request quotas, and this store's (the documented ones, with the config's overrides)
        self._limits = limits if limits is not None else RateLimits()
        self._quotas = apply_overrides(GCP_QUOTAS, config.quotas)
        self._retryable = (
            gexc.TooManyRequests,
            gexc.ResourceExhausted,
            gexc.InternalServerError,
            gexc.ServiceUnavailable,
            gexc.GatewayTimeout,
            gexc.DeadlineExceeded,
        )

    def __repr__(self) -> str:
        return (
            f"GcpSecretManagerStore(name={self.name!r}, project={self.config.project!r}, "
            f"transport={self.config.transport!r})"
        )

    # -- naming ---------------------------------------------------------------------------------------------

    def _options(self, ref: TargetRef) -> TargetOptions | None:
        return ref.options if isinstance(ref.options, TargetOptions) else None

    def _project(self, ref: TargetRef) -> str:
        opts = self._options(ref)
        return opts.project if opts is not None and opts.project else self.config.project

    def _secret_name(self, ref: TargetRef) -> str:
        try:
            _check_secret_id(ref.secret)
        except ValueError as exc:
            raise StoreConflict(str(exc), store=self.name, secret=ref.secret) from None
        return f"projects/{self._project(ref)}/secrets/{ref.secret}"

    # -- request quotas ---------------------------------------------------------------------------------------

    def _charges(self, op: str, ref: TargetRef) -> tuple[Charge, ...]:
        """What one request of ``op`` on ``ref`` counts against: its project's access, read or write quota, and
        for AddSecretVersion and UpdateSecret the secret's own."""
        q = self._quotas
        project = f"projects/{self._project(ref)}"
        charges = [Charge(q[_OPERATION_QUOTA.get(op, "write")], project)]
        if op in _SECRET_WRITES:
            secret = f"{project}/secrets/{ref.secret}"
            charges += [Charge(q["secret_writes"], secret), Charge(q["secret_writes_per_minute"], secret)]
        return tuple(charges)

    def publish_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """A publish (bench/store_calls.py counts it): GetSecret, UpdateSecret (the entry), AddSecretVersion,
        AccessSecretVersion (the check by number), UpdateSecret (the conditional promote)."""
        cost: dict[Charge, int] = {}
        for op in ("GetSecret", "UpdateSecret", "AddSecretVersion", "AccessSecretVersion", "UpdateSecret"):
            for c in self._charges(op, ref):
                cost[c] = cost.get(c, 0) + 1
        return tuple(cost.items())

    def inspect_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """An inspect is one GetSecret (the versions rotator wrote are in its annotations)."""
        return tuple((c, 1) for c in self._charges("GetSecret", ref))

    # -- one API call: retries, accounting, translation ------------------------------------------------------

    def _call(self, op: str, ref: TargetRef, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run one API operation: one ``record_call`` per attempt.

        An idempotent operation (every read; UpdateSecret, which carries the etag; enable, disable, destroy
        and CreateSecret, whose repeat is refused harmlessly) is retried by ``google.api_core.retry.Retry`` on
        429, 500, 503, 504 and connection errors, with exponential backoff and jitter, at most
        ``retry.attempts`` times within ``retry.deadline``. AddSecretVersion is not idempotent (each call makes
        a version), and the client library gives it no default retry for that reason (only
        AccessSecretVersion has one, in the transport's ``_prep_wrapped_messages``): with
        ``idempotent=False`` only a 429 (refused, not carried out) is retried here; any other failure is
        raised for :meth:`_add_version` to look before it adds again.
        """
        from google.api_core import retry as gretry

        g, settings = self._g, self.config.retry
        attempts = 0
        charges = self._charges(op, ref)
        wait_until = time.monotonic() + settings.deadline.total_seconds()

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            self._limits.acquire(charges, deadline=wait_until)  # every attempt counts against the quotas
            sent = time.monotonic()
            try:
                result = fn()
            except g.GoogleAPICallError as exc:
                record_call(SERVICE, op, exc.code if exc.code is not None else type(exc).__name__)
                self._limits.answered(charges, time.monotonic() - sent)
                if isinstance(exc, g.TooManyRequests | g.ResourceExhausted):
                    # RESOURCE_EXHAUSTED carries no Retry-After; its ErrorInfo names the quota that was full
                    self._limits.throttled(_refused(charges, exc))
                raise
            except self._auth.RefreshError as exc:
                record_call(SERVICE, op, "RefreshError")
                raise StorePermissionError(
                    f"{op}: could not get an access token for the configured Google credentials",
                    store=self.name,
                    secret=ref.secret,
                ) from exc
            except (OSError, self._auth.TransportError) as exc:
                record_call(SERVICE, op, type(exc).__name__)
                raise
            self._limits.answered(charges, time.monotonic() - sent)
            record_call(SERVICE, op, 200)
            return result

        def retryable(exc: Exception) -> bool:
            if attempts >= settings.attempts:
                return False
            if not idempotent:
                return isinstance(exc, g.TooManyRequests | g.ResourceExhausted)
            return isinstance(exc, (*self._retryable, OSError, self._auth.TransportError))

        def on_error(exc: Exception) -> None:
            status = getattr(exc, "code", None) or type(exc).__name__
            _log().info("gcp_retry", store=self.name, target=ref.secret, operation=op, status=str(status))

        policy = gretry.Retry(
            predicate=retryable,
            initial=settings.initial_backoff.total_seconds(),
            maximum=settings.max_backoff.total_seconds(),
            multiplier=settings.multiplier,
            timeout=settings.deadline.total_seconds(),
            on_error=on_error,
        )
        try:
            return policy(attempt)()
        except g.RetryError as exc:  # the deadline passed
            cause = exc.cause
            if isinstance(cause, g.GoogleAPICallError):
                raise self._translate(op, ref, cause, attempts) from cause
            raise self._unreachable(op, ref, cause, attempts) from exc
        except g.GoogleAPICallError as exc:
            raise self._translate(op, ref, exc, attempts) from exc
        except (OSError, self._auth.TransportError) as exc:
            raise self._unreachable(op, ref, exc, attempts) from exc

    def _unreachable(self, op: str, ref: TargetRef, exc: BaseException | None, attempts: int) -> StoreUnavailable:
        return StoreUnavailable(
            f"{op}: Secret Manager could not be reached after {attempts} attempts ({type(exc).__name__})",
            store=self.name,
            secret=ref.secret,
        )

    def _status_name(self, exc: Any) -> str:
        code = getattr(exc, "grpc_status_code", None)
        if code is not None and hasattr(code, "name"):
            return str(code.name)
        response = getattr(exc, "response", None)
        if response is not None and hasattr(response, "json"):
            with contextlib.suppress(Exception):
                status = response.json().get("error", {}).get("status")
                if isinstance(status, str):
                    return status
        return ""

    def _translate(self, op: str, ref: TargetRef, exc: Any, attempts: int) -> Exception:
        g = self._g
        status = self._status_name(exc) or str(exc.code)
        message = _short(str(exc.message))
        if isinstance(exc, g.Forbidden):  # PermissionDenied over gRPC, Forbidden over REST
            perm, role = PERMISSIONS.get(op, ("secretmanager.*", "roles/secretmanager.admin"))
            return StorePermissionError(
                f"permission denied: {op} needs {perm}; grant {role} ({CUSTOM_ROLE_HINT}) to rotator's service account",
                store=self.name,
                secret=ref.secret,
            )
        if isinstance(exc, g.Unauthorized):
            return StorePermissionError(
                f"{op}: the Google credentials were rejected (401 {status})", store=self.name, secret=ref.secret
            )
        if isinstance(exc, self._retryable):
            return StoreUnavailable(
                f"{op} kept failing ({exc.code} {status}) after {attempts} attempts",
                store=self.name,
                secret=ref.secret,
            )
        if isinstance(exc, g.NotFound):
            kind = "not_found"
        elif isinstance(exc, g.AlreadyExists) or status == "ALREADY_EXISTS":
            kind = "exists"
        elif isinstance(exc, g.Aborted | g.Conflict) or status == "ABORTED":
            kind = "etag"
        elif isinstance(exc, g.BadRequest) and status == "FAILED_PRECONDITION":
            kind = "precondition"
        elif isinstance(exc, g.BadRequest):
            kind = "bad_request"
        else:
            kind = "other"
        return _ApiError(kind, op, status, message)

    @contextlib.contextmanager
    def _boundary(self, ref: TargetRef) -> Iterator[None]:
        """Turn an :class:`_ApiError` that no method handled into a StoreError."""
        try:
            yield
        except _ApiError as exc:
            cls: type[StoreError]
            if exc.kind == "not_found":
                cls = StoreNotFound
            elif exc.kind in ("exists", "etag", "precondition"):
                cls = StoreConflict
            else:
                cls = StoreError
            raise cls(f"{exc.op} failed: {exc.status}: {exc.message}", store=self.name, secret=ref.secret) from exc

    # -- reads and writes of the secret's metadata -----------------------------------------------------------

    def _to_secret(self, pb: Any) -> _Secret:
        return _Secret(
            name=str(pb.name),
            etag=str(pb.etag),
            labels=dict(pb.labels),
            annotations=dict(pb.annotations),
            aliases={str(k): int(v) for k, v in pb.version_aliases.items()},
        )

    def _remember(self, ref: TargetRef, secret: _Secret | None) -> None:
        with self._lock:
            self._cache[self._secret_name(ref)] = (time.monotonic(), secret)

    def _forget(self, ref: TargetRef) -> None:
        with self._lock:
            self._cache.pop(self._secret_name(ref), None)

    def _cached(self, ref: TargetRef, max_age: float | None) -> tuple[bool, _Secret | None]:
        with self._lock:
            hit = self._cache.get(self._secret_name(ref))
        if hit is None or (max_age is not None and time.monotonic() - hit[0] > max_age):
            return False, None
        return True, hit[1]

    def _get(self, ref: TargetRef) -> _Secret | None:
        """GetSecret, remembered; ``None`` when the secret does not exist."""
        name = self._secret_name(ref)
        try:
            pb = self._call("GetSecret", ref, lambda: self._client.get_secret(**self._kw({"name": name})))
        except _ApiError as exc:
            if exc.kind == "not_found":
                self._remember(ref, None)
                return None
            raise
        secret = self._to_secret(pb)
        with self._lock:
            stale = secret.etag in self._superseded.get(name, ())
        if stale:
            # reads of a secret's metadata are eventually consistent: this one predates our own last write
            hit, known = self._cached(ref, None)
            if hit and known is not None:
                _log().info("gcp_stale_read", store=self.name, target=ref.secret)
                return known
        self._remember(ref, secret)
        return secret

    def _load(self, ref: TargetRef) -> _Secret | None:
        """The secret as a base for a write: a copy read less than ``cache_for`` ago, else a fresh read."""
        hit, secret = self._cached(ref, self.config.cache_for.total_seconds())
        return secret if hit else self._get(ref)

    def _kw(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"request": request, "retry": None, "timeout": self.config.timeout.total_seconds()}

    def _patch(self, ref: TargetRef, secret: _Secret, change: _Change) -> _Secret:
        """UpdateSecret with the etag; raises ``_ApiError(kind="etag"|"precondition")`` on a mismatch."""
        mask = [
            path
            for path, old, new in (
                ("labels", secret.labels, change.labels),
                ("annotations", secret.annotations, change.annotations),
                ("version_aliases", secret.aliases, change.aliases),
            )
            if old != new
        ]
        request = {
            "secret": {
                "name": secret.name,
                "etag": secret.etag,
                "labels": change.labels,
                "annotations": change.annotations,
                "version_aliases": change.aliases,
            },
            "update_mask": {"paths": mask},
        }
        try:
            pb = self._call("UpdateSecret", ref, lambda: self._client.update_secret(**self._kw(request)))
        except _ApiError:
            self._forget(ref)
            raise
        updated = self._to_secret(pb)
        with self._lock:
            self._superseded.setdefault(self._secret_name(ref), deque(maxlen=32)).append(secret.etag)
        self._remember(ref, updated)
        return updated

    def _update(self, ref: TargetRef, secret: _Secret | None, mutate: Callable[[_Secret], _Change | None]) -> _Secret:
        """Apply ``mutate`` with an etag-guarded PATCH, re-reading and redoing it after a concurrent change.

        ``mutate`` returns ``None`` when there is nothing (left) to change. Raises StoreNotFound when the
        secret does not exist (any more), StoreUnavailable when other writers kept winning.
        """
        for attempt in range(self.config.conflict_retries):
            if secret is None:
                raise StoreNotFound("the secret does not exist", store=self.name, secret=ref.secret)
            change = mutate(secret)
            if change is None or (
                change.labels == secret.labels
                and change.annotations == secret.annotations
                and change.aliases == secret.aliases
            ):
                return secret
            try:
                return self._patch(ref, secret, self._fit(ref, change))
            except _ApiError as exc:
                if exc.kind not in ("etag", "precondition"):
                    raise
                self._conflict_backoff(ref, attempt)
                secret = self._get(ref)
        raise StoreUnavailable(
            f"gave up after {self.config.conflict_retries} concurrent updates of the secret",
            store=self.name,
            secret=ref.secret,
        )

    def _conflict_backoff(self, ref: TargetRef, attempt: int) -> None:
        """Wait before re-reading after an etag conflict: another writer is at work (or the read was stale,
        metadata reads may lag), and Secret Manager allows only a few writes a second per secret
        (https://cloud.google.com/secret-manager/quotas), so retrying at once mostly loses again."""
        retry = self.config.retry
        delay = min(
            retry.initial_backoff.total_seconds() * retry.multiplier**attempt, retry.max_backoff.total_seconds()
        )
        _log().info("gcp_etag_conflict", store=self.name, target=ref.secret, attempt=attempt + 1)
        self._sleep(delay * self._random.uniform(0.5, 1.0))

    def _fit(self, ref: TargetRef, change: _Change) -> _Change:
        """Drop the oldest retired entries beyond ``keep_retired``, then while over the annotations budget.

        With ``destroy_after`` set, a retired entry is the only record of a version still to be destroyed (the
        entry of a destroyed version is dropped by the retire that destroys it), so it is never dropped: over
        the budget it is shortened to what destroying needs (key, state, retired_at). ``keep_retired`` only
        bounds the entries of versions that stay disabled for good.
        """
        ann = dict(change.annotations)
        entries = _entries_of(ann)
        retired = sorted(v for v, e in entries.items() if e.state == RETIRED)
        if self.config.destroy_after is not None:
            pending, retired = retired, []
        else:
            pending = []
        excess = max(0, len(retired) - self.config.keep_retired)
        for v in retired[:excess]:
            del ann[_entry_key(v)]
        retired = retired[excess:]
        while _annotations_size(ann) > ANNOTATION_BUDGET and retired:
            del ann[_entry_key(retired.pop(0))]
        for v in pending:
            if _annotations_size(ann) <= ANNOTATION_BUDGET:
                break
            e = entries[v]
            ann[_entry_key(v)] = _Entry(v, e.key_id, RETIRED, retired_at=e.retired_at).dump()
        if _annotations_size(ann) >= ANNOTATION_LIMIT:
            raise StoreConflict(
                f"the secret's annotations would exceed Secret Manager's 16 KiB ({_annotations_size(ann)} bytes); "
                "remove annotations that rotator did not write",
                store=self.name,
                secret=ref.secret,
            )
        return replace(change, annotations=ann)

    # -- versions -------------------------------------------------------------------------------------------

    def _add_version(self, ref: TargetRef, value: SecretText, *, after: int = 0) -> int:
        """AddSecretVersion, never resent blindly: after a failure that leaves open whether the version was
        made (503, 500, DEADLINE_EXCEEDED, a reset connection), the versions above ``after`` (the highest
        number known before) are read back by number and compared with ``value`` (CRC32C-checked bytes); only
        when none holds it is the version added again."""
        import google_crc32c

        data = value.reveal().encode()
        request = {
            "parent": self._secret_name(ref),
            "payload": {"data": data, "data_crc32c": google_crc32c.value(data)},
        }
        settings = self.config.retry
        try:
            for attempt in range(settings.attempts):
                try:
                    pb = self._call(
                        "AddSecretVersion",
                        ref,
                        lambda: self._client.add_secret_version(**self._kw(request)),
                        idempotent=False,
                    )
                    break
                except StoreUnavailable:
                    found = self._added_already(ref, data, after)
                    if found is not None:
                        _log().info("gcp_add_version_had_landed", store=self.name, target=ref.secret, version=found)
                        return found
                    if attempt + 1 == settings.attempts:
                        raise
                    delay = min(
                        settings.initial_backoff.total_seconds() * settings.multiplier**attempt,
                        settings.max_backoff.total_seconds(),
                    )
                    self._sleep(delay * self._random.uniform(0.5, 1.0))
        except _ApiError as exc:
            if exc.kind == "not_found":
                self._forget(ref)
                raise StoreNotFound(
                    "the secret was deleted while a version was being added", store=self.name, secret=ref.secret
                ) from exc
            if exc.kind == "bad_request" and "checksum" in exc.message.lower():
                raise StoreIntegrityError(
                    "Secret Manager rejected the payload's CRC32C checksum (corrupted in transit)",
                    store=self.name,
                    secret=ref.secret,
                ) from exc
            raise
        return int(str(pb.name).rsplit("/", 1)[1])

    def _added_already(self, ref: TargetRef, data: bytes, after: int, *, probes: int = 25) -> int | None:
        """The number of an enabled version above ``after`` whose payload is ``data``, else None.

        Versions are numbered 1, 2, 3... and never reused, so the one a lost addVersion made is ``after + 1``
        or, when others added versions meanwhile, a little above. They are read by number (AccessSecretVersion:
        reading a version by its number is the strongly consistent read, unlike listing, aliases and
        ``latest``), upwards until a number that does not exist."""
        for number in range(after + 1, after + 1 + probes):
            status, payload = self._access(ref, number)
            if status == "missing":
                return None
            if status == "ok" and payload == data:
                return number
        return None

    def _access(self, ref: TargetRef, version: int) -> tuple[Literal["ok", "missing", "unusable"], bytes]:
        """The payload of a version: ``("ok", data)``, ``("missing", b"")`` when the version does not exist,
        ``("unusable", b"")`` when it is disabled or destroyed."""
        import google_crc32c

        name = f"{self._secret_name(ref)}/versions/{version}"
        try:
            pb = self._call(
                "AccessSecretVersion", ref, lambda: self._client.access_secret_version(**self._kw({"name": name}))
            )
        except _ApiError as exc:
            if exc.kind in ("not_found", "precondition"):
                return ("missing" if exc.kind == "not_found" else "unusable"), b""
            raise
        data = bytes(pb.payload.data)
        expected = int(pb.payload.data_crc32c or 0)
        if expected and google_crc32c.value(data) != expected:
            raise StoreIntegrityError(
                f"version {version} failed its CRC32C check on read", store=self.name, secret=ref.secret
            )
        return "ok", data

    def _version_state(self, ref: TargetRef, version: int) -> tuple[int, datetime | None] | None:
        """GetSecretVersion: ``(state, created)``, or ``None`` when the version does not exist."""
        name = f"{self._secret_name(ref)}/versions/{version}"
        try:
            pb = self._call(
                "GetSecretVersion", ref, lambda: self._client.get_secret_version(**self._kw({"name": name}))
            )
        except _ApiError as exc:
            if exc.kind == "not_found":
                return None
            raise
        created = pb.create_time
        return int(pb.state), (created if isinstance(created, datetime) else None)

    def _set_state(self, ref: TargetRef, version: int, op: str) -> bool:
        """Disable or destroy a version. ``False`` when it no longer exists or is already destroyed."""
        name = f"{self._secret_name(ref)}/versions/{version}"
        method = {
            "DisableSecretVersion": self._client.disable_secret_version,
            "DestroySecretVersion": self._client.destroy_secret_version,
        }[op]
        try:
            self._call(op, ref, lambda: method(**self._kw({"name": name})))
        except _ApiError as exc:
            if exc.kind in ("not_found", "precondition"):
                return False
            raise
        return True

    def _list_first_page(self, ref: TargetRef, size: int = 25) -> list[tuple[int, int, datetime | None]]:
        """The newest ``size`` versions as ``(number, state, created)``: one ListSecretVersions call."""
        request = {"parent": self._secret_name(ref), "page_size": size}
        pager = self._call("ListSecretVersions", ref, lambda: self._client.list_secret_versions(**self._kw(request)))
        out = []
        for v in pager.versions:  # the first page only: the pager would fetch more pages lazily
            created = v.create_time
            out.append(
                (int(str(v.name).rsplit("/", 1)[1]), int(v.state), created if isinstance(created, datetime) else None)
            )
        return out

    # -- SecretStore ----------------------------------------------------------------------------------------

    def inspect(self, ref: TargetRef) -> SecretState:
        """One GetSecret in steady state; one GetSecretVersion more per version staged but not yet promoted,
        and one ListSecretVersions for a secret rotator has not written to yet (to tell a foreign value).

        Raises: StoreUnavailable, StorePermissionError.
        """
        with self._boundary(ref):
            secret = self._get(ref)
            if secret is None:
                return SecretState(exists=False)
            entries = secret.entries
            if not entries:
                return self._inspect_unmanaged(ref)
            current = secret.aliases.get(CURRENT)
            versions = []
            for e in sorted(entries.values(), key=lambda e: -e.version):
                created, enabled = _parse_time(e.at), e.state != RETIRED
                if e.state == STAGED and e.version != current:
                    found = self._version_state(ref, e.version)
                    if found is None:  # a stage that died before addVersion
                        continue
                    enabled, created = found[0] == _ENABLED, found[1] or created
                versions.append(StoredVersion(str(e.version), e.key_id, created, e.version == current, enabled))
            cur = entries.get(current) if current is not None else None
            promoted = _parse_time(cur.promoted_at) if cur else None
            return SecretState(
                exists=True,
                versions=tuple(versions),
                current_key_id=cur.key_id if cur else None,
                # aliases are eventually consistent: every reader has the new key only after the lag
                current_since=promoted + self.config.visibility_lag if promoted else None,
                foreign=current is not None and cur is None,
            )

    def _inspect_unmanaged(self, ref: TargetRef) -> SecretState:
        listed = self._list_first_page(ref)
        # what readers of `latest` get: the most recently created version (newest first), if it is enabled
        latest = listed[0][0] if listed and listed[0][1] == _ENABLED else None
        versions = tuple(
            StoredVersion(str(n), None, created, n == latest, state == _ENABLED) for n, state, created in listed
        )
        return SecretState(exists=True, versions=versions, foreign=latest is not None)

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        """Add ``value`` as a new version recording ``meta.key_id`` (creating the secret when missing).

        Idempotent: a key id already recorded is not added again; a stage that died between recording the
        entry and ``addVersion`` is finished (the version is read back and compared first).
        Raises: StoreConflict (secret of another policy, or holding foreign versions without ``adopt``),
        StoreIntegrityError (checksum refused), StoreUnavailable, StorePermissionError.
        """
        with self._boundary(ref):
            key_id = meta.key_id
            secret = self._load(ref)
            for attempt in range(self.config.conflict_retries):
                if secret is None:
                    created = self._create(ref, meta)
                    if created is None:  # someone else created it first
                        secret = self._get(ref)
                        continue
                    self._add_and_settle(ref, created, 1, value, meta)
                    return
                self._check_owner(ref, secret)
                mine = secret.of_key(key_id)
                if any(e.state != STAGED for e in mine):
                    return  # added and promoted (or retired) before
                predicted: int | None = None
                if mine:
                    # an earlier stage recorded the entry: did its addVersion happen?
                    staged = mine[0].version
                    status, data = self._access(ref, staged)
                    if status == "ok" and _holds(data, value, key_id):
                        return
                    predicted = staged if status == "missing" else None
                    self._add_and_settle(ref, secret, predicted, value, meta, drop=staged)
                    return
                head = secret.head
                if not secret.entries:
                    listed = self._list_first_page(ref)
                    head = max([head, *(n for n, _, _ in listed)])
                    opts = self._options(ref)
                    if any(state == _ENABLED for _, state, _ in listed) and not (opts and opts.adopt):
                        raise StoreConflict(
                            "the secret holds versions rotator did not write; set `adopt: true` on the target "
                            "to take it over, or point the target at a new secret",
                            store=self.name,
                            secret=ref.secret,
                        )
                predicted = head + 1
                entry = self._new_entry(predicted, meta)
                change = _Change(
                    labels=self._labels(ref, secret.labels),
                    annotations={**secret.annotations, _entry_key(predicted): entry.dump(), SCHEMA_KEY: SCHEMA},
                    aliases=dict(secret.aliases),
                )
                try:
                    recorded = self._patch(ref, secret, self._fit(ref, change))
                except _ApiError as exc:
                    if exc.kind not in ("etag", "precondition"):
                        raise
                    self._conflict_backoff(ref, attempt)
                    secret = self._get(ref)
                    continue
                self._add_and_settle(ref, recorded, predicted, value, meta)
                return
            raise StoreUnavailable(
                f"gave up after {self.config.conflict_retries} concurrent updates of the secret",
                store=self.name,
                secret=ref.secret,
            )

    def _new_entry(self, version: int, meta: VersionMeta) -> _Entry:
        expires = _iso(meta.expires_at) if meta.expires_at else None
        return _Entry(version, meta.key_id, STAGED, at=_iso(self._clock()), expires=expires)

    def _labels(self, ref: TargetRef, labels: dict[str, str]) -> dict[str, str]:
        return {**labels, MANAGED_BY[0]: MANAGED_BY[1], POLICY_LABEL: ref.policy}

    def _check_owner(self, ref: TargetRef, secret: _Secret) -> None:
        owner = secret.labels.get(POLICY_LABEL)
        if owner and owner != ref.policy:
            raise StoreConflict(
                f"the secret is managed by rotator policy {owner!r}, not {ref.policy!r}",
                store=self.name,
                secret=ref.secret,
            )

    def _create(self, ref: TargetRef, meta: VersionMeta) -> _Secret | None:
        """CreateSecret with labels and the entry of version 1; ``None`` when it already exists."""
        opts = self._options(ref)
        replication = (opts.replication if opts and opts.replication else None) or self.config.replication
        if isinstance(replication, UserManagedReplication):
            repl: dict[str, Any] = {"user_managed": {"replicas": [{"location": loc} for loc in replication.locations]}}
        else:
            repl = {"automatic": {}}
        request = {
            "parent": f"projects/{self._project(ref)}",
            "secret_id": ref.secret,
            "secret": {
                "replication": repl,
                "labels": self._labels(ref, {}),
                "annotations": {_entry_key(1): self._new_entry(1, meta).dump(), SCHEMA_KEY: SCHEMA},
            },
        }
        try:
            pb = self._call("CreateSecret", ref, lambda: self._client.create_secret(**self._kw(request)))
        except _ApiError as exc:
            if exc.kind in ("exists", "etag"):
                return None
            raise
        created = self._to_secret(pb)
        self._remember(ref, created)
        return created

    def _add_and_settle(
        self,
        ref: TargetRef,
        secret: _Secret,
        predicted: int | None,
        value: SecretText,
        meta: VersionMeta,
        *,
        drop: int | None = None,
    ) -> None:
        """addVersion; when it got another number than recorded, move the entry there (etag-guarded)."""
        number = self._add_version(ref, value, after=predicted - 1 if predicted else secret.head)
        if number == predicted:
            return
        wrong = {v for v in (predicted, drop) if v is not None}
        _log().info("gcp_version_number_moved", store=self.name, target=ref.secret, version=number)
        entry = self._new_entry(number, meta)

        def mutate(s: _Secret) -> _Change:
            ann = dict(s.annotations)
            for v in wrong:
                old = _Entry.load(v, ann.get(_entry_key(v), ""))
                if old is not None and old.key_id == meta.key_id and old.state == STAGED:
                    del ann[_entry_key(v)]
            # version `number` holds this key whatever the metadata said before
            ann[_entry_key(number)] = entry.dump()
            return _Change(self._labels(ref, s.labels), ann, dict(s.aliases))

        self._update(ref, secret, mutate)

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        """The value of the newest enabled version holding ``key_id``: one AccessSecretVersion.

        Raises: StoreNotFound (no such version, or it is disabled), StoreIntegrityError (CRC32C),
        StoreUnavailable, StorePermissionError.
        """
        with self._boundary(ref):
            hit, secret = self._cached(ref, None)
            for attempt in ("cached", "fresh") if hit else ("fresh",):
                if attempt == "fresh":
                    secret = self._get(ref)
                if secret is None:
                    continue
                for e in secret.of_key(key_id):
                    if e.state == RETIRED:
                        continue
                    status, data = self._access(ref, e.version)
                    if status == "ok":
                        try:
                            return SecretText(data.decode())
                        except UnicodeDecodeError:
                            raise StoreIntegrityError(
                                f"version {e.version} is not UTF-8 text", store=self.name, secret=ref.secret
                            ) from None
            raise StoreNotFound(f"no enabled version holds key {key_id}", store=self.name, secret=ref.secret)

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        """Point the alias ``current`` at the version holding ``key_id`` (``previous`` at the one before) and
        record when: one UpdateSecret. Promoting the current key again changes nothing.

        Compare-and-set (``expect_current`` other than ``ANY_CURRENT``): the alias map is only changed if the
        version the alias ``current`` names still holds ``expect_current`` (``None``: no alias, or a version
        rotator did not record). The check and the switch are one conditional write: the UpdateSecret carries
        the etag read together with the alias, and Secret Manager refuses it when the secret changed since
        ("etag: ... If this field is set and does not match the current etag, the request fails",
        https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets#Secret.FIELDS.etag).
        On a mismatch the secret is read again (after a backoff) and the check redone on what it holds now.

        Raises: StoreNotFound (nothing staged for key_id), StoreConflict (its versions are retired),
        StorePreconditionFailed (the current version no longer holds ``expect_current``), StoreUnavailable,
        StorePermissionError.
        """
        with self._boundary(ref):
            now = _iso(self._clock())

            def held(s: _Secret) -> str | None:
                current = s.aliases.get(CURRENT)
                entry = s.entries.get(current) if current is not None else None
                return entry.key_id if entry is not None else None

            def mutate(s: _Secret) -> _Change | None:
                mine = s.of_key(key_id)
                if not mine:
                    raise StoreNotFound(f"nothing staged for key {key_id}", store=self.name, secret=ref.secret)
                usable = [e for e in mine if e.state != RETIRED]
                if not usable:
                    raise StoreConflict(
                        f"the versions holding key {key_id} are retired", store=self.name, secret=ref.secret
                    )
                target = usable[0]
                current = s.aliases.get(CURRENT)
                if current == target.version and target.state == LIVE:
                    return None
                if current != target.version and expect_current is not ANY_CURRENT and held(s) != expect_current:
                    raise StorePreconditionFailed(
                        f"not promoting key {key_id}: the current version holds key {held(s) or 'none'}, "
                        f"not {expect_current or 'none'} as read before",
                        store=self.name,
                        secret=ref.secret,
                    )
                aliases = dict(s.aliases)
                if current is not None and current != target.version:
                    aliases[PREVIOUS] = current
                aliases[CURRENT] = target.version
                live = replace(target, state=LIVE, promoted_at=now)
                return _Change(dict(s.labels), {**s.annotations, _entry_key(target.version): live.dump()}, aliases)

            secret = self._load(ref)
            if expect_current is not ANY_CURRENT and secret is not None and held(secret) != expect_current:
                # a copy from the cache may be older than what the caller read: judge on a fresh one
                secret = self._get(ref)
            try:
                self._update(ref, secret, mutate)
            except _ApiError as exc:
                if exc.kind == "bad_request":  # the alias names a version that does not exist
                    raise StoreNotFound(
                        f"the version staged for key {key_id} does not exist; stage it again",
                        store=self.name,
                        secret=ref.secret,
                    ) from exc
                raise

    def retire(self, ref: TargetRef, key_id: str) -> None:
        """Disable every version holding ``key_id`` and record it; destroy versions disabled at least
        ``destroy_after`` ago. Calls: one DisableSecretVersion per version, one UpdateSecret.

        Idempotent; a key rotator never wrote here is a no-op. Raises StoreConflict for the current key (and
        re-enables a version that a concurrent promote made current meanwhile), StoreUnavailable,
        StorePermissionError.
        """
        with self._boundary(ref):
            secret = self._load(ref)
            if secret is None:
                return
            mine = secret.of_key(key_id)
            if any(e.version == secret.aliases.get(CURRENT) for e in mine):
                raise StoreConflict(
                    f"key {key_id} is the current version; promote another key first",
                    store=self.name,
                    secret=ref.secret,
                )
            now = self._clock()
            disabled: set[int] = set()
            gone: set[int] = set()
            for e in mine:
                if e.state != RETIRED:
                    (disabled if self._set_state(ref, e.version, "DisableSecretVersion") else gone).add(e.version)
            destroyed: set[int] = set()
            if self.config.destroy_after is not None:
                aliased = set(secret.aliases.values())
                for e in secret.entries.values():
                    when = _parse_time(e.retired_at)
                    if (
                        e.state == RETIRED
                        and when is not None
                        and when + self.config.destroy_after <= now
                        and e.version not in aliased
                    ):
                        self._set_state(ref, e.version, "DestroySecretVersion")
                        destroyed.add(e.version)
            if not (disabled or gone or destroyed):
                return
            stamp = _iso(now)

            def mutate(s: _Secret) -> _Change:
                ann, aliases = dict(s.annotations), dict(s.aliases)
                if aliases.get(CURRENT) in disabled:
                    raise _CurrentRaced(aliases[CURRENT])
                for v in disabled:
                    old = _Entry.load(v, ann.get(_entry_key(v), ""))
                    if old is not None and old.key_id == key_id:
                        ann[_entry_key(v)] = replace(old, state=RETIRED, retired_at=stamp).dump()
                for v in gone | destroyed:
                    ann.pop(_entry_key(v), None)
                if aliases.get(PREVIOUS) in disabled | gone | destroyed:
                    del aliases[PREVIOUS]
                return _Change(dict(s.labels), ann, aliases)

            try:
                updated = self._update(ref, secret, mutate)
            except _CurrentRaced as raced:
                name = f"{self._secret_name(ref)}/versions/{raced.version}"
                self._call(
                    "EnableSecretVersion", ref, lambda: self._client.enable_secret_version(**self._kw({"name": name}))
                )
                raise StoreConflict(
                    f"key {key_id} became current while it was being retired; it was re-enabled",
                    store=self.name,
                    secret=ref.secret,
                ) from None
            cur = updated.aliases.get(CURRENT)
            if cur is not None and any(e.state == RETIRED and e.version > cur for e in updated.entries.values()):
                self._republish_current(ref, updated)

    def _republish_current(self, ref: TargetRef, secret: _Secret) -> None:
        """Add the current key again as the newest version and point ``current`` at it.

        ``latest`` is "the most recently created SecretVersion" whatever its state
        (https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/access), so a
        version disabled above the current one (a key staged and never promoted, then retired) would make
        every read of ``latest`` fail. Adding a version is the only way to make one newest. Crash-safe like
        :meth:`stage`: the entry is recorded before ``addVersion``; the older version holding the key stays
        enabled and is retired with the key. Costs an access, two UpdateSecret and an addVersion, only then.
        """
        current = secret.aliases.get(CURRENT)
        entry = secret.entries.get(current) if current is not None else None
        if entry is None or entry.state != LIVE:
            return
        status, data = self._access(ref, entry.version)
        if status != "ok":
            return
        stamp = _iso(self._clock())
        predicted = secret.head + 1

        def record(s: _Secret) -> _Change | None:
            if s.aliases.get(CURRENT) != current or _entry_key(predicted) in s.annotations:
                return None  # promoted or staged meanwhile: that newer version is what readers get
            staged = replace(entry, version=predicted, state=STAGED, at=stamp)
            return _Change(dict(s.labels), {**s.annotations, _entry_key(predicted): staged.dump()}, dict(s.aliases))

        recorded = self._update(ref, secret, record)
        if _Entry.load(predicted, recorded.annotations.get(_entry_key(predicted), "")) != replace(
            entry, version=predicted, state=STAGED, at=stamp
        ):
            return
        try:
            value = SecretText(data.decode())
        except UnicodeDecodeError:
            return
        number = self._add_version(ref, value, after=predicted - 1)
        _log().info("gcp_current_republished", store=self.name, target=ref.secret, version=number)

        def settle(s: _Secret) -> _Change:
            ann, aliases = dict(s.annotations), dict(s.aliases)
            if number != predicted:
                old = _Entry.load(predicted, ann.get(_entry_key(predicted), ""))
                if old is not None and old.key_id == entry.key_id and old.state == STAGED:
                    del ann[_entry_key(predicted)]
            state = STAGED
            if aliases.get(CURRENT) == current:
                aliases[CURRENT], state = number, LIVE
            ann[_entry_key(number)] = replace(entry, version=number, state=state, at=stamp).dump()
            return _Change(dict(s.labels), ann, aliases)

        self._update(ref, recorded, settle)

    def close(self) -> None:
        """Close the client's channel or session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        transport = getattr(self._client, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()


CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class _UnsupportedCredentials(ValueError):
    pass


def _credentials_from_file(path: str) -> Any:
    """Credentials from a key file, loaded by its declared ``type`` (google-auth's generic loader is deprecated
    because it trusts any type): ``service_account``, ``authorized_user`` or ``external_account`` (workload
    identity federation, file/URL- or AWS-sourced)."""
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
    if kind == "authorized_user":
        from google.oauth2 import credentials as user_credentials

        return user_credentials.Credentials.from_authorized_user_info(info, scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
    if kind == "external_account":
        source = info.get("credential_source") or {}
        if str(source.get("environment_id", "")).startswith("aws"):
            from google.auth import aws

            return aws.Credentials.from_info(info, scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
        from google.auth import identity_pool

        return identity_pool.Credentials.from_info(info, scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
    raise _UnsupportedCredentials(
        f"unsupported credentials type {kind!r}: use a service_account, authorized_user or external_account file, "
        "or leave credentials_file unset to use Application Default Credentials"
    )


def open_store(
    name: str,
    config: BaseModel,
    *,
    credentials: Any = None,
    client_options: dict[str, Any] | None = None,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
    limits: RateLimits | None = None,
    **_: Any,
) -> SecretStore:
    """Open the GCP store ``name``. Credentials: ``credentials`` if given, else ``credentials_file``, else
    Application Default Credentials (workload identity, the metadata server, ``GOOGLE_APPLICATION_CREDENTIALS``,
    ``gcloud auth application-default login``).

    Raises: MissingExtraError (``momento-rotator[gcp]`` not installed), StorePermissionError (no usable credentials).
    """
    cfg = config if isinstance(config, StoreConfig) else StoreConfig.model_validate(config.model_dump())
    try:
        import google_crc32c  # noqa: F401 - checked here so a missing extra fails at open time
        from google.auth import exceptions as auth_exc
        from google.cloud import secretmanager
    except ImportError as exc:
        raise MissingExtraError("gcp", exc.name or "google.cloud.secretmanager") from exc
    options: dict[str, Any] = {}
    if cfg.endpoint:
        options["api_endpoint"] = cfg.endpoint
    options.update(client_options or {})
    creds = credentials
    if creds is None and cfg.credentials_file:
        try:
            creds = _credentials_from_file(cfg.credentials_file)
        except _UnsupportedCredentials as exc:
            raise StorePermissionError(f"credentials_file {cfg.credentials_file!r}: {exc}", store=name) from exc
        except (OSError, ValueError, auth_exc.GoogleAuthError) as exc:
            raise StorePermissionError(
                f"could not load credentials_file {cfg.credentials_file!r}: {type(exc).__name__}", store=name
            ) from exc
    try:
        client = secretmanager.SecretManagerServiceClient(
            transport=cfg.transport, credentials=creds, client_options=options
        )
    except auth_exc.DefaultCredentialsError as exc:
        raise StorePermissionError(
            "no Google credentials found: run on GCP with a service account (workload identity), set "
            "GOOGLE_APPLICATION_CREDENTIALS or the store's credentials_file, or run "
            "`gcloud auth application-default login`",
            store=name,
        ) from exc
    _widen_rest_pool(client)
    return GcpSecretManagerStore(name, cfg, client, clock=clock, sleep=sleep, limits=limits)


def _widen_rest_pool(client: Any) -> None:
    """The REST transport's session (google-auth's ``AuthorizedSession``, a ``requests.Session``) keeps requests'
    default pool of 10 connections: a pass at concurrency 16 would open and drop connections on every burst, so
    its adapters get ``POOL_CONNECTIONS``. (gRPC multiplexes every call over one HTTP/2 channel: nothing to do.)
    """
    session = getattr(getattr(client, "transport", None), "_session", None)
    if session is None or not hasattr(session, "mount"):
        return
    from requests.adapters import HTTPAdapter

    for prefix, old in list(session.adapters.items()):
        if isinstance(old, HTTPAdapter):
            session.mount(
                prefix,
                HTTPAdapter(
                    pool_connections=POOL_CONNECTIONS, pool_maxsize=POOL_CONNECTIONS, max_retries=old.max_retries
                ),
            )
            old.close()


def _open(spec: StoreSpec, context: StoreContext) -> SecretStore:
    return open_store(spec.name, spec.config, **{"clock": context.clock, "limits": context.limits, **context.options})


#: the ``gcp`` store type, registered under the entry point group ``rotator.stores``
STORE_TYPE = StoreType(
    name="gcp",
    config=StoreConfig,
    target=TargetOptions,
    open=_open,
    extra="gcp",
    sdk="google.cloud.secretmanager",
)
