"""Secret-store API calls per rotation per target and per steady-state pass, for every store.

Each store runs behind its local over-the-wire server (the file store on a temp dir, moto for AWS, the
project's Key Vault and Secret Manager servers), with the Momento emulator, through the real engine and the
real client libraries. A rotation is the due pass (create + publish) plus the pass after grace (retire +
revoke). The last row measures the Azure rotation again on secrets that already went through ``HISTORY``
rotations (one version each, never deleted), to show the cost does not grow with the number of versions.
Usage: python bench/store_calls.py
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the local test servers live in tests/servers

from rotator.config import from_mapping  # noqa: E402
from rotator.issuers.emulator import Emulator  # noqa: E402
from rotator.observability import configure_logging  # noqa: E402
from rotator.runtime.app import build  # noqa: E402
from tests.support.crash import count_calls  # noqa: E402

TARGETS = 3  # targets per policy: the figures are divided by this
HISTORY = 60  # rotations before the measured one, for the "after many versions" row


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def store_setup(kind: str, tmp: Path) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(service name in the call counter, the store's config, injected open_store options)."""
    if kind == "file":
        yield "file", {"type": "file", "path": str(tmp / "secrets")}, {}
    elif kind == "aws":
        from tests.servers.moto_server import running_moto

        with running_moto() as moto:
            yield "aws-secretsmanager", {"type": "aws", "region": "us-east-1", "endpoint_url": moto.url}, {}
    elif kind == "azure":
        from tests.servers.azure_keyvault import StaticTokenCredential, running_keyvault

        with running_keyvault() as kv:
            cfg = {
                "type": "azure",
                "vault_url": kv.url,
                "allow_any_vault_url": True,
                "client_options": {"verify_challenge_resource": False},
            }
            yield (
                "azure-keyvault",
                cfg,
                {"credential": StaticTokenCredential(kv.token), "connection_verify": kv.ca_path},
            )
    elif kind == "gcp":
        from google.auth.credentials import AnonymousCredentials

        from tests.servers.gcp_secretmanager import running_secretmanager

        with running_secretmanager() as sm:
            cfg = {"type": "gcp", "project": "bench-project", "transport": "rest"}
            yield (
                "gcp-secretmanager",
                cfg,
                {"credentials": AnonymousCredentials(), "client_options": {"api_endpoint": sm.endpoint}},
            )


def measure(kind: str, history: int = 0) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"rotator-bench-{kind}-"))
    clock = Clock()
    with ExitStack() as stack:
        service, store_cfg, injected = stack.enter_context(store_setup(kind, tmp))
        emu = Emulator(tmp / "emu.db", clock=lambda: clock.now.timestamp(), bootstrap_key_file=tmp / "owner.key")
        url = emu.start()
        stack.callback(emu.stop)
        config = from_mapping(
            {
                "issuer": {
                    "type": "momento",
                    "url": url,
                    "management_key": {"file": str(tmp / "owner.key")},
                    "endpoint": "cell-1-us-east-1-1.emulator.local",
                },
                "drift_check_every": "never",
                "verify_for": "0s",
                "log_level": "error",
                "defaults": {"lifetime": "30d", "rotate_before": "7d", "grace": "1h", "orphan_after": "15m"},
                "stores": {"s": store_cfg},
                "policies": [
                    {
                        "name": "bench",
                        "role": "operator",
                        "targets": [{"store": "s", "secret": f"bench-{i}"} for i in range(TARGETS)],
                    }
                ],
            }
        )
        app = stack.enter_context(build(config, clock=clock, store_options={"s": injected}))
        first = app.engine.run_pass()
        assert first.ok, first.to_json()
        for _ in range(history):
            clock.now += timedelta(days=24)
            app.engine.run_pass()
            clock.now += timedelta(hours=2)
            app.engine.run_pass()
        with count_calls(service) as steady:
            for _ in range(5):
                app.engine.run_pass()
        clock.now += timedelta(days=24)
        with count_calls(service) as publish:
            due = app.engine.run_pass()
        clock.now += timedelta(hours=2)
        with count_calls(service) as revoke:
            done = app.engine.run_pass()
        assert due.counts()["created"] == 1 and done.counts()["revoked"] == 1, (due.counts(), done.counts())
        return {
            "steady": len(steady) / 5,
            "publish": len(publish) / TARGETS,
            "revoke": len(revoke) / TARGETS,
        }


def main() -> None:
    configure_logging("error")
    rows = []
    for kind, history in (("file", 0), ("aws", 0), ("azure", 0), ("gcp", 0), ("azure", HISTORY), ("gcp", HISTORY)):
        m = measure(kind, history)
        label = kind if not history else f"{kind} after {history} rotations"
        rows.append((label, m["publish"] + m["revoke"], m["publish"], m["revoke"], m["steady"]))
    print(f"{'store':26} calls/rotation/target  (due pass + after-grace pass)  calls/steady-state pass")
    for label, total, pub, rev, steady in rows:
        print(f"{label:26} {total:21.1f}  ({pub:.1f} + {rev:.1f}){'':20} {steady:.1f}")


if __name__ == "__main__":
    main()
