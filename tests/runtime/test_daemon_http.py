"""``rotator run`` as a subprocess against the emulator (issue 6): ``/healthz``, ``/readyz`` and ``/metrics``
scraped while rotations happen, SIGTERM in the middle of a pass, and readiness when the issuer fails.

The emulator runs in this process on real time; keys live 8 s (rotate_before 5 s, clock_skew 1 s: a key is
due 2 s after it was issued; grace 2 s), so a rotation happens every few seconds. The timing rules hold:
rotate_before (5s) > grace (2s) + interval (1s) + clock_skew (1s), orphan_after (30s) > pass_timeout (10s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.e2e import ROTATOR, Harness, free_port, harness

TIMING: dict[str, Any] = {"lifetime": "8s", "rotate_before": "5s", "grace": "2s", "orphan_after": "30s"}
ALPHA: dict[str, Any] = {
    "name": "alpha",
    "role": "operator",
    **TIMING,
    "format": "json",
    "targets": [{"store": "local", "secret": "alpha/momento"}],
}
BETA: dict[str, Any] = {
    "name": "beta",
    "role": "viewer",
    **TIMING,
    "format": "env",
    "targets": [
        {"store": "local", "secret": "beta/env"},
        {"store": "local", "secret": "beta/key", "format": "key", "endpoint_secret": "beta/endpoint"},
    ],
}
POLICY_SECRETS = {"alpha": ["alpha/momento"], "beta": ["beta/env", "beta/key"]}


class Daemon:
    """``rotator run`` in a subprocess; stderr (JSON log lines) goes to a file the test can read at any time."""

    def __init__(self, h: Harness, cfg: Path, port: int) -> None:
        self.h = h
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = h.root / "daemon.stderr"
        self._log = self.log_path.open("w")
        env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
        self.proc = subprocess.Popen(
            [ROTATOR, "-c", str(cfg), "run"],
            cwd=h.work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.client = httpx.Client(timeout=5)

    def get(self, path: str) -> httpx.Response | None:
        """GET ``path`` on the listener, or ``None`` while nothing listens."""
        try:
            return self.client.get(self.base + path)
        except httpx.TransportError:
            return None

    def wait_listening(self, timeout: float = 20) -> httpx.Response:
        """Poll ``/readyz`` until the listener answers; return that first answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"rotator run exited with {self.proc.returncode}:\n{self.stderr()}"
            r = self.get("/readyz")
            if r is not None:
                return r
            time.sleep(0.01)
        raise AssertionError(f"nothing listened on {self.base} within {timeout} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.log_path.read_text()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for ln in self.stderr().splitlines():
            try:
                e = json.loads(ln)
            except ValueError:
                continue
            if isinstance(e, dict) and (name is None or e.get("event") == name):
                out.append(e)
        return out

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample on /metrics: name -> [(labels, value)]."""
        r = self.get("/metrics")
        assert r is not None and r.status_code == 200, r
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                out.setdefault(s.name, []).append((dict(s.labels), s.value))
        return out

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"rotator run did not stop within {timeout} s of SIGTERM:\n{self.stderr()}") from None
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.client.close()
        self._log.close()


def sample(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    for got, value in m.get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return None


def start_daemon(h: Harness, **top: Any) -> Daemon:
    port = free_port()
    cfg = h.write_config(
        [ALPHA, BETA],
        interval="1s",
        jitter="0s",
        clock_skew="1s",
        pass_timeout="10s",
        http={"listen": f"127.0.0.1:{port}"},
        **top,
    )
    return Daemon(h, cfg, port)


# ---- a running daemon, scraped while it rotates ----------------------------------------------------------


@dataclass
class Scrapes:
    """What the module's daemon answered while it ran (filled by the fixture)."""

    daemon: Daemon
    rotations: list[float] = field(default_factory=list)  # alpha's rotations_total{result=ok}, scrape by scrape
    list_calls: list[float] = field(default_factory=list)  # momento list_keys 200, scrape by scrape
    awaiting: set[float] = field(default_factory=set)  # alpha's policy_awaiting_pickup values seen
    last: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapes]:
    with harness(tmp_path_factory.mktemp("daemon"), real_time=True) as h:
        d = start_daemon(h)
        try:
            d.wait_listening()
            s = Scrapes(d)
            deadline = time.monotonic() + 25
            # scrape until alpha rotated once after its first key (two keys created) and its old key
            # waited for grace
            while time.monotonic() < deadline:
                m = d.metrics()
                s.last = m
                s.rotations.append(sample(m, "rotator_rotations_total", policy="alpha", result="ok") or 0.0)
                s.list_calls.append(
                    sample(m, "rotator_api_calls_total", service="momento", operation="list_keys", status="200") or 0.0
                )
                aw = sample(m, "rotator_policy_awaiting_pickup", policy="alpha")
                if aw is not None:
                    s.awaiting.add(aw)
                if s.rotations[-1] >= 2 and 1.0 in s.awaiting:
                    break
                time.sleep(0.2)
            yield s
        finally:
            d.stop()
            d.close()


def test_healthz_answers_200_while_the_scheduler_runs(running: Scrapes) -> None:
    r = running.daemon.get("/healthz")
    assert r is not None and r.status_code == 200, r
    assert r.text.startswith("ok")


def test_readyz_answers_200_after_a_pass(running: Scrapes) -> None:
    r = running.daemon.get("/readyz")
    assert r is not None and r.status_code == 200, (r, r and r.text)
    assert r.text.startswith("ok: last pass finished")


def test_rotations_total_grows_as_keys_are_rotated(running: Scrapes) -> None:
    seen = running.rotations
    assert seen == sorted(seen), f"a counter went down: {seen}"
    assert seen[-1] >= 2, f"alpha's rotations seen on /metrics: {seen}\n{running.daemon.stderr()[-3000:]}"
    assert seen[0] < seen[-1]
    created = [e for e in running.daemon.events("created key") if e.get("policy") == "alpha"]
    assert len(created) >= seen[-1]


def test_expires_in_seconds_is_served_for_every_target(running: Scrapes) -> None:
    m = running.last
    for policy, secrets in POLICY_SECRETS.items():
        for secret in secrets:
            left = sample(m, "rotator_target_key_expires_in_seconds", policy=policy, target=f"local:{secret}")
            assert left is not None, (policy, secret, m.get("rotator_target_key_expires_in_seconds"))
            assert 0 < left <= 8, (policy, secret, left)
            at = sample(m, "rotator_target_key_expiry_timestamp_seconds", policy=policy, target=f"local:{secret}")
            assert at is not None and abs(at - time.time() - left) < 5


def test_api_calls_count_momento_list_keys_per_pass(running: Scrapes) -> None:
    calls = running.list_calls
    assert calls == sorted(calls), calls
    counted = [c for c in calls if c > 0]
    assert counted, calls
    assert counted[-1] > counted[0], calls  # a pass every second: more list_keys calls


def test_a_policy_in_grace_shows_as_awaiting_pickup(running: Scrapes) -> None:
    assert running.awaiting == {0.0, 1.0}


def test_issuer_up_and_last_successful_pass(running: Scrapes) -> None:
    m = running.last
    assert sample(m, "rotator_issuer_up") == 1
    last = sample(m, "rotator_last_successful_pass_timestamp_seconds")
    assert last is not None and time.time() - last < 10
    assert sample(m, "rotator_policy_ok", policy="alpha") == 1
    assert sample(m, "rotator_policy_ok", policy="beta") == 1


# ---- SIGTERM in the middle of a pass -------------------------------------------------------------------


@dataclass
class Stopped:
    h: Harness
    first_readyz: tuple[int, str]
    in_flight: dict[str, Any]  # the 'created key' event of the rotation SIGTERM interrupted
    code: int
    took: float
    stderr: str


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    # every request to the emulator takes 0.3 s, so a pass that rotates takes about a second
    with harness(tmp_path_factory.mktemp("sigterm"), real_time=True, latency=0.3) as h:
        d = start_daemon(h)
        try:
            first = d.wait_listening()
            first_readyz = (first.status_code, first.text)
            deadline = time.monotonic() + 25
            in_flight: dict[str, Any] | None = None
            while in_flight is None and time.monotonic() < deadline:
                assert d.proc.poll() is None, d.stderr()
                due = [e for e in d.events("created key") if "is due" in str(e.get("reason"))]
                if due:
                    in_flight = due[0]
                    break
                time.sleep(0.01)
            assert in_flight is not None, f"no rotation within 25 s:\n{d.stderr()[-3000:]}"
            code, took = d.stop()  # right after the key was created, before it is published
            yield Stopped(h, first_readyz, in_flight, code, took, d.stderr())
        finally:
            d.close()


def test_readyz_is_503_until_the_first_pass_finished(stopped: Stopped) -> None:
    status, text = stopped.first_readyz
    assert status == 503, text
    assert "no pass has finished yet" in text


def test_sigterm_mid_pass_exits_0_within_seconds(stopped: Stopped) -> None:
    assert stopped.code == 0, stopped.stderr[-3000:]
    assert stopped.took < 5, stopped.took
    events = [json.loads(ln).get("event") for ln in stopped.stderr.splitlines() if ln.startswith("{")]
    assert "rotator stopped" in events
    assert events.index("stopping: finishing the action in flight") < events.index("rotator stopped")


def test_sigterm_leaves_no_half_written_store(stopped: Stopped) -> None:
    root = stopped.h.secrets
    leftovers = [str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith((".tmp-", ".current-"))]
    assert leftovers == []
    secrets = [p.parent for p in root.rglob("current")]
    assert {str(p.relative_to(root)) for p in secrets} == {
        "alpha/momento",
        "beta/env",
        "beta/key",
        "beta/endpoint",
    }
    for d in secrets:
        current = d / "current"
        assert current.is_symlink() and current.resolve().is_file(), f"{current} does not resolve"
        values = {p.stem for p in (d / "versions").glob("*.value")}
        metas = {p.stem for p in (d / "versions").glob("*.json")}
        assert values <= metas, f"{d}: versions without metadata"
        for stem in metas - values:  # a retired version whose value was destroyed (file store destroy_after)
            meta = json.loads((d / "versions" / f"{stem}.json").read_text())
            assert meta["enabled"] is False and meta.get("destroyed_at"), f"{d}: {stem} lost its value"
        assert current.resolve().stem in values


def test_the_rotation_in_flight_was_published_to_every_target(stopped: Stopped) -> None:
    policy, new_key = stopped.in_flight["policy"], stopped.in_flight["new_key_id"]
    for secret in POLICY_SECRETS[policy]:
        d = stopped.h.secret_dir(secret)
        version = os.readlink(d / "current").removeprefix("versions/").removesuffix(".value")
        meta = json.loads((d / "versions" / f"{version}.json").read_text())
        assert meta["key_id"] == new_key, (secret, meta)
        assert meta["enabled"] is True


def test_every_live_key_is_held_and_every_held_key_is_live(stopped: Stopped) -> None:
    h = stopped.h
    for policy, secrets in POLICY_SECRETS.items():
        live = set(h.live_ids(policy))
        for secret in secrets:
            d = h.secret_dir(secret)
            metas = [json.loads(p.read_text()) for p in (d / "versions").glob("*.json")]
            held = {m["key_id"] for m in metas if m["enabled"]}
            current = os.readlink(d / "current").removeprefix("versions/").removesuffix(".value")
            assert current in live, (secret, current, live)
            # no key was created and left unstored by the interrupted pass
            assert live <= held, (policy, secret, live - held)


# ---- readiness when the issuer fails -------------------------------------------------------------------


def test_readyz_is_503_when_the_issuer_fails_every_request(tmp_path: Path) -> None:
    with harness(tmp_path, real_time=True, failure_rate=1.0) as h:
        d = start_daemon(h, issuer={"max_attempts": 1})
        try:
            d.wait_listening()
            deadline = time.monotonic() + 15
            r = d.get("/readyz")
            while time.monotonic() < deadline and (r is None or "no pass has finished yet" in r.text):
                time.sleep(0.05)
                r = d.get("/readyz")
            assert r is not None and r.status_code == 503, (r, r and r.text)
            assert "the issuer did not answer the last pass" in r.text
            health = d.get("/healthz")
            assert health is not None and health.status_code == 200
            m = d.metrics()
            assert sample(m, "rotator_issuer_up") == 0
            assert (sample(m, "rotator_api_calls_total", service="momento", operation="list_keys") or 0) >= 1
            assert not (h.secrets).exists()
            code, _ = d.stop()
            assert code == 0
        finally:
            d.close()
