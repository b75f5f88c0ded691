"""``type: jsondir``: an example rotator store, built only on rotator's plug-in surface.

Each secret is one JSON file, ``<path>/<secret>.json``, holding every version rotator wrote (its key id,
value and time) and which one is current. Every change is a read-modify-write under an exclusive ``flock``
of ``<secret>.lock`` and lands with ``os.replace``, so a promote that checks ``expect_current`` is a
conditional write: two writers are serialised and the second sees the first's change. A file that is not
this JSON is a value rotator did not write (foreign): reported, never overwritten.

A real store would talk to a service; the shape is the same. See rotator's docs/stores/README.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from rotator.errors import StoreConflict, StoreNotFound, StorePreconditionFailed, StoreUnavailable
from rotator.model import SecretState, SecretText, StoredVersion
from rotator.quotas import Charge
from rotator.stores.base import (
    ANY_CURRENT,
    BaseTargetOptions,
    Expect,
    PreflightProblem,
    SecretStore,
    StoreCapabilities,
    StoreContext,
    StoreSpec,
    StoreType,
    TargetRef,
    VersionMeta,
)

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}(?:/[a-z0-9][a-z0-9._-]{0,62}){0,7}")


class StoreConfig(BaseModel):
    """``stores.<name>`` of ``type: jsondir``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["jsondir"]
    path: str


class TargetOptions(BaseTargetOptions):
    """A target in a jsondir store: the common fields only, ``secret`` a relative path of lowercase names."""

    @field_validator("secret", "endpoint_secret")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.fullmatch(v):
            raise ValueError("a jsondir secret is a relative path of lowercase names, e.g. momento/checkout")
        return v


class JsonDirStore:
    """The store. Thread- and process-safe through the lock file."""

    capabilities = StoreCapabilities(compare_and_set="conditional")

    def __init__(self, name: str, root: Path, clock: Callable[[], datetime]) -> None:
        self.name, self.root, self._clock = name, root, clock

    def __repr__(self) -> str:
        return f"JsonDirStore(name={self.name!r}, root={str(self.root)!r})"

    # -- the file of one secret ----------------------------------------------------------------------------

    def _path(self, ref: TargetRef) -> Path:
        if not _NAME.fullmatch(ref.secret):
            raise StoreConflict("not a jsondir secret name", store=self.name, secret=ref.secret)
        return self.root / f"{ref.secret}.json"

    def _load(self, ref: TargetRef) -> dict[str, Any] | None:
        """The secret's document; None when there is none. Raises StoreConflict for a foreign file."""
        try:
            text = self._path(ref).read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read: {exc.strerror}", store=self.name, secret=ref.secret) from None
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != "rotator-jsondir/1":
            raise StoreConflict("holds a value rotator did not write", store=self.name, secret=ref.secret)
        return doc

    @contextmanager
    def _locked(self, ref: TargetRef) -> Iterator[dict[str, Any]]:
        """The document, locked; what the block leaves in it is written back atomically."""
        path = self._path(ref)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write: {exc.strerror}", store=self.name, secret=ref.secret) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = self._load(ref) or {"format": "rotator-jsondir/1", "versions": [], "current": None}
            before = json.dumps(doc, sort_keys=True)
            yield doc
            if json.dumps(doc, sort_keys=True) != before:
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump(doc, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        finally:
            os.close(lock)

    @staticmethod
    def _version(doc: dict[str, Any], key_id: str) -> dict[str, Any] | None:
        return next((v for v in doc["versions"] if v["key_id"] == key_id), None)

    # -- the SecretStore protocol --------------------------------------------------------------------------

    def inspect(self, ref: TargetRef) -> SecretState:
        try:
            doc = self._load(ref)
        except StoreConflict:
            return SecretState(exists=True, foreign=True)
        if doc is None:
            return SecretState(exists=False)
        current = next((v for v in doc["versions"] if v["version"] == doc["current"]), None)
        return SecretState(
            exists=True,
            versions=tuple(
                StoredVersion(
                    v["version"], v["key_id"], datetime.fromisoformat(v["created"]), v is current, v["enabled"]
                )
                for v in doc["versions"]
            ),
            current_key_id=current["key_id"] if current else None,
            current_since=datetime.fromisoformat(doc["current_since"]) if current else None,
        )

    def stage(self, ref: TargetRef, value: SecretText, meta: VersionMeta) -> None:
        with self._locked(ref) as doc:
            if self._version(doc, meta.key_id) is None:
                doc["versions"].append(
                    {
                        "version": f"v{len(doc['versions']) + 1}",
                        "key_id": meta.key_id,
                        "policy": meta.policy,
                        "value": value.reveal(),
                        "created": self._clock().isoformat(),
                        "enabled": True,
                    }
                )

    def read(self, ref: TargetRef, key_id: str) -> SecretText:
        doc = self._load(ref)
        v = None if doc is None else self._version(doc, key_id)
        if v is None or not v["enabled"]:
            raise StoreNotFound(f"no enabled version holds key {key_id}", store=self.name, secret=ref.secret)
        return SecretText(v["value"])

    def promote(self, ref: TargetRef, key_id: str, expect_current: Expect = ANY_CURRENT) -> None:
        with self._locked(ref) as doc:
            v = self._version(doc, key_id)
            current = next((x for x in doc["versions"] if x["version"] == doc["current"]), None)
            if current is not None and current["key_id"] == key_id:
                return
            if expect_current is not ANY_CURRENT and (current["key_id"] if current else None) != expect_current:
                raise StorePreconditionFailed(
                    f"the current version no longer holds key {expect_current}", store=self.name, secret=ref.secret
                )
            if v is None or not v["enabled"]:
                raise StoreNotFound(f"nothing is staged for key {key_id}", store=self.name, secret=ref.secret)
            doc["current"], doc["current_since"] = v["version"], self._clock().isoformat()

    def retire(self, ref: TargetRef, key_id: str) -> None:
        if self._load(ref) is None:
            return
        with self._locked(ref) as doc:
            for v in doc["versions"]:
                if v["key_id"] == key_id:
                    if v["version"] == doc["current"]:
                        raise StoreConflict("refusing to retire the current key", store=self.name, secret=ref.secret)
                    v["enabled"] = False
                    v["value"] = ""  # a retired value is not kept

    def preflight(self, targets: Sequence[TargetRef]) -> list[PreflightProblem]:
        return []

    # a directory has no request quotas: nothing to charge (a cloud service's store declares its quotas here)
    def publish_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        return ()

    def inspect_cost(self, ref: TargetRef) -> tuple[tuple[Charge, int], ...]:
        return ()

    def close(self) -> None:
        return None


def _open(spec: StoreSpec, context: StoreContext) -> SecretStore:
    assert isinstance(spec.config, StoreConfig)
    return JsonDirStore(spec.name, Path(spec.config.path).expanduser(), context.clock)


#: what the entry point names
STORE_TYPE = StoreType(
    name="jsondir",
    config=StoreConfig,
    target=TargetOptions,
    open=_open,
    capabilities=JsonDirStore.capabilities,
    package="rotator-jsondir",
)
