"""The ``reload`` chaos scenario (issue 23): real ``rotator once`` processes rotate keys into Kubernetes Secrets
(the ``kubernetes`` store) and restart the consumer Deployments that read them at start (a ``kubernetes``
reload target, a ``pods`` pickup check), against the test API server over HTTP, whose controller rolls the
workloads in real time all along. Passes are killed (SIGKILL at a random point, often mid-reload) and paused
(SIGSTOP while other passes run and the workloads roll, then SIGCONT past the pass deadline).

Invariants, checked by a monitor thread all through the run and at each round's end:

- no running consumer pod ever holds a key the emulator has revoked (the pod's key id is what its Secret held
  when it started);
- no workload is restarted twice for the same key within ``reload_timeout`` of the first restart (a reload
  already done, or under way, is never repeated; a pass killed mid-reload is finished by the next one);
- every Secret holds a live key; after settling, every pod runs the policy's current key, at most two live
  keys per policy, and no API key in any process's output.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from rotator.keys import payload_key_id
from rotator.model import SecretText
from rotator.reload.kubernetes import KEY_ID_ANNOTATION, RESTARTED_AT_ANNOTATION
from tests.servers.kube_api import KubeApiServer, running_kube_api
from tests.support.e2e import ROTATOR, T0, Harness, MutableClock

NS = "payments"
STEP = timedelta(minutes=7)
RELOAD_TIMEOUT = timedelta(minutes=10)
PASS_TIMEOUT_S = 4
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


class FollowingClock:
    """The emulator's clock plus the real seconds since it was last set: what ``rotator --now`` runs on, so
    that pods the controller starts during a pass are dated as rotator dates its publications."""

    def __init__(self, clock: MutableClock) -> None:
        self.clock = clock
        self._last: float | None = None
        self._base = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            if self.clock.now != self._last:
                self._last, self._base = self.clock.now, time.monotonic()
            return datetime.fromtimestamp(self.clock.now + time.monotonic() - self._base, UTC)


@dataclass
class ReloadFigures:
    rounds: int = 0
    processes: int = 0
    kills: int = 0
    stalls: int = 0
    created: int = 0
    restarts: int = 0  # accepted restart patches
    pod_samples: int = 0
    exit_codes: dict[int, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    # Figures-compatible names, so the runner prints and checks both kinds alike
    samples: int = 0
    injected: int = 0

    def line(self, name: str) -> str:
        codes = ",".join(f"{k}:{v}" for k, v in sorted(self.exit_codes.items()))
        return (
            f"{name:<11} rounds={self.rounds} processes={self.processes} kills={self.kills} stalls={self.stalls} "
            f"created={self.created} restarts={self.restarts} exit_codes={codes} "
            f"pod_samples={self.pod_samples} violations={len(self.violations)}"
        )


def _kubeconfig(path: Path, server: str) -> str:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": server}}],
                "users": [{"name": "rotator", "user": {"token": "test"}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "rotator"}}],
                "current-context": "local",
            }
        )
    )
    return str(path)


class ReloadWorld:
    def __init__(self, root: Path, kube: KubeApiServer, *, n_policies: int = 3, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.h = Harness(root, retry_after=0.05, seed=seed)
        self.kube = kube
        kube.clock = FollowingClock(self.h.clock)
        kc = _kubeconfig(root / "kubeconfig", kube.url)
        k8s = {"kubeconfig": kc, "in_cluster": False}
        self.names = [f"app{i}" for i in range(n_policies)]
        policies = [
            {
                "name": name,
                "role": "operator",
                "lifetime": "1h",
                "rotate_before": "20m",
                "grace": "5m",
                "orphan_after": "10m",
                "targets": [{"store": "k8s", "secret": f"momento-{name}"}],
                "reload": [{"type": "kubernetes", "namespace": NS, "kind": "Deployment", "names": [name], **k8s}],
                "reload_timeout": "10m",
                "pickup": [{"type": "kubernetes", "namespace": NS, "pods": {"selector": f"app={name}"}, **k8s}],
            }
            for name in self.names
        ]
        stores = {"k8s": {"type": "kubernetes", "namespace": NS, "create": True, **k8s}}
        self.config = root / "rotator.yaml"
        data = self.h.config_data(policies, stores=stores, pass_timeout=f"{PASS_TIMEOUT_S}s", concurrency=3)
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        self.now = T0
        self.fig = ReloadFigures()
        self.outputs: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._monitor = threading.Thread(target=self._watch, daemon=True)

    def start_workloads(self) -> None:
        for name in self.names:
            self.kube.add_workload(
                NS, "Deployment", name, replicas=2, consumer_secret=(f"momento-{name}", "momento.json")
            )
        self.kube.auto_rollout(0.02)
        self._monitor.start()

    def close(self) -> None:
        self._stop.set()
        if self._monitor.is_alive():
            self._monitor.join(5)
        self.kube.stop_auto_rollout()
        self.h.close()

    # -- processes --

    def spawn(self) -> subprocess.Popen[str]:
        self.h.clock.set(self.now)
        self.fig.processes += 1
        env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
        return subprocess.Popen(
            [ROTATOR, "-c", str(self.config), "once", "--now", self.now.isoformat()],
            cwd=self.h.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def finish(self, p: subprocess.Popen[str], extra: str = "") -> None:
        out, err = p.communicate(timeout=120)
        self.outputs.append(extra + out + err)
        self.fig.exit_codes[p.returncode] = self.fig.exit_codes.get(p.returncode, 0) + 1

    def once(self) -> None:
        self.finish(self.spawn())

    # -- rounds --

    def round(self) -> None:
        before = {k.key_id for k in self.h.issued_keys()}
        kind = self.rng.choice(["normal", "kill", "kill", "stall"])
        if kind == "normal":
            self.once()
        elif kind == "kill":
            p = self.spawn()
            lines: list[str] = []
            if self.rng.random() < 0.5:
                time.sleep(self.rng.uniform(0.05, 1.5))
            else:
                trigger = self.rng.choice(['"rollout restart"', '"reload observed"', '"published key"'])
                assert p.stderr is not None
                deadline = time.monotonic() + 20
                for line in p.stderr:
                    lines.append(line)
                    if trigger in line or time.monotonic() > deadline:
                        break
            if p.poll() is None:
                self.fig.kills += 1
            p.send_signal(signal.SIGKILL)
            self.finish(p, "".join(lines))
            self.once()
        else:
            p = self.spawn()
            time.sleep(self.rng.uniform(0.1, 1.0))
            if p.poll() is None:
                p.send_signal(signal.SIGSTOP)
                self.fig.stalls += 1
                self.now += timedelta(minutes=3)
                self.once()  # another pass while the paused one holds whatever it held; workloads keep rolling
                time.sleep(PASS_TIMEOUT_S + 0.5)
                p.send_signal(signal.SIGCONT)
            self.finish(p)
        self.fig.rounds += 1
        self.fig.created += len([k for k in self.h.issued_keys() if k.key_id not in before])
        self.check_secrets(f"round {self.fig.rounds}")
        self.check_restarts()
        self.now += STEP

    def settle(self) -> None:
        self.kube.run_rollout()
        end = self.now + timedelta(minutes=16)
        while self.now < end:
            self.once()
            self.now += timedelta(minutes=4)
            time.sleep(0.3)  # the workloads finish rolling
        self.kube.run_rollout()
        self.once()
        self.check_secrets("settled")
        self.check_restarts()
        keys = self.h.issued_keys()
        for name in self.names:
            live = [k.key_id for k in keys if k.policy == name and k.revoked_at is None]
            if len(live) > 2:
                self._violation(f"settled: {name} has {len(live)} live keys")
            current = self._secret_key(f"momento-{name}")
            running = self.kube.running_key_ids(NS, "Deployment", name)
            if running != {current}:
                self._violation(f"settled: {name}'s pods run {sorted(running)}, its Secret holds {current}")
        for out in self.outputs:
            m = JWT.search(out)
            if m:
                self._violation(f"an API key-shaped token in a process's output: {m.group()[:12]}...")
                break

    # -- invariants --

    def _violation(self, text: str) -> None:
        with self._lock:
            if text not in self.fig.violations:
                self.fig.violations.append(text)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            try:
                held = self.kube.all_running_key_ids()
                revoked = {k.key_id: k.revoked_at for k in self.h.issued_keys() if k.revoked_at is not None}
                again = self.kube.all_running_key_ids()
            except Exception:  # shutting down
                continue
            self.fig.pod_samples += 1
            self.fig.samples += 1
            for k in held & again:
                if k in revoked:
                    self._violation(f"a running consumer holds key {k}, revoked at {revoked[k]}")

    def _secret_key(self, name: str) -> str | None:
        data = self.kube.secret_data(NS, name)
        if not data or "momento.json" not in data:
            return None
        return payload_key_id(SecretText(data["momento.json"]), "json")

    def check_secrets(self, where: str) -> None:
        live = {k.key_id for k in self.h.issued_keys() if k.revoked_at is None}
        for name in self.names:
            k = self._secret_key(f"momento-{name}")
            if k is None or k not in live:
                self._violation(f"{where}: Secret momento-{name} holds {k}, not a live key")

    def check_restarts(self) -> None:
        total = 0
        for name in self.names:
            by_key: dict[str, list[datetime]] = {}
            patch: Any
            for patch in self.kube.workload_patches(NS, "Deployment", name):
                ann = ((patch.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
                key = ann.get(KEY_ID_ANNOTATION)
                when = ann.get(RESTARTED_AT_ANNOTATION)
                if key and when:
                    by_key.setdefault(key, []).append(datetime.fromisoformat(when.replace("Z", "+00:00")))
            for key, times in by_key.items():
                total += len(times)
                times.sort()
                for a, b in itertools.pairwise(times):
                    if b - a < RELOAD_TIMEOUT - timedelta(minutes=1):
                        self._violation(f"{name} restarted twice for key {key}: {a.isoformat()} and {b.isoformat()}")
        self.fig.restarts = total


def run_reload_scenario(root: Path, rounds: int, *, seed: int = 0, n_policies: int = 3) -> ReloadFigures:
    with running_kube_api() as kube:
        w = ReloadWorld(root, kube, n_policies=n_policies, seed=seed)
        try:
            w.once()  # the first keys
            w.start_workloads()
            w.now += STEP
            for _ in range(rounds):
                w.round()
            w.settle()
            return w.fig
        finally:
            w.close()
