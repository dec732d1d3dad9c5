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
import logging
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from snapcore.apphooks import HookOutcome, HookRunner, hooks_dir_from_env
from snapcore.config import (
    check_description,
    check_distinct_disks,
    load_domain,
    resolve_domain_path,
)
from snapcore.context import ProgressCallback
from snapcore.coordinator import Coordinator
from snapcore.errors import (
    ConfigError,
    CreateBlockedError,
    PartialCheckpointError,
    SnapcoreError,
    SnapshotNotFoundError,
    StoreLockedError,
)
from snapcore.model import (
    Checkpoint,
    CheckpointView,
    CreateOptions,
    Disk,
    Domain,
    DomainState,
    Operation,
    Plan,
)
from snapcore.plugins import PluginRecord, Plugins, load_plugins
from snapcore.policy import (
    Phase,
    PolicyAction,
    PolicyRun,
    checkpoint_times,
    describe_slot,
    plan_policy_run,
)
from snapcore.process import CommandRunner, default_runner
from snapcore.retention import Verdict
from snapcore.store import DEFAULT_STATE_DIR, CheckpointStore

if TYPE_CHECKING:
    from snapcore.check import CheckReport

log = logging.getLogger(__name__)

DEFAULT_DOMAINS_DIR: Final = "/etc/snapcore/domains"
_CHANGES: Final = (Operation.REVERT, Operation.DELETE)
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
    :param hooks_dir: the directory of hooks run around every create, revert and delete
        (default ``$SNAPCORE_HOOKS_DIR`` or ``/etc/snapcore/hooks.d``; ``""``: none).
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
        hooks_dir: str | os.PathLike[str] | None = None,
    ):
        self.hooks_dir: Path | None = None
        hooks = hooks_dir_from_env() if hooks_dir is None else os.fspath(hooks_dir)
        if hooks:
            self.hooks_dir = Path(hooks)
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
        #: The hooks run by the last create, revert or delete (or run of the policy), each
        #: with how it ran; a post- hook's failure is only reported here (and logged).
        self.hook_outcomes: list[HookOutcome] = []

    def _coordinator(
        self,
        *,
        hooks: HookRunner | None = None,
        cause: str = "command",
        now: datetime | None = None,
        lock_timeout: float | None = None,
    ) -> Coordinator:
        before = None
        if hooks is not None:
            runner = hooks

            def before(plan: Plan) -> None:
                if plan.operation is Operation.CREATE or plan.operation in _CHANGES:
                    runner.run(
                        Phase.of("pre", plan.operation.value),
                        plan.name,
                        cause=cause,
                        details={"plan": plan.to_json()},
                    )

        return Coordinator(
            self.domain,
            self.host.plugins,
            self.store,
            runner=self.host.runner,
            progress=self.host.progress,
            lock_timeout=self.host.lock_timeout if lock_timeout is None else lock_timeout,
            before_change=before,
            now=now,
        )

    def hook_runner(self) -> HookRunner:
        """The runner of this domain's hooks (the hooks dir's, then its file's ``[[hook]]``).

        The domain it describes to hooks has each disk's driver filled in where a plugin
        claims the disk (left out where none does: the operation itself then says why); the
        disks are claimed only when a hook runs.
        """

        def resolve(disk: Disk) -> Disk:
            try:
                return self.host.plugins.resolve_disk(disk) if not disk.driver else disk
            except SnapcoreError:
                return disk

        return HookRunner(
            self.domain,
            hooks_dir=self.host.hooks_dir,
            state_dir=self.host.state_dir,
            resolve=resolve,
        )

    def _with_hooks(
        self,
        operation: str,
        name: str | None,
        act: Callable[[Coordinator], Any],
        *,
        coordinator: Coordinator | None = None,
        hooks: HookRunner | None = None,
        cause: str = "command",
    ) -> Any:
        """Run *act* with the pre- hooks of *operation* run by the coordinator once the
        request is validated, and its post- hooks once it is done (their failures reported
        in :attr:`hook_outcomes`, never undoing it)."""
        if hooks is None:
            hooks = self.hook_runner()
            self.hook_outcomes = hooks.outcomes
        hooks.hooks()  # an unreadable hooks dir is refused before anything is touched
        coord = coordinator or self._coordinator(hooks=hooks, cause=cause)
        result = act(coord)
        done = result.name if isinstance(result, Checkpoint) else name
        details: dict[str, Any] = {}
        if isinstance(result, Checkpoint):
            details["checkpoint"] = result.to_json()
        try:
            hooks.run(Phase.of("post", operation), done or "", cause=cause, details=details)
        except SnapcoreError as exc:  # pragma: no cover - post- hooks are never fatal
            log.warning("post-%s hooks: %s", operation, exc)
        return result

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
        checkpoint: Checkpoint = self._with_hooks(
            "create", options.name, lambda coord: coord.create(options)
        )
        return checkpoint

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
        """Revert the domain to checkpoint *name*; newer checkpoints are kept.

        The hooks of ``pre-revert`` run once the revert is validated and before anything is
        touched (a fatal one's failure raises :class:`~snapcore.errors.HookFailedError`,
        exit 2, nothing changed); those of ``post-revert`` once it is done.
        """
        self._with_hooks("revert", name, lambda coord: coord.revert(name))

    def plan_delete(self, name: str) -> Plan:
        """What :meth:`delete` would do; changes nothing."""
        return self._coordinator().plan_delete(name)

    def delete(self, name: str) -> None:
        """Delete checkpoint *name*, merging its data so no other checkpoint loses any.

        Hooks run as for :meth:`revert`, at ``pre-delete`` and ``post-delete``.
        """
        self._with_hooks("delete", name, lambda coord: coord.delete(name))

    def set_expiry(self, name: str, expiry: datetime | None) -> Checkpoint:
        """Give checkpoint *name* an expiry (a timezone-aware time; ``None`` removes it) and
        return its new record. ``run-policy`` prunes it once the expiry has passed, whether
        the policy made it or not; with an expiry, the keep rules no longer apply to it.

        Failure guarantee: the record is either unchanged or rewritten whole.

        :raises ConfigError: a naive *expiry*.
        :raises SnapshotNotFoundError: there is no such checkpoint.
        :raises StoreLockedError: another command holds the domain.
        """
        if expiry is not None and (expiry.tzinfo is None or expiry.utcoffset() is None):
            raise ConfigError(f"expiry {expiry.isoformat()} has no time zone")
        epoch = None if expiry is None else int(expiry.timestamp())
        coord = self._coordinator()
        with coord.held():
            checkpoint = dataclasses.replace(self.store.get(name), expiry=epoch)
            self.store.save(checkpoint)
        return checkpoint

    def run_policy(
        self,
        *,
        now: datetime | None = None,
        dry_run: bool = False,
        lock_timeout: float | None = None,
    ) -> PolicyRun:
        """Run the domain's snapshot policy once (``snapcore run-policy``): with the domain
        held for the whole run, create the checkpoint of the slot due, if one is (deleting
        first the prunable checkpoints a chain limit needs gone), recording its slot and
        expiry in its record, then delete the checkpoints retention prunes, oldest first.

        Safe to run at any time and as often as wished: the last slot done is read from the
        records, so a run repeated, or one killed after its create, never makes a second
        checkpoint for a slot, and a run killed while pruning is finished by the next one.

        Errors are data: the result's ``status`` is ``"skipped"`` (no policy), ``"busy"``
        (another command held the domain for *lock_timeout*; the next run catches up),
        ``"failed"`` (``error`` and ``exit_code`` say why; the steps done are in ``actions``)
        or ``"done"``. A fatal pre- hook's failure stops the step it guards (and the run).

        :param now: the time to judge at (default: the clock); timezone-aware.
        :param dry_run: plan only: touch nothing, take no lock, run no hook.
        :param lock_timeout: seconds to wait for the domain (default: the host's).
        :raises ValueError: a naive *now*.
        """
        if now is None:
            now = datetime.now(UTC)
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware, not {now.isoformat()}")
        now = now.astimezone(UTC)
        run = _PolicyRunner(self, now, dry_run, lock_timeout)
        return run.run()

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

    def policy_disks(self) -> tuple[str, ...]:
        """The disks a scheduled checkpoint includes: every writable disk."""
        return tuple(d.vdev for d in self.domain.disks if not d.readonly)

    def recover(self, *, forget: bool = False) -> str | None:
        """Finish or undo an operation a crashed command left half-done; say what was done.

        :param forget: drop the pending journal entry without acting on it.
        """
        return self._coordinator().recover(forget=forget)


class _PolicyRunner:
    """One run of a domain's policy: :meth:`DomainHandle.run_policy`."""

    def __init__(
        self, handle: DomainHandle, now: datetime, dry_run: bool, lock_timeout: float | None
    ):
        self.handle = handle
        self.now = now
        self.dry_run = dry_run
        self.lock_timeout = lock_timeout
        self.actions: list[PolicyAction] = []
        self.slot: datetime | None = None
        self.kept: tuple[tuple[str, str], ...] = ()

    def _result(self, status: str, error: SnapcoreError | None = None, **kw: Any) -> PolicyRun:
        dom = self.handle.domain
        hooks = [o for o in self.handle.hook_outcomes if not o.ok and not o.fatal]
        return PolicyRun(
            domain=dom.name,
            source=dom.source,
            status=status,
            now=self.now,
            slot=self.slot,
            actions=tuple(self.actions),
            kept=self.kept,
            hooks=tuple(hooks),
            error=str(error) if error is not None else kw.pop("reason", None),
            exit_code=error.exit_code if error is not None and status == "failed" else 0,
        )

    def run(self) -> PolicyRun:
        handle = self.handle
        handle.hook_outcomes = []
        if handle.domain.policy is None:
            return self._result("skipped", reason="no [snapshots] table")
        try:
            if self.dry_run:
                self._plan_only()
                return self._result("planned")
            hooks = handle.hook_runner()
            handle.hook_outcomes = hooks.outcomes
            hooks.hooks()
            coord = handle._coordinator(
                hooks=hooks, cause="policy", now=self.now, lock_timeout=self.lock_timeout
            )
            with coord.held():
                error = self._run(coord, hooks)
        except StoreLockedError as exc:
            return self._result("busy", reason=str(exc))
        except SnapcoreError as exc:
            return self._result("failed", exc)
        return self._result("done") if error is None else self._result("failed", error)

    def _plan(self, coord: Coordinator | None) -> Any:
        handle = self.handle
        policy = handle.domain.policy
        assert policy is not None
        limits = coord.chain_limits() if coord else handle._coordinator().chain_limits()
        return plan_policy_run(policy, handle.store.list(), self.now, limits, handle.policy_disks())

    def _plan_only(self) -> None:
        handle = self.handle
        policy = handle.domain.policy
        assert policy is not None
        plan = self._plan(None)
        self.slot = plan.slot
        checkpoints = handle.store.list()
        times = {t.name: t for t in checkpoint_times(checkpoints)}
        if plan.create is not None and plan.slot is not None:
            for name in plan.fit.delete:
                self.actions.append(
                    PolicyAction(
                        action="delete",
                        name=name,
                        why=f"makes room for {plan.create} in a disk's chain (max_chain); "
                        f"{_reasons(plan.retention.verdict(name))}",
                    )
                )
                times.pop(name, None)
            if not plan.fit.fits:
                raise CreateBlockedError(plan.create, plan.fit.blockers())
            self.actions.append(
                PolicyAction(
                    action="create",
                    name=plan.create,
                    why=describe_slot(plan.slot, policy.tz),
                    slot=plan.slot,
                    expiry=plan.expiry,
                )
            )
            from snapcore.retention import CheckpointTimes

            times[plan.create] = CheckpointTimes(
                name=plan.create, created=self.now, expiry=plan.expiry, slot=plan.slot
            )
        from snapcore.retention import plan_retention

        retention = plan_retention(times.values(), policy.keep, self.now, tz=policy.tz)
        for verdict in retention.verdicts:
            if not verdict.keep:
                self.actions.append(
                    PolicyAction(action="prune", name=verdict.name, why=_reasons(verdict))
                )
        self.kept = tuple((v.name, str(v)) for v in retention.verdicts if v.keep)

    def _run(self, coord: Coordinator, hooks: HookRunner) -> SnapcoreError | None:
        """The steps, with the domain held; return the first error of a step that failed
        (the others still run, but no step runs after one that left something to recover)."""
        handle = self.handle
        policy = handle.domain.policy
        assert policy is not None
        plan = self._plan(coord)
        self.slot = plan.slot
        first: SnapcoreError | None = None

        def step(action: PolicyAction, do: Callable[[], object]) -> bool:
            nonlocal first
            try:
                do()
            except SnapcoreError as exc:
                self.actions.append(dataclasses.replace(action, error=str(exc)))
                first = first or exc
                if isinstance(exc, PartialCheckpointError) or exc.exit_code == 3:
                    raise _Stop from exc
                return False
            self.actions.append(dataclasses.replace(action, done=True))
            return True

        def delete(name: str) -> None:
            handle._with_hooks(
                "delete",
                name,
                lambda c: c.delete(name),
                coordinator=coord,
                hooks=hooks,
                cause="policy",
            )

        try:
            if plan.create is not None and plan.slot is not None:
                create = PolicyAction(
                    action="create",
                    name=plan.create,
                    why=describe_slot(plan.slot, policy.tz),
                    slot=plan.slot,
                    expiry=plan.expiry,
                )
                if not plan.fit.fits:
                    error = CreateBlockedError(plan.create, plan.fit.blockers())
                    self.actions.append(dataclasses.replace(create, error=str(error)))
                    first = error
                else:
                    room = True
                    for name in plan.fit.delete:
                        room = room and step(
                            PolicyAction(
                                action="delete",
                                name=name,
                                why=f"makes room for {plan.create} in a disk's chain "
                                f"(max_chain); {_reasons(plan.retention.verdict(name))}",
                            ),
                            lambda name=name: delete(name),  # type: ignore[misc]
                        )
                    if room:
                        options = CreateOptions(
                            name=plan.create,
                            description="scheduled for "
                            + plan.slot.astimezone(policy.tz).isoformat(timespec="minutes"),
                            memory=policy.memory,
                            policy_slot=int(plan.slot.timestamp()),
                            expiry=int(plan.expiry.timestamp()) if plan.expiry else None,
                        )
                        step(
                            create,
                            lambda: handle._with_hooks(
                                "create",
                                plan.create,
                                lambda c: c.create(options),
                                coordinator=coord,
                                hooks=hooks,
                                cause="policy",
                            ),
                        )
            from snapcore.retention import plan_retention

            retention = plan_retention(
                checkpoint_times(handle.store.list()), policy.keep, self.now, tz=policy.tz
            )
            for verdict in retention.verdicts:
                if not verdict.keep:
                    step(
                        PolicyAction(action="prune", name=verdict.name, why=_reasons(verdict)),
                        lambda name=verdict.name: delete(name),  # type: ignore[misc]
                    )
            self.kept = tuple((v.name, str(v)) for v in retention.verdicts if v.keep)
        except _Stop:
            pass
        return first


def _reasons(verdict: Verdict) -> str:
    return "; ".join(verdict.reasons)


class _Stop(Exception):
    """A step left something for ``snapcore recover``: no further step runs."""
