"""rotator.quotas on a stepped clock: the window, the cut on a refusal and the shared pause, the way back up after
quiet periods, the undocumented quota paced by refusals only, the config's rates, and the metrics. (Over the
wire, with the stores and the test servers' quota modes: tests/test_quotas_*.py, tests/test_quota_engine.py.)"""

from __future__ import annotations

import threading

import pytest

from rotator.metrics import Metrics
from rotator.quotas import Charge, Quota, RateLimits, apply_overrides, check_overrides, parse_rate

WRITE = Quota("svc", "write", 10, 1.0, "project", "a test")
SECRET = Quota("svc", "secret_writes", 2, 1.0, "secret", "a test")
OPEN = Quota("momento", "requests", None, 1.0, "issuer", "not documented")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def limits() -> tuple[RateLimits, Clock]:
    c = Clock()
    return RateLimits(monotonic=c, sleep=c.sleep), c


def test_a_window_admits_its_limit_then_waits_for_the_oldest_to_leave() -> None:
    lim, _clock = limits()
    c = Charge(WRITE, "p")
    for _ in range(10):
        assert lim.acquire([c]) == 0
    waited = lim.acquire([c])
    assert 1.0 <= waited <= 1.2  # the window, kept a little longer than documented
    assert lim.saturated([c]) is False  # nobody waits now


def test_a_refusal_cuts_the_limit_pauses_every_worker_and_quiet_brings_it_back() -> None:
    lim, clock = limits()
    c = Charge(WRITE, "p")
    lim.throttled([c], retry_after=3.0)
    assert lim.limit(c) == 7
    assert lim.saturated([c])  # paused: the engine hands this scope no more workers
    assert lim.acquire([c]) >= 3.0  # Retry-After, for whoever asks next
    lim.throttled([c])  # a window after the first cut (the pause passed): cut again
    assert lim.limit(c) == 4
    lim.throttled([c])  # within the same window: the same news, no second cut (the pause doubles: 1 s)
    assert lim.limit(c) == 4
    clock.now += 1.0
    lim.throttled([c])
    assert lim.limit(c) == 2  # 10 -> 7 -> 4 -> 2, a window apart
    clock.now += 9.0
    lim.acquire([c])
    assert lim.limit(c) == 2  # not quiet long enough (10 s, or two windows)
    clock.now += 10.0
    lim.acquire([c])
    assert lim.limit(c) == 3  # a tenth of the documented limit per quiet period
    for _ in range(10):
        clock.now += 10.0
        lim.acquire([c])
    assert lim.limit(c) == 10  # never above the documented limit


def test_an_undocumented_quota_waits_only_after_a_refusal() -> None:
    lim, _clock = limits()
    c = Charge(OPEN, "issuer.example")
    assert all(lim.acquire([c]) == 0 for _ in range(1000))
    assert lim.rate(c) is None
    lim.throttled([c], retry_after=2.0)
    assert lim.acquire([c]) == pytest.approx(2.0)
    assert lim.acquire([c]) == 0


def test_a_wait_never_outlasts_the_deadline() -> None:
    lim, clock = limits()
    c = Charge(WRITE, "p")
    lim.throttled([c], retry_after=60.0)
    assert lim.acquire([c], deadline=clock.now + 1.5) == pytest.approx(1.5)


def test_the_limiter_is_one_for_every_thread() -> None:
    lim = RateLimits()
    c = Charge(Quota("svc", "write", 20, 0.5, "project"), "p")
    done = []

    def work() -> None:
        for _ in range(10):
            lim.acquire([c])
        done.append(1)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stats = lim.stats()[0]
    assert len(done) == 6 and stats["admitted"] == 60 and stats["waited_seconds"] > 0


def test_off_charges_nothing() -> None:
    lim = RateLimits(enabled=False)
    c = Charge(WRITE, "p")
    assert all(lim.acquire([c]) == 0 for _ in range(100))
    lim.throttled([c], retry_after=30)
    assert lim.acquire([c]) == 0 and not lim.saturated([c])


@pytest.mark.parametrize(
    ("text", "rate"), [("600/1m", (600, 60.0)), ("50/s", (50, 1.0)), ("300/10s", (300, 10.0)), ("2/1s", (2, 1.0))]
)
def test_rates_read_as_the_config_writes_them(text: str, rate: tuple[int, float]) -> None:
    assert parse_rate(text) == rate


def test_overrides_name_known_quotas_and_set_or_lift_limits() -> None:
    with pytest.raises(ValueError, match=r"unknown quota 'wirte'.*secret_writes, write"):
        check_overrides([WRITE, SECRET], {"wirte": "1/s"})
    with pytest.raises(ValueError, match="write: '0/1m' is not a rate"):
        check_overrides([WRITE, SECRET], {"write": "0/1m"})
    q = apply_overrides([WRITE, SECRET], {"write": "1200/1m", "secret_writes": None})
    assert (q["write"].limit, q["write"].window) == (1200, 60.0)
    assert q["secret_writes"].limit is None


def test_the_metrics_show_each_scope_and_fold_the_per_secret_ones() -> None:
    lim, _ = limits()
    for i in range(3):
        lim.acquire([Charge(WRITE, "projects/a"), Charge(SECRET, f"projects/a/secrets/s{i}")])
    lim.throttled([Charge(WRITE, "projects/a")])
    m = Metrics()
    try:
        m.watch(lim)
        text = m.render().decode()
    finally:
        m.close()
    assert 'rotator_quota_limit{quota="write",scope="projects/a",service="svc"} 7.0' in text
    assert 'rotator_quota_requests_total{quota="secret_writes",scope="*",service="svc"} 3.0' in text
    assert 'rotator_quota_refused_total{quota="write",scope="projects/a",service="svc"} 1.0' in text
    assert "rotator_quota_wait_seconds_total" in text and "rotator_quota_window_seconds" in text


def test_each_request_holds_its_slot_until_a_window_after_its_own_answer() -> None:
    """The service counted a request somewhere between its sending and its answer: a slot is free again one
    window after that request's answer, whatever other (slower) requests took."""
    lim, clock = limits()
    c = Charge(SECRET, "projects/a/secrets/s")  # 2 per second
    start = clock.now
    lim.acquire([c])
    clock.now += 0.6
    lim.answered([c], 0.6)  # a slow one: held until 0.6 s + the window
    lim.acquire([c])
    clock.now += 0.01
    lim.answered([c], 0.01)  # a fast one: held until 0.61 s + the window
    waited = lim.acquire([c])
    assert 1.6 <= clock.now - start <= 1.7, waited  # the slow request's slot, counted from its answer, not its sending
    lim.acquire([c])
    assert clock.now - start <= 1.7  # the fast one's: a window after its answer, not held as long as the slow one

    lim2, clock2 = limits()
    start = clock2.now
    for _ in range(2):
        lim2.acquire([c])
        clock2.now += 0.01
        lim2.answered([c], 0.01)
    lim2.acquire([c])
    assert clock2.now - start <= 1.1  # fast answers free their slots a window after them: no one else's lag
    clock2.now += 3.0
    lim2.answered([c], 3.0)  # answered after the window had let it go: counted again from its answer
    lim2.acquire([c])
    assert lim2.acquire([c]) >= 0.9  # two in the window now: the late answer's and the one just sent
