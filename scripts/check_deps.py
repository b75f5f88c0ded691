"""Every third-party module rotator imports is declared, and each extra's modules are imported only by their users.

Runs deptry (https://deptry.com) once per group of modules, over the package's own files:

- the core (every module not listed below) may import only ``[project] dependencies``: the extras are declared
  as development groups for that run, so an import of ``boto3`` from the engine is DEP004, an import of a
  module no dependency provides is DEP001 (missing) or DEP003 (transitive: installed only because something
  else needs it, as urllib3 was);
- each extra's users may import the core's dependencies and that extra's, nothing else.

Unused dependencies (DEP002) are checked in the core run only: an extra is, by design, unused by most files.
Exit status: deptry's (non-zero when any run finds an issue). Usage: ``python scripts/check_deps.py [ROOT]``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

#: extra -> the modules (paths from the project root) that may import its packages
USERS: dict[str, tuple[str, ...]] = {
    "aws": (
        "rotator/stores/aws.py",
        "rotator/notify.py",  # the SNS notifier
        "rotator/botohttp.py",
        "rotator/reload/ecs.py",
        "rotator/reload/lambda_fn.py",
    ),
    "azure": ("rotator/stores/azure.py",),
    "gcp": ("rotator/stores/gcp.py",),
    "k8s": (
        "rotator/kube.py",
        "rotator/pickup/kubernetes.py",
        "rotator/runtime/leader.py",
        "rotator/stores/kubernetes.py",
        "rotator/reload/kubernetes.py",
    ),
    "testing": ("rotator/testing/stores.py",),  # the store contract kit: a pytest class
    "lambda": ("rotator/metrics.py",),  # the CloudWatch EMF provider (Powertools)
}
#: optional groups that are never a runtime extra of their own
OTHER_GROUPS = ("all", "dev")


def deptry(root: Path, scan: set[str], regular: tuple[str, ...], *, unused: bool) -> int:
    files = {p.relative_to(root).as_posix() for p in (root / "rotator").rglob("*.py")}
    skip = sorted(files - scan)
    dev_groups = [g for g in (*USERS, *OTHER_GROUPS) if g not in regular]
    cmd = [sys.executable, "-m", "deptry", "rotator", "--no-ansi", "--known-first-party", "rotator"]
    cmd += ["--optional-dependencies-dev-groups", ",".join(dev_groups)]
    # --exclude replaces deptry's defaults; an exclude that matches nothing must still be a valid regex
    cmd += ["--exclude", "^(" + "|".join(re.escape(f) for f in skip) + ")$" if skip else "^$"]
    if not unused:
        cmd += ["--ignore", "DEP002"]
    label = "core" if not regular else f"[{','.join(regular)}]"
    print(f"deptry {label}: {len(scan)} module(s)", file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=root, check=False).returncode  # noqa: S603 - our own argv, no shell


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    files = {p.relative_to(root).as_posix() for p in (root / "rotator").rglob("*.py")}
    users = {f for mods in USERS.values() for f in mods}
    missing = sorted(users - files)
    if missing:
        print(f"scripts/check_deps.py names modules that do not exist: {', '.join(missing)}", file=sys.stderr)
        return 2
    worst = deptry(root, files - users, (), unused=True)
    for extra in USERS:
        # a module that uses two extras (none yet) is scanned with both as regular
        mods = {f for f in USERS[extra] if all(f not in USERS[e] for e in USERS if e != extra)}
        if mods:
            worst = max(worst, deptry(root, mods, (extra,), unused=False))
    shared = {f for f in users if sum(f in m for m in USERS.values()) > 1}
    for f in sorted(shared):
        worst = max(worst, deptry(root, {f}, tuple(e for e in USERS if f in USERS[e]), unused=False))
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv))
