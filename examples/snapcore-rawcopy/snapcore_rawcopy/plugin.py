"""The ``rawcopy`` storage backend: raw image files, snapshotted by copying them.

A snapshot of disk ``P`` for checkpoint ``NAME`` is the file
``<dir of P>/.<basename of P>.snapcore/NAME.raw``, made with
``cp --reflink=auto --sparse=always``: on a file system with reflinks (XFS, Btrfs) the copy shares
its blocks with ``P`` and takes no time; elsewhere it is a plain sparse copy. Snapshots are
independent files, so any of them can be reverted to or deleted without touching the others.

snapcore calls these hooks only for disks whose driver is ``rawcopy`` (the driver
:func:`backend_info` reports), so no hook checks whom a call is for; only :func:`disk_claim` is
asked about every disk that names no driver.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from snapcore.context import HookContext
from snapcore.errors import BackendError, CommandError
from snapcore.hookspecs import hookimpl
from snapcore.model import (
    BackendInfo,
    Disk,
    DiskSnapshot,
    SnapshotKind,
    SnapshotRequest,
    check_name,
)

__version__ = "0.1.0"

#: The hook API this plugin was written for (docs/hook-api-changelog.md).
SNAPCORE_HOOK_API: Final = (2, 0)

DRIVER: Final = "rawcopy"
SUFFIX: Final = ".raw"


# -- where things live ----------------------------------------------------------------------------


def snapshot_dir(path: str) -> Path:
    """The directory holding the snapshots of the disk at *path*."""
    p = Path(path)
    return p.parent / f".{p.name}.snapcore"


def snapshot_file(path: str, name: str) -> Path:
    """The file holding snapshot *name* of the disk at *path*."""
    return snapshot_dir(path) / f"{name}{SUFFIX}"


def _partial_file(path: str, name: str) -> Path:
    # A create copies here first, then renames: a snapshot file is always complete.
    return snapshot_dir(path) / f".{name}{SUFFIX}.partial"


def _revert_file(path: str) -> Path:
    # Next to the disk, so that os.replace() stays on one file system and is atomic.
    p = Path(path)
    return p.parent / f".{p.name}.snapcore-revert"


# -- helpers --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_errors(vdev: str) -> Iterator[None]:
    """Report a failed file operation as a BackendError: hooks raise snapcore's errors only."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise BackendError(f"{where}{exc.strerror or exc}", driver=DRIVER, vdev=vdev) from exc


def _copy(ctx: HookContext, src: Path, dst: Path, vdev: str) -> None:
    """Copy *src* to *dst* (sharing blocks where the file system can), and flush it."""
    try:
        ctx.run(["cp", "--reflink=auto", "--sparse=always", "--", str(src), str(dst)])
    except CommandError as exc:
        raise exc.for_disk(vdev, DRIVER) from exc
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_owner_and_mode(src: Path, dst: Path) -> None:
    st = src.stat()
    os.chmod(dst, st.st_mode & 0o7777)
    dst_st = dst.stat()
    if (dst_st.st_uid, dst_st.st_gid) != (st.st_uid, st.st_gid):
        os.chown(dst, st.st_uid, st.st_gid)


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # missing, or holds other snapshots
        path.rmdir()


def _snapshot(disk: Disk, name: str, file: Path, st: os.stat_result) -> DiskSnapshot:
    return DiskSnapshot(
        vdev=disk.vdev,
        path=disk.path,
        driver=DRIVER,
        kind=SnapshotKind.NATIVE,
        name=name,
        locator=str(file),
        size=st.st_blocks * 512,  # allocated bytes; with reflinks, some are shared
    )


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except ValueError:
        return False
    return True


# -- hooks ----------------------------------------------------------------------------------------


@hookimpl
def backend_info() -> BackendInfo:
    cp = shutil.which("cp")
    return BackendInfo(
        driver=DRIVER,
        description="raw image files; snapshots are reflink or sparse copies (cp --reflink=auto)",
        version=__version__,
        kinds=frozenset({SnapshotKind.NATIVE}),
        default_kind=SnapshotKind.NATIVE,
        live=True,  # a copy of a paused, drained disk is consistent
        revert_any=True,
        needs_pause=True,
        revert_requires_shutdown=True,
        tools=("cp",),
        available=cp is not None,
        unavailable_reason=None if cp else "cp is not installed",
    )


@hookimpl
def disk_claim(disk: Disk) -> str | None:
    # Claim by name only: any file can hold raw data, so only a ".raw" path says "mine".
    return DRIVER if disk.path.endswith(SUFFIX) else None


@hookimpl
def disk_snapshot_create_check(request: SnapshotRequest, ctx: HookContext) -> list[str]:
    disk = request.disk
    blockers = []
    if request.kind not in (None, SnapshotKind.NATIVE):
        blockers.append(f"rawcopy makes native snapshots only, not {request.kind} ones")
    if request.target is not None:
        blockers.append("rawcopy keeps snapshots next to the disk and takes no target")
    path = Path(disk.path)
    if not path.exists():
        blockers.append(f"{path} does not exist")
    elif not path.is_file():
        blockers.append(f"{path} is not a regular file")
    directory = snapshot_dir(disk.path)
    if directory.exists() and not directory.is_dir():
        blockers.append(f"{directory} is not a directory")
    elif not os.access(directory if directory.exists() else path.parent, os.W_OK):
        blockers.append(f"cannot write to {directory}")
    snap = snapshot_file(disk.path, request.name)
    if snap.exists():
        blockers.append(f"snapshot {request.name!r} already exists: {snap}")
    return blockers


@hookimpl
def disk_snapshot_plan(request: SnapshotRequest) -> str:
    # The line --dry-run prints for this disk's step.
    final = snapshot_file(request.disk.path, request.name)
    return f"copy {request.disk.path} to {final} (cp --reflink=auto)"


@hookimpl
def disk_snapshot_create(request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot:
    disk = request.disk
    final = snapshot_file(disk.path, request.name)
    partial = _partial_file(disk.path, request.name)
    with _file_errors(disk.vdev):
        if final.exists():
            raise BackendError(f"snapshot {request.name!r} already exists: {final}", driver=DRIVER)
        final.parent.mkdir(exist_ok=True)
        try:
            _copy(ctx, Path(disk.path), partial, disk.vdev)
            partial.rename(final)
            _fsync_dir(final.parent)
        except BaseException:
            partial.unlink(missing_ok=True)  # failure guarantee: no partial snapshot left
            _rmdir_if_empty(final.parent)
            raise
        return _snapshot(disk, request.name, final, final.stat())


@hookimpl
def disk_snapshot_abort(request: SnapshotRequest) -> bool:
    disk = request.disk
    # create_check refused to go on if NAME.raw existed, so the file here is this create's.
    # The disk itself was never changed by the create: removing the copy undoes it all.
    with _file_errors(disk.vdev):
        _partial_file(disk.path, request.name).unlink(missing_ok=True)
        snapshot_file(disk.path, request.name).unlink(missing_ok=True)
    _rmdir_if_empty(snapshot_dir(disk.path))
    return True


@hookimpl
def disk_snapshot_delete_check(snapshot: DiskSnapshot, ctx: HookContext) -> list[str]:
    return []  # each snapshot is a file of its own: deleting one never affects the others


@hookimpl
def disk_snapshot_delete(snapshot: DiskSnapshot, ctx: HookContext) -> bool:
    file = Path(snapshot.locator)
    with _file_errors(snapshot.vdev):
        file.unlink(missing_ok=True)  # already gone counts as deleted
    _rmdir_if_empty(file.parent)
    return True


@hookimpl
def disk_snapshot_revert_check(snapshot: DiskSnapshot, disk: Disk) -> list[str]:
    file = Path(snapshot.locator)
    disk_dir = Path(disk.path).parent
    blockers = []
    if not file.is_file():
        blockers.append(f"the snapshot file {file} is gone")
    if not os.access(disk_dir, os.W_OK):
        blockers.append(f"cannot write to {disk_dir}")
    return blockers


@hookimpl
def disk_snapshot_revert(snapshot: DiskSnapshot, disk: Disk, ctx: HookContext) -> bool:
    file = Path(snapshot.locator)
    if not file.is_file():
        raise BackendError(f"the snapshot file {file} is gone", driver=DRIVER, vdev=snapshot.vdev)
    target = Path(disk.path)  # the disk as the domain file has it now
    tmp = _revert_file(disk.path)
    with _file_errors(snapshot.vdev):
        try:
            _copy(ctx, file, tmp, snapshot.vdev)
            if target.exists():
                _copy_owner_and_mode(target, tmp)
            # One atomic step: the disk holds its old data or the snapshot's, never a mix.
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return True


@hookimpl
def disk_snapshot_list(disk: Disk, ctx: HookContext) -> list[DiskSnapshot]:
    # The snapshot directory is the index, so the ``known`` argument is not needed here: a hook
    # implementation may take any subset of the spec's arguments.
    found = []
    directory = snapshot_dir(disk.path)
    if directory.is_dir():
        for file in directory.iterdir():
            name = file.name.removesuffix(SUFFIX)
            if file.name == name or not _valid_name(name) or not file.is_file():
                continue  # not a snapshot: a partial copy or someone else's file
            st = file.stat()
            found.append((st.st_mtime_ns, name, _snapshot(disk, name, file, st)))
    return [snap for _, _, snap in sorted(found, key=lambda t: (t[0], t[1]))]
