"""Client-side request quotas in the Azure Key Vault store (issue 27), over real HTTPS through ``SecretClient``
against the local Key Vault in its quota mode (the vault's transaction limits per 10 seconds, a transaction past
one answered 429 ``Throttled`` with ``Retry-After``).

- one :class:`RateLimits` shared by every worker keeps the vault inside its limit: nothing is refused, and the
  work takes about ``transactions / limit`` windows;
- a limit the client believes larger than the vault's is cut by the first refusals, after which they stop; a
  refusal's ``Retry-After`` pauses every worker, not only the refused one;
- ``publish_cost`` is what one publish sends, counted at the vault;
- the ``quotas:`` override reaches the limiter, and a bad one is a config error naming the field.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from rotator.config import from_mapping
from rotator.errors import ConfigError, StoreUnavailable
from rotator.model import SecretText
from rotator.quotas import HEADROOM, Charge, RateLimits
from rotator.stores.azure import (
    KEYVAULT_QUOTAS,
    STORE_TYPE,
    AzureKeyVaultStore,
    StoreConfig,
    TargetOptions,
    open_store,
)
from rotator.stores.base import StoreContext, StoreSpec, TargetRef, VersionMeta
from tests.servers.azure_keyvault import KV_QUOTAS, KeyVaultServer, StaticTokenCredential, running_keyvault
from tests.support.e2e import ENDPOINT

#: the vault's 10-second windows last one second here (the server's scale and the client's override agree)
SCALE = 10
CREATE, OTHER = "SecretCreatePer10Seconds", "SecretOtherPer10Seconds"


@pytest.fixture(scope="module")
def kv_server() -> Iterator[KeyVaultServer]:
    with running_keyvault() as server:
        yield server


@pytest.fixture
def kv(kv_server: KeyVaultServer) -> Iterator[KeyVaultServer]:
    kv_server.reset()
    kv_server.quotas_off()
    yield kv_server
    kv_server.quotas_off()
    kv_server.reset()


@pytest.fixture
def open_kv(kv: KeyVaultServer) -> Iterator[Callable[..., AzureKeyVaultStore]]:
    opened: list[AzureKeyVaultStore] = []

    def _open(limits: RateLimits | None = None, **overrides: Any) -> AzureKeyVaultStore:
        config = StoreConfig.model_validate(
            {
                "type": "azure",
                "vault_url": kv.url,
                "allow_any_vault_url": True,
                "max_retries": 5,
                "retry_backoff": 0.05,
                "retry_backoff_max": 2.0,
                "timeout": 10,
                "client_options": {"verify_challenge_resource": False},
                **overrides,
            }
        )
        store = open_store(
            "kv-quota", config, credential=StaticTokenCredential(kv.token), connection_verify=kv.ca_path, limits=limits
        )
        opened.append(store)
        return store

    yield _open
    for s in opened:
        s.close()


def _ref(secret: str) -> TargetRef:
    return TargetRef("kv-quota", secret, "quota-test", TargetOptions(store="kv-quota", secret=secret))


def _meta(key_id: str) -> VersionMeta:
    return VersionMeta(key_id, "quota-test", datetime(2031, 1, 2, tzinfo=UTC), "application/json")


def _publish(store: AzureKeyVaultStore, ref: TargetRef) -> None:
    """One publish as the engine makes it for a store without staging: inspect, inspect again right before the
    write (``stage_makes_current``), stage, read back, promote."""
    key_id = str(uuid.uuid4())
    value = SecretText(f'{{"apiKey": "material-{uuid.uuid4().hex}", "keyId": "{key_id}"}}')
    store.inspect(ref)
    store.inspect(ref)
    store.stage(ref, value, _meta(key_id))
    assert store.read(ref, key_id) == value
    store.promote(ref, key_id)


def _in_threads(work: Callable[[TargetRef], None], refs: list[TargetRef]) -> tuple[float, list[BaseException]]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(refs) + 1)

    def run(ref: TargetRef) -> None:
        start.wait()
        try:
            work(ref)
        except BaseException as exc:  # collected, asserted by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ref,)) for ref in refs]
    for t in threads:
        t.start()
    start.wait()
    began = time.monotonic()
    for t in threads:
        t.join(60)
    return time.monotonic() - began, errors


def _inspects(store: AzureKeyVaultStore, n: int) -> Callable[[TargetRef], None]:
    def run(ref: TargetRef) -> None:
        for _ in range(n):
            store.inspect(ref)

    return run


def _warm(store: AzureKeyVaultStore, refs: list[TargetRef]) -> None:
    """One request per worker at once, then a second for the client's window to empty: the store's pool then
    holds a connection per worker (a TLS handshake between the charge and the send would make a request arrive
    late, in the vault's next window)."""
    _in_threads(_inspects(store, 1), refs)
    time.sleep(1.1)


def _charge(store: AzureKeyVaultStore, name: str) -> Charge:
    return next(c for c, _ in store.publish_cost(_ref("any")) if c.quota.name == name)


def _prepared(store: AzureKeyVaultStore, n: int, prefix: str) -> list[TargetRef]:
    refs = [_ref(f"{prefix}-{i}") for i in range(n)]
    for ref in refs:
        _publish(store, ref)
    return refs


# ---- the declaration and the cost of a publish ---------------------------------------------------------------


def test_the_quotas_are_the_documented_ones() -> None:
    ours = {q.name: (q.limit, q.window) for q in KEYVAULT_QUOTAS}
    server = {q.name: (q.limit, q.window) for q in KV_QUOTAS}
    assert ours == {"create": server[CREATE], "other": server[OTHER]} == {"create": (300, 10.0), "other": (4000, 10.0)}
    assert all(q.service == "keyvault" and q.scope == "vault" and q.source for q in KEYVAULT_QUOTAS)


def test_publish_cost_is_what_one_publish_sends(kv: KeyVaultServer, open_kv: Callable[..., AzureKeyVaultStore]) -> None:
    limits = RateLimits()
    store = open_kv(limits)
    (ref,) = _prepared(store, 1, "cost")
    book = kv.enforce_quotas()  # the documented limits: it only counts here
    _publish(store, ref)
    cost = {c.quota.name: n for c, n in store.publish_cost(ref)}
    assert cost == {"create": book.served(CREATE), "other": book.served(OTHER)} == {"create": 1, "other": 3}
    host = kv.url.split("://", 1)[1].rstrip("/")
    assert {c.key for c, _ in store.publish_cost(ref)} == {host}
    assert [(c.quota.name, c.key, n) for c, n in store.inspect_cost(ref)] == [("other", host, 1)]
    admitted = {s["quota"]: s["admitted"] for s in limits.stats() if s["scope"] == host}
    assert admitted["create"] == 2  # two publishes, one CREATE each, charged in the vault's scope


# ---- shared across workers ---------------------------------------------------------------------------------


def test_workers_share_the_vault_limit(kv: KeyVaultServer, open_kv: Callable[..., AzureKeyVaultStore]) -> None:
    """12 workers inspect at once, 8 times each, with 20 transactions a second on both sides: the vault refuses
    nothing, and the 96 GETs take about 96 / 19 windows. Without the limiter the same burst is refused."""
    workers, each, limit = 12, 8, 20
    refs = _prepared(open_kv(RateLimits(enabled=False)), workers, "shared")
    limits = RateLimits()
    store = open_kv(limits, quotas={"other": f"{limit}/1s"})
    _warm(store, refs)
    book = kv.enforce_quotas(scale=SCALE, limits={OTHER: limit})

    elapsed, errors = _in_threads(_inspects(store, each), refs)
    print("shared:", round(elapsed, 2), "s", book.stats()["served"], "served", book.stats()["throttled"], "refused")

    assert errors == []
    total = workers * each
    assert book.served(OTHER) == total
    assert book.throttled() <= total // 100, book.stats()  # at most 1%: none, as a rule
    windows = (total - 1) // int(limit * HEADROOM)
    assert windows * 1.0 <= elapsed <= (windows + 1) * 1.04 + 3.0, elapsed
    assert limits.limit(_charge(store, "other")) == limit

    # the control: the same burst, no limiter, no retries
    time.sleep(1.0)
    book.reset()
    bare = open_kv(RateLimits(enabled=False), max_retries=0)
    _, errors = _in_threads(_inspects(bare, each), refs)
    print("control:", book.stats()["throttled"], "refused")
    assert book.throttled(OTHER) > 0
    assert errors and all(isinstance(e, StoreUnavailable) for e in errors)


# ---- adapting to refusals ----------------------------------------------------------------------------------


def test_refusals_cut_the_limit_then_stop(kv: KeyVaultServer, open_kv: Callable[..., AzureKeyVaultStore]) -> None:
    """The client believes in 6 transactions a second, the vault allows 5 (another client uses the rest): the
    first refusal cuts the client's limit to what the vault allows (6 -> 4), every worker waits out its
    Retry-After, and a second round is not refused at all.

    A burst is as large as the client's limit (a worker whose answer came back sends its next request in the same
    burst), and each refusal of one burst cuts the limit again (rotator/quotas.py cuts once per refusal): with 7,
    the first burst had two refusals and the limit went 7 -> 4 -> 2 in every run; with 10, to 1 in one run."""
    workers = 6
    refs = _prepared(open_kv(RateLimits(enabled=False)), workers, "adapt")
    limits = RateLimits()
    store = open_kv(limits, quotas={"other": "6/1s"})
    charge = _charge(store, "other")
    _warm(store, refs)
    book = kv.enforce_quotas(scale=SCALE, limits={OTHER: 5})

    first, errors = _in_threads(_inspects(store, 2), refs)
    refused, cut = book.throttled(OTHER), limits.limit(charge)
    print("adapt: first round", round(first, 2), "s", refused, "refused; limit", cut)
    assert errors == []  # azure-core's retries (after each Retry-After) got every GET through
    assert refused > 0
    assert cut is not None and 1 <= cut <= 5
    assert refused <= 2, refused

    second, errors = _in_threads(_inspects(store, 2), refs)
    print("adapt: second round", round(second, 2), "s", book.throttled(OTHER) - refused, "refused")
    assert errors == []
    assert book.throttled(OTHER) == refused  # none in the second round
    assert limits.limit(charge) == cut
    assert book.served(OTHER) == 4 * workers


@pytest.mark.parametrize("retry_after", [True, False], ids=["with Retry-After", "without"])
def test_a_refusal_pauses_every_worker(
    kv: KeyVaultServer, open_kv: Callable[..., AzureKeyVaultStore], retry_after: bool
) -> None:
    """One worker is refused (no retries) 0.6 s into the vault's window of one second: another worker's next
    request waits out the refusal's Retry-After (the server rounds the 0.4 s left up to 1), or the first pause
    (0.5 s) without one, and then goes through. The client has no limit of its own (``other: null``): only the
    refusal paces it."""
    refs = _prepared(open_kv(RateLimits(enabled=False)), 2, "pause")
    limits = RateLimits()
    store = open_kv(limits, max_retries=0, quotas={"other": None})
    book = kv.enforce_quotas(scale=SCALE, limits={OTHER: 1}, retry_after=retry_after)
    store.inspect(refs[0])
    time.sleep(0.6)
    with pytest.raises(StoreUnavailable):
        store.inspect(refs[1])  # refused: the window of one second is full
    refused_at = time.monotonic()
    store.inspect(refs[0])  # the other worker: paused, then served
    waited = time.monotonic() - refused_at
    print("pause:", round(waited, 3), "s")
    assert book.throttled(OTHER) == 1 and book.served(OTHER) == 2
    if retry_after:
        assert 0.9 <= waited <= 2.0, waited  # Retry-After: 1
    else:
        assert 0.45 <= waited <= 0.9, waited
    stats = next(s for s in limits.stats() if s["quota"] == "other")
    assert stats["refused"] == 1 and stats["limit"] is None


# ---- the config override -----------------------------------------------------------------------------------


def test_the_override_reaches_the_limiter_and_a_bad_one_is_a_config_error(
    open_kv: Callable[..., AzureKeyVaultStore],
) -> None:
    store = open_kv(RateLimits(), quotas={"create": "150/10s"})
    cost = {c.quota.name: c.quota for c, _ in store.publish_cost(_ref("override"))}
    assert (cost["create"].limit, cost["create"].window) == (150, 10.0)
    assert (cost["other"].limit, cost["other"].window) == (4000, 10.0)

    with pytest.raises(ValidationError) as info:
        StoreConfig.model_validate(
            {"type": "azure", "vault_url": "https://quota-vault.vault.azure.net/", "quotas": {"set": "1/s"}}
        )
    (err,) = info.value.errors()
    assert err["loc"] == ("quotas",) and "unknown quota 'set'" in err["msg"] and "create, other" in err["msg"]

    data = {
        "issuer": {
            "type": "momento",
            "url": "http://127.0.0.1:9",
            "management_key": {"file": "/nonexistent/owner.key"},
            "endpoint": ENDPOINT,
        },
        "stores": {
            "kv": {"type": "azure", "vault_url": "https://quota-vault.vault.azure.net/", "quotas": {"other": "0/10s"}}
        },
        "policies": [{"name": "a", "role": "operator", "targets": [{"store": "kv", "secret": "a"}]}],
    }
    with pytest.raises(ConfigError) as cfg_info:
        from_mapping(data, source="test.yaml")
    (issue,) = [str(i) for i in cfg_info.value.issues]
    assert issue.startswith("stores.kv.quotas: ") and "other" in issue


def test_a_store_opened_by_the_runtime_charges_the_contexts_limiter(kv: KeyVaultServer) -> None:
    limits = RateLimits()
    config = StoreConfig.model_validate(
        {
            "type": "azure",
            "vault_url": kv.url,
            "allow_any_vault_url": True,
            "client_options": {"verify_challenge_resource": False},
        }
    )
    options = {"credential": StaticTokenCredential(kv.token), "connection_verify": kv.ca_path}
    store = STORE_TYPE.open(StoreSpec("kv-quota", "azure", config), StoreContext(limits=limits, options=options))
    try:
        assert not store.inspect(_ref("ctx")).exists
    finally:
        store.close()
    # a GET of the secret, and one of the deleted secret (to tell "never created" from "soft-deleted")
    assert [(s["quota"], s["admitted"]) for s in limits.stats()] == [("other", 2)]
