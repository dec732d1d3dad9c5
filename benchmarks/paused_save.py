"""Memory image formats of one QEMU, side by side: paused saves and their restores.

Run (as root): ``.venv/bin/python benchmarks/paused_save.py [--qemu BINARY] [--runs 5]
[--background]``

One QEMU domain (TCG, q35, 1 GiB RAM of which 512 MiB hold random data preloaded with
``-device loader``, as ``benchmarks/live_checkpoint.py`` builds it; no disks, no guest OS),
stopped, saved to a file in each way its QEMU offers, the ways alternating in each run so
machine noise hits them alike:

* ``stream``: the migration stream to a passed descriptor (``getfd``, ``fd:``), as every QEMU;
* ``mapped-ram-1``: ``mapped-ram``, one channel (``file:/dev/fdset/N``, ``add-fd``);
* ``mapped-ram-N``: ``mapped-ram`` with ``multifd`` and N channels (``--channels 2,4``;
  4 by default);
* ``mapped-ram-N-direct-io`` (``--direct-io``): the same, most channels, saved and restored
  with QEMU's ``direct-io`` parameter (an ``O_DIRECT`` descriptor added to the fd set); with
  ``--direct-io`` the multifd mapped-ram images are also restored a second time with
  ``direct-io``, as snapcore restores them.

Each save is timed to QEMU's ``completed`` ("save") and to the image's ``fsync`` ("+fsync",
the figure to hold against ``dd``); the image's page cache is then dropped
(``posix_fadvise(DONTNEED)``) and a fresh QEMU (``-incoming defer -S``) restores it with the
same capabilities ("restore", to ``completed``). Each run also times ``dd if=/dev/zero
bs=1M count=1024 conv=fsync`` into the same directory: the disk's sequential write speed in
the same run. The capabilities are set by :mod:`snapcore_qemu.migration`, as snapcore's saves
set them. Prints every run and the medians.

``--background`` measures the running guest's checkpoint instead: a background snapshot
(``background-snapshot``) with the stream against one with ``mapped-ram`` (one channel; QEMU
refuses multifd with background-snapshot), the guest running during the save, 4 KiB pages.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))

from snapcore_qemu.migration import MAPPED_RAM, STREAM, Method, Migration
from snapcore_qemu.qmp import QMPSession

RAM_MIB = 1024
DATA_MIB = 512
LOADER_ADDR = 0x1000000  # the random data: 16 MiB .. 528 MiB of guest-physical memory
DD_MIB = 1024
BANDWIDTH = 64 << 30
TIMEOUT = 300.0


def qemu_argv(binary: str, qmp: Path, random_bin: Path, *extra: str) -> list[str]:
    return [
        binary, "-accel", "tcg", "-machine", "q35", "-cpu", "qemu64", "-m", f"{RAM_MIB}M",
        "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
        "-device", f"loader,file={random_bin},addr={LOADER_ADDR:#x}",
        "-qmp", f"unix:{qmp},server=on,wait=off", *extra,
    ]  # fmt: skip


@contextmanager
def qemu(binary: str, scratch: Path, random_bin: Path, *extra: str) -> Iterator[QMPSession]:
    sock = scratch / f"q{time.monotonic_ns()}.qmp"
    proc = subprocess.Popen(
        qemu_argv(binary, sock, random_bin, *extra),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"QEMU did not start: {err}")
            time.sleep(0.02)
        time.sleep(0.1)
        with QMPSession(str(sock), timeout=TIMEOUT) as session:
            yield session
            with suppress(Exception):
                session.execute("quit")
    finally:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        with suppress(FileNotFoundError):
            sock.unlink()


def wait_migration(qmp: QMPSession) -> dict[str, object]:
    while True:
        info: dict[str, object] = qmp.execute("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            if info.get("status") != "completed":
                raise SystemExit(f"migration {info.get('status')}: {info.get('error-desc')}")
            return info
        time.sleep(0.01)


def pass_image(
    qmp: QMPSession, method: Method, path: Path, flags: int, *, direct_io: bool = False
) -> tuple[str, int | None]:
    """Hand *path* to QEMU as snapcore does; return the URI and the fd set (if any). With
    *direct_io*, the set also gets an ``O_DIRECT`` descriptor, which QEMU's ``direct-io``
    parameter needs for its multifd channels (as libvirt passes them)."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    try:
        if method.mapped_ram:
            fdset = qmp.add_fd(fd)
            if direct_io:
                direct = os.open(path, (flags & os.O_ACCMODE) | os.O_DIRECT | os.O_CLOEXEC)
                try:
                    qmp.add_fd(direct, fdset=fdset)
                finally:
                    os.close(direct)
                qmp.execute("migrate-set-parameters", {"direct-io": True})
            return f"file:/dev/fdset/{fdset}", fdset
        qmp.send_fd(fd, "bench")
        return "fd:bench", None
    finally:
        os.close(fd)


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def save(
    qmp: QMPSession, method: Method, path: Path, *, direct_io: bool = False
) -> tuple[float, float, dict[str, object]]:
    """Save to *path*; return seconds to ``completed``, seconds to the image's fsync, and
    ``query-migrate``'s answer."""
    migration = Migration(qmp)
    qmp.execute("migrate-set-parameters", {"max-bandwidth": BANDWIDTH})
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    uri, fdset = pass_image(qmp, method, path, flags, direct_io=direct_io)
    migration.set(method)
    start = time.monotonic()
    qmp.execute("migrate", {"uri": uri})
    info = wait_migration(qmp)
    done = time.monotonic() - start
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    synced = time.monotonic() - start
    migration.reset()
    if fdset is not None:
        qmp.execute("remove-fd", {"fdset-id": fdset})
    return done, synced, info


def restore(
    binary: str,
    scratch: Path,
    random_bin: Path,
    method: Method,
    path: Path,
    *,
    direct_io: bool = False,
) -> float:
    drop_cache(path)
    with qemu(binary, scratch, random_bin, "-incoming", "defer", "-S") as qmp:
        migration = Migration(qmp)
        method = Method(format=method.format, channels=method.channels)  # never background
        uri, fdset = pass_image(qmp, method, path, os.O_RDONLY, direct_io=direct_io)
        migration.set(method)
        start = time.monotonic()
        qmp.execute("migrate-incoming", {"uri": uri})
        wait_migration(qmp)
        took = time.monotonic() - start
        migration.reset()
        if fdset is not None:
            qmp.execute("remove-fd", {"fdset-id": fdset})
    return took


def dd(scratch: Path) -> float:
    """MiB/s of ``dd conv=fsync`` writing :data:`DD_MIB` MiB into *scratch*."""
    target = scratch / "dd.out"
    start = time.monotonic()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={DD_MIB}", "conv=fsync"],
        check=True,
        capture_output=True,
    )
    took = time.monotonic() - start
    target.unlink()
    return DD_MIB / took


def methods(
    qmp: QMPSession, channels: list[int], background: bool, direct_io: bool
) -> dict[str, Method]:
    migration = Migration(qmp)
    found = {"stream": Method(format=STREAM, background=background)}
    if migration.mapped_ram:
        found["mapped-ram-1"] = Method(format=MAPPED_RAM, background=background)
        if not background and migration.offers("multifd"):
            for n in channels:
                found[f"mapped-ram-{n}"] = Method(format=MAPPED_RAM, channels=n)
            if direct_io and migration.offers("multifd"):
                n = max(channels)
                found[f"mapped-ram-{n}-direct-io"] = Method(format=MAPPED_RAM, channels=n)
    return found


def pick(runs: list[tuple[float, ...]], index: int) -> float:
    return statistics.median(r[index] for r in runs)


def load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qemu", default="qemu-system-x86_64", help="the QEMU binary")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--channels",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[4],
        help="multifd channel counts to measure, comma-separated (4)",
    )
    parser.add_argument("--background", action="store_true", help="running guest, see above")
    parser.add_argument(
        "--direct-io",
        action="store_true",
        help="also mapped-ram with the most channels and the direct-io parameter",
    )
    parser.add_argument("--dir", default="/var/tmp", help="where the images go")
    args = parser.parse_args()
    if shutil.which(args.qemu) is None:
        parser.error(f"{args.qemu}: not found")
    scratch = Path(tempfile.mkdtemp(prefix="paused-save-", dir=args.dir))
    random_bin = scratch / "random.bin"
    random_bin.write_bytes(os.urandom(DATA_MIB << 20))
    results: dict[str, list[tuple[float, ...]]] = {}
    dd_speeds: list[float] = []
    print(f"load before: {load()}; {os.cpu_count()} CPUs; images in {scratch}")
    try:
        with qemu(args.qemu, scratch, random_bin) as qmp:
            version = qmp.execute("query-version")["qemu"]
            print(f"QEMU {version['major']}.{version['minor']}.{version['micro']} ({args.qemu})")
            chosen = methods(qmp, args.channels, args.background, args.direct_io)
        for run in range(1, args.runs + 1):
            dd_speeds.append(dd(scratch))
            line = [f"run {run}: dd {dd_speeds[-1]:.0f} MiB/s"]
            for name, method in chosen.items():
                image = scratch / f"{name}.img"
                with qemu(args.qemu, scratch, random_bin) as qmp:
                    if not args.background:
                        qmp.execute("stop")
                    dio = name.endswith("-direct-io")
                    took, synced, info = save(qmp, method, image, direct_io=dio)
                size = image.stat().st_blocks * 512
                back = restore(args.qemu, scratch, random_bin, method, image, direct_io=dio)
                # snapcore's restore of a multifd mapped-ram image reads it with direct-io
                back_dio = (
                    restore(args.qemu, scratch, random_bin, method, image, direct_io=True)
                    if args.direct_io and method.multifd and not dio
                    else float("nan")
                )
                image.unlink()
                downtime = float(str(info.get("downtime", 0)))
                figures = (took, synced, back, downtime, size / synced, back_dio)
                results.setdefault(name, []).append(figures)
                line.append(
                    f"{name} save {took:.2f} s (+fsync {synced:.2f} s, {size >> 20} MiB on disk, "
                    f"downtime {downtime:.0f} ms) restore {back:.2f} s"
                    + (f" (direct-io {back_dio:.2f} s)" if not math.isnan(back_dio) else "")
                )
            print("; ".join(line), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    dd_median = statistics.median(dd_speeds)
    print(f"\nmedians of {args.runs} runs (load after: {load()}):")
    print(f"  dd conv=fsync: {dd_median:.0f} MiB/s")
    for name, runs in results.items():
        synced, written = pick(runs, 1), pick(runs, 4) / (1 << 20)
        print(
            f"  {name}: save {pick(runs, 0):.2f} s, save+fsync {synced:.2f} s: "
            f"{written:.0f} MiB/s written ({written / dd_median:.2f}x dd), "
            f"{RAM_MIB / synced:.0f} MiB/s of guest RAM ({RAM_MIB / synced / dd_median:.2f}x dd); "
            f"restore {pick(runs, 2):.2f} s"
            + (f" (with direct-io {pick(runs, 5):.2f} s)" if not math.isnan(runs[0][5]) else "")
            + f"; QEMU downtime {pick(runs, 3):.0f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
