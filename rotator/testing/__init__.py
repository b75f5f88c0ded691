"""Test kits for code that plugs into rotator, importable by other packages (shipped in the wheel; the
``momento-rotator[testing]`` extra installs pytest for them).

- :mod:`rotator.testing.stores`: :class:`~rotator.testing.stores.StoreContract`, the whole contract of a
  secret store, as a pytest class to subclass (``docs/stores/README.md``).
"""
