"""``chain``: a correct external-snapshot backend in pure Python, and broken copies of it.

A disk is a *layer file*: a 4 KiB header (magic, then JSON: size, backing file, allocated
blocks) followed by the layer's blocks at their offsets. A block a layer has not allocated is
read from its backing file, and so on down the chain: a faithful miniature of qcow2 external
snapshots. A snapshot of disk ``P`` freezes ``P``'s file under the target name (a hard link)
and puts a new, empty layer over it in ``P``'s place (written aside, then renamed over ``P``).
Deleting a snapshot merges its blocks into every layer that depends on it (the disk, and other
snapshots made after a revert) and removes it; reverting puts a new empty layer over the
snapshot in ``P``'s place.

Each mutant below breaks one thing, and says which test of the conformance suite must catch
it (see test_mutants.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from snapcore.errors import BackendError
from snapcore.hookspecs import hookimpl
from snapcore.model import BackendInfo, Disk, DiskSnapshot, SnapshotKind, SnapshotRequest
from snapcore.testing import BackendConformance

DRIVER = "chain"
MAGIC = b"SCCHAIN1"
HEADER = 4096
BLOCK = 4096
EXTERNAL = SnapshotKind.EXTERNAL


# -- the layer file format (also the "guest" I/O of the tests) ----------------------------------


def header(path: str) -> dict[str, object]:
    """The header of the layer at *path*; ValueError when it is not a layer file."""
    with open(path, "rb") as f:
        raw = f.read(HEADER)
    if not raw.startswith(MAGIC):
        raise ValueError(f"{path} is not a chain layer")
    data: dict[str, object] = json.loads(raw[len(MAGIC) :].rstrip(b"\0"))
    return data


def _backing(path: str) -> str | None:
    b = header(path)["backing"]
    return b if isinstance(b, str) else None


def _blocks(path: str) -> list[int]:
    blocks = header(path)["blocks"]
    assert isinstance(blocks, list)
    return [int(b) for b in blocks]


def _size(path: str) -> int:
    size = header(path)["size"]
    assert isinstance(size, int)
    return size


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_layer(path: str, size: int, backing: str | None, blocks: dict[int, bytes]) -> None:
    """Write a whole layer file at *path* (no rename: callers write aside and rename)."""
    meta = json.dumps({"size": size, "backing": backing, "blocks": sorted(blocks)}).encode()
    with open(path, "wb") as f:
        f.write((MAGIC + meta).ljust(HEADER, b"\0"))
        f.truncate(HEADER + size)
        for index, data in blocks.items():
            f.seek(HEADER + index * BLOCK)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def own_blocks(path: str) -> dict[int, bytes]:
    """The blocks the layer at *path* holds itself."""
    out = {}
    with open(path, "rb") as f:
        for index in _blocks(path):
            f.seek(HEADER + index * BLOCK)
            out[index] = f.read(BLOCK)
    return out


def _read_block(path: str, index: int) -> bytes:
    layer: str | None = path
    while layer is not None:
        if index in _blocks(layer):
            with open(layer, "rb") as f:
                f.seek(HEADER + index * BLOCK)
                return f.read(BLOCK)
        layer = _backing(layer)
    return bytes(BLOCK)


def read(path: str, offset: int, length: int) -> bytes:
    """Read the disk's data through its chain, as a guest would."""
    out = bytearray()
    for index in range(offset // BLOCK, (offset + length + BLOCK - 1) // BLOCK):
        out += _read_block(path, index)
    start = offset % BLOCK
    return bytes(out[start : start + length])


def write(path: str, offset: int, data: bytes) -> None:
    """Write into the top layer at *path*, as a guest would (whole blocks, read-modify-write)."""
    blocks = own_blocks(path)
    first, last = offset // BLOCK, (offset + len(data) - 1) // BLOCK
    merged = bytearray(read(path, first * BLOCK, (last - first + 1) * BLOCK))
    start = offset - first * BLOCK
    merged[start : start + len(data)] = data
    for i, index in enumerate(range(first, last + 1)):
        blocks[index] = bytes(merged[i * BLOCK : (i + 1) * BLOCK])
    write_layer(path, _size(path), _backing(path), blocks)


def make(path: str, size: int) -> None:
    write_layer(path, size, None, {})


# -- the backend ---------------------------------------------------------------------------------


class ChainBackend:
    """The correct backend (every mutant below subclasses it)."""

    def _error(self, message: str, vdev: str) -> BackendError:
        return BackendError(message, driver=DRIVER, vdev=vdev)

    def chain(self, path: str, vdev: str) -> list[str]:
        """The layers from *path* down; a BackendError naming the first missing or bad one."""
        layers, layer = [], path
        while True:
            if not os.path.isfile(layer):
                what = "the disk" if layer == path else f"backing file of {layers[-1]}"
                raise self._error(f"{what} {layer} is missing: the chain is broken", vdev)
            try:
                backing = _backing(layer)
            except ValueError as exc:
                raise self._error(str(exc), vdev) from exc
            layers.append(layer)
            if backing is None:
                return layers
            layer = backing

    def target(self, request: SnapshotRequest) -> str:
        return request.target or f"{request.disk.path}.{request.name}"

    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            driver=DRIVER,
            kinds=frozenset({EXTERNAL}),
            default_kind=EXTERNAL,
            revert_any=True,
            description="layer files in pure Python (tests only)",
        )

    @hookimpl
    def disk_claim(self, disk: Disk) -> str | None:
        try:
            with open(disk.path, "rb") as f:
                return DRIVER if f.read(len(MAGIC)) == MAGIC else None
        except OSError:
            return None

    @hookimpl
    def disk_snapshot_create_check(self, request: SnapshotRequest) -> list[str]:
        blockers = []
        if request.kind not in (None, EXTERNAL):
            blockers.append(f"chain makes external snapshots only, not {request.kind}")
        try:
            self.chain(request.disk.path, request.disk.vdev)
        except BackendError as exc:
            blockers.append(str(exc))
        target = self.target(request)
        if os.path.lexists(target):
            blockers.append(f"the target {target} exists")
        return blockers

    @hookimpl
    def disk_snapshot_create(self, request: SnapshotRequest) -> DiskSnapshot:
        path, target = request.disk.path, self.target(request)
        tmp = path + ".new"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.link(path, target)  # the snapshot: the disk's file, frozen from now on
            write_layer(tmp, _size(path), target, {})
            os.replace(tmp, path)
            _fsync_dir(path)
        except BaseException:
            self.undo_create(path, target)
            raise
        return DiskSnapshot(
            vdev=request.disk.vdev,
            path=path,
            driver=DRIVER,
            kind=EXTERNAL,
            name=request.name,
            locator=target,
        )

    def undo_create(self, path: str, target: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".new")
        if not os.path.exists(target):
            return
        if os.path.samefile(path, target):  # linked, not yet replaced
            os.unlink(target)
        elif _backing(path) == target:  # replaced: put the frozen file back
            os.replace(target, path)
        _fsync_dir(path)

    @hookimpl
    def disk_snapshot_abort(self, request: SnapshotRequest, created: DiskSnapshot | None) -> bool:
        target = created.locator if created is not None else self.target(request)
        self.undo_create(request.disk.path, target)
        return True

    @hookimpl
    def disk_snapshot_delete_check(self) -> list[str]:
        return []

    def layers(self, disk: Disk, others: Iterable[DiskSnapshot]) -> set[str]:
        """Every layer file reachable from the disk and the other snapshots."""
        found: set[str] = set()
        for top in (disk.path, *(o.locator for o in others)):
            layer: str | None = top
            while layer is not None and layer not in found and os.path.isfile(layer):
                found.add(layer)
                layer = _backing(layer)
        return found

    def dependants(self, target: str, disk: Disk, others: Iterable[DiskSnapshot]) -> list[str]:
        return sorted(p for p in self.layers(disk, others) if _backing(p) == target)

    def merge_into(self, layer: str, target: str) -> None:
        """Give *layer* the blocks of *target* it lacks and *target*'s backing file."""
        blocks = own_blocks(target) | own_blocks(layer)
        tmp = layer + ".merge"
        write_layer(tmp, _size(layer), _backing(target), blocks)
        os.replace(tmp, layer)

    @hookimpl
    def disk_snapshot_delete(
        self, snapshot: DiskSnapshot, disk: Disk, others: Sequence[DiskSnapshot]
    ) -> bool:
        target = snapshot.locator
        if not os.path.exists(target):
            return True
        for layer in self.dependants(target, disk, others):
            self.merge_into(layer, target)
        os.unlink(target)
        _fsync_dir(target)
        return True

    @hookimpl
    def disk_snapshot_revert_check(self, snapshot: DiskSnapshot) -> list[str]:
        try:
            self.chain(snapshot.locator, snapshot.vdev)
        except BackendError as exc:
            return [str(exc)]
        return []

    @hookimpl
    def disk_snapshot_revert(self, snapshot: DiskSnapshot, disk: Disk) -> bool:
        self.chain(snapshot.locator, snapshot.vdev)
        tmp = disk.path + ".new"
        try:
            write_layer(tmp, _size(snapshot.locator), snapshot.locator, {})
            os.replace(tmp, disk.path)  # atomic: the old data or the snapshot's
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(disk.path)
        return True

    def snapshot(self, disk: Disk, layer: str, name: str) -> DiskSnapshot:
        return DiskSnapshot(
            vdev=disk.vdev, path=disk.path, driver=DRIVER, kind=EXTERNAL, name=name, locator=layer
        )

    @hookimpl
    def disk_snapshot_list(self, disk: Disk, known: Sequence[DiskSnapshot]) -> list[DiskSnapshot]:
        names = {k.locator: k.name for k in known}
        layers = self.chain(disk.path, disk.vdev)[1:]
        for k in known:  # snapshots off the current chain (made before a revert)
            if k.locator not in layers and os.path.isfile(k.locator):
                self.chain(k.locator, disk.vdev)
                layers.append(k.locator)
        return [self.snapshot(disk, layer, names.get(layer, Path(layer).name)) for layer in layers]


class ChainConformance(BackendConformance):
    """The conformance suite for ``chain`` backends; subclasses set ``plugin``."""

    driver = DRIVER
    disk_size = 1024 * 1024

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        path = str(tmp_path / f"{vdev}.chain")
        make(path, size)
        return Disk(vdev=vdev, path=path, driver=DRIVER)

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        write(disk.path, offset, data)

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        return read(disk.path, offset, length)


# -- mutants ---------------------------------------------------------------------------------------


class DeleteDropsLayer(ChainBackend):
    """Delete re-points the dependants at the deleted layer's backing file without merging
    its blocks into them: what was written before that snapshot is lost from the disk."""

    def merge_into(self, layer: str, target: str) -> None:
        blocks = own_blocks(layer)
        tmp = layer + ".merge"
        write_layer(tmp, _size(layer), _backing(target), blocks)
        os.replace(tmp, layer)


class DeleteMergesIntoDiskOnly(ChainBackend):
    """Delete merges into the disk only: a snapshot made on the deleted one before a revert is
    left with a missing backing file."""

    @hookimpl
    def disk_snapshot_delete(
        self, snapshot: DiskSnapshot, disk: Disk, others: Sequence[DiskSnapshot]
    ) -> bool:
        return super().disk_snapshot_delete(snapshot, disk, [])


class CreateCheckIgnoresTarget(ChainBackend):
    """The create check does not look whether the target exists."""

    @hookimpl
    def disk_snapshot_create_check(self, request: SnapshotRequest) -> list[str]:
        target = self.target(request)
        return [b for b in super().disk_snapshot_create_check(request) if target not in b]


class CreateCheckTakesALock(ChainBackend):
    """The create check writes a lock file next to the disk, and removes it again."""

    @hookimpl
    def disk_snapshot_create_check(self, request: SnapshotRequest) -> list[str]:
        lock = request.disk.path + ".lock"
        Path(lock).write_text(str(os.getpid()))
        try:
            return super().disk_snapshot_create_check(request)
        finally:
            os.unlink(lock)


class CreateCheckIgnoresChain(ChainBackend):
    """The create check looks at the disk's own file only, not at its backing files."""

    @hookimpl
    def disk_snapshot_create_check(self, request: SnapshotRequest) -> list[str]:
        return [b for b in super().disk_snapshot_create_check(request) if "chain" not in b]


class ListCrashesOnBrokenChain(ChainBackend):
    """The list walks the chain itself and raises a bare RuntimeError at a missing layer: not
    a snapcore error."""

    @hookimpl
    def disk_snapshot_list(self, disk: Disk, known: Sequence[DiskSnapshot]) -> list[DiskSnapshot]:
        layers, layer = [], _backing(disk.path)
        while layer is not None:
            if not os.path.isfile(layer):
                raise RuntimeError(f"no such layer: {layer}")
            layers.append(layer)
            layer = _backing(layer)
        return [self.snapshot(disk, x, Path(x).name) for x in layers]


class ListHidesBrokenChain(ChainBackend):
    """The list stops at the first missing layer and lists what it found so far."""

    @hookimpl
    def disk_snapshot_list(self, disk: Disk, known: Sequence[DiskSnapshot]) -> list[DiskSnapshot]:
        layers, layer = [], _backing(disk.path)
        while layer is not None and os.path.isfile(layer):
            layers.append(layer)
            layer = _backing(layer)
        return [self.snapshot(disk, x, Path(x).name) for x in layers]


class RevertNotAtomic(ChainBackend):
    """Revert removes the disk's file first, then renames the new layer into place: a
    failure in between leaves no disk at all."""

    @hookimpl
    def disk_snapshot_revert(self, snapshot: DiskSnapshot, disk: Disk) -> bool:
        tmp = disk.path + ".new"
        write_layer(tmp, _size(snapshot.locator), snapshot.locator, {})
        os.unlink(disk.path)
        os.rename(tmp, disk.path)
        return True


class CreateLeavesPartial(ChainBackend):
    """A create that fails leaves its half-made files behind, and abort does not look for
    them."""

    def undo_create(self, path: str, target: str) -> None:
        exists = os.path.exists(target)
        if exists and not os.path.samefile(path, target) and _backing(path) == target:
            os.replace(target, path)


class AbortOnlyUndoesFinished(ChainBackend):
    """Create cleans up after itself, but abort after a create that died half-way (the
    target linked, the disk not yet replaced) removes nothing."""

    @hookimpl
    def disk_snapshot_create(self, request: SnapshotRequest) -> DiskSnapshot:
        path, target = request.disk.path, self.target(request)
        os.link(path, target)
        write_layer(path + ".new", _size(path), target, {})
        os.replace(path + ".new", path)
        return self.snapshot(request.disk, target, request.name)

    @hookimpl
    def disk_snapshot_abort(self, request: SnapshotRequest, created: DiskSnapshot | None) -> bool:
        if created is not None:
            self.undo_create(request.disk.path, created.locator)
        return True


# -- mutants only a crash finds (the kill variant of fault injection) ------------------------------


class RevertWritesInPlace(ChainBackend):
    """Revert writes the new layer over the disk's own file, after copying that file aside
    to put back if the write fails: every failure that raises leaves the old data, but a crash
    between opening the disk for writing and the end of the write leaves it empty."""

    @hookimpl
    def disk_snapshot_revert(self, snapshot: DiskSnapshot, disk: Disk) -> bool:
        self.chain(snapshot.locator, snapshot.vdev)
        backup = disk.path + ".old"
        shutil.copyfile(disk.path, backup)
        try:
            write_layer(disk.path, _size(snapshot.locator), snapshot.locator, {})
        except BaseException:
            os.replace(backup, disk.path)
            raise
        os.unlink(backup)
        return True


class CreateScratchOfItsOwn(ChainBackend):
    """Create writes the new layer under a name of its own process (``<disk>.<pid>.new``)
    and removes it when anything fails; abort knows only ``<disk>.new``: a crash between
    writing it and the rename leaves it behind for good."""

    @hookimpl
    def disk_snapshot_create(self, request: SnapshotRequest) -> DiskSnapshot:
        path, target = request.disk.path, self.target(request)
        tmp = f"{path}.{os.getpid()}.new"
        try:
            os.link(path, target)
            write_layer(tmp, _size(path), target, {})
            os.replace(tmp, path)
            _fsync_dir(path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            self.undo_create(path, target)
            raise
        return self.snapshot(request.disk, target, request.name)


class DeleteMergesInPlace(ChainBackend):
    """Delete rewrites each dependant in place with the deleted layer's blocks, after copying
    it aside to put back if the rewrite fails: right under every failure that raises, but a
    crash in the middle of the rewrite leaves the dependant (and the disk above it) empty."""

    def merge_into(self, layer: str, target: str) -> None:
        blocks = own_blocks(target) | own_blocks(layer)
        backing = _backing(target)
        backup = layer + ".old"
        shutil.copyfile(layer, backup)
        try:
            write_layer(layer, _size(layer), backing, blocks)
        except BaseException:
            os.replace(backup, layer)
            raise
        os.unlink(backup)


# -- a delete that is not all-or-nothing, whether it fails or is killed ----------------------------


class DeleteRepointsFirst(ChainBackend):
    """Delete first points each dependant at the deleted layer's backing file, then gives it
    the deleted layer's blocks, in two renames: a failure in between loses those blocks from
    the disk (and running the delete again cannot find them: nothing names the layer now)."""

    def merge_into(self, layer: str, target: str) -> None:
        mine = own_blocks(layer)
        tmp = layer + ".merge"
        write_layer(tmp, _size(layer), _backing(target), mine)
        os.replace(tmp, layer)
        write_layer(tmp, _size(layer), _backing(target), own_blocks(target) | mine)
        os.replace(tmp, layer)
