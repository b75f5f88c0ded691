"""The ``http`` pickup check: consumers report, over HTTP, the key id they loaded.

Each configured URL is asked (``GET``, all URLs at once, one thread each up to :data:`MAX_WORKERS`) which
key id its consumer uses, read from a JSON field of the response body (``key_id_field``, a dotted path such
as ``momento.keyId``; ``0``-based list indices allowed) or, when ``header`` is set, from that response header
(the body is then ignored). The check is ``ok`` only when every URL answers 2xx with exactly the key id being
checked. Anything else makes that consumer lag, with the reason in its ``lagging`` entry:

- ``https://c1/keyid (reports k0001)``: it answered another key id;
- ``(status 503)``: a non-2xx status (redirects are not followed);
- ``(not JSON)``, ``(no string field momento.keyId)``, ``(no header X-Key-Id)``: garbage;
- ``(unreachable: ConnectError)``, ``(unreachable: ReadTimeout)``: no answer within ``timeout``;
- ``(env var PICKUP_TOKEN is not set)``: ``auth_header.env`` is missing; no request is sent at all.

``auth_header`` sends one request header (``Authorization`` by default) whose value is read from an
environment variable at each check, so a rotated token needs no restart. The value is wrapped in
:class:`~rotator.model.SecretText` (the log redactor scrubs it) and never appears in a verdict or a log.
User info in a URL (``https://user:pass@host/``) is dropped from every name shown.

Every request is recorded once with ``record_call("pickup-http", "get", <status or error class>)``.
The check never raises for a consumer; it is stateless and safe to run again at any time.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import urllib3
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from urllib3 import exceptions as u3

from rotator import httpio
from rotator.errors import ConfigError
from rotator.model import SECRETS, PickupVerdict, SecretText
from rotator.observability import get_logger, record_call
from rotator.pickup.base import Timeout

SERVICE = "pickup-http"
#: at most this many consumers are asked at the same time
MAX_WORKERS = 32
#: a consumer's answer is read up to this many bytes; a longer body is garbage
MAX_BODY = 64 * 1024

_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")

log = get_logger()


class AuthHeader(BaseModel):
    """``auth_header``: one request header whose value comes from an environment variable at check time."""

    model_config = ConfigDict(extra="forbid")

    name: str = "Authorization"
    env: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _HEADER_RE.match(v):
            raise ValueError(f"{v!r} is not an HTTP header name")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: str) -> str:
        if not _ENV_RE.match(v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v


class CheckConfig(BaseModel):
    """``pickup: [{type: http, urls: [...], ...}]``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["http"]
    #: the consumers' key-id endpoints (http or https), all asked at every check
    urls: list[str] = Field(min_length=1)
    #: dotted path of the JSON field holding the key id, e.g. ``keyId`` or ``momento.keyId``
    key_id_field: str = "keyId"
    #: a response header carrying the key id; when set, the body is not parsed
    header: str | None = None
    #: a request header (default ``Authorization``) whose value is read from the env var ``env``
    auth_header: AuthHeader | None = None
    #: seconds (or a duration like ``5s``) to wait for each consumer
    timeout: Timeout = 5.0
    #: verify TLS certificates: true, false, or the path of a CA bundle
    verify: bool | str = True

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{_display(url)!r} is not an http(s) URL, e.g. https://checkout.internal/keyid")
        if len(set(v)) != len(v):
            raise ValueError("a URL is listed twice")
        return v

    @field_validator("key_id_field")
    @classmethod
    def _field(cls, v: str) -> str:
        if not v or any(not part for part in v.split(".")):
            raise ValueError(f"{v!r} is not a dotted JSON field path, e.g. keyId or momento.keyId")
        return v

    @field_validator("header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER_RE.match(v):
            raise ValueError(f"{v!r} is not an HTTP header name")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> CheckConfig:
        if self.header is not None and "key_id_field" in self.model_fields_set:
            raise ValueError("give key_id_field (read the JSON body) or header (read a response header), not both")
        return self


def _display(url: str) -> str:
    """``url`` without user info (``user:pass@``), as shown in verdicts and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _valid_header_value(value: SecretText) -> bool:
    text = value.reveal()
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(c in text for c in "\r\n\0")


def _field_value(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict):
            if part not in data:
                return None
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


class HttpCheck:
    """The ``http`` check of one policy: every URL must report the key id being checked.

    Thread-safe; :meth:`check` may run from several passes at once. :meth:`close` releases the connection pool.
    """

    def __init__(self, config: CheckConfig) -> None:
        self.config = config
        self.name = "http"
        if isinstance(config.verify, str):
            _ca_bundle(config.verify)
        # one pool per consumer host (each decides on its own proxy and NO_PROXY), made on first use
        self._pools: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        for url in config.urls:
            SECRETS.pin_url(url)  # user info and query values in a URL are credentials

    def _pool(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            found = self._pools.get(key)
            if found is None:
                timeout = self.config.timeout
                found = httpio.pool(url, timeout=timeout, maxsize=MAX_WORKERS, verify=self.config.verify)
                self._pools[key] = found
            return found

    def check(self, policy: str, key_id: str, published_at: datetime) -> PickupVerdict:
        """Ask every URL (concurrently) which key id it uses; ``ok`` when all report ``key_id``.

        ``published_at`` is not used: a consumer's own answer is the evidence. Never raises for a consumer.
        """
        urls = self.config.urls
        headers: dict[str, str] = {}
        auth = self.config.auth_header
        if auth is not None:
            raw = os.environ.get(auth.env)
            if not raw:
                reason = f"env var {auth.env} is not set"
                return PickupVerdict(
                    check=self.name,
                    key_id=key_id,
                    ok=False,
                    lagging=tuple(f"{_display(u)} ({reason})" for u in urls),
                    detail=f"cannot ask the consumers: the {auth.name} header is read from the env var {auth.env}, "
                    "which is not set in rotator's environment",
                )
            token = SecretText(raw)
            SECRETS.pin(raw)  # for the life of the process: a consumer may echo it back in its answer
            if not _valid_header_value(token):
                return PickupVerdict(
                    check=self.name,
                    key_id=key_id,
                    ok=False,
                    lagging=tuple(f"{_display(u)} (env var {auth.env} is not a valid header value)" for u in urls),
                    detail=f"cannot ask the consumers: the env var {auth.env} (for the {auth.name} header) holds "
                    "line breaks or characters outside Latin-1",
                )
            headers[auth.name] = token.reveal()
        with ThreadPoolExecutor(max_workers=min(len(urls), MAX_WORKERS), thread_name_prefix="pickup-http") as pool:
            futures = [pool.submit(self._ask, url, headers) for url in urls]
            answers = [f.result() for f in futures]
        lagging: list[str] = []
        for url, (reported, problem) in zip(urls, answers, strict=True):
            if problem is not None:
                lagging.append(f"{_display(url)} ({problem})")
            elif reported != key_id:
                lagging.append(f"{_display(url)} (reports {reported})")
        ok = not lagging
        detail = (
            f"all {len(urls)} consumer(s) report {key_id}"
            if ok
            else f"{len(lagging)} of {len(urls)} consumer(s) do not report {key_id}"
        )
        log.debug("pickup checked", check=self.name, policy=policy, key_id=key_id, ok=ok, lagging=lagging)
        return PickupVerdict(check=self.name, key_id=key_id, ok=ok, lagging=tuple(lagging), detail=detail)

    def _ask(self, url: str, headers: dict[str, str]) -> tuple[str | None, str | None]:
        """``(reported key id, None)`` or ``(None, why this consumer gives no answer)``.

        One bounded request (:func:`rotator.httpio.fetch`): within ``timeout`` in total, the body read up to
        :data:`MAX_BODY` bytes (not at all when the key id comes from a header)."""
        try:
            resp = httpio.fetch(
                self._pool(url),
                "GET",
                url,
                headers={"Accept": "application/json", "User-Agent": "rotator-pickup", **headers},
                timeout=self.config.timeout,
                max_body=MAX_BODY,
                read_body=self.config.header is None,
            )
        except httpio.BodyTooLarge:
            record_call(SERVICE, "get", "BodyTooLarge")
            return None, f"answer longer than {MAX_BODY} bytes"
        except (u3.HTTPError, OSError) as exc:
            kind = _failure(exc)
            record_call(SERVICE, "get", kind)
            return None, f"unreachable: {kind}"
        record_call(SERVICE, "get", resp.status_code)
        if not 200 <= resp.status_code < 300:
            return None, f"status {resp.status_code}"
        if self.config.header is not None:
            value = resp.headers.get(self.config.header, "").strip()
            return (value, None) if value else (None, f"no header {self.config.header}")
        try:
            data = httpio.loads(resp.content)
        except ValueError:
            return None, "not JSON"
        value = _field_value(data, self.config.key_id_field)
        if not isinstance(value, str) or not value.strip():
            return None, f"no string field {self.config.key_id_field}"
        return value.strip(), None

    def close(self) -> None:
        with self._lock:
            for p in self._pools.values():
                p.clear()
            self._pools.clear()


def _failure(exc: BaseException) -> str:
    """The short name a lagging entry gives a request that got no answer (the same words whatever the library)."""
    if isinstance(exc, u3.NewConnectionError | ConnectionRefusedError):
        return "ConnectError"
    if isinstance(exc, u3.ConnectTimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, u3.TimeoutError | TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, u3.SSLError):
        return "TLSError"
    if isinstance(exc, u3.ProtocolError):
        return "RemoteProtocolError"
    return type(exc).__name__


def _ca_bundle(path: str) -> None:
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"pickup http: cannot load the CA bundle {path!r} given as verify: {exc}") from exc


def open_check(config: BaseModel) -> HttpCheck:
    """An :class:`HttpCheck` for ``config``.

    Raises: ConfigError (``verify`` names a CA bundle that cannot be loaded).
    """
    cfg = config if isinstance(config, CheckConfig) else CheckConfig.model_validate(config.model_dump())
    return HttpCheck(cfg)
