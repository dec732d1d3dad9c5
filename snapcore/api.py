"""The library entry point: a :class:`Host` with its plugins and state dir, and the
:class:`DomainHandle` it opens, through which checkpoints are created, listed, reverted and
deleted. The command line is a thin layer over this module.

Example::

    import snapcore

    host = snapcore.Host(state_dir="/tmp/state")
    web1 = host.open_domain("/etc/snapcore/domains/web1.toml")
    plan = web1.plan_create(snapcore.CreateOptions(name="before-upgrade"))
    cp = web1.create(snapcore.CreateOptions(name="before-upgrade"))
    web1.revert("before-upgrade")
    web1.delete("before-upgrade")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from snapcore.config import (
    check_description,
    check_distinct_disks,
    load_domain,
    resolve_domain_path,
)
from snapcore.context import ProgressCallback
from snapcore.coordinator import Coordinator
from snapcore.errors import ConfigError, SnapshotNotFoundError
from snapcore.model import Checkpoint, CheckpointView, CreateOptions, Domain, DomainState, Plan
from snapcore.plugins import PluginRecord, Plugins, load_plugins
from snapcore.process import CommandRunner, default_runner
from snapcore.store import DEFAULT_STATE_DIR, CheckpointStore

if TYPE_CHECKING:
    from snapcore.check import CheckReport

DEFAULT_DOMAINS_DIR: Final = "/etc/snapcore/domains"
#: Seconds a command waits for another command working on the same domain.
DEFAULT_LOCK_TIMEOUT: Final = 60.0


def check_lock_timeout(seconds: float) -> float:
    """Return *seconds* if it is a finite number of seconds, 0 or more.

    :raises ConfigError: if it is not.
    """
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not (0 <= seconds < float("inf"))
    ):
        raise ConfigError(f"lock timeout must be a number of seconds, 0 or more, not {seconds!r}")
    return float(seconds)


def lock_timeout_from_env() -> float:
    """``$SNAPCORE_LOCK_TIMEOUT`` in seconds, or :data:`DEFAULT_LOCK_TIMEOUT` when unset or empty.

    :raises ConfigError: when it is set to anything but a number of seconds, 0 or more.
    """
    text = os.environ.get("SNAPCORE_LOCK_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return check_lock_timeout(float(text))
    except (ValueError, ConfigError):
        raise ConfigError(
            f"SNAPCORE_LOCK_TIMEOUT must be a number of seconds, 0 or more, not {text[:40]!r}"
        ) from None


class Host:
    """A hypervisor host as snapcore sees it: the plugins loaded and the state dir.

    Plugins load on first use, so building a ``Host`` is cheap.

    :param state_dir: where checkpoint records live (default ``$SNAPCORE_STATE_DIR`` or
        ``/var/lib/snapcore``).
    :param domains_dir: where domain names are looked up (default ``$SNAPCORE_DOMAINS_DIR``
        or ``/etc/snapcore/domains``).
    :param entry_points: load installed plugins from the ``snapcore.plugins`` entry points.
    :param disabled: plugin names not to load.
    :param runner: the command runner handed to plugins (default: the real one).
    :param progress: called with a :class:`~snapcore.model.ProgressEvent` during long steps.
    :param lock_timeout: seconds to wait for another command working on the same domain
        (default ``$SNAPCORE_LOCK_TIMEOUT``, else 60); then
        :class:`~snapcore.errors.StoreLockedError` (busy, exit 4).
    :raises ConfigError: when ``$SNAPCORE_LOCK_TIMEOUT`` is not a number of seconds.
    """

    def __init__(
        self,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        domains_dir: str | os.PathLike[str] | None = None,
        entry_points: bool = True,
        disabled: Iterable[str] = (),
        runner: CommandRunner | None = None,
        progress: ProgressCallback | None = None,
        lock_timeout: float | None = None,
    ):
        self.state_dir = Path(
            state_dir or os.environ.get("SNAPCORE_STATE_DIR") or DEFAULT_STATE_DIR
        )
        self.domains_dir = Path(
            domains_dir or os.environ.get("SNAPCORE_DOMAINS_DIR") or DEFAULT_DOMAINS_DIR
        )
        self._entry_points = entry_points
        self._disabled = tuple(disabled)
        self._extra: list[tuple[str, object]] = []
        self._plugins: Plugins | None = None
        self.runner = runner
        self.progress = progress
        self.lock_timeout = (
            check_lock_timeout(lock_timeout)
            if lock_timeout is not None
            else lock_timeout_from_env()
        )

    @property
    def plugins(self) -> Plugins:
        """The loaded plugins (loaded on first access).

        :raises PluginLoadError, BackendConflictError: when a plugin cannot be loaded.
        """
        if self._plugins is None:
            self._plugins = load_plugins(
                entry_points=self._entry_points, disabled=self._disabled, extra=self._extra
            )
        return self._plugins

    def register(self, plugin: object, name: str) -> None:
        """Add a plugin object (a module or an instance with ``@snapcore.hookimpl`` methods).

        :raises PluginLoadError, BackendConflictError: as for installed plugins.
        """
        if self._plugins is None:
            self._extra.append((name, plugin))
        else:
            self._plugins.register(plugin, name, source="registered by the caller")

    def plugin_records(self) -> list[PluginRecord]:
        """Every loaded plugin with the driver or hypervisor it provides."""
        return self.plugins.records()

    def domain_files(self) -> list[Path]:
        """Every domain file in the domains dir (``*.toml``), by name."""
        try:
            return sorted(p for p in self.domains_dir.glob("*.toml") if p.is_file())
        except OSError:
            return []

    def domain_path(self, domain: str) -> Path:
        """Where the domain file for *domain* (a path or a name) is."""
        return resolve_domain_path(domain, self.domains_dir)

    def open_domain(self, domain: str | os.PathLike[str] | Domain) -> DomainHandle:
        """Open a domain from its file (a path or a name in the domains dir) or a model.

        :raises ConfigError: the file is missing, unreadable or invalid.
        """
        if isinstance(domain, Domain):
            model = domain
        else:
            model = load_domain(self.domain_path(os.fspath(domain)))
        self._check_hypervisor_table(model)
        if not model.disks:
            model = self._disks_from_hypervisor(model)
        return DomainHandle(self, model)

    def _check_hypervisor_table(self, domain: Domain) -> None:
        """Have the domain's hypervisor plugin check its table (``[qemu]``, ``[xen]``).

        A hypervisor that is not loaded, or unavailable here, is reported when the domain is
        first used, as before; its table goes unchecked until then.

        :raises ConfigError: the plugin found a problem in the table (exit 2).
        """
        from snapcore.context import HookContext

        info = self.plugins.hypervisors.get(domain.hypervisor)
        if info is None or not info.available:
            return
        problems = self.plugins.controller(domain.hypervisor).domain_config_check(
            ctx=HookContext(domain=domain, run=self.runner or default_runner())
        )
        if problems:
            raise ConfigError("; ".join(problems), source=domain.source)

    def _disks_from_hypervisor(self, domain: Domain) -> Domain:
        """Ask the domain's hypervisor plugin for the disks its file leaves out.

        :raises ConfigError: when it knows of none, or names one image twice.
        """
        from snapcore.context import HookContext

        found = self.plugins.controller(domain.hypervisor).domain_disks(
            ctx=HookContext(domain=domain, run=self.runner or default_runner())
        )
        if not found:
            raise ConfigError(
                f"domain {domain.name!r}: its file lists no [[disk]] and hypervisor "
                f"{domain.hypervisor!r} reports none"
            )
        check_distinct_disks(found)
        return dataclasses.replace(domain, disks=tuple(found))


class DomainHandle:
    """One domain's checkpoints. Get one from :meth:`Host.open_domain`.

    Every method takes the domain's lock and first finishes or undoes an operation an earlier
    command left half-done (see :meth:`recover`). Methods raise
    :class:`~snapcore.errors.SnapcoreError` subclasses; each carries ``exit_code``.
    """

    def __init__(self, host: Host, domain: Domain):
        self.host = host
        self.domain = domain
        self.store = CheckpointStore(host.state_dir, domain)

    def _coordinator(self) -> Coordinator:
        return Coordinator(
            self.domain,
            self.host.plugins,
            self.store,
            runner=self.host.runner,
            progress=self.host.progress,
            lock_timeout=self.host.lock_timeout,
        )

    def plan_create(self, options: CreateOptions | None = None) -> Plan:
        """What :meth:`create` would do; changes nothing (the dry run).

        :raises ConfigError: a description longer than 4096 characters, among others.
        """
        options = options or CreateOptions()
        check_description(options.description)
        return self._coordinator().plan_create(options)

    def create(self, options: CreateOptions | None = None) -> Checkpoint:
        """Create a checkpoint; see :meth:`snapcore.coordinator.Coordinator.create`.

        Failure guarantee: the domain and its disks are left as they were
        (:class:`~snapcore.errors.OperationFailedError`), or what is left is listed
        (:class:`~snapcore.errors.PartialCheckpointError`). A description longer than 4096
        characters is refused (:class:`~snapcore.errors.ConfigError`) before anything is touched.
        """
        options = options or CreateOptions()
        check_description(options.description)
        return self._coordinator().create(options)

    def list(self, *, verify: bool = False) -> list[CheckpointView]:
        """Every checkpoint, oldest first; with *verify*, check each disk snapshot still exists."""
        return self._coordinator().views(verify=verify)

    def get(self, name: str, *, verify: bool = False) -> CheckpointView:
        """One checkpoint.

        :raises SnapshotNotFoundError: when there is none of that name.
        """
        for view in self.list(verify=verify):
            if view.checkpoint.name == name:
                return view
        raise SnapshotNotFoundError(self.domain.name, name)

    def plan_revert(self, name: str) -> Plan:
        """What :meth:`revert` would do; changes nothing."""
        return self._coordinator().plan_revert(name)

    def revert(self, name: str) -> None:
        """Revert the domain to checkpoint *name*; newer checkpoints are kept."""
        self._coordinator().revert(name)

    def plan_delete(self, name: str) -> Plan:
        """What :meth:`delete` would do; changes nothing."""
        return self._coordinator().plan_delete(name)

    def delete(self, name: str) -> None:
        """Delete checkpoint *name*, merging its data so no other checkpoint loses any."""
        self._coordinator().delete(name)

    def state(self) -> DomainState:
        """Whether the domain is running, paused or shut off, as its hypervisor says.

        :raises DomainUnreachableError: its monitor is missing or silent.
        """
        return self._coordinator().current_state()

    def start(self, *, paused: bool = False) -> DomainState:
        """Start the shut-off domain from its domain file (``[qemu] argv`` for QEMU)."""
        return self._coordinator().start(paused=paused)

    def stop(self) -> None:
        """Stop the domain; its disks are closed when this returns."""
        self._coordinator().stop()

    def check(self, *, repair: bool = False) -> CheckReport:
        """Reconcile the domain's records with its storage (``snapcore check``): journal and
        records readable, every recorded snapshot on storage and every snapshot on storage on
        record, images passing their format's check, nothing left over.

        :param repair: do what is safe (recover an interrupted operation, move unreadable files
            aside, remove leftovers, repair what loses no data) and report it; without it,
            nothing is changed.
        :raises StoreLockedError: another command holds the domain.
        """
        from snapcore.check import check_domain

        return check_domain(self._coordinator(), repair=repair)

    def recover(self, *, forget: bool = False) -> str | None:
        """Finish or undo an operation a crashed command left half-done; say what was done.

        :param forget: drop the pending journal entry without acting on it.
        """
        return self._coordinator().recover(forget=forget)
