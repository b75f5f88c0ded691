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
from rotator.runtime.app import App, build

log = structlog.get_logger("rotator")


class Daemon:
    """Schedules passes of ``app.engine``. Thread-safe; :meth:`stop` may be called from a signal handler."""

    def __init__(self, app: App, *, only: Iterable[str] | None = None) -> None:
        self.app = app
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
            next_run_time=datetime.now(UTC),
        )

    def run_pass(self) -> PassReport | None:
        """One pass, unless one is running already or the daemon is stopping."""
        if self.stopping.is_set() or not self._pass_lock.acquire(blocking=False):
            return None
        try:
            # the first pass reads every target: a restart (e.g. after a config change that added a target)
            # catches up at once instead of at the next drift check
            report = self.app.engine.run_pass(only=self.only, stop=self.stopping, read_targets=self.passes == 0)
            self.last_report = report
            self.last_finished = datetime.now(UTC)
            self.passes += 1
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

    def start(self) -> None:
        self.scheduler.start()
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
