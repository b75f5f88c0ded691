"""Each store's HTTP client keeps a connection per worker of a pass: 16 policies at once (``concurrency: 16``)
over one store neither queue for a connection nor open and drop connections (urllib3's "Connection pool is
full, discarding connection", which botocore's and requests' default pools of 10 give at 16 workers).

Driven through the real SDKs against the local servers (moto, the Key Vault and Secret Manager test servers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from rotator.errors import StoreNotFound
from rotator.stores.base import POOL_CONNECTIONS, SecretStore, StoreContext, StoreSpec, TargetRef
from rotator.stores.registry import open_store
from tests.servers.azure_keyvault import StaticTokenCredential, running_keyvault
from tests.servers.gcp_secretmanager import running_secretmanager
from tests.servers.moto_server import running_moto

WORKERS = 16
ROUNDS = 3


def _aws() -> Iterator[tuple[SecretStore, Callable[[str], TargetRef]]]:
    from rotator.stores.aws import StoreConfig, TargetOptions

    with running_moto() as moto:
        s = open_store(
            StoreSpec("aws-test", "aws", StoreConfig(type="aws", region="us-east-1", endpoint_url=moto.url)),
            StoreContext(options={"session": boto3.session.Session()}),
        )
        yield s, lambda n: TargetRef("aws-test", n, "p", TargetOptions(store="aws-test", secret=n))
        s.close()


def _azure() -> Iterator[tuple[SecretStore, Callable[[str], TargetRef]]]:
    from rotator.stores.azure import StoreConfig, TargetOptions

    with running_keyvault() as kv:
        cfg = StoreConfig.model_validate(
            {
                "type": "azure",
                "vault_url": kv.url,
                "allow_any_vault_url": True,
                "client_options": {"verify_challenge_resource": False},
            }
        )
        s = open_store(
            StoreSpec("kv-test", "azure", cfg),
            StoreContext(options={"credential": StaticTokenCredential(kv.token), "connection_verify": kv.ca_path}),
        )
        yield s, lambda n: TargetRef("kv-test", n, "p", TargetOptions(store="kv-test", secret=n))
        s.close()


def _gcp() -> Iterator[tuple[SecretStore, Callable[[str], TargetRef]]]:
    from google.auth.credentials import AnonymousCredentials

    from rotator.stores.gcp import StoreConfig, TargetOptions

    with running_secretmanager() as server:
        cfg = StoreConfig.model_validate({"type": "gcp", "project": "test-project", "transport": "rest"})
        s = open_store(
            StoreSpec("sm-test", "gcp", cfg),
            StoreContext(
                options={"credentials": AnonymousCredentials(), "client_options": {"api_endpoint": server.endpoint}}
            ),
        )
        yield s, lambda n: TargetRef("sm-test", n, "p", TargetOptions(store="sm-test", secret=n))
        s.close()


@pytest.fixture(params=["aws", "azure", "gcp"])
def store(request: pytest.FixtureRequest) -> Iterator[tuple[SecretStore, Callable[[str], TargetRef]]]:
    yield from {"aws": _aws, "azure": _azure, "gcp": _gcp}[request.param]()


def test_sixteen_workers_at_once_keep_their_connections(
    store: tuple[SecretStore, Callable[[str], TargetRef]], caplog: pytest.LogCaptureFixture
) -> None:
    assert POOL_CONNECTIONS >= WORKERS
    s, ref = store
    barrier = threading.Barrier(WORKERS)

    def inspect(i: int) -> Any:
        barrier.wait()  # every worker's request in flight at once, as in a mass rotation
        try:
            return s.inspect(ref(f"pool-{i}"))
        except StoreNotFound:
            return None

    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with ThreadPoolExecutor(WORKERS) as pool:
        for _ in range(ROUNDS):
            list(pool.map(inspect, range(WORKERS)))
    full = [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()]
    assert full == []
