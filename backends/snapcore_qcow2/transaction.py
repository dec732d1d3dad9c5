"""The switch of a checkpoint's qcow2 disks on one running QEMU, in one QMP ``transaction``.

A :class:`GroupSwitch` is the checkpoint's disks made ready for that transaction: each disk
planned (:meth:`LiveDisk.plan`), each external overlay prepared (file, fd set, QEMU node:
:meth:`LiveDisk.prepare_external`) and the transaction's actions written. Its life is
prepare -> commit, or prepare -> unprepare:

* :meth:`GroupSwitch.prepare` makes it (while the guest still runs, when the coordinator calls
  ``disk_snapshot_prepare_group``);
* :meth:`GroupSwitch.commit` runs the transaction in the guest's pause and renames the overlays
  onto the disks' paths;
* :meth:`GroupSwitch.unprepare` removes what was prepared, before the transaction.

Between the two hooks snapcore holds the prepared switch: ``disk_snapshot_prepare_group``
returns it and snapcore hands it back as ``prepared`` to ``disk_snapshot_create_group`` in the
pause, or to ``disk_snapshot_abort``. The plugin keeps no state between hooks, so a switch can
never outlive the operation that prepared it nor be taken by another one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from snapcore.context import HookContext
from snapcore.errors import BackendError
from snapcore.model import DiskSnapshot, SnapshotKind, SnapshotRequest
from snapcore_qcow2.blockgraph import BlockView, Device
from snapcore_qcow2.live import LiveDisk, Prepared, require_qmp
from snapcore_qcow2.offline import DRIVER
from snapcore_qemu.qmp import QMPSession

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GroupSwitch:
    """A checkpoint's disks made ready for the one transaction that switches them."""

    disks: list[LiveDisk]
    requests: list[SnapshotRequest]
    #: Per request: its QEMU device (with the active node it snapshots) and its kind.
    planned: list[tuple[Device, SnapshotKind]]
    #: The transaction's actions, one per request.
    actions: list[dict[str, Any]]
    #: The external snapshots prepared so far.
    prepared: list[Prepared]

    @classmethod
    def prepare(
        cls, requests: Sequence[SnapshotRequest], ctx: HookContext, qmp: QMPSession
    ) -> GroupSwitch:
        """Plan every disk of *requests* and prepare each external snapshot.

        Failure guarantee: when it raises, what was prepared is removed again (what could not
        be is noted on the exception).
        """
        vdevs = ", ".join(r.disk.vdev for r in requests)
        disks = [LiveDisk(vdev=r.disk.vdev, ctx=ctx) for r in requests]
        view = BlockView(qmp)
        taken = set(view.nodes)
        planned = [disk.plan(r, view) for disk, r in zip(disks, requests, strict=True)]
        tops = [device.top.name for device, _ in planned]
        if len(set(tops)) != len(tops):
            raise BackendError(
                f"two disks of {vdevs} are one QEMU device; check the domain file", driver=DRIVER
            )
        switch = cls(disks, list(requests), planned, [], [])
        try:
            for disk, request, (device, kind) in zip(disks, requests, planned, strict=True):
                if kind is SnapshotKind.INTERNAL:
                    disk._step("create", f"internal snapshot {request.name!r} of {device.top.name}")
                    switch.actions.append(
                        {
                            "type": "blockdev-snapshot-internal-sync",
                            "data": {"device": device.top.name, "name": request.name},
                        }
                    )
                else:
                    switch.actions.append(
                        disk.prepare_external(request, device, taken, switch.prepared)
                    )
        except BaseException as exc:
            for problem in switch.unprepare():
                exc.add_note(problem)
            raise
        return switch

    def check_unchanged(self, qmp: QMPSession) -> None:
        """Refuse to run a switch prepared earlier if a disk's active node changed since (one
        query).

        :raises BackendError: naming the disk whose node changed.
        """
        active = {
            str(b.get("device") or b.get("qdev", "")): (b.get("inserted") or {}).get("node-name")
            for b in qmp.execute("query-block")
        }
        for disk, (device, _) in zip(self.disks, self.planned, strict=True):
            if active.get(device.name) != device.top.name:
                raise BackendError(
                    f"QEMU's active node for disk {disk.vdev} changed from {device.top.name} "
                    f"to {active.get(device.name)} while the checkpoint was being prepared",
                    driver=DRIVER,
                    vdev=disk.vdev,
                )

    def commit(self, qmp: QMPSession, requests: Sequence[SnapshotRequest]) -> list[DiskSnapshot]:
        """Run the transaction, then rename each overlay onto its disk's path; return the
        snapshots in the order of *requests* (the same requests, in any order).

        Failure guarantee: when it raises, no disk has a snapshot of this checkpoint: if the
        transaction failed, what was prepared is removed; after it, every disk is aborted
        (the overlays committed back). An undo that fails is logged and noted on the
        exception.
        """
        try:
            qmp.execute("transaction", {"actions": self.actions})
        except BaseException as exc:
            for problem in self.unprepare():
                exc.add_note(problem)
            raise
        try:
            by_request = {id(p.request): p for p in self.prepared}
            snaps: list[DiskSnapshot] = []
            for disk, request, (device, kind) in zip(
                self.disks, self.requests, self.planned, strict=True
            ):
                if kind is SnapshotKind.INTERNAL:
                    snaps.append(disk.internal_snapshot(request, device))
                else:
                    snaps.append(disk.finish_external(by_request[id(request)]))
            by_vdev = {snap.vdev: snap for snap in snaps}
            return [by_vdev[r.disk.vdev] for r in requests]
        except BaseException as exc:
            for disk, request in reversed(list(zip(self.disks, self.requests, strict=True))):
                try:
                    disk.abort(request)
                except Exception as undo:
                    log.exception("disk %s: undoing the switched snapshot failed", disk.vdev)
                    exc.add_note(f"disk {disk.vdev}: undoing it failed too: {undo}")
            raise

    def unprepare(self) -> list[str]:
        """Undo every prepared external snapshot (before the transaction); return what could
        not be undone."""
        by_vdev = {d.vdev: d for d in self.disks}
        problems: list[str] = []
        for prep in reversed(self.prepared):
            vdev = prep.request.disk.vdev
            try:
                by_vdev[vdev].unprepare(prep)
            except Exception as undo:
                log.exception("disk %s: undoing a prepared snapshot failed", vdev)
                problems.append(f"disk {vdev}: undoing it failed too: {undo}")
        self.prepared.clear()
        return problems


def prepare_group(requests: Sequence[SnapshotRequest], ctx: HookContext) -> GroupSwitch:
    """Prepare, while the guest runs, the switch of every disk of *requests*, so that
    :func:`create_group` in the pause has only the transaction left; snapcore holds the switch
    in between (the hook API's ``prepared``).

    Failure guarantee: when it raises, what was prepared is removed.
    """
    qmp = require_qmp(ctx, ", ".join(r.disk.vdev for r in requests))
    return GroupSwitch.prepare(requests, ctx, qmp)


def create_group(
    requests: Sequence[SnapshotRequest], ctx: HookContext, switch: GroupSwitch | None
) -> list[DiskSnapshot]:
    """Snapshot every disk of *requests* at one instant, in one QMP ``transaction``.

    *switch*, prepared by :func:`prepare_group` for these requests, is run only if every
    disk's active node in QEMU is still the one it was prepared on; without one (or one
    prepared for other requests, which is undone), it is prepared here. The snapshots come
    back in the order of *requests*.

    Failure guarantee: when it raises, no disk has a snapshot of this checkpoint (see
    :meth:`GroupSwitch.commit`); before the transaction, what was prepared is removed.
    """
    qmp = require_qmp(ctx, ", ".join(r.disk.vdev for r in requests))

    def keys(reqs: Sequence[SnapshotRequest]) -> list[tuple[str, str]]:
        return [(r.disk.vdev, r.name) for r in reqs]

    if switch is not None and keys(switch.requests) != keys(requests):
        for problem in switch.unprepare():
            log.warning("%s", problem)
        switch = None
    if switch is None:
        switch = GroupSwitch.prepare(requests, ctx, qmp)
    else:
        try:
            switch.check_unchanged(qmp)
        except BaseException as exc:
            for problem in switch.unprepare():
                exc.add_note(problem)
            raise
    return switch.commit(qmp, requests)
