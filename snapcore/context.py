"""The context every hook receives: how to run commands, where to report progress, the domain."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from snapcore.model import Domain, DomainState, ProgressEvent
from snapcore.process import CommandRunner, default_runner

ProgressCallback = Callable[[ProgressEvent], None]


def _ignore_progress(event: ProgressEvent) -> None:
    del event


def _no_service(name: str) -> object | None:
    del name
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoContext:
    """Given to ``backend_info`` and ``hypervisor_info`` as ``ctx``: no domain yet, but the
    runner to ask a tool its version with.

    :ivar run: the command runner; run the plugin's tool through it (``tool --version``).
    :ivar log: a logger for the plugin's messages.
    """

    run: CommandRunner = field(default_factory=default_runner)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("snapcore.plugin"))


@dataclass(frozen=True, slots=True, kw_only=True)
class HookContext:
    """Given to every hook as ``ctx``.

    :ivar domain: the domain being worked on.
    :ivar state: its state when the operation started.
    :ivar run: the command runner; plugins run every external command through it.
    :ivar log: a logger for the plugin's messages (only the CLI prints).
    :ivar progress: call with a :class:`~snapcore.model.ProgressEvent` during long steps.
    :ivar work_dir: a directory private to this domain in the state dir, for plugin files.
    :ivar service: ``ctx.service(name)`` is the service *name* the domain's hypervisor offers
        storage plugins (hook ``domain_service``), shared by every hook of one operation and
        closed by snapcore at its end; ``None`` when it offers none. The ``qemu`` hypervisor
        offers ``"qmp"``, a ``snapcore_qemu.qmp.QMPSession`` with the domain's monitor.
    """

    domain: Domain
    state: DomainState = DomainState.SHUTOFF
    run: CommandRunner = field(default_factory=default_runner)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("snapcore.plugin"))
    progress: ProgressCallback = _ignore_progress
    work_dir: Path | None = None
    service: Callable[[str], object | None] = _no_service
