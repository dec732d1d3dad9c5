"""A VHD chain: a leaf and its parents, read and written as one disk.

Standard library only. Parents are found the way blktap finds them: each parent locator in
order (MacX, W2ku, W2ru, ...), a path used as given if it exists and otherwise relative to the
child's directory, then the parent name of the header in the child's directory. Every parent's
footer UUID must equal the UUID its child's header records, no file may appear twice, and the
chain may not be deeper than :data:`MAX_OPEN_DEPTH`.

Reads follow the VHD rules: a sector comes from the first layer, leaf first, whose BAT entry is
allocated and whose bitmap bit (or batmap "full" bit) is set; a layer's unset sectors come from
its parent; a dynamic or fixed base answers every sector (zeros where unallocated); sectors past
a layer's size read as zeros. Runs of sectors are resolved per block, so a read costs one
``pread`` per run per layer, and only the leaf is ever written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Final, Protocol

from snapcore_vhd.errors import ChainError, NotVhdError
from snapcore_vhd.format import (
    PLAT_MACX,
    PLAT_W2KU,
    PLAT_W2RU,
    SECTORS_PER_BLOCK,
    Footer,
)
from snapcore_vhd.image import Fault, VhdImage
from snapcore_vhd.names import FOOTER_COOKIE, SECTOR

#: Deepest chain the engine opens (a guard against loops through odd locators; the storage
#: backend applies XAPI's limit of 30 itself).
MAX_OPEN_DEPTH: Final = 256
#: Largest read or write handed to one layer at a time.
IO_CHUNK: Final = 8 * 1024 * 1024


class Layer(Protocol):
    """One level of a chain: a VHD file or a raw parent."""

    path: str

    @property
    def size(self) -> int: ...

    def fill(
        self, block: int, runs: list[tuple[int, int]], buf: memoryview, origin: int
    ) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


class RawLayer:
    """A raw file as the parent of a differencing VHD (``vhd-util snapshot -m``)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.lseek(self.fd, 0, os.SEEK_END)

    @property
    def size(self) -> int:
        return self._size

    def fill(
        self, block: int, runs: list[tuple[int, int]], buf: memoryview, origin: int
    ) -> list[tuple[int, int]]:
        base = block * SECTORS_PER_BLOCK
        for a, z in runs:
            start = (base + a) * SECTOR
            view = buf[(base + a - origin) * SECTOR : (base + z - origin) * SECTOR]
            os.preadv(self.fd, [view], start)  # past the end: the buffer keeps its zeros
        return []

    def close(self) -> None:
        os.close(self.fd)


def read_locator(image: VhdImage, index: int) -> str | None:
    """The path stored in parent locator *index*, decoded, with ``/`` separators; ``None`` when
    it is not a MacX, W2ku or W2ru locator or cannot be decoded."""
    header = image.header
    assert header is not None
    loc = header.locators[index]
    if loc.code not in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU) or not loc.length:
        return None
    raw = os.pread(image.fd, loc.length, loc.offset)
    try:
        if loc.code == PLAT_MACX:
            text = raw.decode("utf-8").rstrip("\0")
            text = text.removeprefix("file://")
        else:
            text = raw.decode("utf-16-le").rstrip("\0").replace("\\", "/")
    except UnicodeDecodeError:
        return None
    return text or None


def parent_candidates(image: VhdImage) -> list[str]:
    """Where blktap would look for the parent of *image*, in order."""
    header = image.header
    assert header is not None
    child_dir = os.path.dirname(os.path.realpath(image.path))
    out: list[str] = []
    for i in range(len(header.locators)):
        text = read_locator(image, i)
        if text is None:
            continue
        if os.path.isabs(text):
            out.append(text)
            out.append(os.path.join(child_dir, text.lstrip("/")))
        else:
            out.append(os.path.normpath(os.path.join(child_dir, text)))
    try:
        name = header.parent_name
    except UnicodeDecodeError:
        name = ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if name:
        out.append(os.path.join(child_dir, name))
    return out


def find_parent(image: VhdImage) -> str:
    """The parent file of differencing *image*, as blktap resolves it: the first candidate of
    :func:`parent_candidates` that exists. One refinement keeps a relink that was interrupted
    between its locator and header writes readable: a candidate whose footer UUID is the one
    the header records is preferred to one whose UUID is not.

    :raises ChainError: when no candidate exists.
    """
    header = image.header
    assert header is not None
    candidates = parent_candidates(image)
    existing = [path for path in dict.fromkeys(candidates) if os.path.exists(path)]
    if not header.raw_parent:
        for path in existing:
            if _uuid_of(path) == header.parent_uuid:
                return path
    if existing:
        return existing[0]
    try:
        name = header.parent_name or "(no name)"
    except UnicodeDecodeError:
        name = "(undecodable name)"
    looked = ", ".join(dict.fromkeys(candidates)) or "nowhere: it has no locator"
    raise ChainError(image.path, f"parent {name} not found (looked at {looked})")


def _uuid_of(path: str) -> bytes | None:
    """The footer UUID of VHD *path* (footer at the end, else its copy at offset 0), or
    ``None`` when it has none; reads two sectors at most."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < SECTOR:
                return None
            tail = SECTOR - 1 if size % SECTOR == SECTOR - 1 else SECTOR
            f.seek(size - tail)
            candidates = [f.read(tail)]
            f.seek(0)
            candidates.append(f.read(SECTOR))
    except OSError:
        return None
    for raw in candidates:
        footer = Footer.unpack(raw)
        if footer.cookie == FOOTER_COOKIE and footer.checksum == footer.computed_checksum():
            return footer.uuid
    return None


class Chain:
    """A leaf VHD and every parent, opened together.

    :param path: the leaf.
    :param writable: open the leaf for writing (parents are always read-only).
    :param fault: crash-test callback for the leaf's writes.
    :raises VhdError: a file is not a usable VHD, or the chain is broken.
    :raises OSError: a file cannot be opened.
    """

    def __init__(
        self,
        path: str,
        *,
        writable: bool = False,
        fault: Fault | None = None,
        max_depth: int = MAX_OPEN_DEPTH,
    ):
        self.layers: list[Layer] = []
        try:
            leaf = VhdImage(path, writable=writable, fault=fault)
            self.layers.append(leaf)
            self.leaf = leaf
            self._open_parents(leaf, max_depth)
        except BaseException:
            self.close()
            raise

    def _open_parents(self, leaf: VhdImage, max_depth: int) -> None:
        seen = {os.path.realpath(leaf.path)}
        child = leaf
        while child.differencing:
            header = child.header
            assert header is not None
            if len(self.layers) >= max_depth:
                raise ChainError(leaf.path, f"chain is deeper than {max_depth} files")
            path = find_parent(child)
            real = os.path.realpath(path)
            if real in seen:
                raise ChainError(child.path, f"parent {path} is already in the chain (a loop)")
            seen.add(real)
            if header.raw_parent:
                self.layers.append(RawLayer(path))
                return
            try:
                parent = VhdImage(path)
            except NotVhdError as exc:
                raise ChainError(child.path, f"parent {path} is not a VHD") from exc
            self.layers.append(parent)
            if parent.footer.uuid != header.parent_uuid:
                raise ChainError(
                    child.path,
                    f"parent {path} has UUID {parent.footer.uuid_str}, but the child expects "
                    f"{_uuid(header.parent_uuid)}",
                )
            child = parent

    @property
    def size(self) -> int:
        """The virtual size of the disk (the leaf's)."""
        return self.leaf.size

    @property
    def depth(self) -> int:
        """Files in the chain (1 for a disk without parent; a raw parent counts)."""
        return len(self.layers)

    def images(self) -> Iterator[VhdImage]:
        for layer in self.layers:
            if isinstance(layer, VhdImage):
                yield layer

    def read(self, offset: int, length: int) -> bytes:
        """*length* bytes of the disk at *offset*; past the end reads are cut short."""
        length = max(0, min(length, self.size - offset))
        if length <= 0:
            return b""
        first = offset // SECTOR
        last = -(-(offset + length) // SECTOR)
        buf = bytearray((last - first) * SECTOR)
        self.read_sectors_into(first, memoryview(buf))
        skip = offset - first * SECTOR
        return bytes(buf[skip : skip + length])

    def read_sectors_into(self, sector: int, buf: memoryview) -> None:
        """Fill *buf* (whole sectors, pre-zeroed) with the disk's sectors from *sector* on."""
        count = len(buf) // SECTOR
        done = 0
        while done < count:
            s = sector + done
            block, a = divmod(s, SECTORS_PER_BLOCK)
            z = min(SECTORS_PER_BLOCK, a + count - done)
            runs = [(a, z)]
            for layer in self.layers:
                runs = layer.fill(block, runs, buf, sector)
                if not runs:
                    break
            done += z - a

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write *data* at *offset* into the leaf; partial sectors are merged with the chain's
        current content first."""
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise ValueError(f"write past the end of the {self.size}-byte disk")
        if not len(view):
            return
        first = offset // SECTOR
        last = -(-(offset + len(view)) // SECTOR)
        head = offset - first * SECTOR
        if head == 0 and len(view) % SECTOR == 0:
            self._write_chunked(first, view)
            return
        buf = bytearray((last - first) * SECTOR)
        mv = memoryview(buf)
        self.read_sectors_into(first, mv[:SECTOR])
        if last - first > 1:
            self.read_sectors_into(last - 1, mv[len(buf) - SECTOR :])
        buf[head : head + len(view)] = view
        self._write_chunked(first, mv)

    def _write_chunked(self, sector: int, view: memoryview) -> None:
        step = IO_CHUNK
        for at in range(0, len(view), step):
            self.leaf.write_sectors(sector + at // SECTOR, view[at : at + step])

    def flush(self) -> None:
        self.leaf.flush()

    def close(self) -> None:
        while self.layers:
            self.layers.pop().close()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _uuid(raw: bytes) -> str:
    import uuid

    return str(uuid.UUID(bytes=raw))
