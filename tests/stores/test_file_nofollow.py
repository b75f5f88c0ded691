"""The file store never follows a symlink below its root: a planted link is refused, nothing outside changes.

Each test plants a symlink inside the root that points at a directory or a file outside it (a complete secret
of another store, so that a store following the link would find something to list, read, retire or
overwrite), runs the store's operations through it, and checks that every one of them is refused with a
:class:`StorePermissionError` naming the secret, and that the tree outside the root is exactly as it was. The
root itself may be a symlink (a mounted volume): that one is followed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from rotator.errors import StoreError, StorePermissionError
from rotator.model import SecretText
from rotator.stores.base import TargetRef
from rotator.stores.file import FileStore
from tests.stores.contract import _meta

Snapshot = dict[str, tuple[str, int, bytes | str, int]]


def _ref(secret: str = "demo") -> TargetRef:
    return TargetRef("local", secret, "p")


def _rotate(store: FileStore, ref: TargetRef, key: str) -> None:
    store.stage(ref, SecretText(f"payload-{key}-plaintext"), _meta(key))
    store.promote(ref, key)


def _snapshot(top: Path) -> Snapshot:
    """Every entry under ``top``: its kind, mode, content (a symlink's target) and mtime."""
    seen: Snapshot = {}
    for base, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            p = Path(base) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                seen[str(p.relative_to(top))] = ("link", st.st_mode, os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                seen[str(p.relative_to(top))] = ("dir", st.st_mode, b"", st.st_mtime_ns)
            else:
                seen[str(p.relative_to(top))] = ("file", st.st_mode, p.read_bytes(), st.st_mtime_ns)
    return seen


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A store outside the root holding secret ``demo`` (and ``momento/demo``) with key k1 current and k0
    retired but still on disk: what an operation that followed a link would list, read, overwrite or remove."""
    top = tmp_path / "elsewhere"
    other = FileStore("other", top, destroy_after=timedelta(days=1))
    for secret in ("demo", "momento/demo"):
        ref = _ref(secret)
        _rotate(other, ref, "k0")
        _rotate(other, ref, "k1")
        other.retire(ref, "k0")
    return top


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "secrets"
    r.mkdir(mode=0o700)
    return r


def _operations(store: FileStore, ref: TargetRef) -> dict[str, Callable[[], object]]:
    """Every operation of the store on ``ref``: list (inspect), write (stage, promote), read, delete (retire)."""
    return {
        "inspect": lambda: store.inspect(ref),
        "stage": lambda: store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2")),
        "read": lambda: store.read(ref, "k1"),
        "promote": lambda: store.promote(ref, "k0"),
        "retire": lambda: store.retire(ref, "k1"),
        "retire-old": lambda: store.retire(ref, "k0"),
    }


_OPS = ("inspect", "stage", "read", "promote", "retire", "retire-old")


def _assert_refused(
    store: FileStore, ref: TargetRef, link: Path, outside: Path, ops: tuple[str, ...] = tuple(_OPS)
) -> None:
    """Each of ``ops`` raises StorePermissionError naming ``link`` and the secret, and changes nothing outside."""
    before = _snapshot(outside)
    operations = _operations(store, ref)
    for op in ops:
        with pytest.raises(StorePermissionError) as info:
            operations[op]()
        message = str(info.value)
        assert "refusing to follow a symlink under the store's root" in message, (op, message)
        assert f"{link} is a symbolic link" in message, (op, message)
        assert f"secret {ref.secret!r}" in message, (op, message)
        assert info.value.secret == ref.secret
        assert "plaintext" not in message  # names the secret and the link, never a value
        assert _snapshot(outside) == before, f"{op} changed something outside the root"


def test_a_symlinked_secret_directory_is_refused_and_nothing_outside_changes(
    root: Path, outside: Path, tmp_path: Path
) -> None:
    (root / "demo").symlink_to(outside / "demo")
    store = FileStore("local", root)
    _assert_refused(store, _ref("demo"), root / "demo", outside)
    assert not (outside / "demo" / "versions" / "k2.value").exists()


def test_a_symlinked_directory_on_the_way_to_the_secret_is_refused(root: Path, outside: Path) -> None:
    (root / "momento").symlink_to(outside / "momento")
    store = FileStore("local", root)
    _assert_refused(store, _ref("momento/demo"), root / "momento", outside)


def _plant(root: Path, outside: Path, link: str) -> FileStore:
    """A store on ``root`` whose ``link`` (``demo``, or a directory of a real secret ``demo``: its own
    ``versions`` or ``promotions``, replaced) is a symlink to the same place in ``outside``."""
    store = FileStore("local", root)
    if link != "demo":
        _real_secret(root)
        shutil.rmtree(root / link)
    (root / link).symlink_to(outside / link)
    return store


@pytest.mark.parametrize("link", ["demo", "demo/versions", "demo/promotions"])
def test_whatever_the_operations_answer_nothing_outside_the_root_changes(root: Path, outside: Path, link: str) -> None:
    """Independently of the error: every operation run through the link leaves the outside tree as it was."""
    store = _plant(root, outside, link)
    before = _snapshot(outside)
    for op, call in _operations(store, _ref("demo")).items():
        with contextlib.suppress(StoreError):
            call()
        assert _snapshot(outside) == before, f"{op} changed something outside the root"


def test_a_symlink_to_a_directory_with_no_secret_yet_gets_no_write(root: Path, tmp_path: Path) -> None:
    """The write that would have made the secret's directories there (an empty directory outside)."""
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    (root / "momento").symlink_to(empty)
    store = FileStore("local", root)
    ref = _ref("momento/demo")
    with pytest.raises(StorePermissionError, match=r"symlink under the store's root: .*momento is a symbolic link"):
        store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("sub", ["versions", "promotions"])
def test_a_symlinked_versions_or_promotions_directory_is_refused(
    root: Path, outside: Path, tmp_path: Path, sub: str
) -> None:
    store = _plant(root, outside, f"demo/{sub}")
    _assert_refused(store, _ref("demo"), root / "demo" / sub, outside)


def _real_secret(root: Path) -> tuple[FileStore, TargetRef, Path]:
    store = FileStore("local", root)
    ref = _ref("demo")
    _rotate(store, ref, "k0")
    _rotate(store, ref, "k1")
    return store, ref, root / "demo" / "versions"


def test_a_symlinked_value_file_is_not_read(root: Path, outside: Path) -> None:
    store, ref, vdir = _real_secret(root)
    (vdir / "k1.value").unlink()
    (vdir / "k1.value").symlink_to(outside / "demo" / "versions" / "k1.value")
    before = _snapshot(outside)
    with pytest.raises(StorePermissionError, match=r"k1\.value is a symbolic link") as info:
        store.read(ref, "k1")
    assert info.value.secret == "demo"
    assert "payload" not in str(info.value)
    assert _snapshot(outside) == before


def test_a_symlinked_metadata_file_is_refused_where_it_is_read(root: Path, outside: Path) -> None:
    store, ref, vdir = _real_secret(root)
    (vdir / "k0.json").unlink()
    (vdir / "k0.json").symlink_to(outside / "demo" / "versions" / "k0.json")
    # every operation that lists or opens it (a stage of another key, a read of another version do not)
    _assert_refused(store, ref, vdir / "k0.json", outside, ("inspect", "promote", "retire-old"))
    with pytest.raises(StorePermissionError, match=r"k0\.json is a symbolic link"):
        store.read(ref, "k0")


def test_a_symlinked_promotion_record_is_refused(root: Path, outside: Path) -> None:
    store, ref, _ = _real_secret(root)
    pdir = root / "demo" / "promotions"
    newest = sorted(pdir.iterdir())[-1]
    newest.unlink()
    newest.symlink_to(outside / "demo" / "promotions" / newest.name)
    # every operation that reads the newest record (stage and read do not)
    _assert_refused(store, ref, newest, outside, ("inspect", "promote", "retire", "retire-old"))


def test_a_value_written_over_a_planted_file_symlink_is_refused(root: Path, outside: Path) -> None:
    """stage of a key whose value file is a link to a file outside: refused, the file outside untouched."""
    store, ref, vdir = _real_secret(root)
    target = outside / "demo" / "versions" / "k1.value"
    (vdir / "k2.value").symlink_to(target)
    before = _snapshot(outside)
    with pytest.raises(StorePermissionError, match=r"k2\.value is a symbolic link"):
        store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    assert _snapshot(outside) == before
    assert not (vdir / "k2.json").exists()


def test_a_root_that_is_itself_a_symlink_is_followed(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o700)
    root = tmp_path / "secrets"
    root.symlink_to(volume)
    store = FileStore("local", root)
    ref = _ref("momento/demo")
    _rotate(store, ref, "k1")
    assert store.read(ref, "k1").reveal() == "payload-k1-plaintext"
    assert store.inspect(ref).current_key_id == "k1"
    assert (volume / "momento" / "demo" / "current").read_text() == "payload-k1-plaintext"


def test_temp_files_are_created_exclusively_with_random_names_in_the_directory_fd(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage's two temporary files (value, metadata): a new random name each, opened O_CREAT | O_EXCL |
    O_NOFOLLOW relative to the versions directory's descriptor (not by a path that could cross a link)."""
    store, ref, vdir = _real_secret(root)
    created: list[tuple[str, int, int | None]] = []
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if os.path.basename(str(path)).startswith(".tmp-"):
            created.append((str(path), flags, dir_fd))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", spy)
    store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    monkeypatch.undo()
    assert len(created) == 2
    assert len({name for name, _, _ in created}) == 2
    for name, flags, dir_fd in created:
        assert "/" not in name and dir_fd is not None
        want = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        assert flags & want == want
    assert stat.S_IMODE((vdir / "k2.value").stat().st_mode) == 0o600
    assert store.read(ref, "k2").reveal() == "payload-k2-plaintext"
    assert [p.name for p in vdir.iterdir() if p.name.startswith(".")] == []
