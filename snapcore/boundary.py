"""The plugin boundary: the one place where snapcore calls a plugin's hook.

The core never calls a storage or hypervisor hook through pluggy's broadcast. It asks
:class:`~snapcore.plugins.Plugins` for the :class:`StorageBackend` that owns a driver, or the
:class:`Hypervisor` that controls a domain, and calls a method named after the hook::

    backend = plugins.storage(request.disk.driver)
    snapshot = backend.disk_snapshot_create(request=request, ctx=ctx)

Each such method calls that one plugin's implementation, and nothing else, and guarantees:

* **arguments**: the implementation gets the arguments it names, as pluggy would give them;
* **a time limit**: the hook runs in its own thread and is waited for at most its limit
  (:func:`hook_timeout`); a hook that does not return in time raises
  :class:`~snapcore.errors.HookTimeoutError` and is *abandoned*: this process never calls the
  plugin again for the same disk (or domain), so an undo cannot race the still-running hook;
* **errors mapped once**: a :class:`~snapcore.errors.SnapcoreError` passes unchanged, an
  ``OSError`` becomes a :class:`~snapcore.errors.BackendError` naming the disk, and any other
  exception (``SystemExit`` and other ``BaseException`` included, ``KeyboardInterrupt``
  excepted) becomes a :class:`~snapcore.errors.PluginContractError` naming plugin, hook and disk;
* **results checked**: what comes back is checked against the hook's declared result type; a
  wrong type, ``None`` where a result is due, a ``str`` where a list is due or a non-``True``
  acknowledgement raises :class:`~snapcore.errors.PluginContractError`;
* **Ctrl-C**: an interrupt while a hook runs says which plugin is being waited for, and waits
  for it to return (so the undo that follows does not race it); a second interrupt stops
  waiting and abandons the hook.

Plugins written for hook API 1.x are called the same way: the arguments 2.0 added are simply
not passed to implementations that do not name them, and the one result whose meaning changed
(``disk_snapshot_prepare_group``'s ``True``) is read for what it meant.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from snapcore.errors import (
    BackendError,
    ConfigError,
    HookTimeoutError,
    PluginContractError,
    SnapcoreError,
)
from snapcore.model import (
    BackendInfo,
    Disk,
    DiskSnapshot,
    DomainState,
    HypervisorInfo,
    MemoryImage,
    SnapshotRequest,
)

if TYPE_CHECKING:
    import pluggy

    from snapcore.context import HookContext, InfoContext

log = logging.getLogger(__name__)

#: Seconds a hook that only looks (info, claims, checks, lists, plans, state) may take.
QUICK_TIMEOUT: Final = 600.0
#: Seconds a hook that changes storage or the domain may take (a merge of a large chain).
LONG_TIMEOUT: Final = 4 * 3600.0

#: Hooks that only look; every other hook gets :data:`LONG_TIMEOUT`.
QUICK_HOOKS: Final = frozenset(
    {
        "backend_info",
        "hypervisor_info",
        "disk_claim",
        "disk_snapshot_create_check",
        "disk_snapshot_plan",
        "disk_snapshot_delete_check",
        "disk_snapshot_revert_check",
        "disk_snapshot_list",
        "disk_verify",
        "domain_state",
        "domain_disks",
        "domain_config_check",
        "domain_service",
        "domain_preflight",
        "domain_memory_plan",
    }
)


def hook_timeout(hook: str, plugin_limit: float | None, user_limit: float | None) -> float:
    """The time limit of *hook*: the user's if set, else the plugin's, else the default."""
    if user_limit is not None:
        return user_limit
    if plugin_limit is not None:
        return plugin_limit
    return QUICK_TIMEOUT if hook in QUICK_HOOKS else LONG_TIMEOUT


def describe(value: object, limit: int = 60) -> str:
    """*value* for an error message: its type and a short repr."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    kind = type(value).__name__
    return text if value is None or isinstance(value, bool) else f"a {kind} ({text})"


@dataclass(slots=True)
class Call:
    """One hook call in progress: what :class:`CallRegistry` reports on Ctrl-C."""

    plugin: str
    hook: str
    subject: str
    started: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        on = f" for disk {self.subject}" if self.subject else ""
        ran = time.monotonic() - self.started
        return f"plugin {self.plugin!r} ({self.hook}{on}, running for {ran:.0f} s)"


class CallRegistry:
    """The hook calls in progress and the ones abandoned, for one set of loaded plugins.

    Thread-safe. A subject (``plugin/disk``, or ``plugin/`` for domain hooks) whose call was
    abandoned is never called again by this registry's plugins: every later call on it raises
    :class:`HookTimeoutError` at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._running: dict[int, Call] = {}
        self._abandoned: dict[tuple[str, str], Call] = {}

    def start(self, call: Call) -> int:
        with self._lock:
            key = next(self._ids)
            self._running[key] = call
            return key

    def finish(self, key: int) -> None:
        with self._lock:
            self._running.pop(key, None)

    def running(self) -> list[Call]:
        """The calls in progress, oldest first."""
        with self._lock:
            return sorted(self._running.values(), key=lambda c: c.started)

    def abandon(self, call: Call) -> None:
        with self._lock:
            self._abandoned[(call.plugin, call.subject)] = call

    def abandon_running(self) -> list[Call]:
        """Abandon every call in progress (a second Ctrl-C); return them."""
        with self._lock:
            calls = list(self._running.values())
            for call in calls:
                self._abandoned[(call.plugin, call.subject)] = call
            return calls

    def abandoned(self, plugin: str, subject: str) -> Call | None:
        with self._lock:
            return self._abandoned.get((plugin, subject))


class _Workers:
    """Daemon threads that run hook calls, kept for the next call when one returns (handing a
    call to a waiting thread costs about 15 us less than starting one per call; the hand-over
    itself, 20 to 30 us, is most of what a call through the boundary costs:
    ``benchmarks/boundary_overhead.py``).

    A call abandoned past its time limit keeps its thread; the next call gets another. The
    threads are daemons, so a hung plugin never keeps the process from exiting. After a fork
    the child starts with no worker (only the forking thread lives on in it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0
        self._jobs = queue.SimpleQueue()

    def submit(self, job: Callable[[], None]) -> None:
        """Run *job* (which must not raise) in a worker thread."""
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
            jobs = self._jobs
        if spawn:
            threading.Thread(
                target=self._work, args=(jobs,), name="snapcore-hook", daemon=True
            ).start()
        jobs.put(job)

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            job = jobs.get()
            job()
            with self._lock:
                if jobs is not self._jobs:
                    return  # a fork replaced the queue
                self._idle += 1


_WORKERS: Final = _Workers()


class PluginHandle:
    """One loaded plugin as the core sees it: its hook implementations, called one at a time
    through :meth:`call`.

    :param name: the plugin's name (its entry point).
    :param plugin: the module or object holding the ``@hookimpl`` functions.
    :param pm: the plugin manager it is registered with.
    :param api: the hook API version it was written for.
    :param calls: the registry of calls in progress shared by all handles of one ``Plugins``.
    :param user_timeout: the user's time limit for every hook (seconds), or ``None``.
    """

    #: The driver or hypervisor name this plugin provides; set once its info is known.
    provides: str = ""

    def __init__(
        self,
        name: str,
        plugin: object,
        pm: pluggy.PluginManager,
        *,
        api: tuple[int, int],
        calls: CallRegistry,
        user_timeout: float | None = None,
    ):
        self.name = name
        self.plugin = plugin
        self.api = api
        self.calls = calls
        self.user_timeout = user_timeout
        self.plugin_timeout: float | None = None
        self._impls: dict[str, pluggy.HookImpl] = {}
        for caller in pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    self._impls[caller.name] = impl

    @property
    def legacy(self) -> bool:
        """Whether the plugin was written for an older major hook API (1.x)."""
        return self.api[0] < 2

    def implements(self, hook: str) -> bool:
        """Whether the plugin has an implementation of *hook*."""
        return hook in self._impls

    def call(self, hook: str, subject: str, **kwargs: object) -> object:
        """Call the plugin's *hook* with the arguments it asks for, within its time limit.

        *subject* is the disk's vdev (or ``""`` for a domain hook), for messages.

        :raises PluginContractError: the plugin does not implement *hook*, raised something
            other than a :class:`SnapcoreError` or ``OSError``, or was abandoned earlier.
        :raises HookTimeoutError: it did not return in time.
        :raises BackendError: it raised an ``OSError``.
        :raises SnapcoreError: what the plugin raised.
        """
        impl = self._impls.get(hook)
        if impl is None:
            raise self.contract(hook, subject, "it does not implement this hook")
        earlier = self.calls.abandoned(self.name, subject)
        if earlier is not None:
            raise HookTimeoutError(
                self.name,
                f"{hook} (after {earlier.hook} was abandoned)",
                subject,
                self.timeout(earlier.hook),
                abandoned=True,
                driver=self.provides,
            )
        args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
        return self._run(hook, subject, lambda: impl.function(**args))

    def timeout(self, hook: str) -> float:
        """The time limit of *hook* for this plugin, in seconds."""
        return hook_timeout(hook, self.plugin_timeout, self.user_timeout)

    def contract(self, hook: str, subject: str, problem: str) -> PluginContractError:
        """The error for this plugin breaking *hook*'s contract (to raise)."""
        return PluginContractError(self.name, hook, subject, problem, driver=self.provides)

    # -- the call itself ----------------------------------------------------------------------

    def _run(self, hook: str, subject: str, fn: Callable[[], object]) -> object:
        outcome: list[tuple[bool, object]] = []
        done = threading.Event()

        def target() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as exc:
                outcome.append((False, exc))
            finally:
                done.set()

        call = Call(self.name, hook, subject)
        key = self.calls.start(call)
        try:
            _WORKERS.submit(target)
            returned = self._wait(done, call)
        finally:
            self.calls.finish(key)
        if not returned:
            self.calls.abandon(call)
            raise HookTimeoutError(
                self.name, hook, subject, self.timeout(hook), abandoned=True, driver=self.provides
            )
        ok, value = outcome[0]
        if ok:
            return value
        assert isinstance(value, BaseException)
        translated = self._translate(hook, subject, value)
        if translated is value:
            raise value
        raise translated from value

    def _wait(self, done: threading.Event, call: Call) -> bool:
        """Wait for the hook; ``False`` when it ran out of time or was given up on."""
        deadline = call.started + self.timeout(call.hook)
        interrupted = False
        while True:
            try:
                if done.wait(max(0.0, deadline - time.monotonic())):
                    break
                return False
            except KeyboardInterrupt:
                if interrupted:
                    log.warning("stopped waiting for %s; it was left running", call)
                    self.calls.abandon(call)
                    raise
                interrupted = True
                log.warning(
                    "interrupted: waiting for %s to return before undoing "
                    "(press Ctrl-C again to stop waiting)",
                    call,
                )
        if interrupted:
            raise KeyboardInterrupt
        return True

    def _translate(self, hook: str, subject: str, exc: BaseException) -> BaseException:
        if isinstance(exc, SnapcoreError | KeyboardInterrupt):
            return exc
        if isinstance(exc, OSError):
            return BackendError.from_os_error(exc, driver=self.provides, vdev=subject or None)
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return self.contract(hook, subject, f"it raised {what}")


# -- result checks ------------------------------------------------------------------------------


def _blockers(
    handle: PluginHandle, hook: str, subject: str, result: object, what: str = "the blockers"
) -> list[str]:
    if isinstance(result, list | tuple) and all(isinstance(b, str) for b in result):
        return [str(b) for b in result]
    raise handle.contract(
        hook, subject, f"it returned {describe(result)}, not a list of strings ({what})"
    )


def _acknowledged(handle: PluginHandle, hook: str, subject: str, result: object) -> None:
    if result is not True:
        raise handle.contract(
            hook, subject, f"it returned {describe(result)}, not True (done); raise to fail"
        )


def _snapshot_of(
    handle: PluginHandle, hook: str, request: SnapshotRequest, result: object
) -> DiskSnapshot:
    vdev = request.disk.vdev
    if not isinstance(result, DiskSnapshot):
        raise handle.contract(hook, vdev, f"it returned {describe(result)}, not a DiskSnapshot")
    if result.vdev != vdev or result.driver != request.disk.driver:
        raise handle.contract(
            hook,
            vdev,
            f"it returned the snapshot of disk {result.vdev} (driver {result.driver}), "
            f"not of disk {vdev} (driver {request.disk.driver})",
        )
    return result


def _snapshot_list(
    handle: PluginHandle, hook: str, subject: str, result: object
) -> list[DiskSnapshot]:
    if isinstance(result, list | tuple) and all(isinstance(s, DiskSnapshot) for s in result):
        return [s for s in result if isinstance(s, DiskSnapshot)]
    raise handle.contract(hook, subject, f"it returned {describe(result)}, not a list of snapshots")


class StorageBackend(PluginHandle):
    """A storage plugin, called for the disks of its driver only (see the module docstring).

    Every method is named after its hook in :mod:`snapcore.hookspecs`, takes the same keyword
    arguments, and returns the hook's result checked (see there for each contract). Hooks that
    acknowledge with ``True`` return ``None`` here (the ``True`` was checked). ``disk`` may be
    left out of the delete and revert calls (the disk as the snapshot recorded it is given) and
    ``created`` out of the abort call (``None``).
    """

    @property
    def driver(self) -> str:
        return self.provides

    def backend_info(self, ctx: InfoContext) -> BackendInfo:
        result = self.call("backend_info", "", ctx=ctx)
        if not isinstance(result, BackendInfo):
            raise self.contract(
                "backend_info", "", f"it returned {describe(result)}, not a BackendInfo"
            )
        return result

    def disk_claim(self, disk: Disk) -> bool:
        """Whether the plugin claims *disk* (a claim must name the plugin's own driver)."""
        if not self.implements("disk_claim"):
            return False
        result = self.call("disk_claim", disk.vdev, disk=disk)
        if result is None:
            return False
        if result != self.driver:
            raise self.contract(
                "disk_claim",
                disk.vdev,
                f"it returned {describe(result)}; a claim is None or {self.driver!r}",
            )
        return True

    def disk_snapshot_create_check(
        self, *, request: SnapshotRequest, ctx: HookContext
    ) -> list[str]:
        hook, vdev = "disk_snapshot_create_check", request.disk.vdev
        return _blockers(self, hook, vdev, self.call(hook, vdev, request=request, ctx=ctx))

    def disk_snapshot_plan(self, *, request: SnapshotRequest, ctx: HookContext) -> str | None:
        """The plugin's own line for the dry-run plan, or ``None`` when it gives none."""
        hook, vdev = "disk_snapshot_plan", request.disk.vdev
        if not self.implements(hook):
            return None
        result = self.call(hook, vdev, request=request, ctx=ctx)
        if result is None:
            return None
        if not isinstance(result, str) or "\n" in result.strip():
            raise self.contract(hook, vdev, f"it returned {describe(result)}, not one line")
        return result.strip()

    def disk_snapshot_prepare_group(
        self, *, requests: Sequence[SnapshotRequest], ctx: HookContext
    ) -> object | None:
        """What the plugin prepared (to hand back), or ``None``: nothing was, or it has no
        such hook. A 1.x plugin's ``True``/``False``/``None`` (it kept its state itself) is
        ``None`` here."""
        hook, vdevs = "disk_snapshot_prepare_group", _vdevs(requests)
        if not self.implements(hook):
            return None
        result = self.call(hook, vdevs, requests=tuple(requests), ctx=ctx)
        if self.legacy or isinstance(result, bool):
            return None
        return result

    def disk_snapshot_create_group(
        self,
        *,
        requests: Sequence[SnapshotRequest],
        prepared: object | None = None,
        ctx: HookContext,
    ) -> list[DiskSnapshot] | None:
        """The snapshots, in the order of *requests*, or ``None`` when the plugin declines."""
        hook, vdevs = "disk_snapshot_create_group", _vdevs(requests)
        if not self.implements(hook):
            return None
        result = self.call(hook, vdevs, requests=tuple(requests), prepared=prepared, ctx=ctx)
        if result is None:
            return None
        snaps = _snapshot_list(self, hook, vdevs, result)
        if len(snaps) != len(requests):
            raise self.contract(
                hook, vdevs, f"it returned {len(snaps)} snapshots for {len(requests)} disks"
            )
        return [_snapshot_of(self, hook, r, s) for r, s in zip(requests, snaps, strict=True)]

    def disk_snapshot_create(self, *, request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot:
        hook = "disk_snapshot_create"
        result = self.call(hook, request.disk.vdev, request=request, ctx=ctx)
        return _snapshot_of(self, hook, request, result)

    def disk_snapshot_abort(
        self,
        *,
        request: SnapshotRequest,
        created: DiskSnapshot | None = None,
        prepared: object | None = None,
        ctx: HookContext,
    ) -> None:
        hook, vdev = "disk_snapshot_abort", request.disk.vdev
        result = self.call(hook, vdev, request=request, created=created, prepared=prepared, ctx=ctx)
        _acknowledged(self, hook, vdev, result)

    def _on_snapshot(
        self,
        hook: str,
        snapshot: DiskSnapshot,
        disk: Disk | None,
        others: Sequence[DiskSnapshot],
        ctx: HookContext,
    ) -> object:
        """Call a hook that works on one recorded *snapshot* (delete, revert and their checks)."""
        return self.call(
            hook,
            snapshot.vdev,
            snapshot=snapshot,
            disk=disk or _recorded_disk(snapshot),
            others=tuple(others),
            ctx=ctx,
        )

    def disk_snapshot_delete_check(
        self,
        *,
        snapshot: DiskSnapshot,
        disk: Disk | None = None,
        others: Sequence[DiskSnapshot] = (),
        ctx: HookContext,
    ) -> list[str]:
        hook = "disk_snapshot_delete_check"
        result = self._on_snapshot(hook, snapshot, disk, others, ctx)
        return _blockers(self, hook, snapshot.vdev, result)

    def disk_snapshot_delete(
        self,
        *,
        snapshot: DiskSnapshot,
        disk: Disk | None = None,
        others: Sequence[DiskSnapshot] = (),
        ctx: HookContext,
    ) -> None:
        hook = "disk_snapshot_delete"
        result = self._on_snapshot(hook, snapshot, disk, others, ctx)
        _acknowledged(self, hook, snapshot.vdev, result)

    def disk_snapshot_revert_check(
        self,
        *,
        snapshot: DiskSnapshot,
        disk: Disk | None = None,
        others: Sequence[DiskSnapshot] = (),
        ctx: HookContext,
    ) -> list[str]:
        hook = "disk_snapshot_revert_check"
        result = self._on_snapshot(hook, snapshot, disk, others, ctx)
        return _blockers(self, hook, snapshot.vdev, result)

    def disk_snapshot_revert(
        self,
        *,
        snapshot: DiskSnapshot,
        disk: Disk | None = None,
        others: Sequence[DiskSnapshot] = (),
        ctx: HookContext,
    ) -> None:
        hook = "disk_snapshot_revert"
        result = self._on_snapshot(hook, snapshot, disk, others, ctx)
        _acknowledged(self, hook, snapshot.vdev, result)

    def disk_verify(
        self, *, disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
    ) -> list[str] | None:
        """The problems found, or ``None`` when the plugin cannot verify (no such hook)."""
        if not self.implements("disk_verify"):
            return None
        result = self.call("disk_verify", disk.vdev, disk=disk, known=tuple(known), ctx=ctx)
        return _blockers(self, "disk_verify", disk.vdev, result, "the problems")

    def disk_repair(
        self, *, disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
    ) -> list[str]:
        """The repairs made (empty too when the plugin has no such hook)."""
        if not self.implements("disk_repair"):
            return []
        result = self.call("disk_repair", disk.vdev, disk=disk, known=tuple(known), ctx=ctx)
        return _blockers(self, "disk_repair", disk.vdev, result, "the repairs")

    def disk_snapshot_list(
        self, *, disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
    ) -> list[DiskSnapshot]:
        hook = "disk_snapshot_list"
        result = self.call(hook, disk.vdev, disk=disk, known=tuple(known), ctx=ctx)
        return _snapshot_list(self, hook, disk.vdev, result)


def _recorded_disk(snapshot: DiskSnapshot) -> Disk:
    """The disk of *snapshot* as the snapshot recorded it (when the caller names none)."""
    return Disk(vdev=snapshot.vdev, path=snapshot.path, driver=snapshot.driver)


def _vdevs(requests: Sequence[SnapshotRequest]) -> str:
    return ", ".join(r.disk.vdev for r in requests)


class Hypervisor(PluginHandle):
    """A hypervisor plugin, called for the domains whose ``hypervisor`` it provides only.

    Every method is named after its hook in :mod:`snapcore.hookspecs` and returns its result
    checked. Optional hooks the plugin does not implement give their documented default.
    """

    @property
    def hypervisor(self) -> str:
        return self.provides

    def _done(self, hook: str, ctx: HookContext, **kwargs: object) -> None:
        _acknowledged(self, hook, "", self.call(hook, "", ctx=ctx, **kwargs))

    def hypervisor_info(self, ctx: InfoContext) -> HypervisorInfo:
        result = self.call("hypervisor_info", "", ctx=ctx)
        if not isinstance(result, HypervisorInfo):
            raise self.contract(
                "hypervisor_info", "", f"it returned {describe(result)}, not a HypervisorInfo"
            )
        return result

    def domain_state(self, *, ctx: HookContext) -> DomainState:
        result = self.call("domain_state", "", ctx=ctx)
        if isinstance(result, str) and result in set(DomainState):
            return DomainState(result)
        raise self.contract(
            "domain_state", "", f"it returned {describe(result)}, not a DomainState"
        )

    def domain_config_check(self, *, ctx: HookContext) -> list[str]:
        if not self.implements("domain_config_check"):
            return []
        result = self.call("domain_config_check", "", ctx=ctx)
        return _blockers(self, "domain_config_check", "", result)

    def domain_service(self, *, name: str, ctx: HookContext) -> object | None:
        """Any object (the hook's contract is the plugin's own documentation), or ``None``."""
        if not self.implements("domain_service"):
            return None
        return self.call("domain_service", "", name=name, ctx=ctx)

    def domain_disks(self, *, ctx: HookContext) -> list[Disk]:
        if not self.implements("domain_disks"):
            return []
        result = self.call("domain_disks", "", ctx=ctx)
        if isinstance(result, list | tuple) and all(isinstance(d, Disk) for d in result):
            return list(result)
        raise self.contract("domain_disks", "", f"it returned {describe(result)}, not a list")

    def domain_preflight(self, *, ctx: HookContext) -> list[str]:
        if not self.implements("domain_preflight"):
            return []
        return _blockers(self, "domain_preflight", "", self.call("domain_preflight", "", ctx=ctx))

    def domain_quiesce(self, *, ctx: HookContext) -> bool:
        if not self.implements("domain_quiesce"):
            return False
        result = self.call("domain_quiesce", "", ctx=ctx)
        if not isinstance(result, bool):
            raise self.contract(
                "domain_quiesce", "", f"it returned {describe(result)}, not True or False"
            )
        return result

    def domain_thaw(self, *, ctx: HookContext) -> None:
        if self.implements("domain_thaw"):
            self._done("domain_thaw", ctx)

    def domain_pause(self, *, ctx: HookContext) -> None:
        self._done("domain_pause", ctx)

    def domain_resume(self, *, ctx: HookContext) -> None:
        self._done("domain_resume", ctx)

    def domain_start(self, *, paused: bool, ctx: HookContext) -> None:
        """:raises ConfigError: the hypervisor cannot start domains (no such hook)."""
        self._able("domain_start", "start", ctx)
        self._done("domain_start", ctx, paused=paused)

    def domain_stop(self, *, ctx: HookContext) -> None:
        """:raises ConfigError: the hypervisor cannot stop domains (no such hook)."""
        self._able("domain_stop", "stop", ctx)
        self._done("domain_stop", ctx)

    def _able(self, hook: str, verb: str, ctx: HookContext) -> None:
        if not self.implements(hook):
            raise ConfigError(
                f"domain {ctx.domain.name!r}: hypervisor {self.hypervisor!r} cannot {verb} domains"
            )

    def domain_memory_plan(self, *, path: str, ctx: HookContext) -> str | None:
        if not self.implements("domain_memory_plan"):
            return None
        result = self.call("domain_memory_plan", "", path=path, ctx=ctx)
        if result is None or isinstance(result, str):
            return result
        raise self.contract("domain_memory_plan", "", f"it returned {describe(result)}, not a str")

    def domain_memory_prepare(self, *, path: str, ctx: HookContext) -> None:
        if self.implements("domain_memory_prepare"):
            self._done("domain_memory_prepare", ctx, path=path)

    def domain_memory_save(self, *, path: str, ctx: HookContext) -> MemoryImage:
        result = self.call("domain_memory_save", "", path=path, ctx=ctx)
        if not isinstance(result, MemoryImage):
            raise self.contract(
                "domain_memory_save", "", f"it returned {describe(result)}, not a MemoryImage"
            )
        return result

    def domain_memory_restore(
        self, *, image: MemoryImage, state: DomainState, ctx: HookContext
    ) -> None:
        self._done("domain_memory_restore", ctx, image=image, state=state)
