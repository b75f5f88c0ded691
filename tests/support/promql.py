"""PromQL as Prometheus parses it (promql-parser, a port of Prometheus's own parser) and the metric names rotator
exports, taken from a live :class:`rotator.metrics.Metrics` registry: no hand-kept list to drift."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import promql_parser

from rotator.engine import PassReport
from rotator.metrics import Metrics

#: series a Pushgateway adds to every group `rotator once` pushes (the rules use it to tell pushed figures apart)
PUSHGATEWAY_SERIES = {"push_time_seconds", "push_failure_time_seconds"}

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}


def exported_metric_names() -> set[str]:
    """Every series name a rotator process's /metrics can show (counters with _total, histograms' parts)."""
    m = Metrics()
    try:
        now = datetime.now(UTC)
        m.observe(PassReport(now, now, False, []))  # a successful pass: the figures that wait for one appear
        names: set[str] = set()
        for family in m.registry.collect():
            for suffix in _SUFFIXES.get(family.type, ("",)):
                names.add(family.name + suffix)
        return names
    finally:
        m.close()


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects. Raises ValueError for one it cannot parse, and for a selector
    that names no metric (``{job="x"}``) or matches names by regex: either could hide a typo."""
    tree = promql_parser.parse(expr)
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.add(node.name)
                return
            for m in node.matchers.matchers:
                if m.name == "__name__" and str(m.op) in ("MatchOp.Equal", "="):
                    found.add(m.value)
                    return
            raise ValueError(f"{expr!r}: a selector without a plain metric name: {node}")

    promql_parser.walk(tree, visit)
    return found


_VAR = re.compile(r"\$(\{\w+(:\w+)?\}|\w+)")


def grafana_to_promql(expr: str) -> str:
    """A Grafana panel query as PromQL: interval variables become a duration, template variables (which the
    dashboard uses only inside label matchers) become ``.*``."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return _VAR.sub(".*", expr)
