"""``snapcore demo``: the main job on a scratch domain built in a temporary directory.

It makes a domain with two qcow2 disks, writes data, creates an internal and an external
checkpoint, overwrites the data, reverts to the older checkpoint and then the newer one, checks
with ``qemu-io`` each time that the right data came back, lists, and deletes both checkpoints
(the external one merged back). Every line it reports goes through *say*; it never prints.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from snapcore.errors import SnapcoreError
from snapcore.model import CreateOptions, DiskChoice
from snapcore.process import ShRunner

DISK_SIZE = "64M"


class DemoError(SnapcoreError):
    """The demo found data that did not come back as it should (a bug: please report it)."""


def run_demo(say: Callable[[str], None], *, keep: bool = False) -> None:  # noqa: PLR0915 (one linear story)
    """Run the demo, reporting each step through *say*.

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
        say(f"done in {time.monotonic() - started:.1f} s: every check passed")
    finally:
        if keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
