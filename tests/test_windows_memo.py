"""rotator.windows.gate remembers an answer for the stretch in which it cannot change: it must give exactly
what a fresh search gives, at any moment, in any order of questions (the planner must stay pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from rotator import windows
from rotator.windows import Freeze, WindowConfig

START = datetime(2027, 3, 20, tzinfo=UTC)  # a week before the spring change in Europe
WINDOWS = [
    WindowConfig(cron="0 9 * * MON-THU", duration=timedelta(hours=6), timezone="Europe/Berlin"),
    WindowConfig(cron="30 2 * * *", duration=timedelta(hours=1), timezone="Europe/Berlin"),
    WindowConfig(cron="*/20 * * * *", duration=timedelta(minutes=20), timezone="UTC"),
    WindowConfig(cron="0 10 * * TUE", duration=timedelta(hours=2), timezone="America/New_York"),
    WindowConfig(cron="0 0 1 * *", duration=timedelta(days=2), timezone="Australia/Lord_Howe"),
]


def freezes() -> st.SearchStrategy[tuple[Freeze, ...]]:
    one = st.tuples(st.integers(0, 40 * 24), st.integers(1, 72)).map(
        lambda p: Freeze.model_validate(
            {"from": START + timedelta(hours=p[0]), "to": START + timedelta(hours=p[0] + p[1])}
        )
    )
    return st.lists(one, max_size=3).map(tuple)


@settings(max_examples=60, deadline=None)
@given(
    window=st.sampled_from([*WINDOWS, None]),
    frozen=freezes(),
    minutes=st.lists(st.integers(0, 40 * 24 * 60), min_size=1, max_size=25),
)
def test_the_remembered_gate_is_the_fresh_one(
    window: WindowConfig | None, frozen: tuple[Freeze, ...], minutes: list[int]
) -> None:
    windows._MEMO.clear()
    for m in minutes:
        base = START + timedelta(minutes=m, seconds=m % 7)
        fresh = windows._gate(window, frozen, base)
        probes = [base, base + timedelta(seconds=1), base + timedelta(minutes=m % 90)]
        if fresh.next_start is not None:  # around the edge of the stretch the answer was kept for
            edge = fresh.next_start
            probes += [edge - timedelta(seconds=1), edge, edge + timedelta(minutes=30), edge + timedelta(minutes=90)]
        if window is not None:  # around the end of the opening base is in (or the next one)
            fire = windows._fire_at_or_after(window, base - window.duration)
            if fire is not None:
                end = fire + window.duration
                probes += [end - timedelta(seconds=1), end, end + timedelta(minutes=45)]
        for now in probes:
            assert windows.gate(window, frozen, now) == windows._gate(window, frozen, now), (base, now)
