"""A Momento key pasted where it does not belong never comes back on stdout or stderr.

A real key minted by the emulator (v2) and a v1-shaped key are put, one at a time, into every string field
of a valid config (and into fields it does not set, and as a mapping key), and into every command-line
option; ``rotator validate`` and ``rotator plan`` must refuse it (exit 2) without printing the key or any
long piece of it.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bad_input.cases import base_config, dump
from tests.bad_input.test_corpus import run_main
from tests.support.e2e import T0, Harness, harness


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with harness(tmp_path_factory.mktemp("no-echo")) as h:
        h.clock.set(T0)
        yield h


def v1_key() -> str:
    inner = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb3RhdG9yLXRlc3QifQ.c2lnbmF0dXJlLW9mLXRoZS12MS1rZXk"
    return base64.b64encode(json.dumps({"endpoint": "cell-1-us-east-1-1.x.com", "api_key": inner}).encode()).decode()


@pytest.fixture(scope="module", params=["v2", "v1"])
def key(request: pytest.FixtureRequest, world: Harness) -> str:
    if request.param == "v2":
        return world.emulator.mint("operator", "pasted by mistake").api_key.reveal()
    return v1_key()


def pieces(key: str) -> list[str]:
    """The key and every 16-character slice of it: none may appear in the output."""
    return [key] + [key[i : i + 16] for i in range(0, len(key) - 16, 8)]


def leaks(key: str, text: str) -> list[str]:
    return [p for p in pieces(key) if p in text]


def string_paths(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from string_paths(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from string_paths(v, (*path, i))
    elif isinstance(data, str):
        yield path


def set_path(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        data = data.setdefault(p, {}) if isinstance(data, dict) else data[p]
    data[path[-1]] = value


BASE = base_config("http://127.0.0.1:9", Path("/k"), Path("/s"))
#: fields the base config does not set, where a key is a likely mistake
EXTRA_FIELDS: list[tuple[Any, ...]] = [
    ("issuer", "management_key", "env"),
    ("issuer", "management_key", "bootstrap_env"),
    ("issuer", "private_endpoints", 0),
    ("http", "listen"),
    ("metrics", "pushgateway"),
    ("metrics", "job"),
    ("log_level",),
    ("defaults", "format"),
    ("defaults", "lifetime"),
    ("policies", 0, "format"),
    ("policies", 0, "targets", 0, "endpoint_secret"),
    ("alerts", "state_file"),
    ("alerts", "alert_every"),
]
FIELDS = list(string_paths(BASE)) + EXTRA_FIELDS


def _config(world: Harness, tmp_path: Path, field: tuple[Any, ...] | None, key: str) -> Path:
    data = base_config(world.url, world.key_file, world.secrets)
    if field is not None:
        if field[:2] == ("issuer", "management_key") and field[-1] == "bootstrap_env":
            data["issuer"]["management_key"] = {"store": "local", "secret": "x", "bootstrap_env": key}
        elif field[:2] == ("issuer", "private_endpoints"):
            data["issuer"]["private_endpoints"] = [key]
        elif field[:2] == ("issuer", "management_key") and field[-1] == "env":
            data["issuer"]["management_key"] = {"env": key}
        else:
            set_path(data, field, key)
    path = tmp_path / "rotator.yaml"
    path.write_bytes(dump(data))
    return path


@pytest.mark.parametrize("field", FIELDS, ids=[".".join(map(str, f)) for f in FIELDS])
def test_a_key_in_any_config_field_is_refused_and_never_printed(
    field: tuple[Any, ...], key: str, world: Harness, tmp_path: Path
) -> None:
    cfg = _config(world, tmp_path, field, key)
    for command in (["validate"], ["plan", "--json"]):
        ran = run_main(["-c", str(cfg), *command, "--now", T0.isoformat()])
        assert ran.code == 2, ran.explain(command)
        assert not leaks(key, ran.stdout + ran.stderr), ran.explain(command)
        assert "does not belong" in ran.stderr, ran.explain(command)


def test_a_key_as_a_store_name_is_refused_and_never_printed(key: str, world: Harness, tmp_path: Path) -> None:
    data = base_config(world.url, world.key_file, world.secrets)
    data["stores"] = {key: copy.deepcopy(data["stores"]["local"])}
    data["policies"][0]["targets"][0]["store"] = key
    cfg = tmp_path / "rotator.yaml"
    cfg.write_bytes(dump(data))
    ran = run_main(["-c", str(cfg), "validate"])
    assert ran.code == 2, ran.explain(["validate"])
    assert not leaks(key, ran.stdout + ran.stderr), ran.explain(["validate"])


CLI = [
    ("config", lambda cfg, k: ["-c", k, "validate"]),
    ("policy", lambda cfg, k: ["-c", cfg, "plan", "--policy", k]),
    ("policy-equals", lambda cfg, k: ["-c", cfg, "once", f"--policy={k}"]),
    ("now", lambda cfg, k: ["-c", cfg, "plan", "--now", k]),
    ("now-offset", lambda cfg, k: ["-c", cfg, "plan", "--now", "+" + k]),
    ("log-level", lambda cfg, k: ["-c", cfg, "plan", "--log-level", k]),
    ("window", lambda cfg, k: ["-c", cfg, "audit", "--window", k]),
    ("rotate-policy", lambda cfg, k: ["-c", cfg, "rotate", k, "--yes"]),
    ("unknown-flag", lambda cfg, k: ["-c", cfg, "plan", "--" + k]),
    ("stray-argument", lambda cfg, k: ["-c", cfg, "plan", k]),
    ("command", lambda cfg, k: ["-c", cfg, k]),
]


@pytest.mark.parametrize("option", CLI, ids=[c[0] for c in CLI])
def test_a_key_in_any_command_line_option_is_never_printed(
    option: tuple[str, Any], key: str, world: Harness, tmp_path: Path
) -> None:
    cfg = _config(world, tmp_path, None, key)
    before = world.issued_keys()
    argv = option[1](str(cfg), key)
    if "--now" not in argv:
        argv += ["--now", T0.isoformat()]
    ran = run_main(argv)
    assert ran.code == 2, ran.explain(argv)
    assert not leaks(key, ran.stdout + ran.stderr), ran.explain(argv)
    assert world.issued_keys() == before
