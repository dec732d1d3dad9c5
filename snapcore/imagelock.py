"""Host-wide locks on disk images, so that two commands never work on one image at once.

The per-domain lock (:meth:`snapcore.store.CheckpointStore.lock`) serialises commands on one
domain in one state dir. It cannot see two domain files that share a disk, or two state dirs
over the same images. The lock here can: it is keyed by what a disk's path resolves to, not by
the domain or the state dir.

Each writable disk of a domain gets two keys, both locked:

* its **identity**: ``dev-MAJ-MIN`` (a device's number) or ``ino-DEV-INO`` (a file's device
  and inode, symlinks and hard links followed), so every name of one image meets the same lock;
* its **path**: ``path-<sha256 of the real path>``, so a command that finds a new file at the
  path (an external snapshot switched the disk to a new overlay) still meets the lock of the
  command that put it there.

A key is an ``flock(2)`` on a file of that name in the lock directory (``$SNAPCORE_LOCK_DIR``,
else ``/run/snapcore/locks``, else ``locks/`` in the state dir when ``/run`` is not writable).
Keys are taken in sorted order, so two commands locking overlapping sets never deadlock. The
kernel drops the locks of a process that dies. Lock files are removed when released (a waiter
that then holds the lock of a removed file notices and starts again); the files of a command
that was killed are removed by the next command that takes image locks (:func:`sweep`), so
none pile up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from snapcore.errors import ImageLockedError, StoreError
from snapcore.model import Disk, Domain
from snapcore.store import lock_holder

__all__ = ["RUN_LOCK_DIR", "hold_images", "image_keys", "lock_dir", "sweep"]

#: The host-wide lock directory (tmpfs: emptied at boot, when no lock can be held anyway).
RUN_LOCK_DIR: Final = Path("/run/snapcore/locks")


def image_keys(path: str) -> tuple[str, ...]:
    """The lock keys of the image at *path*: its identity (when it exists) and its real path."""
    real = os.path.realpath(path)
    keys = [f"path-{hashlib.sha256(real.encode(errors='surrogateescape')).hexdigest()[:40]}"]
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return tuple(keys)
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        keys.append(f"dev-{os.major(st.st_rdev)}-{os.minor(st.st_rdev)}")
    else:
        keys.append(f"ino-{st.st_dev:x}-{st.st_ino}")
    return tuple(keys)


def lock_dir(state_dir: str | os.PathLike[str]) -> Path:
    """Where the image locks live: ``$SNAPCORE_LOCK_DIR``, else :data:`RUN_LOCK_DIR` if it can
    be made, else ``locks`` in *state_dir* (which only serialises commands of that state dir)."""
    configured = os.environ.get("SNAPCORE_LOCK_DIR")
    if configured:
        return Path(configured)
    try:
        RUN_LOCK_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return Path(state_dir) / "locks"
    if os.access(RUN_LOCK_DIR, os.W_OK | os.X_OK):
        return RUN_LOCK_DIR
    return Path(state_dir) / "locks"


@contextlib.contextmanager
def hold_images(
    domain: Domain, *, state_dir: str | os.PathLike[str], timeout: float
) -> Iterator[None]:
    """Hold the host-wide lock of every writable disk of *domain*, waiting up to *timeout*
    seconds in all. Read-only disks (a shared ISO) are not locked.

    Failure guarantee: on any error every lock this call took is released again and its lock
    files removed; nothing else is touched.

    :raises ImageLockedError: another command still holds one of the disks after *timeout*.
    :raises StoreError: the lock directory cannot be used.
    """
    owners: dict[str, Disk] = {}
    for disk in domain.disks:
        if not disk.readonly:
            for key in image_keys(disk.path):
                owners.setdefault(key, disk)
    directory = lock_dir(state_dir)
    how = _Locking(
        directory=directory,
        deadline=time.monotonic() + timeout,
        timeout=timeout,
        domain=domain.name,
        remove_dir=directory == Path(state_dir) / "locks",  # removed when empty: no trace left
    )
    with contextlib.ExitStack() as held:
        for key in sorted(owners):
            held.enter_context(_hold(how, key, owners[key]))
        sweep(directory)
        yield


#: The names of lock files (:func:`image_keys`).
_KEY = re.compile(r"(?:path-[0-9a-f]{40}|dev-[0-9]+-[0-9]+|ino-[0-9a-f]+-[0-9]+)")
#: At most this many lock files are looked at per command.
SWEEP_LIMIT: Final = 1000


def sweep(directory: Path) -> list[str]:
    """Remove the lock files in *directory* that no process holds: those of commands that were
    killed (the kernel dropped their locks, the files stayed). Returns their names.

    Each file is removed the way a command releases its own: locked (without waiting), then
    unlinked, then closed, so a command that opened it meanwhile notices the unlink and locks
    a new file. A file some process holds, or anything not named like a lock key, is left
    alone. Looks at no more than :data:`SWEEP_LIMIT` files. Never raises.
    """
    try:
        names = sorted(os.listdir(directory))[:SWEEP_LIMIT]
    except OSError:
        return []
    removed = []
    for name in names:
        if not _KEY.fullmatch(name):
            continue
        path = directory / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _still_linked(fd, path) and stat.S_ISREG(os.fstat(fd).st_mode):
                os.unlink(path)
                removed.append(name)
        except OSError:
            continue  # held by a live command (or not ours to touch)
        finally:
            os.close(fd)
    return removed


@dataclass(frozen=True, slots=True, kw_only=True)
class _Locking:
    directory: Path
    deadline: float
    timeout: float
    domain: str
    remove_dir: bool


@contextlib.contextmanager
def _hold(how: _Locking, key: str, disk: Disk) -> Iterator[None]:
    fd = _acquire(how, key, disk)
    try:
        yield
    finally:
        try:
            with contextlib.suppress(OSError):
                os.unlink(how.directory / key)  # still ours: held until the close below
            if how.remove_dir:
                with contextlib.suppress(OSError):
                    how.directory.rmdir()  # only when empty; the next command makes it again
        finally:
            os.close(fd)


def _acquire(how: _Locking, key: str, disk: Disk) -> int:
    """Open and flock the lock file of *key*, waiting (with the file open) until *deadline*."""
    path = how.directory / key
    while True:
        try:
            how.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the directory went away between mkdir and open
            if time.monotonic() >= how.deadline:
                raise StoreError(f"cannot open image lock {path}: it keeps vanishing") from None
            continue
        except OSError as exc:
            raise StoreError(f"cannot open image lock {path}: {exc.strerror or exc}") from exc
        try:
            _wait_for_flock(how, fd, path, disk)
        except BaseException:
            os.close(fd)
            raise
        if _still_linked(fd, path):
            return fd
        os.close(fd)  # its holder removed it before letting go: lock the new one


def _wait_for_flock(how: _Locking, fd: int, path: Path, disk: Disk) -> None:
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"cannot lock {path}: {exc.strerror}") from exc
        if time.monotonic() >= how.deadline:
            raise ImageLockedError(
                how.domain, disk.vdev, disk.path, how.timeout, lock_holder(fd)
            ) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _still_linked(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
