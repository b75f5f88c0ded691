"""The config's JSON Schema (rotator.schema, ``rotator schema``, config/rotator.schema.json; issue 25).

- the checked-in file is what the command prints, and it is a valid draft-07 schema;
- every field has a description, every optional one its default;
- every store, pickup and reload type is in it, each shape told apart by ``type``;
- every example config starts with the yaml-language-server line and validates;
- every ```yaml block of the README validates as what it is: a whole config against the whole schema, a
  fragment (some top-level sections, or some fields of a policy) against those parts of it, with the fields a
  fragment leaves out not required (:data:`NOT_CONFIGS` lists the blocks that are no rotator config at all,
  each with why);
- the duration and percentage patterns accept what the loader's parsers accept (property-tested);
- the schema says no where it should (unknown fields and types, bad durations and names) and yes to
  ``${VAR}``, which the loader expands before it validates.

YAML is read here as rotator reads it (PyYAML's safe loader, YAML 1.1: a timestamp becomes a datetime, written
back as ISO 8601 text for the check), with ``${VAR}`` left as written: the schema checks the file as an editor
shows it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator import schema
from rotator.durations import parse_before, parse_duration
from rotator.pickup import base as pickup_base
from rotator.reload import base as reload_base
from rotator.runtime.cli import main
from rotator.stores import registry as store_registry

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "config" / "rotator.schema.json"
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=./rotator.schema.json"

#: README ```yaml blocks that are not rotator configs (by their top-level keys), and why they are not checked
NOT_CONFIGS: dict[frozenset[str], str] = {
    frozenset({"components"}): "a kustomization's `components:` list (Deploy: Kubernetes), not a rotator config",
}


def _json(value: Any) -> Any:
    """YAML as loaded, in JSON's types (a YAML 1.1 timestamp is ISO 8601 text, as an editor reads it)."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _load(text: str) -> Any:
    return _json(yaml.safe_load(textwrap.dedent(text)))


@pytest.fixture(scope="module")
def full() -> dict[str, Any]:
    return schema.build()


def _errors(sub: dict[str, Any], root: dict[str, Any], data: Any) -> list[str]:
    """Every error of ``data`` against ``sub`` (a part of ``root``, whose definitions it may use)."""
    validator = jsonschema.Draft7Validator({**sub, "definitions": root["definitions"]})
    out = []
    for e in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        best = (jsonschema.exceptions.best_match(e.context) if e.context else None) or e
        out.append(f"{best.json_path}: {best.message[:300]}")
    return out


def _partial(root: dict[str, Any]) -> dict[str, Any]:
    """The schema with a policy's required fields not required: for README fragments that show a few."""
    out = copy.deepcopy(root)
    out["definitions"]["Policy"].pop("required", None)
    return out


# ---- the file and the command ------------------------------------------------------------------------------


def test_the_checked_in_schema_is_what_rotator_schema_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == SCHEMA_FILE.read_text(), (
        "config/rotator.schema.json is out of date: run `rotator schema > config/rotator.schema.json`"
    )
    assert json.loads(printed) == schema.build()


def test_it_is_a_draft_07_schema(full: dict[str, Any]) -> None:
    assert full["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(full)
    # draft-07 ignores the siblings of $ref, so a described reference is an allOf; no $defs, no 2019+ keywords
    text = json.dumps(full)
    assert '"$defs"' not in text and "dependentRequired" not in text and "unevaluated" not in text
    for node in _nodes(full):
        if "$ref" in node:
            assert set(node) == {"$ref"}, node
            assert node["$ref"].removeprefix("#/definitions/") in full["definitions"], node["$ref"]


def _nodes(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            out.append(n)
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return out


def _objects(full: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("(config)", full), *((k, v) for k, v in full["definitions"].items() if "properties" in v)]


def test_every_field_has_a_description_and_every_optional_one_a_default(full: dict[str, Any]) -> None:
    undescribed, no_default = [], []
    for name, model in _objects(full):
        assert model.get("description"), f"{name} has no description"
        required = set(model.get("required", ()))
        for field, prop in model["properties"].items():
            if not prop.get("description"):
                undescribed.append(f"{name}.{field}")
            if field not in required and "default" not in prop:
                no_default.append(f"{name}.{field}")
    assert undescribed == [], "add a description to rotator.schema FIELD_DESCRIPTIONS"
    # a policy field that is unset takes the value of `defaults` (that is its default, and its description says so)
    inherited = sorted(f"Policy.{f}" for f in schema._INHERITED)
    assert sorted(no_default) == inherited
    for f in schema._INHERITED:
        assert "defaults." in full["definitions"]["Policy"]["properties"][f]["description"], f


def test_defaults_are_written_as_a_config_writes_them(full: dict[str, Any]) -> None:
    props = full["properties"]
    assert props["interval"]["default"] == "1m"
    assert props["defaults"]["default"]["lifetime"] == "30d"
    assert props["drift_check_every"]["default"] == "1h"
    assert full["definitions"]["RetrySettings"]["properties"]["initial_backoff"]["default"] == "500ms"
    assert full["definitions"]["AzureStore"]["properties"]["client_options"]["default"] == {}  # a default_factory
    for node in _nodes(full):
        d = node.get("default")
        assert not (isinstance(d, str) and re.fullmatch(r"P(T)?[0-9.]+[DHMS].*", d)), f"an ISO 8601 default: {d}"


def _branch_types(full: dict[str, Any], union: dict[str, Any]) -> dict[str, str]:
    """``type`` const -> definition name, for each branch of a union."""
    out = {}
    for branch in union.get("oneOf") or union["anyOf"]:
        name = branch["$ref"].removeprefix("#/definitions/")
        out[full["definitions"][name]["properties"]["type"]["const"]] = name
    return out


def test_every_store_pickup_and_reload_type_is_a_shape_told_apart_by_type(full: dict[str, Any]) -> None:
    stores = full["properties"]["stores"]["additionalProperties"]
    policy = full["definitions"]["Policy"]["properties"]
    pickup, reload = policy["pickup"]["items"], policy["reload"]["items"]
    assert sorted(_branch_types(full, stores)) == sorted(store_registry.BUILTIN)
    assert sorted(_branch_types(full, pickup)) == sorted(pickup_base.REGISTRY)
    assert sorted(_branch_types(full, reload)) == sorted(reload_base.REGISTRY)
    for union in (stores, pickup, reload):
        assert "oneOf" in union and union["discriminator"]["propertyName"] == "type"
    # a target names a store, not a type: it may be any store type's target
    targets = [b["$ref"].removeprefix("#/definitions/") for b in policy["targets"]["items"]["anyOf"]]
    assert targets == [f"{k.capitalize()}Target" for k in store_registry.BUILTIN]
    for name in targets:
        assert full["definitions"][name]["additionalProperties"] is False
    assert full["definitions"]["AlertsConfig"]["properties"]["notifiers"]["items"]["discriminator"]
    assert full["properties"]["freeze"]["items"] == {"$ref": "#/definitions/Freeze"}


def test_building_the_schema_loads_no_cloud_sdk() -> None:
    probe = (
        "import sys; from rotator import schema; schema.render(); "
        "print([m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'azure', 'google', 'kubernetes')])"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_with_plugins_adds_an_installed_plugin_store_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel, ConfigDict

    from rotator.stores.base import BaseTargetOptions, StoreType

    class Vault(BaseModel):
        """``stores.<name>`` for ``type: vault``."""

        model_config = ConfigDict(extra="forbid")
        type: Literal["vault"]
        mount: str = "secret"

    class VaultTarget(BaseTargetOptions):
        path_prefix: str = ""

    vault = StoreType(name="vault", config=Vault, target=VaultTarget, open=lambda spec, ctx: None)  # type: ignore[arg-type,return-value]
    real = store_registry.store_type
    monkeypatch.setattr(store_registry, "known", lambda: [*store_registry.BUILTIN, "vault"])
    monkeypatch.setattr(store_registry, "store_type", lambda kind: vault if kind == "vault" else real(kind))
    schema._build.cache_clear()
    try:
        with_plugin = schema.build(plugins=True)
        without = schema.build()
    finally:
        schema._build.cache_clear()
    stores = with_plugin["properties"]["stores"]["additionalProperties"]
    assert _branch_types(with_plugin, stores)["vault"] == "VaultStore"
    assert "VaultStore" not in without["definitions"]
    cfg = {
        "issuer": {"type": "emulator"},
        "stores": {"v": {"type": "vault", "mount": "kv"}},
        "policies": [{"name": "p", "role": "viewer", "targets": [{"store": "v", "secret": "s", "path_prefix": "x"}]}],
    }
    assert _errors(with_plugin, with_plugin, cfg) == []
    assert _errors(without, without, cfg) != []


# ---- the example configs and the README -------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_names_the_schema_and_matches_it(path: Path, full: dict[str, Any]) -> None:
    text = path.read_text()
    assert text.splitlines()[0] == SCHEMA_LINE
    assert (path.parent / "rotator.schema.json").is_file()
    assert _errors(full, full, _load(text)) == []


def _readme_blocks() -> list[tuple[int, str]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    blocks, start = [], None
    for i, line in enumerate(lines, 1):
        if start is None and line.strip() == "```yaml":
            start = i
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines[start : i - 1])))
            start = None
    assert start is None, f"README.md line {start}: a ```yaml block is never closed"
    return blocks


README_BLOCKS = _readme_blocks()


@pytest.mark.parametrize(("line", "text"), README_BLOCKS, ids=[f"README.md:{n}" for n, _ in README_BLOCKS])
def test_every_readme_yaml_block_matches_the_schema(line: int, text: str, full: dict[str, Any]) -> None:
    data = _load(text)
    assert isinstance(data, dict), f"README.md:{line}: a block of YAML that is no mapping"
    keys = frozenset(data)
    if keys in NOT_CONFIGS:
        # not a rotator config (the reason is in NOT_CONFIGS): only check that it is the kind of file it says
        assert all(isinstance(c, str) for c in data["components"]), f"README.md:{line}"
        return
    config_keys, policy_keys = set(full["properties"]), set(full["definitions"]["Policy"]["properties"])
    if {"issuer", "policies"} <= keys:  # a whole config: the whole schema, everything required
        errors = _errors(full, full, data)
    elif keys <= config_keys:  # some top-level sections: each against its part, a policy's fields not required
        partial = _partial(full)
        errors = [e for k, v in data.items() for e in _errors(partial["properties"][k], partial, v)]
    elif keys <= policy_keys:  # some fields of a policy (an indented snippet)
        partial = _partial(full)
        errors = _errors({"$ref": "#/definitions/Policy"}, partial, data)
    else:
        pytest.fail(
            f"README.md:{line}: a YAML block with top-level keys {sorted(keys)} that is neither a config, a part of "
            "one, nor a policy's fields: fix it, or list it in NOT_CONFIGS with the reason"
        )
    assert errors == [], f"README.md:{line}"


def test_the_readme_has_whole_configs_fragments_and_policy_snippets(full: dict[str, Any]) -> None:
    """The README checks above are not vacuous: each kind of block is there."""
    kinds = []
    for _, text in README_BLOCKS:
        keys = set(_load(text))
        kinds.append(
            "whole"
            if {"issuer", "policies"} <= keys
            else "sections"
            if keys <= set(full["properties"])
            else "policy"
            if keys <= set(full["definitions"]["Policy"]["properties"])
            else "other"
        )
    assert {"whole", "sections", "policy"} <= set(kinds), kinds
    assert kinds.count("other") == sum(1 for _, t in README_BLOCKS if frozenset(_load(t)) in NOT_CONFIGS)


def test_a_readme_block_with_a_mistake_fails(full: dict[str, Any]) -> None:
    """The check would catch a broken README: the biggest block, with one typo and one bad value."""
    line, text = max(README_BLOCKS, key=lambda b: len(b[1]))
    data = _load(text)
    assert {"issuer", "policies"} <= set(data), line
    data["policies"][0]["grace"] = "2 hours"
    data["stores"]["aws-prod"]["regoin"] = data["stores"]["aws-prod"].pop("region")
    errors = _errors(full, full, data)
    assert any("policies[0].grace" in e for e in errors), errors
    assert any("stores['aws-prod']" in e for e in errors), errors


# ---- what the schema accepts ------------------------------------------------------------------------------


MINIMAL: dict[str, Any] = {
    "issuer": {"type": "emulator"},
    "stores": {"local": {"type": "file"}},
    "policies": [{"name": "checkout-api", "role": "operator", "targets": [{"store": "local", "secret": "a/b"}]}],
}


def _with(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        node: Any = cfg
        *path, last = dotted.split("__")
        for part in path:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value
    return cfg


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"colour": "blue"}, "$"),  # an unknown top-level field
        ({"stores__local": {"type": "vault"}}, "$.stores.local"),  # an unknown store type
        ({"stores__local": {"type": "aws", "regoin": "us-west-2"}}, "$.stores.local"),  # a store field misspelt
        ({"stores__bad name": {"type": "file"}}, "$.stores"),  # a store name with a space
        ({"policies__0__grace": "an hour"}, "$.policies[0].grace"),  # not a duration
        ({"policies__0__rotate_before": "25 percent"}, "$.policies[0].rotate_before"),
        ({"policies__0__name": "Checkout_API"}, "$.policies[0].name"),
        ({"policies__0__pickup": [{"type": "grace"}]}, "$.policies[0].pickup[0]"),
        ({"policies__0__pickup": [{"type": "http"}]}, "$.policies[0].pickup[0]"),  # urls is required
        ({"policies__0__reload": [{"type": "ecs", "cluster": "c", "services": ["s"], "x": 1}]}, "$.policies[0]"),
        ({"policies__0__targets": []}, "$.policies[0].targets"),
        ({"policies__0__targets__0__adopts": True}, "$.policies[0].targets[0]"),  # no store's target has it
        ({"concurrency": 65}, "$.concurrency"),
        ({"issuer__management_key": {"env": "A", "file": "/k"}}, "$.issuer.management_key"),  # two sources
        ({"issuer__management_key": {"store": "local"}}, "$.issuer.management_key"),  # store without secret
        ({"freeze": [{"from": "2026-12-24T00:00:00Z"}]}, "$.freeze[0]"),  # no `to`
        ({"leader_election__enabled": "maybe"}, "$.leader_election.enabled"),
        ({"stores__local": {"type": "${STORE_TYPE}"}}, "$.stores.local"),  # `type` is written as it is
    ],
)
def test_the_schema_refuses(changes: dict[str, Any], where: str, full: dict[str, Any]) -> None:
    errors = _errors(full, full, _with(**changes))
    assert errors, changes
    assert any(e.startswith(where) for e in errors), errors


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"interval": 90, "pass_timeout": 300.5},  # durations as seconds
        {"interval": "1h30m", "jitter": "500ms", "clock_skew": "2M"},
        {"policies__0__rotate_before": "25%", "policies__0__lifetime": "never", "policies__0__rotate_every": "30d"},
        {"policies__0__rotate_before": 0.25},
        {"policies__0__window": None, "defaults": {"window": {"cron": "0 9 * * MON-THU", "duration": "6h"}}},
        {"policies__0__pickup": [{"type": "http", "urls": ["https://a/k"], "timeout": "5s"}]},
        {
            "policies__0__pickup": [
                {"type": "kubernetes", "namespace": "p", "pods": {"selector": "app=a"}, "timeout": 3}
            ]
        },
        {"policies__0__self": True, "issuer__management_key": {"store": "local", "secret": "a/b"}},
        {"freeze": [{"from": "2026-12-24T00:00:00Z", "to": "2026-12-27T00:00:00+01:00", "reason": "holidays"}]},
        # ${VAR} is expanded before the loader validates: accepted wherever a scalar is
        {"concurrency": "${CONCURRENCY:-8}", "leader_election": {"enabled": "${ROTATOR_LEADER_ELECTION:-false}"}},
        {"policies__0__grace": "${GRACE}", "policies__0__format": "${FORMAT:-json}", "log_level": "${LOG_LEVEL}"},
        {"issuer": {"type": "momento", "management_key": {"env": "MOMENTO_MANAGEMENT_KEY"}, "url": "${ISSUER_URL}"}},
    ],
)
def test_the_schema_accepts(changes: dict[str, Any], full: dict[str, Any]) -> None:
    assert _errors(full, full, _with(**changes)) == []


def test_every_accepted_sample_also_loads(tmp_path: Path) -> None:
    """The accepted samples without ${VAR} are configs the loader takes too (the schema is not looser by mistake
    in what it was given)."""
    from rotator.config import from_mapping

    samples = [
        {"interval": 90, "pass_timeout": 300.5},
        {"interval": "1h30m", "jitter": "500ms", "clock_skew": "2M"},
        {"policies__0__rotate_before": "25%"},
        {"policies__0__window": None, "defaults": {"window": {"cron": "0 9 * * MON-THU", "duration": "6h"}}},
        {"policies__0__pickup": [{"type": "http", "urls": ["https://a/k"], "timeout": "5s"}]},
    ]
    for changes in samples:
        cfg = _with(**changes)
        cfg["stores"]["local"]["path"] = str(tmp_path / "secrets")
        from_mapping(cfg)


# ---- the patterns against the parsers --------------------------------------------------------------------


_DURATION = re.compile(schema.DURATION_PATTERN)
_PERCENT = re.compile(schema.PERCENT_PATTERN)


def _duration_ok(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError as exc:
        return "too long" in str(exc)  # the one rule a pattern cannot say: at most 36500d
    return True


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789.mMsShHdDwW \tx", max_size=12))
def test_the_duration_pattern_accepts_what_parse_duration_accepts(text: str) -> None:
    assert bool(_DURATION.search(text)) == _duration_ok(text), repr(text)


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(r"\A *[0-9]{1,4}( *[0-9]){0,3}( *\. *[0-9]{1,3})? *(ms|[wdhms]) *([0-9]{1,3}[dhms])?\Z"))
def test_durations_as_people_write_them_match(text: str) -> None:
    assert _duration_ok(text) and _DURATION.search(text), repr(text)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789. %+x", max_size=8))
def test_the_percentage_pattern_accepts_what_parse_before_accepts(text: str) -> None:
    try:
        value = parse_before(text)
    except ValueError as exc:
        # refused; the pattern may still match what only the range rule (0% < p < 100%) refuses
        assert not _PERCENT.search(text) or "between 0% and 100%" in str(exc), repr(text)
        return
    if text.strip().endswith("%"):
        assert isinstance(value, float) and _PERCENT.search(text), repr(text)
