"""Store types by name: the entry-point group ``rotator.stores``.

A package adds a store type by declaring, in its ``pyproject.toml``::

    [project.entry-points."rotator.stores"]
    vault = "rotator_vault:STORE_TYPE"

where ``STORE_TYPE`` is a :class:`rotator.stores.base.StoreType`. rotator's own types (``file``, ``aws``,
``azure``, ``gcp``, ``kubernetes``) are declared the same way in rotator's ``pyproject.toml``; their names are
reserved: a package that declares one of them is ignored with a warning, so nothing installed beside rotator
can take over where ``type: aws`` writes. They are also looked up without reading the installed packages'
metadata (which costs a Lambda cold start tens of milliseconds): that is read only for a name rotator does not
ship.

A type that is not installed, or whose plugin fails to load or is not a ``StoreType``, is a config error
naming the type and what to install.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from rotator.errors import ConfigError, ConfigIssue
from rotator.keys import shown
from rotator.stores.base import SecretStore, StoreContext, StoreSpec, StoreType

GROUP = "rotator.stores"

#: rotator's own store types, as its pyproject.toml declares them under ``rotator.stores``
BUILTIN: dict[str, str] = {
    "file": "rotator.stores.file:STORE_TYPE",
    "aws": "rotator.stores.aws:STORE_TYPE",
    "azure": "rotator.stores.azure:STORE_TYPE",
    "gcp": "rotator.stores.gcp:STORE_TYPE",
    "kubernetes": "rotator.stores.kubernetes:STORE_TYPE",
}


class StoreTypeError(ConfigError):
    """A store type that cannot be used: unknown, not installed, or a broken plugin."""

    def __init__(self, kind: str, message: str, path: str = "type") -> None:
        super().__init__([ConfigIssue(path, message)])
        self.kind = kind


@functools.cache
def _plugins() -> dict[str, Any]:
    """The installed ``rotator.stores`` entry points that are not rotator's own (name -> entry point)."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in BUILTIN:
            if ep.value != BUILTIN[ep.name]:
                from rotator.observability import get_logger

                get_logger().warning(
                    "a package declares a store type rotator ships; it is ignored",
                    store_type=ep.name,
                    entry_point=ep.value,
                    package=getattr(ep.dist, "name", None),
                )
            continue
        found.setdefault(ep.name, ep)
    return found


def known() -> list[str]:
    """Every store type that can be used here: rotator's own, then the installed plugins'."""
    return [*BUILTIN, *sorted(_plugins())]


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def store_type(kind: str) -> StoreType:
    """The :class:`StoreType` registered as ``kind``. Raises StoreTypeError (a ConfigError) naming the type and
    the fix: an unknown name (with the known ones), a plugin that fails to import or is not a StoreType."""
    if kind in BUILTIN:
        target, package = BUILTIN[kind], "rotator"
    else:
        ep = _plugins().get(kind)
        if ep is None:
            raise StoreTypeError(
                kind,
                f"unknown store type {shown(kind)}; use one of: {', '.join(sorted(known()))}; or install the "
                f"package that provides it (one that declares a {GROUP!r} entry point named {shown(kind)})",
            )
        target, package = ep.value, getattr(ep.dist, "name", None) or "the package that provides it"
    try:
        obj = _load(target)
    except Exception as exc:  # a plugin may fail in any way; none of it is secret, but keep it short
        raise StoreTypeError(
            kind,
            f"store type {kind!r} cannot be loaded from {target} ({type(exc).__name__}: {str(exc)[:200]}); "
            f"reinstall {package} (pip install --force-reinstall {package}) or remove the store",
        ) from exc
    if not isinstance(obj, StoreType) or obj.name != kind:
        raise StoreTypeError(
            kind,
            f"store type {kind!r}: {target} is not a rotator.stores.base.StoreType named {kind!r}; "
            f"the plugin {package} is broken or built for another rotator version",
        )
    return obj


def require_extra(kind: str) -> None:
    """Raise :class:`MissingExtraError` with the exact ``pip install`` when store type ``kind``'s client
    library is missing (ConfigError for an unknown type)."""
    store_type(kind).require_sdk()


def open_store(spec: StoreSpec, context: StoreContext | None = None) -> SecretStore:
    """Open the store ``spec`` through its registered type. Raises ConfigError (an unknown or broken store
    type) or MissingExtraError (its client library is not installed)."""
    kind = store_type(spec.type)
    kind.require_sdk()
    return kind.open(spec, context or StoreContext())
