"""rotator's store contract, run against this store: the whole of rotator.testing.stores.StoreContract."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.stores.base import StoreContext, StoreSpec, TargetRef
from rotator.testing.stores import MakeRef, PlantForeign, StoreContract
from rotator_jsondir import STORE_TYPE, StoreConfig, TargetOptions


def _open(root: Path) -> object:
    return STORE_TYPE.open(StoreSpec("j", "jsondir", StoreConfig(type="jsondir", path=str(root))), StoreContext())


class TestJsonDirContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> object:
        return _open(tmp_path)

    @pytest.fixture
    def other_store(self, tmp_path: Path) -> object:
        return _open(tmp_path)  # another instance on the same directory: another process's view

    @pytest.fixture
    def make_ref(self) -> MakeRef:
        return lambda secret: TargetRef("j", secret, "p", TargetOptions(store="j", secret=secret))

    @pytest.fixture
    def plant_foreign(self, tmp_path: Path) -> PlantForeign:
        def plant(ref: TargetRef, text: str) -> None:
            path = tmp_path / f"{ref.secret}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

        return plant
