"""The Prometheus alert rules (deploy/monitoring/rotator-rules.yaml) and their Prometheus Operator packaging.

- ``promtool check rules`` accepts the plain file and the PrometheusRule's groups as kustomize renders them;
- ``promtool test rules`` runs deploy/monitoring/rotator-rules.test.yaml (series in, alerts out), where every alert
  has a case in which it fires and one in which it does not; a rule with a broken threshold fails it;
- every expression names only metrics rotator exports (parsed, against a live registry), and every alert links a
  section of docs/runbook.md that names the ``rotator`` command to run;
- the kustomize component adds a ServiceMonitor that selects the daemon's metrics Service and port.

promtool is Debian's (package ``prometheus``): ``make`` unpacks it into .venv/bin (see the Makefile).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import PUSHGATEWAY_SERIES, exported_metric_names, metric_names
from tests.test_deploy import _with_components, render

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rotator-rules.yaml"
RULE_TESTS = MONITORING / "rotator-rules.test.yaml"
COMPONENT = ROOT / "deploy" / "kubernetes" / "components" / "prometheus-operator"
RUNBOOK = ROOT / "docs" / "runbook.md"


@cache
def promtool() -> str:
    beside = Path(sys.executable).parent / "promtool"
    if beside.exists():
        return str(beside)
    found = shutil.which("promtool")
    if found:
        return found
    pytest.fail("no promtool: run `make .venv/bin/promtool` (the Makefile unpacks Debian's prometheus package)")


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def alert_names() -> set[str]:
    return {r["alert"] for r in rules()}


# ---- promtool -------------------------------------------------------------------------------------------------


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    proc = run_promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_promtool_test_rules_passes() -> None:
    proc = run_promtool("test", "rules", RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    for t in doc["tests"]:
        for check in t["alert_rule_test"]:
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == alert_names(), alert_names() - fires
    assert quiet == alert_names(), alert_names() - quiet


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("RotatorKeyExpiresWithinADay", "_expires_in_seconds < 86400", "_expires_in_seconds < 3600"),
        ("RotatorPolicyFailing", "consecutive_failures >= 3", "consecutive_failures >= 4"),
        ("RotatorIssuerDown", "rotator_issuer_up == 0", "rotator_issuer_up == 2"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, alert: str, old: str, new: str) -> None:
    text = RULES.read_text()
    assert old in text
    (tmp_path / RULES.name).write_text(text.replace(old, new, 1))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    proc = run_promtool("test", "rules", tmp_path / RULE_TESTS.name)
    assert proc.returncode != 0
    assert f"alertname: {alert}" in proc.stdout + proc.stderr


# ---- what the rules say ---------------------------------------------------------------------------------------


def test_rules_query_only_metrics_rotator_exports() -> None:
    exported = exported_metric_names() | PUSHGATEWAY_SERIES
    for r in rules():
        used = metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= exported, f"{r['alert']}: {sorted(used - exported)} not exported by rotator/metrics.py"


def _runbook_sections() -> dict[str, str]:
    """GitHub-style anchors of docs/runbook.md's headings -> the section's text."""
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOK.read_text().splitlines():
        m = re.match(r"^#{2,3} (.+)$", line)
        if m:
            current = re.sub(r"[^a-z0-9 -]", "", m.group(1).lower()).replace(" ", "-")
            sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    return sections


def test_every_alert_has_a_severity_summary_description_and_a_runbook_section() -> None:
    sections = _runbook_sections()
    for r in rules():
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        ann = r["annotations"]
        assert ann["summary"] and ann["description"], r["alert"]
        url = ann["runbook_url"]
        assert url.startswith("https://") and "/docs/runbook.md#" in url, url
        anchor = url.rsplit("#", 1)[1]
        assert anchor == r["alert"].lower()
        assert anchor in sections, f"docs/runbook.md has no section for {r['alert']}"
        body = sections[anchor]
        assert "Check" in body, f"runbook {anchor}: say what to check"
        assert "`rotator " in body, f"runbook {anchor}: say which rotator command fixes it"


# ---- the Prometheus Operator component ------------------------------------------------------------------------


def _rendered(tmp_path: Path) -> list[dict[str, Any]]:
    return render(_with_components(tmp_path, "prometheus-operator"))


def test_the_prometheus_rule_holds_exactly_the_rules_file(tmp_path: Path) -> None:
    objs = _rendered(tmp_path)
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "rotator"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "components/prometheus-operator/prometheusrule.yaml differs from deploy/monitoring/rotator-rules.yaml"
    )
    # and promtool accepts what the operator would load
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = run_promtool("check", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_service_monitor_scrapes_the_daemon_metrics_service(tmp_path: Path) -> None:
    objs = _rendered(tmp_path)
    (sm,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
    (svc,) = [o for o in objs if o["kind"] == "Service"]
    assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"] == "rotator"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["rotator"]
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items(), (selector, svc["metadata"]["labels"])
    ports = {p["name"] for p in svc["spec"]["ports"]}
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"] and "metrics" in ports
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    # the component adds, and changes nothing else
    (tmp_path / "plain").mkdir()
    base = render(_with_components(tmp_path / "plain"))
    assert [o for o in objs if o["kind"] not in ("ServiceMonitor", "PrometheusRule")] == base
