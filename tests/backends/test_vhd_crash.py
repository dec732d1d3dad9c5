"""Crash safety of the native VHD engine: every write, fsync and truncate of an operation is
interrupted in turn, and the files left behind must still open as a chain, read back every
write that had returned, hold for the interrupted write only old or new sectors (never
garbage), and check clean or with nothing worse than a footer that ``repair`` puts back.

The engine calls a ``fault`` callback with a label before each of those steps; raising from it
stops the operation exactly there, which is what a crash leaves on disk (the engine keeps no
write-back cache: every write is a ``pwrite`` on the file).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from snapcore_vhd import ops
from snapcore_vhd.chain import Chain
from snapcore_vhd.errors import VhdError

MiB = 1024 * 1024
SIZE = 8 * MiB
SECTOR = 512

#: What check() may report after a crash: a footer that ``repair`` rewrites.
REPAIRABLE = ("primary footer invalid:", "primary and backup footers do not match")


class Crash(Exception):
    """Stands for the machine stopping."""


def recorder(labels: list[str]) -> Callable[[str], None]:
    def fault(label: str) -> None:
        labels.append(label)

    return fault


def crash_at(n: int) -> Callable[[str], None]:
    count = [0]

    def fault(label: str) -> None:
        if count[0] == n:
            raise Crash(label)
        count[0] += 1

    return fault


def pattern(tag: int, length: int) -> bytes:
    """*length* bytes, each sector filled with its own non-zero byte."""
    sectors = -(-length // SECTOR)
    return b"".join(bytes([(tag + s) % 255 + 1]) * SECTOR for s in range(sectors))[:length]


def write(path: Path, offset: int, data: bytes, fault: Callable[[str], None] | None = None) -> None:
    with Chain(str(path), writable=True, fault=fault) as chain:
        chain.write(offset, data)


def read(path: Path) -> bytes:
    with Chain(str(path)) as chain:
        return chain.read(0, chain.size)


def assert_old_or_new(got: bytes, old: bytes, new: bytes, where: str) -> None:
    for s in range(0, len(got), SECTOR):
        sector = got[s : s + SECTOR]
        assert sector in (old[s : s + SECTOR], new[s : s + SECTOR]), f"{where}: sector {s // 512}"


def assert_repairable(path: Path) -> None:
    problems = ops.check(str(path))
    assert all(p.startswith(REPAIRABLE) for p in problems), problems
    before = read(path)
    ops.repair(str(path))
    assert ops.check(str(path)) == []
    assert read(path) == before, "repair changed the data"


# -- scenarios: (setup in a directory) -> (the file written, the operation, old, new) -----------


def _child_with_base(d: Path) -> tuple[Path, bytes]:
    base, child = d / "base.vhd", d / "child.vhd"
    ops.create_dynamic(str(base), SIZE)
    write(base, 0, pattern(10, SIZE))
    ops.snapshot(str(child), str(base))
    write(child, 0, pattern(20, 4096))  # acknowledged before the crash
    return child, read(child)


def new_block_partial(
    d: Path,
) -> tuple[Path, Callable[[Callable[[str], None] | None], None], bytes]:
    """A sub-block write that allocates a block of a differencing leaf."""
    child, _ = _child_with_base(d)
    return child, lambda f: write(child, 2 * MiB + 1000, pattern(30, 70000), f), b""


def new_block_full(d: Path) -> tuple[Path, Callable[[Callable[[str], None] | None], None], bytes]:
    """A whole-block write: block, footer, BAT, then the batmap's "full" bit."""
    child, _ = _child_with_base(d)
    return child, lambda f: write(child, 4 * MiB, pattern(40, 2 * MiB), f), b""


def allocated_block(d: Path) -> tuple[Path, Callable[[Callable[[str], None] | None], None], bytes]:
    """A write into an allocated block that sets more bitmap bits (and then fills it)."""
    child, _ = _child_with_base(d)
    return child, lambda f: write(child, 512 * 8, pattern(50, 2 * MiB - 512 * 8), f), b""


def dynamic_disk(d: Path) -> tuple[Path, Callable[[Callable[[str], None] | None], None], bytes]:
    """Writes into a dynamic disk (checked with qemu-img afterwards: unwritten sectors of new
    blocks must be zeros on disk, since qemu ignores the bitmaps)."""
    path = d / "dyn.vhd"
    ops.create_dynamic(str(path), SIZE)
    write(path, 3 * 512, pattern(60, 512))
    return path, lambda f: write(path, 6 * MiB + 3 * 512, pattern(70, 9000), f), b""


SCENARIOS: dict[str, Callable[[Path], tuple[Path, Callable[..., None], bytes]]] = {
    "new-block-partial": new_block_partial,
    "new-block-full": new_block_full,
    "allocated-block": allocated_block,
    "dynamic-disk": dynamic_disk,
}


def _points(name: str, tmp_path: Path) -> list[str]:
    d = tmp_path / "probe"
    d.mkdir()
    _path, op, _ = SCENARIOS[name](d)
    labels: list[str] = []
    op(recorder(labels))
    shutil.rmtree(d)
    return labels


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_interrupted_write_keeps_the_chain(name: str, tmp_path: Path) -> None:
    points = _points(name, tmp_path)
    assert len(points) >= 3, points
    for n, label in enumerate(points):
        d = tmp_path / f"crash{n}"
        d.mkdir()
        path, op, _ = SCENARIOS[name](d)
        old = read(path)
        reference = d / "reference"
        reference.mkdir()
        for f in d.glob("*.vhd"):
            shutil.copy2(f, reference / f.name)
        op(None)  # what the write makes when it is not interrupted
        new = read(path)
        for f in reference.glob("*.vhd"):
            shutil.copy2(f, d / f.name)
        assert read(path) == old
        with pytest.raises(Crash):
            op(crash_at(n))
        where = f"{name}, interrupted before {label!r} (step {n})"
        assert_old_or_new(read(path), old, new, where)
        assert_repairable(path)
        op(None)  # the write again, after the crash: it completes
        assert read(path) == new, where
        assert ops.check(str(path)) == []
        if name == "dynamic-disk" and shutil.which("qemu-img"):
            raw = d / "view.raw"
            raw.write_bytes(new)
            proc = subprocess.run(
                ["qemu-img", "compare", "-f", "vpc", "-F", "raw", str(path), str(raw)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert proc.returncode == 0, f"{where}: {proc.stdout}{proc.stderr}"


def test_interrupted_hidden_flag(tmp_path: Path) -> None:
    """set_hidden writes the footer at the end, then its copy: interrupted in between, the file
    opens with either value and only the footer copy needs repair."""
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), SIZE)
    write(path, 0, pattern(1, 8192))
    labels: list[str] = []
    probe = tmp_path / "probe.vhd"
    shutil.copy2(path, probe)
    ops.set_hidden(str(probe), True, fault=recorder(labels))
    data = read(path)
    for n in range(len(labels)):
        shutil.copy2(probe.with_name("d.vhd"), tmp_path / "x.vhd")
        target = tmp_path / "x.vhd"
        with pytest.raises(Crash):
            ops.set_hidden(str(target), True, fault=crash_at(n))
        assert read(target) == data
        assert_repairable(target)
        ops.set_hidden(str(target), True)
        assert ops.query(str(target)).hidden


def test_interrupted_relink(tmp_path: Path) -> None:
    """set_parent writes the new locators where the header does not point, then the header:
    interrupted anywhere, the leaf opens with its old or its new parent, reads the same and
    checks clean."""
    base, mid, leaf = tmp_path / "base.vhd", tmp_path / "mid.vhd", tmp_path / "leaf.vhd"
    ops.create_dynamic(str(base), SIZE)
    write(base, 0, pattern(1, MiB))
    ops.snapshot(str(mid), str(base))
    write(mid, 512, pattern(2, 3000))
    ops.snapshot(str(leaf), str(mid))
    write(leaf, 4096, pattern(3, 5000))
    view = read(leaf)
    ops.coalesce(str(mid))  # base now holds mid's data: the leaf may point at either
    saved = leaf.read_bytes()
    labels: list[str] = []
    ops.set_parent(str(leaf), str(base), fault=recorder(labels))
    assert len(labels) >= 2, labels
    for n in range(len(labels)):
        leaf.write_bytes(saved)
        with pytest.raises(Crash):
            ops.set_parent(str(leaf), str(base), fault=crash_at(n))
        assert read(leaf) == view, f"interrupted before {labels[n]!r}"
        assert ops.check(str(leaf)) == [], f"interrupted before {labels[n]!r}"
        ops.set_parent(str(leaf), str(base))
        assert ops.check(str(leaf)) == []
        assert read(leaf) == view


def test_interrupted_coalesce_keeps_the_child_view(tmp_path: Path) -> None:
    """Coalescing writes into the parent only sectors the child hides: interrupted anywhere,
    the child's view is intact and the coalesce can be run again to the end."""
    base, child = tmp_path / "base.vhd", tmp_path / "child.vhd"
    ops.create_dynamic(str(base), SIZE)
    write(base, 0, pattern(1, MiB))
    ops.snapshot(str(child), str(base))
    write(child, 1000, pattern(2, 3 * MiB))
    write(child, 7 * MiB, pattern(3, 4096))
    view = read(child)
    saved = {p: p.read_bytes() for p in (base, child)}
    labels: list[str] = []
    ops.coalesce(str(child), fault=recorder(labels))
    assert len(labels) >= 6, labels
    for n in range(len(labels)):
        for p, data in saved.items():
            p.write_bytes(data)
        with pytest.raises(Crash):
            ops.coalesce(str(child), fault=crash_at(n))
        assert read(child) == view, f"interrupted before {labels[n]!r}"
        assert_repairable(base)
        ops.coalesce(str(child))
        assert read(base) == view
        assert ops.check(str(base)) == []


def test_interrupted_snapshot_leaves_the_parent_alone(tmp_path: Path) -> None:
    """A child cut short is either absent, refused with a clear error, or a valid child; its
    parent is never written."""
    base = tmp_path / "base.vhd"
    ops.create_dynamic(str(base), SIZE)
    write(base, 0, pattern(1, 4096))
    before = base.read_bytes()
    labels: list[str] = []
    ops.snapshot(str(tmp_path / "probe.vhd"), str(base), fault=recorder(labels))
    for n in range(len(labels)):
        child = tmp_path / f"c{n}.vhd"
        with pytest.raises(Crash):
            ops.snapshot(str(child), str(base), fault=crash_at(n))
        assert base.read_bytes() == before
        if not child.exists():
            continue
        try:
            data: bytes | None = read(child)
        except VhdError as exc:
            assert exc.path == str(child)  # noqa: PT017 - either outcome is allowed here
            data = None
        if data is not None:
            assert data == read(base)
