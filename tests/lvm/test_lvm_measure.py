"""Live checkpoints and what they cost, measured in the guest (TCG: figures are slow in absolute
terms; compare them with each other).

A real QEMU (the host's ``qemu-system-x86_64``, under TCG inside the TCG guest, with no guest OS
and 64 MiB of RAM) runs a domain with one qcow2 disk and 1, 2 or 4 classic LV disks, started,
checkpointed and reverted through ``snapcore.Host`` with the ``qemu`` hypervisor plugin. A
second QMP monitor receives QEMU's ``STOP`` and ``RESUME`` events: the guest's pause is the time
between them, by QEMU's own timestamps. The test checks that every ``lvcreate`` of a checkpoint
runs inside that pause, that each disk has its snapshot afterwards and that reverts bring back
the data of both kinds of disk, and records the pause of a disk-only checkpoint and of one with
memory. Write throughput is measured with fio on a plain LV, a classic LV with a full-size
snapshot, and a thin LV with a snapshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from snapcore import CreateOptions, DomainHandle, Host
from snapcore.model import DomainState
from snapcore.process import DEFAULT_TIMEOUT, Result, ShRunner
from tests.lvm.conftest import MiB, Volumes, fill, lvs, read, run
from tests.qemuvm import domain_argv, write_domain_file

pytestmark = pytest.mark.lvm

KiB = 1024


class TimedRunner:
    """The real runner, recording when each command starts and ends on the wall clock (the
    clock of QEMU's event timestamps)."""

    def __init__(self, events: list[tuple[str, float]]):
        self.events = events
        self._real = ShRunner()
        self._lock = threading.Lock()

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Sequence[int] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        start = time.time()
        try:
            return self._real(argv, ok_codes=ok_codes, timeout=timeout, env=env)
        finally:
            with self._lock:
                name = os.path.basename(argv[0])
                self.events.append((f"{name} start", start))
                self.events.append((f"{name} end", time.time()))


class Monitor:
    """A second QMP monitor of a running QEMU (``-chardev socket,... -mon mode=control``):
    every event QEMU sends, with its timestamp, and commands that need not wait for the monitor
    snapcore uses (QEMU serves one client per socket)."""

    def __init__(self, path: Path):
        self.events: list[tuple[str, float]] = []
        self._changed = threading.Condition()
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 30
        while True:
            try:
                self._sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._lines = self._sock.makefile("r", encoding="utf-8")
        assert "QMP" in json.loads(self._lines.readline())
        self._thread = threading.Thread(target=self._read, name="monitor", daemon=True)
        self._thread.start()
        self.execute("qmp_capabilities")

    def _read(self) -> None:
        try:
            for line in self._lines:
                message = json.loads(line)
                if "event" not in message:
                    self._replies.put(message)
                    continue
                stamp = message["timestamp"]
                with self._changed:
                    self.events.append(
                        (message["event"], stamp["seconds"] + stamp["microseconds"] / 1e6)
                    )
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # closed under us, or QEMU went away mid-line
        finally:
            self._replies.put(None)

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        reply = self._replies.get(timeout=120)
        assert reply is not None, f"QEMU closed its monitor during {command}"
        assert "error" not in reply, f"{command}: {reply['error']}"
        return reply["return"]

    def qemu_io(self, vdev: str, command: str) -> str:
        """Run a qemu-io command on disk *vdev* through its guest device (HMP ``qemu-io -d``)."""
        device = f"/machine/peripheral/{vdev}-dev/virtio-backend"
        line = f'qemu-io -d {device} "{command}"'
        out = str(self.execute("human-monitor-command", {"command-line": line}))
        assert "rror" not in out, out
        return out

    def holds(self, vdev: str, pattern: int) -> bool:
        return "verification failed" not in self.qemu_io(vdev, f"read -P {pattern:#x} 0 64k")

    def since(self, first: int, until: str) -> list[tuple[str, float]]:
        """The events from the *first*-th on, once one named *until* is among them."""
        with self._changed:
            assert self._changed.wait_for(
                lambda: any(e == until for e, _ in self.events[first:]), timeout=30
            ), f"no {until} event: {self.events[first:]}"
            return list(self.events[first:])

    def internal_snapshots(self, vdev: str) -> list[str]:
        """The internal snapshots QEMU sees in the image of disk *vdev*."""
        for device in self.execute("query-block"):
            inserted = device.get("inserted") or {}
            if inserted.get("node-name") == vdev:
                return [s["name"] for s in inserted["image"].get("snapshots", [])]
        raise AssertionError(f"QEMU has no disk {vdev}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(10)
        self._lines.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def qemu_reaper(volumes: Volumes) -> Iterator[list[Path]]:
    """State dirs whose QEMU processes are killed when the test ends, before the ``volumes``
    fixture removes the LVs they hold open."""
    del volumes
    state_dirs: list[Path] = []
    yield state_dirs
    for state in state_dirs:
        for pidfile in state.glob("domains/*/work/qemu.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)


#: The number of LV disks with which the reverts are checked too: the two reverts take about 8 s
#: per LV disk in the guest, so they are checked once, with more than one LV disk.
REVERTED = 2


def _pattern(phase: int, disk: int) -> int:
    """The byte written to disk number *disk* in *phase* (0x11, 0x12... then 0x21...)."""
    return phase * 0x10 + disk + 1


def _measure(
    domain: DomainHandle,
    monitor: Monitor,
    commands: list[tuple[str, float]],
    options: CreateOptions,
) -> dict[str, Any]:
    """Create a checkpoint of the running domain; check that every lvcreate ran inside the
    guest's pause and return the figures."""
    first = len(monitor.events)
    commands.clear()
    began = time.time()
    checkpoint = domain.create(options)
    whole = time.time() - began
    assert checkpoint.state is DomainState.RUNNING
    lv_disks = len(checkpoint.disks) - 1
    assert [d.driver for d in checkpoint.disks] == ["qcow2", *["lvm"] * lv_disks]
    assert (checkpoint.memory is not None) is (options.memory != "no")
    events = monitor.since(first, "RESUME")
    stops = [t for e, t in events if e == "STOP"]
    resumes = [t for e, t in events if e == "RESUME"]
    assert len(stops) == 1, events
    assert len(resumes) == 1, events
    assert domain.state() is DomainState.RUNNING
    starts = sorted(t for e, t in commands if e == "lvcreate start")
    ends = sorted(t for e, t in commands if e == "lvcreate end")
    assert len(starts) == lv_disks
    assert stops[0] <= starts[0], "an lvcreate started before QEMU stopped the guest"
    assert ends[-1] <= resumes[0], "an lvcreate ended after QEMU resumed the guest"
    return {
        "pause_s": resumes[0] - stops[0],
        "lvcreate_s": [e - s for s, e in zip(starts, ends, strict=True)],
        "create_s": whole,
    }


@pytest.mark.parametrize("count", [1, 2, 4])
def test_live_checkpoint_pause_of_a_real_qemu(
    count: int,
    volumes: Volumes,
    qemu_reaper: list[Path],
    tmp_path: Path,
    results: dict[str, Any],
) -> None:
    vda = tmp_path / "vda.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(vda), "16M")
    origins = [volumes.classic(4, vdev=f"vd{chr(ord('b') + i)}") for i in range(count)]
    disks = {"vda": vda, **{d.vdev: Path(d.path) for d in origins}}
    argv = domain_argv({"vda": vda}, memory_mib=64)
    for disk in origins:  # raw on the LV's block device, claimed by the lvm driver by its path
        argv += [
            "-blockdev",
            f"driver=raw,node-name={disk.vdev},file.driver=host_device,file.filename={disk.path}",
            "-device",
            f"virtio-blk-pci,drive={disk.vdev},id={disk.vdev}-dev",
        ]
    events_socket = tmp_path / "events.sock"
    argv += [
        "-chardev",
        f"socket,id=events,path={events_socket},server=on,wait=off",
        "-mon",
        "chardev=events,mode=control",
    ]
    domain_file = write_domain_file(
        tmp_path / "mixed.toml", f"mixed{count}", disks, tmp_path / "qmp.sock", argv
    )
    state = tmp_path / "state"
    qemu_reaper.append(state)
    commands: list[tuple[str, float]] = []
    domain = Host(state_dir=state, runner=TimedRunner(commands)).open_domain(domain_file)
    assert domain.start() is DomainState.RUNNING
    monitor = Monitor(events_socket)
    try:
        for i, vdev in enumerate(disks):
            monitor.qemu_io(vdev, f"write -P {_pattern(1, i):#x} 0 64k")
        disk_only = _measure(domain, monitor, commands, CreateOptions(name="d", memory="no"))
        for i, vdev in enumerate(disks):
            monitor.qemu_io(vdev, f"write -P {_pattern(2, i):#x} 0 64k")
        memory = _measure(domain, monitor, commands, CreateOptions(name="m", memory="yes"))
        assert monitor.internal_snapshots("vda") == ["d", "m"]
        found = lvs(volumes.vg)
        for disk in origins:
            lv = disk.path.rsplit("/", 1)[1]
            for name in ("d", "m"):
                assert "snapcore" in found[f"{lv}+{name}"]["lv_tags"].split(","), found
        _record(results, count, disk_only, memory)
        if count == REVERTED:
            for i, vdev in enumerate(disks):
                monitor.qemu_io(vdev, f"write -P {_pattern(3, i):#x} 0 64k")
            # with memory: QEMU stops, the disks are reverted, QEMU starts again from the image
            domain.revert("m")
            monitor.close()
            monitor = Monitor(events_socket)
            assert domain.state() is DomainState.RUNNING
            for i, vdev in enumerate(disks):
                assert monitor.holds(vdev, _pattern(2, i)), f"{vdev} after the revert to m"
    finally:
        monitor.close()
    if count != REVERTED:
        domain.stop()
        return

    domain.revert("d")  # disk-only: QEMU stops, the disks are reverted, the domain stays off
    assert domain.state() is DomainState.SHUTOFF
    check = run(
        "qemu-io", "-f", "qcow2", "-r", "-c", f"read -P {_pattern(1, 0):#x} 0 64k", str(vda)
    )
    assert "verification failed" not in check.stdout, check.stdout
    for i, disk in enumerate(origins, start=1):
        assert read(disk.path, 0, 64 * KiB) == bytes([_pattern(1, i)]) * 64 * KiB, disk.vdev
    found = lvs(volumes.vg)
    for disk in origins:  # a revert keeps every snapshot
        lv = disk.path.rsplit("/", 1)[1]
        assert {f"{lv}+d", f"{lv}+m"} <= set(found)


def _record(
    results: dict[str, Any], count: int, disk_only: dict[str, Any], memory: dict[str, Any]
) -> None:
    entry = results.setdefault(
        "pause",
        {
            "table": [
                "| LV disks | checkpoint | pause (s) | each `lvcreate` (s) | rest of the pause (s)"
                " | whole create (s) |",
                "|---|---|---|---|---|---|",
            ]
        },
    )
    entry[str(count)] = {"disk_only": disk_only, "memory": memory}
    for label, figures in (("disk-only", disk_only), ("with memory", memory)):
        each = figures["lvcreate_s"]
        entry["table"].append(
            f"| {count} | {label} | {figures['pause_s']:.2f} | "
            f"{', '.join(f'{x:.2f}' for x in each)} | {figures['pause_s'] - sum(each):.2f} | "
            f"{figures['create_s']:.1f} |"
        )


def _fio(path: str, rw: str, bs: str, size_mib: int) -> float:
    """Write throughput in MiB/s of one fio job (O_DIRECT, psync) on *path*."""
    if shutil.which("fio") is None:
        pytest.skip("fio is not installed")
    out = subprocess.run(
        [
            "fio", "--name=w", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
            f"--size={size_mib}M", "--direct=1", "--ioengine=psync", "--output-format=json",
            "--randrepeat=1", "--norandommap",
        ],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    job = json.loads(out)["jobs"][0]["write"]
    return float(job["bw_bytes"]) / MiB


def test_write_throughput_classic_against_thin(volumes: Volumes, results: dict[str, Any]) -> None:
    size = 48
    plain = volumes.classic(size)
    classic = volumes.classic(size)
    thin = volumes.thin(size)
    thin_plain = volumes.thin(size)
    for disk in (plain, classic, thin, thin_plain):
        fill(disk.path, 80)  # allocate everything first: measure overwrites only
    vg = volumes.vg
    run("lvcreate", "-q", "--snapshot", "--extents", "100%ORIGIN", "--name",
        f"{classic.path.rsplit('/', 1)[1]}+m", classic.path)  # fmt: skip
    run("lvcreate", "-q", "--snapshot", "--setactivationskip", "y", "--name",
        f"{thin.path.rsplit('/', 1)[1]}+m", f"{vg}/{thin.path.rsplit('/', 1)[1]}")  # fmt: skip
    table = [
        "| LV | sequential 1 MiB writes (MiB/s) | random 4 KiB writes (MiB/s) |",
        "|---|---|---|",
    ]
    figures: dict[str, Any] = {}
    for label, disk in (
        ("classic, no snapshot", plain),
        ("classic, 100%ORIGIN snapshot", classic),
        ("thin, no snapshot", thin_plain),
        ("thin, snapshot", thin),
    ):
        rnd = _fio(disk.path, "randwrite", "4k", 8)  # first: into blocks not yet copied
        seq = _fio(disk.path, "write", "1M", size)
        figures[label] = {"seq_mib_s": seq, "rand4k_mib_s": rnd}
        table.append(f"| {label} | {seq:.1f} | {rnd:.2f} |")
        assert seq > 0
        assert rnd > 0
    figures["table"] = table
    results["throughput"] = figures
