"""Cold start: whole Python processes, timed from outside, with their peak memory (ru_maxrss).

Each case is a fresh interpreter that runs a snippet and prints its peak RSS; the wall time is the median of
several runs. ``--lambda``: the Lambda's real cold-start path, ``get_app()`` (against a local emulator; the
preflight runs later, before a pass's first action) plus the Secrets Manager client, against
``import boto3; boto3.client("secretsmanager")``, both in the deployment package a user builds: the commands
of deploy/aws-lambda/README.md (steps 2 and 4, run as written in a copy of the checkout's tracked files), the
cases run with that package alone on the path (``python -S``, as the Lambda runtime puts /var/task first),
not in the development venv, whose extra packages change what the libraries import (structlog imports rich
when it is installed, and twine brings rich). ``--here``: in this interpreter's environment instead.
Usage: python bench/cold_start.py [--runs 9] [--lambda [--here]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAIL = "\nimport resource, json; print(json.dumps({'rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))"

LOCAL_CONFIG = str(ROOT / "config" / "local.yaml")

CASES: dict[str, str] = {
    "python -c pass (interpreter alone)": "pass",
    "import rotator.runtime.cli": "import rotator.runtime.cli",
    "load + validate config/local.yaml": f"from rotator.config import load; load({LOCAL_CONFIG!r})",
    "build engine (emulator + file store)": (
        "import os, tempfile; os.chdir(tempfile.mkdtemp());"
        f"from rotator.config import load; from rotator.runtime.app import build; build(load({LOCAL_CONFIG!r})).close()"
    ),
}


LAMBDA_CONFIG = {
    "issuer": {
        "type": "momento",
        "management_key": {"env": "MOMENTO_MANAGEMENT_KEY"},
        "endpoint": "cell-4-us-west-2-1.prod.a.momentohq.com",
    },
    "stores": {"aws": {"type": "aws", "region": "us-east-1"}},
    "policies": [{"name": "checkout-api", "role": "operator", "targets": [{"store": "aws", "secret": "momento/x"}]}],
}

# The real path of a cold start: the handler's get_app() (load the config, open the stores, the Momento client,
# against a local emulator so that no network time is counted; the preflight runs before a pass's first action,
# not here) and the Secrets Manager client the first pass makes.
LAMBDA_APP = "import rotator.runtime.lambda_handler as h; app = h.get_app(); app.stores['aws']._client('us-east-1')"
LAMBDA_CASES: dict[str, str] = {
    "baseline: import boto3; boto3.client('secretsmanager')": "import boto3; boto3.client('secretsmanager')",
    "lambda: get_app() (config, stores, issuer) + the SM client": LAMBDA_APP,
    # the first invocation also writes the pass's CloudWatch EMF lines (Powertools, imported on first use)
    "lambda + the EMF lines of a pass (Powertools)": (
        LAMBDA_APP + ";import datetime, io; from rotator.engine import PassReport;"
        "t = datetime.datetime.now(datetime.UTC); h.emit_metrics(PassReport(t, t, False, []), io.StringIO())"
    ),
}


LAMBDA_README = ROOT / "deploy" / "aws-lambda" / "README.md"


def _sh_block(readme: str, heading: str) -> str:
    """The first ```sh block under the README section whose heading starts with ``heading``."""
    section = readme.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found is not None, f"no sh block under {heading!r} in {LAMBDA_README}"
    return found.group(1)


def lambda_package(work: Path) -> Path:
    """The deployment package, built in ``work`` the way deploy/aws-lambda/README.md says: a copy of the tracked
    files, step 2's first command (the example config; the editor and the validate step are for people), then
    step 4's block as written (with this interpreter's pip as ``.venv/bin/pip``, and its Python version when it
    is not the template's 3.11). Returns the package directory (``deploy/aws-lambda/dist``)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    (work / ".venv" / "bin").mkdir(parents=True)
    pip = work / ".venv" / "bin" / "pip"
    pip.write_text(f'#!/bin/sh\nexec {sys.executable} -m pip "$@"\n')
    pip.chmod(0o755)
    readme = LAMBDA_README.read_text()
    step2 = _sh_block(readme, "2.").splitlines()[0]
    step4 = _sh_block(readme, "4.")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version != "3.11":
        print(f"# building the package for Python {version} (this interpreter), not the template's 3.11")
        step4 = step4.replace("--python-version 3.11", f"--python-version {version}")
    script = "set -eu\n" + step2 + "\n" + step4
    proc = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"deploy/aws-lambda/README.md's build commands failed:\n{script}\n{proc.stdout}{proc.stderr}")
    dist = work / "deploy" / "aws-lambda" / "dist"
    assert (dist / "rotator" / "runtime" / "lambda_handler.py").is_file(), sorted(p.name for p in dist.iterdir())
    return dist


def _once(snippet: str, env: dict[str, str], flags: tuple[str, ...] = ()) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *flags, "-c", snippet + TAIL],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - t0
    return wall, int(json.loads(out.stdout.strip().splitlines()[-1])["rss_kb"])


def main(cases: dict[str, str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--lambda", dest="lambda_", action="store_true", help="the Lambda cold start against boto3")
    ap.add_argument("--here", action="store_true", help="with --lambda: in this environment, not the package")
    args = ap.parse_args()
    cases = cases or (LAMBDA_CASES if args.lambda_ else CASES)
    lambda_config, management_key, emulator = dict(LAMBDA_CONFIG), "unused", None
    flags: tuple[str, ...] = ()
    package_env: dict[str, str] = {}
    work: Path | None = None
    if args.lambda_ and not args.here:
        work = Path(tempfile.mkdtemp(prefix="rotator-lambda-package-"))
        t0 = time.perf_counter()
        dist = lambda_package(work)
        size = sum(f.stat().st_size for f in dist.rglob("*") if f.is_file())
        print(
            f"# the deployment package, built as deploy/aws-lambda/README.md says: {size / 2**20:.1f} MiB unzipped, "
            f"built in {time.perf_counter() - t0:.0f} s; the cases run with it alone on the path (python -S)"
        )
        flags = ("-S",)
        package_env = {"PYTHONPATH": str(dist)}
    if args.lambda_:
        from rotator.issuers.emulator import Emulator

        tmp = Path(tempfile.mkdtemp(prefix="rotator-cold-"))
        emulator = Emulator(tmp / "emu.db", bootstrap_key_file=tmp / "owner.key")
        lambda_config["issuer"] = dict(LAMBDA_CONFIG["issuer"], url=emulator.start())  # type: ignore[arg-type]
        management_key = emulator.bootstrap_key.reveal()
    env = dict(
        os.environ,
        AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        ROTATOR_CONFIG_YAML=json.dumps(lambda_config),
        MOMENTO_MANAGEMENT_KEY=management_key,
        **package_env,
    )
    # the cases take turns in every round, so a busy machine slows them alike
    walls: dict[str, list[float]] = {k: [] for k in cases}
    rss: dict[str, list[int]] = {k: [] for k in cases}
    for _ in range(args.runs):
        for name, snippet in cases.items():
            w, r = _once(snippet, env, flags)
            walls[name].append(w)
            rss[name].append(r)
    if emulator is not None:
        emulator.stop()
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    first = next(iter(cases))
    base_w, base_r = statistics.median(walls[first]), statistics.median(rss[first])
    width = max(len(k) for k in cases)
    print(f"{'case'.ljust(width)}  wall (median, ms)  peak RSS (MiB)  vs first row (wall, RSS)")
    for name in cases:
        w, r = statistics.median(walls[name]), statistics.median(rss[name])
        print(f"{name.ljust(width)}  {w * 1000:17.0f}  {r / 1024:14.1f}  {w / base_w:5.2f}x, {r / base_r:4.2f}x")


if __name__ == "__main__":
    main()
