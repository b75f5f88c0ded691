"""The ``webhook`` reload target: a signed POST (Standard Webhooks) that tells a receiver to load the new key.

::

    reload:
      - type: webhook
        url: https://deploy.internal/hooks/momento     # https; plain http only to 127.0.0.1, localhost or ::1
        secret: {env: MOMENTO_RELOAD_WEBHOOK_SECRET}   # whsec_<base64>, 24 to 64 bytes
        timeout: 15s                                   # one reload call in total, retries included
        ca_bundle: /etc/ssl/internal-ca.pem            # optional: verify the receiver against this CA bundle

Each :meth:`WebhookTarget.reload` sends one event, signed as https://www.standardwebhooks.com/ says (the
signature is made by the ``standardwebhooks`` library)::

    POST <url>
    content-type: application/json
    webhook-id: msg_<32 hex digits>        # the same for the same (policy, key id, url): dedup key of re-sends
    webhook-timestamp: <unix seconds>      # the send time of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">

    {"type":"momento.key.rotated","timestamp":"<published_at>","data":{"policy":"checkout",
     "key_id":"...","expires_at":"2024-06-01T12:00:00Z" or null,"published_at":"2024-05-01T12:00:00Z"}}

The body carries the key id and its times, never key material (the receiver reads the key from its store).
``timestamp`` is when the event happened (the key was published), so every re-send of an event has the same
body; only the ``webhook-timestamp`` header (and so the signature) changes.

A 2xx answer is success. Anything else is a :class:`~rotator.errors.ReloadError` that names the URL without
its user info or query and the status or the error class, never the answer's body or the secret: a 3xx (not
followed), a 4xx, a 5xx, no answer within ``timeout``, a refused connection, an answer over
:data:`MAX_ANSWER` bytes (not read past the cap). 429, 5xx and connection errors are retried (at most
:data:`ATTEMPTS` attempts, exponential backoff with full jitter, ``Retry-After`` honoured) while the
``timeout`` budget lasts: one call never takes longer than ``timeout`` (plus scheduling noise).

rotator cannot see what the receiver did: the target declares ``observable=False, rollout=False``, and
:meth:`WebhookTarget.observe` reports its one unit ``pending`` without any I/O. The planner then sends the
event on every pass while the old key waits for revocation (at least once: receivers deduplicate on
``webhook-id``). Pickup checks and grace decide the revoke.

The signing secret is read from its environment variable when the target is opened; it is pinned in the
redaction registry (with and without its ``whsec_`` prefix) before anything could quote it, and never shown
by a message, a log line or a ``repr``. Every HTTP attempt is recorded with
``record_call("webhook", "post", <status or error class>)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import random
import re
import ssl
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, field_validator
from urllib3 import exceptions as u3

from rotator import httpio
from rotator.errors import ConfigError, ConfigIssue, MissingExtraError, ReloadError
from rotator.model import ReloadStatus
from rotator.observability import get_logger, record_call
from rotator.pickup.base import Timeout
from rotator.redaction import SECRETS, redact_value
from rotator.reload.base import ReloadCapabilities, ReloadContext

if TYPE_CHECKING:
    import urllib3
    from standardwebhooks import Webhook

__all__ = ["ATTEMPTS", "EVENT_TYPE", "MAX_ANSWER", "EnvSecret", "ReloadConfig", "WebhookTarget", "open_target"]

SERVICE = "webhook"
#: the event type of the body (Standard Webhooks: full-stop delimited, hierarchical)
EVENT_TYPE = "momento.key.rotated"
#: the receiver's answer is read up to this many bytes (it is not used); a larger one is refused unread
MAX_ANSWER = 64 * 1024
#: HTTP attempts per reload call, the first included (429, 5xx and connection errors are retried)
ATTEMPTS = 3
#: seconds: the ceiling of the first retry's random delay (doubled for each further retry, up to BACKOFF_MAX)
BACKOFF_BASE = 0.5
BACKOFF_MAX = 5.0
#: the Standard Webhooks symmetric secret: ``whsec_`` + base64 of 24 to 64 random bytes
SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SECRET_BYTES = (24, 64)

_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_rng = random.Random()  # noqa: S311 - jitter, not cryptography


def display_url(url: str) -> str:
    """``url`` as shown in names, messages and logs: without user info, query or fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class EnvSecret(BaseModel):
    """``secret: {env: NAME}``: the signing secret, read from an environment variable when the target opens."""

    model_config = ConfigDict(extra="forbid")

    env: str

    @field_validator("env")
    @classmethod
    def _env(cls, v: str) -> str:
        if not _ENV_RE.match(v):
            raise ValueError(f"{v[:60]!r} is not an environment variable name: write one like RELOAD_WEBHOOK_SECRET")
        return v


class ReloadConfig(BaseModel):
    """``reload: [{type: webhook, url: ..., secret: {env: ...}}]``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"]
    #: the receiver: https, or plain http to 127.0.0.1, localhost or ::1 only
    url: str
    #: the Standard Webhooks signing secret (``whsec_<base64>``), from an environment variable
    secret: EnvSecret
    #: seconds (or a duration like ``15s``) one reload call may take in total, retries included
    timeout: Timeout = 15.0
    #: verify the receiver's TLS certificate against this CA bundle (a PEM file) instead of the default ones
    ca_bundle: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        SECRETS.pin_url(v)  # user info and query values are credentials: scrubbed before any message quotes them
        try:
            parts = urlsplit(v)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            raise ValueError("is not a URL, e.g. https://deploy.internal/hooks/momento") from None
        shown = display_url(v)[:120]
        if parts.scheme not in ("http", "https") or not host or any(c.isspace() or ord(c) < 0x20 for c in v):
            raise ValueError(f"{shown!r} is not an http(s) URL, e.g. https://deploy.internal/hooks/momento")
        if parts.fragment:
            raise ValueError(f"{shown!r} has a #fragment: drop it (it is never sent)")
        if parts.scheme == "http" and host not in _LOOPBACK:
            raise ValueError(
                f"{shown!r}: plain http is only allowed to 127.0.0.1, localhost or ::1 (a local receiver); "
                "use https, the body and its signature would cross the network in clear"
            )
        return v


class WebhookTarget:
    """One receiver URL (one unit). Thread-safe: the connection pool is urllib3's; nothing else changes."""

    type = "webhook"
    capabilities = ReloadCapabilities(observable=False, rollout=False)

    def __init__(self, config: ReloadConfig, context: ReloadContext, signer: Webhook) -> None:
        self.config = config
        self.policy = context.policy
        self.url = config.url
        self.unit = display_url(config.url)
        self.name = f"webhook:{urlsplit(config.url).netloc.rpartition('@')[2]}"
        self.timeout = float(config.timeout)
        self._signer = signer
        verify: bool | str = config.ca_bundle if config.ca_bundle else True
        self._pool: urllib3.PoolManager = httpio.pool(config.url, timeout=self.timeout, maxsize=2, verify=verify)

    def __repr__(self) -> str:
        return f"WebhookTarget(policy={self.policy!r}, unit={self.unit!r})"

    # ---- the contract -------------------------------------------------------------------------------------

    def observe(self, key_id: str, published_at: datetime) -> list[ReloadStatus]:
        """The one unit, always ``pending``: what the receiver did cannot be read. No I/O."""
        return [
            ReloadStatus(
                target=self.name,
                unit=self.unit,
                type=self.type,
                key_id=key_id,
                state="pending",
                detail="a webhook cannot be observed: sent on every pass until the old key is revoked",
                rollout=self.capabilities.rollout,
                observable=self.capabilities.observable,
            )
        ]

    def reload(self, unit: str, key_id: str, expires_at: datetime | None, published_at: datetime) -> None:
        """POST the signed ``momento.key.rotated`` event for ``key_id``; return on a 2xx answer.

        Raises ReloadError (non-2xx, no answer within ``timeout``, an answer too large, a refused connection).
        """
        if unit != self.unit:
            raise ReloadError(f"unknown unit {unit[:120]!r}: this target has only {self.unit!r}", target=self.name)
        body = event_body(self.policy, key_id, expires_at, published_at)
        msg_id = message_id(self.policy, key_id, self.unit)
        end = time.monotonic() + self.timeout
        last = "no attempt"
        attempt = 0
        while attempt < ATTEMPTS:
            attempt += 1
            retry_after: float | None = None
            try:
                response = self._send(msg_id, body, end)
            except httpio.BodyTooLarge:
                record_call(SERVICE, "post", "BodyTooLarge")
                raise self._error(f"the receiver answered with more than {MAX_ANSWER} bytes", attempt) from None
            except (u3.HTTPError, OSError) as exc:
                kind = _failure(exc)
                record_call(SERVICE, "post", kind)
                timed_out = isinstance(exc, u3.TimeoutError | TimeoutError) and not isinstance(
                    exc, u3.NewConnectionError
                )
                if timed_out or time.monotonic() >= end:
                    raise self._error(f"no answer within {self.timeout:g}s ({kind})", attempt) from None
                if not _retryable(exc):
                    raise self._error(f"the request failed ({kind})", attempt) from None
                last = f"could not be reached ({kind})"
            else:
                status = response.status_code
                record_call(SERVICE, "post", status)
                if 200 <= status < 300:
                    return
                if status != 429 and status < 500:
                    raise self._error(f"the receiver answered HTTP {status}{_hint(status)}", attempt)
                last = f"the receiver answered HTTP {status}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt >= ATTEMPTS:
                break
            delay = _backoff(attempt, retry_after)
            if time.monotonic() + delay >= end:
                break  # the next attempt could not finish within the budget
            get_logger(component="reload.webhook").info(
                "webhook reload failed; retrying",
                target=self.name,
                unit=self.unit,
                attempt=attempt,
                max_attempts=ATTEMPTS,
                last=last,
                delay=round(delay, 3),
            )
            time.sleep(delay)
        raise self._error(last, attempt)

    def close(self) -> None:
        self._pool.clear()

    # ---- helpers --------------------------------------------------------------------------------------------

    def _send(self, msg_id: str, body: bytes, deadline: float) -> httpio.Response:
        sent_at = int(time.time())  # the attempt's time, by the wall clock the receiver checks it against
        signature = self._signer.sign(msg_id, datetime.fromtimestamp(sent_at, UTC), body.decode())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "rotator",
            "webhook-id": msg_id,
            "webhook-timestamp": str(sent_at),
            "webhook-signature": signature,
        }
        return httpio.fetch(
            self._pool,
            "POST",
            self.url,
            body=body,
            headers=headers,
            timeout=self.timeout,
            deadline=deadline,
            max_body=MAX_ANSWER,
        )

    def _error(self, what: str, attempts: int) -> ReloadError:
        tried = f" ({attempts} attempts)" if attempts > 1 else ""
        return ReloadError(f"webhook {what}{tried}", target=self.name, unit=self.unit)


# ---- the event --------------------------------------------------------------------------------------------


def _iso(when: datetime) -> str:
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_body(policy: str, key_id: str, expires_at: datetime | None, published_at: datetime) -> bytes:
    """The event's JSON body (minified: the bytes signed are the bytes sent). Never key material: every string
    passes the redactor, so a value shaped like a key could not be sent even if one were passed here."""
    payload: dict[str, Any] = {
        "type": EVENT_TYPE,
        "timestamp": _iso(published_at),
        "data": {
            "policy": policy,
            "key_id": key_id,
            "expires_at": _iso(expires_at) if expires_at is not None else None,
            "published_at": _iso(published_at),
        },
    }
    return json.dumps(redact_value(payload), separators=(",", ":")).encode()


def message_id(policy: str, key_id: str, unit: str) -> str:
    """``webhook-id``: the same for every send of one key's event to one receiver (the receivers' dedup key)."""
    digest = hashlib.sha256(json.dumps([policy, key_id, unit]).encode()).hexdigest()
    return f"msg_{digest[:32]}"


# ---- failures and retries -----------------------------------------------------------------------------------


def _failure(exc: BaseException) -> str:
    """The short name of a request that got no answer (the pickup checks' words)."""
    if isinstance(exc, httpio.DeadlineExceeded):
        return "DeadlineExceeded"
    if isinstance(exc, u3.NewConnectionError | ConnectionRefusedError):
        return "ConnectError"
    if isinstance(exc, u3.ConnectTimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, u3.TimeoutError | TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, u3.SSLError | ssl.SSLError):
        return "TLSError"
    if isinstance(exc, u3.ProtocolError):
        return "RemoteProtocolError"
    return type(exc).__name__


def _retryable(exc: BaseException) -> bool:
    """A refused, reset or dropped connection may work on the next attempt; a TLS failure will not."""
    if isinstance(exc, u3.SSLError | ssl.SSLError):
        return False
    return isinstance(exc, u3.NewConnectionError | u3.ProtocolError | ConnectionError)


def _hint(status: int) -> str:
    if 300 <= status < 400:
        return " (a redirect, not followed: configure the URL it points to)"
    if status in (401, 403):
        return " (check that the receiver expects this signing secret)"
    if status == 410:
        return " (Gone: the receiver no longer wants these events; remove this reload target)"
    return ""


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, BACKOFF_MAX)
    return _rng.uniform(0.0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)))


# ---- opening ------------------------------------------------------------------------------------------------


def _signing_key(config: ReloadConfig, policy: str) -> bytes:
    """The secret's bytes, read from its env var and checked; the value is pinned for redaction before any
    check. Raises ConfigError naming the field and the env var, never the value."""
    env = config.secret.env
    path = f"reload[webhook {display_url(config.url)}].secret.env"
    where = f"(policy {policy!r})"
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        raise ConfigError(
            [
                ConfigIssue(
                    path,
                    f"env var {env} is not set or empty {where}: set it to the receiver's signing "
                    "secret, whsec_ followed by base64",
                )
            ]
        )
    SECRETS.pin(raw)
    value = raw.strip()
    encoded = value.removeprefix(SECRET_PREFIX)
    SECRETS.pin(encoded)
    if not value.startswith(SECRET_PREFIX):
        raise ConfigError(
            [
                ConfigIssue(
                    path,
                    f"env var {env} does not hold a Standard Webhooks secret {where}: expected "
                    f"{SECRET_PREFIX} followed by base64",
                )
            ]
        )
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            [
                ConfigIssue(
                    path,
                    f"env var {env} does not hold a Standard Webhooks secret {where}: what follows "
                    f"{SECRET_PREFIX} is not base64",
                )
            ]
        ) from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise ConfigError(
            [
                ConfigIssue(
                    path,
                    f"env var {env} holds a secret of {len(key)} bytes {where}: Standard Webhooks "
                    f"secrets are {low} to {high} random bytes",
                )
            ]
        )
    return key


def _check_ca_bundle(config: ReloadConfig) -> None:
    if config.ca_bundle is None:
        return
    try:
        ssl.create_default_context(cafile=config.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    f"reload[webhook {display_url(config.url)}].ca_bundle",
                    f"cannot load the CA bundle {config.ca_bundle!r}: {type(exc).__name__}",
                )
            ]
        ) from None


def open_target(config: BaseModel, context: ReloadContext) -> WebhookTarget:
    """A :class:`WebhookTarget` for ``config``.

    Raises ConfigError (the secret's env var is missing or malformed, the CA bundle cannot be loaded),
    MissingExtraError (the ``standardwebhooks`` library is not installed).
    """
    cfg = config if isinstance(config, ReloadConfig) else ReloadConfig.model_validate(config.model_dump())
    try:
        from standardwebhooks import Webhook
    except ImportError:
        raise MissingExtraError("webhook", "standardwebhooks", package="standardwebhooks") from None
    key = _signing_key(cfg, context.policy)
    _check_ca_bundle(cfg)
    return WebhookTarget(cfg, context, Webhook(key))
