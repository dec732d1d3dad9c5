"""Snapshots of qcow2 disks whose domain is not running, made with qemu-img.

**Layout.** An internal snapshot is a tag inside an image; the tag is the checkpoint name. An
external snapshot follows the XAPI model: the disk's image at path ``P`` becomes a read-only
base at the target ``T`` and a new, empty overlay backed by ``T`` takes its place at ``P``, so
the domain's configuration never changes. The data a snapshot froze is therefore never copied
when it is made, and internal snapshots taken before an external one move with the old image
into ``T``: an internal snapshot is found by its tag, searching ``P`` (and its backing chain),
the files of the disk's external snapshots, and its own recorded file.

**Crash safety.** Every step that changes a file either is atomic (``os.link``, ``os.replace``,
both followed by an ``fsync`` of the directory) or writes a scratch file (``<P>.<pid>-<hex>
.snapcore-tmp``, unique per command) that only replaces ``P`` once complete, or is a qemu-img
command that is safe to run again (``commit -d``, safe ``rebase``). An external snapshot is the
procedure of :mod:`snapcore.overlay`, shared with the vhd backend. So create can be undone, and
delete and revert finished, by running the same operation again from whatever state a crash
left.

**Limits.** Discarding the current image (a revert to anything but an internal snapshot held in
``P`` itself) would lose the internal snapshots held in ``P``, and merging an external snapshot
away can lose, or silently change, internal snapshots held in it or in the image above it; the
``*_check`` methods report those cases as blockers and the operations refuse them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from snapcore.context import ProgressCallback
from snapcore.errors import BackendError, CommandError, UnsupportedOperationError
from snapcore.files import copy_mode as _copy_mode
from snapcore.files import fsync_parent as _fsync_dir
from snapcore.files import remove as _remove
from snapcore.model import (
    Disk,
    DiskSnapshot,
    DomainState,
    ProgressEvent,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.overlay import (
    SCRATCH_SUFFIX,
    ExternalOverlay,
    backing_problem,
    name_problems,
    replace_image,
)
from snapcore.overlay import default_target as _default_target
from snapcore.overlay import same_file as _same_file
from snapcore_qcow2.qemu_img import QCOW2, ImageInfo, QemuImg, SnapshotInfo

DRIVER: Final = "qcow2"
#: Suffix of the scratch files written next to the disk image before they replace the image
#: (:func:`snapcore.overlay.scratch_path`).
TMP_SUFFIX: Final = SCRATCH_SUFFIX
#: The kind made when a request does not ask for one.
DEFAULT_KIND: Final = SnapshotKind.INTERNAL
#: Longest backing chain followed by hand when ``qemu-img info --backing-chain`` fails.
_MAX_CHAIN: Final = 256


def default_target(path: str, name: str) -> str:
    """Where an external snapshot *name* of the image at *path* goes when no target is given:
    ``<dir of path>/<stem of path>.<name>.qcow2``.
    """
    return _default_target(path, name, QCOW2)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _names(tags: Iterable[str]) -> str:
    return ", ".join(repr(t) for t in tags)


def _tag(snapshot: DiskSnapshot) -> str:
    return str(snapshot.extra.get("tag") or snapshot.name)


@dataclass(frozen=True, slots=True)
class _Found:
    """Where an internal snapshot lives."""

    file: str
    image: ImageInfo
    snapshot: SnapshotInfo


@dataclass(frozen=True, slots=True)
class _DeletePlan:
    """How an external snapshot's file ``T`` goes away, and what would stop it."""

    target: ImageInfo
    children: tuple[ImageInfo, ...]
    how: Literal["unlink", "commit", "rebase"]
    blockers: list[str] = field(default_factory=list)


class OfflineDisk:
    """The qcow2 operations on one disk (``vdev``) of a domain that is not running.

    Every method may raise :class:`~snapcore.errors.CommandError` (qemu-img failed),
    :class:`OSError` (a file operation failed) or :class:`~snapcore.errors.BackendError`;
    the plugin attributes them to the disk. The ``*_check`` methods change nothing and report
    what they cannot read as blockers instead of raising.
    """

    def __init__(
        self,
        *,
        vdev: str,
        qemu_img: QemuImg,
        log: logging.Logger,
        progress: ProgressCallback,
        force_share: bool = False,
    ):
        self.vdev = vdev
        self.img = qemu_img
        self.log = log
        self._progress = progress
        #: Read images with ``qemu-img -U`` (a running QEMU holds them locked); the read-only
        #: checks and lookups then work beside a running domain. Nothing is written this way.
        self.force_share = force_share

    def _error(self, message: str) -> BackendError:
        return BackendError(message, driver=DRIVER, vdev=self.vdev)

    def _step(self, step: str, message: str) -> None:
        self.log.info("disk %s: %s", self.vdev, message)
        self._progress(ProgressEvent(step=step, vdev=self.vdev, message=message))

    # -- helpers ----------------------------------------------------------------------------

    def _info(self, path: str) -> ImageInfo:
        return self.img.info(path, force_share=self.force_share)

    def _backing_format(self, image: ImageInfo) -> str:
        """The format of *image*'s backing file: from its header, else probed."""
        if image.backing_format:
            return image.backing_format
        backing = image.backing_path
        if backing is None:
            raise self._error(f"{image.filename} has no backing file")
        return self._info(backing).format

    def door(self, path: str) -> list[str]:
        """Why the backing chain of the image at *path* must not be followed (see
        :func:`snapcore.overlay.backing_problem`), read header by header, no backing file
        opened; empty when it may. A backing file in the directory of an image of the chain
        may be raw; elsewhere it must be an image of a known format, and never a system file,
        a device, or a loop back into the chain."""
        return self._walk(path, force_share=self.force_share)[0]

    def _walk(
        self, path: str, *, force_share: bool
    ) -> tuple[list[str], tuple[ImageInfo, ...] | None]:
        """The backing chain of *path* read image by image (``qemu-img info`` of each alone,
        none of its backing files opened), each backing file let through :meth:`door`'s checks
        before it is read: ``(refusals, chain)``. The chain is ``None`` when something was
        refused or a link could not be read (a ``qemu-img info --backing-chain`` then says
        why); one ``qemu-img`` run per image, so no chain is read twice."""
        image_dirs = {os.path.dirname(os.path.abspath(path))}
        seen = {_real(path)}
        chain: list[ImageInfo] = []
        current = path
        for _ in range(_MAX_CHAIN):
            try:
                image = self.img.info(current, force_share=force_share)
            except CommandError:
                return [], None  # not readable as an image: the checks that open it say why
            chain.append(image)
            backing = image.backing_path
            if backing is None:
                return [], tuple(chain)
            problem = backing_problem(backing, image_dirs=image_dirs)
            if problem is not None:
                return [f"{path}: {problem}"], None
            if _real(backing) in seen:
                return [f"{path}: its backing chain loops back to {backing}"], None
            seen.add(_real(backing))
            image_dirs.add(os.path.dirname(_real(backing)))
            current = backing
        return [f"{path}: its backing chain is longer than {_MAX_CHAIN} images"], None

    def _chain(self, path: str, *, force_share: bool | None = None) -> tuple[ImageInfo, ...]:
        """The backing chain of *path*, following it by hand past a file that is missing.

        :raises BackendError: the chain reaches a file it must not (:meth:`door`).
        """
        if force_share is None:
            force_share = self.force_share
        refused, chain = self._walk(path, force_share=force_share)
        if refused:
            raise self._error(refused[0])
        if chain is not None:
            return chain
        try:
            return self.img.chain(path, force_share=force_share)
        except CommandError as exc:
            if not os.path.isfile(path):
                raise
            self.log.warning("disk %s: %s: backing chain is broken: %s", self.vdev, path, exc)
        images = [self.img.info(path, force_share=force_share)]
        seen = {_real(path)}
        while len(images) < _MAX_CHAIN:
            backing = images[-1].backing_path
            if backing is None or not os.path.exists(backing) or _real(backing) in seen:
                break
            seen.add(_real(backing))
            images.append(self.img.info(backing, force_share=force_share))
        return tuple(images)

    def _search_files(
        self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]
    ) -> tuple[str, ...]:
        """Files that may hold an internal snapshot, in search order, existing ones only:
        the disk's image, the external snapshots' files, the snapshot's own file.
        """
        candidates = [snapshot.path]
        candidates += [o.locator for o in others if o.kind is SnapshotKind.EXTERNAL]
        candidates.append(snapshot.locator)
        out: list[str] = []
        seen: set[str] = set()
        for path in candidates:
            real = _real(path)
            if real not in seen and os.path.isfile(path):
                seen.add(real)
                out.append(os.path.abspath(path))
        return tuple(out)

    def _find_tag(
        self, tag: str, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]
    ) -> _Found | None:
        """Locate internal snapshot *tag*; then in the backing chain of the disk's image."""
        files = self._search_files(snapshot, others)
        for path in files:
            image = self._info(path)
            snap = image.snapshot(tag)
            if snap is not None:
                return _Found(path, image, snap)
        if os.path.isfile(snapshot.path):
            searched = {_real(f) for f in files}
            for image in self._chain(snapshot.path)[1:]:
                if _real(image.filename) in searched:
                    continue
                snap = image.snapshot(tag)
                if snap is not None:
                    return _Found(os.path.abspath(image.filename), image, snap)
        return None

    def _would_lose(self, path: str) -> list[str]:
        """Blockers for discarding the image at *path*: the internal snapshots it holds."""
        tags = self._info(path).tags
        if not tags:
            return []
        return [
            f"{path} holds internal snapshots {_names(tags)}, which this revert would discard "
            "with the current image; delete them first (a limit of the qcow2 backend)"
        ]

    # -- create -----------------------------------------------------------------------------

    def create_check(self, request: SnapshotRequest, state: DomainState) -> list[str]:
        """Blockers for :meth:`create`; changes nothing."""
        blockers = self.request_blockers(request, state)
        path = request.disk.path
        if not os.path.isfile(path):
            blockers.append(f"{path} does not exist or is not a file")
            return blockers
        refused, chain = self._walk(path, force_share=self.force_share)
        if refused:
            return blockers + refused
        if chain is None:
            try:
                chain = self.img.chain(path, force_share=self.force_share)
            except CommandError as exc:
                blockers.append(f"qemu-img cannot open {path} and its backing files: {exc.stderr}")
                return blockers
        return blockers + self.chain_blockers(request, chain)

    def request_blockers(self, request: SnapshotRequest, state: DomainState) -> list[str]:
        """What is wrong with *request* itself, whatever the images hold."""
        blockers: list[str] = []
        kind = request.kind or DEFAULT_KIND
        if state is not DomainState.SHUTOFF and not self.force_share:
            blockers.append(
                f"the domain is {state}; qemu-img cannot snapshot the disk of a running domain"
            )
        if kind is SnapshotKind.NATIVE:
            blockers.append("qcow2 has no native snapshots; ask for internal or external")
        if request.format not in (None, QCOW2):
            blockers.append(
                f"a qcow2 disk's snapshot is a qcow2 image, not {request.format}; "
                f"use type={QCOW2} or none"
            )
        return blockers

    def chain_blockers(self, request: SnapshotRequest, chain: Sequence[ImageInfo]) -> list[str]:
        """What stops *request* on the disk whose images are *chain* (active image first, as
        qemu-img or the running QEMU describe them)."""
        blockers: list[str] = []
        path = request.disk.path
        kind = request.kind or DEFAULT_KIND
        top = chain[0]
        if top.format != QCOW2:
            blockers.append(f"{path} is a {top.format} image, not {QCOW2}")
            return blockers
        if top.corrupt:
            blockers.append(f"{path} is marked corrupt; repair it with qemu-img check -r")
        for image in chain if kind is SnapshotKind.INTERNAL else ():
            if request.name in image.tags:
                where = "it" if image is top else f"its backing file {image.filename}"
                blockers.append(
                    f"{path}: {where} already has an internal snapshot {request.name!r}; "
                    "tags must be unique along the chain"
                )
        if kind is SnapshotKind.INTERNAL:
            if not os.access(path, os.W_OK):
                blockers.append(f"{path} is not writable")
        elif kind is SnapshotKind.EXTERNAL:
            blockers += self._external_target_blockers(request)
        return blockers

    def _external_target_blockers(self, request: SnapshotRequest) -> list[str]:
        path = os.path.abspath(request.disk.path)
        if request.target is not None and not os.path.isabs(request.target):
            return [f"the snapshot target {request.target} is not an absolute path"]
        target = request.target or default_target(path, request.name)
        blockers: list[str] = name_problems(target, path)
        folder = os.path.dirname(target)
        if os.path.lexists(target):
            blockers.append(f"the snapshot target {target} already exists")
        if not os.path.isdir(folder):
            blockers.append(f"the directory of the snapshot target {target} does not exist")
            return blockers
        if os.stat(folder).st_dev != os.stat(path).st_dev:
            blockers.append(
                f"the snapshot target {target} is on another file system than {path}; "
                "an external qcow2 snapshot hard-links the image to its target, which needs "
                "both on one file system"
            )
        for d in sorted({folder, os.path.dirname(_real(path))}):
            if not os.access(d, os.W_OK | os.X_OK):
                blockers.append(f"the directory {d} is not writable")
        return blockers

    def create(self, request: SnapshotRequest, state: DomainState) -> DiskSnapshot:
        """Create snapshot ``request.name`` of the disk.

        Failure guarantee: when it raises, :meth:`abort` has been run, so the disk is as it
        was (should that undo fail too, its error is logged and running :meth:`abort` again
        finishes it).
        """
        if state is not DomainState.SHUTOFF:
            raise UnsupportedOperationError(
                f"the domain is {state}; qemu-img cannot snapshot the disk of a running domain",
                driver=DRIVER,
                vdev=self.vdev,
            )
        kind = request.kind or DEFAULT_KIND
        if kind is SnapshotKind.NATIVE or request.format not in (None, QCOW2):
            raise UnsupportedOperationError(
                f"qcow2 cannot make a {kind} snapshot in format {request.format}",
                driver=DRIVER,
                vdev=self.vdev,
            )
        path = os.path.abspath(request.disk.path)
        # create_check ran moments ago under the same domain lock and read the image; an
        # internal snapshot needs no second look (qemu-img itself refuses a non-qcow2 image).
        if kind is not SnapshotKind.INTERNAL:
            top = self.img.info(path)
            if top.format != QCOW2:
                raise self._error(f"{path} is a {top.format} image, not {QCOW2}")
            target = request.target or default_target(path, request.name)
            if not os.path.isabs(target):
                raise self._error(f"the snapshot target {target} is not an absolute path")
            if os.path.lexists(target):
                raise self._error(f"the snapshot target {target} already exists")
        try:
            if kind is SnapshotKind.INTERNAL:
                return self._create_internal(request, path)
            return self._create_external(request, path, top)
        except Exception as exc:
            try:
                self.abort(request)
            except Exception as undo:
                self.log.exception("disk %s: undoing the failed create failed", self.vdev)
                exc.add_note(f"undoing it failed too: {undo}")
            raise

    def _create_internal(self, request: SnapshotRequest, path: str) -> DiskSnapshot:
        self._step("create", f"internal snapshot {request.name!r} in {path}")
        self.img.snapshot_create(path, request.name)
        return DiskSnapshot(
            vdev=self.vdev,
            path=request.disk.path,
            driver=DRIVER,
            kind=SnapshotKind.INTERNAL,
            name=request.name,
            locator=path,
            extra={"tag": request.name},
        )

    def _overlay(self, path: str, target: str) -> ExternalOverlay:
        return ExternalOverlay(path, target, suffix=TMP_SUFFIX, driver=DRIVER, vdev=self.vdev)

    def _create_external(self, request: SnapshotRequest, path: str, top: ImageInfo) -> DiskSnapshot:
        target = request.target or default_target(path, request.name)
        overlay = self._overlay(path, target)
        self._step("create", f"external snapshot {request.name!r}: {path} becomes {target}")

        def keep_backing_resolvable() -> None:
            # The header is shared with the disk's path until the switch: an absolute backing
            # path is right for both.
            self._keep_backing_resolvable(target, top, os.path.dirname(path))

        # link P to T (frozen from then on), a new empty overlay over T beside P, which then
        # takes P's place; the names are checked after the switch. A failure is undone by
        # :meth:`abort`, which create runs.
        overlay.link()
        keep_backing_resolvable()
        overlay.write(
            lambda tmp: self.img.create_overlay(tmp, backing=target, backing_format=QCOW2)
        )
        overlay.switch()
        return DiskSnapshot(
            vdev=self.vdev,
            path=request.disk.path,
            driver=DRIVER,
            kind=SnapshotKind.EXTERNAL,
            name=request.name,
            locator=target,
            size=os.stat(target).st_blocks * 512,
        )

    def abort(self, request: SnapshotRequest) -> bool:
        """Undo a create of *request* from any state it may have reached; idempotent.

        Internal: the tag is deleted from the disk's image if there. External: the scratch
        overlay is removed; a target that is still a second name of the disk's image is
        unlinked; when the disk's image is already the new overlay over the target, the
        overlay's data is committed into the target (so writes made since are kept) and the
        target is renamed back onto the disk's path. A target that is neither is left alone.

        Failure guarantee: each step is atomic or can be run again, so a failed abort is
        finished by calling it again. The disk's data is never lost. One trace may remain: when
        the disk's backing file was named by a relative path and the target is in another
        directory, the image header names the same backing file by its absolute path.
        """
        path = os.path.abspath(request.disk.path)
        kind = request.kind or DEFAULT_KIND
        if kind is SnapshotKind.INTERNAL:
            if os.path.isfile(path) and request.name in self.img.info(path).tags:
                self._step("abort", f"delete internal snapshot {request.name!r} from {path}")
                self.img.snapshot_delete(path, request.name)
        elif kind is SnapshotKind.EXTERNAL:
            target = request.target or default_target(path, request.name)
            # create refuses a relative target before it changes anything
            if os.path.isabs(target):
                self._abort_external(path, target)
        return True

    def _abort_external(self, path: str, target: str) -> None:
        overlay = self._overlay(path, target)
        if os.path.lexists(target) and _same_file(path, target):
            self._step("abort", f"unlink {target}, a second name of {path}")

        def fold_back() -> None:
            top = self.img.info(path)
            if top.backing_filename != target:
                return  # not an overlay this create made: the target is not ours to touch
            if top.tags:
                raise self._error(
                    f"{path} holds internal snapshots {_names(top.tags)}; "
                    f"cannot fold it back into {target} without losing them"
                )
            self._step("abort", f"commit {path} into {target} and move it back")
            self.img.commit(path)
            overlay.put_back()

        overlay.undo(fold_back)

    # -- delete -----------------------------------------------------------------------------

    def _delete_plan(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> _DeletePlan:
        """What deleting external snapshot file ``T`` (which exists) takes."""
        target = os.path.abspath(snapshot.locator)
        real_t = _real(target)
        # Every image that may sit on T: the disk's backing chain (with images snapcore has no
        # record of) and the files of the disk's other external snapshots.
        images: dict[str, ImageInfo] = {}
        if os.path.isfile(snapshot.path):
            for image in self._chain(snapshot.path):
                images.setdefault(_real(image.filename), image)
        for other in others:
            real = _real(other.locator)
            external = other.kind is SnapshotKind.EXTERNAL
            if external and real not in images and os.path.isfile(other.locator):
                images[real] = self._info(os.path.abspath(other.locator))
        t_image = images.get(real_t) or self._info(target)
        children = [
            image
            for real, image in images.items()
            if real != real_t
            and image.backing_path is not None
            and _real(image.backing_path) == real_t
        ]
        blockers: list[str] = []
        how: Literal["unlink", "commit", "rebase"]
        if len(children) == 1 and not children[0].tags:
            how = "commit"
        else:
            how = "unlink" if not children else "rebase"
            if t_image.tags:
                blockers.append(
                    f"{target} holds internal snapshots {_names(t_image.tags)}, which would "
                    "be lost when it is merged away; delete them first"
                )
            for child in children:
                if child.tags:
                    blockers.append(
                        f"{child.filename} holds internal snapshots {_names(child.tags)} "
                        f"that read data through {target}; merging it away would change "
                        "them; delete them first"
                    )
        return _DeletePlan(t_image, tuple(children), how, blockers)

    def delete_check(
        self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot], state: DomainState
    ) -> list[str]:
        """Blockers for :meth:`delete`; changes nothing. A snapshot already gone is none."""
        blockers: list[str] = []
        if state is not DomainState.SHUTOFF and not self.force_share:
            blockers.append(
                f"the domain is {state}; qemu-img cannot merge the images of a running domain"
            )
        if snapshot.kind is not SnapshotKind.EXTERNAL:
            return blockers
        target = snapshot.locator
        if not os.path.lexists(target) or _same_file(target, snapshot.path):
            return blockers
        try:
            blockers += self._delete_plan(snapshot, others).blockers
        except CommandError as exc:
            blockers.append(f"qemu-img cannot read the snapshot's images: {exc.stderr}")
        return blockers

    def delete(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> bool:
        """Delete *snapshot*, keeping every other snapshot's data and the disk's current data.

        Internal: the tag is deleted from whichever file holds it. External ``T``: with no
        image backed by ``T`` it is unlinked; with one (``C``, holding no internal snapshots)
        ``C`` is committed into ``T`` and ``T`` renamed onto ``C``, so ``T``'s own internal
        snapshots survive at ``C``'s path; otherwise every child is safely rebased onto ``T``'s
        backing file and ``T`` unlinked.

        Failure guarantee: every step can be run again, so calling :meth:`delete` again after a
        failure or a crash finishes the job; a snapshot already gone counts as deleted.
        :raises BackendError: when the delete would lose or change internal snapshots (what
            :meth:`delete_check` reports).
        """
        if snapshot.kind is SnapshotKind.INTERNAL:
            tag = _tag(snapshot)
            found = self._find_tag(tag, snapshot, others)
            if found is not None:
                self._step("delete", f"delete internal snapshot {tag!r} from {found.file}")
                self.img.snapshot_delete(found.file, tag)
            return True
        if snapshot.kind is not SnapshotKind.EXTERNAL:
            raise self._error(f"qcow2 has no {snapshot.kind} snapshots")
        target = os.path.abspath(snapshot.locator)
        if not os.path.lexists(target):
            return True
        if _same_file(target, snapshot.path):
            self._step("delete", f"unlink {target}, a second name of {snapshot.path}")
            _remove(target)
            return True
        plan = self._delete_plan(snapshot, others)
        if plan.blockers:
            raise self._error("; ".join(plan.blockers))
        if plan.how == "unlink":
            self._step("delete", f"unlink {target}: no image is backed by it")
            _remove(target)
        elif plan.how == "commit":
            self._merge_into_child(target, plan.target, plan.children[0])
        else:
            self._rebase_children(target, plan.target, plan.children)
        return True

    def _keep_backing_resolvable(self, file: str, image: ImageInfo, other_dir: str) -> None:
        """Make the backing file of *image* (the header in *file*) absolute when it is named
        by a relative path and *file*'s directory is not *other_dir*, the directory the header
        is also read from; nothing else changes (``qemu-img rebase -u``)."""
        backing = image.backing_path
        if (
            backing is not None
            and image.backing_filename is not None
            and not os.path.isabs(image.backing_filename)
            and _real(os.path.dirname(file)) != _real(other_dir)
        ):
            fmt = self._backing_format(image)
            self.img.rebase(file, backing=backing, backing_format=fmt, unsafe=True)

    def _merge_into_child(self, target: str, t_image: ImageInfo, child: ImageInfo) -> None:
        c_path = _real(child.filename)  # a symlinked disk keeps its symlink
        self._step("delete", f"commit {c_path} into {target}, then move {target} to {c_path}")
        # T's header moves to C's directory: keep its backing file resolvable from there.
        self._keep_backing_resolvable(target, t_image, os.path.dirname(c_path))
        self.img.commit(c_path)
        _copy_mode(c_path, target)
        os.replace(target, c_path)
        _fsync_dir(c_path)
        if _real(os.path.dirname(target)) != _real(os.path.dirname(c_path)):
            _fsync_dir(target)

    def _rebase_children(
        self, target: str, t_image: ImageInfo, children: Sequence[ImageInfo]
    ) -> None:
        backing = t_image.backing_path
        fmt = self._backing_format(t_image) if backing is not None else None
        for child in children:
            self._step(
                "delete", f"rebase {child.filename} from {target} onto {backing or 'nothing'}"
            )
            self.img.rebase(child.filename, backing=backing, backing_format=fmt, unsafe=False)
        self._step("delete", f"unlink {target}")
        _remove(target)

    # -- revert -----------------------------------------------------------------------------

    def revert_check(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> list[str]:
        """Blockers for :meth:`revert`; changes nothing."""
        path = snapshot.path
        if not os.path.isfile(path):
            return [f"the disk's image {path} does not exist"]
        try:
            blockers, replaces_image = self._revert_source_blockers(snapshot, others)
            if blockers or not replaces_image:
                return blockers
            return self._would_lose(path)
        except CommandError as exc:
            return [f"qemu-img cannot read the snapshot's images: {exc.stderr}"]

    def _revert_source_blockers(
        self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]
    ) -> tuple[list[str], bool]:
        """What stops reading the snapshot's data, and whether the revert replaces the image."""
        if snapshot.kind is SnapshotKind.INTERNAL:
            tag = _tag(snapshot)
            found = self._find_tag(tag, snapshot, others)
            if found is None:
                files = ", ".join(self._search_files(snapshot, others))
                return [f"internal snapshot {tag!r} is gone: none of {files} holds it"], False
            if _real(found.file) == _real(snapshot.path):
                return [], False
            self._chain_opens(found.file)
            return [], True
        if snapshot.kind is SnapshotKind.EXTERNAL:
            if not os.path.isfile(snapshot.locator):
                return [f"the snapshot's image {snapshot.locator} is gone"], False
            self._chain_opens(snapshot.locator)
            return [], True
        return [f"qcow2 has no {snapshot.kind} snapshots"], False

    def _chain_opens(self, path: str) -> None:
        """Raise :class:`CommandError` unless *path* and its backing files open (and a
        :class:`BackendError` when the chain reaches a file it must not)."""
        self._chain(path)

    def revert(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> bool:
        """Make the disk's current data the snapshot's; every snapshot is kept.

        Internal, held in the disk's image ``P``: ``qemu-img snapshot -a``. Internal, held in a
        base file ``F``: the snapshot's data is copied (shallow, over ``F``'s backing file) into
        a scratch image that replaces ``P``. External ``T``: a new empty overlay over ``T``
        replaces ``P``.

        Failure guarantee: a replaced ``P`` is renamed into place complete, so it holds its old
        data or the snapshot's. ``snapshot -a`` works in place: it rewrites the image's L1
        cluster table, so a crash or an I/O error during that write is the one case this
        guarantee does not cover (``qemu-img check`` reports the damage). Running it again is
        harmless.
        :raises BackendError: when the snapshot is gone or the current image holds internal
            snapshots a replacement would lose (what :meth:`revert_check` reports).
        """
        path = os.path.abspath(snapshot.path)
        if snapshot.kind is SnapshotKind.INTERNAL:
            tag = _tag(snapshot)
            found = self._find_tag(tag, snapshot, others)
            if found is None:
                raise self._error(f"internal snapshot {tag!r} is gone")
            if _real(found.file) == _real(path):
                self._step("revert", f"apply internal snapshot {tag!r} of {path}")
                self.img.snapshot_apply(path, found.snapshot)
                return True
            self._refuse_losing(path)
            backing = found.image.backing_path
            fmt = self._backing_format(found.image) if backing is not None else None
            self._step("revert", f"copy internal snapshot {tag!r} of {found.file} to {path}")
            self._replace(
                path,
                lambda tmp: self.img.convert(
                    found.file, tmp, snapshot=tag, backing=backing, backing_format=fmt
                ),
            )
            return True
        if snapshot.kind is not SnapshotKind.EXTERNAL:
            raise self._error(f"qcow2 has no {snapshot.kind} snapshots")
        target = os.path.abspath(snapshot.locator)
        if not os.path.isfile(target):
            raise self._error(f"the snapshot's image {target} is gone")
        self._refuse_losing(path)
        self._step("revert", f"new overlay of {target} at {path}")
        self._replace(
            path, lambda tmp: self.img.create_overlay(tmp, backing=target, backing_format=QCOW2)
        )
        return True

    def _replace(self, path: str, write: Callable[[str], None]) -> None:
        """Write a new image with *write* into a scratch file, then put it at *path*.

        Failure guarantee: *path* is untouched unless the new image is complete; the scratch
        file is removed.
        """
        replace_image(path, write, TMP_SUFFIX)

    def _refuse_losing(self, path: str) -> None:
        blockers = self._would_lose(path)
        if blockers:
            raise self._error("; ".join(blockers))

    # -- list -------------------------------------------------------------------------------

    def list_snapshots(self, disk: Disk, known: Sequence[DiskSnapshot]) -> list[DiskSnapshot]:
        """The snapshots on the storage now: the internal snapshots of every image of the
        disk's backing chain and of every file on record, the chain's backing images, and the
        recorded external snapshots' files that exist off the chain. Changes nothing; images
        are read with ``-U`` so that a running domain does not block the listing.

        :raises BackendError: the disk's backing chain is broken (a backing file is missing).
        """
        known_external = {_real(k.locator): k for k in known if k.kind is SnapshotKind.EXTERNAL}
        chain = self._chain(disk.path, force_share=True)
        backing = chain[-1].backing_path
        if backing is not None and not os.path.exists(backing):
            raise self._error(
                f"the backing chain of {disk.path} is broken: {chain[-1].filename} is backed "
                f"by {backing}, which is missing"
            )
        images: list[tuple[ImageInfo, bool]] = [(chain[0], False)]
        images += [(image, True) for image in chain[1:]]
        seen = {_real(image.filename) for image in chain}
        for k in known:
            real = _real(k.locator)
            if real in seen or not os.path.isfile(k.locator):
                continue
            seen.add(real)
            image = self.img.info(os.path.abspath(k.locator), force_share=True)
            images.append((image, real in known_external))
        out: list[DiskSnapshot] = []
        for image, external in images:
            filename = os.path.abspath(image.filename)
            for snap in image.snapshots:
                out.append(
                    DiskSnapshot(
                        vdev=disk.vdev,
                        path=disk.path,
                        driver=DRIVER,
                        kind=SnapshotKind.INTERNAL,
                        name=snap.name,
                        locator=filename,
                        extra={"tag": snap.name},
                    )
                )
            if external:
                record = known_external.get(_real(filename))
                out.append(
                    DiskSnapshot(
                        vdev=disk.vdev,
                        path=disk.path,
                        driver=DRIVER,
                        kind=SnapshotKind.EXTERNAL,
                        name=record.name if record else os.path.basename(filename),
                        locator=record.locator if record else filename,
                        size=image.actual_size,
                    )
                )
        return out
