"""The Grafana dashboard (deploy/monitoring/grafana-dashboard.json) queries only metrics rotator exports.

Every panel query and every template variable query is parsed as PromQL (promql-parser, a port of Prometheus's
parser), and the metric names it selects are compared with those of a live :class:`rotator.metrics.Metrics`
registry: rename a metric in rotator/metrics.py and this fails until the dashboard follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.promql import exported_metric_names, grafana_to_promql, metric_names

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "grafana-dashboard.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # a collapsed row holds its panels


def queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query the dashboard sends."""
    for p in panels(dash):
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", grafana_to_promql(t["expr"])
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q)
        assert m, f"variable {v['name']}: only label_values(SELECTOR, LABEL) is expected, got {q!r}"
        yield f"variable {v['name']}", grafana_to_promql(m.group(1))


def used_metrics(dash: dict[str, Any]) -> dict[str, set[str]]:
    return {where: metric_names(q) for where, q in queries(dash)}


def test_every_query_names_only_metrics_rotator_exports() -> None:
    exported = exported_metric_names()
    used = used_metrics(load())
    assert len(used) >= 10
    for where, names in used.items():
        assert names, f"{where}: selects no metric"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by rotator/metrics.py"


def test_a_misspelt_metric_is_caught() -> None:
    dash = load()
    first = next(p for p in panels(dash) if p.get("targets"))
    first["targets"][0]["expr"] = first["targets"][0]["expr"].replace("rotator_", "rotatr_", 1)
    exported = exported_metric_names()
    assert any(not names <= exported for names in used_metrics(dash).values())


def test_an_unparsable_query_is_caught() -> None:
    with pytest.raises(ValueError):
        metric_names(grafana_to_promql("sum(rate(rotator_rotations_total[$__rate_interval])"))


@pytest.mark.parametrize(
    ("topic", "metric"),
    [
        ("time to expiry per target", "rotator_target_key_expires_in_seconds"),
        ("passes", "rotator_pass_duration_seconds_count"),
        ("pass duration", "rotator_pass_duration_seconds_bucket"),
        ("rotations and failures", "rotator_rotations_total"),
        ("API calls by service and status", "rotator_api_calls_total"),
        ("policies awaiting pickup", "rotator_policy_awaiting_pickup"),
        ("consecutive failures", "rotator_policy_consecutive_failures"),
    ],
)
def test_the_dashboard_shows(topic: str, metric: str) -> None:
    assert any(metric in names for names in used_metrics(load()).values()), topic


def test_api_calls_are_split_by_service_and_status() -> None:
    exprs = [q for _, q in queries(load()) if "rotator_api_calls_total" in q]
    assert any(re.search(r"by \((service, status|status, service)\)", q) for q in exprs), exprs


def test_panels_are_laid_out_and_use_the_datasource_variable() -> None:
    dash = load()
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert any(v["type"] == "datasource" and v["name"] == "datasource" for v in dash["templating"]["list"])
    for p in panels(dash):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]
