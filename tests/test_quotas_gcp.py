"""The GCP store keeps Secret Manager's request quotas (issue 27), proven against the project's Secret Manager server
in quota mode, through the real client library over HTTP: one limiter shared by every worker, adapting when the
service refuses more than the client was told, the per-secret write rate, and the config's overrides."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from rotator.config import loads
from rotator.errors import ConfigError, StoreUnavailable
from rotator.model import SecretText
from rotator.quotas import RateLimits
from rotator.stores.base import TargetRef, VersionMeta
from rotator.stores.gcp import GcpSecretManagerStore, StoreConfig, open_store
from tests.servers.gcp_secretmanager import SecretManagerServer, running_secretmanager

PROJECT = "test-project"
WRITES = "WriteRequestsPerMinutePerProject"


@pytest.fixture(scope="module")
def server() -> Iterator[SecretManagerServer]:
    with running_secretmanager() as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(server: SecretManagerServer) -> Iterator[None]:
    server.reset()
    yield
    server.quotas_off()
    server.reset()


def _store(server: SecretManagerServer, limits: RateLimits, **cfg: Any) -> GcpSecretManagerStore:
    body: dict[str, Any] = {
        "type": "gcp",
        "project": PROJECT,
        "transport": "rest",
        "retry": {"attempts": 12, "initial_backoff": 0.01, "max_backoff": 0.05},
        **cfg,
    }
    s = open_store(
        "sm",
        StoreConfig.model_validate(body),
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": server.endpoint},
        limits=limits,
    )
    assert isinstance(s, GcpSecretManagerStore)
    return s


def _publish(store: GcpSecretManagerStore, secret: str, n: int) -> None:
    ref = TargetRef("sm", secret, "p")
    key_id = f"k{n}-{secret}"
    meta = VersionMeta(key_id, "p", datetime(2031, 1, 1, tzinfo=UTC), "application/json")
    store.stage(ref, SecretText(f'{{"id": "{key_id}"}}'), meta)
    store.promote(ref, key_id)


def _run(store: GcpSecretManagerStore, workers: int, secrets_each: int) -> float:
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for i in range(secrets_each):
                _publish(store, f"s{w}-{i}", 1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return time.monotonic() - started


def test_one_limiter_paces_every_worker_inside_the_write_quota(server: SecretManagerServer) -> None:
    """Eight workers publishing at once share the project's write window: the server refuses none, and the
    time is what the quota allows (writes / rate), not what eight workers could send."""
    book = server.enforce_quotas(scale=10, limits={WRITES: 24})  # 24 writes per 6 s
    limits = RateLimits()
    store = _store(server, limits, quotas={"write": "24/6s"})
    elapsed = _run(store, workers=8, secrets_each=2)
    writes = book.served(WRITES)
    assert writes >= 16 * 3  # create (with the entry), the version, the promote: for each of 16 secrets
    assert book.throttled(WRITES) == 0, book.stats()
    # the first window's 24 go at once, the rest in the next window (the client keeps 2% and more in hand)
    assert elapsed >= 6, (elapsed, writes)
    stats = {s["quota"]: s for s in limits.stats()}
    assert stats["write"]["admitted"] == writes and stats["write"]["waited_seconds"] > 0


def test_a_smaller_quota_than_configured_is_found_and_kept_to(server: SecretManagerServer) -> None:
    """The client believes 40 writes per 2 s, the project really has 10 (another tool uses the rest): the
    first refusals cut the shared limit, later writes keep to it, and every publish still completes."""
    book = server.enforce_quotas(scale=30, limits={WRITES: 10})
    limits = RateLimits()
    store = _store(server, limits, quotas={"write": "40/2s"})
    _run(store, workers=6, secrets_each=2)
    refused, served = book.throttled(WRITES), book.served(WRITES)
    assert refused > 0
    write = next(s for s in limits.stats() if s["quota"] == "write")
    assert write["limit"] < 40 and write["refused"] == refused
    assert refused <= served  # adapted: not most of the time refused
    for w in range(6):
        for i in range(2):
            assert server.secret(PROJECT, f"s{w}-{i}").aliases.get("current") is not None


def test_one_secret_is_written_at_most_twice_a_second(server: SecretManagerServer) -> None:
    """AddSecretVersion and UpdateSecret share 2 per second per secret (documented numbers, no override): a
    rotation's entry, version and promote are spaced, and the server refuses none."""
    book = server.enforce_quotas()
    store = _store(server, RateLimits())
    started = time.monotonic()
    for n in range(3):
        _publish(store, "hot", n)
    elapsed = time.monotonic() - started
    assert book.throttled() == 0, book.stats()
    per_secret = book.served("AddOrUpdatePerSecondPerSecret")
    assert per_secret >= 8  # the first publish creates the secret with its entry; later ones add the entry
    assert elapsed >= (per_secret - 2) / 2 * 0.95


def test_limits_off_send_at_once_and_are_refused(server: SecretManagerServer) -> None:
    """`rate_limits: false`: the same publishes are refused by the service; with this test's short backoff
    (12 attempts in about half a second) the retries run out before the second is over."""
    book = server.enforce_quotas()
    store = _store(server, RateLimits(enabled=False))
    with pytest.raises(StoreUnavailable, match="429 RESOURCE_EXHAUSTED"):
        for n in range(3):
            _publish(store, "hot", n)
    assert book.throttled("AddOrUpdatePerSecondPerSecret") > 0


def test_publish_cost_names_the_scopes_a_publish_charges(server: SecretManagerServer) -> None:
    store = _store(server, RateLimits(), quotas={"read": None})
    cost = {(c.quota.name, c.key): n for c, n in store.publish_cost(TargetRef("sm", "x", "p"))}
    assert cost == {
        ("read", f"projects/{PROJECT}"): 1,
        ("write", f"projects/{PROJECT}"): 3,
        ("access", f"projects/{PROJECT}"): 1,
        ("secret_writes", f"projects/{PROJECT}/secrets/x"): 3,
        ("secret_writes_per_minute", f"projects/{PROJECT}/secrets/x"): 3,
    }
    read = next(c for c, _ in store.publish_cost(TargetRef("sm", "x", "p")) if c.quota.name == "read")
    assert read.quota.limit is None  # the override: no limit


def test_a_bad_quota_override_is_a_config_error_naming_the_field() -> None:
    text = """
issuer: {type: emulator}
stores:
  g: {type: gcp, project: my-project-1, quotas: {writes: "10/1m", read: "ten a minute"}}
policies:
  - {name: a, role: operator, lifetime: 1h, rotate_before: 20m, grace: 5m, targets: [{store: g, secret: a}]}
"""
    with pytest.raises(ConfigError) as info:
        loads(text)
    msg = str(info.value)
    assert "stores.g.quotas" in msg
    assert "unknown quota 'writes'" in msg and "access, read, secret_writes" in msg
    assert "read: 'ten a minute' is not a rate such as \"600/1m\"" in msg


def test_a_refusal_cuts_only_the_quota_the_service_names(server: SecretManagerServer) -> None:
    """A secret's own 2-per-second limit refused (the client told it has none there): the refusal's ErrorInfo
    names that quota, so the project's write limit stays whole (cutting it for a busy secret slowed a whole
    mass rotation to half, bench/quotas.py), and the secret's scope pauses."""
    book = server.enforce_quotas()
    limits = RateLimits()
    store = _store(server, limits, quotas={"secret_writes": None, "secret_writes_per_minute": None})
    for n in range(3):
        _publish(store, "hot", n)
    assert book.throttled("AddOrUpdatePerSecondPerSecret") > 0
    stats = {s["quota"]: s for s in limits.stats()}
    assert stats["secret_writes"]["refused"] > 0
    assert stats["write"]["refused"] == 0 and stats["write"]["limit"] == 600
