"""The secret-store contract every backend implements, and the registry that finds backends by name.

A backend is one module under ``rotator.stores`` named after the service. It defines, with no cloud SDK
imported at module level (the SDK is imported inside :func:`open_store` or the store's constructor, so a
config can be validated without the extra installed and a Lambda for AWS never loads Azure or Google code):

- ``StoreConfig``: a pydantic model of the store's own settings (``stores.<name>`` in the config), with a
  ``type: Literal["<kind>"]`` field;
- ``TargetOptions``: a pydantic model of what a target pointing at this store may set. It sees the whole
  target mapping (``store``, ``secret``, ``format``, ``endpoint_secret`` and any store-specific fields) and
  validates ``secret`` against the service's naming rules; unknown fields are errors;
- ``open_store(name, config, **injected) -> SecretStore``.

Every method names its target with a :class:`TargetRef` and raises only :class:`rotator.errors.StoreError`
subclasses, whose messages name the store and the secret and never carry secret material.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from rotator.errors import MissingExtraError
from rotator.model import SecretState, SecretText

#: store type -> (module, extra that provides its SDK, the SDK module whose absence means the extra is missing)
REGISTRY: dict[str, tuple[str, str | None, str | None]] = {
    "file": ("rotator.stores.file", None, None),
    "aws": ("rotator.stores.aws", "aws", "boto3"),
    "azure": ("rotator.stores.azure", "azure", "azure.keyvault.secrets"),
    "gcp": ("rotator.stores.gcp", "gcp", "google.cloud.secretmanager"),
}


def backend(kind: str) -> ModuleType:
    """The backend module for a store type. Raises ``KeyError`` for an unknown type."""
    module, _, _ = REGISTRY[kind]
    return importlib.import_module(module)


def require_extra(kind: str) -> None:
    """Raise :class:`MissingExtraError` with the exact ``pip install`` when a backend's SDK is missing."""
    _, extra, sdk = REGISTRY[kind]
    if sdk is None or extra is None:
        return
    try:
        importlib.import_module(sdk)
    except ImportError as exc:
        raise MissingExtraError(extra, sdk) from exc


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
    # A store with no staging (Key Vault) also sets ``stage_makes_current = True``: its ``stage`` is the switch,
    # so the engine reads the target again right before staging (the compare-and-set of ``promote`` comes
    # too late there). Optional: the engine reads it with ``getattr(store, "stage_makes_current", False)``.

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

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


def open_store(kind: str, name: str, config: BaseModel, **injected: Any) -> SecretStore:
    """Open the store ``name`` of type ``kind``; raises MissingExtraError when its SDK is not installed."""
    require_extra(kind)
    store: SecretStore = backend(kind).open_store(name, config, **injected)
    return store
