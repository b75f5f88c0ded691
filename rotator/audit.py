"""``rotator audit``: every key in the Momento account, classified. Pure over what was read; touches nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.config import Config
from rotator.model import KeyInfo, SecretState

CLASSES = ("managed", "pending", "orphaned", "unmanaged")


@dataclass(frozen=True)
class KeyAudit:
    key: KeyInfo
    role: str
    cls: str  # managed | pending | orphaned | unmanaged
    policy: str | None
    flags: tuple[str, ...]  # expiring-no-policy, never-expires-owner, expired, current, held-by:<target>...

    def to_json(self) -> dict[str, object]:
        k = self.key
        return {
            "key_id": k.key_id,
            "role": self.role,
            "issued_at": k.issued_at.isoformat(),
            "expires_at": k.expires_at.isoformat() if k.expires_at else None,
            "class": self.cls,
            "policy": self.policy,
            "flags": list(self.flags),
            "description": k.description,
        }


def classify(
    config: Config,
    keys: list[KeyInfo],
    roles: dict[str, str],
    held: dict[str, dict[str, SecretState | None]],
    now: datetime,
    window: timedelta,
) -> list[KeyAudit]:
    """Classify each key.

    ``roles`` maps role id -> name; ``held`` maps policy name -> target id -> state (None: unreadable).
    - managed: carries the marker of a configured policy and some target holds it (any version), or a target
      of its policy could not be read (so it may);
    - pending: the newest key of a configured policy, younger than ``orphan_after``, that no target holds
      yet (a pass may be publishing it);
    - orphaned: carries a marker, but its policy is not configured, or no target holds it;
    - unmanaged: no marker.
    Flags: ``expiring-no-policy`` (expires within ``window`` and no configured policy looks after it:
    unmanaged, or marked for a policy that is not configured; never on a key of a configured policy),
    ``never-expires-owner``
    (no expiry and the Owner role), ``expired``, ``current`` (a target serves it), ``unverified`` (a target
    could not be read).
    """
    policies = {p.name: p for p in config.policies}
    # the newest key of each policy, found once (not per key: that was quadratic in the fleet)
    newest_of: dict[str, KeyInfo] = {}
    for x in keys:
        if x.policy is not None:
            best = newest_of.get(x.policy)
            if best is None or (x.issued_at, x.key_id) > (best.issued_at, best.key_id):
                newest_of[x.policy] = x
    out: list[KeyAudit] = []
    for k in sorted(keys, key=lambda k: (k.policy or "~", k.issued_at, k.key_id)):
        role = roles.get(k.role_id, k.role_id)
        flags: list[str] = []
        policy = k.policy
        if policy is None:
            cls = "unmanaged"
        elif policy not in policies:
            cls = "orphaned"
            flags.append("policy-not-configured")
        else:
            states = held.get(policy, {})
            holding = [tid for tid, s in states.items() if s is not None and s.holds(k.key_id)]
            current = [tid for tid, s in states.items() if s is not None and s.current_key_id == k.key_id]
            unreadable = any(s is None for s in states.values())
            newest = newest_of[policy]
            pending = newest.key_id == k.key_id and now - k.issued_at < policies[policy].orphan_after
            if holding or unreadable:
                cls = "managed"
            elif pending:
                cls = "pending"
            else:
                cls = "orphaned"
                flags.append("held-by-no-target")
            if current:
                flags.append("current")
            if unreadable:
                flags.append("unverified")
        if k.expires_at is not None and k.expires_at <= now:
            flags.append("expired")
        elif k.expires_at is not None and (policy is None or policy not in policies) and k.expires_at - now <= window:
            flags.append("expiring-no-policy")
        if k.expires_at is None and role.lower() == "owner":
            flags.append("never-expires-owner")
        out.append(KeyAudit(k, role, cls, policy, tuple(flags)))
    return out
