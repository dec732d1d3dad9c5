"""Tests of snapcore.store: checkpoint records on disk, atomic writes and the domain lock."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapcore.errors import (
    InvalidNameError,
    SnapshotNotFoundError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)
from snapcore.model import (
    Checkpoint,
    Disk,
    DiskSnapshot,
    Domain,
    DomainState,
    MemoryImage,
    SnapshotKind,
)
from snapcore.store import SCHEMA_VERSION, CheckpointStore


def make_domain(name: str = "web1") -> Domain:
    return Domain(name=name, disks=(Disk(vdev="vda", path="/srv/web1.qcow2", driver="qcow2"),))


def make_checkpoint(
    domain: Domain, name: str, creation_time: int = 1_700_000_000, **kw: object
) -> Checkpoint:
    disk = DiskSnapshot(
        vdev="vda",
        path="/srv/web1.qcow2",
        driver="qcow2",
        kind=SnapshotKind.INTERNAL,
        name=name,
        locator=name,
        extra={"id": 3},
    )
    return Checkpoint(
        name=name,
        domain_uuid=domain.uuid,
        creation_time=creation_time,
        state=DomainState.SHUTOFF,
        disks=(disk,),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def domain() -> Domain:
    return make_domain()


@pytest.fixture
def store(tmp_path: Path, domain: Domain) -> CheckpointStore:
    return CheckpointStore(tmp_path / "state", domain)


def temp_files(root: Path) -> list[Path]:
    """Files left behind by an atomic write (hidden ``.NAME.tmp-PID`` files)."""
    return [p for p in root.rglob("*") if ".tmp" in p.name]


# -- records ---------------------------------------------------------------------------------


def test_save_then_get_returns_the_same_checkpoint(store: CheckpointStore, domain: Domain) -> None:
    cp = make_checkpoint(
        domain,
        "before-upgrade",
        description="after OS install",
        parent="base",
        memory=MemoryImage(path="/var/lib/snapcore/m.img", size=4096, format="qemu-migration"),
    )
    store.save(cp)

    assert store.exists("before-upgrade")
    assert store.get("before-upgrade") == cp
    # a fresh store object (a later command) reads the same record
    assert CheckpointStore(store.state_dir, domain).get("before-upgrade") == cp
    assert store.list() == [cp]


def test_save_replaces_an_existing_record(store: CheckpointStore, domain: Domain) -> None:
    store.save(make_checkpoint(domain, "a", description="old"))
    store.save(make_checkpoint(domain, "a", description="new"))

    assert store.get("a").description == "new"
    assert [c.name for c in store.list()] == ["a"]


def test_list_is_sorted_by_creation_time_then_name(store: CheckpointStore, domain: Domain) -> None:
    for name, t in [("zeta", 100), ("beta", 300), ("alpha", 200), ("gamma", 100), ("b", 300)]:
        store.save(make_checkpoint(domain, name, creation_time=t))

    assert [c.name for c in store.list()] == ["gamma", "zeta", "alpha", "b", "beta"]


def test_list_of_a_domain_without_records_is_empty(store: CheckpointStore) -> None:
    assert store.list() == []
    assert not store.exists("a")


def test_get_of_a_missing_name_names_domain_and_name(store: CheckpointStore) -> None:
    with pytest.raises(SnapshotNotFoundError) as info:
        store.get("nope")

    assert info.value.domain == "web1"
    assert info.value.name == "nope"
    assert "web1" in str(info.value)
    assert "nope" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_records_of_two_domains_are_kept_apart(tmp_path: Path) -> None:
    web1, web2 = make_domain("web1"), make_domain("web2")
    s1 = CheckpointStore(tmp_path, web1)
    s2 = CheckpointStore(tmp_path, web2)
    s1.save(make_checkpoint(web1, "a"))

    assert [c.name for c in s1.list()] == ["a"]
    assert s2.list() == []
    with pytest.raises(SnapshotNotFoundError):
        s2.get("a")


def write_record(store: CheckpointStore, name: str, content: bytes) -> Path:
    store.ensure()
    path = store.root / "checkpoints" / f"{name}.json"
    path.write_bytes(content)
    return path


def test_record_with_a_newer_schema_is_refused_naming_the_path(
    store: CheckpointStore, domain: Domain
) -> None:
    record = {"schema": SCHEMA_VERSION + 1, "checkpoint": make_checkpoint(domain, "a").to_json()}
    path = write_record(store, "a", json.dumps(record).encode())

    with pytest.raises(StoreCorruptError) as info:
        store.get("a")
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert "schema" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b"[1, 2]", id="a-list"),
        pytest.param(b'{"schema": 1}', id="no-checkpoint"),
        pytest.param(b'{"schema": 1, "checkpoint": {"name": "a"}}', id="missing-fields"),
        pytest.param(b'{"schema": "1", "checkpoint": {}}', id="schema-not-int"),
    ],
)
def test_unreadable_record_is_refused_naming_the_path(
    store: CheckpointStore, content: bytes
) -> None:
    path = write_record(store, "a", content)

    with pytest.raises(StoreCorruptError) as info:
        store.get("a")
    assert info.value.path == str(path)
    assert str(path) in str(info.value)

    # list() reports it too instead of silently skipping it
    with pytest.raises(StoreCorruptError) as info:
        store.list()
    assert str(path) in str(info.value)


def test_record_of_another_domain_is_refused(tmp_path: Path) -> None:
    web1, web2 = make_domain("web1"), make_domain("web2")
    s1, s2 = CheckpointStore(tmp_path, web1), CheckpointStore(tmp_path, web2)
    s1.save(make_checkpoint(web1, "a"))
    s2.ensure()
    # a record copied by hand into the wrong domain's directory
    foreign = s2.root / "checkpoints" / "a.json"
    foreign.write_bytes((s1.root / "checkpoints" / "a.json").read_bytes())

    with pytest.raises(StoreCorruptError) as info:
        s2.get("a")
    assert str(foreign) in str(info.value)
    with pytest.raises(StoreCorruptError):
        s2.list()


def test_record_whose_name_differs_from_its_file_is_refused(
    store: CheckpointStore, domain: Domain
) -> None:
    record = {"schema": SCHEMA_VERSION, "checkpoint": make_checkpoint(domain, "b").to_json()}
    write_record(store, "a", json.dumps(record).encode())

    with pytest.raises(StoreCorruptError):
        store.get("a")


def test_save_refuses_a_checkpoint_of_another_domain(tmp_path: Path) -> None:
    web1, web2 = make_domain("web1"), make_domain("web2")
    store = CheckpointStore(tmp_path, web1)
    store.save(make_checkpoint(web1, "good"))

    with pytest.raises((StoreError, ValueError)):
        store.save(make_checkpoint(web2, "foreign"))
    assert [c.name for c in store.list()] == ["good"]


@pytest.mark.parametrize("name", ["../x", "a/b", "", "..", ".x", "/etc/passwd"])
def test_invalid_names_never_reach_the_file_system(
    store: CheckpointStore, domain: Domain, name: str
) -> None:
    # a valid record sits one level up, where "../x" would lead
    store.ensure()
    record = {"schema": SCHEMA_VERSION, "checkpoint": make_checkpoint(domain, "x").to_json()}
    (store.root / "x.json").write_text(json.dumps(record))

    with pytest.raises(InvalidNameError):
        store.get(name)
    with pytest.raises(InvalidNameError):
        store.exists(name)
    with pytest.raises(InvalidNameError):
        store.remove(name)
    assert (store.root / "x.json").exists()


def test_remove_is_idempotent(store: CheckpointStore, domain: Domain) -> None:
    store.save(make_checkpoint(domain, "a"))
    store.save(make_checkpoint(domain, "b"))

    store.remove("a")
    store.remove("a")
    store.remove("never-existed")

    assert not store.exists("a")
    with pytest.raises(SnapshotNotFoundError):
        store.get("a")
    assert [c.name for c in store.list()] == ["b"]


# -- current -----------------------------------------------------------------------------------


def test_current_is_none_until_set_and_persists(store: CheckpointStore, domain: Domain) -> None:
    assert store.current() is None

    store.set_current("a")
    assert store.current() == "a"
    assert CheckpointStore(store.state_dir, domain).current() == "a"

    store.set_current("b")
    assert store.current() == "b"

    store.set_current(None)
    assert store.current() is None
    assert CheckpointStore(store.state_dir, domain).current() is None


def test_garbage_current_file_is_refused_naming_the_path(store: CheckpointStore) -> None:
    store.ensure()
    path = store.root / "current.json"
    path.write_text("{oops")

    with pytest.raises(StoreCorruptError) as info:
        store.current()
    assert str(path) in str(info.value)


# -- atomic writes -----------------------------------------------------------------------------


def test_writes_leave_no_temporary_files(store: CheckpointStore, domain: Domain) -> None:
    for i in range(5):
        store.save(make_checkpoint(domain, f"cp{i}"))
        store.set_current(f"cp{i}")
    store.remove("cp0")

    assert temp_files(store.state_dir) == []
    assert sorted(p.name for p in (store.root / "checkpoints").iterdir()) == [
        "cp1.json",
        "cp2.json",
        "cp3.json",
        "cp4.json",
    ]


def test_failed_write_keeps_the_old_record_and_leaves_no_temp_file(
    store: CheckpointStore, domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_checkpoint(domain, "a", description="old")
    store.save(old)
    store.set_current("a")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)

    with pytest.raises(StoreError) as info:
        store.save(make_checkpoint(domain, "a", description="new"))
    assert "a.json" in str(info.value)
    assert "No space left on device" in str(info.value)
    with pytest.raises(StoreError):
        store.set_current("b")

    monkeypatch.undo()
    assert store.get("a") == old
    assert store.current() == "a"
    assert temp_files(store.state_dir) == []


def test_temp_file_left_by_a_crashed_write_is_ignored(
    store: CheckpointStore, domain: Domain
) -> None:
    store.save(make_checkpoint(domain, "a"))
    # what a writer killed between write and rename leaves behind: a torn hidden temp file
    (store.root / "checkpoints" / ".b.json.tmp-4242").write_bytes(b'{"schema": 1, "chec')

    assert [c.name for c in store.list()] == ["a"]
    assert not store.exists("b")


def _leave_temp_files(store: CheckpointStore) -> tuple[list[Path], list[Path]]:
    """Plant what writes killed between write and rename leave (ours) and look-alikes (not
    ours); return both lists."""
    store.save(make_checkpoint(store.domain, "a"))
    root, records = store.root, store.root / "checkpoints"
    ours = [
        root / ".journal.json.k2j_9x0a.tmp",
        root / ".current.json.abcdefgh.tmp",
        root / ".domain.json.01234567.tmp",
        records / ".a.json.zz9_yy8x.tmp",
        records / ".before-upgrade.json.q1w2e3r4.tmp",
    ]
    not_ours = [
        root / "notes.tmp",
        root / ".journal.json.tmp",  # no random part
        root / ".journal.json.ABCDEFGH.tmp",  # mkstemp never uses capitals
        root / ".other.json.abcdefgh.tmp",  # not a file of the store
        records / ".b.json.tmp-4242",
        records / "..json.abcdefgh.tmp",  # not a valid checkpoint name
        records / ".a.txt.abcdefgh.tmp",
        store.memory_dir / ".a.img.abcdefgh.tmp",
        store.work_dir / ".current.json.abcdefgh.tmp",
    ]
    for path in ours + not_ours:
        path.write_bytes(b'{"schema": 1, "chec')
    link = records / ".c.json.abcdefgh.tmp"  # the pattern, but a symlink: left alone
    link.symlink_to(root / "notes.tmp")
    directory = root / ".current.json.aaaaaaaa.tmp"  # the pattern, but a directory
    directory.mkdir()
    return ours, [*not_ours, link, directory]


def test_taking_the_lock_removes_temp_files_of_killed_writes_and_nothing_else(
    store: CheckpointStore,
) -> None:
    ours, not_ours = _leave_temp_files(store)

    assert store.leftover_temp_files() == sorted(ours)
    with store.lock(timeout=1):
        assert [p for p in ours if os.path.lexists(p)] == []
    assert [p for p in not_ours if not os.path.lexists(p)] == []
    assert store.leftover_temp_files() == []
    assert [c.name for c in store.list()] == ["a"]


def test_temp_files_are_kept_by_readers_without_the_lock(store: CheckpointStore) -> None:
    ours, _ = _leave_temp_files(store)

    store.list()
    store.current()
    store.exists("a")
    assert [p for p in ours if not p.exists()] == []


def test_unusable_state_dir_is_a_store_error(tmp_path: Path, domain: Domain) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = CheckpointStore(blocker / "state", domain)

    with pytest.raises(StoreError, match="not-a-dir"):
        store.save(make_checkpoint(domain, "a"))
    with pytest.raises(StoreError, match="not-a-dir"), store.lock(timeout=0.1):
        pytest.fail("locked a domain in an unusable state dir")


# -- the lock ----------------------------------------------------------------------------------

# Runs in another process: takes the domain's lock, says so, then holds it for argv[3] seconds.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from snapcore.model import Disk, Domain
    from snapcore.store import CheckpointStore

    domain = Domain(name=sys.argv[2], disks=(Disk(vdev="vda", path="/srv/web1.qcow2"),))
    store = CheckpointStore(sys.argv[1], domain)
    with store.lock(timeout=5):
        print("locked", flush=True)
        time.sleep(float(sys.argv[3]))
    """
)


@contextlib.contextmanager
def holder(store: CheckpointStore, hold: float) -> Iterator[subprocess.Popen[str]]:
    """Run HOLDER; return once it holds the lock; kill it on the way out."""
    argv = [sys.executable, "-c", HOLDER, str(store.state_dir), store.domain.name, str(hold)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            proc.kill()
            proc.wait()


def test_a_second_process_cannot_take_a_held_lock(store: CheckpointStore) -> None:
    with holder(store, hold=30):
        start = time.monotonic()
        with pytest.raises(StoreLockedError) as info, store.lock(timeout=0.3):
            pytest.fail("took a lock another process holds")
        assert time.monotonic() - start >= 0.3
    assert info.value.domain == "web1"
    assert "web1" in str(info.value)


def test_a_waiting_process_gets_the_lock_once_released(store: CheckpointStore) -> None:
    with holder(store, hold=0.4) as proc:
        start = time.monotonic()
        with store.lock(timeout=10):
            waited = time.monotonic() - start
        assert proc.wait(timeout=10) == 0
    assert 0.2 <= waited < 5


def test_a_killed_holder_never_leaves_the_domain_locked(store: CheckpointStore) -> None:
    with holder(store, hold=30) as proc:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL

        with store.lock(timeout=2):
            pass


def test_lock_can_be_taken_again_after_release(store: CheckpointStore) -> None:
    with store.lock(timeout=1):
        pass
    with store.lock(timeout=1):
        pass


# Runs in another process: 50 read-modify-write steps under the lock. Each step reads the
# current checkpoint "c-N" and saves "c-(N+1)" as its child, so two processes racing without
# mutual exclusion would both write the same N+1 and leave fewer than 100 records.
WRITER = textwrap.dedent(
    """
    import sys, time
    from snapcore.model import Checkpoint, Disk, Domain, DomainState
    from snapcore.store import CheckpointStore

    domain = Domain(name=sys.argv[2], disks=(Disk(vdev="vda", path="/srv/web1.qcow2"),))
    store = CheckpointStore(sys.argv[1], domain)
    for _ in range(50):
        with store.lock(timeout=30):
            cur = store.current()
            n = int(cur.split("-")[1]) if cur else 0
            time.sleep(0.001)  # widen the window a missing lock would expose
            store.save(Checkpoint(
                name=f"c-{n + 1}", domain_uuid=domain.uuid, creation_time=n + 1,
                state=DomainState.SHUTOFF, disks=(), parent=cur, description=sys.argv[3],
            ))
            store.set_current(f"c-{n + 1}")
    """
)


def test_two_processes_writing_under_the_lock_lose_nothing(store: CheckpointStore) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store.state_dir), store.domain.name, tag],
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    records = store.list()  # every record parses
    assert [c.name for c in records] == [f"c-{i}" for i in range(1, 101)]
    assert [c.parent for c in records] == [None] + [f"c-{i}" for i in range(1, 100)]
    assert {c.description for c in records} == {"p1", "p2"}
    assert store.current() == "c-100"
    assert temp_files(store.state_dir) == []


def test_list_under_the_lock_sees_every_write_made_through_the_store(
    store: CheckpointStore, domain: Domain
) -> None:
    with store.lock(timeout=1):
        assert store.list() == []
        store.save(make_checkpoint(domain, "a"))
        assert [c.name for c in store.list()] == ["a"]
        store.save(make_checkpoint(domain, "a", description="changed"))
        assert [c.description for c in store.list()] == ["changed"]
        store.remove("a")
        assert store.list() == []
        store.save(make_checkpoint(domain, "b"))
    (store.root / "checkpoints" / "c.json").write_bytes(
        (store.root / "checkpoints" / "b.json").read_bytes().replace(b'"b"', b'"c"')
    )
    with store.lock(timeout=1):  # a new lock reads again
        assert [c.name for c in store.list()] == ["b", "c"]


def test_a_new_domain_left_empty_is_removed_and_a_waiter_still_locks_it_alone(
    store: CheckpointStore,
) -> None:
    with holder(store, hold=0.3) as proc:  # made the domain's directory, removes it on release
        with store.lock(timeout=10):
            assert (store.root / "lock").exists()
            with (
                pytest.raises(StoreLockedError),
                CheckpointStore(store.state_dir, store.domain).lock(timeout=0.05),
            ):
                pytest.fail("two holders of one domain's lock")
        assert proc.wait(timeout=10) == 0
    assert not store.state_dir.exists()  # nothing was written: nothing is left


def test_a_domain_with_records_keeps_its_directory(store: CheckpointStore, domain: Domain) -> None:
    with store.lock(timeout=1):
        store.save(make_checkpoint(domain, "a"))
    with store.lock(timeout=1):
        pass
    assert sorted(p.name for p in store.root.iterdir()) == [
        "checkpoints",
        "domain.json",
        "lock",
        "memory",
        "work",
    ]
