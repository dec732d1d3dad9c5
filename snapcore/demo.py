"""``snapcore demo``: the main job on a scratch domain built in a temporary directory.

It makes a domain with two qcow2 disks, writes data, creates an internal and an external
checkpoint, overwrites the data, reverts to the older checkpoint and then the newer one, checks
with ``qemu-io`` each time that the right data came back, lists, and deletes both checkpoints
(the external one merged back). Every line it reports goes through *say*; it never prints.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from snapcore.errors import SnapcoreError
from snapcore.model import CreateOptions, DiskChoice
from snapcore.process import ShRunner

if TYPE_CHECKING:
    from snapcore.api import Host

DISK_SIZE = "64M"


class DemoError(SnapcoreError):
    """The demo found data that did not come back as it should (a bug: please report it)."""


def run_demo(  # noqa: PLR0915 (one linear story)
    say: Callable[[str], None], *, keep: bool = False, qemu: str = "qemu-system-x86_64"
) -> None:
    """Run the demo, reporting each step through *say*; the running-domain part runs on the
    QEMU binary *qemu* (skipped, with a line saying so, when it is not found).

    :raises SnapcoreError: a tool is missing or an operation failed (with its message).
    :raises DemoError: data read back did not match.
    """
    from snapcore.api import Host

    run = ShRunner()
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="snapcore-demo-"))
    try:
        images = scratch / "images"
        images.mkdir()
        disks = {"vda": images / "demo-vda.qcow2", "vdb": images / "demo-vdb.qcow2"}
        for path in disks.values():
            run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), DISK_SIZE])
        domain_file = scratch / "demo.toml"
        domain_file.write_text(
            textwrap.dedent(
                f"""\
                name = "demo"
                [[disk]]
                vdev = "vda"
                path = "{disks["vda"]}"
                [[disk]]
                vdev = "vdb"
                path = "{disks["vdb"]}"
                """
            )
        )
        say(f"scratch domain 'demo' in {scratch}: two 64 MiB qcow2 disks, vda and vdb")

        def write(vdev: str, pattern: int) -> None:
            run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} 0 1M", str(disks[vdev])])

        def check(vdev: str, pattern: int) -> None:
            out = run(
                ["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern:#x} 0 1M", str(disks[vdev])]
            )
            if "verification failed" in out.stdout:
                raise DemoError(f"disk {vdev}: expected byte {pattern:#x}, the data differs")

        host = Host(state_dir=scratch / "state")
        dom = host.open_domain(domain_file)

        write("vda", 0x11)
        write("vdb", 0x22)
        say("wrote 1 MiB of 0x11 to vda and 0x22 to vdb")
        cp = dom.create(CreateOptions(name="first", description="internal snapshots"))
        say(f"created snapshot {cp.name!r}: " + ", ".join(f"{d.vdev} {d.kind}" for d in cp.disks))

        write("vda", 0x33)
        write("vdb", 0x44)
        say("wrote 0x33 to vda and 0x44 to vdb")
        target = images / "demo-vdb.second.qcow2"
        cp = dom.create(
            CreateOptions(
                name="second",
                description="vdb external",
                disks=(DiskChoice(vdev="vda"), DiskChoice(vdev="vdb", target=str(target))),
            )
        )
        say(
            f"created snapshot {cp.name!r}: vda internal, vdb external "
            f"(its data now in {target.name}, a new overlay at {disks['vdb'].name})"
        )

        write("vda", 0x55)
        write("vdb", 0x66)
        say("wrote 0x55 to vda and 0x66 to vdb")

        dom.revert("first")
        check("vda", 0x11)
        check("vdb", 0x22)
        say("reverted to 'first': vda reads 0x11, vdb reads 0x22 again (checked with qemu-io)")
        dom.revert("second")
        check("vda", 0x33)
        check("vdb", 0x44)
        say("reverted to 'second' (newer, kept by the revert): vda 0x33, vdb 0x44 (checked)")

        for view in dom.list(verify=True):
            c = view.checkpoint
            mark = "*" if view.current else " "
            disks_text = ", ".join(f"{d.vdev}:{d.kind}" for d in c.disks)
            say(f"  {mark} {c.name:<8} parent={c.parent or '-':<6} {disks_text}")

        dom.delete("second")
        check("vda", 0x33)
        check("vdb", 0x44)
        say("deleted 'second' (vdb's layer merged back): current data unchanged (checked)")
        dom.revert("first")
        check("vdb", 0x22)
        dom.delete("first")
        say("reverted to 'first' once more (data checked) and deleted it")
        if dom.list():
            raise DemoError("snapshots are left after deleting them all")
        if shutil.which(qemu):
            _running_demo(say, scratch, host, disks, qemu)
        else:
            say(f"{qemu} is not installed: skipped the running-domain part")
        say(f"done in {time.monotonic() - started:.1f} s: every check passed")
    finally:
        if keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


MARK_ADDR = 0x100000  # a guest-physical address in RAM


def _qtest(path: Path, *commands: str) -> list[str]:
    """Talk to QEMU's qtest socket: the demo's way to change and read guest RAM."""
    answers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        reader = sock.makefile("r")
        for command in commands:
            sock.sendall(command.encode() + b"\n")
            answers.append(reader.readline().strip())
    return answers


def _hmp(path: Path, line: str) -> str:
    """Run one human-monitor command over QEMU's QMP socket at *path* (the demo's way to do a
    guest's disk I/O): greeting, ``qmp_capabilities``, ``human-monitor-command``, one JSON object
    per line. snapcore's own QMP client belongs to the qemu plugin."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        reader = sock.makefile("r")

        def answer() -> dict[str, object]:
            while True:
                message = json.loads(reader.readline())
                if "return" in message or "error" in message:
                    return dict(message)

        reader.readline()  # the greeting
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        answer()
        command = {"execute": "human-monitor-command", "arguments": {"command-line": line}}
        sock.sendall(json.dumps(command).encode() + b"\n")
        reply = answer()
    if "error" in reply:
        raise DemoError(f"QEMU refused {line!r}: {reply['error']}")
    return str(reply["return"])


def _running_demo(
    say: Callable[[str], None], scratch: Path, host: Host, disks: dict[str, Path], qemu: str
) -> None:
    """Start the scratch domain in QEMU (TCG, no guest OS), checkpoint it with its memory
    while it runs, change memory and disks, and revert: both come back."""
    qmp_path = scratch / "demo.qmp"
    qtest_path = scratch / "demo.qtest"
    argv = [qemu, "-accel", "tcg", "-machine", "q35", "-nodefaults"]
    argv += ["-display", "none", "-m", "128M"]
    for vdev, path in disks.items():
        argv += [
            "-blockdev",
            f"driver=qcow2,node-name={vdev},file.driver=file,file.filename={path}",
            "-device",
            f"virtio-blk-pci,drive={vdev},id={vdev}-dev",
        ]
    argv += ["-qtest", f"unix:{qtest_path},server=on,wait=off"]
    domain_file = scratch / "demo-live.toml"
    lines = ['name = "demo-live"', 'hypervisor = "qemu"', "[qemu]", f'qmp = "{qmp_path}"']
    lines.append("argv = [" + ", ".join(f'"{a}"' for a in argv) + "]")
    for vdev, path in disks.items():
        lines += ["[[disk]]", f'vdev = "{vdev}"', f'path = "{path}"']
    domain_file.write_text("\n".join(lines) + "\n")
    dom = host.open_domain(domain_file)

    def mark(value: int) -> None:
        _qtest(qtest_path, f"writel {MARK_ADDR:#x} {value:#x}")

    def read_mark() -> int:
        return int(_qtest(qtest_path, f"readl {MARK_ADDR:#x}")[0].split()[1], 16)

    def guest_io(vdev: str, command: str) -> str:
        device = f"/machine/peripheral/{vdev}-dev/virtio-backend"
        return _hmp(qmp_path, f'qemu-io -d {device} "{command}"')

    version = ShRunner()([qemu, "--version"]).stdout.splitlines()[0].strip()
    version = version.replace("QEMU emulator version ", "QEMU ")
    say("")
    say(f"running domain: {version} (TCG, no guest OS), the same two disks, 128 MiB of RAM")
    dom.start()
    try:
        mark(0xC0FFEE)
        guest_io("vda", "write -P 0x77 0 1M")
        say("the guest's RAM holds 0xc0ffee at 0x100000; vda holds 0x77 (written by the guest)")
        started = time.monotonic()
        cp = dom.create(CreateOptions(name="live", description="running, with memory"))
        size = cp.memory.size if cp.memory and cp.memory.size else 0
        say(
            f"created snapshot 'live' of the running domain in {time.monotonic() - started:.2f} s:"
            f" disks in one QMP transaction, memory image {size / 2**20:.1f} MiB saved while"
            " the guest ran"
        )
        mark(0xBAD)
        guest_io("vda", "write -P 0x99 0 1M")
        say("the guest overwrote its RAM marker (0xbad) and vda (0x99)")
        dom.revert("live")
        if read_mark() != 0xC0FFEE:
            raise DemoError(f"memory did not come back: the marker reads {read_mark():#x}")
        if "verification failed" in guest_io("vda", "read -P 0x77 0 1M"):
            raise DemoError("disk vda did not come back to 0x77")
        say(
            f"reverted to 'live': the domain is {dom.state().value} again, its RAM marker reads "
            "0xc0ffee and vda 0x77 (checked)"
        )
    finally:
        with contextlib.suppress(SnapcoreError):
            dom.stop()
    dom.delete("live")
    say("stopped the domain and deleted 'live'")
