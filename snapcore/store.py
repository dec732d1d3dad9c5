"""Checkpoint records on disk: one JSON file per checkpoint, per domain, with a lock.

Layout under the state dir (``$SNAPCORE_STATE_DIR``, default ``/var/lib/snapcore``)::

    domains/<uuid>/
        domain.json             the domain's name and file, for people and for ``recover``
        checkpoints/<name>.json one record per checkpoint: {"schema": 1, "checkpoint": {...}}
        current.json            {"schema": 1, "current": NAME or null}
        journal.json            the intent of an operation in flight (see journal.py)
        memory/<name>.img       memory images kept in the state dir
        work/                   files private to plugins
        lock                    flock(2) lock serialising commands on the domain

Every write goes to a temporary file in the same directory, is fsynced, renamed over the target
and the directory fsynced, so a crash leaves either the old or the new record, never a torn one.
A crash between the write and the rename leaves the temporary file (``.journal.json.*.tmp``,
``.current.json.*.tmp``, ``checkpoints/.NAME.json.*.tmp``...): the next command that takes the
domain's lock removes every file of that pattern, and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from snapcore.errors import (
    InvalidNameError,
    SnapshotNotFoundError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)
from snapcore.files import fsync_dir
from snapcore.model import Checkpoint, Domain, check_name

log = logging.getLogger(__name__)

_Paths = list[Path]
_Moved = list[tuple[Path, Path]]
_Unreadable = list[StoreCorruptError]

#: Version of the record format; records with a higher version are refused.
SCHEMA_VERSION: Final = 1
DEFAULT_STATE_DIR: Final = "/var/lib/snapcore"

#: The files of the domain's directory that :func:`atomic_write` replaces.
_ROOT_FILES: Final = frozenset({"journal.json", "current.json", "domain.json"})
#: A temporary file of :func:`atomic_write`: ``.`` + the target's name + ``.`` + the 8 random
#: characters of :func:`tempfile.mkstemp` + ``.tmp``.
_TEMP_NAME: Final = re.compile(r"\.(?P<target>[^/]+)\.[a-z0-9_]{8}\.tmp\Z")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace *path* with *data* atomically and durably.

    Failure guarantee: *path* holds either its old content or *data*; no temporary file is left.

    :raises StoreError: when the file cannot be written.
    """
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc


def quarantine(path: Path) -> Path | None:
    """Move *path* aside to ``<name>.corrupt-<epoch>`` in its directory (``.1``, ``.2``... if
    taken), durably; never delete it. Only with the domain's lock held.

    Failure guarantee: the file is either where it was or at the returned path.

    :returns: the new path, or ``None`` when *path* does not exist.
    :raises StoreError: when it cannot be moved.
    """
    base = f"{path.name}.corrupt-{int(time.time())}"
    target, n = path.with_name(base), 0
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{base}.{n}")
    try:
        os.rename(path, target)
        fsync_dir(path.parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot move {path} aside: {exc.strerror or exc}") from exc
    return target


def lock_holder(fd: int) -> str | None:
    """Who holds the ``flock`` on the file open at *fd*: ``"pid N: its command line"``, from
    ``/proc/locks``; ``None`` when the system does not say (another pid namespace, no /proc)."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or "->" in fields or fields[1] != "FLOCK" or fields[5] != key:
            continue
        pid = fields[4]
        if not pid.isdigit() or pid == str(os.getpid()):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read(4096).rstrip(b"\0").split(b"\0")
        except OSError:
            return f"pid {pid}"
        words = " ".join(a.decode(errors="replace") for a in argv).split()
        command = "".join(c if c.isprintable() else "?" for c in " ".join(words))
        if len(command) > 200:  # keep its start (the program) and its end (what and where)
            command = f"{command[:80]} ... {command[-110:]}"
        return f"pid {pid}: {command}" if command else f"pid {pid}"
    return None


def _is_record_name(name: str) -> bool:
    """Whether *name* is the file name of a checkpoint record (``NAME.json``, NAME valid)."""
    base, dot, ext = name.rpartition(".")
    if not dot or ext != "json":
        return False
    try:
        check_name(base)
    except InvalidNameError:
        return False
    return True


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


class CheckpointStore:
    """The records of one domain's checkpoints.

    Reads need no lock; every change must happen inside :meth:`lock`.
    """

    def __init__(self, state_dir: str | os.PathLike[str], domain: Domain):
        self.state_dir = Path(state_dir)
        self.domain = domain
        self.root = self.state_dir / "domains" / domain.uuid
        self._records = self.root / "checkpoints"
        #: While this object holds the lock, no one else writes records: what :meth:`list`
        #: read is kept until this object writes one (one read per command, not one per call).
        self._held = False
        self._listed: tuple[Checkpoint, ...] | None = None

    # -- locations ----------------------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self.root / "journal.json"

    @property
    def memory_dir(self) -> Path:
        return self.root / "memory"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    def ensure(self) -> None:
        """Create the domain's directories and its ``domain.json``.

        :raises StoreError: when the state dir is not writable.
        """
        try:
            for d in (self._records, self.memory_dir, self.work_dir):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create state directory {self.root}: {exc.strerror or exc}"
            ) from exc
        info = self.root / "domain.json"
        wanted = {
            "schema": SCHEMA_VERSION,
            "name": self.domain.name,
            "uuid": self.domain.uuid,
            "source": self.domain.source,
        }
        try:
            current = json.loads(info.read_bytes())
        except (OSError, ValueError):
            current = None
        if current != wanted:
            atomic_write(info, _dump(wanted))

    # -- leftovers ----------------------------------------------------------------------------

    def leftover_temp_files(self) -> list[Path]:
        """The temporary files that writes killed between write and rename left behind.

        Only regular files whose name is the temporary name :func:`atomic_write` gives to one of
        the store's own files (``journal.json``, ``current.json``, ``domain.json``, or a
        checkpoint record) are listed; anything else is not snapcore's to judge.
        """
        found: list[Path] = []
        for directory, is_target in (
            (self.root, lambda t: t in _ROOT_FILES),
            (self._records, _is_record_name),
        ):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                match = _TEMP_NAME.match(entry.name)
                if match is None or not is_target(match["target"]):
                    continue
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                        found.append(Path(entry.path))
        return sorted(found)

    def _remove_leftovers(self) -> None:
        """Remove :meth:`leftover_temp_files`; only with the lock held (no write is running).

        Failure guarantee: a file that cannot be removed is left and logged, never raised.
        """
        for path in self.leftover_temp_files():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove leftover temporary file %s: %s", path, exc.strerror)
                continue
            log.info("removed leftover temporary file %s", path)
            with contextlib.suppress(OSError):
                fsync_dir(path.parent)

    # -- lock ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout: float = 60.0) -> Iterator[None]:
        """Hold the domain's exclusive lock, waiting up to *timeout* seconds for it.

        The lock is an ``flock`` on ``lock``: the kernel drops it when the process dies, so a
        crash never leaves the domain locked. Once it is held, the domain's directories are
        made and the temporary files left by a killed write are removed. A domain directory
        this call made is removed again on the way out when nothing but its empty skeleton is
        left, so a refused command (or a read) on a new domain leaves nothing in the state dir.

        :raises StoreLockedError: when another command still holds it after *timeout*.
        :raises StoreError: when the state dir cannot be used.
        """
        created: list[Path] = []
        fd = self._acquire(timeout, created)
        try:
            self.ensure()
            self._remove_leftovers()
            self._held, self._listed = True, None
            yield
        finally:
            self._held, self._listed = False, None
            try:
                if self.root in created:
                    self._prune(created)
            finally:
                os.close(fd)  # closing drops the flock

    def _make_root(self, created: list[Path]) -> None:
        """Make the domain's directory, adding to *created* each directory that was missing."""
        missing = []
        d = self.root
        while not os.path.isdir(d) and d != d.parent:
            missing.append(d)
            d = d.parent
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create state directory {self.root}: {exc.strerror or exc}"
            ) from exc
        created.extend(d for d in missing if d not in created)

    def _acquire(self, timeout: float, created: list[Path]) -> int:
        """Open and flock the lock file; return its descriptor.

        A holder may remove the lock file of a domain it made (see :meth:`_prune`) while this
        process waits on it: the lock is only taken once the locked file is still ``lock``.
        """
        path = self.root / "lock"
        deadline = time.monotonic() + timeout
        while True:
            self._make_root(created)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                if time.monotonic() >= deadline:
                    raise StoreError(f"cannot open lock file {path}: it keeps vanishing") from None
                continue  # its directory was removed between mkdir and open: make it again
            except OSError as exc:
                raise StoreError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc
            try:
                self._wait_for_flock(fd, path, deadline, timeout)
                st = os.fstat(fd)
                try:
                    now = os.stat(path)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return fd
            os.close(fd)  # locked a lock file that was removed meanwhile: start again

    def _wait_for_flock(self, fd: int, path: Path, deadline: float, timeout: float) -> None:
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StoreError(f"cannot lock {path}: {exc.strerror}") from exc
                if time.monotonic() >= deadline:
                    raise StoreLockedError(self.domain.name, timeout, lock_holder(fd)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _prune(self, created: list[Path]) -> None:
        """Remove the domain's directory (and the parents in *created*) if it holds nothing
        but what :meth:`lock` and :meth:`ensure` made; with the lock still held.

        Failure guarantee: never raises; what cannot be removed is left.
        """
        skeleton = ("checkpoints", "memory", "work")
        try:
            if not set(os.listdir(self.root)) <= {"lock", "domain.json", *skeleton}:
                return
            if any(os.listdir(self.root / d) for d in skeleton if (self.root / d).is_dir()):
                return
            for d in skeleton:
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(self.root / d)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / "domain.json")
            os.unlink(self.root / "lock")
            for made in created:  # innermost first; stops at the first one in use
                os.rmdir(made)
        except OSError as exc:
            log.debug("left the state directory %s: %s", self.root, exc)

    # -- records ------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self._records / f"{check_name(name)}.json"

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def get(self, name: str) -> Checkpoint:
        """Read checkpoint *name*.

        :raises SnapshotNotFoundError: when there is none.
        :raises StoreCorruptError: when its record cannot be read.
        """
        path = self._path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotNotFoundError(self.domain.name, name) from None
        except OSError as exc:
            raise StoreCorruptError(str(path), exc.strerror or str(exc)) from exc
        return self._parse(str(path), data)

    def _parse(self, path: str, data: bytes) -> Checkpoint:
        if not data.strip():
            raise StoreCorruptError(path, "it is empty")
        try:
            obj = json.loads(data)
            schema = obj["schema"]
            if not isinstance(schema, int) or schema > SCHEMA_VERSION:
                raise StoreCorruptError(
                    path, f"schema version {schema!r} is newer than this snapcore's"
                )
            cp = Checkpoint.from_json(obj["checkpoint"])
        except StoreCorruptError:
            raise
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise StoreCorruptError(path, f"{type(exc).__name__}: {exc}") from exc
        if cp.domain_uuid != self.domain.uuid or os.path.basename(path) != f"{cp.name}.json":
            raise StoreCorruptError(path, "it belongs to another domain or name")
        return cp

    def list(self) -> list[Checkpoint]:
        """Every checkpoint of the domain, oldest first (creation time, then name).

        :raises StoreCorruptError: when a record cannot be read.
        """
        if self._listed is not None:
            return list(self._listed)
        out = []
        try:
            entries = list(os.scandir(self._records))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                with open(entry.path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise StoreCorruptError(entry.path, exc.strerror or str(exc)) from exc
            out.append(self._parse(entry.path, data))
        out.sort(key=lambda c: (c.creation_time, c.name))
        if self._held:
            self._listed = tuple(out)
        return out

    def save(self, checkpoint: Checkpoint) -> None:
        """Write (or replace) the record of *checkpoint* atomically.

        :raises StoreError: when the checkpoint belongs to another domain, or on a write error.
        """
        if checkpoint.domain_uuid != self.domain.uuid:
            raise StoreError(
                f"snapshot {checkpoint.name!r} belongs to domain {checkpoint.domain_uuid}, "
                f"not to {self.domain.name!r} ({self.domain.uuid})"
            )
        self.ensure()
        self._listed = None
        atomic_write(
            self._path(checkpoint.name),
            _dump({"schema": SCHEMA_VERSION, "checkpoint": checkpoint.to_json()}),
        )

    def remove(self, name: str) -> None:
        """Delete the record of checkpoint *name*; a missing record is not an error."""
        self._listed = None
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()
            fsync_dir(self._records)

    # -- current ------------------------------------------------------------------------------

    def current(self) -> str | None:
        """The name of the current checkpoint (the one the domain's disks descend from).

        :raises StoreCorruptError: when ``current.json`` cannot be read, is not JSON, or is not
            ``{"schema": 1, "current": NAME or null}``.
        """
        path = self.root / "current.json"
        what = "current-snapshot file"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreCorruptError(str(path), exc.strerror or str(exc), what=what) from exc
        if not data.strip():
            raise StoreCorruptError(str(path), "it is empty", what=what)
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise StoreCorruptError(str(path), f"it is not JSON ({exc})", what=what) from None
        schema = obj.get("schema") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise StoreCorruptError(
                str(path), f'it is not {{"schema": {SCHEMA_VERSION}, "current": ...}}', what=what
            )
        name = obj.get("current")
        if name is not None and not (isinstance(name, str) and _is_record_name(f"{name}.json")):
            raise StoreCorruptError(str(path), "its snapshot name is invalid", what=what)
        return name

    def verify(self) -> None:
        """Check that every record and ``current.json`` can be read.

        :raises StoreCorruptError: naming the first file that cannot, and the way out.
        """
        self.list()
        self.current()

    def unreadable(self) -> _Unreadable:
        """Every record and a ``current.json`` that cannot be read, each as the error reading
        it gives (its ``path`` and reason); read-only."""
        found: _Unreadable = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(self._records), key=lambda e: e.name):
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                try:
                    self._parse(entry.path, Path(entry.path).read_bytes())
                except StoreCorruptError as exc:
                    found.append(exc)
                except OSError as exc:
                    found.append(StoreCorruptError(entry.path, exc.strerror or str(exc)))
        try:
            self.current()
        except StoreCorruptError as exc:
            found.append(exc)
        return found

    def quarantine_unreadable(self) -> _Moved:
        """Move every unreadable record and an unreadable ``current.json`` aside (see
        :func:`quarantine`); only with the lock held. The journal is :class:`Journal`'s.

        :returns: each file moved and where it went.
        :raises StoreError: when one cannot be moved (those before it were).
        """
        suspects: _Paths = []
        with contextlib.suppress(FileNotFoundError):
            suspects = [
                Path(e.path)
                for e in os.scandir(self._records)
                if e.name.endswith(".json") and not e.name.startswith(".")
            ]
        self._listed = None
        moved: _Moved = []
        for path in sorted(suspects):
            try:
                self._parse(str(path), path.read_bytes())
            except (StoreCorruptError, OSError):
                target = quarantine(path)
                if target is not None:
                    moved.append((path, target))
        try:
            self.current()
        except StoreCorruptError:
            target = quarantine(self.root / "current.json")
            if target is not None:
                moved.append((self.root / "current.json", target))
        return moved

    def set_current(self, name: str | None) -> None:
        self.ensure()
        atomic_write(self.root / "current.json", _dump({"schema": SCHEMA_VERSION, "current": name}))
