"""Config: durations, rotate_before, every error reported at once with its path and a fix, and
``rotator validate`` (exit 0 / 2, messages on stderr, nothing created)."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import from_mapping, load, parse_duration
from rotator.errors import ConfigError
from tests.support.e2e import ENDPOINT, run_rotator, tree_snapshot

REPO = Path(__file__).resolve().parents[1]


def base(**top: Any) -> dict[str, Any]:
    """A valid config (one policy, one file store); keyword arguments replace top-level sections."""
    data: dict[str, Any] = {
        "issuer": {
            "type": "momento",
            "url": "http://127.0.0.1:9",
            "management_key": {"file": "/nonexistent/owner.key"},
            "endpoint": ENDPOINT,
        },
        "stores": {"local": {"type": "file", "path": "/nonexistent/secrets"}},
        "policies": [{"name": "a", "role": "operator", "targets": [{"store": "local", "secret": "a"}]}],
    }
    data.update(copy.deepcopy(top))
    return data


def policy(name: str, **fields: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "role": "operator", "targets": [{"store": "local", "secret": name}]}
    p.update(fields)
    return p


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_mapping(data, source="test.yaml")
    return [str(i) for i in info.value.issues]


# ---- durations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("6h", timedelta(hours=6)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2w", timedelta(weeks=2)),
        (90, timedelta(seconds=90)),
    ],
)
def test_parse_duration_accepts(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "30", "30x", "-5s", "h", "1h30", "d30", "5 parsecs", True])
def test_parse_duration_rejects_with_an_example(text: str | bool) -> None:
    with pytest.raises(ValueError, match="30d"):
        parse_duration(text)


def test_a_bad_duration_in_a_policy_names_its_path() -> None:
    assert errors(base(policies=[policy("a", grace="soon")])) == [
        "policies[0].grace: 'soon' is not a duration: write it like 30d, 6h, 15m, 90s or 1h30m"
    ]


# ---- rotate_before --------------------------------------------------------------------------------------


def test_rotate_before_as_a_percentage_is_a_fraction_of_the_lifetime() -> None:
    (p,) = from_mapping(base(policies=[policy("a", lifetime="40d", rotate_before="25%")])).policies
    assert p.lifetime == timedelta(days=40)
    assert p.rotate_before == pytest.approx(0.25)


def test_rotate_before_as_a_duration() -> None:
    (p,) = from_mapping(base(policies=[policy("a", lifetime="30d", rotate_before="6d")])).policies
    assert p.rotate_before == timedelta(days=6)


@pytest.mark.parametrize("value", ["0%", "100%", "150%"])
def test_rotate_before_percentage_out_of_range(value: str) -> None:
    (msg,) = errors(base(policies=[policy("a", rotate_before=value)]))
    assert msg.startswith("policies[0].rotate_before: ")
    assert "between 0% and 100%" in msg


def test_rotate_before_bad_percentage() -> None:
    assert errors(base(policies=[policy("a", rotate_before="x%")])) == [
        "policies[0].rotate_before: 'x%' is not a percentage: write it like 25%"
    ]


def test_rotate_before_must_be_shorter_than_lifetime() -> None:
    data = base(policies=[policy("a"), policy("b"), policy("c", lifetime="30d", rotate_before="31d")])
    assert "policies[2].rotate_before: must be shorter than lifetime (30d)" in errors(data)


def test_timing_rule_names_the_numbers() -> None:
    data = base(interval="2m", clock_skew="30s", policies=[policy("a", lifetime="1h", rotate_before="10m", grace="1h")])
    assert errors(data) == [
        "policies[0].rotate_before: 10m is too short: it must exceed grace (1h) + interval (2m) + clock_skew (30s) "
        "= 1h2m30s, or the old key can expire while consumers still use it; raise rotate_before or the lifetime, "
        "or shorten grace"
    ]


def test_timing_rule_applies_to_a_percentage_too() -> None:
    # 50% of 1h = 30m, which does not exceed grace 30m + interval 1m + clock_skew 1m
    (msg,) = errors(base(policies=[policy("a", lifetime="1h", rotate_before="50%", grace="30m")]))
    assert msg.startswith("policies[0].rotate_before: 30m is too short")
    assert "= 32m" in msg


def test_orphan_after_must_exceed_pass_timeout() -> None:
    (msg,) = errors(base(pass_timeout="10m", policies=[policy("a", orphan_after="5m")]))
    assert msg.startswith("policies[0].orphan_after: 5m must exceed pass_timeout (10m)")


def test_never_expiring_keys_need_rotate_every() -> None:
    (msg,) = errors(base(policies=[policy("a", lifetime="never")]))
    assert msg.startswith("policies[0].rotate_every: ")


# ---- every error at once --------------------------------------------------------------------------------


def test_every_error_in_the_policies_is_reported_at_once() -> None:
    data = base(
        policies=[
            policy("a"),
            policy("a", targets=[{"store": "local", "secret": "a2"}]),
            policy("c", lifetime="30d", rotate_before="31d"),
            policy("d", targets=[{"store": "local", "secret": "d", "format": "key"}]),
            policy("e", lifetime="bogus", colour="red"),
            policy("f", targets=[{"store": "nope", "secret": "f"}]),
        ]
    )
    msgs = errors(data)
    paths = [m.split(": ", 1)[0] for m in msgs]
    assert paths == [
        "policies[1].name",
        "policies[2].rotate_before",
        "policies[3].targets[0].endpoint_secret",
        "policies[4].lifetime",
        "policies[4].colour",
        "policies[5].targets[0].store",
    ]


@pytest.mark.parametrize(
    ("top", "top_error"),
    [
        ({"interva": "1m"}, "interva: unknown field; remove it or check its spelling"),
        (
            {"issuer": {"type": "momento", "url": "http://example.com", "management_key": {"env": "K"}}},
            "issuer.url: plain http is only allowed for a local emulator (127.0.0.1); use https",
        ),
    ],
    ids=["unknown-top-level-field", "bad-issuer"],
)
def test_a_top_level_error_does_not_hide_policy_errors(top: dict[str, Any], top_error: str) -> None:
    data = base(policies=[policy("c", lifetime="30d", rotate_before="31d")], **top)
    msgs = errors(data)
    assert top_error in msgs
    assert "policies[0].rotate_before: must be shorter than lifetime (30d)" in msgs


def test_an_unknown_issuer_field_is_reported_with_its_path() -> None:
    data = base()
    data["issuer"]["tiemout"] = "5s"
    assert errors(data) == ["issuer.tiemout: unknown field; remove it or check its spelling"]


def test_unknown_fields_in_stores_and_policies() -> None:
    data = base(policies=[policy("a", colour="red")])
    data["stores"]["local"]["paht"] = "/x"
    assert errors(data) == [
        "stores.local.paht: unknown field; remove it or check its spelling",
        "policies[0].colour: unknown field; remove it or check its spelling",
    ]


def test_a_target_naming_an_unknown_store() -> None:
    assert errors(base(policies=[policy("a", targets=[{"store": "vault", "secret": "a"}])])) == [
        "policies[0].targets[0].store: no store named 'vault' (stores: local)"
    ]


def test_an_unknown_store_type_lists_the_known_ones() -> None:
    data = base(stores={"local": {"type": "file", "path": "/x"}, "remote": {"type": "ftp"}})
    (msg,) = errors(data)
    assert msg.startswith("stores.remote.type: unknown store type 'ftp'; use one of: ")
    for kind in ("aws", "azure", "file", "gcp"):
        assert kind in msg


def test_duplicate_policy_names() -> None:
    data = base(policies=[policy("a"), policy("a", targets=[{"store": "local", "secret": "other"}])])
    assert errors(data) == ["policies[1].name: 'a' is already used by policies[0]"]


def test_duplicate_targets() -> None:
    data = base(policies=[policy("a"), policy("b", targets=[{"store": "local", "secret": "a"}])])
    assert errors(data) == [
        "policies[1].targets[0]: secret 'a' in store 'local' is already written by policies[0].targets[0]"
    ]


def test_format_key_needs_an_endpoint_secret() -> None:
    (msg,) = errors(base(policies=[policy("a", format="key")]))
    assert msg.startswith("policies[0].targets[0].endpoint_secret: ")
    assert "endpoint_secret:" in msg.split(": ", 1)[1]


def test_format_key_with_an_endpoint_secret_is_valid() -> None:
    t = {"store": "local", "secret": "a", "format": "key", "endpoint_secret": "a-endpoint"}
    (p,) = from_mapping(base(policies=[policy("a", targets=[t])])).policies
    assert (p.targets[0].format, p.targets[0].endpoint_secret) == ("key", "a-endpoint")


@pytest.mark.parametrize("url", ["http://127.0.0.1:7070", "http://localhost:7070", "https://mga.example.com"])
def test_issuer_url_allowed(url: str) -> None:
    data = base()
    data["issuer"]["url"] = url
    assert from_mapping(data).issuer.base_url == url


@pytest.mark.parametrize("url", ["http://example.com", "http://10.0.0.5:7070", "http://mga.registry.prod.a.momentohq.com"])
def test_plain_http_issuer_url_only_for_loopback(url: str) -> None:
    data = base()
    data["issuer"]["url"] = url
    (msg,) = errors(data)
    assert msg.startswith("issuer.url: plain http is only allowed for a local emulator")


def test_issuer_endpoint_shape_is_checked() -> None:
    data = base()
    data["issuer"]["endpoint"] = "https://cell-4-us-west-2-1.prod.a.momentohq.com"
    (msg,) = errors(data)
    assert msg.startswith("issuer.endpoint: ")
    assert "without scheme" in msg


def test_v2_management_key_without_endpoint_uses_momento_wording() -> None:
    data = base()
    del data["issuer"]["endpoint"]
    data["issuer"]["key_version"] = "v2"
    assert errors(data) == ["issuer.endpoint: Missing required property: endpoint"]


def test_error_text_starts_with_the_source_and_count() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(base(policies=[policy("a", grace="x"), policy("b", lifetime="y")]), source="my.yaml")
    text = str(info.value)
    assert text.splitlines()[0] == "invalid config my.yaml (2 errors):"
    assert "  - policies[0].grace: " in text
    assert "  - policies[1].lifetime: " in text


def test_the_embedded_default_config_is_valid() -> None:
    cfg = load(REPO / "config" / "local.yaml")
    assert cfg.issuer.type == "emulator"
    assert len(cfg.policies) == 2
    assert {t.format for p in cfg.policies for t in p.targets} == {"json", "env", "key"}
    # keys live a few minutes, so `make run` shows a whole cycle quickly
    assert all(p.lifetime is not None and p.lifetime <= timedelta(minutes=10) for p in cfg.policies)


# ---- rotator validate -----------------------------------------------------------------------------------


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def relative_paths_config() -> dict[str, Any]:
    """A config whose store and key paths are relative to the cwd, so anything created would show up there."""
    data = base()
    data["issuer"]["management_key"] = {"file": "./.rotator/owner.key"}
    data["stores"]["local"]["path"] = "./.rotator/secrets"
    return data


def test_validate_ok_exits_0_and_creates_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, relative_paths_config())
    before = tree_snapshot(tmp_path)
    r = run_rotator("-c", str(path), "validate", cwd=tmp_path)
    assert r.returncode == 0, r.explain()
    assert "OK: 1 policies, 1 stores, 1 targets" in r.stdout
    assert tree_snapshot(tmp_path) == before


def test_validate_bad_config_exits_2_with_every_message_on_stderr_and_creates_nothing(tmp_path: Path) -> None:
    data = relative_paths_config()
    data["policies"] = [
        policy("a", lifetime="30d", rotate_before="31d"),
        policy("b", targets=[{"store": "local", "secret": "b", "format": "key"}]),
        policy("c", colour="red"),
    ]
    path = write(tmp_path, data)
    before = tree_snapshot(tmp_path)
    r = run_rotator("-c", str(path), "validate", cwd=tmp_path)
    assert r.returncode == 2, r.explain()
    assert r.stdout == ""
    assert f"invalid config {path} (3 errors)" in r.stderr
    assert "policies[0].rotate_before: must be shorter than lifetime (30d)" in r.stderr
    assert "policies[1].targets[0].endpoint_secret: " in r.stderr
    assert "policies[2].colour: unknown field" in r.stderr
    assert tree_snapshot(tmp_path) == before


def test_validate_the_embedded_default_creates_nothing(tmp_path: Path) -> None:
    # local.yaml uses ./.rotator paths and an in-process emulator: validate must start neither
    before = tree_snapshot(tmp_path)
    r = run_rotator("-c", str(REPO / "config" / "local.yaml"), "validate", cwd=tmp_path)
    assert r.returncode == 0, r.explain()
    assert tree_snapshot(tmp_path) == before == {}


# ---- the safe loader (rotator.safe_yaml) -----------------------------------------------------------------


def _load_bytes(tmp_path: Path, data: bytes, **env: str) -> Any:
    from rotator import safe_yaml

    return safe_yaml.load_bytes(data, source="t.yaml", environ=env)


def _loader_error(tmp_path: Path, data: bytes, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load_bytes(tmp_path, data, **env)
    return [str(i) for i in info.value.issues]


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert _load_bytes(tmp_path, b"\xef\xbb\xbfa: 1\n") == {"a": 1}


def test_a_latin1_byte_is_reported_with_its_offset_line_and_column(tmp_path: Path) -> None:
    assert _loader_error(tmp_path, b"a: 1\nb: caf\xe9\n") == [
        "not UTF-8: byte 0xe9 at byte offset 11 (line 2, column 7); save the file as UTF-8"
    ]


def test_utf16_is_named(tmp_path: Path) -> None:
    assert "saved as UTF-16 (little-endian)" in _loader_error(tmp_path, "a: 1".encode("utf-16"))[0]


def test_a_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    assert _loader_error(tmp_path, b"x:\n  a: 1\n  b: 2\n  a: 3\n") == [
        "x.a: duplicate key (lines 2 and 4): YAML keeps only one; remove one of them"
    ]


def test_an_unset_variable_names_the_field_and_the_fix(tmp_path: Path) -> None:
    assert _loader_error(tmp_path, b"stores:\n  local: {type: file, path: '${DIR}/s'}\n") == [
        "stores.local.path: ${DIR} is not set: export DIR, or give a default like ${DIR:-value}"
    ]


def test_an_empty_variable_without_a_default_is_an_error_and_a_default_applies(tmp_path: Path) -> None:
    assert "${DIR} is empty" in _loader_error(tmp_path, b"p: ${DIR}\n", DIR="")[0]
    assert _load_bytes(tmp_path, b"p: ${DIR:-/x}\n", DIR="") == {"p": "/x"}


def test_an_expanded_plain_scalar_is_typed_as_yaml_would_type_it(tmp_path: Path) -> None:
    data = _load_bytes(tmp_path, b"port: ${PORT}\nq: '${PORT}'\n", PORT="8080")
    assert data == {"port": 8080, "q": "8080"}


def test_nesting_and_alias_expansion_are_bounded(tmp_path: Path) -> None:
    assert "nested more than 64 levels" in _loader_error(tmp_path, b"[" * 65 + b"]" * 65)[0]
    lol = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lol += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(6)]
    assert "through anchors and aliases" in _loader_error(tmp_path, "\n".join(lol).encode())[0]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a FIFO, not a regular file"):
        load(fifo)


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: Any) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"a: 1\n" * 100)
    monkeypatch.setenv("ROTATOR_CONFIG_MAX_BYTES", "100")
    with pytest.raises(ConfigError, match="a config may be at most 100 bytes"):
        load(p)


def test_16000_unknown_keys_are_reported_fast_and_capped(tmp_path: Path) -> None:
    import time

    data = base()
    data.update({f"unknown_{i}": 1 for i in range(16000)})
    start = time.perf_counter()
    found = errors(data)
    assert time.perf_counter() - start < 5
    assert len(found) == 101
    assert found[-1] == "... and 15900 more errors (fix these first)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99999999999d", "too long: a duration may be at most 36500d (100 years)"),
        (-300, "a duration cannot be negative: write one like 30d"),
        (float("nan"), "not a number (NaN) is not a duration: write one like 30d"),
        (float("inf"), "too long"),
    ],
)
def test_durations_are_bounded_and_say_what_to_write(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_duration(value)


def test_interval_must_be_positive_and_a_description_must_fit_the_key_api() -> None:
    assert "interval: must be longer than 0s, e.g. 1m" in errors(base(interval="0s"))
    found = errors(base(policies=[policy("a", description="d" * 1100)]))
    assert found == [
        "policies[0].description: 1100 characters is too long: with rotator's marker the key description must "
        "fit the key API's limit of 1024; shorten it to at most 1012 characters"
    ]


def test_a_key_pasted_into_a_name_is_described_never_echoed() -> None:
    from tests.support.e2e import fake_v2_key

    key = fake_v2_key()
    data = base()
    data["issuer"]["management_key"] = {"env": key}
    found = errors(data)
    assert not any(key in f or key[-20:] in f for f in found)
    assert "issuer.management_key.env: holds a Momento API key (v2), and a key does not belong in a config file" in (
        found[0]
    )
