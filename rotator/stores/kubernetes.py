"""Kubernetes Secrets as a rotator store (extra ``momento-rotator[k8s]``), built only on the store plug-in surface.

How rotator maps its store contract onto a ``core/v1`` Secret (docs/stores/kubernetes.md says it for users):

- **One value per data entry, no native versions.** ``data[<key>]`` is the current value: what consumers
  mount, read as an environment variable or sync with External Secrets. The previous value(s) rotator still
  needs (not yet retired: the old key during grace, so that ``read(ref, old)`` works and an older key can be
  promoted back) are in ``data["<key>.v<N>"]``, ``N`` the version number. Retire removes the version's data
  entry (the value is gone) and marks it disabled in the history; the Secret is never deleted.
- **History in annotations, never a value.** ``rotator.momento/versions`` is a JSON list of
  ``{version, key_id, policy, created, enabled, expires_at}``; ``rotator.momento/current`` (the key id in
  ``data[<key>]``), ``rotator.momento/current-since``, ``rotator.momento/policy`` and
  ``rotator.momento/data-key`` (the entry the history is about: one Secret holds one target). The label
  ``app.kubernetes.io/managed-by: rotator`` is added when the Secret has no ``managed-by`` label yet. No value
  ever goes into an annotation or a label: ``kubectl describe`` and ``kubectl get -o wide`` show them to
  anyone who may read the object's metadata.
- **No staging.** A Secret's data is what consumers get, so ``stage`` writes the new value as current
  (``capabilities.stage_makes_current``) and ``promote`` is a no-op for it; promote switches only when
  another key became current meanwhile, or to make an older key current again.
- **Compare-and-set: the ``resourceVersion``.** Every write is a ``PUT`` of the object just read, carrying its
  ``metadata.resourceVersion``; a concurrent writer's change makes the API server answer 409 Conflict, which
  is :class:`~rotator.errors.StorePreconditionFailed`: nothing is ever overwritten blindly (Secrets accept an
  update without a ``resourceVersion``, "unconditional update", so leaving it out would). Every method reads
  the Secret afresh (one ``GET``): nothing is cached across calls, so two processes never act on each other's
  stale view.
- **A value rotator did not write** (data at ``<key>`` without rotator's annotations, or a current value that
  names another key than the annotation says, i.e. edited by hand) is *foreign*: reported, and never replaced
  without the target's ``adopt: true``.
- **Missing Secrets** are created (``POST``) only with the store's ``create: true`` (least privilege: RBAC
  cannot limit ``create`` to a name); otherwise staging into one is StoreNotFound with the remedy.

Requests go through :class:`rotator.kube.KubeApi` (a total deadline of ``timeout`` per request, a bounded
answer) with the ``kubernetes`` client's credentials; each is recorded with
``record_call("kubernetes", op, <HTTP status or error class>)``. A ``GET`` (and a ``SelfSubjectAccessReview``)
that meets a 429, a 5xx, a deadline or a connection error is sent again after a short backoff
(:data:`RETRIES` times); a write whose answer leaves open whether it landed is checked with a ``GET``, never
resent blindly. Errors carry the HTTP status and the Status ``reason`` only, never its ``message`` (which may
quote the object). ``kubernetes`` is imported only inside functions.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator import httpio
from rotator.durations import Duration
from rotator.errors import (
    ConfigError,
    ConfigIssue,
    MissingExtraError,
    StoreConflict,
    StoreError,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.keys import payload_key_id
from rotator.kube import KubeApi, KubeStatus, load_api_client
from rotator.model import SecretState, SecretText, StoredVersion
from rotator.observability import get_logger, record_call
from rotator.stores.base import (
    ANY_CURRENT,
    POOL_CONNECTIONS,
    BaseTargetOptions,
    Expect,
    PreflightProblem,
    SecretStore,
    StoreBase,
    StoreCapabilities,
    StoreContext,
    StoreSpec,
    StoreType,
    TargetRef,
    VersionMeta,
)

SERVICE = "kubernetes"
#: where the Role that grants what this store needs lives
RBAC_HINT = "deploy/kubernetes/components/secret-store"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

PREFIX = "rotator.momento/"
VERSIONS_ANNOTATION = PREFIX + "versions"
CURRENT_ANNOTATION = PREFIX + "current"
CURRENT_SINCE_ANNOTATION = PREFIX + "current-since"
POLICY_ANNOTATION = PREFIX + "policy"
DATA_KEY_ANNOTATION = PREFIX + "data-key"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "rotator"

#: the data entry holding the current value, by payload format
DEFAULT_KEYS: dict[str, str] = {"json": "momento.json", "env": "momento.env", "key": "momento.key"}
#: the data entry of a ``format: key`` target's ``endpoint_secret``
DEFAULT_ENDPOINT_KEY = "momento.endpoint"

#: the API server's limit on a Secret's data, in bytes ("The total bytes of the values in the Data field must
#: be less than MaxSecretSize bytes"; ``core.MaxSecretSize`` = 1 MiB, checked by ``ValidateSecret``)
MAX_DATA = 1024 * 1024
#: the largest answer read (1 MiB of data is 1.33 MiB of base64, plus metadata and managedFields)
MAX_BODY = 4 * 1024 * 1024
#: retired versions kept in the history annotation (the annotations of an object total at most 256 KiB)
MAX_RETIRED = 20
#: a data key leaves room for ``.v<N>`` within the API server's 253 characters
MAX_KEY = 240
#: extra attempts of a request that met a 429, a 5xx, a deadline or a connection error, and the first backoff
RETRIES = 2
BACKOFF = 0.2

_DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN_RE = re.compile(
    r"^(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\Z"
)
#: ``IsConfigMapKey`` (k8s.io/apimachinery pkg/util/validation): ``[-._a-zA-Z0-9]+``, not ``.``/``..``/``..*``
_DATA_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+\Z")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
_LABEL_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")

log = get_logger()


# ---- config ------------------------------------------------------------------------------------------------


def check_secret_name(name: str) -> str:
    """``name`` if Kubernetes accepts it as a Secret name (a lower-case DNS-1123 subdomain), else ValueError."""
    if _DNS_SUBDOMAIN_RE.match(name):
        return name
    hint = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")[:253].strip("-.") or "momento-api-key"
    raise ValueError(
        f"{name!r} is not a Kubernetes Secret name: use lower-case letters, digits, '-' and '.', starting and "
        f"ending with a letter or digit, at most 253 characters (no '/', '_' or capitals), e.g. {hint!r}"
    )


def check_namespace(name: str) -> str:
    if _DNS_LABEL_RE.match(name):
        return name
    raise ValueError(f"{name!r} is not a namespace name (a lower-case DNS label, e.g. payments)")


def check_data_key(key: str) -> str:
    """``key`` if it is a Secret data key rotator can use (``IsConfigMapKey``, with room for ``.v<N>``)."""
    if not _DATA_KEY_RE.match(key) or key in (".", "..") or key.startswith(".."):
        raise ValueError(
            f"{key!r} is not a Secret data key: use letters, digits, '-', '_' and '.' (not '.', '..' or a "
            "leading '..'), e.g. momento.json or MOMENTO_API_KEY"
        )
    if len(key) > MAX_KEY:
        raise ValueError(f"a data key is at most {MAX_KEY} characters here (rotator appends .v<N> to it)")
    if re.search(r"\.v\d+\Z", key):
        raise ValueError(f"{key!r} ends like the entries rotator keeps previous values in (.v<N>); pick another")
    return key


def _check_label(key: str, value: str) -> None:
    prefix, _, name = key.rpartition("/")
    if (prefix and not _DNS_SUBDOMAIN_RE.match(prefix)) or not _LABEL_NAME_RE.match(name):
        raise ValueError(f"{key!r} is not a label key ([prefix/]name, the name at most 63 characters)")
    if not _LABEL_VALUE_RE.match(value):
        raise ValueError(f"label {key!r}: {value!r} is not a label value (at most 63 letters, digits, '-', '_', '.')")


class StoreConfig(BaseModel):
    """``stores.<name>`` for ``type: kubernetes``.

    ``namespace`` (default: the pod's own, read from ``<service_account_dir>/namespace``) is where the targets'
    Secrets live unless a target names another. Credentials: the in-cluster service account (``in_cluster``
    None: when ``KUBERNETES_SERVICE_HOST`` is set) or a kubeconfig (``kubeconfig``, ``context``).
    ``timeout`` bounds each request in total. ``create: true`` lets rotator create a missing Secret (needs the
    ``create`` verb, which RBAC cannot limit to a name), with ``labels`` added.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["kubernetes"]
    namespace: str | None = None
    in_cluster: bool | None = None
    kubeconfig: str | None = None
    context: str | None = None
    service_account_dir: str | None = None
    timeout: Duration = timedelta(seconds=10)
    create: bool = False
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return None if v is None else check_namespace(v)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        if not timedelta(0) < v <= timedelta(minutes=5):
            raise ValueError("a request timeout is more than 0s and at most 5m, e.g. 10s")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            _check_label(key, value)
        if MANAGED_BY_LABEL in v:
            raise ValueError(f"the label {MANAGED_BY_LABEL} is set by rotator itself")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> StoreConfig:
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError("in_cluster: true uses the pod's service account; drop kubeconfig and context")
        return self


class TargetOptions(BaseTargetOptions):
    """What a target pointing at a Kubernetes store may set.

    ``secret`` and ``endpoint_secret`` are Secret names (DNS-1123 subdomains). ``key`` is the data entry holding
    the current value (default by format: ``momento.json``, ``momento.env``, ``momento.key``), ``endpoint_key``
    the entry of the ``endpoint_secret`` (default ``momento.endpoint``). ``namespace`` overrides the store's.
    ``adopt: true`` lets rotator replace a value it did not write.
    """

    key: str | None = None
    endpoint_key: str = DEFAULT_ENDPOINT_KEY
    namespace: str | None = None
    adopt: bool = False

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        return check_secret_name(v)

    @field_validator("endpoint_secret")
    @classmethod
    def _endpoint_secret(cls, v: str | None) -> str | None:
        return None if v is None else check_secret_name(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return None if v is None else check_data_key(v)

    @field_validator("endpoint_key")
    @classmethod
    def _endpoint_key(cls, v: str) -> str:
        return check_data_key(v)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return None if v is None else check_namespace(v)

    @model_validator(mode="after")
    def _defaults(self) -> TargetOptions:
        if self.key is None:
            self.key = DEFAULT_KEYS[self.format]
        if self.endpoint_secret is not None and self.endpoint_secret == self.secret:
            raise ValueError(
                "endpoint_secret must name another Secret than secret: each Secret holds one target's history"
            )
        return self


# ---- what a Secret holds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One version in the history annotation (metadata only)."""

    version: int
    key_id: str
    policy: str
    created: datetime | None
    enabled: bool
    expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "key_id": self.key_id,
            "policy": self.policy,
            "created": _iso(self.created),
            "enabled": self.enabled,
            "expires_at": _iso(self.expires_at),
        }


@dataclass(frozen=True)
class _Secret:
    """One fresh ``GET`` of a target's Secret, read as rotator's layout for the target's data key."""

    obj: dict[str, Any]
    key: str
    #: None: no rotator history on this Secret
    history: list[_Entry] | None
    #: the history's current entry, when ``data[key]`` still holds it
    current: _Entry | None
    #: ``data[key]`` holds a value rotator did not write (no history, or it names another key)
    foreign: bool

    @property
    def data(self) -> dict[str, str]:
        data = self.obj.get("data")
        return dict(data) if isinstance(data, dict) else {}

    @property
    def resource_version(self) -> str:
        return str(_get(self.obj, "metadata", "resourceVersion") or "")

    def entry_key(self, e: _Entry) -> str:
        return f"{self.key}.v{e.version}"

    def holding(self, key_id: str) -> list[_Entry]:
        return [e for e in self.history or [] if e.key_id == key_id]

    def readable(self, e: _Entry) -> bool:
        """The entry's value is still in the Secret (current, or an unretired previous version)."""
        if self.current is not None and e.version == self.current.version:
            return True
        return e.enabled and self.entry_key(e) in self.data


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def _encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _data_size(data: Mapping[str, str]) -> int:
    """The decoded size of a Secret's data (what the API server's 1 MiB limit counts)."""
    total = 0
    for raw in data.values():
        total += len(raw) * 3 // 4 - raw[-2:].count("=") if isinstance(raw, str) else 0
    return total


# ---- the store ---------------------------------------------------------------------------------------------

#: what each request does, for messages: op -> (RBAC verb, what it was doing)
_OPS: dict[str, tuple[str, str]] = {
    "get-secret": ("get", "read the Secret"),
    "update-secret": ("update", "update the Secret"),
    "create-secret": ("create", "create the Secret"),
    "access-review": ("create", "ask whether rotator may write the Secret (SelfSubjectAccessReview)"),
}


class _Retryable(StoreUnavailable):
    """429, 5xx, a deadline or a connection error: the request may be sent again (a write only once checked)."""


class KubernetesSecretStore(StoreBase):
    """A :class:`~rotator.stores.base.SecretStore` over Kubernetes Secrets in one cluster. Thread-safe (no
    state but the API client). Open it with :func:`open_store`. Every method raises only
    :class:`~rotator.errors.StoreError` subclasses whose messages name the namespace, the store and the
    Secret, never a value."""

    #: no staging (a Secret's data is what consumers read): stage writes the current value; every write is a
    #: PUT conditional on the resourceVersion just read; the preflight asks the API server (a GET of each
    #: target, and a SelfSubjectAccessReview for update, or create) without writing anything
    capabilities = StoreCapabilities(stage_makes_current=True, compare_and_set="conditional", preflight=True)

    def __init__(
        self,
        name: str,
        config: StoreConfig,
        *,
        api_client: Any = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        try:
            import kubernetes  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("k8s", exc.name or "kubernetes") from exc
        self.name = name
        self.config = config
        self.namespace = config.namespace or _own_namespace(name, config)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep or _sleep
        self._owns_client = api_client is None
        if api_client is None:
            api_client = _load_client(name, config)
        self._api = KubeApi(api_client, timeout=config.timeout.total_seconds(), max_body=MAX_BODY)
        self._host = _host(getattr(getattr(api_client, "configuration", None), "host", None))
        self._closed = False
        self._log = get_logger(store=name)

    def __repr__(self) -> str:
        return f"KubernetesSecretStore(name={self.name!r}, namespace={self.namespace!r})"

    # ---- the contract -----------------------------------------------------------------------------------

    def inspect(self, ref: TargetRef) -> SecretState:
        """The versions the history annotation records, which is current (``data[<key>]``) and since when.

        One ``GET``. A missing Secret is ``SecretState(exists=False)``; a Secret whose ``data[<key>]`` was not
        written by rotator is ``foreign`` (with no current key). A version whose data entry is gone (retired,
        or removed by hand) is reported disabled.

        Raises: StoreConflict (the history annotation is not rotator's, or is about another data key),
        StoreUnavailable, StorePermissionError.
        """
        sec = self._read(ref)
        if sec is None:
            return SecretState(exists=False)
        since = _time(_get(sec.obj, "metadata", "annotations", CURRENT_SINCE_ANNOTATION))
        versions = tuple(
            StoredVersion(
                version=str(e.version),
                key_id=e.key_id,
                created_at=e.created,
                current=sec.current is not None and e.version == sec.current.version,
                enabled=sec.readable(e),
            )
            for e in sorted(sec.history or [], key=lambda e: e.version)
        )
        return SecretState(
            exists=True,
            versions=versions,
            current_key_id=sec.current.key_id if sec.current else None,
            current_since=since if sec.current else None,
            foreign=sec.foreign,
        )

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        """Write ``value`` as the current value (``data[<key>]``); the value it replaces moves to its own entry.

        A no-op when a version already holds ``meta.key_id``. Over a value rotator did not write, refuses
        (StoreConflict naming ``adopt: true``, nothing written) unless the target sets ``adopt``. A missing
        Secret is created with ``create: true`` (``POST``; 409 AlreadyExists: StorePreconditionFailed), else
        StoreNotFound with the remedy. One ``GET`` and one conditional ``PUT`` (or ``POST``).

        Raises: StoreNotFound, StoreConflict, StorePreconditionFailed (changed since it was read: nothing was
        written), StoreUnavailable, StorePermissionError, StoreError (the API server refused the object).
        """
        opts = self._opts(ref)
        sec = self._read(ref)
        now = self._clock()
        entry = _Entry(1, meta.key_id, meta.policy, now, True, meta.expires_at)
        if sec is None:
            self._create(ref, value, entry)
            return
        if sec.holding(meta.key_id):
            self._log.debug("stage: key already written", target=ref.id, key_id=meta.key_id)
            return
        self._refuse(ref, sec, opts)
        data = sec.data
        history = list(sec.history or [])
        if sec.current is not None:
            data[sec.entry_key(sec.current)] = data[sec.key]  # the value it replaces keeps its own entry
        elif sec.history is not None:
            # a current value edited by hand (adopted): the version the history calls current lost its value
            history = [replace(e, enabled=False) if e.key_id == _current_id(sec) else e for e in history]
        entry = replace(entry, version=max((e.version for e in history), default=0) + 1)
        history.append(entry)
        data[sec.key] = _encode(value.reveal())
        self._replace(ref, sec, data, history, entry, meta.policy, now)
        self._log.info("stage: wrote the key as the Secret's current value", target=ref.id, key_id=meta.key_id)

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        """The value of the version holding ``key_id``: ``data[<key>]`` when it is current, else its
        ``<key>.v<N>`` entry. One ``GET``.

        Raises: StoreNotFound (no such Secret, no version holds ``key_id``, or it was retired),
        StoreUnavailable, StorePermissionError, StoreError (an entry that is not base64 UTF-8).
        """
        sec = self._read(ref)
        if sec is None:
            raise StoreNotFound(self._where(ref, "the Secret does not exist"), store=self.name, secret=ref.secret)
        if sec.current is not None and sec.current.key_id == key_id:
            return self._decode(ref, sec, sec.key)
        for e in sorted(sec.holding(key_id), key=lambda e: -e.version):
            if sec.readable(e):
                return self._decode(ref, sec, sec.entry_key(e))
        retired = bool(sec.holding(key_id))
        why = f"the version holding key {key_id} was retired" if retired else f"no version holds key {key_id}"
        raise StoreNotFound(self._where(ref, why), store=self.name, secret=ref.secret)

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        """Make the version holding ``key_id`` current; a no-op when it is (as after :meth:`stage`).

        Reads the Secret afresh; unless ``expect_current`` is ``ANY_CURRENT``, the current key must be
        ``expect_current`` (checked before "not found"). Then the version's value moves from ``<key>.v<N>`` to
        ``<key>``, the current value to its own entry, in one ``PUT`` conditional on the ``resourceVersion``
        just read: a writer in between makes it fail with StorePreconditionFailed, and nothing is written.

        Raises: StorePreconditionFailed, StoreNotFound (no readable version holds ``key_id``), StoreConflict
        (the current value is foreign and the target does not set ``adopt``), StoreUnavailable,
        StorePermissionError.
        """
        opts = self._opts(ref)
        sec = self._read(ref)
        held = sec.current.key_id if sec is not None and sec.current is not None else None
        if held is not None and held == key_id:
            return
        if expect_current is not ANY_CURRENT and held != expect_current:
            raise StorePreconditionFailed(
                self._where(
                    ref,
                    f"not promoting key {key_id}: the Secret's current key is {held or 'none'}, not "
                    f"{expect_current or 'none'} as read before",
                ),
                store=self.name,
                secret=ref.secret,
            )
        if sec is None:
            raise StoreNotFound(
                self._where(ref, f"nothing to promote: the Secret does not exist (key {key_id})"),
                store=self.name,
                secret=ref.secret,
            )
        target = next((e for e in sorted(sec.holding(key_id), key=lambda e: -e.version) if sec.readable(e)), None)
        if target is None:
            why = "its version was retired" if sec.holding(key_id) else "no version holds it"
            raise StoreNotFound(
                self._where(ref, f"cannot promote key {key_id}: {why}"), store=self.name, secret=ref.secret
            )
        self._refuse(ref, sec, opts)
        data = sec.data
        history = list(sec.history or [])
        if sec.current is not None:
            data[sec.entry_key(sec.current)] = data[sec.key]
        else:  # a foreign value (adopted) is dropped; the version the history called current lost its value
            history = [replace(e, enabled=False) if e.key_id == _current_id(sec) else e for e in history]
        data[sec.key] = data.pop(sec.entry_key(target))
        self._replace(ref, sec, data, history, target, target.policy, self._clock())
        self._log.info("promote: made an older version current again", target=ref.id, key_id=key_id)

    def retire(self, ref: TargetRef, key_id: str) -> None:
        """Remove the data entries of the versions holding ``key_id`` (their values are gone) and mark them
        disabled in the history; never deletes the Secret. A no-op for a key retired already or never written.

        One ``GET`` and one conditional ``PUT``; a 409 (a concurrent write) reads again and retries, up to
        three times in all (retiring is idempotent, and the current key is checked on every attempt).

        Raises: StoreConflict (``key_id`` is the current key), StorePreconditionFailed (still changing after
        three attempts), StoreUnavailable, StorePermissionError.
        """
        for attempt in range(3):
            sec = self._read(ref)
            if sec is None or not sec.holding(key_id):
                return
            if sec.current is not None and sec.current.key_id == key_id:
                raise StoreConflict(
                    self._where(ref, f"refusing to retire key {key_id}: it is the Secret's current value"),
                    store=self.name,
                    secret=ref.secret,
                )
            data = sec.data
            changed = False
            history = []
            for e in sec.history or []:
                if e.key_id == key_id and (e.enabled or sec.entry_key(e) in data):
                    data.pop(sec.entry_key(e), None)
                    e = replace(e, enabled=False)
                    changed = True
                history.append(e)
            if not changed:
                return
            try:
                self._replace(ref, sec, data, history, sec.current, None, None)
            except StorePreconditionFailed:
                if attempt == 2:
                    raise
                continue
            self._log.info("retire: removed the old key's value from the Secret", target=ref.id, key_id=key_id)
            return

    def preflight(self, targets: Sequence[TargetRef]) -> list[PreflightProblem]:
        """Before a pass may write: for each target (and its ``endpoint_secret``), a ``GET`` proving ``get``,
        then a SelfSubjectAccessReview asking whether ``update`` (or, for a missing Secret with ``create:
        true``, ``create``) is granted; a missing Secret without ``create``, a foreign value without
        ``adopt``, or an immutable Secret is reported too. Writes nothing (an access review is not stored).
        What cannot be told (the API server unreachable, reviews refused) is left to the pass."""
        problems: list[PreflightProblem] = []
        for i, ref in enumerate(targets):
            opts = self._opts(ref)
            for field, secret in (("secret", ref.secret), ("endpoint_secret", opts.endpoint_secret)):
                if secret is None:
                    continue
                problem = self._preflight_one(ref.with_secret(secret))
                if problem is not None:
                    problems.append(PreflightProblem(i, field, problem))
        return problems

    def close(self) -> None:
        """Release the API client when this store made it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self._api.close()

    # ---- reading and writing ------------------------------------------------------------------------------

    def _opts(self, ref: TargetRef) -> TargetOptions:
        if isinstance(ref.options, TargetOptions):
            return ref.options
        return TargetOptions(store=ref.store, secret=ref.secret)

    def _ns(self, ref: TargetRef) -> str:
        return self._opts(ref).namespace or self.namespace

    def _data_key(self, ref: TargetRef) -> str:
        opts = self._opts(ref)
        if opts.endpoint_secret is not None and ref.secret == opts.endpoint_secret:
            return opts.endpoint_key
        assert opts.key is not None  # filled in by the validator
        return opts.key

    def _path(self, ref: TargetRef, *, collection: bool = False) -> str:
        base = f"/api/v1/namespaces/{quote(self._ns(ref), safe='')}/secrets"
        return base if collection else f"{base}/{quote(ref.secret, safe='')}"

    def _where(self, ref: TargetRef, text: str) -> str:
        return f"{text} (Kubernetes Secret {self._ns(ref)}/{ref.secret})"

    def _read(self, ref: TargetRef) -> _Secret | None:
        """A fresh ``GET`` of the target's Secret as rotator's layout, or None when it does not exist."""
        obj = self._fetch(ref)
        return None if obj is None else self._parse(ref, obj)

    def _fetch(self, ref: TargetRef) -> dict[str, Any] | None:
        try:
            return self._retrying("get-secret", ref, lambda: self._api.request("GET", self._path(ref)))
        except StoreNotFound:
            return None

    def _parse(self, ref: TargetRef, obj: dict[str, Any]) -> _Secret:
        key = self._data_key(ref)
        annotations = _get(obj, "metadata", "annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        data = obj.get("data")
        data = data if isinstance(data, dict) else {}
        raw = annotations.get(VERSIONS_ANNOTATION)
        if raw is None:
            return _Secret(obj, key, None, None, key in data)
        owner = annotations.get(DATA_KEY_ANNOTATION, key)
        if owner != key:
            raise StoreConflict(
                self._where(
                    ref,
                    f"the Secret holds rotator's history for data key {owner!r}, not {key!r}: point one target "
                    "at one Secret (set key: on the target, or use another Secret)",
                ),
                store=self.name,
                secret=ref.secret,
            )
        history = self._history(ref, raw)
        current_id = annotations.get(CURRENT_ANNOTATION)
        current = next((e for e in history if e.key_id == current_id), None)
        if key not in data:
            return _Secret(obj, key, history, None, False)
        if current is None:  # a value where the history records no current key: not one rotator wrote
            return _Secret(obj, key, history, None, True)
        opts = self._opts(ref)
        if ref.secret != opts.endpoint_secret:
            # a value edited by hand names another key than the history says: rotator did not write it
            value = self._decode(ref, _Secret(obj, key, history, None, False), key)
            named = payload_key_id(value, opts.format)
            del value
            if named is not None and named != current.key_id:
                return _Secret(obj, key, history, None, True)
        return _Secret(obj, key, history, current, False)

    def _history(self, ref: TargetRef, raw: Any) -> list[_Entry]:
        def bad() -> StoreConflict:
            return StoreConflict(
                self._where(
                    ref,
                    f"the annotation {VERSIONS_ANNOTATION} is not rotator's JSON list of versions; restore it, or "
                    "remove rotator's annotations (and set adopt: true) to start the history afresh",
                ),
                store=self.name,
                secret=ref.secret,
            )

        try:
            items = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            raise bad() from None
        if not isinstance(items, list):
            raise bad()
        out: list[_Entry] = []
        for item in items:
            if not isinstance(item, dict):
                raise bad()
            version, key_id = item.get("version"), item.get("key_id")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1 or not isinstance(key_id, str):
                raise bad()
            policy = item.get("policy")
            out.append(
                _Entry(
                    version,
                    key_id,
                    policy if isinstance(policy, str) else "",
                    _time(item.get("created")),
                    item.get("enabled") is not False,
                    _time(item.get("expires_at")),
                )
            )
        return out

    def _decode(self, ref: TargetRef, sec: _Secret, entry: str) -> SecretText:
        raw = sec.data.get(entry)
        try:
            if not isinstance(raw, str):
                raise ValueError
            return SecretText(base64.b64decode(raw, validate=True).decode("utf-8"))
        except (binascii.Error, ValueError):
            raise StoreError(
                self._where(ref, f"the data entry {entry} is not base64-encoded UTF-8 text"),
                store=self.name,
                secret=ref.secret,
            ) from None

    def _refuse(self, ref: TargetRef, sec: _Secret, opts: TargetOptions) -> None:
        """StoreConflict when writing would replace a value rotator did not write (without ``adopt``), or the
        Secret is immutable."""
        if sec.obj.get("immutable") is True:
            raise StoreConflict(
                self._where(
                    ref,
                    "the Secret is immutable (immutable: true): its data cannot change; delete and recreate it "
                    "without immutable, or point the target at another Secret",
                ),
                store=self.name,
                secret=ref.secret,
            )
        if sec.foreign and not opts.adopt:
            raise StoreConflict(
                self._where(
                    ref,
                    f"the data entry {sec.key} holds a value rotator did not write; set adopt: true on the target "
                    "to replace it (the value is not kept)",
                ),
                store=self.name,
                secret=ref.secret,
            )

    def _annotations(
        self, history: list[_Entry], current: _Entry | None, key: str, policy: str | None, since: datetime | None
    ) -> dict[str, str]:
        retired = [e for e in history if not e.enabled]
        keep = {e.version for e in history if e.enabled} | {e.version for e in retired[-MAX_RETIRED:]}
        if current is not None:
            keep.add(current.version)
        kept = sorted((e for e in history if e.version in keep), key=lambda e: e.version)
        out = {
            VERSIONS_ANNOTATION: json.dumps([e.to_json() for e in kept], separators=(",", ":")),
            DATA_KEY_ANNOTATION: key,
        }
        if current is not None:
            out[CURRENT_ANNOTATION] = current.key_id
        if policy is not None:
            out[POLICY_ANNOTATION] = policy
        if since is not None:
            out[CURRENT_SINCE_ANNOTATION] = _iso(since) or ""
        return out

    def _replace(
        self,
        ref: TargetRef,
        sec: _Secret,
        data: dict[str, str],
        history: list[_Entry],
        current: _Entry | None,
        policy: str | None,
        since: datetime | None,
    ) -> None:
        """``PUT`` the Secret as read with ``data`` and the history, conditional on its resourceVersion.

        ``current``/``policy``/``since`` None keep what the annotations say (retire changes no current)."""
        self._check_size(ref, data)
        obj = json.loads(json.dumps(sec.obj))
        meta = obj.setdefault("metadata", {})
        meta.pop("managedFields", None)  # the server keeps its own; sending them back is not needed
        annotations = dict(meta.get("annotations") or {})
        annotations.update(self._annotations(history, current, sec.key, policy, since))
        meta["annotations"] = annotations
        labels = dict(meta.get("labels") or {})
        labels.setdefault(MANAGED_BY_LABEL, MANAGED_BY)
        meta["labels"] = labels
        obj["data"] = data
        obj.pop("stringData", None)
        # the precondition: a concurrent writer's change makes the API server answer 409 Conflict
        meta["resourceVersion"] = sec.resource_version
        self._write("update-secret", ref, "PUT", self._path(ref), obj, sent_rv=sec.resource_version)

    def _missing(self, ref: TargetRef) -> StoreNotFound:
        """A missing Secret this store may not create (``create: false``): the error, with both remedies."""
        ns = self._ns(ref)
        return StoreNotFound(
            self._where(
                ref,
                f"the Secret does not exist and this store may not create it: create it (kubectl -n {ns} "
                f"create secret generic {ref.secret}) and grant get and update on it ({RBAC_HINT}); or give "
                f"the store create: true and grant create on secrets in namespace {ns}",
            ),
            store=self.name,
            secret=ref.secret,
        )

    def _create(self, ref: TargetRef, value: SecretText, entry: _Entry) -> None:
        if not self.config.create:
            raise self._missing(ref)
        key = self._data_key(ref)
        data = {key: _encode(value.reveal())}
        self._check_size(ref, data)
        labels = {**self.config.labels, MANAGED_BY_LABEL: MANAGED_BY}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": ref.secret,
                "namespace": self._ns(ref),
                "labels": labels,
                "annotations": self._annotations([entry], entry, key, entry.policy, entry.created),
            },
            "type": "Opaque",
            "data": data,
        }
        self._write("create-secret", ref, "POST", self._path(ref, collection=True), body, sent_rv=None)
        self._log.info("stage: created the Secret", target=ref.id, key_id=entry.key_id)

    def _check_size(self, ref: TargetRef, data: Mapping[str, str]) -> None:
        size = _data_size(data)
        if size > MAX_DATA:
            raise StoreError(
                self._where(
                    ref,
                    f"the Secret's data would be {size} bytes, over the API server's limit of {MAX_DATA} (1 MiB): "
                    "retire old keys, or move other data entries out of this Secret",
                ),
                store=self.name,
                secret=ref.secret,
            )

    def _write(
        self, op: str, ref: TargetRef, method: str, path: str, body: dict[str, Any], *, sent_rv: str | None
    ) -> None:
        """Send one write; after an answer that leaves open whether it landed (5xx, 429, a deadline, a lost
        connection), read the Secret: it landed (the data and rotator's annotations are what was sent), it did
        not and nothing changed (send it again, at most :data:`RETRIES` times), or someone else wrote
        (StorePreconditionFailed)."""
        for attempt in range(RETRIES + 1):
            try:
                self._call(op, ref, lambda: self._api.request(method, path, body=body))
                return
            except _Retryable:
                if attempt == RETRIES:
                    raise
                self._sleep(BACKOFF * 2**attempt)
                fresh = self._fetch(ref)
                if fresh is not None and _landed(fresh, body):
                    self._log.info("the write had landed although its answer was lost", target=ref.id)
                    return
                unchanged = fresh is None if sent_rv is None else fresh is not None and _rv(fresh) == sent_rv
                if not unchanged:
                    raise StorePreconditionFailed(
                        self._where(ref, "the Secret changed while rotator's write was unanswered; nothing is resent"),
                        store=self.name,
                        secret=ref.secret,
                    ) from None

    def _retrying(self, op: str, ref: TargetRef, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A read, sent again after a 429, a 5xx, a deadline or a connection error (short backoff)."""
        for attempt in range(RETRIES + 1):
            try:
                return self._call(op, ref, fn)
            except _Retryable:
                if attempt == RETRIES:
                    raise
                self._sleep(BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    def _call(self, op: str, ref: TargetRef, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One request, its outcome recorded, its failure translated into a StoreError (status and reason only)."""
        import urllib3

        _, doing = _OPS[op]
        where = {"store": self.name, "secret": ref.secret}
        try:
            result = fn()
        except KubeStatus as exc:
            record_call(SERVICE, op, exc.status)
            raise self._status_error(op, ref, exc.status, exc.reason) from None
        except httpio.DeadlineExceeded:
            record_call(SERVICE, op, "DeadlineExceeded")
            raise _Retryable(
                self._where(ref, f"no answer from the Kubernetes API within {self._api.timeout:g}s to {doing}"), **where
            ) from None
        except httpio.BodyTooLarge:
            record_call(SERVICE, op, "BodyTooLarge")
            raise StoreUnavailable(
                self._where(ref, f"the Kubernetes API's answer to {doing} is larger than {MAX_BODY} bytes"), **where
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            record_call(SERVICE, op, type(exc).__name__)
            raise _Retryable(
                self._where(ref, f"cannot reach the Kubernetes API at {self._host} to {doing} ({type(exc).__name__})"),
                **where,
            ) from None
        except ValueError as exc:  # an answer that is not a JSON object: never quoted
            record_call(SERVICE, op, type(exc).__name__)
            raise StoreUnavailable(
                self._where(ref, f"unreadable answer from the Kubernetes API to {doing} ({type(exc).__name__})"),
                **where,
            ) from None
        record_call(SERVICE, op, 200)
        return result

    def _status_error(self, op: str, ref: TargetRef, status: int, reason: str) -> StoreError:
        verb, doing = _OPS[op]
        ns = self._ns(ref)
        where = {"store": self.name, "secret": ref.secret}
        code = f"{status}{' ' + reason if reason else ''}"
        if status == 401:
            return StorePermissionError(
                self._where(
                    ref,
                    f"the Kubernetes API rejected rotator's credentials ({code}): check the kubeconfig's user, or "
                    "that the pod's ServiceAccount token is mounted (automountServiceAccountToken)",
                ),
                **where,
            )
        if status == 403:
            what = f'secrets "{ref.secret}"' if verb != "create" else "secrets"
            extra = (
                "; RBAC cannot limit create to a Secret name, so it is granted on all Secrets of the namespace "
                f"(the commented rule in {RBAC_HINT}/rbac.yaml), or create the Secret yourself "
                f"(kubectl -n {ns} create secret generic {ref.secret}) and leave create: false"
                if verb == "create"
                else f" (the Role in {RBAC_HINT}/rbac.yaml lists the Secret under resourceNames)"
            )
            return StorePermissionError(
                self._where(
                    ref,
                    f"forbidden ({code}): rotator may not {verb} {what} in namespace {ns}; grant the verb {verb} on "
                    f"resource secrets to rotator's ServiceAccount in a Role of namespace {ns}{extra}",
                ),
                **where,
            )
        if status == 404:
            what = f"namespace {ns} does not exist" if op == "create-secret" else "not found"
            return StoreNotFound(self._where(ref, f"{what} ({code}) when asked to {doing}"), **where)
        if status == 409:
            what = "a Secret of that name was created meanwhile" if op == "create-secret" else "changed since read"
            return StorePreconditionFailed(
                self._where(ref, f"{what} ({code}): nothing was written; the next pass reads it again"), **where
            )
        if status in (422, 400):
            return StoreError(
                self._where(
                    ref,
                    f"the Kubernetes API refused to {doing} ({code}): the object is invalid, e.g. its data over "
                    f"{MAX_DATA} bytes or its annotations over 256 KiB",
                ),
                **where,
            )
        if status == 429 or status >= 500:
            return _Retryable(
                self._where(ref, f"the Kubernetes API answered {code} when asked to {doing}, after retries"), **where
            )
        return StoreError(self._where(ref, f"the Kubernetes API refused to {doing} ({code})"), **where)

    # ---- preflight ------------------------------------------------------------------------------------------

    def _preflight_one(self, ref: TargetRef) -> str | None:
        try:
            sec = self._read(ref)
        except (StorePermissionError, StoreConflict) as exc:
            return str(exc)
        except StoreError as exc:  # unreachable, or a refusal the pass reports itself
            self._log.debug("preflight: cannot tell", target=ref.id, error=type(exc).__name__)
            return None
        ns = self._ns(ref)
        if sec is None:
            if not self.config.create:
                return str(self._missing(ref))
            verb, name = "create", None
        else:
            try:
                self._refuse(ref, sec, self._opts(ref))
            except StoreConflict as exc:
                return str(exc)
            verb, name = "update", ref.secret
        allowed = self._access_review(ref, verb, ns, name)
        if allowed is False:
            return str(self._status_error("create-secret" if verb == "create" else "update-secret", ref, 403, ""))
        return None

    def _access_review(self, ref: TargetRef, verb: str, ns: str, name: str | None) -> bool | None:
        """Whether the API server says rotator may ``verb`` the Secret (a SelfSubjectAccessReview, which every
        authenticated user may make and which is not stored); None when it cannot be asked."""
        attributes = {"namespace": ns, "verb": verb, "group": "", "resource": "secrets"}
        if name is not None:
            attributes["name"] = name
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        try:
            answer = self._retrying("access-review", ref, lambda: self._api.request("POST", path, body=body))
        except StoreError as exc:
            self._log.debug("preflight: no access review", target=ref.id, error=type(exc).__name__)
            return None
        allowed = _get(answer, "status", "allowed")
        return allowed if isinstance(allowed, bool) else None


def _current_id(sec: _Secret) -> str | None:
    value = _get(sec.obj, "metadata", "annotations", CURRENT_ANNOTATION)
    return value if isinstance(value, str) else None


def _rv(obj: dict[str, Any]) -> str:
    return str(_get(obj, "metadata", "resourceVersion") or "")


def _landed(fresh: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Whether ``fresh`` (read after an unanswered write) holds what ``sent`` wrote: its data and rotator's
    annotations (the history names each version's creation second: another writer does not match it)."""
    if (fresh.get("data") or {}) != (sent.get("data") or {}):
        return False
    mine = _get(sent, "metadata", "annotations") or {}
    theirs = _get(fresh, "metadata", "annotations") or {}
    return all(theirs.get(k) == v for k, v in mine.items() if k.startswith(PREFIX))


def _host(url: Any) -> str:
    """The API server's address for messages: scheme, host and port only (never a userinfo part)."""
    if not isinstance(url, str) or not url:
        return "the API server"
    parts = urlsplit(url)
    if not parts.hostname:
        return "the API server"
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _own_namespace(name: str, config: StoreConfig) -> str:
    """The pod's namespace (``<service_account_dir>/namespace``). Raises ConfigError naming the field."""
    path = os.path.join(config.service_account_dir or SERVICE_ACCOUNT_DIR, "namespace")
    try:
        with open(path) as f:
            ns = f.read().strip()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(
            [
                ConfigIssue(
                    f"stores.{name}.namespace",
                    f"not set, and the pod's namespace cannot be read from {path} ({why}): set namespace on the "
                    "store (or on each target), or run in a pod with its ServiceAccount token mounted",
                )
            ]
        ) from None
    try:
        return check_namespace(ns)
    except ValueError:
        raise ConfigError(
            [ConfigIssue(f"stores.{name}.namespace", f"not set, and {path} holds no namespace name: set it")]
        ) from None


def _load_client(name: str, config: StoreConfig) -> Any:
    """A ``kubernetes.client.ApiClient`` from the service account or kubeconfig, with a connection pool as large
    as a pass's concurrency (the client library's default is 5 per CPU)."""
    from kubernetes import client as k8s

    def config_error(message: str) -> Exception:
        remedy = (
            "; in a pod, mount the ServiceAccount token (deploy/kubernetes/components/secret-store does), "
            f"elsewhere set stores.{name}.kubeconfig"
        )
        return ConfigError([ConfigIssue(f"stores.{name}", message + remedy)])

    loaded = load_api_client(
        in_cluster=config.in_cluster,
        kubeconfig=config.kubeconfig,
        context=config.context,
        service_account_dir=config.service_account_dir,
        what=f"store {name!r}",
        error=config_error,
    )
    configuration = loaded.configuration
    configuration.connection_pool_maxsize = POOL_CONNECTIONS
    loaded.close()
    return k8s.ApiClient(configuration)


def open_store(
    name: str,
    config: StoreConfig,
    *,
    api_client: Any = None,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> KubernetesSecretStore:
    """Open the Kubernetes store ``name``.

    ``api_client`` (a ``kubernetes.client.ApiClient``; tests inject one, and it is then not closed by
    :meth:`~KubernetesSecretStore.close`) replaces the one loaded from the service account or kubeconfig;
    ``clock`` dates the versions and ``current-since`` (the engine's clock), ``sleep`` waits between retries.
    Raises MissingExtraError without ``momento-rotator[k8s]``, ConfigError (no namespace, no usable credentials).
    """
    return KubernetesSecretStore(name, config, api_client=api_client, clock=clock, sleep=sleep)


def _open(spec: StoreSpec, context: StoreContext) -> SecretStore:
    assert isinstance(spec.config, StoreConfig)
    options = {"clock": context.clock, "sleep": context.sleep, **context.options}
    return open_store(spec.name, spec.config, **options)


#: the ``kubernetes`` store type, registered under the entry point group ``rotator.stores``
STORE_TYPE = StoreType(
    name="kubernetes",
    config=StoreConfig,
    target=TargetOptions,
    open=_open,
    capabilities=KubernetesSecretStore.capabilities,
    extra="k8s",
    sdk="kubernetes",
)
