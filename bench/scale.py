"""Fleet-scale figures: a steady pass against the bare listing, config loading, peak RSS, mass rotation.

For each N (default 1,000 / 5,000 / 10,000), in a fresh process so that its peak RSS is its own:

- the steady pass: N policies, one file-store target each, every key fresh, so a pass is one paginated
  listing at the Momento emulator over HTTP plus planning, with no store calls; against the bare paginated
  listing of the same keys over the same HTTP server, made with httpx in the same process (the two take
  turns; medians). First as a process that runs one pass sees it, then after ``settle_heap()``, as
  ``rotator run`` runs its passes (the main table);
- the time per policy of the steady pass;
- loading and validating a config of N policies (``rotator.config.load``) against parsing the same YAML
  alone (``yaml.load`` with libyaml's ``CSafeLoader``);
- the process's peak RSS.

Then the mass rotation: ``--due`` policies (1,000) all due at once, with ``--latency`` (20 ms) on every issuer
call (the emulator's latency) and every store call, at ``concurrency: 1`` and ``16``, in rotations/s (the
create + publish pass), with the issuer calls that pass made.

Usage: python bench/scale.py [--sizes 1000,5000,10000] [--due 1000] [--latency 0.02] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def _scratch() -> Path:
    # the file store fsyncs every write; tmpfs keeps the setup pass short (the figures come from passes
    # that make no store calls, or whose store calls wait a fixed latency)
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="rotator-scale-", dir=base))


def _config(tmp: Path, url: str, n: int, concurrency: int) -> dict[str, Any]:
    return {
        "issuer": {
            "type": "momento",
            "url": url,
            "management_key": {"file": str(tmp / "owner.key")},
            "endpoint": "cell-1-us-east-1-1.emulator.local",
        },
        "interval": "1m",
        "concurrency": concurrency,
        "drift_check_every": "never",
        "verify_for": "0s",
        "log_level": "error",
        "defaults": {"lifetime": "30d", "rotate_before": "7d", "grace": "1h", "orphan_after": "15m"},
        "stores": {"local": {"type": "file", "path": str(tmp / "secrets")}},
        "policies": [
            {"name": f"svc-{i:05d}", "role": "operator", "targets": [{"store": "local", "secret": f"s/{i}"}]}
            for i in range(n)
        ],
    }


def _bare_listing(client: Any, token: str) -> int:
    """GET /api-keys over every page, as a minimal client would: the baseline a pass is measured against."""
    n, next_token = 0, None
    while True:
        params = {"limit": "100"}
        if next_token:
            params["next_token"] = next_token
        r = client.get("/api-keys", params=params, headers={"Authorization": token})
        r.raise_for_status()
        data = r.json()
        n += len(data["key_info"])
        next_token = data.get("next_token")
        if not next_token:
            return n


def one_size(n: int, reps: int) -> dict[str, Any]:
    import httpx
    import yaml

    from rotator.config import from_mapping, load
    from rotator.issuers.emulator import Emulator
    from rotator.observability import API_CALLS, configure_logging
    from rotator.runtime.app import build, settle_heap

    configure_logging("error")
    tmp = _scratch()
    clock = Clock()
    emu = Emulator(tmp / "emu.db", clock=lambda: clock.now.timestamp(), bootstrap_key_file=tmp / "owner.key")
    url = emu.start()
    data = _config(tmp, url, n, 16)
    out: dict[str, Any] = {"n": n}

    # config: load + validate against the YAML parse alone (the same text), interleaved, medians
    path = tmp / "rotator.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    os.environ["ROTATOR_CONFIG_MAX_BYTES"] = str(path.stat().st_size + 1)
    loads_, parses = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        load(path)
        loads_.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        parses.append(time.perf_counter() - t0)
    out["config_load_s"], out["yaml_parse_s"] = statistics.median(loads_), statistics.median(parses)

    cfg = from_mapping(data)
    with build(cfg, clock=clock) as app:
        first = app.engine.run_pass()
        assert first.counts()["created"] == n, first.counts()
        token = app.issuer._auth_header("list_keys")  # the same management key, for the bare client
        with httpx.Client(base_url=url, timeout=30) as client:
            assert _bare_listing(client, token) == n + 1  # the bootstrap key too
            app.engine.run_pass()  # warm

            def measure() -> tuple[float, float]:
                passes, listings = [], []
                for _ in range(reps):  # the two take turns, so load on the machine slows both alike
                    t0 = time.perf_counter()
                    r = app.engine.run_pass()
                    passes.append(time.perf_counter() - t0)
                    assert r.ok and not any(pr.plan and pr.plan.actions for pr in r.policies)
                    t0 = time.perf_counter()
                    _bare_listing(client, token)
                    listings.append(time.perf_counter() - t0)
                return statistics.median(passes), statistics.median(listings)

            API_CALLS.reset()
            out["pass_unsettled_s"], out["listing_unsettled_s"] = measure()
            calls = API_CALLS.snapshot()
            settle_heap()  # as `rotator run` does once it has built its engine
            out["pass_s"], out["listing_s"] = measure()
    emu.stop()
    out["issuer_calls_per_pass"] = sum(v for (s, _, _), v in calls.items() if s == "momento") / reps
    out["store_calls_per_pass"] = sum(v for (s, _, _), v in calls.items() if s != "momento") / reps
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


class SlowStore:
    """A store whose every call first waits ``latency`` seconds, as a store across a network does."""

    def __init__(self, inner: Any, latency: float) -> None:
        self._inner, self._latency, self.name = inner, latency, inner.name

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._inner, name)
        if name not in ("inspect", "read", "stage", "promote", "retire"):
            return fn

        def slow(*a: Any, **k: Any) -> Any:
            time.sleep(self._latency)
            return fn(*a, **k)

        return slow


def mass_rotation(due: int, concurrency: int, latency: float) -> dict[str, Any]:
    from rotator.config import from_mapping
    from rotator.engine import Engine
    from rotator.issuers.emulator import Emulator
    from rotator.observability import API_CALLS, configure_logging
    from rotator.runtime.app import build

    configure_logging("error")
    tmp = _scratch()
    clock = Clock()
    emu = Emulator(tmp / "emu.db", clock=lambda: clock.now.timestamp(), bootstrap_key_file=tmp / "owner.key")
    url = emu.start()
    cfg = from_mapping(_config(tmp, url, due, concurrency))
    with build(cfg, clock=clock) as app:
        app.engine.resolve_role("operator")  # the role table: read once per process, not per pass
        first = app.engine.run_pass()  # every policy gets its first key (no latency yet)
        assert first.counts()["created"] == due, first.counts()
        clock.now += timedelta(days=24)  # every key is due now
        emu.latency = latency
        engine = Engine(
            cfg,
            app.issuer,
            {name: SlowStore(s, latency) for name, s in app.stores.items()},
            endpoint=app.engine.endpoint,
            clock=clock,
        )
        engine._roles = app.engine._roles
        API_CALLS.reset()
        t0 = time.perf_counter()
        r = engine.run_pass()
        took = time.perf_counter() - t0
        assert r.counts()["created"] == due and r.ok, r.counts()
        calls = API_CALLS.snapshot()
    emu.stop()
    return {
        "concurrency": concurrency,
        "seconds": took,
        "rotations_per_s": due / took,
        "issuer_calls": sum(v for (s, _, _), v in calls.items() if s == "momento"),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench/scale.py {' '.join(args)} failed")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--due", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rotation", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.reps)))
        return
    if args.rotation is not None:
        print(json.dumps(mass_rotation(args.due, args.rotation, args.latency)))
        return

    load = os.getloadavg()[0]
    print(f"# load average at start: {load:.2f} ({os.cpu_count()} CPUs)")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = [_child("--one", str(n), "--reps", str(args.reps)) for n in sizes]
    head = (
        f"{'policies':>8}  {'steady pass':>11}  {'bare listing':>12}  {'ratio':>6}  {'per policy':>10}  "
        f"{'issuer calls':>12}  {'config load':>11}  {'YAML parse':>10}  {'ratio':>6}  {'peak RSS':>9}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['n']:>8,}  {r['pass_s'] * 1000:>8.0f} ms  {r['listing_s'] * 1000:>9.0f} ms  "
            f"{r['pass_s'] / r['listing_s']:>5.2f}x  {r['pass_s'] / r['n'] * 1e6:>7.1f} us  "
            f"{r['issuer_calls_per_pass']:>12.1f}  {r['config_load_s'] * 1000:>8.0f} ms  "
            f"{r['yaml_parse_s'] * 1000:>7.0f} ms  {r['config_load_s'] / r['yaml_parse_s']:>5.2f}x  "
            f"{r['rss_mib']:>5.1f} MiB"
        )
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        growth = (hi["pass_s"] / hi["n"]) / (lo["pass_s"] / lo["n"])
        print(f"time per policy at {hi['n']:,} vs {lo['n']:,}: {growth:.2f}x")
    print("\nthe same passes before settle_heap() (a process that runs one pass: `rotator once`, the Lambda)")
    for r in rows:
        ratio = r["pass_unsettled_s"] / r["listing_unsettled_s"]
        print(
            f"{r['n']:>8,}  {r['pass_unsettled_s'] * 1000:>8.0f} ms  {r['listing_unsettled_s'] * 1000:>9.0f} ms  "
            f"{ratio:>5.2f}x  {r['pass_unsettled_s'] / r['n'] * 1e6:>7.1f} us"
        )
    if len(rows) > 1:
        growth = (hi["pass_unsettled_s"] / hi["n"]) / (lo["pass_unsettled_s"] / lo["n"])
        print(f"time per policy at {hi['n']:,} vs {lo['n']:,}: {growth:.2f}x")
    if args.due > 0:
        levels = [int(c) for c in args.concurrency.split(",") if c]
        rot = [_child("--rotation", str(c), "--due", str(args.due), "--latency", str(args.latency)) for c in levels]
        ms = args.latency * 1000
        print(f"\nmass rotation: {args.due:,} policies due at once, {ms:.0f} ms on every issuer and store call")
        print(
            f"{'concurrency':>11}  {'pass':>8}  {'rotations/s':>11}  {'issuer calls in the pass':>24}  {'peak RSS':>9}"
        )
        for r in rot:
            print(
                f"{r['concurrency']:>11}  {r['seconds']:>6.1f} s  {r['rotations_per_s']:>11.1f}  "
                f"{r['issuer_calls']:>24}  {r['rss_mib']:>5.1f} MiB"
            )
        if len(rot) > 1:
            speedup = rot[-1]["rotations_per_s"] / rot[0]["rotations_per_s"]
            print(f"throughput at concurrency {rot[-1]['concurrency']} vs {rot[0]['concurrency']}: {speedup:.2f}x")
    print(f"# load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
