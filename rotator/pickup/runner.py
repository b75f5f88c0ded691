"""Runs a policy's pickup checks for the engine, opening each check once per process."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from typing import Any

import structlog

from rotator.config import Policy
from rotator.model import PickupVerdict, SecretState
from rotator.pickup.base import PickupCheck, open_check

log = structlog.get_logger("rotator")


class PickupRunner:
    """``runner(policy, key_id, states)``: every configured check's verdict on ``key_id``.

    ``published_at`` given to the checks is when the last target took the key (from the stores' states).
    A check that raises (a bug, or a library error) yields a lagging verdict, never an exception: missing
    evidence blocks revocation, it does not break the pass.
    """

    def __init__(self, **injected: Any) -> None:
        self._injected = injected
        self._checks: dict[tuple[str, int], PickupCheck] = {}
        self._lock = threading.Lock()

    def _check(self, policy: Policy, i: int) -> PickupCheck:
        with self._lock:
            key = (policy.name, i)
            if key not in self._checks:
                self._checks[key] = open_check(policy.pickup[i], **self._injected)
            return self._checks[key]

    def __call__(self, policy: Policy, key_id: str, states: dict[str, SecretState]) -> tuple[PickupVerdict, ...]:
        sinces = [s.current_since for s in states.values() if s.current_since is not None]
        published_at = max(sinces) if sinces else datetime.now(UTC)
        verdicts: list[PickupVerdict] = []
        for i, cfg in enumerate(policy.pickup):
            kind = str(getattr(cfg, "type", "check"))
            try:
                verdict = self._check(policy, i).check(policy.name, key_id, published_at)
            except Exception as exc:
                verdict = PickupVerdict(kind, key_id, False, (), f"check failed: {type(exc).__name__}: {exc}")
            log.info("pickup check", check=verdict.check, key_id=key_id, ok=verdict.ok, lagging=list(verdict.lagging))
            verdicts.append(verdict)
        return tuple(verdicts)

    def close(self) -> None:
        with self._lock:
            for c in self._checks.values():
                with contextlib.suppress(Exception):  # closing must not mask the outcome
                    c.close()
            self._checks.clear()
