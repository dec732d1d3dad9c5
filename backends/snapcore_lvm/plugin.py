"""The ``lvm`` storage plugin: hook implementations that route and translate.

Each hook answers only for disks and snapshots whose driver is ``lvm`` (``None`` for the
others), hands the work to :class:`~snapcore_lvm.volume.LvmDisk`, and attributes every failure
to the disk: a failing LVM tool becomes a :class:`~snapcore.errors.CommandError` for the disk
(its message carries the tool's own). Importing this module runs nothing; ``backend_info`` and
``disk_claim`` run no command either, so they cost nothing on hosts without LVM.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Final

from snapcore._version import __version__
from snapcore.context import HookContext
from snapcore.errors import for_disk
from snapcore.hookspecs import hookimpl
from snapcore.model import BackendInfo, Disk, DiskSnapshot, SnapshotKind, SnapshotRequest
from snapcore_lvm import devices
from snapcore_lvm.lvm import PROGRAMS, Lvm, find_tools, tool_version
from snapcore_lvm.volume import DRIVER, LvmDisk, create_group

#: The hook API this plugin was written for (1.1: ``disk_snapshot_create_group``).
SNAPCORE_HOOK_API: Final = (2, 0)
#: Where the kernel lists its misc devices; device-mapper is one once loaded.
PROC_MISC: Final = "/proc/misc"


def _device_mapper_problem() -> str | None:
    """Why this kernel cannot run device-mapper, or ``None``: it is loaded (``/proc/misc``
    lists it) or can be (its module is installed). Reads two small files; never raises."""
    try:
        with open(PROC_MISC, encoding="ascii", errors="replace") as f:
            if "device-mapper" in f.read():
                return None
    except OSError:
        pass
    release = os.uname().release
    for name in ("dm-mod.ko", "dm-mod.ko.xz", "dm-mod.ko.zst", "dm-mod.ko.gz"):
        if os.path.exists(f"/lib/modules/{release}/kernel/drivers/md/{name}"):
            return None
    return f"the kernel ({release}) has no device-mapper, which LVM needs"


@hookimpl
def backend_info() -> BackendInfo:
    """The lvm backend: native snapshot LVs of classic and thin LVs, live or not."""
    lvm, reason = find_tools()
    version = tool_version(lvm) if lvm else None
    if reason is None:
        reason = _device_mapper_problem()
    return BackendInfo(
        driver=DRIVER,
        description="LVM logical volumes: classic (COW) and thin snapshot LVs",
        version=__version__,
        kinds=frozenset({SnapshotKind.NATIVE}),
        default_kind=SnapshotKind.NATIVE,
        live=True,
        revert_any=True,
        needs_pause=True,
        revert_requires_shutdown=True,
        tools=("lvm", *PROGRAMS),
        tool_version=version,
        available=reason is None,
        unavailable_reason=reason,
    )


@hookimpl
def disk_claim(disk: Disk) -> str | None:
    """Claim an active LV under any path, or a ``/dev/VG/LV`` path not present (inactive)."""
    return DRIVER if devices.is_lvm_path(disk.path) else None


# -- routing and translation ----------------------------------------------------------------


def _disk(vdev: str, ctx: HookContext) -> LvmDisk:
    return LvmDisk(vdev=vdev, lvm=Lvm(ctx.run), log=ctx.log, progress=ctx.progress)


def _for_disk(vdev: str) -> AbstractContextManager[None]:
    """Attribute LVM failures to disk *vdev*."""
    return for_disk(vdev, DRIVER)


@hookimpl
def disk_snapshot_create_check(request: SnapshotRequest, ctx: HookContext) -> list[str]:
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, ctx).create_check(request, ctx.domain)


@hookimpl
def disk_snapshot_create(request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot:
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, ctx).create(request)


@hookimpl
def disk_snapshot_create_group(
    requests: Sequence[SnapshotRequest], ctx: HookContext
) -> list[DiskSnapshot] | None:
    """Every LV disk of a checkpoint in one call: one ``lvs`` per VG inside the pause."""
    return create_group(requests, Lvm(ctx.run), ctx.log, ctx.progress)


@hookimpl
def disk_snapshot_abort(request: SnapshotRequest, ctx: HookContext) -> bool:
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, ctx).abort(request)


@hookimpl
def disk_snapshot_delete_check(snapshot: DiskSnapshot, ctx: HookContext) -> list[str]:
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).delete_check(snapshot)


@hookimpl
def disk_snapshot_delete(snapshot: DiskSnapshot, ctx: HookContext) -> bool:
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).delete(snapshot)


@hookimpl
def disk_snapshot_revert_check(snapshot: DiskSnapshot, ctx: HookContext) -> list[str]:
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).revert_check(snapshot, ctx.state)


@hookimpl
def disk_snapshot_revert(snapshot: DiskSnapshot, ctx: HookContext) -> bool:
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, ctx).revert(snapshot)


@hookimpl
def disk_snapshot_list(disk: Disk, ctx: HookContext) -> list[DiskSnapshot]:
    # No ``known``: the volume group is the index, every snapshot LV is listed from it.
    with _for_disk(disk.vdev):
        return _disk(disk.vdev, ctx).list_snapshots(disk)
