"""Secret-store backends. See :mod:`rotator.stores.base` for the contract."""
