"""The ``lambda`` reload target: a configuration update of AWS Lambda functions (extra ``momento-rotator[aws]``).

``reload: [{type: lambda, functions: [checkout-worker, billing-api], variable: MOMENTO_KEY_ID}]``. Each
function is one unit. A function that reads its key when an execution environment starts (the init phase)
keeps the old key in every warm environment; a configuration update makes Lambda start new environments for
the invocations that follow (the ones in flight finish on the old configuration).

**Restart**: a read-modify-write of the function's environment: ``GetFunctionConfiguration``, then
``UpdateFunctionConfiguration(FunctionName, Environment={"Variables": <every variable read, unchanged, plus
variable=<key id>>}, RevisionId=<the RevisionId just read>)``. The variable holds the key's **id**, never the
key. ``RevisionId`` makes the update a compare-and-set ("update the function only if the revision ID matches
the ID that's specified"): a function changed since it was read fails with ``PreconditionFailedException``, and
one with an update still running with ``ResourceConflictException`` ("An update is in progress"); both are
:class:`rotator.errors.ReloadConflict` (the next pass reads it again). Without a ``RevisionId`` in the answer
(an endpoint that is not Lambda) nothing is written: an unconditional write could drop a variable someone else
set meanwhile. A function whose environment cannot be read (``Environment.Error``: no ``kms:Decrypt`` on its
KMS key) is never written either, for the same reason.

**Observed state**, one ``GetFunctionConfiguration`` per function: ``Environment.Variables[variable]`` other
than the key id: ``pending``; equal to it: by ``LastUpdateStatus`` (Lambda function states: "InProgress: an
update is happening on an existing function; while it is in progress, invocations go to the function's previous
code and configuration", "Successful: the update has completed", "Failed: the function update has failed; Lambda
aborts the update and the function's previous code and configuration remain available"): ``rolling``,
``done``, ``failed`` (the detail carries ``LastUpdateStatusReasonCode`` only: the reason text is AWS's and is
not repeated). ``since`` is ``LastModified``. ``observe`` never raises: a function that cannot be read is
``unknown`` with the permission to grant.

**No value leaves this module**: other variables may hold secrets. Only variable *names*, the key id, AWS error
codes and the function's name reach a log line, a status or an exception; Lambda's error messages are left out
(and the botocore exception they came in is not chained), since a message could quote the request.

IAM: ``lambda:GetFunctionConfiguration`` and ``lambda:UpdateFunctionConfiguration`` on the functions; for an
environment encrypted with a customer managed KMS key also ``kms:Decrypt`` (to read it) and ``kms:Encrypt`` /
``kms:CreateGrant`` (to write it) on that key. Calls: one per function per observe, two per reload; counted by
:func:`rotator.observability.record_call` (service ``lambda``) after every HTTP attempt, each bounded by
:func:`rotator.botohttp.bound`.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator.errors import MissingExtraError, ReloadConflict, ReloadError, RotatorError
from rotator.model import ReloadState, ReloadStatus
from rotator.observability import get_logger
from rotator.pickup.base import Timeout
from rotator.reload.base import ReloadCapabilities, ReloadContext

SERVICE = "lambda"
#: bytes of answer read at most: a function configuration (4 KiB of environment, layers, VPC) is a few KiB
MAX_ANSWER = 1024 * 1024
#: HTTP attempts per call, the first included (botocore adaptive retry mode)
MAX_ATTEMPTS = 5
#: connections kept open to the endpoint: as many as ``reload_max_parallel`` may start at once
POOL_CONNECTIONS = 100

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_REGION_RE = re.compile(r"^[a-z]{2,}(-[a-z]+)+-\d{1,2}\Z")
#: arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>], or the partial <account>:function:<name>
_ARN_RE = re.compile(
    r"^(?:arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):)?(?P<account>\d{12}):function:(?P<name>[A-Za-z0-9_-]{1,64})"
    r"(?::(?P<qualifier>[A-Za-z0-9$_-]{1,128}))?\Z"
)
#: Lambda: "keys start with a letter and are at least two characters"; letters, digits and underscores
_VARIABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]+\Z")
_NAMING = "1-64 letters, digits, hyphens and underscores"

log = get_logger()


def _shown(value: str) -> str:
    return repr(value[:80] + ("..." if len(value) > 80 else ""))


class ReloadConfig(BaseModel):
    """``{type: lambda, functions: [...], region, endpoint_url, timeout, variable}``.

    Each of ``functions`` is a function name, a full ARN or a partial ARN (``<account>:function:<name>``),
    without a version or alias: only the unpublished ``$LATEST`` configuration can change. ``region`` defaults
    to an ARN's region, then to boto3's chain; ``variable`` is the environment variable that carries the key id.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["lambda"]
    functions: list[str] = Field(min_length=1)
    region: str | None = None
    endpoint_url: str | None = None
    timeout: Timeout = 10.0
    variable: str = "MOMENTO_KEY_ID"

    @field_validator("functions")
    @classmethod
    def _functions(cls, v: list[str]) -> list[str]:
        for f in v:
            m = _ARN_RE.fullmatch(f)
            if m is None and not _NAME_RE.fullmatch(f):
                raise ValueError(
                    f"{_shown(f)} is not a Lambda function name ({_NAMING}) or function ARN "
                    "(arn:aws:lambda:<region>:<12-digit account>:function:<name>)"
                )
            if m is not None and m.group("qualifier") and m.group("qualifier") != "$LATEST":
                raise ValueError(
                    f"{_shown(f)} names version or alias {m.group('qualifier')!r}: a published version's "
                    "configuration cannot change; name the function itself (its $LATEST), and publish a version "
                    "and move the alias after the update if consumers invoke an alias"
                )
        names = [function_name(f) for f in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"names function {', '.join(twice)} twice")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not _REGION_RE.fullmatch(v):
            raise ValueError(f"{_shown(v)} is not an AWS region name (like 'us-west-2' or 'eu-central-1')")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @field_validator("variable")
    @classmethod
    def _variable(cls, v: str) -> str:
        if not _VARIABLE_RE.fullmatch(v) or len(v) > 128:
            raise ValueError(
                f"{_shown(v)} is not an environment variable name Lambda accepts (a letter, then letters, digits "
                "and underscores; at least two characters)"
            )
        if v.upper().startswith("AWS_") or v.startswith("_"):
            raise ValueError(f"{_shown(v)} is reserved by Lambda (names starting with AWS_ or _ are its own)")
        return v

    @model_validator(mode="after")
    def _one_region(self) -> ReloadConfig:
        regions = {r for r in (_arn_region(f) for f in self.functions) if r}
        if self.region is not None and regions - {self.region}:
            raise ValueError(f"region {self.region!r} contradicts the ARNs, which are in {', '.join(sorted(regions))}")
        if len(regions) > 1:
            raise ValueError(f"the ARNs name several regions ({', '.join(sorted(regions))}): use one target per region")
        return self

    @property
    def client_region(self) -> str | None:
        """The region to call: ``region``, else the one the ARNs name, else None (boto3's chain decides)."""
        return self.region or next((r for r in (_arn_region(f) for f in self.functions) if r), None)


def function_name(function: str) -> str:
    """The name of a function given by name or ARN."""
    m = _ARN_RE.fullmatch(function)
    return m.group("name") if m else function


def _arn_region(function: str) -> str | None:
    m = _ARN_RE.fullmatch(function)
    return m.group("region") if m and m.group("region") else None


def _unqualified(function: str) -> str:
    """A function ARN without a ``:$LATEST`` qualifier (a name is returned as it is)."""
    m = _ARN_RE.fullmatch(function)
    return function[: -len(":$LATEST")] if m and m.group("qualifier") == "$LATEST" else function


def parse_last_modified(value: Any) -> datetime | None:
    """Lambda's ``LastModified`` (ISO 8601, ``2024-05-01T12:00:00.000+0000``) as an aware datetime, or None."""
    if not isinstance(value, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(value, fmt).astimezone(UTC)
        except ValueError:
            continue
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def update_state(configuration: dict[str, Any]) -> tuple[ReloadState, str]:
    """(state, detail) of a function whose variable already holds the key id, from ``LastUpdateStatus``."""
    status = configuration.get("LastUpdateStatus")
    if status == "InProgress":
        return "rolling", "update in progress (LastUpdateStatus InProgress)"
    if status == "Failed":
        code = configuration.get("LastUpdateStatusReasonCode")
        # the reason code only: LastUpdateStatusReason is free text from AWS
        return "failed", f"the update failed (LastUpdateStatus Failed, {code or 'no reason code'})"
    if status in ("Successful", None):
        # None: an endpoint without function states; the configuration it shows is the one that serves
        state = configuration.get("State")
        if state == "Failed":
            return (
                "failed",
                f"the function is in state Failed ({configuration.get('StateReasonCode') or 'no reason code'})",
            )
        return "done", "update complete (LastUpdateStatus Successful)" if status else "updated"
    return "unknown", f"LastUpdateStatus {str(status)[:40]!r} is not one rotator knows"


class _ServiceError(Exception):
    """A ClientError from Lambda: its code and status only (internal: always translated)."""

    def __init__(self, code: str, status: int | None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


_DENIED = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "IncompleteSignature",
}
_KMS = {
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
}


class LambdaReload:
    """The ``lambda`` reload target of one policy. Thread-safe (boto3 clients are; the rest is under a lock)."""

    type = "lambda"
    capabilities = ReloadCapabilities(observable=True, rollout=True)

    def __init__(self, config: ReloadConfig, context: ReloadContext) -> None:
        self.config = config
        self._region = config.client_region
        self.name = f"lambda:{self._region or 'default'}"
        #: unit (function name) -> the name or ARN the config gave, sent as it is
        self._refs = {function_name(f): _unqualified(f) for f in config.functions}
        self._session = context.injected.get("session")
        self._endpoint = config.endpoint_url or context.injected.get("endpoint_url")
        self._lock = threading.Lock()
        self._client: Any = None
        self._send: Any = None
        #: unit -> the RevisionId the last observe read (a cache for compare-and-set, never state)
        self._seen: dict[str, str] = {}

    # -- observe -----------------------------------------------------------------------------------------

    def observe(self, key_id: str, published_at: datetime) -> list[ReloadStatus]:
        out: list[ReloadStatus] = []
        for unit in self._refs:
            try:
                cfg = self._call("get_function_configuration", FunctionName=self._refs[unit])
            except (_ServiceError, RotatorError) as exc:
                detail = self._explain(exc, "GetFunctionConfiguration", unit)
                out.append(self._status(unit, key_id, "unknown", detail=detail))
                continue
            revision = cfg.get("RevisionId")
            if isinstance(revision, str):
                with self._lock:
                    self._seen[unit] = revision
            env = cfg.get("Environment") or {}
            if env.get("Error"):
                out.append(self._status(unit, key_id, "unknown", detail=self._env_error(env)))
                continue
            variables = env.get("Variables") or {}
            if variables.get(self.config.variable) != key_id:
                # never the variable's value: only whether it is the key id
                held = "unset" if self.config.variable not in variables else "another key id"
                detail = f"{self.config.variable} is {held}"
                out.append(self._status(unit, key_id, "pending", detail=detail))
                continue
            state, detail = update_state(cfg)
            since = parse_last_modified(cfg.get("LastModified"))
            out.append(self._status(unit, key_id, state, since, detail))
        return out

    def _status(
        self, unit: str, key_id: str, state: ReloadState, since: datetime | None = None, detail: str = ""
    ) -> ReloadStatus:
        return ReloadStatus(self.name, unit, self.type, key_id, state, since, detail)

    @staticmethod
    def _env_error(env: dict[str, Any]) -> str:
        code = str((env.get("Error") or {}).get("ErrorCode") or "unknown error")[:80]
        return (
            f"Lambda cannot show the function's environment ({code}): grant kms:Decrypt on the function's KMS "
            "key; rotator never writes an environment it could not read"
        )

    # -- reload ------------------------------------------------------------------------------------------

    def reload(self, unit: str, key_id: str, expires_at: datetime | None, published_at: datetime) -> None:
        """Set ``variable`` to ``key_id`` in the function's environment, keeping every other variable, as a
        compare-and-set on the RevisionId just read. Raises ReloadConflict (changed or busy), ReloadError."""
        if unit not in self._refs:
            raise ReloadError("not a function of this reload target", target=self.name, unit=unit)
        ref = self._refs[unit]
        try:
            cfg = self._call("get_function_configuration", FunctionName=ref)
        except (_ServiceError, RotatorError) as exc:
            raise ReloadError(
                self._explain(exc, "GetFunctionConfiguration", unit), target=self.name, unit=unit
            ) from None
        revision = cfg.get("RevisionId")
        if not isinstance(revision, str) or not revision:
            raise ReloadError(
                "the function configuration has no RevisionId: an update could not be conditional, so none is made",
                target=self.name,
                unit=unit,
            )
        with self._lock:
            seen = self._seen.get(unit)
        if seen is not None and seen != revision:
            raise ReloadConflict("the function changed since it was observed (RevisionId)", target=self.name, unit=unit)
        env = cfg.get("Environment") or {}
        if env.get("Error"):
            raise ReloadError(self._env_error(env), target=self.name, unit=unit)
        variables = env.get("Variables") or {}
        if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
            raise ReloadError("the function's environment is not a map of strings", target=self.name, unit=unit)
        if variables.get(self.config.variable) == key_id and cfg.get("LastUpdateStatus") != "Failed":
            raise ReloadConflict(
                f"{self.config.variable} already holds key id {key_id}: not updating again", target=self.name, unit=unit
            )
        updated = {**variables, self.config.variable: key_id}
        try:
            resp = self._call(
                "update_function_configuration",
                FunctionName=ref,
                Environment={"Variables": updated},
                RevisionId=revision,
            )
        except _ServiceError as exc:
            if exc.code in ("PreconditionFailedException", "ResourceConflictException"):
                why = "changed since it was read" if exc.code == "PreconditionFailedException" else "is being updated"
                raise ReloadConflict(f"the function {why} ({exc.code})", target=self.name, unit=unit) from None
            raise ReloadError(
                self._explain(exc, "UpdateFunctionConfiguration", unit), target=self.name, unit=unit
            ) from None
        except RotatorError as exc:
            raise ReloadError(
                self._explain(exc, "UpdateFunctionConfiguration", unit), target=self.name, unit=unit
            ) from None
        new = resp.get("RevisionId")
        with self._lock:
            if isinstance(new, str):
                self._seen[unit] = new
            else:
                self._seen.pop(unit, None)
        log.info(
            "lambda configuration updated", reload=f"{self.name}/{unit}", key_id=key_id, variable=self.config.variable
        )

    # -- plumbing ----------------------------------------------------------------------------------------

    def _explain(self, exc: BaseException, operation: str, unit: str) -> str:
        """Why a call failed: the code and the permission to grant. Never Lambda's message (see the module)."""
        if not isinstance(exc, _ServiceError):
            return str(exc)
        if exc.code in _DENIED:
            return f"access denied ({exc.code}): grant lambda:{operation} on function {self._refs[unit]}"
        if exc.code in _KMS:
            need = "kms:Decrypt" if operation.startswith("Get") else "kms:Encrypt and kms:CreateGrant"
            return f"Lambda could not use the function's KMS key ({exc.code}): grant {need} on it"
        if exc.code == "ResourceNotFoundException":
            return f"function {self._refs[unit]} not found ({operation})"
        if (
            exc.code in {"TooManyRequestsException", "ServiceException"}
            or (exc.status or 0) >= 500
            or exc.status == 429
        ):
            return f"Lambda {operation} kept failing after retries ({exc.code})"
        return f"Lambda {operation} failed ({exc.code})"

    def _lambda(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from rotator import botohttp  # imports botocore: installed whenever a client is made
                except ImportError as exc:
                    raise MissingExtraError("aws", "boto3") from exc
                self._client, self._send = botohttp.client(
                    "lambda",
                    session=self._session,
                    region=self._region,
                    endpoint=self._endpoint,
                    config=botohttp.retry_config(MAX_ATTEMPTS, POOL_CONNECTIONS),
                    timeout=self.config.timeout,
                    max_body=MAX_ANSWER,
                    record_as=SERVICE,
                )
            return self._client

    def _call(self, op: str, **params: Any) -> dict[str, Any]:
        """One Lambda call. Raises _ServiceError (code and status only) for an answered error, ReloadError else.

        No botocore exception is chained: a ClientError's text is Lambda's message, a ParamValidationError's may
        quote the parameters (the environment)."""
        try:
            from botocore import exceptions as bex
        except ImportError as exc:
            raise MissingExtraError("aws", "boto3") from exc
        operation = "".join(p.capitalize() for p in op.split("_"))
        failure: str | None = None
        code, status = "Unknown", None
        try:
            result: dict[str, Any] = getattr(self._lambda(), op)(**params)
            return result
        except bex.ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(err.get("Code", "Unknown"))[:80]
        except bex.NoCredentialsError:
            failure = (
                f"no AWS credentials found for lambda:{operation} (set a profile, environment credentials or an "
                "instance/task/Lambda role)"
            )
        except bex.NoRegionError:
            failure = "no AWS region: set 'region' on the lambda reload target, or AWS_REGION"
        except bex.ParamValidationError:
            failure = f"Lambda {operation} request rejected by parameter validation"
        except bex.BotoCoreError as exc:
            failure = f"Lambda {operation} failed after retries: {type(exc).__name__}"
        # raised outside the handlers, so that no botocore exception is attached as the context either
        if failure is not None:
            raise ReloadError(failure)
        raise _ServiceError(code, status)

    def close(self) -> None:
        """Close the HTTP connection pools. Idempotent."""
        with self._lock:
            client, send, self._client, self._send = self._client, self._send, None, None
        if client is not None:
            client.close()
        if send is not None:
            send.close()



def open_target(config: BaseModel, context: ReloadContext) -> LambdaReload:
    """A :class:`LambdaReload`; the boto3 client is made at the first call (``context.injected``: ``session``,
    a ``boto3.session.Session``; ``endpoint_url``, used when the config names none). Raises MissingExtraError
    without boto3."""
    cfg = config if isinstance(config, ReloadConfig) else ReloadConfig.model_validate(config.model_dump())
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("aws", "boto3") from exc
    return LambdaReload(cfg, context)
