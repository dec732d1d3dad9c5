"""Checkpoints with memory of a running QEMU domain: snapcore against libvirt 11.3, in one run.

Run (as root): ``.venv/bin/python benchmarks/live_checkpoint.py [--runs 5] [--qemu {7.2,10,both}]
[--hugepages]``

For each QEMU (``--qemu``, default both, one after the other): QEMU 7.2, the system's
(/usr/bin/qemu-system-x86_64), and QEMU 10.0 from bookworm-backports, unpacked by
scripts/qemu10.sh (with its module packages, which libvirt's capability probe needs; see
``setup-libvirt11.sh``). Both sides run the same binary: snapcore's ``[qemu] argv`` and
libvirt's ``<emulator>``. One QEMU domain for snapcore and four for libvirt (internal
snapshots; external; external ``--live``; ``virsh save``), all the same machine: TCG, q35,
1 GiB RAM of which 512 MiB hold random data preloaded with ``-device loader``, two qcow2 disks as
virtio-blk. No guest OS. The runs of the sides alternate in one loop so machine noise hits
them alike; figures are medians.

Measured, in three loops of *runs* rounds each:

1. a checkpoint with memory of the running domain (snapcore's background snapshot; libvirt's
   internal, external and external ``--live`` snapshots):

   * guest downtime: the time between QEMU's ``STOP`` and ``RESUME`` events (their QEMU
     timestamps), read on a second QMP monitor each domain carries for the purpose
     (``-chardev socket,... -mon mode=control``; the main monitor belongs to snapcore or
     libvirt), plus QEMU's own migration ``downtime`` and ``total-time`` (``query-migrate``)
     and libvirt's (``virsh domjobinfo --completed``);
   * wall time of the command (``snapcore snapshot-create``, ``virsh snapshot-create-as``);
   * memory image size against the guest RAM in use (non-zero pages, counted from
     ``pmemsave``); peak RSS of the snapcore process (``/usr/bin/time -f %M``);

2. a save of the paused domain and its restore: snapcore's paused save (``snapshot-create`` of
   a domain stopped first over the benchmark's monitor: a checkpoint with memory, disks
   included, in QEMU's mapped-ram format where the qemu plugin uses it) and the revert to it
   (``snapshot-revert``, back paused), against ``virsh save --image-format sparse
   --parallel-channels 4`` of a suspended domain and ``virsh restore --parallel-channels 4``
   (where the sparse format is refused, as QEMU 7.2 has no mapped-ram, libvirt's default
   format, said in the notes); each save's wall time, the ``sync`` right after it, the image's
   apparent and allocated size, and how QEMU was set (``query-migrate-capabilities``); and
   ``dd if=/dev/zero bs=1M count=1024 conv=fsync`` to a new scratch file, the disk's
   sequential write speed in the same run;

3. the revert with memory: snapcore's, and libvirt's internal and external ones (libvirt 9.9
   and newer reverts external snapshots, memory included).

Every save, restore and revert is checked by a RAM marker written through QEMU's qtest socket
before the checkpoint and overwritten after it. The targets of issue 11 (and issue 3's image
and RSS figures) are printed with PASS or FAIL for each QEMU, and a summary at the end.

Sets up what it needs: ``setup-libvirt11.sh`` installs libvirt 11.3.0 from bookworm-backports
(upgrading a libvirt 9.0, leaving QEMU 7.2 as it is; a no-op once done); the script starts
``virtlogd -d`` and ``libvirtd -d`` if they are not running (and stops them at the end only
then; there is no systemd; Debian's 11.3 package has no modular virtqemud), refuses a running
libvirtd that is not 11.3.0, and removes every domain, process and file it made. Its scratch
directories are under /tmp/lvbench. snapcore runs with its bytecode cached in the scratch
directory, as an installed package has it, even where the environment sets
``PYTHONDONTWRITEBYTECODE``. Before each timed command it runs ``sync`` and drops the page
cache of its scratch files (``--keep-cache`` not to; see ``PageCache``).

``--hugepages`` backs the 1 GiB guest RAM of every domain, snapcore's and libvirt's four, with 2
MiB hugetlb pages, preallocated, the same way on both sides: snapcore's QEMU gets ``-object
memory-backend-memfd,id=ram0,size=1024M,hugetlb=on,hugetlbsize=2M,prealloc=on -machine
memory-backend=ram0``, libvirt's XML ``<memoryBacking>`` with ``<hugepages><page size='2048'
unit='KiB'/></hugepages>``, ``<source type='memfd'/>`` and ``<allocation mode='immediate'/>``, for
which libvirt (9.0 and 11.3) generates the same memory-backend-memfd (hugetlb, hugetlbsize 2 MiB,
prealloc). Each domain's backend is checked over its QMP monitor (``query-memdev``, ``qom-get``)
after it starts and after the reverts. Why: QEMU 7.2's background snapshot removes the write
protection and flushes its output once per host page, so with 4 KiB pages it makes about 131k small
writes for 512 MiB of data (measured: a background snapshot to /dev/null 550-590 ms, to a file 1.4
s, against 0.2 s for a paused save); with 2 MiB pages a background snapshot to a file took 0.2-0.4
s and stopped the guest for 1-6 ms (measured with a standalone QEMU, memory-backend-memfd hugetlb).
The option shows what the tools do when the page-size cost is out of the way.

With ``--hugepages`` the script reserves the pages itself: it raises
``/proc/sys/vm/nr_hugepages`` by 5 domains x 512 pages plus 512 pages of headroom (a revert's
restarted QEMU), on top of whatever is reserved already (those pages stay to whoever reserved
them), refuses to run if the kernel does not grant them (``HugePages_Total`` and
``HugePages_Free`` in /proc/meminfo), and puts the previous value back at the end, also on
failure or SIGTERM. With an explicit page size libvirt (9.0, 11.3) needs no hugetlbfs mount;
should a libvirtd refuse for want of one ("hugetlbfs filesystem is not mounted"), the script mounts
hugetlbfs on /dev/hugepages and restarts libvirtd if it started it (libvirtd looks for the
mounts when it starts), or refuses if libvirtd was running before it; what it mounted it
unmounts at the end.

Targets (issue 11): guest pause under 50 ms and at least 10x below libvirt 11's best non-live
figure, on both QEMUs; on QEMU 10, revert with memory at most libvirt's external revert; a
paused save of the 1 GiB RAM with mapped-ram at least 0.8x dd's speed (judged on the save and
the sync after it) and no slower than ``virsh save`` sparse parallel; checkpoint wall time at
most libvirt's external non-live. Issue 3's: memory image at most 1.05x the guest RAM in use,
snapcore peak RSS under 100 MiB. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from xml.sax.saxutils import quoteattr

from snapcore.errors import DomainUnreachableError
from snapcore_qemu.qmp import QMPSession

VENV_BIN = Path(sys.executable).parent
SNAPCORE = str(VENV_BIN / "snapcore")
QEMU_SYSTEM = "/usr/bin/qemu-system-x86_64"  # Debian 12's QEMU 7.2
SETUP_LIBVIRT = Path(__file__).resolve().parent / "setup-libvirt11.sh"
LIBVIRT_WANTED = "11.3.0"
VIRSH = ["virsh", "-c", "qemu:///system"]
TIME = "/usr/bin/time"
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"

RAM_MIB = 1024
DATA_MIB = 512
LOADER_ADDR = 0x1000000  # the random data: 16 MiB .. 528 MiB of guest-physical memory
MARK_ADDR = 0x100000  # a RAM word outside the data, changed around every checkpoint
DISK_SIZE = "1G"
DISK_DATA = "64M"  # written into each disk before the domains start
DOMAIN_PREFIX = "snapcore-bench-"

SCRATCH = Path("/tmp/lvbench")  # each pass's scratch directory is made (and removed) in it
CMD_TIMEOUT = 300.0  # any one snapshot, revert or setup command
APT_TIMEOUT = 1200.0
DAEMON_TIMEOUT = 30.0
SOCKET_TIMEOUT = 30.0
EVENT_SETTLE = 0.2  # seconds without a new event after the command before events are read
EVENT_LIMIT = 15.0  # at most this long waiting for the guest to be resumed

MIB = 1 << 20
GIB = 1 << 30

SAVE_CHANNELS = 4  # virsh save --parallel-channels
DD_MIB = 1024  # dd's sequential write, with fsync, in every run

# --hugepages
HUGEPAGE_KIB = 2048
HUGEPAGE_DOMAINS = 5  # snapcore's and libvirt's four, all running at once (one QEMU at a time)
HUGEPAGE_HEADROOM = 512  # pages: a revert's or restore's new QEMU, should the old one linger
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
HUGETLBFS_DIR = Path("/dev/hugepages")
HUGETLBFS_MISSING = "hugetlbfs filesystem is not mounted"  # libvirt's error
LIBVIRT_MEMORY_BACKING = (
    f"<memoryBacking><hugepages><page size='{HUGEPAGE_KIB}' unit='KiB'/></hugepages>"
    "<source type='memfd'/><allocation mode='immediate'/></memoryBacking>"
)


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    timeout: float = CMD_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run *argv* (no shell), capture its output; on failure raise with its stderr."""
    proc = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


@dataclass
class Timed:
    seconds: float
    started: float  # time.time() at the start, to compare with QEMU's event timestamps
    proc: subprocess.CompletedProcess[str]


class PageCache:
    """What happens to the page cache between timed commands.

    Every command is preceded by ``sync``, so that the previous command's image is on disk and
    not being written back meanwhile. Then, unless told to keep it, the clean cached pages of
    every file under the scratch directory are dropped (``posix_fadvise(DONTNEED)``). On the
    machines this was written on, once about 1.5 GB of written files stay cached, further
    writes fall from several GB/s to about 0.4 GB/s, even right after a ``sync``, and dropping
    the cache of files already written brings the speed back. Without this, every 512 MiB save
    after the third would pay about 1.2 s that belongs to the machine, not to the tool
    (docs/performance.md).
    """

    def __init__(self) -> None:
        self.scratch: Path | None = None
        self.keep = False

    def settle(self) -> None:
        os.sync()
        if self.keep or self.scratch is None:
            return
        for root, _dirs, files in os.walk(self.scratch):
            for name in files:
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)


CACHE = PageCache()


def timed(
    argv: Sequence[str], *, timeout: float = CMD_TIMEOUT, env: dict[str, str] | None = None
) -> Timed:
    CACHE.settle()
    started = time.time()
    start = time.perf_counter()
    proc = run(argv, timeout=timeout, env=env)
    return Timed(time.perf_counter() - start, started, proc)


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def daemon_running(name: str) -> bool:
    """Whether a live process (not a zombie: a daemon this script stopped in an earlier run may
    linger as one until it is reaped) is called *name*."""
    pids = run(["pgrep", "-x", name], check=False).stdout.split()
    return any(pid_alive(int(pid)) for pid in pids if pid.isdigit())


def terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process *pid* (one we started), SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


@dataclass
class Emulator:
    """The QEMU of the current pass: both sides run this binary (snapcore's ``argv``, libvirt's
    ``<emulator>``)."""

    label: str = "7.2"
    binary: str = QEMU_SYSTEM

    def version(self) -> str:
        out = run([self.binary, "--version"], check=False).stdout.splitlines()
        return out[0] if out else "?"


EMU = Emulator()


# ------------------------------------------------------------------------------------------
# host setup: libvirt packages and daemons
# ------------------------------------------------------------------------------------------


class LibvirtHost:
    """libvirt's tools and daemons; remembers which daemons it started, to stop only those."""

    DAEMONS = ("virtlogd", "libvirtd")  # libvirtd's QEMU driver logs through virtlogd

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self.installed: list[str] = []

    def setup(self) -> str:
        """Install libvirt 11.3 (``setup-libvirt11.sh``, a no-op once done), start the daemons
        that are not running; return the QEMU 10 binary to use with it."""
        print(f"  bash {SETUP_LIBVIRT}")
        proc = run(["bash", str(SETUP_LIBVIRT)], timeout=APT_TIMEOUT, check=False)
        for line in proc.stderr.strip().splitlines()[-6:]:
            print(f"    {line}")
        if proc.returncode != 0:
            raise RuntimeError(f"{SETUP_LIBVIRT} exited {proc.returncode}")
        qemu10 = proc.stdout.strip().splitlines()[-1]
        for daemon in self.DAEMONS:
            if daemon_running(daemon):
                print(f"  {daemon}: already running (left running at the end)")
                continue
            exe, pid = self._start(daemon)
            self.started.append((daemon, pid))
            print(f"  {daemon}: started ({exe} -d, pid {pid}; stopped at the end)")
        self._wait_libvirtd()
        version = self.version()
        if version != LIBVIRT_WANTED:
            raise RuntimeError(
                f"the running libvirtd is {version}, not {LIBVIRT_WANTED}: a daemon started "
                "before the upgrade? stop it and run again"
            )
        return qemu10

    @staticmethod
    def _start(daemon: str) -> tuple[str, int]:
        exe = shutil.which(daemon, path=SBIN_PATH) or daemon
        pidfile = Path(f"/run/{daemon}.pid")
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()  # stale: the daemon is not running
        run([exe, "-d"], timeout=DAEMON_TIMEOUT)
        return exe, _read_pidfile(pidfile)

    @staticmethod
    def _wait_libvirtd() -> None:
        wait_for(
            "libvirtd to answer",
            lambda: run([*VIRSH, "version"], check=False, timeout=10).returncode == 0,
            DAEMON_TIMEOUT,
        )

    def started_libvirtd(self) -> bool:
        return any(daemon == "libvirtd" for daemon, _pid in self.started)

    def restart_libvirtd(self) -> str:
        """Restart the libvirtd this script started (so that it reads the host's hugetlbfs
        mounts again); running domains stay up, libvirtd reconnects to them."""
        index = next(i for i, (daemon, _pid) in enumerate(self.started) if daemon == "libvirtd")
        old = self.started[index][1]
        terminate(old)
        exe, pid = self._start("libvirtd")
        self.started[index] = ("libvirtd", pid)
        self._wait_libvirtd()
        return f"restarted libvirtd (pid {old} -> {pid}, {exe} -d)"

    def teardown(self) -> None:
        for daemon, pid in reversed(self.started):
            terminate(pid)
            print(f"  stopped {daemon} (pid {pid})")
        self.started.clear()

    @staticmethod
    def version() -> str:
        out = run([*VIRSH, "version", "--daemon"], check=False).stdout
        found = re.search(r"Running against daemon: (\S+)", out) or re.search(
            r"Using library: libvirt (\S+)", out
        )
        return found.group(1) if found else "?"


def _read_pidfile(pidfile: Path) -> int:
    deadline = time.monotonic() + DAEMON_TIMEOUT
    while True:
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text().strip())
        if time.monotonic() > deadline:
            raise RuntimeError(f"no pid in {pidfile} after {DAEMON_TIMEOUT:g} s")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------
# --hugepages: the reserved pages, a hugetlbfs mount if libvirt needs one
# ------------------------------------------------------------------------------------------


class HugepagesError(Exception):
    """The hugepages for ``--hugepages`` cannot be had (a one-line message)."""


def meminfo() -> dict[str, int]:
    """/proc/meminfo's figures (kB, or pages for the ``HugePages_*`` lines)."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            info[key] = int(value.split()[0])
    return info


def hugetlbfs_mounts() -> list[str]:
    mounts = Path("/proc/mounts").read_text().splitlines()
    return [line.split()[1] for line in mounts if line.split()[2:3] == ["hugetlbfs"]]


class Hugepages:
    """With ``--hugepages``: every domain's RAM on 2 MiB hugetlb pages (memory-backend-memfd,
    preallocated). Reserves the pages (``nr_hugepages``), mounts hugetlbfs only if libvirt asks
    for it, and ``restore`` undoes both."""

    def __init__(self) -> None:
        self.enabled = False
        self.host: LibvirtHost | None = None
        self.previous: int | None = None  # nr_hugepages before the run
        self.granted: int | None = None  # nr_hugepages after the reservation
        self.mounted: Path | None = None
        self.made_dir = False

    @staticmethod
    def per_domain() -> int:
        return RAM_MIB * 1024 // HUGEPAGE_KIB

    def needed(self) -> int:
        return HUGEPAGE_DOMAINS * self.per_domain() + HUGEPAGE_HEADROOM

    def reserve(self) -> str:
        """Raise ``nr_hugepages`` by ``needed()`` pages and check the kernel granted them.

        :raises HugepagesError: another default hugepage size, or the pages not granted.
        """
        size = meminfo().get("Hugepagesize")
        if size != HUGEPAGE_KIB:
            raise HugepagesError(
                f"--hugepages needs {HUGEPAGE_KIB} kB default hugepages, the host has {size} kB"
            )
        self.previous = int(NR_HUGEPAGES.read_text())
        target = self.previous + self.needed()
        try:
            NR_HUGEPAGES.write_text(f"{target}\n")
        except OSError as exc:
            raise HugepagesError(
                f"cannot reserve {self.needed()} hugepages: writing {target} to {NR_HUGEPAGES}: "
                f"{exc.strerror}"
            ) from None
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.granted = int(NR_HUGEPAGES.read_text())
        info = meminfo()
        total, free = info.get("HugePages_Total", 0), info.get("HugePages_Free", 0)
        if total < target or free < self.needed():
            raise HugepagesError(
                f"cannot reserve {self.needed()} {HUGEPAGE_KIB} kB hugepages: asked nr_hugepages "
                f"{self.previous} -> {target}, the kernel granted HugePages_Total {total}, "
                f"HugePages_Free {free}"
            )
        return (
            f"nr_hugepages {self.previous} -> {target} ({self.needed()} pages for this run: "
            f"{HUGEPAGE_DOMAINS} domains x {self.per_domain()} + {HUGEPAGE_HEADROOM} headroom); "
            f"HugePages_Total {total}, HugePages_Free {free}; restored at the end"
        )

    def provide_hugetlbfs(self, error: str) -> None:
        """libvirt refused a hugepage domain for want of a hugetlbfs mount, which libvirtd looks
        for when it starts: mount one (if none is) and restart libvirtd, if this script started
        it; refuse if not (it is someone else's daemon)."""
        assert self.host is not None
        if not self.host.started_libvirtd():
            raise HugepagesError(
                f"libvirt: {error}; libvirtd was running before this benchmark: mount hugetlbfs "
                f"(mount -t hugetlbfs hugetlbfs {HUGETLBFS_DIR}), restart libvirtd, run again"
            )
        done = []
        if not hugetlbfs_mounts():
            if not HUGETLBFS_DIR.exists():
                HUGETLBFS_DIR.mkdir()
                self.made_dir = True
            run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "hugetlbfs", str(HUGETLBFS_DIR)])
            self.mounted = HUGETLBFS_DIR
            done.append(f"mounted hugetlbfs on {HUGETLBFS_DIR} (unmounted at the end)")
        done.append(self.host.restart_libvirtd())
        print(f"  hugepages: libvirt said '{error}': " + ", ".join(done), flush=True)

    def restore(self) -> None:
        if self.mounted is not None:
            proc = run(["umount", str(self.mounted)], check=False, timeout=60)
            if proc.returncode == 0:
                if self.made_dir:
                    with contextlib.suppress(OSError):
                        self.mounted.rmdir()
                print(f"  hugepages: unmounted {self.mounted}")
            else:
                print(f"  hugepages: umount {self.mounted} failed: {proc.stderr.strip()}")
            self.mounted = None
        if self.previous is None:
            return
        current = int(NR_HUGEPAGES.read_text())
        if self.granted is None or current == self.granted:
            NR_HUGEPAGES.write_text(f"{self.previous}\n")
            print(f"  hugepages: nr_hugepages restored to {self.previous}")
        else:  # changed by someone else meanwhile: take back only what this run added
            value = max(0, current - (self.granted - self.previous))
            NR_HUGEPAGES.write_text(f"{value}\n")
            print(
                f"  hugepages: nr_hugepages was changed to {current} during the run (not by this "
                f"script): set to {value}, taking back only this run's pages"
            )
        self.previous = self.granted = None


HUGEPAGES = Hugepages()


# ------------------------------------------------------------------------------------------
# the guest: disks, QEMU command line, libvirt XML, the benchmark's own monitor
# ------------------------------------------------------------------------------------------


def make_disks(work: Path, tag: str) -> dict[str, Path]:
    disks = {}
    for vdev, byte in (("vda", 0x5A), ("vdb", 0xA5)):
        path = work / f"{tag}-{vdev}.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), DISK_SIZE])
        run(["qemu-io", "-f", "qcow2", "-c", f"write -P {byte:#x} 0 {DISK_DATA}", str(path)])
        disks[vdev] = path
    return disks


def snapcore_argv(disks: dict[str, Path], random_bin: Path, mon: Path, qtest: Path) -> list[str]:
    """The QEMU command line given to snapcore as ``[qemu] argv``: the machine libvirt builds
    for our XML (see ``libvirt_xml``), same CPU, memory, root ports and disk devices."""
    argv = [
        EMU.binary, "-accel", "tcg", "-machine", "q35", "-cpu", "qemu64",
        "-m", f"{RAM_MIB}M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
        "-device", "pcie-root-port,port=8,chassis=1,id=pci.1,bus=pcie.0,multifunction=on,addr=0x1",
        "-device", "pcie-root-port,port=9,chassis=2,id=pci.2,bus=pcie.0,addr=0x1.0x1",
        "-device", "pcie-root-port,port=10,chassis=3,id=pci.3,bus=pcie.0,addr=0x1.0x2",
    ]  # fmt: skip
    if HUGEPAGES.enabled:
        at = argv.index("-m") + 2
        argv[at:at] = hugepage_args()
    for index, (vdev, path) in enumerate(disks.items(), start=1):
        argv += [
            "-blockdev",
            f"driver=qcow2,node-name={vdev},file.driver=file,file.filename={path}",
            "-device",
            f"virtio-blk-pci,bus=pci.{index},addr=0x0,drive={vdev},id={vdev}-dev"
            + (",bootindex=1" if index == 1 else ""),
        ]
    return argv + bench_args(random_bin, mon, qtest)


def hugepage_args() -> list[str]:
    """``--hugepages``: the guest RAM on preallocated hugetlb pages, as libvirt builds it for
    ``LIBVIRT_MEMORY_BACKING``."""
    return [
        "-object",
        f"memory-backend-memfd,id=ram0,size={RAM_MIB}M,hugetlb=on,"
        f"hugetlbsize={HUGEPAGE_KIB // 1024}M,prealloc=on",
        "-machine",
        "memory-backend=ram0",
    ]


def bench_args(random_bin: Path, mon: Path, qtest: Path) -> list[str]:
    """What both sides get on top of their machine: the RAM preload, the benchmark's monitor
    (a second QMP monitor: QEMU's first belongs to snapcore or libvirt), the qtest socket."""
    return [
        "-device", f"loader,file={random_bin},addr={LOADER_ADDR:#x}",
        "-chardev", f"socket,id=benchmon,path={mon},server=on,wait=off",
        "-mon", "chardev=benchmon,mode=control",
        "-qtest", f"unix:{qtest},server=on,wait=off",
    ]  # fmt: skip


def libvirt_xml(name: str, disks: dict[str, Path], random_bin: Path, mon: Path, qtest: Path) -> str:
    """A ``<domain type="qemu">`` (TCG) of the same machine.

    ``<seclabel type='static' model='dac' relabel='no'>`` with label ``+0:+0`` runs QEMU as
    root, as snapcore's QEMU runs, and leaves file ownership alone. Debian's default runs it as
    ``libvirt-qemu``, which cannot create the extra sockets in the root-owned scratch dir; and
    ``<seclabel type='none'/>`` turns off relabelling but still runs QEMU as that user.
    With ``--hugepages``, ``LIBVIRT_MEMORY_BACKING``: the explicit page size spares libvirt 9.0
    from looking for a hugetlbfs mount, which a memfd backend does not use.
    """
    disk_xml = "".join(
        f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(path))}/>
      <target dev='{vdev}' bus='virtio'/>
    </disk>"""
        for vdev, path in disks.items()
    )
    args = "".join(
        f"\n    <qemu:arg value={quoteattr(arg)}/>" for arg in bench_args(random_bin, mon, qtest)
    )
    backing = f"\n  {LIBVIRT_MEMORY_BACKING}" if HUGEPAGES.enabled else ""
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>{RAM_MIB}</memory>{backing}
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{EMU.binary}</emulator>{disk_xml}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <qemu:commandline>{args}
  </qemu:commandline>
</domain>
"""


class BenchMonitor:
    """The benchmark's own QMP monitor on a domain: STOP/RESUME events, query-migrate,
    pmemsave. Reconnects after the domain's QEMU was restarted (by a revert)."""

    def __init__(self, path: Path, name: str):
        self.path = path
        self.name = name
        self.session: QMPSession | None = None
        self._events: contextlib.ExitStack | None = None
        self._waiter: Any = None

    def connect(self) -> BenchMonitor:
        self.close()
        wait_for(f"socket {self.path}", self.path.exists, SOCKET_TIMEOUT)
        session = QMPSession(str(self.path), domain=self.name, timeout=SOCKET_TIMEOUT)
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while True:  # a restarted QEMU may not listen yet on a socket file it is recreating
            try:
                session.connect()
                break
            except DomainUnreachableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.session = session
        self._events = contextlib.ExitStack()
        self._waiter = self._events.enter_context(session.events("STOP", "RESUME"))
        return self

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        assert self.session is not None
        return self.session.execute(command, arguments, timeout=timeout)

    def drain(self) -> None:
        self.collect(settle=0.01, limit=1.0)

    def collect(
        self, settle: float = EVENT_SETTLE, limit: float = EVENT_LIMIT
    ) -> list[dict[str, Any]]:
        """The STOP/RESUME events received so far and until *settle* seconds pass without a new
        one while the guest runs (waiting at most *limit* seconds for it to run again)."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                events.append(self._waiter.get(settle))
            except DomainUnreachableError:
                if stopped_ms(events) is not None:
                    break  # quiet, and not left stopped
        return events

    def query_status(self) -> str:
        return str(self.execute("query-status").get("status"))

    def close(self) -> None:
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
        if self.session is not None:
            self.session.close()
        self._events = self.session = None


def stopped_ms(events: list[dict[str, Any]]) -> float | None:
    """Total time between each STOP and the following RESUME (QEMU's timestamps), in ms;
    ``None`` if the guest is still stopped after the last event."""
    total = 0.0
    stop: float | None = None
    for event in events:
        ts = event["timestamp"]["seconds"] + event["timestamp"]["microseconds"] / 1e6
        if event["event"] == "STOP" and stop is None:
            stop = ts
        elif event["event"] == "RESUME" and stop is not None:
            total += ts - stop
            stop = None
    return None if stop is not None else total * 1000


def first_stop_ms(events: list[dict[str, Any]], started: float) -> float | None:
    """Milliseconds from *started* (``time.time()``) to the first STOP event."""
    for event in events:
        if event["event"] == "STOP":
            ts = event["timestamp"]["seconds"] + event["timestamp"]["microseconds"] / 1e6
            return float(ts - started) * 1000
    return None


def qtest(path: Path, *commands: str) -> list[str]:
    import socket

    answers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        reader = sock.makefile("r")
        for command in commands:
            sock.sendall(command.encode() + b"\n")
            answers.append(reader.readline().strip())
    return answers


def write_mark(path: Path, value: int) -> None:
    (answer,) = qtest(path, f"writel {MARK_ADDR:#x} {value:#x}")
    if answer != "OK":
        raise RuntimeError(f"qtest writel answered {answer!r}")


def read_mark(path: Path) -> int:
    (answer,) = qtest(path, f"readl {MARK_ADDR:#x}")
    if not answer.startswith("OK "):
        raise RuntimeError(f"qtest readl answered {answer!r}")
    return int(answer.split()[1], 16)


def check_preload(mon: BenchMonitor, work: Path, random_bin: Path) -> None:
    """Check that the guest's RAM holds the preloaded data (its first MiB)."""
    dump = work / f"{mon.name}-head.dump"
    mon.execute("pmemsave", {"val": LOADER_ADDR, "size": MIB, "filename": str(dump)})
    try:
        with open(random_bin, "rb") as data:
            if dump.read_bytes() != data.read(MIB):
                raise RuntimeError(f"{mon.name}: guest RAM does not hold the preloaded data")
    finally:
        dump.unlink(missing_ok=True)


def check_hugepages(mon: BenchMonitor) -> None:
    """Check that the guest RAM of *mon*'s domain is a preallocated hugetlb memory backend of
    ``HUGEPAGE_KIB`` pages (``query-memdev``, ``qom-get``)."""
    ram = [m for m in mon.execute("query-memdev") if m.get("size") == RAM_MIB * MIB]
    if len(ram) != 1:
        raise RuntimeError(f"{mon.name}: no memory backend of {RAM_MIB} MiB (query-memdev)")
    path = f"/objects/{ram[0]['id']}"
    hugetlb = mon.execute("qom-get", {"path": path, "property": "hugetlb"})
    pagesize = mon.execute("qom-get", {"path": path, "property": "hugetlbsize"})
    if hugetlb is not True or pagesize != HUGEPAGE_KIB * 1024 or ram[0].get("prealloc") is not True:
        raise RuntimeError(
            f"{mon.name}: guest RAM {path} is not preallocated {HUGEPAGE_KIB} kB hugetlb "
            f"(hugetlb {hugetlb}, hugetlbsize {pagesize}, prealloc {ram[0].get('prealloc')})"
        )


def ram_in_use(mon: BenchMonitor, work: Path) -> int:
    """Bytes of guest RAM in non-zero 4 KiB pages, from a ``pmemsave`` of the whole RAM.

    Reading every page maps QEMU's untouched RAM, which changes what QEMU's first background
    snapshot has to do: so this runs on a libvirt domain (whose migrations read every page
    anyway), never on snapcore's; both hold the same data.
    """
    dump = work / f"{mon.name}-ram.dump"
    mon.execute("pmemsave", {"val": 0, "size": RAM_MIB * MIB, "filename": str(dump)}, timeout=120)
    zero = bytes(4096)
    used = 0
    try:
        with open(dump, "rb") as fh:
            while chunk := fh.read(4 * MIB):
                used += sum(
                    4096 for off in range(0, len(chunk), 4096) if chunk[off : off + 4096] != zero
                )
    finally:
        dump.unlink(missing_ok=True)
    return used


# ------------------------------------------------------------------------------------------
# the four sides
# ------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One column of the table and its per-run figures."""

    label: str
    create_wall: list[float] = field(default_factory=list)
    downtime: list[float | None] = field(default_factory=list)
    before_pause: list[float | None] = field(default_factory=list)
    qemu_downtime: list[float | None] = field(default_factory=list)
    libvirt_downtime: list[float | None] = field(default_factory=list)
    image: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    revert_wall: list[float] = field(default_factory=list)
    revert_ok: list[bool] = field(default_factory=list)
    qemu_total: list[float | None] = field(default_factory=list)  # query-migrate total-time
    image_alloc: list[int] = field(default_factory=list)  # bytes allocated (sparse images)
    formats: list[str] = field(default_factory=list)  # per run: how QEMU wrote / read it
    sync_after: list[float] = field(default_factory=list)  # s: the sync right after a save
    note: str = ""
    commands: list[str] = field(default_factory=list)
    measured: bool = True


class SnapcoreSide:
    def __init__(self, work: Path, random_bin: Path):
        self.work = work
        self.state = work / "state"
        self.disks = make_disks(work, "sc")
        self.mon = BenchMonitor(work / "sc-mon.sock", "sc")
        self.qtest = work / "sc-qtest.sock"
        argv = snapcore_argv(self.disks, random_bin, self.mon.path, self.qtest)
        self.domain = work / "sc.toml"
        lines = [
            'name = "snapcore-bench"', 'hypervisor = "qemu"', "", "[qemu]",
            f'qmp = "{work / "sc-qmp.sock"}"',
            "argv = [" + ", ".join(json.dumps(a) for a in argv) + "]",
        ]  # fmt: skip
        for vdev, path in self.disks.items():
            lines += ["", "[[disk]]", f'vdev = "{vdev}"', f'path = "{path}"', 'driver = "qcow2"']
        self.domain.write_text("\n".join(lines) + "\n")
        self.base = [SNAPCORE, "--state-dir", str(self.state)]
        # Bytecode cached as in any installed package, but outside the source tree: this
        # environment sets PYTHONDONTWRITEBYTECODE=1, which would recompile every module of
        # snapcore on each command (tens of ms).
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        self.result = Side("snapcore")
        self.result.commands = [
            f"{TIME} -f %M {' '.join(self.base)} snapshot-create --json -n cN DOMAIN.toml",
            f"{' '.join(self.base)} snapshot-revert -n cN DOMAIN.toml",
        ]
        self.paused = Side("snapcore paused ckpt")
        self.paused.commands = [
            "(QMP stop) " + f"{' '.join(self.base)} snapshot-create --json -n pN DOMAIN.toml",
            f"{' '.join(self.base)} snapshot-revert -n pN DOMAIN.toml (comes back paused)",
        ]

    def start(self) -> None:
        run([*self.base, "domain-start", str(self.domain)], timeout=60, env=self.env)
        self.mon.connect()
        # warm the bytecode cache (and check the plan) before anything is timed
        run(
            [*self.base, "snapshot-create", "--dry-run", "-n", "warm", str(self.domain)],
            env=self.env,
        )

    def create(self, i: int) -> None:
        r = self.result
        write_mark(self.qtest, 0xC0DE0000 + i)
        self.mon.drain()
        rss_file = self.work / "rss.txt"
        t = timed(
            [TIME, "-f", "%M", "-o", str(rss_file), *self.base, "snapshot-create", "--json",
             "-n", f"c{i}", str(self.domain)],
            env=self.env,
        )  # fmt: skip
        events = self.mon.collect()
        migrate = self.mon.execute("query-migrate")
        write_mark(self.qtest, 0xDEAD0000 + i)
        out = json.loads(t.proc.stdout)
        r.create_wall.append(t.seconds)
        r.downtime.append(stopped_ms(events))
        r.before_pause.append(first_stop_ms(events, t.started))
        r.qemu_downtime.append(migrate.get("downtime"))
        r.qemu_total.append(migrate.get("total-time"))
        r.libvirt_downtime.append(None)
        r.image.append(os.path.getsize(out["memory_image"]["path"]))
        r.formats.append(f"image {out['memory_image'].get('format', '?')}")
        r.rss.append(int(rss_file.read_text().split()[-1]) * 1024)

    def revert(self, i: int) -> None:
        wall = timed(
            [*self.base, "snapshot-revert", "-n", f"c{i}", str(self.domain)], env=self.env
        ).seconds
        self.mon.connect()
        ok = self.mon.query_status() == "running" and read_mark(self.qtest) == 0xC0DE0000 + i
        self.result.revert_wall.append(wall)
        self.result.revert_ok.append(ok)

    def paused_save(self, i: int) -> None:
        """A checkpoint with memory of the domain paused first (snapcore's paused save), then
        the revert to it (its restore); the domain runs again afterwards (untimed)."""
        r = self.paused
        write_mark(self.qtest, 0xBEEF0000 + i)
        self.mon.execute("stop")
        t = timed(
            [*self.base, "snapshot-create", "--json", "-n", f"p{i}", str(self.domain)],
            env=self.env,
        )
        r.sync_after.append(sync_seconds())
        out = json.loads(t.proc.stdout)
        saved = migration_format(self.mon)
        write_mark(self.qtest, 0xDEAD0000 + i)
        image = Path(out["memory_image"]["path"])
        restore = timed(
            [*self.base, "snapshot-revert", "-n", f"p{i}", str(self.domain)], env=self.env
        )
        self.mon.connect()
        status = self.mon.query_status()
        ok = status != "running" and read_mark(self.qtest) == 0xBEEF0000 + i
        restored = migration_format(self.mon)
        self.mon.execute("cont")
        r.create_wall.append(t.seconds)
        r.revert_wall.append(restore.seconds)
        r.revert_ok.append(ok)
        r.image.append(image.stat().st_size)
        r.image_alloc.append(image.stat().st_blocks * 512)
        fmt = (out.get("memory_image") or {}).get("format", "?")
        r.formats.append(f"image {fmt}, QEMU after the save {saved}, after the restore {restored}")

    def guarded(self, step: str, action: Callable[[], None]) -> None:
        """Run *action*; if it fails, report snapcore as not measured and carry on with
        libvirt's side."""
        try:
            action()
        except Exception as exc:
            self.result.measured = False
            self.result.note = f"{step} failed: {exc}"
            print(f"  snapcore: {self.result.note}")

    def startup(self) -> float:
        return statistics.median(
            timed([SNAPCORE, "--version"], env=self.env).seconds for _ in range(5)
        )

    def cleanup(self) -> None:
        self.mon.close()
        if (self.work / "sc-qmp.sock").exists():
            run(
                [*self.base, "domain-stop", str(self.domain)], check=False, timeout=60, env=self.env
            )
        for pidfile in self.state.glob("domains/*/work/qemu.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                if pid_alive(pid):
                    terminate(pid)


class LibvirtSide:
    """A libvirt domain; *mode* is "internal", "external" or "live" (external --live)."""

    LABELS: ClassVar[dict[str, str]] = {
        "internal": "libvirt (internal)",
        "external": "libvirt (external)",
        "live": "libvirt (ext --live)",
        "save": "virsh save sparse",
    }

    def __init__(self, work: Path, random_bin: Path, mode: str):
        self.work = work
        self.mode = mode
        self.tag = {"internal": "lvi", "external": "lve", "live": "lvl", "save": "lvs"}[mode]
        self.name = DOMAIN_PREFIX + mode
        self.disks = make_disks(work, self.tag)
        self.mon = BenchMonitor(work / f"{self.tag}-mon.sock", self.tag)
        self.qtest = work / f"{self.tag}-qtest.sock"
        self.xml = work / f"{self.tag}.xml"
        self.xml.write_text(
            libvirt_xml(self.name, self.disks, random_bin, self.mon.path, self.qtest)
        )
        self.result = Side(self.LABELS[mode])
        self.defined = False
        if mode == "internal":
            self.result.commands = [
                f"virsh snapshot-create-as --domain {self.name} intN",
                f"virsh snapshot-revert {self.name} intN",
            ]
        elif mode == "save":
            self.sparse = True
            self.result.commands = [
                f"(virsh suspend) virsh save {self.name} FILE --image-format sparse"
                f" --parallel-channels {SAVE_CHANNELS}",
                f"virsh restore FILE --parallel-channels {SAVE_CHANNELS} (comes back paused)",
            ]
        else:
            self.result.commands = [
                f"virsh snapshot-create-as {self.name} extN"
                + (" --live" if mode == "live" else "")
                + f" --memspec file=.../{self.tag}-extN.mem,snapshot=external"
                + f" --diskspec vda,snapshot=external,file=.../{self.tag}-vda.extN.qcow2"
                + f" --diskspec vdb,snapshot=external,file=.../{self.tag}-vdb.extN.qcow2"
            ]

    def virsh(
        self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return run([*VIRSH, *args], check=check, timeout=timeout)

    def start(self) -> None:
        remove_libvirt_domain(self.name)  # left over from an interrupted run
        self.virsh("define", str(self.xml))
        self.defined = True
        try:
            self.virsh("start", self.name, timeout=60)
        except RuntimeError as exc:
            if not (HUGEPAGES.enabled and HUGETLBFS_MISSING in str(exc)):
                raise
            HUGEPAGES.provide_hugetlbfs(str(exc).rsplit(": ", 1)[-1])
            self.virsh("start", self.name, timeout=60)
        self.mon.connect()

    def create(self, i: int) -> None:
        r = self.result
        write_mark(self.qtest, 0xC0DE0000 + i)
        self.mon.drain()
        if self.mode == "internal":
            argv = [*VIRSH, "snapshot-create-as", "--domain", self.name, f"int{i}"]
        else:
            mem = self.work / f"{self.tag}-ext{i}.mem"
            argv = [*VIRSH, "snapshot-create-as", self.name, f"ext{i}"]
            if self.mode == "live":
                argv.append("--live")
            argv += ["--memspec", f"file={mem},snapshot=external"]
            for vdev in self.disks:
                target = self.work / f"{self.tag}-{vdev}.ext{i}.qcow2"
                argv += ["--diskspec", f"{vdev},snapshot=external,file={target}"]
        t = timed(argv)
        events = self.mon.collect()
        migrate = self.mon.execute("query-migrate")
        write_mark(self.qtest, 0xDEAD0000 + i)
        jobinfo = self.virsh("domjobinfo", self.name, "--completed", check=False).stdout
        found = re.search(r"Total downtime:\s+(\d+)\s*ms", jobinfo)
        r.create_wall.append(t.seconds)
        r.downtime.append(stopped_ms(events))
        r.before_pause.append(first_stop_ms(events, t.started))
        if self.mode == "internal":
            # savevm runs as a migration in QEMU but reports no downtime of its own
            r.qemu_downtime.append(None)
            r.image.append(self._vmstate_size(f"int{i}"))
        else:
            r.qemu_downtime.append(migrate.get("downtime"))
            r.image.append(os.path.getsize(self.work / f"{self.tag}-ext{i}.mem"))
        r.libvirt_downtime.append(float(found.group(1)) if found else None)

    def save_restore(self, i: int) -> None:
        """``virsh save`` of the domain paused first, in the sparse (mapped-ram) format with
        parallel channels, then ``virsh restore`` of it; the domain runs again afterwards
        (untimed). Where libvirt or QEMU refuses the sparse format (QEMU 7.2 has no mapped-ram),
        libvirt's default format, once said in the notes."""
        r = self.result
        write_mark(self.qtest, 0xBEEF0000 + i)
        self.virsh("suspend", self.name)
        image = self.work / f"{self.tag}-save{i}.img"
        extra = ["--image-format", "sparse", "--parallel-channels", str(SAVE_CHANNELS)]
        self.mon.close()
        try:
            t = timed([*VIRSH, "save", self.name, str(image), *(extra if self.sparse else [])])
        except RuntimeError as exc:
            if not self.sparse:
                raise
            self.sparse = False
            r.label = "virsh save (raw)"
            why = str(exc).strip().splitlines()[-1]
            r.note = f"sparse refused, libvirt's default format measured instead ({why})"
            print(f"  {r.note}", flush=True)
            image.unlink(missing_ok=True)
            t = timed([*VIRSH, "save", self.name, str(image)])
        r.sync_after.append(sync_seconds())
        size, alloc = image.stat().st_size, image.stat().st_blocks * 512
        restore = timed([*VIRSH, "restore", str(image), *(extra[2:] if self.sparse else [])])
        self.mon.connect()
        ok = self.mon.query_status() != "running" and read_mark(self.qtest) == 0xBEEF0000 + i
        restored = migration_format(self.mon)
        self.virsh("resume", self.name)
        image.unlink()
        r.create_wall.append(t.seconds)
        r.revert_wall.append(restore.seconds)
        r.revert_ok.append(ok)
        r.image.append(size)
        r.image_alloc.append(alloc)
        r.formats.append(f"restore {restored}")

    def _vmstate_size(self, name: str) -> int:
        info = json.loads(
            run(["qemu-img", "info", "-U", "--output=json", str(self.disks["vda"])]).stdout
        )
        for snap in info.get("snapshots", []):
            if snap.get("name") == name:
                return int(snap["vm-state-size"])
        raise RuntimeError(f"internal snapshot {name} not found in {self.disks['vda']}")

    def revert(self, i: int) -> None:
        snap = f"int{i}" if self.mode == "internal" else f"ext{i}"
        wall = timed([*VIRSH, "snapshot-revert", self.name, snap]).seconds
        self.mon.connect()
        ok = self.mon.query_status() == "running" and read_mark(self.qtest) == 0xC0DE0000 + i
        self.result.revert_wall.append(wall)
        self.result.revert_ok.append(ok)

    def cleanup(self) -> None:
        self.mon.close()
        if self.defined:
            remove_libvirt_domain(self.name)
            log = Path(f"/var/log/libvirt/qemu/{self.name}.log")
            log.unlink(missing_ok=True)


def sync_seconds() -> float:
    """Time a ``sync`` (what a save left to write back; dd's figure includes its fsync)."""
    start = time.perf_counter()
    os.sync()
    return time.perf_counter() - start


def migration_format(mon: BenchMonitor) -> str:
    """How the QEMU behind *mon* is set to migrate: mapped-ram and multifd (with its channels)
    or the plain stream, read from ``query-migrate-capabilities``/``-parameters``."""
    try:
        caps = {c["capability"]: c["state"] for c in mon.execute("query-migrate-capabilities")}
        params = mon.execute("query-migrate-parameters")
    except Exception as exc:
        return f"? ({exc})"
    got = []
    if caps.get("mapped-ram"):
        got.append("mapped-ram")
    if caps.get("multifd"):
        got.append(f"multifd x{params.get('multifd-channels', '?')}")
    if params.get("direct-io"):
        got.append("direct-io")
    return "+".join(got) if got else "stream"


class DdSide:
    """``dd`` writing DD_MIB MiB of zeros to a new file in the scratch directory, with fsync."""

    def __init__(self, work: Path):
        self.path = work / "dd.bin"
        self.argv = [
            "dd", "if=/dev/zero", f"of={self.path}", "bs=1M", f"count={DD_MIB}",
            "conv=fsync", "status=none",
        ]  # fmt: skip
        self.seconds: list[float] = []

    def measure(self) -> None:
        self.seconds.append(timed(self.argv).seconds)
        self.path.unlink()

    def speed(self) -> float | None:
        """Bytes per second, from the median time."""
        m = median(self.seconds)
        return None if m is None else DD_MIB * MIB / m


def remove_libvirt_domain(name: str) -> None:
    state = run([*VIRSH, "domstate", name], check=False, timeout=30)
    if state.returncode != 0:
        return  # no such domain
    if "shut off" not in state.stdout:
        run([*VIRSH, "destroy", name], check=False, timeout=60)
    run([*VIRSH, "undefine", name, "--snapshots-metadata"], check=False, timeout=60)


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def fmt_mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f} MiB"


def ratio(ours: float | None, theirs: float | None, ref: str) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    r = ours / theirs
    return f"{r:.2f}x {ref}" if r >= 0.1 else f"{r:.3f}x {ref}"


@dataclass
class Medians:
    downtime: float | None
    qemu_downtime: float | None
    libvirt_downtime: float | None
    wall: float | None  # ms
    before_pause: float | None
    image: float | None
    revert: float | None  # ms
    rss: float | None
    qemu_total: float | None  # ms, QEMU's own time for the memory save
    image_alloc: float | None
    synced: float | None = None  # ms: a save and the sync after it (median of the sums)

    @classmethod
    def of(cls, side: Side) -> Medians:
        if not side.measured:
            return cls(None, None, None, None, None, None, None, None, None, None)

        def ms(values: Sequence[float]) -> float | None:
            m = median(values)
            return None if m is None else m * 1000

        return cls(
            downtime=median(side.downtime),
            qemu_downtime=median(side.qemu_downtime),
            libvirt_downtime=median(side.libvirt_downtime),
            wall=ms(side.create_wall),
            before_pause=median(side.before_pause),
            image=median(side.image),
            revert=ms(side.revert_wall),
            rss=median(side.rss),
            qemu_total=median(side.qemu_total),
            image_alloc=median(side.image_alloc),
            synced=ms([a + b for a, b in zip(side.create_wall, side.sync_after, strict=False)])
            if side.sync_after
            else None,
        )


@dataclass
class PassResult:
    """What one pass (one QEMU) measured, for the targets and the summary at the end."""

    qemu: str  # "7.2" or "10"
    version: str
    ours: Medians
    internal: Medians
    external: Medians
    live: Medians
    paused: Medians
    save: Medians
    save_label: str
    save_formats: list[str]
    paused_formats: list[str]
    dd_speed: float | None  # bytes/s
    ram_used: int
    verdicts: list[str] = field(default_factory=list)


def print_table(header: list[str], rows: list[tuple[str, list[str], str]], last: str) -> None:
    widths = [42] + [max(20, len(h) + 2) for h in header[1:]]
    print("".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + last)
    print("-" * (sum(widths) + 24))
    for name, row, rat in rows:
        print("".join(c.ljust(w) for c, w in zip([name, *row], widths, strict=True)) + rat)


def report(sides: list[Side], ram_used: int, startup: float | None, runs: int) -> None:
    """The checkpoints of the running domains (snapcore, libvirt's three kinds)."""
    sc, lvi, lve = sides[0], sides[1], sides[2]
    m = {side.label: Medians.of(side) for side in sides}
    ours, internal, external = m[sc.label], m[lvi.label], m[lve.label]
    nonlive = [v for v in (internal.downtime, external.downtime) if v is not None]
    best_nonlive = min(nonlive) if nonlive else None
    dash = ["-"] * (len(sides) - 1)

    def cells(get: Callable[[Medians], str]) -> list[str]:
        return [get(m[side.label]) for side in sides]

    rows: list[tuple[str, list[str], str]] = [
        (
            "guest downtime (STOP->RESUME)",
            cells(lambda x: fmt_ms(x.downtime)),
            ratio(ours.downtime, best_nonlive, "best non-live"),
        ),
        ("  QEMU migration 'downtime'", cells(lambda x: fmt_ms(x.qemu_downtime)), ""),
        ("  libvirt domjobinfo downtime", cells(lambda x: fmt_ms(x.libvirt_downtime)), ""),
        (
            "checkpoint wall time",
            cells(lambda x: fmt_ms(x.wall)),
            ratio(ours.wall, external.wall, "ext"),
        ),
        ("  from start to the pause", cells(lambda x: fmt_ms(x.before_pause)), ""),
        ("  QEMU's memory save (total-time)", cells(lambda x: fmt_ms(x.qemu_total)), ""),
        (
            "  snapcore --version",
            [fmt_ms(None if startup is None else startup * 1000), *dash],
            "",
        ),
        (
            "memory image",
            cells(lambda x: fmt_mib(x.image)),
            ratio(ours.image, external.image, "ext"),
        ),
        (
            "  image / RAM in use",
            cells(lambda x: "-" if x.image is None else f"{x.image / ram_used:.4f}x"),
            "",
        ),
        (
            "revert with memory, wall",
            [fmt_ms(m[s.label].revert) if s.revert_wall else "n/a" for s in sides],
            ratio(ours.revert, external.revert, "ext")
            + f" ({ratio(ours.revert, internal.revert, 'int')})",
        ),
        ("peak RSS of snapcore", [fmt_mib(ours.rss), *dash], ""),
    ]
    backed = f", on {HUGEPAGE_KIB // 1024} MiB hugepages" if HUGEPAGES.enabled else ""
    print(
        f"\n[QEMU {EMU.label}] Checkpoint with memory of a running domain, {runs} runs each, "
        f"medians (guest RAM in use {ram_used / MIB:.1f} MiB of {RAM_MIB} MiB{backed}):\n"
    )
    print_table(["metric", *(side.label for side in sides)], rows, "snapcore/ref")
    print_runs(sides)


def report_saves(paused: Side, save: Side, dd: DdSide, runs: int) -> None:
    """The paused saves and their restores, and dd, side by side."""
    ours, theirs = Medians.of(paused), Medians.of(save)
    speed = dd.speed()

    def rate(m: Medians) -> str:
        if m.wall is None:
            return "-"
        return f"{RAM_MIB / (m.wall / 1000):.0f} MiB/s"

    def synced_rate(m: Medians) -> str:
        if m.synced is None:
            return "-"
        return f"{RAM_MIB / (m.synced / 1000):.0f} MiB/s"

    def data_rate(m: Medians) -> str:
        if m.synced is None or m.image_alloc is None:
            return "-"
        return f"{m.image_alloc / MIB / (m.synced / 1000):.0f} MiB/s"

    dd_ms = median(dd.seconds)
    rows: list[tuple[str, list[str], str]] = [
        (
            "save wall time",
            [
                fmt_ms(ours.wall),
                fmt_ms(theirs.wall),
                fmt_ms(None if dd_ms is None else dd_ms * 1e3),
            ],
            ratio(ours.wall, theirs.wall, "virsh save"),
        ),
        (
            "save + the sync after it",
            [
                fmt_ms(ours.synced),
                fmt_ms(theirs.synced),
                fmt_ms(None if dd_ms is None else dd_ms * 1e3),
            ],
            ratio(ours.synced, theirs.synced, "virsh save"),
        ),
        (
            f"  speed ({RAM_MIB} MiB RAM / (save + sync))",
            [
                synced_rate(ours),
                synced_rate(theirs),
                "-" if speed is None else f"{speed / MIB:.0f} MiB/s",
            ],
            "-"
            if ours.synced is None or speed is None
            else f"{RAM_MIB * MIB / (ours.synced / 1000) / speed:.2f}x dd",
        ),
        (
            "  data written / (save + sync)",
            [
                data_rate(ours),
                data_rate(theirs),
                "-" if speed is None else f"{speed / MIB:.0f} MiB/s",
            ],
            "-"
            if ours.synced is None or ours.image_alloc is None or speed is None
            else f"{ours.image_alloc / (ours.synced / 1000) / speed:.2f}x dd",
        ),
        (
            f"  speed ({RAM_MIB} MiB RAM / save time)",
            [rate(ours), rate(theirs), "-" if speed is None else f"{speed / MIB:.0f} MiB/s"],
            "-"
            if ours.wall is None or speed is None
            else f"{RAM_MIB * MIB / (ours.wall / 1000) / speed:.2f}x dd",
        ),
        ("  image, apparent size", [fmt_mib(ours.image), fmt_mib(theirs.image), "-"], ""),
        ("  image, allocated", [fmt_mib(ours.image_alloc), fmt_mib(theirs.image_alloc), "-"], ""),
        (
            "restore wall time",
            [fmt_ms(ours.revert), fmt_ms(theirs.revert), "-"],
            ratio(ours.revert, theirs.revert, "virsh restore"),
        ),
    ]
    print(
        f"\n[QEMU {EMU.label}] Save of the paused domain and its restore, {runs} runs each, "
        "medians (snapcore: a checkpoint with memory of the paused domain, disks included; "
        f"dd: {DD_MIB} MiB, conv=fsync):\n"
    )
    print_table(["metric", paused.label, save.label, "dd"], rows, "snapcore/ref")
    print_runs([paused, save])
    print(f"  dd: {[round(s * 1000) for s in dd.seconds]} ms")


def print_runs(sides: list[Side]) -> None:
    def lst(values: Sequence[float | None], scale: float = 1.0) -> str:
        return "[" + ", ".join("-" if v is None else f"{v * scale:.1f}" for v in values) + "]"

    print("\nPer run (downtime, to-pause, wall and revert in ms; image and rss in MiB):")
    for side in sides:
        if side.measured:
            print(
                f"  {side.label}: "
                + (f"downtime {lst(side.downtime)} " if side.downtime else "")
                + (f"to-pause {lst(side.before_pause)} " if side.before_pause else "")
                + f"wall {lst(side.create_wall, 1000)} image {lst(side.image, 1 / MIB)}"
                + (f" qemu-total {lst(side.qemu_total)}" if side.qemu_total else "")
                + (f" sync-after {lst(side.sync_after, 1000)}" if side.sync_after else "")
                + (f" revert {lst(side.revert_wall, 1000)}" if side.revert_wall else "")
                + (f" rss {lst(side.rss, 1 / MIB)}" if side.rss else "")
            )
        if side.revert_ok:
            print(
                f"    reverts/restores that brought back their RAM marker: "
                f"{sum(side.revert_ok)}/{len(side.revert_ok)}"
            )
        if side.formats:
            print(f"    memory images: {'; '.join(sorted(set(side.formats)))}")
        if side.note:
            print(f"    {side.label}: {side.note}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def targets(res: PassResult) -> None:
    """Issue 11's targets for this pass (the last three are on QEMU 10; on 7.2 they are
    printed for reference), and issue 3's image and RSS figures."""
    ours, ext = res.ours, res.external
    on10 = res.qemu == "10"
    tag = "" if on10 else " (for reference: the target is on QEMU 10)"
    pages = f"{HUGEPAGE_KIB // 1024} MiB hugepages" if HUGEPAGES.enabled else "4 KiB pages"
    out: list[str] = []
    nonlive = [v for v in (res.internal.downtime, ext.downtime) if v is not None]
    best = min(nonlive) if nonlive else None
    d = ours.downtime
    if d is None:
        out.append("not measured  guest pause: snapcore did not checkpoint the running domain")
    else:
        times = None if best is None else best / max(d, 1e-6)
        ok = d < 50 and times is not None and times >= 10
        out.append(
            f"{verdict(ok)}  guest pause {fmt_ms(d)} < 50 ms and "
            + ("?" if times is None else f"{times:.1f}x")
            + f" below libvirt {LIBVIRT_WANTED}'s best non-live ({fmt_ms(best)}); needs >= 10x"
        )
        if d >= 50 and ours.qemu_total is not None and d >= 0.8 * ours.qemu_total:
            out.append(
                f"      the guest stayed stopped through QEMU's whole background snapshot "
                f"(total-time {fmt_ms(ours.qemu_total)}, QEMU's own downtime "
                f"{fmt_ms(ours.qemu_downtime)}): since 9.0 QEMU resumes, after a background "
                "snapshot's setup, only vCPUs that ran when it began (vm_resume(vm_old_state)), "
                "and snapcore stops them before it starts the save"
            )
    if ours.revert is not None and ext.revert is not None:
        out.append(
            f"{verdict(ours.revert <= ext.revert)}  revert with memory {fmt_ms(ours.revert)} "
            f"<= libvirt external revert {fmt_ms(ext.revert)}{tag}"
        )
    else:
        out.append("not measured  revert with memory against libvirt's external revert")
    p, s = res.paused, res.save
    mapped = all("mapped-ram" in f.split(",")[0] for f in res.paused_formats) and bool(
        res.paused_formats
    )
    how = (
        "mapped-ram" if mapped else "NOT mapped-ram: " + "; ".join(sorted(set(res.paused_formats)))
    )
    if p.wall is not None and p.synced is not None and res.dd_speed is not None:
        speed = RAM_MIB * MIB / (p.synced / 1000)
        ok = speed >= 0.8 * res.dd_speed and s.wall is not None and p.wall <= s.wall
        out.append(
            f"{verdict(ok and mapped)}  paused save of {RAM_MIB} MiB RAM ({how}): "
            f"{fmt_ms(p.wall)}, with the sync after it {fmt_ms(p.synced)}: "
            f"{speed / MIB:.0f} MiB/s = {speed / res.dd_speed:.2f}x dd's "
            f"{res.dd_speed / MIB:.0f} MiB/s with fsync (needs >= 0.8x); and {fmt_ms(p.wall)} <= "
            f"{res.save_label} {fmt_ms(s.wall)} (with the sync {fmt_ms(s.synced)}){tag}"
        )
    if ours.wall is not None and ext.wall is not None:
        line = (
            f"{verdict(ours.wall <= ext.wall)}  checkpoint wall time on {pages} {fmt_ms(ours.wall)}"
            f" <= libvirt external non-live {fmt_ms(ext.wall)}{tag}"
        )
        if ours.wall > ext.wall and ours.qemu_total is not None:
            line += (
                f"; QEMU's background snapshot alone took {fmt_ms(ours.qemu_total)} "
                f"(query-migrate total-time), snapcore's start to the pause "
                f"{fmt_ms(ours.before_pause)}"
            )
        out.append(line)
    if ours.image is not None and ours.rss is not None:
        out.append(
            f"(issue 3) {verdict(ours.image <= 1.05 * res.ram_used)} image "
            f"{ours.image / res.ram_used:.4f}x the RAM in use <= 1.05x; "
            f"{verdict(ours.rss < 100 * MIB)} peak RSS {fmt_mib(ours.rss)} < 100 MiB"
        )
    res.verdicts = out
    print(f"\n[QEMU {res.qemu}] Targets (issue 11; {pages}):")
    for line in out:
        print(f"  {line}")


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------


def snapcore_live_status() -> tuple[bool, str]:
    """Whether snapcore's qcow2 backend can snapshot running disks (``plugins --json``)."""
    proc = run([SNAPCORE, "plugins", "--json"], check=False, timeout=60)
    try:
        records = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return False, f"snapcore plugins --json failed: {proc.stderr.strip()}"
    for record in records:
        backend = record.get("backend") or {}
        if backend.get("driver") == "qcow2":
            if backend.get("live"):
                return True, "qcow2 backend reports live=true"
            return False, "the qcow2 backend reports live=false (no live qcow2 snapshots yet)"
    return False, "snapcore has no qcow2 backend"


def machine_load() -> str:
    """The load average, and how much runnable work waited for a CPU (Linux PSI), if known."""
    load = "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    with contextlib.suppress(OSError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        avg = dict(kv.split("=") for kv in some.split()[1:])
        load += f", cpu pressure {avg['avg10']}% (10 s) {avg['avg60']}% (60 s)"
    return load


def describe_machine(qemus: dict[str, str]) -> None:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    snapcore = run([SNAPCORE, "--version"], check=False).stdout.strip()
    commit = run(["git", "-C", str(Path(__file__).resolve().parent), "log", "-1", "--format=%h"],
                 check=False).stdout.strip()  # fmt: skip
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, {machine_load()}")
    print(f"         libvirt {LibvirtHost.version()}; {snapcore} (tree at {commit or '?'}); TCG")
    for label, binary in qemus.items():
        print(f"         QEMU {label}: {Emulator(label, binary).version()} ({binary})")


def write_random(path: Path) -> None:
    with open(path, "wb") as fh:
        for _ in range(DATA_MIB):
            fh.write(os.urandom(MIB))


def measure(work: Path, runs: int, snapcore_ok: bool, why: str) -> PassResult:
    """Build the five domains in *work* on the current QEMU, run the benchmark, print the
    report, clean up."""
    random_bin = work / "random.bin"
    write_random(random_bin)
    sc: SnapcoreSide | None = None
    libvirt: list[LibvirtSide] = []
    try:
        sc = SnapcoreSide(work, random_bin)
        sc.result.measured = sc.paused.measured = snapcore_ok
        if not snapcore_ok:
            sc.result.note = why
        libvirt = [
            LibvirtSide(work, random_bin, mode) for mode in ("internal", "external", "live", "save")
        ]
        if sc.result.measured:
            sc.guarded("domain-start", sc.start)
        for side in libvirt:
            side.start()
        mons = [side.mon for side in libvirt] + ([sc.mon] if sc.result.measured else [])
        for mon in mons:
            check_preload(mon, work, random_bin)
        if HUGEPAGES.enabled:
            for mon in mons:
                check_hugepages(mon)
            info = meminfo()
            print(
                f"hugepages: the RAM of all {len(mons)} domains is on preallocated "
                f"{HUGEPAGE_KIB} kB hugetlb pages (memory-backend-memfd; query-memdev, qom-get); "
                f"HugePages_Total {info.get('HugePages_Total')}, "
                f"HugePages_Free {info.get('HugePages_Free')}"
            )
        ram_used = ram_in_use(libvirt[0].mon, work)
        print(f"guest RAM in use: {ram_used / MIB:.1f} MiB in non-zero pages of {RAM_MIB} MiB")
        time.sleep(2)  # let the firmware settle (it finds no boot disk and waits)
        startup = sc.startup() if sc.result.measured else None
        dd = DdSide(work)
        alternate(sc, libvirt, dd, runs)
        if HUGEPAGES.enabled:
            recheck_hugepages([*([sc] if sc.result.measured else []), libvirt[0]])
        results = [sc.result, *(side.result for side in libvirt[:3])]
        report(results, ram_used, startup, runs)
        report_saves(sc.paused, libvirt[3].result, dd, runs)
        m = [Medians.of(r) for r in results]
        res = PassResult(
            qemu=EMU.label,
            version=EMU.version(),
            ours=m[0],
            internal=m[1],
            external=m[2],
            live=m[3],
            paused=Medians.of(sc.paused),
            save=Medians.of(libvirt[3].result),
            save_label=libvirt[3].result.label,
            save_formats=libvirt[3].result.formats,
            paused_formats=sc.paused.formats,
            dd_speed=dd.speed(),
            ram_used=ram_used,
        )
        targets(res)
        print("\nCommands measured:")
        for result in [*results, sc.paused, libvirt[3].result]:
            for command in result.commands:
                print(f"  {command}")
        print(f"  {' '.join(dd.argv)}")
        print(f"\nat the end of the QEMU {EMU.label} pass: {machine_load()}")
        return res
    finally:
        for side in libvirt:
            with contextlib.suppress(Exception):
                side.cleanup()
        if sc is not None:
            with contextlib.suppress(Exception):
                sc.cleanup()


def recheck_hugepages(sides: Sequence[SnapcoreSide | LibvirtSide]) -> None:
    """After the reverts (which may restart QEMU): is the RAM still on hugepages?"""
    for side in sides:
        try:
            check_hugepages(side.mon)
            print(f"  hugepages after the reverts, {side.mon.name}: still preallocated hugetlb")
        except Exception as exc:
            print(f"  hugepages after the reverts: {exc}")


def alternate(sc: SnapcoreSide, libvirt: list[LibvirtSide], dd: DdSide, runs: int) -> None:
    """In turn, *runs* times: the checkpoints of the running domains (snapcore, libvirt's
    three), then the paused saves and restores (snapcore's, virsh save's) and dd, then the
    reverts (snapcore, libvirt internal, libvirt external). The running checkpoints come first,
    all in the QEMU processes they started in, as in issue 3's runs: a restore restarts QEMU,
    and a fresh QEMU's first background snapshot pauses the guest for less."""
    measured = sc.result.measured
    for i in range(runs):
        print(f"run {i + 1}/{runs}: checkpoints", flush=True)
        if measured:
            sc.guarded("snapshot-create", functools.partial(sc.create, i))
        for side in libvirt[:3]:
            side.create(i)
    for i in range(runs):
        print(f"run {i + 1}/{runs}: paused saves and restores, dd", flush=True)
        if measured:
            sc.guarded("paused save", functools.partial(sc.paused_save, i))
        libvirt[3].save_restore(i)
        dd.measure()
    for i in range(runs):
        print(f"run {i + 1}/{runs}: reverts", flush=True)
        if sc.result.measured:
            sc.guarded("snapshot-revert", functools.partial(sc.revert, i))
        libvirt[0].revert(i)
        libvirt[1].revert(i)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--qemu",
        choices=("7.2", "10", "both"),
        default="both",
        help="QEMU 7.2 (the system's), QEMU 10.0 (bookworm-backports, unpacked by "
        "scripts/qemu10.sh), or both, one after the other (default)",
    )
    parser.add_argument(
        "--keep-cache",
        action="store_true",
        help="do not drop the scratch files' page cache before each timed command",
    )
    parser.add_argument(
        "--hugepages",
        action="store_true",
        help=f"back every domain's {RAM_MIB} MiB RAM with preallocated {HUGEPAGE_KIB // 1024} MiB "
        "hugetlb pages (memory-backend-memfd); reserves them in /proc/sys/vm/nr_hugepages "
        "for the run",
    )
    args = parser.parse_args()
    CACHE.keep = args.keep_cache
    HUGEPAGES.enabled = args.hugepages
    if os.geteuid() != 0:
        print("run as root: libvirt's system daemon and its domains are needed", file=sys.stderr)
        return 2
    if not os.path.exists(TIME):
        print(f"{TIME} is needed (Debian package 'time')", file=sys.stderr)
        return 2
    if not HUGEPAGES.enabled:
        return benchmark(args.runs, args.qemu)
    # the reserved pages go back also when the run is killed with SIGTERM
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        print(f"hugepages: {HUGEPAGES.reserve()}")
        return benchmark(args.runs, args.qemu)
    except HugepagesError as exc:  # the pages not granted, or libvirt cannot use them
        print(f"--hugepages: {exc}", file=sys.stderr)
        return 2
    finally:
        HUGEPAGES.restore()


def benchmark(runs: int, which: str) -> int:
    snapcore_ok, why = snapcore_live_status()
    print("setting up libvirt:")
    host = LibvirtHost()
    HUGEPAGES.host = host
    results: list[PassResult] = []
    try:
        qemu10 = host.setup()
        qemus = {"7.2": QEMU_SYSTEM, "10": qemu10}
        if which != "both":
            qemus = {which: qemus[which]}
        describe_machine(qemus)
        print(f"snapcore: {why}")
        if HUGEPAGES.enabled:
            print(
                f"guest RAM: {RAM_MIB} MiB on preallocated {HUGEPAGE_KIB // 1024} MiB hugetlb "
                f"pages in every domain: snapcore's QEMU {' '.join(hugepage_args())}; "
                f"libvirt {LIBVIRT_MEMORY_BACKING}"
            )
        SCRATCH.mkdir(parents=True, exist_ok=True)
        for label, binary in qemus.items():
            EMU.label, EMU.binary = label, binary
            print(f"\n=== QEMU {label}: {EMU.version()} ({binary}); {machine_load()}", flush=True)
            work = Path(tempfile.mkdtemp(prefix="live-", dir=SCRATCH))
            CACHE.scratch = work
            print(
                "page cache: "
                + (
                    "kept (--keep-cache)"
                    if CACHE.keep
                    else "scratch files dropped before each timed command"
                )
            )
            try:
                results.append(measure(work, runs, snapcore_ok, why))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        host.teardown()
    if len(results) > 1:
        print(f"\nSummary: issue 11's targets, {runs} runs, medians")
        for res in results:
            print(f"  QEMU {res.qemu} ({res.version}):")
            for line in res.verdicts:
                print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
