"""End to end: ``rotator once`` as a subprocess against the Momento emulator over HTTP, with a file store.

Two policies (``checkout``: json, grace 5m; ``reporting``: env + a key-format target, grace 10m), both with
lifetime 1h and rotate_before 20m, so each key is due 39m after it was issued (clock_skew 1m). Time is driven
with ``--now`` and the emulator's clock together.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import momento
import pytest

from tests.support.e2e import (
    ENDPOINT,
    POLICY_SECRETS,
    SECRETS,
    T0,
    Harness,
    Run,
    all_version_metas,
    api_key_of,
    current_payload,
    current_version,
    env_lines,
    harness,
    jti_of,
    payload_key_id,
    run_rotator,
    version_meta,
)

ZERO = {"created": 0, "published": 0, "retired": 0, "reloaded": 0, "revoked": 0, "skipped": 0, "failed": 0}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


@pytest.fixture
def cfg(h: Harness) -> str:
    return str(h.write_config())


def once(h: Harness, cfg: str, now: datetime) -> Run:
    r = h.run("-c", cfg, "once", now=now)
    assert r.returncode == 0, r.explain()
    summary = r.summary()
    assert summary["ok"] is True, r.explain()
    assert summary["dry_run"] is False
    return r


def counts(r: Run, **nonzero: int) -> None:
    assert r.summary()["counts"] == {**ZERO, **nonzero}, r.explain()


def assert_store_holds_newest(h: Harness) -> None:
    """Every target's ``current`` payload holds the policy's newest key, and says so."""
    for policy, secrets in POLICY_SECRETS.items():
        newest = h.newest_id(policy)
        for secret in secrets:
            d, fmt = h.secret_dir(secret), SECRETS[secret]
            payload = current_payload(d)
            assert payload_key_id(fmt, payload) == newest, (secret, payload_key_id(fmt, payload), newest)
            assert jti_of(api_key_of(fmt, payload)) == newest, secret
            meta = version_meta(d, current_version(d))
            assert meta["key_id"] == newest
            assert meta["enabled"] is True
            assert meta["policy"] == policy
    assert current_payload(h.secret_dir("reporting/endpoint")) == ENDPOINT


def assert_retired_iff_revoked(h: Harness) -> None:
    """Every key a policy created is in every one of its targets; a version is retired exactly when its key
    was revoked at the issuer."""
    for policy, secrets in POLICY_SECRETS.items():
        keys = h.policy_keys(policy)
        revoked = {k.key_id for k in keys if k.revoked_at is not None}
        for secret in secrets:
            metas = all_version_metas(h.secret_dir(secret))
            assert set(metas) == {k.key_id for k in keys}, secret
            for key_id, meta in metas.items():
                assert meta["enabled"] is (key_id not in revoked), (secret, key_id, meta)


def test_three_rotations_of_two_policies(h: Harness, cfg: str) -> None:
    # the first pass: no key yet -> one key per policy, published everywhere
    r = once(h, cfg, T0)
    counts(r, created=2)
    history = {p: [h.newest_id(p)] for p in POLICY_SECRETS}
    assert {e["policy"]: e["new_key_id"] for e in r.events("created key")} == {p: v[0] for p, v in history.items()}
    assert {e["target"] for e in r.events("published key")} == {f"local:{s}" for s in SECRETS}
    assert h.live_ids("checkout") == history["checkout"]
    assert h.live_ids("reporting") == history["reporting"]
    assert_store_holds_newest(h)
    assert_retired_iff_revoked(h)

    t = T0
    for rotation in range(1, 4):
        t += timedelta(minutes=40)  # 40m after the last key was issued: due (at 39m)
        r = once(h, cfg, t)
        counts(r, created=2)
        for p in POLICY_SECRETS:
            new = h.newest_id(p)
            assert new != history[p][-1], f"rotation {rotation}: {p} got no new key"
            history[p].append(new)
            # the old key stays valid: it was replaced a moment ago
            assert h.live_ids(p) == history[p][-2:], (rotation, p)
        assert {e["policy"]: e["new_key_id"] for e in r.events("created key")} == {
            p: v[-1] for p, v in history.items()
        }
        assert r.events("revoked key") == []
        assert_store_holds_newest(h)
        assert_retired_iff_revoked(h)

        # past checkout's grace (5m), inside reporting's (10m): only checkout's old key goes
        r = once(h, cfg, t + timedelta(minutes=7))
        counts(r, revoked=1)
        assert [(e["policy"], e["key_id"]) for e in r.events("revoked key")] == [("checkout", history["checkout"][-2])]
        assert h.live_ids("checkout") == history["checkout"][-1:]
        assert h.live_ids("reporting") == history["reporting"][-2:]
        assert_store_holds_newest(h)
        assert_retired_iff_revoked(h)

        # past reporting's grace too
        r = once(h, cfg, t + timedelta(minutes=11))
        counts(r, revoked=1)
        assert [(e["policy"], e["key_id"]) for e in r.events("revoked key")] == [
            ("reporting", history["reporting"][-2])
        ]
        assert h.live_ids("reporting") == history["reporting"][-1:]
        assert_store_holds_newest(h)
        assert_retired_iff_revoked(h)

    for p in POLICY_SECRETS:
        assert [k.key_id for k in h.policy_keys(p)] == history[p]
        assert len(history[p]) == 4
        assert h.revoked_ids(p) == history[p][:3]
    # the bootstrap key was never touched
    assert [k for k in h.issued_keys() if k.policy is None and k.revoked_at is None] != []


def test_a_second_pass_at_the_same_time_changes_nothing(h: Harness, cfg: str) -> None:
    # after a first key (steady) and right after a rotation (old keys in grace); the first pass of each
    # pair runs in process (the same engine) to keep the test fast
    for t in (T0, T0 + timedelta(minutes=40)):
        h.once_in_process(Path(cfg), t)
        before = h.snapshot()
        r = once(h, cfg, t)
        counts(r)
        assert h.snapshot() == before, f"a second pass at {t} changed the store or the issuer"


def test_plan_changes_nothing_and_prints_what_it_would_do(h: Harness, cfg: str) -> None:
    h.once_in_process(Path(cfg), T0)
    first = {p: h.newest_id(p) for p in POLICY_SECRETS}

    # due: plan says it would create a key for each policy, and creates none
    before = h.snapshot()
    r = h.run("-c", cfg, "plan", now=T0 + timedelta(minutes=40))
    assert r.returncode == 0, r.explain()
    assert h.snapshot() == before
    lines = {ln["policy"]: ln for ln in r.stdout_json_lines()}
    assert set(lines) == set(POLICY_SECRETS)
    for p, ln in lines.items():
        assert [a["action"] for a in ln["planned"]] == ["create"], ln
        assert ln["current_key"] == first[p]
        assert ln["results"] == []

    # after checkout's grace: plan says it would revoke checkout's old key, and revokes nothing
    h.once_in_process(Path(cfg), T0 + timedelta(minutes=40))
    before = h.snapshot()
    r = h.run("-c", cfg, "plan", now=T0 + timedelta(minutes=47))
    assert r.returncode == 0, r.explain()
    assert h.snapshot() == before
    lines = {ln["policy"]: ln for ln in r.stdout_json_lines()}
    assert [(a["action"], a["key_id"]) for a in lines["checkout"]["planned"]] == [("revoke", first["checkout"])]
    assert lines["reporting"]["planned"] == []
    assert first["checkout"] in h.live_ids("checkout")


def test_stored_payloads_are_accepted_by_the_momento_sdk(
    h: Harness, cfg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.once_in_process(Path(cfg), T0)
    for secret, fmt in SECRETS.items():
        payload = current_payload(h.secret_dir(secret))
        if fmt == "env":
            for name, value in env_lines(payload).items():
                monkeypatch.setenv(name, value)
            provider = momento.CredentialProvider.from_environment_variables_v2()
        elif fmt == "json":
            provider = momento.CredentialProvider.from_api_key_v2(
                api_key_of(fmt, payload), payload_endpoint(payload)
            )
        else:
            endpoint = current_payload(h.secret_dir("reporting/endpoint"))
            provider = momento.CredentialProvider.from_api_key_v2(api_key_of(fmt, payload), endpoint)
        assert provider.auth_token == api_key_of(fmt, payload), secret
        assert provider.cache_endpoint == f"cache.{ENDPOINT}", secret


def payload_endpoint(payload: str) -> str:
    endpoint: str = json.loads(payload)["endpoint"]
    return endpoint


def test_the_embedded_default_shows_a_whole_cycle_within_five_minutes(tmp_path: Path) -> None:
    """config/local.yaml (in-process emulator, file store under ./.rotator): create, store, grace and revoke
    for both demo policies within five minutes of the first pass (time driven with --now)."""
    local = str(Path(__file__).resolve().parents[1] / "config" / "local.yaml")
    start = T0

    def run(minutes: float) -> dict[str, int]:
        r = run_rotator("-c", local, "once", cwd=tmp_path, now=start + timedelta(minutes=minutes))
        assert r.returncode == 0, r.explain()
        c: dict[str, int] = r.summary()["counts"]
        return c

    assert run(0) == {**ZERO, "created": 2}  # a key for each demo policy, stored
    assert run(3) == {**ZERO, "created": 2}  # both due (4m lifetime / 50%, 6m / 3m): replaced
    assert run(4.5) == {**ZERO, "revoked": 2}  # both graces (45s, 1m) over: the old keys are revoked
    root = tmp_path / ".rotator" / "secrets" / "demo"
    for secret in ("checkout", "reporting.env", "reporting-key"):
        metas = all_version_metas(root / secret)
        current = version_meta(root / secret, current_version(root / secret))
        assert len(metas) == 2, secret
        assert [m["enabled"] for m in metas.values() if m["key_id"] != current["key_id"]] == [False], secret
    assert current_payload(root / "reporting-endpoint") == "cell-1-us-east-1-1.emulator.local"
