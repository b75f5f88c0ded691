"""Manual controls (issue 7): ``rotator rotate POLICY --emergency`` for a leaked key, confirmation rules
(``--yes``, no terminal, a terminal answering), and unknown policies. ``rotator`` runs as a subprocess with
``--now`` against the emulator in this process; a terminal is a pseudo-terminal (python's ``pty``).

The policy has two targets (json and env) and an ``http`` pickup check whose one consumer keeps reporting
the leaked key, so the emergency output must name both targets and that consumer.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator import config as config_mod
from rotator.runtime.app import build
from tests.support.consumers import KeyIdConsumer, consumers
from tests.support.e2e import (
    ROTATOR,
    T0,
    Harness,
    Run,
    all_version_metas,
    current_payload,
    env_lines,
    harness,
    payload_key_id,
)

TARGETS = ["local:checkout/env", "local:checkout/momento"]
LATER = T0 + timedelta(hours=1)  # long before the key is due (lifetime 30d)


def policy(url: str) -> dict[str, Any]:
    return {
        "name": "checkout",
        "role": "operator",
        "lifetime": "30d",
        "rotate_before": "7d",
        "grace": "1h",
        "orphan_after": "10m",
        "targets": [
            {"store": "local", "secret": "checkout/momento", "format": "json"},
            {"store": "local", "secret": "checkout/env", "format": "env"},
        ],
        "pickup": [{"type": "http", "urls": [url], "timeout": "2s"}],
    }


@dataclass
class Setup:
    h: Harness
    cfg: Path
    consumer: KeyIdConsumer
    leaked: str

    def held(self) -> dict[str, str]:
        d = self.h.secret_dir
        return {
            "local:checkout/momento": payload_key_id("json", current_payload(d("checkout/momento"))),
            "local:checkout/env": env_lines(current_payload(d("checkout/env")))["MOMENTO_KEY_ID"],
        }

    def run(self, *args: str, answer: str | None = None) -> Run:
        """``rotator -c CFG ARGS --now LATER``: stdin is /dev/null, or a terminal that types ``answer``."""
        argv = ["-c", str(self.cfg), *args, "--now", LATER.isoformat()]
        self.h.clock.set(LATER)
        env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
        if answer is None:
            p = subprocess.run(
                [ROTATOR, *argv],
                cwd=self.h.work,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return Run(argv, p.returncode, p.stdout, p.stderr)
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(
                [ROTATOR, *argv],
                cwd=self.h.work,
                env=env,
                stdin=slave,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.close(slave)
            slave = -1
            os.write(master, answer.encode() + b"\n")
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                raise AssertionError(f"rotator {argv} did not finish:\n{out}\n{err}") from None
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
        return Run(argv, proc.returncode, out, err)

    def snapshot(self) -> tuple[Any, ...]:
        return self.h.snapshot()


def make_setup(root: Path) -> Iterator[Setup]:
    with harness(root) as h, consumers(None) as (c,):
        cfg = h.write_config([policy(c.url)])
        h.clock.set(T0)
        with build(config_mod.load(cfg), clock=h.clock.as_datetime) as app:
            assert app.engine.run_pass().ok
        (leaked,) = h.live_ids("checkout")
        c.switch(leaked)
        s = Setup(h, cfg, c, leaked)
        assert s.held() == {t: leaked for t in TARGETS}
        yield s


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Setup]:
    yield from make_setup(tmp_path)


def result_json(r: Run) -> dict[str, Any]:
    """The JSON result: the last line of stdout (after a prompt, when one was shown on the same line)."""
    last = r.stdout.strip().splitlines()[-1]
    data: dict[str, Any] = json.loads(last[last.index("{") :])
    return data


# ---- --emergency --yes --------------------------------------------------------------------------------


@dataclass
class Emergency:
    s: Setup
    run: Run
    before: dict[str, str]


@pytest.fixture(scope="module")
def emergency(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emergency]:
    for s in make_setup(tmp_path_factory.mktemp("emergency")):
        before = s.held()
        r = s.run("rotate", "checkout", "--emergency", "--yes")
        yield Emergency(s, r, before)


def test_emergency_exits_0(emergency: Emergency) -> None:
    assert emergency.run.returncode == 0, emergency.run.explain()
    assert result_json(emergency.run)["ok"] is True


def test_emergency_puts_a_new_key_in_every_target(emergency: Emergency) -> None:
    s = emergency.s
    held = s.held()
    (new,) = set(held.values())
    assert new != s.leaked
    assert s.h.live_ids("checkout") == [new]
    assert result_json(emergency.run)["new_key"] == new


def test_emergency_revokes_the_leaked_key_in_the_same_command(emergency: Emergency) -> None:
    s = emergency.s
    assert s.h.revoked_ids("checkout") == [s.leaked]
    out = result_json(emergency.run)
    assert out["leaked_key"] == s.leaked
    assert out["leaked_key_revoked"] is True
    assert f"leaked key: {s.leaked} (revoked)" in emergency.run.stderr


def test_emergency_retires_the_leaked_versions_in_every_target(emergency: Emergency) -> None:
    s = emergency.s
    for secret in ("checkout/momento", "checkout/env"):
        metas = all_version_metas(s.h.secret_dir(secret))
        assert metas[s.leaked]["enabled"] is False, secret


def test_emergency_names_the_targets_that_held_the_leaked_key(emergency: Emergency) -> None:
    out = result_json(emergency.run)
    assert out["targets_that_held_it"] == TARGETS
    assert f"targets that held it: {', '.join(TARGETS)}" in emergency.run.stderr


def test_emergency_names_the_consumer_still_on_the_leaked_key(emergency: Emergency) -> None:
    s = emergency.s
    lagging = f"{s.consumer.url} (reports {s.leaked})"
    assert result_json(emergency.run)["consumers_not_on_new_key"] == [f"http: {lagging}"]
    assert lagging in emergency.run.stderr


# ---- refusals: nothing changes -----------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--emergency"]], ids=["rotate", "emergency"])
def test_without_yes_off_a_terminal_exits_2_and_changes_nothing(s: Setup, extra: list[str]) -> None:
    before = s.snapshot()
    r = s.run("rotate", "checkout", *extra)
    assert r.returncode == 2, r.explain()
    assert "pass --yes" in r.stderr
    assert r.stdout == ""
    assert s.snapshot() == before


def test_an_unknown_policy_exits_2_and_changes_nothing(s: Setup) -> None:
    before = s.snapshot()
    r = s.run("rotate", "no-such-policy", "--emergency", "--yes")
    assert r.returncode == 2, r.explain()
    assert "no policy named 'no-such-policy'" in r.stderr
    assert r.stdout == ""
    assert s.snapshot() == before


# ---- confirmation on a terminal -----------------------------------------------------------------------


def test_answering_no_on_a_terminal_changes_nothing(s: Setup) -> None:
    before = s.snapshot()
    r = s.run("rotate", "checkout", answer="n")
    assert r.returncode == 2, r.explain()
    assert "[y/N]" in r.stdout + r.stderr
    assert "nothing was changed" in r.stderr
    assert s.snapshot() == before


def test_answering_yes_on_a_terminal_rotates(s: Setup) -> None:
    r = s.run("rotate", "checkout", answer="y")
    assert r.returncode == 0, r.explain()
    new = set(s.held().values())
    assert new != {s.leaked} and len(new) == 1
    assert s.h.live_ids("checkout") == [s.leaked, *new]  # normal grace: the old key stays


def test_emergency_answering_y_instead_of_the_policy_name_changes_nothing(s: Setup) -> None:
    before = s.snapshot()
    r = s.run("rotate", "checkout", "--emergency", answer="y")
    assert r.returncode == 2, r.explain()
    assert "Type the policy name (checkout)" in r.stdout + r.stderr
    assert s.snapshot() == before


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Setup, Run]]:
    """``rotator rotate checkout --emergency`` on a terminal where the user types the policy name."""
    for s in make_setup(tmp_path_factory.mktemp("typed")):
        yield s, s.run("rotate", "checkout", "--emergency", answer="checkout")


def test_emergency_answering_the_policy_name_on_a_terminal_proceeds(typed: tuple[Setup, Run]) -> None:
    s, r = typed
    assert r.returncode == 0, r.explain()
    assert "EMERGENCY rotation of checkout" in r.stderr
    assert result_json(r)["leaked_key_revoked"] is True
    assert s.h.revoked_ids("checkout") == [s.leaked]
    assert s.leaked not in s.held().values()


def test_the_prompt_does_not_go_to_stdout(typed: tuple[Setup, Run]) -> None:
    _, r = typed
    assert r.returncode == 0, r.explain()
    assert "Type the policy name (checkout) to confirm" in r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["policy"] == "checkout"
