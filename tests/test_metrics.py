"""The figures the alert rules and the dashboard read (issue 14): consecutive failures per policy, pickup
overdue, the configured interval and alert_before, the process start, a last-success figure that is absent
until a pass succeeds, and a Pushgateway push that keeps the last success of an earlier run.

Passes are real (the emulator over HTTP, the file store in tmp_path, one test clock); the Pushgateway is a
recording HTTP server on 127.0.0.1 that answers as the Pushgateway does. From the Pushgateway's README
(github.com/prometheus/pushgateway, "API"): ``PUT /metrics/job/<JOB>`` replaces every metric of the group,
``POST`` replaces only the metrics with the same names as those pushed; both answer 200 on success.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator import config as config_mod
from rotator.engine import PassReport, PolicyReport
from rotator.metrics import Metrics
from rotator.model import Plan
from rotator.runtime.app import build
from tests.support.e2e import CHECKOUT, T0, Harness, at, harness

#: a role the issuer does not know: the pass fails for it (built with preflight=False, which would refuse it
#: up front, as if the role were deleted while the daemon runs)
GHOST: dict[str, Any] = dict(
    CHECKOUT, name="ghost", role="no-such-role", targets=[{"store": "local", "secret": "ghost/k"}]
)


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return samples(m).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


def test_consecutive_failures_count_passes_in_a_row_and_reset_on_success(h: Harness) -> None:
    cfg = config_mod.from_mapping(h.config_data([CHECKOUT, GHOST], interval="1m", alerts={"alert_before": "2d"}))
    m = Metrics(cfg)
    with build(cfg, clock=h.clock.as_datetime, preflight=False) as app:
        for n in (1, 2, 3):
            h.clock.set(at(n))
            m.observe(app.engine.run_pass())
            assert value(m, "rotator_policy_consecutive_failures", policy="ghost") == n
            assert value(m, "rotator_policy_consecutive_failures", policy="checkout") == 0
    # the role exists now: the next pass succeeds and the count starts again
    ok = config_mod.from_mapping(h.config_data([CHECKOUT, dict(GHOST, role="viewer")]))
    with build(ok, clock=h.clock.as_datetime, preflight=False) as app:
        h.clock.set(at(4))
        m.observe(app.engine.run_pass())
    assert value(m, "rotator_policy_consecutive_failures", policy="ghost") == 0
    assert value(m, "rotator_pass_interval_seconds") == 60
    assert value(m, "rotator_alert_before_seconds") == 2 * 86400
    started = value(m, "rotator_start_timestamp_seconds")
    assert started is not None and abs(time.time() - started) < 60
    m.close()


def test_last_success_is_absent_until_a_pass_succeeds(h: Harness) -> None:
    cfg = config_mod.from_mapping(h.config_data([GHOST]))
    m = Metrics(cfg)
    with build(cfg, clock=h.clock.as_datetime, preflight=False) as app:
        m.observe(app.engine.run_pass())
    assert value(m, "rotator_last_pass_timestamp_seconds") == T0.timestamp()
    assert value(m, "rotator_last_successful_pass_timestamp_seconds") is None
    m.close()


def test_pickup_overdue_follows_the_plan_note(h: Harness) -> None:
    m = Metrics()

    def report(*notes: str) -> PassReport:
        plan = Plan("checkout", "awaiting-pickup", notes=notes)
        return PassReport(T0, T0, False, [PolicyReport("checkout", plan)])

    m.observe(report("! pickup overdue: checkout-1 still serves k1 after 12h (max_wait 12h)"))
    assert value(m, "rotator_policy_pickup_overdue", policy="checkout") == 1
    assert value(m, "rotator_policy_awaiting_pickup", policy="checkout") == 1
    m.observe(report("grace: waiting"))
    assert value(m, "rotator_policy_pickup_overdue", policy="checkout") == 0
    m.close()


def test_the_pickup_note_is_the_one_notify_alerts_on() -> None:
    import inspect

    from rotator import notify
    from rotator.metrics import PICKUP_OVERDUE_NOTE

    assert f'"{PICKUP_OVERDUE_NOTE}"' in inspect.getsource(notify.alerts_for)


# ---- the Pushgateway ----------------------------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    pushes: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, body


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway("")

    class Handler(BaseHTTPRequestHandler):
        def _push(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            gw.pushes.append((self.command, self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _push

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    gw.url = f"http://127.0.0.1:{server.server_address[1]}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield gw
    finally:
        server.shutdown()
        server.server_close()


def test_once_pushes_with_post_so_a_failed_run_keeps_the_last_success(h: Harness, gateway: Gateway) -> None:
    ok_cfg = config_mod.from_mapping(h.config_data([CHECKOUT]))
    for cfg, expect_success in ((ok_cfg, True), (config_mod.from_mapping(h.config_data([GHOST])), False)):
        m = Metrics(cfg)
        with build(cfg, clock=h.clock.as_datetime, preflight=False) as app:
            m.observe(app.engine.run_pass())
        m.push(gateway.url, "rotator")
        m.close()
        method, path, body = gateway.pushes[-1]
        assert (method, path) == ("POST", "/metrics/job/rotator")
        assert ("rotator_last_successful_pass_timestamp_seconds" in body) is expect_success, body
        assert "rotator_pass_interval_seconds 60.0" in body and "rotator_start_timestamp_seconds" in body
