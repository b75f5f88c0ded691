"""Kubernetes reload end to end (issue 23), with real ``rotator once`` processes against the test API server
over HTTP: rotator writes the key into a Secret (the ``kubernetes`` store), a "consumer" Deployment's pods take
the key id from that Secret when they start (``env.valueFrom``, modelled by the server's controller), and its
rollout runs in real time (``auto_rollout``).

A rotation restarts the Deployment once; the pickup check sees only new pods; the old key is revoked after
grace; and a monitor that samples every running pod all along finds no moment at which a running consumer
holds a revoked key. A pass killed with SIGKILL while the workload rolls leaves nothing that the next passes do
not finish, with no second restart.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.reload.kubernetes import KEY_ID_ANNOTATION
from tests.servers.kube_api import KubeApiServer, running_kube_api
from tests.support.e2e import ROTATOR, Harness, at, harness

pytestmark = pytest.mark.slow

NS = "payments"
SECRET = "momento-checkout"


def kubeconfig(path: Path, server: str) -> Path:
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
    return path


class Consumers:
    """Samples the key ids every running pod holds, and records any that the emulator has revoked."""

    def __init__(self, kube: KubeApiServer, h: Harness) -> None:
        self.kube, self.h = kube, h
        self.samples = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                held = self.kube.all_running_key_ids()
                revoked = {k.key_id for k in self.h.issued_keys() if k.revoked_at is not None}
                again = self.kube.all_running_key_ids()
            except Exception:  # shutting down
                continue
            self.samples += 1
            for k in held & again & revoked:
                v = f"a running consumer holds revoked key {k}"
                if v not in self.violations:
                    self.violations.append(v)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Harness, KubeApiServer, Path]]:
    with harness(tmp_path) as h, running_kube_api() as kube:
        kube.clock = h.clock.as_datetime  # pods start by the emulator's clock, as rotator's --now runs
        kc = str(kubeconfig(tmp_path / "kubeconfig", kube.url))
        k8s = {"kubeconfig": kc, "in_cluster": False}
        policy: dict[str, Any] = {
            "name": "checkout",
            "role": "operator",
            "lifetime": "1h",
            "rotate_before": "20m",
            "grace": "5m",
            "orphan_after": "10m",
            "targets": [{"store": "k8s", "secret": SECRET}],
            "reload": [{"type": "kubernetes", "namespace": NS, "kind": "Deployment", "names": ["checkout"], **k8s}],
            "reload_timeout": "10m",
            "pickup": [{"type": "kubernetes", "namespace": NS, "pods": {"selector": "app=checkout"}, **k8s}],
        }
        stores = {"k8s": {"type": "kubernetes", "namespace": NS, "create": True, **k8s}}
        cfg = h.write_config([policy], stores=stores)
        yield h, kube, cfg


def key_patches(kube: KubeApiServer, key_id: str) -> int:
    return sum(
        1
        for p in kube.workload_patches(NS, "Deployment", "checkout")
        if (p.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}).get(KEY_ID_ANNOTATION)
        == key_id
    )


def once(h: Harness, cfg: Path, minutes: float) -> dict[str, Any]:
    run = h.run("-c", str(cfg), "once", now=at(minutes), timeout=60)
    assert run.returncode in (0, 1), run.explain()
    assert "eyJ" not in run.stdout + run.stderr
    return run.summary()


def test_a_rotation_restarts_the_consumers_once_and_revokes_only_when_no_running_pod_holds_the_old_key(
    world: tuple[Harness, KubeApiServer, Path],
) -> None:
    h, kube, cfg = world
    assert once(h, cfg, 0)["counts"]["created"] == 1
    (k1,) = h.live_ids("checkout")
    kube.add_workload(NS, "Deployment", "checkout", replicas=3, consumer_secret=(SECRET, "momento.json"))
    assert kube.running_key_ids(NS, "Deployment", "checkout") == {k1}
    consumers = Consumers(kube, h)
    kube.auto_rollout(0.05)
    try:
        once(h, cfg, 45)  # due: the new key into the Secret
        k2 = h.newest_id("checkout")
        s = once(h, cfg, 46)
        assert s["counts"]["reloaded"] == 1 and key_patches(kube, k2) == 1
        deadline = time.monotonic() + 20
        while kube.running_key_ids(NS, "Deployment", "checkout") != {k2} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kube.running_key_ids(NS, "Deployment", "checkout") == {k2}  # every pod restarted on the new key
        s = once(h, cfg, 48)  # rollout done, but grace (5m from 45m) is not over
        assert s["counts"]["revoked"] == 0 and k1 in h.live_ids("checkout")
        s = once(h, cfg, 51)
        assert s["counts"]["revoked"] == 1 and h.live_ids("checkout") == [k2]
        assert key_patches(kube, k2) == 1  # never a second restart
        # steady again: a pass reads no workload (reload targets cost nothing in steady state)
        before = kube.count("deployments")
        s = once(h, cfg, 53)
        assert s["counts"] == dict.fromkeys(s["counts"], 0) and kube.count("deployments") == before
    finally:
        kube.stop_auto_rollout()
        consumers.stop()
    assert consumers.samples > 10
    assert consumers.violations == []


def test_sigkill_while_the_workload_rolls_converges_within_two_passes_with_no_second_restart(
    world: tuple[Harness, KubeApiServer, Path],
) -> None:
    h, kube, cfg = world
    once(h, cfg, 0)
    (k1,) = h.live_ids("checkout")
    kube.add_workload(NS, "Deployment", "checkout", replicas=4, consumer_secret=(SECRET, "momento.json"))
    consumers = Consumers(kube, h)
    try:
        once(h, cfg, 45)
        k2 = h.newest_id("checkout")
        # a pass killed right after it restarted the workload (its "rollout restart" log line)
        h.clock.set(at(46))
        p = subprocess.Popen(
            [ROTATOR, "-c", str(cfg), "once", "--now", at(46).isoformat()],
            cwd=h.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stderr is not None
        for line in p.stderr:
            if "rollout restart" in line:
                p.send_signal(signal.SIGKILL)
                break
        p.wait(30)
        assert key_patches(kube, k2) == 1
        kube.step(NS, "Deployment", "checkout")  # the rollout is under way
        s = once(h, cfg, 47)  # the first pass after the kill: rolling, nothing started again
        assert s["counts"]["reloaded"] == 0 and key_patches(kube, k2) == 1
        (p0,) = s["policies"]
        assert p0["reloads"][0]["state"] == "rolling", p0
        kube.run_rollout(NS, "Deployment", "checkout")
        s = once(h, cfg, 51)  # the second: rollout done, grace over, pods all new: revoked
        assert s["counts"]["revoked"] == 1 and h.live_ids("checkout") == [k2]
        assert key_patches(kube, k2) == 1
    finally:
        consumers.stop()
    assert consumers.violations == [] and k1 not in h.live_ids("checkout")


def test_a_stalled_rollout_keeps_the_old_key_alerts_and_is_restarted_after_reload_timeout(
    world: tuple[Harness, KubeApiServer, Path],
) -> None:
    h, kube, cfg = world
    once(h, cfg, 0)
    (k1,) = h.live_ids("checkout")
    kube.add_workload(NS, "Deployment", "checkout", replicas=2, consumer_secret=(SECRET, "momento.json"))
    once(h, cfg, 45)
    k2 = h.newest_id("checkout")
    kube.stall_rollout(NS, "Deployment", "checkout")  # the new pods never become Ready
    s = once(h, cfg, 46)
    assert s["counts"]["reloaded"] == 1 and key_patches(kube, k2) == 1
    kube.run_rollout(NS, "Deployment", "checkout")
    s = once(h, cfg, 52)  # grace over, rollout stuck: the old key stays, nothing restarted yet
    (p,) = s["policies"]
    assert s["counts"]["revoked"] == 0 and k1 in h.live_ids("checkout") and key_patches(kube, k2) == 1
    assert p["reloads"][0]["state"] in ("rolling", "failed"), p
    s = once(h, cfg, 57)  # reload_timeout (10m) after the restart: reported and started again
    (p,) = s["policies"]
    assert any(n.startswith("! reload failed") for n in p["notes"]), p
    assert s["counts"]["reloaded"] == 1 and key_patches(kube, k2) == 2 and k1 in h.live_ids("checkout")
    kube.stall_rollout(NS, "Deployment", "checkout", stalled=False)
    kube.run_rollout(NS, "Deployment", "checkout")
    s = once(h, cfg, 58)
    assert s["counts"]["revoked"] == 1 and h.live_ids("checkout") == [k2]
    assert kube.running_key_ids(NS, "Deployment", "checkout") == {k2}
