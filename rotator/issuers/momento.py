"""The Momento key-management HTTP API client: create, list and revoke API keys, list roles.

Every wire detail of that API (host, paths, field names, pagination, error bodies) lives in this module
and nowhere else: the API is documented on an unlisted page and may change.

::

    POST   /api-keys          {"role_id", "description", "expiry": "never" | epoch seconds}
                              -> {"api_key", "key_info": {key object}}
    GET    /api-keys?limit=1..100&next_token=...  -> {"key_info": [key objects], "next_token"?}
    DELETE /api-keys/{key_id} -> {}
    GET    /roles?limit&next_token&type=system|custom -> {"roles": [...], "next_token"?}
    key object: {"key_id", "account_id", "description", "role_id", "issued_at_epoch_seconds",
                 "expires_at_epoch_seconds"?}
    errors: {"code", "message", "err"?} with 400, 401, 403, 404, 429, 500

Authentication is the raw management key in ``Authorization`` (no ``Bearer``); its role must be Owner.

Every request goes through :func:`rotator.httpio.fetch`: ``timeout`` is the total time of one attempt
(connect, headers and body together), an answer larger than :data:`MAX_BODY` is refused unread, and JSON
nested deeper than :data:`rotator.httpio.MAX_DEPTH` is a malformed answer. A listing follows at most
:data:`MAX_PAGES` pages and ends within ``listing_timeout`` (the app passes ``pass_timeout``), retries
included. A key listed twice alike counts once; listed twice differently, the answer is malformed.

Failures: 429, 5xx, connection errors and timeouts are retried with exponential backoff and full jitter
(``Retry-After`` is honoured, capped at ``backoff_max``); after ``max_attempts`` they raise
:class:`~rotator.errors.IssuerUnavailable`. 400/401/403/404 raise at once as IssuerBadRequest /
IssuerAuthError / IssuerPermissionError / IssuerNotFound. Messages carry the operation, the HTTP status and
the ``code``/``message`` of the error body, never a response body, a header or a key.

Request quotas (issue 27): the key API's rate limits are not documented, so :data:`MOMENTO_QUOTAS` has no limit:
every attempt is charged against the process's :class:`rotator.quotas.RateLimits` (in the scope of the API's
host; a no-op unless a refusal paused it), and a 429 pauses that scope for its ``Retry-After`` (capped at
``backoff_max``, as the refused request's own wait is), so every worker waits, not just the refused one.

Every HTTP attempt is recorded once with ``record_call("momento", op, status)`` (``status`` is the HTTP
status, or ``"error"`` when no response arrived); op is one of ``create_key``, ``list_keys``,
``revoke_key``, ``list_roles``.
"""

from __future__ import annotations

import json as jsonlib
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from urllib3 import exceptions as u3

from rotator import httpio
from rotator.errors import (
    ConfigError,
    IssuerAuthError,
    IssuerBadRequest,
    IssuerError,
    IssuerNotFound,
    IssuerPermissionError,
    IssuerUnavailable,
)
from rotator.model import IssuedKey, KeyInfo, Role, SecretText
from rotator.observability import get_logger, record_call, redact_text
from rotator.quotas import Charge, Quota, RateLimits

__all__ = ["DEFAULT_BASE_URL", "MomentoIssuer"]

#: Momento's global key-management API (not per cell)
DEFAULT_BASE_URL = "https://mga.registry.prod.a.momentohq.com"

_SERVICE = "momento"
_MAX_PAGE = 100
#: HTTP connections kept open to the key API: as many as a pass runs policies at once (``concurrency`` <= 64)
POOL_CONNECTIONS = 64
#: at most this many pages in one listing (1,000,000 keys at 100 a page): more is a server bug, not an account
MAX_PAGES = 10_000
#: an answer larger than this is refused: a page of 100 keys is about 30 KB
MAX_BODY = 4 * 1024 * 1024
# a raw key travels in a header: printable ASCII, no spaces (anything else would be refused by the HTTP
# library with an error that quotes the header value)
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
# a timeout, a refused or dropped connection, a broken answer, a failing proxy, a TLS failure on the way: the
# request may go through next time (NewConnectionError is a ConnectTimeoutError subclass, so it is named first)
_RETRYABLE_ERRORS = (u3.NewConnectionError, u3.TimeoutError, u3.ProtocolError, u3.ProxyError, u3.SSLError, OSError)


_HEADERS = {"Accept": "application/json", "User-Agent": "rotator"}

#: the key API's request quotas: not documented, so only its refusals and their Retry-After pace it (one scope:
#: the API's host)
MOMENTO_QUOTAS: tuple[Quota, ...] = (
    Quota("momento", "requests", None, 1.0, "issuer", "not documented: 429 and Retry-After are the source of truth"),
)


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error_detail(response: httpio.Response) -> str:
    """``code: message`` from a JSON error body (short, redacted), or ``""``. Never the body itself."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [v[:200] for v in (body.get("code"), body.get("message")) if isinstance(v, str) and v]
    return redact_text(": ".join(parts))


def _epoch(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not an epoch-seconds number")
    return datetime.fromtimestamp(value, UTC)


class MomentoIssuer:
    """A :class:`rotator.issuers.base.KeyIssuer` speaking Momento's key-management HTTP API (urllib3, sync).

    ``management_key`` must be an Owner API key (v2 keys work as they are). It may be swapped later with
    :meth:`set_management_key` (self-rotation). ``base_url`` must be https, except for loopback hosts
    (the local emulator). ``sleep`` and ``rng`` are injectable so tests can record backoff delays.
    ``page_size`` (1..100) is the ``limit`` asked for per page. ``limits`` is the process's request quotas (the
    runtime's, shared with every store and worker); without it the issuer has its own, which charges nothing when
    ``sleep`` is injected (its waits are then only the ones a test records).

    Raises :class:`rotator.errors.ConfigError` for a bad ``base_url`` or retry settings. Thread-safe (urllib3's
    pool is; at most ``POOL_CONNECTIONS`` connections are kept open).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        management_key: SecretText | None = None,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        page_size: int = _MAX_PAGE,
        listing_timeout: float | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"issuer url {base_url!r} must be an http(s) URL such as {DEFAULT_BASE_URL}")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                "issuer url: remove the user info (user:password@) from it; the management key goes in "
                "issuer.management_key, and a URL is shown in logs and errors"
            )
        if parts.scheme == "http" and not httpio.is_loopback_host(parts.hostname):
            raise ConfigError(
                f"issuer url {base_url!r}: plain http is allowed only for loopback hosts (the local "
                "emulator); use https so the management key is not sent in clear text"
            )
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, not {max_attempts}")
        if timeout <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ConfigError("timeout must be > 0 and backoff_base/backoff_max must be >= 0")
        if not 1 <= page_size <= _MAX_PAGE:
            raise ConfigError(f"page_size must be from 1 to {_MAX_PAGE}, not {page_size}")
        if management_key is not None and not isinstance(management_key, SecretText):
            raise TypeError("management_key must be a rotator.model.SecretText")
        self.base_url = base_url.rstrip("/")
        self._key = management_key
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.page_size = page_size
        #: seconds one listing (every page, retries included) may take; the app passes ``pass_timeout``
        self.listing_timeout = listing_timeout
        self.timeout = timeout
        self._sleep = sleep
        #: the process's request quotas: the key API's are not documented, so its refusals (429, Retry-After)
        #: pause every worker's requests to it (rotator/quotas.py)
        self.limits = limits if limits is not None else RateLimits(enabled=sleep is time.sleep)
        # one scope per key API host (with its port when it names one: two local emulators are two APIs)
        self._charges = (Charge(MOMENTO_QUOTAS[0], (parts.netloc.rpartition("@")[2] or base_url).lower()),)
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not cryptography
        # one kept-alive connection per worker of a pass (concurrency is at most 64)
        self._client = httpio.pool(self.base_url, timeout=timeout, maxsize=POOL_CONNECTIONS)

    # ---- lifecycle ---------------------------------------------------------------------------------

    def set_management_key(self, key: SecretText) -> None:
        """Use ``key`` for every later request (after the management key itself was rotated)."""
        if not isinstance(key, SecretText):
            raise TypeError("the management key must be a rotator.model.SecretText")
        self._key = key

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._client.clear()

    def __enter__(self) -> MomentoIssuer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MomentoIssuer(base_url={self.base_url!r})"

    # ---- the KeyIssuer protocol --------------------------------------------------------------------

    def create_key(self, role_id: str, description: str, expires_at: datetime | None) -> IssuedKey:
        """Create a key with ``role_id``, ``description`` and ``expires_at`` (``None``: never expires).

        The plaintext is returned once, inside :class:`SecretText`. Not idempotent: the request is retried
        on 429, 5xx and connection errors, so a server that created the key but failed to answer can leave
        a duplicate behind. Such a duplicate carries the rotator marker from ``description`` and no target
        ever holds it, so the engine revokes it as an orphan after ``orphan_after``.

        Raises IssuerBadRequest (bad expiry, e.g. in the past), IssuerNotFound (unknown role),
        IssuerAuthError, IssuerPermissionError, IssuerUnavailable.
        """
        op = "create_key"
        expiry: str | int
        if expires_at is None:
            expiry = "never"
        else:
            if expires_at.tzinfo is None:
                raise IssuerBadRequest(f"momento {op}: expires_at must be timezone-aware", operation=op)
            expiry = math.floor(expires_at.timestamp())
        body = {"role_id": role_id, "description": description, "expiry": expiry}
        data = self._request(
            op, "POST", "/api-keys", json=body, not_found=f"role {role_id!r} does not exist (see list_roles)"
        )
        api_key = data.get("api_key")
        if not isinstance(api_key, str) or not api_key:
            raise IssuerError(f"momento {op}: the response carried no api_key", operation=op)
        secret = SecretText(api_key)
        info = self._key_info(data.get("key_info"), op)
        return IssuedKey(info=info, api_key=secret)

    def list_keys(self) -> list[KeyInfo]:
        """Every key that is not revoked (expired ones included), following ``next_token`` over all pages.

        Raises IssuerAuthError, IssuerPermissionError, IssuerUnavailable, IssuerError (a malformed answer).
        """
        op = "list_keys"
        keys: dict[str, KeyInfo] = {}
        for obj in self._pages(op, "/api-keys", "key_info", {}):
            info = self._key_info(obj, op)
            same = keys.setdefault(info.key_id, info)
            if same != info:
                # the same key listed twice with different facts: which one is true cannot be known
                raise self._malformed(op, f"key {info.key_id} is listed twice, differently")
        # a key listed twice alike (a page boundary that moved) counts once: one DELETE, one in every count
        return list(keys.values())

    def revoke_key(self, key_id: str) -> None:
        """Revoke ``key_id``. Idempotent: a key that is unknown or already revoked (404) counts as done.

        Raises IssuerAuthError, IssuerPermissionError, IssuerBadRequest, IssuerUnavailable.
        """
        op = "revoke_key"
        if not key_id:
            raise IssuerBadRequest(f"momento {op}: key_id must not be empty", operation=op)
        self._request(op, "DELETE", f"/api-keys/{quote(key_id, safe='')}", not_found="", missing_ok=True)

    def list_roles(self, role_type: str | None = None) -> list[Role]:
        """Every role (or only ``role_type`` ``"system"``/``"custom"`` ones), over all pages.

        Raises IssuerAuthError, IssuerBadRequest, IssuerUnavailable, IssuerError (a malformed answer).
        """
        op = "list_roles"
        params = {"type": role_type} if role_type else {}
        roles: list[Role] = []
        for obj in self._pages(op, "/roles", "roles", params):
            if not isinstance(obj, dict):
                raise self._malformed(op, "a role is not a JSON object")
            role_id, name, kind = obj.get("role_id"), obj.get("role_name"), obj.get("role_type")
            if not isinstance(role_id, str) or not role_id or not isinstance(name, str):
                raise self._malformed(op, "a role without role_id or role_name")
            roles.append(Role(role_id=role_id, role_name=name, role_type=kind if isinstance(kind, str) else ""))
        return roles

    # ---- wire details ------------------------------------------------------------------------------

    def _pages(self, op: str, path: str, field: str, params: Mapping[str, str]) -> list[object]:
        """Every item of a paginated listing: at most :data:`MAX_PAGES` pages, each answer within
        :data:`MAX_BODY`, and the whole listing within ``listing_timeout`` seconds (retries included)."""
        items: list[object] = []
        token: str | None = None
        seen: set[str] = set()
        started = time.monotonic()
        deadline = None if self.listing_timeout is None else started + self.listing_timeout
        for pages in range(MAX_PAGES):
            query = {**params, "limit": str(self.page_size)}
            if token:
                query["next_token"] = token
            data = self._request(
                op,
                "GET",
                path,
                params=query,
                not_found=f"{path} does not exist; is the issuer url right?",
                deadline=deadline,
                progress=f"after {pages} page{'s' if pages != 1 else ''}",
            )
            page = data.get(field, [])
            if not isinstance(page, list):
                raise self._malformed(op, f"{field} is not a list")
            items.extend(page)
            next_token = data.get("next_token")
            if not next_token:
                return items
            if not isinstance(next_token, str) or next_token in seen:
                raise self._malformed(op, "next_token repeats or is not a string")
            seen.add(next_token)
            token = next_token
        raise self._malformed(op, f"more than {MAX_PAGES} pages")

    def _key_info(self, obj: object, op: str) -> KeyInfo:
        if not isinstance(obj, dict):
            raise self._malformed(op, "a key object is not a JSON object")
        key_id, role_id = obj.get("key_id"), obj.get("role_id")
        description = obj.get("description") or ""
        if not isinstance(key_id, str) or not key_id or not isinstance(role_id, str):
            raise self._malformed(op, "a key object without key_id or role_id")
        if not isinstance(description, str):
            raise self._malformed(op, f"key {key_id}: description is not a string")
        try:
            issued_at = _epoch(obj.get("issued_at_epoch_seconds"))
            expires_at = _epoch(obj.get("expires_at_epoch_seconds"))
        except (ValueError, OverflowError, OSError) as exc:
            raise self._malformed(op, f"key {key_id}: a time is not epoch seconds") from exc
        if issued_at is None:
            raise self._malformed(op, f"key {key_id}: no issued_at_epoch_seconds")
        return KeyInfo(
            key_id=key_id, role_id=role_id, description=description, issued_at=issued_at, expires_at=expires_at
        )

    @staticmethod
    def _malformed(op: str, what: str) -> IssuerError:
        return IssuerError(f"momento {op}: unexpected response from the key API ({what})", operation=op)

    def _auth_header(self, op: str) -> str:
        key = self._key
        if key is None:
            raise IssuerAuthError(
                f"momento {op}: no management key is configured; set a valid Owner API key as the "
                "issuer's management key",
                operation=op,
            )
        value = key.reveal()
        if not _HEADER_SAFE.fullmatch(value):
            raise IssuerAuthError(
                f"momento {op}: the management key is malformed (empty, or holds spaces, line breaks or "
                "non-ASCII characters); set a valid Owner API key as the issuer's management key",
                operation=op,
            )
        return value

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)

    def _request(
        self,
        op: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        not_found: str,
        missing_ok: bool = False,
        deadline: float | None = None,
        progress: str = "",
    ) -> dict[str, Any]:
        """One API call with retries: the JSON object answered, or a typed IssuerError.

        ``not_found`` explains a 404; with ``missing_ok`` a 404 is success (``{}``: an idempotent delete).
        """
        last = "no attempt"
        last_status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            auth = self._auth_header(op)
            if deadline is not None and time.monotonic() >= deadline:
                raise self._too_slow(op, progress)
            # every attempt is charged: a no-op unless a refusal paused the key API for every worker
            self.limits.acquire(self._charges, deadline=deadline)
            if deadline is not None and time.monotonic() >= deadline:
                raise self._too_slow(op, progress)
            try:
                response = self._send(method, path, params, json, auth, deadline)
            except httpio.BodyTooLarge as exc:
                record_call(_SERVICE, op, "error")
                raise IssuerError(
                    f"momento {op}: the key API's answer is larger than {MAX_BODY} bytes; it is not Momento's "
                    "or it is broken (check issuer.url)",
                    operation=op,
                ) from exc
            except (u3.HTTPError, OSError) as exc:
                record_call(_SERVICE, op, "error")
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._too_slow(op, progress) from None  # cut at the listing's deadline
                timed_out = isinstance(exc, u3.TimeoutError) and not isinstance(exc, u3.NewConnectionError)
                kind = "timeout" if timed_out else "connection error"
                last, last_status = f"{kind} ({type(exc).__name__})", None
                if not isinstance(exc, _RETRYABLE_ERRORS):
                    raise IssuerError(
                        f"momento {op}: the request to {self.base_url} failed: {type(exc).__name__}",
                        operation=op,
                    ) from exc
                if attempt == self.max_attempts:
                    raise self._unavailable(op, attempt, last, last_status) from exc
                delay = self._backoff(attempt, None)
            else:
                status = response.status_code
                record_call(_SERVICE, op, status)
                if 200 <= status < 300:
                    return self._json_object(op, response)
                if status == 404 and missing_ok:
                    return {}
                if status != 429 and status < 500:
                    raise self._status_error(op, status, response, not_found)
                detail = _error_detail(response)
                last = f"HTTP {status}" + (f" {detail}" if detail else "")
                last_status = status
                retry_after = _parse_retry_after(response.headers.get("Retry-After"))
                if status == 429:
                    # every worker pauses, not only this one (for as long as this one waits, at most)
                    self.limits.throttled(
                        self._charges, retry_after=None if retry_after is None else min(retry_after, self.backoff_max)
                    )
                if attempt == self.max_attempts:
                    raise self._unavailable(op, attempt, last, last_status)
                delay = self._backoff(attempt, retry_after)
            # the logger is looked up per use: binding one at import time would freeze structlog's
            # configuration (and its redaction processor) as it was then
            get_logger(component="issuer.momento").info(
                "momento request failed; retrying",
                operation=op,
                attempt=attempt,
                max_attempts=self.max_attempts,
                last=last,
                delay=round(delay, 3),
            )
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise self._too_slow(op, progress)
            self._sleep(delay)
        raise self._unavailable(op, self.max_attempts, last, last_status)  # pragma: no cover

    def _too_slow(self, op: str, progress: str) -> IssuerUnavailable:
        return IssuerUnavailable(
            f"momento {op}: the listing took longer than {self.listing_timeout:g}s (pass_timeout) "
            f"{progress}".rstrip()
            + "; the key API is too slow or never ends its pages",
            operation=op,
        )

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        auth: str,
        deadline: float | None,
    ) -> httpio.Response:
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        headers = {**_HEADERS, "Authorization": auth}  # urllib3 uses given headers instead of the pool's
        data = None
        if body is not None:
            data = jsonlib.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        return httpio.fetch(
            self._client,
            method,
            url,
            body=data,
            headers=headers,
            timeout=self.timeout,
            deadline=deadline,
            max_body=MAX_BODY,
        )

    def _json_object(self, op: str, response: httpio.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._malformed(op, f"HTTP {response.status_code} without a JSON object")
        return data

    def _unavailable(self, op: str, attempts: int, last: str, status: int | None) -> IssuerUnavailable:
        return IssuerUnavailable(
            f"momento {op}: the key API at {self.base_url} did not succeed after {attempts} "
            f"attempt{'s' if attempts != 1 else ''} (last: {last}); check that it is reachable, or retry later",
            status=status,
            operation=op,
        )

    def _status_error(self, op: str, status: int, response: httpio.Response, not_found: str) -> IssuerError:
        detail = _error_detail(response)
        said = f"{status}" + (f" {detail}" if detail else "")
        if status == 400:
            return IssuerBadRequest(f"momento {op}: the request was rejected ({said})", status=status, operation=op)
        if status == 401:
            return IssuerAuthError(
                f"momento {op}: the management key was refused ({said}): it is missing, unknown, expired or "
                "revoked. Set a valid Owner API key as the issuer's management key",
                status=status,
                operation=op,
            )
        if status == 403:
            return IssuerPermissionError(
                f"momento {op}: the management key may not manage API keys ({said}): its role is not "
                "allowed to. Use an Owner API key as the issuer's management key",
                status=status,
                operation=op,
            )
        if status == 404:
            return IssuerNotFound(f"momento {op}: {not_found} ({said})", status=status, operation=op)
        return IssuerError(f"momento {op}: unexpected HTTP status ({said})", status=status, operation=op)
