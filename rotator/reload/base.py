"""The reload-target contract and its registry: how rotator makes consumers load a new key.

Most consumers read their key once, at start-up (an environment variable injected from a secret, a file
read once): they use a new key only once something restarts them. A **reload target** is one such group of
consumers and the way to restart it: a Kubernetes rollout restart, an ECS deployment, a Lambda configuration
update, a signed webhook. Reload targets are configured per policy under ``reload:``.

The planner decides reloads from **observed state**, like everything else (no database of rotator's own): a
target's :meth:`ReloadTarget.observe` reports, for each *unit* it covers (one Deployment, one ECS service,
one function), whether that unit has been reloaded for a key id and how far it got (:class:`ReloadStatus`),
read from the service itself (a pod-template annotation, a deployment's creation time, an environment
variable). A pass killed mid-reload is finished by the next one; a reload already done is never repeated.

A reload module under ``rotator.reload`` defines, with no optional library imported at module level:

- ``ReloadConfig``: a pydantic model with ``type: Literal["<kind>"]`` and the target's settings;
- ``open_target(config: ReloadConfig, context: ReloadContext) -> ReloadTarget``.

The target declares what it can do in ``capabilities`` (:class:`ReloadCapabilities`); the planner and the
engine read the declaration, never the type.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from rotator.model import ReloadStatus

__all__ = [
    "REGISTRY",
    "ReloadCapabilities",
    "ReloadContext",
    "ReloadStatus",
    "ReloadTarget",
    "backend",
    "open_target",
]

#: reload type -> module
REGISTRY: dict[str, str] = {
    "kubernetes": "rotator.reload.kubernetes",
    "ecs": "rotator.reload.ecs",
    "lambda": "rotator.reload.lambda_fn",
    "webhook": "rotator.reload.webhook",
}


def backend(kind: str) -> ModuleType:
    return importlib.import_module(REGISTRY[kind])


@dataclass(frozen=True)
class ReloadCapabilities:
    """What a reload target declares about itself.

    ``observable``: :meth:`ReloadTarget.observe` reads whether a unit was reloaded for a key from the service
    (a rollout: Kubernetes, ECS, Lambda). A target that cannot be observed (a webhook: rotator cannot see
    what the receiver did) reports every unit ``pending``; the planner then sends it on every pass while old
    keys wait for revocation (at least once), and only pickup checks and grace decide the revoke.

    ``rollout``: a reload restarts consumers and takes time to finish; it counts against
    ``reload_max_parallel`` while it runs, and a finished one is pickup evidence (every consumer started after
    the key was published).
    """

    observable: bool = True
    rollout: bool = True


@dataclass(frozen=True)
class ReloadContext:
    """What the runtime gives a reload target when it opens one.

    ``policy`` is the policy's name; ``pickup`` its configured pickup checks (a kubernetes reload restarts
    only after the Secret a kubernetes check names holds the new key id); ``clock`` the pass's clock.
    ``injected`` carries test doubles and shared clients by name (``api_client`` for Kubernetes,
    ``endpoint_url`` for AWS), never a backend type.
    """

    policy: str
    pickup: Sequence[BaseModel] = ()
    clock: Callable[[], datetime] | None = None
    injected: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ReloadTarget(Protocol):
    """One configured reload target of one policy: one or more units (workloads, services, functions)."""

    #: a short label for plans, status and logs, e.g. ``kubernetes:payments/Deployment`` or ``ecs:prod``
    name: str
    #: the reload type (``kubernetes``, ``ecs``, ``lambda``, ``webhook``), the ``type`` label of metrics
    type: str
    capabilities: ReloadCapabilities

    def observe(self, key_id: str, published_at: datetime) -> list[ReloadStatus]:
        """The state of every unit this target covers with respect to ``key_id``, which the last target of
        the policy took at ``published_at`` (a restart before that cannot have loaded it).

        States: ``pending`` (not reloaded for ``key_id``: the planner may start it), ``waiting`` (a
        precondition is not met yet, e.g. the synced Secret does not hold the key id), ``rolling`` (started,
        not finished; ``since`` is when it started), ``done`` (finished; ``since`` when it started),
        ``failed`` (the service says the rollout failed), ``unknown`` (the service could not be read:
        ``detail`` says why). Never raises for a service that does not answer: that unit is ``unknown``,
        which blocks revocation and starts nothing.
        """
        ...

    def reload(self, unit: str, key_id: str, expires_at: datetime | None, published_at: datetime) -> None:
        """Start the reload of ``unit`` for ``key_id`` (idempotent where the service allows: compare-and-set
        on what :meth:`observe` read). Never sends key material, only the key id and its expiry.

        Raises :class:`rotator.errors.ReloadConflict` when the unit changed since it was observed (another
        pass got there first: not a failure), :class:`rotator.errors.ReloadError` otherwise; messages name
        the unit and the permission to grant, never a token or a value.
        """
        ...

    def close(self) -> None: ...


def open_target(config: BaseModel, context: ReloadContext) -> ReloadTarget:
    kind = str(getattr(config, "type"))  # noqa: B009
    target: ReloadTarget = backend(kind).open_target(config, context)
    return target
