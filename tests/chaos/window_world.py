"""The ``window`` chaos scenario (issue 24): real ``rotator once`` processes (tests/chaos/world.py's world: the
emulator over HTTP, a file store, a consumer watcher) for policies with change windows in three time zones
(Lord Howe Island turns its clocks back half an hour twenty minutes into the run) and one without, all under
freezes, while the emulated clock moves across the windows' openings and closings and the freezes' edges.
Passes are killed (SIGKILL at a random point), paused (SIGSTOP while the world goes on, then SIGCONT past the
pass deadline) and run two to four at once.

Time moves 1 to 4 minutes a round (``interval`` is 4m: the schedule's promise of a pass at least that often),
always half a minute off the whole minutes where windows and freezes begin and end, so a pass (``--now`` plus
the seconds the process has run) sees the window as the round's time does.

Invariants, every round and after settling, besides world.py's (no target serves a revoked or expired key,
watched all along; no key revoked within grace of a target switching away; after settling every target holds
a live key, at most two per policy, no orphan; no API key in any output):

- a key created while its policy's window is closed (or a freeze holds) is the policy's first, continues a
  rotation under way (a newer key than the one the targets hold exists), or is the safety case: waiting for
  the next opening would leave the key the targets hold less than grace + interval + clock_skew before it
  expires, and a process logged the ``! outside window`` note for the policy;
- no key is replaced only once it has expired (less clock_skew): every round has a pass that runs to its
  end, so a rotation that waited for a window must have started while the key had that margin left.

Both are judged from the emulator's keys (issue times), the store's versions and ``rotator.windows.gate`` over
the config the processes load, not from what rotator says.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from rotator import config as config_mod
from rotator import windows
from rotator.durations import format_duration
from tests.chaos.world import PASS_TIMEOUT_S, Figures, World, version_metas

#: twenty minutes before Lord Howe Island's clocks go back half an hour (2031-04-05T15:00:00Z), half a
#: minute past the minute
START = datetime(2031, 4, 5, 14, 40, 30, tzinfo=UTC)
INTERVAL = timedelta(minutes=4)
#: lifetime 32m, rotate_before 20m, grace 5m: due 11m after issue (clock_skew 1m), so a pass (at most 4m
#: apart) comes between the end of grace and the next due time; a window may stay closed for up to
#: 20m - 5m - 4m = 11m, and a due key rotates outside it when the next opening leaves it < 10m
POLICY: dict[str, Any] = {"role": "operator", "lifetime": "32m", "rotate_before": "20m", "grace": "5m"}
WINDOWS: list[dict[str, str] | None] = [
    {"cron": "*/15 * * * *", "duration": "5m", "timezone": "UTC"},  # closed 10m
    # closed 8m, but 14m across the change (:48 to :06 UTC): further ahead than the config looks, so a due key
    # may have to go outside it then
    {"cron": "*/12 * * * *", "duration": "4m", "timezone": "Australia/Lord_Howe"},
    {"cron": "5-59/15 * * * *", "duration": "6m", "timezone": "America/New_York"},  # closed 9m
    None,  # no window: the freezes only
]
#: (from, minutes), whole minutes: as long as the config allows (11m) or nearly, from 10 minutes into the run
#: and then every 100 minutes for a day; next to a closed window, the wait is longer than a due key can afford
FREEZES = [(START.replace(second=0) + timedelta(minutes=10 + 100 * i), (11, 10, 9)[i % 3]) for i in range(15)]


def window_policies() -> list[dict[str, Any]]:
    return [
        {
            "name": f"p{i:02d}",
            **POLICY,
            "orphan_after": "10m",
            "window": w,
            "targets": [
                {"store": "local", "secret": f"p{i:02d}/json", "format": "json"},
                {"store": "local", "secret": f"p{i:02d}/env", "format": "env"},
            ],
        }
        for i, w in enumerate(WINDOWS)
    ]


@dataclass
class WindowFigures(Figures):
    inside: int = 0  # keys created while their window was open and no freeze held
    first: int = 0  # outside it: a policy's first key
    continued: int = 0  # outside it: a rotation under way (a newer key than the targets hold exists)
    safety: int = 0  # outside it: waiting would have left the key too little (with the note)
    waits: int = 0  # "waits for the window opening" notes in the processes' logs

    def line(self, name: str) -> str:
        return (
            f"{super().line(name)} created_inside_window={self.inside} outside_first={self.first} "
            f"outside_continued={self.continued} outside_safety={self.safety} window_waits_logged={self.waits}"
        )


class WindowWorld(World):
    fig: WindowFigures

    def __init__(self, root: Path, *, seed: int = 0) -> None:
        super().__init__(root, n_policies=len(WINDOWS), seed=seed, concurrency=4)
        self.fig = WindowFigures()
        self.rng = random.Random(seed)
        self.policies = window_policies()
        data = self.h.config_data(
            self.policies,
            interval=f"{INTERVAL.seconds // 60}m",
            pass_timeout=f"{PASS_TIMEOUT_S}s",
            concurrency=4,
            issuer={"max_attempts": 6},
            freeze=[{"from": f.isoformat(), "to": (f + timedelta(minutes=m)).isoformat()} for f, m in FREEZES],
        )
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        self.loaded = config_mod.load(self.config)  # the config every process loads (refused: a test error)
        self.now = START
        self._round_outputs = 0

    # -- rounds ----------------------------------------------------------------------------------------

    def advance(self) -> None:
        self.now += timedelta(minutes=self.rng.randint(1, INTERVAL.seconds // 60))
        self.h.clock.set(self.now)

    def round(self) -> None:
        self._round_outputs = len(self.outputs)
        kind = self.rng.choice(["normal", "kill", "kill", "stall", "concurrent"])
        if kind == "kill":
            self.round_kill()
        elif kind == "concurrent":
            self.round_concurrent()
        elif kind == "stall":
            self.round_stall_window()
        else:
            before = self._created_ids()
            self.once()
            self._end_round(before)

    def round_stall_window(self) -> None:
        """A pass paused with SIGSTOP at a random point, while one to three passes run an interval or less apart,
        then resumed past its deadline (world.py's stall jumps to the next due time: no schedule skips a pass
        here, the window rule's margin counts on it)."""
        before = self._created_ids()
        a = self.spawn()
        time.sleep(self.rng.uniform(0.05, 1.2))
        if a.poll() is None:
            a.send_signal(signal.SIGSTOP)
            paused = time.monotonic()
            self.fig.stalls += 1
            time.sleep(0.2)  # a request it had sent is answered at the time it was sent
            for _ in range(self.rng.randint(1, 3)):
                self.now += timedelta(minutes=self.rng.randint(1, INTERVAL.seconds // 60))
                self.once()
            time.sleep(max(0.0, PASS_TIMEOUT_S + 1 - (time.monotonic() - paused)))
            a.send_signal(signal.SIGCONT)
        _, text = self.finish(a)
        if "deadline passed" in text:
            self.fig.stalled_deadline += 1
        self._end_round(before)

    def _end_round(self, before: set[str]) -> None:
        self.check_window(before, self.outputs[self._round_outputs :])
        self._round_outputs = len(self.outputs)
        super()._end_round(before)

    def settle(self) -> None:
        self._round_outputs = len(self.outputs)
        before = self._created_ids()
        super().settle()
        self.check_window(before, self.outputs[self._round_outputs :])

    # -- the window rule -------------------------------------------------------------------------------

    def check_window(self, before: set[str], outputs: list[str]) -> None:
        """Every key created since ``before`` was created inside its window, or had to be (see the module)."""
        text = "".join(outputs)
        self.fig.waits += text.count("waits for the window opening")
        keys = self.h.issued_keys()
        skew, interval = self.loaded.clock_skew, self.loaded.interval
        for k in keys:
            if k.key_id in before or k.policy is None:
                continue
            policy = self.loaded.policy(k.policy)
            t = k.issued_at
            g = windows.gate(policy.window, policy.freezes, t)
            if g.open:
                self.fig.inside += 1
                continue
            prior = [x for x in keys if x.policy == k.policy and x.issued_at < t]
            stored = {kid for tgt in policy.targets for kid in version_metas(self.h.secret_dir(tgt.secret))}
            held = [x for x in prior if x.key_id in stored]
            if not held:
                self.fig.first += 1
                continue
            active = max(held, key=lambda x: (x.issued_at, x.key_id))
            assert active.expires_at is not None
            if any((x.issued_at, x.key_id) > (active.issued_at, active.key_id) for x in prior):
                self.fig.continued += 1
                continue
            if active.expires_at - skew <= t:
                # every round has a pass that runs to its end, a rotation starts at least grace + clock_skew
                # before expiry (the margin): one that waited until then waited too long
                self._violation(
                    f"key {k.key_id} of {k.policy} created at {t.isoformat()}, only once the key the targets hold, "
                    f"{active.key_id}, had expired (at {active.expires_at.isoformat()}, less clock_skew)"
                )
                continue
            margin = policy.grace + interval + skew
            must_go = g.next_start is None or active.expires_at - g.next_start < margin
            noted = f"outside window for {k.policy}:" in text
            if must_go and noted:
                self.fig.safety += 1
                continue
            left = "nothing opens"
            if g.next_start is not None:
                left = f"{format_duration(active.expires_at - g.next_start)} left at {g.next_start.isoformat()}"
            self._violation(
                f"key {k.key_id} of {k.policy} created at {t.isoformat()} while {g.why}: the key the targets hold, "
                f"{active.key_id}, expires at {active.expires_at.isoformat()} ({left}, margin "
                f"{format_duration(margin)})" + ("; no process logged the outside-window note" if must_go else "")
            )


def run_window_scenario(root: Path, rounds: int, *, seed: int = 0) -> WindowFigures:
    w = WindowWorld(root, seed=seed)
    try:
        # the first keys, in a clean pass 9 minutes before the rounds begin, so that they are due in the first
        # rounds (nothing is due in between: the schedule's passes would change nothing)
        w.now = START - timedelta(minutes=9)
        code, out = w.once()
        assert code == 0, out[-2000:]
        w.check_window(set(), w.outputs[-1:])
        w.now = START
        for _ in range(rounds):
            w.round()
        w.settle()
        return w.fig
    finally:
        w.close()


if __name__ == "__main__":  # a quick look: python -m tests.chaos.window_world [rounds]
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chaos-window-") as tmp:
        t0 = time.monotonic()
        fig = run_window_scenario(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 10, seed=1)
        print(fig.line("window"), f"seconds={time.monotonic() - t0:.0f}")
        for v in fig.violations:
            print("  violation:", v)
