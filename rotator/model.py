"""The values a pass passes around: what the issuer and the stores hold, and what to do about it.

All are frozen dataclasses. Times are timezone-aware UTC ``datetime``s. Plaintext keys only ever travel
inside :class:`SecretText`, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from rotator.redaction import SECRETS, SecretText

__all__ = ["SECRETS", "SecretText"]  # re-exported: they live in rotator.redaction

#: the longest key description the key API accepts (the emulator models the same limit), marker included
KEY_DESCRIPTION_MAX = 1024

MARKER_RE = re.compile(r"\[rotator:([a-z0-9][a-z0-9-]{0,62})\]\s*\Z")


def marker(policy: str) -> str:
    """The marker rotator appends to the description of every key it creates for ``policy``."""
    return f"[rotator:{policy}]"


def policy_of(description: str | None) -> str | None:
    """The policy name in a key description's marker, or ``None`` for a key rotator did not create."""
    if not description:
        return None
    m = MARKER_RE.search(description)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Role:
    role_id: str
    role_name: str
    role_type: str = "system"


@dataclass(frozen=True)
class KeyInfo:
    """A key as the issuer lists it (never the plaintext)."""

    key_id: str
    role_id: str
    description: str
    issued_at: datetime
    expires_at: datetime | None

    @functools.cached_property
    def policy(self) -> str | None:
        # Cached: a pass asks every key for its policy at least once per policy that looks at it, and the
        # marker regex is the cost of a steady pass at fleet scale (issue 13). cached_property writes to the
        # instance __dict__ directly, so it works on a frozen dataclass and is not part of eq/hash.
        return policy_of(self.description)


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: its metadata and its plaintext, which exists only in memory until written."""

    info: KeyInfo
    api_key: SecretText = field(repr=False)


@dataclass(frozen=True)
class StoredVersion:
    """One version of a secret, as a store lists it, without its value.

    ``key_id`` is the Momento key id the version holds (from the store's metadata), or ``None`` when the
    version was not written by rotator.
    """

    version: str
    key_id: str | None
    created_at: datetime | None
    current: bool
    enabled: bool = True
    #: staged to become current, by a rotation in progress (AWS: labelled ``AWSPENDING``)
    pending: bool = False


@dataclass(frozen=True)
class SecretState:
    """What one target holds now.

    ``current_since`` is when the current version became current (for grace). ``foreign`` is true when the
    secret holds a current value that rotator did not write.
    """

    exists: bool
    versions: tuple[StoredVersion, ...] = ()
    current_key_id: str | None = None
    current_since: datetime | None = None
    foreign: bool = False
    #: the store rotates this secret itself with rotator's own function (AWS native rotation): it has one
    #: writer, so a pass only observes it, and retires and revokes old keys after grace
    native: bool = False

    def holds(self, key_id: str) -> bool:
        """Whether any version (current or not, enabled or not) holds ``key_id``."""
        return any(v.key_id == key_id for v in self.versions)

    def enabled_key_ids(self) -> set[str]:
        return {v.key_id for v in self.versions if v.enabled and v.key_id is not None}


@dataclass(frozen=True)
class TargetObservation:
    """A target's state, or the error that stopped us reading it."""

    target: str
    state: SecretState | None
    error: str | None = None


@dataclass(frozen=True)
class PickupVerdict:
    """What a pickup check said about a key: ``ok`` when every consumer it knows uses ``key_id``."""

    check: str
    key_id: str
    ok: bool
    lagging: tuple[str, ...] = ()
    detail: str = ""


ReloadState = Literal["pending", "waiting", "rolling", "done", "failed", "unknown"]


@dataclass(frozen=True)
class ReloadStatus:
    """One unit of a reload target (a Deployment, an ECS service, a function, a webhook URL) with respect to
    ``key_id``, as the service shows it (:meth:`rotator.reload.base.ReloadTarget.observe`).

    ``target`` is the reload target's label, ``unit`` the unit within it. ``since`` is when the reload for
    ``key_id`` started (``rolling``, ``done``, ``failed``), by the service's clock. ``rollout`` and
    ``observable`` are the target's declared capabilities, carried so that the planner needs nothing else.
    """

    target: str
    unit: str
    type: str
    key_id: str
    state: ReloadState
    since: datetime | None = None
    detail: str = ""
    rollout: bool = True
    observable: bool = True

    @property
    def id(self) -> str:
        return f"{self.target}/{self.unit}"


@dataclass(frozen=True)
class Observation:
    """Everything the planner may know about one policy at one moment.

    ``targets`` is ``None`` when the stores were not read (a steady-state pass); then the planner may only
    conclude "nothing to do" or "read the stores".
    """

    keys: tuple[KeyInfo, ...]
    targets: dict[str, TargetObservation] | None = None
    pickup: tuple[PickupVerdict, ...] | None = None
    #: every reload unit's state for the active key, or ``None`` when not read
    reloads: tuple[ReloadStatus, ...] | None = None


# ---- actions -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateKey:
    """Create a new key for the policy and publish it to every target."""

    policy: str
    reason: str
    kind: Literal["create"] = "create"


@dataclass(frozen=True)
class Publish:
    """Copy ``key_id`` from ``source`` (a target that holds it as current) to ``target``."""

    policy: str
    key_id: str
    target: str
    source: str
    kind: Literal["publish"] = "publish"


@dataclass(frozen=True)
class Retire:
    """Mark the versions of ``key_id`` in ``target`` as retired (disabled where the store can)."""

    policy: str
    key_id: str
    target: str
    reason: str
    kind: Literal["retire"] = "retire"


@dataclass(frozen=True)
class Revoke:
    """Retire the key's versions in ``retire_in``, then revoke it at the issuer. ``orphan``: a key no target
    ever held (the sweep), as opposed to a key a newer one replaced."""

    policy: str
    key_id: str
    reason: str
    retire_in: tuple[str, ...] = ()
    orphan: bool = False
    kind: Literal["revoke"] = "revoke"


@dataclass(frozen=True)
class Reload:
    """Make the consumers of ``unit`` (of reload target ``target``) load ``key_id``: restart or signal them."""

    policy: str
    key_id: str
    target: str
    unit: str
    reason: str
    #: the reload type (``kubernetes``, ``ecs``, ``lambda``, ``webhook``)
    type: str = ""
    #: the target declared it a rollout (counted against the caps) rather than a signal
    rollout: bool = True
    kind: Literal["reload"] = "reload"

    @property
    def id(self) -> str:
        return f"{self.target}/{self.unit}"


Action = CreateKey | Publish | Retire | Reload | Revoke

Phase = Literal[
    "steady",
    "due",
    "awaiting-window",
    "no-key",
    "expired",
    "publishing",
    "reloading",
    "awaiting-pickup",
    "revoking",
    "blocked",
    "unknown",
]


@dataclass(frozen=True)
class Plan:
    """What the planner decided for one policy.

    ``phase`` names where the lifecycle stands; ``wake_at`` is the next moment the plan could change on its
    own (a due time, the end of grace, an orphan deadline); ``needs_targets`` asks the engine to read the
    stores and plan again; ``notes`` are human explanations (warnings start with ``"!"``).
    """

    policy: str
    phase: Phase
    actions: tuple[Action, ...] = ()
    wake_at: datetime | None = None
    needs_targets: bool = False
    needs_pickup: str | None = None
    #: the key id whose reload targets the engine should observe before planning again
    needs_reload: str | None = None
    current_key: str | None = None
    notes: tuple[str, ...] = ()
    #: a due rotation waits for the window (or the end of a freeze): the moment it may start
    window_opens: datetime | None = None
