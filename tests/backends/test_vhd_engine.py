"""The native VHD engine (``snapcore_vhd``) against independent readers.

What the engine writes is read back by tools that share no code with it: qemu-img's ``vpc``
driver (``qemu-img info``, ``qemu-img compare`` against a raw copy; single-layer disks only,
since qemu ignores parents and bitmaps) and libvhdi (``vhdiinfo`` for metadata, ``vhdimount``
through FUSE for whole chains). libvhdi 20210425 misreads a sector bitmap byte that is not of
the form ``0b0..01..1`` (see docs/vhd.md), so chain data compared with vhdimount is written in
4 KiB-aligned 4 KiB multiples; unaligned writes are checked against an in-memory model only.
Files go to ``tmp_path``; each test is a few seconds at most.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import struct
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from snapcore_vhd import ops
from snapcore_vhd.chain import Chain
from snapcore_vhd.errors import ChainError, CorruptVhdError, NotVhdError, UnsupportedVhdError
from snapcore_vhd.format import (
    BAT_UNUSED,
    BATMAP_COOKIE,
    FOOTER_COOKIE,
    HEADER_COOKIE,
    PLAT_MACX,
    PLAT_W2KU,
    PLAT_W2RU,
    BatmapHeader,
    Footer,
    Header,
    chs,
    geometry_value,
)
from snapcore_vhd.image import VhdImage

MiB = 1024 * 1024
SIZE = 10 * MiB

needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
needs_libvhdi = pytest.mark.skipif(
    shutil.which("vhdiinfo") is None, reason="libvhdi-utils not installed (vhdiinfo, vhdimount)"
)


# -- independent readers ----------------------------------------------------------------------


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def qemu_info(path: Path) -> dict[str, object]:
    proc = run("qemu-img", "info", "-f", "vpc", "--output=json", str(path))
    assert proc.returncode == 0, proc.stderr
    info: dict[str, object] = json.loads(proc.stdout)
    return info


def qemu_same_as_raw(path: Path, raw: Path) -> bool:
    """``qemu-img compare`` of a single-layer VHD with a raw file (exit 0 = identical)."""
    proc = run("qemu-img", "compare", "-f", "vpc", "-F", "raw", str(path), str(raw))
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


def vhdiinfo(path: Path) -> dict[str, str]:
    """The ``Key : value`` lines of ``vhdiinfo``."""
    proc = run("vhdiinfo", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def fuse_usable() -> str | None:
    """Why vhdimount cannot be used here, or ``None`` when it can."""
    if shutil.which("vhdimount") is None:
        return "vhdimount is not installed (Debian libvhdi-utils)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible"
    return None


@contextlib.contextmanager
def vhdimount(path: Path, mountpoint: Path) -> Iterator[list[Path]]:
    """Mount the chain of *path* with vhdimount; yield ``vhdi1..vhdiN`` (vhdiN = the leaf)."""
    mountpoint.mkdir(exist_ok=True)
    proc = run("vhdimount", str(path), str(mountpoint))
    if proc.returncode != 0:
        pytest.skip(f"vhdimount failed (FUSE unusable?): {proc.stdout} {proc.stderr}")
    try:
        names = sorted(os.listdir(mountpoint), key=lambda n: int(n.removeprefix("vhdi")))
        yield [mountpoint / n for n in names]
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)


# -- helpers ---------------------------------------------------------------------------------


def write_model(chain: Chain, model: bytearray, offset: int, data: bytes) -> None:
    chain.write(offset, data)
    model[offset : offset + len(data)] = data


def random_writes(
    path: Path, model: bytearray, rnd: random.Random, count: int, *, aligned: bool
) -> None:
    with Chain(str(path), writable=True) as chain:
        for _ in range(count):
            if aligned:
                offset = rnd.randrange(0, len(model) // 4096) * 4096
                length = 4096 * rnd.randint(1, 3)
            else:
                offset = rnd.randrange(0, len(model) - 1)
                length = rnd.randint(1, 9000)
            length = min(length, len(model) - offset)
            write_model(chain, model, offset, rnd.randbytes(length))


def read_all(path: Path) -> bytes:
    with Chain(str(path)) as chain:
        return chain.read(0, chain.size)


def footer_of(path: Path, *, copy: bool = False) -> Footer:
    data = path.read_bytes()
    return Footer.unpack(data[:512] if copy else data[-512:])


def header_of(path: Path) -> Header:
    return Header.unpack(path.read_bytes()[512:1536])


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def rewrite_header(path: Path, header: Header) -> None:
    patch(path, 512, header.pack())


def rewrite_footers(path: Path, footer: Footer) -> None:
    data = footer.pack()
    patch(path, 0, data)
    patch(path, path.stat().st_size - 512, data)


# -- layout ----------------------------------------------------------------------------------


def test_dynamic_layout_is_blktaps(tmp_path: Path) -> None:
    """Offsets, fields and checksums of a fresh 10 MiB disk are those vhd-util create writes."""
    path = tmp_path / "base.vhd"
    assert ops.create_dynamic(str(path), SIZE - 1) == SIZE  # rounded up to 2 MiB
    data = path.read_bytes()
    footer = Footer.unpack(data[-512:])
    assert data[:512] == data[-512:], "the copy at offset 0 equals the footer"
    assert footer.cookie == FOOTER_COOKIE
    assert footer.creator_app == b"tap\0"
    assert footer.creator_version == 0x00010003
    assert footer.creator_host == 0
    assert footer.disk_type == 3
    assert footer.data_offset == 512
    assert footer.current_size == footer.original_size == SIZE
    assert footer.geometry == geometry_value(SIZE)
    assert footer.checksum == footer.computed_checksum()
    header = Header.unpack(data[512:1536])
    assert header.cookie == HEADER_COOKIE
    assert header.table_offset == 1536
    assert header.max_entries == 5
    assert header.block_size == 2 * MiB
    assert header.checksum == header.computed_checksum()
    assert struct.unpack(">5I", data[1536:1556]) == (BAT_UNUSED,) * 5
    batmap = BatmapHeader.unpack(data[2048:2560])
    assert batmap.cookie == BATMAP_COOKIE
    assert (batmap.offset, batmap.size, batmap.version) == (2560, 1, 0x00010002)
    assert batmap.checksum == 0xFFFFFFFF
    assert len(data) == 3072 + 512, "the footer follows the metadata"
    assert ops.check(str(path)) == []


def test_child_layout_and_first_block(tmp_path: Path) -> None:
    """A child's locators sit at 3072/3584/4096 as MacX, W2ku, W2ru relative paths; its first
    block's bitmap is at 7680 and its data starts on the 4 KiB boundary 8192."""
    base = tmp_path / "base.vhd"
    child = tmp_path / "child.vhd"
    ops.create_dynamic(str(base), SIZE)
    ops.snapshot(str(child), str(base))
    header = header_of(child)
    assert header.parent_uuid == footer_of(base).uuid
    assert header.parent_name == "base.vhd"
    assert header.parent_timestamp == int(base.stat().st_mtime) - 946684800
    locs = header.locators[:3]
    assert [loc.code for loc in locs] == [PLAT_MACX, PLAT_W2KU, PLAT_W2RU]
    assert [loc.offset for loc in locs] == [3072, 3584, 4096]
    assert all(loc.space == 512 for loc in locs)
    data = child.read_bytes()
    assert data[3072 : 3072 + locs[0].length] == b"file://./base.vhd"
    assert data[3584 : 3584 + locs[1].length] == ".\\base.vhd".encode("utf-16-le")
    assert data[4096 : 4096 + locs[2].length] == ".\\base.vhd".encode("utf-16-le")
    assert footer_of(child).disk_type == 4
    with Chain(str(child), writable=True) as chain:
        chain.write(0, b"A" * 512)
    with VhdImage(str(child)) as image:
        assert image.bat[0] * 512 == 7680
    data = child.read_bytes()
    assert data[7680] == 0x80, "bit of sector 0 set, MSB first"
    assert data[8192 : 8192 + 512] == b"A" * 512
    assert ops.check(str(child)) == []


@needs_qemu
@pytest.mark.parametrize("size", ["1M", "10M", "100M", "1G", "40G", "127G", "300G"])
def test_geometry_matches_qemu(tmp_path: Path, size: str) -> None:
    """chs() gives the geometry qemu-img writes (qemu rounds its sizes to whole CHS)."""
    path = tmp_path / "q.vhd"
    proc = run("qemu-img", "create", "-q", "-f", "vpc", str(path), size)
    assert proc.returncode == 0, proc.stderr
    footer = footer_of(path)
    g = footer.geometry
    assert chs(footer.current_size) == (g >> 16, (g >> 8) & 0xFF, g & 0xFF)


# -- single-layer data against qemu-img --------------------------------------------------------


@needs_qemu
def test_qemu_reads_what_the_engine_wrote(tmp_path: Path) -> None:
    """Random unaligned writes mirrored in a model; qemu-img sees the same bytes and size."""
    path = tmp_path / "d.vhd"
    raw = tmp_path / "d.raw"
    ops.create_dynamic(str(path), SIZE)
    model = bytearray(SIZE)
    random_writes(path, model, random.Random(7), 120, aligned=False)
    raw.write_bytes(model)
    assert read_all(path) == bytes(model)
    info = qemu_info(path)
    assert info["virtual-size"] == SIZE
    assert qemu_same_as_raw(path, raw)
    model[5] ^= 1
    raw.write_bytes(model)
    assert not qemu_same_as_raw(path, raw), "the comparison can fail"
    assert ops.check(str(path)) == []


@needs_qemu
@pytest.mark.parametrize("options", [["-o", "force_size=on"], []])
def test_engine_reads_what_qemu_wrote(tmp_path: Path, options: list[str]) -> None:
    """qemu-img convert of random data to vpc reads back identically through the engine."""
    raw = tmp_path / "src.raw"
    rnd = random.Random(3)
    data = bytearray(6 * MiB)
    for _ in range(40):
        at = rnd.randrange(0, len(data) - 70000)
        data[at : at + 65536] = rnd.randbytes(65536)
    raw.write_bytes(data)
    vhd = tmp_path / "q.vhd"
    proc = run("qemu-img", "convert", "-f", "raw", "-O", "vpc", *options, str(raw), str(vhd))
    assert proc.returncode == 0, proc.stderr
    with Chain(str(vhd)) as chain:
        got = chain.read(0, len(data))
        assert got == bytes(data)
        assert chain.read(len(data), chain.size - len(data)) == bytes(chain.size - len(data))


# -- metadata against vhdiinfo -----------------------------------------------------------------


@needs_libvhdi
def test_vhdiinfo_reads_the_metadata(tmp_path: Path) -> None:
    base = tmp_path / "base.vhd"
    child = tmp_path / "child.vhd"
    ops.create_dynamic(str(base), SIZE)
    ops.snapshot(str(child), str(base))
    info = vhdiinfo(base)
    assert info["Disk type"] == "Dynamic"
    assert info["Media size"].endswith(f"({SIZE} bytes)")
    assert info["Identifier"] == footer_of(base).uuid_str
    info = vhdiinfo(child)
    assert info["Disk type"] == "Differential"
    assert info["Identifier"] == footer_of(child).uuid_str
    assert info["Parent identifier"] == footer_of(base).uuid_str
    assert info["Parent filename"] == "base.vhd"


# -- chains against vhdimount ------------------------------------------------------------------


def build_chain(tmp_path: Path, depth: int, seed: int, *, aligned: bool) -> tuple[Path, bytes]:
    """base.vhd <- s1.vhd <- ... with random writes at every level; the leaf and its data."""
    rnd = random.Random(seed)
    model = bytearray(SIZE)
    path = tmp_path / "base.vhd"
    ops.create_dynamic(str(path), SIZE)
    random_writes(path, model, rnd, 30, aligned=aligned)
    for level in range(1, depth):
        child = tmp_path / f"s{level}.vhd"
        ops.snapshot(str(child), str(path))
        path = child
        random_writes(path, model, rnd, 30, aligned=aligned)
    return path, bytes(model)


@needs_libvhdi
def test_vhdimount_reads_the_chain(tmp_path: Path) -> None:
    """base <- s1 <- s2 with 4 KiB-aligned writes: the engine, the model and vhdimount's leaf
    view agree, and so do the views of every level."""
    reason = fuse_usable()
    if reason:
        pytest.skip(reason)
    leaf, model = build_chain(tmp_path, 3, 11, aligned=True)
    levels = [read_all(tmp_path / n) for n in ("base.vhd", "s1.vhd", "s2.vhd")]
    assert levels[-1] == model
    with vhdimount(leaf, tmp_path / "mnt") as files:
        assert len(files) == 3
        for f, expected in zip(files, levels, strict=True):
            assert f.read_bytes() == expected, f"{f.name} differs"
    for name in ("base.vhd", "s1.vhd", "s2.vhd"):
        assert ops.check(str(tmp_path / name)) == []


def test_unaligned_chain_writes_match_the_model(tmp_path: Path) -> None:
    """Sub-sector and block-straddling writes through a 3-deep chain (model only: libvhdi
    misreads partial bitmap bytes)."""
    leaf, model = build_chain(tmp_path, 3, 12, aligned=False)
    assert read_all(leaf) == model
    with Chain(str(leaf), writable=True) as chain:
        buf = bytearray(model)
        write_model(chain, buf, 2 * MiB - 3, b"straddle")
        write_model(chain, buf, 7, b"x")
        assert chain.read(0, SIZE) == bytes(buf)
        assert chain.read(2 * MiB - 10, 20) == bytes(buf[2 * MiB - 10 : 2 * MiB + 10])


def test_zero_writes_allocate_in_a_child(tmp_path: Path) -> None:
    """Writing zeros into a child hides the parent's data (the write still allocates)."""
    base = tmp_path / "base.vhd"
    ops.create_dynamic(str(base), SIZE)
    with Chain(str(base), writable=True) as chain:
        chain.write(0, b"\xaa" * 8192)
    child = tmp_path / "child.vhd"
    ops.snapshot(str(child), str(base))
    with Chain(str(child), writable=True) as chain:
        chain.write(512, bytes(1024))
        assert chain.read(0, 2048) == b"\xaa" * 512 + bytes(1024) + b"\xaa" * 512


# -- coalesce ----------------------------------------------------------------------------------


@needs_qemu
def test_coalesce_into_base_matches_the_child_view(tmp_path: Path) -> None:
    """After coalescing s1 into base, base alone equals s1's former view (qemu-img compare),
    s1 still reads the same, and every file checks clean."""
    leaf, model = build_chain(tmp_path, 2, 21, aligned=False)
    base = tmp_path / "base.vhd"
    sectors = ops.coalesce(str(leaf))
    assert sectors > 0
    raw = tmp_path / "view.raw"
    raw.write_bytes(model)
    assert qemu_same_as_raw(base, raw)
    assert read_all(base) == model
    assert read_all(leaf) == model
    assert ops.check(str(base)) == []
    assert ops.check(str(leaf)) == []


@needs_libvhdi
def test_coalesce_middle_and_relink(tmp_path: Path) -> None:
    """base <- s1 <- s2: coalesce s2 into s1 then relink is not needed; coalesce s1 into base,
    relink s2 to base, and the leaf view (engine and vhdimount) is unchanged."""
    reason = fuse_usable()
    leaf, model = build_chain(tmp_path, 3, 31, aligned=True)
    base, s1 = tmp_path / "base.vhd", tmp_path / "s1.vhd"
    s1_view = read_all(s1)
    ops.coalesce(str(s1))
    assert read_all(base) == s1_view
    ops.set_parent(str(leaf), str(base))
    s1.unlink()
    assert read_all(leaf) == model
    assert header_of(leaf).parent_uuid == footer_of(base).uuid
    assert ops.check(str(leaf), parents=True) == []
    if reason is None:
        with vhdimount(leaf, tmp_path / "mnt") as files:
            assert len(files) == 2
            assert files[-1].read_bytes() == model


def test_coalesce_refuses_a_dynamic_disk(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), SIZE)
    before = path.read_bytes()
    with pytest.raises(UnsupportedVhdError, match="non-differencing"):
        ops.coalesce(str(path))
    assert path.read_bytes() == before


def test_snapshot_target_skips_empty_parents(tmp_path: Path) -> None:
    """vhd-util snapshot's default: an empty differencing parent is skipped."""
    base = tmp_path / "base.vhd"
    ops.create_dynamic(str(base), SIZE)
    ops.snapshot(str(tmp_path / "e.vhd"), str(base))
    assert ops.snapshot_target(str(tmp_path / "e.vhd")) == str(base)
    with Chain(str(tmp_path / "e.vhd"), writable=True) as chain:
        chain.write(0, b"x" * 512)
    assert ops.snapshot_target(str(tmp_path / "e.vhd")) == str(tmp_path / "e.vhd")


# -- query, hidden, check ----------------------------------------------------------------------


def test_query_and_hidden(tmp_path: Path) -> None:
    leaf, _ = build_chain(tmp_path, 3, 41, aligned=True)
    q = ops.query(str(leaf))
    assert q.virtual_size == SIZE
    assert q.depth == 3
    assert q.parent == str(tmp_path / "s1.vhd")
    assert q.physical_size == leaf.stat().st_size
    assert not q.hidden
    ops.set_hidden(str(tmp_path / "s1.vhd"), True)
    assert ops.query(str(tmp_path / "s1.vhd")).hidden
    assert footer_of(tmp_path / "s1.vhd", copy=True).hidden == 1
    assert read_all(leaf) == read_all(leaf)
    assert ops.check(str(tmp_path / "s1.vhd")) == []


@needs_qemu
def test_check_names_the_damage(tmp_path: Path) -> None:
    """A flipped footer byte, a BAT entry into the metadata, a wrong parent UUID, a missing
    footer copy: check() says what vhd-util check says, and opening refuses them."""
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), SIZE)
    with Chain(str(path), writable=True) as chain:
        chain.write(0, b"z" * 4096)
    good = path.read_bytes()
    size = len(good)

    patch(path, size - 512 + 40, b"\x01")
    assert ops.check(str(path)) == ["primary footer invalid: invalid checksum"]
    with pytest.raises(CorruptVhdError, match="footer checksum is wrong"):
        VhdImage(str(path))

    path.write_bytes(good)
    patch(path, 40, b"\x01")
    assert ops.check(str(path)) == ["backup footer invalid: invalid checksum"]
    proc = run("qemu-img", "info", "-f", "vpc", str(path))
    assert "Incorrect header checksum" in proc.stderr

    path.write_bytes(good)
    patch(path, 1536, struct.pack(">I", 2))
    assert ops.check(str(path)) == ["block 0 (offset 0x2) clobbers headers"]
    with pytest.raises(CorruptVhdError, match=r"block 0 .* overlaps the metadata"):
        VhdImage(str(path))

    path.write_bytes(good)
    patch(path, 1536, struct.pack(">I", (size // 512)))
    assert ops.check(str(path)) == [f"block 0 (offset {size // 512:#x}) clobbers footer"]


# -- bad input: clear errors, nothing written ----------------------------------------------------


def unchanged(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


def test_not_a_vhd(tmp_path: Path) -> None:
    path = tmp_path / "x.vhd"
    path.write_bytes(b"not a disk" * 1000)
    with pytest.raises(NotVhdError, match="no VHD footer"):
        VhdImage(str(path), writable=True)
    with pytest.raises(NotVhdError):
        ops.snapshot(str(tmp_path / "c.vhd"), str(path))
    assert not (tmp_path / "c.vhd").exists()
    assert path.read_bytes() == b"not a disk" * 1000
    assert ops.check(str(path)) == ["primary footer invalid: invalid cookie"]


def test_bad_header_checksum(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), SIZE)
    patch(path, 512 + 30, b"\x07")
    before = unchanged(path)
    with pytest.raises(CorruptVhdError, match="dynamic header checksum is wrong"):
        VhdImage(str(path), writable=True)
    assert unchanged(path) == before


def test_unsupported_block_size_and_encryption(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), SIZE)
    rewrite_header(path, replace(header_of(path), block_size=512 * 1024, max_entries=20))
    with pytest.raises(UnsupportedVhdError, match="block size 524288 is not supported"):
        VhdImage(str(path))
    path.unlink()
    ops.create_dynamic(str(path), SIZE)
    data = bytearray(path.read_bytes())
    bh = BatmapHeader.unpack(bytes(data[2048:2560]))
    data[2048:2560] = replace(bh, keyhash_cookie=1).pack()
    path.write_bytes(data)
    with pytest.raises(UnsupportedVhdError, match="encrypted"):
        VhdImage(str(path))


def test_broken_chains(tmp_path: Path) -> None:
    """A missing parent, a parent with another UUID, and a loop: each a ChainError, before any
    write, with the file named."""
    base = tmp_path / "base.vhd"
    child = tmp_path / "child.vhd"
    ops.create_dynamic(str(base), SIZE)
    ops.snapshot(str(child), str(base))
    before = unchanged(child)

    base.rename(tmp_path / "gone.vhd")
    with pytest.raises(ChainError, match=r"parent base\.vhd not found"):
        Chain(str(child), writable=True)
    assert unchanged(child) == before

    ops.create_dynamic(str(base), SIZE)  # same name, another UUID
    with pytest.raises(ChainError, match=r"has UUID .* but the child expects"):
        Chain(str(child), writable=True)
    assert unchanged(child) == before
    with pytest.raises(ChainError):
        ops.coalesce(str(child))
    assert ops.check(str(child))[0].endswith("invalid parent uuid")

    # a loop: a <- b <- a
    a, b = tmp_path / "a.vhd", tmp_path / "b.vhd"
    ops.create_dynamic(str(a), SIZE)
    ops.snapshot(str(b), str(a))
    a_footer = footer_of(a)
    ops.snapshot(str(tmp_path / "a2.vhd"), str(b))
    (tmp_path / "a2.vhd").replace(a)
    rewrite_footers(a, replace(footer_of(a), uuid=a_footer.uuid))
    with pytest.raises(ChainError, match="loop"):
        Chain(str(b))


def test_raw_parent(tmp_path: Path) -> None:
    """A child of a raw file (``snapshot -m``) reads through to it and coalesces into it."""
    raw = tmp_path / "base.raw"
    data = random.Random(5).randbytes(4 * MiB)
    raw.write_bytes(data)
    child = tmp_path / "c.vhd"
    ops.snapshot(str(child), str(raw), raw_parent=True)
    assert header_of(child).parent_uuid == bytes(16)
    with Chain(str(child), writable=True) as chain:
        assert chain.read(0, len(data)) == data
        chain.write(100, b"new")
    ops.coalesce(str(child))
    assert raw.read_bytes()[100:103] == b"new"


def test_uuid_strings_match(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), SIZE)
    assert str(uuid.UUID(bytes=footer_of(path).uuid)) == ops.query(str(path)).uuid
