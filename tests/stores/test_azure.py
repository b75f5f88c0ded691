"""The Azure Key Vault store, driven through the real ``SecretClient`` against the local HTTPS Key Vault."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from rotator.errors import (
    StoreConflict,
    StoreNotFound,
    StorePermissionError,
    StorePreconditionFailed,
    StoreUnavailable,
)
from rotator.model import SecretText
from rotator.stores.azure import (
    AzureKeyVaultStore,
    StoreConfig,
    TargetOptions,
    open_store,
    operation_name,
)
from rotator.stores.base import SecretStore, TargetRef, VersionMeta
from tests.servers.azure_keyvault import KeyVaultServer, StaticTokenCredential, running_keyvault
from tests.stores.contract import StoreContract
from tests.support.crash import SimulatedCrash, count_calls, crash_after

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "azure-keyvault"
MAX_RETRIES = 2
T0 = 1_800_000_000.0


# ---- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kv_server() -> Iterator[KeyVaultServer]:
    # a small page size so that every secret with more than two versions is listed over several pages
    with running_keyvault(page_size=2) as server:
        yield server


@pytest.fixture
def kv(kv_server: KeyVaultServer) -> Iterator[KeyVaultServer]:
    kv_server.reset()
    kv_server.clock = time.time
    yield kv_server
    kv_server.reset()
    kv_server.clock = time.time


def make_config(kv: KeyVaultServer, **overrides: Any) -> StoreConfig:
    data: dict[str, Any] = {
        "type": "azure",
        "vault_url": kv.url,
        "allow_any_vault_url": True,
        "max_retries": MAX_RETRIES,
        "retry_backoff": 0.01,
        "retry_backoff_max": 0.05,
        "timeout": 10,
        # the test server's host is 127.0.0.1, not *.vault.azure.net
        "client_options": {"verify_challenge_resource": False},
    }
    data.update(overrides)
    return StoreConfig.model_validate(data)


def open_test_store(kv: KeyVaultServer, **overrides: Any) -> AzureKeyVaultStore:
    # the CA bundle comes in as an injected client option, merged with the config's client_options
    return open_store(
        "kv-test",
        make_config(kv, **overrides),
        credential=StaticTokenCredential(kv.token),
        connection_verify=kv.ca_path,
    )


@pytest.fixture
def store(kv: KeyVaultServer) -> Iterator[AzureKeyVaultStore]:
    s = open_test_store(kv)
    yield s
    s.close()


@pytest.fixture
def fresh_store(kv: KeyVaultServer) -> Iterator[Callable[[], AzureKeyVaultStore]]:
    """Stores that know nothing yet, like a new process."""
    opened: list[AzureKeyVaultStore] = []

    def make() -> AzureKeyVaultStore:
        opened.append(open_test_store(kv))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def target(secret: str, **options: Any) -> TargetRef:
    return TargetRef("kv-test", secret, "checkout", TargetOptions(store="kv-test", secret=secret, **options))


@pytest.fixture
def make_ref() -> Callable[[str], TargetRef]:
    return target


@pytest.fixture
def ref() -> TargetRef:
    return target(f"momento-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def raw_client(kv: KeyVaultServer) -> Iterator[Any]:
    """The SDK client itself, to act as another writer (an operator, another tool)."""
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(
        kv.url, StaticTokenCredential(kv.token), connection_verify=kv.ca_path, verify_challenge_resource=False
    )
    yield client
    client.close()


EXPIRES = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)


def meta(key_id: str, *, expires_at: datetime | None = EXPIRES) -> VersionMeta:
    return VersionMeta(key_id=key_id, policy="checkout", expires_at=expires_at, content_type="application/json")


def value(key_id: str) -> SecretText:
    return SecretText(f'{{"apiKey": "plaintext-{key_id}-{uuid.uuid4().hex}", "keyId": "{key_id}"}}')


def kv_calls(calls: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(op, status) for svc, op, status in calls if svc == SERVICE]


# ---- the contract every store keeps ------------------------------------------------------------------------


class TestAzureContract(StoreContract):
    """The shared store contract, against the local Key Vault (list pages of two versions)."""

    @pytest.fixture
    def other_store(self, fresh_store: Callable[[], AzureKeyVaultStore]) -> AzureKeyVaultStore:
        return fresh_store()

    @pytest.fixture
    def plant_foreign(self, raw_client: Any) -> Callable[[TargetRef, str], None]:
        return lambda ref, text: raw_client.set_secret(ref.secret, text)


# ---- config validation -------------------------------------------------------------------------------------


def azure_config(**data: Any) -> StoreConfig:
    return StoreConfig.model_validate({"type": "azure", **data})


def test_public_cloud_vault_url_is_normalised() -> None:
    assert azure_config(vault_url="https://My-Vault.vault.azure.net").vault_url == "https://my-vault.vault.azure.net/"


@pytest.mark.parametrize("domain", ["vault.azure.cn", "vault.usgovcloudapi.net", "vault.microsoftazure.de"])
def test_other_azure_clouds_vault_urls_are_accepted(domain: str) -> None:
    assert azure_config(vault_url=f"https://kv-prod.{domain}/").vault_url == f"https://kv-prod.{domain}/"


def test_bare_vault_name_is_rejected_with_the_full_url_suggested() -> None:
    with pytest.raises(ValidationError) as err:
        azure_config(vault_url="kv-prod")
    assert "https://kv-prod.vault.azure.net/" in str(err.value)


def test_http_vault_url_is_rejected_even_with_allow_any() -> None:
    with pytest.raises(ValidationError) as err:
        azure_config(vault_url="http://kv.internal.example/", allow_any_vault_url=True)
    assert "https://kv.internal.example/" in str(err.value)


def test_foreign_domain_is_rejected_and_allow_any_is_mentioned() -> None:
    with pytest.raises(ValidationError) as err:
        azure_config(vault_url="https://kv-prod.example.com/")
    message = str(err.value)
    assert "allow_any_vault_url" in message
    assert "https://kv-prod.vault.azure.net/" in message


def test_vault_url_with_a_path_is_rejected_with_the_base_url_suggested() -> None:
    with pytest.raises(ValidationError) as err:
        azure_config(vault_url="https://kv-prod.vault.azure.net/secrets/momento")
    assert "'https://kv-prod.vault.azure.net/'" in str(err.value)


def test_invalid_vault_name_is_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        azure_config(vault_url="https://kv_prod.vault.azure.net/")
    assert "not a vault name" in str(err.value)


def test_any_https_url_is_accepted_with_allow_any_vault_url() -> None:
    config = azure_config(vault_url="https://kv.internal.example:8443", allow_any_vault_url=True)
    assert config.vault_url == "https://kv.internal.example:8443/"


def test_unknown_store_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        azure_config(vault_url="https://kv-prod.vault.azure.net/", region="westeurope")


def test_client_options_may_not_turn_on_body_logging() -> None:
    with pytest.raises(ValidationError) as err:
        azure_config(vault_url="https://kv-prod.vault.azure.net/", client_options={"logging_enable": True})
    assert "logging_enable" in str(err.value)


def test_managed_identity_client_id_needs_an_identity_credential() -> None:
    with pytest.raises(ValidationError):
        azure_config(
            vault_url="https://kv-prod.vault.azure.net/", credential="azure_cli", managed_identity_client_id="x"
        )


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("momento/checkout_api", "momento-checkout-api"),
        ("momento.checkout", "momento-checkout"),
        ("", "momento-api-key"),
        ("x" * 128, "x" * 127),
    ],
)
def test_bad_secret_names_are_rejected_with_a_valid_suggestion(name: str, suggestion: str) -> None:
    with pytest.raises(ValidationError) as err:
        TargetOptions(store="kv-prod", secret=name)
    assert repr(suggestion) in str(err.value)


def test_bad_endpoint_secret_name_is_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        TargetOptions(store="kv-prod", secret="momento-key", format="key", endpoint_secret="momento_endpoint")
    assert "'momento-endpoint'" in str(err.value)


def test_more_than_eleven_extra_tags_are_rejected() -> None:
    TargetOptions(store="kv-prod", secret="momento-key", tags={f"t{i}": "v" for i in range(11)})
    with pytest.raises(ValidationError) as err:
        TargetOptions(store="kv-prod", secret="momento-key", tags={f"t{i}": "v" for i in range(12)})
    assert "at most 11 tags" in str(err.value)


def test_rotator_tags_cannot_be_overridden() -> None:
    with pytest.raises(ValidationError):
        TargetOptions(store="kv-prod", secret="momento-key", tags={"rotator-key-id": "x"})


def test_unknown_target_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        TargetOptions(store="kv-prod", secret="momento-key", version_stage="AWSCURRENT")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("store", "target_", "expected"),
    [
        ({"type": "azure", "vault_url": "kv-prod"}, {"secret": "momento-a"}, "https://kv-prod.vault.azure.net/"),
        (
            {"type": "azure", "vault_url": "https://kv-prod.vault.azure.net/"},
            {"secret": "momento/checkout_api"},
            "momento-checkout-api",
        ),
    ],
)
def test_cli_rejects_bad_vault_urls_and_names_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: dict[str, Any], target_: dict[str, Any], expected: str
) -> None:
    import yaml

    from rotator.runtime.cli import main

    config = {
        "issuer": {"type": "momento", "management_key": {"env": "MOMENTO_MANAGEMENT_KEY"},
                   "endpoint": "cell-4-us-west-2-1.prod.a.momentohq.com"},
        "stores": {"kv": store},
        "policies": [{"name": "checkout", "role": "operator", "targets": [{"store": "kv", **target_}]}],
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", "-c", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_example_config_is_valid() -> None:
    from rotator.config import load

    config = load(ROOT / "config" / "azure.example.yaml")
    assert {s.type for s in config.stores.values()} == {"azure"}


def test_store_keeps_the_secret_store_protocol(store: AzureKeyVaultStore) -> None:
    assert isinstance(store, SecretStore)
    assert "127.0.0.1" in repr(store)


def test_close_is_idempotent(kv: KeyVaultServer) -> None:
    s = open_test_store(kv)
    s.close()
    s.close()


# ---- what a version carries --------------------------------------------------------------------------------


def test_version_carries_key_id_policy_content_type_and_expiry(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    [version] = kv.versions(ref.secret)
    assert version.tags == {
        "rotator-key-id": "k1",
        "rotator-policy": "checkout",
        "managed-by": "rotator",
        "rotator-tracks": "-",  # no older version to track yet
    }
    assert version.content_type == "application/json"
    assert version.exp == int(EXPIRES.timestamp())
    assert version.enabled


def test_target_tags_are_added_to_each_version(kv: KeyVaultServer, store: AzureKeyVaultStore) -> None:
    ref = target(f"momento-{uuid.uuid4().hex[:12]}", tags={"team": "checkout", "env": "prod"})
    store.stage(ref, value("k1"), meta("k1"))
    [version] = kv.versions(ref.secret)
    assert version.tags is not None
    assert version.tags["team"] == "checkout"
    assert version.tags["env"] == "prod"
    assert version.tags["rotator-key-id"] == "k1"


def test_key_without_expiry_writes_no_exp(kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef) -> None:
    store.stage(ref, value("k1"), meta("k1", expires_at=None))
    [version] = kv.versions(ref.secret)
    assert version.exp is None


def test_staging_a_key_a_fresh_process_finds_written_writes_nothing(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    v = value("k1")
    store.stage(ref, v, meta("k1"))
    fresh_store().stage(ref, v, meta("k1"))
    assert len(kv.versions(ref.secret)) == 1


# ---- promote, retire ---------------------------------------------------------------------------------------


def test_promote_changes_nothing_at_the_vault(kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    before = kv.count()
    with count_calls(SERVICE) as calls:
        store.promote(ref, "k1")
    assert calls == []
    assert kv.count() == before


def test_promote_in_a_fresh_process_checks_the_version_with_one_get(
    store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    with count_calls(SERVICE) as calls:
        fresh_store().promote(ref, "k1")
    assert kv_calls(calls) == [("get_secret", "200")]


def test_promote_back_with_the_expected_current_writes_the_key_again(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    store.promote(ref, "k2", expect_current="k1")  # k2 is current already: a no-op, whatever was expected
    assert kv.version_count(ref.secret) == 2
    store.promote(ref, "k1", expect_current="k2")
    assert kv.version_count(ref.secret) == 3
    assert store.inspect(ref).current_key_id == "k1"


def test_promote_refuses_when_another_writer_made_a_version_latest_before_the_put(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    """Key Vault has no conditional PUT: promote re-reads the current version right before its PUT, and a
    writer that got in before that re-read (here: while the key's value is being fetched) is seen."""
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))  # store's copy: k2 current
    other = fresh_store()
    fired: list[str] = []

    def before(method: str, op: str, path: str) -> None:
        if op == "get_secret" and not fired and path.rstrip("/").count("/") == 3:  # GET of k1's version
            fired.append(path)
            other.stage(ref, value("k3"), meta("k3"))

    kv.before = before
    with pytest.raises(StorePreconditionFailed, match="holds key k3, not k2"):
        store.promote(ref, "k1", expect_current="k2")
    kv.before = None
    assert fired
    assert kv.version_count(ref.secret) == 3  # k1 was not written again
    assert store.inspect(ref).current_key_id == "k3"


def test_promote_expecting_the_key_another_pass_promoted_is_a_no_op(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    fresh_store().promote(ref, "k1")  # another pass wrote k1 again as latest
    store.promote(ref, "k1", expect_current="k2")  # the re-read sees k1 current: nothing more to write
    assert kv.version_count(ref.secret) == 3


def test_retire_disables_the_old_version_and_deletes_nothing(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    store.retire(ref, "k1")
    v1, v2 = kv.versions(ref.secret)
    assert (v1.tags or {})["rotator-key-id"] == "k1"
    assert not v1.enabled
    assert v2.enabled
    assert kv.count("DELETE") == 0
    assert ref.secret not in kv.deleted


def test_retired_version_cannot_be_read(store: AzureKeyVaultStore, ref: TargetRef) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    store.retire(ref, "k1")
    with pytest.raises(StoreNotFound, match="disabled"):
        store.read(ref, "k1")


def test_vault_refuses_to_serve_a_disabled_version(
    kv: KeyVaultServer, store: AzureKeyVaultStore, raw_client: Any, ref: TargetRef
) -> None:
    from azure.core.exceptions import HttpResponseError

    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    store.retire(ref, "k1")
    old = kv.versions(ref.secret)[0].version
    with pytest.raises(HttpResponseError) as err:
        raw_client.get_secret(ref.secret, old)
    assert err.value.status_code == 403
    assert err.value.error is not None
    assert err.value.error.innererror["code"] == "SecretDisabled"


def test_read_in_a_fresh_process_finds_the_version_by_its_tag(
    store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    v1, v2 = value("k1"), value("k2")
    store.stage(ref, v1, meta("k1"))
    store.stage(ref, v2, meta("k2"))
    with count_calls(SERVICE) as calls:
        assert fresh_store().read(ref, "k1") == v1
    assert kv_calls(calls) == [("list_secret_versions", "200"), ("get_secret", "200")]


# ---- what is current -------------------------------------------------------------------------------------


def test_foreign_current_value_is_detected(store: AzureKeyVaultStore, raw_client: Any, ref: TargetRef) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    raw_client.set_secret(ref.secret, "hand-written-value")
    state = store.inspect(ref)
    assert state.foreign
    assert state.current_key_id is None
    assert state.holds("k1")


def test_staging_over_a_foreign_value_is_refused(store: AzureKeyVaultStore, raw_client: Any, ref: TargetRef) -> None:
    raw_client.set_secret(ref.secret, "hand-written-value")
    with pytest.raises(StoreConflict, match="adopt: true"):
        store.stage(ref, value("k1"), meta("k1"))


def test_staging_over_a_foreign_value_with_adopt_writes_the_key(
    store: AzureKeyVaultStore, raw_client: Any
) -> None:
    ref = target(f"momento-{uuid.uuid4().hex[:12]}", adopt=True)
    raw_client.set_secret(ref.secret, "hand-written-value")
    store.stage(ref, value("k1"), meta("k1"))
    state = store.inspect(ref)
    assert state.current_key_id == "k1"
    assert not state.foreign


def test_versions_written_in_the_same_second_are_ordered_by_the_vault(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    kv.clock = lambda: T0  # every version gets the same `created` second
    for k in ("k1", "k2", "k3"):
        store.stage(ref, value(k), meta(k))
    with count_calls(SERVICE) as calls:
        state = fresh_store().inspect(ref)
    assert state.current_key_id == "k3"
    assert [v.key_id for v in state.versions if v.current] == ["k3"]
    # the GET of "latest" says which one is newest: no tie to break
    assert kv_calls(calls) == [("get_secret", "200")]


def test_newer_versions_win_by_creation_time_without_reading_values(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    now = [T0]
    kv.clock = lambda: now[0]
    for k in ("k1", "k2", "k3"):
        store.stage(ref, value(k), meta(k))
        now[0] += 60
    with count_calls(SERVICE) as calls:
        state = fresh_store().inspect(ref)
    assert state.current_key_id == "k3"
    assert state.current_since == datetime.fromtimestamp(T0 + 120, UTC)
    assert {op for op, _ in kv_calls(calls)} == {"get_secret"}


def test_foreign_write_in_the_same_second_is_seen_as_current(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore],
    raw_client: Any, ref: TargetRef,
) -> None:
    kv.clock = lambda: T0
    store.stage(ref, value("k1"), meta("k1"))
    raw_client.set_secret(ref.secret, "hand-written-value")
    state = fresh_store().inspect(ref)
    assert state.foreign
    assert state.current_key_id is None


def test_disabled_latest_version_leaves_nothing_current(
    kv: KeyVaultServer, store: AzureKeyVaultStore, raw_client: Any, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    raw_client.update_secret_properties(ref.secret, kv.versions(ref.secret)[-1].version, enabled=False)
    state = store.inspect(ref)
    assert state.exists
    assert state.current_key_id is None
    assert not any(v.current for v in state.versions)


def test_versions_over_several_pages_are_all_seen(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    # five enabled versions with UUID key ids: more than the latest version's rotator-tracks tag can name
    # (256 characters), so it says "*" and inspect lists the versions, page by page
    keys = [str(uuid.uuid4()) for _ in range(5)]
    for k in keys:
        store.stage(ref, value(k), meta(k))
    assert (kv.versions(ref.secret)[-1].tags or {})["rotator-tracks"] == "*"
    with count_calls(SERVICE) as calls:
        state = fresh_store().inspect(ref)
    assert {v.key_id for v in state.versions} == set(keys)
    assert state.current_key_id == keys[-1]
    assert kv_calls(calls) == [("get_secret", "200")] + [("list_secret_versions", "200")] * 3


def test_missing_secret_listed_as_404_does_not_exist(fresh_store: Callable[[], AzureKeyVaultStore]) -> None:
    with running_keyvault(missing_versions_status=404) as other:
        s = open_test_store(other)
        try:
            assert not s.inspect(target("momento-missing")).exists
        finally:
            s.close()


# ---- soft delete -------------------------------------------------------------------------------------------


def test_soft_deleted_secret_is_a_conflict_at_inspect(
    store: AzureKeyVaultStore, raw_client: Any, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    raw_client.begin_delete_secret(ref.secret).wait()
    with pytest.raises(StoreConflict) as err:
        store.inspect(ref)
    assert "recover" in str(err.value)
    assert "purge" in str(err.value)


def test_writing_a_soft_deleted_secret_is_a_conflict(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    kv.soft_delete(ref.secret)
    with pytest.raises(StoreConflict, match="deleted but recoverable"):
        store.stage(ref, value("k2"), meta("k2"))
    assert ("PUT", f"/secrets/{ref.secret}", 409) in kv.requests


# ---- throttling, failures, permissions ---------------------------------------------------------------------


def test_throttling_is_retried_after_retry_after(kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef) -> None:
    store.inspect(ref)
    kv.fail_next(429, retry_after=1, op="set_secret")
    started = time.monotonic()
    with count_calls(SERVICE) as calls:
        store.stage(ref, value("k1"), meta("k1"))
    assert time.monotonic() - started >= 0.9
    # a throttled request was not carried out: sent again without looking first
    assert kv_calls(calls) == [("set_secret", "429"), ("set_secret", "200")]
    assert len(kv.versions(ref.secret)) == 1


def test_server_errors_outlasting_the_retries_are_unavailable(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.inspect(ref)
    v = value("k1")
    kv.fail_next(500, times=MAX_RETRIES + 1, op="set_secret")
    with count_calls(SERVICE) as calls, pytest.raises(StoreUnavailable) as err:
        store.stage(ref, v, meta("k1"))
    # after each 500 a GET of the latest version says whether the PUT had landed (here: no secret yet)
    assert kv_calls(calls) == [("set_secret", "500"), ("get_secret", "404")] * (MAX_RETRIES + 1)
    assert kv.version_count(ref.secret) == 0
    assert "500" in str(err.value)
    assert v.reveal() not in str(err.value) + repr(err.value)


def test_disabling_a_version_is_retried_after_a_server_error(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    kv.fail_next(503, op="update_secret")
    store.retire(ref, "k1")
    assert not kv.versions(ref.secret)[0].enabled


@pytest.mark.parametrize(
    ("denied", "action", "permission"),
    [
        ("get", "inspect", "secrets/get"),
        ("set", "stage", "secrets/set"),
        ("get", "read", "secrets/get"),
        ("set", "retire", "secrets/set"),
    ],
)
def test_access_denied_names_vault_secret_and_permission(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef, denied: str, action: str, permission: str
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    store.stage(ref, value("k2"), meta("k2"))
    kv.deny(denied)
    calls: dict[str, Callable[[], object]] = {
        "inspect": lambda: store.inspect(ref),
        "stage": lambda: store.stage(ref, value("k3"), meta("k3")),
        "read": lambda: store.read(ref, "k1"),
        "retire": lambda: store.retire(ref, "k1"),
    }
    with pytest.raises(StorePermissionError) as err:
        calls[action]()
    message = str(err.value)
    assert permission in message
    assert kv.url in message
    assert repr(ref.secret) in message
    assert "Key Vault Secrets Officer" in message


def test_firewall_denial_points_at_the_network_rules(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    kv.deny("get", style="firewall")
    with pytest.raises(StorePermissionError, match="network rules"):
        store.inspect(ref)


def test_credential_that_cannot_get_a_token_is_a_permission_error(
    kv: KeyVaultServer, ref: TargetRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                "AZURE_USERNAME", "AZURE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    s = open_store("kv-test", make_config(kv, credential="environment"), connection_verify=kv.ca_path)
    try:
        with pytest.raises(StorePermissionError, match="could not get a token"):
            s.inspect(ref)
    finally:
        s.close()


# ---- API calls -----------------------------------------------------------------------------------------------


def test_inspect_stage_read_promote_and_retire_cost_five_calls(store: AzureKeyVaultStore, ref: TargetRef) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    with count_calls(SERVICE) as calls:
        store.inspect(ref)
        store.stage(ref, value("k2"), meta("k2"))
        store.read(ref, "k2")
        store.promote(ref, "k2")
        store.retire(ref, "k1")
    assert kv_calls(calls) == [
        ("get_secret", "200"),  # inspect: the latest version
        ("set_secret", "200"),
        ("get_secret", "200"),  # read-back
        ("update_secret", "200"),  # disable k1's version
        ("update_secret", "200"),  # the current version no longer tracks it
    ]


def test_stage_read_and_promote_after_inspect_cost_two_calls(store: AzureKeyVaultStore, ref: TargetRef) -> None:
    store.inspect(ref)
    with count_calls(SERVICE) as calls:
        store.stage(ref, value("k1"), meta("k1"))
        store.read(ref, "k1")
        store.promote(ref, "k1")
    assert kv_calls(calls) == [("set_secret", "200"), ("get_secret", "200")]


def test_inspecting_a_missing_secret_also_checks_for_a_deleted_one(store: AzureKeyVaultStore, ref: TargetRef) -> None:
    with count_calls(SERVICE) as calls:
        assert not store.inspect(ref).exists
    assert kv_calls(calls) == [("get_secret", "404"), ("get_deleted_secret", "404")]


def test_bearer_challenge_is_not_counted_as_a_call() -> None:
    with running_keyvault() as other:
        s = open_test_store(other)
        try:
            with count_calls(SERVICE) as calls:
                s.inspect(target("momento-challenged"))
        finally:
            s.close()
        assert other.requests[0][2] == 401  # the challenge round trip happened...
        assert ("get_secret", "401") not in kv_calls(calls)  # ...and was not counted
        assert kv_calls(calls)[0] == ("get_secret", "404")


@pytest.mark.parametrize(
    ("method", "path", "op"),
    [
        ("PUT", "/secrets/a", "set_secret"),
        ("GET", "/secrets/a/", "get_secret"),
        ("GET", "/secrets/a/0123456789abcdef0123456789abcdef", "get_secret"),
        ("GET", "/secrets/a/versions", "list_secret_versions"),
        ("PATCH", "/secrets/a/0123456789abcdef0123456789abcdef", "update_secret"),
        ("DELETE", "/secrets/a", "delete_secret"),
        ("GET", "/deletedsecrets/a", "get_deleted_secret"),
        ("DELETE", "/deletedsecrets/a", "purge_deleted_secret"),
        ("POST", "/deletedsecrets/a/recover", "recover_deleted_secret"),
    ],
)
def test_operation_names(method: str, path: str, op: str) -> None:
    assert operation_name(method, f"https://kv.vault.azure.net{path}?api-version=2026-04-01") == op


# ---- crashes between calls -----------------------------------------------------------------------------------


def _rotate(store: AzureKeyVaultStore, ref: TargetRef, new: str, old: str | None, v: SecretText) -> None:
    """What a pass does to one target: inspect, publish the new key when missing, read back, promote, retire."""
    state = store.inspect(ref)
    if not state.holds(new):
        store.stage(ref, v, meta(new))
    assert store.read(ref, new) == v
    store.promote(ref, new)
    if old is not None:
        store.retire(ref, old)


@pytest.mark.parametrize("crash_at", range(1, 7))
def test_a_crash_after_any_call_converges_on_rerun(
    kv: KeyVaultServer, fresh_store: Callable[[], AzureKeyVaultStore], crash_at: int
) -> None:
    ref = target(f"momento-crash-{uuid.uuid4().hex[:8]}")
    fresh_store().stage(ref, value("k1"), meta("k1"))
    v2 = value("k2")
    with crash_after(crash_at, service=SERVICE) as seen, contextlib.suppress(SimulatedCrash):
        _rotate(fresh_store(), ref, "k2", "k1", v2)
    assert len(seen) == min(crash_at, 5)
    _rotate(fresh_store(), ref, "k2", "k1", v2)  # a new process runs the pass again
    state = fresh_store().inspect(ref)
    assert state.current_key_id == "k2"
    assert [v.key_id for v in state.versions].count("k2") == 1
    assert state.enabled_key_ids() == {"k2"}


# ---- the test server itself ------------------------------------------------------------------------------------


def test_server_challenges_requests_without_a_token(kv: KeyVaultServer) -> None:
    r = httpx.get(
        f"{kv.url}secrets/a/versions?api-version=2026-04-01", verify=ssl.create_default_context(cafile=kv.ca_path)
    )
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith('Bearer authorization="https://login.microsoftonline.com/')
    assert 'resource="https://vault.azure.net"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("query", ["", "?api-version=1999-01-01"])
def test_server_rejects_a_missing_or_unknown_api_version(kv: KeyVaultServer, query: str) -> None:
    r = httpx.get(
        f"{kv.url}secrets/a/versions{query}",
        headers={"Authorization": f"Bearer {kv.token}"},
        verify=ssl.create_default_context(cafile=kv.ca_path),
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadParameter"


def test_server_rejects_more_than_fifteen_tags(raw_client: Any) -> None:
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as err:
        raw_client.set_secret("too-many-tags", "v", tags={f"t{i}": "v" for i in range(16)})
    assert err.value.status_code == 400


# ---- packaging -------------------------------------------------------------------------------------------------


def test_importing_the_backend_and_validating_config_does_not_import_azure() -> None:
    code = (
        "import sys\n"
        "import rotator.stores.azure as m\n"
        "m.StoreConfig(type='azure', vault_url='https://kv-prod.vault.azure.net/')\n"
        "m.TargetOptions(store='kv-prod', secret='momento-key')\n"
        "print(sorted(n for n in sys.modules if n == 'azure' or n.startswith('azure.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ---- end to end: the engine, the Momento emulator and the local Key Vault --------------------------------------


class SimClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def world(kv: KeyVaultServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The Momento emulator and the Key Vault on one simulated clock, and a config with one Azure target."""
    from rotator.config import from_mapping
    from rotator.issuers.emulator import Emulator

    clock = SimClock()
    kv.clock = lambda: clock.now.timestamp()
    page_size, kv.page_size = kv.page_size, 25  # the service's page size: one list call per inspect here
    emu = Emulator(tmp_path / "emu.db", clock=lambda: clock.now.timestamp(), bootstrap_key_file=tmp_path / "owner.key")
    url = emu.start()
    secret = f"momento-e2e-{uuid.uuid4().hex[:8]}"
    config = from_mapping(
        {
            "issuer": {
                "type": "momento",
                "url": url,
                "management_key": {"file": str(tmp_path / "owner.key")},
                "endpoint": "cell-1-us-east-1-1.emulator.local",
            },
            # steady passes read no store (no drift checks, no verification window after a publish)
            "drift_check_every": "never",
            "verify_for": "0s",
            "defaults": {"lifetime": "30d", "rotate_before": "7d", "grace": "1h", "orphan_after": "15m"},
            "stores": {
                "kv": {
                    "type": "azure",
                    "vault_url": kv.url,
                    "allow_any_vault_url": True,
                    "max_retries": MAX_RETRIES,
                    "retry_backoff": 0.01,
                    "client_options": {"verify_challenge_resource": False},
                }
            },
            "policies": [
                {"name": "checkout", "role": "operator", "targets": [{"store": "kv", "secret": secret}]}
            ],
        }
    )
    yield {"clock": clock, "config": config, "secret": secret, "kv": kv}
    emu.stop()
    kv.page_size = page_size


def build_app(world: dict[str, Any]) -> Any:
    """A new process: a fresh engine, issuer client and store (nothing cached)."""
    from rotator.runtime.app import build

    kv: KeyVaultServer = world["kv"]
    options = {"kv": {"credential": StaticTokenCredential(kv.token), "connection_verify": kv.ca_path}}
    return build(world["config"], clock=world["clock"], store_options=options)


def converged(world: dict[str, Any]) -> str:
    """Check the end state: one live key at the issuer, current and the only enabled key in the vault."""
    with build_app(world) as app:
        live = [k for k in app.issuer.list_keys() if k.policy == "checkout"]
        assert len(live) == 1, [k.key_id for k in live]
        key_id: str = live[0].key_id
        state = app.stores["kv"].inspect(target(world["secret"]))
        assert state.current_key_id == key_id
        assert not state.foreign
        assert state.enabled_key_ids() == {key_id}
        assert [v.key_id for v in state.versions].count(key_id) == 1
        assert key_id in app.stores["kv"].read(target(world["secret"]), key_id).reveal()
        return key_id


def test_three_rotations_end_to_end(world: dict[str, Any]) -> None:
    clock: SimClock = world["clock"]
    kv: KeyVaultServer = world["kv"]
    with build_app(world) as app:
        assert app.engine.run_pass().counts()["created"] == 1
        first = converged(world)
        seen = [first]
        for _ in range(3):
            app.engine.run_pass()
            with count_calls(SERVICE) as steady:
                app.engine.run_pass()
            assert steady == []  # a steady-state pass does not touch the vault
            clock.advance(days=24)
            with count_calls(SERVICE) as rotation:
                due = app.engine.run_pass()
                clock.advance(hours=2)
                revoke = app.engine.run_pass()
            assert due.ok and due.counts()["created"] == 1
            assert revoke.ok and revoke.counts()["revoked"] == 1
            # due pass: inspect (one GET, however many versions), inspect again right before the set (Key
            # Vault's set is the switch: the compare-and-set has to come before it), set, read back; revoke
            # pass: inspect, inspect again right before revoking, disable the old version, drop it from the
            # current version's rotator-tracks tag
            assert kv_calls(rotation) == [
                ("get_secret", "200"),
                ("get_secret", "200"),
                ("set_secret", "200"),
                ("get_secret", "200"),
                ("get_secret", "200"),
                ("get_secret", "200"),
                ("update_secret", "200"),
                ("update_secret", "200"),
            ]
            seen.append(converged(world))
    assert len(set(seen)) == 4
    versions = kv.versions(world["secret"])
    assert [(v.tags or {}).get("rotator-key-id") for v in versions] == seen
    assert [v.enabled for v in versions] == [False, False, False, True]
    assert all(v.content_type == "application/json" and v.exp for v in versions)


@pytest.mark.parametrize("crash_at", range(1, 13))
def test_engine_crash_between_any_two_calls_converges_on_rerun(world: dict[str, Any], crash_at: int) -> None:
    # the due pass and the revoke pass make 12 calls (momento and Key Vault); die after any one of them
    clock: SimClock = world["clock"]
    with build_app(world) as app:
        app.engine.run_pass()
    first = converged(world)
    clock.advance(days=24)
    # built first: the crash points are the passes' calls, not the preflight's GET /roles
    with build_app(world) as app, crash_after(crash_at) as seen, contextlib.suppress(SimulatedCrash):
        app.engine.run_pass()
        clock.advance(hours=2)
        app.engine.run_pass()
    assert len(seen) == crash_at
    for _ in range(3):  # a new process runs again, as a CronJob would
        clock.advance(hours=2)
        with build_app(world) as app:
            assert app.engine.run_pass().ok
    assert converged(world) != first


# ---- issue 11 item 9: bounded versions -----------------------------------------------------------------------


def _rotations(store: AzureKeyVaultStore, ref: TargetRef, n: int, *, retire: bool = True) -> list[str]:
    """``n`` rotations as the engine makes them: inspect, stage, read back, promote; then inspect and retire."""
    keys: list[str] = []
    for i in range(n):
        k = f"k{i:03d}-{uuid.uuid4().hex[:8]}"
        store.inspect(ref)
        v = value(k)
        store.stage(ref, v, meta(k))
        assert store.read(ref, k) == v
        store.promote(ref, k)
        if retire and keys:
            store.inspect(ref)
            store.retire(ref, keys[-1])
        keys.append(k)
    return keys


def test_inspect_is_one_get_of_the_current_version_however_many_versions_there_are(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    keys = _rotations(store, ref, 12)
    assert kv.version_count(ref.secret) == 12
    with count_calls(SERVICE) as calls:
        state = fresh_store().inspect(ref)
    # before: one list call per page of versions (pages of two here: 6 calls)
    assert kv_calls(calls) == [("get_secret", "200")]
    assert state.current_key_id == keys[-1]
    assert state.current_since is not None
    assert not state.foreign


def test_inspect_still_sees_the_old_key_until_it_is_retired(
    store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    # the planner must know that the previous key is still held (or it would revoke it at once as an orphan)
    keys = _rotations(store, ref, 3, retire=False)
    state = fresh_store().inspect(ref)
    assert state.current_key_id == keys[-1]
    assert all(state.holds(k) for k in keys)
    assert state.enabled_key_ids() == set(keys)
    fresh_store().retire(ref, keys[0])
    state = fresh_store().inspect(ref)
    assert state.enabled_key_ids() == set(keys[1:])


def test_retire_in_a_fresh_process_disables_the_version_without_listing(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    keys = _rotations(store, ref, 8)
    s = fresh_store()
    s.inspect(ref)
    _rotations(s, ref, 1, retire=False)
    with count_calls(SERVICE) as calls:
        s.inspect(ref)
        s.retire(ref, keys[-1])
    # one GET (inspect), one PATCH to disable the old version, one PATCH of the current version's tags
    assert kv_calls(calls) == [("get_secret", "200"), ("update_secret", "200"), ("update_secret", "200")]
    enabled = [v for v in kv.versions(ref.secret) if v.enabled]
    assert len(enabled) == 1
    assert fresh_store().inspect(ref).enabled_key_ids() == {(enabled[0].tags or {})["rotator-key-id"]}


def test_a_rotation_costs_the_same_after_hundreds_of_versions(
    kv: KeyVaultServer, store: AzureKeyVaultStore, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    _rotations(store, ref, 40)
    with count_calls(SERVICE) as calls:
        _rotations(fresh_store(), ref, 2)
    ops = [op for op, _ in kv_calls(calls)]
    assert "list_secret_versions" not in ops
    assert len(ops) == 2 * 3 + 3  # two publishes (get, set, get), one retire (get, patch, patch)


def test_a_put_whose_answer_was_lost_makes_one_version(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    # the vault made the version, then the answer was lost (a 500 from a gateway, a reset connection): the SDK's
    # retry policy sends the PUT again, and Key Vault makes a second version of the same key
    store.stage(ref, value("k1"), meta("k1"))
    kv.fail_next(500, op="set_secret", after=True)
    store.stage(ref, value("k2"), meta("k2"))
    held = [(v.tags or {}).get("rotator-key-id") for v in kv.versions(ref.secret)]
    assert held == ["k1", "k2"]
    assert store.inspect(ref).current_key_id == "k2"


def test_a_put_whose_connection_was_reset_after_it_was_made_makes_one_version(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    kv.fail_next(0, op="set_secret", after=True)  # made, then the connection closes with no answer
    with count_calls(SERVICE) as calls:
        store.stage(ref, value("k2"), meta("k2"))
    assert [(v.tags or {}).get("rotator-key-id") for v in kv.versions(ref.secret)] == ["k1", "k2"]
    assert [op for op, _ in kv_calls(calls)] == ["set_secret", "get_secret"]


def test_a_put_that_failed_before_it_was_made_is_sent_again(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    kv.fail_next(503, op="set_secret")
    with count_calls(SERVICE) as calls:
        store.stage(ref, value("k2"), meta("k2"))
    assert [(v.tags or {}).get("rotator-key-id") for v in kv.versions(ref.secret)] == ["k1", "k2"]
    # the failed PUT, a GET showing the key did not land, the PUT again
    assert kv_calls(calls) == [("set_secret", "503"), ("get_secret", "200"), ("set_secret", "200")]


def test_lost_answers_to_every_put_still_make_one_version(
    kv: KeyVaultServer, store: AzureKeyVaultStore, ref: TargetRef
) -> None:
    store.stage(ref, value("k1"), meta("k1"))
    kv.fail_next(500, op="set_secret", times=20, after=True)
    store.stage(ref, value("k2"), meta("k2"))  # the check after the first lost answer finds the version
    assert kv.version_count(ref.secret) == 2


def test_server_names_are_case_insensitive(kv: KeyVaultServer, raw_client: Any) -> None:
    raw_client.set_secret("Momento-Checkout", "one")
    raw_client.set_secret("momento-checkout", "two")
    assert kv.version_count("MOMENTO-CHECKOUT") == 2
    got = raw_client.get_secret("MOMENTO-checkout")
    assert got.value == "two"
    assert got.name == "Momento-Checkout"  # the name keeps the case it was created with


def test_the_version_cache_is_case_insensitive(kv: KeyVaultServer, store: AzureKeyVaultStore) -> None:
    # two spellings of one secret (Key Vault names are case-insensitive): what one learns, the other knows
    upper, lower = target("Momento-Checkout"), target("momento-checkout")
    store.inspect(lower)
    store.stage(upper, value("k1"), meta("k1"))
    store.stage(lower, value("k1"), meta("k1"))  # the key is there already: before, a second version
    assert kv.version_count("momento-checkout") == 1
    store.stage(lower, value("k2"), meta("k2"))
    assert store.inspect(upper).current_key_id == "k2"
    assert kv.version_count("momento-checkout") == 2


def test_a_secret_written_before_version_tracking_is_listed_once_then_tracked(
    kv: KeyVaultServer, raw_client: Any, fresh_store: Callable[[], AzureKeyVaultStore], ref: TargetRef
) -> None:
    # versions an older rotator wrote: key tags, no rotator-tracks tag
    for k in ("k1", "k2"):
        tags = {"rotator-key-id": k, "rotator-policy": "checkout", "managed-by": "rotator"}
        raw_client.set_secret(ref.secret, f"payload-{k}", tags=tags)
    s = fresh_store()
    with count_calls(SERVICE) as calls:
        state = s.inspect(ref)
    assert [op for op, _ in kv_calls(calls)] == ["get_secret", "list_secret_versions"]
    assert state.enabled_key_ids() == {"k1", "k2"}
    s.retire(ref, "k1")  # disables k1 and records what is still tracked on the current version
    with count_calls(SERVICE) as calls:
        state = fresh_store().inspect(ref)
    assert kv_calls(calls) == [("get_secret", "200")]
    assert state.enabled_key_ids() == {"k2"}
    assert state.holds("k2")
