"""Hook implementations of the ``qemu`` hypervisor plugin: each hands the work to
:class:`~snapcore_qemu.domain.QemuDomain`."""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING, Final

from snapcore._version import __version__
from snapcore.context import HookContext
from snapcore.errors import ConfigError
from snapcore.hookspecs import HOOK_API_VERSION, hookimpl
from snapcore.model import DomainState, HypervisorInfo, MemoryImage
from snapcore_qemu import NAME

if TYPE_CHECKING:
    from snapcore_qemu.domain import QemuDomain

SNAPCORE_HOOK_API: Final = HOOK_API_VERSION
PROGRAM: Final = "qemu-system-x86_64"


def _domain(ctx: HookContext) -> QemuDomain:
    # imported for QEMU domains only: QMP brings asyncio, ~15 ms of every command's start-up
    from snapcore_qemu.domain import QemuDomain

    return QemuDomain(ctx)


@functools.cache
def _info() -> HypervisorInfo:
    found = shutil.which(PROGRAM) is not None
    return HypervisorInfo(
        name=NAME,
        description=f"QEMU over QMP (snapcore {__version__})",
        memory=True,
        tools=(PROGRAM,),
        available=True,
        unavailable_reason=None if found else f"{PROGRAM} not found (only needed to start)",
    )


@hookimpl
def hypervisor_info() -> HypervisorInfo:
    return _info()


@hookimpl
def domain_config_check(ctx: HookContext) -> list[str]:
    """Check the ``[qemu]`` table (snapcore keeps it as TOML gave it)."""
    from snapcore_qemu.settings import QemuSettings

    try:
        QemuSettings.of(ctx.domain)
    except ConfigError as exc:
        return [exc.message]
    return []


@hookimpl
def domain_service(name: str, ctx: HookContext) -> object | None:
    """``"qmp"``: a :class:`~snapcore_qemu.qmp.QMPSession` with the domain's monitor (``[qemu]
    qmp``), connected on first use; snapcore shares it within an operation and closes it."""
    from snapcore_qemu.qmp import SERVICE, QMPSession
    from snapcore_qemu.settings import QemuSettings

    settings = QemuSettings.of(ctx.domain)
    if name != SERVICE or not settings.qmp:
        return None
    return QMPSession(settings.qmp, domain=ctx.domain.name, timeout=settings.timeout)


@hookimpl
def domain_state(ctx: HookContext) -> DomainState:
    return _domain(ctx).state()


@hookimpl
def domain_preflight(ctx: HookContext) -> list[str]:
    return _domain(ctx).check_disks()


@hookimpl
def domain_quiesce(ctx: HookContext) -> bool:
    return _domain(ctx).quiesce()


@hookimpl
def domain_thaw(ctx: HookContext) -> bool:
    _domain(ctx).thaw()
    return True


@hookimpl
def domain_pause(ctx: HookContext) -> bool:
    _domain(ctx).pause()
    return True


@hookimpl
def domain_resume(ctx: HookContext) -> bool:
    _domain(ctx).resume()
    return True


@hookimpl
def domain_start(paused: bool, ctx: HookContext) -> bool:
    _domain(ctx).start(paused=paused)
    return True


@hookimpl
def domain_stop(ctx: HookContext) -> bool:
    _domain(ctx).stop()
    return True


@hookimpl
def domain_memory_plan(path: str, ctx: HookContext) -> str:
    return _domain(ctx).memory_plan(path, ctx.state)


@hookimpl
def domain_memory_prepare(path: str, ctx: HookContext) -> bool:
    _domain(ctx).prepare_memory(path, live=ctx.state is DomainState.RUNNING)
    return True


@hookimpl
def domain_memory_save(path: str, ctx: HookContext) -> MemoryImage:
    return _domain(ctx).save_memory(path, live=ctx.state is DomainState.RUNNING)


@hookimpl
def domain_memory_restore(image: MemoryImage, state: DomainState, ctx: HookContext) -> bool:
    _domain(ctx).restore_memory(image, state)
    return True
