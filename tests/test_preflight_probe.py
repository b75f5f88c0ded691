"""The preflight proves a file store writable by writing: it creates, writes and removes a probe file where
the store's first write for each target goes (or, when the store would create that directory, in the nearest
existing one it would create it under), opened as the store opens it (no symlink below the root followed).

A path whose filesystem says it is writable but where no file can be created (under /proc), a directory whose
mode denies creation, a planted symlink the store would refuse: each is a preflight error naming the field
and the fix, before any key is created at the issuer. A writable store passes with nothing left behind.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator import preflight
from rotator.config import Config, from_mapping
from rotator.errors import ConfigError
from rotator.model import Role, SecretText
from rotator.stores.base import TargetRef
from rotator.stores.file import FileStore
from tests.stores.contract import _meta
from tests.support.e2e import tree_snapshot

AS_ROOT = os.geteuid() == 0


class Issuer:
    """Knows the one role the config uses: the preflight's role check passes."""

    def list_roles(self) -> list[Role]:
        return [Role(role_id="operator", role_name="operator")]

    def close(self) -> None:
        return None


def _config(path: Path | str, *secrets: str) -> Config:
    return from_mapping(
        {
            "issuer": {"type": "emulator"},
            "defaults": {"orphan_after": "15m"},
            "stores": {"local": {"type": "file", "path": str(path)}},
            "policies": [
                {"name": "p", "role": "operator", "targets": [{"store": "local", "secret": s} for s in secrets]}
            ],
        }
    )


def _check(path: Path | str, *secrets: str) -> None:
    preflight.check(_config(path, *(secrets or ("demo",))), Issuer(), {})  # type: ignore[arg-type]


def _issues(path: Path | str, *secrets: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        _check(path, *secrets)
    return {i.path: i.message for i in info.value.issues}


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every file the code under test creates (O_CREAT): (the directory it is created in, its name)."""
    made: list[tuple[str, str]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & os.O_CREAT:
            where = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else os.path.dirname(str(path))
            made.append((where, os.path.basename(str(path))))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", spy)
    yield made


def _proc_path() -> str:
    return f"/proc/rotator-test-{uuid.uuid4().hex[:8]}"


def test_a_store_under_proc_fails_preflight_naming_the_store_path() -> None:
    """/proc is a filesystem mounted read-write that takes no new files: statvfs and access(2) (for root)
    call it writable, and `rotator once` used to create keys at the issuer that no target could hold."""
    path = _proc_path()
    issues = _issues(path)
    assert set(issues) == {"stores.local.path"}, issues
    message = issues["stores.local.path"]
    assert "files cannot be created in /proc" in message, message
    assert "give the store a path on a writable volume" in message, message
    assert not os.path.lexists(path)


def test_rotator_once_with_a_store_under_proc_creates_no_key(tmp_path: Path) -> None:
    from tests.bad_input.cases import base_config, dump
    from tests.bad_input.test_corpus import run_main
    from tests.support.e2e import T0, harness

    with harness(tmp_path / "w") as h:
        h.clock.set(T0)
        data = base_config(h.url, h.key_file, h.secrets)
        data["stores"]["local"]["path"] = _proc_path()
        config = tmp_path / "rotator.yaml"
        config.write_bytes(dump(data))
        before = h.issued_keys()  # the harness's own management key
        ran = run_main(["-c", str(config), "once", "--now", T0.isoformat()])
        assert ran.code == 2, ran.explain(["once"])
        assert "stores.local.path" in ran.stderr and "files cannot be created in /proc" in ran.stderr, ran.stderr
        assert h.issued_keys() == before


@pytest.mark.skipif(AS_ROOT, reason="root creates files whatever a directory's mode says")
def test_a_versions_directory_that_denies_creation_fails_preflight_naming_the_target(tmp_path: Path) -> None:
    """The store's first write for a target goes into <secret>/versions: the preflight used to check only the
    secret's directory (writable), and the pass failed after the issuer had made the key."""
    root = tmp_path / "secrets"
    versions = root / "demo" / "versions"
    versions.mkdir(parents=True, mode=0o700)
    for d in (root, root / "demo"):
        d.chmod(0o700)
    versions.chmod(0o500)  # private (no group or other bits), but not writable
    try:
        before = tree_snapshot(tmp_path)
        issues = _issues(root)
        assert tree_snapshot(tmp_path) == before
    finally:
        versions.chmod(0o700)
    assert set(issues) == {"policies[0].targets[0].secret"}, issues
    message = issues["policies[0].targets[0].secret"]
    assert message.startswith("demo: ") and f"{versions} is not writable by this user" in message, message
    assert "fix its owner or mode" in message, message


def test_a_symlink_under_the_root_fails_preflight_as_the_store_would_refuse_it(tmp_path: Path) -> None:
    """The store refuses to follow a symlink below its root, so its first write there would fail: so does the
    preflight, which opens the directories the same way (and writes nothing through the link)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = tmp_path / "secrets"
    root.mkdir(mode=0o700)
    (root / "momento").symlink_to(elsewhere)
    issues = _issues(root, "momento/demo")
    message = issues["policies[0].targets[0].secret"]
    assert f"{root / 'momento'} is a symlink under the store's root" in message, message
    assert "remove the link" in message, message
    assert list(elsewhere.iterdir()) == []


def test_a_probe_that_cannot_be_written_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory where a file can be created but not written to (a full disk): the probe writes, so it
    sees it; the probe file is removed all the same."""
    root = tmp_path / "secrets"
    root.mkdir(mode=0o700)
    before = tree_snapshot(tmp_path)

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    issues = _issues(root)
    monkeypatch.undo()
    message = issues["stores.local.path"]
    assert f"files cannot be created in {root}" in message and "No space left on device" in message, message
    assert tree_snapshot(tmp_path) == before


def test_a_writable_store_passes_with_a_probe_made_and_removed_where_the_first_write_goes(
    tmp_path: Path, probes: list[tuple[str, str]]
) -> None:
    root = tmp_path / "secrets"
    store = FileStore("local", root)
    store.stage(TargetRef("local", "demo", "p"), SecretText("payload-k1"), _meta("k1"))
    probes.clear()
    before = tree_snapshot(tmp_path)

    _check(root, "demo", "fresh/one")

    # the root itself, the existing secret's versions directory; the new secret's would be made in the root
    where = [os.path.realpath(w) for w, _ in probes]
    assert where == [os.path.realpath(p) for p in (root, root / "demo" / "versions")], probes
    for _, name in probes:
        assert name.startswith(".tmp-preflight-"), name
    assert len({name for _, name in probes}) == len(probes)
    assert tree_snapshot(tmp_path) == before  # every probe removed, no directory made


def test_a_missing_root_is_probed_in_the_directory_the_store_would_create_it_in(
    tmp_path: Path, probes: list[tuple[str, str]]
) -> None:
    root = tmp_path / "not" / "yet" / "secrets"
    before = tree_snapshot(tmp_path)
    _check(root)
    assert [os.path.realpath(w) for w, _ in probes] == [os.path.realpath(tmp_path)], probes
    assert tree_snapshot(tmp_path) == before
    assert not (tmp_path / "not").exists()


def test_the_probe_file_is_private_and_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "secrets"
    root.mkdir(mode=0o700)
    seen: list[tuple[int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if flags & os.O_CREAT:
            seen.append((flags, stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(os, "open", spy)
    _check(root)
    monkeypatch.undo()
    assert seen, "no probe file was created"
    for flags, mode in seen:
        assert flags & os.O_EXCL and flags & os.O_NOFOLLOW
        assert mode == 0o600
    assert list(root.iterdir()) == []
