from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rotator.errors import StoreError, StoreNotFound, StorePermissionError, StorePreconditionFailed
from rotator.model import SecretText
from rotator.stores.base import TargetRef
from rotator.stores.file import FileStore, StoreConfig, TargetOptions, open_store
from tests.stores.contract import MakeRef, PlantForeign, StoreContract, _meta


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    s = open_store("local", StoreConfig(type="file", path=str(tmp_path / "secrets")))
    assert isinstance(s, FileStore)
    return s


@pytest.fixture
def other_store(tmp_path: Path) -> FileStore:
    """A second file store on the same directory: another process's view."""
    s = open_store("local", StoreConfig(type="file", path=str(tmp_path / "secrets")))
    assert isinstance(s, FileStore)
    return s


@pytest.fixture
def make_ref() -> MakeRef:
    return lambda secret: TargetRef(store="local", secret=secret, policy="contract")


@pytest.fixture
def plant_foreign(tmp_path: Path) -> PlantForeign:
    """A value written by hand where the file store keeps a secret (``<root>/<secret>/value``)."""

    def plant(ref: TargetRef, text: str) -> None:
        d = tmp_path / "secrets" / ref.secret
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(tmp_path / "secrets", 0o700)
        (d / "value").write_text(text)

    return plant


class TestFileContract(StoreContract):
    pass


def test_files_are_private_and_current_is_a_symlink(store: FileStore, tmp_path: Path) -> None:
    ref = TargetRef("local", "momento/demo", "p")
    k = str(uuid.uuid4())
    store.stage(ref, SecretText("payload-" + k), _meta(k))
    store.promote(ref, k)
    d = tmp_path / "secrets" / "momento" / "demo"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in (d / "versions").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert (d / "current").is_symlink()
    assert (d / "current").read_text() == "payload-" + k


def test_no_temp_files_left_behind(store: FileStore, tmp_path: Path) -> None:
    ref = TargetRef("local", "demo", "p")
    for _ in range(3):
        k = str(uuid.uuid4())
        store.stage(ref, SecretText("payload-" + k), _meta(k))
        store.promote(ref, k)
    leftovers = [p for p in (tmp_path / "secrets").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_hand_written_value_is_foreign(store: FileStore, tmp_path: Path) -> None:
    d = tmp_path / "secrets" / "legacy"
    d.parent.mkdir(mode=0o700)
    d.mkdir(mode=0o700)
    (d / "value").write_text("something")
    assert store.inspect(TargetRef("local", "legacy", "p")).foreign


@pytest.mark.parametrize("bad", ["../escape", "a//b", "", "with space", "/abs"])
def test_bad_secret_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid file-store secret name"):
        TargetOptions(store="local", secret=bad)


class TestMemoryStoreContract(StoreContract):
    """The simulation's store keeps the same contract, so the property tests mean something."""

    @pytest.fixture
    def store(self) -> object:
        from datetime import UTC, datetime

        from tests.support.memory import MemoryStore

        return MemoryStore("mem", lambda: datetime.now(UTC))

    @pytest.fixture
    def other_store(self, store: Any) -> object:
        from tests.support.memory import MemoryStore

        other = MemoryStore("mem", store.clock)
        other.secrets = store.secrets  # the same secrets, another client
        return other

    @pytest.fixture
    def plant_foreign(self, store: Any) -> PlantForeign:
        return store.plant_foreign  # type: ignore[no-any-return]


# ---- issue 11 item 10: short writes, corrupt metadata, destroy_after, stale temporary files -----------------

SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _ref(secret: str = "demo") -> TargetRef:
    return TargetRef("local", secret, "p")


def _rotate(store: FileStore, ref: TargetRef, *keys: str) -> None:
    for k in keys:
        store.stage(ref, SecretText(f"payload-{k}-plaintext"), _meta(k))
        store.promote(ref, k)


_SHORT_WRITE_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from rotator.errors import StoreError
    from rotator.model import SecretText
    from rotator.stores.base import TargetRef
    from rotator.stores.file import StoreConfig, open_store
    from tests.stores.contract import _meta

    store = open_store("local", StoreConfig(type="file", path=sys.argv[1]))
    # files larger than 64 bytes cannot grow past it: the kernel writes the first 64 bytes and returns a
    # short count (write(2) "may write less than count bytes ... if the RLIMIT_FSIZE resource limit is
    # encountered"); the next write fails with EFBIG instead of raising SIGXFSZ, which is ignored here
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
    try:
        store.stage(TargetRef("local", "demo", "p"), SecretText("x" * 1000), _meta("k1"))
    except StoreError as exc:
        print("StoreError:", exc)
        sys.exit(3)
    print("staged")
    """
)


def test_a_short_write_is_never_published_as_the_whole_value(tmp_path: Path) -> None:
    # a real short write(2): RLIMIT_FSIZE lets the kernel write only part of the buffer
    root = tmp_path / "secrets"
    out = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE_CHILD, str(root)],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    values = list(root.rglob("*.value"))
    # before the fix the 64 bytes written were renamed into place as if they were the whole payload
    assert [p for p in values if p.stat().st_size != 1000] == []
    assert out.returncode == 3, out.stdout + out.stderr
    assert "could not write the new version" in out.stdout
    assert list(root.rglob(".tmp-*")) == []  # the partial temp file is removed


def test_writes_loop_until_every_byte_is_written(tmp_path: Path) -> None:
    # a writer that accepts at most 7 bytes per call, as write(2) may (signals, quotas, pipes): every byte
    # still lands in the value file
    from rotator.stores import file as file_store

    written: list[int] = []

    def short_write(fd: int, data: bytes | memoryview) -> int:
        n = os.write(fd, bytes(data[:7]))
        written.append(n)
        return n

    store = file_store.FileStore("local", tmp_path / "secrets", write=short_write)
    ref, payload = _ref(), "payload-" + "y" * 100
    store.stage(ref, SecretText(payload), _meta("k1"))
    assert len(written) > 10
    assert store.read(ref, "k1").reveal() == payload


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe", b"[1, 2]", b""])
def test_corrupt_metadata_is_a_store_error_naming_the_file(store: FileStore, tmp_path: Path, garbage: bytes) -> None:
    ref = _ref()
    _rotate(store, ref, "k1", "k2")
    meta = tmp_path / "secrets" / "demo" / "versions" / "k1.json"
    meta.write_bytes(garbage)
    for call in (lambda: store.inspect(ref), lambda: store.read(ref, "k1"), lambda: store.retire(ref, "k1")):
        with pytest.raises(StoreError) as err:
            call()
        assert str(meta) in str(err.value)
        assert "corrupt" in str(err.value)


def test_retired_values_are_removed_with_the_revoke_by_default(store: FileStore, tmp_path: Path) -> None:
    ref = _ref()
    _rotate(store, ref, "k1", "k2")
    versions = tmp_path / "secrets" / "demo" / "versions"
    store.retire(ref, "k1")
    assert not (versions / "k1.value").exists()  # the plaintext of a retired key is gone
    assert (versions / "k2.value").exists()
    # the bookkeeping stays: the version is still listed, disabled, and still says which key it held
    state = store.inspect(ref)
    assert state.holds("k1")
    assert "k1" not in state.enabled_key_ids()
    assert state.current_key_id == "k2"
    with pytest.raises(StoreNotFound):
        store.read(ref, "k1")
    store.retire(ref, "k1")  # idempotent


def test_retired_values_stay_until_destroy_after_has_passed(tmp_path: Path) -> None:
    clock = Clock(datetime(2030, 1, 1, tzinfo=UTC))
    config = StoreConfig(type="file", path=str(tmp_path / "secrets"), destroy_after="7d")
    store = open_store("local", config, clock=clock)
    ref = _ref()
    _rotate(store, ref, "k1", "k2")
    versions = tmp_path / "secrets" / "demo" / "versions"
    store.retire(ref, "k1")
    assert (versions / "k1.value").exists()  # kept: an operator may still want it back within 7 days
    clock.now += timedelta(days=6)
    _rotate(store, ref, "k3")
    store.retire(ref, "k2")
    assert (versions / "k1.value").exists()
    clock.now += timedelta(days=1)
    store.retire(ref, "k2")  # the next retire after 7 days removes it
    assert not (versions / "k1.value").exists()
    assert (versions / "k2.value").exists()
    assert store.inspect(ref).holds("k1")


def test_destroy_after_must_be_a_duration() -> None:
    with pytest.raises(ValidationError, match="destroy_after"):
        StoreConfig(type="file", destroy_after="soon")


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from rotator.model import SecretText
    from rotator.stores.base import TargetRef
    from rotator.stores.file import StoreConfig, open_store
    from tests.stores.contract import _meta

    def stop_before_rename(event, args):
        # the store has written and fsynced the temp file and is about to rename it into place: tell the
        # parent and wait here to be killed
        if event == "os.rename" and ".tmp-" in str(args[0]):
            os.write(1, b"writing\\n")
            time.sleep(600)

    store = open_store("local", StoreConfig(type="file", path=sys.argv[1]))
    sys.addaudithook(stop_before_rename)
    store.stage(TargetRef("local", "demo", "p"), SecretText(sys.argv[2]), _meta("k9"))
    """
)


def _killed_mid_write(root: Path, plaintext: str) -> Path:
    """A real process writing through the store, SIGKILLed after writing its temp file, before the rename."""
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(root), plaintext], env=SUBPROCESS_ENV, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"writing\n"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    [tmp] = list(root.rglob(".tmp-*"))
    assert tmp.read_text() == plaintext  # what a killed writer leaves behind: a live plaintext key
    return tmp


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_a_killed_writers_stale_temp_file_is_removed_by_the_next_inspect(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    tmp = _killed_mid_write(root, "plaintext-" + uuid.uuid4().hex)
    store = FileStore("local", root, stale_after=timedelta(minutes=5))
    _age(tmp, 60)  # a minute old: a pass may still be writing it
    store.inspect(_ref())
    assert tmp.exists()
    _age(tmp, 301)  # older than pass_timeout: no pass can still be writing it
    state = store.inspect(_ref())
    assert not tmp.exists()
    assert not state.holds("k9")


def test_a_killed_writers_stale_temp_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    tmp = _killed_mid_write(root, "plaintext-" + uuid.uuid4().hex)
    _age(tmp, 3600)
    store = FileStore("local", root, stale_after=timedelta(minutes=5))
    store.stage(_ref(), SecretText("payload-k10-plaintext"), _meta("k10"))
    assert not tmp.exists()
    assert sorted(p.name for p in (root / "demo" / "versions").iterdir()) == ["k10.json", "k10.value"]


def test_open_store_takes_pass_timeout_as_the_age_of_a_stale_temp_file(tmp_path: Path) -> None:
    from rotator.config import from_mapping
    from rotator.runtime.app import open_stores

    config = from_mapping(
        {
            "issuer": {"type": "emulator"},
            "pass_timeout": "2m",
            "defaults": {"orphan_after": "15m"},
            "stores": {"local": {"type": "file", "path": str(tmp_path / "secrets")}},
            "policies": [{"name": "p", "role": "operator", "targets": [{"store": "local", "secret": "demo"}]}],
        }
    )
    store = open_stores(config)["local"]
    assert isinstance(store, FileStore)
    assert store.stale_after == timedelta(minutes=2)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ---- issue 11 item 10: a store root or directory that other users can reach is refused ---------------------

_LOCAL_CONFIG = """\
issuer: {{type: emulator, endpoint: cell-1-us-east-1-1.emulator.local}}
stores:
  local: {{type: file, path: {path}}}
policies:
  - name: demo
    role: operator
    targets: [{{store: local, secret: momento/demo}}]
"""


def _validate(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str], command: str = "validate") -> str:
    from rotator.runtime.cli import main

    cfg = tmp_path / "rotator.yaml"
    cfg.write_text(_LOCAL_CONFIG.format(path=root))
    capsys.readouterr()
    rc = main([command, "-c", str(cfg)])
    out = capsys.readouterr()
    assert rc == 2, out
    return out.err


def _private_tree(root: Path, *parts: str) -> Path:
    root.mkdir(mode=0o700)
    d = root
    for part in parts:
        d = d / part
        d.mkdir(mode=0o700)
    return d


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o770])
def test_validate_refuses_a_root_open_to_the_group_or_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    root = tmp_path / "secrets"
    root.mkdir()
    root.chmod(mode)
    err = _validate(tmp_path, root, capsys)
    assert "stores.local.path" in err
    assert f"mode {mode:04o}" in err and f"chmod 700 {root}" in err


def test_startup_refuses_a_directory_under_the_root_open_to_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "secrets"
    d = _private_tree(root, "momento", "demo")
    (d / "versions").mkdir(mode=0o700)
    (root / "momento").chmod(0o777)
    err = _validate(tmp_path, root, capsys, command="once")  # exit 2 before anything is opened or written
    assert f"chmod 700 {root / 'momento'}" in err
    assert sorted(p.name for p in d.iterdir()) == ["versions"]


def test_validate_refuses_a_root_another_user_owns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        root = tmp_path / "secrets"
        root.mkdir(mode=0o700)
        os.chown(root, 65534, 65534)
        owner = "uid 65534"
    else:
        root, owner = Path("/"), "uid 0"  # a directory of another user, whatever the test runs as
    err = _validate(tmp_path, root, capsys)
    assert "stores.local.path" in err and owner in err and "chown" in err


def test_a_private_root_validates(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    _private_tree(root, "momento", "demo")
    assert StoreConfig(type="file", path=str(root)).path == str(root)
    assert StoreConfig(type="file", path=str(tmp_path / "not-yet")).path  # created 0700 on the first write


def test_a_directory_opened_up_after_startup_is_refused_at_the_next_use(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    store = open_store("local", StoreConfig(type="file", path=str(root)))
    ref = _ref("momento/demo")
    _rotate(store, ref, "k1")  # creates root, momento, momento/demo 0700
    (root / "momento" / "demo").chmod(0o755)
    for op in (lambda: store.inspect(ref), lambda: store.stage(ref, SecretText("payload-k2"), _meta("k2"))):
        with pytest.raises(StorePermissionError, match=r"demo is accessible to its group or to other users"):
            op()
    assert not (root / "momento" / "demo" / "versions" / "k2.value").exists()


_PAUSED_PROMOTE_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from rotator.errors import StorePreconditionFailed
    from rotator.stores.base import TargetRef
    from rotator.stores.file import FileStore

    root, key, expect, pause_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    writes = []

    def write(fd, data):
        writes.append(1)
        if len(writes) == pause_at:  # stop this process here, as a long GC or a frozen VM would
            os.kill(os.getpid(), signal.SIGSTOP)
        return os.write(fd, bytes(data))

    store = FileStore("local", Path(root), write=write)
    try:
        store.promote(TargetRef("local", "demo", "p"), key, expect_current=expect)
        print("promoted")
    except StorePreconditionFailed as exc:
        print("refused:", exc)
    """
)


def _paused_promote(root: Path, key: str, expect: str, pause_at: int) -> subprocess.Popen[str]:
    """A real process promoting ``key`` that stops itself (SIGSTOP) at its ``pause_at``-th file write: 1 is the
    promotion record (before the compare-and-set), 2 the version's metadata (after it, before ``current``)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_PROMOTE_CHILD, str(root), key, expect, str(pause_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid, status = os.waitpid(child.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            assert os.WIFSTOPPED(status), child.communicate()
            return child
        time.sleep(0.02)
    child.kill()
    raise AssertionError(f"the promoting process never reached write {pause_at}: {child.communicate()}")


def _resume(child: subprocess.Popen[str]) -> str:
    child.send_signal(signal.SIGCONT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    return out


def test_a_promote_paused_before_its_commit_holds_up_nobody_and_changes_nothing_on_resuming(
    store: FileStore, tmp_path: Path
) -> None:
    """Found by the chaos stall scenario: a pass paused inside a promote kept the secret's flock, so no other
    pass could promote that secret until it resumed (a key expired in one run). Now nobody waits: another pass
    promotes at once, and the paused one, resumed, finds its compare-and-set lost and changes nothing."""
    ref = _ref()
    _rotate(store, ref, "k1")
    store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    store.stage(ref, SecretText("payload-k3-plaintext"), _meta("k3"))
    child = _paused_promote(tmp_path / "secrets", "k2", "k1", pause_at=1)
    try:
        started = time.monotonic()
        store.promote(ref, "k3", expect_current="k1")
        assert time.monotonic() - started < 1.0  # no lock to wait for
        assert store.inspect(ref).current_key_id == "k3"
    finally:
        out = _resume(child)
    assert out.startswith("refused:") and "another pass promoted" in out, out
    state = store.inspect(ref)
    assert state.current_key_id == "k3"
    assert (tmp_path / "secrets" / "demo" / "current").read_text() == "payload-k3-plaintext"


def test_a_promote_paused_after_its_commit_is_finished_by_the_next_pass(store: FileStore, tmp_path: Path) -> None:
    """Paused between its compare-and-set and the switch of ``current``: consumers still read the old key and
    inspect says so (a revoke's re-read would refuse that key); the next promote of the secret finishes the
    switch, and a promote that expected the old key is refused (the paused pass won the race)."""
    ref = _ref()
    _rotate(store, ref, "k1")
    store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    store.stage(ref, SecretText("payload-k3-plaintext"), _meta("k3"))
    current = tmp_path / "secrets" / "demo" / "current"
    child = _paused_promote(tmp_path / "secrets", "k2", "k1", pause_at=2)
    try:
        assert current.read_text() == "payload-k1-plaintext"
        assert store.inspect(ref).current_key_id == "k1"
        with pytest.raises(StoreError, match="refusing to retire key k2: it is current"):
            store.retire(ref, "k2")
        with pytest.raises(StorePreconditionFailed, match="holds key k2, not k1"):
            store.promote(ref, "k3", expect_current="k1")
        assert current.read_text() == "payload-k2-plaintext"  # that promote switched consumers on to k2 first
        store.promote(ref, "k2", expect_current="k1")  # what the committed promote did: a no-op now
        since = store.inspect(ref).current_since
    finally:
        out = _resume(child)
    assert out.strip() == "promoted"
    state = store.inspect(ref)
    assert state.current_key_id == "k2" and state.current_since == since
    assert current.read_text() == "payload-k2-plaintext"


def test_a_promote_killed_after_its_commit_is_finished_by_the_next_one(store: FileStore, tmp_path: Path) -> None:
    """Found by the chaos kill scenario: a pass killed between its compare-and-set and the version's metadata
    left the current version without ``promoted_at``, so the history of switches (which grace counts from)
    had a hole. The next promote finishes the committed one: metadata, then ``current``."""
    ref = _ref()
    _rotate(store, ref, "k1")
    store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    child = _paused_promote(tmp_path / "secrets", "k2", "k1", pause_at=2)
    child.kill()
    child.wait()
    meta = tmp_path / "secrets" / "demo" / "versions" / "k2.json"
    assert json.loads(meta.read_text())["promoted_at"] is None
    store.promote(ref, "k2", expect_current="k1")
    record = json.loads(max((tmp_path / "secrets" / "demo" / "promotions").glob("*.json")).read_text())
    assert record["key_id"] == "k2"
    assert json.loads(meta.read_text())["promoted_at"] == record["promoted_at"]
    state = store.inspect(ref)
    assert state.current_key_id == "k2"
    assert state.current_since == datetime.fromisoformat(record["promoted_at"])


def test_concurrent_promotes_one_wins(store: FileStore, tmp_path: Path) -> None:
    """Four writers with the same expected current key: exactly one switches, every time."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    ref = _ref()
    _rotate(store, ref, "k0")
    stores = [FileStore("local", tmp_path / "secrets") for _ in range(4)]
    held = "k0"
    for rnd in range(25):
        keys = [f"r{rnd}w{i}" for i in range(4)]
        for k in keys:
            store.stage(ref, SecretText(f"payload-{k}"), _meta(k))
        barrier = Barrier(4)

        def attempt(i: int, expect: str = held, keys: list[str] = keys, barrier: Barrier = barrier) -> bool:
            barrier.wait()
            try:
                stores[i].promote(ref, keys[i], expect_current=expect)
                return True
            except StorePreconditionFailed:
                return False

        with ThreadPoolExecutor(4) as pool:
            won = list(pool.map(attempt, range(4)))
        assert won.count(True) == 1, (rnd, won)
        held = keys[won.index(True)]
        assert store.inspect(ref).current_key_id == held
    # the records of the last promotes are kept, older ones pruned
    assert len(list((tmp_path / "secrets" / "demo" / "promotions").glob("*.json"))) == 8


def test_a_promote_that_resumes_after_its_record_number_was_pruned_changes_nothing(tmp_path: Path) -> None:
    """Paused before its compare-and-set while more promotes ran than records are kept: the number it takes
    is free again (pruned) but below the newest, so it is not a promote; the record goes and nothing changes."""
    root = tmp_path / "secrets"
    other = FileStore("local", root)
    ref = _ref()
    _rotate(other, ref, "k1")
    other.stage(ref, SecretText("payload-late-plaintext"), _meta("late"))
    raced: list[bool] = []

    def stalled_write(fd: int, data: bytes | memoryview) -> int:
        if not raced:
            raced.append(True)
            _rotate(other, ref, *(f"k{i}" for i in range(2, 14)))
        return os.write(fd, bytes(data))

    stalled = FileStore("local", root, write=stalled_write)
    with pytest.raises(StorePreconditionFailed, match="another pass promoted"):
        stalled.promote(ref, "late", expect_current="k1")
    assert raced and other.inspect(ref).current_key_id == "k13"
    numbers = sorted(int(p.stem) for p in (root / "demo" / "promotions").glob("*.json"))
    assert numbers == list(range(numbers[-1] - 7, numbers[-1] + 1))


def test_a_retire_raced_by_a_promote_of_the_same_version_keeps_it(tmp_path: Path) -> None:
    """No lock: a promote of the version being retired (a pass that read an older state) can commit between
    the retire's check and its write; the retire then puts the version back and refuses."""
    root = tmp_path / "secrets"
    other = FileStore("local", root)
    ref = _ref()
    _rotate(other, ref, "k1", "k2")
    raced: list[bool] = []

    def racing_write(fd: int, data: bytes | memoryview) -> int:
        if not raced:
            raced.append(True)
            other.promote(ref, "k1")
        return os.write(fd, bytes(data))

    retiring = FileStore("local", root, write=racing_write)
    with pytest.raises(StoreError, match="refusing to retire key k1: it is current"):
        retiring.retire(ref, "k1")
    assert raced
    state = other.inspect(ref)
    assert state.current_key_id == "k1"
    assert [v.enabled for v in state.versions if v.key_id == "k1"] == [True]
    assert other.read(ref, "k1").reveal() == "payload-k1-plaintext"


def test_a_store_written_before_promotion_records_is_read_and_promoted(store: FileStore, tmp_path: Path) -> None:
    """Upgrade: a secret with ``current`` and metadata but no promotion records (written by an earlier version)."""
    ref = _ref()
    _rotate(store, ref, "k1")
    d = tmp_path / "secrets" / "demo"
    for p in (d / "promotions").iterdir():
        p.unlink()
    (d / "promotions").rmdir()
    state = store.inspect(ref)
    assert state.current_key_id == "k1" and state.current_since is not None
    store.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    with pytest.raises(StorePreconditionFailed):
        store.promote(ref, "k2", expect_current="k0")
    store.promote(ref, "k2", expect_current="k1")
    assert store.inspect(ref).current_key_id == "k2"
    assert [p.name for p in (d / "promotions").iterdir()] == ["000000000001.json"]


def test_a_stage_that_resumes_after_another_pass_promoted_the_key_keeps_its_metadata(tmp_path: Path) -> None:
    """Found by the chaos stall scenario: a pass paused inside stage (value written, metadata not yet) while
    another pass staged and promoted the same key; on resuming, it overwrote the promoted version's metadata
    and the target lost its current_since (promoted_at), which grace counts from."""
    from rotator.stores import file as file_store

    root = tmp_path / "secrets"
    other = file_store.FileStore("local", root)
    ref = _ref()
    _rotate(other, ref, "k1")
    raced: list[bool] = []

    def stalled_write(fd: int, data: bytes | memoryview) -> int:
        if not raced:  # the first write of the stalled pass: the other pass runs the whole publish meanwhile
            raced.append(True)
            other.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
            other.promote(ref, "k2", expect_current="k1")
        return os.write(fd, bytes(data))

    stalled = file_store.FileStore("local", root, write=stalled_write)
    since = other.inspect(ref).current_since
    stalled.stage(ref, SecretText("payload-k2-plaintext"), _meta("k2"))
    assert raced
    state = other.inspect(ref)
    assert state.current_key_id == "k2"
    assert state.current_since is not None and since is not None and state.current_since >= since
