"""Views of the issuer and the stores that guard their mutations: one mechanism for two uses.

- :func:`read_only_issuer` / :func:`read_only_store`: what a dry run (``rotator plan``) sees; reads work,
  every mutation raises, so a plan provably changes nothing.
- :func:`deadline_issuer` / :func:`deadline_store`: what a pass with ``pass_timeout`` sees; every mutation
  first checks the pass :class:`Deadline` and raises DeadlinePassed once it has passed.

A view forwards exactly the names its protocol declares (:data:`ISSUER_READS`/:data:`ISSUER_MUTATIONS`,
:data:`STORE_READS`/:data:`STORE_MUTATIONS`); anything else is an AttributeError, so a method a backend adds
beyond its protocol cannot slip past a guard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, cast

from rotator.durations import format_duration
from rotator.errors import DeadlinePassed
from rotator.issuers.base import KeyIssuer
from rotator.stores.base import SecretStore

__all__ = [
    "Deadline",
    "View",
    "deadline_issuer",
    "deadline_store",
    "read_only_issuer",
    "read_only_store",
]

T = TypeVar("T")
#: what a mutation is about to do, from its arguments, for the DeadlinePassed message
Describe = Callable[..., str]

ISSUER_READS = frozenset({"list_keys", "list_roles", "close"})
ISSUER_MUTATIONS: Mapping[str, Describe] = {
    "create_key": lambda *a, **k: "creating a key",
    "revoke_key": lambda key_id, *a, **k: f"revoking key {key_id}",
}
STORE_READS = frozenset(
    {"name", "capabilities", "inspect", "read", "preflight", "publish_cost", "inspect_cost", "close"}
)
STORE_MUTATIONS: Mapping[str, Describe] = {
    "stage": lambda ref, value, meta, *a, **k: f"staging key {meta.key_id} in {ref.id}",
    "promote": lambda ref, key_id, *a, **k: f"promoting key {key_id} in {ref.id}",
    "retire": lambda ref, key_id, *a, **k: f"retiring key {key_id} in {ref.id}",
}


class Deadline:
    """The pass deadline on the monotonic clock: after it, no further mutation may start (``pass_timeout``).

    A wall clock can jump (NTP, a resumed VM); the monotonic clock counts the time the process really had, and
    a process paused by SIGSTOP, a long GC or a frozen VM finds its deadline passed when it resumes.
    """

    def __init__(self, timeout: float | None, monotonic: Callable[[], float]) -> None:
        self.timeout = timeout
        self._monotonic = monotonic
        self.at = None if timeout is None else monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - self._monotonic()

    def passed(self) -> bool:
        r = self.remaining()
        return r is not None and r <= 0

    def check(self, what: str) -> None:
        if self.passed():
            limit = format_duration(timedelta(seconds=self.timeout or 0))
            raise DeadlinePassed(f"deadline passed: pass_timeout ({limit}) ran out before {what}")


class View:
    """``inner`` with the names in ``reads`` forwarded and those in ``mutations`` guarded: ``guard(what)``
    runs first (``what`` from the mutation's describer) and may raise."""

    def __init__(
        self,
        inner: Any,
        *,
        reads: frozenset[str],
        mutations: Mapping[str, Describe],
        guard: Callable[[str, str], None],
    ) -> None:
        self._inner, self._reads, self._mutations, self._guard = inner, reads, mutations, guard

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._reads:
            return getattr(self._inner, name)
        describe = self._mutations.get(name)
        if describe is None:
            raise AttributeError(f"{name} is not part of the protocol this view guards")
        method = getattr(self._inner, name)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._guard(name, describe(*args, **kwargs))
            return method(*args, **kwargs)

        return guarded

    def __repr__(self) -> str:
        return f"View({self._inner!r})"


def _dry_run(name: str, what: str) -> None:
    raise AssertionError(f"dry run: {name} must not be called")


def _view(inner: T, reads: frozenset[str], mutations: Mapping[str, Describe], guard: Callable[[str, str], None]) -> T:
    return cast(T, View(inner, reads=reads, mutations=mutations, guard=guard))


def read_only_issuer(inner: KeyIssuer) -> KeyIssuer:
    return _view(inner, ISSUER_READS, ISSUER_MUTATIONS, _dry_run)


def read_only_store(inner: SecretStore) -> SecretStore:
    return _view(inner, STORE_READS, STORE_MUTATIONS, _dry_run)


def deadline_issuer(inner: KeyIssuer, deadline: Deadline) -> KeyIssuer:
    return _view(inner, ISSUER_READS, ISSUER_MUTATIONS, lambda name, what: deadline.check(what))


def deadline_store(inner: SecretStore, deadline: Deadline) -> SecretStore:
    return _view(inner, STORE_READS, STORE_MUTATIONS, lambda name, what: deadline.check(what))
