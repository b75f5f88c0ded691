"""Fixtures for the issuer tests: a real emulator over HTTP on 127.0.0.1 and a client pointed at it."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.issuers.emulator import Emulator
from rotator.issuers.momento import MomentoIssuer


class FakeClock:
    """An injectable clock (epoch seconds) that only moves when told to."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(int(time.time())))


@pytest.fixture
def emulator(tmp_path: Path, clock: FakeClock) -> Iterator[Emulator]:
    emu = Emulator(
        tmp_path / "state" / "emulator.db",
        clock=clock,
        bootstrap_key_file=tmp_path / "state" / "owner.key",
        seed=1234,
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff delays the client asked for (it never really sleeps in tests)."""
    return []


@pytest.fixture
def issuer(emulator: Emulator, sleeps: list[float]) -> Iterator[MomentoIssuer]:
    with MomentoIssuer(
        emulator.url, emulator.bootstrap_key, timeout=5.0, sleep=sleeps.append, rng=random.Random(7)
    ) as client:
        yield client
