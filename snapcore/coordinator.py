"""Create, delete and revert checkpoints across any number of disks and backends.

Every operation follows the same shape: take the domain's lock → finish or undo whatever an
interrupted command left in the journal → plan and preflight every disk (nothing is touched if
any disk objects; ``--dry-run`` stops here) → journal the intent → run the per-disk steps,
disks in parallel → commit the records → clear the journal.

A checkpoint of a running domain: every driver's snapshots and the memory save prepared while
the guest runs (``disk_snapshot_prepare_group``, ``domain_memory_prepare``) → quiesce
(disk-only, with a guest agent) → pause → every disk's snapshot (each driver's disks in one
``disk_snapshot_create_group`` call when it can, drivers in parallel) → memory save (the
memory as it is now; the guest may run again while it is written) → resume. A
``memory_first`` hypervisor saves memory first instead, which leaves the guest paused (Xen PV
guests must run to be suspended).

Failure handling:

* **create** is all-or-nothing: on any failure every disk's create is aborted (in reverse
  order), the memory image removed, the domain resumed, and :class:`OperationFailedError`
  (exit 1) raised. If an abort itself fails, :class:`PartialCheckpointError` (exit 3) lists
  what is left, and the journal stays so that ``snapcore recover`` can retry.
* **delete** and **revert** are preflighted on every disk first; their per-disk steps are
  idempotent, so after a failure or a crash they are completed by running them again (``snapcore
  recover``, or the next command on the domain). A failure after some disks were changed raises
  :class:`PartialCheckpointError` naming the disks done and not done; for a delete the record
  is kept and running the delete again finishes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from snapcore.boundary import CallRegistry, Hypervisor, StorageBackend
from snapcore.context import HookContext, ProgressCallback
from snapcore.errors import (
    ConfigError,
    CreateBlockedError,
    DeleteBlockedError,
    DeleteFailedError,
    DomainStateError,
    HookTimeoutError,
    NoBackendError,
    OperationFailedError,
    PartialCheckpointError,
    RecoveryNeededError,
    RevertBlockedError,
    SnapcoreError,
    SnapshotExistsError,
    StoreCorruptError,
)
from snapcore.imagelock import hold_images
from snapcore.journal import Journal, JournalEntry
from snapcore.model import (
    Checkpoint,
    CheckpointView,
    CreateOptions,
    Disk,
    DiskChoice,
    DiskSnapshot,
    Domain,
    DomainState,
    MemoryImage,
    Operation,
    Plan,
    PlanStep,
    ProgressEvent,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.plugins import Plugins
from snapcore.policy import chain_members, checkpoint_times, effective_limits
from snapcore.process import CommandRunner, default_runner
from snapcore.store import CheckpointStore

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
W = TypeVar("W")

#: Most disks worked on at once.
MAX_PARALLEL = 8


@dataclass(frozen=True, slots=True)
class _CreateWork:
    plan: Plan
    name: str
    state: DomainState
    requests: tuple[SnapshotRequest, ...]
    memory_path: str | None
    policy_slot: int | None = None
    expiry: int | None = None


@dataclass(frozen=True, slots=True)
class _ChangeWork:
    plan: Plan
    checkpoint: Checkpoint
    state: DomainState
    others: dict[str, tuple[DiskSnapshot, ...]] = field(default_factory=dict)


def _parallel(
    items: Sequence[T], fn: Callable[[T], R], calls: CallRegistry
) -> tuple[list[tuple[T, R]], list[tuple[T, BaseException]]]:
    """Run *fn* over *items*, in threads when there are several; never raises, but for
    ``KeyboardInterrupt``.

    On Ctrl-C it says which plugin calls of *calls* it waits for and waits for every item to
    end (so that an undo does not race them); on a second Ctrl-C it abandons those calls
    (:meth:`CallRegistry.abandon_running`) and raises ``KeyboardInterrupt`` at once.
    """
    done: list[tuple[T, R]] = []
    failed: list[tuple[T, BaseException]] = []
    if len(items) <= 1:
        for item in items:
            try:
                done.append((item, fn(item)))
            except Exception as exc:
                failed.append((item, exc))
        return done, failed
    results: dict[int, tuple[bool, object]] = {}
    slots = threading.Semaphore(MAX_PARALLEL)

    def work(index: int, item: T) -> None:
        with slots:
            try:
                results[index] = (True, fn(item))
            except BaseException as exc:
                results[index] = (False, exc)

    threads = [
        threading.Thread(target=work, args=(i, item), name=f"disk-{i}", daemon=True)
        for i, item in enumerate(items)
    ]
    for thread in threads:
        thread.start()
    _join(threads, calls)
    for index, item in enumerate(items):
        ok, value = results[index]
        if ok:
            done.append((item, value))  # type: ignore[arg-type]
        else:
            assert isinstance(value, BaseException)
            failed.append((item, value))
    return done, failed


def _join(threads: Sequence[threading.Thread], calls: CallRegistry) -> None:
    interrupted = False
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join(0.5)
            except KeyboardInterrupt:
                running = calls.running()
                if interrupted:
                    for call in calls.abandon_running():
                        log.warning("stopped waiting for %s; it was left running", call)
                    raise
                interrupted = True
                waiting = "; ".join(str(c) for c in running) or "the disks' steps"
                log.warning(
                    "interrupted: waiting for %s to return before undoing "
                    "(press Ctrl-C again to stop waiting)",
                    waiting,
                )
    if interrupted:
        raise KeyboardInterrupt


def _oldest_first(checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    """Sort by creation time; within one second, a parent before its children, then by name."""
    parent = {cp.name: cp.parent for cp in checkpoints}
    depth: dict[str | None, int] = {}
    for cp in checkpoints:
        chain: list[str] = []
        name: str | None = cp.name
        while name in parent and name not in depth and name not in chain:
            assert name is not None
            chain.append(name)
            name = parent[name]
        level = depth.get(name, -1)
        for n in reversed(chain):
            level += 1
            depth[n] = level
    return sorted(checkpoints, key=lambda c: (c.creation_time, depth[c.name], c.name))


def _first_error(failed: list[tuple[T, BaseException]]) -> BaseException:
    exc = failed[0][1]
    if len(failed) > 1:
        extra = "; ".join(str(e) for _, e in failed[1:])
        exc.add_note(f"also failed: {extra}")
    return exc


class _GuestHold:
    """Keeps a running guest still while its disks are snapshotted, and lets it go again.

    :meth:`hold` quiesces (disk-only checkpoints of a guest with an agent) and pauses;
    :meth:`release` undoes what :meth:`hold` did, whatever point it reached, and returns what it
    could not undo. A domain that was paused to begin with is left paused.
    """

    def __init__(self, coordinator: Coordinator, ctx: HookContext, state: DomainState):
        self.co = coordinator
        self.ctx = ctx
        self.state = state
        self.frozen = False
        self.paused = False

    def hold(self, memory_path: str | None) -> MemoryImage | None:
        """Stop the guest; for a ``memory_first`` hypervisor by saving its memory (returned)."""
        co = self.co
        if memory_path and co.plugins.hypervisor(self.ctx.domain.hypervisor).memory_first:
            memory = co._save_memory(self.ctx, memory_path)
            self.paused = self.state is DomainState.RUNNING  # the save left it paused
            return memory
        if memory_path:
            # Everything the save can do beforehand happens now, outside the guest's pause.
            co.hv.domain_memory_prepare(path=memory_path, ctx=self.ctx)
        if self.state is not DomainState.RUNNING:
            return None
        if not memory_path:  # the hypervisor says whether it can (a guest agent, say)
            self.frozen = co.hv.domain_quiesce(ctx=self.ctx)
        self.paused = True  # set first: a pause that fails half-way is still resumed
        co.hv.domain_pause(ctx=self.ctx)
        return None

    def _gone(self) -> bool:
        try:
            return self.co.state() is DomainState.SHUTOFF
        except Exception:
            return False

    def release(self) -> list[str]:
        problems: list[str] = []
        if self.paused:
            self.paused = False
            try:
                self.co.hv.domain_resume(ctx=self.ctx)
            except Exception as exc:
                if self._gone():
                    log.warning("domain %s is no longer running", self.ctx.domain.name)
                else:
                    problems.append(f"the domain is still paused: {exc}")
        if self.frozen:
            self.frozen = False
            try:
                self.co.hv.domain_thaw(ctx=self.ctx)
            except Exception as exc:
                problems.append(f"the guest's file systems are still frozen: {exc}")
        return problems


class _DiskCreates:
    """The disk snapshots of one checkpoint, per driver; :attr:`started` lists the requests
    an undo must abort, :attr:`created` what each create returned and :attr:`prepared` what
    each driver prepared for its group (by vdev), which the operation holds from the prepare
    hook to the create in the pause or to the abort."""

    def __init__(self, coordinator: Coordinator, ctx: HookContext, total: int):
        self.co = coordinator
        self.ctx = ctx
        self.total = total
        self.count = 0
        self.started: list[SnapshotRequest] = []
        self.created: dict[str, DiskSnapshot] = {}
        self.prepared: dict[str, object] = {}

    def begin(self, reqs: Sequence[SnapshotRequest]) -> None:
        """From here on, an undo aborts *reqs*."""
        self.started.extend(r for r in reqs if r not in self.started)

    def _backend(self, group: Sequence[SnapshotRequest]) -> StorageBackend:
        disk = group[0].disk
        assert disk.driver is not None
        return self.co.plugins.storage(disk.driver, vdev=disk.vdev, path=disk.path)

    def prepare_group(self, group: list[SnapshotRequest]) -> None:
        """Before the pause: what the driver can do of its snapshots while the guest runs."""
        self.begin(group)
        handle = self._backend(group).disk_snapshot_prepare_group(requests=group, ctx=self.ctx)
        if handle is not None:
            self.prepared.update((r.disk.vdev, handle) for r in group)

    def driver_group(self, group: list[SnapshotRequest]) -> list[DiskSnapshot]:
        """The driver's snapshots, in one call when it takes them together."""
        self.begin(group)
        snaps = self._backend(group).disk_snapshot_create_group(
            requests=group, prepared=self.prepared.get(group[0].disk.vdev), ctx=self.ctx
        )
        if snaps is None:  # the backend takes its disks one at a time
            done, failed = _parallel(group, self.one, self.co.plugins.calls)
            if failed:
                raise _first_error(failed)
            return [snap for _, snap in done]
        self.created.update((s.vdev, s) for s in snaps)
        self.count += len(group)
        self.co._report("create", group[-1].disk.vdev, self.count, self.total)
        return snaps

    def one(self, req: SnapshotRequest) -> DiskSnapshot:
        self.begin([req])
        snap = self._backend([req]).disk_snapshot_create(request=req, ctx=self.ctx)
        self.created[snap.vdev] = snap
        self.count += 1
        self.co._report("create", req.disk.vdev, self.count, self.total)
        return snap


class Coordinator:
    """Runs checkpoint operations for one domain.

    :param domain: the domain, as loaded from its file.
    :param plugins: the loaded plugins.
    :param store: the domain's checkpoint store.
    :param runner: the command runner handed to plugins.
    :param progress: receives progress events of long steps.
    :param lock_timeout: how long to wait for another command on the same domain.
    :param before_change: called with the plan of each create, revert and delete once it is
        validated and preflighted, with the domain's lock held, before anything is touched
        (the journal is not written yet): whatever it raises stops the operation with nothing
        touched. The operator's ``pre-`` hooks run here.
    :param now: the time the chain limit check judges expiry and retention at (default: the
        clock), for tests.
    """

    def __init__(
        self,
        domain: Domain,
        plugins: Plugins,
        store: CheckpointStore,
        *,
        runner: CommandRunner | None = None,
        progress: ProgressCallback | None = None,
        lock_timeout: float = 60.0,
        before_change: Callable[[Plan], None] | None = None,
        now: datetime | None = None,
    ):
        self.before_change = before_change
        self.now = now
        #: How deep :meth:`held` and the operations' own locking are nested.
        self._depth = 0
        self.domain = domain
        self.plugins = plugins
        self.store = store
        self.journal = Journal(store.journal_path)
        self.runner = runner or default_runner()
        self._progress = progress
        self.lock_timeout = lock_timeout
        #: The hypervisor's services (its monitor, say) asked for in the current operation.
        self._services: dict[str, object | None] = {}
        self._services_lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------------

    @property
    def hv(self) -> Hypervisor:
        """The plugin controlling the domain's hypervisor.

        :raises NoHypervisorError: none is loaded, or it is unavailable here.
        """
        return self.plugins.controller(self.domain.hypervisor)

    def _ctx(self, state: DomainState = DomainState.SHUTOFF) -> HookContext:
        kwargs: dict[str, object] = {}
        if self._progress is not None:
            kwargs["progress"] = self._progress
        return HookContext(
            domain=self.domain,
            state=state,
            run=self.runner,
            work_dir=self.store.work_dir,
            service=self._service,
            log=logging.getLogger(f"snapcore.plugin.{self.domain.name}"),
            **kwargs,  # type: ignore[arg-type]
        )

    def _report(
        self, step: str, vdev: str = "", done: int = 0, total: int = 0, msg: str = ""
    ) -> None:
        if self._progress is not None:
            self._progress(ProgressEvent(step=step, vdev=vdev, done=done, total=total, message=msg))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the domain (its lock and its disks' image locks) across several operations of
        this coordinator, as ``run-policy`` does: the operations called inside take nothing
        more, and no other command works on the domain in between. An interrupted operation
        is finished or undone first, as by every operation.

        :raises StoreLockedError: another command holds the domain past the lock timeout.
        """
        with self._locked():
            yield

    @contextlib.contextmanager
    def _locked(self, *, recover: bool = True) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                if recover:
                    self.store.verify()
                yield
            finally:
                self._depth -= 1
            return
        with contextlib.ExitStack() as held:
            self._depth += 1
            held.callback(self._leave)
            held.enter_context(self.store.lock(self.lock_timeout))
            if recover:  # a command that may touch the disks: none other may work on them
                held.enter_context(self._hold_images())
            held.enter_context(self._session())
            if recover:
                self._recover_pending()
                self.store.verify()  # an unreadable record stops every change, create too
            yield

    def _leave(self) -> None:
        self._depth -= 1

    def _hold_images(self) -> contextlib.AbstractContextManager[None]:
        return hold_images(self.domain, state_dir=self.store.state_dir, timeout=self.lock_timeout)

    def _service(self, name: str) -> object | None:
        """``ctx.service(name)``: the hypervisor's service *name*, asked for once per operation
        (hook ``domain_service``) and shared by every hook until :meth:`_session` ends."""
        with self._services_lock:
            if name not in self._services:
                self._services[name] = self.hv.domain_service(name=name, ctx=self._ctx())
            return self._services[name]

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """Close the hypervisor's services (its monitor, say) when the operation ends."""
        try:
            yield
        finally:
            with self._services_lock:
                services, self._services = list(self._services.values()), {}
            for service in services:
                close = getattr(service, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception as exc:  # a service that fails to close loses nothing
                        log.debug("closing a service of %s: %s", self.domain.hypervisor, exc)

    def state(self) -> DomainState:
        """The domain's state, from its hypervisor plugin.

        :raises NoHypervisorError: no plugin controls the domain's hypervisor.
        """
        return self.hv.domain_state(ctx=self._ctx())

    def _others(
        self, vdev: str, exclude: str, checkpoints: Sequence[Checkpoint]
    ) -> tuple[DiskSnapshot, ...]:
        out = []
        for cp in checkpoints:
            if cp.name == exclude:
                continue
            snap = cp.disk(vdev)
            if snap is not None:
                out.append(snap)
        return tuple(out)

    def _backend_for(self, snapshot: DiskSnapshot) -> None:
        if self.plugins.backend(snapshot.driver) is None:
            raise NoBackendError(snapshot.vdev, snapshot.path, snapshot.driver)

    def _disk_of(self, snapshot: DiskSnapshot) -> Disk:
        """The disk *snapshot* belongs to: the domain's, or as recorded when it is gone."""
        try:
            disk = self.domain.disk(snapshot.vdev)
        except ConfigError:
            disk = Disk(vdev=snapshot.vdev, path=snapshot.path)
        return disk.with_driver(snapshot.driver)

    # -- create -------------------------------------------------------------------------------

    def _default_name(self) -> str:
        base = str(int(time.time()))
        name, n = base, 0
        while self.store.exists(name):
            n += 1
            name = f"{base}.{n}"
        return name

    def _memory_path(self, options: CreateOptions, state: DomainState, name: str) -> str | None:
        """Where the memory image goes, or ``None`` for a disk-only checkpoint."""
        domain = self.domain
        running = state is not DomainState.SHUTOFF
        if options.memory == "no" or (options.memory is None and not running):
            return None
        if not running:
            raise DomainStateError(domain.name, state.value, "running", "a memory snapshot")
        if not self.plugins.hypervisor(domain.hypervisor).memory:
            raise ConfigError(
                f"hypervisor {domain.hypervisor!r} cannot save memory; "
                "use -D for a disk-only snapshot"
            )
        if options.memory in (None, "yes"):
            return str(self.store.memory_dir / f"{name}.img")
        assert options.memory is not None
        if os.path.lexists(options.memory):
            raise ConfigError(f"memory image {options.memory} already exists")
        if not os.path.isdir(os.path.dirname(options.memory)):
            raise ConfigError(f"directory of memory image {options.memory} does not exist")
        return options.memory

    def _requests(
        self, options: CreateOptions, name: str
    ) -> tuple[list[SnapshotRequest], list[str]]:
        """The per-disk requests of a create, and the disks left out (with why)."""
        domain = self.domain
        choices: dict[str, DiskChoice | None]
        if options.disks is None:
            choices = {d.vdev: None for d in domain.disks if not d.readonly}
            skipped = [f"{d.vdev}: read-only" for d in domain.disks if d.readonly]
        else:
            choices = {}
            for listed in options.disks:
                if domain.disk(listed.vdev).readonly:
                    raise ConfigError(f"disk {listed.vdev} is read-only and cannot be snapshotted")
                choices[listed.vdev] = listed
            skipped = [f"{d.vdev}: not listed" for d in domain.disks if d.vdev not in choices]
        if not choices:
            raise ConfigError(f"domain {domain.name!r} has no writable disk to snapshot")
        disk_paths = {os.path.realpath(d.path) for d in domain.disks}
        requests = []
        for vdev, choice in choices.items():
            target = choice.target if choice else None
            if target is not None and os.path.realpath(target) in disk_paths:
                raise ConfigError(f"disk {vdev}: target {target} is a disk of the domain")
            requests.append(
                SnapshotRequest(
                    disk=self.plugins.resolve_disk(domain.disk(vdev)),
                    name=name,
                    kind=(choice.kind if choice else None)
                    or (SnapshotKind.EXTERNAL if target else options.kind),
                    target=target,
                    format=choice.format if choice else None,
                )
            )
        targets = [r.target for r in requests if r.target]
        if len(set(targets)) != len(targets):
            raise ConfigError("two disks have the same external target")
        return requests, skipped

    def _preflight_domain(self, ctx: HookContext) -> list[str]:
        """What the hypervisor says stands in the way (running or paused domains only)."""
        if ctx.state is DomainState.SHUTOFF:
            return []
        found = self.hv.domain_preflight(ctx=ctx)
        return [f"domain {self.domain.name}: {b}" for b in found]

    def _preflight_disk(
        self, req: SnapshotRequest, ctx: HookContext, blockers: list[str]
    ) -> PlanStep:
        """Check one disk's request (appending to *blockers*) and describe its step."""
        assert req.disk.driver is not None
        info = self.plugins.backend(req.disk.driver)
        assert info is not None
        vdev = req.disk.vdev
        kind = req.kind or info.default_kind
        if kind is not None and kind not in info.kinds:
            blockers.append(f"disk {vdev}: driver {info.driver} cannot make {kind} snapshots")
        if ctx.state is not DomainState.SHUTOFF and not info.live:
            blockers.append(f"disk {vdev}: driver {info.driver} cannot snapshot a running disk")
        backend = self.plugins.storage(info.driver, vdev=vdev, path=req.disk.path)
        found = backend.disk_snapshot_create_check(request=req, ctx=ctx)
        blockers.extend(f"disk {vdev}: {b}" for b in found)
        detail = req.disk.path
        if kind is SnapshotKind.EXTERNAL:
            detail = f"{req.disk.path} (snapshot data to {req.target or 'the default target'})"
        if not found:
            detail = backend.disk_snapshot_plan(request=req, ctx=ctx) or detail
        return PlanStep(
            vdev=vdev, driver=info.driver, action="create snapshot", kind=kind, detail=detail
        )

    def _plan_create(self, options: CreateOptions) -> _CreateWork:
        domain = self.domain
        state = self.state()
        name = options.name or self._default_name()
        if self.store.exists(name):
            raise SnapshotExistsError(domain.name, name)
        memory_path = self._memory_path(options, state, name)
        requests, skipped = self._requests(options, name)
        self._check_chains(name, requests)

        ctx = self._ctx(state)
        blockers: list[str] = []
        steps: list[PlanStep] = []
        hypervisor = domain.hypervisor
        blockers.extend(self._preflight_domain(ctx))
        if state is DomainState.RUNNING:
            steps.append(PlanStep(vdev="", driver=hypervisor, action="pause"))

        def check(req: SnapshotRequest) -> tuple[PlanStep, list[str]]:
            found: list[str] = []
            return self._preflight_disk(req, ctx, found), found

        # the disks' checks run side by side (each may read images or ask the hypervisor)
        checked, failed = _parallel(requests, check, self.plugins.calls)
        if failed:
            raise _first_error(failed)
        for _, (step, found) in checked:
            steps.append(step)
            blockers.extend(found)
        if memory_path:
            how = self.hv.domain_memory_plan(path=memory_path, ctx=ctx)
            detail = f"{memory_path}: {how}" if how else memory_path
            steps.append(PlanStep(vdev="", driver=hypervisor, action="save memory", detail=detail))
        if state is DomainState.RUNNING:
            steps.append(PlanStep(vdev="", driver=hypervisor, action="resume"))
        if blockers:
            raise CreateBlockedError(name, blockers)
        plan = Plan(
            operation=Operation.CREATE,
            domain=domain.name,
            name=name,
            state=state,
            memory=memory_path is not None,
            steps=tuple(steps),
            skipped=tuple(skipped),
        )
        return _CreateWork(
            plan,
            name,
            state,
            tuple(requests),
            memory_path,
            policy_slot=options.policy_slot,
            expiry=options.expiry,
        )

    def chain_limits(self, requests: Sequence[SnapshotRequest] | None = None) -> dict[str, int]:
        """Each disk's chain limit: the smallest of its ``max_chain`` (or the policy's) and
        its backend's; disks without one are left out. *requests* default to every writable
        disk.

        :raises NoBackendError: no plugin claims a disk.
        """
        policy = self.domain.policy
        disks = (
            [r.disk for r in requests]
            if requests is not None
            else [self.plugins.resolve_disk(d) for d in self.domain.disks if not d.readonly]
        )
        entries = []
        for disk in disks:
            info = self.plugins.backend(disk.driver) if disk.driver else None
            entries.append(
                (
                    disk.vdev,
                    self.domain.chain_limits.get(disk.vdev),
                    info.max_chain if info is not None else None,
                )
            )
        return effective_limits(entries, policy.max_chain if policy else None)

    def _check_chains(self, name: str, requests: Sequence[SnapshotRequest]) -> None:
        """Refuse a create that would make a disk's chain longer than its limit, naming the
        checkpoints to delete (those the policy may prune first).

        :raises CreateBlockedError: nothing is touched.
        """
        limits = self.chain_limits(requests)
        if not limits:
            return
        from snapcore.retention import ChainFit, fit_chain, plan_retention

        checkpoints = self.store.list()
        policy = self.domain.policy
        times = checkpoint_times(checkpoints)
        prunable = plan_retention(
            times,
            policy.keep if policy else None,
            self.now or datetime.now(UTC),
            tz=policy.tz if policy else UTC,
        ).pruned
        vdevs = [r.disk.vdev for r in requests]
        fit = fit_chain(limits, chain_members(checkpoints, prunable), vdevs)
        if fit.fits and not fit.delete:
            return
        # A create deletes nothing itself (run-policy deletes fit.delete before it creates):
        # the disks over their limit as they are, and what to delete, prunable ones first.
        bare = fit_chain(limits, chain_members(checkpoints), vdevs)
        ChainFit(suggest=(*fit.delete, *fit.suggest), over=bare.over).check(name)

    def plan_create(self, options: CreateOptions) -> Plan:
        """Validate and plan a create without changing anything (the dry run).

        :raises ConfigError, SnapshotExistsError, CreateBlockedError, DomainStateError,
            PluginError: what is wrong, before anything is touched.
        """
        with self._session():
            return self._plan_create(options).plan

    def create(self, options: CreateOptions, *, description: str | None = None) -> Checkpoint:
        """Create a checkpoint of every selected disk (and the memory of a running domain).

        Failure guarantee: on failure every disk and the domain are as they were, and
        :class:`OperationFailedError` is raised; if undoing fails, :class:`PartialCheckpointError`
        lists what is left and the journal keeps the intent for ``recover``.
        """
        desc = description if description is not None else options.description

        def plan() -> tuple[_CreateWork, JournalEntry]:
            work = self._plan_create(options)
            entry = JournalEntry(
                operation=Operation.CREATE,
                name=work.name,
                state=work.state,
                requests=work.requests,
                memory=work.memory_path,
            )
            return work, entry

        def run(work: _CreateWork) -> Checkpoint:
            parent = self.store.current()
            if parent and not self.store.exists(parent):
                parent = None
            checkpoint = self._run_create(work, desc, parent)
            self.journal.advance(phase="commit", checkpoint=checkpoint)
            self._commit_create(checkpoint)
            return checkpoint

        return self._operate(plan, run)

    def _operate(self, plan: Callable[[], tuple[W, JournalEntry]], run: Callable[[W], R]) -> R:
        """The one shape of every change: take the domain's lock (finishing what an
        interrupted command left), plan and preflight (*plan*: nothing is touched if it
        raises), journal the intent, run the steps (*run*: each operation's own failure policy,
        which ends or keeps the journal), and clear the journal once they are done."""
        with self._locked():
            work, entry = plan()
            if self.before_change is not None:
                self.before_change(getattr(work, "plan"))  # noqa: B009 - W is either work type
            self.journal.begin(entry)
            result = run(work)
            self.journal.end()
            return result

    def _commit_create(self, checkpoint: Checkpoint) -> None:
        self.store.save(checkpoint)
        self.store.set_current(checkpoint.name)

    def _run_create(self, work: _CreateWork, description: str, parent: str | None) -> Checkpoint:
        ctx = self._ctx(work.state)
        guest = _GuestHold(self, ctx, work.state)
        memory: MemoryImage | None = None
        disks = _DiskCreates(self, ctx, len(work.requests))
        started = disks.started
        groups: dict[str, list[SnapshotRequest]] = {}
        for req in work.requests:
            groups.setdefault(req.disk.driver or "", []).append(req)
        try:
            _, failed = _parallel(list(groups.values()), disks.prepare_group, self.plugins.calls)
            if failed:
                raise _first_error(failed)
            memory = guest.hold(work.memory_path)
            done_groups, failed = _parallel(
                list(groups.values()), disks.driver_group, self.plugins.calls
            )
            if failed:
                raise _first_error(failed)
            if work.memory_path and memory is None:
                memory = self._save_memory(ctx, work.memory_path)
        except BaseException as exc:
            leftovers = self._undo_create(
                ctx, work, started, work.memory_path, created=disks.created, prepared=disks.prepared
            )
            leftovers += guest.release()
            if leftovers:
                raise PartialCheckpointError("create", work.name, exc, leftovers) from exc
            self.journal.end()
            if isinstance(exc, Exception):
                raise OperationFailedError("create", work.name, exc) from exc
            raise  # KeyboardInterrupt and the like: undone, then passed on
        for problem in guest.release():
            # The checkpoint exists; a guest left paused or frozen is reported, not undone.
            log.warning("%s", problem)
        by_vdev = {snap.vdev: snap for _, snaps in done_groups for snap in snaps}
        return Checkpoint(
            name=work.name,
            domain_uuid=self.domain.uuid,
            description=description,
            creation_time=int(time.time()),
            state=work.state,
            memory=memory,
            parent=parent,
            disks=tuple(by_vdev[r.disk.vdev] for r in work.requests),
            policy_slot=work.policy_slot,
            expiry=work.expiry,
        )

    def _save_memory(self, ctx: HookContext, path: str) -> MemoryImage:
        self._report("memory", msg=f"saving memory to {path}")
        return self.hv.domain_memory_save(path=path, ctx=ctx)

    def _undo_create(
        self,
        ctx: HookContext,
        work: _CreateWork,
        started: Sequence[SnapshotRequest],
        memory_path: str | None,
        *,
        created: Mapping[str, DiskSnapshot] | None = None,
        prepared: Mapping[str, object] | None = None,
    ) -> list[str]:
        """Abort every started disk create in reverse order; return what could not be undone.

        *created* holds what each disk's create returned and *prepared* what its driver
        prepared, by vdev (both handed to the abort hook).
        Then every disk aborted is repaired and verified (:meth:`_verify_disks`): an image the
        undo left failing its format's check is reported, never passed over.
        """
        created = created or {}
        prepared = prepared or {}
        leftovers: list[str] = []
        for req in reversed(list(started)):
            assert req.disk.driver is not None
            try:
                backend = self.plugins.storage(req.disk.driver, vdev=req.disk.vdev)
                backend.disk_snapshot_abort(
                    request=req,
                    created=created.get(req.disk.vdev),
                    prepared=prepared.get(req.disk.vdev),
                    ctx=ctx,
                )
            except Exception as exc:
                leftovers.append(f"disk {req.disk.vdev}: snapshot {work.name} not removed: {exc}")
        if not leftovers:
            leftovers += self._verify_disks(ctx, [r.disk for r in started])
        if memory_path:
            try:
                os.unlink(memory_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                leftovers.append(f"memory image {memory_path} not removed: {exc.strerror}")
        return leftovers

    def _verify_disks(self, ctx: HookContext, disks: Sequence[Disk]) -> list[str]:
        """Repair what is safe and verify the images of *disks* after an undo or a recovery;
        return what is still wrong, one line per problem naming the disk.

        Only with the domain shut off: a running QEMU owns its images, and what a check reads
        beside it may be stale. A disk whose plugin has no ``disk_verify`` is taken as it is.
        """
        if ctx.state is not DomainState.SHUTOFF:
            return []
        try:
            checkpoints = self.store.list()
        except SnapcoreError:
            checkpoints = []
        problems: list[str] = []
        for disk in disks:
            if disk.driver is None or self.plugins.backend(disk.driver) is None:
                continue
            backend = self.plugins.storage(disk.driver, vdev=disk.vdev, path=disk.path)
            known = [s for cp in checkpoints if (s := cp.disk(disk.vdev)) is not None]
            try:
                for repair in backend.disk_repair(disk=disk, known=known, ctx=ctx):
                    log.warning("disk %s: %s", disk.vdev, repair)
                found = backend.disk_verify(disk=disk, known=known, ctx=ctx)
            except SnapcoreError as exc:
                problems.append(f"disk {disk.vdev}: its images could not be verified: {exc}")
                continue
            problems += [f"disk {disk.vdev}: {p}" for p in found or ()]
        return problems

    # -- delete -------------------------------------------------------------------------------

    def _plan_change(self, operation: Operation, name: str) -> _ChangeWork:
        checkpoint = self.store.get(name)
        everything = self.store.list()
        state = self.state()
        ctx = self._ctx(state)
        steps: list[PlanStep] = []
        blockers: list[str] = []
        others: dict[str, tuple[DiskSnapshot, ...]] = {}
        vdevs = {d.vdev for d in self.domain.disks}
        for snap in checkpoint.disks:
            self._backend_for(snap)
            if operation is Operation.REVERT and snap.vdev not in vdevs:
                blockers.append(f"disk {snap.vdev} is no longer in the domain")
                continue
            others[snap.vdev] = self._others(snap.vdev, name, everything)
            backend = self.plugins.storage(snap.driver, vdev=snap.vdev, path=snap.path)
            disk = self._disk_of(snap)
            if operation is Operation.DELETE:
                found = backend.disk_snapshot_delete_check(
                    snapshot=snap, disk=disk, others=others[snap.vdev], ctx=ctx
                )
            else:
                found = backend.disk_snapshot_revert_check(
                    snapshot=snap, disk=disk, others=others[snap.vdev], ctx=ctx
                )
            blockers.extend(f"disk {snap.vdev}: {b}" for b in found)
            steps.append(
                PlanStep(
                    vdev=snap.vdev,
                    driver=snap.driver,
                    action=f"{operation.value} snapshot",
                    kind=snap.kind,
                    detail=snap.locator,
                )
            )
        blockers.extend(self._preflight_domain(ctx))
        skipped: list[str] = []
        if operation is Operation.REVERT and checkpoint.deleting:
            blockers.append(
                "a delete of it failed part-way, so its disks may be partly merged already: "
                f"run 'snapcore snapshot-delete -n {name} DOMAIN' again to finish it"
            )
        if operation is Operation.REVERT:
            recorded = {s.vdev for s in checkpoint.disks}
            skipped = [f"{v}: not in the snapshot, left as it is" for v in sorted(vdevs - recorded)]
            if state is not DomainState.SHUTOFF:
                steps.insert(0, PlanStep(vdev="", driver=self.domain.hypervisor, action="stop"))
            if checkpoint.memory:
                steps.append(
                    PlanStep(
                        vdev="",
                        driver=self.domain.hypervisor,
                        action="restore memory",
                        detail=f"{checkpoint.memory.path}, then {checkpoint.state.value}",
                    )
                )
                if not self.plugins.hypervisor(self.domain.hypervisor).memory:
                    blockers.append(
                        f"hypervisor {self.domain.hypervisor!r} cannot restore the memory image"
                    )
                if not os.path.exists(checkpoint.memory.path):
                    blockers.append(f"memory image {checkpoint.memory.path} is missing")
        elif checkpoint.memory:
            steps.append(
                PlanStep(
                    vdev="",
                    driver=self.domain.hypervisor,
                    action="delete memory image",
                    detail=checkpoint.memory.path,
                )
            )
        if blockers:
            error = DeleteBlockedError if operation is Operation.DELETE else RevertBlockedError
            raise error(name, blockers)
        plan = Plan(
            operation=operation,
            domain=self.domain.name,
            name=name,
            state=state,
            memory=checkpoint.memory is not None,
            steps=tuple(steps),
            skipped=tuple(skipped),
        )
        return _ChangeWork(plan, checkpoint, state, others)

    def plan_delete(self, name: str) -> Plan:
        """Validate and plan a delete without changing anything.

        :raises SnapshotNotFoundError, DeleteBlockedError, PluginError: before anything is touched.
        """
        with self._session():
            return self._plan_change(Operation.DELETE, name).plan

    def delete(self, name: str) -> None:
        """Delete checkpoint *name*: every disk's snapshot (merged, never orphaned), its memory
        image and its record. Its children take its parent; if it was current, its parent
        becomes current.

        Failure guarantee: preflight failures change nothing. A disk failing after others were
        deleted raises :class:`PartialCheckpointError`; the record is kept, and running the
        delete again finishes it (each disk's delete is idempotent).
        """
        self._operate(
            lambda: self._plan_journaled(Operation.DELETE, name),
            lambda work: self._run_delete(work.checkpoint, work.others, work.state),
        )

    def _each_disk(
        self,
        operation: Operation,
        checkpoint: Checkpoint,
        others: dict[str, tuple[DiskSnapshot, ...]],
        ctx: HookContext,
    ) -> tuple[list[tuple[DiskSnapshot, None]], list[tuple[DiskSnapshot, BaseException]]]:
        """Delete or revert every disk snapshot of *checkpoint*, disks in parallel, marking
        each one done in the journal; return the disks done and those that failed."""
        total = len(checkpoint.disks)
        count = [0]

        def one(snap: DiskSnapshot) -> None:
            backend = self.plugins.storage(snap.driver, vdev=snap.vdev, path=snap.path)
            disk = self._disk_of(snap)
            mine = others.get(snap.vdev, ())
            if operation is Operation.DELETE:
                backend.disk_snapshot_delete(snapshot=snap, disk=disk, others=mine, ctx=ctx)
            else:
                backend.disk_snapshot_revert(snapshot=snap, disk=disk, others=mine, ctx=ctx)
            self.journal.mark_done(snap.vdev)
            count[0] += 1
            self._report(operation.value, snap.vdev, count[0], total)

        return _parallel(checkpoint.disks, one, self.plugins.calls)

    def _run_delete(
        self,
        checkpoint: Checkpoint,
        others: dict[str, tuple[DiskSnapshot, ...]],
        state: DomainState,
    ) -> None:
        done, failed = self._each_disk(Operation.DELETE, checkpoint, others, self._ctx(state))
        self._settle_disks(Operation.DELETE, checkpoint, done, failed)
        if checkpoint.memory:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(checkpoint.memory.path)
        self._unlink_record(checkpoint)

    def _settle_disks(
        self,
        operation: Operation,
        checkpoint: Checkpoint,
        done: Sequence[tuple[DiskSnapshot, object]],
        failed: Sequence[tuple[DiskSnapshot, BaseException]],
    ) -> None:
        """After the per-disk steps of a delete or revert: return if every disk succeeded,
        otherwise raise, the same way for both.

        Nothing is undone: both steps are idempotent and are finished by running them again.
        A failed revert that changed no disk: the journal is closed and
        :class:`OperationFailedError` (exit 1) raised. A failed delete that finished no disk:
        the record is marked ``deleting`` (a disk's failed delete may have merged part of it
        already, so it must not be reverted to any more), the journal closed and
        :class:`DeleteFailedError` (exit 1) raised. Some disks changed:
        :class:`PartialCheckpointError` (exit 3) names the disks done and not done; a revert
        keeps the journal (the next command or ``snapcore recover`` finishes it: the disks must
        not stay mixed), a delete marks the record ``deleting`` and closes it (running the
        delete again finishes it, without blocking every other command meanwhile). A hook that
        was abandoned past its time limit may still change its disk until this process ends,
        so the journal is then kept in either case.
        """
        if not failed:
            return
        exc = _first_error(list(failed))
        abandoned = any(isinstance(e, HookTimeoutError) and e.abandoned for _, e in failed)
        if operation is Operation.DELETE and not checkpoint.deleting:
            self.store.save(dataclasses.replace(checkpoint, deleting=True))
        if not done and not abandoned:
            self.journal.end()
            if operation is Operation.DELETE:
                raise DeleteFailedError(checkpoint.name, exc) from exc
            raise OperationFailedError(operation.value, checkpoint.name, exc) from exc
        if operation is Operation.DELETE and not abandoned:
            self.journal.end()
        past = "deleted" if operation is Operation.DELETE else "reverted"
        changed = ", ".join(s.vdev for s, _ in done) or "none"
        remaining = ", ".join(s.vdev for s, _ in failed)
        leftovers = [f"disks {past}: {changed}", f"disks not {past}: {remaining}"]
        if operation is Operation.DELETE and not abandoned:
            raise PartialCheckpointError(
                operation.value,
                checkpoint.name,
                exc,
                leftovers,
                remedy=f"run 'snapcore snapshot-delete -n {checkpoint.name} DOMAIN' again "
                "to finish",
            ) from exc
        raise PartialCheckpointError(operation.value, checkpoint.name, exc, leftovers) from exc

    def _unlink_record(self, checkpoint: Checkpoint) -> None:
        for child in self.store.list():
            if child.parent == checkpoint.name:
                self.store.save(dataclasses.replace(child, parent=checkpoint.parent))
        if self.store.current() == checkpoint.name:
            self.store.set_current(checkpoint.parent)
        self.store.remove(checkpoint.name)

    # -- revert -------------------------------------------------------------------------------

    def plan_revert(self, name: str) -> Plan:
        """Validate and plan a revert without changing anything.

        :raises SnapshotNotFoundError, RevertBlockedError, PluginError: before anything is touched.
        """
        with self._session():
            return self._plan_change(Operation.REVERT, name).plan

    def revert(self, name: str) -> None:
        """Revert the domain's disks (and memory, if recorded) to checkpoint *name* and make it
        current. Every other checkpoint, newer ones included, is kept.

        Failure guarantee: nothing is touched unless every disk's preflight passes. A disk
        failing after others were reverted raises :class:`PartialCheckpointError`, and the
        journal keeps the revert so that ``snapcore recover`` (or the next command) completes it.
        """
        self._operate(
            lambda: self._plan_journaled(Operation.REVERT, name),
            lambda work: self._run_revert(work.checkpoint, work.others, work.state),
        )

    def _plan_journaled(self, operation: Operation, name: str) -> tuple[_ChangeWork, JournalEntry]:
        return self._plan_change(operation, name), JournalEntry(operation=operation, name=name)

    def _run_revert(
        self,
        checkpoint: Checkpoint,
        others: dict[str, tuple[DiskSnapshot, ...]],
        state: DomainState,
    ) -> None:
        ctx = self._ctx(state)
        if state is not DomainState.SHUTOFF:
            self._report("stop", msg="stopping the domain")
            self.hv.domain_stop(ctx=ctx)
            ctx = self._ctx(DomainState.SHUTOFF)
        done, failed = self._each_disk(Operation.REVERT, checkpoint, others, ctx)
        self._settle_disks(Operation.REVERT, checkpoint, done, failed)
        if checkpoint.memory:
            self._report("memory", msg=f"restoring memory from {checkpoint.memory.path}")
            self.hv.domain_memory_restore(image=checkpoint.memory, state=checkpoint.state, ctx=ctx)
        self.store.set_current(checkpoint.name)

    # -- list ---------------------------------------------------------------------------------

    def views(self, *, verify: bool = False) -> list[CheckpointView]:
        """Every checkpoint, oldest first, with its place in the tree.

        :param verify: ask each backend what exists on storage, and report in ``missing`` the
            disk snapshots that are gone (removed behind snapcore's back).
        """
        with self._locked():
            checkpoints = self.store.list()
            current = self.store.current()
        children: dict[str, list[str]] = {}
        for cp in checkpoints:
            if cp.parent:
                children.setdefault(cp.parent, []).append(cp.name)
        checkpoints = _oldest_first(checkpoints)
        missing: dict[str, list[str]] = {}
        if verify:
            missing = self._find_missing(checkpoints)
        return [
            CheckpointView(
                checkpoint=cp,
                current=cp.name == current,
                children=tuple(children.get(cp.name, ())),
                missing=tuple(missing.get(cp.name, ())),
            )
            for cp in checkpoints
        ]

    def _find_missing(self, checkpoints: Sequence[Checkpoint]) -> dict[str, list[str]]:
        ctx = self._ctx()
        missing: dict[str, list[str]] = {}
        by_vdev: dict[str, list[DiskSnapshot]] = {}
        for cp in checkpoints:
            for snap in cp.disks:
                by_vdev.setdefault(snap.vdev, []).append(snap)
        for vdev, known in by_vdev.items():
            latest = known[-1]
            if self.plugins.backend(latest.driver) is None:
                continue
            backend = self.plugins.storage(latest.driver, vdev=vdev)
            try:
                found = backend.disk_snapshot_list(
                    disk=self._disk_of(latest), known=tuple(known), ctx=ctx
                )
            except SnapcoreError as exc:
                log.warning("disk %s: cannot list snapshots: %s", vdev, exc)
                continue
            present_locators = {(s.kind, s.locator) for s in found}
            present_names = {s.name for s in found if s.kind is SnapshotKind.INTERNAL}
            for snap in known:
                ok = (
                    snap.name in present_names
                    if snap.kind is SnapshotKind.INTERNAL
                    else (snap.kind, snap.locator) in present_locators
                )
                if not ok:
                    missing.setdefault(snap.name, []).append(vdev)
        return missing

    # -- lifecycle ----------------------------------------------------------------------------

    def current_state(self) -> DomainState:
        """The domain's state, asked of its hypervisor under the domain's lock."""
        with self._locked(recover=False):
            return self.state()

    def start(self, *, paused: bool = False) -> DomainState:
        """Start the shut-off domain from its domain file; return its new state.

        :raises DomainStateError: it is not shut off.
        :raises NoHypervisorError: its hypervisor cannot start domains.
        """
        with self._locked():
            state = self.state()
            if state is not DomainState.SHUTOFF:
                raise DomainStateError(self.domain.name, state.value, "shut off", "starting it")
            self.hv.domain_start(paused=paused, ctx=self._ctx(state))
            return self.state()

    def stop(self) -> None:
        """Stop the running or paused domain (its disks are closed when this returns).

        :raises DomainStateError: it is already shut off.
        """
        with self._locked():
            state = self.state()
            if state is DomainState.SHUTOFF:
                raise DomainStateError(self.domain.name, state.value, "running", "stopping it")
            self.hv.domain_stop(ctx=self._ctx(state))

    # -- recovery -----------------------------------------------------------------------------

    def recover(self, *, forget: bool = False) -> str | None:
        """Finish or undo an operation left in the journal by a crash; return what was done.

        :param forget: drop the journal entry without acting on it, and move an unreadable
            journal, record or ``current.json`` aside (``NAME.corrupt-<epoch>``, never deleted).
        :raises RecoveryNeededError: when it cannot be finished or undone.
        """
        with self.store.lock(self.lock_timeout), self._hold_images():
            if forget:
                moved: list[tuple[object, object]] = []
                try:
                    entry = self.journal.pending()
                except StoreCorruptError:
                    entry = None
                    moved.append((self.journal.path, self.journal.quarantine()))
                self.journal.end()
                moved += self.store.quarantine_unreadable()
                said = [f"moved the unreadable {a} aside to {b}" for a, b in moved if b]
                if entry is not None:
                    what = f"{entry.operation} of snapshot {entry.name!r}"
                    said.insert(0, f"forgot the interrupted {what}")
                return "; ".join(said) or None
            return self._recover_pending()

    def pending(self) -> JournalEntry | None:
        """The journal entry of an interrupted operation, if any (read-only)."""
        return self.journal.pending()

    def _recover_pending(self) -> str | None:
        entry = self.journal.pending()
        if entry is None:
            return None
        op, name = entry.operation, entry.name
        log.warning("recovering an interrupted %s of snapshot %s", op, name)
        try:
            if op is Operation.CREATE:
                return self._recover_create(entry)
            if op is Operation.DELETE:
                checkpoint = self.store.get(name) if self.store.exists(name) else None
                if checkpoint is not None:
                    self._run_delete(checkpoint, self._others_of(checkpoint), self.state())
                    self._raise_unclean(checkpoint, f"delete of {name!r}")
                self.journal.end()
                return f"completed the interrupted delete of snapshot {name!r}"
            checkpoint = self.store.get(name)
            self._run_revert(checkpoint, self._others_of(checkpoint), self.state())
            self._raise_unclean(checkpoint, f"revert to {name!r}")
            self.journal.end()
            return f"completed the interrupted revert to snapshot {name!r}"
        except SnapcoreError as exc:
            raise RecoveryNeededError(self.domain.name, f"{op} of {name!r}: {exc}") from exc

    def _others_of(self, checkpoint: Checkpoint) -> dict[str, tuple[DiskSnapshot, ...]]:
        everything = self.store.list()
        return {s.vdev: self._others(s.vdev, checkpoint.name, everything) for s in checkpoint.disks}

    def _raise_unclean(self, checkpoint: Checkpoint, what: str) -> None:
        """After a recovery finished *what*: repair and verify the checkpoint's disks.

        :raises RecoveryNeededError: (exit 3) an image still fails its format's check; the
            journal is kept, so the next command tries again.
        """
        ctx = self._ctx(self.state())
        problems = self._verify_disks(ctx, [self._disk_of(s) for s in checkpoint.disks])
        if problems:
            raise RecoveryNeededError(
                self.domain.name, f"{what} finished, but " + "; ".join(problems)
            )

    def _recover_create(self, entry: JournalEntry) -> str:
        name = entry.name
        if entry.phase == "commit" and entry.checkpoint is not None:
            self._commit_create(entry.checkpoint)
            self.journal.end()
            return f"completed the interrupted create of snapshot {name!r}"
        work = _CreateWork(
            plan=Plan(
                operation=Operation.CREATE,
                domain=self.domain.name,
                name=name,
                state=DomainState.SHUTOFF,
                memory=entry.memory is not None,
                steps=(),
            ),
            name=name,
            state=DomainState.SHUTOFF,
            requests=entry.requests,
            memory_path=entry.memory,
        )
        state = self.state()
        leftovers = self._undo_create(self._ctx(state), work, entry.requests, entry.memory)
        if entry.state is DomainState.RUNNING and state is DomainState.PAUSED:
            # The crashed command had paused the guest for its snapshots: let it run again.
            self.hv.domain_resume(ctx=self._ctx(state))
        if leftovers:
            raise RecoveryNeededError(self.domain.name, "; ".join(leftovers))
        self.journal.end()
        return f"undid the interrupted create of snapshot {name!r}"
