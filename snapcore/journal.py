"""The intent journal: what an operation in flight is doing, written before it touches storage.

An operation holds the domain's lock from start to end, so a journal entry found by a command
that has just taken the lock was left by a command that died. The entry says what to do about
it: a ``create`` that had not reached its commit phase is undone (every disk's create is
aborted, the memory image removed); one that had is completed; a ``delete`` or a ``revert`` is
completed by running its idempotent per-disk steps again.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any, Final

from snapcore.errors import InvalidNameError, JournalCorruptError
from snapcore.files import fsync_dir
from snapcore.model import JSON, check_name
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


class Journal:
    """One domain's journal file. Thread-safe: disks running in parallel may call :meth:`update`."""

    def __init__(self, path: Path):
        self.path = path
        self._entry: dict[str, Any] | None = None
        self._mutex = threading.Lock()

    def pending(self) -> dict[str, JSON] | None:
        """The entry left by an interrupted operation, or ``None``.

        :raises JournalCorruptError: when the journal file cannot be read, is empty, is not
            JSON, or is not an entry of this schema (an object with ``schema``, a known
            ``operation`` and a valid checkpoint ``name``); the message says which and names
            ``snapcore recover --forget``, which calls :meth:`quarantine`.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalCorruptError(str(self.path), exc.strerror or str(exc)) from exc
        obj = _parse_entry(str(self.path), data)
        self._entry = obj
        return dict(obj)

    def quarantine(self) -> Path | None:
        """Move the journal file aside to ``journal.json.corrupt-<epoch>`` (never delete it).

        Failure guarantee: the journal is either where it was or at the returned path.

        :returns: where it went, or ``None`` when there is no journal file.
        :raises StoreError: when it cannot be moved.
        """
        with self._mutex:
            self._entry = None
            return quarantine(self.path)

    def begin(self, operation: str, name: str, **fields: JSON) -> None:
        """Write a new entry for *operation* on checkpoint *name*, before any change is made."""
        entry: dict[str, Any] = {"schema": JOURNAL_SCHEMA, "operation": operation, "name": name}
        entry.update(fields)
        with self._mutex:
            self._entry = entry
            self._write()

    def update(self, **fields: JSON) -> None:
        """Record progress (merged into the entry) durably."""
        with self._mutex:
            if self._entry is None:
                raise RuntimeError("journal update without an entry")
            self._entry.update(fields)
            self._write()

    def mark_done(self, key: str, item: str) -> None:
        """Append *item* to the list ``entry[key]`` durably (for per-disk progress)."""
        with self._mutex:
            if self._entry is None:
                raise RuntimeError("journal update without an entry")
            done = list(self._entry.get(key) or [])
            if item not in done:
                done.append(item)
            self._entry[key] = done
            self._write()

    def end(self) -> None:
        """Remove the entry: the operation finished or was fully undone."""
        with self._mutex:
            self._entry = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
                fsync_dir(self.path.parent)

    def _write(self) -> None:
        atomic_write(self.path, (json.dumps(self._entry, sort_keys=True) + "\n").encode())
