"""Cold start: whole Python processes, timed from outside, with their peak memory (ru_maxrss).

Each case is a fresh interpreter that runs a snippet and prints its peak RSS; the wall time is the median of
several runs. ``--lambda``: the Lambda's real cold-start path, ``get_app()`` (against a local emulator; the
preflight runs later, before a pass's first action) plus the Secrets Manager client, against
``import boto3; boto3.client("secretsmanager")``.
Usage: python bench/cold_start.py [--runs 9] [--lambda]
"""

from __future__ import annotations

import argparse
import json
import os
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


def _once(snippet: str, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", snippet + TAIL],
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
    args = ap.parse_args()
    cases = cases or (LAMBDA_CASES if args.lambda_ else CASES)
    lambda_config, management_key, emulator = dict(LAMBDA_CONFIG), "unused", None
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
    )
    # the cases take turns in every round, so a busy machine slows them alike
    walls: dict[str, list[float]] = {k: [] for k in cases}
    rss: dict[str, list[int]] = {k: [] for k in cases}
    for _ in range(args.runs):
        for name, snippet in cases.items():
            w, r = _once(snippet, env)
            walls[name].append(w)
            rss[name].append(r)
    if emulator is not None:
        emulator.stop()
    first = next(iter(cases))
    base_w, base_r = statistics.median(walls[first]), statistics.median(rss[first])
    width = max(len(k) for k in cases)
    print(f"{'case'.ljust(width)}  wall (median, ms)  peak RSS (MiB)  vs first row (wall, RSS)")
    for name in cases:
        w, r = statistics.median(walls[name]), statistics.median(rss[name])
        print(f"{name.ljust(width)}  {w * 1000:17.0f}  {r / 1024:14.1f}  {w / base_w:5.2f}x, {r / base_r:4.2f}x")


if __name__ == "__main__":
    main()
