"""Every case of the bad-input corpus (tests/bad_input/cases.py) through ``rotator validate``, ``plan`` and
``once``, in this process through ``rotator.runtime.cli.main`` (the console script's entry point), against
one emulator and one file store whose state is such that a pass with the valid config would create and
publish a key for each policy.

Each run must: exit 2; name the case's field on stderr; print no traceback; end within a time bound with the
process's peak memory bounded; and leave the emulator's keys, its database and every file under the test's
tree byte-for-byte as they were. The last test shows the harness can see a change: the valid config's
``once`` does create keys.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from rotator.runtime.cli import main
from tests.bad_input.cases import CASES, Case, Ctx, base_config, dump
from tests.support.e2e import T0, Harness, harness, tree_snapshot

COMMANDS = {"validate": ("validate",), "plan": ("plan", "--json"), "once": ("once",)}
#: a run of bad input must end this fast (seconds; generous for a shared 2-core machine)
TIME_BOUND = 15.0
#: and the process's peak RSS must stay below this (KiB; the 10 MiB config once took ~790 MB)
RSS_BOUND_KIB = 600 * 1024


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def explain(self, argv: list[str]) -> str:
        return f"rotator {' '.join(argv)} -> {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def run_main(argv: list[str]) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with _logging_restored(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Ran(code, out.getvalue(), err.getvalue(), time.perf_counter() - start)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with harness(tmp_path_factory.mktemp("bad-input")) as h:
        h.clock.set(T0)
        yield h


def state(h: Harness) -> tuple[dict[str, Any], list[Any]]:
    """The emulator's keys (revoked ones too) and every file under the harness's tree (its database too)."""
    return tree_snapshot(h.root), h.issued_keys()


def prepare(case: Case, h: Harness, scratch: Path) -> str:
    """Write the case's config (or make its special file) and return the path to pass as --config."""
    ctx = Ctx(h.root, h.secrets, scratch, h.key_file)
    if case.special is not None:
        return case.special(ctx)
    data = base_config(h.url, h.key_file, h.secrets)
    body = case.edit(data, ctx) if case.edit is not None else None
    path = scratch / "rotator.yaml"
    path.write_bytes(body if isinstance(body, bytes) else dump(data))
    return str(path)


def argv_for(case: Case, command: str, config: str) -> list[str]:
    words = list(COMMANDS[command])
    if command == "validate" and case.online:
        words.append("--online")
    now = [] if "--now" in case.args else ["--now", T0.isoformat()]
    return ["-c", config, *words, *now, *case.args]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_names_the_field_and_changes_nothing(
    case: Case, command: str, world: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)
    for name in ("ROTATOR_TEST_UNSET_MGMT_KEY", "ROTATOR_TEST_UNSET_DIR", "ROTATOR_TEST_UNSET_ROLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    config = prepare(case, world, tmp_path)
    before = state(world)
    argv = argv_for(case, command, config)

    ran = run_main(argv)

    assert ran.code == 2, ran.explain(argv)
    assert case.field in ran.stderr, ran.explain(argv)
    assert "Traceback" not in ran.stderr + ran.stdout, ran.explain(argv)
    assert "internal error" not in ran.stderr, ran.explain(argv)
    assert ran.seconds < TIME_BOUND, ran.explain(argv)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < RSS_BOUND_KIB
    assert state(world) == before, ran.explain(argv)


def test_the_corpus_has_at_least_100_cases_with_unique_ids() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_valid_config_would_change_the_world(tmp_path: Path) -> None:
    """The corpus's checks can fail: with the valid base config, validate and plan say ok and once creates and
    publishes a key for each policy (in a harness of its own)."""
    with harness(tmp_path / "w") as h:
        h.clock.set(T0)
        path = tmp_path / "ok.yaml"
        path.write_bytes(dump(base_config(h.url, h.key_file, h.secrets)))
        h.secrets.mkdir(mode=0o700)
        before = state(h)
        for command in ("validate", "plan"):
            ran = run_main(["-c", str(path), *COMMANDS[command], "--now", T0.isoformat()])
            assert ran.code == 0, ran.explain([command])
        ran = run_main(["-c", str(path), "validate", "--online"])
        assert ran.code == 0, ran.explain(["validate --online"])
        assert state(h) == before
        ran = run_main(["-c", str(path), "once", "--now", T0.isoformat()])
        assert ran.code == 0, ran.explain(["once"])
        assert state(h) != before
        assert sorted(k.policy for k in h.issued_keys() if k.policy) == ["checkout", "reporting"]
        assert (h.secrets / "checkout" / "momento" / "current").exists()
        assert os.stat(h.secrets).st_mode & 0o077 == 0
