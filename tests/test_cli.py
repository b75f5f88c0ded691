"""The ``rotator`` command against the emulator over HTTP: exit codes, messages, and that a failed or refused
run leaves the stores and the keys as they were."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.issuers.momento import MomentoIssuer
from tests.support.e2e import (
    CHECKOUT,
    POLICY_SECRETS,
    SECRETS,
    T0,
    Harness,
    Run,
    current_payload,
    fake_v2_key,
    free_port,
    harness,
    payload_key_id,
    tree_snapshot,
)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def populated(h: Harness) -> Harness:
    """One pass already ran: each policy has a key in every target."""
    h.once_in_process(h.write_config(), T0)
    return h


def whole_tree(h: Harness) -> dict[str, tuple[str, str | bytes, int]]:
    """Everything under the test's root except the emulator's own database (which the test's process owns)."""
    return {k: v for k, v in tree_snapshot(h.root).items() if not k.startswith("state/emulator.db")}


# ---- bad config ------------------------------------------------------------------------------------------


def test_bad_config_exits_2_names_the_field_and_creates_nothing(h: Harness) -> None:
    bad = dict(CHECKOUT, rotate_before="2h")  # longer than the 1h lifetime
    cfg = h.write_config([bad], name="bad.yaml")
    tree, keys = whole_tree(h), h.issued_keys()
    r = h.run("-c", str(cfg), "once", now=T0)
    assert r.returncode == 2, r.explain()
    assert "policies[0].rotate_before: must be shorter than lifetime (1h)" in r.stderr
    assert r.stdout == ""
    assert whole_tree(h) == tree
    assert not h.secrets.exists()
    assert h.issued_keys() == keys


def test_unknown_policy_selector_exits_2_and_creates_nothing(h: Harness) -> None:
    cfg = h.write_config()
    tree, keys = whole_tree(h), h.issued_keys()
    r = h.run("-c", str(cfg), "once", "--policy", "nope", now=T0)
    assert r.returncode == 2, r.explain()
    assert "--policy: no policy named nope; known: checkout, reporting" in r.stderr
    assert whole_tree(h) == tree
    assert h.issued_keys() == keys


def test_policy_selector_runs_only_that_policy(h: Harness) -> None:
    cfg = h.write_config()
    r = h.run("-c", str(cfg), "once", "--policy", "reporting", now=T0)
    assert r.returncode == 0, r.explain()
    assert [p["policy"] for p in r.summary()["policies"]] == ["reporting"]
    assert h.live_ids("checkout") == []
    assert len(h.live_ids("reporting")) == 1
    assert not h.secret_dir("checkout").exists()
    for secret in POLICY_SECRETS["reporting"]:
        assert payload_key_id(SECRETS[secret], current_payload(h.secret_dir(secret))) == h.newest_id("reporting")


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ({"endpoint": None}, "issuer.endpoint: Missing required property: endpoint"),
        (
            {"key_version": "v1"},
            "issuer.management_key: Received a v2 API key. Are you using the correct key? Or did you mean to use "
            "`key_version: v2`",
        ),
    ],
    ids=["v2-key-without-endpoint", "v2-key-where-v1-expected"],
)
def test_management_key_misuse_uses_momento_wording_and_exits_2(
    h: Harness, issuer: dict[str, Any], message: str
) -> None:
    data = h.config_data(issuer=issuer)
    data["issuer"] = {k: v for k, v in data["issuer"].items() if v is not None}
    cfg = h.root / "misuse.yaml"
    cfg.write_text(yaml.safe_dump(data))
    tree, keys = whole_tree(h), h.issued_keys()
    r = h.run("-c", str(cfg), "once", now=T0)
    assert r.returncode == 2, r.explain()
    assert message in r.stderr
    assert h.bootstrap_key not in r.stderr
    assert whole_tree(h) == tree
    assert h.issued_keys() == keys


# ---- a refused management key: a random v2 key, and a revoked one ----------------------------------------


def _refused_key(h: Harness, kind: str) -> str:
    if kind == "random":
        return fake_v2_key()
    issued = h.emulator.mint("owner", "a second owner key")
    with MomentoIssuer(h.url, h.emulator.bootstrap_key) as admin:
        admin.revoke_key(issued.info.key_id)
    return issued.api_key.reveal()


@pytest.fixture(scope="module", params=["random", "revoked"])
def refused(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``rotator once`` with a management key the issuer refuses, over a populated store."""
    with harness(tmp_path_factory.mktemp(f"refused-{request.param}")) as h:
        h.once_in_process(h.write_config(), T0)
        key_file = h.root / "refused.key"
        key_file.write_text(_refused_key(h, request.param) + "\n")
        cfg = h.write_config(key_file=key_file, name="refused.yaml")
        before = (h.snapshot(), whole_tree(h))
        # 40m later everything is due: a run with a working key would create keys
        r = h.run("-c", str(cfg), "once", now=T0 + timedelta(minutes=40))
        yield {"kind": request.param, "run": r, "before": before, "after": (h.snapshot(), whole_tree(h))}


def test_refused_management_key_gives_a_clear_message(refused: dict[str, Any]) -> None:
    r: Run = refused["run"]
    assert "the management key was refused" in r.stderr, r.explain()
    assert "Owner API key" in r.stderr
    if refused["kind"] == "revoked":
        assert "revoked" in r.stderr


def test_refused_management_key_leaves_stores_and_keys_intact(refused: dict[str, Any]) -> None:
    assert refused["after"] == refused["before"]


def test_refused_management_key_exits_2(refused: dict[str, Any]) -> None:
    r: Run = refused["run"]
    assert r.returncode == 2, r.explain()
    assert "rotator: the management key was refused" in r.stderr


# ---- an unreachable issuer -------------------------------------------------------------------------------


def test_unreachable_issuer_exits_1_with_a_clear_message_and_touches_nothing(populated: Harness) -> None:
    h = populated
    port = free_port()
    cfg = h.write_config(url=f"http://127.0.0.1:{port}", issuer={"max_attempts": 2, "timeout": "1s"}, name="down.yaml")
    before = (h.snapshot(), whole_tree(h))
    r = h.run("-c", str(cfg), "once", now=T0 + timedelta(minutes=40))
    assert r.returncode == 1, r.explain()
    assert f"the key API at http://127.0.0.1:{port} did not succeed after 2 attempts" in r.stderr
    assert "check that it is reachable" in r.stderr
    summary = r.summary()
    assert summary["ok"] is False
    assert "did not succeed after 2 attempts" in summary["error"]
    assert (h.snapshot(), whole_tree(h)) == before


# ---- an issuer failing 30% of requests -------------------------------------------------------------------


def test_issuer_failing_30_percent_of_requests(tmp_path: Path) -> None:
    with harness(tmp_path, failure_rate=0.3, seed=20240611, retry_after=0) as h:
        cfg = str(h.write_config(concurrency=1))
        retries = 0
        for t in (T0, T0 + timedelta(minutes=40), T0 + timedelta(minutes=51)):
            r = h.run("-c", cfg, "once", now=t)
            assert r.returncode == 0, r.explain()
            assert r.summary()["ok"] is True
            retries += len(r.events("momento request failed; retrying"))
        assert retries > 0, "no request failed: the failure injection did not happen"
        # consistent: each policy has one live key (both old ones revoked after grace) and every target
        # holds it
        for policy, secrets in POLICY_SECRETS.items():
            live = h.live_ids(policy)
            assert len(live) == 1, (policy, h.policy_keys(policy))
            assert len(h.policy_keys(policy)) == 2
            for secret in secrets:
                assert payload_key_id(SECRETS[secret], current_payload(h.secret_dir(secret))) == live[0]


# ---- status ----------------------------------------------------------------------------------------------


def test_status_json(populated: Harness) -> None:
    h = populated
    cfg = h.root / "rotator.yaml"
    r = h.run("-c", str(cfg), "status", "--json", now=T0 + timedelta(minutes=10))
    assert r.returncode == 0, r.explain()
    lines = r.stdout_json_lines()
    assert len(lines) == 1
    doc = lines[0]
    assert doc["issuer_ok"] is True
    assert doc["error"] is None
    by_name = {p["policy"]: p for p in doc["policies"]}
    assert list(by_name) == ["checkout", "reporting"]
    for name, p in by_name.items():
        assert p["key_id"] == h.newest_id(name)
        assert p["phase"] == "steady"
        assert p["targets_in_sync"] == p["targets_total"] == len(POLICY_SECRETS[name])
        assert p["keys_at_issuer"] == 1
        assert p["error"] is None
        # issued at T0, lifetime 1h, seen at T0+10m: ~50 minutes left
        assert 49 * 60 <= p["expires_in_s"] <= 50 * 60, p
        assert set(p["targets"]) == {f"local:{s}" for s in POLICY_SECRETS[name]}
        for t in p["targets"].values():
            assert t["current_key"] == p["key_id"]
            assert t["error"] is None
    assert by_name["checkout"]["role"] == "operator"
    assert by_name["reporting"]["role"] == "viewer"
    assert "apiKey" not in r.stdout


# ---- the exit-code table: each command x each class (README "Exit codes") ----------------------------------

#: every command, as run in the matrix (``run`` only where it ends by itself: bad input and a refused key)
COMMAND_ARGS: dict[str, list[str]] = {
    "once": ["once"],
    "plan": ["plan", "--json"],
    "status": ["status", "--json"],
    "rotate": ["rotate", "checkout", "--yes"],
    "audit": ["audit", "--json"],
    "validate": ["validate"],
    "validate-online": ["validate", "--online"],
    "run": ["run"],
}


def _main(h: Harness, cfg: Path, command: str) -> Any:
    from tests.bad_input.test_corpus import run_main

    return run_main(["-c", str(cfg), *COMMAND_ARGS[command], "--now", T0.isoformat()])


def _cfg(h: Harness, name: str = "rotator.yaml", **kw: Any) -> Path:
    return h.write_config(name=name, http={"listen": None}, **kw)


@pytest.mark.parametrize("command", [c for c in COMMAND_ARGS if c != "run"])
def test_exit_0_when_the_command_succeeds(h: Harness, command: str) -> None:
    ran = _main(h, _cfg(h), command)
    assert ran.code == 0, ran.explain([command])


@pytest.mark.parametrize("command", ["once", "plan", "status", "rotate", "audit", "validate-online"])
def test_exit_1_when_the_issuer_fails(h: Harness, command: str) -> None:
    cfg = _cfg(h, url=f"http://127.0.0.1:{free_port()}", issuer={"max_attempts": 1, "timeout": "1s"})
    ran = _main(h, cfg, command)
    assert ran.code == 1, ran.explain([command])
    assert "did not succeed after 1 attempt " in ran.stdout + ran.stderr, ran.explain([command])


@pytest.mark.parametrize("command", list(COMMAND_ARGS))
def test_exit_2_for_bad_config(h: Harness, command: str) -> None:
    ran = _main(h, _cfg(h, interval="0s"), command)
    assert ran.code == 2, ran.explain([command])
    assert "interval: must be longer than 0s" in ran.stderr
    assert h.issued_keys()[0].policy is None and len(h.issued_keys()) == 1  # only the bootstrap key


@pytest.mark.parametrize("command", [c for c in COMMAND_ARGS if c != "validate"])
def test_exit_2_with_the_remedy_for_a_refused_management_key(h: Harness, command: str) -> None:
    key_file = h.root / "refused.key"
    key_file.write_text(fake_v2_key() + "\n")
    ran = _main(h, _cfg(h, key_file=key_file), command)
    assert ran.code == 2, ran.explain([command])
    assert "the management key was refused" in ran.stderr, ran.explain([command])
    assert "put a valid API key with the Owner role there" in ran.stderr, ran.explain([command])
    assert len(h.issued_keys()) == 1


@pytest.mark.parametrize("command", list(COMMAND_ARGS))
def test_exit_70_for_an_internal_error_with_an_id_and_nothing_of_its_text(
    h: Harness, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a bug anywhere under main(): here the config loader raising what no code path expects, with a message
    # quoting a key (an internal error's text is never shown: it may hold input)
    secret = fake_v2_key()

    def broken_load(path: str) -> Any:
        raise RuntimeError(f"unexpected, while holding {secret}")

    monkeypatch.setattr("rotator.runtime.cli.load", broken_load)
    ran = _main(h, _cfg(h), command)
    assert ran.code == 70, ran.explain([command])
    assert ran.stderr.startswith("rotator: internal error: RuntimeError (id "), ran.explain([command])
    assert "Traceback" not in ran.stderr and secret not in ran.stderr and "unexpected" not in ran.stderr


def test_exit_143_when_a_signal_stops_once_mid_pass(tmp_path: Path) -> None:
    import signal
    import subprocess

    from tests.support.e2e import ROTATOR

    with harness(tmp_path, latency=0.3) as h:
        cfg = h.write_config(concurrency=1)
        h.clock.set(T0)
        proc = subprocess.Popen(
            [ROTATOR, "-c", str(cfg), "once", "--now", T0.isoformat()],
            cwd=h.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # JSON log lines; the first key is made, the pass is under way
            seen.append(line)
            if '"created key"' in line:
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, "".join(seen) + err
        assert "stopped by a signal" in err
        assert '"summary"' in out
        # the action in flight finished (checkout got its key); the second policy was left to the next pass
        assert h.live_ids("reporting") == []


def test_usage_errors_name_the_closest_option_and_list_valid_values(h: Harness) -> None:
    from tests.bad_input.test_corpus import run_main

    cfg = str(_cfg(h))
    ran = run_main(["-c", cfg, "once", "--polcy", "checkout"])
    assert ran.code == 2
    assert "unknown option --polcy for rotator once (did you mean --policy?)" in ran.stderr
    ran = run_main(["-c", cfg, "plan", "--log-level", "verbose"])
    assert ran.code == 2
    assert "--log-level: invalid choice: 'verbose' (choose from 'debug', 'info', 'warning', 'error')" in ran.stderr
    ran = run_main(["-c", cfg, "plan", "--log-level", "wraning"])
    assert "did you mean warning?" in ran.stderr
    ran = run_main(["-c", cfg, "onec"])
    assert ran.code == 2
    assert "did you mean once?" in ran.stderr


def test_readme_exit_code_table_matches_the_enum() -> None:
    import re

    from rotator.runtime.cli import ExitCode

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("| code | meaning |") :].split("\n\n")[0]
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert codes == [int(c) for c in ExitCode]


def test_the_progress_bar_shows_planning_and_rotating_side_by_side() -> None:
    """A pass rotates its first policies while it still reads the next ones: the bar shows both stages on one
    line, and ends the line only when both are complete (a plan's bar, only planning, when that is)."""
    import io

    from rotator.runtime.cli import ProgressBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = ProgressBar(out, width=4)
    bar("plan", 1, 2)
    bar("act", 1, 2)
    bar("plan", 2, 2)
    assert not out.getvalue().endswith("\n")
    bar("act", 2, 2)
    lines = out.getvalue().split("\r")[1:]
    assert lines[1] == "planned [##..] 1/2  rotated [##..] 1/2 policies", lines
    assert lines[-1] == "planned [####] 2/2  rotated [####] 2/2 policies\n", lines
    plan_only = Tty()
    ProgressBar(plan_only, width=4, stages=("plan",))("plan", 3, 3)
    assert plan_only.getvalue() == "\rplanned [####] 3/3 policies\n"
