"""The ``qcow2`` storage plugin: hook implementations that route and translate.

Each hook answers only for disks and snapshots whose driver is ``qcow2`` (``None`` for the
others) and hands the work over by the domain's state (``ctx.state``): a domain that is shut off
to :class:`~snapcore_qcow2.offline.OfflineDisk` (qemu-img), a running or paused one to
:mod:`snapcore_qcow2.live` (QMP, through the monitor the ``qemu`` hypervisor offers,
``ctx.service("qmp")``). Reverts always go offline: the
coordinator stops the domain first. Every failure is attributed to the disk: a failing qemu-img
becomes a :class:`~snapcore.errors.CommandError` for the disk (its message names the disk and
carries qemu-img's own), a command QEMU refuses a :class:`~snapcore_qemu.qmp.QMPCommandError` for
it, and a failing file operation a :class:`~snapcore.errors.BackendError` for it. Importing this
module runs nothing and imports nothing heavy.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Final

from snapcore._version import __version__
from snapcore.context import HookContext
from snapcore.errors import (
    BackendError,
    SnapcoreError,
    UnsupportedOperationError,
    for_disk,
)
from snapcore.hookspecs import hookimpl
from snapcore.model import (
    BackendInfo,
    Disk,
    DiskSnapshot,
    DomainState,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore_qcow2.offline import DEFAULT_KIND, DRIVER, OfflineDisk
from snapcore_qcow2.qemu_img import PROGRAM, QemuImg

if TYPE_CHECKING:
    from snapcore_qcow2.live import LiveDisk
    from snapcore_qcow2.transaction import GroupSwitch

#: The hook API this plugin was written for (1.1: ``disk_snapshot_create_group``; 1.2:
#: ``disk_snapshot_prepare_group``).
SNAPCORE_HOOK_API: Final = (2, 0)

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
    """The qcow2 backend: internal and external snapshots, offline and of running QEMUs."""
    executable = shutil.which(PROGRAM)
    version: str | None
    reason: str | None
    if executable is None:
        version, reason = None, f"{PROGRAM} is not installed (Debian package qemu-utils)"
    else:
        version, reason = _tool_version(executable)
    return BackendInfo(
        driver=DRIVER,
        description=(
            "qcow2 images: internal snapshots and external overlays, "
            "with qemu-img or over QMP while QEMU runs"
        ),
        version=__version__,
        kinds=frozenset({SnapshotKind.INTERNAL, SnapshotKind.EXTERNAL}),
        default_kind=DEFAULT_KIND,
        live=True,
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


def _disk(vdev: str, ctx: HookContext, *, force_share: bool = False) -> OfflineDisk:
    return OfflineDisk(
        vdev=vdev,
        qemu_img=QemuImg(ctx.run),
        log=ctx.log,
        progress=ctx.progress,
        force_share=force_share,
    )


def _running(ctx: HookContext) -> bool:
    return ctx.state is not DomainState.SHUTOFF


def _live(vdev: str, ctx: HookContext) -> LiveDisk:
    from snapcore_qcow2.live import LiveDisk

    return LiveDisk(vdev=vdev, ctx=ctx)


def _for_disk(vdev: str) -> AbstractContextManager[None]:
    """Attribute qemu-img, QMP and file-system failures to disk *vdev*."""
    return for_disk(vdev, DRIVER)


@hookimpl
def disk_snapshot_create_check(request: SnapshotRequest, ctx: HookContext) -> list[str]:
    with _for_disk(request.disk.vdev):
        if _running(ctx):
            return _live(request.disk.vdev, ctx).create_check(request)
        return _disk(request.disk.vdev, ctx).create_check(request, ctx.state)


@hookimpl
def disk_snapshot_create(request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot:
    if _running(ctx):
        [snap] = _create_group([request], None, ctx)
        return snap
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, ctx).create(request, ctx.state)


@hookimpl
def disk_snapshot_prepare_group(
    requests: Sequence[SnapshotRequest], ctx: HookContext
) -> GroupSwitch | None:
    """On a running QEMU, plan the transaction and make the external overlays while the guest
    still runs, and return the transaction (a :class:`~snapcore_qcow2.transaction.GroupSwitch`),
    which snapcore hands back to the create in the pause, or to the abort."""
    if not _running(ctx):
        return None
    from snapcore_qcow2.transaction import prepare_group

    with _for_disk(", ".join(r.disk.vdev for r in requests)):
        return prepare_group(requests, ctx)


@hookimpl
def disk_snapshot_create_group(
    requests: Sequence[SnapshotRequest], prepared: object | None, ctx: HookContext
) -> list[DiskSnapshot] | None:
    """A running QEMU's disks switch together in one QMP transaction (the one prepared, if
    any); offline, every disk is done on its own (``None``: one :func:`disk_snapshot_create`
    call per disk)."""
    if not _running(ctx):
        return None
    return _create_group(requests, prepared, ctx)


def _create_group(
    requests: Sequence[SnapshotRequest], prepared: object | None, ctx: HookContext
) -> list[DiskSnapshot]:
    from snapcore_qcow2.transaction import GroupSwitch, create_group

    vdevs = ", ".join(r.disk.vdev for r in requests)
    with _for_disk(vdevs):
        switch = prepared if isinstance(prepared, GroupSwitch) else None
        return create_group(requests, ctx, switch)


@hookimpl
def disk_snapshot_abort(
    request: SnapshotRequest, prepared: object | None, ctx: HookContext
) -> bool:
    with _for_disk(request.disk.vdev):
        if _running(ctx) or _qemu_has(request, ctx):
            from snapcore_qcow2.transaction import GroupSwitch

            if isinstance(prepared, GroupSwitch):
                for problem in prepared.unprepare():  # once; the live abort finds the rest
                    ctx.log.warning("disk %s: %s", request.disk.vdev, problem)
            return _live(request.disk.vdev, ctx).abort(request)
        return _disk(request.disk.vdev, ctx).abort(request)


def _qemu_has(request: SnapshotRequest, ctx: HookContext) -> bool:
    """Whether a QEMU answers on the domain's monitor with this disk (or an overlay this
    create made) open, though ``ctx.state`` says shut off (crash recovery). Undoing a live
    create with qemu-img would delete the overlay QEMU writes to; so abort asks."""
    from snapcore_qemu.qmp import monitor

    session = monitor(ctx)
    if session is None:
        return False
    from snapcore.errors import DomainUnreachableError
    from snapcore_qcow2.blockgraph import BlockView

    try:
        view = BlockView(session)
    except (DomainUnreachableError, BackendError):
        return False
    if view.device_for(request.disk.path) is not None:
        return True
    return bool(view.marked(request.disk.vdev, request.name))


@hookimpl
def disk_snapshot_delete_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str]:
    with _for_disk(snapshot.vdev):
        if _running(ctx):
            return _live(snapshot.vdev, ctx).delete_check(snapshot, others)
        return _disk(snapshot.vdev, ctx).delete_check(snapshot, others, ctx.state)


@hookimpl
def disk_snapshot_delete(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool:
    with _for_disk(snapshot.vdev):
        if _running(ctx):
            return _live(snapshot.vdev, ctx).delete(snapshot, others)
        return _disk(snapshot.vdev, ctx).delete(snapshot, others)


@hookimpl
def disk_snapshot_revert_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str]:
    with _for_disk(snapshot.vdev):
        # called while the domain still runs (it is stopped before the revert): read with -U
        return _disk(snapshot.vdev, ctx, force_share=_running(ctx)).revert_check(snapshot, others)


@hookimpl
def disk_snapshot_revert(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool:
    if _running(ctx):
        raise UnsupportedOperationError(
            f"the domain is {ctx.state}; a qcow2 disk is reverted with the domain stopped",
            driver=DRIVER,
            vdev=snapshot.vdev,
        )
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).revert(snapshot, others)


@hookimpl
def disk_snapshot_list(
    disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
) -> list[DiskSnapshot]:
    with _for_disk(disk.vdev):
        return _disk(disk.vdev, ctx).list_snapshots(disk, known)


# -- verify and repair (qemu-img check) ------------------------------------------------------


@hookimpl
def disk_verify(disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext) -> list[str]:
    """``qemu-img check`` of the disk's image and of its external snapshots' files (``-U``
    while the domain runs); a snapshot file that is the live image's inode is a problem too."""
    from snapcore_qcow2.check import check, files_of

    problems = []
    with _for_disk(disk.vdev):
        for path in files_of(disk, known):
            result = check(ctx.run, path, force_share=_running(ctx))
            if not result.clean:
                problems.append(result.problem())
        for snap in known:
            if snap.kind is SnapshotKind.EXTERNAL and _same_inode(snap.locator, disk.path):
                problems.append(
                    f"{snap.locator}, the file of snapshot {snap.name!r}, is the disk's own "
                    f"image {disk.path}: writing the disk would change the snapshot"
                )
    return problems


@hookimpl
def disk_repair(disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext) -> list[str]:
    """``qemu-img check -r leaks`` of each of the disk's qcow2 files that is not clean."""
    from snapcore_qcow2.check import check, files_of

    repairs = []
    with _for_disk(disk.vdev):
        for path in files_of(disk, known):
            if check(ctx.run, path).clean:
                continue
            result = check(ctx.run, path, repair=True)
            if result.fixed:
                repairs.append(f"{path}: qemu-img check -r leaks repaired {result.fixed} clusters")
    return repairs


def _same_inode(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
