"""Snapshots of the qcow2 disks of a running (or paused) QEMU, through its QMP monitor.

The layout is the offline one (:mod:`snapcore_qcow2.offline`): the disk's path ``P`` always
holds the active image, an external snapshot's data moves to its target ``T`` through a hard
link, and an internal snapshot is a tag. What changes is who writes: the running QEMU holds
every image of the disk's chain open and locked, so the images are only ever read here (with
``qemu-img -U``), new files are created with ``qemu-img create -u``, and every change to an
image in use is a QMP command.

**QEMU opens our overlays through fd sets.** A node QEMU opened by a path reopens its file by
that path whenever it switches between read-only and read-write (``blockdev-snapshot`` turns
the old active node read-only at once; ``block-stream`` and ``block-commit`` turn a backing node
read-write). Once ``P`` names the new overlay, a reopen of the old node by ``P`` would open the
overlay instead of the old image (checked on QEMU 7.2). So the new overlay is written to a
scratch file beside ``P`` (unique per command), handed to QEMU as a descriptor in an fd set
(``add-fd``; the node's file is ``/dev/fdset/N``), switched to in the transaction while ``P``
still names the old image (whose read-only reopen then opens the right file), and only then
renamed onto ``P``: the steps of :class:`snapcore.overlay.ExternalOverlay`, with QEMU's part
between its write and its switch. Such a node never depends on a name again. Its fd set
holds one read-write descriptor only: a read-only one would keep the node's old file locks
alive after a switch (the set's copy shares the open file description with the node's own), so
the node's read-only reopen is let fail, which QEMU ignores, and the node stays read-write
underneath while its permissions follow its place in the graph.

The node QEMU was started with keeps its path, which names the snapshot's image under ``T``
after the first external snapshot. Two operations would reopen it by that path: undoing that
snapshot (its image becomes active again) and merging an older snapshot into it. The first
puts the names back first (the overlay keeps a second name, ``T`` goes back onto ``P``); the
second is refused by its check (see ``docs/design-notes.md``).

This module holds the operations on one disk (:class:`LiveDisk`); the switch of a checkpoint's
disks in one transaction is :mod:`snapcore_qcow2.transaction`, QEMU's block graph
:mod:`snapcore_qcow2.blockgraph`, block jobs :mod:`snapcore_qcow2.jobs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from snapcore.context import HookContext
from snapcore.errors import BackendError
from snapcore.files import fsync_parent as _fsync_dir
from snapcore.files import remove as _remove
from snapcore.model import (
    DiskSnapshot,
    DomainState,
    ProgressEvent,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.overlay import ExternalOverlay, same_file, scratch_files, scratch_path
from snapcore_qcow2.blockgraph import (
    FDSET_PREFIX,
    BlockView,
    Device,
    Node,
    add_fd,
    fdset_mark,
    node_name,
)
from snapcore_qcow2.jobs import job_id, job_lock, run_job
from snapcore_qcow2.offline import (
    DEFAULT_KIND,
    DRIVER,
    TMP_SUFFIX,
    OfflineDisk,
    _DeletePlan,
    _names,
    _real,
    _tag,
    default_target,
)
from snapcore_qcow2.qemu_img import QCOW2, ImageInfo, QemuImg
from snapcore_qemu.qmp import QMPCommandError, QMPSession, monitor


def require_qmp(ctx: HookContext, vdev: str = "") -> QMPSession:
    """The domain's QMP session, which the ``qemu`` hypervisor offers (``ctx.service``).

    :raises BackendError: the domain has none (not a QEMU domain, or no ``[qemu] qmp``).
    """
    session = monitor(ctx)
    if session is None:
        raise BackendError(
            f"the domain is {ctx.state} but its hypervisor offers no QMP monitor "
            "([qemu] qmp); the qcow2 backend reaches a running QEMU only through it",
            driver=DRIVER,
            vdev=vdev or None,
        )
    return session


@dataclass(slots=True)
class _LivePlan:
    """What a live delete will do (``action``), or why it cannot (``blockers``)."""

    blockers: list[str]
    action: Callable[[], object] | None = None

    def run(self) -> None:
        if self.action is not None:
            self.action()


@dataclass(slots=True)
class Prepared:
    """What create has done for one external snapshot before the transaction: the file
    procedure up to its switch (:class:`~snapcore.overlay.ExternalOverlay`: linked, overlay
    written) and what QEMU was given (fd set, node)."""

    request: SnapshotRequest
    overlay: ExternalOverlay
    old_node: str
    fdset: int | None = None
    node: str | None = None


class LiveDisk:
    """The qcow2 operations on one disk (``vdev``) of a running or paused QEMU domain.

    Errors: :class:`~snapcore_qemu.qmp.QMPCommandError` (QEMU refused a command),
    :class:`~snapcore.errors.CommandError` (qemu-img), :class:`OSError`,
    :class:`~snapcore.errors.BackendError`; the plugin attributes them to the disk.
    """

    def __init__(self, *, vdev: str, ctx: HookContext):
        self.vdev = vdev
        self.ctx = ctx
        self.log = ctx.log
        self.img = QemuImg(ctx.run)
        #: The offline algorithms, reading with ``qemu-img -U``: for the checks and lookups.
        self.files = OfflineDisk(
            vdev=vdev, qemu_img=self.img, log=ctx.log, progress=ctx.progress, force_share=True
        )

    @property
    def qmp(self) -> QMPSession:
        return require_qmp(self.ctx, self.vdev)

    def _error(self, message: str) -> BackendError:
        return BackendError(message, driver=DRIVER, vdev=self.vdev)

    def _overlay(self, path: str, target: str) -> ExternalOverlay:
        return ExternalOverlay(path, target, suffix=TMP_SUFFIX, driver=DRIVER, vdev=self.vdev)

    def _step(self, step: str, message: str) -> None:
        self.log.info("disk %s: %s", self.vdev, message)
        self.ctx.progress(ProgressEvent(step=step, vdev=self.vdev, message=message))

    def _offline(self) -> OfflineDisk:
        """For a disk the running QEMU does not have open: plain qemu-img."""
        return OfflineDisk(
            vdev=self.vdev, qemu_img=self.img, log=self.log, progress=self.ctx.progress
        )

    # -- create -----------------------------------------------------------------------------

    def create_check(self, request: SnapshotRequest) -> list[str]:
        """Blockers for a live create; changes nothing (images read with ``-U``)."""
        if monitor(self.ctx) is None:
            return [
                f"the domain is {self.ctx.state} but its hypervisor offers no QMP monitor "
                "([qemu] qmp); a running disk is snapshotted through QEMU's monitor"
            ]
        blockers = self.files.request_blockers(request, self.ctx.state)
        path = request.disk.path
        view = BlockView(self.qmp)
        device = view.device_for(path)
        if device is None:
            blockers.append(
                f"the running QEMU does not have {path} open: no block device of it uses "
                f"that image, so the domain file and QEMU disagree about disk {self.vdev}"
            )
            return blockers
        if device.top.driver != QCOW2:
            blockers.append(
                f"QEMU's active node for {path} is a {device.top.driver} node "
                f"({device.top.name}), not {QCOW2}"
            )
            return blockers
        # the images as the running QEMU has them (their tags, corrupt flags), which spares
        # a qemu-img run per disk before the guest's pause
        chain: list[ImageInfo] = []
        filename = os.path.abspath(path)
        for node in device.chain:
            if node.image is None:
                return self.files.create_check(request, self.ctx.state)  # ask qemu-img -U
            # QEMU names a node by the path it was opened by, which a snapshot may have
            # renamed since; the image above names the file that holds it now
            chain.append(dataclasses.replace(node.image, filename=filename))
            backing = node.image.backing_filename or ""
            filename = os.path.join(os.path.dirname(filename), backing)
        return blockers + self.files.chain_blockers(request, chain)

    def plan(self, request: SnapshotRequest, view: BlockView) -> tuple[Device, SnapshotKind]:
        """The device and kind of *request*, or why it cannot be made now."""
        kind = request.kind or DEFAULT_KIND
        if kind not in (SnapshotKind.INTERNAL, SnapshotKind.EXTERNAL) or request.format not in (
            None,
            QCOW2,
        ):
            raise self._error(f"qcow2 cannot make a {kind} snapshot in format {request.format}")
        device = view.device_for(request.disk.path)
        if device is None:
            raise self._error(f"the running QEMU does not have {request.disk.path} open")
        if device.top.driver != QCOW2:
            raise self._error(f"QEMU's active node {device.top.name} is not {QCOW2}")
        return device, kind

    def prepare_external(
        self, request: SnapshotRequest, device: Device, taken: set[str], into: list[Prepared]
    ) -> dict[str, Any]:
        """Everything of an external snapshot but the switch: link ``P`` to ``T``, write the
        overlay to the scratch file, open it in QEMU as a new node. Appends its record to
        *into* first, so that :meth:`unprepare` undoes whatever was done when this raises.

        :returns: the transaction action that switches the disk to the new node.
        """
        path = os.path.abspath(request.disk.path)
        target = request.target or default_target(path, request.name)
        if not os.path.isabs(target):
            raise self._error(f"the snapshot target {target} is not an absolute path")
        if os.path.lexists(target):
            raise self._error(f"the snapshot target {target} already exists")
        top = device.top
        overlay = self._overlay(path, target)
        prep = Prepared(request, overlay, top.name)
        into.append(prep)
        self._step("create", f"external snapshot {request.name!r}: {path} becomes {target}")
        header = self.img.info(path, force_share=True)
        if (
            header.backing_filename is not None
            and header.backing_path is not None
            and not os.path.isabs(header.backing_filename)
            and _real(os.path.dirname(target)) != _real(os.path.dirname(path))
        ):
            # T's header must still find the backing file from T's directory: QEMU writes
            # its absolute path (the image is in use, qemu-img may not touch it).
            self.qmp.execute(
                "change-backing-file",
                {
                    "device": top.name,
                    "image-node-name": top.name,
                    "backing-file": header.backing_path,
                },
            )
        overlay.link()
        overlay.write(
            lambda scratch: self.img.create_overlay(
                scratch, backing=target, backing_format=QCOW2, size=top.virtual_size
            )
        )
        fd = os.open(overlay.scratch, os.O_RDWR | os.O_CLOEXEC)
        try:
            prep.fdset = add_fd(self.qmp, fd, fdset_mark(self.vdev, request.name, path))
        finally:
            os.close(fd)
        name = node_name(self.vdev, request.name, taken)
        options: dict[str, Any] = {
            "driver": QCOW2,
            "node-name": name,
            "file": {"driver": "file", "filename": f"{FDSET_PREFIX}{prep.fdset}"},
            "backing": None,
        }
        cache = {k: bool(top.cache[k]) for k in ("direct", "no-flush") if k in top.cache}
        if cache:
            options["cache"] = cache
        if top.detect_zeroes != "off":
            options["detect-zeroes"] = top.detect_zeroes
        self.qmp.execute("blockdev-add", options)
        prep.node = name
        taken.add(name)
        return {"type": "blockdev-snapshot", "data": {"node": top.name, "overlay": name}}

    def unprepare(self, prep: Prepared) -> None:
        """Undo :meth:`prepare_external` before the switch (from any point it reached)."""
        if prep.node is not None:
            with contextlib.suppress(QMPCommandError):
                self.qmp.execute("blockdev-del", {"node-name": prep.node})
        if prep.fdset is not None:
            with contextlib.suppress(QMPCommandError):
                self.qmp.execute("remove-fd", {"fdset-id": prep.fdset})
        overlay = prep.overlay
        _remove(overlay.scratch)
        if overlay.linked and same_file(overlay.path, overlay.target):
            _remove(overlay.target)

    def finish_external(self, prep: Prepared) -> DiskSnapshot:
        """After the switch: the overlay QEMU now writes to takes the name ``P``
        (:meth:`~snapcore.overlay.ExternalOverlay.switch`, which checks that ``P`` and ``T``
        are then different inodes, the overlay and the old image).

        :raises ~snapcore.overlay.ImageIdentityError: they are not; the caller aborts.
        """
        prep.overlay.switch()
        return DiskSnapshot(
            vdev=self.vdev,
            path=prep.request.disk.path,
            driver=DRIVER,
            kind=SnapshotKind.EXTERNAL,
            name=prep.request.name,
            locator=prep.overlay.target,
            size=os.stat(prep.overlay.target).st_blocks * 512,
            extra={"node": prep.node, "base_node": prep.old_node, "fdset": prep.fdset},
        )

    def internal_snapshot(self, request: SnapshotRequest, device: Device) -> DiskSnapshot:
        return DiskSnapshot(
            vdev=self.vdev,
            path=request.disk.path,
            driver=DRIVER,
            kind=SnapshotKind.INTERNAL,
            name=request.name,
            locator=os.path.abspath(request.disk.path),
            extra={"tag": request.name, "node": device.top.name},
        )

    # -- abort ------------------------------------------------------------------------------

    def abort(self, request: SnapshotRequest) -> bool:
        """Undo a live create of *request* from any point it reached; idempotent.

        Internal: the tag is deleted from the active node if there. External, switched: the
        names are put back (the overlay keeps a second name at the scratch path, ``T`` is
        renamed onto ``P``), the overlay is committed into the old image (an active
        ``block-commit``, so writes made since are kept) and closed. Not switched: the new
        node is closed, the scratch file removed and ``T``, a second name of ``P``, unlinked.
        What a prepared transaction still holds for *request* is the caller's to undo first
        (:meth:`snapcore_qcow2.transaction.GroupSwitch.unprepare`).
        """
        view = BlockView(self.qmp)
        path = os.path.abspath(request.disk.path)
        device = view.device_for(path)
        kind = request.kind or DEFAULT_KIND
        ours = view.marked(self.vdev, request.name)
        if device is None and not ours:
            return self._offline().abort(request)
        if kind is SnapshotKind.INTERNAL:
            if device is not None and request.name in device.top.tags:
                self._step("abort", f"delete internal snapshot {request.name!r} of {path}")
                self.qmp.execute(
                    "blockdev-snapshot-delete-internal-sync",
                    {"device": device.top.name, "name": request.name},
                )
        elif kind is SnapshotKind.EXTERNAL:
            target = request.target or default_target(path, request.name)
            if os.path.isabs(target):  # create refuses a relative target before anything
                self._abort_external(view, device, ours, path, target)
        return True

    def _abort_external(
        self, view: BlockView, device: Device | None, ours: list[int], path: str, target: str
    ) -> None:
        qmp = self.qmp
        top = device.top if device is not None else None
        if (
            device is not None
            and top is not None
            and top.fdset in ours
            and top.backing_filename is not None
            and _real(top.backing_filename) == _real(target)
        ):
            self._unswitch(device, path, target)
            view = BlockView(qmp)
        in_use = view.in_chains()
        for fdset in ours:
            node = view.fdset_nodes.get(fdset)
            if node is not None and node in in_use:
                continue  # an older snapshot's overlay of the same name, still in use
            if node is not None:
                try:
                    qmp.execute("blockdev-del", {"node-name": node})
                except QMPCommandError as exc:
                    self.log.warning("disk %s: cannot close node %s: %s", self.vdev, node, exc)
                    continue
            with contextlib.suppress(QMPCommandError):
                qmp.execute("remove-fd", {"fdset-id": fdset})
        if os.path.lexists(target) and same_file(path, target):
            self._step("abort", f"unlink {target}, a second name of {path}")

        def refuse_foreign_overlay() -> None:
            if self.img.info(path, force_share=True).backing_filename == target:
                raise self._error(
                    f"{path} is an overlay of {target} that this QEMU did not open through "
                    "snapcore (was QEMU restarted?); stop the domain and run 'snapcore recover'"
                )

        self._overlay(path, target).undo(refuse_foreign_overlay)

    def _unswitch(self, device: Device, path: str, target: str) -> None:
        """Make the old image the active one again, keeping what was written since."""
        if len(device.chain) < 2:
            raise self._error(f"QEMU's overlay {device.top.name} has no backing node")
        new, base = device.chain[0], device.chain[1]
        path = os.path.realpath(path)  # a symlinked disk keeps its symlink

        def overlay_names() -> list[str]:
            """The scratch names (of any command) that name the image now at ``P``."""
            return [s for s in scratch_files(path, TMP_SUFFIX) if same_file(path, s)]

        if os.path.lexists(target) and not same_file(path, target):
            # P is the overlay and T the old image: the overlay keeps a second name (QEMU
            # reads it by descriptor), and the old image gets its name P back, the name by
            # which QEMU may reopen the old node.
            if not overlay_names():
                keep = scratch_path(path, TMP_SUFFIX)
                os.link(path, keep)
                _fsync_dir(keep)
            self._step("abort", f"move {target} back to {path}")
            os.replace(target, path)
            _fsync_dir(path)
        if overlay_names():
            raise self._error(f"{path} is still the overlay; the image under it is not found")
        self._step("abort", f"commit {new.name} into {base.name}")
        job = job_id("abort", self.vdev, new.name)
        self._run_job(
            job,
            lambda: self.qmp.execute(
                "block-commit",
                {"job-id": job, "device": new.name, "base-node": base.name, "auto-dismiss": False},
            ),
            step="abort",
            complete=True,
        )

    # -- block jobs -------------------------------------------------------------------------

    def _run_job(
        self, job: str, start: Callable[[], object], *, step: str, complete: bool = False
    ) -> None:
        """:func:`snapcore_qcow2.jobs.run_job` for this disk."""
        run_job(
            self.qmp,
            job,
            start,
            step=step,
            vdev=self.vdev,
            progress=self.ctx.progress,
            complete=complete,
        )

    # -- delete -----------------------------------------------------------------------------

    def delete_check(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> list[str]:
        """Blockers for a live delete; changes nothing."""
        if monitor(self.ctx) is None:
            return [
                f"the domain is {self.ctx.state} but its hypervisor offers no QMP monitor "
                "([qemu] qmp); a running disk's snapshots are deleted through QEMU"
            ]
        try:
            return self._delete_plan(snapshot, others).blockers
        except (BackendError, OSError) as exc:
            return [f"cannot read the snapshot's images: {exc}"]

    def delete(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> bool:
        """Delete *snapshot* while QEMU runs; idempotent.

        Internal, in the active image: ``blockdev-snapshot-delete-internal-sync``; in a file
        QEMU does not have open: ``qemu-img snapshot -d``. External ``T`` in QEMU's chain:
        ``block-stream`` copies ``T``'s data into the image above it (the child), which then
        reads through ``T``'s backing file; ``T``'s node is closed and ``T`` unlinked. ``T``
        not in use: as offline (unlinked, or merged with qemu-img when images not in use
        depend on it).
        """
        with job_lock(self.qmp.address):
            plan = self._delete_plan(snapshot, others)
            if plan.blockers:
                raise self._error("; ".join(plan.blockers))
            plan.run()
        return True

    def _delete_plan(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> _LivePlan:
        qmp = self.qmp
        view = BlockView(qmp)
        device = view.device_for(snapshot.path)
        if device is None:
            offline = self._offline()
            return _LivePlan(
                offline.delete_check(snapshot, others, DomainState.SHUTOFF),
                lambda: offline.delete(snapshot, others),
            )
        if snapshot.kind is SnapshotKind.INTERNAL:
            return self._delete_internal_plan(snapshot, others, device)
        if snapshot.kind is not SnapshotKind.EXTERNAL:
            raise self._error(f"qcow2 has no {snapshot.kind} snapshots")
        return self._delete_external_plan(snapshot, others, view, device)

    def _delete_internal_plan(
        self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], device: Device
    ) -> _LivePlan:
        tag = _tag(snapshot)
        holders = [i for i, node in enumerate(device.chain) if tag in node.tags]
        if holders and holders[0] > 0:
            return _LivePlan(
                [
                    f"internal snapshot {tag!r} is held in a backing image of the running "
                    f"disk (QEMU node {device.chain[holders[0]].name}); QEMU deletes internal "
                    "snapshots only from the active image: delete it while the domain is "
                    "stopped"
                ]
            )
        if holders:
            top = device.top.name

            def drop() -> None:
                self._step("delete", f"delete internal snapshot {tag!r} of {top}")
                self.qmp.execute(
                    "blockdev-snapshot-delete-internal-sync", {"device": top, "name": tag}
                )

            return _LivePlan([], drop)
        found = self.files._find_tag(tag, snapshot, others)
        if found is None:
            return _LivePlan([])  # already gone
        file = found.file

        def drop_offline() -> None:
            self._step("delete", f"delete internal snapshot {tag!r} from {file}")
            self.img.snapshot_delete(file, tag)

        return _LivePlan([], drop_offline)

    def _delete_external_plan(
        self,
        snapshot: DiskSnapshot,
        others: Sequence[DiskSnapshot],
        view: BlockView,
        device: Device,
    ) -> _LivePlan:
        target = os.path.abspath(snapshot.locator)
        path = os.path.abspath(snapshot.path)
        if not os.path.lexists(target):
            return _LivePlan([])
        if same_file(target, path):
            return _LivePlan([], lambda: _remove(target))
        files = self.files._chain(path)
        chain = device.chain
        if len(files) != len(chain):
            return _LivePlan(
                [
                    f"QEMU's backing chain of {path} has {len(chain)} images but the files "
                    f"have {len(files)}; they disagree, so nothing is merged while it runs"
                ]
            )
        reals = [_real(f.filename) for f in files]
        real_t = _real(target)
        offline = self.files._delete_plan(snapshot, others)
        if real_t not in reals:
            return self._delete_unused_plan(snapshot, others, offline, files, chain)
        j = reals.index(real_t)
        if j == 0:
            raise self._error(f"{target} is the disk's active image")
        blockers = self._stream_blockers(target, files, chain, j, offline)
        if blockers:
            return _LivePlan(blockers)
        t_image, child_image = files[j], files[j - 1]
        child, t_node = chain[j - 1], chain[j]
        base = chain[j + 1] if j + 1 < len(chain) else None
        backing: str | None = None
        if base is not None:
            backing = t_image.backing_filename or files[j + 1].filename
            if not os.path.isabs(backing) and _real(os.path.dirname(target)) != _real(
                os.path.dirname(child_image.filename)
            ):
                backing = t_image.backing_path or backing

        def stream() -> None:
            self._stream(target, child, base, backing, t_node)

        return _LivePlan([], stream)

    @staticmethod
    def _stream_blockers(
        target: str,
        files: Sequence[ImageInfo],
        chain: Sequence[Node],
        j: int,
        offline: _DeletePlan,
    ) -> list[str]:
        """What stops streaming ``T`` (``files[j]``, QEMU's ``chain[j]``) into the image
        above it."""
        t_image, child_image, child = files[j], files[j - 1], chain[j - 1]
        child_real = _real(child_image.filename)
        blockers: list[str] = []
        if t_image.tags:
            blockers.append(
                f"{target} holds internal snapshots {_names(t_image.tags)}, which a live merge "
                "would lose; delete them first, or delete this snapshot while the domain is "
                "stopped (the offline merge keeps them)"
            )
        if child_image.tags:
            blockers.append(
                f"{child_image.filename} holds internal snapshots {_names(child_image.tags)} "
                f"that read data through {target}; merging it away would change them; delete "
                "them first"
            )
        strays = [c.filename for c in offline.children if _real(c.filename) != child_real]
        if strays:
            blockers.append(
                f"{', '.join(strays)} also read through {target} (snapshots of a branch left "
                "by a revert); delete those snapshots first, or delete this one while the "
                "domain is stopped"
            )
        if child.fdset is None and child.read_only and _real(child.filename) != child_real:
            blockers.append(
                f"QEMU opened {child_image.filename} as {child.filename}, a name that now "
                f"belongs to another image, and would reopen it by that name to merge "
                f"{target} into it; delete this snapshot while the domain is stopped (or "
                "after it was restarted)"
            )
        if any(n.driver != QCOW2 for n in (child, chain[j])):
            blockers.append(f"QEMU's nodes for {target} and the image above it are not qcow2")
        return blockers

    def _delete_unused_plan(
        self,
        snapshot: DiskSnapshot,
        others: Sequence[DiskSnapshot],
        offline: _DeletePlan,
        files: Sequence[ImageInfo],
        chain: Sequence[Node],
    ) -> _LivePlan:
        """``T`` is not in QEMU's chain: qemu-img can work on it and on what depends on it,
        as long as it can read ``T``'s backing file beside QEMU."""
        target = os.path.abspath(snapshot.locator)
        blockers = list(offline.blockers)
        backing = offline.target.backing_path
        if offline.how != "unlink" and backing is not None:
            reals = [_real(f.filename) for f in files]
            if _real(backing) in reals and not chain[reals.index(_real(backing))].read_only:
                blockers.append(
                    f"merging {target} needs its backing file {backing}, which the running "
                    "QEMU holds open for writing; delete this snapshot while the domain is "
                    "stopped"
                )
        if blockers:
            return _LivePlan(blockers)
        # the offline merge, reading the images QEMU holds with -U; it writes only to files
        # QEMU does not have open
        return _LivePlan([], lambda: self.files.delete(snapshot, others))

    def _stream(
        self, target: str, child: Node, base: Node | None, backing: str | None, t_node: Node
    ) -> None:
        qmp = self.qmp
        job = job_id("delete", self.vdev, target)
        args: dict[str, Any] = {"job-id": job, "device": child.name, "auto-dismiss": False}
        if base is not None and backing is not None:
            args["base-node"] = base.name
            args["backing-file"] = backing
        self._step(
            "delete",
            f"stream {target} into {child.name}"
            + (f" (it then reads through {backing})" if backing else ""),
        )
        self._run_job(job, lambda: qmp.execute("block-stream", args), step="delete")
        view = BlockView(qmp)
        if t_node.name in view.nodes and t_node.name not in view.in_chains():
            try:
                qmp.execute("blockdev-del", {"node-name": t_node.name})
            except QMPCommandError as exc:  # QEMU's own node: it goes away by itself
                self.log.debug("disk %s: blockdev-del %s: %s", self.vdev, t_node.name, exc)
        if t_node.fdset is not None:
            with contextlib.suppress(QMPCommandError):
                qmp.execute("remove-fd", {"fdset-id": t_node.fdset})
        self._step("delete", f"unlink {target}")
        _remove(target)

    # -- revert -----------------------------------------------------------------------------

    def revert_check(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> list[str]:
        """Blockers for the revert that follows once the domain is stopped; reads with -U."""
        return self.files.revert_check(snapshot, others)
