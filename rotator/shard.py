"""Shards: a fleet split between processes by a stable hash of each policy's name.

``--shard INDEX/COUNT`` (or ``ROTATOR_SHARD=INDEX/COUNT``) gives a process the policies whose
``crc32(name) % COUNT == INDEX``. Every policy falls in exactly one of the COUNT shards, and which one depends
on nothing but its name and COUNT (not on the order of the config, the other names, the process or the Python
version: ``hash()`` is salted per process, CRC-32 is not), so COUNT processes with the same config split it
between them without listing names, and adding a policy moves no other one.

A Kubernetes Indexed Job (``completionMode: Indexed``) sets ``JOB_COMPLETION_INDEX`` in each pod: with
``ROTATOR_SHARD_COUNT=COUNT`` (and no ``ROTATOR_SHARD``) that index is the shard.

When to shard: when one pass over the fleet no longer fits well within ``interval`` in one process. What a
shard costs: each one lists every key at the issuer once per pass (the listing is not filtered by policy), so
COUNT shards make COUNT listings a pass where one process made one.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rotator.errors import ConfigError, ConfigIssue

SHARD_ENV = "ROTATOR_SHARD"
SHARD_COUNT_ENV = "ROTATOR_SHARD_COUNT"
JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"
#: more shards than this is a typo, not a fleet
MAX_SHARDS = 10_000

_SHARD_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) that policy ``name`` falls in when the fleet is split ``count`` ways."""
    return zlib.crc32(name.encode("utf-8")) % count


@dataclass(frozen=True)
class Shard:
    """One of ``count`` shards, numbered from 0."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index

    def select(self, names: Iterable[str]) -> list[str]:
        """The names in this shard, in their order."""
        return [n for n in names if self.holds(n)]


def _check(index: int, count: int, field: str, text: str) -> Shard:
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError([ConfigIssue(field, f"the shard count must be from 1 to {MAX_SHARDS}, not {text!r}")])
    if not 0 <= index < count:
        raise ConfigError(
            [ConfigIssue(field, f"the shard index counts from 0 to COUNT-1 ({count - 1}), so {text!r} names none")]
        )
    return Shard(index, count)


def parse(text: str, field: str = "--shard") -> Shard:
    """``"INDEX/COUNT"`` (e.g. ``"0/4"``) as a :class:`Shard`. Raises ConfigError naming ``field`` (exit 2)."""
    m = _SHARD_RE.fullmatch(text)
    if m is None:
        raise ConfigError(
            [ConfigIssue(field, f"expected INDEX/COUNT such as 0/4 (the first of 4 shards), not {text!r}")]
        )
    return _check(int(m.group(1)), int(m.group(2)), field, text)


def from_environment(option: str | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard this process runs: ``--shard`` (``option``), else ``ROTATOR_SHARD``, else ``JOB_COMPLETION_INDEX``
    with ``ROTATOR_SHARD_COUNT``; ``None`` for the whole fleet. Raises ConfigError naming the source (exit 2)."""
    if option is not None:
        return parse(option, "--shard")
    if environ.get(SHARD_ENV):
        return parse(environ[SHARD_ENV], f"${SHARD_ENV}")
    count = environ.get(SHARD_COUNT_ENV)
    if not count:
        return None
    if not count.strip().isdigit():
        raise ConfigError([ConfigIssue(f"${SHARD_COUNT_ENV}", f"expected a number of shards such as 4, not {count!r}")])
    index = environ.get(JOB_INDEX_ENV)
    if index is None or not index.strip().isdigit():
        raise ConfigError(
            [
                ConfigIssue(
                    f"${JOB_INDEX_ENV}",
                    f"${SHARD_COUNT_ENV} is set but ${JOB_INDEX_ENV} is {'unset' if index is None else repr(index)}: "
                    f"run in an Indexed Job (completionMode: Indexed), or set ${SHARD_ENV}=INDEX/COUNT instead",
                )
            ]
        )
    return _check(int(index), int(count), f"${JOB_INDEX_ENV}", f"{index.strip()}/{count.strip()}")
