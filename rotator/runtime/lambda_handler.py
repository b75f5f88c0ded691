"""AWS Lambda entry points.

- :func:`scheduled_handler`: for an EventBridge schedule. Runs one pass (over the policies of the shard in
  ``ROTATOR_SHARD=INDEX/COUNT``, when set: see :mod:`rotator.shard`) and returns its JSON summary;
  raises :class:`RotationFailed` when anything failed, so Lambda's error metrics, retries and failure
  destinations see it.
- :func:`rotation_handler`: Secrets Manager's native rotation protocol (``createSecret``, ``setSecret``,
  ``testSecret``, ``finishSecret``) for secrets whose rotation schedule points at this function. Every step
  is safe to replay. See :mod:`rotator.runtime.native_rotation`.

Metrics: each scheduled pass prints its figures to stdout as CloudWatch Embedded Metric Format lines (see
:func:`rotator.metrics.emf_documents`), which CloudWatch Logs turns into metrics in the namespace
``ROTATOR_METRICS_NAMESPACE`` (default ``rotator``) with the dimension ``service`` = ``ROTATOR_METRICS_SERVICE``
(default ``rotator``; the SAM template sets the stack name). Nothing scrapes a Lambda, so this is its /metrics.

Configuration: ``ROTATOR_CONFIG_YAML`` (the YAML itself), else the file named by ``ROTATOR_CONFIG``, else
``rotator.yaml`` in the deployment package (``$LAMBDA_TASK_ROOT``). The engine is built once per execution
environment and reused by warm invocations; it caches nothing that the stores and the issuer do not also hold.

This module imports neither APScheduler nor any Azure or Google code (a test checks ``sys.modules``).
"""

from __future__ import annotations

import os

# Cold start: this process runs only rotator, which uses no pydantic plugins; looking them up scans every
# installed distribution's entry points (~50 ms). Set before pydantic is first imported.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from rotator.config import Config, for_runtime, load, loads
from rotator.engine import PassReport
from rotator.errors import RotatorError
from rotator.observability import configure_logging, get_logger, redact_text, redact_value
from rotator.runtime.app import App, build

log = get_logger()


class RotationFailed(RotatorError):
    """A pass had failures; the message says which policies and why."""


_app: App | None = None
_lock = threading.Lock()


def load_config() -> Config:
    """The Lambda's config (see the module docstring), validated for the Lambda runtime (a reload target it
    cannot reach is an error). Raises ConfigError."""
    inline = os.environ.get("ROTATOR_CONFIG_YAML")
    with for_runtime("lambda"):
        if inline:
            return loads(inline, source="$ROTATOR_CONFIG_YAML")  # the same safe loader as a file
        path = os.environ.get("ROTATOR_CONFIG") or str(Path(os.environ.get("LAMBDA_TASK_ROOT", ".")) / "rotator.yaml")
        return load(path)


def get_app() -> App:
    """The engine of this execution environment, built on first use."""
    global _app
    with _lock:
        if _app is None:
            config = load_config()
            configure_logging(config.log_level, json=True)
            _app = build(config)
        return _app


def reset() -> None:
    """Drop the cached engine (tests; a config change)."""
    global _app
    with _lock:
        if _app is not None:
            _app.close()
        _app = None


def scheduled_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    """One pass. ``event`` may name ``{"policies": [...]}`` to split a fleet between schedules."""
    app = get_app()
    only = (event or {}).get("policies")
    # N functions with ROTATOR_SHARD=0/N..N-1/N split a fleet between them (rotator.shard)
    from rotator.shard import from_environment

    shard = from_environment(None, os.environ)
    if shard is not None:
        only = shard.select(only or app.config.names())
    report = app.engine.run_pass(only=only, pre_create_delay=app.config.jitter.total_seconds())
    emit_metrics(report)
    if app.config.alerts is not None and app.config.alerts.notifiers:
        from rotator.notify import AlertHub

        AlertHub(app.config.alerts, clock=app.engine.clock).handle(report)
    summary: dict[str, Any] = redact_value(report.to_json())  # the Lambda runtime logs what a handler returns
    if not report.ok:
        failed = [p["policy"] for p in summary["policies"] if not p["ok"]]
        raise RotationFailed(
            redact_text(f"rotation failed for {', '.join(failed) or 'the pass'}: {report.error or summary['counts']}")
        )
    return summary


def emit_metrics(report: PassReport, out: TextIO | None = None) -> None:
    """Print the pass's EMF lines (one JSON object per line). A failure here is logged, never raised: metrics
    must not turn a good pass into a failed invocation."""
    from rotator.metrics import EMF_NAMESPACE, emf_lines

    out = out or sys.stdout
    try:
        lines = emf_lines(
            report,
            service=os.environ.get("ROTATOR_METRICS_SERVICE") or "rotator",
            namespace=os.environ.get("ROTATOR_METRICS_NAMESPACE") or EMF_NAMESPACE,
        )
    except Exception as exc:  # see the docstring
        log.error("could not build the CloudWatch metric lines", error=str(exc))
        return
    for line in lines:
        out.write(line + "\n")
    out.flush()


def rotation_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Secrets Manager native rotation: one step of the four-step protocol."""
    from rotator.runtime.native_rotation import run_step

    return run_step(get_app(), event)
