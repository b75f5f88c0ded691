"""The pickup-check contract and its registry.

A check answers one question: does this consumer group use key X yet? ``grace`` (the minimum overlap) is
not a check: the planner always applies it. Checks are configured per policy under ``pickup:``; all of them
must agree before the old key is revoked.

A check module under ``rotator.pickup`` defines, with no optional library imported at module level:

- ``CheckConfig``: a pydantic model with ``type: Literal["<kind>"]`` and the check's settings;
- ``open_check(config: CheckConfig, **injected) -> PickupCheck``.

A check never raises for a consumer that does not answer: it reports that consumer as lagging (with the
reason in ``detail``), because "no evidence" must block revocation, not break the pass.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from types import ModuleType
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, BeforeValidator, Field

from rotator.durations import parse_duration
from rotator.model import PickupVerdict


def _seconds(value: Any) -> float:
    """A timeout as float seconds: a number, or a duration such as ``"5s"`` or ``"500ms"``."""
    return parse_duration(value).total_seconds()


#: a check's per-request timeout: seconds or a duration, more than 0 and at most 300 s
Timeout = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=300)]

#: check type -> module
REGISTRY: dict[str, str] = {
    "http": "rotator.pickup.http",
    "kubernetes": "rotator.pickup.kubernetes",
}


def backend(kind: str) -> ModuleType:
    return importlib.import_module(REGISTRY[kind])


@runtime_checkable
class PickupCheck(Protocol):
    """One configured check of one policy."""

    #: a short label for status and logs, e.g. ``http`` or ``kubernetes:payments/app=checkout``
    name: str

    def check(self, policy: str, key_id: str, published_at: datetime) -> PickupVerdict:
        """Whether every consumer this check knows uses ``key_id``.

        ``published_at`` is when the last target started holding ``key_id`` (a pod started before it cannot
        have loaded the key). Returns ``PickupVerdict(check=self.name, key_id=key_id, ok=..., lagging=(names of
        consumers not yet on key_id, each with what it reports), detail=...)``. Never raises for a consumer
        that is down or answers garbage: that consumer lags.
        """
        ...

    def close(self) -> None: ...


def open_check(config: BaseModel, **injected: Any) -> PickupCheck:
    kind = str(getattr(config, "type"))  # noqa: B009
    check: PickupCheck = backend(kind).open_check(config, **injected)
    return check
