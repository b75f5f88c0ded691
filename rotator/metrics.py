"""Prometheus metrics (prometheus-client) for a running rotator, and the Pushgateway push for ``once``.

Every figure comes from the pass reports and the API-call counter; nothing here reads a service. Expiry
gauges are computed at scrape time from the last known expiry, so "seconds until expiry" stays true between
passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rotator.engine import PassReport
from rotator.model import CreateKey
from rotator.observability import API_CALLS

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add noise


class _Expiry(Collector):
    """rotator_target_key_expiry_timestamp_seconds and rotator_target_key_expires_in_seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, str], float | None] = {}

    def set(self, policy: str, target: str, expires_at: datetime | None) -> None:
        with self._lock:
            self._expiry[(policy, target)] = expires_at.timestamp() if expires_at else None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        at = GaugeMetricFamily(
            "rotator_target_key_expiry_timestamp_seconds",
            "When the key each target holds expires (unix time; absent for keys that never expire).",
            labels=["policy", "target"],
        )
        left = GaugeMetricFamily(
            "rotator_target_key_expires_in_seconds",
            "Seconds until the key each target holds expires (negative: expired).",
            labels=["policy", "target"],
        )
        now = time.time()
        with self._lock:
            items = list(self._expiry.items())
        for (policy, target), ts in items:
            if ts is not None:
                at.add_metric([policy, target], ts)
                left.add_metric([policy, target], ts - now)
        yield at
        yield left


class Metrics:
    """The metric set of one rotator process, in its own registry (so ``once`` can push exactly it)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rotations = Counter(
            "rotator_rotations",
            "Rotations (new keys created and published) by policy and result.",
            ["policy", "result"],
            registry=r,
        )
        self.actions = Counter(
            "rotator_actions",
            "Actions carried out, by policy, kind and result.",
            ["policy", "action", "result"],
            registry=r,
        )
        self.api_calls = Counter(
            "rotator_api_calls",
            "API calls by service, operation and status.",
            ["service", "operation", "status"],
            registry=r,
        )
        self.last_success = Gauge(
            "rotator_last_successful_pass_timestamp_seconds",
            "When the last pass without failures finished.",
            registry=r,
        )
        self.last_pass = Gauge("rotator_last_pass_timestamp_seconds", "When the last pass finished.", registry=r)
        self.pass_duration = Histogram(
            "rotator_pass_duration_seconds",
            "How long passes take.",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.awaiting_pickup = Gauge(
            "rotator_policy_awaiting_pickup",
            "1 while a policy waits for grace or consumers before revoking.",
            ["policy"],
            registry=r,
        )
        self.policy_ok = Gauge("rotator_policy_ok", "1 if the policy's last pass succeeded.", ["policy"], registry=r)
        self.issuer_up = Gauge("rotator_issuer_up", "1 if the issuer answered the last pass.", registry=r)
        self.expiry = _Expiry()
        r.register(self.expiry)
        API_CALLS.add_listener(self._on_call)

    def _on_call(self, service: str, operation: str, status: str) -> None:
        self.api_calls.labels(service, operation, status).inc()

    def close(self) -> None:
        API_CALLS.remove_listener(self._on_call)

    def observe(self, report: PassReport) -> None:
        """Update every figure from a finished pass."""
        finished = report.finished.timestamp()
        self.last_pass.set(finished)
        self.pass_duration.observe(max(0.0, (report.finished - report.started).total_seconds()))
        self.issuer_up.set(1 if report.issuer_ok else 0)
        if report.ok:
            self.last_success.set(finished)
        for p in report.policies:
            self.policy_ok.labels(p.policy).set(1 if p.ok else 0)
            waiting = p.plan is not None and p.plan.phase == "awaiting-pickup"
            self.awaiting_pickup.labels(p.policy).set(1 if waiting else 0)
            for r in p.results:
                self.actions.labels(p.policy, r.action.kind, "ok" if r.ok else "failed").inc()
                if isinstance(r.action, CreateKey):
                    self.rotations.labels(p.policy, "ok" if r.ok else "failed").inc()
            for target, key in p.held_keys().items():
                if key is not None:
                    self.expiry.set(p.policy, target, key.expires_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def push(self, gateway: str, job: str, grouping: dict[str, str] | None = None) -> None:
        """Push to a Pushgateway (``rotator once``). Raises OSError-derived errors on failure."""
        from prometheus_client import push_to_gateway

        push_to_gateway(gateway, job=job, registry=self.registry, grouping_key=grouping or {})
