"""Snapshots of one LVM logical volume: the algorithms behind the ``lvm`` hooks.

**Classic (thick) LVs.** A snapshot is a read-only COW snapshot LV ``<origin>+<checkpoint>``,
tagged ``snapcore``, sized by the disk's ``snapshot_size`` option (default ``100%ORIGIN``: room
for a full rewrite, so it cannot overflow). Revert merges it into the origin
(``lvconvert --merge``), which consumes it, then makes it again from the reverted origin so
that the checkpoint still has its snapshot (Cinder's way). A merge LVM puts off because the
origin is open is reported as a failure, never taken as done. To make the revert safe to run
again after a crash, the origin carries the tag ``snapcore_merge=<checkpoint>=<snapshot UUID>``
from just before the merge until the snapshot exists again: a second run tells from it whether
the merge is still to do (the snapshot with that UUID is there), is done (the snapshot is gone:
make it again) or the snapshot was already made again (another UUID: only the tag is left).

**Thin LVs.** A snapshot is a read-only thin snapshot ``<origin>+<checkpoint>``, tagged
``snapcore``, with activation skipped (it takes no device until needed). Revert builds a
writable thin snapshot of it called ``<origin>+.revert`` with the origin's tags, renames the
origin to ``<origin>+.old`` and ``<origin>+.revert`` to the origin's name, then removes the old
origin. The disk keeps its name, gets the snapshot's data and size, and every other snapshot
stays as it was, since thin snapshots do not depend on each other; a merge would not do,
because after a first one the other snapshots no longer name the LV as their origin. Each step
is one LVM metadata commit, and a second run picks up from the names it finds.

**Checks.** Every ``*_check`` method reads the volume group once with ``lvs`` and changes
nothing; what it finds wrong is returned as blockers, each a sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from snapcore.context import ProgressCallback
from snapcore.errors import BackendError, CommandError, InvalidNameError
from snapcore.model import (
    Disk,
    DiskSnapshot,
    Domain,
    DomainState,
    ProgressEvent,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore_lvm import devices
from snapcore_lvm.devices import OLD_SUFFIX, REVERT_SUFFIX, TAG, LvRef
from snapcore_lvm.lvm import FULL, LogicalVolume, Lvm, MergeOutcome, SizePolicy
from snapcore_lvm.lvm import VolumeGroupNotFoundError as VgMissing

DRIVER: Final = "lvm"
#: The option giving a classic snapshot's size.
SIZE_OPTION: Final = "snapshot_size"
#: The option giving the use of a thin pool (data or metadata, percent) above which no snapshot
#: is made.
POOL_OPTION: Final = "thin_pool_limit"
#: Default of :data:`POOL_OPTION`.
DEFAULT_POOL_LIMIT: Final = 90.0
#: Prefix of the tag an origin carries while a classic revert is under way.
MERGE_TAG: Final = "snapcore_merge="
CLASSIC: Final = "classic"
THIN: Final = "thin"


class DeferredMergeError(BackendError):
    """LVM put a merge off until the origin is next activated, because the origin is open."""


@dataclass(frozen=True, slots=True)
class Options:
    """The ``[disk.options]`` of an ``lvm`` disk."""

    size: SizePolicy = FULL
    size_given: bool = False
    pool_limit: float = DEFAULT_POOL_LIMIT


def parse_options(options: Mapping[str, str]) -> tuple[Options, list[str]]:
    """The disk's options and what is wrong with them (unknown keys, bad values)."""
    problems = []
    size, size_given, limit = FULL, False, DEFAULT_POOL_LIMIT
    for key, value in options.items():
        if key == SIZE_OPTION:
            try:
                size, size_given = SizePolicy.parse(str(value)), True
            except ValueError as exc:
                problems.append(str(exc))
        elif key == POOL_OPTION:
            text = str(value).strip().removesuffix("%")
            try:
                limit = float(text)
                if not 0 < limit <= 100:
                    raise ValueError
            except ValueError:
                problems.append(f'{POOL_OPTION} {value!r} is not a percentage such as "90%"')
        else:
            problems.append(
                f"unknown option {key!r} for driver {DRIVER} (known: {SIZE_OPTION}, {POOL_OPTION})"
            )
    return Options(size, size_given, limit), problems


def resolve(path: str) -> tuple[LvRef | None, str | None]:
    """The LV a disk path names, or why it names none (not an LV path, a name LVM rejects)."""
    ref = devices.locate(path)
    if ref is None:
        return None, f"{path} is not an LVM logical volume (/dev/VG/LV or /dev/mapper/VG-LV)"
    problem = ref.problem()
    if problem:
        return None, f"{path}: {problem}"
    return ref, None


def _merge_tag(checkpoint: str, uuid: str) -> str:
    return f"{MERGE_TAG}{checkpoint}={uuid}"


def _merge_marks(origin: LogicalVolume) -> list[tuple[str, str, str]]:
    """``(tag, checkpoint, snapshot uuid)`` of every classic-revert tag on *origin*."""
    out = []
    for tag in origin.tags:
        if tag.startswith(MERGE_TAG):
            checkpoint, _, uuid = tag[len(MERGE_TAG) :].partition("=")
            out.append((tag, checkpoint, uuid))
    return out


@dataclass(frozen=True, slots=True)
class _Refs:
    """Where a recorded snapshot lives."""

    origin: LvRef
    snapshot: LvRef
    checkpoint: str
    kind: str  # CLASSIC, THIN or "" (unknown)


class LvmDisk:
    """The ``lvm`` operations on one disk (``vdev``) of a domain.

    Methods may raise :class:`~snapcore.errors.CommandError` (an LVM tool failed) or
    :class:`~snapcore.errors.BackendError`; the plugin attributes them to the disk.
    """

    def __init__(self, *, vdev: str, lvm: Lvm, log: logging.Logger, progress: ProgressCallback):
        self.vdev = vdev
        self.lvm = lvm
        self.log = log
        self._progress = progress

    def error(self, message: str) -> BackendError:
        return BackendError(message, driver=DRIVER, vdev=self.vdev)

    def _step(self, step: str, message: str) -> None:
        self.log.info("disk %s: %s", self.vdev, message)
        self._progress(ProgressEvent(step=step, vdev=self.vdev, message=message))

    def _volumes(self, vg: str, *, hidden: bool = True) -> dict[str, LogicalVolume]:
        return {lv.name: lv for lv in self.lvm.volumes(vg, hidden=hidden)}

    def _refs(self, snapshot: DiskSnapshot) -> _Refs:
        """The origin and snapshot LVs of a recorded snapshot, names checked."""
        vg, sep, name = snapshot.locator.partition("/")
        split = devices.split_snapshot_name(name) if sep else None
        if split is None:
            raise self.error(f"{snapshot.locator!r} is no snapshot LV made by snapcore")
        origin = LvRef(vg, split[0])
        ref = LvRef(vg, name)
        problem = origin.problem() or ref.problem()
        if problem:
            raise self.error(f"snapshot {snapshot.locator!r}: {problem}")
        kind = str(snapshot.extra.get("type") or "")
        return _Refs(origin, ref, split[1], kind if kind in (CLASSIC, THIN) else "")

    # -- create -----------------------------------------------------------------------------

    def create_check(self, request: SnapshotRequest, domain: Domain) -> list[str]:
        """What stops *request*; changes nothing."""
        blockers: list[str] = []
        if request.kind not in (None, SnapshotKind.NATIVE):
            blockers.append(f"LVM snapshots are native snapshot LVs, not {request.kind} ones")
        if request.target is not None or request.format is not None:
            blockers.append("LVM snapshots live in the volume group and take no target or format")
        options, problems = parse_options(request.disk.options)
        return self._lv_problems(request, domain, options, [*blockers, *problems])

    def _lv_problems(
        self, request: SnapshotRequest, domain: Domain, options: Options, blockers: list[str]
    ) -> list[str]:
        """*blockers* and what stops a snapshot of the disk's LV."""
        ref, problem = resolve(request.disk.path)
        if ref is None:
            assert problem is not None
            return [*blockers, problem]
        try:
            name = devices.snapshot_name(ref.lv, request.name)
        except InvalidNameError as exc:
            return [*blockers, str(exc)]
        too_long = devices.length_problem(ref.vg, name)
        if too_long:
            blockers.append(too_long)
        try:
            volumes = self._volumes(ref.vg)
        except VgMissing:
            return [*blockers, f"volume group {ref.vg!r} of {request.disk.path} does not exist"]
        except CommandError as exc:
            return [*blockers, f"cannot read volume group {ref.vg!r}: {exc}"]
        origin = volumes.get(ref.lv)
        if origin is None:
            return [*blockers, f"logical volume {ref.full} does not exist"]
        blockers += self._origin_problems(origin, options)
        existing = volumes.get(name)
        if existing is not None and existing.is_ours:
            blockers.append(
                f"snapshot LV {ref.vg}/{name} already exists (left by an earlier snapshot "
                "of this name?); delete it with lvremove if it is not needed"
            )
        elif existing is not None:
            blockers.append(
                f"an LV named {ref.vg}/{name} already exists and was not made by snapcore"
            )
        if origin.is_thin:
            blockers += self._pool_problems(origin, volumes, options)
        elif not blockers:
            blockers += self._space_problems(ref, request, volumes, domain)
        return blockers

    def _origin_problems(self, origin: LogicalVolume, options: Options) -> list[str]:
        full = origin.ref.full
        if origin.is_classic_snapshot:
            return [f"{full} is itself a classic snapshot LV; snapshot its origin instead"]
        if origin.is_thin_pool or origin.attr[0] in "tTeiIlLpvc":
            return [f"{full} is a {origin.segtype} LV, which cannot be a disk snapshotted by LVM"]
        if not origin.is_thin and origin.attr[0] not in "-oOrRmM":
            return [f"{full} is a {origin.segtype} LV; only linear, striped, RAID and thin LVs"]
        found = []
        if origin.is_merging_origin:
            found.append(
                f"a snapshot merge into {full} is pending; it completes when {full} is next "
                "activated while closed"
            )
        if origin.is_thin and options.size_given:
            found.append(
                f"{SIZE_OPTION} applies to classic LVs only; {full} is thin and its snapshots "
                "take no size: remove the option"
            )
        return found

    def _pool_problems(
        self, origin: LogicalVolume, volumes: Mapping[str, LogicalVolume], options: Options
    ) -> list[str]:
        pool = volumes.get(origin.pool)
        if pool is None:
            return [f"thin pool {origin.vg}/{origin.pool} of {origin.ref.full} is not found"]
        full = pool.ref.full
        if pool.health in "FDM":
            state = {"F": "has failed", "D": "is out of data space", "M": "has read-only metadata"}
            return [f"thin pool {full} {state[pool.health]}"]
        found = []
        limit = options.pool_limit
        for use, what in ((pool.data_percent, "data"), (pool.metadata_percent, "metadata")):
            if use is not None and use >= limit:
                found.append(
                    f"thin pool {full} is {use:g}% full ({what}), at or above the limit of "
                    f"{limit:g}% ({POOL_OPTION}); extend the pool or free space first"
                )
        return found

    def _space_problems(
        self,
        ref: LvRef,
        request: SnapshotRequest,
        volumes: Mapping[str, LogicalVolume],
        domain: Domain,
    ) -> list[str]:
        """Free extents for the classic snapshots of this domain's disks in the same VG.

        The hook is asked about one disk at a time, so the need is summed over every writable
        disk of the domain whose classic LV is in this VG: each disk's check then refuses when
        the VG cannot hold them all.
        """
        disks: dict[LvRef, Disk] = {ref: request.disk}
        for other_disk in domain.disks:
            other = None if other_disk.readonly else devices.locate(other_disk.path)
            if other is not None and other.vg == ref.vg and other not in disks:
                disks[other] = other_disk
        need = 0
        vdevs = []
        for lv_ref, disk in sorted(disks.items()):
            lv = volumes.get(lv_ref.lv)
            if lv is None or lv.is_thin:
                continue
            options, problems = parse_options(disk.options)
            if problems:
                continue
            need += options.size.extents(lv.size, lv.extent_size)
            vdevs.append(disk.vdev)
        origin = volumes[ref.lv]
        free = origin.vg_free_extents
        if need <= free:
            return []
        mib = origin.extent_size / 1024**2
        disks_text = (
            f"the snapshot of {ref.full} needs"
            if len(vdevs) == 1
            else f"the snapshots of this domain's disks in it ({', '.join(vdevs)}) need"
        )
        return [
            f"volume group {ref.vg!r} has {free} free extents ({free * mib:g} MiB); "
            f"{disks_text} {need} ({need * mib:g} MiB): extend the VG or set a smaller "
            f"{SIZE_OPTION}"
        ]

    def create(self, request: SnapshotRequest) -> DiskSnapshot:
        """Make the snapshot LV of *request*. LVM's lvcreate either makes it or leaves nothing."""
        ref = self.target(request)
        origin = self.lvm.get(ref)
        if origin is None:
            raise self.error(f"logical volume {ref.full} does not exist")
        return self.create_from(request, origin)

    def target(self, request: SnapshotRequest) -> LvRef:
        ref, problem = resolve(request.disk.path)
        if ref is None:
            raise self.error(str(problem))
        return ref

    def create_from(self, request: SnapshotRequest, origin: LogicalVolume) -> DiskSnapshot:
        """Make the snapshot LV of *request*, whose origin LV *origin* was just read."""
        disk = request.disk
        options, problems = parse_options(disk.options)
        if problems:
            raise self.error("; ".join(problems))
        ref = origin.ref
        name = devices.snapshot_name(ref.lv, request.name)
        size: int | None = None
        if origin.is_thin:
            self.lvm.create_snapshot(ref, name, extents=None, skip_activation=True, tags=[TAG])
            kind = THIN
        else:
            extents = options.size.extents(origin.size, origin.extent_size)
            self.lvm.create_snapshot(ref, name, extents=extents, tags=[TAG])
            kind = CLASSIC
            size = extents * origin.extent_size
        self._step("create", f"created {kind} snapshot LV {ref.vg}/{name}")
        return DiskSnapshot(
            vdev=disk.vdev,
            path=disk.path,
            driver=DRIVER,
            kind=SnapshotKind.NATIVE,
            name=request.name,
            locator=f"{ref.vg}/{name}",
            size=size,
            extra={
                "type": kind,
                "vg": ref.vg,
                "origin": ref.lv,
                "snapshot_size": str(options.size) if kind == CLASSIC else None,
            },
        )

    def abort(self, request: SnapshotRequest) -> bool:
        """Remove the snapshot LV *request* made, if it exists; never an LV without the tag."""
        ref, _ = resolve(request.disk.path)
        if ref is None:
            return True
        snap = ref.with_lv(devices.snapshot_name(ref.lv, request.name))
        try:
            lv = self.lvm.get(snap, hidden=True)
        except VgMissing:
            return True
        if lv is None:
            return True
        if not lv.is_ours:
            self.log.warning(
                "disk %s: %s was not made by snapcore; left alone", self.vdev, snap.full
            )
            return True
        self.lvm.remove(snap)
        self._step("abort", f"removed snapshot LV {snap.full}")
        return True

    # -- delete -----------------------------------------------------------------------------

    def delete_check(self, snapshot: DiskSnapshot) -> list[str]:
        refs = self._refs(snapshot)
        try:
            volumes = self._volumes(refs.origin.vg)
        except VgMissing:
            return []
        lv = volumes.get(refs.snapshot.lv)
        origin = volumes.get(refs.origin.lv)
        found = []
        if origin is not None and any(cp == refs.checkpoint for _, cp, _ in _merge_marks(origin)):
            found.append(
                f"a revert to this snapshot was interrupted on {refs.origin.full}; "
                "run 'snapcore recover' first"
            )
        if lv is None:
            return found
        if not lv.is_ours:
            found.append(f"{refs.snapshot.full} was not made by snapcore; it is left alone")
        elif lv.attr[0] == "S":
            found.append(f"a merge of {refs.snapshot.full} into {refs.origin.full} is pending")
        return found

    def delete(self, snapshot: DiskSnapshot) -> bool:
        refs = self._refs(snapshot)
        try:
            lv = self.lvm.get(refs.snapshot, hidden=True)
        except VgMissing:
            return True
        if lv is None:
            return True
        if not lv.is_ours:
            self.log.warning(
                "disk %s: %s was not made by snapcore; left alone", self.vdev, refs.snapshot.full
            )
            return True
        if lv.attr[0] == "S":
            raise self.error(
                f"a merge of {refs.snapshot.full} into {refs.origin.full} is pending; "
                "it cannot be deleted until the merge is done"
            )
        self.lvm.remove(refs.snapshot)
        self._step("delete", f"removed snapshot LV {refs.snapshot.full}")
        return True

    # -- revert -----------------------------------------------------------------------------

    def revert_check(self, snapshot: DiskSnapshot, state: DomainState) -> list[str]:
        refs = self._refs(snapshot)
        try:
            volumes = self._volumes(refs.origin.vg)
        except VgMissing:
            return [f"volume group {refs.origin.vg!r} does not exist any more"]
        snap = volumes.get(refs.snapshot.lv)
        origin = volumes.get(refs.origin.lv)
        marks = _merge_marks(origin) if origin is not None else []
        mine = [m for m in marks if m[1] == refs.checkpoint]
        found = [
            f"a revert of {refs.origin.full} to snapshot {cp!r} was interrupted; "
            "run 'snapcore recover' first"
            for _, cp, _ in marks
            if cp != refs.checkpoint
        ]
        if snap is None:
            if not mine:
                found.append(
                    f"snapshot LV {refs.snapshot.full} is gone (removed outside snapcore?)"
                )
        elif not snap.is_ours:
            found.append(f"{refs.snapshot.full} was not made by snapcore")
        elif snap.is_invalid:
            found.append(
                f"snapshot LV {refs.snapshot.full} overflowed: its COW space "
                f"({snap.size // 1024**2} MiB) filled up and LVM dropped its data; delete "
                f"the snapshot (and give the disk a larger {SIZE_OPTION})"
            )
        elif snap.attr[0] == "S" and not mine:
            found.append(f"a merge of {refs.snapshot.full} is pending")
        if origin is None:
            pending = volumes.get(refs.origin.lv + REVERT_SUFFIX)
            if pending is None:
                found.append(f"logical volume {refs.origin.full} does not exist")
        elif origin.is_open and state is DomainState.SHUTOFF:
            found.append(
                f"{refs.origin.full} is open (in use by another process): LVM would put the "
                "revert off until it is closed; close it first"
            )
        return found

    def revert(self, snapshot: DiskSnapshot) -> bool:
        refs = self._refs(snapshot)
        volumes = self._volumes(refs.origin.vg)
        snap = volumes.get(refs.snapshot.lv)
        kind = refs.kind
        if snap is not None:
            kind = THIN if snap.is_thin else CLASSIC
        if kind == THIN:
            self._revert_thin(refs, volumes)
        else:
            self._revert_classic(refs, volumes, snapshot)
        return True

    def _check_closed(self, origin: LogicalVolume) -> None:
        if origin.is_open:
            raise self.error(
                f"{origin.ref.full} is open (in use by another process); close it first"
            )

    def _revert_classic(
        self, refs: _Refs, volumes: Mapping[str, LogicalVolume], snapshot: DiskSnapshot
    ) -> None:
        origin = volumes.get(refs.origin.lv)
        if origin is None:
            raise self.error(f"logical volume {refs.origin.full} does not exist")
        snap = volumes.get(refs.snapshot.lv)
        marks = _merge_marks(origin)
        for _, cp, _ in marks:
            if cp != refs.checkpoint:
                raise self.error(
                    f"a revert of {origin.ref.full} to snapshot {cp!r} was interrupted; "
                    "run 'snapcore recover' first"
                )
        if marks:
            tag, _, uuid = marks[0]
            if snap is not None and snap.uuid == uuid:
                self._merge(origin, snap)  # the merge is still to do (or still put off)
            if snap is None or snap.uuid == uuid:
                self._recreate(refs, origin, snap, snapshot)
            self.lvm.delete_tag(origin.ref, tag)
            return
        if snap is None or not snap.is_ours:
            raise self.error(f"snapshot LV {refs.snapshot.full} is gone")
        if snap.is_invalid:
            raise self.error(f"snapshot LV {refs.snapshot.full} overflowed; its data is lost")
        if snap.attr[0] == "S":
            raise self.error(f"a merge of {refs.snapshot.full} is pending")
        self._check_closed(origin)
        tag = _merge_tag(refs.checkpoint, snap.uuid)
        self.lvm.add_tag(origin.ref, tag)
        try:
            self._merge(origin, snap)
            self._recreate(refs, origin, snap, snapshot)
        except DeferredMergeError:
            raise  # the snapshot is still there, its merge pending
        except Exception as exc:
            self._recreate_after_failure(refs, snap, snapshot, tag, exc)
            raise
        self.lvm.delete_tag(origin.ref, tag)

    def _recreate_after_failure(
        self,
        refs: _Refs,
        consumed: LogicalVolume,
        snapshot: DiskSnapshot,
        tag: str,
        exc: Exception,
    ) -> None:
        """After a classic revert failed past its start: if the merge consumed the snapshot
        LV (the disk holds the snapshot's data), make it again, so that the checkpoint keeps
        its snapshot whatever failed after the merge. Changes nothing when the snapshot LV is
        still there. Best effort: a failure here is noted on *exc*, and the origin's tag lets
        the revert run again (``snapcore recover``) finish."""
        try:
            if self.lvm.get(refs.snapshot, hidden=True) is not None:
                return  # not merged: the disk keeps its data from before
            origin = self.lvm.get(refs.origin)
            if origin is None or origin.is_merging_origin:
                return
            self._recreate(refs, origin, consumed, snapshot)
            self.lvm.delete_tag(origin.ref, tag)
        except Exception as again:
            self.log.warning(
                "disk %s: making %s again failed: %s", self.vdev, refs.snapshot.full, again
            )
            exc.add_note(
                f"making snapshot LV {refs.snapshot.full} again failed too: {again}; "
                "'snapcore recover' finishes the revert"
            )

    def _merge(self, origin: LogicalVolume, snap: LogicalVolume) -> None:
        self._step("revert", f"merging {snap.ref.full} into {origin.ref.full}")
        if snap.attr[0] == "S":  # a merge put off earlier: start it, if the origin is closed now
            outcome = MergeOutcome.DEFERRED
            if not origin.is_open:
                outcome = self.lvm.start_pending_merge(snap.ref, origin.ref)
        else:
            outcome = self.lvm.merge(snap.ref, origin.ref)
        if outcome is MergeOutcome.DEFERRED:
            raise DeferredMergeError(
                f"LVM put off the merge of {snap.ref.full} into {origin.ref.full} because "
                f"{origin.ref.full} is open: the disk keeps its current data until "
                f"{origin.ref.full} is next activated while closed, and then gets the "
                "snapshot's; revert again once it is closed",
                driver=DRIVER,
                vdev=self.vdev,
            )

    def _recreate(
        self,
        refs: _Refs,
        origin: LogicalVolume,
        consumed: LogicalVolume | None,
        snapshot: DiskSnapshot,
    ) -> None:
        """Make the snapshot the merge consumed again, from the reverted origin, as large as
        it was (or, if it is not known any more, as its recorded size policy says)."""
        if consumed is not None:
            extents = consumed.extents
        else:
            try:
                size = SizePolicy.parse(str(snapshot.extra.get("snapshot_size") or FULL))
            except ValueError:
                size = FULL
            extents = size.extents(origin.size, origin.extent_size)
        self.lvm.create_snapshot(refs.origin, refs.snapshot.lv, extents=extents, tags=[TAG])
        self._step("revert", f"made snapshot LV {refs.snapshot.full} again")

    def _revert_thin(self, refs: _Refs, volumes: Mapping[str, LogicalVolume]) -> None:
        origin_name = refs.origin.lv
        tmp_ref = refs.origin.with_lv(origin_name + REVERT_SUFFIX)
        old_ref = refs.origin.with_lv(origin_name + OLD_SUFFIX)
        snap = volumes.get(refs.snapshot.lv)
        origin = volumes.get(origin_name)
        tmp = volumes.get(tmp_ref.lv)
        old = volumes.get(old_ref.lv)
        if origin is None:
            # Interrupted between the two renames: finish them.
            if tmp is None:
                raise self.error(
                    f"logical volume {refs.origin.full} is missing and no revert is pending"
                )
            self.lvm.rename(tmp_ref, origin_name)
            if old is not None:
                self.lvm.remove(old_ref)
            return
        if snap is None or not snap.is_ours:
            raise self.error(f"snapshot LV {refs.snapshot.full} is gone")
        if old is not None:  # a finished revert's old origin, not removed yet
            self.lvm.remove(old_ref)
        if tmp is not None and tmp.origin != refs.snapshot.lv:
            self.lvm.remove(tmp_ref)  # left by an interrupted revert to another snapshot
            tmp = None
        self._check_closed(origin)
        if tmp is None:
            self._step("revert", f"copying {refs.snapshot.full} (thin snapshot)")
            self.lvm.create_snapshot(
                refs.snapshot,
                tmp_ref.lv,
                extents=None,
                writable=True,
                skip_activation=False,
                tags=origin.tags,
            )
        self.lvm.rename(refs.origin, old_ref.lv)
        try:
            self.lvm.rename(tmp_ref, origin_name)
        except Exception as exc:
            # The disk must not be left without its name: the origin gets it back (the
            # copy stays for a revert run again, which picks up from the names it finds).
            try:
                self.lvm.rename(old_ref, origin_name)
            except Exception as again:
                exc.add_note(
                    f"renaming {old_ref.full} back to {origin_name} failed too: {again}; "
                    "'snapcore recover' finishes the revert"
                )
            raise
        self.lvm.remove(old_ref)
        self._step("revert", f"{refs.origin.full} now holds {refs.snapshot.full}'s data")

    # -- list -------------------------------------------------------------------------------

    def list_snapshots(self, disk: Disk) -> list[DiskSnapshot]:
        """The usable snapshots of the disk's LV in its VG: snapcore's (by name and tag,
        overflowed or merging ones left out) and any other snapshot LV of it."""
        ref, _ = resolve(disk.path)
        if ref is None:
            return []
        try:
            volumes = self.lvm.volumes(ref.vg)
        except VgMissing:
            return []
        found = []
        for lv in volumes:
            split = devices.split_snapshot_name(lv.name)
            if lv.is_ours and split is not None and split[0] == ref.lv:
                if lv.is_invalid or lv.attr[0] == "S":
                    continue
                name = split[1]
            elif (
                not lv.is_ours
                and lv.origin == ref.lv
                and (lv.is_classic_snapshot or lv.is_thin)
                and not lv.name.startswith(ref.lv + devices.SEP + ".")
            ):
                name = lv.name
            else:
                continue
            found.append(
                DiskSnapshot(
                    vdev=disk.vdev,
                    path=disk.path,
                    driver=DRIVER,
                    kind=SnapshotKind.NATIVE,
                    name=name,
                    locator=f"{ref.vg}/{lv.name}",
                    size=None if lv.is_thin else lv.size,
                    extra={"type": THIN if lv.is_thin else CLASSIC, "ours": lv.is_ours},
                )
            )
        return found


def create_group(
    requests: Sequence[SnapshotRequest],
    lvm: Lvm,
    log: logging.Logger,
    progress: ProgressCallback,
) -> list[DiskSnapshot]:
    """Make the snapshot LVs of several disks, reading each VG once (one ``lvs`` per VG, then
    one ``lvcreate`` per disk, one after the other: LVM serialises them on the VG lock anyway).

    All or nothing: when one fails, the snapshot LVs already made are removed before the error
    is raised (attributed to the disk whose snapshot failed).
    """
    disks = [LvmDisk(vdev=r.disk.vdev, lvm=lvm, log=log, progress=progress) for r in requests]
    refs = [disk.target(r) for disk, r in zip(disks, requests, strict=True)]
    volumes: dict[str, dict[str, LogicalVolume]] = {}
    made: list[LvRef] = []
    out: list[DiskSnapshot] = []
    try:
        for disk, request, ref in zip(disks, requests, refs, strict=True):
            try:
                if ref.vg not in volumes:
                    volumes[ref.vg] = {lv.name: lv for lv in lvm.volumes(ref.vg)}
                origin = volumes[ref.vg].get(ref.lv)
                if origin is None:
                    raise disk.error(f"logical volume {ref.full} does not exist")
                snap = disk.create_from(request, origin)
            except CommandError as exc:
                raise exc.for_disk(disk.vdev, DRIVER) from exc
            made.append(ref.with_lv(snap.locator.partition("/")[2]))
            out.append(snap)
    except BaseException:
        for done in reversed(made):
            try:
                lvm.remove(done)
            except CommandError as exc:  # abort runs next and tries again
                log.warning("cannot remove snapshot LV %s: %s", done.full, exc)
        raise
    return out
