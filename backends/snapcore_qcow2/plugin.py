"""The ``qcow2`` storage plugin: hook implementations that route and translate.

Each hook answers only for disks and snapshots whose driver is ``qcow2`` (``None`` for the
others), hands the work to :class:`~snapcore_qcow2.offline.OfflineDisk`, and attributes every
failure to the disk: a failing qemu-img becomes a :class:`~snapcore.errors.CommandError` for
the disk (its message names the disk and carries qemu-img's own), and a failing file operation
a :class:`~snapcore.errors.BackendError` for it. Importing this module runs nothing and imports
nothing heavy.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

from snapcore._version import __version__
from snapcore.context import HookContext
from snapcore.errors import BackendError, CommandError, SnapcoreError
from snapcore.hookspecs import hookimpl
from snapcore.model import BackendInfo, Disk, DiskSnapshot, SnapshotKind, SnapshotRequest
from snapcore_qcow2.offline import DEFAULT_KIND, DRIVER, OfflineDisk
from snapcore_qcow2.qemu_img import PROGRAM, QemuImg

#: The hook API this plugin was written for.
SNAPCORE_HOOK_API: Final = (1, 0)

#: The first bytes of every qcow2 image (``QFI\xfb``, docs/interop/qcow2.txt).
QCOW2_MAGIC: Final = b"QFI\xfb"

_VERSION_RE: Final = re.compile(rb"qemu-img version ([0-9][0-9A-Za-z.+~-]*)")


@functools.cache
def _tool_version(executable: str) -> tuple[str | None, str | None]:
    """``(version, None)`` of the qemu-img at *executable*, or ``(None, reason)``.

    The version is read from the program file, where qemu-img keeps its ``--version`` banner
    as one string, so start-up runs no process; only when that fails is ``qemu-img
    --version`` run. Never raises.
    """
    try:
        with open(executable, "rb") as f:
            found = _VERSION_RE.search(f.read())
        if found:
            return found.group(1).decode("ascii"), None
    except OSError:
        pass
    from snapcore.process import ShRunner

    try:
        out = ShRunner()([executable, "--version"], timeout=10).stdout
    except SnapcoreError as exc:
        return None, f"{PROGRAM} --version failed: {exc}"
    match = _VERSION_RE.search(out.encode())
    return (match.group(1).decode("ascii") if match else None), None


@hookimpl
def backend_info() -> BackendInfo:
    """The qcow2 backend: internal and external snapshots of stopped domains' disks."""
    executable = shutil.which(PROGRAM)
    version: str | None
    reason: str | None
    if executable is None:
        version, reason = None, f"{PROGRAM} is not installed (Debian package qemu-utils)"
    else:
        version, reason = _tool_version(executable)
    return BackendInfo(
        driver=DRIVER,
        description="qcow2 images: internal snapshots and external overlays, with qemu-img",
        version=__version__,
        kinds=frozenset({SnapshotKind.INTERNAL, SnapshotKind.EXTERNAL}),
        default_kind=DEFAULT_KIND,
        live=False,
        revert_any=True,
        needs_pause=True,
        revert_requires_shutdown=True,
        tools=(PROGRAM,),
        tool_version=version,
        available=reason is None,
        unavailable_reason=reason,
    )


@hookimpl
def disk_claim(disk: Disk) -> str | None:
    """Claim a disk whose file starts with the qcow2 magic; read 4 bytes, change nothing."""
    try:
        with open(disk.path, "rb") as f:
            magic = f.read(len(QCOW2_MAGIC))
    except OSError:
        return None
    return DRIVER if magic == QCOW2_MAGIC else None


# -- routing and translation ----------------------------------------------------------------


def _disk(vdev: str, ctx: HookContext) -> OfflineDisk:
    return OfflineDisk(vdev=vdev, qemu_img=QemuImg(ctx.run), log=ctx.log, progress=ctx.progress)


@contextmanager
def _for_disk(vdev: str) -> Iterator[None]:
    """Attribute qemu-img and file-system failures to disk *vdev*."""
    try:
        yield
    except CommandError as exc:
        raise exc.for_disk(vdev, DRIVER) from exc
    except OSError as exc:
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        what = exc.strerror or str(exc)
        raise BackendError(f"{names}: {what}" if names else what, driver=DRIVER, vdev=vdev) from exc


def _ours(snapshot: DiskSnapshot) -> bool:
    return snapshot.driver == DRIVER


@hookimpl
def disk_snapshot_create_check(request: SnapshotRequest, ctx: HookContext) -> list[str] | None:
    if request.disk.driver != DRIVER:
        return None
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, ctx).create_check(request, ctx.state)


@hookimpl
def disk_snapshot_create(request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot | None:
    if request.disk.driver != DRIVER:
        return None
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, ctx).create(request, ctx.state)


@hookimpl
def disk_snapshot_abort(request: SnapshotRequest, ctx: HookContext) -> bool | None:
    if request.disk.driver != DRIVER:
        return None
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, ctx).abort(request)


@hookimpl
def disk_snapshot_delete_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str] | None:
    if not _ours(snapshot):
        return None
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).delete_check(snapshot, others, ctx.state)


@hookimpl
def disk_snapshot_delete(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool | None:
    if not _ours(snapshot):
        return None
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).delete(snapshot, others)


@hookimpl
def disk_snapshot_revert_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str] | None:
    if not _ours(snapshot):
        return None
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).revert_check(snapshot, others)


@hookimpl
def disk_snapshot_revert(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool | None:
    if not _ours(snapshot):
        return None
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).revert(snapshot, others)


@hookimpl
def disk_snapshot_list(
    disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
) -> list[DiskSnapshot] | None:
    if disk.driver != DRIVER:
        return None
    with _for_disk(disk.vdev):
        return _disk(disk.vdev, ctx).list_snapshots(disk, known)
