"""Runs a policy's reload targets for the engine, opening each target once per process."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from rotator.config import Policy
from rotator.errors import ReloadError
from rotator.model import ReloadStatus, SecretState
from rotator.redaction import redact_text
from rotator.reload.base import ReloadContext, ReloadTarget, open_target

log = structlog.get_logger("rotator")


def published_at(states: dict[str, SecretState]) -> datetime:
    """When the last target of a policy took its current key (a restart before that cannot have loaded it)."""
    sinces = [s.current_since for s in states.values() if s.current_since is not None]
    return max(sinces) if sinces else datetime.now(UTC)


class ReloadRunner:
    """``runner.observe(policy, key_id, states)``: every reload unit's state; ``runner.reload(...)``: start one.

    Statuses carry the label the runner gives each target (its ``name``, made unique within the policy) and
    the target's declared capabilities, so that the planner needs nothing else. A target whose observe
    raises (a bug, a library error) yields one ``unknown`` unit: missing evidence blocks revocation, it never
    breaks the pass.
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None, **injected: Any) -> None:
        self._clock = clock
        self._injected = injected
        self._targets: dict[tuple[str, int], ReloadTarget] = {}
        self._lock = threading.Lock()

    def _target(self, policy: Policy, i: int) -> ReloadTarget:
        with self._lock:
            key = (policy.name, i)
            if key not in self._targets:
                context = ReloadContext(policy.name, policy.pickup, self._clock, dict(self._injected))
                self._targets[key] = open_target(policy.reload[i], context)
            return self._targets[key]

    def _labelled(self, policy: Policy) -> list[tuple[str, ReloadTarget | None, str]]:
        """Each reload target of ``policy`` in config order: (label, the opened target or None, why not).

        The label is the target's ``name``, with ``#<index>`` when an earlier target has the same one."""
        out: list[tuple[str, ReloadTarget | None, str]] = []
        seen: set[str] = set()
        for i, cfg in enumerate(policy.reload):
            kind = _kind(cfg)
            target: ReloadTarget | None = None
            why = ""
            try:
                target = self._target(policy, i)
                base = target.name
            except Exception as exc:  # a target that cannot be opened (no extra, bad credentials): unknown
                base = kind
                why = str(exc) if isinstance(exc, ReloadError) else f"{type(exc).__name__}: {exc}"
            label = base if base not in seen else f"{base}#{i}"
            seen.add(label)
            out.append((label, target, redact_text(why)[:300]))
        return out

    def observe(
        self, policy: Policy, key_id: str, states: dict[str, SecretState], *, only: str | None = None
    ) -> tuple[ReloadStatus, ...]:
        """Every unit's state for ``key_id`` (``only``: the units of the target with that label)."""
        when = published_at(states)
        out: list[ReloadStatus] = []
        for (label, target, why), cfg in zip(self._labelled(policy), policy.reload, strict=True):
            if only is not None and label != only:
                continue
            if target is None:
                kind = _kind(cfg)
                out.append(ReloadStatus(label, "*", kind, key_id, "unknown", detail=why))
                continue
            caps = target.capabilities
            try:
                got = target.observe(key_id, when)
            except Exception as exc:  # a bug or a library error: unknown, never a broken pass
                detail = str(exc) if isinstance(exc, ReloadError) else f"{type(exc).__name__}: {exc}"
                out.append(ReloadStatus(label, "*", target.type, key_id, "unknown", detail=redact_text(detail)[:300]))
                continue
            for s in got:
                out.append(
                    dataclasses.replace(
                        s,
                        target=label,
                        type=target.type,
                        key_id=key_id,
                        rollout=caps.rollout,
                        observable=caps.observable,
                    )
                )
        for s in out:
            log.info("reload observed", reload=s.id, key_id=key_id, state=s.state, detail=s.detail or None)
        return tuple(out)

    def reload(
        self,
        policy: Policy,
        target_label: str,
        unit: str,
        key_id: str,
        expires_at: datetime | None,
        states: dict[str, SecretState],
    ) -> None:
        """Start the reload of ``unit`` of the target labelled ``target_label``. Raises ReloadError."""
        for label, target, why in self._labelled(policy):
            if label == target_label:
                if target is None:
                    raise ReloadError(why or "the reload target could not be opened", target=label, unit=unit)
                target.reload(unit, key_id, expires_at, published_at(states))
                return
        raise ReloadError("no such reload target in the policy", target=target_label, unit=unit)

    def close(self) -> None:
        with self._lock:
            for t in self._targets.values():
                with contextlib.suppress(Exception):  # closing must not mask the outcome
                    t.close()
            self._targets.clear()


def _kind(cfg: Any) -> str:
    """A reload config's ``type`` (every ReloadConfig has one: a Literal)."""
    return str(getattr(cfg, "type", "reload"))
