"""The native VHD engine's operations, one function per ``vhd-util`` command it replaces.

Standard library only. :func:`create_dynamic` (``create``), :func:`snapshot` (``snapshot``:
a differencing child), :func:`coalesce` (``coalesce``: a child's sectors into its parent),
:func:`set_hidden` (``set -f hidden``), :func:`set_parent` (``modify -p``), :func:`query`
(``query``), :func:`check` (``check``) and :func:`repair` (``repair``). Each writes the files the
way blktap does, in the crash-safe order described in :mod:`snapcore_vhd.image`; each raises
:class:`~snapcore_vhd.errors.VhdError` subclasses with a one-line message for a file it cannot
use, before writing anything, and :class:`OSError` for a failing file system.
"""

from __future__ import annotations

import itertools
import os
import stat
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from snapcore_vhd.chain import Chain, find_parent, parent_candidates, read_locator
from snapcore_vhd.errors import ChainError, UnsupportedVhdError, VhdError
from snapcore_vhd.format import (
    BAT_UNUSED,
    BATMAP_COOKIE,
    BATMAP_VERSION,
    BITMAP_SECTORS,
    BLOCK_SIZE,
    CREATOR_APP,
    DISK_DIFFERENCING,
    DISK_DYNAMIC,
    DISK_FIXED,
    FOOTER_SIZE,
    HEADER_OFFSET,
    HEADER_SIZE,
    LOCATOR_CODES,
    MAX_SIZE,
    PLAT_MACX,
    PLAT_NONE,
    PLAT_W2KU,
    PLAT_W2RU,
    PLATFORM_CODES,
    SECTORS_PER_BLOCK,
    TIMESTAMP_SLACK,
    BatmapHeader,
    Footer,
    Header,
    Layout,
    Locator,
    batmap_checksum,
    first_broken,
    geometry_value,
    now_vhd,
    pad_sectors,
    round_size,
    to_vhd_time,
)
from snapcore_vhd.image import Fault, VhdImage, bit_runs
from snapcore_vhd.names import SECTOR

#: Called with (blocks done, blocks in all) during long operations.
Progress = Callable[[int, int], None]

#: Mode of the files the engine creates (before the umask), as vhd-util.
FILE_MODE: Final = 0o644


def _no_fault(label: str) -> None:
    del label


# -- creating -------------------------------------------------------------------------------


def locator_data(child: str, parent: str) -> dict[int, bytes]:
    """The locator data blktap writes in *child* for *parent*: a path relative to the directory
    of the file *child* names (symlinks resolved, as blktap's readers resolve it), starting
    with ``./``, as a ``file://`` URL (MacX) and as a Windows path in UTF-16LE (W2ku and
    W2ru), with no trailing NUL."""
    child_dir = os.path.dirname(os.path.realpath(child))  # a symlinked child: its file's dir
    rel = "./" + os.path.relpath(os.path.realpath(parent), child_dir)
    windows = rel.replace("/", "\\").encode("utf-16-le")
    return {
        PLAT_MACX: ("file://" + rel).encode("utf-8"),
        PLAT_W2KU: windows,
        PLAT_W2RU: windows,
    }


def _parent_name(parent: str) -> bytes:
    raw = os.path.basename(parent).encode("utf-16-be")
    if len(raw) > 512:
        raise ValueError(f"parent name {os.path.basename(parent)!r} is too long for a VHD header")
    return raw.ljust(512, b"\0")


def _write_new(path: str, meta: bytes, footer: bytes, fault: Fault) -> None:
    fault("create: open")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        fault("create: metadata")
        os.pwrite(fd, meta, 0)
        fault("create: footer")
        os.pwrite(fd, footer, len(meta))
        fault("create: fsync")
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(
    path: str,
    *,
    size: int,
    disk_type: int,
    parent: tuple[str, bytes, int] | None,
    fault: Fault,
) -> None:
    entries = -(-size // BLOCK_SIZE)
    layout = Layout.for_entries(entries)
    locators: list[Locator] = [Locator() for _ in range(8)]
    blobs: list[tuple[int, bytes]] = []
    end = layout.locator_offset
    parent_uuid = bytes(16)
    parent_ts = 0
    name = bytes(512)
    if parent is not None:
        ppath, parent_uuid, parent_ts = parent
        name = _parent_name(ppath)
        encoded = locator_data(path, ppath)
        for i, code in enumerate(LOCATOR_CODES):
            data = encoded[code]
            space = pad_sectors(len(data))
            locators[i] = Locator(code=code, space=space, length=len(data), offset=end)
            blobs.append((end, data))
            end += space
    footer = Footer(
        timestamp=now_vhd(),
        original_size=size,
        current_size=size,
        geometry=geometry_value(size),
        disk_type=disk_type,
        uuid=uuidlib.uuid4().bytes,
    ).sealed()
    header = Header(
        max_entries=entries,
        parent_uuid=parent_uuid,
        parent_timestamp=parent_ts,
        parent_name_raw=name,
        locators=tuple(locators),
    )
    batmap = BatmapHeader(
        offset=layout.batmap_offset,
        size=layout.batmap_bytes // SECTOR,
        version=BATMAP_VERSION,
        checksum=batmap_checksum(bytes(layout.batmap_bytes)),
    )
    meta = bytearray(end)
    meta[0:FOOTER_SIZE] = footer.pack()
    meta[HEADER_OFFSET : HEADER_OFFSET + HEADER_SIZE] = header.pack()
    meta[layout.bat_offset : layout.bat_offset + layout.bat_bytes] = b"\xff" * layout.bat_bytes
    meta[layout.batmap_header_offset : layout.batmap_offset] = batmap.pack()
    for at, data in blobs:
        meta[at : at + len(data)] = data
    _write_new(path, bytes(meta), footer.pack(), fault)


def create_dynamic(path: str, size: int, *, fault: Fault | None = None) -> int:
    """Create an empty dynamic VHD of *size* bytes (rounded up to 2 MiB) at *path*, which must
    not exist (``vhd-util create -n PATH -s MB``). Returns the size written.

    :raises ValueError: a size of 0 or above 2040 GiB.
    :raises FileExistsError: *path* exists.
    """
    rounded = round_size(size)
    if rounded <= 0 or rounded > MAX_SIZE:
        raise ValueError(f"size {size} is out of range (1 byte to {MAX_SIZE} bytes)")
    _build(path, size=rounded, disk_type=DISK_DYNAMIC, parent=None, fault=fault or _no_fault)
    return rounded


def snapshot_target(parent: str) -> str:
    """The parent ``vhd-util snapshot`` links a child to without ``-e``: *parent*, or its
    first ancestor with an allocated block when *parent* is an empty differencing disk."""
    target = parent
    seen: set[str] = set()
    while True:
        real = os.path.realpath(target)
        if real in seen:
            raise ChainError(parent, "the parent chain loops")
        seen.add(real)
        with VhdImage(target) as image:
            if not image.differencing or image.allocated_blocks():
                return target
            assert image.header is not None
            if image.header.raw_parent:
                return target
            target = find_parent(image)


def snapshot(
    child: str, parent: str, *, raw_parent: bool = False, fault: Fault | None = None
) -> None:
    """Create *child*, an empty differencing VHD over *parent*, the way ``vhd-util snapshot -n
    CHILD -p PARENT -e`` does: same size as the parent, its UUID and modification time recorded,
    its name and MacX/W2ku/W2ru locators relative to the child's directory.

    :param raw_parent: *parent* is a raw file (``-m``): the parent UUID is left null.
    :raises VhdError: *parent* is not a usable VHD (checked before anything is written).
    :raises FileExistsError: *child* exists.
    """
    st = os.stat(parent)
    if raw_parent:
        size = round_size(st.st_size)
        uuid_bytes = bytes(16)
    else:
        with Chain(parent) as chain:  # the whole chain must open before a child is added
            size = chain.size
            uuid_bytes = chain.leaf.footer.uuid
    ts = to_vhd_time(st.st_mtime)
    _build(
        child,
        size=size,
        disk_type=DISK_DIFFERENCING,
        parent=(parent, uuid_bytes, ts),
        fault=fault or _no_fault,
    )


# -- changing -------------------------------------------------------------------------------


def set_hidden(path: str, hidden: bool, *, fault: Fault | None = None) -> None:
    """Set or clear blktap's ``hidden`` flag (``vhd-util set -n PATH -f hidden -v 0|1``): the
    footer at the end first, the copy at offset 0 last."""
    with VhdImage(path, writable=True, fault=fault) as image:
        if image.hidden != hidden:
            image.write_footer(replace(image.footer, hidden=int(hidden)))


def relink_problems(child: str, parent: str) -> list[str]:
    """Why ``vhd-util modify -n CHILD -p PARENT`` cannot point *child* at *parent*, checked
    before anything is written: *parent*'s file name must fit the header's 512-byte name
    field, and the new path must fit each MacX, W2ku and W2ru locator's space, since blktap
    rewrites the locators in place (and a path that does not fit one of them fails it half
    way, ``ENAMETOOLONG``, the locators before it already rewritten). *parent* need not exist
    yet. The native engine is held to the same rule, so that both engines accept the same
    relinks. Reads *child*'s header only.
    """
    name = os.path.basename(parent)
    problems: list[str] = []
    if len(name.encode("utf-16-be")) > 512:
        problems.append(
            f"the parent name {name} needs {len(name.encode('utf-16-be'))} bytes in the VHD "
            "header of {child}, which has room for 512"
        )
    try:
        with VhdImage(child, headers_only=True) as image:
            header = image.header
            if header is None or not image.differencing:
                return [*problems, f"{child} is not a differencing VHD; it has no parent to set"]
            encoded = locator_data(child, parent)
            for i, loc in enumerate(header.locators):
                data = encoded.get(loc.code)
                if data is not None and len(data) > loc.space_bytes:
                    problems.append(
                        f"the path of {parent} relative to {child} needs {len(data)} bytes in "
                        f"its parent locator {i}, which has room for {loc.space_bytes}"
                    )
    except (VhdError, OSError) as exc:
        problems.append(describe(exc))
    return problems


def _parent_fields(parent: str, raw_parent: bool) -> tuple[bytes, int, bytes]:
    """The parent UUID, timestamp and name a child of *parent* records."""
    if raw_parent:
        os.stat(parent)
        parent_uuid = bytes(16)
    else:
        with VhdImage(parent) as p:
            parent_uuid = p.footer.uuid
    return parent_uuid, to_vhd_time(os.stat(parent).st_mtime), _parent_name(parent)


#: Locator plans tried in turn: each tuple is a slot and the codes that share it. blktap's own
#: layout (one slot each) first; the W2ku and W2ru paths are the same bytes, so they may share.
_PLANS: Final = (
    ((PLAT_MACX,), (PLAT_W2KU,), (PLAT_W2RU,)),
    ((PLAT_MACX,), (PLAT_W2KU, PLAT_W2RU)),
)
_W2: Final = ((PLAT_W2KU, PLAT_W2RU),)


def set_parent(
    child: str, parent: str, *, raw_parent: bool = False, fault: Fault | None = None
) -> None:
    """Point differencing *child* at *parent* (``vhd-util modify -p PARENT [-m] -n CHILD``):
    the parent UUID (null with *raw_parent*), timestamp and name in the header, and MacX, W2ku
    and W2ru locators holding the path relative to the child.

    **Atomic**: the new locator data goes to sectors that the current header does not use
    (free space between the metadata and the first block, or locator slots the header no
    longer refers to), and one header write switches to it; the old data is never
    overwritten. An interruption anywhere leaves the child with its old parent or its new
    one, complete (see :func:`_switch_locators` for the rare file with no free sector).

    :raises VhdError: *child* is not differencing or *parent* is not a VHD.
    :raises ValueError: the parent's name does not fit the header, or there is no room at all
        for the new locators.
    """
    parent_uuid, ts, name = _parent_fields(parent, raw_parent)
    encoded = locator_data(child, parent)
    with VhdImage(child, writable=True, fault=fault) as image:
        header = image.header
        if header is None or not image.differencing:
            raise UnsupportedVhdError(child, "is not a differencing VHD; it has no parent to set")
        new = replace(header, parent_uuid=parent_uuid, parent_timestamp=ts, parent_name_raw=name)
        _switch_locators(image, new, encoded)


def _locator_ranges(header: Header) -> list[tuple[int, int]]:
    """The byte ranges of the locator data *header* refers to, sorted, without repeats."""
    return sorted(
        {(loc.offset, loc.offset + loc.space_bytes) for loc in header.locators if loc.code}
    )


def _free_runs(image: VhdImage, header: Header) -> list[tuple[int, int]]:
    """The byte ranges where new locator data may go: past the header, BAT and batmap, before
    the first data block (or, with none, a little past the current end), outside the ranges
    *header*'s locators use."""
    base = image.headers_end()
    first = image.first_block()
    limit = first if first is not None else max(image.metadata_end(), base) + 16 * SECTOR
    runs: list[tuple[int, int]] = []
    at = base
    for a, z in _locator_ranges(header):
        if a > at:
            runs.append((at, min(a, limit)))
        at = max(at, z)
    if at < limit:
        runs.append((at, limit))
    return [(a, z) for a, z in runs if z > a]


def _allocate(
    runs: list[tuple[int, int]], plan: tuple[tuple[int, ...], ...], encoded: dict[int, bytes]
) -> list[tuple[tuple[int, ...], int, int]] | None:
    """First-fit places for each slot of *plan*: ``(codes, offset, space)``, or ``None``."""
    free = list(runs)
    out: list[tuple[tuple[int, ...], int, int]] = []
    for codes in plan:
        space = pad_sectors(len(encoded[codes[0]]))
        for i, (a, z) in enumerate(free):
            if z - a >= space:
                out.append((codes, a, space))
                free[i] = (a + space, z)
                break
        else:
            return None
    return out


def _entries(
    placed: list[tuple[tuple[int, ...], int, int]], encoded: dict[int, bytes]
) -> tuple[Locator, ...]:
    """Header locator entries for *placed* slots, in blktap's order (MacX, W2ku, W2ru)."""
    by_code = {
        code: Locator(code=code, space=space, length=len(encoded[code]), offset=offset)
        for codes, offset, space in placed
        for code in codes
    }
    found = [by_code[c] for c in LOCATOR_CODES if c in by_code]
    return tuple(found + [Locator()] * (8 - len(found)))


def _switch_locators(image: VhdImage, new: Header, encoded: dict[int, bytes]) -> None:
    """Write *new*'s locators to free sectors, then switch to *new* with one header write.

    When the free space cannot hold them all, the switch takes more header writes, each one
    leaving a complete header: first the old parent with a single locator kept (which frees
    the others' slots), then the new parent with its W2ku/W2ru path only, then with all three.
    Only a file whose header uses one locator slot and has no free sector at all (never one
    that blktap or this engine made) is rewritten in place, as blktap does.
    """
    current = image.header
    assert current is not None
    for plan in _PLANS:
        placed = _allocate(_free_runs(image, current), plan, encoded)
        if placed is not None:
            _commit(image, replace(new, locators=_entries(placed, encoded)), placed, encoded)
            return
    ranges = _locator_ranges(current)
    if len(ranges) > 1:
        kept = _keep_one(current)
        image.write_header(kept)
        _switch_locators(image, new, encoded)
        return
    partial = _allocate(_free_runs(image, current), _W2, encoded)
    if partial is not None:
        _commit(image, replace(new, locators=_entries(partial, encoded)), partial, encoded)
        header = image.header
        assert header is not None
        rest = _allocate(_free_runs(image, header), ((PLAT_MACX,),), encoded)
        if rest is not None:
            placed = partial + rest
            _commit(image, replace(new, locators=_entries(placed, encoded)), rest, encoded)
        return
    _in_place(image, new, encoded)


def _keep_one(header: Header) -> Header:
    """*header* with the locators of one slot only (a W2ku/W2ru one when there is one): still
    a complete pointer to the same parent, and the other slots free."""
    used = [loc for loc in header.locators if loc.code in LOCATOR_CODES]
    chosen = next((loc for loc in used if loc.code != PLAT_MACX), used[0] if used else None)
    if chosen is None:
        raise ValueError(f"{header!r} has no MacX, W2ku or W2ru locator to keep")
    keep = tuple(
        loc if loc.code and loc.offset == chosen.offset else Locator() for loc in header.locators
    )
    return replace(header, locators=keep)


def _commit(
    image: VhdImage,
    header: Header,
    placed: list[tuple[tuple[int, ...], int, int]],
    encoded: dict[int, bytes],
) -> None:
    """Write the locator data of *placed* (the footer first moved past it when the file has no
    block and the data reaches the footer), make it durable, then write *header*."""
    end = max(offset + space for _, offset, space in placed)
    if end > image.end_of_data:
        image.move_footer(end)
    for codes, offset, space in placed:
        image.write_raw(encoded[codes[0]].ljust(space, b"\0"), offset, "relink: locator")
    image.flush()
    image.write_header(header)
    image.settle_footer()


def _in_place(image: VhdImage, new: Header, encoded: dict[int, bytes]) -> None:
    header = image.header
    assert header is not None
    locators = list(header.locators)
    for i, loc in enumerate(locators):
        data = encoded.get(loc.code)
        if data is None:
            continue
        if len(data) > loc.space_bytes:
            raise ValueError(
                f"{image.path}: the new parent path needs {len(data)} bytes in locator {i}, "
                f"which has room for {loc.space_bytes}"
            )
        image.write_raw(data.ljust(loc.space_bytes, b"\0"), loc.offset, "relink: locator")
        locators[i] = replace(loc, length=len(data))
    image.flush()
    image.write_header(replace(new, locators=tuple(locators)))


@dataclass(frozen=True, slots=True)
class SavedMetadata:
    """A copy of everything but the data blocks of one VHD (:func:`save_metadata`)."""

    path: str
    #: the bytes from offset 0 to the end of the metadata (footer copy, header, BAT, batmap,
    #: parent locators)
    head: bytes
    #: the last 512 bytes (the footer) and the file's size
    tail: bytes
    size: int


def save_metadata(path: str) -> SavedMetadata:
    """Copy *path*'s metadata, to put it back with :func:`restore_metadata` after a tool that
    rewrites headers and locators in place (blktap's ``modify -p``) has failed half way.

    :raises VhdError: *path* is not a dynamic or differencing VHD.
    """
    with VhdImage(path, headers_only=True) as image:
        if image.header is None:
            raise UnsupportedVhdError(path, "is a fixed VHD; it has no header to save")
    with VhdImage(path) as image:
        end = image.metadata_end()
        size = image.file_size()
        head = os.pread(image.fd, end, 0)
        tail = os.pread(image.fd, FOOTER_SIZE, size - FOOTER_SIZE)
    return SavedMetadata(path=path, head=head, tail=tail, size=size)


def restore_metadata(saved: SavedMetadata) -> None:
    """Write back what :func:`save_metadata` copied: the file is again exactly as it was then
    (its data blocks were not touched in between). Durable when it returns."""
    fd = os.open(saved.path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, saved.head, 0)
        os.ftruncate(fd, saved.size)
        os.pwrite(fd, saved.tail, saved.size - FOOTER_SIZE)
        os.fsync(fd)
    finally:
        os.close(fd)


def coalesce(child: str, *, fault: Fault | None = None, progress: Progress | None = None) -> int:
    """Write every sector differencing *child* holds into its immediate parent, through the
    parent's own write path (blocks allocated, bitmaps and batmap set), as ``vhd-util coalesce
    -n CHILD`` does. *child* itself, and any other child of the parent, are not changed.
    Returns the number of sectors written. Running it again writes the same data again.

    :raises VhdError: *child* is not differencing, or its chain is broken.
    """
    with Chain(child) as chain:  # checks the UUIDs and the whole chain first
        leaf = chain.leaf
        if not leaf.differencing:
            raise UnsupportedVhdError(
                child, "coalescing of non-differencing disks is not supported"
            )
        header = leaf.header
        assert header is not None
        parent_path = chain.layers[1].path
        if header.raw_parent:
            return _coalesce_into_raw(leaf, parent_path, progress)
        count = 0
        with VhdImage(parent_path, writable=True, fault=fault) as parent:
            limit = parent.size // SECTOR
            allocated = [(b, e) for b, e in enumerate(leaf.bat) if e != BAT_UNUSED]
            for n, (block, entry) in enumerate(allocated):
                base = block * SECTORS_PER_BLOCK
                for a, z, present in bit_runs(leaf.bitmap(block), 0, SECTORS_PER_BLOCK):
                    end = min(z, limit - base)
                    if present and end > a:
                        parent.write_sectors(base + a, _block_data(leaf, entry, a, end))
                        count += end - a
                if progress is not None:
                    progress(n + 1, len(allocated))
            parent.flush()
        return count


def _block_data(image: VhdImage, entry: int, first: int, end: int) -> bytes:
    """Sectors ``[first, end)`` of the block whose bitmap is at sector *entry*."""
    return os.pread(image.fd, (end - first) * SECTOR, (entry + BITMAP_SECTORS + first) * SECTOR)


def _coalesce_into_raw(leaf: VhdImage, parent: str, progress: Progress | None) -> int:
    count = 0
    fd = os.open(parent, os.O_WRONLY | os.O_CLOEXEC)
    try:
        allocated = [(b, e) for b, e in enumerate(leaf.bat) if e != BAT_UNUSED]
        for n, (block, entry) in enumerate(allocated):
            base = block * SECTORS_PER_BLOCK
            for a, z, present in bit_runs(leaf.bitmap(block), 0, SECTORS_PER_BLOCK):
                if present:
                    data = os.pread(
                        leaf.fd, (z - a) * SECTOR, (entry + BITMAP_SECTORS + a) * SECTOR
                    )
                    os.pwrite(fd, data, (base + a) * SECTOR)
                    count += z - a
            if progress is not None:
                progress(n + 1, len(allocated))
        os.fsync(fd)
    finally:
        os.close(fd)
    return count


def repair(path: str) -> None:
    """Put the footer back at the end of the data and make the copy at offset 0 equal to it
    (``vhd-util repair``): what an interrupted write may leave to do."""
    with VhdImage(path, writable=True):
        pass


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """What ``vhd-util query`` reports about one VHD (and a little more)."""

    path: str
    #: ``fixed``, ``dynamic`` or ``differencing``
    disk_type: int
    #: ``-v``: the virtual size in bytes (vhd-util prints MiB)
    virtual_size: int
    #: ``-s``: end of data plus the footer, in bytes
    physical_size: int
    uuid: str
    #: ``-p``: the parent's path as blktap resolves it, or ``None``
    parent: str | None
    parent_uuid: str | None
    #: ``-f``: blktap's hidden flag
    hidden: bool
    #: ``-a``: allocated blocks
    allocated: int
    #: ``-d``: files in the chain (1 without a parent), or ``None`` when not asked for
    depth: int | None
    #: the leaf's creation time, Unix seconds
    timestamp: int


def query(path: str, *, depth: bool = True) -> Query:
    """Read *path*'s metadata (and with *depth*, open its whole chain to count it).

    :raises VhdError: the file or, with *depth*, its chain cannot be used.
    """
    with VhdImage(path) as image:
        parent: str | None = None
        parent_uuid: str | None = None
        if image.differencing:
            header = image.header
            assert header is not None
            parent = os.path.realpath(find_parent(image))
            parent_uuid = str(uuidlib.UUID(bytes=header.parent_uuid))
        info = Query(
            path=path,
            disk_type=image.disk_type,
            virtual_size=image.size,
            physical_size=image.physical_size,
            uuid=image.footer.uuid_str,
            parent=parent,
            parent_uuid=parent_uuid,
            hidden=image.hidden,
            allocated=image.allocated_blocks(),
            depth=None,
            timestamp=image.footer.timestamp + 946684800,
        )
    if depth:
        with Chain(path) as chain:
            info = replace(info, depth=chain.depth)
    return info


def read_metadata(path: str) -> tuple[Footer, Header | None]:
    """The footer and (dynamic disks) header of *path*, strictly validated.

    :raises VhdError: when *path* is not a usable VHD.
    """
    with VhdImage(path) as image:
        return image.footer, image.header


# -- checking -------------------------------------------------------------------------------


def check(path: str, *, parents: bool = False, now: int | None = None) -> list[str]:
    """Check *path* as ``vhd-util check -n PATH [-p]`` does and return what is wrong, one
    message a problem, in vhd-util's words (``primary footer invalid: invalid checksum``,
    ``block 3 (offset 0x1f) clobbers footer``, ``invalid parent P: invalid parent uuid``). An
    empty list means the file is valid. Never writes.

    :param parents: check every ancestor too (their messages are prefixed with their path).
    """
    problems = _check_one(path, now)
    if problems or not parents:
        return problems
    try:
        with Chain(path) as chain:  # a raw parent ends the walk, as in vhd-util check -p
            ancestors = [layer.path for layer in chain.layers[1:] if isinstance(layer, VhdImage)]
    except (VhdError, OSError) as exc:
        return [f"error checking parents: {exc}"]
    for ancestor in ancestors:
        problems += [f"{ancestor}: {p}" for p in _check_one(ancestor, now)]
    return problems


def _check_one(path: str, now: int | None) -> list[str]:
    now = now_vhd() if now is None else now
    try:
        st = os.stat(path)
    except OSError as exc:
        return [f"cannot stat {path}: {exc.strerror}"]
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        return [f"{path} is not a regular file or block device"]
    try:
        with open(path, "rb") as f:
            return _check_file(path, f.fileno(), now)
    except OSError as exc:
        return [f"error reading {path}: {exc.strerror}"]


def _check_file(path: str, fd: int, now: int) -> list[str]:
    size = os.lseek(fd, 0, os.SEEK_END)
    if size < FOOTER_SIZE - 1:
        return ["primary footer invalid: invalid cookie"]
    tail = FOOTER_SIZE - 1 if size % SECTOR == FOOTER_SIZE - 1 else FOOTER_SIZE
    primary = Footer.unpack(os.pread(fd, tail, size - tail))
    problem = _check_footers(fd, primary, now)
    if problem or primary.disk_type == DISK_FIXED:
        return [problem] if problem else []
    header = Header.unpack(os.pread(fd, HEADER_SIZE, primary.data_offset))
    problem = _check_header(primary, header, size, now)
    if problem:
        return [problem]
    try:
        image = VhdImage(path, check_blocks=False)
    except VhdError as exc:
        return [exc.message]
    with image:
        problem = _check_bat(image, size) or _check_batmap(image, fd, size)
        if problem is None and image.differencing:
            problem = _check_locators(image, size)
    return [problem] if problem else []


def _check_header(footer: Footer, header: Header, size: int, now: int) -> str | None:
    msg = header.problems(size)
    if msg:
        return f"header is invalid: {msg}"
    msg = _check_parent_fields(footer, header, now)
    if msg:
        return f"differencing header is invalid: {msg}"
    if header.block_size != BLOCK_SIZE:
        return f"header is invalid: unsupported block size {header.block_size}"
    return None


def _check_footers(fd: int, primary: Footer, now: int) -> str | None:
    msg = primary.problems(now=now)
    if msg:
        return f"primary footer invalid: {msg}"
    if primary.disk_type == DISK_FIXED:
        return None
    backup = Footer.unpack(os.pread(fd, FOOTER_SIZE, 0))
    msg = backup.problems(now=now)
    if msg:
        return f"backup footer invalid: {msg}"
    if backup.pack() != primary.pack():
        return "primary and backup footers do not match"
    return None


def _check_parent_fields(footer: Footer, header: Header, now: int) -> str | None:
    if footer.disk_type == DISK_DIFFERENCING:

        def undecodable() -> bool:
            try:
                header.parent_name  # noqa: B018 - decoding it is the test
            except UnicodeDecodeError:
                return True
            return False

        return first_broken(
            (
                (
                    lambda: header.parent_timestamp > now + TIMESTAMP_SLACK,
                    "parent creation time in future",
                ),
                (undecodable, "invalid parent name"),
            )
        )
    return first_broken(
        (
            (lambda: any(header.parent_name_raw), "invalid non-null parent name"),
            (
                lambda: any(loc.pack() != bytes(24) for loc in header.locators),
                "invalid non-null parent locators",
            ),
            (lambda: header.parent_uuid != bytes(16), "invalid non-null parent uuid"),
            (lambda: header.parent_timestamp != 0, "invalid non-zero parent timestamp"),
        )
    )


def _check_bat(image: VhdImage, size: int) -> str | None:
    if size % SECTOR:
        if size % SECTOR != SECTOR - 1:
            return f"invalid file size: {size:#x}"
        size += 1
    eoh = image.metadata_end() // SECTOR
    eof = (size - FOOTER_SIZE) // SECTOR
    span = SECTORS_PER_BLOCK + BITMAP_SECTORS
    blocks = sorted((e, b) for b, e in enumerate(image.bat) if e != BAT_UNUSED)
    for e, b in blocks:
        if e < eoh:
            return f"block {b} (offset {e:#x}) clobbers headers"
        if e + span > eof:
            return f"block {b} (offset {e:#x}) clobbers footer"
    for (e1, b1), (e2, b2) in itertools.pairwise(blocks):
        if e2 < e1 + span:
            return f"block {b2} (offset {e2:#x}) clobbers block {b1} (offset {e1:#x})"
    return None


def _check_batmap(image: VhdImage, fd: int, size: int) -> str | None:
    footer = image.footer
    if footer.creator_app != CREATOR_APP or footer.creator_version < 0x00010002:
        return None
    header = image.header
    assert header is not None
    at = header.table_offset + pad_sectors(4 * header.max_entries)
    bh = BatmapHeader.unpack(os.pread(fd, SECTOR, at))
    data = os.pread(fd, bh.size * SECTOR, bh.offset) if bh.cookie == BATMAP_COOKIE else b""
    msg = first_broken(
        (
            (lambda: bh.cookie != BATMAP_COOKIE, "invalid cookie"),
            (lambda: bh.version > BATMAP_VERSION, "unsupported batmap version"),
            (lambda: batmap_checksum(data) != bh.checksum, "invalid checksum"),
            (lambda: not bh.size, "invalid size zero"),
            (lambda: not bh.offset or bh.offset % SECTOR != 0, "invalid batmap offset"),
            (lambda: bh.offset + bh.size * SECTOR > size - FOOTER_SIZE, "invalid batmap size"),
        )
    )
    if msg:
        return f"batmap is invalid: {msg}"
    for b, entry in enumerate(image.bat):
        if data[b >> 3] & (0x80 >> (b & 7)) and entry == BAT_UNUSED:
            return f"batmap shows unallocated block {b} full"
    return None


def _check_locator_entry(loc: Locator, size: int) -> str | None:
    if loc.code == PLAT_NONE:
        return "non-zero locator" if loc.pack() != bytes(24) else None
    return first_broken(
        (
            (lambda: loc.code not in PLATFORM_CODES, "invalid platform code"),
            (lambda: not loc.offset, "invalid data offset"),
            (lambda: not loc.space, "invalid data space"),
            (lambda: not loc.length, "invalid data length"),
            (lambda: loc.offset + loc.space_bytes > size - FOOTER_SIZE, "invalid size"),
            (lambda: loc.reserved != 0, "invalid reserved bits"),
        )
    )


def _check_locators(image: VhdImage, size: int) -> str | None:
    header = image.header
    assert header is not None
    try:
        pname = header.parent_name
    except UnicodeDecodeError:
        return "error decoding parent name"
    seen: set[int] = set()
    for i, loc in enumerate(header.locators):
        msg = _check_locator_entry(loc, size)
        if msg:
            return f"invalid parent locator {i}: {msg}"
        if loc.code == PLAT_NONE:
            continue
        if loc.code in seen:
            return f"duplicate platform code in locator {i}: {loc.code:#x}"
        seen.add(loc.code)
        if loc.code in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU):
            msg = _check_locator_target(image, i, pname)
            if msg:
                return msg
    if not any(os.path.exists(c) for c in parent_candidates(image)):
        return f"could not find parent {pname}"
    return None


def _check_locator_target(image: VhdImage, i: int, pname: str) -> str | None:
    header = image.header
    assert header is not None
    text = read_locator(image, i)
    if text is None:
        return f"error reading parent locator {i}"
    name = os.path.basename(text)
    if name != pname:
        return f"parent locator {i} name ({name}) does not match header name ({pname})"
    child_dir = os.path.dirname(os.path.realpath(image.path))
    where = text if os.path.isabs(text) else os.path.normpath(os.path.join(child_dir, text))
    if not os.access(where, os.R_OK):
        if header.locators[i].code == PLAT_MACX:
            return f"parent locator {i} points to missing file {text} (resolved to {where})"
        return None
    return None if header.raw_parent else _check_parent_uuid(header, where)


def _check_parent_uuid(header: Header, where: str) -> str | None:
    try:
        # blktap opens the parent without checking its footer checksum (that is the parent's
        # own check's finding)
        with VhdImage(where, ignore_footer_checksum=True) as parent:
            same = parent.footer.uuid == header.parent_uuid
    except (VhdError, OSError):
        return f"invalid parent {where}: error opening parent"
    return None if same else f"invalid parent {where}: invalid parent uuid"


def describe(error: VhdError | OSError) -> str:
    """One line for a failing file operation."""
    if isinstance(error, VhdError):
        return str(error)
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


__all__ = [
    "Query",
    "SavedMetadata",
    "check",
    "coalesce",
    "create_dynamic",
    "describe",
    "locator_data",
    "query",
    "read_metadata",
    "relink_problems",
    "repair",
    "restore_metadata",
    "save_metadata",
    "set_hidden",
    "set_parent",
    "snapshot",
    "snapshot_target",
]
