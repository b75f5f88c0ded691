"""``rotator run``: the daemon publishes keys on its own, and SIGTERM stops it cleanly (exit 0) with every
secret in a consistent state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.e2e import (
    POLICY_SECRETS,
    ROTATOR,
    SECRETS,
    api_key_of,
    current_payload,
    current_version,
    harness,
    jti_of,
    leftover_temp_files,
    payload_key_id,
    version_meta,
)


def _any_published(secrets_root: Path) -> bool:
    return any((secrets_root / s / "current").exists() for s in SECRETS)


def test_run_publishes_keys_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    # the emulator runs on real time here, with a little latency so that passes take a while
    with harness(tmp_path, real_time=True, latency=0.05) as h:
        cfg = h.write_config(
            interval="1s", jitter="0s", clock_skew="1s", pass_timeout="30s", concurrency=1, http={"listen": None}
        )
        env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
        proc = subprocess.Popen(
            [ROTATOR, "-c", str(cfg), "run"],
            cwd=h.work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not _any_published(h.secrets):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert _any_published(h.secrets), "the daemon did not publish a key within 20 s"
            assert proc.poll() is None, "the daemon exited on its own"
            # most likely in the middle of the first pass: the action in flight must finish, the rest wait
            proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            out, err = proc.communicate(timeout=10)
            took = time.monotonic() - stopped_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
        assert took < 5, f"SIGTERM took {took:.1f} s"
        events = [json.loads(ln).get("event") for ln in err.splitlines() if ln.startswith("{")]
        assert "rotator stopped" in events, err

        # no half-written file; every secret directory has a valid current version with its metadata; and a
        # policy whose key was created holds it in every target (creating and publishing is one action, which
        # SIGTERM lets finish)
        assert leftover_temp_files(h.secrets) == []
        for policy, secrets in POLICY_SECRETS.items():
            live = h.live_ids(policy)
            assert len(live) <= 1, (policy, live)
            for secret in secrets:
                d = h.secret_dir(secret)
                if not live:
                    assert not d.exists(), f"{secret} was written, but {policy} has no live key"
                    continue
                version = current_version(d)
                meta = version_meta(d, version)
                payload = current_payload(d)
                fmt = SECRETS[secret]
                assert meta["key_id"] == payload_key_id(fmt, payload) == jti_of(api_key_of(fmt, payload))
                assert meta["policy"] == policy
                assert meta["enabled"] is True
                assert meta["promoted_at"] is not None
                assert meta["key_id"] in live, (secret, meta["key_id"], live)
                for value in (d / "versions").glob("*.value"):
                    assert value.with_suffix(".json").exists(), f"{value} has no metadata"
        if h.live_ids("reporting"):
            assert (h.secret_dir("reporting/endpoint") / "current").exists()
