"""rotator.flow: one pool reads and acts; plans are released in read order; a saturated scope lets the workers
read; the first error (or a failing ``before_act``) stops the flow before anything more is started."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from rotator.flow import Flow


def _flow(workers: int, events: list[str], **kw: object) -> Flow[str]:
    lock = threading.Lock()

    def note(e: str) -> None:
        with lock:
            events.append(e)

    args: dict[str, object] = {
        "release": lambda item: (note(f"release {item}"), True)[1],
        "act": lambda item: note(f"act {item}"),
        "scopes": lambda item: (),
        "saturated": None,
        "group": lambda item: "g",
    }
    args.update(kw)
    return Flow(workers, **args)  # type: ignore[arg-type]


def _read(name: str, events: list[str], delay: float = 0.0) -> Callable[[], str]:
    def go() -> str:
        time.sleep(delay)
        events.append(f"read {name}")
        return name

    return go


def test_plans_are_released_in_read_order_however_the_reads_finish() -> None:
    events: list[str] = []
    reads = [_read(f"p{i}", events, delay=0.1 * (4 - i)) for i in range(5)]  # the first read is the slowest
    _flow(5, events, reads=reads).run()
    finished = [e for e in events if e.startswith("read")]
    assert finished[0] == "read p4" and finished[-1] == "read p0", events  # they did finish out of order
    assert [e for e in events if e.startswith("release")] == [f"release p{i}" for i in range(5)]
    assert sorted(e for e in events if e.startswith("act")) == [f"act p{i}" for i in range(5)]


def test_a_free_worker_acts_before_it_reads() -> None:
    events: list[str] = []
    _flow(1, events, reads=[_read(f"p{i}", events) for i in range(3)]).run()
    assert [e for e in events if not e.startswith("release")] == [
        "read p0",
        "act p0",
        "read p1",
        "act p1",
        "read p2",
        "act p2",
    ]


def test_while_every_plan_waits_for_its_scope_the_workers_read() -> None:
    """One plan is ready, its scope saturated until every read has finished: the two workers read the whole
    fleet meanwhile, then act on it (and on the plans the reads released, whose scope is free)."""
    events: list[str] = []
    reads = [_read(f"p{i}", events) for i in range(4)]

    def saturated(scopes: tuple[str, ...]) -> bool:
        return "busy" in scopes and sum(e.startswith("read") for e in events) < 4

    _flow(
        2,
        events,
        reads=reads,
        ready=["ready"],
        scopes=lambda item: ("busy",) if item == "ready" else ("free",),
        saturated=saturated,
    ).run()
    assert "act ready" in events
    assert events.index("act ready") > max(events.index(f"read p{i}") for i in range(4)), events


def test_before_act_runs_once_and_when_it_fails_nothing_is_acted_on() -> None:
    events: list[str] = []
    calls: list[int] = []

    class Refused(Exception):
        pass

    def before() -> None:
        calls.append(1)
        time.sleep(0.05)  # the other workers reach it meanwhile
        raise Refused("preflight")

    flow = _flow(4, events, ready=[f"p{i}" for i in range(8)], before_act=before)
    with pytest.raises(Refused, match="preflight"):
        flow.run()
    assert calls == [1] and not [e for e in events if e.startswith("act")], events


def test_the_first_error_stops_the_flow() -> None:
    events: list[str] = []

    def act(item: str) -> None:
        events.append(f"act {item}")
        if item == "p1":
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _flow(1, events, reads=[_read(f"p{i}", events) for i in range(4)], act=act).run()
    assert events[-1] == "act p1" and "read p2" not in events, events


def test_a_plan_not_released_is_not_acted_on() -> None:
    events: list[str] = []
    _flow(2, events, reads=[_read(f"p{i}", events) for i in range(4)], release=lambda item: item != "p2").run()
    assert sorted(e for e in events if e.startswith("act")) == ["act p0", "act p1", "act p3"]
