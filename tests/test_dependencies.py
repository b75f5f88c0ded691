"""scripts/check_deps.py (deptry, run by `make lint`): an undeclared or misplaced import fails it.

Each case copies the package and pyproject.toml into a temp dir, changes one thing, and runs the checker there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "rotator", tmp_path / "rotator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_deps.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_as_it_is_passes(tmp_path: Path) -> None:
    r = _check(_project(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_removing_urllib3_from_the_dependencies_fails(tmp_path: Path) -> None:
    root = _project(tmp_path)
    text = (root / "pyproject.toml").read_text()
    assert '    "urllib3>=' in text
    (root / "pyproject.toml").write_text("\n".join(ln for ln in text.splitlines() if '"urllib3>=' not in ln))
    r = _check(root)
    assert r.returncode != 0
    assert "'urllib3'" in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("rotator/engine.py", "import boto3", "DEP004"),  # an extra's package in the core
        ("rotator/stores/gcp.py", "import boto3", "DEP004"),  # another extra's package in a backend
        ("rotator/stores/aws.py", "from azure.keyvault.secrets import SecretClient", "DEP004"),
        ("rotator/planner.py", "import idna", "DEP003"),  # installed only because httpx and requests need it
        ("rotator/keys.py", "import surely_not_a_module_xyz", "DEP001"),  # provided by nothing
    ],
)
def test_an_undeclared_or_misplaced_import_fails(tmp_path: Path, module: str, line: str, expected: str) -> None:
    root = _project(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    r = _check(root)
    assert r.returncode != 0
    assert expected in r.stdout + r.stderr
    assert module in r.stdout + r.stderr
