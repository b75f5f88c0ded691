"""Durations and fractions as the config writes them: ``30d``, ``6h``, ``1h30m``, ``90s``, ``25%``.

- :func:`parse_duration` / :func:`format_duration`, and the pydantic field types :data:`Duration` and
  :data:`RotateBefore` (a duration or a fraction of the lifetime) that the config and every backend's own
  options use.

The ground floor: it imports only :mod:`rotator.keys` (to describe, never quote, a key pasted where a
duration belongs).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

from rotator.keys import shown

__all__ = ["MAX_DURATION", "Duration", "RotateBefore", "format_duration", "parse_before", "parse_duration"]

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)")
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


#: the longest duration accepted anywhere (a datetime plus it must stay representable)
MAX_DURATION = timedelta(days=36500)
_RANGE_HINT = "write one like 30d, 6h, 15m or 90s (at most 36500d, 100 years)"


def parse_duration(value: Any) -> timedelta:
    """``"30d"``, ``"6h"``, ``"90s"``, ``"1h30m"``, ``"2w"`` or a number of seconds, as a timedelta.

    Raises ValueError (with what to write instead) for anything else, a negative, NaN or infinite value,
    or one longer than :data:`MAX_DURATION`."""
    if isinstance(value, timedelta):
        total = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration: {_RANGE_HINT}")
    elif isinstance(value, int | float):
        total = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if not text or pos != len(text):
            raise ValueError(f"{shown(value)} is not a duration: write it like 30d, 6h, 15m, 90s or 1h30m")
    if total != total:  # NaN
        raise ValueError(f"not a number (NaN) is not a duration: {_RANGE_HINT}")
    if total < 0:
        raise ValueError(f"a duration cannot be negative: {_RANGE_HINT}")
    if total > MAX_DURATION.total_seconds():
        raise ValueError("too long: a duration may be at most 36500d (100 years); write one like 30d or 6h")
    return value if isinstance(value, timedelta) else timedelta(seconds=total)


def format_duration(td: timedelta) -> str:
    """The shortest human form of a duration: ``30d``, ``1h2m``, ``90s`` -> ``1m30s``."""
    secs = int(td.total_seconds())
    if secs == 0:
        return "0s"
    sign = "-" if secs < 0 else ""
    secs = abs(secs)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            n, secs = divmod(secs, size)
            out.append(f"{n}{unit}")
    return sign + "".join(out)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def parse_before(value: Any) -> timedelta | float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"{shown(value)} is not a percentage: write it like 25%") from None
        if not 0 < pct < 100:
            raise ValueError("a percentage of the lifetime must be between 0% and 100%, e.g. 25%")
        return pct / 100
    if isinstance(value, float) and 0 < value < 1:
        return value
    return parse_duration(value)


RotateBefore = Annotated[timedelta | float, BeforeValidator(parse_before)]
