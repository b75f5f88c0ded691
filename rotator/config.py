"""Typed configuration: the issuer, named stores, defaults and policies. Every error is reported at once.

Loading goes in two steps so that a config is fully checked before anything is touched:
1. the YAML shape, with pydantic (``RawConfig``); store and target mappings are kept as plain dicts;
2. each store is checked by its backend's ``StoreConfig``, each target by its store's ``TargetOptions``
   (this imports the backend module but never its cloud SDK), and the timing rules of DESIGN section 5.
All problems are gathered into one :class:`ConfigError` whose lines read ``<path>: <what is wrong and the fix>``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rotator.durations import MAX_DURATION as MAX_DURATION
from rotator.durations import Duration as Duration
from rotator.durations import RotateBefore as RotateBefore
from rotator.durations import format_duration as format_duration
from rotator.durations import parse_duration as parse_duration
from rotator.errors import ConfigError, ConfigIssue, KeyFormatError
from rotator.keys import SECRET_HINT, PayloadFormat, check_endpoint, momento_keys_in, shown  # noqa: F401
from rotator.keys import describe_secrets as redact_secrets
from rotator.model import KEY_DESCRIPTION_MAX
from rotator.stores import registry as store_registry
from rotator.stores.base import BaseTargetOptions
from rotator.stores.base import StoreSpec as StoreSpec
from rotator.windows import Freeze, WindowConfig

# re-exported for the import paths that predate rotator.durations and rotator.keys.describe_secrets
__all__ = ["MAX_DURATION", "Duration", "RotateBefore", "format_duration", "parse_duration", "redact_secrets"]


def _key_here(what: str) -> str:
    return (
        f"holds {what}, and a key does not belong in a config file: put it in an environment variable or a "
        "file and point to it with {env: VAR} or {file: PATH} (issuer.management_key), then revoke it if "
        "this file was shared"
    )


def _keys_in_config(data: Any, issues: list[ConfigIssue]) -> None:
    """A Momento key anywhere in the config (value or mapping key) is an error naming where, never the key:
    a config file is no place for one ({env: VAR}, {file: PATH} and {store: ...} sources read them)."""
    stack: list[tuple[str, Any]] = [("", data)]
    seen: set[int] = set()
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict | list):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            children = []
            for k, v in items:
                if isinstance(value, list):
                    children.append((f"{path}[{k}]", v))
                    continue
                name = str(k)
                found = momento_keys_in(name)
                if found:
                    name = f"<{found[0]}>"
                    issues.append(ConfigIssue(f"{path}.{name}" if path else name, _key_here(found[0])))
                children.append((f"{path}.{name}" if path else name, v))
            stack.extend(reversed(children))
        elif isinstance(value, str):
            found = momento_keys_in(value)
            if found:
                issues.append(ConfigIssue(path or "(top level)", _key_here(found[0])))


# ---- the raw shape ------------------------------------------------------------------------------------------


POLICY_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
FORMATS = ("json", "env", "key")


class SecretSource(BaseModel):
    """Where a secret (the management key) comes from: an env var, a file, or a configured store."""

    model_config = ConfigDict(extra="forbid")

    env: str | None = None
    file: str | None = None
    store: str | None = None
    secret: str | None = None
    format: Literal["json", "env", "key"] = "json"
    #: with ``store``: the env var to use while the store holds no key rotator wrote (first start of self: true)
    bootstrap_env: str | None = None

    @field_validator("env", "bootstrap_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", v):
            raise ValueError(f"{shown(v)} is not an environment variable name: write one like MOMENTO_API_KEY")
        return v

    def model_post_init(self, __context: Any) -> None:
        given = [k for k in ("env", "file", "store") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or store (with secret), e.g. {env: MOMENTO_API_KEY}")
        if self.store and not self.secret:
            raise ValueError("a management key read from a store needs `secret:` too")

    def describe(self) -> str:
        if self.env:
            return f"env var {self.env}"
        if self.file:
            return f"file {self.file}"
        return f"store {self.store} secret {self.secret}"


class EmulatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: str = "./.rotator/emulator.db"
    bootstrap_key_file: str = "./.rotator/emulator-owner.key"
    port: int = Field(0, ge=0, le=65535)
    latency: Duration = timedelta(0)
    failure_rate: float = Field(0.0, ge=0.0, le=1.0)


class IssuerConfig(BaseModel):
    """``issuer``: the Momento key API (``type: momento``) or the local emulator (``type: emulator``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["momento", "emulator"] = "momento"
    url: str | None = None
    management_key: SecretSource | None = None
    endpoint: str | None = None
    key_version: Literal["auto", "v1", "v2"] = "auto"
    private_endpoints: list[str] = []
    timeout: Duration = timedelta(seconds=10)
    max_attempts: int = Field(5, ge=1, le=20)
    #: keys (and roles) asked for per page of a listing
    page_size: int = Field(100, ge=1, le=100)
    emulator: EmulatorSettings = EmulatorSettings()

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s, e.g. 10s")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # a path prefix is allowed (a private gateway: https://gw.example.com/momento); no query or fragment
        m = re.match(r"^(https?)://([^/:?#\s]+)(:\d{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?\Z", v)
        if not m:
            raise ValueError(
                f"{shown(v)} is not a base URL like https://mga.registry.prod.a.momentohq.com "
                "(a path prefix such as https://gateway.example.com/momento is allowed; no query or fragment)"
            )
        if m.group(1) == "http" and m.group(2) not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("plain http is only allowed for a local emulator (127.0.0.1); use https")
        return v.rstrip("/")

    @field_validator("private_endpoints")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{shown(p)} is not a regular expression: {exc}") from None
        return v

    @property
    def base_url(self) -> str:
        return self.url or "https://mga.registry.prod.a.momentohq.com"


class Defaults(BaseModel):
    """``defaults``: values every policy takes unless it sets its own."""

    model_config = ConfigDict(extra="forbid")

    lifetime: Duration | Literal["never"] = timedelta(days=30)
    rotate_before: RotateBefore = 0.25
    rotate_every: Duration | None = None
    grace: Duration = timedelta(hours=1)
    orphan_after: Duration = timedelta(minutes=15)
    format: Literal["json", "env", "key"] = "json"
    #: reload units (workloads, services, functions) a policy restarts at once
    reload_max_parallel: int = Field(1, ge=1, le=100)
    #: a reload not finished this long after it started is reported (reload_failed) and started again
    reload_timeout: Duration = timedelta(minutes=15)
    #: when a due rotation may start (rotator.windows); None: whenever it is due
    window: WindowConfig | None = None

    @field_validator("lifetime")
    @classmethod
    def _lifetime(cls, v: timedelta | str) -> timedelta | str:
        if isinstance(v, timedelta) and v <= timedelta(0):
            raise ValueError("must be longer than 0s, e.g. 30d (or never)")
        return v


class RawPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    role: str
    description: str = ""
    lifetime: Duration | Literal["never"] | None = None
    rotate_before: RotateBefore | None = None
    rotate_every: Duration | None = None
    grace: Duration | None = None
    orphan_after: Duration | None = None
    format: Literal["json", "env", "key"] | None = None
    targets: list[dict[str, Any]] = Field(min_length=1)
    pickup: list[dict[str, Any]] = []
    max_wait: Duration | None = None
    revoke_after: Duration | None = None
    reload: list[dict[str, Any]] = []
    reload_max_parallel: int | None = Field(None, ge=1, le=100)
    reload_timeout: Duration | None = None
    #: unset: the default window; null: none (rotate whenever due)
    window: WindowConfig | None = None
    self_: bool = Field(False, alias="self")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not POLICY_NAME_RE.match(v):
            suggestion = re.sub(r"[^a-z0-9-]+", "-", v.lower()).strip("-")[:63] or "my-policy"
            if redact_secrets(v) != v:  # never echo a pasted key, not even lowercased
                suggestion = "my-policy"
            raise ValueError(
                f"{shown(v)} is not a valid policy name: use 1-63 lowercase letters, digits and '-', "
                f"e.g. {suggestion!r}"
            )
        return v

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name a role: owner, operator, viewer, or a role id")
        return v.strip()

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        if "[rotator:" in v:
            raise ValueError("must not contain '[rotator:': rotator appends its own marker")
        return v


class HttpConfig(BaseModel):
    """``http``: the health and metrics listener of ``rotator run``."""

    model_config = ConfigDict(extra="forbid")

    listen: str | None = "127.0.0.1:9464"
    status_page: bool = False  # serve the read-only status page (rotator.status_page) at / on the listener

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError(f"{shown(v)} is not host:port, e.g. 127.0.0.1:9464 or 0.0.0.0:9464 (or null to disable)")
        return v


class MetricsConfig(BaseModel):
    """``metrics``: where ``rotator once`` pushes its figures (a Prometheus Pushgateway), if anywhere."""

    model_config = ConfigDict(extra="forbid")

    pushgateway: str | None = None
    job: str = "rotator"


# ---- leader election (rotator.runtime.leader runs it) --------------------------------------------------------

_LEASE_NAME_RE = re.compile(r"^(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\Z")
_NAMESPACE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def _shorter_than(v: timedelta, other: timedelta | None, other_name: str, example: str, why: str) -> timedelta:
    """A leader-election timing that must be positive and shorter than ``other`` (when that one is valid)."""
    if v <= timedelta(0):
        raise ValueError(f"must be more than 0s, e.g. {example}")
    if other is not None and v >= other:
        raise ValueError(f"{v.total_seconds():g}s must be shorter than {other_name} ({other.total_seconds():g}s){why}")
    return v


class LeaderElectionConfig(BaseModel):
    """``leader_election``: ``rotator run`` passes only while it holds a ``coordination.k8s.io/v1`` Lease.

    For a Deployment with ``replicas: 2`` or more (deploy/kubernetes/components/leader-election): one replica
    runs passes, the others stand by and take over once the leader stops renewing the Lease. The timings
    follow client-go's leader election: a candidate takes a Lease held by another only ``lease_duration``
    after it last saw the Lease change; the leader renews every ``retry_period`` and stops starting (and
    stops) passes when it has not renewed within ``renew_deadline``. ``rotator once`` ignores this block.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: the Lease's name (``kubectl -n NAMESPACE get lease NAME`` shows the holder)
    lease_name: str = "rotator"
    #: the Lease's namespace; default: the pod's own, read from ``service_account_dir``/namespace
    namespace: str | None = None
    lease_duration: Duration = timedelta(seconds=15)
    # validate_default: a default is checked against the other fields too (lease_duration: 5s alone is an error)
    renew_deadline: Duration = Field(default=timedelta(seconds=10), validate_default=True)
    retry_period: Duration = Field(default=timedelta(seconds=2), validate_default=True)
    #: in-cluster service account; None = in-cluster when KUBERNETES_SERVICE_HOST is set, else kubeconfig
    in_cluster: bool | None = None
    #: where the pod's service account is mounted (token, ca.crt, namespace)
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"
    #: kubeconfig file (default: $KUBECONFIG or ~/.kube/config) and context; used when not in-cluster
    kubeconfig: str | None = None
    context: str | None = None

    @field_validator("lease_name")
    @classmethod
    def _lease_name(cls, v: str) -> str:
        if not _LEASE_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a Lease name (a lower case DNS subdomain, e.g. rotator)")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        if v is not None and not _NAMESPACE_RE.match(v):
            raise ValueError(f"{v!r} is not a namespace name (a lower case DNS label, e.g. rotator)")
        return v

    @field_validator("lease_duration")
    @classmethod
    def _lease_duration(cls, v: timedelta) -> timedelta:
        secs = v.total_seconds()
        if secs < 1 or secs != int(secs):
            raise ValueError(
                f"{secs:g}s is not a whole number of seconds of at least 1s "
                "(the Lease's leaseDurationSeconds is an integer), e.g. 15s"
            )
        return v

    @field_validator("renew_deadline")
    @classmethod
    def _renew_deadline(cls, v: timedelta, info: Any) -> timedelta:  # info: pydantic.ValidationInfo
        return _shorter_than(
            v,
            info.data.get("lease_duration"),
            "lease_duration",
            "10s",
            ": the leader must give up before another replica may take the Lease; "
            "e.g. lease_duration: 15s, renew_deadline: 10s",
        )

    @field_validator("retry_period")
    @classmethod
    def _retry_period(cls, v: timedelta, info: Any) -> timedelta:  # info: pydantic.ValidationInfo
        return _shorter_than(
            v,
            info.data.get("renew_deadline"),
            "renew_deadline",
            "2s",
            "so the leader can retry a failed renewal before the deadline; e.g. renew_deadline: 10s, retry_period: 2s",
        )

    @field_validator("kubeconfig", "context")
    @classmethod
    def _not_in_cluster(cls, v: str | None, info: Any) -> str | None:
        if v and info.data.get("in_cluster"):
            raise ValueError("in_cluster: true uses the pod's service account; drop kubeconfig and context")
        return v


# ---- alerts (rotator.notify sends them) -----------------------------------------------------------------


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"]
    url: str | SecretSource
    headers: dict[str, str | SecretSource] = {}
    timeout: Duration = timedelta(seconds=5)


class SlackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["slack"]
    url: str | SecretSource
    timeout: Duration = timedelta(seconds=5)


class SnsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["sns"]
    topic_arn: str = Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
    region: str | None = None
    endpoint_url: str | None = None


NotifierConfig = Annotated[WebhookConfig | SlackConfig | SnsConfig, Field(discriminator="type")]


class AlertsConfig(BaseModel):
    """``alerts:`` in the config."""

    model_config = ConfigDict(extra="forbid")
    notifiers: list[NotifierConfig] = []
    alert_before: Duration = timedelta(days=3)
    alert_every: Duration = timedelta(hours=1)
    on_success: bool = False
    state_file: str | None = None


class RawConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer: IssuerConfig
    interval: Duration = timedelta(minutes=1)
    jitter: Duration = timedelta(seconds=10)
    concurrency: int = Field(8, ge=1, le=64)
    #: reloads (restarts) started per pass across every policy: a mass rotation is never a restart storm
    reloads_per_pass: int = Field(20, ge=1, le=10000)
    #: client-side request-rate limits per quota scope (rotator/quotas.py); false: none (refusals still retried)
    rate_limits: bool = True
    pass_timeout: Duration = timedelta(minutes=5)
    drift_check_every: Duration | Literal["never"] = timedelta(hours=1)
    verify_for: Duration = timedelta(hours=1)
    clock_skew: Duration = timedelta(minutes=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    http: HttpConfig = HttpConfig()
    metrics: MetricsConfig = MetricsConfig()
    leader_election: LeaderElectionConfig = LeaderElectionConfig()
    alerts: dict[str, Any] = {}
    defaults: Defaults = Defaults()
    stores: dict[str, dict[str, Any]] = {}
    #: no rotation starts in these ranges (rotator.windows.Freeze, each validated on its own)
    freeze: list[Any] = []
    policies: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("interval", "pass_timeout")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s, e.g. 1m")
        return v


# ---- the resolved config ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A resolved target: which store, which secret, which payload format."""

    store: str
    secret: str
    format: PayloadFormat
    endpoint_secret: str | None
    options: BaseTargetOptions

    @property
    def id(self) -> str:
        return f"{self.store}:{self.secret}"


@dataclass(frozen=True)
class Policy:
    """A resolved policy: defaults applied, rotate_before turned into a duration where the lifetime is known."""

    name: str
    role: str
    description: str
    lifetime: timedelta | None  # None: keys never expire
    rotate_before: timedelta | float | None
    rotate_every: timedelta | None
    grace: timedelta
    orphan_after: timedelta
    format: str
    targets: tuple[Target, ...]
    pickup: tuple[BaseModel, ...] = ()
    max_wait: timedelta | None = None
    revoke_after: timedelta | None = None
    manages_self: bool = False
    reload: tuple[BaseModel, ...] = ()
    reload_max_parallel: int = 1
    reload_timeout: timedelta = timedelta(minutes=15)
    window: WindowConfig | None = None
    freezes: tuple[Freeze, ...] = ()

    @property
    def key_description(self) -> str:
        from rotator.model import marker

        return f"{self.description} {marker(self.name)}".strip()


@dataclass(frozen=True)
class Config:
    issuer: IssuerConfig
    interval: timedelta
    jitter: timedelta
    concurrency: int
    pass_timeout: timedelta
    drift_check_every: timedelta | None
    verify_for: timedelta
    clock_skew: timedelta
    log_level: str
    stores: dict[str, StoreSpec]
    policies: tuple[Policy, ...]
    source: str | None = None
    http: HttpConfig = field(default_factory=HttpConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    alerts: Any = None  # rotator.notify.AlertsConfig (validated here, defined there)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    reloads_per_pass: int = 20
    rate_limits: bool = True

    def policy(self, name: str) -> Policy:
        # a dict built on first use: the engine looks a policy up once per policy in a pass
        index: dict[str, Policy] | None = self.__dict__.get("_policy_index")
        if index is None:
            index = {p.name: p for p in self.policies}
            object.__setattr__(self, "_policy_index", index)
        found = index.get(name)
        if found is not None:
            return found
        raise ConfigError([ConfigIssue("policy", f"no policy named {shown(name)}; known: {', '.join(self.names())}")])

    def names(self) -> list[str]:
        return [p.name for p in self.policies]


def _loc(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-plain") or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _issues(exc: ValidationError, prefix: str = "") -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("function" in p or p in _UNION_TAGS)))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif err["type"] == "missing":
            msg = "required field is missing"
        msg = msg.removeprefix("Value error, ")
        issues.append(ConfigIssue(_loc(loc, prefix), msg))
    # a union reports one error per branch; keep the first per path
    seen: dict[str, ConfigIssue] = {}
    for i in issues:
        seen.setdefault(i.path, i)
    return list(seen.values())


_UNION_TAGS = {"timedelta", "float", "literal['never']", "union[timedelta,float]", "constrained-float"}


def _store_specs(raw: RawConfig, issues: list[ConfigIssue]) -> dict[str, StoreSpec]:
    specs: dict[str, StoreSpec] = {}
    for name, body in raw.stores.items():
        path = f"stores.{name}"
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z", name):
            issues.append(ConfigIssue(path, "store names use letters, digits, '-' and '_'"))
        kind = body.get("type") if isinstance(body, dict) else None
        if not isinstance(kind, str):
            known = ", ".join(sorted(store_registry.known()))
            issues.append(ConfigIssue(f"{path}.type", f"unknown store type {shown(kind)}; use one of: {known}"))
            continue
        try:
            store_type = store_registry.store_type(kind)
        except store_registry.StoreTypeError as exc:
            issues.extend(ConfigIssue(f"{path}.{i.path}", i.message) for i in exc.issues)
            continue
        try:
            cfg = store_type.config.model_validate(body)
        except ValidationError as exc:
            issues.extend(_issues(exc, path))
            continue
        specs[name] = StoreSpec(name, kind, cfg)
    return specs


def _resolve_policy(
    i: int, body: dict[str, Any], raw: RawConfig, specs: dict[str, StoreSpec], issues: list[ConfigIssue]
) -> Policy | None:
    d = raw.defaults
    path = f"policies[{i}]"
    partial = False
    try:
        p = RawPolicy.model_validate(body)
    except ValidationError as exc:
        issues.extend(_issues(exc, path))
        # check what can still be checked, so every error is reported at once: the targets, and the
        # timing rules with the broken fields left out
        targets = body.get("targets")
        if isinstance(targets, list):
            _resolve_targets(path, targets, str(body.get("format") or d.format), raw, specs, issues)
        bad_fields = {e["loc"][0] for e in exc.errors() if e["loc"]}
        if isinstance(body.get("reload"), list) and "reload" not in bad_fields:
            _resolve_reload(path, body["reload"], issues)
        bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
        rest = {k: v for k, v in body.items() if k not in bad and k in RawPolicy.model_fields}
        rest.update({"name": "x", "role": "x", "targets": [{}]})
        try:
            p = RawPolicy.model_validate(rest)
        except ValidationError:
            return None
        partial = True
    lifetime_raw = p.lifetime if p.lifetime is not None else d.lifetime
    lifetime = None if lifetime_raw == "never" else lifetime_raw
    assert lifetime is None or isinstance(lifetime, timedelta)
    grace = p.grace if p.grace is not None else d.grace
    orphan_after = p.orphan_after if p.orphan_after is not None else d.orphan_after
    fmt = p.format or d.format
    rotate_every = p.rotate_every if p.rotate_every is not None else d.rotate_every
    rotate_before: timedelta | float | None = p.rotate_before if p.rotate_before is not None else d.rotate_before
    start = len(issues)

    if lifetime is None:
        if rotate_every is None:
            issues.append(
                ConfigIssue(
                    f"{path}.rotate_every",
                    "keys that never expire need rotate_every (e.g. 30d), or set a lifetime such as 30d",
                )
            )
        rotate_before = None
    else:
        if p.rotate_every is not None:
            issues.append(
                ConfigIssue(
                    f"{path}.rotate_every", "only for keys that never expire (lifetime: never); use rotate_before"
                )
            )
        before = lifetime * rotate_before if isinstance(rotate_before, float) else rotate_before
        assert isinstance(before, timedelta)
        if lifetime <= timedelta(0):
            issues.append(ConfigIssue(f"{path}.lifetime", "must be longer than 0s, e.g. 30d"))
        elif before >= lifetime:
            issues.append(
                ConfigIssue(
                    f"{path}.rotate_before",
                    f"must be shorter than lifetime ({format_duration(lifetime)})",
                )
            )
        margin = grace + raw.interval + raw.clock_skew
        if before <= margin:
            issues.append(
                ConfigIssue(
                    f"{path}.rotate_before",
                    f"{format_duration(before)} is too short: it must exceed grace ({format_duration(grace)}) + "
                    f"interval ({format_duration(raw.interval)}) + clock_skew ({format_duration(raw.clock_skew)}) "
                    f"= {format_duration(margin)}, or the old key can expire while consumers still use it; "
                    "raise rotate_before or the lifetime, or shorten grace",
                )
            )
    if rotate_every is not None and rotate_every <= timedelta(0):
        issues.append(ConfigIssue(f"{path}.rotate_every", "must be longer than 0s, e.g. 30d"))
    if orphan_after <= raw.pass_timeout:
        issues.append(
            ConfigIssue(
                f"{path}.orphan_after",
                f"{format_duration(orphan_after)} must exceed pass_timeout ({format_duration(raw.pass_timeout)}), "
                "or a key still being published by a slow pass could be swept as an orphan",
            )
        )

    if partial:
        return None
    full = len(f"{p.description} [rotator:{p.name}]".strip())
    if full > KEY_DESCRIPTION_MAX:
        room = KEY_DESCRIPTION_MAX - len(f" [rotator:{p.name}]")
        issues.append(
            ConfigIssue(
                f"{path}.description",
                f"{len(p.description)} characters is too long: with rotator's marker the key description must fit "
                f"the key API's limit of {KEY_DESCRIPTION_MAX}; shorten it to at most {room} characters",
            )
        )
    targets = _resolve_targets(path, p.targets, fmt, raw, specs, issues)
    pickup = _resolve_pickup(path, p.pickup, issues)
    if p.revoke_after is not None and p.revoke_after < grace:
        issues.append(ConfigIssue(f"{path}.revoke_after", f"must be at least grace ({format_duration(grace)})"))
    if p.max_wait is not None and p.revoke_after is not None and p.max_wait > p.revoke_after:
        issues.append(ConfigIssue(f"{path}.max_wait", "must not exceed revoke_after: notify before revoking anyway"))
    if (p.max_wait is not None or p.revoke_after is not None) and not p.pickup:
        issues.append(
            ConfigIssue(
                f"{path}.max_wait" if p.max_wait is not None else f"{path}.revoke_after",
                "only applies with pickup checks (pickup: [...]); without them grace alone decides",
            )
        )
    reload = _resolve_reload(path, p.reload, issues)
    reload_timeout = p.reload_timeout if p.reload_timeout is not None else d.reload_timeout
    _check_reload_timing(path, p, reload, reload_timeout, lifetime, rotate_before, grace, raw, issues)
    if p.self_:
        _check_self(path, p, targets, raw, issues)
    if len(issues) > start:
        return None
    return Policy(
        name=p.name,
        role=p.role,
        description=p.description,
        lifetime=lifetime,
        rotate_before=rotate_before,
        rotate_every=rotate_every,
        grace=grace,
        orphan_after=orphan_after,
        format=fmt,
        targets=tuple(targets),
        pickup=tuple(pickup),
        max_wait=p.max_wait,
        revoke_after=p.revoke_after,
        manages_self=p.self_,
        reload=tuple(reload),
        reload_max_parallel=p.reload_max_parallel if p.reload_max_parallel is not None else d.reload_max_parallel,
        reload_timeout=reload_timeout,
        window=p.window if "window" in p.model_fields_set else d.window,
    )


def _resolve_pickup(path: str, raw_checks: list[dict[str, Any]], issues: list[ConfigIssue]) -> list[BaseModel]:
    from rotator.pickup import base as pickup_base

    out: list[BaseModel] = []
    known = ", ".join(sorted(pickup_base.REGISTRY))
    for j, c in enumerate(raw_checks):
        cpath = f"{path}.pickup[{j}]"
        kind = c.get("type") if isinstance(c, dict) else None
        if not isinstance(kind, str):
            issues.append(ConfigIssue(f"{cpath}.type", f"required: the kind of check; use one of: {known}"))
            continue
        if kind == "grace":
            issues.append(ConfigIssue(f"{cpath}.type", "grace always applies: set `grace:` on the policy instead"))
            continue
        if kind not in pickup_base.REGISTRY:
            issues.append(ConfigIssue(f"{cpath}.type", f"unknown pickup check {shown(kind)}; use one of: {known}"))
            continue
        try:
            out.append(pickup_base.backend(kind).CheckConfig.model_validate(c))
        except ValidationError as exc:
            issues.extend(_issues(exc, cpath))
    return out


#: the runtime a config is loaded for (``"lambda"`` in the Lambda handler, else None): a reload target's
#: ``ReloadConfig`` sees it as the pydantic validation context ``{"runtime": ...}`` and rejects what that
#: runtime cannot reach (a Lambda has no in-cluster service account and no ~/.kube)
RUNTIME: contextvars.ContextVar[str | None] = contextvars.ContextVar("rotator_config_runtime", default=None)


@contextlib.contextmanager
def for_runtime(name: str) -> Iterator[None]:
    """``with for_runtime("lambda"): load(...)``: validate the config for that runtime."""
    token = RUNTIME.set(name)
    try:
        yield
    finally:
        RUNTIME.reset(token)


def _resolve_reload(path: str, raw_targets: list[dict[str, Any]], issues: list[ConfigIssue]) -> list[BaseModel]:
    """``reload: [...]``: each entry validated by its type's ``ReloadConfig`` (rotator.reload.<type>)."""
    from rotator.reload import base as reload_base

    out: list[BaseModel] = []
    known = ", ".join(sorted(reload_base.REGISTRY))
    for j, c in enumerate(raw_targets):
        rpath = f"{path}.reload[{j}]"
        kind = c.get("type") if isinstance(c, dict) else None
        if not isinstance(kind, str):
            issues.append(ConfigIssue(f"{rpath}.type", f"required: the kind of reload; use one of: {known}"))
            continue
        if kind not in reload_base.REGISTRY:
            issues.append(ConfigIssue(f"{rpath}.type", f"unknown reload type {shown(kind)}; use one of: {known}"))
            continue
        try:
            out.append(reload_base.backend(kind).ReloadConfig.model_validate(c, context={"runtime": RUNTIME.get()}))
        except ValidationError as exc:
            issues.extend(_issues(exc, rpath))
    return out


def _check_reload_timing(
    path: str,
    p: RawPolicy,
    reload: list[BaseModel],
    reload_timeout: timedelta,
    lifetime: timedelta | None,
    rotate_before: timedelta | float | None,
    grace: timedelta,
    raw: RawConfig,
    issues: list[ConfigIssue],
) -> None:
    """A rollout must be able to time out, be reported and be started again before the old key expires."""
    if reload_timeout <= timedelta(0):
        issues.append(ConfigIssue(f"{path}.reload_timeout", "must be longer than 0s, e.g. 15m"))
        return
    if (p.reload_timeout is not None or p.reload_max_parallel is not None) and not p.reload:
        field_name = "reload_timeout" if p.reload_timeout is not None else "reload_max_parallel"
        issues.append(ConfigIssue(f"{path}.{field_name}", "only applies with reload targets (reload: [...])"))
        return
    if not reload or lifetime is None or rotate_before is None:
        return
    before = lifetime * rotate_before if isinstance(rotate_before, float) else rotate_before
    need = reload_timeout + grace + raw.interval + raw.clock_skew
    if before <= need:
        issues.append(
            ConfigIssue(
                f"{path}.reload_timeout",
                f"{format_duration(reload_timeout)} is too long: a rotation starts {format_duration(before)} before "
                f"the old key expires (rotate_before), which must exceed reload_timeout + grace "
                f"({format_duration(grace)}) + interval ({format_duration(raw.interval)}) + clock_skew "
                f"({format_duration(raw.clock_skew)}) = {format_duration(need)}, or a rollout that times out cannot "
                "be reported and retried before the old key expires; shorten reload_timeout or raise rotate_before",
            )
        )


def _check_self(path: str, p: RawPolicy, targets: list[Target], raw: RawConfig, issues: list[ConfigIssue]) -> None:
    """``self: true``: the policy rotates rotator's own management key, which must be read from its target."""
    mk = raw.issuer.management_key
    if p.role.lower() != "owner":
        issues.append(
            ConfigIssue(
                f"{path}.role",
                "a policy with self: true must use role owner (rotator's own key creates and revokes keys)",
            )
        )
    if mk is None or mk.store is None:
        issues.append(
            ConfigIssue(
                f"{path}.self",
                "rotator can rotate its own key only when it reads the key from a store this policy writes: set "
                "issuer.management_key: {store: <store>, secret: <secret>} to one of this policy's targets",
            )
        )
        return
    if not any(t.store == mk.store and t.secret == mk.secret for t in targets):
        issues.append(
            ConfigIssue(
                f"{path}.targets",
                f"must include the secret rotator reads its management key from ({mk.store}:{mk.secret})",
            )
        )
    for t in targets:
        if t.store == mk.store and t.secret == mk.secret and t.format != mk.format:
            issues.append(
                ConfigIssue(
                    f"{path}.targets",
                    f"the management key target's format ({t.format}) must "
                    f"match issuer.management_key.format ({mk.format})",
                )
            )


def _resolve_targets(
    path: str, raw_targets: list[Any], fmt: str, raw: RawConfig, specs: dict[str, StoreSpec], issues: list[ConfigIssue]
) -> list[Target]:
    targets: list[Target] = []
    for j, t in enumerate(raw_targets):
        tpath = f"{path}.targets[{j}]"
        if not isinstance(t, dict):
            issues.append(ConfigIssue(tpath, "a target is a mapping like {store: local, secret: momento/demo}"))
            continue
        store = t.get("store")
        if not isinstance(store, str) or not store:
            issues.append(ConfigIssue(f"{tpath}.store", "required: the name of a store under `stores:`"))
            continue
        if store not in specs:
            if store not in raw.stores:
                known = ", ".join(raw.stores) or "none defined"
                issues.append(ConfigIssue(f"{tpath}.store", f"no store named {shown(store)} (stores: {known})"))
            continue
        spec = specs[store]
        body = dict(t)
        body.setdefault("format", fmt)
        try:
            opts = store_registry.store_type(spec.type).target.model_validate(body)
        except ValidationError as exc:
            issues.extend(_issues(exc, tpath))
            continue
        tfmt, endpoint_secret = opts.format, opts.endpoint_secret
        if tfmt == "key" and not endpoint_secret:
            issues.append(
                ConfigIssue(
                    f"{tpath}.endpoint_secret",
                    "format `key` stores the raw key only: name a second secret for the endpoint, "
                    "e.g. endpoint_secret: momento-endpoint",
                )
            )
        targets.append(Target(store, opts.secret, tfmt, endpoint_secret, opts))
    return targets


def from_mapping(data: Any, *, source: str | None = None) -> Config:
    """Validate a parsed config mapping. Raises ConfigError listing every problem."""
    try:
        return _from_mapping(data, source=source)
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError, OverflowError) as exc:
        # a shape no check foresaw (e.g. a list where a name belongs) is still bad input, not a crash; the
        # message names the exception type only, never the value
        hint = "compare it with config/local.yaml and the README's Configuration section"
        raise ConfigError(
            [ConfigIssue("", f"the config has a shape rotator cannot check ({type(exc).__name__}); {hint}")],
            source=source,
        ) from None


def _from_mapping(data: Any, *, source: str | None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue("", "the config must be a YAML mapping with issuer, stores and policies")], source=source
        )
    issues: list[ConfigIssue] = []
    _keys_in_config(data, issues)
    broken: set[str] = set()
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as exc:
        # go on with every top-level field that is fine, so a broken one does not hide the other errors
        issues.extend(_issues(exc))
        broken = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        rest = {k: v for k, v in data.items() if k not in broken and k in RawConfig.model_fields}
        if "issuer" not in rest:
            rest["issuer"], broken = {"type": "emulator"}, broken | {"issuer"}
        if "policies" not in rest:
            rest["policies"], broken = [{}], broken | {"policies"}
        try:
            raw = RawConfig.model_validate(rest)
        except ValidationError:
            raise ConfigError(_dedupe(issues), source=source) from None

    specs = _store_specs(raw, issues)
    if "issuer" not in broken:
        _check_issuer(raw, issues)
    alerts = AlertsConfig()
    try:
        alerts = AlertsConfig.model_validate(raw.alerts)
    except ValidationError as exc:
        issues.extend(_issues(exc, "alerts"))
    policies = [] if "policies" in broken else _resolve_policies(raw, specs, issues)
    if issues:
        raise ConfigError(_dedupe(issues), source=source)
    drift = None if raw.drift_check_every == "never" else raw.drift_check_every
    assert drift is None or isinstance(drift, timedelta)
    return Config(
        issuer=raw.issuer,
        interval=raw.interval,
        jitter=raw.jitter,
        concurrency=raw.concurrency,
        pass_timeout=raw.pass_timeout,
        drift_check_every=drift,
        verify_for=raw.verify_for,
        clock_skew=raw.clock_skew,
        log_level=raw.log_level,
        stores=specs,
        policies=tuple(policies),
        source=source,
        http=raw.http,
        metrics=raw.metrics,
        alerts=alerts,
        leader_election=raw.leader_election,
        reloads_per_pass=raw.reloads_per_pass,
        rate_limits=raw.rate_limits,
    )


def _check_issuer(raw: RawConfig, issues: list[ConfigIssue]) -> None:
    if raw.issuer.endpoint is not None:
        try:
            check_endpoint(raw.issuer.endpoint, private=raw.issuer.private_endpoints)
        except KeyFormatError as exc:
            issues.append(ConfigIssue("issuer.endpoint", str(exc)))
    if raw.issuer.type == "momento" and raw.issuer.management_key is None:
        issues.append(
            ConfigIssue("issuer.management_key", "required for type momento, e.g. {env: MOMENTO_MANAGEMENT_KEY}")
        )
    if raw.issuer.type == "momento" and raw.issuer.endpoint is None and raw.issuer.key_version == "v2":
        issues.append(ConfigIssue("issuer.endpoint", "Missing required property: endpoint"))
    mk = raw.issuer.management_key
    if mk is not None and mk.store is not None and mk.store not in raw.stores:
        issues.append(ConfigIssue("issuer.management_key.store", f"no store named {shown(mk.store)}"))


def _resolve_policies(raw: RawConfig, specs: dict[str, StoreSpec], issues: list[ConfigIssue]) -> list[Policy]:
    policies: list[Policy] = []
    if sum(1 for b in raw.policies if isinstance(b, dict) and b.get("self")) > 1:
        issues.append(ConfigIssue("policies", "only one policy may set self: true"))
    seen_names: dict[str, int] = {}
    seen_targets: dict[str, str] = {}
    for i, body in enumerate(raw.policies):
        policy = _resolve_policy(i, body, raw, specs, issues)
        if policy is None:
            continue
        if policy.name in seen_names:
            issues.append(
                ConfigIssue(
                    f"policies[{i}].name",
                    f"{shown(policy.name)} is already used by policies[{seen_names[policy.name]}]",
                )
            )
        seen_names.setdefault(policy.name, i)
        for j, t in enumerate(policy.targets):
            for sid in filter(None, (t.secret, t.endpoint_secret)):
                tid = f"{t.store}:{sid}"
                owner = f"policies[{i}].targets[{j}]"
                if tid in seen_targets and not (sid == t.endpoint_secret and seen_targets[tid].endswith("(endpoint)")):
                    issues.append(
                        ConfigIssue(
                            owner,
                            f"secret {shown(sid)} in store {shown(t.store)} is already written by "
                            + seen_targets[tid],
                        )
                    )
                seen_targets.setdefault(tid, owner + (" (endpoint)" if sid == t.endpoint_secret else ""))
        policies.append(policy)
    freezes = _resolve_freezes(raw, issues)
    if freezes:
        policies = [dataclasses.replace(p, freezes=tuple(freezes.values())) for p in policies]
    _check_windows(raw, policies, freezes, issues)
    return policies


def _resolve_freezes(raw: RawConfig, issues: list[ConfigIssue]) -> dict[int, Freeze]:
    """``freeze: [...]``, each validated on its own (so one broken entry hides no other error), by index."""
    out = {}
    for j, body in enumerate(raw.freeze):
        try:
            out[j] = Freeze.model_validate(body)
        except ValidationError as exc:
            issues.extend(_issues(exc, f"freeze[{j}]"))
    return out


def window_span(policy: Policy, interval: timedelta) -> timedelta | None:
    """How long a due key of ``policy`` may wait for a window and still be replaced in time: it is due
    ``rotate_before`` (+ clock_skew) before it expires and must start ``grace + interval + clock_skew`` (+
    ``reload_timeout`` with reload targets) before, so ``rotate_before - grace - interval`` (-
    ``reload_timeout``). None for keys that never expire (a window only delays them)."""
    if policy.lifetime is None or policy.rotate_before is None:
        return None
    before = policy.rotate_before
    if isinstance(before, float):
        before = policy.lifetime * before
    reload = policy.reload_timeout if policy.reload else timedelta(0)
    return before - policy.grace - interval - reload


def _span_terms(policy: Policy, interval: timedelta) -> str:
    before = policy.rotate_before
    assert policy.lifetime is not None and before is not None
    if isinstance(before, float):
        before = policy.lifetime * before
    terms = f"rotate_before ({format_duration(before)}) - grace ({format_duration(policy.grace)}) - interval "
    terms += f"({format_duration(interval)})"
    if policy.reload:
        terms += f" - reload_timeout ({format_duration(policy.reload_timeout)})"
    return terms


def _check_windows(
    raw: RawConfig, policies: list[Policy], freezes: dict[int, Freeze], issues: list[ConfigIssue]
) -> None:
    """A window must open often enough, and a freeze must be short enough, that a due key can wait for the
    next opening and still be replaced before it expires (else it would rotate outside the window every
    time, which the planner does, with a warning, rather than let it lapse)."""
    from datetime import UTC, datetime

    from rotator import windows

    now = datetime.now(UTC)
    index = {p["name"]: i for i, p in enumerate(raw.policies) if isinstance(p, dict) and isinstance(p.get("name"), str)}
    gaps: dict[WindowConfig, tuple[timedelta, datetime]] = {}
    for policy in policies:
        w = policy.window
        if w is None:
            continue
        i = index.get(policy.name, 0)
        own = isinstance(raw.policies[i], dict) and "window" in raw.policies[i]
        path = f"policies[{i}].window" if own else "defaults.window"
        whose = "" if own else f" (policy {policy.name})"
        if w.duration < raw.interval:
            issues.append(
                ConfigIssue(
                    f"{path}.duration",
                    f"{format_duration(w.duration)} is shorter than interval ({format_duration(raw.interval)}){whose}: "
                    "a pass might never fall inside the window; make it at least as long as interval",
                )
            )
            continue
        span = window_span(policy, raw.interval)
        if span is None:
            continue
        if w not in gaps:
            gaps[w] = windows.longest_gap(w, now)
        gap, began = gaps[w]
        if gap > span:
            issues.append(
                ConfigIssue(
                    path,
                    f"{w} stays closed for up to {format_duration(gap)} (from {_utc(began)}), longer than "
                    f"a due key of policy {policy.name} can wait: {_span_terms(policy, raw.interval)} = "
                    f"{format_duration(span)}; the key would have to rotate outside the window: open the window more "
                    "often or for longer, or raise rotate_before",
                )
            )
    for j, f in freezes.items():
        if f.end <= now:
            continue  # over: it holds nothing back
        length = f.end - f.start
        short = []
        for policy in policies:
            span = window_span(policy, raw.interval)
            if span is not None and length > span:
                short.append(f"{policy.name} ({_span_terms(policy, raw.interval)} = {format_duration(span)})")
        if short:
            more = f" and {len(short) - 3} more" if len(short) > 3 else ""
            issues.append(
                ConfigIssue(
                    f"freeze[{j}]",
                    f"lasts {format_duration(length)}, longer than a due key can wait in policy "
                    f"{', '.join(short[:3])}{more}: shorten the freeze, split it, or raise rotate_before",
                )
            )


def _utc(t: Any) -> str:
    return str(t.strftime("%Y-%m-%dT%H:%M:%SZ"))


#: a config with more errors than this lists the first ones and says how many more there are
MAX_ISSUES = 100


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Each issue once (in order: linear, not quadratic), secret-shaped values described, the list capped."""
    unique = list(dict.fromkeys(ConfigIssue(i.path, redact_secrets(i.message)) for i in issues))
    if len(unique) > MAX_ISSUES:
        more = len(unique) - MAX_ISSUES
        unique = [*unique[:MAX_ISSUES], ConfigIssue("", f"... and {more} more errors (fix these first)")]
    return unique


def load(path: str | Path, *, max_bytes: int | None = None) -> Config:
    """Read and validate a YAML config file. Raises ConfigError (exit code 2) for every problem at once.

    The file is read by :mod:`rotator.safe_yaml`: a regular file of at most ``max_bytes`` (1 MiB, or
    ``$ROTATOR_CONFIG_MAX_BYTES``), UTF-8, bounded nesting and aliases, no duplicate keys, and every
    ``${VAR}`` set (or given a ``:-default``)."""
    from rotator import safe_yaml

    data = safe_yaml.load_file(path, max_bytes=max_bytes)
    return from_mapping(data, source=str(path))


def loads(text: str | bytes, *, source: str | None = None) -> Config:
    """Validate YAML given as text or bytes (e.g. ``$ROTATOR_CONFIG_YAML``), with the same checks as :func:`load`."""
    from rotator import safe_yaml

    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > safe_yaml.max_bytes_from_env():
        raise ConfigError([ConfigIssue("", f"{len(data)} bytes is larger than a config may be")], source=source)
    return from_mapping(safe_yaml.load_bytes(data, source=source), source=source)
