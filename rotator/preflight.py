"""Preflight: before a pass may change anything, check what can be checked, for every policy at once.

A pass that creates a key for one policy and then finds another policy's role unknown, or a store it
cannot write, has already changed the issuer. So every command that can mutate (``run``, ``once``,
``rotate``, the Lambda) gets its engine from :func:`rotator.runtime.app.build` with ``preflight=True``, which
calls :func:`check` once, before the first mutation; ``rotator validate --online`` calls it too, and
changes nothing (the file stores' probe files it writes are removed at once). What is checked:

- every policy's role resolves at the issuer (one ``GET /roles``), named as ``policies[i].role`` with the
  roles the issuer knows and the closest one;
- every store whose type declares a preflight (``StoreCapabilities.preflight``) is asked about its targets
  (:meth:`rotator.stores.base.SecretStore.preflight`), and what it finds is reported at the targets' paths
  (``policies[i].targets[j].secret``) or the store's own (``stores.<name>.path``). The file store proves
  each target writable by writing: see :meth:`rotator.stores.file.FileStore.preflight`. The cloud stores
  declare none: their writes are checked by the pass itself, target by target.

What needs no network (``interval`` > 0, the description's length, durations in range, unset variables)
is checked by :mod:`rotator.config` at load time. A failure here is a :class:`ConfigError` (exit code 2),
every problem listed with its path; nothing was created, written or revoked.

An issuer that cannot be reached (or refuses the key) is not a preflight failure: the pass reports it the
usual way (exit code 1, or 2 with the remedy for a refused key), with its summary line.
"""

from __future__ import annotations

import difflib
from typing import Any

import structlog

from rotator.config import Config, Policy, redact_secrets
from rotator.errors import ConfigError, ConfigIssue, IssuerError
from rotator.issuers.base import KeyIssuer
from rotator.stores.base import SecretStore, StoreContext, TargetRef
from rotator.stores.registry import store_type

log = structlog.get_logger("rotator")


def check(config: Config, issuer: KeyIssuer, stores: dict[str, SecretStore]) -> None:
    """Raise ConfigError listing every problem that would make a pass fail part-way. Changes nothing: the
    only write is a file store's probe file, removed at once."""
    issues: list[ConfigIssue] = []
    _check_roles(config, issuer, issues)
    _check_stores(config, stores, issues)
    if issues:
        raise ConfigError([ConfigIssue(i.path, redact_secrets(i.message)) for i in issues], source=config.source)


def _check_roles(config: Config, issuer: KeyIssuer, issues: list[ConfigIssue]) -> None:
    try:
        roles = issuer.list_roles()
    except IssuerError as exc:
        # the pass reports an unreachable issuer or a refused key itself (exit 1 / exit 2 with the remedy)
        log.warning("preflight could not list the issuer's roles", error=f"{type(exc).__name__}: {exc}")
        return
    known: dict[str, str] = {}
    for r in roles:
        known[r.role_id] = r.role_id
        known.setdefault(r.role_name.lower(), r.role_id)
    names = sorted({r.role_name.lower() for r in roles})
    for i, policy in enumerate(config.policies):
        if policy.role in known or policy.role.lower() in known:
            continue
        close = difflib.get_close_matches(policy.role.lower(), names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        issues.append(
            ConfigIssue(
                f"policies[{i}].role",
                f"unknown role {policy.role!r} at the issuer{hint}; use one of: {', '.join(names)}, "
                "or a custom role's id",
            )
        )


def _check_stores(config: Config, stores: dict[str, SecretStore], issues: list[ConfigIssue]) -> None:
    """Ask every store that declares a preflight about its targets; report what it finds in the order of the
    policies' targets (a store's own problem at its first target's place)."""
    asked: dict[str, list[tuple[int, str, TargetRef]]] = {}
    order = 0
    for i, policy in enumerate(config.policies):
        for j, target in enumerate(policy.targets):
            asked.setdefault(target.store, []).append((order, f"policies[{i}].targets[{j}]", _ref(policy, target)))
            order += 1
    found: list[tuple[int, ConfigIssue]] = []
    for name, entries in asked.items():
        store, opened = stores.get(name), False
        if store is None:  # not opened by the caller: open it here only if its type declares a preflight
            spec = config.stores[name]
            kind = store_type(spec.type)
            if not kind.capabilities.preflight:
                continue
            store, opened = kind.open(spec, StoreContext(pass_timeout=config.pass_timeout)), True
        try:
            problems = store.preflight([ref for _, _, ref in entries]) if store.capabilities.preflight else []
        finally:
            if opened:
                store.close()
        for problem in problems:
            if problem.index is None:
                found.append((entries[0][0], ConfigIssue(f"stores.{name}.{problem.field}", problem.message)))
            else:
                at, path, _ = entries[problem.index]
                found.append((at, ConfigIssue(f"{path}.{problem.field}", problem.message)))
    issues.extend(issue for _, issue in sorted(found, key=lambda f: f[0]))


def _ref(policy: Policy, target: Any) -> TargetRef:
    return TargetRef(target.store, target.secret, policy.name, target.options)


