"""``rotator run``: a pass every ``interval`` (with jitter), plus a pass at the next moment a plan can change
on its own (a key's due time, the end of a grace period, an orphan deadline). One pass at a time.

SIGTERM or SIGINT lets the action in flight finish, skips the rest of the pass (every action is idempotent
and the next pass picks up where this one stopped), and exits 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.config import Config
from rotator.engine import Clock, PassReport, system_clock
from rotator.errors import IssuerAuthError
from rotator.metrics import Metrics
from rotator.notify import AlertHub
from rotator.runtime.app import App, build
from rotator.runtime.http import HealthServer

log = structlog.get_logger("rotator")


class Daemon:
    """Schedules passes of ``app.engine``. Thread-safe; :meth:`stop` may be called from a signal handler."""

    def __init__(
        self,
        app: App,
        *,
        only: Iterable[str] | None = None,
        alerts: AlertHub | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics or Metrics()
        self.metrics.configure(app.config)  # the interval and alert_before, which the alert rules compare with
        self.alerts = alerts if alerts is not None else AlertHub(app.config.alerts, clock=app.engine.clock)
        self.http: HealthServer | None = None
        self.only = list(only) if only is not None else None
        self.stopping = threading.Event()
        self._pass_lock = threading.Lock()
        self.last_report: PassReport | None = None
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
        """One pass, unless one is running already or the daemon is stopping."""
        if self.stopping.is_set() or not self._pass_lock.acquire(blocking=False):
            return None
        try:
            # the first pass reads every target: a restart (e.g. after a config change that added a target)
            # catches up at once instead of at the next drift check
            report = self.app.engine.run_pass(
                only=self.only,
                stop=self.stopping,
                read_targets=self.passes == 0,
                pre_create_delay=self.app.config.jitter.total_seconds(),
            )
            self.last_report = report
            self.last_finished = datetime.now(UTC)
            self.passes += 1
            self.metrics.observe(report)
            self.alerts.handle(report)
            self._schedule_wake(report)
            return report
        finally:
            self._pass_lock.release()

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

    def healthy(self) -> tuple[bool, str]:
        if self.scheduler.running and not self.stopping.is_set():
            return True, "ok: scheduler running"
        return False, "scheduler stopped"

    def ready(self) -> tuple[bool, str]:
        if self.last_report is None or self.last_finished is None:
            return False, "no pass has finished yet"
        age = datetime.now(UTC) - self.last_finished
        limit = 2 * self.app.config.interval
        if age > limit:
            return False, f"last pass finished {int(age.total_seconds())}s ago (more than twice the interval)"
        if not self.last_report.issuer_ok:
            return False, f"the issuer did not answer the last pass: {self.last_report.error}"
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
        if listen:
            page = self.status_page if self.app.config.http.status_page else None
            self.http = HealthServer(
                listen, health=self.healthy, ready=self.ready, metrics=self.metrics.render, page=page
            )
            self.http.start()
            served = "/healthz, /readyz and /metrics" + (", and the status page at /" if page else "")
            log.info(f"serving {served}", listen=self.http.address)
        self.scheduler.start()
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

    def wait(self) -> None:
        self.stopping.wait()
        log.info("stopping: finishing the action in flight")
        self.scheduler.shutdown(wait=True)
        if self.http is not None:
            self.http.stop()
        self.metrics.close()
        log.info("rotator stopped")


def run_daemon(config: Config, *, clock: Clock = system_clock, only: Iterable[str] | None = None) -> int:
    with build(config, clock=clock) as app:
        daemon = Daemon(app, only=only)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            daemon.stop()

        previous: dict[int, Any] = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            daemon.start()
            daemon.wait()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    return 0
