"""A local Azure Key Vault (secrets only) that the real ``SecretClient`` talks to over HTTPS.

No Key Vault emulator can be installed here, so the project keeps this small over-the-wire double. It
speaks the parts of the Key Vault secrets REST API that rotator and its tests use, the way the service does:

- ``PUT /secrets/{name}`` (new version, becomes latest), ``GET /secrets/{name}/`` (latest) and
  ``GET /secrets/{name}/{version}``, ``GET /secrets/{name}/versions`` (paged with ``nextLink``, items in
  version-id order like the service, not in creation order), ``PATCH /secrets/{name}/{version}``,
  ``DELETE /secrets/{name}`` (soft delete), ``GET|DELETE /deletedsecrets/{name}`` (answered at once; DELETE
  purges) and ``POST /deletedsecrets/{name}/recover``;
- HTTPS only, with a throwaway certificate for 127.0.0.1 made by ``trustme`` when the server starts;
- the bearer challenge: a request without ``Authorization`` gets 401 with ``WWW-Authenticate``; a wrong
  token gets 401 too;
- ``api-version`` checking: missing or unknown gives 400 ``BadParameter``;
- versions with ``tags`` (at most 15), ``contentType`` and ``attributes`` (``enabled``, ``nbf``, ``exp``,
  ``created``/``updated`` in whole unix seconds, like the service); reading a disabled version (or the latest
  one when it is disabled) gives 403 ``Forbidden`` / innererror ``SecretDisabled``;
- writing a soft-deleted name gives 409 ``Conflict`` / innererror ``ObjectIsDeletedButRecoverable``;
- names are case-insensitive, as the service's are: "Objects are uniquely identified within Key Vault using
  a case-insensitive identifier ... [identifiers] should always be compared as case-insensitive strings"
  (https://learn.microsoft.com/azure/key-vault/about-keys-secrets-and-certificates#object-identifiers).
  ``momento-key`` and ``Momento-Key`` are one secret, which keeps the case it was created with;
- every ``PUT`` makes a new version, a repeated or retried one too: "If the named secret already exists,
  Azure Key Vault creates a new version of that secret"
  (https://learn.microsoft.com/rest/api/keyvault/secrets/set-secret/set-secret). :meth:`KeyVaultServer.version_count`
  counts them. Key Vault cannot delete a version, and cannot back up a secret with more than 500 of them
  (https://learn.microsoft.com/azure/key-vault/general/backup#limitations);
- injectable faults: :meth:`KeyVaultServer.fail_next` queues statuses (429 with ``Retry-After``, 500...)
  for the next matching requests, either instead of carrying the request out or, with ``after=True``, after
  carrying it out (a response lost on the way back, as a gateway timeout or a reset connection loses it: the
  version exists although the client saw an error, and a retried ``PUT`` makes a second one); status ``0``
  closes the connection without an answer (a reset);
  :attr:`KeyVaultServer.fail_rate` fails a seeded random share of them, and :meth:`KeyVaultServer.deny`
  answers 403 for a permission (``get``, ``list``, ``set``...);
- :attr:`KeyVaultServer.before` runs a hook before an authenticated request is served, to put a concurrent
  writer between two of the client's requests deterministically;
- a quota mode, off by default (:meth:`KeyVaultServer.enforce_quotas`, or ``quota_scale=`` when constructing):
  the vault's transaction limits per 10 seconds (:data:`KV_QUOTAS`) over sliding windows
  (:class:`tests.servers.fault_proxy.QuotaBook`), a transaction beyond one answered 429 ``Throttled`` with
  ``Retry-After``, and served and throttled counts per quota in :attr:`KeyVaultServer.quotas`.

Faults and denials apply only to authenticated requests, never to the challenge round trip. Everything the
server saw is in :attr:`KeyVaultServer.requests` as ``(method, path, status)``.
"""

from __future__ import annotations

import base64
import json
import random
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import trustme

from tests.servers.fault_proxy import Quota, QuotaBook, Refusal
from tests.servers.loopback import serve, shut

API_VERSIONS = frozenset({"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"})
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_TAGS = 15
MAX_VALUE_BYTES = 25 * 1024

#: which Key Vault permission (access-policy name) each operation needs
PERMISSIONS = {
    "set_secret": "set",
    "get_secret": "get",
    "list_secret_versions": "list",
    "update_secret": "set",
    "delete_secret": "delete",
    "get_deleted_secret": "get",
    "purge_deleted_secret": "purge",
    "recover_deleted_secret": "recover",
}
RBAC_ACTIONS = {
    "set_secret": "Microsoft.KeyVault/vaults/secrets/setSecret/action",
    "get_secret": "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "list_secret_versions": "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    "update_secret": "Microsoft.KeyVault/vaults/secrets/update/action",
    "delete_secret": "Microsoft.KeyVault/vaults/secrets/delete",
    "get_deleted_secret": "Microsoft.KeyVault/vaults/deletedSecrets/read",
    "purge_deleted_secret": "Microsoft.KeyVault/vaults/secrets/purge/action",
    "recover_deleted_secret": "Microsoft.KeyVault/vaults/secrets/recover/action",
}


_LIMITS_PAGE = "Azure Key Vault service limits, https://learn.microsoft.com/azure/key-vault/general/service-limits"

#: The vault's secret transaction limits: "Secrets, managed storage account keys, and vault transactions", "Maximum
#: transactions allowed in 10 seconds, per vault per region": "Secret CREATE secret | 300" and "All other
#: transactions | 4,000" (Azure Key Vault service limits,
#: https://learn.microsoft.com/azure/key-vault/general/service-limits). One server is one vault in one region, so
#: the scope key is the vault URL. Not modelled: the subscription-wide limit, "five times per key vault limit" (same
#: page), which only binds several vaults of one subscription; and the key transaction limits (no keys here).
KV_QUOTAS: tuple[Quota, ...] = (
    # every PUT /secrets/{name} counts as a CREATE: it creates a version (a secret's first or a new one) and the
    # page does not tell the two apart; the stricter reading
    Quota("SecretCreatePer10Seconds", 300, 10.0, "vault", _LIMITS_PAGE, "every set_secret (PUT) counts as CREATE"),
    Quota("SecretOtherPer10Seconds", 4_000, 10.0, "vault", _LIMITS_PAGE),
)


def _throttled(refusal: Refusal, *, retry_after: bool) -> _Reply:
    """A transaction beyond a limit: "When a service threshold is exceeded, Key Vault limits any further requests
    from that client, returns HTTP status code 429 (Too many requests), and the request fails" (Azure Key Vault
    throttling guidance, https://learn.microsoft.com/azure/key-vault/general/overview-throttling).

    The body is the one the service sends, which no page documents: ``{"error": {"code": "Throttled", "message":
    "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}}``,
    as captured from a real vault in https://github.com/vcsjones/AzureSignTool/issues/219 (2023-12-04).

    ``Retry-After`` (whole seconds until the window frees a place, rounded up) is sent unless ``retry_after`` is
    false. The Key Vault pages do not document the header (the throttling guidance prescribes exponential backoff,
    1, 2, 4, 8, 16 seconds) and the response captured in that issue has none, so a client must cope with both;
    azure-core's ``RetryPolicy`` waits for ``Retry-After`` when there is one and backs off exponentially when not.
    """
    headers = {"Retry-After": refusal.retry_after_header} if retry_after else {}
    return _error(
        429,
        "Throttled",
        "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
        **headers,
    )


class StaticTokenCredential:
    """A credential that always hands out the same bearer token (both azure-core token protocols)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.requests.append((scopes, dict(kwargs)))
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        self.requests.append((scopes, dict(options or {})))
        return AccessTokenInfo(self.token, int(time.time()) + 3600)

    def close(self) -> None:
        pass


@dataclass
class Version:
    """One stored version."""

    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int
    seq: int


@dataclass
class Secret:
    name: str
    versions: dict[str, Version] = field(default_factory=dict)

    def latest(self) -> Version | None:
        return max(self.versions.values(), key=lambda v: v.seq, default=None)


@dataclass
class DeletedSecret:
    secret: Secret
    deleted_date: int
    scheduled_purge_date: int


@dataclass
class Fault:
    """A response to give instead of the real one, for the next request matching ``method``/``op``."""

    status: int
    retry_after: str | None = None
    method: str | None = None
    op: str | None = None
    code: str | None = None
    after: bool = False  # carry the request out first, then answer the fault (the response was lost)

    def matches(self, method: str, op: str) -> bool:
        return (self.method is None or self.method == method) and (self.op is None or self.op == op)


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(status: int, code: str, message: str, inner: str | None = None, **headers: str) -> _Reply:
    err: dict[str, Any] = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return _Reply(status, {"error": err}, headers)


class KeyVaultServer:
    """The server. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    ``page_size`` caps every version-list page (the service's default and maximum is 25).
    ``missing_versions_status`` is what listing the versions of a secret that does not exist answers:
    200 with an empty list, or 404 ``SecretNotFound``.
    """

    def __init__(
        self,
        *,
        page_size: int = 25,
        token: str | None = None,
        missing_versions_status: int = 200,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        quota_scale: float | None = None,
        quota_clock: Callable[[], float] | None = None,
        quota_retry_after: bool = True,
    ) -> None:
        self.page_size = page_size
        self.token = token or f"test-token-{uuid.uuid4().hex}"
        self.missing_versions_status = missing_versions_status
        self.clock = clock
        self.fail_rate = 0.0
        self.fail_status = 503
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._seq = 0
        self.secrets: dict[str, Secret] = {}
        self.deleted: dict[str, DeletedSecret] = {}
        self.faults: deque[Fault] = deque()
        self.denied: dict[str, str] = {}  # permission -> style ("rbac" | "access-policy" | "firewall")
        self.requests: list[tuple[str, str, int]] = []
        #: called as ``before(method, op, path)`` before an authenticated request is served (outside the lock),
        #: to interleave a concurrent writer deterministically
        self.before: Callable[[str, str, str], None] | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_path = ""
        self.url = ""
        #: the quota mode's book (windows and counters), or ``None`` while the mode is off (the default)
        self.quotas: QuotaBook | None = None
        self.quota_retry_after = quota_retry_after
        self._quota_setup = (quota_scale, quota_clock, quota_retry_after)
        if quota_scale is not None:
            self.enforce_quotas(scale=quota_scale, clock=quota_clock, retry_after=quota_retry_after)

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> KeyVaultServer:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self._tmp = tempfile.TemporaryDirectory(prefix="kv-test-ca-")
        ca_file = Path(self._tmp.name) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        self.ca_path = str(ca_file)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)

        server = self

        class Handler(_Handler):
            kv = server

        self._httpd, self._thread = serve(Handler, "kv-test-server", tls=ctx)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}/"
        return self

    def stop(self) -> None:
        shut(self._httpd, self._thread)
        self._httpd, self._thread = None, None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> KeyVaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test controls -----------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: float | int | str | None = None,
        method: str | None = None,
        op: str | None = None,
        code: str | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next ``times`` authenticated requests (matching ``method``/``op``) with ``status``.

        With ``after``, each request is carried out first and its answer replaced by the fault: the change is
        made, the client sees an error (and may send the request again).
        """
        ra = None if retry_after is None else str(retry_after)
        with self._lock:
            for _ in range(times):
                self.faults.append(Fault(status, ra, method, op, code, after))

    def enforce_quotas(
        self,
        *,
        scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        limits: dict[str, int] | None = None,
        retry_after: bool = True,
    ) -> QuotaBook:
        """Refuse transactions beyond the vault's documented limits (:data:`KV_QUOTAS`) with 429 ``Throttled``.

        ``scale`` multiplies every rate (``scale=10``: ten times the documented rate, each 10-second window one
        second long), ``limits`` overrides limits by quota name, ``clock`` replaces ``time.monotonic`` (the
        server's own ``clock``, the wall clock of ``created``/``updated``, is not used), ``retry_after=False``
        leaves ``Retry-After`` out; see :class:`~tests.servers.fault_proxy.QuotaBook`. Only authenticated requests
        with a valid ``api-version`` count (the bearer challenge does not); quotas are checked before injected
        faults and denials, and a refused transaction is not carried out and uses no quota.
        """
        book = QuotaBook(KV_QUOTAS, scale=scale, clock=clock, limits=limits)
        with self._lock:
            self.quotas = book
            self.quota_retry_after = retry_after
        return book

    def quotas_off(self) -> None:
        """Leave quota mode (the book, with its counters, is dropped)."""
        with self._lock:
            self.quotas = None

    def deny(self, permission: str, *, style: str = "rbac") -> None:
        """Answer 403 to every operation needing ``permission`` (``get``, ``list``, ``set``, ``delete``...).

        ``style`` picks the body: ``rbac`` (ForbiddenByRbac), ``access-policy`` (AccessDenied) or
        ``firewall`` (ForbiddenByFirewall).
        """
        with self._lock:
            self.denied[permission] = style

    def allow_all(self) -> None:
        with self._lock:
            self.denied.clear()

    def reset(self) -> None:
        """Forget every secret, fault, denial and logged request."""
        with self._lock:
            self.secrets.clear()
            self.deleted.clear()
            self.faults.clear()
            self.denied.clear()
            self.requests.clear()
            self.fail_rate = 0.0
            self.before = None
            # quota mode as constructed: off, or on with fresh windows and counters
            scale, clock, retry_after = self._quota_setup
            self.quotas = None if scale is None else QuotaBook(KV_QUOTAS, scale=scale, clock=clock)
            self.quota_retry_after = retry_after

    def versions(self, name: str) -> list[Version]:
        """The versions of ``name`` (live or soft-deleted, any case), oldest first."""
        key = name.lower()
        with self._lock:
            secret = self.secrets.get(key) or (self.deleted[key].secret if key in self.deleted else None)
            return sorted(secret.versions.values(), key=lambda v: v.seq) if secret else []

    def version_count(self, name: str) -> int:
        """How many versions ``name`` has: every ``PUT`` adds one and nothing takes one away."""
        return len(self.versions(name))

    def soft_delete(self, name: str) -> None:
        key = name.lower()
        with self._lock:
            secret = self.secrets.pop(key)
            now = int(self.clock())
            self.deleted[key] = DeletedSecret(secret, now, now + 90 * 86400)

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        """How many requests (challenges included) matched."""
        with self._lock:
            return sum(1 for m, p, _ in self.requests if (method is None or m == method) and p.startswith(path_prefix))

    # ---- the service -------------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        op, parts = _operation(method, path)
        try:
            auth = headers.get("Authorization")
            if auth != f"Bearer {self.token}":
                raise _error(
                    401,
                    "Unauthorized",
                    "AKV10000: Request is missing a Bearer or PoP token."
                    if not auth
                    else "AKV10032: Invalid issuer or token.",
                    **{
                        "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                        'resource="https://vault.azure.net"'
                    },
                )
            version = _first(query, "api-version")
            if version is None:
                raise _error(400, "BadParameter", "The 'api-version' query parameter is required.")
            if version not in API_VERSIONS:
                raise _error(
                    400,
                    "BadParameter",
                    f"The specified version ({version}) is not recognized. "
                    "Consider using the latest supported version (2026-04-01).",
                )
            hook = self.before
            if hook is not None and op != "unknown":
                hook(method, op, path)
            with self._lock:
                book = self.quotas
                if book is not None and op != "unknown":
                    quota = "SecretCreatePer10Seconds" if op == "set_secret" else "SecretOtherPer10Seconds"
                    refusal = book.admit([(quota, self.url)])
                    if refusal is not None:
                        raise _throttled(refusal, retry_after=self.quota_retry_after)
                late = self._maybe_fail(method, op)
                self._check_permission(op)
                result = self._dispatch(op, parts, query, headers, body)
                if late is not None:
                    self._raise_fault(late.status, late.retry_after, late.code)
                return result
        except _Reply as reply:
            return reply.status, reply.body, reply.headers

    def _maybe_fail(self, method: str, op: str) -> Fault | None:
        """Raise the first queued fault for this request, or return it when it applies after the request."""
        for fault in list(self.faults):
            if fault.matches(method, op):
                self.faults.remove(fault)
                if fault.after:
                    return fault
                self._raise_fault(fault.status, fault.retry_after, fault.code)
        if self.fail_rate and self._random.random() < self.fail_rate:
            self._raise_fault(self.fail_status, "0" if self.fail_status == 429 else None, None)
        return None

    @staticmethod
    def _raise_fault(status: int, retry_after: str | None, code: str | None) -> None:
        if status == 0:
            raise _Reply(0)  # no answer at all: the handler closes the connection
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if status == 429:
            raise _error(
                429,
                code or "Throttled",
                "Request was not processed because too many requests were received. "
                "Reason: VaultRequestTypeLimitReached",
                **headers,
            )
        if status == 403:
            raise _error(403, code or "Forbidden", "Access denied (injected).", "AccessDenied", **headers)
        raise _error(status, code or "InternalServerError", f"The service returned {status} (injected).", **headers)

    def _check_permission(self, op: str) -> None:
        perm = PERMISSIONS.get(op)
        style = self.denied.get(perm or "")
        if style is None:
            return
        if style == "firewall":
            raise _error(
                403,
                "Forbidden",
                "Client address is not authorized and caller is not a trusted service.\r\n"
                "Client address: 203.0.113.7\r\nCaller: appid=test;oid=test",
                "ForbiddenByFirewall",
            )
        if style == "access-policy":
            raise _error(
                403,
                "Forbidden",
                f"The user, group or application 'appid=test;oid=test' does not have secrets {perm} permission "
                "on key vault 'kv-test;location=westeurope'. For help resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125287",
                "AccessDenied",
            )
        raise _error(
            403,
            "Forbidden",
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or "
            "role definitions were changed recently, please observe propagation time.\r\nCaller: appid=test\r\n"
            f"Action: '{RBAC_ACTIONS.get(op, op)}'\r\nResource: 'kv-test'\r\nAssignment: (not found)\r\n",
            "ForbiddenByRbac",
        )

    def _dispatch(
        self, op: str, parts: list[str], query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        host = headers.get("Host") or "127.0.0.1"
        base = f"https://{host}"
        given = parts[1] if len(parts) > 1 else ""
        if op != "unknown" and not NAME_RE.match(given):
            raise _error(
                400,
                "BadParameter",
                f"The request URI contains an invalid name: {given}. Follow this link for more information on "
                "naming objects: https://aka.ms/keyvault-naming",
            )
        # names are case-insensitive: secrets are filed under the lower-case name and answer with the name
        # they were created with
        name = given.lower()
        if op == "set_secret":
            return 200, self._set(base, name, given, _json(body)), {}
        if op == "get_secret":
            secret = self._live(name)
            v = self._version(secret, parts[2] if len(parts) > 2 else "")
            if not v.enabled:
                raise _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
            return 200, _bundle(base, secret.name, v, value=True), {}
        if op == "list_secret_versions":
            return 200, self._list(base, name, query), {}
        if op == "update_secret":
            secret = self._live(name)
            v = self._version(secret, parts[2] if len(parts) > 2 else "")
            self._update(v, _json(body))
            return 200, _bundle(base, secret.name, v, value=False), {}
        if op == "delete_secret":
            secret = self._live(name)
            now = int(self.clock())
            self.deleted[name] = DeletedSecret(secret, now, now + 90 * 86400)
            del self.secrets[name]
            return 200, self._deleted_bundle(base, self.deleted[name]), {}
        if op == "get_deleted_secret":
            if name not in self.deleted:
                raise _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            return 200, self._deleted_bundle(base, self.deleted[name]), {}
        if op == "purge_deleted_secret":
            if name not in self.deleted:
                raise _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            del self.deleted[name]
            return 204, None, {}
        if op == "recover_deleted_secret":
            if name not in self.deleted:
                raise _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            secret = self.deleted.pop(name).secret
            self.secrets[name] = secret
            latest = secret.latest()
            assert latest is not None
            return 200, _bundle(base, secret.name, latest, value=False), {}
        raise _error(400, "BadParameter", "The request URI is not recognized.")

    def _live(self, name: str) -> Secret:
        secret = self.secrets.get(name.lower())
        if secret is None:
            raise _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted this "
                "secret you may be able to recover it using the correct recovery command. For help resolving "
                "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        return secret

    def _version(self, secret: Secret, version: str) -> Version:
        v = secret.latest() if not version else secret.versions.get(version)
        if v is None:
            raise _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {secret.name}/{version} was not found in this key vault. For help "
                "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        return v

    def _set(self, base: str, name: str, given: str, body: dict[str, Any]) -> dict[str, Any]:
        if name in self.deleted:
            raise _error(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
                "in this state, the secret can only be recovered or purged.",
                "ObjectIsDeletedButRecoverable",
            )
        value = body.get("value")
        if not isinstance(value, str):
            raise _error(400, "BadParameter", "Property 'value' is required.")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise _error(400, "BadParameter", "Secret value is too large (max 25 KB).")
        tags = body.get("tags")
        if tags is not None and len(tags) > MAX_TAGS:
            raise _error(400, "BadParameter", f"The number of tags exceeds the maximum of {MAX_TAGS}.")
        attrs = body.get("attributes") or {}
        now = int(self.clock())
        self._seq += 1
        v = Version(
            version=uuid.uuid4().hex,
            value=value,
            content_type=body.get("contentType"),
            tags=dict(tags) if tags is not None else None,
            enabled=attrs.get("enabled", True) is not False,
            nbf=attrs.get("nbf"),
            exp=attrs.get("exp"),
            created=now,
            updated=now,
            seq=self._seq,
        )
        secret = self.secrets.setdefault(name, Secret(given))
        secret.versions[v.version] = v
        return _bundle(base, secret.name, v, value=True)

    def _update(self, v: Version, body: dict[str, Any]) -> None:
        attrs = body.get("attributes") or {}
        if "tags" in body and body["tags"] is not None:
            if len(body["tags"]) > MAX_TAGS:
                raise _error(400, "BadParameter", f"The number of tags exceeds the maximum of {MAX_TAGS}.")
            v.tags = dict(body["tags"])
        if body.get("contentType") is not None:
            v.content_type = body["contentType"]
        if attrs.get("enabled") is not None:
            v.enabled = bool(attrs["enabled"])
        for key in ("nbf", "exp"):
            if attrs.get(key) is not None:
                setattr(v, key, attrs[key])
        v.updated = int(self.clock())

    def _list(self, base: str, name: str, query: dict[str, list[str]]) -> dict[str, Any]:
        secret = self.secrets.get(name)
        if secret is not None:
            name = secret.name
        if secret is None:
            if self.missing_versions_status == 404:
                self._live(name)
            return {"value": [], "nextLink": None}
        size = min(int(_first(query, "maxresults") or 25), 25, self.page_size)
        token = _first(query, "$skiptoken")
        start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        items = sorted(secret.versions.values(), key=lambda v: v.version)  # hash order, as the service does
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            skip = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            next_link = f"{base}/secrets/{name}/versions?api-version=2026-04-01&$skiptoken={skip}&maxresults={size}"
        return {"value": [_item(base, name, v) for v in page], "nextLink": next_link}

    def _deleted_bundle(self, base: str, d: DeletedSecret) -> dict[str, Any]:
        latest = d.secret.latest()
        assert latest is not None
        out = _bundle(base, d.secret.name, latest, value=False)
        out.update(
            recoveryId=f"{base}/deletedsecrets/{d.secret.name}",
            deletedDate=d.deleted_date,
            scheduledPurgeDate=d.scheduled_purge_date,
        )
        return out


def _operation(method: str, path: str) -> tuple[str, list[str]]:
    parts = [unquote(p) for p in path.split("/")]
    parts = parts[1:] if parts and parts[0] == "" else parts
    if parts and parts[-1] == "" and len(parts) > 2:
        parts = parts[:-1]  # "/secrets/name/" is the latest version
    head = parts[0] if parts else ""
    if head == "secrets" and len(parts) >= 2:
        if method == "PUT" and len(parts) == 2:
            return "set_secret", parts
        if method == "GET" and len(parts) == 3 and parts[2] == "versions":
            return "list_secret_versions", parts
        if method == "GET":
            return "get_secret", parts
        if method == "PATCH":
            return "update_secret", parts
        if method == "DELETE" and len(parts) == 2:
            return "delete_secret", parts
    if head == "deletedsecrets" and len(parts) >= 2:
        if method == "GET" and len(parts) == 2:
            return "get_deleted_secret", parts
        if method == "DELETE" and len(parts) == 2:
            return "purge_deleted_secret", parts
        if method == "POST" and len(parts) == 3 and parts[2] == "recover":
            return "recover_deleted_secret", parts
    return "unknown", parts


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise _error(400, "BadParameter", "The request body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise _error(400, "BadParameter", "The request body must be a JSON object.")
    return data


def _attributes(v: Version) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    }
    if v.nbf is not None:
        attrs["nbf"] = v.nbf
    if v.exp is not None:
        attrs["exp"] = v.exp
    return attrs


def _item(base: str, name: str, v: Version) -> dict[str, Any]:
    item: dict[str, Any] = {"id": f"{base}/secrets/{name}/{v.version}", "attributes": _attributes(v)}
    if v.tags is not None:
        item["tags"] = dict(v.tags)
    if v.content_type is not None:
        item["contentType"] = v.content_type
    return item


def _bundle(base: str, name: str, v: Version, *, value: bool) -> dict[str, Any]:
    out = _item(base, name, v)
    if value:
        out["value"] = v.value
    return out


class _Handler(BaseHTTPRequestHandler):
    kv: KeyVaultServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        status, payload, headers = self.kv.handle(self.command, split.path, query, self.headers, body)
        with self.kv._lock:
            self.kv.requests.append((self.command, split.path, status))
        if status == 0:  # an injected reset: close without answering
            self.close_connection = True
            return
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-keyvault-service-version", "1.9.0.0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _serve


@contextmanager
def running_keyvault(**kwargs: Any) -> Iterator[KeyVaultServer]:
    """Start a :class:`KeyVaultServer` for the duration of the block."""
    server = KeyVaultServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
