"""The ``xen`` hypervisor plugin: Xen domains through ``xl``.

Every hook answers only for domains whose ``hypervisor`` is ``xen`` (``None`` for the others).
The xl domain is the one named like the snapcore domain. State comes from ``xl list``; disks
the hypervisor has open from ``xl list -l`` (libxl JSON); pause and resume are ``xl pause``/``xl
unpause`` (Xen counts pauses: a domain its operator paused stays paused); memory is saved with
``xl save -p`` and restored with ``xl restore``; a domain is started with ``xl create`` from the
xl configuration file the domain file's ``[xen] config`` names, and stopped before a revert
with ``xl destroy``. A running domain's VHD disks are switched to their new leaves by the vhd
backend through tap-ctl; its qcow2 disks by the qcow2 backend through the ``qmp`` service, the
QMP socket of the qdisk QEMU that serves them (``/run/xen/qmp-libxl-DOMID``).

libxl suspends a PV or PVH guest (and an HVM guest with PV drivers) by asking the guest, which
a paused guest cannot answer (``xl save`` then fails after libxl's 60 s timeout): this plugin
sets ``memory_first``, so the memory is saved while the guest runs and the disks are switched
while ``xl save -p`` leaves it paused. Checked against Xen 4.17.7 in ``tests/xen``
(scripts/xen-guest.sh; docs/xen.md). Importing this module runs nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Final

from snapcore._version import __version__
from snapcore.context import HookContext
from snapcore.errors import BackendError, CommandError, ConfigError, DomainStateError
from snapcore.hookspecs import hookimpl
from snapcore.model import Disk, DomainState, HypervisorInfo, MemoryImage
from snapcore_xen.settings import XenSettings
from snapcore_xen.xl import PROGRAM, Xl

#: The hook API this plugin was written for.
SNAPCORE_HOOK_API: Final = (2, 0)
NAME: Final = "xen"
#: The ``format`` of the memory images this plugin writes.
MEMORY_FORMAT: Final = "xl-save"
#: libxl's QMP socket of domain *domid*'s device model: for a PV domain, the QEMU that serves
#: its ``backendtype=qdisk`` disks (qcow2 and vhd images). A restored domain has a new domid,
#: so a new socket.
QMP_SOCKET: Final = "/run/xen/qmp-libxl-{domid}"


@hookimpl
def hypervisor_info() -> HypervisorInfo:
    found = shutil.which(PROGRAM) is not None
    return HypervisorInfo(
        memory_first=True,  # PV guests suspend themselves: they must be running
        name=NAME,
        description=f"Xen domains through xl (snapcore {__version__})",
        memory=True,
        tools=(PROGRAM,),
        available=found,
        unavailable_reason=None if found else f"{PROGRAM} is not installed (Xen tools)",
    )


@contextlib.contextmanager
def _translate(ctx: HookContext) -> Iterator[None]:
    """An xl that cannot be run is a configuration problem (exit 2); one that fails, a
    backend failure naming the domain."""
    try:
        yield
    except CommandError as exc:
        if exc.returncode is None and "not found" in exc.stderr:
            raise ConfigError(
                f"domain {ctx.domain.name!r}: {PROGRAM} cannot be run: {exc.stderr}"
            ) from exc
        raise


@hookimpl
def domain_state(ctx: HookContext) -> DomainState:
    with _translate(ctx):
        row = Xl(ctx.run).listed(ctx.domain.name)
    if row is None:
        return DomainState.SHUTOFF
    state = row.state
    if state is None:
        raise DomainStateError(
            ctx.domain.name,
            f"shutting down, crashed or dying (xl state {row.flags})",
            "running, paused or destroyed",
            "a snapshot",
        )
    return state


@hookimpl
def domain_preflight(ctx: HookContext) -> list[str]:
    """Every writable disk of the domain file must be a disk libxl has open for the same
    ``vdev`` (``xl list -l``): snapcore switches files, and must switch the right ones."""
    with _translate(ctx):
        config = Xl(ctx.run).config(ctx.domain.name)
    if config is None:
        return []
    opened = {d.vdev: d.pdev_path for d in config.disks}
    blockers = []
    for disk in ctx.domain.disks:
        if disk.readonly:
            continue
        path = opened.get(disk.vdev)
        if path is None:
            blockers.append(
                f"disk {disk.vdev}: domain {ctx.domain.name!r} has no disk {disk.vdev} in xl"
            )
        elif os.path.realpath(path) != os.path.realpath(disk.path):
            blockers.append(
                f"disk {disk.vdev}: the domain file says {disk.path} but xl has {path} open"
            )
    return blockers


@hookimpl
def domain_config_check(ctx: HookContext) -> list[str]:
    """Check the ``[xen]`` table (``config``: the xl configuration file's absolute path)."""
    try:
        XenSettings.of(ctx.domain)
    except ConfigError as exc:
        return [exc.message]
    return []


@hookimpl
def domain_start(paused: bool, ctx: HookContext) -> bool:
    """``xl create -p CONFIG``, CONFIG being the domain file's ``[xen] config``: the xl
    configuration file of the domain, which must name it as the domain file does; then, unless
    *paused*, ``xl unpause``. A domain whose VHD chain libxl would give to the qdisk QEMU is
    destroyed before its guest runs (:func:`_refuse_vhd_chains_on_qdisk`)."""
    settings = XenSettings.of(ctx.domain)
    if settings.config is None:
        raise ConfigError(
            f"domain {ctx.domain.name!r}: the domain file names no xl configuration file "
            "([xen] config) to start it from"
        )
    if not os.path.isfile(settings.config):
        raise ConfigError(f"domain {ctx.domain.name!r}: no xl configuration file {settings.config}")
    xl = Xl(ctx.run)
    with _translate(ctx):
        xl.create(settings.config, paused=True)
        _refuse_vhd_chains_on_qdisk(xl, ctx, "start it")
        if not paused:
            xl.unpause(ctx.domain.name)
    return True


#: VHD footer: the cookie, and the disk type's offset and value for a differencing disk.
_VHD_COOKIE: Final = b"conectix"
_VHD_TYPE_OFFSET: Final = 60
_VHD_DIFFERENCING: Final = 4


def _is_differencing_vhd(path: str) -> bool:
    """Whether *path* is a differencing VHD (a disk with a parent): its footer copy at offset 0
    (dynamic and differencing disks have one) says disk type 4. Unreadable: ``False`` (libxl
    has opened it already; the vhd driver's own checks judge it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if len(head) < 512 or head[:8] != _VHD_COOKIE:
        return False
    return int.from_bytes(head[_VHD_TYPE_OFFSET : _VHD_TYPE_OFFSET + 4], "big") == _VHD_DIFFERENCING


def _refuse_vhd_chains_on_qdisk(xl: Xl, ctx: HookContext, doing: str) -> None:
    """Called with the domain just built paused (``xl create -p``, ``xl restore -p``), before
    its guest has run: if libxl gives a differencing VHD (the leaf a snapshot or a revert
    leaves) to the qdisk QEMU, destroy the domain again and refuse. QEMU's vpc driver opens a
    differencing VHD as a dynamic one: the guest would read zeros where the parent holds its
    data, and QEMU's first write would overwrite the leaf's batmap and parent locators
    (seen on Xen 4.17 with QEMU 7.2: docs/xen.md, "What works with VHD").

    Failure guarantee: when it raises, the domain is destroyed and no guest code ran, so no
    disk was written.

    :raises ConfigError: (exit 2) naming each such disk and the ways out.
    """
    config = xl.config(ctx.domain.name)
    if config is None:
        return
    chains = [
        f"{d.vdev} ({d.pdev_path})"
        for d in config.disks
        if d.format == "vhd" and d.backend == "qdisk" and _is_differencing_vhd(d.pdev_path)
    ]
    if not chains:
        return
    xl.destroy(ctx.domain.name)
    raise ConfigError(
        f"domain {ctx.domain.name!r}: refusing to {doing}: disk "
        + ", ".join(chains)
        + " is a VHD with a parent (a snapshot's leaf) that libxl gives to the qdisk QEMU, "
        "whose vpc driver ignores the parent and damages the leaf at its first write; serve "
        "it with blktap (backendtype=tap) or delete the domain's checkpoints first"
    )


@hookimpl
def domain_memory_plan(path: str, ctx: HookContext) -> str | None:
    return (
        f"xl save -p to {path}: the domain stays stopped while its memory is written "
        "(PV and PVH guests must answer libxl's suspend request)"
    )


@hookimpl
def domain_pause(ctx: HookContext) -> bool:
    with _translate(ctx):
        Xl(ctx.run).pause(ctx.domain.name)
    return True


@hookimpl
def domain_resume(ctx: HookContext) -> bool:
    with _translate(ctx):
        Xl(ctx.run).unpause(ctx.domain.name)
    return True


@hookimpl
def domain_quiesce(ctx: HookContext) -> bool:
    """xl has no guest-agent freeze: the checkpoint goes on crash-consistent."""
    return False


@hookimpl
def domain_thaw(ctx: HookContext) -> bool:
    return True


@hookimpl
def domain_stop(ctx: HookContext) -> bool:
    """``xl destroy``: a revert throws the running state away anyway; libxl tears down the
    domain's devices (its tapdisks included) before xl returns."""
    xl = Xl(ctx.run)
    with _translate(ctx):
        if xl.listed(ctx.domain.name) is not None:
            xl.destroy(ctx.domain.name)
    return True


@hookimpl
def domain_memory_save(path: str, ctx: HookContext) -> MemoryImage:
    """``xl save -p``: called with the domain running (``memory_first``: PV guests suspend
    themselves when asked), it is suspended while its memory is written (xl has no live save)
    and left paused for the disk snapshots; the coordinator resumes it afterwards."""
    if os.path.lexists(path):
        raise BackendError(f"memory image {path} already exists")
    try:
        with _translate(ctx):
            Xl(ctx.run).save(ctx.domain.name, path, keep="paused")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # xl creates the file before it fails
        raise
    return MemoryImage(path=path, size=os.path.getsize(path), format=MEMORY_FORMAT)


@hookimpl
def domain_memory_restore(image: MemoryImage, state: DomainState, ctx: HookContext) -> bool:
    if image.format not in (MEMORY_FORMAT, ""):
        raise BackendError(
            f"memory image {image.path} was written as {image.format!r}, not by xl save"
        )
    xl = Xl(ctx.run)
    with _translate(ctx):
        xl.restore(image.path, paused=True)
        _refuse_vhd_chains_on_qdisk(xl, ctx, "restore its memory")
        if state is not DomainState.PAUSED:
            xl.unpause(ctx.domain.name)
    return True


@hookimpl
def domain_service(name: str, ctx: HookContext) -> object | None:
    """``"qmp"``: a :class:`~snapcore_qemu.qmp.QMPSession` with the QMP monitor of the qdisk
    QEMU serving the running domain's disks (``/run/xen/qmp-libxl-DOMID``, the domid from ``xl
    list``), connected on first use; the qcow2 plugin snapshots the disks of a running domain
    through it. ``None`` for a domain xl does not run, or one without a device model."""
    from snapcore_qemu.qmp import SERVICE, QMPSession

    if name != SERVICE:
        return None
    with _translate(ctx):
        row = Xl(ctx.run).listed(ctx.domain.name)
    if row is None:
        return None
    path = QMP_SOCKET.format(domid=row.domid)
    if not os.path.exists(path):
        return None
    return QMPSession(path, domain=ctx.domain.name)


@hookimpl
def domain_disks(ctx: HookContext) -> list[Disk]:
    """The domain's disks from its libxl configuration (``xl list -l``): ``pdev_path``,
    ``vdev`` and ``format`` (vhd and qcow2 name their driver), for a domain file that lists
    none."""
    with _translate(ctx):
        config = Xl(ctx.run).config(ctx.domain.name)
    if config is None:
        return []
    return [d.to_disk() for d in config.disks]
