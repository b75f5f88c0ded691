"""A mass rotation inside each service's request quotas (issue 27): how close to the quota-bound minimum it gets.

For each store (GCP Secret Manager, AWS Secrets Manager, Azure Key Vault): ``--policies`` (1,000) policies, one
target each, all due at once, concurrency 16, against the project's local server for that store in its quota mode
(the GCP and Key Vault test servers, the fault proxy with AWS semantics in front of moto), which enforces the
service's documented request quotas scaled by a factor (``scale``: every window ``scale`` times shorter, the limits
as documented), so that the run takes minutes. The client side is configured with the same scaled limits (each
store's ``quotas:`` overrides: the documented limit per ``documented window / scale``), so client and server agree
on what "N per window" is.

Each store is run twice, in a fresh process each: with the client-side rate limits on (the default) and with
``rate_limits: false`` (the comparison: every worker retries its own refusals). A run is:

1. setup, with the server's quota mode off and no client limits: every policy gets its first key (not measured);
2. the clock moves 24 days (every key is due), the server's quota mode goes on, a new runtime is built (cold
   caches, as a daemon's pass weeks later has), and passes run back to back until every policy's new key is
   current in its target (a pass may defer rotations it does not expect to finish before ``pass_timeout``; the
   next one starts at once here, where a daemon would wait for its ``interval``): the measured time;
3. the server's quota mode goes off and every target is checked through a fresh store without limits: its current
   version must hold the newest key of its policy, created in this run, and no key created in the run may be held
   nowhere (failed) or held as current nowhere (half-published).

The quota-bound minimum is computed from the calls the run made, as the server counted them: for every quota and
scope (a project, a region, a vault, a secret), ``calls served x enforced window / enforced limit``; the largest
is the binding quota. The ratio is measured time / that minimum (goal <= 1.15x); throttled is the share of the
store calls the server refused (goal <= 1%).

Usage: python bench/quotas.py [--policies 1000] [--stores gcp,aws,azure] [--scale gcp=4,aws=1,azure=0.25]
       [--limits on,off] [--pass-timeout 5m] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # the local test servers live in tests/servers

#: each store's default scale factor (documented rate x scale), picked so that 1,000 rotations take 1-3 minutes:
#: GCP's 600 writes a minute per project would take ~7 minutes at the documented rate (so the rate is raised);
#: Key Vault's 300 writes per 10 s would let 1,000 rotations through in ~35 s, about as fast as the local
#: server serves them anyway, so the quota would hardly bind (so the rate is lowered); AWS's 50 writes a second
#: per region binds at the documented rate.
DEFAULT_SCALES = {"gcp": 4.0, "aws": 1.0, "azure": 0.25}
STORES = ("gcp", "aws", "azure")
#: the server-side quotas each store's client-side quotas stand for (documented values: the same on both sides)
SERVICE = {"gcp": "gcp-secretmanager", "aws": "aws-secretsmanager", "azure": "azure-keyvault"}
GOAL_RATIO = 1.15
GOAL_THROTTLED = 0.01


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Server:
    """A store's local server: the store config, what open_store is given, and its quota mode's switches."""

    store: dict[str, Any]
    injected: dict[str, Any]
    enforce: Callable[[float], Any]  # scale -> the QuotaBook
    off: Callable[[], None]


@contextmanager
def running(kind: str) -> Iterator[Server]:
    if kind == "gcp":
        from google.auth.credentials import AnonymousCredentials

        from tests.servers.gcp_secretmanager import running_secretmanager

        with running_secretmanager() as sm:
            anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
            yield Server(
                {"type": "gcp", "project": "bench-project", "transport": "rest"},
                {"credentials": anonymous, "client_options": {"api_endpoint": sm.endpoint}},
                lambda scale: sm.enforce_quotas(scale=scale),
                sm.quotas_off,
            )
    elif kind == "aws":
        from tests.servers.fault_proxy import FaultProxy
        from tests.servers.moto_server import running_moto

        with running_moto() as moto, FaultProxy(moto.url, aws_semantics=True) as proxy:
            yield Server(
                {"type": "aws", "region": "us-east-1", "endpoint_url": proxy.url},
                {},
                lambda scale: proxy.enforce_quotas(scale=scale),
                proxy.quotas_off,
            )
    elif kind == "azure":
        from tests.servers.azure_keyvault import StaticTokenCredential, running_keyvault

        with running_keyvault() as kv:
            yield Server(
                {
                    "type": "azure",
                    "vault_url": kv.url,
                    "allow_any_vault_url": True,
                    "client_options": {"verify_challenge_resource": False},
                },
                {"credential": StaticTokenCredential(kv.token), "connection_verify": kv.ca_path},
                lambda scale: kv.enforce_quotas(scale=scale),
                kv.quotas_off,
            )
    else:
        raise SystemExit(f"unknown store {kind!r} (known: {', '.join(STORES)})")


# ---- the client side's quotas -----------------------------------------------------------------------------


def declared_quotas(kind: str) -> list[Any]:
    """The request quotas the store declares (``rotator.quotas.Quota`` objects of its module), documented values."""
    import importlib

    from rotator.quotas import Quota

    module = importlib.import_module(f"rotator.stores.{kind}")
    found: dict[str, Any] = {}
    for value in vars(module).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple | list) else (value,)
        for q in items:
            if isinstance(q, Quota):
                found.setdefault(q.name, q)
    return list(found.values())


def supports_overrides(kind: str) -> bool:
    """Whether the store's config takes ``quotas:`` (the overrides field)."""
    import importlib

    model = importlib.import_module(f"rotator.stores.{kind}").StoreConfig
    return "quotas" in model.model_fields


def _rate(limit: int, window: float) -> str:
    return f"{limit}/{window:g}s" if window >= 1 else f"{limit}/{window * 1000:g}ms"


def client_overrides(kind: str, scale: float) -> dict[str, str]:
    """``quotas:`` for the store: every documented limit over its documented window divided by ``scale`` (what
    the server enforces at the same scale)."""
    return {q.name: _rate(q.limit, q.window / scale) for q in declared_quotas(kind) if q.limit is not None}


# ---- one run ------------------------------------------------------------------------------------------------


def _scratch() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="rotator-quotas-", dir=base))


def _config(
    tmp: Path, url: str, n: int, store: dict[str, Any], *, rate_limits: bool, pass_timeout: str
) -> dict[str, Any]:
    return {
        "issuer": {
            "type": "momento",
            "url": url,
            "management_key": {"file": str(tmp / "owner.key")},
            "endpoint": "cell-1-us-east-1-1.emulator.local",
        },
        "interval": "1m",
        "concurrency": 16,
        "rate_limits": rate_limits,
        "pass_timeout": pass_timeout,
        "drift_check_every": "never",
        "verify_for": "0s",
        "log_level": "error",
        "defaults": {"lifetime": "30d", "rotate_before": "7d", "grace": "1h", "orphan_after": "1h"},
        "stores": {"s": store},
        "policies": [
            {"name": f"svc-{i:05d}", "role": "operator", "targets": [{"store": "s", "secret": f"rot-{i:05d}"}]}
            for i in range(n)
        ],
    }


def quota_bound(stats: dict[str, Any]) -> tuple[float, float, str, int]:
    """(seconds, burst seconds, quota, calls): the longest any quota scope needs for the calls it served, at its
    enforced rate (calls / rate: the bound the goal is measured against), and the same with the sliding window's
    burst (a full window's worth at once: ``floor((calls - 1) / limit) x window``, which only a client that sends
    each window's calls all at its start could reach)."""
    best = (0.0, 0.0, "", 0)
    for name, q in stats["quotas"].items():
        for counts in q["by_scope"].values():
            served = counts["served"]
            seconds = served * q["window"] / q["limit"]
            if seconds > best[0]:
                burst = ((served - 1) // q["limit"]) * q["window"] if served else 0.0
                label = f"{name} {q['limit']}/{q['window']:g}s per {q['scope']}"
                best = (seconds, burst, label, served)
    return best


def limiter_summary(scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The client-side limiter per quota (its scopes summed): requests admitted, refusals reported, the seconds
    workers waited (summed over workers), and the lowest limit any scope ended at (a refusal cuts it)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for s in scopes:
        if not (s["admitted"] or s["refused"]):
            continue
        q = out.setdefault(
            (s["service"], s["quota"]),
            {
                "service": s["service"],
                "quota": s["quota"],
                "documented": s["documented"],
                "window": s["window"],
                "scopes": 0,
                "admitted": 0,
                "refused": 0,
                "waited_seconds": 0.0,
                "lowest_limit": s["limit"],
                "scopes_cut": 0,
            },
        )
        q["scopes"] += 1
        q["admitted"] += s["admitted"]
        q["refused"] += s["refused"]
        q["waited_seconds"] = round(q["waited_seconds"] + s["waited_seconds"], 3)
        if s["limit"] is not None and (q["lowest_limit"] is None or s["limit"] < q["lowest_limit"]):
            q["lowest_limit"] = s["limit"]
        q["scopes_cut"] += s["limit"] is not None and s["documented"] is not None and s["limit"] < s["documented"]
    return list(out.values())


def _done_in(report: Any) -> set[str]:
    """Policies whose new key this pass published to every target (create + publish, or a publish left over)."""
    done = set()
    for pr in report.policies:
        for r in pr.results:
            if r.ok and not r.skipped and r.action.kind in ("create", "publish"):
                done.add(pr.policy)
    return done


def verify(app: Any, since: datetime) -> dict[str, Any]:
    """At the stores (no limits, the server's quota mode off): every target's current version holds its policy's
    newest key, created in the run; a run key that no target holds as current is half-published."""
    keys = app.issuer.list_keys()
    by_policy: dict[str, list[Any]] = {}
    for k in keys:
        if k.policy is not None and k.issued_at >= since:
            by_policy.setdefault(k.policy, []).append(k)
    failed, half, extra, checked = [], [], 0, 0
    for policy in app.config.policies:
        run_keys = by_policy.get(policy.name, [])
        if not run_keys:
            failed.append(policy.name)
            continue
        current = set()
        for target in policy.targets:
            ref = app.engine.ref(policy, target)
            current.add(app.stores[target.store].inspect(ref).current_key_id)
            checked += 1
        newest = max(run_keys, key=lambda k: (k.issued_at, k.key_id))
        extra += len(run_keys) - 1
        # the newest key current in every target, and no other key created in the run (held nowhere as current)
        if current != {newest.key_id} or len(run_keys) > 1:
            half.append(policy.name)
    return {
        "targets_checked": checked,
        "failed": len(failed),
        "half_published": len(half),
        "extra_keys": extra,
        "examples": (failed + half)[:5],
    }


def run_one(kind: str, limits_on: bool, n: int, scale: float, pass_timeout: str, budget: float) -> dict[str, Any]:
    from rotator.config import from_mapping
    from rotator.issuers.emulator import Emulator
    from rotator.observability import API_CALLS, configure_logging
    from rotator.runtime.app import build

    configure_logging("error")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    tmp = _scratch()
    clock = Clock()
    out: dict[str, Any] = {"store": kind, "rate_limits": limits_on, "policies": n, "scale": scale}
    with ExitStack() as stack:
        server = stack.enter_context(running(kind))
        emu = Emulator(tmp / "emu.db", clock=lambda: clock.now.timestamp(), bootstrap_key_file=tmp / "owner.key")
        url = emu.start()
        stack.callback(emu.stop)
        options = {"s": server.injected}

        # 1. setup: every policy's first key, no quotas anywhere
        setup = from_mapping(_config(tmp, url, n, server.store, rate_limits=False, pass_timeout="10m"))
        t0 = time.perf_counter()
        with build(setup, clock=clock, store_options=options) as app:
            first = app.engine.run_pass()
            assert first.counts()["created"] == n and first.ok, first.counts()
        out["setup_seconds"] = time.perf_counter() - t0

        # 2. the measured run: every key due, the server's quotas on, a new runtime
        clock.now += timedelta(days=24)
        since = clock.now
        store = dict(server.store)
        overrides: dict[str, str] = {}
        if supports_overrides(kind):
            overrides = client_overrides(kind, scale)
            if overrides:
                store["quotas"] = overrides
        out["client_quotas"] = overrides if limits_on else {}
        out["client_overrides_supported"] = supports_overrides(kind)
        cfg = from_mapping(_config(tmp, url, n, store, rate_limits=limits_on, pass_timeout=pass_timeout))
        book = server.enforce(scale)
        passes: list[dict[str, Any]] = []
        done: set[str] = set()
        with build(cfg, clock=clock, store_options=options) as app:
            app.engine.resolve_role("operator")  # the role table, read once per process
            API_CALLS.reset()
            book.reset()
            t0 = time.perf_counter()
            took = 0.0
            while True:
                p0 = time.perf_counter()
                r = app.engine.run_pass()
                now = time.perf_counter()
                new = _done_in(r) - done
                done |= new
                c = r.counts()
                passes.append(
                    {
                        "seconds": round(now - p0, 2),
                        "rotated": len(new),
                        "failed": c["failed"],
                        "deadline_passed": r.deadline_passed,
                        # rotations the pass did not start: not expected to finish before pass_timeout
                        "held_back": sum(
                            1
                            for pr in r.policies
                            if pr.plan is not None and any("waits for the next pass" in x for x in pr.plan.notes)
                        ),
                        "deferred": n - len(done),
                    }
                )
                print(
                    f"# {kind} limits {'on' if limits_on else 'off'}: pass {len(passes)}: {passes[-1]}", file=sys.stderr
                )
                if len(done) >= n:
                    took = now - t0
                    break
                if now - t0 > budget:
                    took = now - t0
                    break
            stats = book.stats()
            calls = API_CALLS.snapshot()
            out["limiter"] = limiter_summary(app.engine.limits.stats())
        out["seconds"] = took
        out["complete"] = len(done) >= n
        out["passes"] = passes

        # 3. check every target through a fresh store, the server's quotas off
        server.off()
        plain = from_mapping(_config(tmp, url, n, server.store, rate_limits=False, pass_timeout="10m"))
        with build(plain, clock=clock, store_options=options) as app:
            out["check"] = verify(app, since)

    bound, burst, binding, binding_calls = quota_bound(stats)
    served, throttled = stats["served"], stats["throttled"]
    out.update(
        {
            "calls": served + throttled,
            "served": served,
            "throttled": throttled,
            "throttled_share": throttled / (served + throttled) if served + throttled else 0.0,
            "bound_seconds": bound,
            "burst_bound_seconds": burst,
            "binding_quota": binding,
            "binding_calls": binding_calls,
            "ratio": took / bound if bound else None,
            "issuer_calls": sum(v for (s, _, _), v in calls.items() if s == "momento"),
            "client_calls": {f"{op} {status}": v for (s, op, status), v in sorted(calls.items()) if s == SERVICE[kind]},
            "server_quotas": {
                name: {k: q[k] for k in ("limit", "window", "documented_window", "scope", "served", "throttled")}
                for name, q in stats["quotas"].items()
                if q["served"] or q["throttled"]
            },
        }
    )
    return out


# ---- the parent: one child process per run, the tables ----------------------------------------------------


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(HERE), *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/quotas.py {' '.join(args)} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _scales(text: str | None, stores: list[str]) -> dict[str, float]:
    scales = {k: DEFAULT_SCALES[k] for k in stores}
    if not text:
        return scales
    for part in text.split(","):
        name, eq, value = part.partition("=")
        if eq:
            if name.strip() not in DEFAULT_SCALES:
                raise SystemExit(f"--scale: unknown store {name!r}")
            scales[name.strip()] = float(value)
        else:
            scales = dict.fromkeys(stores, float(name))
    return scales


def _table(kind: str, rows: list[dict[str, Any]], out: Any) -> None:
    first = rows[0]
    print(
        f"\n{kind}: {first['policies']:,} policies, one target each, concurrency 16, scale {first['scale']:g}", file=out
    )
    for name, q in rows[0]["server_quotas"].items():
        print(
            f"  enforced: {name} {q['limit']}/{q['window']:g}s per {q['scope']} "
            f"(documented {q['limit']}/{q['documented_window']:g}s)",
            file=out,
        )
    on = next((r for r in rows if r["rate_limits"]), None)
    if on is not None:
        if on["client_quotas"]:
            print("  client quotas: " + ", ".join(f"{k}: {v}" for k, v in on["client_quotas"].items()), file=out)
        elif not on["client_overrides_supported"]:
            print("  client quotas: the store takes no quotas: overrides yet (its documented limits apply)", file=out)
    head = (
        f"  {'rate limits':<11}  {'calls':>7}  {'bound':>8}  {'(burst)':>8}  {'measured':>9}  {'ratio':>6}  "
        f"{'throttled':>10}  "
        f"{'failed':>6}  {'half-pub':>8}  {'passes':>6}  binding quota"
    )
    print(head, file=out)
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        flag = "" if r["complete"] else " (incomplete)"
        print(
            f"  {'on' if r['rate_limits'] else 'off':<11}  {r['calls']:>7,}  {r['bound_seconds']:>6.1f} s  "
            f"{r['burst_bound_seconds']:>6.1f} s  "
            f"{r['seconds']:>7.1f} s  {ratio:>6}  {r['throttled']:>5,} {r['throttled_share']:>4.1%}  "
            f"{r['check']['failed']:>6}  {r['check']['half_published']:>8}  {len(r['passes']):>6}  "
            f"{r['binding_quota']} x{r['binding_calls']:,}{flag}",
            file=out,
        )
    if on is not None:
        for q in on["limiter"]:
            if q["refused"] or q["scopes_cut"] or q["waited_seconds"] >= 1:
                limit = "no limit" if q["documented"] is None else f"{q['lowest_limit']}/{q['documented']} per window"
                print(
                    f"  client limiter, {q['service']} {q['quota']} ({q['scopes']:,} scopes): "
                    f"{q['admitted']:,} admitted, "
                    f"{q['refused']} refusals reported, {q['waited_seconds']:.0f} s waited (all workers), "
                    f"lowest limit {limit}",
                    file=out,
                )
        verdict = []
        verdict.append(
            f"ratio {'ok' if on['ratio'] and on['ratio'] <= GOAL_RATIO else 'ABOVE'} (goal <= {GOAL_RATIO}x)"
        )
        ok_t = on["throttled_share"] <= GOAL_THROTTLED
        verdict.append(f"throttled {'ok' if ok_t else 'ABOVE'} (goal <= {GOAL_THROTTLED:.0%})")
        bad = on["check"]["failed"] + on["check"]["half_published"]
        verdict.append(f"failed/half-published {'ok' if bad == 0 else 'NOT 0'} (goal 0)")
        print("  limits on: " + "; ".join(verdict), file=out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--stores", default=",".join(STORES), help="a comma-separated subset of gcp,aws,azure")
    ap.add_argument(
        "--scale",
        help="the documented rates' multiplier: one number for every store, or per store "
        f"(default {','.join(f'{k}={v:g}' for k, v in DEFAULT_SCALES.items())})",
    )
    ap.add_argument("--limits", default="on,off", help="on, off or on,off (rate_limits true / false)")
    ap.add_argument("--pass-timeout", default="5m", help="the config's pass_timeout")
    ap.add_argument("--budget", type=float, default=300.0, help="stop starting passes after this many seconds of a run")
    ap.add_argument("--json", action="store_true", help="print the results as JSON (the tables go to stderr)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        kind, _, mode = args.one.partition(":")
        scale = float(args.scale) if args.scale else DEFAULT_SCALES[kind]
        print(json.dumps(run_one(kind, mode == "on", args.policies, scale, args.pass_timeout, args.budget)))
        return

    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for s in stores:
        if s not in STORES:
            raise SystemExit(f"--stores: unknown store {s!r} (known: {', '.join(STORES)})")
    modes = [m.strip() for m in args.limits.split(",") if m.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        raise SystemExit("--limits: on, off or on,off")
    scales = _scales(args.scale, stores)
    out = sys.stderr if args.json else sys.stdout
    print(f"# load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", file=out)
    print(
        "# scale factors (documented rate x scale; every window divided by it): "
        + ", ".join(f"{k} {v:g}" for k, v in scales.items()),
        file=out,
    )
    print(
        "# GCP is run above its documented rate (600 writes/min per project would take ~7 min for 1,000 rotations), "
        "Key Vault below it (at 300 writes/10 s the local server's own speed, not the quota, would bind)",
        file=out,
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for kind in stores:
        rows = []
        for mode in modes:
            t0 = time.perf_counter()
            rows.append(
                _child(
                    "--one",
                    f"{kind}:{mode}",
                    "--policies",
                    str(args.policies),
                    "--scale",
                    str(scales[kind]),
                    "--pass-timeout",
                    args.pass_timeout,
                    "--budget",
                    str(args.budget),
                )
            )
            print(f"# {kind}, rate limits {mode}: done in {time.perf_counter() - t0:.0f} s (setup included)", file=out)
        results[kind] = rows
        _table(kind, rows, out)
    print(f"\n# load average at end: {os.getloadavg()[0]:.2f}", file=out)
    if args.json:
        print(json.dumps({"scales": scales, "stores": results}, indent=2))


if __name__ == "__main__":
    main()
