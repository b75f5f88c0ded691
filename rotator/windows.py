"""Change windows and freezes: when a due rotation may start (issue 24).

```yaml
defaults:
  window: {cron: "0 9 * * MON-THU", duration: 6h, timezone: Europe/Berlin}   # a rotation may start in here
policies:
  - name: checkout-api
    window: {cron: "0 10 * * TUE", duration: 2h, timezone: America/New_York}
freeze:                                                      # no rotation starts in these ranges
  - {from: 2026-12-24T00:00:00Z, to: 2026-12-27T00:00:00Z, reason: holidays}
```

A window opens at each time its cron expression fires, in its ``timezone`` (an IANA name, through ``zoneinfo``),
and stays open for ``duration``. The expression is parsed and stepped by APScheduler's ``CronTrigger`` (a
dependency already), and daylight-saving changes follow cron(8) (measured in tests/test_config_window.py and
tests/test_windows_memo.py): a wall time the spring change skips opens at the change (02:30 in Berlin opens at
01:00 UTC, 03:00 on the clock, that day), one the autumn change repeats opens twice (as APScheduler steps it).
Three places where APScheduler 3 departs from standard cron are mended here rather than left to surprise:

- numeric days of the week follow crontab(5), ``0`` and ``7`` = Sunday, ``1`` = Monday; APScheduler 3 reads
  ``0`` as Monday (agronholm/apscheduler#286, fixed only in 4.0), so numbers are turned into day names first;
- crontab(5) fires when *either* a restricted day of month *or* a restricted day of week matches; APScheduler
  requires both. A window restricting both is refused with the fix, rather than opening on other days than
  the user reads;
- a skipped wall time: APScheduler opens it at the offset before the change when searching from before the
  change, and never when searching from the half hour after it, so two searches could disagree on the next
  opening (see _fire_at_or_after).

Everything here is pure: the planner passes ``now`` in, nothing reads a clock.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator.durations import Duration, format_duration

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: how far ahead a window's next opening is looked for, and how far the config check looks for its longest gap
HORIZON = timedelta(days=400)
#: the most steps (window openings, freezes) one search for the next opening takes
MAX_STEPS = 1_000
#: the most window openings the config check steps through (a window every minute for 400 days has 576,000)
MAX_GAP_STEPS = 4_000
ZERO = timedelta(0)


def _dow_names(field: str) -> str:
    """A crontab(5) day-of-week field as the explicit list of day names it means (``1-5`` -> ``mon,tue,wed,
    thu,fri``; ``0`` and ``7`` are Sunday; ``*/2`` steps from Sunday), so APScheduler, whose week starts on
    Monday and which reads steps on named ranges its own way, is never left to interpret it."""
    names = {d: i for i, d in enumerate(_DAYS[:7])}

    def number(token: str) -> int:
        t = token.lower()
        if t in names:
            return names[t]
        if t.isdigit() and int(t) <= 7:
            return int(t)
        raise ValueError(f"day of week {token[:20]!r} is not 0-7 (0 and 7 are Sunday) or a name MON-SUN")

    days: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"day of week {part[:20]!r}: a step is a whole number from 1, e.g. */2")
            step = int(step_text)
        if base in ("*", "?"):
            days.update(range(0, 7, step))
            continue
        lo, dash, hi = base.partition("-")
        if not dash:
            if slash:
                raise ValueError(f"day of week {part[:20]!r}: a step needs a range, e.g. 1-5/2 or */2")
            days.add(number(lo) % 7)
            continue
        first, last = number(lo), number(hi)
        if hi.lower() == "sun" and first > 0:
            last = 7  # a range may end on Sunday (FRI-SUN, as 5-7)
        if last < first:
            raise ValueError(f"day of week {part[:20]!r} runs backwards: write it as two parts, e.g. FRI-SAT,SUN")
        days.update(n % 7 for n in range(first, last + 1, step))
    return ",".join(_DAYS[n] for n in sorted(days))


@functools.lru_cache(maxsize=256)
def trigger(cron: str, timezone: str) -> CronTrigger:
    """The APScheduler trigger for a crontab(5) expression (raises ValueError with what is wrong)."""
    from apscheduler.triggers.cron import CronTrigger  # only when a window is configured: not on a cold start

    expr = _MACROS.get(cron.strip().lower(), cron.strip())
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"{cron!r} has {len(fields)} field(s): a cron expression has 5 (minute hour day-of-month month "
            'day-of-week), e.g. "0 9 * * MON-FRI"'
        )
    minute, hour, dom, month, dow = fields
    if dom not in ("*", "?") and dow not in ("*", "?"):
        raise ValueError(
            f"{cron!r} restricts both the day of month ({dom}) and the day of week ({dow}); cron runs when either "
            "matches, APScheduler only when both do: give one of them and '*' for the other, or use two policies"
        )
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=dom.replace("?", "*"),
            month=month,
            day_of_week=_dow_names(dow),
            timezone=ZoneInfo(timezone),
        )
    except ValueError as exc:
        raise ValueError(f"{cron!r} is not a cron expression: {exc}") from None


class WindowConfig(BaseModel):
    """``window: {cron, duration, timezone}``: a due rotation starts only while a window is open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str
    duration: Duration
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v[:64]!r}: use an IANA name such as Europe/Berlin, America/New_York or UTC"
            ) from None
        return v

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s, e.g. 2h")
        return v

    @model_validator(mode="after")
    def _cron(self) -> WindowConfig:
        # after the fields: the expression is checked in the window's own time zone (when that one is valid)
        trigger(self.cron, self.timezone)
        return self

    def __str__(self) -> str:
        return f"{self.cron} for {format_duration(self.duration)} ({self.timezone})"


class Freeze(BaseModel):
    """``freeze: [{from, to, reason}]``: no rotation starts in ``[from, to)``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    reason: str = Field("", max_length=200)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError(
                f"{v.isoformat()} has no time zone: add one, e.g. {v.strftime('%Y-%m-%dT%H:%M:%S')}Z or +01:00"
            )
        return v

    @model_validator(mode="after")
    def _order(self) -> Freeze:
        if self.end <= self.start:
            raise ValueError(
                f"ends ({_fmt(self.end)}) before it starts ({_fmt(self.start)}): 'to' must be after 'from'"
            )
        return self

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"freeze {_fmt(self.start)}..{_fmt(self.end)}{why}"


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fire_at_or_after(window: WindowConfig, t: datetime) -> datetime | None:
    """The first opening at or after ``t``: one consistent sequence of instants, whatever ``t`` a search starts
    from (gate's memo and the planner's purity rest on that: a later search never finds an opening an earlier
    one stepped over, nor the reverse; tests/test_windows_memo.py checks it against openings built without
    APScheduler's search).

    APScheduler searches in wall time from ``t``'s wall time, and a wall time that a spring change skips is
    not one sequence there: searched from before a one-hour change, 02:30 in Berlin comes back at the old
    offset (01:30 UTC, 03:30 on the clock), searched from the half hour after the change it is never found, and
    across Lord Howe's half-hour change it is never found at all. Here a wall time a change skips opens at the
    change itself (01:00 UTC, 03:00 on the clock), as cron(8) runs a job whose time was skipped right after the
    change: APScheduler's answer is taken for every wall time that exists, and a spring change between ``t``
    and that answer whose skipped stretch the expression matches comes first."""
    trig = trigger(window.cron, window.timezone)
    tz = trig.timezone
    fire: datetime | None = trig.get_next_fire_time(None, t)
    found = fire.astimezone(UTC) if fire is not None else None
    for change in _spring_changes(tz, t, found if found is not None else t + HORIZON):
        if _matches_skipped(window, tz, change):
            return change
    return found


#: a zone's changes are further apart than this (Morocco's around Ramadan: about a month), so a stretch this long
#: holds at most one, found by comparing the offsets at its ends
_CHANGE_STEP = timedelta(days=7)


def _offset(tz: tzinfo, t: datetime) -> timedelta:
    return t.astimezone(tz).utcoffset() or ZERO


def _spring_changes(tz: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants in ``[start, end]`` at which ``tz`` moves its clock forward, each to the whole second."""
    out = []
    a = start - timedelta(seconds=1)  # a change at start itself counts
    while a < end:
        b = min(a + _CHANGE_STEP, end)
        if _offset(tz, b) > _offset(tz, a):
            lo, hi = int(a.timestamp()), int(b.timestamp()) + 1
            later = _offset(tz, datetime.fromtimestamp(hi, UTC))
            while hi - lo > 1:  # zones change on whole seconds (whole minutes, in fact)
                mid = (lo + hi) // 2
                if _offset(tz, datetime.fromtimestamp(mid, UTC)) == later:
                    hi = mid
                else:
                    lo = mid
            change = datetime.fromtimestamp(hi, UTC)
            if start <= change <= end:
                out.append(change)
        a = b
    return out


def _matches_skipped(window: WindowConfig, tz: tzinfo, change: datetime) -> bool:
    """Whether the expression matches a wall time in the stretch that the spring change at ``change`` skips
    (stepped on a clock without changes: the wall times read as UTC)."""
    skipped_from = (change + _offset(tz, change - timedelta(seconds=1))).replace(tzinfo=None)
    skipped_to = (change + _offset(tz, change)).replace(tzinfo=None)
    hit = trigger(window.cron, "UTC").get_next_fire_time(None, skipped_from.replace(tzinfo=UTC))
    return hit is not None and hit.replace(tzinfo=None) < skipped_to


def open_at(window: WindowConfig, t: datetime) -> datetime | None:
    """If ``window`` is open at ``t``, when the opening it is in began; else None."""
    fire = _fire_at_or_after(window, t - window.duration + timedelta(microseconds=1))
    return fire if fire is not None and fire <= t else None


@dataclass(frozen=True)
class Gate:
    """Where ``now`` stands against a policy's window and the freezes."""

    open: bool
    #: when the next rotation may start (``now`` when open; None when nothing opens within HORIZON)
    next_start: datetime | None
    #: why it is closed: "outside window ..." or the freeze
    why: str = ""


#: (window, freezes) -> (from, until, gate): a gate that holds for every moment in [from, until). Policies
#: share a window (the default), and a fleet waiting for it asks the same question once per policy and pass;
#: the answer is the same for every moment of such a stretch (see _remember), so it is computed once
_MEMO: dict[tuple[WindowConfig | None, tuple[Freeze, ...]], tuple[datetime, datetime, Gate]] = {}
_MEMO_MAX = 1024


def gate(window: WindowConfig | None, freezes: tuple[Freeze, ...], now: datetime) -> Gate:
    """Whether a due rotation may start at ``now``, and if not, the first moment one may."""
    memo = _MEMO.get((window, freezes))
    if memo is not None and memo[0] <= now < memo[1]:
        g = memo[2]
        return Gate(True, now, "") if g.open else g
    g = _gate(window, freezes, now)
    _remember(window, freezes, now, g)
    return g


def _remember(window: WindowConfig | None, freezes: tuple[Freeze, ...], now: datetime, g: Gate) -> None:
    """Keep ``g`` for the moments after ``now`` that have the very same answer (the plan's notes included):

    - open at ``now``: open until the opening's end, or the next freeze's start if sooner;
    - closed because outside the window: the same until the next opening (no moment in between is inside
      the window, and the search from any of them takes the same steps from there on).

    A gate closed by a freeze first is not kept (the window may close during the freeze, which changes the
    reason): freezes are few and short."""
    if window is None or g.next_start is None:
        return
    if g.open:
        began = open_at(window, now)
        if began is None:
            return
        until = began + window.duration
        until = min([until, *(f.start for f in freezes if f.start > now)])
    elif g.why.startswith("outside its window"):
        fire = _fire_at_or_after(window, now)
        if fire is None:
            return
        until = fire
    else:
        return
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[(window, freezes)] = (now, until, g)


def _gate(window: WindowConfig | None, freezes: tuple[Freeze, ...], now: datetime) -> Gate:
    t = now
    why = ""
    for _ in range(MAX_STEPS):
        if t - now > HORIZON:
            return Gate(False, None, why)
        if window is not None and open_at(window, t) is None:
            fire = _fire_at_or_after(window, t)
            if not why:
                why = f"outside its window ({window})"
            if fire is None:
                return Gate(False, None, why)
            t = fire
            continue
        frozen = [f for f in freezes if f.start <= t < f.end]
        if frozen:
            if not why:
                why = f"inside the {frozen[0]}"
            t = max(f.end for f in frozen)
            continue
        return Gate(t == now, t, why if t != now else "")
    return Gate(False, None, why)


def longest_gap(window: WindowConfig, start: datetime, horizon: timedelta = HORIZON) -> tuple[timedelta, datetime]:
    """The longest stretch after ``start`` during which ``window`` is closed, and when it begins (the config
    check: a due rotation may have to wait that long). It steps through the openings of ``[start, start +
    horizon)``, at most MAX_GAP_STEPS of them: a window that opens more often than that is checked over the
    part stepped through (the planner's safety rule covers the rest)."""
    end_of_scan = start + horizon
    fire = _fire_at_or_after(window, start)
    if fire is None:
        return horizon, start
    longest, began = (fire - start, start) if open_at(window, start) is None else (timedelta(0), start)
    close = fire + window.duration
    for _ in range(MAX_GAP_STEPS):
        nxt = _fire_at_or_after(window, fire + timedelta(seconds=1))  # cron fires on whole seconds
        if nxt is None:
            if end_of_scan - close > longest:
                longest, began = end_of_scan - close, close
            break
        if nxt - close > longest:
            longest, began = nxt - close, close
        if nxt >= end_of_scan:
            break
        close, fire = max(close, nxt + window.duration), nxt
    return longest, began
