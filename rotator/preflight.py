"""Preflight: before a pass may change anything, check what can be checked, for every policy at once.

A pass that creates a key for one policy and then finds another policy's role unknown, or a store it
cannot write, has already changed the issuer. So every command that can mutate (``run``, ``once``,
``rotate``, the Lambda) gets its engine from :func:`rotator.runtime.app.build` with ``preflight=True``, which
calls :func:`check` once, before the first mutation; ``rotator validate --online`` calls it too, and
changes nothing (the file stores' probe files it writes are removed at once). What is checked:

- every policy's role resolves at the issuer (one ``GET /roles``), named as ``policies[i].role`` with the
  roles the issuer knows and the closest one;
- every file store is writable where rotator will write, proven by writing: a probe file (a random
  ``.tmp-preflight-*`` name, ``O_CREAT | O_EXCL``, 0600) is created, written and removed in the store's root
  (or, when the store would create the root, in the nearest existing directory it would create it under) and
  in the directory each target's first write goes to (``<secret>/versions``, or the deepest of its parents
  that exists: the store creates the rest). A filesystem that calls itself writable but takes no new file
  (``/proc``), a directory whose mode or mount denies creation, a full disk: each is found before a key is
  made. The directories below the root are opened as the store opens them, never through a symlink, so a
  link the store would refuse fails here too. No directory is created and no probe is left behind. A regular
  file where a directory belongs, and an existing store directory that is not the current user's own or is
  group/world accessible, are reported without writing anything;
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
import errno
import os
import stat
from pathlib import Path
from typing import Any

import structlog

from rotator.config import Config, Policy, redact_secrets
from rotator.errors import ConfigError, ConfigIssue, IssuerError
from rotator.issuers.base import KeyIssuer
from rotator.stores.base import SecretStore, TargetRef
from rotator.stores.file import SymlinkFound, create_temp_at, open_dir_at

log = structlog.get_logger("rotator")


def check(config: Config, issuer: KeyIssuer, stores: dict[str, SecretStore]) -> None:
    """Raise ConfigError listing every problem that would make a pass fail part-way. Changes nothing: the
    only write is a file store's probe file, removed at once."""
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
                problem = _writable_problem(root / secret) or _target_problem(root, secret)
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


#: the probe's name: the store's own temporary-file prefix, so that one left by a killed process (between its
#: create and its unlink) in a store directory is removed by the store's sweep of stale temporary files
_PROBE_PREFIX = ".tmp-preflight-"
_PROBE_DATA = b"rotator preflight: can a file be written here?\n"


def _writable_problem(p: Path) -> str | None:
    """Why the directory ``p`` could not be created: a regular file, not a directory, is where it or one of
    its parents belongs (None: nothing is in the way; whether it can be written is :func:`_probe`'s)."""
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
    return None


def _cannot_write(where: Path, p: Path, exc: OSError) -> str:
    why = exc.strerror or type(exc).__name__
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only filesystem ({why}): give the store a path on a writable volume"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{where} is not writable by this user (uid {os.geteuid()}): creating a file in it failed ({why}); "
            "fix its owner or mode, or use another path"
        )
    return (
        f"files cannot be created in {where} (creating a test file there failed: {why}), so rotator could not "
        f"write {p}: give the store a path on a writable volume"
    )


def _probe(dir_fd: int, where: Path, p: Path) -> str | None:
    """Create, write and remove a probe file in the open directory ``where``, where the store will write
    ``p`` (or create it). Why that failed, or None. Nothing is left behind either way."""
    try:
        fd, name = create_temp_at(dir_fd, _PROBE_PREFIX)
    except OSError as exc:
        return _cannot_write(where, p, exc)
    problem = None
    try:
        try:
            view = memoryview(_PROBE_DATA)
            while view:  # write(2) may write fewer bytes than asked
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        problem = _cannot_write(where, p, exc)
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problem = f"could not remove the preflight's probe file {where / name}: {exc.strerror}; remove it by hand"
    return problem


def _root_probe(root: Path) -> str | None:
    """:func:`_probe` in the root, or in the nearest existing directory the store would create it under."""
    where = root if root.is_dir() else _nearest_existing(root)
    try:
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root, and above it, may be links
    except OSError as exc:
        return _cannot_write(where, root, exc)
    try:
        return _probe(fd, where, root)
    finally:
        os.close(fd)


def _target_problem(root: Path, secret: str) -> str | None:
    """:func:`_probe` where the store's first write for ``secret`` goes: ``<secret>/versions``, or, as the store
    creates what is missing, the deepest of its directories that exists (the root's own probe stands for the
    root). The directories are opened from the root down as the store opens them: a symlink is refused."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # the root's probe was made where the store would create it
    except OSError as exc:
        return _cannot_write(root, root / secret, exc)
    where = root
    try:
        for part in [*secret.split("/"), "versions"]:
            try:
                sub = open_dir_at(fd, part)
            except (FileNotFoundError, NotADirectoryError):
                # missing: the store creates it here. (A file named versions fails the pass's own write, with
                # the store's error naming it; a file higher up is reported by _writable_problem.)
                break
            except SymlinkFound:
                return (
                    f"{where / part} is a symlink under the store's root, and the store refuses to follow one "
                    f"(it reads and writes only what is really under {root}): remove the link, or point the "
                    "store's path at the real directory"
                )
            except OSError as exc:
                return _cannot_write(where / part, root / secret, exc)
            os.close(fd)
            fd, where = sub, where / part
        if where == root:
            return None  # proven by the root's probe
        return _probe(fd, where, root / secret)
    finally:
        os.close(fd)


def _root_problem(root: Path) -> str | None:
    """Why a file store's directory is unusable or unsafe (None: it is fine, or can be created 0700). Written
    to (a probe file) only once it is known to be rotator's user's own and private."""
    problem = _writable_problem(root)
    if problem:
        return problem
    if root.exists():
        st = root.stat()
        if st.st_uid != os.geteuid():
            return (
                f"{root} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): keys must live in a "
                f"directory only rotator's user can read; chown it, or use another path"
            )
        if st.st_mode & 0o077:
            return (
                f"{root} is group/world accessible (mode {stat.S_IMODE(st.st_mode):04o}): keys must not be "
                f"readable by others; run  chmod 700 {root}"
            )
    return _root_probe(root)
