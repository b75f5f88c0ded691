"""The engine and the request quotas (issue 27), through real stores over HTTP: a GCP project at its write quota
does not hold up the policies whose targets are elsewhere, and a pass starts only the rotations it can finish
publishing before ``pass_timeout`` (the rest wait for the next pass, and ``plan`` says why)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from rotator import config as config_mod
from rotator.runtime.app import build
from tests.servers.gcp_secretmanager import SecretManagerServer, running_secretmanager
from tests.support.e2e import T0, Harness, at, harness

PROJECT = "test-project"
WRITES = "WriteRequestsPerMinutePerProject"


@pytest.fixture(scope="module")
def server() -> Iterator[SecretManagerServer]:
    with running_secretmanager() as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(server: SecretManagerServer) -> Iterator[None]:
    server.reset()
    yield
    server.quotas_off()
    server.reset()


def _policy(name: str, store: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": "operator",
        "lifetime": "1h",
        "rotate_before": "20m",
        "grace": "5m",
        "orphan_after": "10m",
        "format": "json",
        "targets": [{"store": store, "secret": name.replace("/", "-")}],
    }


def _config(
    h: Harness,
    server: SecretManagerServer,
    policies: list[dict[str, Any]],
    quotas: dict[str, str] | None = None,
    **top: Any,
) -> Path:
    return h.write_config(
        policies,
        stores={
            "local": {"type": "file", "path": str(h.secrets)},
            "g": {
                "type": "gcp",
                "project": PROJECT,
                "transport": "rest",
                "endpoint": server.endpoint,
                "quotas": quotas or {"write": "12/6s"},
                "retry": {"attempts": 12, "initial_backoff": 0.05, "max_backoff": 0.2},
            },
        },
        **top,
    )


def _pass(path: Path, now: Any, h: Harness, *, dry_run: bool = False, only: list[str] | None = None) -> Any:
    h.clock.set(now)
    cfg = config_mod.load(path)
    with build(cfg, clock=lambda: now, store_options={"g": {"credentials": AnonymousCredentials()}}) as app:
        return app.engine.run_pass(dry_run=dry_run, only=only)


def test_a_project_at_its_write_quota_does_not_hold_up_the_other_stores(
    tmp_path: Path, server: SecretManagerServer
) -> None:
    """Eight GCP policies come first in the config, eight file-store ones after them, four workers: the GCP
    project allows 12 writes per 6 s, so its 24 writes take two windows; the file-store ones are all published
    within the first second or so, not after the GCP ones (which a plain pool, taking policies in order,
    would do: its four workers would wait in the GCP window until the GCP policies were done)."""
    # 12 writes per 6 s (a window this long, so that the service and the client agree on which writes fall in
    # it, whatever this machine's scheduling delays)
    book = server.enforce_quotas(scale=10, limits={WRITES: 12})
    with harness(tmp_path) as h:
        gcp = [_policy(f"g{i}", "g") for i in range(8)]
        local = [_policy(f"l{i}", "local") for i in range(8)]
        path = _config(h, server, gcp + local, concurrency=4, pass_timeout="5m")
        started = time.time()
        report = _pass(path, T0, h)
        took = time.time() - started
        assert report.ok, report.to_json()
        assert book.throttled() == 0, book.stats()
        local_done = max((h.secrets / p["name"]).stat().st_mtime for p in local)
        assert took > 6, took  # 8 x 3 writes, 12 per 6 s: the GCP side was really held to its quota
        assert local_done - started < took / 2, (local_done - started, took)
        for p in local + gcp:
            assert len(h.live_ids(p["name"])) == 1


def test_a_pass_starts_only_the_rotations_it_can_finish_before_pass_timeout(
    tmp_path: Path, server: SecretManagerServer
) -> None:
    """At 12 writes per 6 s and a 10 s pass_timeout, the pass has about 15 writes for rotations; a GCP
    rotation publishes with 3: five of the eight start, the others wait for the next pass with the reason in
    their plan (and in ``rotator plan``), and the pass ends inside its deadline with nothing half-published."""
    with harness(tmp_path) as h:
        gcp = [_policy(f"g{i}", "g") for i in range(8)]
        setup = _config(h, server, gcp, concurrency=4, rate_limits=False)
        assert _pass(setup, T0, h).ok  # every policy's first key, the quota not yet enforced
        first_keys = {p["name"]: h.live_ids(p["name"]) for p in gcp}
        server.enforce_quotas(scale=10, limits={WRITES: 12})
        path = _config(h, server, gcp, concurrency=4, pass_timeout="10s")
        due = at(40)  # 39 minutes after issue
        preview = _pass(path, due, h, dry_run=True)
        waiting = [pr for pr in preview.policies if any("waits for the next pass" in n for n in pr.plan.notes)]
        assert len(waiting) == 3, [pr.plan.notes for pr in preview.policies]
        assert (
            "it needs 3 requests of the secretmanager write quota of project projects/test-project, which has about"
            in waiting[0].plan.notes[-1]
        )

        first = _pass(path, due, h)
        assert not first.deadline_passed and first.ok, first.to_json()
        rotated = [p["name"] for p in gcp if h.live_ids(p["name"]) != first_keys[p["name"]]]
        assert len(rotated) == 5
        for name in rotated:  # each started rotation finished publishing: its new key is current in its secret
            assert server.secret(PROJECT, name).aliases.get("current") is not None
            assert len(h.live_ids(name)) == 2  # the old key stays through its grace

        second = _pass(path, at(41), h)
        assert second.ok, second.to_json()
        assert all(h.live_ids(p["name"]) != first_keys[p["name"]] for p in gcp)


def test_the_drift_checks_of_a_steady_fleet_use_at_most_half_the_read_quota(
    tmp_path: Path, server: SecretManagerServer
) -> None:
    """30 steady GCP policies, drift_check_every 1m, a read quota of 20 a minute (1200/1h): checking each policy every
    minute would read 30 a minute. The engine spreads the checks (to about every 3 minutes, and says so), so
    that in an hour of passes the server sees at most 10 reads a minute, and every policy is still checked."""
    with harness(tmp_path) as h:
        gcp = [{**_policy(f"d{i}", "g"), "lifetime": "1d"} for i in range(30)]
        setup = _config(h, server, gcp, concurrency=4, rate_limits=False)
        assert _pass(setup, T0, h).ok
        # 20 a minute, stated per hour: the passes run back to back on this machine's clock while the engine's
        # clock steps a minute each, so the client's window must not be what holds the reads down here
        path = _config(h, server, gcp, quotas={"read": "1200/1h"}, drift_check_every="1m", verify_for="1m")
        now = [at(10)]
        with build(
            config_mod.load(path), clock=lambda: now[0], store_options={"g": {"credentials": AnonymousCredentials()}}
        ) as app:
            before = server.count("GetSecret")
            for minute in range(60):
                now[0] = at(10 + minute)
                h.clock.set(now[0])
                assert app.engine.run_pass().ok
            reads = server.count("GetSecret") - before
            period = app.engine.drift_period("d0")
        assert period is not None and period >= timedelta(minutes=3), period
        assert reads <= 10 * 60 + 30, reads  # half of 20 a minute, and one round of checks of slack
        checked = {path.rsplit("/", 1)[-1] for (_, op, path, _) in server.requests if op == "GetSecret"}
        assert {p["name"] for p in gcp} <= checked


def test_a_mass_rotation_writes_while_it_still_reads_the_rest_of_the_fleet(
    tmp_path: Path, server: SecretManagerServer
) -> None:
    """Six GCP policies, all due, two workers, 12 writes per 3 s: the pass does not read every target before
    its first write (which left the write quota idle for the whole read phase): the first rotation's writes
    reach the service before the last policy's target is read, and the most urgent policies (the keys that
    expire first, last in the config here) are read first. Every rotation still finishes, nothing throttled."""
    with harness(tmp_path) as h:
        gcp = [_policy(f"g{i}", "g") for i in range(6)]
        setup = _config(h, server, gcp, concurrency=2, rate_limits=False)
        for i, p in enumerate(reversed(gcp)):  # the last policy's key first: it expires first
            assert _pass(setup, at(i), h, only=[p["name"]]).ok
        first_keys = {p["name"]: h.live_ids(p["name"]) for p in gcp}
        book = server.enforce_quotas(scale=20, limits={WRITES: 12})
        path = _config(h, server, gcp, concurrency=2, pass_timeout="5m")
        start = len(server.requests)
        report = _pass(path, at(50), h)  # g0 (issued at minute 5) is due from minute 45, g5's key expires at 60
        assert report.ok, report.to_json()
        assert book.throttled() == 0, book.stats()
        assert all(h.live_ids(p["name"]) != first_keys[p["name"]] for p in gcp)
        ops = [(op, path.rsplit("/", 1)[-1]) for (_, op, path, _) in server.requests[start:]]
        reads = [n for n, (op, _) in enumerate(ops) if op == "GetSecret"]
        writes = [n for n, (op, _) in enumerate(ops) if op == "AddSecretVersion"]
        assert len(writes) == 6, ops
        assert writes[0] < reads[5], ops  # a new key was written before the sixth policy was read
        assert {ops[reads[0]][1], ops[reads[1]][1]} == {"g5", "g4"}, ops  # the most urgent first
