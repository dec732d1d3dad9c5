"""The built-in ``none`` hypervisor: domains that are never running (disks only)."""

from __future__ import annotations

from snapcore.context import HookContext
from snapcore.hookspecs import hookimpl
from snapcore.model import DomainState, HypervisorInfo

NAME = "none"


@hookimpl
def hypervisor_info() -> HypervisorInfo:
    return HypervisorInfo(name=NAME, description="no hypervisor: the domain is never running")


@hookimpl
def domain_state(ctx: HookContext) -> DomainState:
    return DomainState.SHUTOFF
