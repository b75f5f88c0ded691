"""Process-level chaos (issue 10): real ``rotator once`` processes, run as a CronJob, a Lambda and a daemon
may run them (alone, together, killed, paused), against the Momento emulator over HTTP and a file store.

Nothing is simulated inside rotator: each pass is the real console script in its own process, stopped with
real signals (SIGKILL, SIGSTOP/SIGCONT). The emulator runs in this process (its clock is the test's: each
round is ``STEP`` later) and is reached over HTTP; the file store is a real directory.

A watcher thread reads every target's ``current`` version the way a consumer does, all through the run, and
records a violation whenever a target serves a key the emulator has revoked or that has expired. After each
round and after settling, the invariants of DESIGN section 2 are checked from the emulator and the stores:

- no target ever served a revoked or expired key (the watcher, and each round's end state);
- no key was revoked within ``grace`` of a target switching away from it (version ``promoted_at`` against
  the emulator's ``revoked_at``);
- after settling: every target holds a live key, at most two live keys per policy, no orphan (a key no
  target holds) alive past ``orphan_after``;
- no API key (a JWT) in any process's output.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.support.e2e import ROTATOR, T0, Harness, current_version, version_meta

STEP = timedelta(minutes=7)  # emulated time between rounds: a rotation every ~6 rounds (due 39m into 1h)
STALL_STEP = timedelta(minutes=4)  # emulated time between the passes that run while one pass is paused
GRACE = timedelta(minutes=5)
ORPHAN_AFTER = timedelta(minutes=10)
PASS_TIMEOUT_S = 3
#: rotator writes promoted_at with its own clock (``--now`` plus the real seconds since it started), the
#: emulator dates revocations with the round's time: the two differ by the seconds a round takes
SLACK = timedelta(seconds=60)
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def version_metas(secret_dir: Path) -> dict[str, dict[str, Any]]:
    """key id -> metadata of every version of a secret, as the store lists them (a ``.tmp-*`` file is a write
    in progress, or one a killed writer left: not a version)."""
    out: dict[str, dict[str, Any]] = {}
    vdir = secret_dir / "versions"
    for p in sorted(vdir.glob("*.json")) if vdir.is_dir() else []:
        if not p.name.startswith("."):
            meta = json.loads(p.read_text())
            out[meta["key_id"]] = meta
    return out


def policies(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"p{i:02d}",
            "role": "operator",
            "lifetime": "1h",
            "rotate_before": "20m",
            "grace": "5m",
            "orphan_after": "10m",
            "targets": [
                {"store": "local", "secret": f"p{i:02d}/json", "format": "json"},
                {"store": "local", "secret": f"p{i:02d}/env", "format": "env"},
            ],
        }
        for i in range(n)
    ]


@dataclass
class Figures:
    rounds: int = 0
    processes: int = 0
    kills: int = 0  # SIGKILLs that hit a process still running
    injected: int = 0  # emulator answers replaced by a 429 or 500
    stalls: int = 0  # processes paused past pass_timeout
    stalled_deadline: int = 0  # of those, how many reported "deadline passed" on resume
    exit_codes: dict[int, int] = field(default_factory=dict)
    created: int = 0
    duplicates: int = 0  # keys created for a policy in a round beyond the first
    samples: int = 0  # consumer reads by the watcher
    violations: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        codes = ",".join(f"{k}:{v}" for k, v in sorted(self.exit_codes.items()))
        return (
            f"{name:<11} rounds={self.rounds} processes={self.processes} kills={self.kills} stalls={self.stalls} "
            f"(deadline passed in {self.stalled_deadline}) injected_failures={self.injected} "
            f"created={self.created} duplicates={self.duplicates} "
            f"exit_codes={codes} consumer_reads={self.samples} violations={len(self.violations)}"
        )


class World:
    """An emulator, a file store with ``n_policies`` policies of two targets each, and a consumer watcher."""

    def __init__(
        self,
        root: Path,
        *,
        n_policies: int = 10,
        jitter: str = "0s",
        seed: int = 0,
        latency: float = 0.0,
        concurrency: int = 4,
    ) -> None:
        self.rng = random.Random(seed)
        self.h = Harness(root, retry_after=0.05, seed=seed, latency=latency)
        self.policies = policies(n_policies)
        self.config = root / "rotator.yaml"
        data = self.h.config_data(
            self.policies,
            jitter=jitter,
            pass_timeout=f"{PASS_TIMEOUT_S}s",
            concurrency=concurrency,
            issuer={"max_attempts": 6},
        )
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        self.now = T0
        self.fig = Figures()
        self.outputs: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(5)
        self.h.close()

    # -- processes ------------------------------------------------------------------------------------

    def spawn(self) -> subprocess.Popen[str]:
        self.h.clock.set(self.now)
        env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
        self.fig.processes += 1
        return subprocess.Popen(
            [ROTATOR, "-c", str(self.config), "once", "--now", self.now.isoformat()],
            cwd=self.h.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def finish(self, p: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
        out, err = p.communicate(timeout=timeout)
        self.outputs.append(out + err)
        self.fig.exit_codes[p.returncode] = self.fig.exit_codes.get(p.returncode, 0) + 1
        return p.returncode, out + err

    def once(self) -> tuple[int, str]:
        return self.finish(self.spawn())

    def advance(self) -> None:
        self.now += STEP
        self.h.clock.set(self.now)

    # -- scenarios: one round each --------------------------------------------------------------------

    def round_kill(self) -> None:
        """One pass killed with SIGKILL at a random point (half the time after a random delay, half the time
        right after its n-th log line, which lands between two of its calls), then one normal pass."""
        before = self._created_ids()
        p = self.spawn()
        if self.rng.random() < 0.5:
            time.sleep(self.rng.uniform(0.05, 1.5))
            lines = ""
        else:
            n, got = self.rng.randint(1, 12), []
            assert p.stderr is not None
            while len(got) < n:
                line = p.stderr.readline()
                if not line:
                    break
                got.append(line)
            lines = "".join(got)
        if p.poll() is None:
            self.fig.kills += 1
        p.send_signal(signal.SIGKILL)
        self.finish(p)
        self.outputs.append(lines)
        self.once()
        self._end_round(before)

    def round_concurrent(self) -> None:
        """Two to four passes that start at the same moment."""
        before = self._created_ids()
        procs = [self.spawn() for _ in range(self.rng.randint(2, 4))]
        for p in procs:
            self.finish(p)
        self._end_round(before)

    def round_stall(self) -> None:
        """A pass paused with SIGSTOP in the middle of a rotation (right after it logs a chosen mutation: a key
        created, a key published, old versions retired), while the world goes on for three rounds (other
        passes, time), then resumed with SIGCONT past its deadline."""
        # move to the next rotation due, so that every stall round has mutations to pause in: the oldest key a
        # target holds as current is due at 39m (rotate_before 20m, skew 1m). Counted from what the targets
        # hold, not from each policy's newest key: a policy whose targets are split between an old key and a
        # newer one (a target another pass could not reach) has its old key due, and a jump past that, with
        # no pass at all, would let it expire by construction (no schedule skips a pass)
        issued = {k.key_id: k.issued_at for k in self.h.issued_keys()}
        held = [issued[k] for _, s in self._secrets() if (k := self._current_key(s)) in issued]
        if held:
            self.now = max(self.now, min(held) + timedelta(minutes=40))
        before = self._created_ids()
        trigger = self.rng.choice(['"created key"', '"published key"', '"retired old versions"'])
        a = self.spawn()
        seen = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert a.stderr is not None
            for line in a.stderr:
                lines.append(line)
                if trigger in line:
                    seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while not seen.is_set() and a.poll() is None:
            seen.wait(0.005)
        # the pause lands up to 20 ms after the line: between two steps, or inside the next one (a request in
        # flight, a file-store promote between its compare-and-set and its switch of `current`, ...), with the
        # pass's other policies running in parallel (concurrency 4)
        time.sleep(self.rng.uniform(0.0, 0.02))
        if seen.is_set() and a.poll() is None:
            a.send_signal(signal.SIGSTOP)
            paused = time.monotonic()
            self.fig.stalls += 1
            # three passes 4m apart: the last sees the paused pass's new key unpublished for 12m, past
            # orphan_after (10m), and sweeps it; the old keys (60m lifetime) are still valid throughout
            for _ in range(3):
                self.now += STALL_STEP
                self.once()
            time.sleep(max(0.0, PASS_TIMEOUT_S + 1 - (time.monotonic() - paused)))
            a.send_signal(signal.SIGCONT)
        out = a.stdout.read() if a.stdout is not None else ""
        a.wait(120)
        reader.join(10)
        text = out + "".join(lines)
        self.outputs.append(text)
        self.fig.exit_codes[a.returncode] = self.fig.exit_codes.get(a.returncode, 0) + 1
        if "deadline passed" in text:
            self.fig.stalled_deadline += 1
        self._end_round(before)

    def round_faults(self) -> None:
        """One or two passes while 30% of the emulator's answers are 429 or 500."""
        before = self._created_ids()
        self.h.emulator.failure_rate = 0.3
        injected = self.h.emulator.injected_failures
        try:
            for _ in range(self.rng.randint(1, 2)):
                self.once()
        finally:
            self.h.emulator.failure_rate = 0.0
            self.fig.injected += self.h.emulator.injected_failures - injected
        self._end_round(before)

    def _created_ids(self) -> set[str]:
        return {k.key_id for k in self.h.issued_keys()}

    def _end_round(self, before: set[str]) -> None:
        self.fig.rounds += 1
        new = [k for k in self.h.issued_keys() if k.key_id not in before and k.policy is not None]
        self.fig.created += len(new)
        per_policy: dict[str, int] = {}
        for k in new:
            per_policy[k.policy] = per_policy.get(k.policy, 0) + 1  # type: ignore[index]
        self.fig.duplicates += sum(n - 1 for n in per_policy.values())
        self.check_served(f"round {self.fig.rounds}")
        self.check_grace()
        self.advance()

    # -- settling -------------------------------------------------------------------------------------

    def settle(self) -> None:
        """Normal passes, no faults, every 4 minutes until grace and orphan_after have passed, then one more.

        (Passes keep coming while time goes on, as every deployment's schedule ensures: a jump over the last
        minutes of a key's life with no pass at all would let it expire, by construction.)"""
        self.h.emulator.failure_rate = 0.0
        self.once()
        end = self.now + GRACE + ORPHAN_AFTER + timedelta(minutes=1)
        while self.now < end:
            self.now = min(end, self.now + STALL_STEP)
            self.once()
        self.once()
        self.check_served("settled")
        self.check_grace()
        self.check_settled()
        self.check_outputs()

    # -- invariants -----------------------------------------------------------------------------------

    def _secrets(self) -> list[tuple[str, str]]:
        return [(p["name"], t["secret"]) for p in self.policies for t in p["targets"]]

    def _current_key(self, secret: str) -> str | None:
        d = self.h.secret_dir(secret)
        try:
            return str(version_meta(d, current_version(d))["key_id"])
        except (OSError, ValueError, KeyError):
            return None

    def _key_states(self) -> dict[str, tuple[datetime | None, datetime | None]]:
        """key id -> (revoked_at, expires_at)."""
        return {k.key_id: (k.revoked_at, k.expires_at) for k in self.h.issued_keys()}

    def _bad(self, key_id: str, states: dict[str, tuple[datetime | None, datetime | None]], now: datetime) -> str:
        revoked, expires = states.get(key_id, (None, None))
        if revoked is not None:
            return f"revoked at {revoked.isoformat()}"
        if expires is not None and expires <= now:
            return f"expired at {expires.isoformat()}"
        return ""

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            try:
                now = datetime.fromtimestamp(self.h.clock.now, T0.tzinfo)
                first = {s: self._current_key(s) for _, s in self._secrets()}
                states = self._key_states()
                second = {s: self._current_key(s) for _, s in self._secrets()}
            except Exception:  # the emulator is shutting down
                continue
            with self._lock:
                self.fig.samples += len(first)
                for s, k in first.items():
                    if k is None or k != second[s]:
                        continue  # switching right now: sample again next time
                    why = self._bad(k, states, now)
                    if why:
                        self._violation(f"watcher: {s} served key {k}, {why}")

    def _violation(self, text: str) -> None:
        if text not in self.fig.violations:
            self.fig.violations.append(text)

    def check_served(self, where: str) -> None:
        states = self._key_states()
        with self._lock:
            for _, s in self._secrets():
                k = self._current_key(s)
                if k is None:
                    self._violation(f"{where}: {s} holds no key")
                    continue
                why = self._bad(k, states, self.now)
                if why:
                    self._violation(f"{where}: {s} holds key {k}, {why}")

    def check_grace(self) -> None:
        """No key revoked within grace of a target switching away from it."""
        revoked = {k.key_id: k.revoked_at for k in self.h.issued_keys() if k.revoked_at is not None}
        with self._lock:
            for _, s in self._secrets():
                metas = version_metas(self.h.secret_dir(s))
                promoted = sorted(
                    (datetime.fromisoformat(m["promoted_at"]), kid) for kid, m in metas.items() if m.get("promoted_at")
                )
                for i, (_, kid) in enumerate(promoted):
                    if kid not in revoked or i + 1 >= len(promoted):
                        continue
                    switched_away = promoted[i + 1][0]
                    if revoked[kid] + SLACK < switched_away + GRACE:  # type: ignore[operator]
                        self._violation(
                            f"{s}: key {kid} revoked at {revoked[kid].isoformat()}, "  # type: ignore[union-attr]
                            f"{switched_away.isoformat()} + grace is later"
                        )

    def check_settled(self) -> None:
        keys = self.h.issued_keys()
        for p in self.policies:
            name = p["name"]
            live = [k for k in keys if k.policy == name and k.revoked_at is None]
            if len(live) > 2:
                self._violation(f"settled: {name} has {len(live)} live keys")
            held = {self._current_key(t["secret"]) for t in p["targets"]}
            if len(held) != 1:
                self._violation(f"settled: {name}'s targets hold different keys: {held}")
            stored = {kid for t in p["targets"] for kid in version_metas(self.h.secret_dir(t["secret"]))}
            for k in live:
                if k.key_id not in stored and self.now - k.issued_at >= ORPHAN_AFTER:
                    self._violation(f"settled: orphan {k.key_id} of {name} alive past orphan_after")

    def check_outputs(self) -> None:
        for out in self.outputs:
            m = JWT.search(out)
            if m:
                self._violation(f"an API key-shaped token in a process's output: {m.group()[:12]}...")
                return


def run_scenario(root: Path, scenario: str, rounds: int, *, seed: int = 0, n_policies: int = 10) -> Figures:
    """``rounds`` rounds of one scenario (kill, concurrent, stall, faults, reload), then settle and check."""
    if scenario == "reload":
        from tests.chaos.reload_world import run_reload_scenario

        return run_reload_scenario(root, rounds, seed=seed)  # type: ignore[return-value]
    jitter = "1s" if scenario == "concurrent" else "0s"
    # the emulator answers after 20 ms in the kill scenario: a pass then lasts long enough to be killed in
    latency = 0.02 if scenario == "kill" else 0.0
    w = World(root, n_policies=n_policies, jitter=jitter, seed=seed, latency=latency, concurrency=4)
    try:
        code, out = w.once()  # the first keys, in a clean pass
        assert code == 0, out[-2000:]
        w.advance()
        step = getattr(w, f"round_{scenario}")
        for _ in range(rounds):
            step()
        w.settle()
        return w.fig
    finally:
        w.close()
