"""One pass's worker pool: reading and acting overlap.

A pass reads every policy that needs its targets read, plans it, and acts on the plan. Done as two phases
(read the whole fleet, then act), a mass rotation's first write waits for the fleet's last read: against a
request quota (AWS's 50 writes a second per region, GCP's 600 reads a minute per project) the reads are time
the write quota stands idle. :class:`Flow` runs both on one pool of ``workers`` threads instead:

- the reads are taken in the order given (the engine gives the most urgent first);
- a finished read's plan is *released* in that same order, not in the order the reads finish: what is decided
  on the plans one by one (admission against the quotas, the fleet's reload budget) is decided in the same
  order on every run, as if the reads had been done one after another;
- a free worker acts before it reads, taking the first released plan none of whose quota scopes has a worker
  waiting in it (``saturated``), in turns across the sets of stores the plans write to; when every plan it
  could act on waits for a scope, it reads the next policy instead, so the reads fill the time a quota holds
  the writes back.

The first exception a task raises stops the flow: the workers start nothing more, and :meth:`Flow.run`
raises it. ``before_act`` runs once, before the first act (the engine's preflight): when it raises, nothing
was acted on.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: how often a worker looks again when every plan it could act on waits for a quota scope
POLL_SECONDS = 0.02


class Flow(Generic[T]):
    """Reads (``reads``, each returning a plan) and acts (``act``) on one pool of ``workers`` threads.

    ``release(plan)`` is called in read order, under the flow's lock, and says whether the plan is acted on;
    ``ready`` are plans released already (acted on, in turns, with the released ones). ``scopes(plan)``: the
    quota scopes acting on it requests from; ``saturated(scopes)``: whether a worker waits in one of them now
    (None: never). ``group(plan)``: the set of stores it writes to, for the turns.
    """

    def __init__(
        self,
        workers: int,
        *,
        reads: Sequence[Callable[[], T]] = (),
        ready: Sequence[T] = (),
        release: Callable[[T], bool],
        act: Callable[[T], object],
        scopes: Callable[[T], tuple[Any, ...]],
        saturated: Callable[[Any], bool] | None,
        group: Callable[[T], Hashable],
        before_act: Callable[[], None] | None = None,
    ) -> None:
        self.workers = max(1, workers)
        self._reads = list(reads)
        self._release, self._act, self._scopes = release, act, scopes
        self._saturated, self._group = saturated, group
        self._before_act = before_act
        self._cond = threading.Condition()
        self._next_read = 0  # the next read to hand out
        self._done: dict[int, T] = {}  # reads finished, not released yet (an earlier one is still running)
        self._next_release = 0
        self._pending: list[tuple[int, int, int]] = []  # (turn, group index, seq), in the order to act
        self._items: dict[int, tuple[T, tuple[Any, ...]]] = {}
        self._groups: dict[Hashable, int] = {}  # plans queued per group so far (their turns)
        self._group_index: dict[Hashable, int] = {}
        self._seq = 0
        self._error: BaseException | None = None
        self._before_done = before_act is None
        self._before_lock = threading.Lock()
        self._before_error: BaseException | None = None
        for item in ready:
            self._queue(item)

    # -- called under the lock ------------------------------------------------------------------------------

    def _queue(self, item: T) -> None:
        g = self._group(item)
        gi = self._group_index.setdefault(g, len(self._group_index))
        self._groups[g] = self._groups.get(g, 0) + 1
        self._seq += 1
        self._items[self._seq] = (item, tuple(self._scopes(item)))
        bisect.insort(self._pending, (self._groups[g], gi, self._seq))

    def _take(self) -> tuple[str, int] | None:
        while self._error is None:
            for n, (*_, seq) in enumerate(self._pending):
                if self._saturated is None or not self._saturated(self._items[seq][1]):
                    del self._pending[n]
                    return "act", seq
            if self._next_read < len(self._reads):
                self._next_read += 1
                return "read", self._next_read - 1
            if not self._pending and self._next_release == len(self._reads):
                return None  # everything read and released, nothing left to act on
            self._cond.wait(POLL_SECONDS)
        return None

    # -- the workers ----------------------------------------------------------------------------------------

    def _read(self, i: int) -> None:
        got = self._reads[i]()
        with self._cond:
            self._done[i] = got
            while self._next_release in self._done:
                item = self._done.pop(self._next_release)
                self._next_release += 1
                if self._release(item):
                    self._queue(item)
            self._cond.notify_all()

    def _act_on(self, seq: int) -> None:
        if not self._before_done:
            with self._before_lock:
                if self._before_error is not None:  # it failed for another worker: the same error, not a rerun
                    raise self._before_error
                if not self._before_done:
                    assert self._before_act is not None
                    try:
                        self._before_act()
                    except BaseException as exc:
                        self._before_error = exc
                        raise
                    self._before_done = True
        item, _ = self._items.pop(seq)
        try:
            self._act(item)
        finally:
            with self._cond:
                self._cond.notify_all()

    def _worker(self) -> None:
        while True:
            with self._cond:
                task = self._take()
            if task is None:
                return
            kind, n = task
            try:
                self._read(n) if kind == "read" else self._act_on(n)
            except BaseException as exc:
                with self._cond:
                    if self._error is None:
                        self._error = exc
                    self._cond.notify_all()
                return

    def run(self) -> None:
        """Run every read and every act; raise the first exception a task raised (the rest were not started)."""
        with self._cond:
            tasks = len(self._reads) + len(self._pending)
        if tasks == 0:
            return
        n = min(self.workers, tasks)
        if n == 1:
            self._worker()
        else:
            with ThreadPoolExecutor(max_workers=n) as pool:
                for f in [pool.submit(self._worker) for _ in range(n)]:
                    f.result()
        if self._error is not None:
            raise self._error
