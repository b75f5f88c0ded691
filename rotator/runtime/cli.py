"""The ``rotator`` command.

Exit codes (:class:`ExitCode`, decided in one place, :func:`exit_code`; the README has the same table):
0 ok; 1 a service or an action failed; 2 bad config or bad input, or a refused management key, and nothing
was changed; 70 an internal error (a bug: a short id on stderr, the traceback only at ``--log-level debug``);
143 stopped by a signal. Logs go to stderr (JSON lines when stderr is not a terminal); results go to stdout.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import json
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO

from rotator import __version__
from rotator.config import Config, format_duration, load, redact_secrets
from rotator.engine import Clock, PassReport, system_clock
from rotator.errors import ConfigError, IssuerAuthError, IssuerPermissionError, MissingExtraError, RotatorError
from rotator.observability import configure_logging, get_logger, redact_text
from rotator.report import reload_json

DEFAULT_CONFIGS = ("rotator.yaml", "config/local.yaml")
#: the commands that can change the issuer or a store: they get their engine after the preflight
MUTATING_COMMANDS = frozenset({"run", "once", "rotate"})
#: the commands whose engine comes from build(preflight=...): the mutating ones, plus `plan` (it shows what a
#: pass would do, and a pass would stop at the preflight) and `validate --online`
PREFLIGHT_COMMANDS = MUTATING_COMMANDS | {"plan", "validate"}
#: the commands that take --shard / $ROTATOR_SHARD (see rotator.shard)
SHARDED_COMMANDS = frozenset({"run", "once", "plan", "status"})


class ExitCode(enum.IntEnum):
    """What ``rotator``'s exit status means (the README's table)."""

    OK = 0
    #: a service (the issuer, a store, a consumer check) or an action failed; the next pass retries
    FAILED = 1
    #: bad config or bad input (usage, --now, --policy...), or the management key was refused: nothing changed
    BAD_INPUT = 2
    #: a bug in rotator: ``rotator: internal error: ...`` with a short id
    INTERNAL = 70
    #: stopped by SIGTERM or SIGINT before the work was done (the next pass finishes it)
    STOPPED = 143


class UsageError(RotatorError):
    """A command line argparse rejected; the message says what to write instead."""


def exit_code(
    outcome: BaseException | PassReport | None = None, *, stopped: bool = False, unserved: Sequence[str] = ()
) -> ExitCode:
    """The exit status for how a command ended: an exception, or the report of its pass (None: success).

    ``stopped``: a signal cut the pass short. ``unserved``: policies whose targets hold no live key after
    the pass (never reported as ok)."""
    if isinstance(outcome, BaseException):
        if isinstance(outcome, ConfigError | UsageError | MissingExtraError | IssuerAuthError | IssuerPermissionError):
            return ExitCode.BAD_INPUT
        if isinstance(outcome, KeyboardInterrupt):
            return ExitCode.STOPPED
        if isinstance(outcome, RotatorError):
            return ExitCode.FAILED
        return ExitCode.INTERNAL
    if isinstance(outcome, PassReport):
        if outcome.issuer_auth_error:
            return ExitCode.BAD_INPUT
        if stopped:
            return ExitCode.STOPPED
        if not outcome.ok or unserved:
            return ExitCode.FAILED
    return ExitCode.OK


def _say(text: str) -> None:
    """A message on stderr, with any key-shaped value described rather than shown (the last line of defence)."""
    print(redact_text(redact_secrets(f"rotator: {text}")), file=sys.stderr, flush=True)


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


def _parser() -> _Parser:
    # the common options are accepted before or after the command; SUPPRESS keeps a subcommand's absent
    # option from overwriting one given before it
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "-c", "--config", help="config file (default: $ROTATOR_CONFIG, rotator.yaml, config/local.yaml)"
    )
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override log_level")
    common.add_argument(
        "--now", help="act as if it were this time (2026-12-01T00:00:00Z or +7d): for what-if and tests"
    )
    select = _Parser(add_help=False)
    select.add_argument(
        "-p",
        "--policy",
        action="append",
        metavar="NAME",
        help="only these policies (repeatable), e.g. to split a fleet between jobs",
    )
    select.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="only the policies whose name hashes to shard INDEX of COUNT (default: $ROTATOR_SHARD, or "
        "$JOB_COMPLETION_INDEX of $ROTATOR_SHARD_COUNT)",
    )

    parser = _Parser(prog="rotator", description="Rotates Momento API keys before they expire.", parents=[common])
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
    v = sub.add_parser("validate", parents=[common], help="check a config file, touching nothing")
    v.add_argument(
        "--online",
        action="store_true",
        help="also run the preflight a pass runs (roles at the issuer, stores writable), changing nothing",
    )
    sch = sub.add_parser("schema", help="print the config's JSON Schema (config/rotator.schema.json)")
    sch.add_argument("--with-plugins", action="store_true", help="add the installed plug-ins' store types")
    comp = sub.add_parser("completion", parents=[common], help="print the shell completion script: bash, zsh or fish")
    comp.add_argument("shell", nargs="?", choices=["bash", "zsh", "fish"], help="the shell")
    comp.add_argument("--policy-names", action="store_true", help=argparse.SUPPRESS)  # what the scripts call
    sub.add_parser("emulator", help="serve the local Momento key API emulator (rotator emulator --help)")
    parser.commands = dict(sub.choices)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error raises :class:`UsageError` with the closest valid spelling."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.7)
            if close:
                message += f"; did you mean {close[0]}?"
        raise UsageError(f"{message}\n  see: {self.prog} --help")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings]  # argparse has no public API for this


def _unknown_arguments(parser: _Parser, command: str | None, extras: list[str]) -> UsageError:
    sub = parser.commands.get(command or "", parser)
    valid = sorted(set(_options(sub)) | set(_options(parser)))
    problems = []
    for extra in extras:
        if extra.startswith("-"):
            name = extra.split("=", 1)[0]
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else f"; valid options: {', '.join(valid)}"
            problems.append(f"unknown option {name} for {sub.prog}{hint}")
        else:
            problems.append(f"unexpected argument {extra!r} for {sub.prog}")
    return UsageError("; ".join(problems) + f"\n  see: {sub.prog} --help")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit status (see :class:`ExitCode`). Never raises, never prints a traceback
    for bad input: an unexpected exception is ``rotator: internal error`` with a short id (exit 70)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    state: dict[str, Any] = {}
    # every line a command prints (summaries, plans, tables) passes the one redactor the logs use
    out = sys.stdout
    if not isinstance(out, RedactingStream):
        sys.stdout = RedactingStream(out)
    try:
        return _main(argv, state)
    finally:
        if isinstance(sys.stdout, RedactingStream) and sys.stdout.inner is out:
            sys.stdout.flush()
            sys.stdout = out


class RedactingStream:
    """A text stream that writes through :func:`rotator.observability.redact_text` (each write whole)."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(redact_text(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _main(argv: list[str], state: dict[str, Any]) -> int:
    try:
        if argv[:1] == ["emulator"]:  # the emulator parses its own options (see `rotator emulator --help`)
            from rotator.issuers.emulator import main as emulator_main

            return emulator_main(argv[1:])
        parser = _parser()
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise _unknown_arguments(parser, getattr(args, "command", None), extras)
        for name in ("config", "log_level", "now", "policy"):
            if not hasattr(args, name):
                setattr(args, name, None)
        state["log_level"] = args.log_level
        if args.command in ("schema", "completion"):  # no config to load
            return _offline(parser, args)
        return _dispatch(args, state)
    except SystemExit as exc:  # --help, --version; an emulator option error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else int(ExitCode.BAD_INPUT))
    except BaseException as exc:  # the final guard: every way out has an exit code
        return _report_failure(exc, state)


def _offline(parser: _Parser, args: argparse.Namespace) -> int:
    """``rotator schema`` and ``rotator completion``: printed from the code, not from a config."""
    if args.command == "schema":
        from rotator.schema import render

        sys.stdout.write(render(plugins=args.with_plugins))
        return 0
    from rotator.runtime import completion

    if args.policy_names:
        for name in completion.policy_names(_config_path(args.config)):
            print(name)
        return 0
    if args.shell is None:
        raise UsageError("name the shell: rotator completion bash, zsh or fish\n  see: rotator completion --help")
    sys.stdout.write(completion.script(parser, args.shell))
    return 0


def _report_failure(exc: BaseException, state: dict[str, Any]) -> int:
    code = exit_code(exc)
    if isinstance(exc, UsageError):
        _say(f"usage error: {exc}")
    elif isinstance(exc, IssuerAuthError | IssuerPermissionError):
        _say(f"the management key was refused: {exc}{_key_remedy(state.get('config'))}")
    elif code == ExitCode.STOPPED:
        _say("stopped by a signal; the next pass finishes the rest")
    elif code == ExitCode.INTERNAL:
        error_id = uuid.uuid4().hex[:8]
        # the exception's text may quote input: only its type goes to stderr, the traceback only to a debug log
        _say(
            f"internal error: {type(exc).__name__} (id {error_id}); nothing more is shown: rerun with "
            "--log-level debug for the traceback, and report it with that id"
        )
        if state.get("log_level") == "debug":
            get_logger().debug("internal error", error_id=error_id, exc_info=exc)
    else:
        _say(str(exc))
    return int(code)


def _dispatch(args: argparse.Namespace, state: dict[str, Any]) -> int:
    path = _config_path(args.config)
    config = load(path)
    state["config"] = config
    state["log_level"] = args.log_level or config.log_level
    configure_logging(args.log_level or config.log_level)
    clock: Clock = system_clock
    if args.now is not None:
        from rotator.runtime.app import parse_now

        clock = parse_now(args.now)
    if args.policy:
        unknown = [n for n in args.policy if n not in config.names()]
        if unknown:
            raise ConfigError(f"--policy: no policy named {', '.join(unknown)}; known: {', '.join(config.names())}")
    if args.command in SHARDED_COMMANDS:
        from rotator import shard as sharding

        shard = state["shard"] = sharding.from_environment(getattr(args, "shard", None), os.environ)
        if shard is not None:  # a shard is the names it holds (of --policy's, if given): the engine's `only`
            args.policy = shard.select(args.policy or config.names())
    if args.command == "audit":
        from rotator.config import parse_duration

        try:
            parse_duration(args.window)
        except ValueError as exc:
            raise ConfigError(f"--window: {exc}") from None
    if args.command == "validate" and not args.online:
        return _validate(config, path)
    if args.command == "run":
        from rotator.runtime.daemon import run_daemon

        return run_daemon(config, clock=clock, only=args.policy)
    if args.command == "rotate":
        config.policy(args.name)  # exit 2 for an unknown policy, before anything is opened
        if not _confirm(args):
            _say("not confirmed; nothing was changed")
            return int(ExitCode.BAD_INPUT)

    from rotator.runtime.app import build

    # the one place a mutating command's engine comes from: build() arms the preflight, which runs before the
    # pass's first action (a steady pass makes only its listing); validate --online runs it at once
    preflight: bool | Literal["now"] = "now" if args.command == "validate" else args.command in PREFLIGHT_COMMANDS
    with build(config, clock=clock, preflight=preflight) as app:
        if args.command == "validate":
            app.issuer.list_keys()  # the management key may list keys (IssuerAuthError: exit 2, the remedy)
            code = _validate(config, path)
            print("  online: the issuer accepts the management key, every role resolves, every file store is writable")
            return code
        if args.command == "rotate":
            return _rotate(app, args.name, emergency=args.emergency, clock=clock)
        if args.command == "audit":
            return _audit(app, clock(), window=args.window, as_json=args.json or not sys.stdout.isatty())
        if args.command == "once":
            return _once(app, args.policy, clock, shard=state.get("shard"))
        if args.command == "plan":
            tty = sys.stdout.isatty() and not args.json
            report = app.engine.run_pass(
                dry_run=True,
                only=args.policy,
                read_targets=args.all,
                progress=ProgressBar(stages=("plan",)) if tty else None,
            )
            _print_plan(report, config, clock(), as_json=not tty)
            return _pass_outcome(report, config)
        if args.command == "status":
            report = app.engine.run_pass(dry_run=True, only=args.policy, read_targets=True)
            if args.html:
                from rotator.status_page import render

                Path(args.html).write_text(render(report, config, clock()), encoding="utf-8")
                print(f"rotator: wrote the status page to {args.html}", file=sys.stderr)
                return 0 if report.error is None else 1
            _print_status(report, config, clock(), as_json=args.json or not sys.stdout.isatty())
            return _pass_outcome(report, config)
    raise AssertionError(args.command)


def _pass_outcome(report: PassReport, config: Config, *, stopped: bool = False, unserved: Sequence[str] = ()) -> int:
    """The exit status of a command that ran a pass, with the remedy on stderr for a refused key."""
    code = exit_code(report, stopped=stopped, unserved=unserved)
    if report.issuer_auth_error:
        _say(f"the management key was refused: {report.error}{_key_remedy(config)}")
    elif stopped:
        _say("stopped by a signal; the next pass finishes the rest")
    elif unserved:
        _say(f"no target holds a live key for: {', '.join(unserved)}; see the errors above")
    return int(code)


class ProgressBar:
    """A one-line progress bar on stderr, for people at a terminal: one bar per stage of the pass (``plan``:
    policies planned; ``act``: policies carried out), side by side, since a pass acts on the first policies
    while it still reads the next ones. The line ends when every one of ``stages`` is complete."""

    LABELS = {"plan": "planned", "act": "rotated"}

    def __init__(self, out: TextIO | None = None, width: int = 20, stages: tuple[str, ...] = ("plan", "act")) -> None:
        self.out = out or sys.stderr
        self.width = width
        self.stages = stages
        self.enabled = self.out.isatty()
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        with self._lock:
            self._seen[stage] = max(self._seen.get(stage, (0, total)), (done, total))
            bars = []
            for s in self.stages:
                d, t = self._seen.get(s, (0, total))
                filled = int(self.width * d / t) if t else self.width
                bars.append(f"{self.LABELS.get(s, s)} [{'#' * filled}{'.' * (self.width - filled)}] {d}/{t}")
            complete = all(s in self._seen and self._seen[s][0] >= self._seen[s][1] for s in self.stages)
            self.out.write("\r" + "  ".join(bars) + (" policies\n" if complete else " policies"))
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
    refused = next((r for r in [before, *reports] if r.issuer_auth_error), None)
    if refused is not None:
        return _pass_outcome(refused, app.config)
    return int(ExitCode.OK if result["ok"] else ExitCode.FAILED)


def _audit(app: Any, now: datetime, *, window: str, as_json: bool) -> int:
    from rotator.audit import CLASSES, classify
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
    counts = {c: sum(1 for r in rows if r.cls == c) for c in CLASSES}
    print(f"{len(rows)} keys: " + ", ".join(f"{n} {c}" for c, n in counts.items()))
    return 0


def _once(app: Any, only: list[str] | None, clock: Clock, *, shard: Any = None) -> int:
    from rotator.metrics import Metrics
    from rotator.notify import AlertHub

    tty = sys.stdout.isatty()
    metrics = Metrics(app.config)
    metrics.watch(app.engine.limits)
    # in a container `once` is PID 1, which ignores SIGTERM without a handler: finish the action in flight,
    # skip the rest (the next run picks it up) and exit 143
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = app.engine.run_pass(
            only=only,
            progress=ProgressBar() if tty else None,
            stop=stop,
            pre_create_delay=app.config.jitter.total_seconds(),
        )
        unserved = report.unserved
        metrics.observe(report)
        AlertHub(app.config.alerts, clock=clock).handle(report)
        if app.config.metrics.pushgateway:
            try:
                # one group per shard: a push replaces its group's metrics, so shards must not share one
                grouping = {"shard": str(shard.index)} if shard is not None else None
                metrics.push(app.config.metrics.pushgateway, app.config.metrics.job, grouping)
            except OSError as exc:
                print(f"rotator: could not push metrics to {app.config.metrics.pushgateway}: {exc}", file=sys.stderr)
    finally:
        metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if tty:
        _print_plan(report, app.config, clock(), as_json=False, results=True)
    print(json.dumps({"summary": report.to_json()}, default=str), flush=True)
    return _pass_outcome(report, app.config, stopped=stop.is_set(), unserved=unserved)


def _validate(config: Config, path: str) -> int:
    from rotator.stores.registry import require_extra

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
    if kind == "reload":
        return f"reload {a['target']}/{a['unit']} for {a['key_id']} ({a['reason']})"
    return f"revoke {a['key_id']} ({a['reason']})"


def _reload_line(r: dict[str, Any], now: datetime) -> str:
    """One reload unit for ``plan`` and ``status``: ``kubernetes:ns/Deployment/app: rolling since 3m ago``."""
    since = ""
    if r.get("since"):
        since = f" since {human_delta(datetime.fromisoformat(r['since']) - now)}"
    detail = f" ({r['detail']})" if r.get("detail") else ""
    return f"reload {r['target']}/{r['unit']}: {r['state']}{since}{detail}"


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
        rows.extend(["", "", "", "", _reload_line(r, now)] for r in j.get("reloads", ()))
        rows.extend(["", "", "", "", f"note: {n.lstrip('! ')}"] for n in j["notes"])
    _table(rows, out)


def _print_status(
    report: PassReport, config: Config, now: datetime, *, as_json: bool, out: TextIO | None = None
) -> None:
    out = out or sys.stdout  # looked up at call time: stdout may have been replaced since import
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
                "window_opens": p.plan.window_opens.isoformat() if p.plan and p.plan.window_opens else None,
                "keys_at_issuer": len(p.keys),
                "targets_in_sync": in_sync,
                "targets_total": len(policy.targets),
                "targets": targets,
                "reloads": [reload_json(r) for r in p.reloads] if p.reloads is not None else None,
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
        for r in e["reloads"] or ():
            print(f"  {e['policy']}: {_reload_line(r, now)}", file=out)
        for n in e["notes"]:
            print(f"  {e['policy']}: {n.lstrip('! ')}", file=out)
        if e["error"]:
            print(f"  {e['policy']}: error: {e['error']}", file=out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
