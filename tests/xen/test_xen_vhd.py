"""A VHD disk of a real Xen domain: libxl's qdisk QEMU serves ``format=vhd`` through QEMU's
``vpc`` driver; snapcore checkpoints the stopped domain offline with its native VHD engine
(there is no vhd-util in dom0) beside a qcow2 disk, with the real ``xl``.

What qdisk does with a VHD, as checked here (docs/xen.md, "What works with VHD"):

- a single dynamic VHD works: the guest's writes reach the file, and both QEMU's reader and
  snapcore's read them back;
- a differencing VHD (any disk snapcore has snapshotted: the disk's path is then an empty leaf
  over the snapshot's base) opens, and the domain boots, but QEMU 7.2's ``vpc`` driver ignores
  the parent: the guest reads zeros wherever the leaf has no data; the first block QEMU
  allocates in a leaf without blocks lands right after the BAT, over blktap's batmap and the
  parent locators (snapcore's check: "block 0 (offset 0x4) clobbers headers"); in a leaf that
  has blocks, a block QEMU writes is marked wholly present, hiding the parent's sectors of that
  2 MiB block from every VHD reader;
- a revert to the checkpoint again gives a fresh leaf over the untouched base: the way back.
  Serving a VHD chain needs blktap's tapdisk (not packaged for Debian 12); with qdisk, start a
  domain on its VHD only when the VHD has no parent (after its checkpoints are deleted, the
  chain is one dynamic VHD again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from snapcore.process import default_runner
from snapcore_vhd import ops
from snapcore_vhd.chain import Chain
from snapcore_vhd.errors import CorruptVhdError
from snapcore_xen.xl import Xl
from tests.xen.conftest import XenDomain, measure, reads, run, write, xl, xl_flags

pytestmark = pytest.mark.xen

MiB = 1024 * 1024


def chain_read(vhd: Path, offset: int, length: int) -> bytes:
    """Read through the whole chain with snapcore's reader (parents included)."""
    with Chain(str(vhd)) as chain:
        return chain.read(offset, length)


def chain_write(vhd: Path, offset: int, data: bytes) -> None:
    with Chain(str(vhd), writable=True) as chain:
        chain.write(offset, data)
        chain.flush()


def vpc_io(vhd: Path, command: str) -> str:
    """qemu-io on the VHD alone, as QEMU's ``vpc`` driver (the qdisk's) sees it. Tried for a few
    seconds: the qdisk QEMU of a domain just destroyed may still hold its lock."""
    deadline = time.monotonic() + 20
    while True:
        proc = run("qemu-io", "-f", "vpc", "-c", command, str(vhd), check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr
    assert "verification failed" not in proc.stdout, proc.stdout
    return proc.stdout


def disk_beat(img: Path, fmt: str, tmp: Path) -> int:
    """The heartbeat count the guest last wrote to *img*, as QEMU reads it (``-U``: beside a
    running QEMU)."""
    raw = tmp / "beat.raw"
    run("qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(img), str(raw))
    with open(raw, "rb") as f:
        f.seek(512)
        data = f.read(13)
    raw.unlink()
    assert data.startswith(b"beat "), data
    return int(data[5:13])


def names(dom: XenDomain, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    assert dom.cli("snapshot-list", "--json", str(dom.domain)) == 0
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)}


def test_offline_checkpoints_of_a_stopped_domain_with_qcow2_and_vhd(
    make_domain: Callable[..., XenDomain], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PV domain with a qcow2 disk (xvda) and a VHD disk (xvdb), both on qdisk: it runs and
    its heartbeat reaches the VHD; stopped, snapcore checkpoints it offline twice, reverts to
    the first (the data read back is the first's) and deletes the second; started again on the
    reverted chain it boots, and QEMU's vpc driver shows the documented behaviour with a
    differencing VHD (the parent ignored, the leaf's metadata clobbered by its first block, a
    written block hiding the parent's); a revert brings the checkpoint back, and once the last
    checkpoint is deleted the VHD is a single dynamic VHD that QEMU reads whole again."""
    dom = make_domain(disks=1, vhd=1)
    qcow, vhd = dom.disks[0], dom.vhds[0]

    # 1. the domain runs; qdisk serves the VHD through QEMU's vpc driver
    start = time.monotonic()
    dom.create()
    measure(
        "- `xl create` of a PV domU with a qcow2 and a VHD disk (qdisk, vpc) to its first "
        f"heartbeat: {time.monotonic() - start:.1f} s"
    )
    config = Xl(default_runner()).config(dom.name)
    assert config is not None
    assert [(d.vdev, d.backend, d.format) for d in config.disks] == [
        ("xvda", "qdisk", "qcow2"),
        ("xvdb", "qdisk", "vhd"),
    ]
    assert dom.found() == {"xvda": "zeros", "xvdb": "zeros"}
    dom.wait_heartbeat(3)
    assert disk_beat(vhd, "vpc", tmp_path) >= 1
    # a running VHD disk is switched by tapdisk only: refused up front, the guest never paused
    assert dom.cli("snapshot-create", "-D", "-n", "live", str(dom.domain)) == 2
    err = capsys.readouterr().err
    assert "tap-ctl is not installed" in err, err
    assert "p" not in (xl_flags(dom.name) or "p")
    dom.destroy()
    beat = disk_beat(vhd, "vpc", tmp_path)
    assert beat >= 3
    qbeat = disk_beat(qcow, "qcow2", tmp_path)
    assert qbeat >= 3
    # snapcore's reader agrees with QEMU's on the file QEMU wrote
    assert chain_read(vhd, 512, 13) == f"beat {beat:08d}".encode()
    assert ops.check(str(vhd), parents=True) == []

    # 2. offline checkpoints: create, a second, revert to the first, delete the second
    write(qcow, 0x11, "1M")
    vpc_io(vhd, "write -P 0x11 1M 64k")  # block 0, which holds the heartbeat sector
    vpc_io(vhd, "write -P 0x44 4M 64k")  # block 2, which the guest never writes
    start = time.monotonic()
    assert dom.cli("snapshot-create", "-n", "s1", str(dom.domain)) == 0, capsys.readouterr().err
    created = time.monotonic() - start
    leaf = ops.query(str(vhd))
    assert leaf.disk_type == 4, leaf  # differencing, over s1's base
    assert leaf.parent is not None
    s1_base = Path(leaf.parent)
    write(qcow, 0x22, "1M")
    chain_write(vhd, MiB, b"\x22" * (64 * 1024))
    assert dom.cli("snapshot-create", "-n", "s2", str(dom.domain)) == 0, capsys.readouterr().err
    s2_base = Path(ops.query(str(vhd)).parent or "")
    assert s2_base.exists()
    assert s2_base != s1_base
    write(qcow, 0x33, "1M")
    chain_write(vhd, MiB, b"\x33" * (64 * 1024))
    start = time.monotonic()
    assert dom.cli("snapshot-revert", "-n", "s1", str(dom.domain)) == 0, capsys.readouterr().err
    reverted = time.monotonic() - start
    assert reads(qcow, 0x11, "1M")
    assert chain_read(vhd, MiB, 64 * 1024) == b"\x11" * (64 * 1024)
    assert chain_read(vhd, 4 * MiB, 64 * 1024) == b"\x44" * (64 * 1024)
    assert chain_read(vhd, 512, 13) == f"beat {beat:08d}".encode()
    assert ops.query(str(vhd)).parent == str(s1_base)
    listing = names(dom, capsys)
    assert {n: (c["state"], c["memory"]) for n, c in listing.items()} == {
        "s1": ("shutoff", False),
        "s2": ("shutoff", False),
    }
    assert dom.cli("snapshot-delete", "-n", "s2", str(dom.domain)) == 0, capsys.readouterr().err
    assert not s2_base.exists()
    assert set(names(dom, capsys)) == {"s1"}
    assert chain_read(vhd, MiB, 64 * 1024) == b"\x11" * (64 * 1024)
    assert ops.check(str(vhd), parents=True) == []
    measure(
        f"- offline checkpoint of a stopped Xen domain, a qcow2 and a VHD disk: {created:.2f} s; "
        f"its revert {reverted:.2f} s"
    )
    # QEMU's vpc driver reads the leaf alone: zeros where the data is in the parent
    vpc_io(vhd, "read -P 0 1M 64k")
    vpc_io(vhd, "read -P 0 4M 64k")

    # 3. snapcore refuses to start it on the reverted chain: xl builds it paused, the plugin
    # sees a differencing VHD given to qdisk and destroys it before the guest runs (exit 2)
    seen = len(dom.heartbeats())
    leaf_bytes = vhd.read_bytes()
    assert dom.cli("domain-start", str(dom.domain)) == 2
    err = capsys.readouterr().err
    assert f"disk xvdb ({vhd}) is a VHD with a parent" in err, err
    assert xl_flags(dom.name) is None, "the refused domain is destroyed"
    assert len(dom.heartbeats()) == seen, "the refused guest never ran"
    assert vhd.read_bytes() == leaf_bytes
    assert ops.check(str(vhd), parents=True) == []
    # started by hand with xl, it boots and the guest reads the qcow2 disk as reverted, but the
    # VHD as the empty leaf alone (the parent's "beat N" is not seen); its first write puts
    # block 0 where the QEMU vpc driver thinks the data starts, right after the BAT, over the
    # leaf's batmap and parent locators
    xl("create", str(dom.cfg))
    dom.wait_heartbeat(2, after=seen)
    found = dom.found()
    assert found["xvda"] == f"beat {qbeat:08d}", found
    assert found["xvdb"] == "zeros", found
    dom.destroy()
    new = disk_beat(vhd, "vpc", tmp_path)  # QEMU reads its own write back
    assert new >= 1
    assert "block 0 (offset 0x4) clobbers headers" in ops.check(str(vhd)), ops.check(str(vhd))
    with pytest.raises(CorruptVhdError, match="overlaps the metadata"):
        chain_read(vhd, 512, 13)

    # 4. the way back: revert to the checkpoint again (a fresh leaf over its base, which qdisk
    # never wrote); a leaf that has blocks already keeps its layout under QEMU, but a block QEMU
    # writes is marked present whole, hiding the parent's sectors of that block
    assert dom.cli("snapshot-revert", "-n", "s1", str(dom.domain)) == 0, capsys.readouterr().err
    assert ops.check(str(vhd), parents=True) == []
    assert chain_read(vhd, 512, 13) == f"beat {beat:08d}".encode()
    assert chain_read(vhd, MiB, 64 * 1024) == b"\x11" * (64 * 1024)
    chain_write(vhd, 4 * MiB + 128 * 1024, b"\x66" * 512)  # block 2 now in the leaf, one sector
    vpc_io(vhd, f"write -P 0x77 {4 * MiB + 256 * 1024} 512")
    assert ops.check(str(vhd), parents=True) == []
    assert chain_read(vhd, 4 * MiB, 64 * 1024) == bytes(64 * 1024), "0x44 hidden by QEMU's bitmap"
    assert dom.cli("snapshot-revert", "-n", "s1", str(dom.domain)) == 0, capsys.readouterr().err
    assert chain_read(vhd, 4 * MiB, 64 * 1024) == b"\x44" * (64 * 1024)

    # 5. the last checkpoint deleted, the chain is one dynamic VHD again, which QEMU reads whole
    assert dom.cli("snapshot-delete", "-n", "s1", str(dom.domain)) == 0, capsys.readouterr().err
    assert ops.query(str(vhd)).parent is None
    assert not s1_base.exists()
    assert disk_beat(vhd, "vpc", tmp_path) == beat
    vpc_io(vhd, "read -P 0x11 1M 64k")
    vpc_io(vhd, "read -P 0x44 4M 64k")
    assert names(dom, capsys) == {}
