"""The snapcore hook API: every hook a plugin can implement, and its contract.

A plugin is a module (or any object) with functions marked ``@snapcore.hookimpl`` whose names
and arguments match the specs below. An implementation may accept any subset of a spec's
arguments, in any order; it may never ask for one the spec does not have. Hooks are called with
keyword arguments only.

**Routing.** Storage hooks are *first result* hooks: snapcore calls every plugin's
implementation until one returns something other than ``None``. Each implementation therefore
starts by checking ``disk.driver`` (or ``snapshot.driver``) against its own driver name and
returns ``None`` for disks that are not its own. The coordinator always sets ``driver`` before it
calls, and it refuses at load time two plugins that report the same driver in
:func:`backend_info`, so exactly one implementation answers.

**Errors.** Implementations raise :class:`snapcore.errors.SnapcoreError` subclasses
(usually :class:`~snapcore.errors.CommandError`, which the runner raises for you, or
:class:`~snapcore.errors.BackendError`). An ``OSError`` is reported as a
:class:`~snapcore.errors.BackendError` naming the disk. Anything else is treated as a plugin
bug: the operation is undone and the error is reported with the plugin's name.

**Threads.** Hooks for different disks of one domain may run at the same time in different
threads. Hooks for one disk never overlap. A plugin needs no lock of its own for per-disk state.

**Versions.** :data:`HOOK_API_VERSION` counts compatible changes; a change that breaks plugins
bumps :data:`HOOK_API_MAJOR`. A plugin module may set ``SNAPCORE_HOOK_API = (MAJOR, MINOR)`` to
the version it was written for; snapcore refuses to load a plugin written for another major
version or for a newer minor one. The changelog is ``docs/hook-api-changelog.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import pluggy

if TYPE_CHECKING:
    from snapcore.context import HookContext
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
HOOK_API_MAJOR: Final = 1
#: Minor version: bumped for each backward-compatible change (a new hook or argument).
HOOK_API_MINOR: Final = 2
HOOK_API_VERSION: Final = (HOOK_API_MAJOR, HOOK_API_MINOR)

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------
# Storage backends
# --------------------------------------------------------------------------------------------


@hookspec
def backend_info() -> BackendInfo:
    """Describe this storage backend: its driver name, capabilities and tools.

    Called when plugins load and by ``snapcore plugins``. Must be fast and must not fail: probe
    tools lazily and report a missing tool with ``available=False`` and an
    ``unavailable_reason``, never by raising. Every storage plugin implements it; the driver it
    reports must be unique among the loaded plugins.

    :returns: a :class:`~snapcore.model.BackendInfo`.
    """


@hookspec
def disk_claim(disk: Disk) -> str | None:
    """Say whether this backend owns *disk*, whose domain file gives no ``driver``.

    Look at ``disk.path`` only (its form, its file type, the header of the file); do not
    change anything. Return your driver name to claim the disk, or ``None``. If several
    plugins claim one disk, snapcore refuses the domain and asks for an explicit ``driver``.

    :returns: the driver name, or ``None``.
    """


@hookspec(firstresult=True)
def disk_snapshot_create_check(request: SnapshotRequest, ctx: HookContext) -> list[str] | None:
    """Preflight a snapshot of ``request.disk``: list the reasons it cannot be made.

    Called for every disk before any disk is touched, and by ``--dry-run``. Check everything
    that can be checked without changing anything: the disk exists and has the right format,
    the kind and target are supported, an external target does not exist yet, there is room.
    Must not change anything. Stops at the first non-``None`` result.

    :param request: what to create; ``request.kind`` may be ``None`` (your default).
    :returns: ``None`` if the disk is not yours; otherwise a list of blockers, each a sentence
        naming the problem (empty when the snapshot can be made).
    """


@hookspec(firstresult=True)
def disk_snapshot_create(request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot | None:
    """Create snapshot ``request.name`` of ``request.disk``.

    Called after :func:`disk_snapshot_create_check` passed for every disk and the intent was
    journaled; with the domain paused if it runs. Stops at the first non-``None`` result.

    Failure guarantee: when it raises, the disk must be as it was before the call, with no
    partial snapshot left behind (snapcore will also call :func:`disk_snapshot_abort`).

    :returns: ``None`` if the disk is not yours; otherwise the
        :class:`~snapcore.model.DiskSnapshot` made, whose ``extra`` holds anything you need to
        revert or delete it later.
    """


@hookspec(firstresult=True)
def disk_snapshot_prepare_group(
    requests: Sequence[SnapshotRequest], ctx: HookContext
) -> bool | None:
    """Do in advance, while the guest still runs, whatever of these snapshots can be done
    without changing what the guest sees, so that the guest's pause holds only the switch.

    Optional. Called once per driver with all its disks of a checkpoint (``requests`` all have
    the same ``disk.driver``), after every disk's :func:`disk_snapshot_create_check` passed and
    the intent was journaled, before quiesce and pause (for a shut-off domain too, where no
    pause follows: return ``None`` if there is nothing to gain); then, in the pause, the same
    requests reach :func:`disk_snapshot_create_group` (or :func:`disk_snapshot_create`), which
    uses what was prepared. The ``qcow2`` driver creates its external overlays here and opens
    them in QEMU, so that the pause holds one QMP ``transaction``.

    Whatever is prepared must be found again by :func:`disk_snapshot_abort`, which snapcore
    calls for every request of a checkpoint that is undone, whether or not the create hook ran,
    and by the create hook in the pause, which may find the domain changed in between: it
    then raises, and the checkpoint is undone.

    Failure guarantee: when it raises, snapcore calls :func:`disk_snapshot_abort` for each of
    *requests*, which must remove what was prepared.

    .. versionadded:: 1.2

    :returns: ``None`` if the disks are not yours or there is nothing to prepare; ``True``
        when something was prepared.
    """


@hookspec(firstresult=True)
def disk_snapshot_create_group(
    requests: Sequence[SnapshotRequest], ctx: HookContext
) -> list[DiskSnapshot] | None:
    """Create the snapshots of several disks of this driver at one instant, all or nothing.

    Optional. The coordinator offers every driver all its disks of a checkpoint in one call
    first (``requests`` all have the same ``disk.driver``); a backend that can switch them
    together (QEMU's QMP ``transaction``) implements this, any other returns ``None`` and gets
    one :func:`disk_snapshot_create` call per disk instead. Called after every disk's
    :func:`disk_snapshot_create_check` passed, with the domain paused if it runs.

    Failure guarantee: when it raises, no disk of *requests* has a snapshot of this
    checkpoint (snapcore will also call :func:`disk_snapshot_abort` for each of them).

    .. versionadded:: 1.1

    :returns: ``None`` to decline; otherwise one :class:`~snapcore.model.DiskSnapshot` per
        request, in the same order.
    """


@hookspec(firstresult=True)
def disk_snapshot_abort(request: SnapshotRequest, ctx: HookContext) -> bool | None:
    """Undo a :func:`disk_snapshot_create` of *request* (and its
    :func:`disk_snapshot_prepare_group`), whether it finished, failed or was cut short by a
    crash, and return the disk to its state before the create.

    Called to undo a checkpoint whose other disks failed, and by crash recovery, and only for
    requests whose :func:`disk_snapshot_create_check` found no blockers; so a snapshot called
    ``request.name`` that exists was made by this create. It must be idempotent: it is called
    when the create never started, when it stopped half-way, when it finished, and again after
    an abort that was itself interrupted. It must never remove data that did not come from
    this create. Stops at the first non-``None`` result.

    :returns: ``None`` if the disk is not yours; ``True`` once the disk is as it was.
    """


@hookspec(firstresult=True)
def disk_snapshot_delete_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str] | None:
    """Preflight deleting *snapshot*: list the reasons it cannot be deleted now.

    Must not change anything. Stops at the first non-``None`` result.

    :param others: every other snapshot snapcore knows of the same disk, oldest first.
    :returns: ``None`` if the snapshot is not yours; otherwise a list of blockers.
    """


@hookspec(firstresult=True)
def disk_snapshot_delete(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool | None:
    """Delete *snapshot* so that no other snapshot and not the disk's current data lose anything.

    External snapshots are merged into the layers that depend on them, never orphaned. Must be
    idempotent: a delete interrupted by a crash is run again by recovery, and deleting a
    snapshot that is already gone succeeds. Stops at the first non-``None`` result.

    :param others: every other snapshot snapcore knows of the same disk, oldest first.
    :returns: ``None`` if the snapshot is not yours; ``True`` once it is gone.
    """


@hookspec(firstresult=True)
def disk_snapshot_revert_check(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> list[str] | None:
    """Preflight reverting the disk to *snapshot*: list the reasons it cannot be done now.

    Called for every disk before any disk is reverted, because a revert across several
    backends is only all-or-nothing if each backend says up front whether it can do its part.
    Must not change anything. Stops at the first non-``None`` result.

    A snapshot that no longer exists on the storage must be reported as a blocker.

    :returns: ``None`` if the snapshot is not yours; otherwise a list of blockers (for example
        "the snapshot is gone", "only the latest snapshot can be reverted").
    """


@hookspec(firstresult=True)
def disk_snapshot_revert(
    snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], ctx: HookContext
) -> bool | None:
    """Make the disk's current data equal to *snapshot*'s, keeping *snapshot* and every other
    snapshot of the disk, newer ones included.

    Called with the domain stopped. Must be idempotent (recovery may run it again). Failure
    guarantee: when it raises, the disk holds either its data from before the call or the
    snapshot's data, never a mix.

    :returns: ``None`` if the snapshot is not yours; ``True`` once reverted.
    """


@hookspec(firstresult=True)
def disk_snapshot_list(
    disk: Disk, known: Sequence[DiskSnapshot], ctx: HookContext
) -> list[DiskSnapshot] | None:
    """List the snapshots that exist on the storage of *disk* right now.

    snapcore compares this with its records to show checkpoints whose snapshot was removed
    behind its back: a recorded snapshot counts as present when the list holds one of the same
    kind with the same ``locator`` (external, native) or the same ``name`` (internal). Return
    snapshots found on the storage, whether snapcore made them or not; ``extra`` may be left
    empty. Must not change anything.

    :param known: the snapshots of this disk snapcore has on record, so that a backend with no
        index of its own (separate files, say) can check each of them.

    :returns: ``None`` if the disk is not yours; otherwise the snapshots found.
    """


# --------------------------------------------------------------------------------------------
# Hypervisors
# --------------------------------------------------------------------------------------------
# Each hypervisor plugin answers for domains whose ``domain.hypervisor`` equals its name and
# returns ``None`` for the others. The built-in ``none`` hypervisor stands for domains that are
# never running; ``qemu`` (QMP) and ``xen`` (xl) ship as separate plugins.


@hookspec
def hypervisor_info() -> HypervisorInfo:
    """Describe this hypervisor plugin: its name (unique), whether it can save memory, tools.

    Must be fast and must not fail; report missing tools with ``available=False``.
    """


@hookspec(firstresult=True)
def domain_state(ctx: HookContext) -> DomainState | None:
    """Return whether ``ctx.domain`` is running, paused or shut off.

    :raises SnapcoreError: (exit 2) when the domain cannot be reached, e.g. a QMP socket that
        is missing or does not answer.
    :returns: ``None`` if the domain is not yours.
    """


@hookspec(firstresult=True)
def domain_disks(ctx: HookContext) -> list[Disk] | None:
    """The disks of ``ctx.domain``, whose domain file lists none, as the hypervisor has them
    (for Xen: ``pdev_path``, ``vdev`` and ``format`` from ``xl list -l``).

    Called once when the domain is opened. Set ``driver`` when the hypervisor knows the
    format; leave it ``None`` for the backends to claim the disk. Must not change anything.

    .. versionadded:: 1.1

    :returns: ``None`` if the domain is not yours; otherwise its disks (an empty list when the
        hypervisor does not know the domain).
    """


@hookspec(firstresult=True)
def domain_preflight(ctx: HookContext) -> list[str] | None:
    """List the reasons the running domain cannot be checkpointed or reverted now.

    Called while planning, for a domain that is running or paused. Check what the hypervisor
    knows and snapcore's domain file might contradict, e.g. that every disk of
    ``ctx.domain`` is the image the hypervisor has open. Must not change anything.

    .. versionadded:: 1.1

    :returns: ``None`` if the domain is not yours; otherwise a list of blockers.
    """


@hookspec(firstresult=True)
def domain_quiesce(ctx: HookContext) -> bool | None:
    """Flush the guest's file systems (guest agent ``fsfreeze``) before a disk-only checkpoint.

    Called only when the domain runs and the domain file names a guest agent. The coordinator
    calls :func:`domain_thaw` afterwards whatever happens.

    :returns: ``None`` if the domain is not yours; ``True`` when frozen, ``False`` when the
        guest cannot be quiesced (the checkpoint goes on, crash-consistent).
    """


@hookspec(firstresult=True)
def domain_thaw(ctx: HookContext) -> bool | None:
    """Undo :func:`domain_quiesce`. Must succeed when the guest was not frozen.

    :returns: ``None`` if the domain is not yours; ``True`` otherwise.
    """


@hookspec(firstresult=True)
def domain_pause(ctx: HookContext) -> bool | None:
    """Pause ``ctx.domain``'s virtual CPUs and drain its in-flight disk writes.

    :returns: ``None`` if the domain is not yours; ``True`` once paused.
    """


@hookspec(firstresult=True)
def domain_resume(ctx: HookContext) -> bool | None:
    """Resume a domain paused by :func:`domain_pause`. Called on success and on failure.

    :returns: ``None`` if the domain is not yours; ``True`` once running.
    """


@hookspec(firstresult=True)
def domain_start(paused: bool, ctx: HookContext) -> bool | None:
    """Start the shut-off domain from its domain file, running, or paused if *paused*.

    .. versionadded:: 1.1

    :returns: ``None`` if the domain is not yours; ``True`` once started.
    """


@hookspec(firstresult=True)
def domain_stop(ctx: HookContext) -> bool | None:
    """Stop ``ctx.domain`` (before a revert). The domain's disks must be closed on return.

    :returns: ``None`` if the domain is not yours; ``True`` once stopped.
    """


@hookspec(firstresult=True)
def domain_memory_plan(path: str, ctx: HookContext) -> str | None:
    """Say, for the plan, how :func:`domain_memory_save` will save the memory to *path*.

    For example "live (background snapshot): the guest runs while memory is written" or
    "paused save: the guest stays stopped until memory is written". Must not change anything.

    .. versionadded:: 1.1

    :returns: ``None`` if the domain is not yours; otherwise one line.
    """


@hookspec(firstresult=True)
def domain_memory_prepare(path: str, ctx: HookContext) -> bool | None:
    """Do, before the guest is paused, what :func:`domain_memory_save` can do in advance
    (check the space, set the hypervisor up, create *path* and hand it over), so the pause
    that follows stays short.

    Optional. Called with the domain as it was (running), right before the disk snapshots'
    pause, for a hypervisor without ``memory_first``. If the checkpoint is abandoned
    afterwards, snapcore removes *path*; nothing else may be left that matters. Failure
    guarantee: when it raises, *path* does not exist.

    .. versionadded:: 1.1

    :returns: ``None`` if the domain is not yours; ``True`` once prepared.
    """


@hookspec(firstresult=True)
def domain_memory_save(path: str, ctx: HookContext) -> MemoryImage | None:
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

    :returns: ``None`` if the domain is not yours; otherwise the
        :class:`~snapcore.model.MemoryImage` written.
    """


@hookspec(firstresult=True)
def domain_memory_restore(image: MemoryImage, state: DomainState, ctx: HookContext) -> bool | None:
    """Start the stopped domain from *image*, its disks already reverted, and leave it in
    *state* (running or paused), as it was when the image was saved.

    :returns: ``None`` if the domain is not yours; ``True`` once restored.
    """
