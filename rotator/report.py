"""What a pass did: one :class:`ActionResult` per action, one :class:`PolicyReport` per policy, one
:class:`PassReport` per pass, with their JSON shapes (the ``rotator once`` summary, the Lambda's answer) and
the exit code. Read by the CLI, the daemon, the metrics, the alerts and the status page; written only by
:mod:`rotator.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rotator.model import (
    Action,
    CreateKey,
    KeyInfo,
    PickupVerdict,
    Plan,
    Publish,
    Reload,
    ReloadStatus,
    Retire,
    Revoke,
    SecretState,
    TargetObservation,
)
from rotator.planner import Options

__all__ = ["UNSERVED", "ActionResult", "PassReport", "PolicyReport", "mark_unserved"]


@dataclass
class ActionResult:
    action: Action
    ok: bool
    error: str | None = None
    key_id: str | None = None  # for create: the new key's id
    detail: dict[str, str] = field(default_factory=dict)
    #: why the action was not carried out although nothing failed: its precondition no longer held when it
    #: was re-checked against fresh state (compare-and-set), so the next pass decides again
    skipped: str | None = None
    deadline: bool = False  # not started (or stopped) because the pass ran past pass_timeout

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action.kind, "ok": self.ok}
        if self.skipped:
            out["skipped"] = self.skipped
        for name in ("key_id", "target", "unit", "source", "reason"):
            v = getattr(self.action, name, None)
            if v is not None:
                out[name] = v
        if self.key_id:
            out["new_key_id"] = self.key_id
        if self.error:
            out["error"] = self.error
        if self.detail:
            out["targets"] = self.detail
        return out


@dataclass
class PolicyReport:
    policy: str
    plan: Plan | None
    results: list[ActionResult] = field(default_factory=list)
    error: str | None = None
    targets: dict[str, SecretState | None] | None = None
    target_errors: dict[str, str] = field(default_factory=dict)
    keys: tuple[KeyInfo, ...] = ()
    target_ids: tuple[str, ...] = ()
    #: what the plan was made from, so that an action can re-plan against fresh state right before it acts
    opts: Options | None = field(default=None, repr=False)
    verdicts: tuple[PickupVerdict, ...] | None = field(default=None, repr=False)
    observed_targets: dict[str, TargetObservation] | None = field(default=None, repr=False)
    #: each reload unit's state for the active key, when the pass observed them
    reloads: tuple[ReloadStatus, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results)

    def held_keys(self) -> dict[str, KeyInfo | None]:
        """The key each target holds as current, as far as this pass knows (target id -> key, or None).

        Targets that were not read hold the policy's one live key (that is what steady state means).
        """
        by_id = {k.key_id: k for k in self.keys}
        out: dict[str, KeyInfo | None] = {}
        if self.targets is not None:
            for tid, state in self.targets.items():
                out[tid] = by_id.get(state.current_key_id) if state and state.current_key_id else None
        elif self.plan is not None and self.plan.phase in ("steady", "awaiting-window") and self.plan.current_key:
            # not read in this pass: a steady (or window-waiting) plan holds one key, the current one
            out = {tid: by_id.get(self.plan.current_key) for tid in self.target_ids}
        return out

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        out: dict[str, Any] = {
            "policy": self.policy,
            "ok": self.ok,
            "phase": p.phase if p else "error",
            "current_key": p.current_key if p else None,
            "planned": [_action_json(a) for a in p.actions] if p else [],
            "results": [r.to_json() for r in self.results],
            "notes": list(p.notes) if p else [],
            "wake_at": p.wake_at.isoformat() if p and p.wake_at else None,
            "window_opens": p.window_opens.isoformat() if p and p.window_opens else None,
        }
        if self.reloads is not None:
            out["reloads"] = [reload_json(r) for r in self.reloads]
        if self.error:
            out["error"] = self.error
        return out


def reload_json(r: ReloadStatus) -> dict[str, Any]:
    """A reload unit's state as the summary, ``status --json`` and the status page show it."""
    out: dict[str, Any] = {"target": r.target, "unit": r.unit, "type": r.type, "key_id": r.key_id, "state": r.state}
    if r.since is not None:
        out["since"] = r.since.isoformat()
    if r.detail:
        out["detail"] = r.detail
    return out


def _action_json(a: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"action": a.kind}
    for name in ("key_id", "target", "unit", "source", "reason"):
        v = getattr(a, name, None)
        if v is not None:
            out[name] = v
    if isinstance(a, Revoke) and a.retire_in:
        out["retire_in"] = list(a.retire_in)
    return out


@dataclass
class PassReport:
    started: datetime
    finished: datetime
    dry_run: bool
    policies: list[PolicyReport]
    error: str | None = None
    issuer_ok: bool = True
    issuer_auth_error: bool = False  # the management key was refused (401/403): bad input, exit code 2
    deadline_passed: bool = False  # the pass ran past pass_timeout: the mutations left were not started
    #: policies whose targets hold no live key after this pass, with none published by it (never ok)
    unserved: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.deadline_passed and all(p.ok for p in self.policies)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        c = {"created": 0, "published": 0, "retired": 0, "reloaded": 0, "revoked": 0, "skipped": 0, "failed": 0}
        for p in self.policies:
            for r in p.results:
                if not r.ok:
                    c["failed"] += 1
                elif r.skipped:
                    c["skipped"] += 1
                elif isinstance(r.action, CreateKey):
                    c["created"] += 1
                elif isinstance(r.action, Publish):
                    c["published"] += 1
                elif isinstance(r.action, Retire):
                    c["retired"] += 1
                elif isinstance(r.action, Reload):
                    c["reloaded"] += 1
                elif isinstance(r.action, Revoke):
                    c["revoked"] += 1
            if p.error:
                c["failed"] += 1
        return c

    def wake_at(self) -> datetime | None:
        times = [p.plan.wake_at for p in self.policies if p.plan and p.plan.wake_at]
        return min(times) if times else None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "started": self.started.isoformat(),
            "duration_s": round((self.finished - self.started).total_seconds(), 3),
            "counts": self.counts(),
            "error": self.error,
            "deadline_passed": self.deadline_passed,
            "policies": [p.to_json() for p in self.policies],
        }


UNSERVED = "no target holds a live key, and this pass published none"


def mark_unserved(report: PassReport) -> list[str]:
    """Policies whose targets were read and hold no live key, with nothing published by this pass either.

    Such a policy is never reported as ok (e.g. every target failed, and its key waits out orphan_after):
    its report gets an error, so the summary, the metrics and the alerts all see a failure."""
    out = []
    for pr in report.policies:
        if pr.error or pr.targets is None:
            continue
        live = {k.key_id for k in pr.keys if k.expires_at is None or k.expires_at > report.finished}
        held = any(s is not None and s.current_key_id in live for s in pr.targets.values())
        published = any(
            (r.ok and r.action.kind == "publish") or any(v == "ok" for v in r.detail.values()) for r in pr.results
        )
        if not held and not published:
            pr.error = UNSERVED
            out.append(pr.policy)
    return out
