"""One pass: observe, plan, act.

The engine holds no state of its own between passes: everything it needs is read from the issuer and the
stores each time (a long-running process may cache the role table). Policies run concurrently, at most
``concurrency`` at a time; within a policy, actions run in order: create, publish, retire, revoke. A real
pass acts on a policy as soon as its targets are read and its plan admitted, while the next policies are read
(:mod:`rotator.flow`): a mass rotation's writes do not wait for the whole fleet's reads.

Dry runs (``rotator plan``) wrap the issuer and the stores in read-only views whose mutating methods raise,
so a plan provably changes nothing.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from rotator import keys as keyfmt
from rotator.config import Config, Policy, Target
from rotator.durations import format_duration
from rotator.errors import (
    ConfigError,
    ConfigIssue,
    DeadlinePassed,
    IssuerAuthError,
    IssuerError,
    IssuerFaulty,
    IssuerPermissionError,
    KeyFormatError,
    ReloadConflict,
    RotatorError,
    StoreError,
    StoreIntegrityError,
    StorePreconditionFailed,
)
from rotator.flow import Flow
from rotator.guards import Deadline, deadline_issuer, deadline_store, read_only_issuer, read_only_store
from rotator.issuers.base import KeyIssuer
from rotator.model import (
    Action,
    CreateKey,
    IssuedKey,
    KeyInfo,
    Observation,
    PickupVerdict,
    Plan,
    Publish,
    Reload,
    ReloadStatus,
    Retire,
    Revoke,
    SecretState,
    SecretText,
    TargetObservation,
)
from rotator.planner import Options, expired, plan
from rotator.quotas import Charge, RateLimits
from rotator.report import UNSERVED as UNSERVED
from rotator.report import ActionResult as ActionResult
from rotator.report import PassReport as PassReport
from rotator.report import PolicyReport as PolicyReport
from rotator.report import mark_unserved as mark_unserved
from rotator.stores.base import SecretStore, TargetRef, VersionMeta

Clock = Callable[[], datetime]
#: the share of a scope's requests before ``pass_timeout`` that the rotations a pass starts may plan to use
ADMIT_SHARE = 0.8
#: the most of a read quota the drift checks of a steady fleet may use
DRIFT_SHARE = 0.5
PickupRunner = Callable[[Policy, str, dict[str, SecretState]], tuple[PickupVerdict, ...]]
#: progress(stage, done, total): called after each policy is planned ("plan") or carried out ("act")
Progress = Callable[[str, int, int], None]


class Reloader(Protocol):
    """Observes and starts a policy's reloads (:class:`rotator.reload.runner.ReloadRunner`)."""

    def observe(
        self, policy: Policy, key_id: str, states: dict[str, SecretState], *, only: str | None = None
    ) -> tuple[ReloadStatus, ...]: ...

    def reload(
        self,
        policy: Policy,
        target_label: str,
        unit: str,
        key_id: str,
        expires_at: datetime | None,
        states: dict[str, SecretState],
    ) -> None: ...


log = structlog.get_logger("rotator")


def system_clock() -> datetime:
    return datetime.now(UTC)


class _RolesFrom:
    """The issuer as the preflight sees it: its roles are the engine's one listing of them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def list_roles(self) -> list[Any]:
        return self._engine.role_list()

    def list_keys(self) -> list[KeyInfo]:
        return self._engine.issuer.list_keys()

    def create_key(self, *a: Any, **k: Any) -> IssuedKey:
        raise AssertionError("the preflight must not create keys")

    def revoke_key(self, *a: Any, **k: Any) -> None:
        raise AssertionError("the preflight must not revoke keys")

    def set_management_key(self, key: SecretText) -> None:
        raise AssertionError("the preflight must not switch keys")

    def close(self) -> None:
        return None


class _Fresh:
    """What one pass's act half re-reads before it mutates: one listing of the issuer's keys, taken after the
    random start delay and right before the first create (so two passes that start together see each other's
    new keys), and shared by every policy of the pass."""

    def __init__(self, listing: list[KeyInfo] | None) -> None:
        self.listing = listing
        self.ids = None if listing is None else {k.key_id for k in listing}
        self._by_policy: dict[str | None, list[KeyInfo]] = {}
        for k in listing or ():  # indexed once: a policy's look-up is then not a scan of the fleet's keys
            self._by_policy.setdefault(k.policy, []).append(k)

    def policy_keys(self, policy: str) -> list[KeyInfo] | None:
        return None if self.listing is None else list(self._by_policy.get(policy, ()))


class _Counter:
    """Counts finished policies for a progress callback (thread-safe; a context manager per policy)."""

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress, self.stage, self.total, self.done = progress, stage, total, 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.progress is None:
            return
        with self._lock:
            self.done += 1
            done = self.done
        with contextlib.suppress(Exception):  # a progress display must never break a pass
            self.progress(self.stage, done, self.total)


PlanItem = tuple[int, Policy, tuple[Plan, Options, datetime]]


class _Planned:
    """A pass's first plans (from the issuer's listing alone): ``reports`` in policy order, None where the
    policy is in ``rest`` (its plan needs its targets read: ``finish`` reads them and plans it)."""

    def __init__(
        self,
        started: datetime,
        reports: list[PolicyReport | None],
        rest: list[PlanItem],
        finish: Callable[[PlanItem], PolicyReport],
        by_policy: dict[str | None, list[KeyInfo]],
    ) -> None:
        self.started, self.reports, self.rest, self.finish, self.by_policy = started, reports, rest, finish, by_policy

    def report(self, dry_run: bool, finished: datetime) -> PassReport:
        return PassReport(self.started, finished, dry_run, [r for r in self.reports if r is not None])


class _Admission:
    """Admits a pass's rotations one by one, most urgent first (:meth:`Engine.admit`).

    The budget of a scope is its rate (requests per second, as adapted) x the seconds left x ``ADMIT_SHARE``:
    the rest of the window is for the reads, retires and retries of the same pass. A rotation that would take
    its scope past the budget waits for the next pass, unless it is the scope's first of the pass."""

    def __init__(self, engine: Engine, stores: dict[str, SecretStore], seconds_left: float | None) -> None:
        self.engine, self.stores, self.seconds_left = engine, stores, seconds_left
        self.used: dict[Charge, int] = {}
        self.admitted_in: set[Charge] = set()

    def consider(self, pr: PolicyReport) -> None:
        engine, seconds_left = self.engine, self.seconds_left
        if not engine.limits.enabled or seconds_left is None or pr.plan is None:
            return
        if not any(isinstance(a, CreateKey) for a in pr.plan.actions):
            return
        if pr.opts is not None and (pr.opts.force or pr.opts.emergency):
            return
        cost = engine._cost(engine.config.policy(pr.policy), self.stores)
        short: list[str] = []
        for charge, n in cost.items():
            rate = engine.limits.rate(charge)
            if rate is None:
                continue
            budget = int(rate * max(seconds_left, 0.0) * ADMIT_SHARE)
            if self.used.get(charge, 0) + n > budget and charge in self.admitted_in:
                left = max(0, budget - self.used.get(charge, 0))
                short.append(f"it needs {n} requests of the {charge}, which has about {left} left in this pass")
        if short:
            why = "! rotation waits for the next pass: it would not finish publishing before pass_timeout: "
            pr.plan = replace(
                pr.plan,
                actions=tuple(a for a in pr.plan.actions if not isinstance(a, CreateKey)),
                notes=(*pr.plan.notes, why + "; ".join(short)),
            )
            with structlog.contextvars.bound_contextvars(policy=pr.policy):
                log.warning((why + "; ".join(short)).lstrip("! "), phase=pr.plan.phase)
            return
        for charge, n in cost.items():
            self.used[charge] = self.used.get(charge, 0) + n
            self.admitted_in.add(charge)


class _ReloadBudget:
    """The planned reloads a pass leaves to the next one (``held``, ids of actions): past ``reloads_per_pass``
    across the fleet, in the order the plans are considered. An emergency's reloads are never held back;
    signals (webhooks) do not count."""

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.held: set[int] = set()

    def consider(self, pr: PolicyReport) -> None:
        for a in pr.plan.actions if pr.plan is not None else ():
            if not isinstance(a, Reload) or (pr.opts is not None and pr.opts.emergency) or not a.rollout:
                continue
            if self.left > 0:
                self.left -= 1
            else:
                self.held.add(id(a))


class _FreshOnce:
    """The pass's second listing (:class:`_Fresh`), taken when the pass's first create or copy is about to run:
    for a create, after the random start delay (so that two passes that start together see each other's new
    keys). A listing taken for a copy, without the delay, is taken again before the pass's first create. A
    failing listing is logged, and the creates and copies go ahead on the pass's first listing."""

    def __init__(
        self,
        engine: Engine,
        issuer: KeyIssuer,
        deadline: Deadline,
        stop: threading.Event | None,
        pre_create_delay: float,
    ) -> None:
        self.engine, self.issuer, self.deadline, self.stop = engine, issuer, deadline, stop
        self.pre_create_delay = pre_create_delay
        self.fresh = _Fresh(None)
        self.listed = False
        self.for_create = False
        self._lock = threading.Lock()

    def get(self, p: Plan) -> _Fresh:
        creates = any(isinstance(a, CreateKey) for a in p.actions)
        with self._lock:
            if self.listed and (self.for_create or not creates):
                return self.fresh
            if creates and self.pre_create_delay > 0:
                self.engine._start_delay(self.pre_create_delay, self.deadline, self.stop)
            try:
                self.fresh = _Fresh(self.issuer.list_keys())
            except IssuerError as exc:
                log.warning("could not list keys again before acting", error=_error_text(exc))
            self.listed, self.for_create = True, self.for_create or creates
            return self.fresh


class _Acting:
    """Acting on one pass's plans: ``one(report)`` carries out a policy's plan, ``skip(report)`` counts one
    with nothing to do; ``stores`` are the views the actions write through."""

    def __init__(
        self,
        stores: dict[str, SecretStore],
        one: Callable[[PolicyReport], PolicyReport],
        skip: Callable[[PolicyReport], None],
    ) -> None:
        self.stores, self.one, self.skip = stores, one, skip


_FAR = datetime.max.replace(tzinfo=UTC)


def _expiry(keys: Iterable[KeyInfo], key_id: str | None) -> datetime:
    """When key ``key_id`` of ``keys`` expires (the far future when it is not there or never expires): the
    order of urgency, for the reads of a pass and for its admission."""
    current = next((k for k in keys if k.key_id == key_id), None) if key_id is not None else None
    return current.expires_at if current is not None and current.expires_at is not None else _FAR


def drift_check_due(config: Config, policy: str, now: datetime, every: timedelta | None = None) -> bool:
    """Whether this pass should re-read a steady policy's stores: once per ``drift_check_every`` (or the
    longer ``every`` the engine set for a read quota), at a time of the period derived from the policy name,
    so that checks spread over time and need no state."""
    if config.drift_check_every is None:
        return False
    every = every or config.drift_check_every
    period = every.total_seconds()
    offset = zlib.crc32(policy.encode()) % max(int(period), 1)
    t = now.timestamp() + offset
    return int(t // period) != int((t - config.interval.total_seconds()) // period)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Engine:
    """Runs passes over the configured policies.

    ``issuer`` and ``stores`` (by configured store name) are injected; the engine never builds clients.
    ``clock`` gives "now" (injectable for tests and ``--now``). ``pickup`` runs the pickup checks of a
    policy for a key id when the planner asks for them.
    """

    def __init__(
        self,
        config: Config,
        issuer: KeyIssuer,
        stores: dict[str, SecretStore],
        *,
        endpoint: str,
        clock: Clock = system_clock,
        pickup: PickupRunner | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        preflight: Callable[[KeyIssuer], None] | None = None,
        reloads: Reloader | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.config = config
        #: the process's request quotas (the stores charge them; the engine orders work by them)
        self.limits = limits if limits is not None else RateLimits(enabled=config.rate_limits)
        self.reloads = reloads
        self.monotonic = monotonic
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - a start delay, not cryptography
        self.issuer = issuer
        self.stores = stores
        self.endpoint = endpoint
        self.clock = clock
        self.pickup = pickup
        self._roles: dict[str, str] | None = None
        self._role_list: list[Any] | None = None
        self._roles_lock = threading.Lock()
        #: run once, before the first pass that plans a mutation (a steady pass needs neither roles nor it)
        self._preflight = preflight
        self._preflight_lock = threading.Lock()
        self._options: dict[tuple[bool, bool, bool], Options] = {}
        self._drift: dict[str, timedelta] | None = None
        self._drift_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------------

    def ref(self, policy: Policy, target: Target) -> TargetRef:
        return TargetRef(target.store, target.secret, policy.name, target.options)

    def _target(self, policy: Policy, target_id: str) -> Target:
        for t in policy.targets:
            if t.id == target_id:
                return t
        raise KeyError(target_id)

    def resolve_role(self, role: str) -> str:
        """A role name (owner, operator, viewer, or a custom role's name) or id, as the issuer's role id."""
        with self._roles_lock:
            return self._resolve_role(role)

    def role_list(self) -> list[Any]:
        """The issuer's roles, listed once for the life of the engine (one ``GET /roles``, on first need)."""
        with self._roles_lock:
            return self._listed_roles()

    def _listed_roles(self) -> list[Any]:
        if self._role_list is None:
            self._role_list = list(self.issuer.list_roles())
        return self._role_list

    def preflight_once(self) -> None:
        """Run the preflight (:mod:`rotator.preflight`) unless it has passed already; raises ConfigError.

        Called by a pass whose plan holds an action, before that action: a pass that changes nothing needs
        no roles and no preflight, so a steady pass stays one listing. The preflight's role check reads the
        engine's own role list, so a creating pass lists the roles once.
        """
        if self._preflight is None:
            return
        with self._preflight_lock:
            if self._preflight is None:
                return
            self._preflight(_RolesFrom(self))
            self._preflight = None

    def _resolve_role(self, role: str) -> str:
        if self._roles is None:
            roles = self._listed_roles()
            table: dict[str, str] = {}
            for r in roles:
                table[r.role_id] = r.role_id
                table.setdefault(r.role_name.lower(), r.role_id)
            self._roles = table
        found = self._roles.get(role) or self._roles.get(role.lower())
        if found is None:
            names = sorted(k for k in self._roles if k != self._roles[k])
            where = next((f"policies[{i}].role" for i, p in enumerate(self.config.policies) if p.role == role), "role")
            raise ConfigError([ConfigIssue(where, f"unknown role {role!r}; the issuer knows: {', '.join(names)}")])
        return found

    def observe_targets(self, policy: Policy, stores: dict[str, SecretStore]) -> dict[str, TargetObservation]:
        out: dict[str, TargetObservation] = {}
        for t in policy.targets:
            try:
                state = stores[t.store].inspect(self.ref(policy, t))
                out[t.id] = TargetObservation(t.id, state)
            except RotatorError as exc:
                out[t.id] = TargetObservation(t.id, None, _error_text(exc))
        return out

    # -- a pass --------------------------------------------------------------------------------------

    def run_pass(
        self,
        *,
        dry_run: bool = False,
        only: Iterable[str] | None = None,
        force: Iterable[str] = (),
        emergency: Iterable[str] = (),
        read_targets: bool = False,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
        pre_create_delay: float = 0.0,
    ) -> PassReport:
        """Observe, plan and (unless ``dry_run``) act on every policy, or on those named in ``only``.

        Never raises for a failing service: failures are in the report (exit code 1). ``read_targets`` reads
        every target even in steady state (status and drift checks). When ``stop`` is set, the action in
        flight finishes and the remaining actions are skipped (the next pass picks them up).

        The pass has a deadline ``pass_timeout`` from now on the monotonic clock: no mutation starts after it,
        and the report says ``deadline_passed`` (exit code 1). ``pre_create_delay``: before the first key is
        created, wait a random time up to this many seconds (the runtimes pass ``jitter``), then list the keys
        again, so that passes that started together do not both create a key for the same policy.
        """
        deadline = Deadline(self.config.pass_timeout.total_seconds(), self.monotonic)
        if dry_run:
            report = self.observe(
                dry_run=True, only=only, force=force, emergency=emergency, read_targets=read_targets, progress=progress
            )
            if report.error is None:
                self.admit(report, deadline.remaining())
            if report.error is None and any(pr.plan is not None and pr.plan.actions for pr in report.policies):
                self.preflight_once()  # a ConfigError (exit 2) here comes before anything changed
        else:
            planned = self._first_plans(False, only, force, emergency, read_targets, progress)
            if isinstance(planned, PassReport):
                report = planned
            else:
                report = self._observe_and_act(planned, stop, progress, deadline, pre_create_delay)
        report.finished = self.clock()
        if not dry_run and report.error is None and not (stop is not None and stop.is_set()):
            report.unserved = mark_unserved(report)
        c = report.counts()
        log.info(
            "pass finished",
            ok=report.ok,
            dry_run=dry_run,
            policies=len(report.policies),
            deadline_passed=report.deadline_passed,
            **c,
        )
        return report

    def _views(self, dry_run: bool) -> tuple[KeyIssuer, dict[str, SecretStore]]:
        if dry_run:
            return read_only_issuer(self.issuer), {n: read_only_store(s) for n, s in self.stores.items()}
        return self.issuer, dict(self.stores)

    def _each(self, items: list[Any], fn: Callable[[Any], PolicyReport]) -> list[PolicyReport]:
        if len(items) <= 1 or self.config.concurrency == 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def observe(
        self,
        *,
        dry_run: bool = False,
        only: Iterable[str] | None = None,
        force: Iterable[str] = (),
        emergency: Iterable[str] = (),
        read_targets: bool = False,
        progress: Progress | None = None,
    ) -> PassReport:
        """The observe and plan half of a pass: reads only, and returns each policy's plan."""
        planned = self._first_plans(dry_run, only, force, emergency, read_targets, progress)
        if isinstance(planned, PassReport):
            return planned
        for item, pr in zip(planned.rest, self._each(planned.rest, planned.finish), strict=True):
            planned.reports[item[0]] = pr
        return planned.report(dry_run, self.clock())

    def _first_plans(
        self,
        dry_run: bool,
        only: Iterable[str] | None,
        force: Iterable[str],
        emergency: Iterable[str],
        read_targets: bool,
        progress: Progress | None,
    ) -> _Planned | PassReport:
        """List the issuer's keys and make every selected policy's first plan (from the listing alone); the
        policies whose plan needs their targets read are left in ``rest``, for ``finish``. A failing listing is
        the pass's report (every policy failed)."""
        started = self.clock()
        issuer, stores = self._views(dry_run)
        selected = set(only) if only is not None else None
        policies = [p for p in self.config.policies if selected is None or p.name in selected]
        force_set, emergency_set = set(force), set(emergency)
        try:
            all_keys = issuer.list_keys()
        except IssuerError as exc:
            refused = isinstance(exc, IssuerAuthError | IssuerPermissionError)
            log.error(
                "management key refused" if refused else "issuer unavailable",
                action="list_keys",
                error=_error_text(exc),
            )
            reports = [PolicyReport(p.name, None, error=f"issuer: {_error_text(exc)}") for p in policies]
            auth = isinstance(exc, IssuerAuthError | IssuerPermissionError)
            return PassReport(
                started, self.clock(), dry_run, reports, error=_error_text(exc), issuer_ok=False, issuer_auth_error=auth
            )

        counter = _Counter(progress, "plan", len(policies))
        # Index the listing once per pass: each policy then sees only its own keys, so a pass is linear in the
        # fleet instead of policies x keys.
        by_policy: dict[str | None, list[KeyInfo]] = {}
        for k in all_keys:
            by_policy.setdefault(k.policy, []).append(k)

        def first(policy: Policy) -> tuple[Plan, Options, datetime] | PolicyReport:
            try:
                return self._first_plan(
                    policy,
                    by_policy.get(policy.name, ()),
                    force=policy.name in force_set,
                    emergency=policy.name in emergency_set,
                    read_targets=read_targets,
                )
            except RotatorError as exc:
                with structlog.contextvars.bound_contextvars(policy=policy.name):
                    log.error("policy failed", error=_error_text(exc))
                return PolicyReport(policy.name, None, error=_error_text(exc))

        # The first plan of every policy is pure CPU (no I/O, no logging), so it runs here, in one thread: a
        # thread pool only adds hand-offs for work that holds the GIL. Policies whose plan needs their targets
        # read (or has notes to log) go on to the pool, where the store reads overlap.
        planned: list[PolicyReport | None] = []
        rest: list[PlanItem] = []
        for policy in policies:
            got = first(policy)
            if isinstance(got, PolicyReport):
                with counter:
                    planned.append(got)
                continue
            p, opts, _ = got
            if p.needs_targets or p.notes:
                rest.append((len(planned), policy, got))
                planned.append(None)
                continue
            with counter:
                planned.append(self._report(policy, p, opts, by_policy.get(policy.name, ())))

        def finish(item: PlanItem) -> PolicyReport:
            _, policy, (p, opts, now) = item
            with structlog.contextvars.bound_contextvars(policy=policy.name), counter:
                try:
                    return self._plan_policy(
                        policy, by_policy.get(policy.name, ()), stores, p, opts, now, show_reloads=read_targets
                    )
                except RotatorError as exc:
                    log.error("policy failed", error=_error_text(exc))
                    return PolicyReport(policy.name, None, error=_error_text(exc))

        return _Planned(started, planned, rest, finish, by_policy)

    def _observe_and_act(
        self,
        planned: _Planned,
        stop: threading.Event | None,
        progress: Progress | None,
        deadline: Deadline,
        pre_create_delay: float,
    ) -> PassReport:
        """A real pass's two halves on one pool (:class:`rotator.flow.Flow`): a policy is acted on as soon as
        its targets are read and its plan admitted, while the next policies are read. The reads go most urgent
        first (the key that expires soonest, from the listing) within each set of stores, in turns across the
        sets, and the plans are admitted in that order, not in the order the reads happen to finish. The
        preflight runs before the first action; a ConfigError there comes before anything changed."""
        report = PassReport(planned.started, planned.started, False, [])
        _, stores = self._views(False)
        admission = _Admission(self, stores, deadline.remaining())
        budget = _ReloadBudget(self.config.reloads_per_pass)
        acting = self._acting(report, stop, progress, deadline, pre_create_delay, len(planned.reports), budget.held)
        for pr in planned.reports:
            if pr is not None:
                acting.skip(pr)  # planned from the listing alone: nothing to do

        def urgency(item: PlanItem) -> tuple[datetime, int]:
            i, policy, (p, _, _) = item
            return _expiry(planned.by_policy.get(policy.name, ()), p.current_key), i

        # most urgent first within each set of stores, and in turns across the sets (as the acts are taken): the
        # first reads, and so the first acts, spread over the stores, and no store's policies all wait behind
        # another's at its quota
        groups: dict[tuple[str, ...], int] = {}
        turns: list[tuple[int, int, PlanItem]] = []
        for item in sorted(planned.rest, key=urgency):
            g = tuple(sorted({t.store for t in item[1].targets}))
            groups[g] = groups.get(g, 0) + 1
            turns.append((groups[g], list(groups).index(g), item))
        order = [item for _, _, item in sorted(turns, key=lambda t: t[:2])]

        def read(item: PlanItem) -> Callable[[], PolicyReport]:
            def go() -> PolicyReport:
                pr = planned.finish(item)
                planned.reports[item[0]] = pr
                return pr

            return go

        def release(pr: PolicyReport) -> bool:
            admission.consider(pr)
            budget.consider(pr)
            if pr.plan is None or not pr.plan.actions:
                acting.skip(pr)
                return False
            return True

        self._flow(
            acting,
            reads=[read(item) for item in order],
            release=release,
            before_act=self.preflight_once,
        ).run()
        report.policies = [r for r in planned.reports if r is not None]
        return report

    def execute(
        self,
        report: PassReport,
        *,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
        deadline: Deadline | None = None,
        pre_create_delay: float = 0.0,
    ) -> PassReport:
        """The act half of a pass: carry out each policy's planned actions, recording the results.

        Every action re-checks its precondition against state read at that moment and does nothing (a
        ``skipped`` result, logged) when it no longer holds: another pass may have acted since this one looked.
        (A real pass runs this half overlapped with its reads: :meth:`_observe_and_act`.)
        """
        if deadline is None:
            deadline = Deadline(None, self.monotonic)
        budget = _ReloadBudget(self.config.reloads_per_pass)
        acting = self._acting(report, stop, progress, deadline, pre_create_delay, len(report.policies), budget.held)
        busy = []  # a policy with nothing to do needs no thread: only those with actions go to the pool
        for pr in report.policies:
            budget.consider(pr)
            if pr.plan is None or not pr.plan.actions:
                acting.skip(pr)
            else:
                busy.append(pr)
        self._flow(acting, ready=busy, release=lambda pr: True).run()
        return report

    def _flow(self, acting: _Acting, **work: Any) -> Flow[PolicyReport]:
        """The pass's pool (:class:`rotator.flow.Flow`) acting through ``acting``, ordered by the quota scopes
        each policy's targets write to; ``work``: the reads, the ready plans, ``release`` and ``before_act``."""
        return Flow(
            self.config.concurrency,
            act=acting.one,
            scopes=lambda pr: self._scopes_of(self.config.policy(pr.policy), acting.stores),
            saturated=self.limits.saturated if self.limits.enabled else None,
            group=lambda pr: tuple(sorted({t.store for t in self.config.policy(pr.policy).targets})),
            **work,
        )

    def _acting(
        self,
        report: PassReport,
        stop: threading.Event | None,
        progress: Progress | None,
        deadline: Deadline,
        pre_create_delay: float,
        total: int,
        held_back: set[int],
    ) -> _Acting:
        """What acting on one pass's plans shares: the views that refuse mutations past the deadline, the
        pass's second listing, the progress count and the reloads held back (``held_back``, ids of actions)."""
        issuer, stores = self._views(report.dry_run)
        if not report.dry_run:
            issuer = deadline_issuer(issuer, deadline)
            stores = {n: deadline_store(s, deadline) for n, s in stores.items()}
        counter = _Counter(progress, "act", total)
        fresh = _FreshOnce(self, issuer, deadline, stop, pre_create_delay)

        def one(pr: PolicyReport) -> PolicyReport:
            with structlog.contextvars.bound_contextvars(policy=pr.policy), counter:
                if pr.plan is None or not pr.plan.actions:
                    return pr
                policy = self.config.policy(pr.policy)
                known = {k.key_id: k for k in pr.keys}
                order = {"create": 0, "publish": 1, "retire": 2, "reload": 3, "revoke": 4}
                reload_failed = False
                for action in sorted(pr.plan.actions, key=lambda a: order[a.kind]):
                    if isinstance(action, Reload) and id(action) in held_back:
                        pr.results.append(
                            ActionResult(
                                action,
                                True,
                                skipped=f"reloads_per_pass ({self.config.reloads_per_pass}) reached: the next pass "
                                "starts it",
                            )
                        )
                        continue
                    if isinstance(action, Revoke) and reload_failed and not (pr.opts is not None and pr.opts.emergency):
                        why = "a reload of this policy failed in this pass: the old key stays until it succeeds"
                        log.warning("not revoking", key_id=action.key_id, why=why)
                        pr.results.append(ActionResult(action, True, skipped=why))
                        continue
                    if stop is not None and stop.is_set():
                        log.info("stopping: remaining actions left to the next pass")
                        break
                    if deadline.passed():
                        report.deadline_passed = True
                        log.error("deadline passed: remaining actions left to the next pass", action=action.kind)
                        break
                    listing = fresh.get(pr.plan) if isinstance(action, CreateKey | Publish) else _Fresh(None)
                    result = self._act(policy, action, pr, known, listing, issuer, stores)
                    pr.results.append(result)
                    reload_failed = reload_failed or (isinstance(action, Reload) and not result.ok)
                    if result.deadline:
                        report.deadline_passed = True
                        break
                return pr

        def skip(pr: PolicyReport) -> None:
            with counter:
                pass

        return _Acting(stores, one, skip)

    # -- request quotas: admission and ordering -----------------------------------------------------

    def drift_period(self, policy: str) -> timedelta | None:
        """How often a steady ``policy``'s stores are re-read: ``drift_check_every``, or longer where the
        fleet's drift checks would use more than half of a read quota (the stores declare what an inspect
        costs); None when drift checks are off. Worked out once, on the first pass, and logged."""
        every = self.config.drift_check_every
        if every is None:
            return None
        if self._drift is None:
            with self._drift_lock:
                if self._drift is None:
                    self._drift = self._spread_drift_checks(every)
        return self._drift.get(policy, every)

    def _spread_drift_checks(self, every: timedelta) -> dict[str, timedelta]:
        if not self.limits.enabled:
            return {}
        per_policy: dict[str, dict[Charge, int]] = {}
        total: dict[Charge, int] = {}
        for policy in self.config.policies:
            cost: dict[Charge, int] = {}
            for t in policy.targets:
                store = self.stores.get(t.store)
                for charge, n in store.inspect_cost(self.ref(policy, t)) if store is not None else ():
                    cost[charge] = cost.get(charge, 0) + n
                    total[charge] = total.get(charge, 0) + n
            per_policy[policy.name] = cost
        stretched: dict[Charge, timedelta] = {}
        for charge, reads in total.items():
            rate = self.limits.rate(charge)
            if rate is None or reads / every.total_seconds() <= DRIFT_SHARE * rate:
                continue
            stretched[charge] = timedelta(seconds=math.ceil(reads / (DRIFT_SHARE * rate)))
            log.warning(
                "drift checks spread out: at drift_check_every they would use more than half of a read quota",
                quota=str(charge),
                reads_per_check_round=reads,
                drift_check_every=format_duration(every),
                every=format_duration(stretched[charge]),
            )
        if not stretched:
            return {}
        return {
            name: max([every, *(stretched[c] for c in cost if c in stretched)]) for name, cost in per_policy.items()
        }

    def _cost(self, policy: Policy, stores: dict[str, SecretStore]) -> dict[Charge, int]:
        """The requests publishing a new key to every target of ``policy`` makes, per quota scope (what each
        store declares)."""
        cost: dict[Charge, int] = {}
        for t in policy.targets:
            store = stores.get(t.store)
            if store is None:
                continue
            for charge, n in store.publish_cost(self.ref(policy, t)):
                cost[charge] = cost.get(charge, 0) + n
        return cost

    def _scopes_of(self, policy: Policy, stores: dict[str, SecretStore]) -> tuple[Charge, ...]:
        return tuple(self._cost(policy, stores))

    def admit(self, report: PassReport, seconds_left: float | None) -> None:
        """Start only the rotations this pass can finish publishing before ``pass_timeout`` at the quotas of the
        scopes they write to; the rest wait for the next pass, their plans saying why (``rotator plan`` shows
        the same). The most urgent go first (the key that expires soonest); a forced or emergency rotation is
        never held back, and each scope admits at least one rotation a pass, so every policy gets its turn
        (:class:`_Admission`; a real pass admits the same way, as its reads come in)."""
        _, stores = self._views(report.dry_run)
        admission = _Admission(self, stores, seconds_left)
        for pr in sorted(report.policies, key=lambda pr: _expiry(pr.keys, pr.plan.current_key if pr.plan else None)):
            admission.consider(pr)

    def _start_delay(self, most: float, deadline: Deadline, stop: threading.Event | None) -> None:
        """Wait a random time up to ``most`` seconds (and never past half the time the pass has left)."""
        delay = self._rng.uniform(0, most)
        left = deadline.remaining()
        if left is not None:
            delay = min(delay, max(0.0, left / 2))
        if delay > 0:
            log.debug("start delay before creating", seconds=round(delay, 3))
            (stop or threading.Event()).wait(delay)

    def _first_plan(
        self,
        policy: Policy,
        mine_keys: Iterable[KeyInfo],
        *,
        force: bool,
        emergency: bool,
        read_targets: bool,
    ) -> tuple[Plan, Options, datetime]:
        """The plan from the issuer's listing alone (pure: no I/O, no logging), and the options it was made with."""
        now = self.clock()
        drift = read_targets or drift_check_due(self.config, policy.name, now, self.drift_period(policy.name))
        opts = self._opts(drift, force, emergency)
        return plan(policy, Observation(tuple(mine_keys)), now, opts), opts, now

    def _opts(self, drift: bool = False, force: bool = False, emergency: bool = False) -> Options:
        """The planner's options for this config. Options is frozen and takes one of eight values: made once
        each (a frozen dataclass is slow to build)."""
        opts = self._options.get((drift, force, emergency))
        if opts is None:
            opts = self._options[(drift, force, emergency)] = Options(
                clock_skew=self.config.clock_skew,
                drift_check=drift,
                force=force,
                emergency=emergency,
                verify_for=self.config.verify_for,
                interval=self.config.interval,
                pass_timeout=self.config.pass_timeout,
            )
        return opts

    def _report(self, policy: Policy, p: Plan, opts: Options, mine: Iterable[KeyInfo]) -> PolicyReport:
        return PolicyReport(policy.name, p, keys=tuple(mine), target_ids=tuple(t.id for t in policy.targets), opts=opts)

    def _plan_policy(
        self,
        policy: Policy,
        mine_keys: Iterable[KeyInfo],
        stores: dict[str, SecretStore],
        p: Plan,
        opts: Options,
        now: datetime,
        *,
        show_reloads: bool = False,
    ) -> PolicyReport:
        """Carry a first plan on: read the targets, observe the reload targets and run the pickup checks when it
        asks, and log its notes. ``show_reloads`` (``status``, the status page's read): observe the reload
        targets for the current key even when the plan does not need them."""
        mine = tuple(mine_keys)
        targets: dict[str, TargetObservation] | None = None
        verdicts: tuple[PickupVerdict, ...] | None = None
        reloads: tuple[ReloadStatus, ...] | None = None
        if p.needs_targets:
            targets = self.observe_targets(policy, stores)
            p = plan(policy, Observation(mine, targets), now, opts)
            states = {tid: o.state for tid, o in targets.items() if o.state is not None}
            if p.needs_reload is not None and self.reloads is not None:
                reloads = self.reloads.observe(policy, p.needs_reload, states)
                p = plan(policy, Observation(mine, targets, reloads=reloads), now, opts)
            elif show_reloads and policy.reload and p.current_key and self.reloads is not None:
                reloads = self.reloads.observe(policy, p.current_key, states)
            if p.needs_pickup is not None and self.pickup is not None:
                verdicts = self.pickup(policy, p.needs_pickup, states)
                p = plan(policy, Observation(mine, targets, verdicts, reloads), now, opts)
        report = PolicyReport(
            policy.name, p, keys=mine, target_ids=tuple(t.id for t in policy.targets), opts=opts, verdicts=verdicts
        )
        report.observed_targets = targets
        report.reloads = reloads
        if targets is not None:
            report.targets = {tid: o.state for tid, o in targets.items()}
            report.target_errors = {tid: o.error for tid, o in targets.items() if o.error}
        for note in p.notes:
            (log.warning if note.startswith("!") else log.info)(note.lstrip("! "), phase=p.phase)
        return report

    # -- actions -------------------------------------------------------------------------------------

    def _act(
        self,
        policy: Policy,
        action: Action,
        pr: PolicyReport,
        known: dict[str, KeyInfo],
        fresh: _Fresh,
        issuer: KeyIssuer,
        stores: dict[str, SecretStore],
    ) -> ActionResult:
        bound: dict[str, str] = {"action": action.kind}
        if not isinstance(action, CreateKey):
            bound["key_id"] = action.key_id
        if isinstance(action, Reload):
            bound["reload"] = action.id
        with structlog.contextvars.bound_contextvars(**bound):
            try:
                if isinstance(action, CreateKey):
                    return self._create(policy, action, pr, known, fresh, issuer, stores)
                if isinstance(action, Publish):
                    return self._copy(policy, action, pr, known, fresh, stores)
                if isinstance(action, Retire):
                    return self._retire(policy, action, pr, known, stores)
                if isinstance(action, Reload):
                    return self._reload(policy, action, pr, known)
                if isinstance(action, Revoke):
                    return self._revoke(policy, action, pr, known, issuer, stores)
            except DeadlinePassed as exc:
                log.error("deadline passed", error=str(exc))
                return ActionResult(action, False, str(exc), deadline=True)
            except RotatorError as exc:
                log.error("action failed", error=_error_text(exc))
                return ActionResult(action, False, _error_text(exc))
        raise AssertionError(f"unknown action {action!r}")

    @staticmethod
    def _skip(action: Action, why: str) -> ActionResult:
        log.warning("skipped: its precondition no longer holds; the next pass decides again", why=why)
        return ActionResult(action, True, skipped=why)

    def _replan(
        self,
        policy: Policy,
        pr: PolicyReport,
        known: dict[str, KeyInfo],
        fresh_targets: dict[str, TargetObservation],
        reloads: tuple[ReloadStatus, ...] | None = None,
    ) -> Plan:
        """The plan the same rules make from the targets as they are now (pickup verdicts as observed)."""
        targets = dict(pr.observed_targets or {})
        targets.update(fresh_targets)
        obs = Observation(tuple(known.values()), targets, pr.verdicts, pr.reloads if reloads is None else reloads)
        return plan(policy, obs, self.clock(), pr.opts or self._opts())

    def _create(
        self,
        policy: Policy,
        action: CreateKey,
        pr: PolicyReport,
        known: dict[str, KeyInfo],
        fresh: _Fresh,
        issuer: KeyIssuer,
        stores: dict[str, SecretStore],
    ) -> ActionResult:
        listed = fresh.policy_keys(policy.name)
        if listed is not None:
            newer = sorted(k.key_id for k in listed if k.key_id not in known)
            if newer:
                return self._skip(
                    action, f"another pass created key {', '.join(newer)} since this pass listed the keys"
                )
        role_id = self.resolve_role(policy.role)
        now = self.clock()
        expires_at = None if policy.lifetime is None else (now + policy.lifetime).replace(microsecond=0)
        issued = issuer.create_key(role_id, policy.key_description, expires_at)
        self._check_issued(policy, issued, expires_at, known, pr, issuer)
        known[issued.info.key_id] = issued.info
        log.info(
            "created key",
            new_key_id=issued.info.key_id,
            reason=action.reason,
            expires_at=issued.info.expires_at.isoformat() if issued.info.expires_at else "never",
        )
        detail: dict[str, str] = {}
        errors: list[str] = []
        lost: str | None = None
        hit_deadline = False
        for t in policy.targets:
            if lost is not None or hit_deadline:
                detail[t.id] = "not published: " + ("deadline passed" if hit_deadline else "another pass got there")
                continue
            observed = pr.targets.get(t.id) if pr.targets is not None else None
            try:
                why = self._publish(policy, t, issued.info, issued.api_key, stores, observed, known, fresh_key=True)
            except DeadlinePassed as exc:
                detail[t.id], hit_deadline = str(exc), True
                errors.append(f"{t.id}: {exc}")
                log.error("deadline passed", target=t.id, new_key_id=issued.info.key_id)
                continue
            except RotatorError as exc:
                # the other targets go on; the next pass copies the key from a target that holds it, and a
                # key no target took is swept as an orphan
                detail[t.id] = _error_text(exc)
                errors.append(f"{t.id}: {_error_text(exc)}")
                log.error("publish failed", target=t.id, new_key_id=issued.info.key_id, error=_error_text(exc))
                continue
            if why is None:
                detail[t.id] = "ok"
            else:
                # a concurrent pass changed this target: publishing our key further would split the targets
                # between two new keys, so it stops here; the next pass settles on the newest key held and
                # sweeps the other one
                detail[t.id], lost = f"skipped: {why}", why
        ok = not errors
        skipped = None
        if lost is not None:
            skipped = f"key {issued.info.key_id} not published everywhere: {lost}"
            log.warning("stopped publishing the new key: another pass changed a target", why=lost)
        return ActionResult(
            action,
            ok,
            "; ".join(errors) or None,
            key_id=issued.info.key_id,
            detail=detail,
            skipped=skipped,
            deadline=hit_deadline,
        )

    def _check_issued(
        self,
        policy: Policy,
        issued: IssuedKey,
        expires_at: datetime | None,
        known: dict[str, KeyInfo],
        pr: PolicyReport,
        issuer: KeyIssuer,
    ) -> None:
        """Raise IssuerFaulty unless the issuer's answer is the key it claims (:func:`keys.check_issued`).

        Nothing has been written yet. A faulty key is live and useless, so it is revoked at once, unless its
        id is one this pass already knew or a target holds: a broken issuer naming a working key must never
        make rotator revoke that key. The old key stays where it is.
        """
        info = issued.info
        try:
            keyfmt.check_issued(
                issued.api_key, info.key_id, expires_at, clock_skew=self.config.clock_skew.total_seconds()
            )
        except KeyFormatError as exc:
            why = str(exc)
        else:
            return
        held = any(
            state is not None and (state.current_key_id == info.key_id or state.holds(info.key_id))
            for state in (pr.targets or {}).values()
        )
        if info.key_id in known or held:
            revoked = f"not revoked: key id {info.key_id} is one rotator already knows"
        else:
            try:
                issuer.revoke_key(info.key_id)
            except RotatorError as exc:
                revoked = f"could not revoke it ({_error_text(exc)}); it is swept as an orphan later"
            else:
                revoked = f"key {info.key_id} revoked"
        log.error("the issuer answered create with a faulty key; nothing was stored", why=why, outcome=revoked)
        raise IssuerFaulty(
            f"momento create_key: the issuer's answer is not a usable key ({why}); {revoked}; the old key stays. "
            "The key API is broken or is not Momento's: check issuer.url",
            operation="create_key",
        )

    def _copy(
        self,
        policy: Policy,
        action: Publish,
        pr: PolicyReport,
        known: dict[str, KeyInfo],
        fresh: _Fresh,
        stores: dict[str, SecretStore],
    ) -> ActionResult:
        """Copy a key a target holds to a target that lacks it (never a key the issuer dropped or that expired)."""
        key = known[action.key_id]
        if fresh.ids is not None and key.key_id not in fresh.ids:
            return self._skip(action, f"the issuer no longer lists key {key.key_id}")
        if expired(key, self.clock(), self.config.clock_skew):
            return self._skip(action, f"key {key.key_id} has expired")
        src = self._target(policy, action.source)
        payload = stores[src.store].read(self.ref(policy, src), action.key_id)
        api_key = keyfmt.parse_api_key(src.format, payload)
        observed = pr.targets.get(action.target) if pr.targets is not None else None
        why = self._publish(policy, self._target(policy, action.target), key, api_key, stores, observed, known)
        return ActionResult(action, True) if why is None else self._skip(action, why)

    def _publish(
        self,
        policy: Policy,
        target: Target,
        key: KeyInfo,
        api_key: SecretText,
        stores: dict[str, SecretStore],
        observed: SecretState | None,
        known: dict[str, KeyInfo],
        *,
        fresh_key: bool = False,
    ) -> str | None:
        """Stage, read back and check, then promote the key in one target; idempotent.

        Compare-and-set: the target is read again first, and the key is made current only if the target still
        holds what this pass observed (``observed``; ``None``: not read, so what it holds now) and no newer
        key; the promote itself is conditional on that current value. Returns why it did nothing, or ``None``.
        """
        store: SecretStore = stores[target.store]
        ref = self.ref(policy, target)
        payload = keyfmt.render(
            target.format, api_key, endpoint=self.endpoint, key_id=key.key_id, expires_at=key.expires_at
        )
        meta = VersionMeta(key.key_id, policy.name, key.expires_at, payload.content_type, policy.role)
        with structlog.contextvars.bound_contextvars(target=target.id, key_id=key.key_id):
            # a key this pass just created: no other pass can hold it, so the promote's own compare-and-set
            # against what this pass observed is the whole check (no extra read), unless the store has no
            # staging and its stage is the switch (Key Vault): then the target is read again right before it
            if fresh_key and observed is not None and not store.capabilities.stage_makes_current:
                held = observed.current_key_id
            else:
                held = store.inspect(ref).current_key_id
            if held != key.key_id:
                if observed is not None and held != observed.current_key_id:
                    return (
                        f"target {target.id} changed since this pass read it: it holds key {held or 'none'} "
                        f"now, not {observed.current_key_id or 'none'}"
                    )
                newer = known.get(held) if held else None
                if newer is not None and newer.issued_at > key.issued_at:
                    return f"target {target.id} holds key {held}, which is newer than key {key.key_id}"
            if target.endpoint_secret:
                self.ensure_endpoint(policy, target, store)
            store.stage(ref, payload.value, meta)
            if store.read(ref, key.key_id) != payload.value:
                raise StoreIntegrityError(
                    f"read-back of key {key.key_id} did not match what was written",
                    store=target.store,
                    secret=target.secret,
                )
            try:
                store.promote(ref, key.key_id, expect_current=held)
            except StorePreconditionFailed as exc:
                # another writer switched the target between our read and our promote: take our staged copy
                # out of the way (a disabled version is never served), and leave the target to the next pass
                with contextlib.suppress(StoreError):
                    store.retire(ref, key.key_id)
                return f"target {target.id} changed while publishing: {exc}"
            log.info("published key", target=target.id)
            mk = self.config.issuer.management_key
            if policy.manages_self and mk is not None and (mk.store, mk.secret) == (target.store, target.secret):
                # rotator's own key: from now on this process uses the new key (the store has it for restarts)
                self.issuer.set_management_key(api_key)
                log.info("switched to the new management key", new_key_id=key.key_id)
        return None

    def _retire(
        self,
        policy: Policy,
        action: Retire,
        pr: PolicyReport,
        known: dict[str, KeyInfo],
        stores: dict[str, SecretStore],
    ) -> ActionResult:
        t = self._target(policy, action.target)
        store: SecretStore = stores[t.store]
        ref = self.ref(policy, t)
        fresh = {t.id: TargetObservation(t.id, store.inspect(ref))}
        again = self._replan(policy, pr, known, fresh)
        if not any(isinstance(a, Retire) and (a.key_id, a.target) == (action.key_id, t.id) for a in again.actions):
            return self._skip(action, f"target {t.id} changed: retiring key {action.key_id} is no longer planned")
        store.retire(ref, action.key_id)
        log.info("retired old versions", target=t.id, reason=action.reason)
        return ActionResult(action, True)

    def _revoke(
        self,
        policy: Policy,
        action: Revoke,
        pr: PolicyReport,
        known: dict[str, KeyInfo],
        issuer: KeyIssuer,
        stores: dict[str, SecretStore],
    ) -> ActionResult:
        """Re-read every target, re-plan, and revoke only if the rules still revoke this key now: no target holds
        it as current or (for an orphan) at all, and the last switch away from it is at least ``grace`` ago."""
        fresh = self.observe_targets(policy, stores)
        unread = [tid for tid, o in fresh.items() if o.state is None]
        if unread:
            errs = "; ".join(f"{tid}: {fresh[tid].error}" for tid in unread)
            log.error("not revoking: a target could not be read again", error=errs)
            return ActionResult(action, False, f"not revoked: could not re-read {errs}")
        again = self._replan(policy, pr, known, fresh)
        match = next((a for a in again.actions if isinstance(a, Revoke) and a.key_id == action.key_id), None)
        if match is None:
            held = [tid for tid, o in fresh.items() if o.state is not None and o.state.current_key_id == action.key_id]
            why = (
                f"target {', '.join(held)} holds key {action.key_id} as current"
                if held
                else "; ".join(n.lstrip("! ") for n in again.notes if "kept" in n or "!" in n)
                or f"the targets changed (phase {again.phase})"
            )
            return self._skip(action, f"not revoking key {action.key_id}: {why}")
        for tid in match.retire_in:
            t = self._target(policy, tid)
            stores[t.store].retire(self.ref(policy, t), action.key_id)
        issuer.revoke_key(action.key_id)
        log.info("revoked key", reason=action.reason, retired_in=list(match.retire_in))
        return ActionResult(action, True)

    def _reload(self, policy: Policy, action: Reload, pr: PolicyReport, known: dict[str, KeyInfo]) -> ActionResult:
        """Re-observe the reload target, re-plan, and start the reload only if the rules still start it now
        (another pass may have started it since this one looked: a reload already done is never repeated)."""
        if self.reloads is None:
            return ActionResult(action, False, "no reload runner configured")
        states = {tid: s for tid, s in (pr.targets or {}).items() if s is not None}
        fresh = self.reloads.observe(policy, action.key_id, states, only=action.target)
        others = tuple(r for r in pr.reloads or () if r.target != action.target)
        again = self._replan(policy, pr, known, {}, others + fresh)
        if not any(isinstance(a, Reload) and a.id == action.id and a.key_id == action.key_id for a in again.actions):
            state = next((r.state for r in fresh if r.unit == action.unit), "gone")
            return self._skip(action, f"reload {action.id} is no longer planned (it is {state} now)")
        key = known.get(action.key_id)
        try:
            self.reloads.reload(
                policy, action.target, action.unit, action.key_id, key.expires_at if key else None, states
            )
        except ReloadConflict as exc:
            return self._skip(action, f"reload {action.id} changed while starting it: {exc}")
        log.info("reload started", reason=action.reason)
        return ActionResult(action, True)

    def ensure_endpoint(self, policy: Policy, target: Target, store: SecretStore) -> None:
        """For format ``key``: the endpoint lives in a second secret, versioned by a hash of its value."""
        assert target.endpoint_secret is not None
        ref = self.ref(policy, target).with_secret(target.endpoint_secret)
        version = f"endpoint-{zlib.crc32(self.endpoint.encode()):08x}"
        state = store.inspect(ref)
        if state.current_key_id == version:
            return
        store.stage(ref, SecretText(self.endpoint), VersionMeta(version, policy.name, None, "text/plain"))
        store.promote(ref, version)
        log.info("published endpoint", target=f"{target.store}:{target.endpoint_secret}")
