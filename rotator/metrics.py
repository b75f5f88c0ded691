"""Prometheus metrics (prometheus-client) for a running rotator, the Pushgateway push for ``once``, and the
same figures as CloudWatch Embedded Metric Format (EMF) lines for the Lambda.

Every figure comes from the pass reports and the API-call counter; nothing here reads a service. Expiry
gauges are computed at scrape time from the last known expiry, so "seconds until expiry" stays true between
passes. The alert rules (deploy/monitoring/rotator-rules.yaml) and the Grafana dashboard
(deploy/monitoring/grafana-dashboard.json) query only the names defined here; tests hold them to that.

The EMF documents come from Powertools for AWS Lambda (the ``lambda`` extra), which validates them against the
specification; with it the Lambda's cold start stayed within twice the boto3 baseline, while aws-embedded-metrics
(which brings aiohttp) took it past that (bench/cold_start.py --lambda; see README).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rotator.engine import PassReport
from rotator.model import CreateKey, Reload
from rotator.observability import API_CALLS
from rotator.planner import RELOAD_FAILED_NOTE

if TYPE_CHECKING:
    from rotator.config import Config

#: the plan note that says consumers are late (rotator.notify raises ``pickup_overdue`` on the same note)
PICKUP_OVERDUE_NOTE = "! pickup overdue"


def pickup_overdue(notes: Iterable[str]) -> bool:
    """Whether a plan's notes say its consumers are past ``max_wait``."""
    return any(n.startswith(PICKUP_OVERDUE_NOTE) for n in notes)


def reload_failed(notes: Iterable[str]) -> bool:
    """Whether a plan's notes say a reload failed or ran past ``reload_timeout``."""
    return any(n.startswith(RELOAD_FAILED_NOTE) for n in notes)


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


class _LastSuccess(Collector):
    """rotator_last_successful_pass_timestamp_seconds, absent until a pass has succeeded.

    Absent rather than 0, without even its HELP line: ``rotator once`` pushes with pushadd semantics, so a failed
    run leaves the previous run's success time in the Pushgateway instead of overwriting it with "never" (the
    alert rules measure the time since it).
    """

    def __init__(self) -> None:
        self.value: float | None = None

    def set(self, ts: float) -> None:
        self.value = ts

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "rotator_last_successful_pass_timestamp_seconds",
            "When the last pass without failures finished (absent until one has).",
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        # not even the family while unset: a Pushgateway POST would take an empty family as "replace with nothing"
        if self.value is not None:
            g = self._family()
            g.add_metric([], self.value)
            yield g


class _Quotas(Collector):
    """The request quotas the process keeps (rotator/quotas.py), read at scrape time from its RateLimits:
    per service, quota and scope (a project, region or vault; one series for all the secrets of a per-secret
    quota, so a fleet does not become as many series): the limit in force, requests admitted and refused, and
    seconds the workers waited."""

    def __init__(self) -> None:
        self.limits: Any = None

    def collect(self) -> Iterable[Metric]:
        labels = ["service", "quota", "scope"]
        limit = GaugeMetricFamily(
            "rotator_quota_limit",
            "Requests per window rotator allows itself in a quota scope now (the documented limit or its override, "
            "cut after refusals and raised again after quiet periods); the window is rotator_quota_window_seconds.",
            labels=labels,
        )
        window = GaugeMetricFamily("rotator_quota_window_seconds", "A quota's window.", labels=labels)
        admitted = CounterMetricFamily("rotator_quota_requests", "Requests sent in a quota scope.", labels=labels)
        refused = CounterMetricFamily(
            "rotator_quota_refused", "Requests the service refused for quota (429, throttling).", labels=labels
        )
        waited = CounterMetricFamily(
            "rotator_quota_wait_seconds", "Seconds workers waited for room in a quota scope.", labels=labels
        )
        totals: dict[tuple[str, str, str], list[float]] = {}
        for row in self.limits.stats() if self.limits is not None else ():
            key = (row["service"], row["quota"], "*" if row["per_secret"] else row["scope"])
            t = totals.setdefault(key, [row["limit"] if row["limit"] is not None else -1, row["window"], 0, 0, 0])
            t[2] += row["admitted"]
            t[3] += row["refused"]
            t[4] += row["waited_seconds"]
        for key, (lim, win, adm, ref, wai) in sorted(totals.items()):
            if lim >= 0:
                limit.add_metric(list(key), lim)
                window.add_metric(list(key), win)
            admitted.add_metric(list(key), adm)
            refused.add_metric(list(key), ref)
            waited.add_metric(list(key), wai)
        return [limit, window, admitted, refused, waited]


class Metrics:
    """The metric set of one rotator process, in its own registry (so ``once`` can push exactly it).

    ``config`` (optional) adds the figures the alert rules compare against: the pass interval and
    ``alerts.alert_before``.
    """

    def __init__(self, config: Config | None = None) -> None:
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
        self.reloads = Counter(
            "rotator_reloads",
            "Reloads (restarts, deployments, signals) started, by policy, reload type and result "
            "(ok, failed, skipped: another pass started it, or the per-pass cap left it to the next pass).",
            ["policy", "type", "result"],
            registry=r,
        )
        self.waiting_for_window = Gauge(
            "rotator_policy_waiting_for_window",
            "1 while a policy's due rotation waits for its change window to open (or a freeze to end); it "
            "waits only while the key will still be replaced in time.",
            ["policy"],
            registry=r,
        )
        self.window_opens = Gauge(
            "rotator_policy_window_opens_timestamp_seconds",
            "When the rotation a policy waits for may start (unix time; 0 while it waits for nothing).",
            ["policy"],
            registry=r,
        )
        self.reload_failing = Gauge(
            "rotator_policy_reload_failed",
            "1 while a policy has a reload that failed or ran past reload_timeout (the old key stays).",
            ["policy"],
            registry=r,
        )
        self.api_calls = Counter(
            "rotator_api_calls",
            "API calls by service, operation and status.",
            ["service", "operation", "status"],
            registry=r,
        )
        self.last_success = _LastSuccess()
        r.register(self.last_success)
        self.started = Gauge(
            "rotator_start_timestamp_seconds", "When this rotator process started (unix time).", registry=r
        )
        self.started.set(time.time())
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
        self.consecutive_failures = Gauge(
            "rotator_policy_consecutive_failures",
            "Passes in a row in which the policy failed (0 after a pass in which it succeeded).",
            ["policy"],
            registry=r,
        )
        self.pickup_overdue = Gauge(
            "rotator_policy_pickup_overdue",
            "1 while a policy's consumers are past max_wait without picking up the new key.",
            ["policy"],
            registry=r,
        )
        self.interval = Gauge(
            "rotator_pass_interval_seconds", "The configured interval between passes (config: interval).", registry=r
        )
        self.alert_before = Gauge(
            "rotator_alert_before_seconds",
            "Alert when a key a target holds expires within this (config: alerts.alert_before).",
            registry=r,
        )
        self._failures: dict[str, int] = {}
        if config is not None:
            self.configure(config)
        self.expiry = _Expiry()
        r.register(self.expiry)
        self.quotas = _Quotas()
        r.register(self.quotas)
        API_CALLS.add_listener(self._on_call)

    def configure(self, config: Config) -> None:
        """Export the configured figures the alert rules compare against."""
        from rotator.config import AlertsConfig

        self.interval.set(config.interval.total_seconds())
        alerts = config.alerts if isinstance(config.alerts, AlertsConfig) else AlertsConfig()
        self.alert_before.set(alerts.alert_before.total_seconds())

    def watch(self, limits: Any) -> None:
        """Export the request quotas of ``limits`` (the process's RateLimits) at every scrape."""
        self.quotas.limits = limits

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
            self._failures[p.policy] = 0 if p.ok else self._failures.get(p.policy, 0) + 1
            self.consecutive_failures.labels(p.policy).set(self._failures[p.policy])
            waiting = p.plan is not None and p.plan.phase == "awaiting-pickup"
            self.awaiting_pickup.labels(p.policy).set(1 if waiting else 0)
            overdue = p.plan is not None and pickup_overdue(p.plan.notes)
            self.pickup_overdue.labels(p.policy).set(1 if overdue else 0)
            opens = p.plan.window_opens if p.plan is not None else None
            self.waiting_for_window.labels(p.policy).set(1 if opens is not None else 0)
            self.window_opens.labels(p.policy).set(opens.timestamp() if opens is not None else 0)
            failing = p.plan is not None and reload_failed(p.plan.notes)
            failing = failing or any(isinstance(r.action, Reload) and not r.ok for r in p.results)
            self.reload_failing.labels(p.policy).set(1 if failing else 0)
            for r in p.results:
                self.actions.labels(p.policy, r.action.kind, "ok" if r.ok else "failed").inc()
                if isinstance(r.action, Reload):
                    result = "failed" if not r.ok else "skipped" if r.skipped else "ok"
                    self.reloads.labels(p.policy, r.action.type, result).inc()
                if isinstance(r.action, CreateKey):
                    self.rotations.labels(p.policy, "ok" if r.ok else "failed").inc()
            for target, key in p.held_keys().items():
                if key is not None:
                    self.expiry.set(p.policy, target, key.expires_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def push(self, gateway: str, job: str, grouping: dict[str, str] | None = None) -> None:
        """Push to a Pushgateway (``rotator once``). Raises OSError-derived errors on failure.

        pushadd (POST): the metrics this run has replace the group's metrics of the same names, and a metric this
        run does not have (the last successful pass, after a failed run) keeps its pushed value.
        """
        from prometheus_client import pushadd_to_gateway

        pushadd_to_gateway(gateway, job=job, registry=self.registry, grouping_key=grouping or {})


# ---- CloudWatch Embedded Metric Format (the Lambda) ---------------------------------------------------------

#: CloudWatch namespace of the EMF metrics (``ROTATOR_METRICS_NAMESPACE`` overrides it in the Lambda)
EMF_NAMESPACE = "rotator"
#: the CloudWatch metrics rotator's EMF lines carry, with their units (the SAM template's alarms use these names)
EMF_METRICS: dict[str, str] = {
    "PassOk": "Count",
    "PassDurationSeconds": "Seconds",
    "IssuerUp": "Count",
    "Rotations": "Count",
    "RotationsFailed": "Count",
    "PoliciesFailed": "Count",
    "MinKeyExpiresInSeconds": "Seconds",
    "MinKeyExpiresInSecondsNotWaitingForWindow": "Seconds",
    "PolicyOk": "Count",
    "AwaitingPickup": "Count",
    "PickupOverdue": "Count",
    "WaitingForWindow": "Count",
    "KeyExpiresInSeconds": "Seconds",
}


def emf_documents(
    report: PassReport, *, service: str = "rotator", namespace: str = EMF_NAMESPACE
) -> list[dict[str, Any]]:
    """The EMF documents for one finished pass, built and validated by Powertools for AWS Lambda.

    - one for the pass, dimension ``service``: PassOk, PassDurationSeconds, IssuerUp, Rotations,
      RotationsFailed, PoliciesFailed, MinKeyExpiresInSeconds (the soonest expiry of any target's key: the
      figure the within-a-day alarm watches) and MinKeyExpiresInSecondsNotWaitingForWindow (the same, leaving
      out policies whose due rotation waits for its window, which the planner allows only while the key will be
      replaced in time: the figure the expiring alarm watches);
    - one per policy, dimensions ``service``, ``policy``: PolicyOk, Rotations, RotationsFailed, AwaitingPickup,
      PickupOverdue, WaitingForWindow;
    - one per target whose key expires, dimensions ``service``, ``policy``, ``target``: KeyExpiresInSeconds
      (with the key id as a property, never key material).

    ``service`` is a dimension on every metric, so two deployments in one account stay apart. The expiry is
    measured from ``report.finished``. Raises MissingExtraError without the ``lambda`` extra.
    """
    try:
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
    except ImportError as exc:  # pragma: no cover - the dev extra has it
        from rotator.errors import MissingExtraError

        raise MissingExtraError("lambda", "aws-lambda-powertools") from exc

    def document(dimensions: dict[str, str], values: dict[str, float], meta: dict[str, str] | None = None) -> Any:
        emf = AmazonCloudWatchEMFProvider(namespace=namespace, service=service)
        for dim, label in dimensions.items():
            emf.add_dimension(dim, label)
        for metric, value in values.items():
            emf.add_metric(name=metric, unit=EMF_METRICS[metric], value=value)
        for key, v in (meta or {}).items():
            emf.add_metadata(key, v)
        return emf.serialize_metric_set()

    docs: list[dict[str, Any]] = []
    rotations = failed_rotations = 0
    soonest: float | None = None
    soonest_unplanned: float | None = None  # keys of policies not waiting for their window (the warning alarm)
    for p in report.policies:
        made = [r for r in p.results if isinstance(r.action, CreateKey)]
        ok_made = sum(1 for r in made if r.ok)
        rotations += ok_made
        failed_rotations += len(made) - ok_made
        waiting = p.plan is not None and p.plan.phase == "awaiting-pickup"
        overdue = p.plan is not None and pickup_overdue(p.plan.notes)
        docs.append(
            document(
                {"policy": p.policy},
                {
                    "PolicyOk": 1 if p.ok else 0,
                    "Rotations": ok_made,
                    "RotationsFailed": len(made) - ok_made,
                    "AwaitingPickup": 1 if waiting else 0,
                    "PickupOverdue": 1 if overdue else 0,
                    "WaitingForWindow": 1 if p.plan is not None and p.plan.window_opens is not None else 0,
                },
            )
        )
        for target, key in sorted(p.held_keys().items()):
            if key is None or key.expires_at is None:
                continue
            left = round((key.expires_at - report.finished).total_seconds(), 3)
            soonest = left if soonest is None else min(soonest, left)
            if p.plan is None or p.plan.window_opens is None:
                soonest_unplanned = left if soonest_unplanned is None else min(soonest_unplanned, left)
            docs.append(
                document({"policy": p.policy, "target": target}, {"KeyExpiresInSeconds": left}, {"key_id": key.key_id})
            )
    summary: dict[str, float] = {
        "PassOk": 1 if report.ok else 0,
        "PassDurationSeconds": round(max(0.0, (report.finished - report.started).total_seconds()), 3),
        "IssuerUp": 1 if report.issuer_ok else 0,
        "Rotations": rotations,
        "RotationsFailed": failed_rotations,
        "PoliciesFailed": sum(1 for p in report.policies if not p.ok),
    }
    if soonest is not None:
        summary["MinKeyExpiresInSeconds"] = soonest
    if soonest_unplanned is not None:
        summary["MinKeyExpiresInSecondsNotWaitingForWindow"] = soonest_unplanned
    docs.insert(0, document({}, summary))
    return docs


def emf_lines(report: PassReport, *, service: str = "rotator", namespace: str = EMF_NAMESPACE) -> list[str]:
    """:func:`emf_documents` as log lines: one compact JSON object each, with nothing before or after it."""
    return [json.dumps(d, separators=(",", ":")) for d in emf_documents(report, service=service, namespace=namespace)]
