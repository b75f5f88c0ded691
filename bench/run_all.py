"""Runs every benchmark and prints its table (``make bench``). Figures go into the README's table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS = [
    ["engine_bench.py", "--policies", "50"],
    ["scale.py"],
    ["store_calls.py"],
    ["cold_start.py"],
    ["cold_start.py", "--lambda"],
    # 1,000 rotations per store inside its (scaled) request quotas, limits on and off: ~12 minutes
    ["quotas.py"],
]


def main() -> int:
    failed = 0
    for args in RUNS:
        print(f"\n$ python bench/{' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / args[0]), *args[1:]], stderr=subprocess.DEVNULL)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
