"""Shards (rotator.shard): every policy in exactly one shard, by a hash that no process or order changes, and the
commands that run passes (once, run, plan, status) taking --shard and $ROTATOR_SHARD."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.errors import ConfigError
from rotator.shard import Shard, from_environment, parse, shard_of
from tests.support.e2e import T0, Harness, harness, run_rotator

names = st.lists(st.text(min_size=1, max_size=40), unique=True, max_size=60)


@given(names=names, count=st.integers(min_value=1, max_value=64))
@settings(max_examples=300, deadline=None)
def test_every_policy_is_in_exactly_one_shard_for_any_count(names: list[str], count: int) -> None:
    shards = [Shard(i, count).select(names) for i in range(count)]
    for name in names:
        assert sum(name in s for s in shards) == 1, (name, count)
    assert sorted(n for s in shards for n in s) == sorted(names)


@given(names=names, count=st.integers(min_value=1, max_value=64), data=st.data())
@settings(max_examples=200, deadline=None)
def test_a_policys_shard_depends_only_on_its_name_and_the_count(
    names: list[str], count: int, data: st.DataObject
) -> None:
    # not on the order of the config, nor on which other policies exist
    shuffled = data.draw(st.permutations(names))
    some = data.draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    for i in range(count):
        assert set(Shard(i, count).select(shuffled)) == set(Shard(i, count).select(names))
        assert set(Shard(i, count).select(some)) == set(Shard(i, count).select(names)) & set(some)


def test_the_hash_is_the_same_in_another_process() -> None:
    # Python's hash() of a str is salted per process (PYTHONHASHSEED); the shard must not be
    code = "from rotator.shard import shard_of; print([shard_of(n, 7) for n in ('checkout', 'reporting', 'a', 'ü')])"
    out = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert out == {f"{[shard_of(n, 7) for n in ('checkout', 'reporting', 'a', 'ü')]}\n"}
    assert [shard_of("checkout", 2), shard_of("reporting", 2)] == [0, 1]  # crc32, fixed for good


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "--shard: expected INDEX/COUNT such as 0/4 (the first of 4 shards), not '2'"),
        ("a/4", "--shard: expected INDEX/COUNT such as 0/4"),
        ("4/4", "--shard: the shard index counts from 0 to COUNT-1 (3), so '4/4' names none"),
        ("0/0", "--shard: the shard count must be from 1 to 10000, not '0/0'"),
    ],
)
def test_a_bad_shard_is_bad_input_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(text)
    assert message in str(exc.value)


def test_the_option_wins_over_the_environment_and_an_indexed_job_needs_a_count() -> None:
    env = {"ROTATOR_SHARD": "1/3", "ROTATOR_SHARD_COUNT": "5", "JOB_COMPLETION_INDEX": "4"}
    assert from_environment("0/2", env) == Shard(0, 2)
    assert from_environment(None, env) == Shard(1, 3)
    assert from_environment(None, {"ROTATOR_SHARD_COUNT": "5", "JOB_COMPLETION_INDEX": "4"}) == Shard(4, 5)
    assert from_environment(None, {"JOB_COMPLETION_INDEX": "4"}) is None  # a plain Indexed Job: no sharding
    assert from_environment(None, {}) is None
    with pytest.raises(ConfigError, match=r"\$JOB_COMPLETION_INDEX: \$ROTATOR_SHARD_COUNT is set but"):
        from_environment(None, {"ROTATOR_SHARD_COUNT": "5"})
    with pytest.raises(ConfigError, match=r"\$JOB_COMPLETION_INDEX: .* names none"):
        from_environment(None, {"ROTATOR_SHARD_COUNT": "5", "JOB_COMPLETION_INDEX": "5"})


# ---- the commands --------------------------------------------------------------------------------------------


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


def _policies(h: Harness, *args: str, env: dict[str, str] | None = None) -> list[str]:
    h.clock.set(T0)
    r = run_rotator("-c", str(h.root / "rotator.yaml"), *args, cwd=h.work, now=T0, env=env)
    assert r.returncode == 0, r.explain()
    if args[0] == "plan":  # a JSON line per policy (and a last one for the pass)
        return [d["policy"] for d in r.stdout_json_lines() if "policy" in d]
    doc = r.summary() if args[0] == "once" else r.stdout_json_lines()[0]
    return [p["policy"] for p in doc["policies"]]


def test_once_runs_only_its_shard_and_the_shards_together_cover_the_fleet(h: Harness) -> None:
    h.write_config()
    assert _policies(h, "once", "--shard", "1/2") == ["reporting"]  # crc32("reporting") % 2 == 1
    assert h.live_ids("checkout") == []
    assert len(h.live_ids("reporting")) == 1
    assert _policies(h, "once", env={"ROTATOR_SHARD": "0/2"}) == ["checkout"]
    assert len(h.live_ids("checkout")) == 1


def test_an_indexed_job_pod_takes_the_shard_of_its_completion_index(h: Harness) -> None:
    h.write_config()
    env = {"ROTATOR_SHARD_COUNT": "3", "JOB_COMPLETION_INDEX": "2"}
    assert _policies(h, "once", env=env) == ["reporting"]  # crc32("reporting") % 3 == 2
    assert h.live_ids("checkout") == []


@pytest.mark.parametrize("command", ["plan", "status"])
def test_plan_and_status_take_the_shard(h: Harness, command: str) -> None:
    h.write_config()
    assert _policies(h, command, "--json", "--shard", "0/2") == ["checkout"]
    # with --policy: the shard's part of the names given
    assert _policies(h, command, "--json", "--shard", "0/2", "--policy", "reporting") == []


@pytest.mark.parametrize("command", ["run", "plan", "status"])
def test_every_pass_command_refuses_a_bad_shard_with_exit_2(h: Harness, command: str) -> None:
    cfg = h.write_config()
    h.clock.set(T0)
    r = run_rotator("-c", str(cfg), command, "--shard", "1/1", cwd=h.work, now=T0, timeout=60)
    assert r.returncode == 2, r.explain()
    assert "--shard: the shard index counts from 0 to COUNT-1 (0), so '1/1' names none" in r.stderr
    assert h.live_ids("checkout") == [] and h.live_ids("reporting") == []


def test_a_bad_shard_exits_2_and_changes_nothing(h: Harness) -> None:
    cfg = h.write_config()
    h.clock.set(T0)
    r = run_rotator("-c", str(cfg), "once", cwd=h.work, now=T0, env={"ROTATOR_SHARD": "2/2"})
    assert r.returncode == 2, r.explain()
    assert "$ROTATOR_SHARD: the shard index counts from 0 to COUNT-1 (1), so '2/2' names none" in r.stderr
    assert h.live_ids("checkout") == [] and h.live_ids("reporting") == []
