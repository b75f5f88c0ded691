"""``make chaos``: the chaos scenarios at length, with their figures.

python -m tests.chaos [--rounds 200] [--seed 1] [--scenario kill ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.window_world import run_window_scenario
from tests.chaos.world import run_scenario

SCENARIOS = ("kill", "concurrent", "stall", "faults", "reload", "window")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--stall-rounds", type=int, default=None, help="rounds of the stall scenario (default: --rounds)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS)
    args = ap.parse_args(argv)
    total = 0
    for scenario in args.scenario or SCENARIOS:
        rounds = args.stall_rounds if scenario == "stall" and args.stall_rounds is not None else args.rounds
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"chaos-{scenario}-") as tmp:
            fig = (
                run_window_scenario(Path(tmp), rounds, seed=args.seed)
                if scenario == "window"
                else run_scenario(Path(tmp), scenario, rounds, seed=args.seed)
            )
        print(f"{fig.line(scenario)} seconds={time.monotonic() - started:.0f}", flush=True)
        for v in fig.violations[:20]:
            print(f"  violation: {v}")
        total += len(fig.violations)
    print(f"total violations: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
