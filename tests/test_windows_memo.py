"""rotator.windows.gate remembers an answer for the stretch in which it cannot change: it must give exactly
what a fresh search gives, at any moment, in any order of questions (the planner must stay pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

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


# The openings as one set of instants, built without APScheduler's search: every wall time the expression
# matches (stepped in the zone-less wall clock), at each offset at which it exists on the zone's clock (both, on
# the hour an autumn change repeats), and a wall time a spring change skips at the change itself (cron(8)).
# Whatever moment a search starts from, it must find the first of these at or after that moment.
CHANGES = [  # (zone, a moment of a change in it)
    ("Europe/Berlin", datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),  # 02:00 CET -> 03:00 CEST
    ("Europe/Berlin", datetime(2027, 10, 31, 1, 0, tzinfo=UTC)),  # 03:00 CEST -> 02:00 CET
    ("America/New_York", datetime(2027, 3, 14, 7, 0, tzinfo=UTC)),  # 02:00 EST -> 03:00 EDT
    ("America/New_York", datetime(2027, 11, 7, 6, 0, tzinfo=UTC)),  # 02:00 EDT -> 01:00 EST
    ("Australia/Lord_Howe", datetime(2027, 10, 2, 15, 30, tzinfo=UTC)),  # 02:00 -> 02:30, a half-hour change
    ("Australia/Lord_Howe", datetime(2027, 4, 3, 15, 0, tzinfo=UTC)),  # 02:00 -> 01:30
]
CRONS = ["30 2 * * *", "15,40 2 * * *", "*/20 * * * *", "0 * * * *", "45 1 * * *", "10 3 * * *", "0 2 * * SUN"]


def _reference_openings(cron: str, zone: str, around: datetime) -> list[datetime]:
    tz = ZoneInfo(zone)
    wall_clock = windows.trigger(cron, "UTC")  # the expression on a clock without changes: wall times as UTC
    out: set[datetime] = set()
    wall = (around.astimezone(tz) - timedelta(days=2)).replace(tzinfo=None)
    end = wall + timedelta(days=12)  # a weekly expression opens again within it
    while True:
        nxt = wall_clock.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        if nxt is None or nxt.replace(tzinfo=None) > end:
            break
        w = nxt.replace(tzinfo=None)
        found = False
        for fold in (0, 1):
            u = w.replace(tzinfo=tz, fold=fold).astimezone(UTC)
            if u.astimezone(tz).replace(tzinfo=None) == w:
                out.add(u)
                found = True
        if not found:  # skipped by a spring change: at the change, found minute by minute
            m = w.replace(tzinfo=tz, fold=1).astimezone(UTC).replace(second=0, microsecond=0)
            while m.astimezone(tz).utcoffset() == (m - timedelta(minutes=1)).astimezone(tz).utcoffset():
                m += timedelta(minutes=1)
            out.add(m)
        wall = w + timedelta(seconds=1)
    return sorted(out)


@settings(max_examples=300, deadline=None)
@given(
    change=st.sampled_from(CHANGES),
    cron=st.sampled_from(CRONS),
    seconds=st.one_of(st.integers(-4 * 3600, 4 * 3600), st.integers(-240, 240).map(lambda m: m * 60)),
    jitter=st.sampled_from([0, 0, 1, -1, 0.5]),
)
def test_every_search_finds_the_same_openings(
    change: tuple[str, datetime], cron: str, seconds: int, jitter: float
) -> None:
    zone, moment = change
    window = WindowConfig(cron=cron, duration=timedelta(minutes=30), timezone=zone)
    t = moment + timedelta(seconds=seconds + jitter)
    expected = next(x for x in _reference_openings(cron, zone, moment) if x >= t)
    assert windows._fire_at_or_after(window, t) == expected, (zone, cron, t)
