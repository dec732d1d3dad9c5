"""Throughput and latency of snapcore's native VHD engine, side by side with peers.

Run: ``.venv/bin/python benchmarks/vhd_engine.py [--size MiB] [--runs N] [--dir DIR]``

* Sequential write and read of ``--size`` MiB through a 10-deep chain (base + 9 children, each
  layer holding every tenth 2 MiB block, so reads cross every layer), against the same data
  written to and read from a raw file, and against libvhdi (``vhdimount`` through FUSE) reading
  the same chain and qemu-img writing the same data as a single-layer VHD.
* Snapshot (a differencing child) of a 10 GiB sparse VHD: metadata only, milliseconds.
* Snapshot and coalesce of a child holding 1 GiB of written data (``--coalesce-mib``).
* The peak resident memory of this process (the engine streams blocks; it never loads a disk).

Each figure is the median of ``--runs`` runs; all peers run in the same process and loop, so
machine noise hits them alike. Files go to a scratch directory (``--dir``, default a temporary
directory under /var/tmp) on a real file system, with the page cache warm for every reader.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))

from snapcore_vhd import ops
from snapcore_vhd.chain import Chain

MiB = 1024 * 1024
CHUNK = MiB
BLOCK = 2 * MiB
DEPTH = 10


def median_time(
    fn: Callable[[], object], runs: int, setup: Callable[[], object] | None = None
) -> float:
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pattern(i: int) -> bytes:
    return bytes([i % 251 + 1]) * CHUNK


def write_raw(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for i in range(size // CHUNK):
            f.write(pattern(i))
        f.flush()
        os.fsync(f.fileno())


def read_raw(path: Path) -> int:
    total = 0
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(8 * MiB):
            total += len(chunk)
    return total


def write_vhd(leaf: Path, size: int) -> None:
    with Chain(str(leaf), writable=True) as chain:
        for i in range(size // CHUNK):
            chain.write(i * CHUNK, pattern(i))


def read_vhd(leaf: Path) -> int:
    total = 0
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    with Chain(str(leaf)) as chain:
        for sector in range(0, chain.size // 512, len(buf) // 512):
            buf[:] = bytes(len(buf))
            chain.read_sectors_into(sector, view)
            total += len(buf)
    return total


def build_chain(work: Path, size: int) -> Path:
    """base <- c1 <- ... <- c9; layer k holds the blocks b with b % 10 == k."""
    for old in work.glob("chain*.vhd"):
        old.unlink()
    path = work / "chain0.vhd"
    ops.create_dynamic(str(path), size)
    for level in range(DEPTH):
        if level:
            child = work / f"chain{level}.vhd"
            ops.snapshot(str(child), str(path))
            path = child
        with Chain(str(path), writable=True) as chain:
            for b in range(level, size // BLOCK, DEPTH):
                chain.write(b * BLOCK, pattern(b) * 2)
    return path


def fresh_leaf(work: Path, size: int) -> Path:
    """A 10-deep chain of empty layers over an empty base, for the write test."""
    for old in work.glob("w*.vhd"):
        old.unlink()
    path = work / "w0.vhd"
    ops.create_dynamic(str(path), size)
    for level in range(1, DEPTH):
        child = work / f"w{level}.vhd"
        ops.snapshot(str(child), str(path))
        path = child
    return path


@contextlib.contextmanager
def vhdimount(leaf: Path, mnt: Path) -> Iterator[Path | None]:
    mnt.mkdir(exist_ok=True)
    if shutil.which("vhdimount") is None:
        yield None
        return
    proc = subprocess.run(["vhdimount", str(leaf), str(mnt)], capture_output=True, check=False)
    if proc.returncode != 0:
        yield None
        return
    try:
        names = sorted(os.listdir(mnt), key=lambda n: int(n.removeprefix("vhdi")))
        yield mnt / names[-1]
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def row(what: str, ours: float, peer_name: str, peer: float | None, unit: str = "MiB/s") -> str:
    if peer is None:
        return f"{what:<44} {ours:>10.3f} {unit:<5} {peer_name:<28} {'-':>10}"
    ratio = ours / peer if peer else float("inf")
    return (
        f"{what:<44} {ours:>10.3f} {unit:<5} {peer_name:<28} {peer:>10.3f} {unit:<5} x{ratio:.2f}"
    )


def bench_chain(work: Path, size_mib: int, runs: int) -> list[str]:
    """Sequential write and read through a 10-deep chain, against a raw file and peers."""
    size = size_mib * MiB
    raw = work / "data.raw"
    lines = []
    t_raw_w = median_time(lambda: write_raw(raw, size), runs)
    leaf_holder: list[Path] = []

    def new_leaf() -> None:
        leaf_holder[:] = [fresh_leaf(work, size)]

    t_vhd_w = median_time(lambda: write_vhd(leaf_holder[0], size), runs, setup=new_leaf)
    lines.append(
        row("write, 10-deep chain (MiB/s)", size_mib / t_vhd_w, "raw file", size_mib / t_raw_w)
    )
    if shutil.which("qemu-img"):
        qvhd = work / "qemu.vhd"
        argv = ["qemu-img", "convert", "-f", "raw", "-O", "vpc", str(raw), str(qvhd)]
        t_qemu_w = median_time(
            lambda: subprocess.run(argv, check=True),
            runs,
            setup=lambda: qvhd.unlink(missing_ok=True),
        )
        peer = "qemu-img convert -O vpc"
        lines.append(
            row("write, 10-deep chain (MiB/s)", size_mib / t_vhd_w, peer, size_mib / t_qemu_w)
        )
    leaf = build_chain(work, size)
    t_raw_r = median_time(lambda: read_raw(raw), runs)
    t_vhd_r = median_time(lambda: read_vhd(leaf), runs)
    lines.append(
        row("read, 10-deep chain (MiB/s)", size_mib / t_vhd_r, "raw file", size_mib / t_raw_r)
    )
    with vhdimount(leaf, work / "mnt") as view:
        if view is not None:
            t_fuse = median_time(lambda: read_raw(view), runs)
            peer = "libvhdi vhdimount (FUSE)"
            lines.append(
                row("read, 10-deep chain (MiB/s)", size_mib / t_vhd_r, peer, size_mib / t_fuse)
            )
    return lines


def bench_snapshots(work: Path, coalesce_mib: int, runs: int) -> list[str]:
    """Snapshot of a 10 GiB sparse VHD; snapshot and coalesce with *coalesce_mib* written."""
    lines = []
    sparse = work / "sparse.vhd"
    ops.create_dynamic(str(sparse), 10 * 1024 * MiB)
    child = work / "sparse-child.vhd"
    t_snap = median_time(
        lambda: ops.snapshot(str(child), str(sparse)),
        max(runs, 5),
        setup=lambda: child.unlink(missing_ok=True),
    )
    lines.append(row("snapshot of a 10 GiB sparse VHD (ms)", t_snap * 1000, "", None, "ms"))
    big, top, snap = work / "big.vhd", work / "big-child.vhd", work / "big-snap.vhd"

    def prepare() -> None:
        for p in (big, top, snap):
            p.unlink(missing_ok=True)
        ops.create_dynamic(str(big), coalesce_mib * MiB)
        ops.snapshot(str(top), str(big))
        write_vhd(top, coalesce_mib * MiB)

    prepare()
    t_snap_full = median_time(
        lambda: ops.snapshot(str(snap), str(top)),
        max(runs, 5),
        setup=lambda: snap.unlink(missing_ok=True),
    )
    what = f"snapshot of a leaf with {coalesce_mib} MiB written (ms)"
    lines.append(row(what, t_snap_full * 1000, "", None, "ms"))
    t_coalesce = median_time(lambda: ops.coalesce(str(top)), runs, setup=prepare)
    t_copy = median_time(lambda: shutil.copyfile(top, work / "copy.vhd"), runs)
    what = f"coalesce {coalesce_mib} MiB into the parent (s)"
    lines.append(row(what, t_coalesce, "cp of the child file", t_copy, "s"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="MiB through the chain")
    parser.add_argument("--coalesce-mib", type=int, default=1024, help="MiB to coalesce")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vhd-bench-", dir=args.dir or "/var/tmp"))
    try:
        lines = bench_chain(work, args.size, args.runs)
        lines += bench_snapshots(work, args.coalesce_mib, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'operation':<44} {'snapcore':>16} {'peer':<28} {'peer':>16} ratio")
    for line in lines:
        print(line)
    print(f"peak RSS of this process: {peak:.1f} MiB (target: under 64 MiB)")


if __name__ == "__main__":
    main()
