"""Engine figures over real HTTP: the local Momento emulator and the file store in a temp directory.

Prints a table: API calls per steady-state pass and per rotation, steady passes per second and rotations
per second for a fleet of N policies. Usage: python bench/engine_bench.py [--policies 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotator.config import from_mapping
from rotator.issuers.emulator import Emulator
from rotator.observability import API_CALLS
from rotator.runtime.app import build


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", type=int, default=50)
    args = ap.parse_args()
    n = args.policies
    tmp = Path(tempfile.mkdtemp(prefix="rotator-bench-"))
    clock = Clock()
    emu = Emulator(tmp / "emu.db", clock=lambda: clock.now.timestamp(), bootstrap_key_file=tmp / "owner.key")
    url = emu.start()
    cfg = from_mapping(
        {
            "issuer": {
                "type": "momento",
                "url": url,
                "management_key": {"file": str(tmp / "owner.key")},
                "endpoint": "cell-1-us-east-1-1.emulator.local",
            },
            "interval": "1m",
            "drift_check_every": "never",
            "verify_for": "0s",
            "log_level": "error",
            "defaults": {"lifetime": "30d", "rotate_before": "7d", "grace": "1h", "orphan_after": "15m"},
            "stores": {"local": {"type": "file", "path": str(tmp / "secrets")}},
            "policies": [
                {"name": f"bench-{i}", "role": "operator", "targets": [{"store": "local", "secret": f"b/{i}"}]}
                for i in range(n)
            ],
        }
    )
    from rotator.observability import configure_logging

    configure_logging("error")
    rows: list[tuple[str, str]] = []
    with build(cfg, clock=clock) as app:
        t0 = time.perf_counter()
        app.engine.run_pass()  # first keys
        first = time.perf_counter() - t0
        API_CALLS.reset()
        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            app.engine.run_pass()
        steady = (time.perf_counter() - t0) / reps
        calls = API_CALLS.snapshot()
        momento = sum(v for (s, _, _), v in calls.items() if s == "momento") / reps
        store = sum(v for (s, _, _), v in calls.items() if s != "momento") / reps
        rows.append((f"issuer calls per steady-state pass ({n} policies)", f"{momento:.1f}"))
        rows.append(("store calls per steady-state pass", f"{store:.1f}"))
        rows.append(("steady-state passes per second", f"{1 / steady:.1f}"))
        # a rotation: due -> create + publish; then after grace -> revoke
        clock.now += timedelta(days=24)
        API_CALLS.reset()
        t0 = time.perf_counter()
        r = app.engine.run_pass()
        rot = time.perf_counter() - t0
        assert r.counts()["created"] == n, r.counts()
        clock.now += timedelta(hours=2)
        r2 = app.engine.run_pass()
        assert r2.counts()["revoked"] == n, r2.counts()
        calls = API_CALLS.snapshot()
        momento = sum(v for (s, _, _), v in calls.items() if s == "momento")
        store = sum(v for (s, _, _), v in calls.items() if s == "file")
        rows.append(("issuer calls per rotation (create..revoke, 2 passes, list calls shared)", f"{(momento) / n:.2f}"))
        rows.append(("file-store calls per rotation per target (2 passes)", f"{store / n:.1f}"))
        rows.append(("rotations per second (create+publish pass)", f"{n / rot:.1f}"))
        rows.append(("first pass (create + publish every policy), seconds", f"{first:.2f}"))
    emu.stop()
    width = max(len(a) for a, _ in rows)
    print(f"{'figure'.ljust(width)}  value")
    for a, b in rows:
        print(f"{a.ljust(width)}  {b}")


if __name__ == "__main__":
    main()
