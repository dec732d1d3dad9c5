"""One VHD file: its metadata in memory (footer, header, BAT, batmap) and sector I/O.

Standard library only. Reading never writes. Blocks are streamed: the BAT (4 bytes a block)
is the only per-disk table kept in memory; sector bitmaps are read on demand into a small
cache, so the memory used does not grow with the disk.

**Crash safety.** Every change to the file is ordered so that an interruption between any two
writes leaves a VHD that opens and reads back every write that had returned:

* a new block: its bitmap and data go past the end of the data, then the footer moves to the
  new end, then (after an ``fsync``) the BAT entry is written, so the block only becomes part of
  the disk once it is complete. Until the footer has moved, the footer at the end may be
  overwritten; readers then use the copy at offset 0, and the next writable open puts the
  footer back (what ``vhd-util repair`` does);
* a write into an allocated block: the data, then the bitmap sector that makes it visible;
* a batmap change: its header and map in one write (the checksum covers the map);
* a footer change (``hidden``): the footer at the end, then the copy at offset 0, last;
* a new parent (relink): the new locator data in sectors the header does not use, then
  the header, in one write (:func:`snapcore_vhd.ops.set_parent`).

Tests interrupt these writes through the ``fault`` callback, called with a label before each.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from snapcore_vhd.errors import CorruptVhdError, NotVhdError, UnsupportedVhdError
from snapcore_vhd.format import (
    BAT_UNUSED,
    BATMAP_COOKIE,
    BITMAP_BYTES,
    BITMAP_SECTORS,
    BLOCK_SIZE,
    CREATOR_APP,
    DISK_DIFFERENCING,
    DISK_FIXED,
    DISK_TYPE_NAMES,
    FEATURE_RESERVED,
    FEATURE_TEMPORARY,
    FILE_FORMAT_VERSION,
    FOOTER_SIZE,
    HEADER_COOKIE,
    HEADER_SIZE,
    SECTORS_PER_BLOCK,
    BatmapHeader,
    Footer,
    Header,
    batmap_checksum,
    first_block_sector,
    pad_sectors,
)
from snapcore_vhd.names import FOOTER_COOKIE, SECTOR

#: Called with a label before each write, fsync or truncate (tests inject crashes with it).
Fault = Callable[[str], None]

#: Sector bitmaps kept in memory per open file (512 bytes each: 2 MiB of cache at most).
BITMAP_CACHE: Final = 4096
_FULL: Final = b"\xff" * BITMAP_BYTES
_EMPTY: Final = bytes(BITMAP_BYTES)
_RUNS: Final = re.compile(r"1+|0+")


def _no_fault(label: str) -> None:
    del label


def bit_runs(bitmap: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """Split sectors ``[start, end)`` of a block into runs by their bitmap bit (MSB first):
    ``(first, past_last, present)`` triples, in order."""
    if bitmap == _FULL:
        return [(start, end, True)]
    if bitmap == _EMPTY:
        return [(start, end, False)]
    value = int.from_bytes(bitmap, "big") >> (SECTORS_PER_BLOCK - end)
    width = end - start
    bits = format(value & ((1 << width) - 1), f"0{width}b")
    return [(start + m.start(), start + m.end(), m.group()[0] == "1") for m in _RUNS.finditer(bits)]


def set_bits(bitmap: bytearray, start: int, end: int) -> None:
    """Set the bits of sectors ``[start, end)`` (MSB first)."""
    i = start
    while i < end and i % 8:
        bitmap[i >> 3] |= 0x80 >> (i & 7)
        i += 1
    whole = (end - i) // 8
    if whole:
        bitmap[i >> 3 : (i >> 3) + whole] = b"\xff" * whole
        i += whole * 8
    while i < end:
        bitmap[i >> 3] |= 0x80 >> (i & 7)
        i += 1


class VhdImage:
    """An open VHD file (fixed, dynamic or differencing).

    :param path: the file.
    :param writable: open it for writing; a writable open also repairs a footer that an
        interrupted write left missing at the end or different from the copy at offset 0.
    :param fault: called with a label before each write (crash tests).
    :param check_blocks: refuse blocks that overlap the metadata or run past the end (off
        only for :func:`snapcore_vhd.ops.check`, which reports them in its own words).
    :param headers_only: read the footer and header only, not the BAT (to tell a file's
        parent cheaply); such an image cannot read or write data.
    :param ignore_footer_checksum: accept a footer whose checksum is wrong (read-only opens;
        what blktap's ``vhd-util query`` does).
    :raises NotVhdError, CorruptVhdError, UnsupportedVhdError: the file cannot be used; nothing
        is written then.
    :raises OSError: the file cannot be opened or read.
    """

    def __init__(
        self,
        path: str,
        *,
        writable: bool = False,
        fault: Fault | None = None,
        check_blocks: bool = True,
        headers_only: bool = False,
        ignore_footer_checksum: bool = False,
    ):
        self.path = path
        self._ignore_footer_checksum = ignore_footer_checksum and not writable
        self._check_blocks = check_blocks or writable
        self._headers_only = headers_only and not writable
        self.writable = writable
        self._fault = fault or _no_fault
        self._bitmaps: OrderedDict[int, bytes] = OrderedDict()
        self.header: Header | None = None
        self.batmap_header: BatmapHeader | None = None
        self.batmap: bytearray | None = None
        self.bat: array[int] = array("I")
        #: The footer at the end was missing or damaged; the copy at offset 0 was used.
        self.footer_from_copy = False
        #: The copy at offset 0 differs from the footer at the end.
        self.copy_differs = False
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        self.fd = os.open(path, flags)
        try:
            self._load()
            if writable:
                self._repair_footer()
        except BaseException:
            os.close(self.fd)
            raise

    # -- loading --------------------------------------------------------------------------

    def _read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise CorruptVhdError(
                self.path, f"file ends at {self.file_size()} bytes, before offset {offset + size}"
            )
        return data

    def file_size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)

    def _load(self) -> None:
        mode = os.fstat(self.fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise NotVhdError(self.path, "not a regular file or block device")
        size = self.file_size()
        if size < FOOTER_SIZE - 1:
            raise NotVhdError(self.path, f"{size} bytes is too small for a VHD")
        tail = FOOTER_SIZE - 1 if size % SECTOR == FOOTER_SIZE - 1 else FOOTER_SIZE
        primary = Footer.unpack(self._read(size - tail, tail))
        copy = Footer.unpack(self._read(0, FOOTER_SIZE)) if size >= 3 * SECTOR else None
        if primary.cookie == FOOTER_COOKIE:
            self._check_checksum(primary, "footer")
            footer = primary
        elif copy is not None and copy.cookie == FOOTER_COOKIE and copy.dynamic:
            self._check_checksum(copy, "footer copy at offset 0 (the footer at the end is gone)")
            footer = copy
            self.footer_from_copy = True
        else:
            raise NotVhdError(self.path, "no VHD footer ('conectix') at its end or start")
        if footer.disk_type not in DISK_TYPE_NAMES:
            raise UnsupportedVhdError(self.path, f"disk type {footer.disk_type} is not supported")
        if footer.version != FILE_FORMAT_VERSION:
            raise UnsupportedVhdError(self.path, f"file format version {footer.version:#x}")
        if footer.features & ~(FEATURE_TEMPORARY | FEATURE_RESERVED):
            raise UnsupportedVhdError(self.path, f"unknown feature bits {footer.features:#x}")
        self.footer = footer
        if footer.disk_type == DISK_FIXED:
            if size < footer.current_size + SECTOR - 1:
                raise CorruptVhdError(self.path, "fixed disk shorter than its size")
            self.end_of_data = footer.current_size
            return
        if not self.footer_from_copy:
            self.copy_differs = copy is None or copy.pack() != footer.pack()
        self._load_dynamic(size)

    def _check_checksum(self, footer: Footer, what: str) -> None:
        computed = footer.computed_checksum()
        if footer.checksum != computed and not self._ignore_footer_checksum:
            raise CorruptVhdError(
                self.path,
                f"{what} checksum is wrong (stored {footer.checksum:#010x}, "
                f"computed {computed:#010x})",
            )

    def _load_dynamic(self, size: int) -> None:
        header = self._load_header(size)
        self.header = header
        if self._headers_only:
            self.end_of_data = size - FOOTER_SIZE
            return
        bat = array("I")
        bat.frombytes(self._read(header.table_offset, 4 * header.max_entries))
        if sys.byteorder == "little":
            bat.byteswap()
        self.bat = bat
        self._load_batmap(size)
        self.end_of_data = self._scan_blocks(size)

    def _load_header(self, size: int) -> Header:
        footer = self.footer
        if footer.data_offset % SECTOR or footer.data_offset + HEADER_SIZE > size:
            raise CorruptVhdError(
                self.path, f"dynamic header offset {footer.data_offset} is invalid"
            )
        header = Header.unpack(self._read(footer.data_offset, HEADER_SIZE))
        if header.cookie != HEADER_COOKIE:
            raise CorruptVhdError(
                self.path, f"no dynamic header ('cxsparse') at offset {footer.data_offset}"
            )
        computed = header.computed_checksum()
        if header.checksum != computed:
            raise CorruptVhdError(
                self.path,
                f"dynamic header checksum is wrong (stored {header.checksum:#010x}, "
                f"computed {computed:#010x})",
            )
        if header.block_size != BLOCK_SIZE:
            raise UnsupportedVhdError(
                self.path,
                f"block size {header.block_size} is not supported (only {BLOCK_SIZE}, "
                "the size blktap writes)",
            )
        needed = -(-footer.current_size // BLOCK_SIZE)
        if header.max_entries < needed:
            raise CorruptVhdError(
                self.path,
                f"BAT has {header.max_entries} entries, {needed} needed for "
                f"{footer.current_size} bytes",
            )
        if header.table_offset % SECTOR or header.table_offset + 4 * header.max_entries > size:
            raise CorruptVhdError(self.path, f"BAT offset {header.table_offset} is invalid")
        return header

    def _scan_blocks(self, size: int) -> int:
        """The end of the data; with ``check_blocks``, refuse a block that overlaps the
        metadata or runs past the end of the file (tested in C-speed set operations first)."""
        metadata_end = self.metadata_end()
        used = set(self.bat)
        used.discard(BAT_UNUSED)
        if not used:
            return metadata_end
        span = (BITMAP_SECTORS + SECTORS_PER_BLOCK) * SECTOR
        end = max(metadata_end, max(used) * SECTOR + span)
        limit = size if self.footer_from_copy else size - FOOTER_SIZE + 1
        if self._check_blocks and (min(used) * SECTOR < metadata_end or end > limit):
            for b, entry in enumerate(self.bat):
                if entry == BAT_UNUSED:
                    continue
                if entry * SECTOR < metadata_end:
                    raise CorruptVhdError(
                        self.path, f"block {b} (sector {entry:#x}) overlaps the metadata"
                    )
                if entry * SECTOR + span > limit:
                    raise CorruptVhdError(
                        self.path, f"block {b} (sector {entry:#x}) runs past the end"
                    )
        return end

    def _load_batmap(self, size: int) -> None:
        header = self.header
        assert header is not None
        footer = self.footer
        if footer.creator_app != CREATOR_APP or footer.creator_version < 0x00010002:
            return
        at = header.table_offset + pad_sectors(4 * header.max_entries)
        if at + SECTOR > size:
            return
        bh = BatmapHeader.unpack(self._read(at, SECTOR))
        if bh.cookie != BATMAP_COOKIE:
            return
        if bh.keyhash_cookie:
            raise UnsupportedVhdError(
                self.path, "encrypted VHD (its batmap carries a key hash) is not supported"
            )
        if bh.offset % SECTOR or bh.offset + bh.size * SECTOR > size or not bh.size:
            raise CorruptVhdError(self.path, "batmap offset or size is invalid")
        data = bytearray(self._read(bh.offset, bh.size * SECTOR))
        if batmap_checksum(data) != bh.checksum:
            raise CorruptVhdError(self.path, "batmap checksum is wrong")
        self.batmap_header = bh
        self.batmap = data

    def headers_end(self) -> int:
        """The byte just past the header, BAT and batmap: where parent locators may start."""
        header = self.header
        assert header is not None
        end = self.footer.data_offset + HEADER_SIZE
        end = max(end, header.table_offset + pad_sectors(4 * header.max_entries))
        if self.batmap_header is not None:
            bh = self.batmap_header
            end = max(end, self._batmap_header_offset() + SECTOR, bh.offset + bh.size * SECTOR)
        return end

    def metadata_end(self) -> int:
        """The byte just past the header, BAT, batmap and parent locators."""
        header = self.header
        assert header is not None
        end = self.headers_end()
        if self.footer.disk_type == DISK_DIFFERENCING:
            for loc in header.locators:
                if loc.code:
                    end = max(end, loc.offset + loc.space_bytes)
        return end

    def first_block(self) -> int | None:
        """The byte offset of the lowest allocated block (its bitmap), or ``None``."""
        used = [e for e in self.bat if e != BAT_UNUSED]
        return min(used) * SECTOR if used else None

    # -- properties -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The virtual size in bytes."""
        return self.footer.current_size

    @property
    def disk_type(self) -> int:
        return self.footer.disk_type

    @property
    def hidden(self) -> bool:
        return bool(self.footer.hidden)

    @property
    def differencing(self) -> bool:
        return self.footer.disk_type == DISK_DIFFERENCING

    @property
    def physical_size(self) -> int:
        """Bytes used: the end of the data plus the footer (``vhd-util query -s``)."""
        return self.end_of_data + FOOTER_SIZE

    def allocated_blocks(self) -> int:
        return sum(1 for e in self.bat if e != BAT_UNUSED)

    def block_full(self, block: int) -> bool:
        """The batmap marks *block* as full (every sector present)."""
        if self.batmap is None:
            return False
        return bool(self.batmap[block >> 3] & (0x80 >> (block & 7)))

    def bitmap(self, block: int) -> bytes:
        """The sector bitmap of allocated *block* (all set when the batmap says it is full)."""
        cached = self._bitmaps.get(block)
        if cached is not None:
            self._bitmaps.move_to_end(block)
            return cached
        if self.block_full(block):
            value = _FULL
        else:
            value = self._read(self.bat[block] * SECTOR, BITMAP_BYTES)
        self._remember(block, value)
        return value

    def _remember(self, block: int, value: bytes) -> None:
        self._bitmaps[block] = value
        self._bitmaps.move_to_end(block)
        if len(self._bitmaps) > BITMAP_CACHE:
            self._bitmaps.popitem(last=False)

    # -- reading --------------------------------------------------------------------------

    def fill(
        self, block: int, runs: list[tuple[int, int]], buf: memoryview, origin: int
    ) -> list[tuple[int, int]]:
        """Read the sectors of *block* that this file holds, among the block-relative sector
        *runs*, into *buf* (whose first byte is disk sector *origin*); return the runs it does
        not hold, for the parent to fill. Sectors past this file's size read as zeros."""
        base = block * SECTORS_PER_BLOCK
        limit = self.size // SECTOR - base
        missing: list[tuple[int, int]] = []
        clipped: list[tuple[int, int]] = []
        for a, z in runs:
            if a >= limit:
                continue  # past our size: zeros, and the parent is not asked
            clipped.append((a, min(z, limit)))
        if self.footer.disk_type == DISK_FIXED:
            for a, z in clipped:
                self._pread_into(buf, (base + a - origin) * SECTOR, (base + a) * SECTOR, z - a)
            return []
        entry = self.bat[block]
        if entry == BAT_UNUSED:
            return clipped
        data_at = entry + BITMAP_SECTORS
        bitmap = self.bitmap(block)
        for a, z in clipped:
            for x, y, present in bit_runs(bitmap, a, z):
                if present:
                    self._pread_into(
                        buf, (base + x - origin) * SECTOR, (data_at + x) * SECTOR, y - x
                    )
                else:
                    missing.append((x, y))
        return missing

    def _pread_into(self, buf: memoryview, at: int, offset: int, sectors: int) -> None:
        view = buf[at : at + sectors * SECTOR]
        got = os.preadv(self.fd, [view], offset)
        if got != len(view):
            raise CorruptVhdError(self.path, f"short read at offset {offset}")

    # -- writing --------------------------------------------------------------------------

    def _pwrite(self, data: bytes | bytearray | memoryview, offset: int, label: str) -> None:
        self._fault(label)
        done = os.pwrite(self.fd, data, offset)
        if done != len(data):
            raise OSError(f"{self.path}: short write at offset {offset}")

    def _fsync(self, label: str) -> None:
        self._fault(label)
        os.fsync(self.fd)

    def _require_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only")

    def _repair_footer(self) -> None:
        """Put back a footer an interrupted write left missing or different from its copy."""
        if self.footer.disk_type == DISK_FIXED:
            return
        if self.footer_from_copy or self.file_size() != self.end_of_data + FOOTER_SIZE:
            self._fault("repair: truncate")
            os.ftruncate(self.fd, self.end_of_data)
            self._pwrite(self.footer.pack(), self.end_of_data, "repair: footer")
            self._fsync("repair: fsync")
            self.footer_from_copy = False
        if self.copy_differs:
            self._pwrite(self.footer.pack(), 0, "repair: footer copy")
            self._fsync("repair: fsync copy")
            self.copy_differs = False

    def write_sectors(self, sector: int, data: bytes | memoryview) -> None:
        """Write whole sectors at *sector*, allocating blocks and setting bitmap bits.

        :raises ValueError: when the data is not whole sectors or runs past the disk's end.
        """
        self._require_writable()
        view = memoryview(data).cast("B")
        if len(view) % SECTOR:
            raise ValueError("write_sectors takes whole sectors")
        count = len(view) // SECTOR
        if (sector + count) * SECTOR > self.size:
            raise ValueError(f"write past the end of the {self.size}-byte disk")
        if self.footer.disk_type == DISK_FIXED:
            self._pwrite(view, sector * SECTOR, "data")
            return
        done = 0
        while done < count:
            s = sector + done
            block, a = divmod(s, SECTORS_PER_BLOCK)
            z = min(SECTORS_PER_BLOCK, a + count - done)
            chunk = view[done * SECTOR : (done + z - a) * SECTOR]
            if self.bat[block] == BAT_UNUSED:
                self._allocate(block, a, z, chunk)
            else:
                self._write_allocated(block, a, z, chunk)
            done += z - a

    def _write_allocated(self, block: int, a: int, z: int, chunk: memoryview) -> None:
        entry = self.bat[block]
        self._pwrite(chunk, (entry + BITMAP_SECTORS + a) * SECTOR, "data")
        old = self.bitmap(block)
        if old == _FULL:
            return
        new = bytearray(old)
        set_bits(new, a, z)
        if new != old:
            self._pwrite(new, entry * SECTOR, "bitmap")
            self._remember(block, bytes(new))
            if new == _FULL:
                self._mark_full(block)

    def _allocate(self, block: int, a: int, z: int, chunk: memoryview) -> None:
        end = self.end_of_data
        if self.file_size() > end + FOOTER_SIZE:
            # Left by an interrupted allocation: cut it, so that the new block reads zeros.
            self._fault("allocate: truncate")
            os.ftruncate(self.fd, end + FOOTER_SIZE)
        k = first_block_sector(end)
        bitmap = bytearray(BITMAP_BYTES)
        set_bits(bitmap, a, z)
        if a == 0 and z == SECTORS_PER_BLOCK:
            self._pwrite(bytes(bitmap) + bytes(chunk), k * SECTOR, "allocate: block")
        else:
            self._pwrite(bitmap, k * SECTOR, "allocate: bitmap")
            self._pwrite(chunk, (k + BITMAP_SECTORS + a) * SECTOR, "allocate: data")
        new_end = (k + BITMAP_SECTORS + SECTORS_PER_BLOCK) * SECTOR
        self._pwrite(self.footer.pack(), new_end, "allocate: footer")
        self._fsync("allocate: fsync")
        header = self.header
        assert header is not None
        self._pwrite(struct.pack(">I", k), header.table_offset + 4 * block, "allocate: BAT")
        self.bat[block] = k
        self.end_of_data = new_end
        self._remember(block, bytes(bitmap))
        if bitmap == _FULL:
            self._mark_full(block)

    def _mark_full(self, block: int) -> None:
        if self.batmap is None or self.block_full(block):
            return
        bh = self.batmap_header
        assert bh is not None
        self.batmap[block >> 3] |= 0x80 >> (block & 7)
        new = replace(bh, checksum=batmap_checksum(self.batmap))
        upto = ((block >> 3) // SECTOR + 1) * SECTOR
        # Header and map are adjacent: one write keeps the checksum and the map consistent.
        if bh.offset == self._batmap_header_offset() + SECTOR:
            self._pwrite(new.pack() + bytes(self.batmap[:upto]), bh.offset - SECTOR, "batmap")
        else:
            self._pwrite(bytes(self.batmap[:upto]), bh.offset, "batmap: map")
            self._pwrite(new.pack(), self._batmap_header_offset(), "batmap: header")
        self.batmap_header = new

    def _batmap_header_offset(self) -> int:
        header = self.header
        assert header is not None
        return header.table_offset + pad_sectors(4 * header.max_entries)

    def write_footer(self, footer: Footer) -> None:
        """Replace the footer: at the end first, then (dynamic disks) the copy at offset 0."""
        self._require_writable()
        footer = footer.sealed()
        data = footer.pack()
        at = self.footer.current_size if self.footer.disk_type == DISK_FIXED else self.end_of_data
        self._pwrite(data, at, "footer")
        self._fsync("footer: fsync")
        if self.footer.dynamic:
            self._pwrite(data, 0, "footer copy")
            self._fsync("footer copy: fsync")
        self.footer = footer

    def write_header(self, header: Header) -> None:
        """Replace the dynamic header (one write)."""
        self._require_writable()
        self._pwrite(header.pack(), self.footer.data_offset, "header")
        self._fsync("header: fsync")
        self.header = Header.unpack(header.pack())

    def move_footer(self, end: int) -> None:
        """Write the footer at *end*, past the end of the data, so that metadata may be written
        where the footer was (the file grows; the old footer is left as dead bytes)."""
        self._require_writable()
        if end < self.end_of_data:
            raise ValueError(f"{self.path}: the footer cannot move into the data")
        self._pwrite(self.footer.pack(), end, "move footer")
        self._fsync("move footer: fsync")
        self.end_of_data = end

    def settle_footer(self) -> None:
        """After a metadata change: the end of the data computed again from the header and the
        blocks, and the footer put there if it is elsewhere (written first, then the file cut
        after it, so that a footer is at the end at every moment)."""
        self._require_writable()
        span = (BITMAP_SECTORS + SECTORS_PER_BLOCK) * SECTOR
        used = [e for e in self.bat if e != BAT_UNUSED]
        end = max([self.metadata_end()] + [e * SECTOR + span for e in used])
        self.end_of_data = end
        if self.file_size() != end + FOOTER_SIZE:
            self._pwrite(self.footer.pack(), end, "settle footer")
            self._fsync("settle footer: fsync")
            self._fault("settle footer: truncate")
            os.ftruncate(self.fd, end + FOOTER_SIZE)
            self._fsync("settle footer: fsync truncate")

    def write_raw(self, data: bytes, offset: int, label: str) -> None:
        """Write metadata bytes (locator data) at *offset*."""
        self._require_writable()
        self._pwrite(data, offset, label)

    def flush(self) -> None:
        """Make every write durable."""
        if self.writable:
            self._fsync("flush")

    def close(self) -> None:
        if self.fd >= 0:
            try:
                if self.writable:
                    os.fsync(self.fd)
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> VhdImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
