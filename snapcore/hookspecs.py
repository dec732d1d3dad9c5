"""The snapcore hook API: every hook a plugin can implement, and its contract.

A plugin is a module (or any object) with functions marked ``@snapcore.hookimpl`` whose names
and arguments match the specs below. An implementation may accept any subset of a spec's
arguments, in any order; it may never ask for one the spec does not have. Hooks are called with
keyword arguments only.

**Routing.** snapcore calls a storage hook only on the plugin that provides the disk's driver
(``disk.driver``, ``snapshot.driver``: the ``driver`` its :func:`backend_info` reports), and a
hypervisor hook only on the plugin that provides the domain's hypervisor (the ``name`` its
:func:`hypervisor_info` reports). A plugin never sees another plugin's disks and never checks
whom a call is for. Only :func:`disk_claim` is asked of every storage plugin. Two plugins that
report one driver or hypervisor name are refused when they load.

**Results.** Every result is checked against the type a spec declares. A wrong type, ``None``
where a result is due, a string where a list is due, or anything but ``True`` where ``True``
acknowledges that the work is done, is a
:class:`~snapcore.errors.PluginContractError` naming the plugin, the hook and the disk; the
operation then fails for that disk and is undone like any other failure.

**Errors.** Implementations raise :class:`snapcore.errors.SnapcoreError` subclasses (usually
:class:`~snapcore.errors.CommandError`, which the runner raises for you, or
:class:`~snapcore.errors.BackendError`). An ``OSError`` is reported as a
:class:`~snapcore.errors.BackendError` naming the disk. Anything else (``SystemExit``
included) is a :class:`~snapcore.errors.PluginContractError`: the operation is undone and the
error names the plugin.

**Time limits.** Each call is waited for at most a limit: 10 minutes for hooks that only look,
4 hours for those that change something, or ``BackendInfo.hook_timeout`` /
``HypervisorInfo.hook_timeout`` when the plugin sets it, or the user's ``SNAPCORE_HOOK_TIMEOUT``.
A hook past its limit is abandoned: snapcore calls the plugin no more for that disk in this
process and leaves its undo to ``snapcore recover``.

**Threads.** Each hook call runs in a thread of its own. Hooks for different disks of one
domain may run at the same time. Hooks for one disk never overlap. A plugin needs no lock of
its own for per-disk state.

**Versions.** :data:`HOOK_API_VERSION` is ``(MAJOR, MINOR)``: a new hook or argument bumps the
minor version, a change that breaks plugins the major. A plugin module sets
``SNAPCORE_HOOK_API = (MAJOR, MINOR)`` to the version it was written for. snapcore loads plugins
written for this major version up to its minor, and, through compatibility rules, for the
majors back to :data:`HOOK_API_OLDEST_MAJOR` (``snapcore plugins`` marks them as deprecated);
it refuses any other. The changelog and the age policy are in ``docs/hook-api-changelog.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import pluggy

if TYPE_CHECKING:
    from snapcore.context import HookContext, InfoContext
    from snapcore.model import (
        BackendInfo,
        Disk,
        DiskSnapshot,
        DomainState,
        HypervisorInfo,
        MemoryImage,
        SnapshotRequest,
    )

PROJECT: Final = "snapcore"
#: Major version of the hook API: plugins written for another major version are refused.
HOOK_API_MAJOR: Final = 2
#: Minor version: bumped for each backward-compatible change (a new hook or argument).
HOOK_API_MINOR: Final = 0
HOOK_API_VERSION: Final = (HOOK_API_MAJOR, HOOK_API_MINOR)
#: The oldest major version still loaded (its plugins are deprecated; see the changelog).
HOOK_API_OLDEST_MAJOR: Final = 1

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------
# Storage backends
# --------------------------------------------------------------------------------------------


@hookspec
def backend_info(ctx: InfoContext) -> BackendInfo:
    """Describe this storage backend: its driver name, capabilities and tools.

    Called once when the plugin loads, and by ``snapcore plugins``. Must be fast and must not
    fail: report a missing tool with ``available=False`` and an ``unavailable_reason``, never by
    raising. ``ctx.run`` may run the plugin's tool to learn its version (``tool --version``);
    it costs start-up time on every command, so read the version from a file when you can.
    Every storage plugin implements it; the driver it reports must be unique among the loaded
    plugins.

    .. versionchanged:: 2.0 takes ``ctx``.

    :returns: a :class:`~snapcore.model.BackendInfo`.
    """


@hookspec
def disk_claim(disk: Disk) -> str | None:
    """Say whether this backend owns *disk*, whose domain file gives no ``driver``.

    Optional (none: disks of this driver must name it in the domain file). The one storage hook
    asked of every storage plugin. Look at ``disk.path`` only (its form,
    its file type, the header of the file); do not change anything, and claim only what you can
    tell is yours (a plugin for one image format must not claim another format's files). If
    several plugins claim one disk, snapcore refuses the domain and asks for an explicit
    ``driver``.

    :returns: your driver name to claim the disk, or ``None``.
    """


@hookspec
def disk_snapshot_create_check(request: SnapshotRequest, ctx: HookContext) -> list[str]:
    """Preflight a snapshot of ``request.disk``: list the reasons it cannot be made.

    Called for every disk before any disk is touched, and by ``--dry-run``. Check everything
    that can be checked without changing anything: the disk exists and has the right format,
    its backing chain is intact, the kind and target are supported, an external target does not
    exist yet, there is room. Must not change anything: no file, directory or metadata may be
    written, not even a temporary one.

    :param request: what to create; ``request.kind`` may be ``None`` (your default).
    :returns: a list of blockers, each a sentence naming the problem (empty when the snapshot
        can be made).
    """


@hookspec
def disk_snapshot_plan(request: SnapshotRequest, ctx: HookContext) -> str | None:
    """Say in one line what :func:`disk_snapshot_create` will do for *request*, for the plan
    that ``--dry-run`` prints ("overlay /srv/a.vmdk.k on top of a hard link", say).

    Optional. Called after :func:`disk_snapshot_create_check` found no blocker. Must not
    change anything.

    .. versionadded:: 2.0

    :returns: one line, or ``None`` to let snapcore describe the step.
    """


@hookspec
def disk_snapshot_prepare_group(
    requests: Sequence[SnapshotRequest], ctx: HookContext
) -> object | None:
    """Do in advance, while the guest still runs, whatever of these snapshots can be done
    without changing what the guest sees, so that the guest's pause holds only the switch.

    Optional. Called once per driver with all its disks of a checkpoint (``requests`` all have
    your driver), after every disk's :func:`disk_snapshot_create_check` passed and the intent
    was journaled, before quiesce and pause (for a shut-off domain too, where no pause
    follows: return ``None`` if there is nothing to gain). What it returns, any object of the
    plugin's own (a prepared transaction, say), snapcore holds for the operation and hands
    back as ``prepared`` to :func:`disk_snapshot_create_group` in the pause and to
    :func:`disk_snapshot_abort` if the checkpoint is undone; the plugin keeps no state of its
    own between the calls. The ``qcow2`` driver creates its external overlays here, opens them
    in QEMU, and returns the transaction that switches them, so that the pause holds one QMP
    ``transaction``.

    The create hook in the pause may find the domain changed since (a disk's active node
    replaced): it then raises, and the checkpoint is undone.

    Failure guarantee: when it raises, what it prepared is removed (snapcore also calls
    :func:`disk_snapshot_abort` for each of *requests*, with ``prepared`` ``None``).

    .. versionadded:: 1.2
    .. versionchanged:: 2.0 returns what was prepared (``None``: nothing), which snapcore
       hands back; 1.2 returned ``True`` and the plugin kept the state itself.

    :returns: what was prepared, or ``None`` when nothing was.
    """


@hookspec
def disk_snapshot_create_group(
    requests: Sequence[SnapshotRequest], prepared: object | None, ctx: HookContext
) -> list[DiskSnapshot] | None:
    """Create the snapshots of several disks of this driver at one instant, all or nothing.

    Optional. The coordinator offers every driver all its disks of a checkpoint in one call
    first (``requests`` all have your driver); a backend that can switch them together (QEMU's
    QMP ``transaction``) implements this, any other returns ``None`` and gets one
    :func:`disk_snapshot_create` call per disk instead. Called after every disk's
    :func:`disk_snapshot_create_check` passed, with the domain paused if it runs.

    Failure guarantee: when it raises, no disk of *requests* has a snapshot of this
    checkpoint (snapcore will also call :func:`disk_snapshot_abort` for each of them).

    :param prepared: what :func:`disk_snapshot_prepare_group` returned for these requests,
        or ``None``.

    .. versionadded:: 1.1
    .. versionchanged:: 2.0 takes ``prepared``.

    :returns: ``None`` to decline; otherwise one :class:`~snapcore.model.DiskSnapshot` per
        request, in the same order.
    """


@hookspec
def disk_snapshot_create(request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot:
    """Create snapshot ``request.name`` of ``request.disk``.

    Called after :func:`disk_snapshot_create_check` passed for every disk and the intent was
    journaled; with the domain paused if it runs.

    Failure guarantee: when it raises, the disk must be as it was before the call, with no
    partial snapshot left behind (snapcore will also call :func:`disk_snapshot_abort`).

    :returns: the :class:`~snapcore.model.DiskSnapshot` made (``vdev`` and ``driver`` those of
        ``request.disk``), whose ``extra`` holds anything you need to revert or delete it later.
    """


@hookspec
def disk_snapshot_abort(
    request: SnapshotRequest,
    created: DiskSnapshot | None,
    prepared: object | None,
    ctx: HookContext,
) -> bool:
    """Undo a :func:`disk_snapshot_create` of *request* (and its
    :func:`disk_snapshot_prepare_group`), whether it finished, failed or was cut short by a
    crash, and return the disk to its state before the create.

    Called to undo a checkpoint whose other disks failed, and by crash recovery, and only for
    requests whose :func:`disk_snapshot_create_check` found no blockers; so a snapshot called
    ``request.name`` that exists was made by this create. It must be idempotent: it is called
    when the create never started, when it stopped half-way, when it finished, and again after
    an abort that was itself interrupted. It must never remove data that did not come from
    this create.

    :param created: what :func:`disk_snapshot_create` (or the group call) returned for this
        request, or ``None`` when it did not return (it failed, never ran, or the command that
        ran it crashed).
    :param prepared: what :func:`disk_snapshot_prepare_group` returned for the group of this
        request, or ``None`` (nothing prepared, or crash recovery: find what a preparation left
        on the storage yourself).

    .. versionchanged:: 2.0 takes ``created`` and ``prepared``.

    :returns: ``True`` once the disk is as it was.
    """


@hookspec
def disk_snapshot_delete_check(
    snapshot: DiskSnapshot, disk: Disk, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str]:
    """Preflight deleting *snapshot*: list the reasons it cannot be deleted now.

    Must not change anything.

    :param disk: the disk as the domain file has it now (or, when it is no longer in the
        domain, as the snapshot recorded it).
    :param others: every other snapshot snapcore knows of the same disk, oldest first.

    .. versionchanged:: 2.0 takes ``disk``.

    :returns: a list of blockers (empty when it can be deleted).
    """


@hookspec
def disk_snapshot_delete(
    snapshot: DiskSnapshot, disk: Disk, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool:
    """Delete *snapshot* so that no other snapshot and not the disk's current data lose anything.

    External snapshots are merged into the layers that depend on them (every one of them, when
    several snapshots were made from this one after reverts), never orphaned. Must be
    idempotent: a delete interrupted by a crash is run again by recovery, and deleting a
    snapshot that is already gone succeeds.

    Failure guarantee: when it raises, the disk's current data and every snapshot in *others*
    still read back as before; *snapshot* itself may be partly merged already. snapcore then
    keeps the checkpoint's record marked ``deleting``, refuses to revert to it, and calls this
    hook again when the user deletes it again (the conformance suite's
    ``test_failed_delete_keeps_every_other_layer`` checks exactly this).

    :param disk: as for :func:`disk_snapshot_delete_check`.
    :param others: every other snapshot snapcore knows of the same disk, oldest first.

    .. versionchanged:: 2.0 takes ``disk``.

    :returns: ``True`` once it is gone (raise if it cannot be deleted: never return ``False``).
    """


@hookspec
def disk_snapshot_revert_check(
    snapshot: DiskSnapshot, disk: Disk, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str]:
    """Preflight reverting the disk to *snapshot*: list the reasons it cannot be done now.

    Called for every disk before any disk is reverted, because a revert across several
    backends is only all-or-nothing if each backend says up front whether it can do its part.
    Must not change anything.

    A snapshot that no longer exists on the storage must be reported as a blocker.

    .. versionchanged:: 2.0 takes ``disk``.

    :returns: a list of blockers (for example "the snapshot is gone", "only the latest snapshot
        can be reverted"); empty when the revert can be done.
    """


@hookspec
def disk_snapshot_revert(
    snapshot: DiskSnapshot, disk: Disk, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool:
    """Make the disk's current data equal to *snapshot*'s, keeping *snapshot* and every other
    snapshot of the disk, newer ones included.

    Called with the domain stopped. Must be idempotent (recovery may run it again). Failure
    guarantee: when it raises, the disk holds either its data from before the call or the
    snapshot's data, never a mix.

    .. versionchanged:: 2.0 takes ``disk``.

    :returns: ``True`` once reverted.
    """


@hookspec
def disk_snapshot_list(
    disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
) -> list[DiskSnapshot]:
    """List the snapshots that exist on the storage of *disk* right now.

    snapcore compares this with its records to show checkpoints whose snapshot was removed
    behind its back: a recorded snapshot counts as present when the list holds one of the same
    kind with the same ``locator`` (external, native) or the same ``name`` (internal). Return
    snapshots found on the storage, whether snapcore made them or not; ``extra`` may be left
    empty. Must not change anything. A broken backing chain is reported by raising a
    :class:`~snapcore.errors.BackendError` that says what is broken.

    :param known: the snapshots of this disk snapcore has on record, so that a backend with no
        index of its own (separate files, say) can check each of them.

    :returns: the snapshots found.
    """


@hookspec
def disk_verify(disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext) -> list[str]:
    """List what is wrong on the storage of *disk*: its image, or the files of the snapshots in
    *known*, fail their format's own check (``qemu-img check``, ``vhd-util check``), a
    snapshot's file is the same inode as the live disk, a scratch file of snapcore's own naming
    is left over.

    Optional (none: snapcore cannot vouch for the disk's images). Called after every undo of a
    create and every crash recovery, for the disks they touched (a problem then is exit 3,
    never exit 0 over a failing image), and by ``snapcore check``. Must not change anything; a
    disk of a running domain is checked without taking its locks (``qemu-img check -U``).

    .. versionadded:: 2.0

    :param known: the snapshots of this disk snapcore has on record.
    :returns: the problems, each a sentence naming the file and what is wrong (empty: clean).
    """


@hookspec
def disk_repair(disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext) -> list[str]:
    """Repair on the storage of *disk* what can be repaired without losing data: leaked
    clusters (``qemu-img check -r leaks``), scratch files of snapcore's own naming. Anything
    that could lose data is left for :func:`disk_verify` to report.

    Optional. Called right before :func:`disk_verify` after an undo or a recovery, and by
    ``snapcore check --repair``; only with the domain shut off.

    .. versionadded:: 2.0

    :returns: one line per repair made (empty: nothing needed repairing).
    """


# --------------------------------------------------------------------------------------------
# Hypervisors
# --------------------------------------------------------------------------------------------
# Each hypervisor hook is called on the plugin whose ``hypervisor_info`` name equals
# ``ctx.domain.hypervisor``, and no other. The built-in ``none`` hypervisor stands for domains
# that are never running; ``qemu`` (QMP) and ``xen`` (xl) ship as separate plugins. Hooks marked
# optional may be left out; each says what snapcore assumes then.


@hookspec
def hypervisor_info(ctx: InfoContext) -> HypervisorInfo:
    """Describe this hypervisor plugin: its name (unique), whether it can save memory, tools.

    Must be fast and must not fail; report missing tools with ``available=False``.

    .. versionchanged:: 2.0 takes ``ctx`` (as :func:`backend_info`).
    """


@hookspec
def domain_state(ctx: HookContext) -> DomainState:
    """Return whether ``ctx.domain`` is running, paused or shut off.

    :raises SnapcoreError: (exit 2) when the domain cannot be reached, e.g. a QMP socket that
        is missing or does not answer.
    """


@hookspec
def domain_config_check(ctx: HookContext) -> list[str]:
    """List what is wrong with ``ctx.domain.hypervisor_table``, the domain file's table named
    after this hypervisor (``[qemu]``, ``[xen]``), which snapcore keeps as TOML gave it.

    Optional (none: the table is not checked). Called when the domain is opened, before any
    other hook for it; each problem is a sentence naming the key, and any problem refuses the
    domain (exit 2) before anything is touched. Must not change anything.

    .. versionadded:: 2.0

    :returns: the problems (empty when the table is right).
    """


@hookspec
def domain_service(name: str, ctx: HookContext) -> object | None:
    """Offer storage plugins a service of the hypervisor for ``ctx.domain``: its monitor, say.

    Optional (none: no services). Storage plugins ask through ``ctx.service(name)``; snapcore
    calls this hook on the domain's hypervisor the first time an operation asks for *name*,
    shares the object among every hook of that operation, and at the operation's end calls
    its ``close()`` method if it has one. The ``qemu`` plugin offers ``"qmp"``: a
    ``snapcore_qemu.qmp.QMPSession`` with the domain's QMP monitor, connected on first use,
    which the ``qcow2`` plugin uses for the disks of a running QEMU. Document the services
    you offer and what type each one is.

    .. versionadded:: 2.0

    :returns: the service, or ``None`` when this hypervisor does not offer *name* for the
        domain (a QEMU domain whose file names no monitor).
    """


@hookspec
def domain_disks(ctx: HookContext) -> list[Disk]:
    """The disks of ``ctx.domain``, whose domain file lists none, as the hypervisor has them
    (for Xen: ``pdev_path``, ``vdev`` and ``format`` from ``xl list -l``).

    Optional (none: the domain file must list its disks). Called once when the domain is
    opened. Set ``driver`` when the hypervisor knows the format; leave it ``None`` for the
    backends to claim the disk. Must not change anything.

    .. versionadded:: 1.1

    :returns: its disks (an empty list when the hypervisor does not know the domain).
    """


@hookspec
def domain_preflight(ctx: HookContext) -> list[str]:
    """List the reasons the running domain cannot be checkpointed or reverted now.

    Optional (none: no blockers). Called while planning, for a domain that is running or
    paused. Check what the hypervisor knows and snapcore's domain file might contradict, e.g.
    that every disk of ``ctx.domain`` is the image the hypervisor has open. Must not change
    anything.

    .. versionadded:: 1.1

    :returns: a list of blockers.
    """


@hookspec
def domain_quiesce(ctx: HookContext) -> bool:
    """Flush the guest's file systems (guest agent ``fsfreeze``) before a disk-only checkpoint.

    Optional (none: never quiesced). Called only when the domain runs and is disk-only. The
    coordinator calls :func:`domain_thaw` afterwards whatever happens.

    :returns: ``True`` when frozen, ``False`` when the guest cannot be quiesced (the
        checkpoint goes on, crash-consistent).
    """


@hookspec
def domain_thaw(ctx: HookContext) -> bool:
    """Undo :func:`domain_quiesce`. Must succeed when the guest was not frozen.

    Optional when :func:`domain_quiesce` is not implemented.

    :returns: ``True``.
    """


@hookspec
def domain_pause(ctx: HookContext) -> bool:
    """Pause ``ctx.domain``'s virtual CPUs and drain its in-flight disk writes.

    :returns: ``True`` once paused.
    """


@hookspec
def domain_resume(ctx: HookContext) -> bool:
    """Resume a domain paused by :func:`domain_pause`. Called on success and on failure.

    :returns: ``True`` once running.
    """


@hookspec
def domain_start(paused: bool, ctx: HookContext) -> bool:
    """Start the shut-off domain from its domain file, running, or paused if *paused*.

    Optional (none: ``snapcore domain-start`` says the hypervisor cannot start domains).

    .. versionadded:: 1.1

    :returns: ``True`` once started.
    """


@hookspec
def domain_stop(ctx: HookContext) -> bool:
    """Stop ``ctx.domain`` (before a revert). The domain's disks must be closed on return.

    Required of a hypervisor whose domains can run.

    :returns: ``True`` once stopped.
    """


@hookspec
def domain_memory_plan(path: str, ctx: HookContext) -> str | None:
    """Say, for the plan, how :func:`domain_memory_save` will save the memory to *path*.

    Optional. For example "live (background snapshot): the guest runs while memory is
    written" or "paused save: the guest stays stopped until memory is written". Must not change
    anything.

    .. versionadded:: 1.1

    :returns: one line, or ``None``.
    """


@hookspec
def domain_memory_prepare(path: str, ctx: HookContext) -> bool:
    """Do, before the guest is paused, what :func:`domain_memory_save` can do in advance
    (check the space, set the hypervisor up, create *path* and hand it over), so the pause
    that follows stays short.

    Optional. Called with the domain as it was (running), right before the disk snapshots'
    pause, for a hypervisor without ``memory_first``. If the checkpoint is abandoned
    afterwards, snapcore removes *path*; nothing else may be left that matters. Failure
    guarantee: when it raises, *path* does not exist.

    .. versionadded:: 1.1

    :returns: ``True`` once prepared.
    """


@hookspec
def domain_memory_save(path: str, ctx: HookContext) -> MemoryImage:
    """Save the domain's memory and device state, as they are at this call, to *path*.

    Called with the domain paused, right after every disk's snapshot was taken, so the image
    matches the disks exactly. ``ctx.state`` is the state before the checkpoint began: a
    domain that was running may be let run again while the image is written (a
    copy-on-write, "background" save), which keeps the guest's pause short; one that was
    paused must stay paused. The coordinator calls :func:`domain_resume` afterwards anyway.
    Failure guarantee: when it raises, *path* does not exist.

    A hypervisor whose :class:`~snapcore.model.HypervisorInfo` sets ``memory_first`` (a guest
    that must run to be suspended, as Xen PV guests) is called before the disk snapshots
    instead, with the domain running, and must leave it paused.

    .. versionchanged:: 1.1 called after the disk snapshots, with the domain paused, unless
       the hypervisor sets ``memory_first``.

    :returns: the :class:`~snapcore.model.MemoryImage` written.
    """


@hookspec
def domain_memory_restore(image: MemoryImage, state: DomainState, ctx: HookContext) -> bool:
    """Start the stopped domain from *image*, its disks already reverted, and leave it in
    *state* (running or paused), as it was when the image was saved.

    :returns: ``True`` once restored.
    """
