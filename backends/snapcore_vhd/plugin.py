"""The ``vhd`` storage plugin: hook implementations that route and translate.

Each hook answers only for disks and snapshots whose driver is ``vhd`` (``None`` for the
others), hands the work to :class:`~snapcore_vhd.storage.VhdDisk`, and attributes every failure
to the disk: a failing vhd-util or tap-ctl becomes a :class:`~snapcore.errors.CommandError` for
the disk, a VHD the native engine cannot use or a failing file operation a
:class:`~snapcore.errors.BackendError` for it.

Disk options (``[disk.options]`` in the domain file): ``engine`` (``auto``, the default:
vhd-util when on ``PATH``, else native; ``native``; ``vhd-util``) and ``max_depth`` (the deepest
chain a snapshot may make, 30 by default as XAPI). Importing this module runs nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from snapcore._version import __version__
from snapcore.context import HookContext
from snapcore.errors import BackendError, ConfigError, for_disk
from snapcore.hookspecs import hookimpl
from snapcore.model import BackendInfo, Disk, DiskSnapshot, SnapshotKind, SnapshotRequest
from snapcore_vhd.errors import VhdError
from snapcore_vhd.names import DEFAULT_MAX_DEPTH, DRIVER, FOOTER_COOKIE, SECTOR
from snapcore_vhd.tap_ctl import PROGRAM as TAP_CTL
from snapcore_vhd.tap_ctl import TapCtl
from snapcore_vhd.vhd_util import PROGRAM as VHD_UTIL

if TYPE_CHECKING:
    from snapcore_vhd.storage import VhdDisk

# The engine (snapcore_vhd.engine, .storage and what they import) is imported on first use:
# this module is loaded by every snapcore command, most of which touch no VHD.

#: The hook API this plugin was written for.
SNAPCORE_HOOK_API: Final = (2, 0)
#: Disk options this backend reads.
OPTIONS: Final = ("engine", "max_depth")


@hookimpl
def backend_info() -> BackendInfo:
    """The vhd backend: VHD chains, through vhd-util when installed, else the native engine."""
    found = shutil.which(VHD_UTIL)
    return BackendInfo(
        driver=DRIVER,
        description="VHD chains as XAPI makes them (vhd-util, or the native engine); "
        "running Xen disks switched through tap-ctl",
        version=__version__,
        kinds=frozenset({SnapshotKind.EXTERNAL}),
        default_kind=SnapshotKind.EXTERNAL,
        live=True,
        revert_any=True,
        needs_pause=True,
        revert_requires_shutdown=True,
        max_chain=DEFAULT_MAX_DEPTH,
        tools=(VHD_UTIL, TAP_CTL),
        tool_version=VHD_UTIL if found else "native engine",
        available=True,
    )


@hookimpl
def disk_claim(disk: Disk) -> str | None:
    """Claim a file carrying a VHD footer: its copy at offset 0 (dynamic and differencing
    disks) or the footer at its end (fixed disks). Reads 16 bytes; changes nothing."""
    try:
        with open(disk.path, "rb") as f:
            if f.read(len(FOOTER_COOKIE)) == FOOTER_COOKIE:
                return DRIVER
            size = f.seek(0, 2)
            if size < SECTOR:
                return None
            f.seek(size - SECTOR)
            return DRIVER if f.read(len(FOOTER_COOKIE)) == FOOTER_COOKIE else None
    except OSError:
        return None


# -- routing and translation ----------------------------------------------------------------


def settings(options: Mapping[str, str]) -> tuple[str, int]:
    """The engine choice and depth limit from a disk's options.

    :raises ConfigError: an unknown option or a bad value.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown vhd disk option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
        )
    from snapcore_vhd import engine as engines

    choice = str(options.get("engine", "auto"))
    if choice not in engines.ENGINE_CHOICES:
        raise ConfigError(
            f"vhd option engine={choice!r}: use one of {', '.join(engines.ENGINE_CHOICES)}"
        )
    raw = str(options.get("max_depth", DEFAULT_MAX_DEPTH))
    try:
        depth = int(raw)
    except ValueError:
        depth = 0
    if not 2 <= depth <= 1000:
        raise ConfigError(f"vhd option max_depth={raw!r}: use a whole number from 2 to 1000")
    return choice, depth


def _disk(vdev: str, options: Mapping[str, str], ctx: HookContext) -> VhdDisk:
    from snapcore_vhd import engine as engines
    from snapcore_vhd.storage import VhdDisk

    choice, depth = settings(options)
    try:
        engine = engines.select(ctx.run, choice)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return VhdDisk(
        vdev=vdev,
        engine=engine,
        tap=TapCtl(ctx.run),
        hypervisor=ctx.domain.hypervisor,
        state=ctx.state,
        max_depth=depth,
        log=ctx.log,
        progress=ctx.progress,
    )


def _options(vdev: str, ctx: HookContext) -> Mapping[str, str]:
    """The options of disk *vdev* as the domain file has them now."""
    for disk in ctx.domain.disks:
        if disk.vdev == vdev:
            return disk.options
    return {}


@contextmanager
def _for_disk(vdev: str) -> Iterator[None]:
    """Attribute tool, engine and file-system failures to disk *vdev*."""
    with for_disk(vdev, DRIVER):
        try:
            yield
        except VhdError as exc:
            raise BackendError(str(exc), driver=DRIVER, vdev=vdev) from exc


@hookimpl
def disk_snapshot_create_check(request: SnapshotRequest, ctx: HookContext) -> list[str]:
    try:
        disk = _disk(request.disk.vdev, request.disk.options, ctx)
    except ConfigError as exc:
        return [str(exc)]
    with _for_disk(request.disk.vdev):
        return disk.create_check(request)


@hookimpl
def disk_snapshot_create(request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot:
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, request.disk.options, ctx).create(request)


@hookimpl
def disk_snapshot_abort(request: SnapshotRequest, ctx: HookContext) -> bool:
    with _for_disk(request.disk.vdev):
        return _disk(request.disk.vdev, request.disk.options, ctx).abort(request)


@hookimpl
def disk_snapshot_delete_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str]:
    try:
        disk = _disk(snapshot.vdev, _options(snapshot.vdev, ctx), ctx)
    except ConfigError as exc:
        return [str(exc)]
    with _for_disk(snapshot.vdev):
        return disk.delete_check(snapshot, others)


@hookimpl
def disk_snapshot_delete(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool:
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, _options(snapshot.vdev, ctx), ctx).delete(snapshot, others)


@hookimpl
def disk_snapshot_revert_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str]:
    try:
        disk = _disk(snapshot.vdev, _options(snapshot.vdev, ctx), ctx)
    except ConfigError as exc:
        return [str(exc)]
    with _for_disk(snapshot.vdev):
        return disk.revert_check(snapshot)


@hookimpl
def disk_snapshot_revert(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool:
    with _for_disk(snapshot.vdev):
        return _disk(snapshot.vdev, _options(snapshot.vdev, ctx), ctx).revert(snapshot)


@hookimpl
def disk_verify(disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext) -> list[str]:
    """The native engine's ``vhd-util check -p`` of the disk's leaf and of each recorded
    snapshot's base (read-only, whichever engine changes the files), a base that is the leaf's
    own inode, a kept-base name (``*.base-<uuid>.vhd``) that is only a stray second name, and
    scratch files of snapcore's naming."""
    if disk.driver not in (None, DRIVER):
        return []
    from snapcore_vhd.storage import verify

    with _for_disk(disk.vdev):
        return verify(disk, known)


@hookimpl
def disk_repair(disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext) -> list[str]:
    """Remove stray kept-base names and scratch files of snapcore's naming (no data is in
    them: a stray name's data stays under its other name)."""
    if disk.driver not in (None, DRIVER):
        return []
    from snapcore_vhd.storage import repair

    with _for_disk(disk.vdev):
        return repair(disk, known)


@hookimpl
def disk_snapshot_list(
    disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
) -> list[DiskSnapshot]:
    with _for_disk(disk.vdev):
        return _disk(disk.vdev, disk.options, ctx).list_snapshots(disk, known)
