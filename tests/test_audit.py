"""``rotator audit`` (issue 7) against an emulator account holding one key of each kind, run as a subprocess
with ``--now``: every key classified (managed / orphaned / unmanaged, with its flags), nothing touched, and
JSON on stdout when stdout is not a terminal, a table when it is.

The account, seen at NOW = T0+20m (policy ``checkout``: lifetime 1h, orphan_after 10m):

- ``managed``: checkout's key, made at T0 and held by its target;
- ``orphan_unconfigured``: marked ``[rotator:retired-policy]``, a policy not in the config;
- ``orphan_unheld``: marked ``[rotator:checkout]``, made at T0+2m, held by no target, older than orphan_after;
- ``pending``: marked ``[rotator:checkout]``, made at T0+15m, held by no target yet (the newest, younger than
  orphan_after: a pass may be publishing it), classed ``pending``;
- ``expiring``: unmanaged, expires at T0+2d (within the default 7d window);
- ``later``: unmanaged, expires at T0+60d;
- ``expired``: unmanaged, expired at T0+5m (still listed);
- ``bootstrap``: the emulator's Owner key that never expires, unmanaged.
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
from tests.support.e2e import CHECKOUT, ROTATOR, T0, Harness, Run, at, harness

NOW = at(20)


@dataclass
class Account:
    h: Harness
    cfg: Path
    ids: dict[str, str]  # name (see the module docstring) -> key id
    before: Any
    run: Run  # rotator audit --json at NOW

    def rows(self, r: Run | None = None) -> dict[str, dict[str, Any]]:
        """name -> the audit row of that key."""
        r = r or self.run
        doc = json.loads(r.stdout)
        by_id = {row["key_id"]: row for row in doc["keys"]}
        return {name: by_id[kid] for name, kid in self.ids.items()}


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Account]:
    with harness(tmp_path_factory.mktemp("audit")) as h:
        cfg = h.write_config([CHECKOUT])
        h.clock.set(T0)
        with build(config_mod.load(cfg), clock=h.clock.as_datetime) as app:
            assert app.engine.run_pass().ok
        ids = {"managed": h.live_ids("checkout")[0]}
        bootstrap = [k.key_id for k in h.issued_keys() if k.policy is None]
        ids["bootstrap"] = bootstrap[0]
        emu = h.emulator
        for minute, name, role, description, expires in (
            (
                1,
                "orphan_unconfigured",
                "operator",
                "nightly batch [rotator:retired-policy]",
                at(0) + timedelta(days=30),
            ),
            (2, "orphan_unheld", "operator", "checkout cache access [rotator:checkout]", at(60)),
            (3, "expiring", "viewer", "made by hand for a report", at(0) + timedelta(days=2)),
            (4, "later", "viewer", "made by hand, long-lived", at(0) + timedelta(days=60)),
            (4, "expired", "viewer", "a demo key", at(5)),
            (15, "pending", "operator", "checkout cache access [rotator:checkout]", at(75)),
        ):
            h.clock.set(at(minute))
            ids[name] = emu.mint(role, description, expires_at=expires).info.key_id
        before = h.snapshot()
        h.clock.set(NOW)
        r = run(h, cfg, "audit", "--json")
        assert r.returncode == 0, r.explain()
        yield Account(h, cfg, ids, before, r)


def run(h: Harness, cfg: Path, *args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    argv = ["-c", str(cfg), *args, "--now", NOW.isoformat()]
    p = subprocess.run(
        [ROTATOR, *argv], cwd=h.work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
    )
    return Run(argv, p.returncode, p.stdout, p.stderr)


def test_every_key_in_the_account_is_listed_once(account: Account) -> None:
    doc = json.loads(account.run.stdout)
    listed = [row["key_id"] for row in doc["keys"]]
    assert sorted(listed) == sorted(account.ids.values())
    assert len(set(listed)) == len(listed)


def test_a_held_key_of_a_configured_policy_is_managed(account: Account) -> None:
    row = account.rows()["managed"]
    assert (row["class"], row["policy"], row["flags"]) == ("managed", "checkout", ["current"])
    assert row["role"] == "operator"


def test_a_marked_key_of_an_unconfigured_policy_is_orphaned(account: Account) -> None:
    row = account.rows()["orphan_unconfigured"]
    assert (row["class"], row["policy"]) == ("orphaned", "retired-policy")
    assert row["flags"] == ["policy-not-configured"]


def test_a_marked_key_no_target_holds_older_than_orphan_after_is_orphaned(account: Account) -> None:
    row = account.rows()["orphan_unheld"]
    assert (row["class"], row["policy"]) == ("orphaned", "checkout")
    # it expires at T0+1h, within the window, but it has a policy (which sweeps it): not expiring-no-policy
    assert row["flags"] == ["held-by-no-target"]


def test_the_newest_marked_key_younger_than_orphan_after_and_held_by_no_target_is_pending(
    account: Account,
) -> None:
    row = account.rows()["pending"]
    assert (row["class"], row["policy"], row["flags"]) == ("pending", "checkout", [])


def test_an_unmanaged_key_expiring_within_the_window_is_flagged(account: Account) -> None:
    row = account.rows()["expiring"]
    assert (row["class"], row["policy"], row["flags"]) == ("unmanaged", None, ["expiring-no-policy"])


def test_an_unmanaged_key_expiring_after_the_window_is_not_flagged(account: Account) -> None:
    row = account.rows()["later"]
    assert (row["class"], row["flags"]) == ("unmanaged", [])


def test_an_expired_key_still_listed_is_flagged_expired(account: Account) -> None:
    row = account.rows()["expired"]
    assert (row["class"], row["flags"]) == ("unmanaged", ["expired"])


def test_the_never_expiring_owner_key_is_unmanaged_and_flagged(account: Account) -> None:
    row = account.rows()["bootstrap"]
    assert (row["class"], row["role"], row["expires_at"]) == ("unmanaged", "owner", None)
    assert row["flags"] == ["never-expires-owner"]


def test_audit_changes_nothing(account: Account) -> None:
    # the store tree (files, links, modes) and every key at the issuer, revoked ones included
    assert account.h.snapshot() == account.before


def test_a_narrower_window_drops_the_expiring_flag(account: Account) -> None:
    r = run(account.h, account.cfg, "audit", "--json", "--window", "1d")
    assert r.returncode == 0, r.explain()
    assert account.rows(r)["expiring"]["flags"] == []
    assert account.h.snapshot() == account.before


def test_a_bad_window_exits_2(account: Account) -> None:
    r = run(account.h, account.cfg, "audit", "--window", "soon")
    assert r.returncode == 2, r.explain()
    assert "--window" in r.stderr


def test_without_json_off_a_terminal_stdout_is_the_same_json(account: Account) -> None:
    r = run(account.h, account.cfg, "audit")
    assert r.returncode == 0, r.explain()
    doc = json.loads(r.stdout)  # one JSON document, no table
    assert doc["keys"] == json.loads(account.run.stdout)["keys"]


def test_on_a_terminal_audit_prints_a_table(account: Account) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [ROTATOR, "-c", str(account.cfg), "audit", "--now", NOW.isoformat()],
        cwd=account.h.work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        assert proc.wait(timeout=30) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    lines = text.strip().splitlines()
    assert lines[0].split() == ["KEY", "ID", "ROLE", "ISSUED", "EXPIRES", "IN", "CLASS", "POLICY", "FLAGS"]
    assert lines[-1] == "8 keys: 1 managed, 1 pending, 2 orphaned, 4 unmanaged"
    table = "\n".join(lines)
    for kid in account.ids.values():
        assert kid in table
    assert not text.lstrip().startswith("{")
