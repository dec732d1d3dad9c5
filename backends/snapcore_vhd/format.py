"""The VHD on-disk structures, byte for byte: footer, dynamic header, parent locators, batmap.

Standard library only. Every integer is big-endian; offsets are bytes from the start of the
file except BAT entries, which count 512-byte sectors. The layout and the values written are
those of blktap's ``vhd-util`` (creator ``tap`` version 1.3, host 0, 2 MiB blocks, a batmap), so
that blktap, libvhdi and qemu's ``vpc`` driver open what this package writes.

Nothing here touches a file: :meth:`Footer.unpack` and friends parse bytes, :meth:`Footer.pack`
and friends build them with a fresh checksum, and ``problems()`` return ``vhd-util check``-style
messages for a structure that is not as blktap requires.
"""

from __future__ import annotations

import struct
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from snapcore_vhd.names import FOOTER_COOKIE, SECTOR

#: The only block size the engine reads or writes (blktap writes no other).
BLOCK_SIZE: Final = 2 * 1024 * 1024
SECTORS_PER_BLOCK: Final = BLOCK_SIZE // SECTOR
#: Sectors of a block's sector bitmap (4096 bits for a 2 MiB block = one sector).
BITMAP_SECTORS: Final = 1
BITMAP_BYTES: Final = SECTORS_PER_BLOCK // 8
#: Largest virtual size blktap and the XAPI storage manager accept (2040 GiB).
MAX_SIZE: Final = 2040 * 1024**3
#: Seconds between the Unix epoch and the VHD epoch, 2000-01-01 00:00:00 UTC.
VHD_EPOCH: Final = 946684800
#: ``vhd-util check`` accepts timestamps this far in the future (clock skew with NFS).
TIMESTAMP_SLACK: Final = 1800

HEADER_COOKIE: Final = b"cxsparse"
BATMAP_COOKIE: Final = b"tdbatmap"
FEATURE_TEMPORARY: Final = 0x1
FEATURE_RESERVED: Final = 0x2
FILE_FORMAT_VERSION: Final = 0x00010000
HEADER_VERSION: Final = 0x00010000
BATMAP_VERSION: Final = 0x00010002
CREATOR_APP: Final = b"tap\0"
CREATOR_VERSION: Final = 0x00010003
#: blktap writes 0 as the creator host OS.
CREATOR_HOST: Final = 0
NO_OFFSET: Final = 0xFFFFFFFFFFFFFFFF
BAT_UNUSED: Final = 0xFFFFFFFF

DISK_FIXED: Final = 2
DISK_DYNAMIC: Final = 3
DISK_DIFFERENCING: Final = 4
DISK_TYPE_NAMES: Final = {
    DISK_FIXED: "fixed",
    DISK_DYNAMIC: "dynamic",
    DISK_DIFFERENCING: "differencing",
}

PLAT_NONE: Final = 0
PLAT_MACX: Final = 0x4D616358  # b"MacX": file:// URL, UTF-8
PLAT_W2KU: Final = 0x57326B75  # b"W2ku": Windows path, UTF-16LE
PLAT_W2RU: Final = 0x57327275  # b"W2ru": Windows path relative to the child, UTF-16LE
PLAT_MAC: Final = 0x4D616320  # b"Mac ": deprecated alias blob
PLAT_WI2R: Final = 0x57693272  # deprecated
PLAT_WI2K: Final = 0x5769326B  # deprecated
PLATFORM_CODES: Final = frozenset(
    {PLAT_NONE, PLAT_MACX, PLAT_W2KU, PLAT_W2RU, PLAT_MAC, PLAT_WI2R, PLAT_WI2K}
)
#: The locators blktap writes for a parent, in this order.
LOCATOR_CODES: Final = (PLAT_MACX, PLAT_W2KU, PLAT_W2RU)

FOOTER_SIZE: Final = 512
HEADER_SIZE: Final = 1024
HEADER_OFFSET: Final = 512
#: blktap (and qemu) put the BAT right after the header.
TABLE_OFFSET: Final = HEADER_OFFSET + HEADER_SIZE
LOCATOR_COUNT: Final = 8

_FOOTER: Final = struct.Struct(">8sIIQI4sIIQQIII16sBB426s")
_HEADER: Final = struct.Struct(">8sQQIIII16sII512s192s256s")
_LOCATOR: Final = struct.Struct(">IIIIQ")
_BATMAP: Final = struct.Struct(">8sQIIIBB32s32s418s")
_FOOTER_CHECKSUM_AT: Final = 64
_HEADER_CHECKSUM_AT: Final = 36

assert _FOOTER.size == FOOTER_SIZE
assert _HEADER.size == HEADER_SIZE
assert _BATMAP.size == SECTOR


def checksum(data: bytes, skip: int) -> int:
    """The VHD checksum: the one's complement of the byte sum, the 4 bytes at *skip* read as 0."""
    total = sum(data) - sum(data[skip : skip + 4])
    return ~total & 0xFFFFFFFF


def pad_sectors(nbytes: int) -> int:
    """*nbytes* rounded up to whole sectors, at least one sector (blktap's padding rule)."""
    return max(SECTOR, -(-nbytes // SECTOR) * SECTOR)


def to_vhd_time(unix: float) -> int:
    """Unix seconds to VHD seconds (since 2000-01-01 UTC), clamped to the u32 range."""
    return max(0, min(0xFFFFFFFF, int(unix) - VHD_EPOCH))


def from_vhd_time(vhd: int) -> int:
    """VHD seconds to Unix seconds."""
    return vhd + VHD_EPOCH


def now_vhd() -> int:
    """The current time in VHD seconds."""
    return to_vhd_time(time.time())


def chs(size: int) -> tuple[int, int, int]:
    """The (cylinders, heads, sectors per track) geometry of a disk of *size* bytes, by the rule
    of the VHD specification that blktap, qemu and Hyper-V share."""
    secs = min(-(-size // SECTOR), 65535 * 16 * 255)
    if secs >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = secs // spt
    else:
        spt = 17
        cth = secs // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = secs // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = secs // spt
    return cth // heads, heads, spt


def geometry_value(size: int) -> int:
    """The geometry of *size* as the footer's u32 (cylinders u16, heads u8, sectors u8)."""
    c, h, s = chs(size)
    return (c << 16) | (h << 8) | s


def round_size(size: int) -> int:
    """*size* rounded up to a whole 2 MiB block, as ``vhd-util create`` does."""
    return -(-size // BLOCK_SIZE) * BLOCK_SIZE


def _nonzero(data: bytes) -> bool:
    return data.count(0) != len(data)


def first_broken(rules: Iterable[tuple[Callable[[], bool], str]]) -> str | None:
    """The message of the first rule whose test is true, or ``None``: validation written as a
    table, in the order ``vhd-util check`` applies it."""
    return next((message for broken, message in rules if broken()), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Footer:
    """The 512-byte hard disk footer (at the end of every VHD; copied at offset 0 of a dynamic
    or differencing one). ``hidden`` is blktap's byte 85, set on read-only base copies."""

    cookie: bytes = FOOTER_COOKIE
    features: int = FEATURE_RESERVED
    version: int = FILE_FORMAT_VERSION
    data_offset: int = HEADER_OFFSET
    timestamp: int = 0
    creator_app: bytes = CREATOR_APP
    creator_version: int = CREATOR_VERSION
    creator_host: int = CREATOR_HOST
    original_size: int = 0
    current_size: int = 0
    geometry: int = 0
    disk_type: int = DISK_DYNAMIC
    checksum: int = 0
    uuid: bytes = bytes(16)
    saved_state: int = 0
    hidden: int = 0
    reserved: bytes = bytes(426)

    @classmethod
    def unpack(cls, data: bytes) -> Footer:
        """Parse 512 bytes (a 511-byte short footer is padded with a zero byte)."""
        if len(data) == FOOTER_SIZE - 1:
            data = data + b"\0"
        f = _FOOTER.unpack(data)
        return cls(
            cookie=f[0],
            features=f[1],
            version=f[2],
            data_offset=f[3],
            timestamp=f[4],
            creator_app=f[5],
            creator_version=f[6],
            creator_host=f[7],
            original_size=f[8],
            current_size=f[9],
            geometry=f[10],
            disk_type=f[11],
            checksum=f[12],
            uuid=f[13],
            saved_state=f[14],
            hidden=f[15],
            reserved=f[16],
        )

    def _raw(self, checksum_value: int) -> bytes:
        return _FOOTER.pack(
            self.cookie,
            self.features,
            self.version,
            self.data_offset,
            self.timestamp,
            self.creator_app,
            self.creator_version,
            self.creator_host,
            self.original_size,
            self.current_size,
            self.geometry,
            self.disk_type,
            checksum_value,
            self.uuid,
            self.saved_state,
            self.hidden,
            self.reserved,
        )

    def computed_checksum(self) -> int:
        return checksum(self._raw(0), _FOOTER_CHECKSUM_AT)

    def sealed(self) -> Footer:
        """This footer with its checksum recomputed."""
        return replace(self, checksum=self.computed_checksum())

    def pack(self) -> bytes:
        """The 512 bytes, with a fresh checksum."""
        return self._raw(self.computed_checksum())

    @property
    def dynamic(self) -> bool:
        """A dynamic or differencing disk (a header, a BAT, blocks)."""
        return self.disk_type in (DISK_DYNAMIC, DISK_DIFFERENCING)

    @property
    def uuid_str(self) -> str:
        return str(uuidlib.UUID(bytes=self.uuid))

    def problems(self, *, now: int | None = None) -> str | None:
        """The first thing ``vhd-util check`` would reject in this footer, or ``None``."""
        limit = (now if now is not None else now_vhd()) + TIMESTAMP_SLACK
        rules: tuple[tuple[Callable[[], bool], str], ...] = (
            (lambda: self.cookie != FOOTER_COOKIE, "invalid cookie"),
            (lambda: self.checksum != self.computed_checksum(), "invalid checksum"),
            (lambda: not self.features & FEATURE_RESERVED, "invalid 'reserved' feature"),
            (
                lambda: bool(self.features & ~(FEATURE_TEMPORARY | FEATURE_RESERVED)),
                "invalid extra features",
            ),
            (lambda: self.version != FILE_FORMAT_VERSION, "invalid file format version"),
            (lambda: not self.dynamic and self.data_offset != NO_OFFSET, "invalid data offset"),
            (lambda: self.timestamp > limit, "creation time in future"),
            (
                lambda: self.creator_app[:3] == b"tap" and self.creator_version > CREATOR_VERSION,
                "unsupported tap creator version",
            ),
            (lambda: geometry_value(self.current_size) < self.geometry, "geometry too large"),
            (lambda: self.disk_type not in DISK_TYPE_NAMES, "invalid type"),
            (lambda: self.saved_state not in (0, 1), "invalid 'saved' state"),
            (lambda: self.hidden not in (0, 1), "invalid 'hidden' state"),
            (lambda: _nonzero(self.reserved), "invalid 'reserved' bits"),
            (lambda: self.uuid == bytes(16), "invalid null uuid"),
        )
        return first_broken(rules)


@dataclass(frozen=True, slots=True, kw_only=True)
class Locator:
    """One parent locator entry of the dynamic header (24 bytes).

    ``space`` is the room reserved for the data: blktap and Windows write it in bytes (a
    multiple of 512), the specification in sectors; :attr:`space_bytes` reads both.
    """

    code: int = PLAT_NONE
    space: int = 0
    length: int = 0
    reserved: int = 0
    offset: int = 0

    @property
    def space_bytes(self) -> int:
        if self.space < SECTOR:
            return self.space * SECTOR
        if self.space % SECTOR == 0:
            return self.space
        return 0

    def pack(self) -> bytes:
        return _LOCATOR.pack(self.code, self.space, self.length, self.reserved, self.offset)

    @classmethod
    def unpack(cls, data: bytes) -> Locator:
        code, space, length, reserved, offset = _LOCATOR.unpack(data)
        return cls(code=code, space=space, length=length, reserved=reserved, offset=offset)


def _empty_locators() -> tuple[Locator, ...]:
    return tuple(Locator() for _ in range(LOCATOR_COUNT))


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """The 1024-byte dynamic disk header (at the footer's ``data_offset``, 512 for blktap)."""

    cookie: bytes = HEADER_COOKIE
    data_offset: int = NO_OFFSET
    table_offset: int = TABLE_OFFSET
    version: int = HEADER_VERSION
    max_entries: int = 0
    block_size: int = BLOCK_SIZE
    checksum: int = 0
    parent_uuid: bytes = bytes(16)
    parent_timestamp: int = 0
    reserved1: int = 0
    parent_name_raw: bytes = bytes(512)
    locators: tuple[Locator, ...] = field(default_factory=_empty_locators)
    reserved2: bytes = bytes(256)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        h = _HEADER.unpack(data)
        locs = tuple(
            Locator.unpack(h[11][i * _LOCATOR.size : (i + 1) * _LOCATOR.size])
            for i in range(LOCATOR_COUNT)
        )
        return cls(
            cookie=h[0],
            data_offset=h[1],
            table_offset=h[2],
            version=h[3],
            max_entries=h[4],
            block_size=h[5],
            checksum=h[6],
            parent_uuid=h[7],
            parent_timestamp=h[8],
            reserved1=h[9],
            parent_name_raw=h[10],
            locators=locs,
            reserved2=h[12],
        )

    def _raw(self, checksum_value: int) -> bytes:
        return _HEADER.pack(
            self.cookie,
            self.data_offset,
            self.table_offset,
            self.version,
            self.max_entries,
            self.block_size,
            checksum_value,
            self.parent_uuid,
            self.parent_timestamp,
            self.reserved1,
            self.parent_name_raw,
            b"".join(loc.pack() for loc in self.locators),
            self.reserved2,
        )

    def computed_checksum(self) -> int:
        return checksum(self._raw(0), _HEADER_CHECKSUM_AT)

    def pack(self) -> bytes:
        """The 1024 bytes, with a fresh checksum."""
        return self._raw(self.computed_checksum())

    @property
    def parent_name(self) -> str:
        """The parent's name stored in the header (UTF-16BE; blktap stores a basename).

        :raises UnicodeDecodeError: when it does not decode.
        """
        raw = self.parent_name_raw
        end = len(raw)
        for i in range(0, len(raw) - 1, 2):
            if raw[i] == 0 and raw[i + 1] == 0:
                end = i
                break
        return raw[:end].decode("utf-16-be")

    @property
    def raw_parent(self) -> bool:
        """A differencing disk whose parent is a raw file (``vhd-util snapshot -m``)."""
        return self.parent_uuid == bytes(16)

    def problems(self, file_size: int) -> str | None:
        """The first thing ``vhd-util check`` would reject in this header, or ``None``."""
        bat_end = self.table_offset + self.max_entries * 4
        rules: tuple[tuple[Callable[[], bool], str], ...] = (
            (lambda: self.cookie != HEADER_COOKIE, "invalid cookie"),
            (lambda: self.checksum != self.computed_checksum(), "invalid checksum"),
            (lambda: self.version != HEADER_VERSION, "invalid header version"),
            (lambda: self.data_offset != NO_OFFSET, "invalid data offset"),
            (
                lambda: (
                    self.table_offset <= 0
                    or self.table_offset % SECTOR != 0
                    or bat_end > file_size - FOOTER_SIZE
                ),
                "invalid table offset",
            ),
            (
                lambda: self.block_size <= 0 or self.block_size & (self.block_size - 1) != 0,
                "invalid block size",
            ),
            (lambda: self.reserved1 != 0 or _nonzero(self.reserved2), "invalid reserved bits"),
            (
                lambda: any(loc.code not in PLATFORM_CODES for loc in self.locators),
                "invalid platform code",
            ),
        )
        return first_broken(rules)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatmapHeader:
    """blktap's batmap header (512 bytes, ``tdbatmap``): where the one-bit-per-block map of full
    blocks lives, its checksum, a marker byte and an optional key hash (encryption)."""

    cookie: bytes = BATMAP_COOKIE
    offset: int = 0
    size: int = 0  # sectors
    version: int = BATMAP_VERSION
    checksum: int = 0
    marker: int = 0
    keyhash_cookie: int = 0
    keyhash_nonce: bytes = bytes(32)
    keyhash: bytes = bytes(32)
    reserved: bytes = bytes(418)

    @classmethod
    def unpack(cls, data: bytes) -> BatmapHeader:
        b = _BATMAP.unpack(data)
        return cls(
            cookie=b[0],
            offset=b[1],
            size=b[2],
            version=b[3],
            checksum=b[4],
            marker=b[5],
            keyhash_cookie=b[6],
            keyhash_nonce=b[7],
            keyhash=b[8],
            reserved=b[9],
        )

    def pack(self) -> bytes:
        return _BATMAP.pack(
            self.cookie,
            self.offset,
            self.size,
            self.version,
            self.checksum,
            self.marker,
            self.keyhash_cookie,
            self.keyhash_nonce,
            self.keyhash,
            self.reserved,
        )


def batmap_checksum(data: bytes | bytearray) -> int:
    """The batmap checksum: the one's complement of the sum of the map's bytes."""
    return ~sum(data) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the metadata of a blktap dynamic or differencing disk of *n* blocks goes."""

    entries: int
    bat_offset: int
    bat_bytes: int
    batmap_header_offset: int
    batmap_offset: int
    batmap_bytes: int
    locator_offset: int

    @classmethod
    def for_entries(cls, entries: int) -> Layout:
        bat_bytes = pad_sectors(entries * 4)
        batmap_header = TABLE_OFFSET + bat_bytes
        batmap_bytes = pad_sectors(-(-entries // 8))
        return cls(
            entries=entries,
            bat_offset=TABLE_OFFSET,
            bat_bytes=bat_bytes,
            batmap_header_offset=batmap_header,
            batmap_offset=batmap_header + SECTOR,
            batmap_bytes=batmap_bytes,
            locator_offset=batmap_header + SECTOR + batmap_bytes,
        )


def first_block_sector(end_bytes: int) -> int:
    """The sector where a new block's bitmap goes when the data ends at *end_bytes*: the first
    sector ``k`` at or past the end with ``(k + 1) % 8 == 0``, so that the block's data starts on
    a 4 KiB boundary (blktap's rule)."""
    k = -(-end_bytes // SECTOR)
    return k + 7 - k % 8
