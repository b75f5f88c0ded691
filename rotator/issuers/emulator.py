"""A local Momento key-management API: the same HTTP API as Momento's, on 127.0.0.1, backed by SQLite.

For trying rotator out without a Momento account, for tests and for benchmarks. It speaks Momento's
key-management HTTP API (``POST /api-keys``, ``GET /api-keys``, ``DELETE /api-keys/{id}``,
``GET /roles``) and mints v2-format keys: HS256 JWTs with the claims ``{"t": "g", "jti": <key id>,
"iat": ..., "exp": ...}``, signed with a secret of its own, which the real ``momento`` SDK accepts.

What it keeps (one SQLite file): its signing secret, its account id, and every key's metadata with only a
SHA-256 hash of the plaintext. A plaintext key exists only in the response that created it, in memory,
and in the bootstrap key file.

The bootstrap key: on the first start with an empty database the emulator creates an Owner key that never
expires and, when ``bootstrap_key_file`` is given, writes it there (mode 0600; a missing parent directory is
created 0700). A later start with the same database reuses the key in that file as long as it is still a
live Owner key; when the file is gone (or holds a revoked/expired key) the old key cannot be recovered, so
a new bootstrap Owner key is minted and written (the old one is left as it is, not revoked).

Behaviour clients can rely on:

- ``Authorization: <raw key>``; a missing, malformed, wrongly signed, unknown, revoked or expired key
  (by the emulator's injectable clock) gets 401; a valid non-Owner key gets 403 on every ``/api-keys``
  route; ``/roles`` accepts any valid key. Errors are JSON ``{"code", "message"}``; unknown routes 404.
- ``GET /api-keys`` lists every key that is not revoked (expired ones included), ordered by issue time
  then key id, ``limit`` 1..100 (default 100) with an opaque ``next_token``.
- Failure injection: with probability ``failure_rate`` a request is answered with one of
  ``failure_statuses`` before anything else happens (a 429 carries ``Retry-After``); ``latency`` seconds
  are slept before every answer. Both are settable while the server runs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import random
import secrets
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

from rotator.errors import ConfigError, IssuerNotFound
from rotator.model import KEY_DESCRIPTION_MAX, IssuedKey, KeyInfo, Role, SecretText

__all__ = [
    "BOOTSTRAP_DESCRIPTION",
    "OPERATOR_ROLE_ID",
    "OWNER_ROLE_ID",
    "SYSTEM_ROLES",
    "VIEWER_ROLE_ID",
    "Emulator",
    "main",
]

OWNER_ROLE_ID = "00000000-0000-4000-8000-000000000001"
OPERATOR_ROLE_ID = "00000000-0000-4000-8000-000000000002"
VIEWER_ROLE_ID = "00000000-0000-4000-8000-000000000003"

#: the system roles every emulated account has, in listing order
SYSTEM_ROLES: tuple[Role, ...] = (
    Role(OWNER_ROLE_ID, "owner", "system"),
    Role(OPERATOR_ROLE_ID, "operator", "system"),
    Role(VIEWER_ROLE_ID, "viewer", "system"),
)
_ROLE_DESCRIPTIONS = {
    OWNER_ROLE_ID: "Full access, including API keys and account membership",
    OPERATOR_ROLE_ID: "All API and data resources; account membership read-only",
    VIEWER_ROLE_ID: "Read-only access",
}
_ROLES_BY_ID = {r.role_id: r for r in SYSTEM_ROLES}
_ROLES_BY_NAME = {r.role_name: r for r in SYSTEM_ROLES}

BOOTSTRAP_DESCRIPTION = "emulator bootstrap owner key"
_MAX_LIMIT = 100
_MAX_BODY = 64 * 1024
_MAX_DESCRIPTION = KEY_DESCRIPTION_MAX  # rotator validate checks the same limit offline

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id      TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    description TEXT NOT NULL,
    role_id     TEXT NOT NULL,
    issued_at   REAL NOT NULL,
    expires_at  REAL,
    revoked_at  REAL,
    key_sha256  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_issue ON keys (issued_at, key_id);
"""


class _ApiError(Exception):
    """An HTTP error answer: status, machine code and a message that never holds key material."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _encode_token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_token(token: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _ApiError(400, "invalid_argument", "next_token is not valid") from exc


def _parse_limit(query: dict[str, list[str]]) -> int:
    values = query.get("limit")
    if not values:
        return _MAX_LIMIT
    text = values[-1]
    if not text.isdigit() or not 1 <= int(text) <= _MAX_LIMIT:
        raise _ApiError(400, "invalid_argument", f"limit must be an integer from 1 to {_MAX_LIMIT}")
    return int(text)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class _Store:
    """The SQLite file: one connection shared by every thread, serialised by a lock."""

    def __init__(self, path: Path) -> None:
        _create_private_file(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.executescript(_SCHEMA)

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise _ApiError(503, "unavailable", "the emulator is shutting down")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def meta(self, name: str, default: Callable[[], str]) -> str:
        """The value stored under ``name``, storing ``default()`` first when there is none."""
        with self._lock:
            c = self._c()
            row = c.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return str(row[0])
            value = default()
            c.execute("INSERT INTO meta (name, value) VALUES (?, ?)", (name, value))
            return value

    def set_meta(self, name: str, value: str) -> None:
        with self._lock:
            self._c().execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def get_meta(self, name: str) -> str | None:
        with self._lock:
            row = self._c().execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

    def insert_key(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._c().execute(
                "INSERT INTO keys (key_id, account_id, description, role_id, issued_at, expires_at,"
                " revoked_at, key_sha256) VALUES (:key_id, :account_id, :description, :role_id,"
                " :issued_at, :expires_at, NULL, :key_sha256)",
                row,
            )

    def get_key(self, key_id: str) -> sqlite3.Row | None:
        with self._lock:
            cur = self._c().execute("SELECT * FROM keys WHERE key_id = ?", (key_id,))
            row: sqlite3.Row | None = cur.fetchone()
            return row

    def revoke(self, key_id: str, now: float) -> bool:
        """Mark a live key revoked; ``False`` when it is unknown or already revoked."""
        with self._lock:
            cur = self._c().execute(
                "UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (now, key_id)
            )
            return cur.rowcount == 1

    def page(self, after: tuple[float, str] | None, limit: int, *, include_revoked: bool) -> list[sqlite3.Row]:
        where = [] if include_revoked else ["revoked_at IS NULL"]
        args: list[Any] = []
        if after is not None:
            # a row value: SQLite seeks the index to the cursor (the OR form scanned it from the start on every
            # page, so listing N keys cost N^2/100 rows)
            where.append("(issued_at, key_id) > (?, ?)")
            args += [after[0], after[1]]
        sql = "SELECT * FROM keys"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY issued_at, key_id LIMIT ?"
        args.append(limit)
        with self._lock:
            return list(self._c().execute(sql, args).fetchall())


def _create_private_file(path: Path) -> None:
    """Make sure ``path``'s directory exists (created 0700) and create the file 0600 if it is missing."""
    _make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _make_private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)


def _write_private_file(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``: a 0600 temp file beside it, fsync, rename."""
    _make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class Emulator:
    """The local Momento key API, in this process, on a loopback address.

    ``Emulator(db_path)`` opens (or creates) the database and makes sure a bootstrap Owner key exists;
    :meth:`start` serves HTTP on a daemon thread and returns the base URL; :meth:`stop` stops serving and
    closes the database (the object cannot be started again). Usable as a context manager.

    Raises :class:`rotator.errors.ConfigError` for a non-loopback ``host`` or out-of-range
    ``latency``/``failure_rate``, before touching anything.
    """

    def __init__(
        self,
        db_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        failure_statuses: tuple[int, ...] = (429, 500),
        retry_after: float = 1,
        bootstrap_key_file: str | Path | None = None,
        seed: int | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ConfigError(f"the emulator binds loopback addresses only (127.0.0.1, ::1, localhost), not {host!r}")
        if latency < 0:
            raise ConfigError(f"latency must be >= 0 seconds, not {latency}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigError(f"failure_rate must be between 0 and 1, not {failure_rate}")
        if failure_rate > 0 and not failure_statuses:
            raise ConfigError("failure_statuses must name at least one HTTP status")
        self.host = host
        self.port = port
        self.clock = clock
        self.latency = latency
        self.failure_rate = failure_rate
        self.injected_failures = 0  # how many answers failure_rate replaced with an error
        self.failure_statuses = tuple(failure_statuses)
        self.retry_after = retry_after
        self.db_path = Path(db_path)
        self.bootstrap_key_file = Path(bootstrap_key_file) if bootstrap_key_file is not None else None
        self._rng = random.Random(seed)  # noqa: S311 - failure injection, not cryptography
        self._rng_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._db = _Store(self.db_path)
        self._secret = bytes.fromhex(self._db.meta("signing_secret", lambda: secrets.token_hex(32)))
        self.account_id = self._db.meta("account_id", lambda: str(uuid.uuid4()))
        self._bootstrap = self._ensure_bootstrap_key()

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on ``host:port`` (port 0: a free one) in a daemon thread; return ``http://host:port``."""
        if self._server is not None:
            return self.url
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        server_cls: type[ThreadingHTTPServer] = _IPv6Server if ":" in self.host else _QuietServer
        server = server_cls((self.host.strip("[]"), self.port), Handler)
        self._server = server
        port = server.server_address[1]
        shown = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        self._url = f"http://{shown}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="momento-emulator", daemon=True
        )
        self._thread.start()
        return self._url

    def stop(self) -> None:
        """Stop serving and close the database. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._db.close()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Emulator(url={self._url!r}, db_path={str(self.db_path)!r})"

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``); only after :meth:`start`."""
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    @property
    def bootstrap_key(self) -> SecretText:
        """The Owner key that never expires (also in ``bootstrap_key_file`` when one was given)."""
        return self._bootstrap

    # ---- in-process helpers (tests) -----------------------------------------------------------------

    def mint(self, role_name: str, description: str = "", expires_at: datetime | float | None = None) -> IssuedKey:
        """Create a key directly, without HTTP. ``role_name`` is a role name or id; any expiry is allowed
        (a past one too, for tests). Raises IssuerNotFound for an unknown role."""
        role = _ROLES_BY_NAME.get(role_name.lower()) or _ROLES_BY_ID.get(role_name)
        if role is None:
            raise IssuerNotFound(f"unknown role {role_name!r}", status=404, operation="mint")
        if isinstance(expires_at, datetime):
            expires_at = expires_at.timestamp()
        return self._create(role.role_id, description, expires_at)

    def list_key_infos(self, *, include_revoked: bool = False) -> list[tuple[KeyInfo, datetime | None]]:
        """Every key as ``(info, revoked_at)``, in issue order, without HTTP (for tests and demos)."""
        rows = self._db.page(None, 1_000_000, include_revoked=include_revoked)
        return [(self._info(r), _utc(r["revoked_at"])) for r in rows]

    # ---- internals ----------------------------------------------------------------------------------

    def _ensure_bootstrap_key(self) -> SecretText:
        if self._db.get_meta("bootstrap_key_id") is not None and self.bootstrap_key_file is not None:
            try:
                text = self.bootstrap_key_file.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                text = ""
            if text:
                candidate = SecretText(text)
                try:
                    role_id = self._authenticate(text)
                except _ApiError:
                    role_id = None
                if role_id == OWNER_ROLE_ID:
                    return candidate
        issued = self._create(OWNER_ROLE_ID, BOOTSTRAP_DESCRIPTION, None)
        self._db.set_meta("bootstrap_key_id", issued.info.key_id)
        if self.bootstrap_key_file is not None:
            _write_private_file(self.bootstrap_key_file, issued.api_key.reveal() + "\n")
        return issued.api_key

    def _create(self, role_id: str, description: str, expires_at: float | None) -> IssuedKey:
        key_id = str(uuid.uuid4())
        now = self.clock()
        # a random nonce: whoever reads the database (signing secret included) still cannot rebuild a key
        claims: dict[str, Any] = {"t": "g", "jti": key_id, "iat": int(now), "n": secrets.token_urlsafe(16)}
        if expires_at is not None:
            claims["exp"] = int(expires_at)
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        expires = None if expires_at is None else float(int(expires_at))
        row: dict[str, Any] = {
            "key_id": key_id,
            "account_id": self.account_id,
            "description": description,
            "role_id": role_id,
            "issued_at": now,
            "expires_at": expires,
            "key_sha256": _sha256(token),
        }
        self._db.insert_key(row)
        info = KeyInfo(
            key_id=key_id,
            role_id=role_id,
            description=description,
            issued_at=datetime.fromtimestamp(now, UTC),
            expires_at=_utc(expires),
        )
        return IssuedKey(info=info, api_key=SecretText(token))

    @staticmethod
    def _info(row: sqlite3.Row) -> KeyInfo:
        return KeyInfo(
            key_id=row["key_id"],
            role_id=row["role_id"],
            description=row["description"],
            issued_at=datetime.fromtimestamp(row["issued_at"], UTC),
            expires_at=_utc(row["expires_at"]),
        )

    @staticmethod
    def _key_object(row: sqlite3.Row) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "key_id": row["key_id"],
            "account_id": row["account_id"],
            "description": row["description"],
            "role_id": row["role_id"],
            "issued_at_epoch_seconds": int(row["issued_at"]),
        }
        if row["expires_at"] is not None:
            obj["expires_at_epoch_seconds"] = int(row["expires_at"])
        return obj

    def _authenticate(self, token: str | None) -> str:
        """The role id of the live key ``token``; raises a 401 _ApiError otherwise."""
        if not token:
            raise _ApiError(401, "unauthenticated", "missing Authorization header (the raw API key)")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False},
            )
        except jwt.InvalidTokenError as exc:
            raise _ApiError(401, "unauthenticated", "the API key is malformed or not valid") from exc
        key_id = claims.get("jti")
        if claims.get("t") != "g" or not isinstance(key_id, str):
            raise _ApiError(401, "unauthenticated", "the API key is not a v2 API key")
        row = self._db.get_key(key_id)
        if row is None or not hmac.compare_digest(row["key_sha256"], _sha256(token)):
            raise _ApiError(401, "unauthenticated", "the API key is unknown")
        if row["revoked_at"] is not None:
            raise _ApiError(401, "unauthenticated", "the API key has been revoked")
        if row["expires_at"] is not None and row["expires_at"] <= self.clock():
            raise _ApiError(401, "unauthenticated", "the API key has expired")
        return str(row["role_id"])

    def _require_owner(self, token: str | None) -> None:
        if self._authenticate(token) != OWNER_ROLE_ID:
            raise _ApiError(403, "permission_denied", "this API key's role may not manage API keys")

    def _injected_failure(self) -> int | None:
        with self._rng_lock:
            if self.failure_rate <= 0 or self._rng.random() >= self.failure_rate:
                return None
            self.injected_failures += 1
            return self._rng.choice(self.failure_statuses)

    # ---- routes --------------------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, token: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one request: ``(status, json body)``; raises _ApiError for an error answer."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        if path == "/api-keys":
            if method == "POST":
                self._require_owner(token)
                return 200, self._create_route(body)
            if method == "GET":
                self._require_owner(token)
                return 200, self._list_keys_route(query)
            raise _ApiError(405, "method_not_allowed", f"{method} is not allowed on /api-keys")
        if path.startswith("/api-keys/") and path.count("/") == 2:
            if method != "DELETE":
                raise _ApiError(405, "method_not_allowed", f"{method} is not allowed on /api-keys/{{key_id}}")
            self._require_owner(token)
            key_id = unquote(path[len("/api-keys/") :])
            if not self._db.revoke(key_id, self.clock()):
                raise _ApiError(404, "not_found", "no such API key (unknown or already revoked)")
            return 200, {}
        if path == "/roles":
            if method != "GET":
                raise _ApiError(405, "method_not_allowed", f"{method} is not allowed on /roles")
            self._authenticate(token)
            return 200, self._list_roles_route(query)
        raise _ApiError(404, "not_found", "no such route")

    def _create_route(self, body: bytes) -> dict[str, Any]:
        try:
            req = json.loads(body or b"null")
        except ValueError as exc:
            raise _ApiError(400, "invalid_argument", "the request body is not JSON") from exc
        if not isinstance(req, dict):
            raise _ApiError(400, "invalid_argument", "the request body must be a JSON object")
        role_id = req.get("role_id")
        description = req.get("description", "")
        expiry = req.get("expiry")
        if not isinstance(role_id, str) or not role_id:
            raise _ApiError(400, "invalid_argument", "role_id must be a non-empty string")
        if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
            raise _ApiError(
                400, "invalid_argument", f"description must be a string of at most {_MAX_DESCRIPTION} chars"
            )
        expires_at: float | None
        if expiry == "never":
            expires_at = None
        elif isinstance(expiry, int) and not isinstance(expiry, bool):
            if expiry <= self.clock():
                raise _ApiError(400, "invalid_argument", "expiry is in the past")
            expires_at = float(expiry)
        else:
            raise _ApiError(400, "invalid_argument", 'expiry must be "never" or an epoch-seconds integer')
        if role_id not in _ROLES_BY_ID:
            raise _ApiError(404, "not_found", "no such role")
        issued = self._create(role_id, description, expires_at)
        row = self._db.get_key(issued.info.key_id)
        assert row is not None
        return {"api_key": issued.api_key.reveal(), "key_info": self._key_object(row)}

    def _list_keys_route(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = _parse_limit(query)
        after: tuple[float, str] | None = None
        if query.get("next_token", [""])[-1]:
            cursor = _decode_token(query["next_token"][-1])
            if (
                not isinstance(cursor, list)
                or len(cursor) != 2
                or not isinstance(cursor[0], int | float)
                or not isinstance(cursor[1], str)
            ):
                raise _ApiError(400, "invalid_argument", "next_token is not valid")
            after = (float(cursor[0]), cursor[1])
        rows = self._db.page(after, limit + 1, include_revoked=False)
        out: dict[str, Any] = {"key_info": [self._key_object(r) for r in rows[:limit]]}
        if len(rows) > limit:
            last = rows[limit - 1]
            out["next_token"] = _encode_token([last["issued_at"], last["key_id"]])
        return out

    def _list_roles_route(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = _parse_limit(query)
        role_type = query.get("type", [""])[-1]
        if role_type not in ("", "system", "custom"):
            raise _ApiError(400, "invalid_argument", "type must be system or custom")
        roles = [r for r in SYSTEM_ROLES if role_type in ("", r.role_type)]
        offset = 0
        if query.get("next_token", [""])[-1]:
            offset = _decode_token(query["next_token"][-1])
            if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= len(roles):
                raise _ApiError(400, "invalid_argument", "next_token is not valid")
        page = roles[offset : offset + limit]
        out: dict[str, Any] = {
            "roles": [
                {
                    "role_id": r.role_id,
                    "role_name": r.role_name,
                    "role_type": r.role_type,
                    "description": _ROLE_DESCRIPTIONS[r.role_id],
                }
                for r in page
            ]
        }
        if offset + limit < len(roles):
            out["next_token"] = _encode_token(offset + limit)
        return out


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away (timeouts in tests) is not worth a traceback on stderr
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _IPv6Server(_QuietServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"
    # headers and body leave in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms a request
    disable_nagle_algorithm = True
    server_version = "momento-emulator"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the emulator is a test fixture as often as a demo

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        emu = self.emulator
        length_text = self.headers.get("Content-Length") or "0"
        length = int(length_text) if length_text.isdigit() else -1
        if not 0 <= length <= _MAX_BODY:
            self.close_connection = True
            self._answer(413, {"code": "invalid_argument", "message": "request body too large or unsized"})
            return
        body = self.rfile.read(length) if length else b""
        if emu.latency > 0:
            time.sleep(emu.latency)
        injected = emu._injected_failure()
        if injected is not None:
            headers: dict[str, str] = {}
            if injected == 429:
                ra = emu.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
                code, message = "throttled", "too many requests (injected)"
            else:
                code, message = "internal", f"injected failure {injected}"
            self._answer(injected, {"code": code, "message": message}, headers)
            return
        try:
            status, payload = emu._dispatch(self.command, self.path, self.headers.get("Authorization"), body)
        except _ApiError as err:
            self._answer(err.status, {"code": err.code, "message": err.message})
            return
        except sqlite3.Error:
            self._answer(500, {"code": "internal", "message": "emulator storage error"})
            return
        self._answer(status, payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve


def main(argv: list[str] | None = None) -> int:
    """``rotator emulator``: serve the local Momento key API until SIGINT/SIGTERM.

    Prints one line with the URL and the bootstrap key *file* (never the key). Exit 0, or 2 on bad input.
    """
    parser = argparse.ArgumentParser(
        prog="rotator emulator",
        description="Run a local Momento key-management API (for trying rotator out).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7070, help="port (default 7070; 0 picks a free one)")
    parser.add_argument("--db", default="./.rotator/emulator.db", help="SQLite file (default %(default)s)")
    parser.add_argument(
        "--bootstrap-key-file",
        default="./.rotator/emulator-owner.key",
        help="where the bootstrap Owner key is written, mode 0600 (default %(default)s)",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before every answer")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="fraction of requests answered 429/500 (0..1)")
    parser.add_argument("--seed", type=int, default=None, help="seed for failure injection")
    args = parser.parse_args(argv)
    try:
        emulator = Emulator(
            args.db,
            host=args.host,
            port=args.port,
            latency=args.latency,
            failure_rate=args.failure_rate,
            bootstrap_key_file=args.bootstrap_key_file,
            seed=args.seed,
        )
    except ConfigError as exc:
        print(f"rotator emulator: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        reason = getattr(exc, "strerror", None) or exc
        print(
            f"rotator emulator: cannot open --db {args.db} or --bootstrap-key-file {args.bootstrap_key_file}: "
            f"{reason}; give writable paths",
            file=sys.stderr,
        )
        return 2
    try:
        url = emulator.start()
    except OSError as exc:
        emulator.stop()
        reason = exc.strerror or exc
        print(f"rotator emulator: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        key_file = args.bootstrap_key_file
        print(f"momento emulator listening on {url} (bootstrap owner key in {key_file})", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        emulator.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
