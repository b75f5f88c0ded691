"""Client-side request-rate limits per quota scope (issue 27): what keeps a mass rotation inside each service's
documented quotas, shared by every worker of the process.

A backend declares its service's quotas (:class:`Quota`: the documented limit, its window, what one scope is, the
page it comes from), names the scope of each request it sends (a GCP project, an AWS region, a Key Vault, one
secret) and charges it (:meth:`RateLimits.acquire`) before the request goes out, every attempt included; a
refusal the service answers (429, ``RESOURCE_EXHAUSTED``, ``ThrottlingException``) is reported back
(:meth:`RateLimits.throttled`, with the ``Retry-After`` where the service sends one).

Each scope is a sliding-window log from ``pyrate-limiter`` (``InMemoryBucket``: at most ``limit`` requests in any
``window``), which is how the quotas pages state their limits ("600 per minute", "per 10 seconds"), so a client
that keeps to it is never refused by a service that counts the same way. It adapts:

- down on a refusal: the limit is cut to 70% (at least 1 per window; at most one cut a window), and the whole
  scope pauses for the
  ``Retry-After`` (else 0.5 s, doubling on each refusal in a row, at most one window): every worker waits, not
  just the one refused, so a pass stops spending its time on requests the service refuses;
- back up after a quiet period (two windows, at least 10 s, without a refusal): by a tenth of the documented
  limit per quiet period, never above it. Another client sharing the quota (a second rotator, a deploy script)
  is what usually causes the refusals; the limit finds the share that is left.

A quota whose limit is not documented (the Momento key API) has no window: only its refusals and their
``Retry-After`` pause the scope ("the source of truth", issue 27).

Nothing here reads a clock of its own: ``monotonic`` and ``sleep`` are given (the engine's), and a wait never
outlasts the ``deadline`` passed in.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyrate_limiter import InMemoryBucket

#: the share of a documented limit a client keeps to (limits of 20 or more). 1.0: what arrives at the service a
#: little later or sooner than it was sent is covered by the window's slack and the request times (below); 0.95
#: cost 5% of every pass at the quota (bench/quotas.py) and refused nothing more without it
HEADROOM = 1.0
#: a window is kept this much longer than documented (plus 20 ms), for the same reason: the clocks of client and
#: service do not tick together
WINDOW_SLACK = 0.02
#: how fast the remembered request time fades (per request answered); it paces the engine's estimates (:meth:`rate`)
LAG_DECAY = 0.9
#: the cut on a refusal, and the step back up per quiet period (a share of the documented limit)
DECREASE = 0.7
INCREASE = 0.1
#: the pause after a refusal without Retry-After: this, doubled per refusal in a row, at most one window
FIRST_PAUSE = 0.5


@dataclass(frozen=True)
class Quota:
    """One documented request-rate quota: at most ``limit`` requests in any ``window`` seconds, per scope.

    ``service`` and ``name`` identify it (``secretmanager``, ``write``); ``scope`` says what one scope is
    (``project``, ``region``, ``vault``, ``secret``, ``issuer``); ``source`` cites the page it comes from. A
    ``limit`` of None: not documented, only refusals and their ``Retry-After`` pace it."""

    service: str
    name: str
    limit: int | None
    window: float
    scope: str
    source: str = ""

    def with_limit(self, limit: int | None, window: float | None = None) -> Quota:
        return Quota(self.service, self.name, limit, self.window if window is None else window, self.scope, self.source)

    def __str__(self) -> str:
        if self.limit is None:
            return f"{self.service} {self.name} (undocumented: paced by its refusals)"
        return f"{self.service} {self.name} {self.limit}/{_seconds(self.window)} per {self.scope}"


@dataclass(frozen=True)
class Charge:
    """One request's charge against one quota, in one scope (``key``: the project, region, vault, secret...)."""

    quota: Quota
    key: str

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.quota.service, self.quota.name, self.key)

    def __str__(self) -> str:
        return f"{self.quota.service} {self.quota.name} quota of {self.quota.scope} {self.key}"


def _seconds(s: float) -> str:
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)}min"
    return f"{s:g}s"


@dataclass
class _Scope:
    quota: Quota
    bucket: InMemoryBucket | None
    limit: int | None  # the limit in force now (None: none)
    paused_until: float = 0.0
    refusals_in_a_row: int = 0
    last_refusal: float = -math.inf
    last_change: float = -math.inf
    waiting: int = 0
    lag: float = 0.02  # a moving mean of the request times: what a slot is held past its window, on average
    admitted: int = 0
    refused: int = 0
    waited: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RateLimits:
    """Every scope's window, shared by the workers of one process (one per runtime; thread-safe).

    ``enabled=False`` (config ``rate_limits: false``) charges nothing and never waits: the comparison the
    benchmark makes, and a way out should a documented quota be wrong for an account."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.enabled = enabled
        self._monotonic = monotonic
        self._sleep = sleep
        self._scopes: dict[tuple[str, str, str], _Scope] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- the scopes -----------------------------------------------------------------------------------------

    def _scope(self, charge: Charge) -> _Scope:
        scope = self._scopes.get(charge.id)
        if scope is None:
            with self._lock:
                scope = self._scopes.get(charge.id)
                if scope is None:
                    q = charge.quota
                    scope = self._scopes[charge.id] = _Scope(q, _bucket(q, q.limit), q.limit)
        elif charge.quota.limit is not None and (scope.quota.limit is None or charge.quota.limit < scope.quota.limit):
            with scope.lock:  # two stores name one scope with different overrides: the smaller one holds
                scope.quota, scope.limit, scope.bucket = (
                    charge.quota,
                    charge.quota.limit,
                    _bucket(charge.quota, charge.quota.limit),
                )
        return scope

    def limit(self, charge: Charge) -> int | None:
        """The limit in force now for ``charge``'s scope (requests per window; None: none)."""
        return self._scope(charge).limit

    def rate(self, charge: Charge) -> float | None:
        """Requests per second the scope admits now (None: no limit)."""
        s = self._scope(charge)
        if s.limit is None:
            return None
        return _effective(s.limit) / (_window(s.quota) + s.lag)

    def saturated(self, charges: Iterable[Charge]) -> bool:
        """Whether a worker is waiting in any of these scopes now (one more request there would wait too)."""
        if not self.enabled:
            return False
        now = self._monotonic()
        for c in charges:
            s = self._scopes.get(c.id)
            if s is not None and (s.waiting > 0 or s.paused_until > now):
                return True
        return False

    # -- charging and refusals ------------------------------------------------------------------------------

    def acquire(self, charges: Sequence[Charge], *, deadline: float | None = None) -> float:
        """Wait until each of ``charges`` fits its scope's window, then count it there; return the seconds
        waited. ``deadline`` (on the monotonic clock): never wait past it (the request then goes out and the
        caller's own deadline handling decides)."""
        if not self.enabled or not charges:
            return 0.0
        from pyrate_limiter import RateItem

        waited = 0.0
        for charge in charges:
            s = self._scope(charge)
            s.waiting += 1
            try:
                while True:
                    now = self._monotonic()
                    with s.lock:
                        self._recover(s, now)
                        pause = s.paused_until - now
                        if pause <= 0:
                            if s.bucket is None:
                                s.admitted += 1
                                break
                            log = s.bucket.items  # kept in time order: an answer may have moved an entry past now
                            item = RateItem(charge.key, max(int(now * 1000), log[-1].timestamp if log else 0))
                            if s.bucket.put(item):
                                s.admitted += 1
                                self._sent(charge, item)
                                if len(s.bucket.items) > 4 * (s.limit or 1):
                                    s.bucket.leak(int(now * 1000))
                                break
                            wait = s.bucket.waiting(item)  # ms until the window has room (an in-memory bucket)
                            pause = max(wait if isinstance(wait, int) else 1, 1) / 1000
                    if deadline is not None:
                        left = deadline - now
                        if left <= 0:
                            break
                        pause = min(pause, left)
                    self._sleep(pause)
                    waited += pause
                    s.waited += pause
            finally:
                s.waiting -= 1
        return waited

    def answered(self, charges: Sequence[Charge], seconds: float) -> None:
        """A request charged with ``charges`` (by :meth:`acquire`, in this thread) was answered ``seconds`` after it
        was sent. The service counted it somewhere between its sending and its answer, so its slot in each window
        is held until one window after the answer: the entry the log made at its sending moves to now. So a request
        is counted from its sending to one window after its own answer, not after the slowest recent request's
        (issue 27: 1-second windows lost a fifth of their pace that way). One still unanswered a window after its
        sending leaves the log then, and is counted again from its answer."""
        if not self.enabled:
            return
        sent = self._local.__dict__.setdefault("sent", {})
        now = self._monotonic()
        for charge in charges:
            s = self._scopes.get(charge.id)
            if s is None or s.bucket is None:
                continue
            mine = sent.get(charge.id)
            item = mine.pop() if mine else None
            with s.lock:
                s.lag = max(0.02, s.lag * LAG_DECAY + seconds * (1 - LAG_DECAY))
                _restamp(s.bucket, item, int(now * 1000))

    def _sent(self, charge: Charge, item: Any) -> None:
        """Remember this thread's last admitted entries per scope, for :meth:`answered` (a few: a request that
        raised before its answer leaves one behind)."""
        sent = self._local.__dict__.setdefault("sent", {})
        mine = sent.setdefault(charge.id, [])
        mine.append(item)
        del mine[:-4]

    def throttled(self, charges: Sequence[Charge], retry_after: float | None = None) -> None:
        """The service refused a request charged with ``charges``: cut their limits and pause their scopes."""
        if not self.enabled:
            return
        now = self._monotonic()
        for charge in charges:
            s = self._scope(charge)
            with s.lock:
                s.refused += 1
                s.refusals_in_a_row += 1
                s.last_refusal = now
                if s.limit is not None and now - s.last_change >= s.quota.window:
                    # once a window: the refusals of requests already on their way when the first came back are
                    # the same news, and cutting for each would take a burst's limit down to 1
                    new = max(1, math.floor(s.limit * DECREASE))
                    if new < s.limit:
                        s.limit, s.last_change = new, now
                        s.bucket = _bucket(s.quota, new, keep=s.bucket)
                if retry_after is not None:
                    pause = max(0.0, min(retry_after, 600.0))
                else:
                    pause = min(FIRST_PAUSE * 2 ** (s.refusals_in_a_row - 1), max(s.quota.window, FIRST_PAUSE))
                s.paused_until = max(s.paused_until, now + pause)

    def _recover(self, s: _Scope, now: float) -> None:
        """Raise a cut limit by a step after a quiet period (called with ``s.lock`` held)."""
        documented = s.quota.limit
        if documented is None or s.limit is None or s.limit >= documented:
            return
        quiet = max(2 * s.quota.window, 10.0)
        if now - max(s.last_refusal, s.last_change) < quiet:
            return
        s.refusals_in_a_row = 0
        s.limit = min(documented, s.limit + max(1, math.ceil(documented * INCREASE)))
        s.last_change = now
        s.bucket = _bucket(s.quota, s.limit, keep=s.bucket)

    def stats(self) -> list[dict[str, Any]]:
        """Per scope: the quota, the limit in force, requests admitted and refused, seconds waited."""
        out = []
        for (service, name, key), s in sorted(self._scopes.items()):
            out.append(
                {
                    "service": service,
                    "quota": name,
                    "scope": key,
                    "per_secret": s.quota.scope in ("secret", "secret version"),
                    "documented": s.quota.limit,
                    "window": s.quota.window,
                    "limit": s.limit,
                    "admitted": s.admitted,
                    "refused": s.refused,
                    "waited_seconds": round(s.waited, 3),
                }
            )
        return out


def _effective(limit: int) -> int:
    return limit if limit < 20 else max(1, math.floor(limit * HEADROOM))


def _window(q: Quota) -> float:
    return q.window * (1 + WINDOW_SLACK) + 0.02


def _restamp(bucket: InMemoryBucket, item: Any, at_ms: int) -> None:
    """Move ``item``'s entry in ``bucket``'s log (kept in time order) to ``at_ms``; an entry no longer there (its
    request took longer than the window) is counted again from ``at_ms``; without an item, nothing moves."""
    from bisect import insort

    from pyrate_limiter import RateItem

    if item is None:
        return
    items = bucket.items
    for i in range(len(items) - 1, -1, -1):  # recent entries are at the end
        if items[i] is item:
            del items[i]
            break
    insort(items, RateItem(item.name, at_ms), key=lambda x: x.timestamp)


def _bucket(q: Quota, limit: int | None, keep: InMemoryBucket | None = None) -> InMemoryBucket | None:
    """The sliding-window log for ``limit`` requests per window (None: no window); ``keep``'s log carries over,
    so a cut limit counts the requests already sent."""
    if limit is None:
        return None
    from pyrate_limiter import InMemoryBucket, Rate

    rate = Rate(_effective(limit), int(_window(q) * 1000))
    if keep is not None:
        keep.rates = [rate]
        return keep
    return InMemoryBucket([rate])


def retry_after_seconds(value: Any) -> float | None:
    """Seconds from a ``Retry-After`` header of delta-seconds, for :meth:`RateLimits.throttled`; None when absent,
    negative, not finite or an HTTP date (a date is not trusted: it depends on two clocks agreeing)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# -- configuration: a store's ``quotas:`` overrides -------------------------------------------------------------

#: ``"600/1m"``, ``"50/s"``, ``"300/10s"``: requests per window (a duration as the config writes them)
RATE_HELP = 'a rate such as "600/1m", "50/1s" or "300/10s" (requests per window), or null for no limit'


def parse_rate(text: str) -> tuple[int, float]:
    """``"600/1m"`` -> (600, 60.0). Raises ValueError naming the fix."""
    from rotator.durations import parse_duration

    count, slash, per = str(text).strip().partition("/")
    if not slash or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"{str(text)[:40]!r} is not {RATE_HELP}")
    per = per.strip()
    if per and per[0].isalpha():
        per = "1" + per  # "50/s"
    try:
        window = parse_duration(per).total_seconds()
    except ValueError:
        raise ValueError(f"{str(text)[:40]!r} is not {RATE_HELP}") from None
    if window <= 0:
        raise ValueError(f"{str(text)[:40]!r}: the window must be longer than 0s")
    return int(count), window


def check_overrides(declared: Sequence[Quota], overrides: dict[str, str | None]) -> dict[str, str | None]:
    """A store config's ``quotas:`` validator: every name is one of the store's quotas, every value a rate."""
    names = {q.name for q in declared}
    problems = []
    for name, value in overrides.items():
        if name not in names:
            problems.append(f"unknown quota {name[:40]!r}: this store's quotas are {', '.join(sorted(names))}")
        elif value is not None:
            try:
                parse_rate(value)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return overrides


def apply_overrides(declared: Sequence[Quota], overrides: dict[str, str | None]) -> dict[str, Quota]:
    """The store's quotas by name, with the config's overrides (a null override: no limit, only refusals)."""
    out = {}
    for q in declared:
        if q.name in overrides:
            value = overrides[q.name]
            if value is None:
                q = q.with_limit(None)
            else:
                limit, window = parse_rate(value)
                q = q.with_limit(limit, window)
        out[q.name] = q
    return out
