"""Tests of snapcore.journal: the intent journal that crash recovery reads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from snapcore.errors import StoreCorruptError
from snapcore.journal import JOURNAL_SCHEMA, Journal, JournalEntry
from snapcore.model import Checkpoint, Disk, Domain, DomainState, Operation, SnapshotRequest


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.json"


def test_no_journal_file_means_nothing_pending(path: Path) -> None:
    assert Journal(path).pending() is None


def _request(vdev: str) -> SnapshotRequest:
    return SnapshotRequest(
        disk=Disk(vdev=vdev, path=f"/img/{vdev}.qcow2", driver="qcow2"), name="a"
    )


def test_an_entry_survives_a_crash(path: Path) -> None:
    journal = Journal(path)
    requests = (_request("vda"), _request("vdb"))
    journal.begin(
        JournalEntry(
            operation=Operation.CREATE,
            name="before-upgrade",
            state=DomainState.RUNNING,
            requests=requests,
            memory="/m.img",
        )
    )
    del journal  # the command dies here

    entry = Journal(path).pending()  # the next command, a fresh object
    assert entry == JournalEntry(
        operation=Operation.CREATE,
        name="before-upgrade",
        phase="disks",
        state=DomainState.RUNNING,
        requests=requests,
        memory="/m.img",
    )
    assert json.loads(path.read_bytes())["schema"] == JOURNAL_SCHEMA


def test_the_commit_phase_carries_the_record(path: Path) -> None:
    journal = Journal(path)
    journal.begin(JournalEntry(operation=Operation.CREATE, name="a", requests=(_request("vda"),)))
    checkpoint = Checkpoint(
        name="a",
        domain_uuid=Domain(name="d", disks=(Disk(vdev="vda", path="/x"),)).uuid,
        creation_time=1,
        state=DomainState.SHUTOFF,
        disks=(),
    )
    journal.advance(phase="commit", checkpoint=checkpoint)

    entry = Journal(path).pending()
    assert entry is not None
    assert (entry.phase, entry.checkpoint) == ("commit", checkpoint)


def test_recovery_can_continue_an_entry_it_found(path: Path) -> None:
    first = Journal(path)
    first.begin(JournalEntry(operation=Operation.DELETE, name="a"))
    first.mark_done("vda")

    recovery = Journal(path)
    assert recovery.pending() is not None
    recovery.mark_done("vdb")

    entry = Journal(path).pending()
    assert entry is not None
    assert entry.done == ("vda", "vdb")
    recovery.end()
    assert Journal(path).pending() is None


def test_a_journal_written_by_snapcore_0_1_is_read(path: Path) -> None:
    # the field names of the untyped entries of 0.1: the same JSON, read into the typed entry
    path.write_text('{"schema": 1, "operation": "revert", "name": "a", "done": ["vda"]}\n')
    entry = Journal(path).pending()
    assert entry == JournalEntry(operation=Operation.REVERT, name="a", done=("vda",))


def test_nothing_is_pending_after_end(path: Path) -> None:
    journal = Journal(path)
    journal.begin(JournalEntry(operation=Operation.REVERT, name="a"))
    journal.end()

    assert journal.pending() is None
    assert Journal(path).pending() is None
    assert not path.exists()
    journal.end()  # ending twice is harmless


def test_begin_replaces_a_previous_entry(path: Path) -> None:
    journal = Journal(path)
    journal.begin(JournalEntry(operation=Operation.REVERT, name="a"))
    journal.mark_done("vda")
    journal.begin(JournalEntry(operation=Operation.DELETE, name="b"))

    entry = Journal(path).pending()
    assert entry == JournalEntry(operation=Operation.DELETE, name="b")


def test_update_without_an_entry_is_a_programming_error(path: Path) -> None:
    journal = Journal(path)
    with pytest.raises(RuntimeError):
        journal.advance(phase="commit")
    with pytest.raises(RuntimeError):
        journal.mark_done("vda")
    assert not path.exists()


def test_mark_done_records_an_item_once(path: Path) -> None:
    journal = Journal(path)
    journal.begin(JournalEntry(operation=Operation.DELETE, name="a"))
    journal.mark_done("vda")
    journal.mark_done("vda")
    journal.mark_done("vdb")

    entry = Journal(path).pending()
    assert entry is not None
    assert entry.done == ("vda", "vdb")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{torn", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[1]", id="a-list"),
        pytest.param(b'"create"', id="a-string"),
        pytest.param(b'{"schema": 1, "name": "a"}', id="no-operation"),
        pytest.param(b'{"schema": 99, "operation": "create", "name": "a"}', id="newer-schema"),
        pytest.param(
            b'{"schema": 1, "operation": "create", "name": "a", "requests": [{"x": 1}]}',
            id="malformed-request",
        ),
        pytest.param(
            b'{"schema": 1, "operation": "create", "name": "a", "state": "sleeping"}',
            id="unknown-state",
        ),
        pytest.param(
            b'{"schema": 1, "operation": "delete", "name": "a", "done": 7}', id="bad-done"
        ),
    ],
)
def test_unreadable_journal_is_refused_naming_the_path(path: Path, content: bytes) -> None:
    path.write_bytes(content)

    with pytest.raises(StoreCorruptError) as info:
        Journal(path).pending()
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_mark_done_from_eight_threads_records_every_item_once(path: Path) -> None:
    journal = Journal(path)
    journal.begin(JournalEntry(operation=Operation.DELETE, name="a"))
    threads_n, per_thread = 8, 6
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                journal.mark_done(f"t{t}-d{i}")
                journal.mark_done(f"t{t}-d{i}")  # a retry
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)

    assert errors == []
    entry = Journal(path).pending()
    assert entry is not None
    done = entry.done
    assert sorted(done) == sorted(f"t{t}-d{i}" for t in range(threads_n) for i in range(per_thread))
    assert len(done) == len(set(done))
    assert [p.name for p in path.parent.iterdir()] == ["journal.json"]  # no temp files


def test_quarantine_moves_the_journal_aside_and_keeps_every_byte(path: Path) -> None:
    path.write_bytes(b'{"schema": 1, "operation": "cre')
    journal = Journal(path)
    with pytest.raises(StoreCorruptError, match="recover --forget"):
        journal.pending()

    moved = journal.quarantine()
    again = Journal(path)
    path.write_bytes(b"")
    moved_again = again.quarantine()

    assert moved is not None
    assert moved_again is not None
    assert moved.name.startswith("journal.json.corrupt-")
    assert moved_again != moved
    assert moved.read_bytes() == b'{"schema": 1, "operation": "cre'
    assert moved_again.read_bytes() == b""
    assert not path.exists()
    assert Journal(path).pending() is None
    assert Journal(path).quarantine() is None
