"""The local file store: the embedded default target, for trying rotator out and for single hosts.

Layout under ``path`` (directories 0700, files 0600)::

    <secret>/versions/<version>.value   the payload of one version
    <secret>/versions/<version>.json    its metadata: key id, policy, created, promoted, expires, enabled
    <secret>/promotions/<n>.json        one record per promote, numbered: which version became current, when
    <secret>/current                    symlink to the current version's .value (what consumers read)

Every write is atomic (temp file in the same directory, written in full, fsync, rename, fsync of the
directory), so a reader or a crash never sees half a file. ``write(2)`` may write fewer bytes than asked
("the number of bytes written may be less than count", write(2) in the Linux man-pages; RLIMIT_FSIZE,
a full disk or a signal can do it), so every write loops until the whole buffer is written. The version name
is derived from the key id, so staging the same key twice rewrites the same file.

Retiring a version marks it disabled in its metadata (``retired_at``) and removes its ``.value`` file, the
plaintext of the old key, once ``destroy_after`` has passed (by default at once: retiring happens with the
revoke). The metadata stays, so the version is still listed as having held its key.

A promote is a compare-and-set without a lock: it reads the newest promotion record ``n``, checks that the
version it names still holds the expected key, and creates record ``n + 1`` with ``link(2)``, which fails when
``n + 1`` exists ("If newpath exists, it will not be overwritten", link(2) in the Linux man-pages). Of two
promotes that read the same ``n``, one wins and the other gets ``StorePreconditionFailed``; a promote that
was paused for any length of time and resumes finds ``n + 1`` taken and changes nothing. Only then is
``current`` switched to the newest record's version (and any pass that finds ``current`` behind the newest
record switches it on). No process ever waits for another, so a paused pass (SIGSTOP, a frozen VM) holds up
nobody. A store written before promotion records existed is read from ``current`` until its first promote.

A process killed between writing a temp file and renaming it leaves a ``.tmp-*`` file behind, which may hold
a live plaintext key. A temp file older than ``pass_timeout`` (no pass can still be writing it) is removed by
the next inspect or write of that secret. A metadata file that is not a JSON object is a
:class:`~rotator.errors.StoreError` naming the file.

Nothing below the root is reached through a symlink. Every operation opens the root (which may itself be a
symlink, e.g. to a mounted volume) and then each directory below it with ``O_DIRECTORY | O_NOFOLLOW``, and
names every file relative to the directory it is in (``openat(2)`` and its kin: ``dir_fd``), files included
(``O_NOFOLLOW``; temporary files ``O_CREAT | O_EXCL``, which never follow a name either). A directory or a
file under the root that is a symlink (someone planted ``root/momento -> /elsewhere``) is refused with a
:class:`~rotator.errors.StorePermissionError` naming the secret and the link, and nothing is read, written or
removed through it; checking a path first and opening it after would leave a window in which it could be
swapped for a link. The one symlink the store keeps, ``current``, it only ever reads with ``readlink(2)``
and replaces with ``rename(2)``, neither of which follows it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import re
import secrets
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from rotator.durations import Duration
from rotator.errors import (
    StoreConflict,
    StoreError,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
)
from rotator.model import SecretState, SecretText, StoredVersion
from rotator.observability import record_call
from rotator.stores.base import (
    ANY_CURRENT,
    BaseTargetOptions,
    Expect,
    PreflightProblem,
    SecretStore,
    StoreBase,
    StoreCapabilities,
    StoreContext,
    StoreSpec,
    StoreType,
    TargetRef,
    VersionMeta,
)

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
_VERSION_NS = uuid.UUID("6f1b2a4e-6c1e-4c8e-9d1e-2f6a7c0b9e31")
_SAFE_KEY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")
#: names of the temporary files the store creates (values and metadata; the symlink promote swaps in)
_TEMP_PREFIXES = (".tmp-", ".current-")
#: how old a temporary file must be before it is taken as left behind by a dead process (``pass_timeout``)
DEFAULT_STALE_AFTER = timedelta(minutes=5)
#: the directory of a secret's promotion records, and how many of the newest are kept
_PROMOTIONS = "promotions"
_KEEP_PROMOTIONS = 8
#: how often a promote with no expected current key (``ANY_CURRENT``) tries again after losing a race
_CAS_ATTEMPTS = 5


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def private_dir_problem(path: Path, *, require_dir: bool = True) -> str | None:
    """Why ``path`` must not hold keys: not a directory, owned by another user than the one rotator runs as,
    or open to its group or to other users (any of ``go=rwx``). ``None`` when it is fine or does not exist.

    A directory another user owns can be emptied, replaced or read by that user whatever its mode (chmod(2):
    only the owner, or a privileged process, may change the mode), and one open to the group or the world
    lets them list, read or swap the files in it (or, writable, rename a key file out of the way).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be checked ({exc.strerror or type(exc).__name__})"
    return _stat_problem(path, st, require_dir=require_dir)


def _stat_problem(path: Path, st: os.stat_result, *, require_dir: bool = True) -> str | None:
    """:func:`private_dir_problem` of what ``path`` stats as (``st``: of the path, or of an open descriptor)."""
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory" if require_dir else None
    uid = os.geteuid()
    if st.st_uid != uid:
        return (
            f"{path} is owned by {_user(st.st_uid)}, not by {_user(uid)} that rotator runs as: another user "
            f"could read or replace the keys in it; `chown {uid} {path}`, or point the store at a directory of "
            "rotator's own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (
            f"{path} is accessible to its group or to other users (mode {mode:04o}): run `chmod 700 {path}` "
            "(rotator keeps keys only where no other user can read or replace them)"
        )
    return None


def store_tree_problems(root: Path, *, limit: int = 5) -> list[str]:
    """:func:`private_dir_problem` for ``root`` and every directory under it (symlinks are not followed)."""
    # a root that is not a directory fails every operation with a store error of its own, as before
    problems = [p for p in [private_dir_problem(root, require_dir=False)] if p]
    if problems or not root.is_dir():
        return problems
    for base, dirs, _ in os.walk(root):
        for name in sorted(dirs):
            problem = private_dir_problem(Path(base) / name)
            if problem:
                problems.append(problem)
                if len(problems) >= limit:
                    return problems
    return problems


class StoreConfig(BaseModel):
    """``stores.<name>`` for ``type: file``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["file"]
    #: the store root; when it exists it (and every directory under it) must be rotator's user's and 0700
    path: str = "./.rotator/secrets"
    #: remove a retired version's ``.value`` (the old key's plaintext) this long after it was retired, at the
    #: next retire of the secret; ``0s`` (the default) removes it with the retire itself, just before the revoke
    destroy_after: Duration = timedelta(0)

    @field_validator("path")
    @classmethod
    def _private(cls, v: str) -> str:
        # at startup and in `rotator validate`: refuse a store another user could read or swap keys in
        problems = store_tree_problems(Path(v).expanduser())
        if problems:
            raise ValueError("; ".join(problems))
        return v


def _check_secret_name(value: str) -> str:
    parts = value.split("/")
    if not value or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise ValueError(
            f"{value!r} is not a valid file-store secret name: use path segments of letters, digits, "
            "'.', '_' and '-', separated by '/', e.g. 'momento/checkout-api'"
        )
    return value


class TargetOptions(BaseTargetOptions):
    """What a target on a file store may set: only the common fields."""

    _secret = field_validator("secret")(classmethod(lambda cls, v: _check_secret_name(v)))

    @field_validator("endpoint_secret")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return None if v is None else _check_secret_name(v)


def version_name(key_id: str) -> str:
    """The file name (without suffix) of the version that holds ``key_id``."""
    return key_id if _SAFE_KEY_ID.match(key_id) else uuid.uuid5(_VERSION_NS, key_id).hex


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def _parse(t: Any) -> datetime | None:
    return datetime.fromisoformat(t) if isinstance(t, str) else None


#: how every directory below the root is opened: never through a symlink (open(2): with O_NOFOLLOW "If the
#: trailing component (i.e., basename) of pathname is a symbolic link, then the open fails"; with O_DIRECTORY
#: Linux answers ENOTDIR, without it ELOOP)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
#: a temporary file: a new name, readable by its owner only (open(2), O_EXCL with O_CREAT: "symbolic links are
#: not followed: if pathname is a symbolic link, then open() fails regardless of where the symbolic link points")
_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_ATTEMPTS = 100  # as tempfile.TMP_MAX


class SymlinkFound(Exception):
    """``name`` in the directory being walked is a symbolic link, which is not followed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir_at(dir_fd: int, name: str) -> int:
    """Open the directory ``name`` (one path component) in the open directory ``dir_fd`` without following a
    symlink. Raises :class:`SymlinkFound` when ``name`` is one, ``OSError`` (``FileNotFoundError``,
    ``NotADirectoryError``...) otherwise."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_symlink(dir_fd, name):
            raise SymlinkFound(name) from None
        raise


def create_temp_at(dir_fd: int, prefix: str, suffix: str = "") -> tuple[int, str]:
    """Create a new file, mode 0600, with a random name in the open directory ``dir_fd`` (what mkstemp(3) does
    in a directory named by a path). Returns its descriptor (read-write) and its name."""
    for _ in range(_TEMP_ATTEMPTS):
        name = f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", prefix)


class _Dir:
    """A directory at or below a file store's root, open for one operation on one secret.

    Every name is resolved in it (``dir_fd``), one component at a time, so nothing is reached through a
    symlink: a subdirectory or a file that is one raises :class:`StorePermissionError` naming the secret. Each
    directory is checked with :func:`private_dir_problem` as it is opened. The subdirectories opened with
    :meth:`sub`, :meth:`need` and :meth:`make` are kept open with it and closed by :meth:`close`.
    """

    def __init__(self, fd: int, path: Path, store: FileStore, secret: str) -> None:
        self.fd = fd
        self.path = path  # for messages only: never opened by name
        self._store = store
        self._secret = secret
        self._subs: dict[str, _Dir] = {}

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for sub in self._subs.values():
            sub.close()
        self._subs.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def refused(self, name: str) -> StoreError:
        """The error for a symlink found at ``name`` in this directory."""
        return StorePermissionError(
            f"refusing to follow a symlink under the store's root: {self.path / name} is a symbolic link, and "
            f"rotator reads and writes only the directories and files that are really under {self._store.root}; "
            "remove the link (if the secrets belong on another volume, point the store's path there instead)",
            store=self._store.name,
            secret=self._secret,
        )

    def check(self) -> None:
        """Refuse a directory another user could read or swap keys in (checked at startup too, but a directory
        can be made, or chmod-ed, by someone else later)."""
        problem = _stat_problem(self.path, os.fstat(self.fd), require_dir=False)
        if problem:
            raise StorePermissionError(
                f"refusing to use the store: {problem}", store=self._store.name, secret=self._secret
            )

    # -- subdirectories

    def child(self, name: str) -> _Dir:
        """Open the subdirectory ``name`` (not kept: the caller closes it). OSError when it cannot be."""
        try:
            fd = open_dir_at(self.fd, name)
        except SymlinkFound:
            raise self.refused(name) from None
        sub = _Dir(fd, self.path / name, self._store, self._secret)
        try:
            sub.check()
        except BaseException:
            sub.close()
            raise
        return sub

    def need(self, name: str) -> _Dir:
        """The subdirectory ``name``, kept open with this one; OSError when it is missing or not a directory."""
        if name not in self._subs:
            self._subs[name] = self.child(name)
        return self._subs[name]

    def sub(self, name: str) -> _Dir | None:
        """The subdirectory ``name``, or ``None`` when it is missing or not a directory."""
        try:
            return self.need(name)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def descend(self, name: str, *, create: bool = False) -> _Dir | None:
        """The subdirectory ``name`` (``create``: :meth:`make`, else :meth:`sub`) in place of this directory,
        which is closed: for walking down without keeping every directory on the way open."""
        try:
            sub = self.make(name) if create else self.sub(name)
            self._subs.pop(name, None)
            return sub
        finally:
            self.close()

    def make(self, name: str) -> _Dir:
        """The subdirectory ``name``, created 0700 when it is missing. A file in the way is an OSError."""
        try:
            return self.need(name)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # made by a concurrent pass
                os.mkdir(name, 0o700, dir_fd=self.fd)
            return self.need(name)

    # -- files in this directory

    def exists(self, name: str) -> bool:
        """Whether ``name`` is here; a symlink by that name is refused."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise self.refused(name)
        return True

    def lexists(self, name: str) -> bool:
        """Whether anything, a symlink included, is here by that name (nothing is opened)."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _open_read(self, name: str) -> int:
        try:
            return os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self.refused(name) from None
            raise

    def read_bytes(self, name: str) -> bytes:
        with open(self._open_read(name), "rb") as f:
            return f.read()

    def read_text(self, name: str) -> str:
        with open(self._open_read(name)) as f:  # as Path.read_text: the locale's encoding, universal newlines
            return f.read()

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def entries(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.fd) as it:
            return list(it)

    def temp(self, prefix: str, suffix: str = "") -> tuple[int, str]:
        return create_temp_at(self.fd, prefix, suffix)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def replace(self, src: str, dst: str) -> None:
        """rename(2) within this directory: ``dst`` is replaced, never followed."""
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def link(self, src: str, dst: str) -> None:
        """link(2) within this directory: FileExistsError when ``dst`` exists (it is never replaced)."""
        os.link(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def links(self, name: str) -> int:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_nlink

    def readlink(self, name: str) -> str:
        return os.readlink(name, dir_fd=self.fd)

    def symlink(self, target: str, name: str) -> None:
        os.symlink(target, name, dir_fd=self.fd)

    def fsync(self) -> None:
        os.fsync(self.fd)


class FileStore(StoreBase):
    """A :class:`~rotator.stores.base.SecretStore` on a local directory.

    Capabilities: a preflight (a probe file proves each target writable); promote is a conditional write (a
    promotion record made with ``link(2)``, which never replaces a name).

    ``destroy_after``: how long a retired version's value file is kept (0: removed when it is retired).
    ``stale_after``: the age (by mtime, wall clock) at which a temporary file is taken as abandoned by a dead
    writer and removed; the engine passes ``pass_timeout``. ``write`` is ``os.write`` (tests pass a writer
    that writes a few bytes per call, or one that pauses the process at a chosen write).
    """

    capabilities = StoreCapabilities(preflight=True)

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        clock: Callable[[], datetime] | None = None,
        destroy_after: timedelta = timedelta(0),
        stale_after: timedelta = DEFAULT_STALE_AFTER,
        write: Callable[[int, memoryview], int] = os.write,
    ) -> None:
        self.name = name
        self.root = root
        self.destroy_after = destroy_after
        self.stale_after = stale_after
        self._clock = clock or (lambda: datetime.now(UTC))
        self._write = write

    def __repr__(self) -> str:
        return f"FileStore(name={self.name!r}, root={str(self.root)!r})"

    def preflight(self, targets: Sequence[TargetRef]) -> list[PreflightProblem]:
        """Prove, by writing, that the pass can write where it will (see :mod:`rotator.preflight`): the root
        (its owner and mode, and a probe file created, written and removed in it, or in the nearest directory
        it would be created under), then each target's first write place (``<secret>/versions``, or the
        deepest of its directories that exists), opened from the root down without following a symlink.
        Creates no directory and leaves no probe behind.

        The probe is a random ``.tmp-preflight-*`` name, ``O_CREAT | O_EXCL``, 0600. A filesystem that calls
        itself writable but takes no new file (``/proc``), a directory whose mode or mount denies creation, a
        full disk: each is found before a key is made. A regular file where a directory belongs, and an
        existing root that is not the current user's own or is group/world accessible, are reported without
        writing anything."""
        problems: list[PreflightProblem] = []
        root_checked = False
        for i, ref in enumerate(targets):
            if not root_checked:
                root_checked = True
                problem = _root_problem(self.root)
                if problem:
                    problems.append(PreflightProblem(None, "path", problem))
                    continue
            opts = ref.options
            endpoint = opts.endpoint_secret if isinstance(opts, BaseTargetOptions) else None
            for secret in filter(None, (ref.secret, endpoint)):
                problem = _writable_problem(self.root / secret) or _target_problem(self.root, secret)
                if problem:
                    problems.append(PreflightProblem(i, "secret", f"{secret}: {problem}"))
        return problems

    # -- directories and atomic writes -----------------------------------------------------------------

    def _walk(self, ref: TargetRef, *, create: bool = False) -> _Dir | None:
        """The secret's directory, open (the caller closes it), with its ``versions`` and ``promotions``
        directories when they exist. The root is opened by its path (it may be a symlink), every directory
        below it without following a symlink, each checked with :func:`private_dir_problem` as it is opened.
        ``None`` when a directory on the way is missing or not a directory; ``create``: missing ones are
        created 0700, the root and its missing parents included (mkdir(parents=True) would use the umask)."""
        _check_secret_name(ref.secret)
        if create:
            self._make_root()
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            if create:
                raise
            return None  # a root that is a file fails the writes with an error of their own
        d = _Dir(fd, self.root, self, ref.secret)
        try:
            d.check()
            for part in ref.secret.split("/"):
                sub = d.descend(part, create=create)  # closes d, on an error too
                if sub is None:
                    return None
                d = sub
            # checked as every operation always did, though not all of them use both
            d.sub("versions")
            d.sub(_PROMOTIONS)
        except BaseException:
            d.close()
            raise
        return d

    def _make_dir(self, ref: TargetRef) -> _Dir:
        d = self._walk(ref, create=True)
        if d is None:  # not reached: a create either makes each directory or raises
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self.root / ref.secret))
        return d

    def _make_root(self) -> None:
        missing = []
        p = self.root
        while not p.exists():
            missing.append(p)
            p = p.parent
        for p in reversed(missing):
            with contextlib.suppress(FileExistsError):
                p.mkdir(mode=0o700)

    def _wrap(self, exc: OSError, ref: TargetRef, what: str) -> StoreError:
        cls = StorePermissionError if isinstance(exc, PermissionError) else StoreError
        return cls(f"could not {what}: {exc.strerror or type(exc).__name__}", store=self.name, secret=ref.secret)

    def _atomic_write(self, where: _Dir, name: str, data: bytes, *, replace: bool = True) -> None:
        """Write ``data`` to a temporary file in ``where`` and rename it to ``name`` (``replace=False``: link
        it, so that a ``name`` someone else created in the meantime is kept, not overwritten)."""
        where.exists(name)  # a symlink by that name is refused (a rename would replace it, not follow it)
        fd, tmp = where.temp(".tmp-", Path(name).suffix)
        try:
            os.fchmod(fd, 0o600)
            self._write_all(fd, data)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            if replace:
                where.replace(tmp, name)
            else:
                with contextlib.suppress(FileExistsError):
                    where.link(tmp, name)
                where.unlink(tmp)
            where.fsync()
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                where.unlink(tmp)
            raise

    def _write_all(self, fd: int, data: bytes) -> None:
        """Write every byte of ``data``: ``write(2)`` may write fewer than asked and must then be called again."""
        view = memoryview(data)
        while view:
            n = self._write(fd, view)
            if n <= 0:  # never for a regular file, but a zero would loop forever
                raise OSError(f"write returned {n}")
            view = view[n:]

    def _read_meta(self, where: _Dir, name: str) -> dict[str, Any]:
        """A version's metadata. Raises StoreError naming the file when it is not a JSON object."""
        raw = where.read_bytes(name)
        path = where.path / name
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise self._corrupt(path, f"not JSON ({type(exc).__name__} at byte {_position(exc)})") from None
        if not isinstance(data, dict):
            raise self._corrupt(path, f"a JSON {type(data).__name__}, not an object")
        return data

    def _write_meta(self, where: _Dir, name: str, meta: dict[str, Any]) -> None:
        self._atomic_write(where, name, json.dumps(meta, indent=1).encode())

    def _corrupt(self, path: Path, what: str) -> StoreError:
        secret = str(path.parent.parent.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        return StoreError(
            f"corrupt metadata file {path}: {what}; restore it from a backup, or move the version's .json and "
            ".value files away if that version is not needed",
            store=self.name,
            secret=secret,
        )

    def _sweep_temp_files(self, d: _Dir) -> None:
        """Remove temporary files in ``d``, ``d/versions`` and ``d/promotions`` older than ``stale_after``: a
        writer killed between creating one and renaming it left it there, possibly with a plaintext key in it.
        Younger ones may belong to a pass still writing, and are left alone. Compared by mtime against the wall
        clock (not the injected clock), since mtimes are wall-clock times."""
        limit = time.time() - self.stale_after.total_seconds()
        for where in (d, d.sub("versions"), d.sub(_PROMOTIONS)):
            if where is None:
                continue
            for entry in where.entries():
                if not entry.name.startswith(_TEMP_PREFIXES):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < limit:
                        where.unlink(entry.name)

    @staticmethod
    def _record_numbers(pdir: _Dir) -> list[int]:
        """The numbers of the promotion records in ``pdir`` (``<n>.json``), newest first."""
        names = pdir.names()
        return sorted((int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()), reverse=True)

    @staticmethod
    def _record_name(number: int) -> str:
        return f"{number:012d}.json"

    def _head(self, d: _Dir) -> tuple[int, dict[str, Any] | None]:
        """The newest promotion record of the secret: its number and content (``0, None`` when there is none,
        as in a store written before records existed, whose ``current`` symlink is then the truth)."""
        pdir = d.sub(_PROMOTIONS)
        if pdir is None:
            return 0, None
        for number in self._record_numbers(pdir):
            name = self._record_name(number)
            try:
                record = self._read_meta(pdir, name)
            except FileNotFoundError:  # pruned by another pass between the listing and the read
                continue
            if not isinstance(record.get("version"), str) or not _SEGMENT.match(record["version"]):
                raise self._corrupt(pdir.path / name, "a promotion record without a valid version name")
            return number, record
        return 0, None

    def _commit(self, d: _Dir, number: int, record: dict[str, Any]) -> bool:
        """Create promotion record ``number``; ``False`` when another pass created it first (or a newer one).

        ``link(2)`` never replaces an existing name, so of the passes that read the same newest record exactly
        one creates the next. Over NFS the reply to a link that succeeded can be lost and the retry answer
        EEXIST; then the temporary file's link count is 2 (open(2), on O_EXCL: "use link(2) to make a link to
        the lockfile. If link(2) returns 0, the lock is successful. Otherwise, use stat(2) on the unique file
        to check if its link count has increased to 2, in which case the lock is also successful")."""
        pdir = d.need(_PROMOTIONS)
        name = self._record_name(number)
        fd, tmp = pdir.temp(".tmp-", ".json")
        try:
            os.fchmod(fd, 0o600)
            self._write_all(fd, json.dumps(record, indent=1).encode())
            os.fsync(fd)
            os.close(fd)
            fd = -1
            try:
                pdir.link(tmp, name)
                won = True
            except FileExistsError:
                won = pdir.links(tmp) == 2
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                pdir.unlink(tmp)
        if not won:
            return False
        pdir.fsync()
        newest, _ = self._head(d)
        if newest != number:
            # only when this pass read record n, was paused while more than _KEEP_PROMOTIONS promotes ran and
            # record n + 1 was pruned: the number it took is below the newest, so its promote did not happen
            with contextlib.suppress(FileNotFoundError):
                pdir.unlink(name)
            return False
        return True

    def _prune(self, d: _Dir, newest: int) -> None:
        pdir = d.need(_PROMOTIONS)
        for number in self._record_numbers(pdir):
            if number <= newest - _KEEP_PROMOTIONS:
                with contextlib.suppress(FileNotFoundError):
                    pdir.unlink(self._record_name(number))

    def _publish(self, d: _Dir) -> None:
        """Finish the newest promote: its version's metadata gets the record's ``promoted_at`` (when the
        promoting pass died or paused before writing it), and ``current`` (what consumers read) points at it.
        A pass that read the record, paused, and switches ``current`` late reads the newest record again
        afterwards and switches on, so ``current`` is left behind only while such a pass is paused between its
        read and its rename (a window of one system call); the next promote or retire of the secret, by any
        pass, catches up."""
        for _ in range(_CAS_ATTEMPTS):
            _, head = self._head(d)
            if head is None:
                return
            vdir = d.need("versions")
            meta_name = f"{head['version']}.json"
            meta = self._read_meta(vdir, meta_name)
            if meta.get("promoted_at") != head.get("promoted_at") or not meta.get("enabled", True):
                meta["promoted_at"] = head.get("promoted_at")
                meta["enabled"] = True
                self._write_meta(vdir, meta_name, meta)
            want = f"versions/{head['version']}.value"
            try:
                have: str | None = d.readlink("current")
            except FileNotFoundError:
                have = None
            if have == want:
                return
            tmp = f".current-{uuid.uuid4().hex}"
            d.symlink(want, tmp)
            d.replace(tmp, "current")
            d.fsync()

    def _protected(self, d: _Dir) -> set[str]:
        """The versions that are current: what ``current`` points at, and the newest promotion record's."""
        _, head = self._head(d)
        return {v for v in (self._current_version(d), head and head["version"]) if v}

    def _current_version(self, d: _Dir) -> str | None:
        try:
            target = d.readlink("current")
        except FileNotFoundError:
            return None
        return Path(target).name.removesuffix(".value")

    # -- the protocol ----------------------------------------------------------------------------------

    def _inspect(self, ref: TargetRef) -> SecretState:
        try:
            opened = self._walk(ref)
            if opened is None:
                return SecretState(exists=False)
            with opened as d:
                return self._state(d)
        except OSError as exc:
            raise self._wrap(exc, ref, "inspect the secret") from exc

    def _state(self, d: _Dir) -> SecretState:
        self._sweep_temp_files(d)
        current = self._current_version(d)
        _, head = self._head(d)
        versions: list[StoredVersion] = []
        current_key: str | None = None
        current_since: datetime | None = None
        foreign = False
        vdir = d.sub("versions")
        # a version whose value was destroyed after it was retired is still listed from its metadata
        names = (
            sorted({Path(n).stem for n in vdir.names() if Path(n).suffix in (".value", ".json") and n[0] != "."})
            if vdir is not None
            else []
        )
        for name in names:
            assert vdir is not None
            meta_name = f"{name}.json"
            meta = self._read_meta(vdir, meta_name) if vdir.exists(meta_name) else {}
            is_current = name == current
            key_id = meta.get("key_id")
            versions.append(
                StoredVersion(
                    version=name,
                    key_id=key_id,
                    created_at=_parse(meta.get("created_at")),
                    current=is_current,
                    enabled=bool(meta.get("enabled", True)),
                )
            )
            if is_current:
                current_key = key_id
                # the time of the promote that made it current: its record's (also written to the
                # version's metadata after the commit; the metadata alone in a store older than records)
                source = head if head is not None and head["version"] == name else meta
                current_since = _parse(source.get("promoted_at"))
                foreign = key_id is None
        if current is None and d.lexists("value"):
            foreign = True  # a plain file someone put there by hand
        versions.sort(key=lambda v: (v.created_at or datetime.min.replace(tzinfo=UTC), v.version))
        return SecretState(
            exists=True,
            versions=tuple(versions),
            current_key_id=current_key,
            current_since=current_since,
            foreign=foreign,
        )

    def _stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        name = version_name(meta.key_id)
        try:
            with self._make_dir(ref) as d:
                vdir = d.make("versions")
                self._sweep_temp_files(d)
                value_name, meta_name = f"{name}.value", f"{name}.json"
                if vdir.exists(meta_name) and vdir.exists(value_name):
                    return  # staged already (by us, or by a concurrent pass): a no-op
                self._atomic_write(vdir, value_name, value.reveal().encode())
                record = {
                    "key_id": meta.key_id,
                    "policy": meta.policy,
                    "content_type": meta.content_type,
                    "created_at": _iso(self._clock()),
                    "expires_at": _iso(meta.expires_at),
                    "enabled": True,
                    "promoted_at": None,
                }
                # create, never replace: a pass that stalled in this stage (SIGSTOP, a frozen VM) and resumes
                # after another pass staged and promoted the same key must not overwrite that version's
                # metadata (its promoted_at is the target's current_since, which grace counts from)
                self._atomic_write(vdir, meta_name, json.dumps(record, indent=1).encode(), replace=False)
        except OSError as exc:
            raise self._wrap(exc, ref, "write the new version") from exc

    def _version(self, ref: TargetRef, key_id: str) -> tuple[_Dir, _Dir, str]:
        """The secret's directory (open: the caller closes it), its ``versions`` directory and the name of the
        version holding ``key_id``. StoreNotFound when there is no such version."""
        name = version_name(key_id)
        d = self._walk(ref)
        try:
            vdir = d.sub("versions") if d is not None else None
            if vdir is None or not (vdir.exists(f"{name}.value") and vdir.exists(f"{name}.json")):
                raise StoreNotFound(f"no version holds key {key_id}", store=self.name, secret=ref.secret)
        except BaseException:
            if d is not None:
                d.close()
            raise
        assert d is not None
        return d, vdir, name

    def _read(self, ref: TargetRef, key_id: str) -> SecretText:
        try:
            d, vdir, name = self._version(ref, key_id)
            with d:
                if not self._read_meta(vdir, f"{name}.json").get("enabled", True):
                    raise StoreNotFound(
                        f"the version holding key {key_id} is retired", store=self.name, secret=ref.secret
                    )
                return SecretText(vdir.read_text(f"{name}.value"))
        except OSError as exc:
            raise self._wrap(exc, ref, "read the version") from exc

    def _promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        try:
            d, _, name = self._version(ref, key_id)
            with d:
                self._promote_in(d, ref, key_id, name, expect_current)
        except OSError as exc:
            raise self._wrap(exc, ref, "make the new version current") from exc

    def _promote_in(self, d: _Dir, ref: TargetRef, key_id: str, name: str, expect_current: Expect) -> None:
        d.make(_PROMOTIONS)
        for _ in range(_CAS_ATTEMPTS):
            self._publish(d)  # a promote another pass committed but did not get to publish (paused, killed)
            number, head = self._head(d)
            current = head["version"] if head is not None else self._current_version(d)
            if current == name:
                return
            if expect_current is not ANY_CURRENT:
                held = head.get("key_id") if head is not None else self._key_of(d, current)
                if held != expect_current:
                    raise StorePreconditionFailed(
                        f"not promoting key {key_id}: the current version holds key {held or 'none'}, "
                        f"not {expect_current or 'none'} as read before",
                        store=self.name,
                        secret=ref.secret,
                    )
            record = {"version": name, "key_id": key_id, "promoted_at": _iso(self._clock())}
            if self._commit(d, number + 1, record):
                break
            if expect_current is not ANY_CURRENT:
                raise StorePreconditionFailed(
                    f"not promoting key {key_id}: another pass promoted a version of this secret at the same moment",
                    store=self.name,
                    secret=ref.secret,
                )
        else:
            raise StoreConflict(
                f"not promoting key {key_id}: other passes kept promoting versions of this secret",
                store=self.name,
                secret=ref.secret,
            )
        # committed: the version's metadata says so too (readable without the records), then consumers see it
        self._publish(d)
        self._prune(d, number + 1)

    def _key_of(self, d: _Dir, version: str | None) -> str | None:
        if version is None:
            return None
        vdir = d.sub("versions")
        meta_name = f"{version}.json"
        return self._read_meta(vdir, meta_name).get("key_id") if vdir is not None and vdir.exists(meta_name) else None

    def _retire(self, ref: TargetRef, key_id: str) -> None:
        name = version_name(key_id)
        meta_name = f"{name}.json"
        try:
            opened = self._walk(ref)
            if opened is None:
                return
            with opened as d:
                self._sweep_temp_files(d)
                self._publish(d)
                vdir = d.sub("versions")
                if vdir is not None and vdir.exists(meta_name):
                    refuse = StoreConflict(
                        f"refusing to retire key {key_id}: it is current", store=self.name, secret=ref.secret
                    )
                    if name in self._protected(d):
                        raise refuse
                    meta = self._read_meta(vdir, meta_name)
                    if meta.get("enabled", True):
                        meta["enabled"] = False
                        meta["retired_at"] = _iso(self._clock())
                        self._write_meta(vdir, meta_name, meta)
                        # no lock: a promote of this very version (by a pass that read an older state) may have
                        # committed in between; it stays enabled then
                        if name in self._protected(d):
                            meta["enabled"] = True
                            meta.pop("retired_at", None)
                            self._write_meta(vdir, meta_name, meta)
                            raise refuse
                self._destroy_retired(d)
        except OSError as exc:
            raise self._wrap(exc, ref, "retire the version") from exc

    def _destroy_retired(self, d: _Dir) -> None:
        """Remove the value files of versions retired at least ``destroy_after`` ago (never the current one)."""
        vdir = d.sub("versions")
        if vdir is None:
            return
        now = self._clock()
        for meta_name in sorted(n for n in vdir.names() if n.endswith(".json")):
            value_name = Path(meta_name).with_suffix(".value").name
            if not vdir.exists(value_name):
                continue
            meta = self._read_meta(vdir, meta_name)
            retired_at = _parse(meta.get("retired_at"))
            if meta.get("enabled", True) or retired_at is None or retired_at + self.destroy_after > now:
                continue
            if Path(meta_name).stem in self._protected(d):  # checked right before the unlink: never the current one
                continue
            vdir.unlink(value_name)
            meta["destroyed_at"] = _iso(now)
            self._write_meta(vdir, meta_name, meta)
            vdir.fsync()

    # every operation is recorded once, like a cloud store's API call (metrics, benchmarks, crash tests)
    def _counted(self, op: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            result = fn(*args)
        except StoreError as exc:
            record_call("file", op, type(exc).__name__)
            raise
        record_call("file", op, "ok")
        return result

    def inspect(self, ref: TargetRef) -> SecretState:
        state: SecretState = self._counted("inspect", self._inspect, ref)
        return state

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        self._counted("stage", self._stage, ref, value, meta)

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        value: SecretText = self._counted("read", self._read, ref, key_id)
        return value

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        self._counted("promote", self._promote, ref, key_id, expect_current)

    def retire(self, ref: TargetRef, key_id: str) -> None:
        self._counted("retire", self._retire, ref, key_id)

    def close(self) -> None:
        return None


def _prefixes(secret: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b", "a/b/c"]``."""
    parts = secret.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _position(exc: ValueError) -> int:
    return int(getattr(exc, "pos", None) or getattr(exc, "start", 0) or 0)


# ---- preflight: prove the store writable the way a pass will write ----------------------------------------

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


def open_store(
    name: str,
    config: StoreConfig,
    *,
    clock: Callable[[], datetime] | None = None,
    pass_timeout: timedelta | None = None,
    **_: Any,
) -> SecretStore:
    """Open a file store rooted at ``config.path`` (created 0700 on first write).

    ``pass_timeout`` (the config's) is the age at which a temporary file is taken as abandoned.
    """
    return FileStore(
        name,
        Path(config.path).expanduser(),
        clock=clock,
        destroy_after=config.destroy_after,
        stale_after=DEFAULT_STALE_AFTER if pass_timeout is None else pass_timeout,
    )


def _open(spec: StoreSpec, context: StoreContext) -> SecretStore:
    assert isinstance(spec.config, StoreConfig)
    options = {"clock": context.clock, "pass_timeout": context.pass_timeout, **context.options}
    return open_store(spec.name, spec.config, **options)


#: the ``file`` store type, registered under the entry point group ``rotator.stores``
STORE_TYPE = StoreType(
    name="file", config=StoreConfig, target=TargetOptions, open=_open, capabilities=FileStore.capabilities
)
