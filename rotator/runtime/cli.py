"""The ``rotator`` command.

Exit codes: 0 ok; 1 a rotation (or a service) failed; 2 bad config or bad input, and nothing was changed.
Logs go to stderr (JSON lines when stderr is not a terminal); results go to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rotator import __version__
from rotator.config import Config, format_duration, load
from rotator.engine import Clock, PassReport, system_clock
from rotator.errors import ConfigError, IssuerAuthError, IssuerPermissionError, MissingExtraError, RotatorError
from rotator.observability import configure_logging

DEFAULT_CONFIGS = ("rotator.yaml", "config/local.yaml")


def _config_path(arg: str | None) -> str:
    if arg:
        return arg
    env = os.environ.get("ROTATOR_CONFIG")
    if env:
        return env
    for p in DEFAULT_CONFIGS:
        if Path(p).exists():
            return p
    return DEFAULT_CONFIGS[0]


def _parser() -> argparse.ArgumentParser:
    # the common options are accepted before or after the command; SUPPRESS keeps a subcommand's absent
    # option from overwriting one given before it
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "-c", "--config", help="config file (default: $ROTATOR_CONFIG, rotator.yaml, config/local.yaml)"
    )
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override log_level")
    common.add_argument(
        "--now", help="act as if it were this time (2026-12-01T00:00:00Z or +7d): for what-if and tests"
    )
    select = argparse.ArgumentParser(add_help=False)
    select.add_argument(
        "-p",
        "--policy",
        action="append",
        metavar="NAME",
        help="only these policies (repeatable), e.g. to split a fleet between jobs",
    )

    parser = argparse.ArgumentParser(
        prog="rotator", description="Rotates Momento API keys before they expire.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common, select], help="run as a daemon: a pass every interval, and at due times")
    sub.add_parser("once", parents=[common, select], help="run one pass and exit (CronJob, cron)")
    p = sub.add_parser("plan", parents=[common, select], help="show what a pass would do, changing nothing")
    p.add_argument("--all", action="store_true", help="read every target, not only those with work to do")
    p.add_argument("--json", action="store_true", help="JSON lines, even on a terminal")
    s = sub.add_parser("status", parents=[common, select], help="show each policy's key, expiry, phase and targets")
    s.add_argument("--json", action="store_true", help="one JSON document")
    s.add_argument(
        "--html", metavar="FILE", help="write the status page (HTML, as `http.status_page` serves it) to FILE"
    )
    r = sub.add_parser("rotate", parents=[common], help="rotate a policy now (--emergency for a leaked key)")
    r.add_argument("name", metavar="POLICY")
    r.add_argument(
        "--emergency",
        action="store_true",
        help="a leaked key: publish a new key and revoke the old one as soon as every target holds "
        "the new one, ignoring grace and pickup",
    )
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a = sub.add_parser("audit", parents=[common], help="classify every key in the Momento account, touching nothing")
    a.add_argument("--json", action="store_true", help="one JSON document")
    a.add_argument("--window", default="7d", help="flag unmanaged keys expiring within this (default 7d)")
    sub.add_parser("validate", parents=[common], help="check a config file, touching nothing")
    sub.add_parser("emulator", help="serve the local Momento key API emulator (rotator emulator --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:  # the emulator parses its own options (see `rotator emulator --help`)
        from rotator.issuers.emulator import main as emulator_main

        return emulator_main(argv[1:])
    args = _parser().parse_args(argv)
    for name in ("config", "log_level", "now", "policy"):
        if not hasattr(args, name):
            setattr(args, name, None)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return 2
    except MissingExtraError as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return 2
    except (IssuerAuthError, IssuerPermissionError) as exc:
        print(f"rotator: the management key was refused: {exc}", file=sys.stderr)
        return 2
    except RotatorError as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    config = load(path)
    configure_logging(args.log_level or config.log_level)
    if args.command == "validate":
        return _validate(config, path)
    clock: Clock = system_clock
    if args.now:
        from rotator.runtime.app import parse_now

        clock = parse_now(args.now)
    if args.policy:
        unknown = [n for n in args.policy if n not in config.names()]
        if unknown:
            raise ConfigError(f"--policy: no policy named {', '.join(unknown)}; known: {', '.join(config.names())}")
    if args.command == "run":
        from rotator.runtime.daemon import run_daemon

        try:
            return run_daemon(config, clock=clock, only=args.policy)
        except (IssuerAuthError, IssuerPermissionError) as exc:
            print(f"rotator: the management key was refused: {exc}{_key_remedy(config)}", file=sys.stderr)
            return 2
    if args.command == "rotate":
        config.policy(args.name)  # exit 2 for an unknown policy, before anything is opened
        if not _confirm(args):
            print("rotator: not confirmed; nothing was changed", file=sys.stderr)
            return 2

    from rotator.runtime.app import build

    with build(config, clock=clock) as app:
        if args.command == "rotate":
            return _rotate(app, args.name, emergency=args.emergency, clock=clock)
        if args.command == "audit":
            return _audit(app, clock(), window=args.window, as_json=args.json or not sys.stdout.isatty())
        if args.command == "once":
            return _once(app, args.policy, clock)
        if args.command == "plan":
            tty = sys.stdout.isatty() and not args.json
            report = app.engine.run_pass(
                dry_run=True, only=args.policy, read_targets=args.all, progress=ProgressBar() if tty else None
            )
            _print_plan(report, config, clock(), as_json=not tty)
            return 0 if report.error is None else 1
        if args.command == "status":
            report = app.engine.run_pass(dry_run=True, only=args.policy, read_targets=True)
            if args.html:
                from rotator.status_page import render

                Path(args.html).write_text(render(report, config, clock()), encoding="utf-8")
                print(f"rotator: wrote the status page to {args.html}", file=sys.stderr)
                return 0 if report.error is None else 1
            _print_status(report, config, clock(), as_json=args.json or not sys.stdout.isatty())
            return 0 if report.error is None else 1
    raise AssertionError(args.command)


class ProgressBar:
    """A one-line progress bar on stderr, for people at a terminal."""

    def __init__(self, out: TextIO | None = None, width: int = 30) -> None:
        self.out = out or sys.stderr
        self.width = width
        self.enabled = self.out.isatty()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        filled = int(self.width * done / total)
        label = "planning" if stage == "plan" else "rotating"
        end = "\n" if done == total else ""
        self.out.write(f"\r{label:9} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} policies{end}")
        self.out.flush()


def _key_remedy(config: Config | None) -> str:
    """Where the refused management key came from, and what to put there."""
    if config is None or config.issuer.management_key is None:
        return ""
    source = config.issuer.management_key
    text = f"\n  the key was read from {source.describe()}: put a valid API key with the Owner role there"
    if source.store:
        text += (
            f"; or set issuer.management_key.bootstrap_env to an env var holding one, clear {source.secret}'s "
            "current version, and a policy with self: true writes a fresh key on the next pass"
        )
    return text


def _confirm(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("rotator: not on a terminal: pass --yes to confirm", file=sys.stderr)
        return False
    if args.emergency:
        print(
            f"EMERGENCY rotation of {args.name}: a new key is published and the current key is revoked as soon "
            "as every target holds the new one, without waiting for grace or consumers.",
            file=sys.stderr,
        )
        answer = _ask(f"Type the policy name ({args.name}) to confirm: ")
        return bool(answer.strip() == args.name)
    answer = _ask(f"Rotate {args.name} now (normal grace and pickup apply)? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _ask(prompt: str) -> str:
    """A question on stderr (stdout carries the JSON result), the answer from stdin."""
    print(prompt, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline()


def _rotate(app: Any, name: str, *, emergency: bool, clock: Clock) -> int:
    engine = app.engine
    before = engine.run_pass(dry_run=True, only=[name], read_targets=True)
    pr = before.policies[0]
    leaked = pr.plan.current_key if pr.plan and emergency else None
    held_by = sorted(t for t, s in (pr.targets or {}).items() if s is not None and leaked and s.holds(leaked))
    first = engine.run_pass(only=[name], force=[name], emergency=[name] if emergency else [])
    reports = [first]
    if emergency and first.ok:
        # the new key is in every target now: the planner revokes the old one without grace or pickup
        reports.append(engine.run_pass(only=[name], emergency=[name]))
    result: dict[str, Any] = {
        "policy": name,
        "emergency": emergency,
        "ok": all(r.ok for r in reports),
        "passes": [r.to_json() for r in reports],
    }
    if emergency:
        after = engine.run_pass(dry_run=True, only=[name], read_targets=True).policies[0]
        new_key = after.plan.current_key if after.plan else None
        lagging: list[str] = []
        if engine.pickup is not None and new_key and after.targets:
            states = {t: s for t, s in after.targets.items() if s is not None}
            for v in engine.pickup(app.config.policy(name), new_key, states):
                lagging.extend(f"{v.check}: {c}" for c in v.lagging)
        revoked = leaked is not None and leaked not in {k.key_id for k in after.keys}
        result.update(
            {
                "leaked_key": leaked,
                "targets_that_held_it": held_by,
                "new_key": new_key,
                "leaked_key_revoked": revoked,
                "consumers_not_on_new_key": lagging,
            }
        )
        out = sys.stderr
        print(f"leaked key: {leaked or '-'} ({'revoked' if revoked else 'NOT revoked yet'})", file=out)
        print(f"targets that held it: {', '.join(held_by) or '-'}", file=out)
        print(f"new key: {new_key or '-'}", file=out)
        if lagging:
            print("consumers that still used the leaked key when it was revoked:", file=out)
            for c in lagging:
                print(f"  {c}", file=out)
    print(json.dumps(result, default=str), flush=True)
    return 0 if result["ok"] else 1


def _audit(app: Any, now: datetime, *, window: str, as_json: bool) -> int:
    from rotator.audit import classify
    from rotator.config import parse_duration

    try:
        win = parse_duration(window)
    except ValueError as exc:
        raise ConfigError(f"--window: {exc}") from None
    keys = app.issuer.list_keys()
    roles = {r.role_id: r.role_name for r in app.issuer.list_roles()}
    held: dict[str, Any] = {}
    marked = {k.policy for k in keys if k.policy}
    for policy in app.config.policies:
        if policy.name in marked:
            obs = app.engine.observe_targets(policy, app.stores)
            held[policy.name] = {tid: o.state for tid, o in obs.items()}
    rows = classify(app.config, keys, roles, held, now, win)
    if as_json:
        print(json.dumps({"now": now.isoformat(), "keys": [r.to_json() for r in rows]}))
        return 0
    table = [["KEY ID", "ROLE", "ISSUED", "EXPIRES IN", "CLASS", "POLICY", "FLAGS"]]
    for r in rows:
        exp = "never" if r.key.expires_at is None else human_delta(r.key.expires_at - now)
        table.append(
            [
                r.key.key_id,
                r.role,
                r.key.issued_at.strftime("%Y-%m-%d %H:%M"),
                exp,
                r.cls,
                r.policy or "-",
                ", ".join(r.flags) or "-",
            ]
        )
    _table(table, sys.stdout)
    counts = {c: sum(1 for r in rows if r.cls == c) for c in ("managed", "orphaned", "unmanaged")}
    print(f"{len(rows)} keys: " + ", ".join(f"{n} {c}" for c, n in counts.items()))
    return 0


def _once(app: Any, only: list[str] | None, clock: Clock) -> int:
    from rotator.metrics import Metrics
    from rotator.notify import AlertHub

    tty = sys.stdout.isatty()
    metrics = Metrics(app.config)
    # in a container `once` is PID 1, which ignores SIGTERM without a handler: finish the action in flight,
    # skip the rest (the next run picks it up) and exit 143
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = app.engine.run_pass(only=only, progress=ProgressBar() if tty else None, stop=stop)
        metrics.observe(report)
        AlertHub(app.config.alerts, clock=clock).handle(report)
        if app.config.metrics.pushgateway:
            try:
                metrics.push(app.config.metrics.pushgateway, app.config.metrics.job)
            except OSError as exc:
                print(f"rotator: could not push metrics to {app.config.metrics.pushgateway}: {exc}", file=sys.stderr)
    finally:
        metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if tty:
        _print_plan(report, app.config, clock(), as_json=False, results=True)
    print(json.dumps({"summary": report.to_json()}, default=str), flush=True)
    if report.issuer_auth_error:
        print(f"rotator: the management key was refused: {report.error}{_key_remedy(app.config)}", file=sys.stderr)
        return 2
    if stop.is_set():
        print("rotator: stopped by a signal; the next pass finishes the rest", file=sys.stderr)
        return 143
    return int(report.exit_code)


def _validate(config: Config, path: str) -> int:
    from rotator.stores.base import require_extra

    warnings = []
    for spec in config.stores.values():
        try:
            require_extra(spec.type)
        except MissingExtraError as exc:
            warnings.append(str(exc))
    targets = sum(len(p.targets) for p in config.policies)
    print(f"{path}: OK: {len(config.policies)} policies, {len(config.stores)} stores, {targets} targets")
    for w in warnings:
        print(f"  warning: {w}")

    return 0


# ---- output ---------------------------------------------------------------------------------------------


def human_delta(delta: timedelta) -> str:
    if delta.total_seconds() < 0:
        return f"{format_duration(-delta)} ago"
    return format_duration(timedelta(seconds=int(delta.total_seconds())))


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _describe(a: dict[str, Any]) -> str:
    kind = a["action"]
    if kind == "create":
        return f"create key {a['new_key_id']} ({a['reason']})" if a.get("new_key_id") else f"create key ({a['reason']})"
    if kind == "publish":
        return f"publish {a['key_id']} to {a['target']}"
    if kind == "retire":
        return f"retire {a['key_id']} in {a['target']}"
    return f"revoke {a['key_id']} ({a['reason']})"


def _print_plan(
    report: PassReport,
    config: Config,
    now: datetime,
    *,
    as_json: bool,
    out: TextIO | None = None,
    results: bool = False,
) -> None:
    out = out or sys.stdout
    if as_json:
        for p in report.policies:
            print(json.dumps(p.to_json(), default=str), file=out)
        if report.error:
            print(json.dumps({"error": report.error}), file=out)
        return
    if report.error:
        print(f"issuer unavailable: {report.error}", file=out)
    rows = [["POLICY", "PHASE", "CURRENT KEY", "NEXT", "DID" if results else "WOULD DO"]]
    for p in report.policies:
        j = p.to_json()
        nxt = human_delta(p.plan.wake_at - now) if p.plan and p.plan.wake_at else "-"
        if results:
            actions = [
                ("ok: " if r["ok"] else "FAILED: ") + _describe(r) + (f" -> {r['error']}" if r.get("error") else "")
                for r in j["results"]
            ] or ["nothing"]
        else:
            actions = [_describe(a) for a in j["planned"]] or ["nothing"]
        if p.error:
            actions = [f"FAILED: {p.error}"]
        rows.append([p.policy, j["phase"], j["current_key"] or "-", nxt, actions[0]])
        rows.extend(["", "", "", "", a] for a in actions[1:])
        rows.extend(["", "", "", "", f"note: {n.lstrip('! ')}"] for n in j["notes"])
    _table(rows, out)


def _print_status(
    report: PassReport, config: Config, now: datetime, *, as_json: bool, out: TextIO = sys.stdout
) -> None:
    entries: list[dict[str, Any]] = []
    for p in report.policies:
        policy = config.policy(p.policy)
        current = p.plan.current_key if p.plan else None
        key = next((k for k in p.keys if k.key_id == current), None)
        in_sync = 0
        targets: dict[str, Any] = {}
        for t in policy.targets:
            state = (p.targets or {}).get(t.id)
            err = p.target_errors.get(t.id)
            held = state.current_key_id if state else None
            in_sync += int(held is not None and held == current)
            targets[t.id] = {"current_key": held, "since": state.current_since if state else None, "error": err}
        entries.append(
            {
                "policy": p.policy,
                "key_id": current,
                "role": policy.role,
                "issued_at": key.issued_at if key else None,
                "expires_at": key.expires_at if key else None,
                "expires_in_s": int((key.expires_at - now).total_seconds()) if key and key.expires_at else None,
                "phase": p.plan.phase if p.plan else "error",
                "keys_at_issuer": len(p.keys),
                "targets_in_sync": in_sync,
                "targets_total": len(policy.targets),
                "targets": targets,
                "notes": list(p.plan.notes) if p.plan else [],
                "error": p.error,
            }
        )
    if as_json:
        print(
            json.dumps(
                {"now": now, "issuer_ok": report.issuer_ok, "error": report.error, "policies": entries}, default=str
            ),
            file=out,
        )
        return
    if report.error:
        print(f"issuer unavailable: {report.error}", file=out)
    rows = [["POLICY", "KEY ID", "ROLE", "ISSUED", "EXPIRES IN", "PHASE", "TARGETS IN SYNC"]]
    for e in entries:
        issued = e["issued_at"].strftime("%Y-%m-%d %H:%M") if e["issued_at"] else "-"
        exp = (
            "never"
            if e["key_id"] and e["expires_at"] is None
            else (human_delta(e["expires_at"] - now) if e["expires_at"] else "-")
        )
        rows.append(
            [
                e["policy"],
                e["key_id"] or "-",
                e["role"],
                issued,
                exp,
                e["phase"],
                f"{e['targets_in_sync']}/{e['targets_total']}",
            ]
        )
    _table(rows, out)
    for e in entries:
        for n in e["notes"]:
            print(f"  {e['policy']}: {n.lstrip('! ')}", file=out)
        if e["error"]:
            print(f"  {e['policy']}: error: {e['error']}", file=out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
