"""The intent journal: what an operation in flight is doing, written before it touches storage.

An operation holds the domain's lock from start to end, so a journal entry found by a command
that has just taken the lock was left by a command that died. The entry says what to do about
it: a ``create`` that had not reached its commit phase is undone (every disk's create is
aborted, the memory image removed); one that had is completed; a ``delete`` or a ``revert`` is
completed by running its idempotent per-disk steps again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from snapcore.errors import InvalidNameError, JournalCorruptError
from snapcore.files import fsync_dir
from snapcore.model import JSON, Checkpoint, DomainState, Operation, SnapshotRequest, check_name
from snapcore.store import atomic_write, quarantine

JOURNAL_SCHEMA: Final = 1
#: The operations a journal entry may record.
OPERATIONS: Final = frozenset({"create", "delete", "revert"})


def _parse_entry(path: str, data: bytes) -> dict[str, Any]:
    """The journal entry in *data*, checked; :class:`JournalCorruptError` saying what is wrong."""
    if not data.strip():
        raise JournalCorruptError(path, "it is empty")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise JournalCorruptError(path, f"it is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise JournalCorruptError(path, f"it holds a JSON {type(obj).__name__}, not an object")
    schema = obj.get("schema")
    if schema != JOURNAL_SCHEMA:
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > JOURNAL_SCHEMA:
            raise JournalCorruptError(
                path, f"its schema version {schema} is newer than this snapcore's"
            )
        raise JournalCorruptError(path, f"its schema is {schema!r}, not {JOURNAL_SCHEMA}")
    operation = obj.get("operation")
    if operation not in OPERATIONS:
        raise JournalCorruptError(path, f"its operation is {str(operation)[:40]!r}")
    name = obj.get("name")
    try:
        check_name(name if isinstance(name, str) else "")
    except InvalidNameError:
        raise JournalCorruptError(path, "its snapshot name is missing or invalid") from None
    return obj


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """What an operation in flight is doing, as the journal records it.

    :ivar operation: create, delete or revert.
    :ivar name: the checkpoint's name.
    :ivar phase: a create's phase: ``disks`` until every disk's snapshot exists, then
        ``commit`` (its record is being written: recovery completes it instead of undoing it).
    :ivar state: a create's domain state when it began (a guest it paused is resumed).
    :ivar requests: a create's per-disk requests (recovery aborts each).
    :ivar memory: a create's memory image, if any (recovery removes it).
    :ivar done: a delete's or a revert's disks (vdevs) done so far.
    :ivar checkpoint: a create's record, once in the ``commit`` phase.
    """

    operation: Operation
    name: str
    phase: str = "disks"
    state: DomainState | None = None
    requests: tuple[SnapshotRequest, ...] = ()
    memory: str | None = None
    done: tuple[str, ...] = ()
    checkpoint: Checkpoint | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "schema": JOURNAL_SCHEMA,
            "operation": self.operation.value,
            "name": self.name,
            "phase": self.phase,
            "state": self.state.value if self.state else None,
            "requests": [r.to_json() for r in self.requests],
            "memory": self.memory,
            "done": list(self.done),
            "checkpoint": self.checkpoint.to_json() if self.checkpoint else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JournalEntry:
        """The entry in *data* (checked by :func:`_parse_entry` for schema, operation, name).

        :raises ValueError, KeyError, TypeError: a field of the wrong shape.
        """
        state = data.get("state")
        checkpoint = data.get("checkpoint")
        requests = data.get("requests") or []
        done = data.get("done") or []
        memory = data.get("memory")
        if not isinstance(requests, list) or not isinstance(done, list):
            raise TypeError("requests and done must be lists")
        if memory is not None and not isinstance(memory, str):
            raise TypeError("memory must be a path")
        return cls(
            operation=Operation(data["operation"]),
            name=str(data["name"]),
            phase=str(data.get("phase") or "disks"),
            state=DomainState(state) if state else None,
            requests=tuple(SnapshotRequest.from_json(r) for r in requests),
            memory=memory,
            done=tuple(str(v) for v in done),
            checkpoint=Checkpoint.from_json(checkpoint) if checkpoint else None,
        )


class Journal:
    """One domain's journal file. Thread-safe: disks running in parallel may call
    :meth:`mark_done`."""

    def __init__(self, path: Path):
        self.path = path
        self._entry: JournalEntry | None = None
        self._mutex = threading.Lock()

    def pending(self) -> JournalEntry | None:
        """The entry left by an interrupted operation, or ``None``.

        :raises JournalCorruptError: when the journal file cannot be read, is empty, is not
            JSON, or is not an entry of this schema (an object with ``schema``, a known
            ``operation``, a valid checkpoint ``name`` and fields of the right shape); the
            message says which and names ``snapcore recover --forget``, which calls
            :meth:`quarantine`.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalCorruptError(str(self.path), exc.strerror or str(exc)) from exc
        obj = _parse_entry(str(self.path), data)
        try:
            entry = JournalEntry.from_json(obj)
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalCorruptError(
                str(self.path), f"its entry is malformed ({type(exc).__name__}: {exc})"
            ) from None
        self._entry = entry
        return entry

    def quarantine(self) -> Path | None:
        """Move the journal file aside to ``journal.json.corrupt-<epoch>`` (never delete it).

        Failure guarantee: the journal is either where it was or at the returned path.

        :returns: where it went, or ``None`` when there is no journal file.
        :raises StoreError: when it cannot be moved.
        """
        with self._mutex:
            self._entry = None
            return quarantine(self.path)

    def begin(self, entry: JournalEntry) -> None:
        """Write *entry* durably, before the operation changes anything."""
        with self._mutex:
            self._entry = entry
            self._write()

    def advance(self, **changes: Any) -> None:
        """Replace fields of the entry (``phase``, ``checkpoint``) durably.

        :raises RuntimeError: no entry was begun (a programming error).
        """
        with self._mutex:
            if self._entry is None:
                raise RuntimeError("journal update without an entry")
            self._entry = dataclasses.replace(self._entry, **changes)
            self._write()

    def mark_done(self, vdev: str) -> None:
        """Record durably that disk *vdev*'s step is done (a delete's or a revert's).

        :raises RuntimeError: no entry was begun (a programming error).
        """
        with self._mutex:
            if self._entry is None:
                raise RuntimeError("journal update without an entry")
            if vdev not in self._entry.done:
                self._entry = dataclasses.replace(self._entry, done=(*self._entry.done, vdev))
            self._write()

    def end(self) -> None:
        """Remove the entry: the operation finished or was fully undone."""
        with self._mutex:
            self._entry = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
                fsync_dir(self.path.parent)

    def _write(self) -> None:
        assert self._entry is not None
        data = json.dumps(self._entry.to_json(), sort_keys=True) + "\n"
        atomic_write(self.path, data.encode())
