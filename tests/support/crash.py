"""Simulated crashes between any two API calls.

Every backend and the issuer client call :func:`rotator.observability.record_call` once after each API
request completes. :func:`crash_after` raises :class:`SimulatedCrash` (a ``BaseException``, so no
``except Exception`` in rotator can swallow it) right after the n-th call: the process "dies" between call
n and call n+1, with whatever the services already hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rotator.observability import API_CALLS


class SimulatedCrash(BaseException):
    """The process died here."""


@contextmanager
def crash_after(n: int, *, service: str | None = None) -> Iterator[list[tuple[str, str, str]]]:
    """Crash right after the n-th recorded call (of ``service``, or of any service). Yields the calls seen."""
    seen: list[tuple[str, str, str]] = []

    def listener(svc: str, op: str, status: str) -> None:
        if service is not None and svc != service:
            return
        seen.append((svc, op, status))
        if len(seen) == n:
            raise SimulatedCrash(f"crash after call {n}: {svc}.{op} -> {status}")

    API_CALLS.add_listener(listener)
    try:
        yield seen
    finally:
        API_CALLS.remove_listener(listener)


@contextmanager
def count_calls(service: str | None = None) -> Iterator[list[tuple[str, str, str]]]:
    """Collect the calls made inside the block."""
    seen: list[tuple[str, str, str]] = []

    def listener(svc: str, op: str, status: str) -> None:
        if service is None or svc == service:
            seen.append((svc, op, status))

    API_CALLS.add_listener(listener)
    try:
        yield seen
    finally:
        API_CALLS.remove_listener(listener)
