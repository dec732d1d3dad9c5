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

from snapcore.errors import StoreCorruptError
from snapcore.files import fsync_dir
from snapcore.model import JSON
from snapcore.store import atomic_write

JOURNAL_SCHEMA: Final = 1


class Journal:
    """One domain's journal file. Thread-safe: disks running in parallel may call :meth:`update`."""

    def __init__(self, path: Path):
        self.path = path
        self._entry: dict[str, Any] | None = None
        self._mutex = threading.Lock()

    def pending(self) -> dict[str, JSON] | None:
        """The entry left by an interrupted operation, or ``None``.

        :raises StoreCorruptError: when the journal file cannot be parsed.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreCorruptError(str(self.path), exc.strerror or str(exc)) from exc
        try:
            obj = json.loads(data)
            if obj.get("schema") != JOURNAL_SCHEMA or "operation" not in obj:
                raise ValueError("unknown journal format")
        except (ValueError, AttributeError) as exc:
            raise StoreCorruptError(str(self.path), str(exc)) from exc
        self._entry = obj
        return dict(obj)

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
