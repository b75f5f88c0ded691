"""``rotator run``: a pass every ``interval`` (with jitter), plus a pass at the next moment a plan can change
on its own (a key's due time, the end of a grace period, an orphan deadline). One pass at a time.

SIGTERM or SIGINT lets the action in flight finish, skips the rest of the pass (every action is idempotent
and the next pass picks up where this one stopped), and exits 0.

With ``leader_election.enabled`` (several replicas of a Deployment) passes run only while this process holds
the Lease (:mod:`rotator.runtime.leader`): a standby skips every scheduled pass and starts one as soon as it
becomes leader; a pass in flight when leadership is lost stops after the action in flight, as on SIGTERM; on
SIGTERM the Lease is released once the pass in flight has stopped, so a standby takes over at its next try.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.config import Config
from rotator.engine import Clock, PassReport, system_clock
from rotator.errors import IssuerAuthError
from rotator.metrics import Metrics
from rotator.notify import AlertHub
from rotator.runtime.app import App, build, settle_heap
from rotator.runtime.http import HealthServer

if TYPE_CHECKING:
    from rotator.runtime.leader import LeaseElector

log = structlog.get_logger("rotator")


class _PassStop(threading.Event):
    """The ``stop`` flag of one pass: set by SIGTERM or on losing leadership, and also reads as set whenever the
    Lease is no longer held (even before the election thread has noticed: it may be stuck in a request)."""

    def __init__(self, elector: LeaseElector | None) -> None:
        super().__init__()
        self._elector = elector

    def is_set(self) -> bool:
        return super().is_set() or (self._elector is not None and not self._elector.is_leader())


class Daemon:
    """Schedules passes of ``app.engine``. Thread-safe; :meth:`stop` may be called from a signal handler."""

    def __init__(
        self,
        app: App,
        *,
        only: Iterable[str] | None = None,
        alerts: AlertHub | None = None,
        metrics: Metrics | None = None,
        elector: LeaseElector | None = None,
    ) -> None:
        self.app = app
        self.elector = elector
        if elector is not None:
            elector.on_change = self.on_leadership  # before elector.start(), in start()
        self._pass_stop: _PassStop | None = None
        self._leader_gauge: Any = None
        self.metrics = metrics or Metrics()
        self.metrics.configure(app.config)  # the interval and alert_before, which the alert rules compare with
        self.metrics.watch(app.engine.limits)
        self.alerts = alerts if alerts is not None else AlertHub(app.config.alerts, clock=app.engine.clock)
        self._alert_sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")
        self.http: HealthServer | None = None
        self.only = list(only) if only is not None else None
        self.stopping = threading.Event()
        self._pass_lock = threading.Lock()
        self.last_report: PassReport | None = None
        #: why the daemon stopped on its own (a refused management key), raised by run_daemon
        self.fatal: Exception | None = None
        self.last_finished: datetime | None = None
        self.passes = 0
        config = app.config
        self.scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
        self.scheduler.add_job(
            self.run_pass,
            IntervalTrigger(seconds=config.interval.total_seconds(), jitter=int(config.jitter.total_seconds()) or None),
            id="reconcile",
        )

    def run_pass(self) -> PassReport | None:
        """One pass, unless one is running already, the daemon is stopping, or another replica leads."""
        if self.stopping.is_set() or (self.elector is not None and not self.elector.is_leader()):
            return None
        if not self._pass_lock.acquire(blocking=False):
            return None
        try:
            stop = _PassStop(self.elector)
            self._pass_stop = stop
            if self.stopping.is_set() or stop.is_set():
                return None
            # the first pass reads every target: a restart (e.g. after a config change that added a target)
            # catches up at once instead of at the next drift check; so does a replica that has just become leader
            report = self.app.engine.run_pass(
                only=self.only,
                stop=stop,
                read_targets=self.passes == 0,
                pre_create_delay=self.app.config.jitter.total_seconds(),
            )
            if stop.is_set() and not self.stopping.is_set():
                log.warning("leadership lost during the pass: the rest of it is left to the new leader")
            self.last_report = report
            self.last_finished = datetime.now(UTC)
            self.passes += 1
            if report.issuer_auth_error and self.elector is not None and self.passes == 1:
                # as at start-up without an election: a refused key on the first pass stops the daemon (exit 2)
                self.fatal = IssuerAuthError(str(report.error))
                self.stop()
                return report
            self.metrics.observe(report)
            # alerts go out on their own thread, in order, bounded by their own deadline (notify.SEND_BUDGET):
            # a webhook that hangs or drips never holds the pass lock, so it never delays the next pass
            self._alert_sender.submit(self.alerts.handle, report)
            self._schedule_wake(report)
            return report
        finally:
            self._pass_stop = None
            self._pass_lock.release()

    def on_leadership(self, leader: bool) -> None:
        """Called by the elector's thread when leadership starts (run a pass now) or ends (stop the pass)."""
        if self._leader_gauge is not None:
            self._leader_gauge.set(1 if leader else 0)
        if leader:
            if not self.stopping.is_set() and self.scheduler.running:
                self.passes = 0  # read every target: the previous leader may have left work half done
                with contextlib.suppress(SchedulerNotRunningError):  # SIGTERM came in between
                    self.scheduler.add_job(self.run_pass, id="leader", replace_existing=True)
            return
        stop = self._pass_stop
        if stop is not None:
            stop.set()

    def _schedule_wake(self, report: PassReport) -> None:
        wake = report.wake_at()
        if wake is None or self.stopping.is_set():
            return
        # the engine's clock may be shifted (--now); convert its wake time to a wall-clock delay
        delay = (wake - self.app.engine.clock()).total_seconds() + 1
        if delay <= 0 or delay >= self.app.config.interval.total_seconds():
            return  # the regular reconcile comes first
        run_at = datetime.now(UTC) + timedelta(seconds=delay)
        self.scheduler.add_job(self.run_pass, DateTrigger(run_date=run_at), id="wake", replace_existing=True)
        log.debug("next pass scheduled", at=run_at.isoformat())

    def _standby(self) -> str | None:
        """Why this replica runs no passes (another holds the Lease), or None when it may run them."""
        if self.elector is None:
            return None
        state = self.elector.state()
        if state.leader:
            return None
        holder = state.holder or "nobody yet"
        return f"standby (identity {state.identity}): the Lease is held by {holder}"

    def healthy(self) -> tuple[bool, str]:
        if self.elector is not None and not self.stopping.is_set() and not self.elector.running():
            return False, "leader election stopped"
        if self.scheduler.running and not self.stopping.is_set():
            standby = self._standby()
            if standby is not None:
                return True, f"ok: scheduler running, {standby}"
            return True, "ok: scheduler running" + (" (leader)" if self.elector is not None else "")
        return False, "scheduler stopped"

    def ready(self) -> tuple[bool, str]:
        standby = self._standby()
        if standby is not None:
            return True, f"ok: {standby}"  # a standby is ready to take over: it must not block a rollout
        if self.last_report is None or self.last_finished is None:
            return False, "no pass has finished yet"
        age = datetime.now(UTC) - self.last_finished
        limit = 2 * self.app.config.interval
        if age > limit:
            return False, f"last pass finished {int(age.total_seconds())}s ago (more than twice the interval)"
        if not self.last_report.issuer_ok:
            # a fixed reason: the error text (hosts, addresses, the issuer's own words) is in the log, not here
            return False, "not ready: the issuer did not answer the last pass (the error is in the log)"
        return True, f"ok: last pass finished {int(age.total_seconds())}s ago"

    def status_page(self) -> bytes:
        """The status page of the last pass (read-only; see rotator.status_page)."""
        from rotator.status_page import render

        refresh = max(5, int(self.app.config.interval.total_seconds()))
        return render(self.last_report, self.app.config, self.app.engine.clock(), refresh=refresh).encode()

    def start(self) -> None:
        """Serve the probes, run the first pass now, then schedule the rest.

        Raises IssuerAuthError when the first pass finds the management key refused: a daemon that can never
        succeed should stop with the remedy (exit code 2), not run on. An unreachable issuer is retried.
        """
        listen = self.app.config.http.listen
        if self.elector is not None:
            from prometheus_client import Gauge

            self._leader_gauge = Gauge(
                "rotator_leader",
                "1 while this process holds the leader-election Lease and runs passes, else 0.",
                registry=self.metrics.registry,
            )
            self._leader_gauge.set(0)
        if listen:
            page = self.status_page if self.app.config.http.status_page else None
            self.http = HealthServer(
                listen, health=self.healthy, ready=self.ready, metrics=self.metrics.render, page=page
            )
            self.http.start()
            served = "/healthz, /readyz and /metrics" + (", and the status page at /" if page else "")
            log.info(f"serving {served}", listen=self.http.address)
        self.scheduler.start()
        if self.elector is not None:
            # the first pass runs when (if) this replica becomes leader: on_leadership schedules it
            self.elector.start()
            log.info(
                "rotator started; campaigning for the Lease",
                lease=f"{self.elector.client.namespace}/{self.elector.client.name}",
                identity=self.elector.identity,
            )
            return
        first = self.run_pass()
        if first is not None and first.issuer_auth_error:
            self.stopping.set()
            self.scheduler.shutdown(wait=False)
            if self.http is not None:
                self.http.stop()
            raise IssuerAuthError(str(first.error))
        log.info(
            "rotator started",
            interval_s=self.app.config.interval.total_seconds(),
            policies=len(self.app.config.policies),
        )

    def stop(self) -> None:
        self.stopping.set()
        stop = self._pass_stop
        if stop is not None:
            stop.set()

    def wait(self) -> None:
        self.stopping.wait()
        log.info("stopping: finishing the action in flight")
        self.scheduler.shutdown(wait=True)
        if self.elector is not None:
            # only now that no pass runs: a standby may start one as soon as the Lease is released
            self.elector.stop(release=True)
        if self.http is not None:
            self.http.stop()
        self._alert_sender.shutdown(wait=True)  # the last pass's alerts, within their deadline
        self.metrics.close()
        log.info("rotator stopped")


def run_daemon(config: Config, *, clock: Clock = system_clock, only: Iterable[str] | None = None) -> int:
    with build(config, clock=clock, preflight="now") as app:  # a bad role ends start-up (exit 2), not a pass
        elector = None
        if config.leader_election.enabled:
            from rotator.runtime.leader import open_elector

            elector = open_elector(config.leader_election)
            app.closers.append(elector.client.close)
        daemon = Daemon(app, only=only, elector=elector)
        settle_heap()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            daemon.stop()

        previous: dict[int, Any] = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            daemon.start()
            daemon.wait()
            if daemon.fatal is not None:
                raise daemon.fatal
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    return 0
