"""Client-side request quotas in the Momento issuer (issue 27), over real HTTP against the emulator (and the hostile
proxy for a 429 without ``Retry-After``).

The key API's limits are not documented: its 429 and ``Retry-After`` are the source of truth. Every attempt is
charged in the scope of the API's host (a no-op unless a refusal paused it); a 429 pauses that scope, so every
worker waits out the ``Retry-After`` (capped at ``backoff_max``), not only the refused one, and the refused one
does not wait twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.errors import IssuerUnavailable
from rotator.issuers.emulator import Emulator
from rotator.issuers.momento import MOMENTO_QUOTAS, MomentoIssuer
from rotator.quotas import RateLimits
from tests.servers.hostile_issuer import HostileIssuer, replace


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path / "emulator.db", bootstrap_key_file=tmp_path / "owner.key", seed=27)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def _refuse(emu: Emulator, retry_after: float) -> None:
    emu.failure_statuses = (429,)
    emu.retry_after = retry_after
    emu.failure_rate = 1.0


def _scope(emu: Emulator) -> str:
    return emu.url.split("://", 1)[1].rstrip("/")


def test_the_quota_is_undocumented_and_scoped_by_host(emulator: Emulator) -> None:
    (q,) = MOMENTO_QUOTAS
    assert (q.service, q.name, q.limit, q.scope) == ("momento", "requests", None, "issuer")
    assert "not documented" in q.source
    limits = RateLimits()
    _refuse(emulator, 0.05)
    with MomentoIssuer(emulator.url, emulator.bootstrap_key, max_attempts=3, limits=limits) as issuer:
        with pytest.raises(IssuerUnavailable):
            issuer.list_roles()
        emulator.failure_rate = 0.0
        assert issuer.list_roles()
    (stats,) = limits.stats()
    # every attempt charged, retries included; every 429 reported
    assert (stats["service"], stats["quota"], stats["scope"]) == ("momento", "requests", _scope(emulator))
    assert (stats["admitted"], stats["refused"], stats["limit"]) == (4, 3, None)


def test_a_429_pauses_every_worker_for_its_retry_after(emulator: Emulator) -> None:
    limits = RateLimits()
    with MomentoIssuer(emulator.url, emulator.bootstrap_key, max_attempts=1, limits=limits) as issuer:
        _refuse(emulator, 0.5)
        with pytest.raises(IssuerUnavailable, match="429"):
            issuer.list_roles()  # refused, no retry: this worker gives up
        refused_at = time.monotonic()
        emulator.failure_rate = 0.0
        done: list[float] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                issuer.list_roles()
                done.append(time.monotonic() - refused_at)
            except BaseException as exc:  # asserted below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert errors == [] and len(done) == 4
    # the other workers were never refused: they waited out the pause, then went through
    assert all(0.45 <= d <= 2.0 for d in done), done
    assert emulator.injected_failures == 1
    (stats,) = limits.stats()
    assert stats["refused"] == 1 and stats["waited_seconds"] >= 4 * 0.4


def test_the_refused_worker_does_not_wait_twice(emulator: Emulator) -> None:
    """Its own backoff (the Retry-After) and the scope's pause are the same wait."""
    _refuse(emulator, 0.3)
    with MomentoIssuer(emulator.url, emulator.bootstrap_key, max_attempts=3, limits=RateLimits()) as issuer:
        started = time.monotonic()
        with pytest.raises(IssuerUnavailable):
            issuer.list_roles()
        elapsed = time.monotonic() - started
    assert 0.55 <= elapsed < 1.1, elapsed  # two waits of 0.3 s, not four


def test_a_long_retry_after_pauses_no_longer_than_backoff_max(emulator: Emulator) -> None:
    limits = RateLimits()
    with MomentoIssuer(emulator.url, emulator.bootstrap_key, max_attempts=1, backoff_max=0.3, limits=limits) as issuer:
        _refuse(emulator, 120)
        with pytest.raises(IssuerUnavailable):
            issuer.list_roles()
        emulator.failure_rate = 0.0
        started = time.monotonic()
        assert issuer.list_roles()
        waited = time.monotonic() - started
    assert 0.25 <= waited <= 1.0, waited


def test_a_429_without_retry_after_pauses_for_the_first_pause(emulator: Emulator) -> None:
    limits = RateLimits()
    with HostileIssuer(emulator.url) as proxy:
        proxy.on("GET", "/roles", replace(429, b'{"code": "throttled", "message": "slow down"}'))
        with MomentoIssuer(proxy.url, emulator.bootstrap_key, max_attempts=1, limits=limits) as issuer:
            with pytest.raises(IssuerUnavailable, match="429"):
                issuer.list_roles()
            refused_at = time.monotonic()
            proxy.on("GET", "/roles", None)
            assert issuer.list_roles()
            waited = time.monotonic() - refused_at
    assert 0.45 <= waited <= 1.5, waited  # rotator.quotas.FIRST_PAUSE
    assert proxy.count("GET", "/roles") == 2


def test_an_issuer_without_the_process_limits() -> None:
    """Opened alone, it keeps its own; with an injected sleep (a test recording its backoff) it charges nothing."""
    assert MomentoIssuer("http://127.0.0.1:9").limits.enabled
    assert not MomentoIssuer("http://127.0.0.1:9", sleep=lambda s: None).limits.enabled
    shared = RateLimits()
    assert MomentoIssuer("http://127.0.0.1:9", sleep=lambda s: None, limits=shared).limits is shared
