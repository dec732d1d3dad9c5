"""Real QEMU processes for the tests: a domain with qcow2 (or raw) disks, no guest OS.

QEMU runs under TCG (KVM cannot boot guests on these machines), with its disks attached as
``-blockdev`` nodes named after their vdev, a QMP socket, and a qtest socket through which
tests change guest RAM at any moment (``writel ADDR VALUE``). Disk data is written and read
while QEMU runs through HMP's ``qemu-io`` over QMP, and after it stops with ``qemu-io``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from snapcore_qemu.qmp import QMPSession

#: The QEMU the live tests run: the system's (``qemu-system-x86_64`` on PATH) unless
#: ``SNAPCORE_TEST_QEMU`` names another binary, such as the QEMU 10 that ``scripts/qemu10.sh``
#: unpacks (``scripts/test.sh`` runs the live tests once with each).
QEMU = os.environ.get("SNAPCORE_TEST_QEMU") or "qemu-system-x86_64"


def domain_argv(
    disks: dict[str, Path], *, memory_mib: int = 64, qtest: Path | None = None
) -> list[str]:
    """The QEMU command line of a test domain (without the QMP socket and daemon options,
    which whoever launches it adds)."""
    argv = [
        QEMU,
        "-accel",
        "tcg",
        "-machine",
        "q35",
        "-nodefaults",
        "-display",
        "none",
        "-m",
        f"{memory_mib}M",
    ]
    for vdev, path in disks.items():
        fmt = "qcow2" if path.suffix == ".qcow2" else "raw"
        argv += [
            "-blockdev",
            f"driver={fmt},node-name={vdev},file.driver=file,file.filename={path}",
            "-device",
            f"virtio-blk-pci,drive={vdev},id={vdev}-dev",
        ]
    if qtest is not None:
        argv += ["-qtest", f"unix:{qtest},server=on,wait=off"]
    return argv


def write_domain_file(
    path: Path, name: str, disks: dict[str, Path], qmp: Path, argv: list[str]
) -> Path:
    """A snapcore domain file for a QEMU domain."""
    lines = [f'name = "{name}"', 'hypervisor = "qemu"', "", "[qemu]", f'qmp = "{qmp}"']
    lines.append("argv = [" + ", ".join(f'"{a}"' for a in argv) + "]")
    for vdev, disk in disks.items():
        lines += ["", "[[disk]]", f'vdev = "{vdev}"', f'path = "{disk}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class QemuVM:
    """A QEMU process started directly by the test (not through snapcore)."""

    tmp: Path
    disks: dict[str, Path]
    name: str = "vm"
    memory_mib: int = 64
    proc: subprocess.Popen[bytes] | None = None
    qmp_path: Path = field(init=False)
    qtest_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.qmp_path = self.tmp / f"{self.name}.qmp"
        self.qtest_path = self.tmp / f"{self.name}.qtest"

    @property
    def argv(self) -> list[str]:
        return domain_argv(self.disks, memory_mib=self.memory_mib, qtest=self.qtest_path)

    def domain_file(self) -> Path:
        return write_domain_file(
            self.tmp / f"{self.name}.toml", self.name, self.disks, self.qmp_path, self.argv
        )

    def start(self, *extra: str) -> QemuVM:
        argv = [*self.argv, "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        # QEMU binds its QMP socket (the file appears) a moment before it listens on it:
        # wait until a connection is accepted, or a test's first command may be refused
        while not self._listening():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"QEMU exited: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU does not listen on its QMP socket")
            time.sleep(0.02)
        return self

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.qmp_path))
            except (FileNotFoundError, ConnectionRefusedError):
                return False
        return True

    def qmp(self) -> QMPSession:
        return QMPSession(str(self.qmp_path), domain=self.name).connect()

    def hmp_qemu_io(self, vdev: str, command: str, qmp: QMPSession | None = None) -> str:
        """Run a qemu-io command on a disk of the running QEMU, through the guest device's
        block backend (HMP ``qemu-io -d``), as the guest's own writes would go.

        :raises AssertionError: when qemu-io reports an error or a pattern mismatch.
        """
        device = f"/machine/peripheral/{vdev}-dev/virtio-backend"
        line = {"command-line": f'qemu-io -d {device} "{command}"'}
        if qmp is not None:  # QEMU serves one client per socket: reuse the caller's session
            out = str(qmp.execute("human-monitor-command", line))
        else:
            with self.qmp() as own:
                out = str(own.execute("human-monitor-command", line))
        assert "verification failed" not in out, out
        assert "rror" not in out, out
        return out

    def qtest(self, *commands: str) -> list[str]:
        """Send qtest commands (``writel 0x1000 0xdeadbeef``) and return the answers."""
        answers = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(self.qtest_path))
            reader = sock.makefile("r")
            for command in commands:
                sock.sendall(command.encode() + b"\n")
                answers.append(reader.readline().strip())
        return answers

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.qmp_path)
