"""Preflight: before a pass may change anything, check what can be checked, for every policy at once.

A pass that creates a key for one policy and then finds another policy's role unknown, or a store it
cannot write, has already changed the issuer. So every command that can mutate (``run``, ``once``,
``rotate``, the Lambda) gets its engine from :func:`rotator.runtime.app.build` with ``preflight=True``, which
calls :func:`check` once, before the first mutation; ``rotator validate --online`` calls it too, and
mutates nothing. What is checked:

- every policy's role resolves at the issuer (one ``GET /roles``), named as ``policies[i].role`` with the
  roles the issuer knows and the closest one;
- every file store is writable where rotator will write: each target's directory exists or can be
  created (the nearest existing ancestor is a writable directory on a writable filesystem, not a regular
  file), and an existing store directory is owned by the current user and not group/world accessible;
- a store backend that offers ``preflight(refs) -> list[str]`` is asked about its targets (none of the
  cloud stores does yet: their writes are checked by the pass itself, target by target).

What needs no network (``interval`` > 0, the description's length, durations in range, unset variables)
is checked by :mod:`rotator.config` at load time. A failure here is a :class:`ConfigError` (exit code 2),
every problem listed with its path; nothing was created, written or revoked.

An issuer that cannot be reached (or refuses the key) is not a preflight failure: the pass reports it the
usual way (exit code 1, or 2 with the remedy for a refused key), with its summary line.
"""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path
from typing import Any

import structlog

from rotator.config import Config, Policy, redact_secrets
from rotator.errors import ConfigError, ConfigIssue, IssuerError
from rotator.issuers.base import KeyIssuer
from rotator.stores.base import SecretStore, TargetRef

log = structlog.get_logger("rotator")


def check(config: Config, issuer: KeyIssuer, stores: dict[str, SecretStore]) -> None:
    """Raise ConfigError listing every problem that would make a pass fail part-way. Reads only."""
    issues: list[ConfigIssue] = []
    _check_roles(config, issuer, issues)
    _check_stores(config, stores, issues)
    if issues:
        raise ConfigError([ConfigIssue(i.path, redact_secrets(i.message)) for i in issues], source=config.source)


def _check_roles(config: Config, issuer: KeyIssuer, issues: list[ConfigIssue]) -> None:
    try:
        roles = issuer.list_roles()
    except IssuerError as exc:
        # the pass reports an unreachable issuer or a refused key itself (exit 1 / exit 2 with the remedy)
        log.warning("preflight could not list the issuer's roles", error=f"{type(exc).__name__}: {exc}")
        return
    known: dict[str, str] = {}
    for r in roles:
        known[r.role_id] = r.role_id
        known.setdefault(r.role_name.lower(), r.role_id)
    names = sorted({r.role_name.lower() for r in roles})
    for i, policy in enumerate(config.policies):
        if policy.role in known or policy.role.lower() in known:
            continue
        close = difflib.get_close_matches(policy.role.lower(), names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        issues.append(
            ConfigIssue(
                f"policies[{i}].role",
                f"unknown role {policy.role!r} at the issuer{hint}; use one of: {', '.join(names)}, "
                "or a custom role's id",
            )
        )


def _file_root(config: Config, store: str) -> Path | None:
    spec = config.stores.get(store)
    if spec is None or spec.type != "file":
        return None
    return Path(str(getattr(spec.config, "path", ""))).expanduser()


def _check_stores(config: Config, stores: dict[str, SecretStore], issues: list[ConfigIssue]) -> None:
    checked_roots: set[Path] = set()
    asked: dict[str, list[tuple[str, TargetRef]]] = {}
    for i, policy in enumerate(config.policies):
        for j, target in enumerate(policy.targets):
            path = f"policies[{i}].targets[{j}]"
            root = _file_root(config, target.store)
            if root is None:
                asked.setdefault(target.store, []).append((path, _ref(policy, target)))
                continue
            if root not in checked_roots:
                checked_roots.add(root)
                problem = _root_problem(root)
                if problem:
                    issues.append(ConfigIssue(f"stores.{target.store}.path", problem))
                    continue
            for secret in filter(None, (target.secret, target.endpoint_secret)):
                problem = _writable_problem(root / secret)
                if problem:
                    issues.append(ConfigIssue(f"{path}.secret", f"{secret}: {problem}"))
    for name, refs in asked.items():
        probe = getattr(stores.get(name), "preflight", None)
        if probe is None:
            continue
        for path, problem in zip((p for p, _ in refs), probe([r for _, r in refs]), strict=False):
            if problem:
                issues.append(ConfigIssue(path, str(problem)))


def _ref(policy: Policy, target: Any) -> TargetRef:
    return TargetRef(target.store, target.secret, policy.name, target.options)


def _nearest_existing(p: Path) -> Path:
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _writable_problem(p: Path) -> str | None:
    """Why rotator could not create or write the directory ``p`` (None: it can)."""
    existing = _nearest_existing(p)
    try:
        st = existing.stat()
    except OSError as exc:
        return f"cannot check {existing}: {exc.strerror or type(exc).__name__}"
    if not stat.S_ISDIR(st.st_mode):
        return (
            f"{existing} is a regular file, not a directory, so {p} cannot be created there: "
            "point the store's path somewhere else, or move that file"
        )
    try:
        readonly = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    if readonly:
        return f"{existing} is on a read-only filesystem: give the store a path on a writable volume"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"{existing} is not writable by this user (uid {os.geteuid()}): fix its owner or mode, or use another path"
        )
    return None


def _root_problem(root: Path) -> str | None:
    """Why a file store's directory is unusable or unsafe (None: it is fine, or can be created 0700)."""
    problem = _writable_problem(root)
    if problem or not root.exists():
        return problem
    st = root.stat()
    if st.st_uid != os.geteuid():
        return (
            f"{root} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): keys must live in a "
            f"directory only rotator's user can read; chown it, or use another path"
        )
    if st.st_mode & 0o077:
        return (
            f"{root} is group/world accessible (mode {stat.S_IMODE(st.st_mode):04o}): keys must not be readable "
            f"by others; run  chmod 700 {root}"
        )
    return None
