"""The plug-in surface of a secret store: the contract every backend implements, what it declares about
itself, and how rotator finds and opens it. ``docs/stores/README.md`` walks through adding one.

A backend is a module (in rotator, ``rotator.stores.<service>``; outside, any package) that exports a
:class:`StoreType`, registered under the entry-point group ``rotator.stores`` (the built-in ones are
registered the same way, in rotator's own ``pyproject.toml``). The :class:`StoreType` names:

- ``config``: a pydantic model of the store's own settings (``stores.<name>`` in the config), with a
  ``type: Literal["<kind>"]`` field;
- ``target``: a :class:`BaseTargetOptions` subclass for what a target pointing at this store may set. It
  sees the whole target mapping (``store``, ``secret``, ``format``, ``endpoint_secret`` and the store's own
  fields) and validates ``secret`` against the service's naming rules; unknown fields are errors;
- ``open``: ``(StoreSpec, StoreContext) -> SecretStore``. The context carries what the runtime provides
  (the clock, ``pass_timeout``); a backend takes what it needs from it, so neither the engine nor the
  runtime ever names a backend;
- the extra and SDK module that provide its client library, for the exact ``pip install`` when it is
  missing. No SDK is imported at module level: a config is validated without the extra installed, and a
  Lambda for AWS never loads Azure or Google code.

The store itself satisfies :class:`SecretStore`, declaring its optional behaviour in ``capabilities``
(:class:`StoreCapabilities`); the engine and the runtime read the declaration, never probe the type.
Every method names its target with a :class:`TargetRef` and raises only :class:`rotator.errors.StoreError`
subclasses, whose messages name the store and the secret and never carry secret material.
"""

from __future__ import annotations

import enum
import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, field_validator

from rotator.errors import MissingExtraError
from rotator.keys import PayloadFormat, shown
from rotator.model import SecretState, SecretText
from rotator.quotas import Charge, RateLimits

#: the payload formats a target may store (``rotator.keys.render`` writes them)
FORMATS: tuple[PayloadFormat, ...] = ("json", "env", "key")


class _Unchecked(enum.Enum):
    ANY = "any"


#: ``promote(..., expect_current=ANY_CURRENT)``: promote whatever the target holds now (no compare-and-set)
ANY_CURRENT = _Unchecked.ANY

#: HTTP connections a store's client may keep open to its service: as many as a pass runs policies at once
#: (``concurrency`` is at most 64), so that no worker waits for a connection (botocore's and requests' pools
#: hold 10 by default: a pass at concurrency 16 would queue behind them or open and drop connections)
POOL_CONNECTIONS = 64
#: what ``promote`` expects the target's current version to hold: a key id, ``None`` (nothing current, or a
#: value rotator did not write), or ``ANY_CURRENT``
Expect = str | None | Literal[_Unchecked.ANY]


class BaseTargetOptions(BaseModel):
    """The fields every target has, whatever its store; a backend's ``target`` model subclasses it and adds
    its own (``region``, ``adopt``, ...) and the service's naming rules for ``secret``/``endpoint_secret``."""

    model_config = ConfigDict(extra="forbid")

    #: the name of the store under ``stores:``
    store: str
    #: the secret's name (or id, ARN, path: what the service calls it)
    secret: str
    #: what is written: ``json`` (default), ``env`` lines, or the raw ``key`` (then ``endpoint_secret``)
    format: PayloadFormat = "json"
    #: with ``format: key``, a second secret that receives the endpoint
    endpoint_secret: str | None = None

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, v: Any) -> Any:
        if v not in FORMATS:
            raise ValueError(f"unknown format {shown(v)}; use json, env or key")
        return v


@dataclass(frozen=True)
class StoreCapabilities:
    """What a store declares about itself; the engine, the preflight and the runtime read it.

    - ``stage_makes_current``: the store has no staging (Key Vault): ``stage`` is the switch, so the engine
      reads the target again right before staging (the compare-and-set of ``promote`` would come too late);
    - ``compare_and_set``: what ``promote(..., expect_current=...)`` guarantees. ``"conditional"``: the switch
      is the store's own conditional write (a link that never replaces, a label move AWS refuses when it
      moved, an etag, a ``resourceVersion``), so a concurrent promote makes one of them fail with
      StorePreconditionFailed; ``"read-then-write"``: the store has no conditional write, the current
      version is read right before the write and a writer in between is not seen (docs/design-notes.md);
    - ``preflight``: :meth:`SecretStore.preflight` proves something before a pass may mutate (the file store
      writes a probe file); ``False``: it finds nothing, and the pass checks the store target by target;
    - ``native_rotation``: the store also implements :class:`NativeRotation` (AWS Secrets Manager's own
      rotation calls a Lambda that rotator serves).
    """

    stage_makes_current: bool = False
    compare_and_set: Literal["conditional", "read-then-write"] = "conditional"
    preflight: bool = False
    native_rotation: bool = False


@dataclass(frozen=True)
class StoreSpec:
    """One entry of ``stores:``: its name, its type and its validated settings (the type's ``config``)."""

    name: str
    type: str
    config: BaseModel


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoreContext:
    """What the runtime gives every store it opens; a backend takes what it needs.

    ``clock`` is the wall clock (UTC datetimes: the engine's, so a test or ``--now`` moves every store with
    it), ``monotonic`` measures durations, ``sleep`` waits (a backoff), ``pass_timeout`` is the longest a
    pass may take (e.g. the age after which a temp file of a killed pass is stale), ``limits`` is the
    process's one :class:`rotator.quotas.RateLimits` (every store and worker charges the same scopes: a store
    with documented quotas charges each request there and reports each refusal), and ``options`` holds
    per-store keyword arguments a caller injects (a test's client, an endpoint), passed to the backend as
    they are.
    """

    clock: Callable[[], datetime] = _utc_now
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    pass_timeout: timedelta = timedelta(minutes=5)
    options: dict[str, Any] = field(default_factory=dict)
    limits: RateLimits = field(default_factory=RateLimits)


@dataclass(frozen=True)
class StoreType:
    """A store backend as it registers itself (the object its ``rotator.stores`` entry point names).

    ``capabilities``: what every store of the type declares (its stores' ``capabilities`` are these), so that
    a caller can tell before opening one (the preflight opens only stores that have one). ``extra``/``sdk``:
    the extra that provides the client library and the module whose absence means it is missing
    (``"aws"``, ``"boto3"``); ``package`` the distribution to install for a third-party store.
    """

    name: str
    config: type[BaseModel]
    target: type[BaseTargetOptions]
    open: Callable[[StoreSpec, StoreContext], SecretStore]
    capabilities: StoreCapabilities = StoreCapabilities()
    extra: str | None = None
    sdk: str | None = None
    package: str = "rotator"

    def require_sdk(self) -> None:
        """Raise :class:`MissingExtraError` with the exact ``pip install`` when the client library is missing."""
        if self.sdk is None:
            return
        try:
            importlib.import_module(self.sdk)
        except ImportError as exc:
            raise MissingExtraError(self.extra or self.package, self.sdk, package=self.package) from exc


@dataclass(frozen=True)
class PreflightProblem:
    """A problem a store's preflight found: about ``targets[index]`` (``index`` None: the store itself), in
    the field ``field`` (``secret``; for the store, its own setting such as ``path``)."""

    index: int | None
    field: str
    message: str


@dataclass(frozen=True)
class TargetRef:
    """One secret in one configured store, as a policy's target names it."""

    store: str
    secret: str
    policy: str
    options: BaseModel | None = None

    @property
    def id(self) -> str:
        return f"{self.store}:{self.secret}"

    def with_secret(self, secret: str) -> TargetRef:
        return TargetRef(self.store, secret, self.policy, self.options)


@dataclass(frozen=True)
class VersionMeta:
    """What a store records beside a new version, so it can tell which key a version holds without reading it."""

    key_id: str
    policy: str
    expires_at: datetime | None
    content_type: str
    role: str | None = None


@runtime_checkable
class SecretStore(Protocol):
    """A place that holds one secret per target, with versions, one of which is current.

    Idempotency: every mutating method may be called again with the same arguments after a crash or by a
    concurrent pass, and then changes nothing more.
    """

    name: str
    #: what this store declares about itself (read by the engine, the preflight and the runtime)
    capabilities: StoreCapabilities

    def inspect(self, ref: TargetRef) -> SecretState:
        """What the target holds now: its versions with the key id each holds, which is current and since when.

        Never reads secret values where the store can avoid it. A missing secret is
        ``SecretState(exists=False)``, not an error.

        Raises: StoreUnavailable, StorePermissionError, StoreConflict (e.g. secret scheduled for deletion).
        """
        ...

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        """Write ``value`` as a new, not yet current version that records ``meta.key_id``.

        Creates the secret if it does not exist. Staging the same key id again is a no-op.
        Raises: StoreUnavailable, StorePermissionError, StoreConflict (foreign value without adopt, ...).
        """
        ...

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        """The value of the version that holds ``key_id`` (staged or current).

        Raises: StoreNotFound (no such version, or it is disabled), StoreUnavailable, StorePermissionError.
        """
        ...

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        """Make the staged version holding ``key_id`` current. Promoting the current version is a no-op.

        Compare-and-set: unless ``expect_current`` is ``ANY_CURRENT``, the switch is made only if the current
        version still holds ``expect_current`` (a key id, or ``None`` for no rotator-written current value),
        using the store's own conditional primitive where it has one (docs/design-notes.md says which window
        each store leaves); otherwise it raises StorePreconditionFailed and changes nothing.

        Raises: StoreNotFound (nothing staged for key_id), StorePreconditionFailed, StoreUnavailable,
        StorePermissionError.
        """
        ...

    def retire(self, ref: TargetRef, key_id: str) -> None:
        """Mark every non-current version holding ``key_id`` as retired (disabled where the store can).

        Never deletes or purges. Retiring an already retired or absent key is a no-op. Refuses to retire the
        current version (StoreConflict).
        """
        ...

    def preflight(self, targets: Sequence[TargetRef]) -> list[PreflightProblem]:
        """Before a pass may change anything: what would make writing to ``targets`` fail, proven the way the
        pass will write where the store can (``capabilities.preflight``); ``[]`` when it cannot tell.

        Changes nothing a pass would see (a probe written is removed at once). Never raises for a problem:
        it returns it.
        """
        ...

    def publish_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """The requests publishing one key to ``ref`` makes (stage, the reads around it, promote), per quota
        scope: what the engine orders work by (a scope with waiting workers gets no more of them while other
        stores have work) and checks against ``pass_timeout`` before it starts a rotation. ``()``: the store
        has no request quotas (the file store, a store that declares none)."""
        ...

    def inspect_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """The requests one :meth:`inspect` of ``ref`` makes, per quota scope: what a drift check of a steady
        policy costs. The engine spreads drift checks so that a steady fleet uses at most half of any read
        quota. ``()``: no request quotas."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


@runtime_checkable
class NativeRotation(Protocol):
    """The calls of a store whose service rotates secrets itself by calling a function rotator serves (AWS
    Secrets Manager's rotation Lambda). Implemented by stores whose ``capabilities.native_rotation`` is true;
    see :mod:`rotator.runtime.native_rotation`."""

    def rotation_state(self, ref: TargetRef) -> tuple[dict[str, list[str]], bool, str | None]:
        """A fresh look at the secret: (version id -> its stage labels, rotation enabled, the secret's ARN).

        Raises: StoreNotFound (no such secret), StoreUnavailable, StorePermissionError.
        """
        ...

    def put_pending(
        self, ref: TargetRef, value: SecretText, meta: VersionMeta, version_id: str, rotation_token: str | None = None
    ) -> None:
        """Write ``value`` as the rotation's pending version ``version_id`` (idempotent)."""
        ...

    def read_version(self, ref: TargetRef, version_id: str) -> SecretText | None:
        """The value of one version, or ``None`` when it has no value yet."""
        ...

    def finish(self, ref: TargetRef, version_id: str) -> None:
        """Make the rotation's version ``version_id`` current (a no-op when it is already)."""
        ...


class StoreBase:
    """Defaults a backend may inherit: capabilities with nothing optional, and a preflight that finds
    nothing (the pass checks the store target by target)."""

    capabilities: StoreCapabilities = StoreCapabilities()

    def preflight(self, targets: Sequence[TargetRef]) -> list[PreflightProblem]:
        return []

    def publish_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        return ()

    def inspect_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        return ()
