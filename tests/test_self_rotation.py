"""rotator's own management key (issue 7): read from the file store, rotated by a ``self: true`` policy over
three full cycles (create with the old key, write, switch, grace, revoke), each step a ``rotator once --now``
subprocess against the emulator; and a dead (expired or revoked) management key stopping start-up with exit
code 2 and the remedy, changing nothing.

The first run takes the key from ``$BOOT`` (``bootstrap_env``); every later run has no ``BOOT`` at all, so
it can only work with the key rotator wrote to the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator import config as config_mod
from rotator.issuers.momento import MomentoIssuer
from rotator.model import SecretText
from rotator.runtime.app import build
from tests.support.e2e import T0, Harness, Run, harness, jti_of, run_rotator

SECRET = "rotator/mgmt"
SELF: dict[str, Any] = {
    "name": "rotator-self",
    "role": "owner",
    "self": True,
    "description": "rotator's own management key",
    "lifetime": "30d",
    "rotate_before": "7d",  # due 23d - 1m (clock_skew) after issue
    "grace": "1h",
    "orphan_after": "10m",
    "targets": [{"store": "local", "secret": SECRET}],
}
FROM_STORE = {"management_key": {"store": "local", "secret": SECRET, "bootstrap_env": "BOOT"}}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def cfg(h: Harness) -> Path:
    return h.write_config([SELF], issuer=FROM_STORE)


def once(h: Harness, cfg: Path, t: datetime, env: dict[str, str] | None = None) -> Run:
    h.clock.set(t)
    return run_rotator("-c", str(cfg), "once", cwd=h.work, now=t, env=env)


def stored_key(h: Harness) -> tuple[str, str]:
    """(the key id the store's current version says it holds, the jti of the API key in it)."""
    payload = json.loads((h.secret_dir(SECRET) / "current").read_text())
    return payload["keyId"], jti_of(payload["apiKey"])


def bootstrap_in_process(h: Harness, cfg: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The first self-managed key, made at T0 in this process from $BOOT; returns its id."""
    monkeypatch.setenv("BOOT", h.bootstrap_key)
    h.clock.set(T0)
    with build(config_mod.load(cfg), clock=h.clock.as_datetime) as app:
        assert app.engine.run_pass().ok
    monkeypatch.delenv("BOOT")
    (k1,) = h.live_ids("rotator-self")
    return k1


def test_three_self_rotation_cycles(h: Harness, cfg: Path) -> None:
    # the first run: from the bootstrap key in $BOOT
    r = once(h, cfg, T0, env={"BOOT": h.bootstrap_key})
    assert r.returncode == 0, r.explain()
    (current,) = h.live_ids("rotator-self")
    assert stored_key(h) == (current, current)
    assert [e["new_key_id"] for e in r.events("switched to the new management key")] == [current]
    bootstrap_id = next(k.key_id for k in h.issued_keys() if k.policy is None)

    issued = T0
    history = [current]
    for cycle in range(1, 4):
        # due: the new key is created with the current one (read from the store), written, switched to
        t = issued + timedelta(days=23)
        r = once(h, cfg, t)
        assert r.returncode == 0, f"cycle {cycle} create:\n{r.explain()}"
        new = h.newest_id("rotator-self")
        assert new not in history
        assert stored_key(h) == (new, new)
        assert [e["new_key_id"] for e in r.events("switched to the new management key")] == [new]
        assert h.live_ids("rotator-self") == [history[-1], new], "the old key must outlive grace"

        # after grace: the old key is revoked, by a run that can only have the new key (from the store)
        r = once(h, cfg, t + timedelta(hours=2))
        assert r.returncode == 0, f"cycle {cycle} revoke:\n{r.explain()}"
        assert [e["key_id"] for e in r.events("revoked key")] == [history[-1]]
        assert h.live_ids("rotator-self") == [new], f"cycle {cycle}: exactly one live self key"
        assert h.revoked_ids("rotator-self") == history
        assert stored_key(h) == (new, new)
        history.append(new)
        issued = t

    # the next run works without BOOT, from the store, and has nothing to do
    r = once(h, cfg, issued + timedelta(days=1))
    assert r.returncode == 0, r.explain()
    assert r.summary()["counts"]["failed"] == 0
    assert h.live_ids("rotator-self") == history[-1:]
    # rotator never touched the bootstrap key (the operator revokes it once rotator took over)
    assert bootstrap_id in h.live_ids()


def test_without_bootstrap_env_and_an_empty_store_start_up_exits_2(h: Harness, cfg: Path) -> None:
    before = h.snapshot()
    r = once(h, cfg, T0)
    assert r.returncode == 2, r.explain()
    assert "BOOT is empty or not set" in r.stderr
    assert h.snapshot() == before


# ---- a dead management key ---------------------------------------------------------------------------


def test_an_expired_management_key_file_exits_2_with_the_remedy(h: Harness) -> None:
    h.clock.set(T0)
    dying = h.emulator.mint("owner", "short-lived admin key", expires_at=T0 + timedelta(hours=1))
    key_file = h.root / "mgmt.key"
    key_file.write_text(dying.api_key.reveal() + "\n")
    cfg = h.write_config(
        [dict(SELF, self=False, name="other", targets=[{"store": "local", "secret": "o/k"}])], key_file=key_file
    )
    before = h.snapshot()
    r = once(h, cfg, T0 + timedelta(hours=2))
    assert r.returncode == 2, r.explain()
    assert "expired at 2031-03-01T13:00:00Z" in r.stderr
    assert f"create a new API key with the Owner role in the Momento console, put it in file {key_file}" in r.stderr
    assert r.stdout == ""
    assert h.snapshot() == before


def test_a_self_managed_key_that_expired_while_rotator_was_down_exits_2(
    h: Harness, cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k1 = bootstrap_in_process(h, cfg, monkeypatch)
    before = h.snapshot()
    r = once(h, cfg, T0 + timedelta(days=31))  # k1 lived 30 days
    assert r.returncode == 2, r.explain()
    assert "expired at 2031-03-31T12:00:00Z" in r.stderr
    assert f"store local secret {SECRET}" in r.stderr
    assert "create a new API key with the Owner role" in r.stderr
    assert h.snapshot() == before
    assert h.live_ids("rotator-self") == [k1]


def test_a_revoked_self_managed_key_exits_2_and_changes_nothing(
    h: Harness, cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k1 = bootstrap_in_process(h, cfg, monkeypatch)
    with MomentoIssuer(h.url, SecretText(h.bootstrap_key)) as admin:
        admin.revoke_key(k1)
    before = h.snapshot()
    r = once(h, cfg, T0 + timedelta(days=23))  # due: it would rotate if the key worked
    assert r.returncode == 2, r.explain()
    assert "the management key was refused" in r.stderr
    assert "revoked" in r.stderr
    assert h.snapshot() == before


def test_a_refused_self_managed_key_names_where_it_was_read_from(
    h: Harness, cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k1 = bootstrap_in_process(h, cfg, monkeypatch)
    with MomentoIssuer(h.url, SecretText(h.bootstrap_key)) as admin:
        admin.revoke_key(k1)
    r = once(h, cfg, T0 + timedelta(hours=1))
    assert r.returncode == 2, r.explain()
    assert f"store local secret {SECRET}" in r.stderr.splitlines()[-1]
