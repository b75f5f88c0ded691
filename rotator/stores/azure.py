"""Azure Key Vault secrets as a rotator store (extra ``momento-rotator[azure]``).

How rotator maps its store contract onto Key Vault:

- **A key is a version.** :meth:`AzureKeyVaultStore.stage` calls ``set_secret``, which creates a new version
  carrying ``contentType`` (``VersionMeta.content_type``), ``exp`` (the key's expiry, informational: Key
  Vault still serves expired versions) and the tags ``rotator-key-id``, ``rotator-policy``,
  ``managed-by: rotator`` and ``rotator-tracks`` (plus the target's own ``tags``). The tags let rotator tell
  which key a version holds without reading its value.
- **Bounded versions.** Key Vault cannot delete a version ("It is not possible to delete previous versions",
  and a secret with more than 500 versions cannot be backed up:
  https://learn.microsoft.com/azure/key-vault/general/backup#limitations), and lists versions 25 a page in no
  useful order. So :meth:`~AzureKeyVaultStore.inspect` does not list them: one ``GET`` of the latest version
  says the current key (``rotator-key-id``) and the older versions rotator still tracks (``rotator-tracks``:
  ``<version>=<key id>,...``, the previous key until it is retired). A new version tracks the one it replaces
  and what that one tracked; retiring a key drops it from the current version's tag. The versions are listed
  only as a fallback (a latest version that is disabled, foreign, written before this tracking, or tracking
  more than a tag holds). Every ``PUT`` makes a version, so a ``PUT`` is never resent blindly: see
  :meth:`AzureKeyVaultStore._write`.
- **Names are case-insensitive** (https://learn.microsoft.com/azure/key-vault/about-keys-secrets-and-certificates#object-identifiers),
  so the store's per-secret knowledge is keyed by the lower-case name.
- **No staging.** A new Key Vault version is what consumers reading "latest" get at once, so ``stage``
  publishes and :meth:`~AzureKeyVaultStore.promote` usually only checks that the key's version is still the
  latest. When it is not (two passes raced, or an older key is promoted back), promote writes that key's
  value again as a new version, the only way to make it latest in Key Vault.
- **Current** is the latest version (what ``GET /secrets/{name}/`` serves) when it is enabled. When the
  latest version is disabled, consumers reading "latest" get 403, so nothing is current and the planner will
  publish again. ``current_since`` is the latest version's
  ``created``; ``foreign`` means the current version has no ``rotator-key-id`` tag.
- **Retire** sets ``enabled=false`` on the old key's versions (they can no longer be read, an operator can
  still see and re-enable them); nothing is ever deleted or purged.
- **Soft delete.** Writing a name that is deleted but recoverable is a 409; rotator reports a
  :class:`~rotator.errors.StoreConflict` asking to recover or purge it, and :meth:`inspect` says so before a
  key is created for it.

API calls (each HTTP attempt is one :func:`~rotator.observability.record_call` with service
``azure-keyvault``, counted by a pipeline policy placed after azure-core's retry policy and before the
Key Vault challenge policy: retries count, the 401 bearer-challenge round trip does not). The store keeps
a short-lived per-process copy of what it knows of each secret (``metadata_cache_seconds``), refreshed by
every :meth:`inspect` and updated by its own writes, so a rotation costs: inspect 1 ``GET`` however many
versions (plus 1 when the secret does not exist yet, to tell "never created" from "soft-deleted"), stage 1
(the ``set_secret``), read-back 1, promote 0, and later inspect 1 and retire 1 ``PATCH`` per enabled version
of the old key plus 1 ``PATCH`` of the current version's ``rotator-tracks`` tag: 3 + 3. Without a recent
inspect in this process, stage, promote and retire look first (one ``GET``). A steady-state pass makes no
call at all (the engine does not read the stores then).

Request quotas (issue 27): the same policy charges each attempt against the process's
:class:`rotator.quotas.RateLimits` before it is sent, in the vault's scope (:data:`KEYVAULT_QUOTAS`: a
``set_secret`` is a CREATE, everything else one of "all other transactions"), and reports a 429 with its
``Retry-After``: the vault's limit is cut and every worker pauses, not only the refused one. The store's
``quotas:`` overrides the documented limits.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rotator.errors import (
    ConfigError,
    MissingExtraError,
    StoreConflict,
    StoreError,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.model import SecretState, SecretText, StoredVersion
from rotator.observability import get_logger, record_call
from rotator.quotas import Charge, Quota, RateLimits, apply_overrides, check_overrides, retry_after_seconds
from rotator.stores.base import (
    ANY_CURRENT,
    POOL_CONNECTIONS,
    BaseTargetOptions,
    Expect,
    SecretStore,
    StoreBase,
    StoreCapabilities,
    StoreContext,
    StoreSpec,
    StoreType,
    TargetRef,
    VersionMeta,
)

SERVICE = "azure-keyvault"
KEY_ID_TAG = "rotator-key-id"
POLICY_TAG = "rotator-policy"
MANAGED_BY_TAG = "managed-by"
MANAGED_BY = "rotator"
#: on the version rotator writes: the other versions it still tracks (``<version>=<key id>,...``, newest first)
TRACKS_TAG = "rotator-tracks"
NOTHING_TRACKED = "-"
TOO_MANY_TRACKED = "*"  # more than a tag value holds: the versions are listed instead
RESERVED_TAGS = frozenset({KEY_ID_TAG, POLICY_TAG, MANAGED_BY_TAG, TRACKS_TAG})
MAX_TAGS = 15  # Key Vault's limit per version
MAX_TAG_VALUE = 256  # characters in a tag value
MAX_EXTRA_TAGS = MAX_TAGS - len(RESERVED_TAGS)

#: the Key Vault DNS suffixes of the Azure clouds (public, China, US Government, Germany)
VAULT_DOMAINS = ("vault.azure.net", "vault.azure.cn", "vault.usgovcloudapi.net", "vault.microsoftazure.de")
_VAULT_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]\Z")
_SECRET_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}\Z")

#: client options rotator sets itself (the retry and call-accounting policies) or that would log secret values
_RESERVED_CLIENT_OPTIONS = frozenset(
    {"credential", "vault_url", "policies", "per_retry_policies", "retry_policy", "logging_enable", "api_version"}
)

_LIMITS_PAGE = "Azure Key Vault service limits, https://learn.microsoft.com/azure/key-vault/general/service-limits"
#: The vault's secret transaction limits, kept on the client side (rotator/quotas.py; the store's ``quotas:``
#: overrides them): "Secrets, managed storage account keys, and vault transactions", "Maximum transactions allowed
#: in 10 seconds, per vault per region": "Secret CREATE secret | 300" and "All other transactions | 4,000" (the
#: limits page; the numbers of tests/servers/azure_keyvault.py's KV_QUOTAS). One scope is one vault (its host
#: name). Over a limit: 429 ``Throttled``, maybe with ``Retry-After``. Not kept: the subscription-wide limit, "five
#: times per key vault limit" (same page), which binds several vaults of one subscription only.
KEYVAULT_QUOTAS: tuple[Quota, ...] = (
    # every PUT /secrets/{name} is a CREATE: it creates a version, and the page does not tell a secret's first
    # version from a new one (the stricter reading)
    Quota("keyvault", "create", 300, 10.0, "vault", _LIMITS_PAGE),
    Quota("keyvault", "other", 4_000, 10.0, "vault", _LIMITS_PAGE),
)
#: what one publish costs on the due pass (see :meth:`AzureKeyVaultStore.publish_cost`)
PUBLISH_CALLS: tuple[tuple[str, int], ...] = (("create", 1), ("other", 3))

CredentialKind = Literal["default", "environment", "managed_identity", "workload_identity", "azure_cli"]

T = TypeVar("T")


# ---- config ------------------------------------------------------------------------------------------------


def suggest_secret_name(name: str) -> str:
    """A valid Key Vault secret name close to ``name`` (``/``, ``_``, ``.`` and the like become ``-``)."""
    s = re.sub(r"[^0-9A-Za-z-]+", "-", name)
    s = re.sub(r"-{2,}", "-", s).strip("-")[:127].strip("-")
    return s or "momento-api-key"


def check_secret_name(name: str) -> str:
    """``name`` if Key Vault accepts it as a secret name; ``ValueError`` with a suggested name otherwise."""
    if _SECRET_NAME_RE.match(name):
        return name
    raise ValueError(
        f"{name!r} is not a valid Key Vault secret name: use 1-127 letters, digits and hyphens "
        f"(no '/', '_', '.' or spaces), for example {suggest_secret_name(name)!r}"
    )


def _vault_url_error(url: str, hint: str) -> ValueError:
    return ValueError(
        f"vault_url {url!r} is not a Key Vault URL ({hint}). Use the vault's 'Vault URI' from the portal, "
        "https://<vault-name>.vault.azure.net/ (or .vault.azure.cn, .vault.usgovcloudapi.net, "
        ".vault.microsoftazure.de in the other Azure clouds); for a test server or a custom host name set "
        "allow_any_vault_url: true"
    )


def check_vault_url(url: str, *, allow_any: bool = False) -> str:
    """The normalised vault URL (``https://<name>.<domain>/``), or ``ValueError`` saying what shape to use."""
    url = url.strip()
    parts = urlsplit(url)
    if not parts.scheme:
        bare = url.strip("/").lower()
        if _VAULT_NAME_RE.match(bare):
            raise _vault_url_error(url, f"did you mean 'https://{bare}.vault.azure.net/'?")
        raise _vault_url_error(url, "it has no https:// scheme")
    if parts.scheme.lower() != "https":
        raise _vault_url_error(url, f"Key Vault is only reachable over https, try 'https://{parts.netloc}/'")
    host = (parts.hostname or "").lower()
    if not host:
        raise _vault_url_error(url, "it has no host name")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise _vault_url_error(url, f"drop the query, fragment or credentials: 'https://{host}/'")
    if allow_any:
        return f"https://{parts.netloc}{parts.path.rstrip('/')}/"
    domain = next((d for d in VAULT_DOMAINS if host.endswith("." + d)), None)
    if domain is None:
        if ".vault." in host or host.endswith(".vault") or "vaultcore" in host:
            hint = "its domain is not a Key Vault domain"
        else:
            first = host.split(".")[0]
            hint = (
                f"did you mean 'https://{first}.vault.azure.net/'?"
                if _VAULT_NAME_RE.match(first)
                else "its domain is not a Key Vault domain"
            )
        raise _vault_url_error(url, hint)
    label = host[: -len(domain) - 1]
    if not _VAULT_NAME_RE.match(label) or "--" in label:
        raise _vault_url_error(
            url,
            f"{label!r} is not a vault name (3-24 letters, digits and hyphens, starting with a letter, "
            "ending with a letter or digit, no '--')",
        )
    if parts.port not in (None, 443):
        raise _vault_url_error(url, f"Key Vault listens on 443 only, try 'https://{host}/'")
    if parts.path not in ("", "/"):
        raise _vault_url_error(url, f"use the vault's base URL without a path, 'https://{host}/'")
    return f"https://{host}/"


class StoreConfig(BaseModel):
    """``stores.<name>`` for ``type: azure``.

    ``credential`` picks the azure-identity credential (``default`` = ``DefaultAzureCredential``: environment,
    workload identity, managed identity, Azure CLI...). ``client_options`` go to ``SecretClient`` as keyword
    arguments (for example ``connection_verify: /path/to/ca.pem``, ``verify_challenge_resource: false`` for a
    vault behind a custom host name, ``proxies``). Retries cover 408, 429 and 5xx and connection errors,
    with exponential backoff (``retry_backoff`` x 2^n, at most ``retry_backoff_max`` seconds) or the
    ``Retry-After`` the vault sends.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["azure"]
    allow_any_vault_url: bool = False
    vault_url: str
    credential: CredentialKind = "default"
    managed_identity_client_id: str | None = None
    client_options: dict[str, Any] = Field(default_factory=dict)
    max_retries: int = Field(default=5, ge=0, le=20)
    retry_backoff: float = Field(default=0.8, ge=0, le=60)
    retry_backoff_max: float = Field(default=60.0, ge=0, le=600)
    timeout: float = Field(default=30.0, gt=0, le=600)
    metadata_cache_seconds: float = Field(default=300.0, ge=0, le=3600)
    quotas: dict[str, str | None] = Field(
        default_factory=dict,
        description="Overrides of the vault's documented transaction limits (create 300/10s, other 4000/10s), "
        'e.g. create: "150/10s" when other clients write to the vault too; null: no limit, only refusals pace it.',
    )

    @field_validator("quotas")
    @classmethod
    def _quotas(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        return check_overrides(KEYVAULT_QUOTAS, v)

    @field_validator("vault_url")
    @classmethod
    def _vault_url(cls, v: str, info: ValidationInfo) -> str:
        return check_vault_url(v, allow_any=bool(info.data.get("allow_any_vault_url", False)))

    @field_validator("client_options")
    @classmethod
    def _client_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) & _RESERVED_CLIENT_OPTIONS)
        if bad:
            raise ValueError(
                f"client_options may not set {', '.join(bad)}: rotator sets the credential, the retry and "
                "call-accounting policies itself (use max_retries, retry_backoff, retry_backoff_max), and "
                "logging_enable would log secret values"
            )
        return v

    @model_validator(mode="after")
    def _client_id_needs_identity(self) -> StoreConfig:
        if self.managed_identity_client_id and self.credential not in (
            "default",
            "managed_identity",
            "workload_identity",
        ):
            raise ValueError(
                f"managed_identity_client_id is only used with credential default, managed_identity or "
                f"workload_identity, not {self.credential!r}"
            )
        return self


class TargetOptions(BaseTargetOptions):
    """What a target pointing at an Azure store may set.

    ``secret`` and ``endpoint_secret`` must be Key Vault secret names. ``tags`` are added to every version
    rotator writes (at most 12: Key Vault allows 15 and rotator uses 3). ``adopt: true`` lets rotator write a
    new version over a current value it did not write (otherwise staging refuses with StoreConflict).
    """

    tags: dict[str, str] = Field(default_factory=dict)
    adopt: bool = False

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        return check_secret_name(v)

    @field_validator("endpoint_secret")
    @classmethod
    def _endpoint_secret(cls, v: str | None) -> str | None:
        return None if v is None else check_secret_name(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = sorted(set(v) & RESERVED_TAGS)
        if reserved:
            raise ValueError(f"tags {', '.join(reserved)} are set by rotator itself")
        if len(v) > MAX_EXTRA_TAGS:
            raise ValueError(
                f"at most {MAX_EXTRA_TAGS} tags: Key Vault allows {MAX_TAGS} per version and rotator uses "
                f"{len(RESERVED_TAGS)} ({', '.join(sorted(RESERVED_TAGS))}); got {len(v)}"
            )
        for k, val in v.items():
            if not k or len(k) > 512:
                raise ValueError(f"tag name {k[:40]!r} must be 1-512 characters")
            if len(val) > 256:
                raise ValueError(f"tag {k!r}: values are at most 256 characters")
        return v


# ---- API-call accounting -----------------------------------------------------------------------------------


def operation_name(method: str, url: str) -> str:
    """The Key Vault operation an HTTP request performs, for :func:`record_call` (``set_secret``...)."""
    segments = [s for s in urlsplit(url).path.split("/")]
    method = method.upper()
    for i, seg in enumerate(segments):
        rest = segments[i + 1 :]
        if seg == "secrets" and rest and rest[0]:
            tail = [s for s in rest[1:] if s]
            if method == "PUT" and not tail:
                return "set_secret"
            if method == "GET" and tail == ["versions"]:
                return "list_secret_versions"
            if method == "GET":
                return "get_secret"
            if method == "PATCH":
                return "update_secret"
            if method == "DELETE":
                return "delete_secret"
        if seg == "deletedsecrets" and rest and rest[0]:
            tail = [s for s in rest[1:] if s]
            if method == "GET":
                return "get_deleted_secret"
            if method == "DELETE":
                return "purge_deleted_secret"
            if method == "POST" and tail == ["recover"]:
                return "recover_deleted_secret"
    return f"{method.lower()}_request"


def _transport(options: Mapping[str, Any]) -> Any:
    """azure-core's requests transport over a session whose connection pool holds ``POOL_CONNECTIONS``.

    The transport azure-core makes for itself mounts requests' adapter with its default pool of 10: a pass at
    concurrency 16 would open and drop connections (and log "Connection pool is full") on every burst. The
    adapter does no retries of its own, as azure-core's does not: the retry policy retries.
    """
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=POOL_CONNECTIONS,
        pool_maxsize=POOL_CONNECTIONS,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    # the connection settings (timeouts, connection_verify, use_env_settings) belong to the transport
    return RequestsTransport(session=session, session_owner=True, **options)


def _call_recorder(limits: RateLimits | None = None, charges: Callable[[str], tuple[Charge, ...]] | None = None) -> Any:
    """An azure-core policy that records one call per HTTP attempt (placed after the retry policy); with
    ``limits``, it charges each attempt there first (``charges(op)``) and reports a 429 with its Retry-After."""
    from azure.core.pipeline import PipelineRequest, PipelineResponse
    from azure.core.pipeline.policies import HTTPPolicy

    class CallRecorder(HTTPPolicy[Any, Any]):
        def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
            op = operation_name(request.http_request.method, request.http_request.url)
            charged = charges(op) if limits is not None and charges is not None else ()
            if limits is not None:
                limits.acquire(charged)  # every attempt counts: the retry policy sits before this one
            sent = time.monotonic()
            try:
                response = self.next.send(request)
            except Exception as exc:
                record_call(SERVICE, op, type(exc).__name__)
                raise
            if limits is not None:  # the vault counted it somewhere between sending and now
                limits.answered(charged, time.monotonic() - sent)
            status = response.http_response.status_code
            record_call(SERVICE, op, status)
            if status == 429 and limits is not None:
                limits.throttled(
                    charged, retry_after=retry_after_seconds(response.http_response.headers.get("Retry-After"))
                )
            return response

    return CallRecorder()


def _retry_policy(config: StoreConfig) -> Any:
    """azure-core's RetryPolicy (429/408/5xx, connection errors, ``Retry-After``), also retrying PATCH, never PUT.

    Disabling a version or setting its tags (the PATCHes rotator sends) is idempotent, so it is as safe to
    retry as a GET. A ``PUT /secrets/{name}`` is not: "If the named secret already exists, Azure Key Vault
    creates a new version of that secret" (Set Secret, https://learn.microsoft.com/rest/api/keyvault/secrets/set-secret/set-secret),
    so a PUT retried after a 5xx or a lost response whose first attempt had landed makes a second version,
    and versions can never be deleted. azure-core retries PUT by default (it is in its method allowlist);
    here it never does, and :meth:`AzureKeyVaultStore._write` checks whether the key landed before sending
    it again.
    """
    from azure.core.pipeline.policies import RetryPolicy

    class Retry(RetryPolicy[Any, Any]):
        def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
            settings = super().configure_retries(options)
            settings["methods"] = frozenset(settings["methods"]) | {"PATCH"}
            return settings

        def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
            if response.http_request.method.upper() == "PUT":
                return False  # even with Retry-After: the store decides
            return bool(super().is_retry(settings, response))

        def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
            request = getattr(response, "http_request", None)
            if error is not None and request is not None and request.method.upper() == "PUT":
                return False
            return bool(super().increment(settings, response=response, error=error))

    n = config.max_retries
    return Retry(
        retry_total=n,
        retry_connect=n,
        retry_read=n,
        retry_status=n,
        retry_backoff_factor=config.retry_backoff,
        retry_backoff_max=config.retry_backoff_max,
    )


def _make_credential(config: StoreConfig) -> Any:
    from azure import identity

    client_id = config.managed_identity_client_id
    try:
        if config.credential == "environment":
            return identity.EnvironmentCredential()
        if config.credential == "managed_identity":
            return identity.ManagedIdentityCredential(client_id=client_id)
        if config.credential == "workload_identity":
            return identity.WorkloadIdentityCredential(**({"client_id": client_id} if client_id else {}))
        if config.credential == "azure_cli":
            return identity.AzureCliCredential()
        return identity.DefaultAzureCredential(**({"managed_identity_client_id": client_id} if client_id else {}))
    except ValueError as exc:  # e.g. workload identity without AZURE_TENANT_ID / AZURE_FEDERATED_TOKEN_FILE
        raise ConfigError(f"credential {config.credential!r} for {config.vault_url}: {exc}") from exc


# ---- the store ---------------------------------------------------------------------------------------------

#: what each store action needs: (access-policy permission, RBAC data action, what it was doing)
_PERMISSIONS: dict[str, tuple[str, str, str]] = {
    "list": ("secrets/list", "Microsoft.KeyVault/vaults/secrets/readMetadata/action", "list the secret's versions"),
    "get": ("secrets/get", "Microsoft.KeyVault/vaults/secrets/getSecret/action", "read a secret version"),
    "set": ("secrets/set", "Microsoft.KeyVault/vaults/secrets/setSecret/action", "write a new secret version"),
    "update": ("secrets/set", "Microsoft.KeyVault/vaults/secrets/update/action", "disable an old version"),
    "get_deleted": (
        "secrets/get",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        "check for a soft-deleted secret",
    ),
}


class _VersionDisabled(StoreNotFound):
    """403 SecretDisabled: the version exists but is disabled, so it cannot be read."""


@dataclass(frozen=True)
class _Version:
    version: str
    key_id: str | None
    created: datetime | None  # None for a version known only from the current version's TRACKS_TAG
    enabled: bool
    tags: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass
class _Listing:
    """What this process knows of one secret's versions. ``latest`` is None when not known for sure.

    ``partial``: only the latest version and the versions its ``rotator-tracks`` tag names are known (one
    ``GET``); otherwise every version was listed.
    """

    versions: dict[str, _Version] = field(default_factory=dict)
    latest: str | None = None
    listed_at: float = 0.0
    partial: bool = False


def _version_of(props: Any) -> _Version:
    tags = dict(props.tags or {})
    return _Version(
        version=str(props.version),
        key_id=tags.get(KEY_ID_TAG),
        created=props.created_on,
        enabled=props.enabled is not False,
        tags=tags,
    )


_TRACK_ITEM_RE = re.compile(r"^([0-9a-fA-F]{32})=([^,=\s]{1,128})\Z")


def encode_tracks(versions: list[tuple[str, str]]) -> str:
    """The ``rotator-tracks`` tag value for ``(version, key id)`` pairs, newest first.

    ``-`` for none; ``*`` when they do not fit in a tag value (256 characters, about three entries with
    UUID key ids) or a key id cannot be written there: then the versions are listed instead.
    """
    if not versions:
        return NOTHING_TRACKED
    items = [f"{version}={key}" for version, key in versions]
    text = ",".join(items)
    if len(text) > MAX_TAG_VALUE or not all(_TRACK_ITEM_RE.match(item) for item in items):
        return TOO_MANY_TRACKED
    return text


def decode_tracks(text: str | None) -> list[tuple[str, str]] | None:
    """The ``(version, key id)`` pairs a ``rotator-tracks`` value names; None when it is absent (a version
    written before rotator tracked versions, or by someone else), ``*`` or malformed: list the versions."""
    if text is None or text == TOO_MANY_TRACKED:
        return None
    if text == NOTHING_TRACKED:
        return []
    out = []
    for item in text.split(","):
        m = _TRACK_ITEM_RE.match(item)
        if m is None:
            return None
        out.append((m.group(1).lower(), m.group(2)))
    return out


def _short(text: str | None, limit: int = 240) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _inner_code(exc: Any) -> str:
    """The Key Vault ``innererror.code`` of an HttpResponseError (``SecretDisabled``, ``ForbiddenByRbac``...)."""
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    code = inner.get("code") if isinstance(inner, Mapping) else None
    if code:
        return str(code)
    try:
        body = exc.response.json()
        inner = body.get("error", {}).get("innererror") or body.get("error", {}).get("innerError") or {}
        return str(inner.get("code") or "")
    except Exception:  # a body that is not JSON has no inner code
        return ""


class AzureKeyVaultStore(StoreBase):
    """A :class:`~rotator.stores.base.SecretStore` over one Azure Key Vault. Thread-safe.

    Open it with :func:`open_store`. Every method raises only :class:`~rotator.errors.StoreError`
    subclasses whose messages name the vault, the store and the secret, never a value.
    """

    #: Key Vault has no staging: the version stage() writes is current at once, so the engine reads the target
    #: again right before it (the compare-and-set promote has nothing left to switch)
    #: no staging: a Set Secret is the switch; no etag or If-Match on it, so the current version is read right
    #: before the write (docs/design-notes.md: the window that leaves)
    capabilities = StoreCapabilities(stage_makes_current=True, compare_and_set="read-then-write")

    def __init__(
        self,
        name: str,
        config: StoreConfig,
        *,
        credential: Any = None,
        limits: RateLimits | None = None,
        **client_options: Any,
    ) -> None:
        try:
            from azure.keyvault.secrets import SecretClient
        except ImportError as exc:
            raise MissingExtraError("azure", "azure.keyvault.secrets") from exc
        bad = sorted(set(client_options) & (_RESERVED_CLIENT_OPTIONS - {"per_retry_policies"}))
        if bad:
            raise ConfigError(f"store {name!r}: client options {', '.join(bad)} are set by rotator itself")
        self.name = name
        self.config = config
        self.vault_url = config.vault_url
        self._owned_credential: Any = None
        if credential is None:
            credential = self._owned_credential = _make_credential(config)
        options: dict[str, Any] = {
            "connection_timeout": config.timeout,
            "read_timeout": config.timeout,
            **config.client_options,
            **client_options,
        }
        #: the process's request quotas, and this store's (the documented ones, with the config's overrides), in
        #: the scope of this vault
        self._limits = limits if limits is not None else RateLimits()
        self._quotas = apply_overrides(KEYVAULT_QUOTAS, config.quotas)
        self._scope = (urlsplit(config.vault_url).netloc or config.vault_url).lower()
        options["per_retry_policies"] = [
            *options.get("per_retry_policies", []),
            _call_recorder(self._limits, self._charges),
        ]
        options["retry_policy"] = _retry_policy(config)
        if "transport" not in options:
            options["transport"] = _transport(options)
        self._client = SecretClient(config.vault_url, credential, **options)
        self._lock = threading.Lock()
        # per secret, by lower-case name: Key Vault names are case-insensitive ("Objects are uniquely identified
        # within Key Vault using a case-insensitive identifier", https://learn.microsoft.com/azure/key-vault/about-keys-secrets-and-certificates#object-identifiers),
        # so two targets spelling one secret differently share what is known of it
        self._listings: dict[str, _Listing] = {}
        self._closed = False
        self._log = get_logger(store=name)

    def __repr__(self) -> str:
        return f"AzureKeyVaultStore(name={self.name!r}, vault_url={self.vault_url!r})"

    # ---- request quotas ---------------------------------------------------------------------------------

    def _charges(self, op: str) -> tuple[Charge, ...]:
        """What one HTTP attempt of ``op`` (:func:`operation_name`) counts against: a ``set_secret`` is a
        CREATE, anything else one of the vault's other transactions."""
        return (Charge(self._quotas["create" if op == "set_secret" else "other"], self._scope),)

    def publish_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """The transactions one publish makes on the due pass: inspect's ``GET`` of the latest version, the
        engine's second look right before staging (``stage_makes_current``), the ``set_secret`` (a CREATE), the
        read-back ``GET``; promote finds the key latest and sends nothing: 1 create, 3 others. A secret that does
        not exist yet adds a ``GET`` of the deleted secret; cleaning up later (retire) is not a publish."""
        return tuple((Charge(self._quotas[name], self._scope), n) for name, n in PUBLISH_CALLS)

    def inspect_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """One :meth:`inspect`: a ``GET`` of the latest version (one more for a secret that does not exist, and a
        listing of its versions when the latest one does not say which it tracks)."""
        return ((Charge(self._quotas["other"], self._scope), 1),)

    # ---- the contract -----------------------------------------------------------------------------------

    def inspect(self, ref: TargetRef) -> SecretState:
        """The current version (its tags say which key it holds) and the versions rotator still tracks.

        One ``GET`` of the latest version, whatever the number of versions: its ``rotator-key-id`` tag is the
        current key, its ``rotator-tracks`` tag the older versions still enabled (the previous key until it is
        retired). Key Vault cannot answer this without the value, which is dropped at once. The version list is
        read instead (one call per 25 versions) only when the latest version does not say: it is disabled, not
        written by rotator, written before rotator tracked versions, or tracks more than a tag holds. A secret
        that does not exist costs one more call, to tell it from a soft-deleted one.

        Raises: StoreConflict (the secret is soft-deleted), StoreUnavailable, StorePermissionError.
        """
        listing = self._observe(ref)
        if not listing.versions:
            self._check_not_deleted(ref)
            return SecretState(exists=False)
        current = self._current(ref, listing)
        versions = tuple(
            StoredVersion(
                version=v.version,
                key_id=v.key_id,
                created_at=v.created,
                current=current is not None and v.version == current.version,
                enabled=v.enabled,
            )
            for v in sorted(listing.versions.values(), key=_age_key)
        )
        return SecretState(
            exists=True,
            versions=versions,
            current_key_id=current.key_id if current else None,
            current_since=current.created if current else None,
            foreign=current is not None and current.key_id is None,
        )

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        """Write ``value`` as a new version tagged with ``meta`` (it is "latest" at once: Key Vault has no staging).

        A no-op when the current version, or a version it tracks, already holds ``meta.key_id``. Refuses
        (StoreConflict) when the current value was not written by rotator, unless the target sets ``adopt:
        true``. One ``set_secret`` call after a recent :meth:`inspect`, else one ``GET`` more to look first; a
        ``set_secret`` whose answer was lost is checked, not resent blindly (:meth:`_write`).

        Raises: StoreConflict (foreign current value; secret soft-deleted), StoreUnavailable,
        StorePermissionError, StoreError (the vault rejected the request, e.g. too many tags).
        """
        listing = self._listing(ref)
        if any(v.key_id == meta.key_id for v in listing.versions.values()):
            self._log.debug("stage: key already written", target=ref.id, key_id=meta.key_id)
            return
        if listing.versions:
            self._refuse_foreign(ref, self._current(ref, listing))
        extra = getattr(ref.options, "tags", None) or {}
        tags = {str(k): str(v) for k, v in dict(extra).items()}
        tags.update({KEY_ID_TAG: meta.key_id, POLICY_TAG: meta.policy, MANAGED_BY_TAG: MANAGED_BY})
        written = self._write(ref, value, tags=tags, content_type=meta.content_type, expires_on=meta.expires_at)
        self._log.debug("stage: wrote version", target=ref.id, key_id=meta.key_id, version=written)

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        """The value of the newest enabled version holding ``key_id`` (one ``GET`` when its version is known).

        Raises: StoreNotFound (no version holds ``key_id``, or only disabled ones do), StoreUnavailable,
        StorePermissionError.
        """
        for attempt in (0, 1):
            listing = self._known(ref) if attempt == 0 else None
            if listing is None or not any(v.key_id == key_id for v in listing.versions.values()):
                listing = self._list(ref)
            holders = sorted((v for v in listing.versions.values() if v.key_id == key_id), key=_age_key, reverse=True)
            if not holders:
                raise StoreNotFound(
                    f"no version in Key Vault {self.vault_url} holds key {key_id}", store=self.name, secret=ref.secret
                )
            enabled = [v for v in holders if v.enabled]
            if not enabled:
                raise StoreNotFound(
                    f"the versions holding key {key_id} in Key Vault {self.vault_url} are disabled (retired)",
                    store=self.name,
                    secret=ref.secret,
                )
            target = enabled[0]
            try:
                secret = self._call("get", ref, partial(self._client.get_secret, ref.secret, target.version))
            except StoreNotFound:
                if attempt == 0:
                    self._forget(ref)  # disabled or gone since we listed: look again once
                    continue
                raise
            tags = secret.properties.tags or {}
            if tags.get(KEY_ID_TAG) == key_id and secret.value is not None:
                return SecretText(secret.value)
            self._forget(ref)
        raise StoreNotFound(
            f"no readable version in Key Vault {self.vault_url} holds key {key_id}", store=self.name, secret=ref.secret
        )

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        """Make the version holding ``key_id`` the latest one; usually a no-op.

        Key Vault has no staging: the version :meth:`stage` wrote is "latest" (current) at once, so promoting
        it only checks that it still is, with no call when this process wrote or listed it recently (else one
        list call). When another version became latest meanwhile (two passes racing, or an older key being
        promoted back), the key's value is written again as a new version with the same tags, content type
        and expiry (a ``GET`` and a ``PUT``), since that is the only way to make it latest in Key Vault.

        Compare-and-set (``expect_current`` other than ``ANY_CURRENT``): Key Vault has no conditional write
        (Set Secret takes no etag or ``If-Match``:
        https://learn.microsoft.com/rest/api/keyvault/secrets/set-secret/set-secret), so the current version
        is read again (one ``GET``) right before the ``PUT`` that makes the key latest, and when it no longer
        holds ``expect_current`` nothing is written. A writer whose ``PUT`` lands between that ``GET`` and
        this ``PUT`` is not seen: docs/stores/azure.md describes that window.

        Raises: StoreNotFound (no enabled version holds ``key_id``), StoreConflict (the current value was not
        written by rotator and the target does not set ``adopt: true``), StorePreconditionFailed (the current
        version no longer holds ``expect_current``), StoreUnavailable, StorePermissionError.
        """
        listing = self._listing(ref)
        if not any(v.key_id == key_id for v in listing.versions.values()):
            listing = self._list(ref)
        holders = sorted((v for v in listing.versions.values() if v.key_id == key_id), key=_age_key, reverse=True)
        if not holders:
            raise StoreNotFound(
                f"nothing to promote: no version in Key Vault {self.vault_url} holds key {key_id}",
                store=self.name,
                secret=ref.secret,
            )
        current = self._current(ref, listing)
        if current is not None and current.key_id == key_id:
            return
        self._refuse_foreign(ref, current)
        enabled = [v for v in holders if v.enabled]
        if not enabled:
            raise StoreNotFound(
                f"cannot promote key {key_id}: its versions in Key Vault {self.vault_url} are disabled (retired)",
                store=self.name,
                secret=ref.secret,
            )
        try:
            secret = self._call("get", ref, partial(self._client.get_secret, ref.secret, enabled[0].version))
        except StoreNotFound:
            self._forget(ref)
            raise
        props = secret.properties
        if (props.tags or {}).get(KEY_ID_TAG) != key_id or secret.value is None:
            self._forget(ref)
            raise StoreNotFound(
                f"cannot promote key {key_id}: its version in Key Vault {self.vault_url} changed meanwhile",
                store=self.name,
                secret=ref.secret,
            )
        if expect_current is not ANY_CURRENT and self._current_is(ref, key_id, expect_current):
            return
        self._write(
            ref,
            SecretText(secret.value),
            tags=dict(props.tags or {}),
            content_type=props.content_type,
            expires_on=props.expires_on,
        )
        self._log.info("promote: wrote the key again as the latest version", target=ref.id, key_id=key_id)

    def _current_is(self, ref: TargetRef, key_id: str, expect_current: str | None) -> bool:
        """Re-read the current version (one ``GET``): True when it holds ``key_id`` already (another pass
        promoted it: nothing to do); raise StorePreconditionFailed when it holds neither ``key_id`` nor
        ``expect_current`` (``None``: no enabled latest version, or one rotator did not write)."""
        self._forget(ref)
        current = self._current(ref, self._observe(ref))
        held = current.key_id if current is not None else None
        if held == key_id:
            return True
        if held != expect_current:
            raise StorePreconditionFailed(
                f"not promoting key {key_id}: the current version in Key Vault {self.vault_url} holds key "
                f"{held or 'none'}, not {expect_current or 'none'} as read before",
                store=self.name,
                secret=ref.secret,
            )
        self._refuse_foreign(ref, current)
        return False

    def retire(self, ref: TargetRef, key_id: str) -> None:
        """Disable (``enabled=false``) every enabled version holding ``key_id``; never deletes or purges.

        One ``PATCH`` per version to disable, one ``PATCH`` of the current version's ``rotator-tracks`` tag (so
        the next inspect no longer reports them), plus one ``GET`` unless a recent :meth:`inspect` is known.
        No list: the versions to disable are the ones the current version tracks.
        Retiring a key that is retired already or was never written is a no-op.

        Raises: StoreConflict (``key_id`` is the current key), StoreUnavailable, StorePermissionError.
        """
        listing = self._listing(ref)
        holders = [v for v in listing.versions.values() if v.key_id == key_id]
        if not holders:
            return
        current = self._current(ref, listing)
        if current is not None and current.key_id == key_id:
            raise StoreConflict(
                f"refusing to retire key {key_id}: it is the current (latest) version in Key Vault {self.vault_url}",
                store=self.name,
                secret=ref.secret,
            )
        for v in holders:
            if not v.enabled:
                continue
            if not self._disable(ref, v.version):
                return
            self._log.info("retire: disabled version", target=ref.id, key_id=key_id, version=v.version)
        self._untrack(ref)

    def _untrack(self, ref: TargetRef) -> None:
        """Make the current version's ``rotator-tracks`` tag name only the versions still enabled (one PATCH
        of its tags when that changes; none when the current version is not rotator's)."""
        listing = self._known(ref)
        if listing is None or listing.latest is None:
            return
        current = listing.versions.get(listing.latest)
        if current is None or current.key_id is None or not current.enabled:
            return
        tracks = encode_tracks(_tracked(listing, but=current.version))
        if current.tags.get(TRACKS_TAG) == tracks:
            return
        tags = {**current.tags, TRACKS_TAG: tracks}
        try:
            props = self._call(
                "update",
                ref,
                lambda: self._client.update_secret_properties(ref.secret, current.version, tags=tags),
            )
        except StoreNotFound:
            self._forget(ref)
            return
        with self._lock:
            known = self._listings.get(_cache_key(ref))
            if known is not None:
                known.versions[current.version] = _version_of(props)

    def _write(
        self,
        ref: TargetRef,
        value: SecretText,
        *,
        tags: dict[str, str],
        content_type: str | None,
        expires_on: datetime | None,
    ) -> str:
        """``set_secret``: a new version, which becomes the latest. Returns its version id.

        The new version's ``rotator-tracks`` tag names the enabled versions rotator knows (the one that was
        current, and those it tracked), so the next :meth:`inspect` needs one ``GET``. A PUT is never resent
        blindly (each one makes a version): after an answer that leaves open whether it landed (5xx, a lost
        response), one ``GET`` of the latest version says whether it holds the key; only if not is the PUT
        sent again, at most ``max_retries`` times. A throttled (429) or timed-out (408) request was not
        carried out and is sent again after ``Retry-After`` or the backoff.
        """
        from azure.core.exceptions import ServiceRequestError

        known = self._known(ref) or _Listing()
        tags = dict(tags)
        tags[TRACKS_TAG] = encode_tracks(_tracked(known))
        key_id = tags.get(KEY_ID_TAG)
        props: Any = None
        for attempt in range(self.config.max_retries + 1):
            try:
                secret = self._call(
                    "set",
                    ref,
                    lambda: self._client.set_secret(
                        ref.secret, value.reveal(), tags=tags, content_type=content_type, expires_on=expires_on
                    ),
                )
                props = secret.properties
                break
            except StoreUnavailable as exc:
                cause = exc.__cause__
                status = getattr(cause, "status_code", None)
                not_carried_out = status in (408, 429) or isinstance(cause, ServiceRequestError)
                if not not_carried_out and key_id is not None:
                    props = self._latest_holding(ref, key_id)
                    if props is not None:
                        self._log.info("stage: the write had landed although its answer was lost", target=ref.id)
                        break
                if attempt == self.config.max_retries:
                    raise
                time.sleep(self._backoff(attempt, cause))
        written = _version_of(props)
        with self._lock:
            known = self._listings.setdefault(_cache_key(ref), _Listing())
            known.versions[written.version] = written
            known.latest = written.version
        return written.version

    def _latest_holding(self, ref: TargetRef, key_id: str) -> Any:
        """The latest version's properties if it holds ``key_id`` (a write whose answer was lost had landed)."""
        try:
            secret = self._call("get", ref, lambda: self._client.get_secret(ref.secret))
        except StoreNotFound:  # no version, or the latest is disabled: ours did not land as the latest
            return None
        props = secret.properties
        return props if (props.tags or {}).get(KEY_ID_TAG) == key_id else None

    def _backoff(self, attempt: int, cause: BaseException | None) -> float:
        """Seconds to wait before sending a PUT again: the vault's ``Retry-After``, else exponential backoff."""
        response = getattr(cause, "response", None)
        retry_after = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
        backoff = min(self.config.retry_backoff * 2**attempt, self.config.retry_backoff_max)
        try:
            # the vault's Retry-After is honoured as azure-core's policy honours it (not capped by the backoff)
            wait = float(retry_after) if retry_after is not None else backoff
        except ValueError:
            wait = backoff
        return max(0.0, min(wait, 600.0))

    def _refuse_foreign(self, ref: TargetRef, current: _Version | None) -> None:
        """StoreConflict when the current version was not written by rotator and the target may not adopt it."""
        if current is None or current.key_id is not None or bool(getattr(ref.options, "adopt", False)):
            return
        raise StoreConflict(
            f"the current version in Key Vault {self.vault_url} was not written by rotator (it has no "
            f"{KEY_ID_TAG} tag); set adopt: true on the target to replace it",
            store=self.name,
            secret=ref.secret,
        )

    def _disable(self, ref: TargetRef, version: str) -> bool:
        """PATCH one version to ``enabled=false``; False when the secret is gone."""
        try:
            props = self._call(
                "update", ref, lambda: self._client.update_secret_properties(ref.secret, version, enabled=False)
            )
        except StoreNotFound:
            self._forget(ref)  # the secret went away meanwhile: nothing left to retire
            return False
        with self._lock:
            known = self._listings.get(_cache_key(ref))
            if known is not None:
                known.versions[version] = _version_of(props)
        return True

    def close(self) -> None:
        """Close the HTTP session (and the credential, when this store made it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._client.close()
        if self._owned_credential is not None and hasattr(self._owned_credential, "close"):
            self._owned_credential.close()

    # ---- version knowledge ------------------------------------------------------------------------------

    def _known(self, ref: TargetRef) -> _Listing | None:
        with self._lock:
            return self._listings.get(_cache_key(ref))

    def _forget(self, ref: TargetRef) -> None:
        with self._lock:
            self._listings.pop(_cache_key(ref), None)

    def _listing(self, ref: TargetRef) -> _Listing:
        """What is known from the last ``metadata_cache_seconds``, or a fresh look (:meth:`_observe`)."""
        known = self._known(ref)
        ttl = self.config.metadata_cache_seconds
        if known is not None and ttl > 0 and time.monotonic() - known.listed_at <= ttl:
            return known
        return self._observe(ref)

    def _observe(self, ref: TargetRef) -> _Listing:
        """The latest version and the versions it tracks, with one ``GET``; the full list when it does not say."""
        try:
            secret = self._call("get", ref, lambda: self._client.get_secret(ref.secret))
        except _VersionDisabled:
            return self._list(ref)  # the latest version is disabled: only the list tells the rest
        except StoreNotFound:
            listing = _Listing(listed_at=time.monotonic())
            with self._lock:
                self._listings[_cache_key(ref)] = listing
            return listing
        current = _version_of(secret.properties)
        del secret  # the value: not needed, not kept
        tracked = decode_tracks(current.tags.get(TRACKS_TAG))
        if current.key_id is None or tracked is None:
            return self._list(ref, latest=current.version)
        versions = {current.version: current}
        for version, key_id in tracked:
            versions.setdefault(version, _Version(version, key_id, None, True))
        listing = _Listing(versions, current.version, time.monotonic(), partial=True)
        with self._lock:
            self._listings[_cache_key(ref)] = listing
        return listing

    def _list(self, ref: TargetRef, *, latest: str | None = None) -> _Listing:
        """List the versions (every page); a secret that does not exist has none. ``latest``: the latest
        version's id when a ``GET`` just said it (no tie of creation seconds to break then)."""

        def fetch() -> list[_Version]:
            return [_version_of(p) for p in self._client.list_properties_of_secret_versions(ref.secret)]

        try:
            found = self._call("list", ref, fetch)
        except StoreNotFound:
            found = []
        versions = {v.version: v for v in found}
        with self._lock:
            previous = self._listings.get(_cache_key(ref))
            if latest not in versions:
                latest = None
                if previous is not None and previous.latest in versions and set(previous.versions) == set(versions):
                    latest = previous.latest  # no version came or went since we knew which one is latest
            listing = _Listing(versions, latest or _unique_newest(versions), time.monotonic())
            self._listings[_cache_key(ref)] = listing
        return listing

    def _current(self, ref: TargetRef, listing: _Listing) -> _Version | None:
        """The latest version if it is enabled (what consumers reading "latest" get), else None."""
        if not listing.versions:
            return None
        latest = listing.latest or self._resolve_latest(ref, listing)
        v = listing.versions.get(latest)
        return v if v is not None and v.enabled else None

    def _resolve_latest(self, ref: TargetRef, listing: _Listing) -> str:
        """Tell which of the versions created in the same (newest) second is the latest.

        ``created`` has one-second resolution. When the tied versions hold the same key and are all enabled
        (or all disabled), which one is latest does not matter; otherwise one ``GET /secrets/{name}/`` says.
        """
        newest = max((v.created for v in listing.versions.values() if v.created), default=None)
        tied = [v for v in listing.versions.values() if v.created == newest]
        if len({(v.key_id, v.enabled) for v in tied}) <= 1:
            return max(tied, key=lambda v: v.version).version
        try:
            secret = self._call("get", ref, lambda: self._client.get_secret(ref.secret))
            latest = str(secret.properties.version)
        except _VersionDisabled:
            disabled = [v for v in tied if not v.enabled]
            latest = disabled[0].version if disabled else tied[0].version
        except StoreNotFound:  # deleted while we looked: nothing is current any more
            self._forget(ref)
            return tied[0].version
        if latest not in listing.versions:  # a version newer than our listing: list again next time
            self._forget(ref)
            return latest
        with self._lock:
            listing.latest = latest
        return latest

    def _check_not_deleted(self, ref: TargetRef) -> None:
        """Raise StoreConflict when ``ref.secret`` is soft-deleted (its name is blocked until recovered or purged)."""
        try:
            self._call("get_deleted", ref, lambda: self._client.get_deleted_secret(ref.secret))
        except StoreNotFound:
            return
        except StorePermissionError:
            # best effort: without permission to see deleted secrets, set_secret reports the conflict later
            self._log.debug("inspect: cannot check for a soft-deleted secret", target=ref.id)
            return
        raise self._deleted_conflict(ref)

    def _deleted_conflict(self, ref: TargetRef) -> StoreConflict:
        vault = urlsplit(self.vault_url).hostname or self.vault_url
        name = vault.split(".")[0]
        return StoreConflict(
            f"the secret is deleted but recoverable in Key Vault {self.vault_url} (soft delete) and its name "
            f"cannot be reused until it is recovered (az keyvault secret recover --vault-name {name} "
            f"--name {ref.secret}) or purged (az keyvault secret purge --vault-name {name} --name {ref.secret})",
            store=self.name,
            secret=ref.secret,
        )

    # ---- error translation ------------------------------------------------------------------------------

    def _call(self, action: str, ref: TargetRef, fn: Callable[[], T]) -> T:
        """Run one SDK call, translating azure-core exceptions into StoreError subclasses."""
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

        permission, data_action, doing = _PERMISSIONS[action]
        where = {"store": self.name, "secret": ref.secret}
        try:
            return fn()
        except HttpResponseError as exc:
            status = exc.status_code
            error = getattr(exc, "error", None)
            code = getattr(error, "code", None) or ""
            message = _short(getattr(error, "message", None) or exc.reason or "")
            inner = _inner_code(exc)
            if status is None and isinstance(exc, ClientAuthenticationError):
                raise StorePermissionError(
                    f"could not get a token for Key Vault {self.vault_url} with credential "
                    f"{self.config.credential!r}: {_short(exc.message)}",
                    **where,
                ) from exc
            if status == 401:
                raise StorePermissionError(
                    f"Key Vault {self.vault_url} rejected the token (401 {code}: {message}); check the "
                    "identity's tenant and that it still exists",
                    **where,
                ) from exc
            if status == 403 and inner == "SecretDisabled":
                raise _VersionDisabled(f"the version is disabled in Key Vault {self.vault_url}", **where) from exc
            if status == 403 and inner == "ForbiddenByFirewall":
                raise StorePermissionError(
                    f"Key Vault {self.vault_url} refused to {doing}: its network rules do not admit this "
                    f"client (firewall or private endpoint): {message}",
                    **where,
                ) from exc
            if status == 403:
                raise StorePermissionError(
                    f"access denied by Key Vault {self.vault_url}: cannot {doing} without the {permission} "
                    f"permission (grant the role 'Key Vault Secrets Officer' on the vault, or a role with the "
                    f"data action {data_action}; vaults using access policies need secret permission "
                    f"{permission.split('/')[1]!r}) [{inner or code}]",
                    **where,
                ) from exc
            if status == 404:
                raise StoreNotFound(f"not found in Key Vault {self.vault_url} ({code})", **where) from exc
            if status == 409 and inner == "ObjectIsDeletedButRecoverable":
                raise self._deleted_conflict(ref) from exc
            if status == 409:
                raise StoreConflict(
                    f"Key Vault {self.vault_url} refused to {doing}: 409 {code}: {message}", **where
                ) from exc
            if status is not None and (status in (408, 429) or status >= 500):
                raise StoreUnavailable(
                    f"Key Vault {self.vault_url} kept answering {status} {code} when asked to {doing}, "
                    f"after {self.config.max_retries} retries",
                    **where,
                ) from exc
            raise StoreError(
                f"Key Vault {self.vault_url} refused to {doing}: {status} {code}: {message}", **where
            ) from exc
        except AzureError as exc:
            raise StoreUnavailable(
                f"could not reach Key Vault {self.vault_url} to {doing}: {type(exc).__name__}: "
                f"{_short(str(exc.message))}",
                **where,
            ) from exc


def _cache_key(ref: TargetRef) -> str:
    """Key Vault secret names are case-insensitive: so is what the store remembers about them."""
    return ref.secret.lower()


def _tracked(listing: _Listing, *, but: str | None = None) -> list[tuple[str, str]]:
    """The enabled versions rotator wrote, newest first (except ``but``): what a new version's tag tracks."""
    ordered = list(listing.versions.values())
    if not listing.partial:
        ordered.sort(key=_age_key, reverse=True)
    elif listing.latest in listing.versions:  # the latest first, then the versions it tracks, in its order
        ordered.sort(key=lambda v: v.version != listing.latest)
    return [(v.version, v.key_id) for v in ordered if v.enabled and v.key_id is not None and v.version != but]


def _age_key(v: _Version) -> tuple[float, str]:
    return (v.created.timestamp() if v.created else 0.0, v.version)


def _unique_newest(versions: dict[str, _Version]) -> str | None:
    """The version created last, when no other version shares its creation second; else None (unknown)."""
    if not versions:
        return None
    newest = max((v.created for v in versions.values() if v.created), default=None)
    tied = [v for v in versions.values() if v.created == newest]
    return tied[0].version if len(tied) == 1 else None


def open_store(
    name: str,
    config: StoreConfig,
    *,
    credential: Any = None,
    limits: RateLimits | None = None,
    **client_options: Any,
) -> AzureKeyVaultStore:
    """Open the Azure Key Vault store ``name``.

    ``credential`` (any azure-core token credential) replaces the one ``config.credential`` names; ``limits``
    is the process's request quotas (the runtime's, from the StoreContext; default: the store's own);
    ``client_options`` are merged over ``config.client_options`` and passed to ``SecretClient``.
    Raises MissingExtraError without ``momento-rotator[azure]``, ConfigError for an unusable credential setting.
    """
    return AzureKeyVaultStore(name, config, credential=credential, limits=limits, **client_options)


def _open(spec: StoreSpec, context: StoreContext) -> SecretStore:
    assert isinstance(spec.config, StoreConfig)
    return open_store(spec.name, spec.config, **{"limits": context.limits, **context.options})


#: the ``azure`` store type, registered under the entry point group ``rotator.stores``
STORE_TYPE = StoreType(
    name="azure",
    config=StoreConfig,
    target=TargetOptions,
    open=_open,
    capabilities=AzureKeyVaultStore.capabilities,
    extra="azure",
    sdk="azure.keyvault.secrets",
)
