from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from rotator.model import SecretText
from rotator.stores.base import TargetRef
from rotator.stores.file import FileStore, StoreConfig, TargetOptions, open_store
from tests.stores.contract import MakeRef, StoreContract, _meta


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    s = open_store("local", StoreConfig(type="file", path=str(tmp_path / "secrets")))
    assert isinstance(s, FileStore)
    return s


@pytest.fixture
def make_ref() -> MakeRef:
    return lambda secret: TargetRef(store="local", secret=secret, policy="contract")


class TestFileContract(StoreContract):
    pass


def test_files_are_private_and_current_is_a_symlink(store: FileStore, tmp_path: Path) -> None:
    ref = TargetRef("local", "momento/demo", "p")
    k = str(uuid.uuid4())
    store.stage(ref, SecretText("payload-" + k), _meta(k))
    store.promote(ref, k)
    d = tmp_path / "secrets" / "momento" / "demo"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in (d / "versions").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert (d / "current").is_symlink()
    assert (d / "current").read_text() == "payload-" + k


def test_no_temp_files_left_behind(store: FileStore, tmp_path: Path) -> None:
    ref = TargetRef("local", "demo", "p")
    for _ in range(3):
        k = str(uuid.uuid4())
        store.stage(ref, SecretText("payload-" + k), _meta(k))
        store.promote(ref, k)
    leftovers = [p for p in (tmp_path / "secrets").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_hand_written_value_is_foreign(store: FileStore, tmp_path: Path) -> None:
    d = tmp_path / "secrets" / "legacy"
    d.mkdir(parents=True)
    (d / "value").write_text("something")
    assert store.inspect(TargetRef("local", "legacy", "p")).foreign


@pytest.mark.parametrize("bad", ["../escape", "a//b", "", "with space", "/abs"])
def test_bad_secret_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid file-store secret name"):
        TargetOptions(store="local", secret=bad)


class TestMemoryStoreContract(StoreContract):
    """The simulation's store keeps the same contract, so the property tests mean something."""

    @pytest.fixture
    def store(self) -> object:
        from datetime import UTC, datetime

        from tests.support.memory import MemoryStore

        return MemoryStore("mem", lambda: datetime.now(UTC))
