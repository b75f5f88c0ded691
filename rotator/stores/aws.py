"""AWS Secrets Manager as a secret store (extra ``momento-rotator[aws]``; boto3 is imported only in :func:`open_store`).

How a rotation looks in Secrets Manager (four API calls per target when the store is already in use):

1. ``inspect``: one ``DescribeSecret`` (version ids with their staging labels, tags, rotation Lambda,
   deletion date, last change). The answer is cached for ``describe_ttl`` seconds (default 60) and kept up
   to date by this store's own writes, so the ``stage`` and ``promote`` that follow need no second look.
2. ``stage``: ``PutSecretValue(ClientRequestToken=<version id of the key>, VersionStages=["AWSPENDING"])``.
   Secrets Manager moves ``AWSPENDING`` from whichever version held it, which is also how a stale
   ``AWSPENDING`` left by a failed earlier rotation gets cleared (logged as a warning).
3. ``read``: ``GetSecretValue(VersionId=<version id of the key>)`` (reads always name a version).
4. ``promote``: ``UpdateSecretVersionStage(VersionStage="AWSCURRENT", MoveToVersionId=new,
   RemoveFromVersionId=old)``; Secrets Manager moves ``AWSPREVIOUS`` to the old version. ``RemoveFromVersionId``
   makes the move a compare-and-swap: if another writer moved ``AWSCURRENT`` meanwhile, the call fails,
   the store looks again and retries once; with ``expect_current`` it raises ``StorePreconditionFailed``
   instead when another key is current (see :meth:`AwsSecretsManagerStore.promote`). ``AWSPENDING`` stays on
   the new current version for now: AWS documents "AWSPENDING and AWSCURRENT on the same version" as a
   finished rotation. ``retire`` of the old key (the end of the rotation, after grace) removes it, so
   publishing costs four calls, not five.

Version ids: a version's ``VersionId`` is the ``ClientRequestToken`` we send, chosen so that it names the key
it holds and can be read back without reading the value (see :func:`version_id_for`). A retried write is a
no-op for Secrets Manager, and the store skips writes whose version already exists.

Retired versions: Secrets Manager cannot disable a version. ``retire`` removes ``AWSPREVIOUS`` (and a
leftover ``AWSPENDING``) from the key's version; a version without labels is *deprecated*: AWS keeps its data
until it prunes deprecated versions, and real AWS leaves it out of ``DescribeSecret``. ``inspect`` reports
such a version with ``enabled=False`` (moto lists it with no labels) or not at all (AWS), and ``read``
refuses it. This is AWS's closest thing to "disable". Publishing such a key again puts the same version again,
which AWS ignores (its answer has no ``VersionStages``): the store then puts ``AWSPENDING`` back with
``UpdateSecretVersionStage``.

One writer per secret: a secret whose native rotation runs another Lambda, or rotator's own rotation function
(recognised by ``ROTATOR_LAMBDA_ARN``), is never staged or promoted by a pass; a pass still inspects it and
retires old keys. The native rotation steps use :meth:`AwsSecretsManagerStore.put_pending` and ``finish``.

Request quotas (issue 27): every HTTP attempt, retries included, is charged against the process's
:class:`rotator.quotas.RateLimits` before it is sent, in the quota of its operation (:data:`AWS_QUOTAS`,
:data:`OPERATION_QUOTAS`) for the region its client signs for; a ``ThrottlingException`` cuts the region's limit
and pauses it for every worker (:func:`rotator.botohttp.limit_calls`). The store's ``quotas:`` overrides the
documented rates. botocore's retry mode is then ``standard``: ``adaptive`` adds a limiter of its own per client that
slows it hard after one refusal, on top of the shared one; with ``rate_limits: false`` it is ``adaptive``.

API-call accounting: a botocore ``needs-retry.secrets-manager`` event handler calls
:func:`rotator.observability.record_call` after every HTTP attempt, so one call retried twice counts three
times; the status is the HTTP status, the AWS error code, or the connection error's class name.

HTTP: every attempt is sent through :func:`rotator.botohttp.bound` (:func:`rotator.httpio.fetch`): it ends within
the store's ``timeout`` (``REQUEST_TIMEOUT`` seconds by default) in total (botocore's own timeouts are per socket
read, so an endpoint dripping a byte a second held a call for ever) and reads at most ``MAX_ANSWER`` bytes of
answer, error answers included.

Errors: botocore's ``standard`` (``adaptive`` without rate limits) retry mode (``max_attempts``, default 8)
retries throttling, 5xx, dropped
connections, passed deadlines and oversized answers with backoff; what still fails becomes a
:class:`rotator.errors.StoreError` naming the store, the secret, and for access denied the IAM action
(``secretsmanager:<Operation>``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rotator.durations import Duration
from rotator.errors import (
    MissingExtraError,
    StoreConflict,
    StoreError,
    StoreIntegrityError,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.keys import payload_key_id
from rotator.model import SecretState, SecretText, StoredVersion
from rotator.observability import get_logger, redact_text
from rotator.quotas import Charge, Quota, RateLimits, apply_overrides, check_overrides
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

SERVICE = "aws-secretsmanager"

#: seconds one HTTP attempt may take in total (connect, TLS, headers and body); botocore retries after it
REQUEST_TIMEOUT = 30.0
#: bytes of answer read at most: a secret value is at most 64 KiB (up to 6x that JSON-escaped), a DescribeSecret
#: of 100 versions and 50 tags or a ListSecretVersionIds page of 100 a few tens of KiB
MAX_ANSWER = 1024 * 1024

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"

#: tags rotator puts on the secrets it creates; users may not set them through ``tags``
TAG_MANAGED_BY, TAG_POLICY = "managed-by", "rotator-policy"

# ---- request quotas ------------------------------------------------------------------------------------------

_QUOTAS_PAGE = (
    "AWS Secrets Manager quotas, https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_limits.html"
)
_WHATS_NEW_2025 = (
    "AWS What's New 2025-03-04, https://aws.amazon.com/about-aws/whats-new/2025/03/"
    "aws-secrets-manager-increases-api-requests-seconds/"
)
#: Secrets Manager's per-API request rates, kept on the client side (rotator/quotas.py; the store's ``quotas:``
#: overrides them). "Each quota is specific to each region", and "Secrets Manager throttles the account of the
#: identity that makes the requests" (the quotas page): one scope is one region of the store's account. Over a
#: rate: HTTP 400 ``ThrottlingException`` "Rate exceeded", no Retry-After. The numbers are those of
#: tests/servers/fault_proxy.py's AWS_QUOTAS, which quotes the pages.
AWS_QUOTAS: tuple[Quota, ...] = (
    # "Combined rate of PutSecretValue, RemoveRegionsFromReplication, ReplicateSecretToRegion,
    # StopReplicationToReplica, UpdateSecret, and UpdateSecretVersionStage API requests": 50 per second in each
    # Region, not adjustable (the quotas page)
    Quota("secretsmanager", "write", 50, 1.0, "region", _QUOTAS_PAGE),
    # GetSecretValue up to 10,000 requests per second, DescribeSecret 40,000, in every Region ("AWS Secrets Manager
    # increases API requests per second limits", AWS What's New, 2025-03-04); older copies of the quotas page list
    # one combined DescribeSecret + GetSecretValue rate of 10,000/s
    Quota("secretsmanager", "get", 10_000, 1.0, "region", _WHATS_NEW_2025),
    Quota("secretsmanager", "describe", 40_000, 1.0, "region", _WHATS_NEW_2025),
    # row not verified: CreateSecret, DeleteSecret and ListSecretVersionIds were not in the copies of the quotas page
    # that could be read; modelled at the page's control-plane rate, 50 per second each (check the live page)
    Quota("secretsmanager", "create", 50, 1.0, "region", _QUOTAS_PAGE + " (row not verified: 50/s assumed)"),
    Quota("secretsmanager", "delete", 50, 1.0, "region", _QUOTAS_PAGE + " (row not verified: 50/s assumed)"),
    Quota("secretsmanager", "list_versions", 50, 1.0, "region", _QUOTAS_PAGE + " (row not verified: 50/s assumed)"),
    # TagResource and UntagResource combined: 50 per second in each Region, not adjustable (the quotas page)
    Quota("secretsmanager", "tag", 50, 1.0, "region", _QUOTAS_PAGE),
    # RotateSecret and CancelRotateSecret combined: 50 per second in each Region, not adjustable (the quotas page)
    Quota("secretsmanager", "rotate", 50, 1.0, "region", _QUOTAS_PAGE),
)

#: the quota each Secrets Manager operation (botocore's name) counts against; other operations are not charged
OPERATION_QUOTAS: dict[str, str] = {
    **dict.fromkeys(
        (
            "PutSecretValue",
            "UpdateSecret",
            "UpdateSecretVersionStage",
            "RemoveRegionsFromReplication",
            "ReplicateSecretToRegion",
            "StopReplicationToReplica",
        ),
        "write",
    ),
    "GetSecretValue": "get",
    "DescribeSecret": "describe",
    "CreateSecret": "create",
    "DeleteSecret": "delete",
    "ListSecretVersionIds": "list_versions",
    "TagResource": "tag",
    "UntagResource": "tag",
    "RotateSecret": "rotate",
    "CancelRotateSecret": "rotate",
}

#: what one publish costs on the due pass of a secret rotator already writes (see :meth:`publish_cost`)
PUBLISH_CALLS: tuple[tuple[str, int], ...] = (("write", 2), ("describe", 1), ("get", 1))


# ---- names, ARNs, regions ------------------------------------------------------------------------------

REGION_RE = re.compile(r"^[a-z]{2,}(-[a-z]+)+-\d{1,2}\Z")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}\Z")
SECRET_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):secretsmanager:(?P<region>[a-z0-9-]+):(?P<account>\d{12})"
    r":secret:(?P<name>[A-Za-z0-9/_+=.@-]{1,519})\Z"
)
_NAME_HELP = (
    "a Secrets Manager secret name (1-512 characters from A-Z a-z 0-9 / _ + = . @ -) or a secret ARN "
    "(arn:aws:secretsmanager:<region>:<12-digit account>:secret:<name>)"
)


def _check_region(value: str) -> str:
    if not REGION_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an AWS region name (like 'us-west-2' or 'eu-central-1')")
    return value


def _check_secret(value: str) -> str:
    if value.startswith("arn:"):
        m = SECRET_ARN_RE.fullmatch(value)
        if not m:
            raise ValueError(f"{value!r} is not a valid Secrets Manager ARN; expected {_NAME_HELP}")
        _check_region(m.group("region"))
        return value
    if not SECRET_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid secret; expected {_NAME_HELP}")
    return value


def arn_region(secret: str) -> str | None:
    """The region named in a secret ARN, or ``None`` for a plain name."""
    m = SECRET_ARN_RE.fullmatch(secret)
    return m.group("region") if m else None


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > 48:
        raise ValueError("at most 48 tags (Secrets Manager allows 50 and rotator adds two)")
    for k, v in tags.items():
        if not 1 <= len(k) <= 128 or len(v) > 256:
            raise ValueError(f"tag {k!r}: keys are 1-128 characters and values at most 256")
        if k.lower().startswith("aws:"):
            raise ValueError(f"tag {k!r}: the 'aws:' prefix is reserved by AWS")
        if k in (TAG_MANAGED_BY, TAG_POLICY):
            raise ValueError(f"tag {k!r} is set by rotator itself")
    return tags


# ---- version ids ---------------------------------------------------------------------------------------

#: version id = this prefix + the key id, for key ids of 24-56 characters from [A-Za-z0-9-] (uuids: 44 chars)
VERSION_PREFIX = "rotator-"
#: version id = this prefix + hex of the UTF-8 key id, padded with 'z' to 32, for other key ids up to 28 bytes
VERSION_PREFIX_HEX = "rotatorx"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9-]+")


def version_id_for(key_id: str) -> str:
    """The ``ClientRequestToken`` (and so the ``VersionId``) of the version holding ``key_id``.

    Deterministic and reversible (see :func:`key_id_of`), 32-64 characters from ``[A-Za-z0-9-]`` as Secrets
    Manager requires, and distinguishable from the random uuids other writers (the console, the CLI, native
    rotation) use. A uuid key id ``K`` gives ``rotator-K``.

    Raises ``ValueError`` for a key id that cannot be encoded (empty, or longer than 56 token characters /
    28 bytes otherwise).
    """
    if _TOKEN_CHARS.fullmatch(key_id) and 24 <= len(key_id) <= 56:
        return VERSION_PREFIX + key_id
    raw = key_id.encode().hex()
    if key_id and len(raw) <= 56:
        return (VERSION_PREFIX_HEX + raw).ljust(32, "z")
    raise ValueError(
        f"a key id of {len(key_id)} characters cannot be encoded in a Secrets Manager version id "
        "(32-64 characters of A-Z a-z 0-9 -)"
    )


def key_id_of(version_id: str) -> str | None:
    """The key id a version id names, or ``None`` for a version rotator did not write."""
    key_id: str | None = None
    if version_id.startswith(VERSION_PREFIX):
        key_id = version_id[len(VERSION_PREFIX) :]
    elif version_id.startswith(VERSION_PREFIX_HEX):
        try:
            key_id = bytes.fromhex(version_id[len(VERSION_PREFIX_HEX) :].rstrip("z")).decode()
        except ValueError:
            return None
    if key_id is None:
        return None
    try:
        return key_id if version_id_for(key_id) == version_id else None
    except ValueError:
        return None


# ---- KMS keys for replicas ---------------------------------------------------------------------------------

KMS_ARN_RE = re.compile(r"^arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<rest>.+)\Z")


def replica_kms_key(kms_key_id: str, region: str) -> str:
    """The ``KmsKeyId`` for a replica of a secret encrypted with ``kms_key_id``, in ``region``.

    KMS keys are regional. An alias (``alias/...``) names a key in each region and is passed as it is; a
    multi-Region key (id ``mrk-...``) has the same id in every region, so its ARN is rewritten for the replica's
    region. Raises ``ValueError`` for a single-Region key (a key id or key ARN): it cannot encrypt a replica
    in another region.
    """
    m = KMS_ARN_RE.fullmatch(kms_key_id)
    rest = m.group("rest") if m else kms_key_id
    if rest.startswith("alias/") or rest.removeprefix("key/").startswith("mrk-"):
        return f"arn:{m.group('partition')}:kms:{region}:{m.group('account')}:{rest}" if m else kms_key_id
    raise ValueError(
        f"kms_key_id {kms_key_id!r} is a single-Region KMS key: it cannot encrypt the replica in {region}; use an "
        "alias that exists in every replica region (alias/...) or a multi-Region key (mrk-...)"
    )


def _check_replica_kms(kms_key_id: str | None, replicas: list[str] | None) -> None:
    for r in replicas or []:
        if kms_key_id:
            replica_kms_key(kms_key_id, r)


# ---- config ----------------------------------------------------------------------------------------------


class StoreConfig(BaseModel):
    """``stores.<name>`` for ``type: aws``.

    ``region`` defaults to boto3's chain (``AWS_REGION``, the profile); ``endpoint_url`` points at a
    compatible endpoint (VPC endpoint, moto); ``max_attempts`` is the number of HTTP attempts per call,
    the first included (botocore adaptive retry mode, like ``AWS_MAX_ATTEMPTS``);
    ``kms_key_id``, ``tags`` and ``replica_regions`` apply to secrets rotator creates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["aws"]
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    max_attempts: int = 8
    timeout: Duration = Field(
        default=timedelta(seconds=REQUEST_TIMEOUT),
        description="The most one HTTP attempt may take in total, connection and whole answer included (botocore's "
        "own timeouts are per socket read); between 1s and 10m.",
    )
    kms_key_id: str | None = None
    tags: dict[str, str] = {}
    replica_regions: list[str] = []
    quotas: dict[str, str | None] = Field(
        default_factory=dict,
        description="Overrides of the documented request rates per region (write 50/1s, get 10000/1s, describe "
        '40000/1s, create, delete, list_versions, tag, rotate 50/1s), e.g. write: "25/1s" to leave room for another '
        "client; null: no limit, only refusals pace it.",
    )

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        return None if v is None else _check_region(v)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= v <= timedelta(minutes=10):
            raise ValueError("must be between 1s and 10m (e.g. 30s)")
        return v

    @field_validator("quotas")
    @classmethod
    def _quotas(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        return check_overrides(AWS_QUOTAS, v)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @field_validator("max_attempts")
    @classmethod
    def _attempts(cls, v: int) -> int:
        if not 1 <= v <= 20:
            raise ValueError("max_attempts must be between 1 and 20")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_tags(v)

    @field_validator("replica_regions")
    @classmethod
    def _replicas(cls, v: list[str]) -> list[str]:
        return [_check_region(r) for r in v]

    @model_validator(mode="after")
    def _replica_keys(self) -> StoreConfig:
        _check_replica_kms(self.kms_key_id, self.replica_regions)
        return self


class TargetOptions(BaseTargetOptions):
    """A policy target that points at an AWS store: the whole target mapping.

    ``secret`` is a secret name or ARN (an ARN fixes the region); ``region``, ``kms_key_id``, ``tags``
    (merged over the store's) and ``replica_regions`` override the store's settings; ``adopt: true`` lets
    rotator take over a secret whose current value it did not write (or that another policy manages).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = None
    kms_key_id: str | None = None
    tags: dict[str, str] | None = None
    replica_regions: list[str] | None = None
    adopt: bool = False

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        return _check_secret(v)

    @field_validator("endpoint_secret")
    @classmethod
    def _endpoint_secret(cls, v: str | None) -> str | None:
        return None if v is None else _check_secret(v)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        return None if v is None else _check_region(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _check_tags(v)

    @field_validator("replica_regions")
    @classmethod
    def _replicas(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_check_region(r) for r in v]

    @model_validator(mode="after")
    def _arn_region_matches(self) -> TargetOptions:
        in_arn = arn_region(self.secret)
        if in_arn and self.region and in_arn != self.region:
            raise ValueError(f"region {self.region!r} contradicts the secret ARN, which is in {in_arn!r}")
        _check_replica_kms(self.kms_key_id, self.replica_regions)
        return self


# ---- the store -------------------------------------------------------------------------------------------


@dataclass
class _Described:
    """What one DescribeSecret said, kept current by this store's own writes."""

    at: float
    arn: str | None
    stages: dict[str, list[str]]
    tags: dict[str, str] = field(default_factory=dict)
    rotation_lambda: str | None = None
    rotation_enabled: bool = False
    last_changed: datetime | None = None
    kms_key_id: str | None = None

    def holder(self, label: str) -> str | None:
        return next((vid for vid, labels in self.stages.items() if label in labels), None)

    def attach(self, label: str, version_id: str) -> None:
        """Mirror Secrets Manager: a label sits on one version at a time."""
        for labels in self.stages.values():
            if label in labels:
                labels.remove(label)
        self.stages.setdefault(version_id, []).append(label)

    def detach(self, label: str, version_id: str) -> None:
        labels = self.stages.get(version_id)
        if labels and label in labels:
            labels.remove(label)


class _ServiceError(Exception):
    """A ClientError from Secrets Manager, unwrapped (internal: always translated before leaving the store)."""

    def __init__(self, code: str, message: str, status: int | None, cause: BaseException) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.status = status
        self.cause = cause


_UNAVAILABLE_CODES = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "InternalServiceError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
}
_DENIED_CODES = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "IncompleteSignature",
}
_CONFLICT_CODES = {
    "InvalidRequestException",
    "InvalidParameterException",
    "ResourceExistsException",
    "PreconditionNotMetException",
    "LimitExceededException",
    "EncryptionFailure",
}


def _operation_name(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _function_arn(arn: str) -> str:
    """A Lambda function ARN without its qualifier (``arn:aws:lambda:<region>:<account>:function:<name>``)."""
    parts = arn.split(":")
    return ":".join(parts[:7]) if len(parts) >= 7 and parts[5] == "function" else arn


def _own_lambda(arn: str) -> bool:
    """Whether a secret's rotation Lambda is rotator's own rotation function: the one ``ROTATOR_LAMBDA_ARN``
    names, compared as whole ARNs (partition, region, account and name; a version or alias qualifier aside).
    A function with the same name in another account or region is someone else's."""
    allowed = os.environ.get("ROTATOR_LAMBDA_ARN")
    return bool(allowed) and _function_arn(arn) == _function_arn(allowed or "")


class AwsSecretsManagerStore(StoreBase):
    """A :class:`rotator.stores.base.SecretStore` over AWS Secrets Manager. See the module docstring.

    Thread-safe: boto3 clients are, and the describe cache is guarded by a lock.
    """

    #: promote moves AWSCURRENT with RemoveFromVersionId (refused when the label moved); Secrets Manager's own
    #: rotation calls the Lambda rotator serves (rotator.stores.base.NativeRotation)
    capabilities = StoreCapabilities(native_rotation=True)

    def __init__(
        self,
        name: str,
        config: StoreConfig,
        *,
        session: Any,
        client_kwargs: Mapping[str, Any] | None = None,
        describe_ttl: float = 60.0,
        botocore_config: Any = None,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        from botocore import exceptions as bex  # the extra is known to be installed here
        from botocore.config import Config

        self.name = name
        self.config = config
        self._session = session
        self._bex = bex
        self._client_kwargs = dict(client_kwargs or {})
        self._limits = limits if limits is not None else RateLimits()
        base = Config(
            # total_max_attempts counts the first attempt too, like AWS_MAX_ATTEMPTS (botocore's
            # "max_attempts" in this dict counts retries only). With rotator's limiter on, botocore's "standard"
            # mode: the limiter paces every worker of the process and slows the region after a refusal, and
            # "adaptive" would add a second, per-client limiter that slows one client hard after one refusal (2
            # refusals stretched a 4.2 s batch to 10.5 s, tests/test_quotas_aws.py); off, "adaptive" as before
            retries={
                "mode": "standard" if self._limits.enabled else "adaptive",
                "total_max_attempts": config.max_attempts,
            },
            user_agent_extra="rotator",
            max_pool_connections=POOL_CONNECTIONS,  # one per worker of a pass (the default, 10, queues 16)
        )
        self._botocore_config = base.merge(botocore_config) if botocore_config is not None else base
        self._describe_ttl = describe_ttl
        self._clock = clock
        self._request_timeout = config.timeout.total_seconds() if request_timeout is None else request_timeout
        self._lock = threading.Lock()
        self._clients: dict[str | None, Any] = {}
        self._sends: list[Any] = []  # the clients' bounded HTTP sends (rotator.botohttp), closed with them
        self._cache: dict[tuple[str | None, str], _Described] = {}
        # versions written under a token Secrets Manager chose (native rotation): (secret key, version) -> key id
        self._native: dict[tuple[tuple[str | None, str], str], str | None] = {}
        # versions found without a value (a rotation's AWSPENDING before createSecret): (secret key, version) -> when
        self._empty: dict[tuple[tuple[str | None, str], str], float] = {}
        #: the process's request quotas, and this store's (the documented ones, with the config's overrides)
        self._quotas = apply_overrides(AWS_QUOTAS, config.quotas)
        self._log = get_logger(store=name)

    def __repr__(self) -> str:
        return f"AwsSecretsManagerStore(name={self.name!r}, region={self.config.region!r})"

    # -- plumbing ------------------------------------------------------------------------------------------

    def _options(self, ref: TargetRef) -> TargetOptions:
        opts = ref.options
        if isinstance(opts, TargetOptions):
            return opts
        try:
            if opts is None:
                return TargetOptions(store=ref.store, secret=ref.secret)
            return TargetOptions.model_validate(opts.model_dump())
        except ValidationError as exc:
            problems = "; ".join(str(e["msg"]) for e in exc.errors())
            raise StoreError(f"invalid target: {problems}", store=self.name, secret=ref.secret) from exc

    def _region(self, ref: TargetRef, opts: TargetOptions) -> str | None:
        return opts.region or arn_region(ref.secret) or self.config.region

    def _client(self, region: str | None) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                from rotator import botohttp  # imports botocore: installed whenever a client is made

                client, send = botohttp.client(
                    "secretsmanager",
                    session=self._session,
                    region=region,
                    endpoint=self.config.endpoint_url,
                    config=self._botocore_config,
                    timeout=self._request_timeout,
                    max_body=MAX_ANSWER,
                    record_as=SERVICE,
                    limits=self._limits,
                    charges=self._charges,
                    **self._client_kwargs,
                )
                self._sends.append(send)
                self._clients[region] = client
            return client

    # -- request quotas ---------------------------------------------------------------------------------------

    def _charges(self, region: str, operation: str) -> tuple[Charge, ...]:
        """What one HTTP attempt of ``operation`` (``PutSecretValue``) in ``region`` counts against."""
        name = OPERATION_QUOTAS.get(operation)
        return () if name is None else (Charge(self._quotas[name], region),)

    def _scope_region(self, ref: TargetRef, opts: TargetOptions) -> str:
        """The region the target's requests are signed for: the one its client resolved (boto3's chain when
        neither the target nor the store names one), as :func:`rotator.botohttp.client` keys the charges."""
        region = self._region(ref, opts)
        if region is not None:
            return region
        try:
            return str(self._client(None).meta.region_name or "unknown")
        except self._bex.BotoCoreError:
            return "unknown"  # no region anywhere: the first call says so

    def publish_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """The requests one publish makes on the due pass, per quota of the target's region: inspect's
        DescribeSecret, stage's PutSecretValue (the describe is cached), the read-back's GetSecretValue, and
        promote's conditional UpdateSecretVersionStage (cached describe again): 2 writes, 1 describe, 1 get.
        Creating a missing secret adds a CreateSecret; a retry or a refused promote adds a describe and a write."""
        region = self._scope_region(ref, self._options(ref))
        return tuple((Charge(self._quotas[name], region), n) for name, n in PUBLISH_CALLS)

    def inspect_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        """One :meth:`inspect`: a DescribeSecret (a ListSecretVersionIds too only if AWS left out
        LastChangedDate, and a GetSecretValue per version written under a token Secrets Manager chose)."""
        return ((Charge(self._quotas["describe"], self._scope_region(ref, self._options(ref))), 1),)

    def _invoke(self, ref: TargetRef, opts: TargetOptions, op: str, **params: Any) -> dict[str, Any]:
        """Call ``op`` on the target's regional client. Raises _ServiceError for service errors, StoreError else."""
        bex = self._bex
        operation = _operation_name(op)
        where = {"store": self.name, "secret": ref.secret}
        try:
            client = self._client(self._region(ref, opts))
            result: dict[str, Any] = getattr(client, op)(**params)
            return result
        except bex.ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise _ServiceError(str(err.get("Code", "Unknown")), str(err.get("Message", "")), status, exc) from exc
        except (
            bex.EndpointConnectionError,
            bex.ConnectionClosedError,
            bex.ReadTimeoutError,
            bex.ConnectTimeoutError,
            bex.HTTPClientError,
        ) as exc:
            raise StoreUnavailable(
                f"Secrets Manager {operation} failed after retries: {type(exc).__name__}", **where
            ) from exc
        except bex.NoCredentialsError as exc:
            raise StorePermissionError(
                f"no AWS credentials found for secretsmanager:{operation} (set a profile, environment "
                "credentials or an instance/Lambda role)",
                **where,
            ) from exc
        except bex.NoRegionError as exc:
            raise StoreError(
                f"no AWS region for store {self.name!r}: set 'region' on the store or target, or AWS_REGION",
                **where,
            ) from exc
        except bex.ParamValidationError:
            # botocore may quote parameter values here; keep them out of the message and the chain
            raise StoreError(f"Secrets Manager {operation} request rejected by parameter validation", **where) from None
        except bex.BotoCoreError as exc:
            raise StoreError(f"Secrets Manager {operation} failed: {type(exc).__name__}", **where) from exc

    def _translate(self, err: _ServiceError, op: str, ref: TargetRef) -> StoreError:
        operation = _operation_name(op)
        where = {"store": self.name, "secret": ref.secret}
        detail = redact_text(err.message)[:300]
        if err.code in _DENIED_CODES or err.code in {"DecryptionFailure", "KMSAccessDeniedException"}:
            if "kms" in err.message.lower() or err.code == "DecryptionFailure":
                need = f"secretsmanager:{operation} plus kms:Decrypt and kms:GenerateDataKey on the secret's KMS key"
            else:
                need = f"secretsmanager:{operation}"
            return StorePermissionError(f"access denied ({err.code}): grant {need}; AWS said: {detail}", **where)
        if err.code == "ResourceNotFoundException":
            return StoreNotFound(f"Secrets Manager {operation}: not found: {detail}", **where)
        if err.code == "InvalidRequestException" and "delet" in err.message.lower():
            return StoreConflict(
                f"the secret is scheduled for deletion; restore it (aws secretsmanager restore-secret "
                f"--secret-id {ref.secret}) or point the target elsewhere ({operation}: {detail})",
                **where,
            )
        if err.code in _UNAVAILABLE_CODES or (err.status or 0) >= 500 or err.status == 429:
            return StoreUnavailable(f"Secrets Manager {operation} kept failing after retries: {err.code}", **where)
        if err.code in _CONFLICT_CODES:
            return StoreConflict(f"Secrets Manager {operation} refused ({err.code}): {detail}", **where)
        return StoreError(f"Secrets Manager {operation} failed ({err.code}): {detail}", **where)

    def _call(self, ref: TargetRef, opts: TargetOptions, op: str, **params: Any) -> dict[str, Any]:
        try:
            return self._invoke(ref, opts, op, **params)
        except _ServiceError as err:
            raise self._translate(err, op, ref) from err.cause

    def _key(self, ref: TargetRef, opts: TargetOptions) -> tuple[str | None, str]:
        return (self._region(ref, opts), ref.secret)

    def _forget(self, ref: TargetRef, opts: TargetOptions) -> None:
        with self._lock:
            self._cache.pop(self._key(ref, opts), None)

    def _cache_hit(self, ref: TargetRef, opts: TargetOptions) -> bool:
        with self._lock:
            cached = self._cache.get(self._key(ref, opts))
        return cached is not None and self._clock() - cached.at <= self._describe_ttl

    def _describe(self, ref: TargetRef, opts: TargetOptions, *, fresh: bool) -> _Described | None:
        """The secret's labels and settings: cached (if ``fresh`` is false and the cache is young) or one
        DescribeSecret. ``None`` when the secret does not exist. Raises StoreConflict for a deleted secret."""
        key = self._key(ref, opts)
        now = self._clock()
        if not fresh:
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None and now - cached.at <= self._describe_ttl:
                return cached
        try:
            resp = self._invoke(ref, opts, "describe_secret", SecretId=ref.secret)
        except _ServiceError as err:
            if err.code == "ResourceNotFoundException":
                self._forget(ref, opts)
                return None
            raise self._translate(err, "describe_secret", ref) from err.cause
        if resp.get("DeletedDate"):
            self._forget(ref, opts)
            deleted = _utc(resp["DeletedDate"])
            raise StoreConflict(
                f"the secret was scheduled for deletion on {deleted:%Y-%m-%d %H:%M} UTC; restore it with "
                f"'aws secretsmanager restore-secret --secret-id {ref.secret}' or point the target at "
                "another secret",
                store=self.name,
                secret=ref.secret,
            )
        d = _Described(
            at=now,
            arn=resp.get("ARN"),
            stages={vid: list(labels) for vid, labels in (resp.get("VersionIdsToStages") or {}).items()},
            tags={t["Key"]: t.get("Value", "") for t in resp.get("Tags") or []},
            rotation_lambda=resp.get("RotationLambdaARN") or None,
            rotation_enabled=bool(resp.get("RotationEnabled", bool(resp.get("RotationLambdaARN")))),
            last_changed=_utc(resp.get("LastChangedDate")),
            kms_key_id=resp.get("KmsKeyId"),
        )
        with self._lock:
            self._cache[key] = d
        return d

    def _check_writable(self, ref: TargetRef, opts: TargetOptions, d: _Described, action: str) -> None:
        """Refuse to write a secret that someone else rotates, owns, or last wrote (unless ``adopt``)."""
        where = {"store": self.name, "secret": ref.secret}
        if d.rotation_lambda and d.rotation_enabled:
            if _own_lambda(d.rotation_lambda):
                # one writer per secret: a pass's PutSecretValue would move AWSPENDING off the token of a native
                # rotation in flight, and its finishSecret would then fail
                raise StoreConflict(
                    f"refusing to {action}: the secret's native rotation runs rotator's rotation function "
                    f"{d.rotation_lambda}, which is its one writer; a pass only observes it, and retires and revokes "
                    "old keys after grace. Let the rotation schedule rotate it before the policy's rotate_before, or "
                    "cancel the native rotation (aws secretsmanager cancel-rotate-secret) to let passes write it",
                    **where,
                )
            raise StoreConflict(
                f"refusing to {action}: the secret's native rotation runs Lambda {d.rotation_lambda}, not "
                "rotator; cancel it (aws secretsmanager cancel-rotate-secret) or point it at rotator's "
                "rotation function (ROTATOR_LAMBDA_ARN names it by ARN)",
                **where,
            )
        if opts.adopt:
            return
        current = d.holder(CURRENT)
        if current is not None and self._key_of(ref, opts, current, d.stages.get(current, [])) is None:
            raise StoreConflict(
                f"refusing to {action}: the secret's AWSCURRENT version {current} was not written by rotator; "
                "set 'adopt: true' on the target to take the secret over",
                **where,
            )
        owner = d.tags.get(TAG_POLICY)
        if d.tags.get(TAG_MANAGED_BY) == "rotator" and owner and owner != ref.policy:
            raise StoreConflict(
                f"refusing to {action}: the secret is managed by rotator policy {owner!r}, not "
                f"{ref.policy!r}; set 'adopt: true' on the target to take it over",
                **where,
            )

    def _token(self, ref: TargetRef, key_id: str) -> str:
        skey = self._key(ref, self._options(ref))
        with self._lock:
            native = next((vid for (sk, vid), k in self._native.items() if sk == skey and k == key_id), None)
        if native is not None:
            return native
        try:
            return version_id_for(key_id)
        except ValueError as exc:
            raise StoreError(str(exc), store=self.name, secret=ref.secret) from exc

    def _warn_stale_pending(self, ref: TargetRef, d: _Described, token: str) -> None:
        holder = d.holder(PENDING)
        if holder is not None and holder != token and CURRENT not in d.stages.get(holder, []):
            self._log.warning(
                "clearing stale AWSPENDING left by an earlier unfinished rotation",
                target=ref.id,
                policy=ref.policy,
                version=holder,
                stale_key_id=key_id_of(holder),
            )

    def _create(self, ref: TargetRef, opts: TargetOptions) -> _Described:
        """Create the secret without a value (tags, KMS key, replicas); an existing one is described instead."""
        if arn_region(ref.secret) is not None:
            raise StoreNotFound(
                "the secret named by this ARN does not exist; rotator creates secrets only when a target "
                "names them by name",
                store=self.name,
                secret=ref.secret,
            )
        tags = {**self.config.tags, **(opts.tags or {}), TAG_MANAGED_BY: "rotator", TAG_POLICY: ref.policy}
        params: dict[str, Any] = {
            "Name": ref.secret,
            "Description": f"Momento API key managed by rotator (policy {ref.policy})",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        kms = opts.kms_key_id or self.config.kms_key_id
        if kms:
            params["KmsKeyId"] = kms
        replicas = opts.replica_regions if opts.replica_regions is not None else self.config.replica_regions
        if replicas:
            # a replica is encrypted with aws/secretsmanager of its region unless it names a key ("If you don't
            # include this field, Secrets Manager uses aws/secretsmanager", ReplicaRegionType in the API reference)
            try:
                params["AddReplicaRegions"] = [
                    {"Region": r, **({"KmsKeyId": replica_kms_key(kms, r)} if kms else {})} for r in replicas
                ]
            except ValueError as exc:
                raise StoreError(str(exc), store=self.name, secret=ref.secret) from exc
        try:
            resp = self._invoke(ref, opts, "create_secret", **params)
        except _ServiceError as err:
            if err.code == "ResourceExistsException":  # a concurrent pass created it first
                d = self._describe(ref, opts, fresh=True)
                if d is not None:
                    return d
            raise self._translate(err, "create_secret", ref) from err.cause
        self._log.info("created secret", target=ref.id, policy=ref.policy, arn=resp.get("ARN"))
        d = _Described(at=self._clock(), arn=resp.get("ARN"), stages={}, tags=tags, kms_key_id=kms)
        with self._lock:
            self._cache[self._key(ref, opts)] = d
        return d

    def _move_label(self, ref: TargetRef, opts: TargetOptions, d: _Described, label: str, token: str) -> None:
        params: dict[str, Any] = {"SecretId": ref.secret, "VersionStage": label, "MoveToVersionId": token}
        holder = d.holder(label)
        if holder == token:
            return
        if holder is not None:
            params["RemoveFromVersionId"] = holder
        self._invoke(ref, opts, "update_secret_version_stage", **params)
        with self._lock:
            if label == CURRENT and holder is not None:
                d.attach(PREVIOUS, holder)
            d.attach(label, token)
            if label == CURRENT:
                d.detach(PREVIOUS, token)

    def _key_of(self, ref: TargetRef, opts: TargetOptions, vid: str, labels: list[str]) -> str | None:
        """The key id a version holds: from rotator's own version id, or, for a labelled version written under
        a token Secrets Manager chose (native rotation), from its value, read once and remembered.

        A version without a value yet (the ``AWSPENDING`` version Secrets Manager creates when it starts a
        rotation, before ``createSecret`` fills it: AWS answers ``ResourceNotFoundException``) holds no key; that
        answer is remembered for ``describe_ttl`` seconds (so a pass reads it once, not at every inspect) and
        forgotten at once when the version becomes ``AWSCURRENT``, since the rotation function fills it meanwhile.
        """
        key_id = key_id_of(vid)
        if key_id is not None or not labels:
            return key_id
        ck = (self._key(ref, opts), vid)
        now = self._clock()
        with self._lock:
            if ck in self._native:
                return self._native[ck]
            seen = self._empty.get(ck)
            if seen is not None and CURRENT not in labels and now - seen <= self._describe_ttl:
                return None
        try:
            resp = self._invoke(ref, opts, "get_secret_value", SecretId=ref.secret, VersionId=vid)
        except _ServiceError as err:
            if err.code == "ResourceNotFoundException":
                with self._lock:
                    self._empty[ck] = now
                return None
            raise self._translate(err, "get_secret_value", ref) from err.cause
        text = resp.get("SecretString")
        if not isinstance(text, str) and "SecretBinary" not in resp:
            with self._lock:
                self._empty[ck] = now  # an answer without a value: the same
            return None
        key_id = payload_key_id(SecretText(text)) if isinstance(text, str) else None
        with self._lock:
            self._native[ck] = key_id  # a version's value never changes: remembered for good
            self._empty.pop(ck, None)
        return key_id

    # -- native rotation: the steps Secrets Manager asks a rotation Lambda to take -----------------------------

    def rotation_state(self, ref: TargetRef) -> tuple[dict[str, list[str]], bool, str | None]:
        """A fresh look: (version id -> labels, rotation enabled, the secret's ARN)."""
        opts = self._options(ref)
        d = self._describe(ref, opts, fresh=True)
        if d is None:
            raise StoreNotFound("the secret does not exist", store=self.name, secret=ref.secret)
        return {vid: list(labels) for vid, labels in d.stages.items()}, d.rotation_enabled, d.arn

    def put_pending(
        self,
        ref: TargetRef,
        value: SecretText,
        meta: VersionMeta,
        version_id: str,
        rotation_token: str | None = None,
    ) -> None:
        """PutSecretValue under the token Secrets Manager chose, labelled ``AWSPENDING`` (createSecret).

        ``rotation_token`` is the rotation event's ``RotationToken``; AWS requires it on the put "for secret
        rotations using an IAM assumed role or cross-account rotation" (PutSecretValue API reference). It is
        sensitive: never logged.
        """
        opts = self._options(ref)
        params: dict[str, Any] = {
            "SecretId": ref.secret,
            "SecretString": value.reveal(),
            "ClientRequestToken": version_id,
            "VersionStages": [PENDING],
        }
        if rotation_token:
            params["RotationToken"] = rotation_token
        try:
            self._invoke(ref, opts, "put_secret_value", **params)
        except _ServiceError as err:
            raise self._translate(err, "put_secret_value", ref) from err.cause
        with self._lock:
            self._native[(self._key(ref, opts), version_id)] = meta.key_id
            self._empty.pop((self._key(ref, opts), version_id), None)
        self._forget(ref, opts)

    def read_version(self, ref: TargetRef, version_id: str) -> SecretText | None:
        """The value of one version, or ``None`` when it has no value yet."""
        opts = self._options(ref)
        try:
            resp = self._invoke(ref, opts, "get_secret_value", SecretId=ref.secret, VersionId=version_id)
        except _ServiceError as err:
            if err.code == "ResourceNotFoundException":
                return None
            raise self._translate(err, "get_secret_value", ref) from err.cause
        text = resp.get("SecretString")
        return SecretText(text) if isinstance(text, str) else None

    def finish(self, ref: TargetRef, version_id: str) -> None:
        """Move ``AWSCURRENT`` to ``version_id`` (finishSecret). A no-op when it is current already."""
        opts = self._options(ref)
        d = self._describe(ref, opts, fresh=True)
        if d is None or version_id not in d.stages:
            raise StoreNotFound(f"no version {version_id}", store=self.name, secret=ref.secret)
        try:
            self._move_label(ref, opts, d, CURRENT, version_id)
        except _ServiceError as err:
            raise self._translate(err, "update_secret_version_stage", ref) from err.cause

    # -- the SecretStore protocol ----------------------------------------------------------------------------

    def inspect(self, ref: TargetRef) -> SecretState:
        """One DescribeSecret (a ListSecretVersionIds only if AWS omitted LastChangedDate).

        ``current_since`` is the secret's ``LastChangedDate``: AWS records no per-version "became current"
        time; LastChangedDate is never earlier than the move of AWSCURRENT, so grace measured from it is
        never too short (any later change to the secret only lengthens it).
        Raises StoreConflict (scheduled for deletion), StorePermissionError, StoreUnavailable.
        """
        opts = self._options(ref)
        d = self._describe(ref, opts, fresh=True)
        if d is None:
            return SecretState(exists=False)
        ids = {vid: self._key_of(ref, opts, vid, labels) for vid, labels in d.stages.items()}
        versions = tuple(
            StoredVersion(
                version=vid,
                key_id=ids[vid],
                created_at=None,
                current=CURRENT in labels,
                enabled=bool(labels),
                pending=PENDING in labels and CURRENT not in labels,
            )
            for vid, labels in d.stages.items()
        )
        current = d.holder(CURRENT)
        since: datetime | None = None
        if current is not None:
            since = d.last_changed or self._version_created(ref, opts, current)
        current_key = ids.get(current) if current else None
        return SecretState(
            exists=True,
            versions=versions,
            current_key_id=current_key,
            current_since=since,
            foreign=current is not None and current_key is None,
            native=bool(d.rotation_lambda and d.rotation_enabled and _own_lambda(d.rotation_lambda)),
        )

    def _version_created(self, ref: TargetRef, opts: TargetOptions, version_id: str) -> datetime | None:
        """When ``version_id`` was created, from ListSecretVersionIds, page by page: "If there are more results
        available, in the response, Secrets Manager includes NextToken" (ListSecretVersionIds API reference)."""
        params: dict[str, Any] = {"SecretId": ref.secret, "MaxResults": 100}
        while True:
            resp = self._call(ref, opts, "list_secret_version_ids", **params)
            for v in resp.get("Versions", []):
                if v.get("VersionId") == version_id:
                    return _utc(v.get("CreatedDate"))
            token = resp.get("NextToken")
            if not token:
                return None
            params["NextToken"] = token

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        """PutSecretValue with ``AWSPENDING`` under the key's version id; creates the secret if missing.

        Idempotent: a version that already exists for the key is left alone (re-labelled ``AWSPENDING`` if it
        lost every label). On a secret with no versions Secrets Manager makes the first version current at once.
        Raises StoreConflict (foreign value without adopt, foreign rotation Lambda, deleted secret, another
        policy's secret), StorePermissionError, StoreUnavailable.
        """
        opts = self._options(ref)
        token = self._token(ref, meta.key_id)
        for attempt in range(2):
            d = self._describe(ref, opts, fresh=attempt > 0)
            if d is None:
                d = self._create(ref, opts)
            self._check_writable(ref, opts, d, "stage a new version")
            labels = d.stages.get(token)
            try:
                if labels is not None:
                    if CURRENT not in labels and PENDING not in labels:
                        self._warn_stale_pending(ref, d, token)
                        self._move_label(ref, opts, d, PENDING, token)
                    return
                self._warn_stale_pending(ref, d, token)
                resp = self._invoke(
                    ref,
                    opts,
                    "put_secret_value",
                    SecretId=ref.secret,
                    SecretString=value.reveal(),
                    ClientRequestToken=token,
                    VersionStages=[PENDING],
                )
            except _ServiceError as err:
                if attempt == 0 and err.code in {
                    "ResourceExistsException",
                    "ResourceNotFoundException",
                    "InvalidParameterException",
                }:
                    self._forget(ref, opts)  # the cache was stale: look again
                    continue
                raise self._translate(err, "put_secret_value", ref) from err.cause
            # Missing or empty VersionStages means "no labels" (never "AWSPENDING, as asked"): AWS answers a put
            # under a token that is already a version with the same value without VersionStages ("the operation
            # succeeds but does nothing", PutSecretValue API reference), and DescribeSecret leaves such a version
            # out when it has no labels ("versions that don't have staging labels are considered deprecated").
            written = list(resp.get("VersionStages") or [])
            if not written:
                self._relabel_existing(ref, opts, token, meta.key_id)
                return
            with self._lock:
                for label in written:
                    d.attach(label, token)
            self._log.info(
                "staged new version",
                target=ref.id,
                policy=ref.policy,
                key_id=meta.key_id,
                version=token,
                labels=written,
            )
            if CURRENT not in written and PENDING not in written:
                self._relabel_existing(ref, opts, token, meta.key_id)
            return

    def _relabel_existing(self, ref: TargetRef, opts: TargetOptions, token: str, key_id: str) -> None:
        """The put found the key's version already there and did nothing: look at its labels again, and put
        ``AWSPENDING`` back with UpdateSecretVersionStage when it has neither it nor ``AWSCURRENT`` (a retired,
        deprecated version being published again: two passes racing, or an endpoint going A -> B -> A)."""
        self._forget(ref, opts)
        d = self._describe(ref, opts, fresh=True)
        if d is None:
            raise StoreNotFound("the secret vanished while staging", store=self.name, secret=ref.secret)
        labels = d.stages.get(token, [])
        if CURRENT in labels or PENDING in labels:
            return
        self._warn_stale_pending(ref, d, token)
        try:
            self._move_label(ref, opts, d, PENDING, token)
        except _ServiceError as err:
            raise self._translate(err, "update_secret_version_stage", ref) from err.cause
        self._log.info(
            "labelled an existing version AWSPENDING again",
            target=ref.id,
            policy=ref.policy,
            key_id=key_id,
            version=token,
        )

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        """GetSecretValue by the key's version id.

        Raises StoreNotFound (no such version, or it is retired: no labels left), StoreIntegrityError (binary
        value), StoreConflict (deleted secret), StorePermissionError, StoreUnavailable.
        """
        opts = self._options(ref)
        token = self._token(ref, key_id)
        where = {"store": self.name, "secret": ref.secret}
        try:
            resp = self._invoke(ref, opts, "get_secret_value", SecretId=ref.secret, VersionId=token)
        except _ServiceError as err:
            if err.code == "ResourceNotFoundException":
                raise StoreNotFound(f"no version holds key {key_id}", **where) from err.cause
            raise self._translate(err, "get_secret_value", ref) from err.cause
        if not resp.get("VersionStages"):
            raise StoreNotFound(f"the version holding key {key_id} is retired (no staging labels)", **where)
        if "SecretString" not in resp:
            raise StoreIntegrityError(f"the version holding key {key_id} has no text value", **where)
        return SecretText(resp["SecretString"])

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        """Move ``AWSCURRENT`` to the key's version: ``UpdateSecretVersionStage(MoveToVersionId=<new>,
        RemoveFromVersionId=<the version now current>)``; Secrets Manager moves ``AWSPREVIOUS`` to the old one.

        A no-op when the key is already current. Naming the version the label leaves makes every move
        conditional: AWS documents for ``RemoveFromVersionId`` that "if the label is attached and you either do
        not specify this parameter, or the version ID does not match, then the operation fails" (Secrets
        Manager API Reference, UpdateSecretVersionStage), so a move made from a stale view changes nothing.

        ``expect_current=ANY_CURRENT``: after such a refusal the store looks again and moves the label from
        whatever is current then (once). Otherwise (compare-and-set) the move is made only if the current
        version holds ``expect_current`` (a key id, or ``None``: no current version, or a value rotator did not
        write); a cached view that disagrees is looked at again before refusing. After a refusal, or an
        ambiguous failure (connection reset, 5xx after botocore's retries: the move may or may not have been
        made), the store reads the labels again and decides: the key is current (our move went through, or
        another pass made the same one): done; the current version holds something else: StorePreconditionFailed;
        still the expected key after a refusal: the move is tried once more from the version now current, which
        is conditional again; still the expected key after an ambiguous failure: StoreUnavailable (nothing moved).

        Raises StoreNotFound (nothing staged for the key), StorePreconditionFailed, StoreConflict (foreign value
        without adopt, a rotation Lambda writes the secret, deleted), StorePermissionError, StoreUnavailable.
        """
        opts = self._options(ref)
        token = self._token(ref, key_id)
        checked = expect_current is not ANY_CURRENT
        for attempt in range(2):
            cached = attempt == 0 and self._cache_hit(ref, opts)
            d = self._describe(ref, opts, fresh=attempt > 0)
            labels = None if d is None else d.stages.get(token)
            if d is None or labels is None:
                if cached:
                    continue  # maybe staged by another pass since we looked: look again
                if checked and d is not None:
                    held = self._held_by(ref, opts, d, d.holder(CURRENT))
                    if held != expect_current:
                        # the compare-and-set comes first: another writer moved the target on, and staging its
                        # own key took AWSPENDING off ours (a version left with no label is deprecated, and AWS
                        # lists it no more): the target changed, which is not "nothing staged"
                        raise self._precondition_failed(ref, key_id, held, expect_current)
                raise StoreNotFound(f"nothing is staged for key {key_id}", store=self.name, secret=ref.secret)
            if CURRENT in labels:
                return
            self._check_writable(ref, opts, d, "promote")
            old = d.holder(CURRENT)
            if checked:
                held = self._held_by(ref, opts, d, old)
                if held != expect_current:
                    if cached:
                        continue  # the cached view may be behind: look again before refusing
                    raise self._precondition_failed(ref, key_id, held, expect_current)
            try:
                self._move_label(ref, opts, d, CURRENT, token)
            except _ServiceError as err:
                translated = self._translate(err, "update_secret_version_stage", ref)
                if isinstance(translated, StoreUnavailable):
                    self._decide_after_ambiguous(ref, opts, token, key_id, expect_current, translated, err.cause)
                    return
                if attempt == 0 and err.code in {
                    "InvalidParameterException",  # RemoveFromVersionId no longer holds AWSCURRENT (moto, AWS)
                    "InvalidRequestException",
                    "ResourceNotFoundException",
                }:
                    self._forget(ref, opts)  # AWSCURRENT moved under us, or the version vanished: look again
                    continue
                raise translated from err.cause
            except StoreUnavailable as exc:
                self._decide_after_ambiguous(ref, opts, token, key_id, expect_current, exc, exc.__cause__)
                return
            self._log.info(
                "promoted version to AWSCURRENT",
                target=ref.id,
                policy=ref.policy,
                key_id=key_id,
                version=token,
                previous=old,
            )
            return

    def _held_by(self, ref: TargetRef, opts: TargetOptions, d: _Described, version_id: str | None) -> str | None:
        """The key id the (current) version ``version_id`` holds; ``None`` for no version or a foreign value."""
        if version_id is None:
            return None
        return self._key_of(ref, opts, version_id, d.stages.get(version_id, []))

    def _precondition_failed(self, ref: TargetRef, key_id: str, held: str | None, expected: Expect) -> StoreError:
        return StorePreconditionFailed(
            f"not promoting key {key_id}: the current version holds key {held or 'none'}, "
            f"not {expected or 'none'} as read before",
            store=self.name,
            secret=ref.secret,
        )

    def _decide_after_ambiguous(
        self,
        ref: TargetRef,
        opts: TargetOptions,
        token: str,
        key_id: str,
        expect_current: Expect,
        error: StoreError,
        cause: BaseException | None,
    ) -> None:
        """After an UpdateSecretVersionStage whose outcome is unknown: read the labels again and decide.

        Returns when the key is current (the move was made); raises StorePreconditionFailed when another
        version than the expected one is current, and ``error`` when the expected one still is (nothing moved).
        Never sends the move again: a next pass plans afresh.
        """
        self._forget(ref, opts)
        try:
            d = self._describe(ref, opts, fresh=True)
        except StoreError:
            raise error from cause
        labels = None if d is None else d.stages.get(token)
        if d is not None and labels is not None and CURRENT in labels:
            self._log.info(
                "promoted version to AWSCURRENT (confirmed by a second look after an unanswered call)",
                target=ref.id,
                policy=ref.policy,
                key_id=key_id,
                version=token,
            )
            return
        if expect_current is not ANY_CURRENT and d is not None:
            held = self._held_by(ref, opts, d, d.holder(CURRENT))
            if held != expect_current:
                raise self._precondition_failed(ref, key_id, held, expect_current) from cause
        raise error from cause

    def retire(self, ref: TargetRef, key_id: str) -> None:
        """Remove ``AWSPREVIOUS`` and ``AWSPENDING`` from the key's version, leaving it deprecated.

        Never moves AWSCURRENT (retiring the current key is a StoreConflict), never deletes. A no-op for an
        absent or already unlabelled version. Other (custom) labels are left alone: someone pinned the version
        on purpose. Retiring the old key means the rotation is over, so this also removes the ``AWSPENDING``
        that :meth:`promote` left on the current version (one more call, once per rotation).
        """
        opts = self._options(ref)
        token = self._token(ref, key_id)
        for attempt in range(2):
            d = self._describe(ref, opts, fresh=attempt > 0)
            labels = None if d is None else d.stages.get(token)
            if d is None or not labels:
                return
            if CURRENT in labels:
                raise StoreConflict(
                    f"refusing to retire key {key_id}: its version is AWSCURRENT", store=self.name, secret=ref.secret
                )
            current = d.holder(CURRENT)
            removals = [(label, token) for label in (PREVIOUS, PENDING) if label in labels]
            if current is not None and PENDING in d.stages.get(current, []):
                # the rotation that made `current` is over: tidy the AWSPENDING promote left on it
                removals.append((PENDING, current))
            try:
                for label, version in removals:
                    self._invoke(
                        ref,
                        opts,
                        "update_secret_version_stage",
                        SecretId=ref.secret,
                        VersionStage=label,
                        RemoveFromVersionId=version,
                    )
                    with self._lock:
                        d.detach(label, version)
            except _ServiceError as err:
                if attempt == 0 and err.code == "InvalidParameterException":
                    self._forget(ref, opts)  # the label moved since we looked
                    continue
                raise self._translate(err, "update_secret_version_stage", ref) from err.cause
            self._log.info("retired version", target=ref.id, policy=ref.policy, key_id=key_id, version=token)
            return

    def close(self) -> None:
        """Close the HTTP connection pools. Idempotent."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            sends, self._sends = self._sends, []
            self._cache.clear()
            self._empty.clear()
        for client in clients:
            client.close()
        for send in sends:
            send.close()


def open_store(
    name: str,
    config: StoreConfig | Mapping[str, Any] | BaseModel,
    *,
    session: Any = None,
    describe_ttl: float = 60.0,
    botocore_config: Any = None,
    request_timeout: float | None = None,
    limits: RateLimits | None = None,
    **client_kwargs: Any,
) -> AwsSecretsManagerStore:
    """Open the AWS store ``name``.

    ``session`` is a ``boto3.session.Session`` (default: a new one with the configured profile);
    ``botocore_config`` (a ``botocore.config.Config``) is merged over rotator's retry settings;
    ``request_timeout``: seconds one HTTP attempt may take in total (default: the config's ``timeout``);
    ``limits``: the process's request quotas (the runtime's, from the StoreContext; default: the store's own);
    ``client_kwargs`` go to ``session.client("secretsmanager", ...)``. Raises MissingExtraError without boto3.
    """
    try:
        import boto3
    except ImportError as exc:
        raise MissingExtraError("aws", "boto3") from exc
    if not isinstance(config, StoreConfig):
        config = StoreConfig.model_validate(config.model_dump() if isinstance(config, BaseModel) else config)
    if session is None:
        session = boto3.session.Session(profile_name=config.profile)
    return AwsSecretsManagerStore(
        name,
        config,
        session=session,
        client_kwargs=client_kwargs,
        describe_ttl=describe_ttl,
        botocore_config=botocore_config,
        request_timeout=request_timeout,
        limits=limits,
    )


def _open(spec: StoreSpec, context: StoreContext) -> SecretStore:
    return open_store(spec.name, spec.config, **{"limits": context.limits, **context.options})


#: the ``aws`` store type, registered under the entry point group ``rotator.stores``
STORE_TYPE = StoreType(
    name="aws",
    config=StoreConfig,
    target=TargetOptions,
    open=_open,
    capabilities=AwsSecretsManagerStore.capabilities,
    extra="aws",
    sdk="boto3",
)
