"""The install a user makes: the wheel in a fresh venv, with no extras and with each extra alone.

Nothing here uses the test venv's packages inside the installed rotator: each venv is new (``python -m venv``)
and gets the wheel from ``pip install`` with its dependencies from the package index, as a user's would. The
servers a backend talks to (moto, the Key Vault and Secret Manager test servers, the Kubernetes API server) run
in this test process; the installed rotator reaches them over HTTP on 127.0.0.1.

The last test runs the README's first command, ``make run``, in a copy of the checkout's tracked files (what
``git clone`` gives), as far as its first completed pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("aws", "azure", "gcp", "k8s", "lambda")
#: what each extra brings, by the top-level module its SDK installs
SDK_MODULES = {
    "aws": "boto3",
    "azure": "azure.keyvault.secrets",
    "gcp": "google.cloud.secretmanager",
    "k8s": "kubernetes",
}
SDKS_OF = {
    "": set(),
    "aws": {"aws"},
    "azure": {"azure"},
    "gcp": {"gcp"},
    "k8s": {"k8s"},
    "lambda": {"aws"},
}

pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rotator-install-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(work: Path) -> Path:
    """The project's wheel, built from the tracked sources."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "rotator", src / "rotator", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(work / "dist"), str(src)])
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (work / "dist").glob("momento_rotator-*.whl")
    return whl


def _venv(work: Path, wheel: Path, extra: str) -> Path:
    venv = work / f"venv-{extra or 'bare'}"
    if not venv.exists():
        r = _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        spec = f"{wheel}[{extra}]" if extra else str(wheel)
        r = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", spec], timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
    return venv


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH into this checkout, no test venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AWS_", "ROTATOR_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(extra)
    return env


def _assert_only_sdks(venv: Path, expected: set[str]) -> None:
    """The venv holds the SDKs of ``expected`` extras and no other."""
    probe = (
        "import importlib.util as u, json, sys\n"
        "def has(m):\n"
        "    try:\n"
        "        return u.find_spec(m) is not None\n"
        "    except ModuleNotFoundError:\n"
        "        return False\n"
        "print(json.dumps({m: has(m) for m in sys.argv[1:]}))\n"
    )
    r = _run([str(venv / "bin" / "python"), "-c", probe, *SDK_MODULES.values()], env=_clean_env())
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert {e for e, m in SDK_MODULES.items() if found[m]} == expected, found


def _demo_config(tmp: Path) -> Path:
    """config/local.yaml with its paths under ``tmp`` and the status listener on a free port."""
    text = (ROOT / "config" / "local.yaml").read_text()
    text = text.replace("./.rotator", str(tmp / ".rotator")).replace("127.0.0.1:9464", "127.0.0.1:0")
    cfg = tmp / "local.yaml"
    cfg.write_text(text)
    return cfg


def test_no_extras_runs_what_a_new_user_runs(work: Path, wheel: Path, tmp_path: Path) -> None:
    venv = _venv(work, wheel, "")
    _assert_only_sdks(venv, set())
    rotator = str(venv / "bin" / "rotator")
    env = _clean_env()
    cfg = _demo_config(tmp_path)

    r = _run([rotator, "--version"], env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip(), r.stdout + r.stderr
    r = _run([rotator, "validate", "-c", str(cfg)], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([rotator, "once", "-c", str(cfg)], env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])["summary"]
    assert summary["ok"] is True and summary["counts"]["created"] == 2, summary
    current = json.loads((tmp_path / ".rotator" / "secrets" / "demo" / "checkout" / "current").read_text())
    assert current["apiKey"] and current["keyId"], sorted(current)

    shutil.rmtree(tmp_path / ".rotator")
    proc = subprocess.Popen(
        [rotator, "run", "-c", str(cfg)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _read_until(proc, "pass finished", timeout=90)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, lines + out
    assert (tmp_path / ".rotator" / "secrets" / "demo" / "checkout" / "current").exists()


def _read_until(proc: subprocess.Popen[str], needle: str, *, timeout: float) -> str:
    """What ``proc`` printed, up to the first line holding ``needle`` (fails after ``timeout`` seconds)."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen.append(line)
            if needle in line:
                return "".join(seen)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    pytest.fail(f"no line with {needle!r} within {timeout}s (rc={proc.poll()}):\n" + "".join(seen)[-4000:])


def test_aws_extra_alone_rotates_into_secrets_manager(work: Path, wheel: Path, tmp_path: Path) -> None:
    from tests.servers.moto_server import running_moto

    venv = _venv(work, wheel, "aws")
    _assert_only_sdks(venv, SDKS_OF["aws"])
    with running_moto() as moto:
        cfg = tmp_path / "aws.yaml"
        cfg.write_text(
            textwrap.dedent(f"""\
            issuer: {{type: emulator, endpoint: cell-1-us-east-1-1.emulator.local, emulator: {{db: {tmp_path}/em.db}}}}
            stores: {{sm: {{type: aws, region: us-east-1, endpoint_url: "{moto.url}"}}}}
            policies:
              - {{name: demo, role: operator, description: demo, lifetime: 1h, rotate_before: 20m, grace: 1m,
                 targets: [{{store: sm, secret: momento/demo}}]}}
            """)
        )
        env = _clean_env(**{k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        r = _run([str(venv / "bin" / "rotator"), "once", "-c", str(cfg)], env=env, cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        import boto3

        sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto.url)
        value = json.loads(sm.get_secret_value(SecretId="momento/demo")["SecretString"])
        assert value["keyId"] and value["apiKey"], sorted(value)


def test_lambda_extra_alone_opens_the_handler_and_its_metrics(work: Path, wheel: Path) -> None:
    venv = _venv(work, wheel, "lambda")
    _assert_only_sdks(venv, SDKS_OF["lambda"])
    code = (
        "import rotator.runtime.lambda_handler as h, rotator.metrics as m\n"
        "from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider\n"
        "assert callable(h.scheduled_handler) and callable(h.rotation_handler); print('ok')\n"
    )
    r = _run([str(venv / "bin" / "python"), "-c", code], env=_clean_env(), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_azure_extra_alone_opens_a_key_vault_store(work: Path, wheel: Path) -> None:
    from tests.servers.azure_keyvault import running_keyvault

    venv = _venv(work, wheel, "azure")
    _assert_only_sdks(venv, SDKS_OF["azure"])
    with running_keyvault() as kv:
        code = textwrap.dedent(f"""\
            import time
            from azure.core.credentials import AccessToken
            from rotator.stores.azure import StoreConfig, open_store
            from rotator.stores.base import TargetRef

            class Token:
                def get_token(self, *scopes, **kw):
                    return AccessToken({kv.token!r}, int(time.time()) + 3600)

            cfg = StoreConfig.model_validate({{"type": "azure", "vault_url": {kv.url!r}, "allow_any_vault_url": True,
                "client_options": {{"verify_challenge_resource": False}}}})
            store = open_store("kv", cfg, credential=Token(), connection_verify={kv.ca_path!r})
            state = store.inspect(TargetRef(store="kv", secret="momento-demo", policy="demo"))
            print(len(state.versions))
            """)
        r = _run([str(venv / "bin" / "python"), "-c", code], env=_clean_env(), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout + r.stderr


def test_gcp_extra_alone_opens_a_secret_manager_store(work: Path, wheel: Path) -> None:
    from tests.servers.gcp_secretmanager import SecretManagerServer

    venv = _venv(work, wheel, "gcp")
    _assert_only_sdks(venv, SDKS_OF["gcp"])
    server = SecretManagerServer().start()
    try:
        code = textwrap.dedent(f"""\
            from google.auth.credentials import AnonymousCredentials
            from rotator.stores.gcp import StoreConfig, open_store
            from rotator.stores.base import TargetRef

            cfg = StoreConfig.model_validate({{"type": "gcp", "project": "rotator-test", "transport": "rest"}})
            store = open_store("sm", cfg, credentials=AnonymousCredentials(),
                               client_options={{"api_endpoint": {server.endpoint!r}}})
            state = store.inspect(TargetRef(store="sm", secret="momento-demo", policy="demo"))
            print(len(state.versions))
            """)
        r = _run([str(venv / "bin" / "python"), "-c", code], env=_clean_env(), timeout=120)
    finally:
        server.stop()
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout + r.stderr


def test_k8s_extra_alone_reads_the_cluster_as_a_pod(work: Path, wheel: Path, tmp_path: Path) -> None:
    from tests.servers.kube_api import KubeApiServer

    venv = _venv(work, wheel, "k8s")
    _assert_only_sdks(venv, SDKS_OF["k8s"])
    with KubeApiServer(tls=True) as api:
        api.put_secret("payments", "momento", {"keyId": "k-1"})
        pod_env = api.service_account(tmp_path / "sa", namespace="payments")
        code = textwrap.dedent(f"""\
            from kubernetes import client
            from rotator.pickup.kubernetes import load_api_client

            api = load_api_client(
                in_cluster=True, kubeconfig=None, context=None, service_account_dir={str(tmp_path / "sa")!r}
            )
            print(sorted(client.CoreV1Api(api).read_namespaced_secret("momento", "payments").data))
            """)
        r = _run([str(venv / "bin" / "python"), "-c", code], env=_clean_env(**pod_env), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "['keyId']", r.stdout + r.stderr


def test_make_run_from_a_clean_clone_completes_a_pass(tmp_path: Path) -> None:
    """The README's first command, in a copy of the tracked files, with the machine's python3 and no venv."""
    if not (ROOT / ".git").exists():
        pytest.fail("needs a git checkout: the test copies what `git clone` would give")
    files = _run(["git", "-C", str(ROOT), "ls-files", "-z"]).stdout.split("\0")
    clone = tmp_path / "rotator"
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / name)
    # the demo's status listener on a free port, so the test never collides with a `make run` on this machine
    local = clone / "config" / "local.yaml"
    local.write_text(local.read_text().replace("127.0.0.1:9464", "127.0.0.1:0"))
    env = _clean_env()
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out = _read_until(proc, "pass finished", timeout=480)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # make passes the SIGINT on and then ends by it (-2); rotator itself must have stopped cleanly
    assert proc.returncode in (0, -signal.SIGINT), (out + rest)[-4000:]
    assert "rotator stopped" in rest and "Error" not in rest, (out + rest)[-4000:]
    current = json.loads((clone / ".rotator" / "secrets" / "demo" / "checkout" / "current").read_text())
    assert current["keyId"], sorted(current)


def test_a_store_type_from_an_installed_package_runs_a_pass(work: Path, wheel: Path, tmp_path: Path) -> None:
    """A third-party store, as its author ships it (examples/store-plugin: a wheel with a ``rotator.stores``
    entry point), installed beside rotator: its own tests pass rotator.testing's store contract in that venv,
    and ``rotator once`` rotates into it, without a line of rotator changed."""
    venv = _venv(work, wheel, "")
    python = str(venv / "bin" / "python")
    env = _clean_env()
    dist = tmp_path / "dist"
    r = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(dist),
            str(ROOT / "examples" / "store-plugin"),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (plugin,) = dist.glob("rotator_jsondir-*.whl")
    # as its users install it: the wheel and its test extra (momento-rotator[testing]: pytest), rotator already there
    r = _run([python, "-m", "pip", "install", "-q", "--no-compile", f"{plugin}[test]"], env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr

    # the plugin's own test module, run where a plugin author runs it: against the installed rotator
    shutil.copytree(ROOT / "examples" / "store-plugin" / "tests", tmp_path / "plugin-tests")
    r = _run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "plugin-tests")], env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout, r.stdout[-2000:]

    cfg = _demo_config(tmp_path)
    text = cfg.read_text().replace(
        "type: file\n    path: " + str(tmp_path / ".rotator" / "secrets"),
        "type: jsondir\n    path: " + str(tmp_path / "jsondir"),
    )
    assert "type: jsondir" in text
    cfg.write_text(text)
    rotator = str(venv / "bin" / "rotator")
    r = _run([rotator, "validate", "-c", str(cfg)], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([rotator, "once", "-c", str(cfg)], env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])["summary"]
    assert summary["ok"] is True and summary["counts"]["created"] == 2, summary
    doc = json.loads((tmp_path / "jsondir" / "demo" / "checkout.json").read_text())
    (current,) = [v for v in doc["versions"] if v["version"] == doc["current"]]
    assert json.loads(current["value"])["keyId"] == current["key_id"]

    # a type nothing provides: exit 2, naming it and what to install
    cfg.write_text(text.replace("type: jsondir", "type: vault"))
    r = _run([rotator, "validate", "-c", str(cfg)], env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "stores.local.type: unknown store type 'vault'" in r.stderr and "entry point named 'vault'" in r.stderr
    assert "jsondir" in r.stderr  # the installed plugin's type is among the known ones


def test_the_sbom_of_an_install_lists_momento_rotator_and_what_it_pulled_in(work: Path, wheel: Path) -> None:
    """What the release workflow does (cyclonedx-py environment over a venv holding the wheel), on the bare
    install: a CycloneDX document naming momento-rotator at its version and its runtime dependencies."""
    import tomllib

    venv = _venv(work, wheel, "")
    out = work / "sbom.cdx.json"
    cyclonedx = Path(sys.executable).parent / "cyclonedx-py"
    r = _run(
        [
            str(cyclonedx),
            "environment",
            "--of",
            "JSON",
            "--output-reproducible",
            "-o",
            str(out),
            str(venv / "bin" / "python"),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert doc["bomFormat"] == "CycloneDX"
    names = {c["name"].lower(): c.get("version") for c in doc["components"]}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert names.get("momento-rotator") == version, sorted(names)
    assert {"pydantic", "structlog", "apscheduler", "urllib3", "tzdata", "standardwebhooks"} <= set(names)
    assert "boto3" not in names  # no extra, no SDK
