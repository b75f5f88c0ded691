"""The config's JSON Schema: ``rotator schema`` prints it, ``config/rotator.schema.json`` is it (issue 25).

It is generated from the pydantic models the loader validates with, composed as the loader composes them:
``RawConfig`` keeps ``stores``, ``policies``, ``alerts`` and ``freeze`` loose and :mod:`rotator.config` checks
them piece by piece, so here each is given its real shape:

- ``stores.<name>``: one of the store types' ``config`` models (:mod:`rotator.stores.registry`), told apart
  by ``type`` (a ``oneOf`` whose branches each fix ``type`` with ``const``);
- ``policies[]``: :class:`rotator.config.RawPolicy`, whose ``targets[]`` are any store type's ``target``
  model (a target names a store, not a type: ``anyOf``), and whose ``pickup[]`` and ``reload[]`` are the
  ``CheckConfig`` of :data:`rotator.pickup.base.REGISTRY` and the ``ReloadConfig`` of
  :data:`rotator.reload.base.REGISTRY`, told apart by ``type``;
- ``alerts``: :class:`rotator.config.AlertsConfig`; ``freeze[]``: :class:`rotator.windows.Freeze`.

What the schema accepts is what the file may say, as an editor sees it:

- a duration is a string such as ``30d``, ``6h``, ``1h30m`` or ``500ms`` (:func:`rotator.durations.
  parse_duration`), or a number of seconds; ``rotate_before`` also takes ``25%`` or a fraction below 1; a
  pickup check's ``timeout`` is seconds or a duration;
- a value with ``${VAR}`` or ``${VAR:-default}`` in it is accepted wherever a scalar is (the loader expands
  it before it validates), except ``type``, which picks a store's, a check's or a target's shape and so must
  be written as it is;
- what only Python can check (a cron expression, a time zone, the timing rules, a store name a target
  points at) is left to ``rotator validate``; so is the upper bound of a duration string (36500d), and so is
  which store type's options a target may set: a target is checked against every type's target model, so a
  field only another type's targets have (``adopt`` on a file store's target) passes here;
- the loader's lax coercions (``"8"`` for an integer, ``yes`` for true in a quoted string) are not in it:
  the schema asks for the plain types.

The schema is JSON Schema draft-07, the draft the YAML language server and VS Code check fully.
Only rotator's own store types are in it unless ``plugins=True`` (``rotator schema --with-plugins``) adds
the installed plug-ins' types, so that the checked-in file is the same wherever it is generated.
"""

from __future__ import annotations

import copy
import functools
import json
import operator
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from rotator import config as cfg
from rotator import durations, windows
from rotator.pickup import base as pickup_base
from rotator.pickup import http as pickup_http
from rotator.pickup import kubernetes as pickup_k8s
from rotator.reload import base as reload_base
from rotator.reload import ecs, lambda_fn, webhook
from rotator.reload import kubernetes as reload_k8s
from rotator.stores import aws, azure, file, gcp
from rotator.stores import base as store_base
from rotator.stores import kubernetes as store_k8s
from rotator.stores import registry as store_registry

__all__ = ["DRAFT", "ENV_REFERENCE", "build", "render"]

DRAFT = "http://json-schema.org/draft-07/schema#"
#: a ``${VAR}`` or ``${VAR:-default}`` anywhere in a string (rotator.safe_yaml expands it)
ENV_REFERENCE = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
#: a duration string as parse_duration reads it: numbers with units (ms w d h m s, any case), spaces anywhere,
#: other white space only around it and between a number and its unit
_NUMBER = r"[0-9]( *[0-9])*( *\. *[0-9]( *[0-9])*)?"
_TOKEN = _NUMBER + r"\s*([mM] *[sS]|[wWdDhHmMsS])"
DURATION_PATTERN = rf"^\s*{_TOKEN}( *{_TOKEN})*\s*$"
#: a share of the lifetime as parse_before reads it: ``25%`` (more than 0, less than 100: checked by the loader)
PERCENT_PATTERN = r"^\s*\+?([0-9]+\.?[0-9]*|\.[0-9]+)\s*%\s*$"
#: the longest duration, in seconds (rotator.durations.MAX_DURATION)
MAX_SECONDS = int(durations.MAX_DURATION.total_seconds())
_REF = "#/definitions/"
#: the generator marks a shared definition with this key (pydantic resolves every ``$ref`` it sees)
_SHARED = "x-rotator-definition"


# ---- what the generator cannot know ---------------------------------------------------------------------


def _duration_text(td: timedelta) -> str:
    """A duration as the config writes it, exactly (format_duration drops fractions of a second)."""
    whole = timedelta(seconds=int(td.total_seconds()))
    ms = round((td - whole).total_seconds() * 1000)
    text = durations.format_duration(whole) if whole or not ms else ""
    return text + (f"{ms}ms" if ms else "")


def _plain(value: Any) -> Any:
    """A default as the config would write it: durations as ``30d``, models as mappings (by alias)."""
    if isinstance(value, timedelta):
        return _duration_text(value)
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="python", by_alias=True))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class _Generator(GenerateJsonSchema):
    """pydantic's generator, with rotator's durations and every field's description."""

    #: model class -> definition name (AwsStore, HttpPickupCheck): set by _build for the per-type models
    names: dict[type[BaseModel], str] = {}

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "Rotate Before" next to rotate_before says nothing

    def timedelta_schema(self, schema: Any) -> JsonSchemaValue:
        return {_SHARED: "Duration"}

    def function_before_schema(self, schema: Any) -> JsonSchemaValue:
        function = schema["function"].get("function")
        if function is durations.parse_before:
            return {_SHARED: "RotateBefore"}
        if function is pickup_base._seconds:  # a check's timeout: seconds or a duration
            return {"anyOf": [{"type": "number"}, {_SHARED: "Duration"}]}
        return super().function_before_schema(schema)

    def get_default_value(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()
        return super().get_default_value(schema)

    def encode_default(self, dft: Any) -> Any:
        return super().encode_default(_plain(dft))

    def model_schema(self, schema: Any) -> JsonSchemaValue:
        js = super().model_schema(schema)
        cls = schema["cls"]
        if cls in self.names:
            js["title"] = self.names[cls]  # _build names the definition after it
        own = _lookup(MODEL_DESCRIPTIONS, cls)
        if own:
            js["description"] = own
        for name, info in cls.model_fields.items():
            key = info.alias or name  # the tables name a field as the config writes it (self, from, to)
            prop = js.get("properties", {}).get(key)
            if prop is None:
                continue
            text = _field_description(cls, key) or info.description
            if text:
                prop["description"] = text
            for klass in reversed(cls.__mro__):
                prop.update(copy.deepcopy(FIELD_EXTRAS.get(klass, {}).get(key, {})))
            if issubclass(cls, cfg.RawPolicy) and key in _INHERITED:
                prop.pop("default", None)  # unset: `defaults` decides (null is not the same for window)
        js.update(copy.deepcopy(_lookup(MODEL_EXTRAS, cls) or {}))
        return js


def _lookup(table: dict[type, Any], cls: type) -> Any:
    for klass in cls.__mro__:
        if klass in table:
            return table[klass]
    return None


def _field_description(cls: type, name: str) -> str | None:
    for klass in cls.__mro__:
        text = FIELD_DESCRIPTIONS.get(klass, {}).get(name)
        if text:
            return text
    return None


# ---- the composed models --------------------------------------------------------------------------------


def _camel(kind: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", kind) if part)


def _one_of(models: list[type[BaseModel]], *, discriminated: bool) -> Any:
    union: Any = functools.reduce(operator.or_, models)
    if discriminated and len(models) > 1:
        return Annotated[union, Field(discriminator="type")]
    return union


def _list(item: Any) -> Any:
    return list.__class_getitem__(item)  # list[item], of a type known only here


def _mapping(value: Any) -> Any:
    return dict.__class_getitem__((str, value))


def _field(model: type[BaseModel], name: str) -> Any:
    return copy.copy(model.model_fields[name])


def _store_kinds(plugins: bool) -> list[str]:
    return store_registry.known() if plugins else list(store_registry.BUILTIN)


def _composed(plugins: bool) -> tuple[type[BaseModel], dict[type[BaseModel], str]]:
    """The config as one model (for the schema only: the loader validates the pieces), and the names of the
    per-type models in it."""
    names: dict[type[BaseModel], str] = {}
    stores: list[type[BaseModel]] = []
    targets: list[type[BaseModel]] = []
    for kind in _store_kinds(plugins):
        st = store_registry.store_type(kind)
        stores.append(st.config)
        targets.append(st.target)
        names[st.config] = f"{_camel(kind)}Store"
        names[st.target] = f"{_camel(kind)}Target"
    checks: list[type[BaseModel]] = []
    for kind in pickup_base.REGISTRY:
        model = pickup_base.backend(kind).CheckConfig
        checks.append(model)
        names[model] = f"{_camel(kind)}PickupCheck"
    reloads: list[type[BaseModel]] = []
    for kind in reload_base.REGISTRY:
        model = reload_base.backend(kind).ReloadConfig
        reloads.append(model)
        names[model] = f"{_camel(kind)}Reload"

    policy = create_model(
        "Policy",
        __base__=cfg.RawPolicy,
        __doc__=None,
        targets=(_list(_one_of(targets, discriminated=False)), _field(cfg.RawPolicy, "targets")),
        pickup=(_list(_one_of(checks, discriminated=True)), _field(cfg.RawPolicy, "pickup")),
        reload=(_list(_one_of(reloads, discriminated=True)), _field(cfg.RawPolicy, "reload")),
    )
    config = create_model(
        "Config",
        __base__=cfg.RawConfig,
        __doc__=None,
        alerts=(cfg.AlertsConfig, _field(cfg.RawConfig, "alerts")),
        stores=(_mapping(_one_of(stores, discriminated=True)), _field(cfg.RawConfig, "stores")),
        freeze=(list[windows.Freeze], _field(cfg.RawConfig, "freeze")),
        policies=(_list(policy), _field(cfg.RawConfig, "policies")),
    )
    return config, names


# ---- after the generator --------------------------------------------------------------------------------


_STANDARD = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _nodes(v)


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if _SHARED in node:
            node = {"$ref": _REF + node.pop(_SHARED), **node}
        return {k: _rename_refs(v, renames) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    if isinstance(node, str) and node.startswith(_REF) and node[len(_REF) :] in renames:
        return _REF + renames[node[len(_REF) :]]
    return node


def _markdown(text: str) -> str:
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)  # :class:`x` -> `x`
    return text.replace("``", "`")


#: null is left out: a ``${VAR}`` never stands for a missing mapping (``window: null`` is written as it is)
_SCALAR_TYPES = {"string", "number", "integer", "boolean"}


def _accepts(js: dict[str, Any], defs: dict[str, Any], seen: frozenset[str] = frozenset()) -> tuple[bool, bool]:
    """(accepts a string, number or boolean; accepts any string) for a schema position."""
    ref = js.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF):
        name = ref[len(_REF) :]
        if name in seen:
            return False, False
        return _accepts(defs[name], defs, seen | {name})
    constrained = any(k in js for k in ("pattern", "format", "minLength", "maxLength", "const", "enum"))
    branches = js.get("anyOf") or js.get("oneOf") or js.get("allOf")
    if branches:
        found = [_accepts(b, defs, seen) for b in branches]
        if "allOf" in js:
            return all(f[0] for f in found), all(f[1] for f in found) and not constrained
        return any(f[0] for f in found), any(f[1] for f in found) and not constrained
    if "const" in js or "enum" in js:
        return True, False
    kind = js.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind} if kind else set()
    if not kinds:
        return True, not constrained  # anything
    return bool(kinds & _SCALAR_TYPES), "string" in kinds and not constrained


def _lenient(js: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A position that takes a scalar also takes a string with ``${VAR}`` in it."""
    scalar, any_string = _accepts(js, defs)
    if not scalar or any_string:
        return js
    keep: dict[str, Any] = {k: js.pop(k) for k in ("description", "default", "title") if k in js}
    if "anyOf" in js and len(js) == 1:
        js["anyOf"].append({"$ref": _REF + "EnvReference"})
        return {**js, **keep}
    return {"anyOf": [js, {"$ref": _REF + "EnvReference"}], **keep}


def _positions(root: dict[str, Any], defs: dict[str, Any]) -> None:
    """Apply :func:`_lenient` to every value position: properties (but ``type``), items, mapping values."""
    for node in list(_nodes(root)):
        props = node.get("properties")
        if isinstance(props, dict) and node.get("type") == "object":
            for key, prop in props.items():
                if key != "type" and isinstance(prop, dict):
                    props[key] = _lenient(prop, defs)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict) and node.get("type") in ("array", "object"):
                node[key] = _lenient(node[key], defs)


def _draft7(node: Any) -> Any:
    """draft-07 ignores the siblings of ``$ref``: a described reference becomes ``allOf: [{$ref}]``."""
    if isinstance(node, dict):
        node = {k: _draft7(v) for k, v in node.items()}
        if "$ref" in node and len(node) > 1:
            ref = node.pop("$ref")
            node = {"allOf": [{"$ref": ref}], **node}
        for key, standard in _STANDARD.items():
            if key in node and isinstance(node[key], int | float) and not isinstance(node[key], bool):
                node[standard] = node.pop(key)
        return node
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    return node


_SHARED_DEFS: dict[str, Any] = {
    "Duration": {
        "title": "Duration",
        "description": "A duration: 30d, 6h, 15m, 90s, 500ms, 2w or 1h30m (at most 36500d), or a number of seconds.",
        "anyOf": [
            {"type": "string", "pattern": DURATION_PATTERN},
            {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
        ],
    },
    "RotateBefore": {
        "title": "RotateBefore",
        "description": "A duration (7d) or a share of the lifetime: 25% or a fraction below 1 (0.25).",
        "anyOf": [
            {"type": "string", "pattern": PERCENT_PATTERN},
            {"$ref": _REF + "Duration"},
        ],
    },
    "EnvReference": {
        "title": "EnvReference",
        "description": "A value with ${VAR} or ${VAR:-default} in it: expanded from the environment when the "
        "config is loaded (unset and no default is an error), then checked.",
        "type": "string",
        "pattern": ENV_REFERENCE,
    },
}


@functools.cache
def _build(plugins: bool) -> str:
    model, names = _composed(plugins)
    generator = type("Generator", (_Generator,), {"names": names})
    raw = model.model_json_schema(schema_generator=generator, ref_template=_REF + "{model}")
    defs: dict[str, Any] = raw.pop("$defs", {})
    # a per-type model is named after its type (AwsStore, HttpPickupCheck), the rest keep their class name
    renames: dict[str, str] = {}
    for name, js in defs.items():
        title = js.get("title")
        if isinstance(title, str) and title != name and title not in defs and title not in renames.values():
            renames[name] = title
    defs = _rename_refs({renames.get(k, k): v for k, v in defs.items()}, renames)
    raw = _rename_refs(raw, renames)
    defs.update(copy.deepcopy(_SHARED_DEFS))
    for node in _nodes([raw, defs]):
        if isinstance(node.get("description"), str):
            node["description"] = _markdown(node["description"])
    root = {"$schema": DRAFT, **raw, "title": "rotator config", "definitions": dict(sorted(defs.items()))}
    root["description"] = ROOT_DESCRIPTION
    _positions(root, root["definitions"])
    return json.dumps(_draft7(root), indent=2, ensure_ascii=False) + "\n"


def build(*, plugins: bool = False) -> dict[str, Any]:
    """The config's JSON Schema (a new copy each call). ``plugins``: with the installed plug-ins' store types."""
    schema: dict[str, Any] = json.loads(_build(plugins))
    return schema


def render(*, plugins: bool = False) -> str:
    """The schema as ``rotator schema`` prints it (and config/rotator.schema.json holds it)."""
    return _build(plugins)


# ---- descriptions --------------------------------------------------------------------------------------

ROOT_DESCRIPTION = (
    "A rotator config: the issuer, named stores, defaults and policies (README: Configuration). "
    "`rotator validate` checks what this schema cannot: the timing rules, cron expressions and time zones, "
    "the store each target names."
)

MODEL_DESCRIPTIONS: dict[type, str] = {
    cfg.RawPolicy: "A policy keeps one Momento key of `role` fresh in every one of its `targets`: it creates the "
    "next key before the current one expires, writes it to each target, waits `grace` (and the pickup checks), "
    "then revokes the old key.",
    cfg.EmulatorSettings: "`issuer.emulator`: the in-process emulator (type: emulator without `url`).",
    cfg.WebhookConfig: "A generic webhook: each alert is POSTed as JSON.",
    cfg.SlackConfig: "A Slack incoming webhook.",
    cfg.SnsConfig: "An Amazon SNS topic (needs the aws extra).",
}

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: property -> JSON Schema keywords the Python validators check and a schema can say too
FIELD_EXTRAS: dict[type, dict[str, dict[str, Any]]] = {
    cfg.RawConfig: {"stores": {"propertyNames": {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"}}},
    cfg.RawPolicy: {"name": {"pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}},
    cfg.SecretSource: {"env": {"pattern": _ENV_NAME}, "bootstrap_env": {"pattern": _ENV_NAME}},
}

#: the policy fields that take their value from ``defaults`` when unset: no default of their own
_INHERITED = frozenset(set(cfg.Defaults.model_fields) & set(cfg.RawPolicy.model_fields))

MODEL_EXTRAS: dict[type, dict[str, Any]] = {
    # exactly one of env, file or store (with secret)
    cfg.SecretSource: {
        "oneOf": [{"required": ["env"]}, {"required": ["file"]}, {"required": ["store"]}],
        "dependencies": {"store": ["secret"]},
    },
}

_K8S_NAMESPACE = "The namespace (a lower-case DNS label)."
_KUBECONFIG = "The kubeconfig file (default: $KUBECONFIG or ~/.kube/config), used when not in-cluster."
_CONTEXT = "The kubeconfig context (default: its current context)."
_IN_CLUSTER = (
    "true: the pod's service account; false: a kubeconfig; unset: in-cluster when KUBERNETES_SERVICE_HOST is set."
)
_TARGET_STORE = "The name of a store under `stores:`."
_TARGET_FORMAT = (
    "What is written: `json` (default: `defaults.format`), `env` lines, or the raw `key` (then name an "
    "`endpoint_secret`)."
)
_ENDPOINT_NAME = "With `format: key`: a second secret that receives the endpoint."
_ADOPT = "Take over a secret whose current value rotator did not write (otherwise rotator refuses to write over it)."
_REGION = "The AWS region (default: an ARN's region, then boto3's chain, AWS_REGION)."
_ENDPOINT_URL = "Another http(s) endpoint: a VPC endpoint or a test server."


#: model -> field (as the config writes it) -> description; a plug-in's models keep their own ``description=``
FIELD_DESCRIPTIONS: dict[type, dict[str, str]] = {
    cfg.RawConfig: {
        "issuer": "The Momento key API that creates and revokes the keys (type: momento), or the local emulator "
        "(type: emulator).",
        "interval": "`rotator run`: how often a pass runs (longer than 0s).",
        "jitter": "`rotator run`: each pass starts within this much of its interval, and `rotator once` waits up "
        "to this long before it creates a key, so that many rotators do not call at the same moment.",
        "concurrency": "Policies handled at once in a pass (1-64).",
        "reloads_per_pass": "Reloads (restarts) started per pass across every policy (1-10000): a mass rotation "
        "is never a restart storm.",
        "rate_limits": "Keep every service's documented request quotas on the client side (per GCP project and "
        "secret, AWS region, Key Vault; a store's `quotas:` overrides them), adapting to refusals; false: send as "
        "fast as the workers go (a refusal is still retried with backoff).",
        "pass_timeout": "The longest a pass may take (longer than 0s; orphan_after must exceed it).",
        "drift_check_every": "Re-read a steady policy's stores this often, to find a target changed behind "
        "rotator's back; `never` turns it off.",
        "verify_for": "Read the stores on every pass while a policy's newest key is younger than this (a target "
        "that missed the new key is retried).",
        "clock_skew": "Rotate this much earlier than the expiry says: clocks disagree.",
        "log_level": "debug, info, warning or error (`--log-level` overrides it).",
        "http": "`rotator run`: the listener for /healthz, /readyz, /metrics and the status page.",
        "metrics": "`rotator once`: where it pushes its metrics (a Prometheus Pushgateway).",
        "leader_election": "`rotator run` only: run passes only while holding a Kubernetes Lease, for two or "
        "more replicas.",
        "alerts": "Alerts (failed rotations, expiring keys, lagging consumers, failed reloads) and the "
        "`notifiers` they go to.",
        "defaults": "Values every policy takes unless it sets its own.",
        "stores": "Named secret stores, which the policies' targets name; each has a `type` (docs/stores/README.md).",
        "freeze": "Ranges in which no rotation starts: {from, to, reason} (docs/windows.md).",
        "policies": "What to rotate: each policy keeps one Momento key of a role fresh in its targets.",
    },
    cfg.IssuerConfig: {
        "type": "`momento`: the Momento key API; `emulator`: the local emulator, in-process or at `url` "
        "(`rotator emulator`).",
        "url": "The key API's base URL (default https://mga.registry.prod.a.momentohq.com); a path prefix (a "
        "private gateway) is allowed; plain http only to 127.0.0.1 or localhost.",
        "management_key": "Where the Owner key rotator works with comes from: {env: VAR}, {file: PATH} or "
        "{store: NAME, secret: NAME}. Required for type momento.",
        "endpoint": "The cell endpoint stored beside each key, e.g. cell-4-us-west-2-1.prod.a.momentohq.com; "
        "v1 management keys carry their own.",
        "key_version": "What kind of management key to expect: auto, v1 or v2 (v2 needs `endpoint`).",
        "private_endpoints": "Regular expressions for private cell endpoints that do not look like "
        "cell-<region>-<n>.<domain>.",
        "timeout": "The deadline of one call to the key API (longer than 0s).",
        "max_attempts": "Attempts per call (1-20), with exponential backoff and jitter on 429, 5xx and "
        "connection errors, honouring Retry-After.",
        "page_size": "Keys (and roles) asked for per page of a listing (1-100).",
        "emulator": "The in-process emulator's settings (type: emulator without `url`).",
    },
    cfg.SecretSource: {
        "env": "The environment variable that holds the secret.",
        "file": "The file that holds the secret.",
        "store": "A store under `stores:` that holds the secret (name it with `secret`); with a policy of "
        "`self: true` rotator rotates its own key there.",
        "secret": "With `store`: the secret's name in that store.",
        "format": "With `store`: the payload format the secret is written in (json, env or key).",
        "bootstrap_env": "With `store`: the environment variable to use while the store holds no key rotator "
        "wrote (the first start of a `self: true` policy).",
    },
    cfg.EmulatorSettings: {
        "db": "The emulator's database file (its keys and roles).",
        "bootstrap_key_file": "Where the emulator writes its Owner key (mode 0600).",
        "port": "The port the in-process emulator listens on, on 127.0.0.1 (0: any free port).",
        "latency": "A delay added to every answer, to try slow calls.",
        "failure_rate": "The share of requests (0-1) answered with an injected error (429 or 5xx).",
    },
    cfg.Defaults: {
        "lifetime": "How long a key lives, or `never` (then `rotate_every` is required).",
        "rotate_before": "Start the rotation this long before the key expires: a duration (7d) or a share of "
        "the lifetime (25%). It must exceed grace + interval + clock_skew.",
        "rotate_every": "For keys that never expire (lifetime: never): rotate this often.",
        "grace": "How long the old key stays valid after every target holds the new one: longer than your "
        "consumers' cache TTL.",
        "orphan_after": "A key of a policy that no target holds after this long is an orphan and is revoked "
        "(it must exceed pass_timeout).",
        "format": "The payload format of the targets: json, env or key.",
        "reload_max_parallel": "Reload units (workloads, services, functions) a policy restarts at once (1-100).",
        "reload_timeout": "A reload not finished this long after it started is reported (reload_failed) and "
        "started again.",
        "window": "When a due rotation may start: {cron, duration, timezone}; null: whenever it is due "
        "(docs/windows.md).",
    },
    cfg.RawPolicy: {
        "name": "The policy's name: 1-63 lowercase letters, digits and '-'. Keys carry it as the marker "
        "[rotator:<name>].",
        "role": "The role of the keys: owner, operator, viewer, or a custom role's name or id.",
        "description": "The keys' description; rotator appends its marker, and both must fit 1024 characters.",
        "lifetime": "How long a key lives, or `never` (default: defaults.lifetime).",
        "rotate_before": "Start the rotation this long before the key expires: a duration or a share of the "
        "lifetime (default: defaults.rotate_before).",
        "rotate_every": "For keys that never expire: rotate this often (default: defaults.rotate_every).",
        "grace": "How long the old key stays valid after every target holds the new one (default: defaults.grace).",
        "orphan_after": "Revoke a key of this policy that no target holds after this long (default: "
        "defaults.orphan_after).",
        "format": "The payload format of the targets: json, env or key (default: defaults.format).",
        "targets": "Where the key is written: a store plus a secret, and that store's own options.",
        "pickup": "Checks that every consumer uses the new key before the old one is revoked (docs/pickup.md).",
        "max_wait": "With pickup checks: alert (pickup_overdue) once consumers lag this long.",
        "revoke_after": "With pickup checks: revoke the old key anyway this long after the new one was "
        "published (at least grace).",
        "reload": "Consumers to restart or signal once the new key is in every target (docs/reload.md).",
        "reload_max_parallel": "With reload targets: units restarted at once (default: defaults.reload_max_parallel).",
        "reload_timeout": "With reload targets: a reload not finished this long after it started is reported "
        "and started again (default: defaults.reload_timeout).",
        "window": "When a due rotation may start (default: defaults.window); null: whenever it is due.",
        "self": "This policy rotates rotator's own management key (role owner; the key is read from one of its "
        "targets: issuer.management_key: {store, secret}).",
    },
    cfg.HttpConfig: {
        "listen": "host:port of the listener (null turns it off), e.g. 0.0.0.0:9464 in a container.",
        "status_page": "Serve the read-only status page at / on the listener.",
    },
    cfg.MetricsConfig: {
        "pushgateway": "The Pushgateway's URL, e.g. http://pushgateway.monitoring:9091 (unset: no push).",
        "job": "The job label of the pushed metrics.",
    },
    cfg.LeaderElectionConfig: {
        "enabled": "Take part in the election (`rotator run` only).",
        "lease_name": "The Lease's name (kubectl -n NAMESPACE get lease NAME shows the holder).",
        "namespace": "The Lease's namespace (default: the pod's own, from service_account_dir).",
        "lease_duration": "A standby takes an unrenewed Lease this long after it last saw it change (whole seconds).",
        "renew_deadline": "The leader stops passes when it has not renewed for this long (shorter than "
        "lease_duration).",
        "retry_period": "How often the leader renews and a standby tries (shorter than renew_deadline).",
        "in_cluster": _IN_CLUSTER,
        "service_account_dir": "Where the pod's service account (token, ca.crt, namespace) is mounted.",
        "kubeconfig": _KUBECONFIG,
        "context": _CONTEXT,
    },
    cfg.AlertsConfig: {
        "notifiers": "Where alerts go: webhook, slack or sns.",
        "alert_before": "Alert (expiring) when a key a target holds expires within this and no rotation succeeded.",
        "alert_every": "Send the same alert for the same policy at most this often.",
        "on_success": "Also alert when a rotation completed (rotation_completed).",
        "state_file": "A file that keeps the dedup state across `rotator once` runs.",
    },
    cfg.WebhookConfig: {
        "type": "webhook",
        "url": "The URL alerts are POSTed to, or where to read it: {env: VAR} or {file: PATH}.",
        "headers": "Request headers, each a value or {env: VAR} / {file: PATH}.",
        "timeout": "The deadline of one request.",
    },
    cfg.SlackConfig: {
        "type": "slack",
        "url": "The incoming webhook's URL, or where to read it: {env: VAR} or {file: PATH}.",
        "timeout": "The deadline of one request.",
    },
    cfg.SnsConfig: {
        "type": "sns",
        "topic_arn": "The topic's ARN, e.g. arn:aws:sns:us-west-2:123456789012:rotator-alerts.",
        "region": "The AWS region (default: the topic ARN's).",
        "endpoint_url": _ENDPOINT_URL,
    },
    windows.WindowConfig: {
        "cron": "When the window opens: a crontab(5) expression (minute hour day-of-month month day-of-week), "
        'e.g. "0 9 * * MON-THU"; 0 and 7 are Sunday.',
        "duration": "How long the window stays open (at least `interval`).",
        "timezone": "The IANA time zone the cron expression is read in, e.g. Europe/Berlin.",
    },
    windows.Freeze: {
        "from": "When the freeze starts: a date and time with a time zone, e.g. 2026-12-24T00:00:00Z.",
        "to": "When it ends (after `from`; the end is not in it).",
        "reason": "Why: shown with the freeze where rotator names it (at most 200 characters).",
    },
    # ---- stores
    store_base.BaseTargetOptions: {
        "store": _TARGET_STORE,
        "secret": "The secret's name (or id, ARN, path: what the store calls it).",
        "format": _TARGET_FORMAT,
        "endpoint_secret": _ENDPOINT_NAME,
    },
    file.StoreConfig: {
        "type": "file: a directory of files (docs/stores/file.md).",
        "path": "The store root: created 0700 when missing; when it exists, it and every directory under it "
        "must belong to rotator's user and be open to no one else.",
        "destroy_after": "How long a retired version's value file is kept (0s: removed when it is retired, "
        "just before the key is revoked).",
    },
    file.TargetOptions: {
        "secret": "A path of segments of letters, digits, '.', '_' and '-', e.g. momento/checkout-api.",
    },
    aws.StoreConfig: {
        "type": "aws: AWS Secrets Manager (docs/stores/aws.md).",
        "region": "The region of the secrets (default: boto3's chain, AWS_REGION, the profile).",
        "endpoint_url": "Another endpoint: a VPC interface endpoint, a FIPS endpoint, moto.",
        "profile": "A named profile from ~/.aws/config (default: the default credential chain).",
        "max_attempts": "HTTP attempts per API call, the first included (1-20; botocore's adaptive retry mode).",
        "kms_key_id": "The KMS key (id, ARN or alias) for secrets rotator creates and their replicas "
        "(default: aws/secretsmanager).",
        "tags": "Tags for secrets rotator creates (it adds managed-by and rotator-policy).",
        "replica_regions": "Regions to replicate the secrets rotator creates to.",
    },
    aws.TargetOptions: {
        "secret": "A secret name (1-512 characters of A-Z a-z 0-9 / _ + = . @ -) or a secret ARN (which fixes "
        "the region).",
        "region": "This secret's region, when not the store's (must agree with an ARN's).",
        "kms_key_id": "The KMS key for this secret when rotator creates it, when not the store's.",
        "tags": "Tags merged over the store's, for a secret rotator creates.",
        "replica_regions": "Replica regions for this secret when rotator creates it, when not the store's.",
        "adopt": _ADOPT,
    },
    azure.StoreConfig: {
        "type": "azure: Azure Key Vault (docs/stores/azure.md).",
        "allow_any_vault_url": "Accept any https:// URL as vault_url (a vault behind a custom host name, a test "
        "server).",
        "vault_url": "The vault's Vault URI: https://<vault-name>.vault.azure.net/ (or another Azure cloud's).",
        "credential": "The azure-identity credential: default (DefaultAzureCredential), environment, "
        "managed_identity, workload_identity or azure_cli.",
        "managed_identity_client_id": "The client id of a user-assigned managed identity (with default, "
        "managed_identity or workload_identity).",
        "client_options": "Keyword arguments for SecretClient, e.g. connection_verify: /path/to/ca.pem; not the "
        "credential, the retry or logging options.",
        "max_retries": "Retries of 408, 429, 5xx and connection errors (0-20).",
        "retry_backoff": "Seconds before the first retry, doubled on each one (a Retry-After is honoured instead).",
        "retry_backoff_max": "The longest wait between retries, in seconds.",
        "timeout": "Seconds to connect and to read each response.",
        "metadata_cache_seconds": "How long what an inspect learnt may be reused by the writes that follow it in "
        "the same pass (0: always look again).",
    },
    azure.TargetOptions: {
        "secret": "A Key Vault secret name: 1-127 letters, digits and '-'.",
        "tags": "Extra tags on every version rotator writes (at most 11; rotator-* and managed-by are reserved).",
        "adopt": _ADOPT,
    },
    gcp.StoreConfig: {
        "type": "gcp: GCP Secret Manager (docs/stores/gcp.md).",
        "project": "The project id or number holding the secrets (a target may override it).",
        "transport": "grpc, or rest (HTTP/1.1 and JSON, for proxies that break HTTP/2).",
        "endpoint": "The API endpoint, e.g. a regional one (secretmanager.us-east1.rep.googleapis.com) or a "
        "Private Service Connect name.",
        "credentials_file": "A service-account, authorized-user or external-account (workload identity "
        "federation) JSON file (default: Application Default Credentials).",
        "replication": "Replication of secrets rotator creates: automatic, or {locations: [...]}.",
        "destroy_after": "Destroy versions disabled at least this long (at least 1h; unset: never). Destroying "
        "is final.",
        "timeout": "The deadline of one API request.",
        "retry": "Retries of throttled (429), failing (500, 503, 504) and dropped calls.",
        "conflict_retries": "How often an etag-guarded update is read again and retried when another writer "
        "got there first (1-100).",
        "cache_for": "Reuse a secret read this recently as the base of a write (0s: never).",
        "keep_retired": "Retired versions still listed in the secret's annotations (0-50).",
        "visibility_lag": "How long a promote may take to reach every reader of the alias `current`; the old "
        "key's grace starts this long after it.",
    },
    gcp.RetrySettings: {
        "attempts": "Attempts per call, the first included (1-30).",
        "initial_backoff": "The wait before the first retry.",
        "max_backoff": "The longest wait between attempts.",
        "multiplier": "Each wait is this many times the one before (1-10).",
        "deadline": "Stop retrying a call this long after its first attempt.",
    },
    gcp.UserManagedReplication: {
        "locations": "The locations (regions) of the replicas, e.g. [us-east1, europe-west1].",
    },
    gcp.TargetOptions: {
        "secret": "A secret id: 1-255 letters, digits, '-' and '_'.",
        "project": "The project holding this secret, when not the store's.",
        "replication": "Replication of this secret when rotator creates it, when not the store's.",
        "adopt": "Take over a secret that already holds versions rotator did not write.",
    },
    store_k8s.StoreConfig: {
        "type": "kubernetes: Kubernetes Secrets (docs/stores/kubernetes.md).",
        "namespace": "The namespace of the targets' Secrets (default: the pod's own).",
        "in_cluster": _IN_CLUSTER,
        "kubeconfig": _KUBECONFIG,
        "context": _CONTEXT,
        "service_account_dir": "Where the token, ca.crt and namespace are mounted (default: "
        "/var/run/secrets/kubernetes.io/serviceaccount).",
        "timeout": "The total deadline of each API request (at most 5m).",
        "create": "Create a missing Secret (needs the create verb, which RBAC cannot limit to a name).",
        "labels": "Labels added to a Secret rotator creates.",
    },
    store_k8s.TargetOptions: {
        "secret": "The Secret's name: a lower-case DNS subdomain.",
        "key": "The data entry holding the current value (default by format: momento.json, momento.env, momento.key).",
        "endpoint_key": "The data entry of `endpoint_secret` that holds the endpoint.",
        "namespace": "This target's namespace, when not the store's.",
        "adopt": "Replace a value rotator did not write (otherwise rotator refuses and writes nothing).",
    },
    # ---- pickup checks
    pickup_http.CheckConfig: {
        "type": "http: each consumer URL answers with the key id it loaded.",
        "urls": "The consumers' key-id endpoints (http or https); each one is a consumer.",
        "key_id_field": "The dotted path of the JSON field holding the key id, e.g. keyId or momento.keyId.",
        "header": "Read the key id from this response header instead (the body is then not parsed).",
        "auth_header": "A request header whose value is read from an environment variable at every check.",
        "timeout": "Seconds (or a duration such as 5s) to wait for each consumer (at most 300).",
        "verify": "Verify TLS certificates: true, false, or the path of a CA bundle (PEM).",
    },
    pickup_http.AuthHeader: {
        "name": "The header's name.",
        "env": "The environment variable holding its value, e.g. PICKUP_TOKEN holding 'Bearer ...'.",
    },
    pickup_k8s.CheckConfig: {
        "type": "kubernetes: the consumers' pods started after the key was published, or a synced Secret holds "
        "the new key id.",
        "namespace": "The consumers' namespace.",
        "pods": "Every Ready pod matching a label selector started after the key was published.",
        "secret": "A synced Secret (External Secrets, ...) holds the new key id.",
        "kubeconfig": _KUBECONFIG,
        "context": _CONTEXT,
        "in_cluster": _IN_CLUSTER,
        "timeout": "Seconds (or a duration such as 10s) per API request, in total (at most 300).",
    },
    pickup_k8s.PodsEvidence: {
        "selector": "A label selector, e.g. app=checkout or app=checkout,tier!=canary.",
        "container": "Judge a pod by this container's start only (default: the earliest start of all its containers).",
    },
    pickup_k8s.SecretEvidence: {
        "name": "The Secret's name.",
        "key": "The data entry holding the payload (default: the Secret's only entry).",
        "format": "The payload's format: json, env or key.",
    },
    # ---- reload targets
    reload_k8s.ReloadConfig: {
        "type": "kubernetes: a rollout restart of workloads (docs/reload.md).",
        "namespace": "The workloads' namespace.",
        "kind": "Deployment, StatefulSet or DaemonSet.",
        "names": "The workloads' names (or give `selector`).",
        "selector": "A label selector choosing the workloads (or give `names`).",
        "kubeconfig": _KUBECONFIG,
        "context": _CONTEXT,
        "in_cluster": _IN_CLUSTER,
        "timeout": "Seconds (or a duration such as 10s) per API request (at most 300).",
    },
    ecs.ReloadConfig: {
        "type": "ecs: a new deployment of ECS services (forceNewDeployment).",
        "cluster": "The cluster's name or ARN.",
        "services": "The services' names or ARNs.",
        "region": _REGION,
        "endpoint_url": _ENDPOINT_URL,
        "timeout": "Seconds (or a duration) one HTTP attempt may take (at most 300).",
    },
    lambda_fn.ReloadConfig: {
        "type": "lambda: set each function's key-id environment variable to the new key id.",
        "functions": "Function names, full ARNs or partial ARNs (<account>:function:<name>), without a version "
        "or alias.",
        "region": _REGION,
        "endpoint_url": _ENDPOINT_URL,
        "timeout": "Seconds (or a duration) one HTTP attempt may take (at most 300).",
        "variable": "The environment variable that carries the key id.",
    },
    webhook.ReloadConfig: {
        "type": "webhook: a signed Standard Webhooks POST.",
        "url": "The receiver: https, or plain http to 127.0.0.1, localhost or ::1 only.",
        "secret": "The signing secret (whsec_<base64>), from an environment variable: {env: VAR}.",
        "timeout": "Seconds (or a duration such as 15s) one reload call may take in total, retries included "
        "(at most 300).",
        "ca_bundle": "Verify the receiver's certificate against this CA bundle (a PEM file) instead of the "
        "default ones.",
    },
    webhook.EnvSecret: {"env": "The environment variable holding the secret."},
}
