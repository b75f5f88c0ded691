"""In-memory issuer and store for the planner/engine property tests.

They keep the contracts of :class:`rotator.issuers.base.KeyIssuer` and :class:`rotator.stores.base.SecretStore`
(the contract suite runs against MemoryStore too), record every call through ``record_call`` so that
crashes can be injected between any two calls, and keep a history of which key each secret held as
current and when, so the tests can check the invariants at the moment of every revocation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rotator.errors import IssuerNotFound, StoreConflict, StoreNotFound, StorePreconditionFailed, StoreUnavailable
from rotator.model import IssuedKey, KeyInfo, Role, SecretState, SecretText, StoredVersion
from rotator.observability import record_call
from rotator.stores.base import ANY_CURRENT, Expect, StoreBase, TargetRef, VersionMeta

ROLES = [Role("r-owner", "owner"), Role("r-operator", "operator"), Role("r-viewer", "viewer")]



def fake_v2_key(key_id: str, expires_at: datetime | None, *, secret: str = "0123456789") -> str:
    """A v2-shaped Momento key (an unsigned-looking JWT with ``t: g`` and ``jti: key_id``) for the fakes."""
    import base64
    import json

    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    claims: dict[str, object] = {"t": "g", "jti": key_id, "memory-plaintext": secret}
    if expires_at is not None:
        claims["exp"] = int(expires_at.timestamp())
    return f"{seg({'alg': 'HS256', 'typ': 'JWT'})}.{seg(claims)}.c2ln"

class SimClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class MemoryIssuer:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.keys: dict[str, KeyInfo] = {}
        self.revoked: dict[str, datetime] = {}
        self.created: list[str] = []
        self.on_revoke: Callable[[KeyInfo], None] | None = None
        self._ids = itertools.count(1)
        self.down = False

    def _call(self, op: str) -> None:
        if self.down:
            record_call("memory-issuer", op, 503)
            from rotator.errors import IssuerUnavailable

            raise IssuerUnavailable(f"{op}: unavailable", status=503, operation=op)

    def list_keys(self) -> list[KeyInfo]:
        self._call("list_keys")
        out = [k for k in self.keys.values() if k.key_id not in self.revoked]
        record_call("memory-issuer", "list_keys", 200)
        return out

    def create_key(self, role_id: str, description: str, expires_at: datetime | None) -> IssuedKey:
        self._call("create_key")
        now = self.clock()
        key_id = f"k{next(self._ids):04d}"
        info = KeyInfo(key_id, role_id, description, now.replace(microsecond=0), expires_at)
        self.keys[key_id] = info
        self.created.append(key_id)
        issued = IssuedKey(info, SecretText(fake_v2_key(key_id, expires_at)))
        record_call("memory-issuer", "create_key", 200)
        return issued

    def revoke_key(self, key_id: str) -> None:
        self._call("revoke_key")
        if key_id in self.keys and key_id not in self.revoked:
            if self.on_revoke is not None:
                self.on_revoke(self.keys[key_id])
            self.revoked[key_id] = self.clock()
        elif key_id not in self.keys:
            record_call("memory-issuer", "revoke_key", 404)
            raise IssuerNotFound(f"no key {key_id}", status=404, operation="revoke_key")
        record_call("memory-issuer", "revoke_key", 200)

    def list_roles(self) -> list[Role]:
        record_call("memory-issuer", "list_roles", 200)
        return list(ROLES)

    def set_management_key(self, key: SecretText) -> None:
        """The in-memory issuer checks no key: nothing to switch."""

    def close(self) -> None:
        return None


@dataclass
class _Version:
    version: str
    key_id: str
    value: SecretText
    created: datetime
    enabled: bool = True


@dataclass
class _Secret:
    versions: list[_Version] = field(default_factory=list)
    current: str | None = None
    current_since: datetime | None = None
    # (key_id, start, end or None): which key was current, when
    history: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)


class MemoryStore(StoreBase):
    """A SecretStore in memory: promote is a compare-and-set under the process (nothing else writes it)."""

    def __init__(self, name: str, clock: Callable[[], datetime]) -> None:
        self.name = name
        self.clock = clock
        self.secrets: dict[str, _Secret] = {}
        self.failing = False
        self.mutations = 0

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})"

    def _call(self, op: str, ref: TargetRef) -> None:
        if self.failing:
            record_call("memory-store", op, 503)
            raise StoreUnavailable(f"{op} failed", store=self.name, secret=ref.secret)

    def _done(self, op: str) -> None:
        record_call("memory-store", op, 200)

    def inspect(self, ref: TargetRef) -> SecretState:
        self._call("inspect", ref)
        s = self.secrets.get(ref.secret)
        self._done("inspect")
        if s is None:
            return SecretState(exists=False)
        cur = next((v for v in s.versions if v.version == s.current), None)
        return SecretState(
            exists=True,
            versions=tuple(
                StoredVersion(v.version, v.key_id, v.created, v.version == s.current, v.enabled) for v in s.versions
            ),
            current_key_id=cur.key_id if cur else None,
            current_since=s.current_since,
            foreign=cur is not None and cur.key_id is None,
        )

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        self._call("stage", ref)
        s = self.secrets.setdefault(ref.secret, _Secret())
        if not any(v.key_id == meta.key_id for v in s.versions):
            s.versions.append(_Version(f"v{len(s.versions) + 1}", meta.key_id, value, self.clock()))
            self.mutations += 1
        self._done("stage")

    def _find(self, ref: TargetRef, key_id: str) -> tuple[_Secret, _Version]:
        s = self.secrets.get(ref.secret)
        v = next((v for v in (s.versions if s else []) if v.key_id == key_id), None)
        if s is None or v is None:
            raise StoreNotFound(f"no version holds {key_id}", store=self.name, secret=ref.secret)
        return s, v

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        self._call("read", ref)
        _, v = self._find(ref, key_id)
        if not v.enabled:
            raise StoreNotFound(f"version of {key_id} is disabled", store=self.name, secret=ref.secret)
        self._done("read")
        return v.value

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        self._call("promote", ref)
        s, v = self._find(ref, key_id)
        if s.current != v.version and expect_current is not ANY_CURRENT:
            held = next((x.key_id for x in s.versions if x.version == s.current), None)
            if held != expect_current:
                raise StorePreconditionFailed("the current version changed", store=self.name, secret=ref.secret)
        if s.current != v.version:
            now = self.clock()
            if s.history and s.history[-1][2] is None:
                k, start, _ = s.history[-1]
                s.history[-1] = (k, start, now)
            s.history.append((key_id, now, None))
            s.current, s.current_since, v.enabled = v.version, now, True
            self.mutations += 1
        self._done("promote")

    def retire(self, ref: TargetRef, key_id: str) -> None:
        self._call("retire", ref)
        s = self.secrets.get(ref.secret)
        for v in s.versions if s else []:
            if v.key_id == key_id:
                if s is not None and v.version == s.current:
                    raise StoreConflict("refusing to retire the current key", store=self.name, secret=ref.secret)
                if v.enabled:
                    v.enabled = False
                    self.mutations += 1
        self._done("retire")

    def close(self) -> None:
        return None

    def plant_foreign(self, ref: TargetRef, text: str) -> None:
        """Make ``text`` the current value as someone else would: a version that names no key."""
        s = self.secrets.setdefault(ref.secret, _Secret())
        v = _Version(f"v{len(s.versions) + 1}", None, SecretText(text), self.clock())  # type: ignore[arg-type]
        s.versions.append(v)
        s.current, s.current_since = v.version, self.clock()

    # -- for the invariants --------------------------------------------------------------------------

    def current_key(self, secret: str) -> str | None:
        s = self.secrets.get(secret)
        if s is None or s.current is None:
            return None
        return next(v.key_id for v in s.versions if v.version == s.current)

    def last_current(self, secret: str, key_id: str) -> tuple[bool, datetime | None]:
        """(is current now, when it last stopped being current)."""
        s = self.secrets.get(secret)
        if s is None:
            return False, None
        ends = [(end) for k, _, end in s.history if k == key_id]
        if any(e is None for e in ends):
            return True, None
        return False, max(ends) if ends else None  # type: ignore[type-var]
