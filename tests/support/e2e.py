"""Shared helpers for the end-to-end tests: a Momento emulator in this process with a clock the test sets,
temp configs that point rotator at it over HTTP, ``rotator`` run as a subprocess with ``--now``, and
snapshots of the file store.

The emulator and the subprocess see the same time: :meth:`Harness.run` sets the emulator's clock to ``now``
and passes ``--now <iso>`` to rotator (whose clock then runs on from that instant at real speed, so it is a
fraction of a second ahead of the emulator's; every step in the tests leaves minutes of margin).

Nothing here patches rotator or an SDK: the subprocess is the real ``rotator`` script, the emulator is the
real server, and the store is a real directory under the test's ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import yaml

from rotator import config as config_mod
from rotator.engine import PassReport
from rotator.issuers.emulator import Emulator
from rotator.model import policy_of

#: the cell host stored beside each key (a public-cell shape, so no private_endpoints are needed)
ENDPOINT = "cell-1-us-east-1-1.emulator.local"
#: the venv's console script
ROTATOR = str(Path(sys.executable).parent / "rotator")
#: a fixed start time for clock-driven tests (whole seconds, far from "now", so real time never matters)
T0 = datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)

#: two policies: ``checkout`` (json) and ``reporting`` (env + a key-format target with its endpoint
#: secret). Both: lifetime 1h, rotate_before 20m -> due 39m after issue (clock_skew 1m); grace differs.
CHECKOUT: dict[str, Any] = {
    "name": "checkout",
    "role": "operator",
    "description": "checkout cache access",
    "lifetime": "1h",
    "rotate_before": "20m",
    "grace": "5m",
    "orphan_after": "10m",
    "format": "json",
    "targets": [{"store": "local", "secret": "checkout/momento"}],
}
REPORTING: dict[str, Any] = {
    "name": "reporting",
    "role": "viewer",
    "description": "reporting job",
    "lifetime": "1h",
    "rotate_before": "20m",
    "grace": "10m",
    "orphan_after": "10m",
    "format": "env",
    "targets": [
        {"store": "local", "secret": "reporting/env"},
        {"store": "local", "secret": "reporting/key", "format": "key", "endpoint_secret": "reporting/endpoint"},
    ],
}
TWO_POLICIES = [CHECKOUT, REPORTING]
#: secret name -> payload format, for the two policies above
SECRETS = {"checkout/momento": "json", "reporting/env": "env", "reporting/key": "key"}
POLICY_SECRETS = {"checkout": ["checkout/momento"], "reporting": ["reporting/env", "reporting/key"]}


def at(minutes: float, start: datetime = T0) -> datetime:
    return start + timedelta(minutes=minutes)


class MutableClock:
    """The emulator's clock: epoch seconds that change only when the test sets them."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, t: datetime) -> None:
        self.now = t.timestamp()

    def as_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def fake_v2_key(key_id: str = "00000000-0000-4000-8000-00000000dead") -> str:
    """A well-formed v2 API key that no emulator issued."""
    return jwt.encode({"t": "g", "jti": key_id}, "not-the-emulator-secret-0123456789abcdef", algorithm="HS256")


# ---- subprocess runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished ``rotator`` subprocess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def summary(self) -> dict[str, Any]:
        """The ``{"summary": ...}`` line ``rotator once`` prints (the only line on stdout)."""
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected one summary line on stdout, got {self.stdout!r}"
        data = json.loads(lines[0])
        assert set(data) == {"summary"}, data
        summary: dict[str, Any] = data["summary"]
        return summary

    def stdout_json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in self.stdout.splitlines() if ln.strip()]

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr (anything else, e.g. a warning, is skipped)."""
        out = []
        for ln in self.stderr.splitlines():
            try:
                data = json.loads(ln)
            except ValueError:
                continue
            if isinstance(data, dict):
                out.append(data)
        return out

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == event]

    def explain(self) -> str:
        return f"rotator {' '.join(self.args)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run_rotator(
    *args: str, cwd: Path, now: datetime | None = None, timeout: float = 30, env: dict[str, str] | None = None
) -> Run:
    """Run the ``rotator`` script with ``args`` (plus ``--now``), in ``cwd``, and capture everything."""
    argv = list(args)
    if now is not None:
        argv += ["--now", now.isoformat()]
    full_env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    full_env.update(env or {})
    proc = subprocess.run(
        [ROTATOR, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )
    return Run(argv, proc.returncode, proc.stdout, proc.stderr)


# ---- the file store, seen from outside ----------------------------------------------------------------


def tree_snapshot(root: Path) -> dict[str, tuple[str, str | bytes, int]]:
    """Every entry under ``root``: kind, content (bytes, or a symlink's target) and mode. Equal snapshots
    mean nothing was created, deleted, rewritten or re-pointed."""
    out: dict[str, tuple[str, str | bytes, int]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for name in dirnames + filenames:
            p = d / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), st.st_mode)
            elif p.is_dir():
                out[rel] = ("dir", b"", st.st_mode)
            else:
                out[rel] = ("file", p.read_bytes(), st.st_mode)
    return out


def current_version(secret_dir: Path) -> str:
    """The version name ``current`` points at (``versions/<name>.value``)."""
    target = os.readlink(secret_dir / "current")
    assert target.startswith("versions/") and target.endswith(".value"), target
    return target.removeprefix("versions/").removesuffix(".value")


def current_payload(secret_dir: Path) -> str:
    return (secret_dir / "current").read_text()


def version_meta(secret_dir: Path, version: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((secret_dir / "versions" / f"{version}.json").read_text())
    return data


def all_version_metas(secret_dir: Path) -> dict[str, dict[str, Any]]:
    """key id -> metadata of every version of a secret."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted((secret_dir / "versions").glob("*.json")):
        meta = json.loads(p.read_text())
        out[meta["key_id"]] = meta
    return out


def env_lines(payload: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in payload.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name] = value
    return out


def api_key_of(fmt: str, payload: str) -> str:
    """The API key inside a stored payload, parsed independently of rotator's own parser."""
    if fmt == "json":
        key: str = json.loads(payload)["apiKey"]
        return key
    if fmt == "env":
        return env_lines(payload)["MOMENTO_API_KEY"]
    return payload.strip()


def payload_key_id(fmt: str, payload: str) -> str:
    """The key id a stored payload says it holds (json ``keyId``, env ``MOMENTO_KEY_ID``, key: the JWT's jti)."""
    if fmt == "json":
        kid: str = json.loads(payload)["keyId"]
        return kid
    if fmt == "env":
        return env_lines(payload)["MOMENTO_KEY_ID"]
    claims = jwt.decode(payload.strip(), options={"verify_signature": False})
    jti: str = claims["jti"]
    return jti


def jti_of(api_key: str) -> str:
    jti: str = jwt.decode(api_key, options={"verify_signature": False})["jti"]
    return jti


def stored_plaintexts(secrets_root: Path) -> set[str]:
    """Every API key in every version file under ``secrets_root`` (retired ones included)."""
    keys: set[str] = set()
    for value in secrets_root.rglob("versions/*.value"):
        meta_path = value.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if str(meta.get("key_id", "")).startswith("endpoint-"):
            continue  # an endpoint secret: a host name, not a key
        text = value.read_text()
        if text.startswith("{"):
            keys.add(json.loads(text)["apiKey"])
        elif "MOMENTO_API_KEY=" in text:
            keys.add(env_lines(text)["MOMENTO_API_KEY"])
        else:
            keys.add(text.strip())
    return keys


def leftover_temp_files(root: Path) -> list[str]:
    """Temp files an interrupted atomic write would leave behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith((".tmp-", ".current-")))


# ---- the harness ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    policy: str | None
    issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class Harness:
    """An emulator served from this process on 127.0.0.1 plus a temp tree: ``state/`` (the emulator's
    database and bootstrap key), ``secrets/`` (the file store) and ``work/`` (the subprocess's cwd)."""

    def __init__(
        self,
        root: Path,
        *,
        start: datetime = T0,
        real_time: bool = False,
        failure_rate: float = 0.0,
        seed: int | None = None,
        latency: float = 0.0,
        retry_after: float = 1,
    ) -> None:
        self.root = root
        self.state = root / "state"
        self.secrets = root / "secrets"
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.clock = MutableClock(start)
        self.key_file = self.state / "owner.key"
        clock: Callable[[], float] = time.time if real_time else self.clock
        self.emulator = Emulator(
            self.state / "emulator.db",
            clock=clock,
            bootstrap_key_file=self.key_file,
            failure_rate=failure_rate,
            seed=seed,
            latency=latency,
            retry_after=retry_after,
        )
        self.url = self.emulator.start()

    def close(self) -> None:
        self.emulator.stop()

    @property
    def bootstrap_key(self) -> str:
        return self.emulator.bootstrap_key.reveal()

    # -- config --

    def config_data(
        self,
        policies: list[dict[str, Any]] | None = None,
        *,
        url: str | None = None,
        key_file: Path | None = None,
        issuer: dict[str, Any] | None = None,
        **top: Any,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "issuer": {
                "type": "momento",
                "url": url or self.url,
                "management_key": {"file": str(key_file or self.key_file)},
                "endpoint": ENDPOINT,
                **(issuer or {}),
            },
            "interval": "1m",
            "jitter": "0s",
            "clock_skew": "1m",
            "pass_timeout": "1m",
            "stores": {"local": {"type": "file", "path": str(self.secrets)}},
            "policies": policies if policies is not None else TWO_POLICIES,
        }
        data.update(top)
        return data

    def write_config(
        self, policies: list[dict[str, Any]] | None = None, *, name: str = "rotator.yaml", **kw: Any
    ) -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(self.config_data(policies, **kw), sort_keys=False))
        return path

    # -- running rotator --

    def run(self, *args: str, now: datetime | None = None, timeout: float = 30) -> Run:
        """``rotator <args> --now <now>`` in ``work/``, with the emulator's clock set to ``now`` first."""
        if now is not None:
            self.clock.set(now)
        return run_rotator(*args, cwd=self.work, now=now, timeout=timeout)

    def once_in_process(self, config_path: Path, now: datetime) -> PassReport:
        """One pass in this process (for setting up state cheaply); the emulator's clock is set to ``now``."""
        from rotator.runtime.app import build

        self.clock.set(now)
        cfg = config_mod.load(config_path)
        with build(cfg, clock=lambda: now) as app:
            report = app.engine.run_pass()
        assert report.ok, report.to_json()
        return report

    # -- the emulator's keys --

    def issued_keys(self) -> list[KeyRecord]:
        """Every key the emulator has issued, revoked ones included, in issue order."""
        return [
            KeyRecord(info.key_id, policy_of(info.description), info.issued_at, info.expires_at, revoked)
            for info, revoked in self.emulator.list_key_infos(include_revoked=True)
        ]

    def policy_keys(self, policy: str) -> list[KeyRecord]:
        return [k for k in self.issued_keys() if k.policy == policy]

    def live_ids(self, policy: str | None = None) -> list[str]:
        return [k.key_id for k in self.issued_keys() if k.revoked_at is None and (policy is None or k.policy == policy)]

    def revoked_ids(self, policy: str) -> list[str]:
        return [k.key_id for k in self.policy_keys(policy) if k.revoked_at is not None]

    def newest_id(self, policy: str) -> str:
        return self.policy_keys(policy)[-1].key_id

    # -- the store --

    def secret_dir(self, secret: str) -> Path:
        return self.secrets / secret

    def snapshot(self) -> tuple[dict[str, tuple[str, str | bytes, int]], list[KeyRecord]]:
        """The whole store tree and the emulator's key list: equal snapshots mean nothing changed."""
        return tree_snapshot(self.secrets), self.issued_keys()


@contextmanager
def harness(root: Path, **kw: Any) -> Iterator[Harness]:
    h = Harness(root, **kw)
    try:
        yield h
    finally:
        h.close()
