"""The store contract lives in :mod:`rotator.testing.stores` (the published kit); re-exported for the
backend test modules here."""

from __future__ import annotations

from rotator.testing.stores import MakeRef, PlantForeign, StoreContract, meta, value

_meta, _value = meta, value

__all__ = ["MakeRef", "PlantForeign", "StoreContract", "_meta", "_value"]
