"""Two ``rotator run`` processes with ``leader_election`` (what ``replicas: 2`` of the Deployment runs), against
``rotator emulator`` (a process), the local Kubernetes API server (HTTPS, reached through the in-cluster service
account: token, ca.crt, namespace and KUBERNETES_SERVICE_HOST/PORT, as the kubelet gives a pod) and one file store.

Only the replica holding the Lease runs passes; SIGKILL it and the other takes over after ``lease_duration``
(3 s here) and runs the passes; SIGTERM the new leader and it releases the Lease on its way out."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.servers.kube_api import KubeApiServer, running_kube_api
from tests.support.e2e import ROTATOR, free_port

NS, LEASE_NAME = "rotator", "rotator"
LEASE_S, RENEW_S, RETRY_S = 3.0, 2.0, 0.3
POLICY: dict[str, Any] = {
    "name": "alpha",
    "role": "operator",
    "description": "alpha service",
    "lifetime": "1h",
    "rotate_before": "20m",
    "grace": "5m",
    "orphan_after": "10m",
    "format": "json",
    "targets": [{"store": "local", "secret": "alpha/momento"}],
}


class Proc:
    """A subprocess whose stderr goes to a file the test reads at any time."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.stderr"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log, text=True
        )

    def stderr(self) -> str:
        return self.log_path.read_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for ln in self.stderr().splitlines():
            try:
                e = json.loads(ln)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("event") == name:
                out.append(e)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class Replica(Proc):
    def __init__(self, name: str, cfg: Path, *, cwd: Path, env: dict[str, str], port: int) -> None:
        super().__init__(name, [ROTATOR, "-c", str(cfg), "run"], cwd=cwd, env={**env, "HOSTNAME": name})
        self.base = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(timeout=5)

    def get(self, path: str) -> httpx.Response | None:
        try:
            return self.client.get(self.base + path)
        except httpx.TransportError:
            return None

    def leader_gauge(self) -> float | None:
        r = self.get("/metrics")
        if r is None or r.status_code != 200:
            return None
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                if s.name == "rotator_leader":
                    return float(s.value)
        return None

    def passes(self) -> int:
        return len(self.events("pass finished"))

    def close(self) -> None:
        self.client.close()
        super().close()


def wait_for(what: str, cond: Callable[[], Any], timeout: float, *procs: Proc) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    logs = "\n".join(f"--- {p.name}:\n{p.stderr()[-4000:]}" for p in procs)
    raise AssertionError(f"{what}: not within {timeout} s\n{logs}")


def holder(kube: KubeApiServer) -> str | None:
    lease = kube.lease(NS, LEASE_NAME)
    return None if lease is None else str(lease["spec"].get("holderIdentity") or "")


def live_keys(db: Path, policy: str) -> list[str]:
    """Key ids of ``policy``'s unrevoked keys, read from the emulator's database (read-only, no HTTP)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "select key_id from keys where revoked_at is null and description like ?", (f"%[rotator:{policy}]%",)
        ).fetchall()
    return [r[0] for r in rows]


class World:
    """The emulator process, the Kubernetes API server and the environment a pod of the Deployment gets."""

    def __init__(self, root: Path, kube: KubeApiServer, emulator: Proc, emulator_port: int, env: dict[str, str]):
        self.root, self.kube, self.emulator, self.env = root, kube, emulator, env
        self.emulator_port = emulator_port
        self.db = root / "state" / "emulator.db"
        self.replicas: list[Replica] = []

    def replica(self, name: str, *, policies: list[dict[str, Any]] | None = None, **top: Any) -> Replica:
        http_port = free_port()
        cfg = {
            "issuer": {
                "type": "momento",
                "url": f"http://127.0.0.1:{self.emulator_port}",
                "management_key": {"file": str(self.root / "state" / "owner.key")},
                "endpoint": "cell-1-us-east-1-1.emulator.local",
            },
            "interval": "1s",
            "jitter": "0s",
            "clock_skew": "1s",
            "pass_timeout": "10s",
            "http": {"listen": f"127.0.0.1:{http_port}"},
            "stores": {"local": {"type": "file", "path": str(self.root / "secrets")}},
            "policies": policies or [POLICY],
            **top,
            "leader_election": {
                "enabled": True,  # namespace: the pod's own, from the service account directory
                "service_account_dir": str(self.root / "serviceaccount"),
                "lease_duration": f"{LEASE_S:g}s",
                "renew_deadline": f"{RENEW_S:g}s",
                "retry_period": f"{RETRY_S:g}s",
            },
        }
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        r = Replica(name, path, cwd=self.root, env=self.env, port=http_port)
        self.replicas.append(r)
        return r


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if k not in ("ROTATOR_CONFIG", "KUBECONFIG")}
    emulator = Proc(
        "emulator",
        [
            ROTATOR,
            "emulator",
            "--port",
            str(port),
            "--db",
            str(state / "emulator.db"),
            "--bootstrap-key-file",
            str(state / "owner.key"),
        ],
        cwd=tmp_path,
        env=base_env,
    )
    w: World | None = None
    try:
        assert emulator.proc.stdout is not None
        line = emulator.proc.stdout.readline()
        assert "listening on" in line, emulator.stderr()
        with running_kube_api(tls=True) as kube:
            env = {**base_env, **kube.service_account(tmp_path / "serviceaccount", namespace=NS)}
            w = World(tmp_path, kube, emulator, port, env)
            yield w
    finally:
        for r in w.replicas if w is not None else []:
            r.close()
        emulator.close()


# ---- the test ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_one_replica_runs_passes_and_the_other_takes_over_when_it_dies(world: World) -> None:
    a = world.replica("pod-a")
    b = world.replica("pod-b")
    everyone = (a, b)
    identity = wait_for("a replica holds the Lease", lambda: holder(world.kube), 20, *everyone)
    leader, standby = (a, b) if identity.startswith("pod-a_") else (b, a)
    assert identity.startswith(leader.name + "_")  # the pod name and a random suffix

    # the leader runs passes (one a second) and publishes; the standby runs none and says why
    wait_for("the leader ran three passes", lambda: leader.passes() >= 3, 20, *everyone)
    wait_for(
        "the store holds alpha's key", lambda: (world.root / "secrets" / "alpha" / "momento" / "current").exists(), 5
    )
    assert standby.passes() == 0, standby.stderr()[-3000:]
    assert len(live_keys(world.db, "alpha")) == 1  # one key: the standby minted none
    assert wait_for("the standby's gauge", lambda: standby.leader_gauge() is not None, 10, standby) is True
    assert standby.leader_gauge() == 0 and leader.leader_gauge() == 1
    ready = standby.get("/readyz")
    assert ready is not None and ready.status_code == 200 and "standby" in ready.text, ready
    health = standby.get("/healthz")
    assert health is not None and health.status_code == 200 and identity in health.text, health.text

    # SIGKILL: no release; the standby takes over once the Lease has gone unrenewed for lease_duration
    leader.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    leader.proc.wait()
    new = wait_for(
        "the standby took the Lease", lambda: (holder(world.kube) or "").startswith(standby.name), 15, standby
    )
    took = time.monotonic() - killed_at
    assert new
    new_identity = holder(world.kube)
    # it last saw a renewal at most retry_period before the kill: it waits lease_duration from that moment
    print(f"takeover {took:.2f} s after SIGKILL (lease_duration {LEASE_S:g} s)")
    assert LEASE_S - RETRY_S - 0.2 <= took <= LEASE_S + RETRY_S + 2.0, took
    lease = world.kube.lease(NS, LEASE_NAME)
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1
    wait_for("the new leader runs passes", lambda: standby.passes() >= 2, 15, standby)
    assert standby.leader_gauge() == 1
    assert len(live_keys(world.db, "alpha")) == 1  # it found the key published and had nothing to mint

    # SIGTERM: the pass in flight ends, then the Lease is released for the next replica
    standby.proc.send_signal(signal.SIGTERM)
    assert standby.proc.wait(timeout=15) == 0, standby.stderr()[-3000:]
    assert holder(world.kube) == "", world.kube.lease(NS, LEASE_NAME)
    writes = world.kube.lease_writes(NS, LEASE_NAME)
    assert writes[-1] == ("PUT", "")
    assert {h for _, h in writes} - {""} == {identity, new_identity}
    assert standby.events("leader election: released the Lease"), standby.stderr()[-3000:]
    assert standby.events("rotator stopped")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_leader_paused_past_its_lease_stops_its_pass_and_stands_by(world: World) -> None:
    # eight policies, one at a time, 0.1 s per emulator answer: the first pass takes a second or more
    policies = [
        {**POLICY, "name": f"p{i}", "targets": [{"store": "local", "secret": f"p{i}/momento"}]} for i in range(8)
    ]
    a = world.replica("pod-a", policies=policies, concurrency=1)
    wait_for("pod-a holds the Lease", lambda: (holder(world.kube) or "").startswith("pod-a_"), 20, a)
    old_identity = holder(world.kube)
    b = world.replica("pod-b", policies=policies, concurrency=1)
    # pause the leader in the middle of its first pass (as a long GC, a frozen VM or a hung connection would)
    wait_for("pod-a published its first key", lambda: a.events("published key"), 20, a)
    a.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for("pod-b took the Lease", lambda: (holder(world.kube) or "").startswith("pod-b_"), 20, a, b)
        new_identity = holder(world.kube)
        time.sleep(0.5)
    finally:
        # what pod-a logs from here on it did after it resumed (a stopped process logs nothing); the log lines
        # themselves may reach the file late, so they are told apart by their timestamps, not their position
        resumed_wall = datetime.now(UTC)
        a.proc.send_signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    wait_for("pod-a knows it lost the Lease", lambda: a.events("leader election: not leading"), 10, a)
    stepped_down = time.monotonic() - resumed_at
    wait_for("pod-b finished a pass", lambda: b.passes() >= 1, 20, b)
    time.sleep(2.5)  # several intervals: a leader would have run two more passes by now
    logged = [json.loads(ln) for ln in a.stderr().splitlines() if ln.startswith("{")]
    after = [e for e in logged if datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) >= resumed_wall]
    names = [e.get("event") for e in after]
    explain = "\n".join(json.dumps(e) for e in after)
    # the pass in flight stops after the action in flight (its request was sent before the pause), and no other
    # action and no other pass starts
    acted_on = {e["policy"] for e in after if e.get("event") in ("created key", "published key")}
    assert len(acted_on) <= 1, explain
    assert names.count("created key") <= 1 and names.count("published key") <= 1, explain
    assert "stopping: remaining actions left to the next pass" in names, names
    assert "leadership lost during the pass: the rest of it is left to the new leader" in names, names
    assert names.count("pass finished") <= 1, names
    # the Lease stays with pod-b: pod-a wrote nothing after it resumed
    writes = world.kube.lease_writes(NS, LEASE_NAME)
    assert holder(world.kube) == new_identity
    assert writes[-1] == ("PUT", new_identity)
    first_new = next(i for i, (_, h) in enumerate(writes) if h == new_identity)
    assert all(h != old_identity for _, h in writes[first_new:]), writes
    assert a.leader_gauge() == 0 and b.leader_gauge() == 1
    ready = a.get("/readyz")
    assert ready is not None and ready.status_code == 200 and "standby" in ready.text
    print(f"pod-a logged that it does not lead {stepped_down:.2f} s after SIGCONT; events after: {len(after)}")
    # pod-b finished the work: every policy has a key in its target
    for i in range(8):
        assert (world.root / "secrets" / f"p{i}" / "momento" / "current").exists(), i


# ---- the daemon's side, in this process -------------------------------------------------------------------------


def test_a_standby_daemon_runs_no_pass_and_reports_why(tmp_path: Path) -> None:
    from rotator import config as config_mod
    from rotator.metrics import Metrics
    from rotator.runtime.app import build
    from rotator.runtime.daemon import Daemon
    from rotator.runtime.leader import LeaseClient, LeaseElector
    from tests.support.crash import count_calls
    from tests.support.e2e import harness

    with harness(tmp_path, real_time=True) as h, running_kube_api() as kube:
        cfg = config_mod.load(h.write_config([POLICY], interval="10m", http={"listen": None}))
        other = LeaseElector(
            LeaseClient(kube.api_client(), NS, LEASE_NAME, timeout=5),
            identity="pod-b_1",
            lease_duration=30,
            renew_deadline=20,
            retry_period=1,
        )
        assert other.try_acquire_or_renew()
        mine = LeaseElector(
            LeaseClient(kube.api_client(), NS, LEASE_NAME, timeout=5),
            identity="pod-a_1",
            lease_duration=30,
            renew_deadline=20,
            retry_period=0.2,
        )
        with build(cfg) as app:
            daemon = Daemon(app, elector=mine, metrics=Metrics())
            daemon.scheduler.start()
            try:
                assert daemon.healthy() == (False, "leader election stopped")  # the campaign thread is not running
                mine.start()
                wait_for("a try", lambda: mine.state().holder == "pod-b_1", 10)
                ok, why = daemon.healthy()
                assert ok and "standby (identity pod-a_1): the Lease is held by pod-b_1" in why, why
                assert daemon.ready() == (True, "ok: standby (identity pod-a_1): the Lease is held by pod-b_1")
                with count_calls() as calls:
                    assert daemon.run_pass() is None
                assert calls == [] or {svc for svc, _, _ in calls} == {"kubernetes"}  # no issuer, no store call
                assert daemon.passes == 0
                # the other replica releases: this one leads, and the pass it schedules at once runs
                assert other.release()
                wait_for("a pass as leader", lambda: daemon.passes >= 1, 15)
                assert daemon.healthy() == (True, "ok: scheduler running (leader)")
                assert len(h.live_ids("alpha")) == 1
            finally:
                daemon.stop()
                daemon.wait()
                other.client.close()
        assert kube.lease(NS, LEASE_NAME)["spec"]["holderIdentity"] == ""  # released by wait()


def test_run_without_a_namespace_or_credentials_exits_2_naming_the_field(tmp_path: Path) -> None:
    from tests.support.e2e import harness, run_rotator

    with harness(tmp_path) as h:
        missing = tmp_path / "no-serviceaccount"
        cfg = h.write_config(
            [POLICY], http={"listen": None}, leader_election={"enabled": True, "service_account_dir": str(missing)}
        )
        r = run_rotator("-c", str(cfg), "run", cwd=h.work, env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"})
        assert r.returncode == 2, r.explain()
        assert "leader_election.namespace: not set, and the pod's namespace cannot be read" in r.stderr, r.explain()
        cfg = h.write_config(
            [POLICY],
            name="with-ns.yaml",
            http={"listen": None},
            leader_election={"enabled": True, "namespace": "rotator", "service_account_dir": str(missing)},
        )
        r = run_rotator(
            "-c",
            str(cfg),
            "run",
            cwd=h.work,
            env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"},
        )
        assert r.returncode == 2, r.explain()
        assert "leader_election: the Lease's Kubernetes API: cannot load the in-cluster service account" in r.stderr
        assert h.live_ids("alpha") == []  # nothing was done
