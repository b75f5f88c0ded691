"""Logging (structlog) with redaction, and API-call accounting.

Logs are JSON lines when stderr is not a TTY and readable on a TTY, with ``policy``, ``target``, ``key_id``
and ``action`` bound as context. The redaction processor is the last line of defence, not the first: it
replaces every plaintext key alive in this process (see :data:`rotator.model.SECRETS`) and anything shaped
like a JWT or a v1 key, wherever it appears in an event.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from rotator.redaction import REDACTED, _redact, redact_text, redact_value

__all__ = ["REDACTED", "redact_text", "redact_value"]  # re-exported: they live in rotator.redaction

def redaction_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: scrub key material from every value, including rendered exceptions."""
    return {k: _redact(v) for k, v in event_dict.items()}


def configure_logging(level: str = "info", *, stream: TextIO | None = None, json: bool | None = None) -> None:
    """Set up structlog (and the stdlib root logger, for libraries) once per process."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Callable[..., Any] = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redaction_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # libraries (urllib3, botocore, azure) log through the stdlib: keep them quiet and redacted
    handler = logging.StreamHandler(stream)
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)


class _RedactingFilter(logging.Filter):
    """The whole record through the redactor: its message, and the traceback (``exc_info``) and stack
    (``stack_info``) the handler would format after the filters, folded into the message first."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self._formatter.formatStack(record.stack_info)
        record.msg = redact_text(text)
        record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
        return True


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("rotator", **bound)


class CallCounter:
    """Counts API calls by (service, operation, status), for metrics and for the benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._listeners: list[Callable[[str, str, str], None]] = []

    def record(self, service: str, operation: str, status: str | int) -> None:
        key = (service, operation, str(status))
        with self._lock:
            self._counts[key] += 1
            listeners = list(self._listeners)
        for listener in listeners:
            listener(*key)

    def add_listener(self, listener: Callable[[str, str, str], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, str, str], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def snapshot(self) -> Counter[tuple[str, str, str]]:
        with self._lock:
            return Counter(self._counts)

    def total(self, service: str | None = None) -> int:
        with self._lock:
            return sum(n for (s, _, _), n in self._counts.items() if service is None or s == service)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


#: process-wide API call accounting; every backend and the issuer client record here
API_CALLS = CallCounter()


def record_call(service: str, operation: str, status: str | int) -> None:
    """Record one API call (one HTTP request, retries included) made to ``service``."""
    API_CALLS.record(service, operation, status)
