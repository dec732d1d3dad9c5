"""Fixtures of the LVM suite, which runs inside the virtme-ng guest (scripts/lvm-guest.sh).

On a host without device-mapper every test here is skipped. Inside the guest, a session volume
group ``sc`` (with a thin pool ``sc/pool``) lives on a loop device backed by a sparse file in
the guest's ``/dev/shm``; tests that need a nearly full VG make their own small one. Data is
written and read with ``O_DIRECT``, so that no page cache can hide what LVM did to a volume,
and LV state is read with ``lvs --reportformat json`` directly, never through the plugin.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from snapcore.model import Disk

IN_GUEST = os.environ.get("SNAPCORE_LVM_GUEST") == "1"
MiB = 1024 * 1024
VG = "sc"
POOL = "pool"
LVM_ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1", "LC_ALL": "C"}


def _device_mapper() -> bool:
    try:
        with open("/proc/misc", encoding="ascii") as f:
            return "device-mapper" in f.read()
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if IN_GUEST and _device_mapper():
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="needs device-mapper: run scripts/lvm-guest.sh")
    for item in items:
        if here in item.path.parents:
            item.add_marker(skip)


# -- commands, run directly (not through the plugin) --------------------------------------------


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=LVM_ENV, check=False)
    if check:
        assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.strip()}"
    return proc


def lvs(vg: str) -> dict[str, dict[str, str]]:
    """Every LV of *vg*, hidden ones too, by name (brackets removed), as lvs reports them."""
    out = run(
        "lvs", "--all", "--reportformat", "json", "--units", "b", "--nosuffix",
        "--options", "lv_name,lv_attr,lv_size,origin,lv_tags,lv_uuid,snap_percent,data_percent",
        vg,
    ).stdout  # fmt: skip
    rows = json.loads(out)["report"][0]["lv"]
    return {r["lv_name"].strip("[]"): r for r in rows}


def _buffer(length: int) -> mmap.mmap:
    return mmap.mmap(-1, max(length, mmap.PAGESIZE))


def write(path: str, offset: int, data: bytes) -> None:
    """Write *data* (a multiple of 4 KiB) at *offset*, bypassing the page cache."""
    buf = _buffer(len(data))
    buf[: len(data)] = data
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        done = os.pwritev(fd, [memoryview(buf)[: len(data)]], offset)
        assert done == len(data)
    finally:
        os.close(fd)
        buf.close()


def read(path: str, offset: int, length: int) -> bytes:
    """Read *length* bytes (a multiple of 4 KiB) at *offset*, bypassing the page cache."""
    buf = _buffer(length)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        done = os.preadv(fd, [memoryview(buf)[:length]], offset)
        return bytes(buf[:done])
    finally:
        os.close(fd)
        buf.close()


def digest(path: str) -> str:
    """SHA-256 of the whole device, read with O_DIRECT."""
    h = hashlib.sha256()
    size = os.stat(path).st_size or _blocksize(path)
    offset = 0
    while offset < size:
        chunk = read(path, offset, min(MiB, size - offset))
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def _blocksize(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def fill(path: str, seed: int) -> str:
    """Fill the device with data derived from *seed*; return its digest."""
    size = _blocksize(path)
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    offset = 0
    while offset < size:
        n = min(MiB, size - offset)
        write(path, offset, block[:n])
        offset += n
    return digest(path)


def lv_digest(vg: str, name: str) -> str:
    """Digest of any LV, activating a skipped (inactive) thin snapshot for the read."""
    path = f"/dev/{vg}/{name}"
    if os.path.exists(path):
        return digest(path)
    run("lvchange", "--activate", "y", "--ignoreactivationskip", f"{vg}/{name}")
    try:
        return digest(path)
    finally:
        run("lvchange", "--activate", "n", f"{vg}/{name}")


# -- volume groups and volumes ------------------------------------------------------------------

_names = itertools.count(1)


@dataclass
class LoopVg:
    """A volume group on a loop device backed by a file in /dev/shm."""

    name: str
    size_mib: int
    backing: str = ""
    loop: str = ""

    def create(self) -> LoopVg:
        self.backing = f"/dev/shm/{self.name}.img"
        with open(self.backing, "wb") as f:
            f.truncate(self.size_mib * MiB)
        self.loop = run("losetup", "--find", "--show", self.backing).stdout.strip()
        run("pvcreate", "-q", self.loop)
        run("vgcreate", "-q", self.name, self.loop)
        return self

    def destroy(self) -> None:
        run("vgremove", "-q", "-f", self.name, check=False)
        run("pvremove", "-q", "-f", self.loop, check=False)
        run("losetup", "-d", self.loop, check=False)
        Path(self.backing).unlink(missing_ok=True)


@dataclass
class Volumes:
    """Makes LVs for one test and removes them (and their snapshots) afterwards."""

    vg: str
    pool: str | None = POOL
    made: list[str] = field(default_factory=list)

    def classic(self, size_mib: int = 16, *, vdev: str = "vdb", **options: str) -> Disk:
        name = f"c{next(_names)}"
        run("lvcreate", "-q", "-y", "--size", f"{size_mib}m", "--name", name, self.vg)
        self.made.append(name)
        return Disk(vdev=vdev, path=f"/dev/{self.vg}/{name}", driver="lvm", options=options)

    def thin(self, size_mib: int = 16, *, vdev: str = "vdb", **options: str) -> Disk:
        assert self.pool is not None
        name = f"t{next(_names)}"
        run(
            "lvcreate", "-q", "-y", "--virtualsize", f"{size_mib}m", "--thin",
            f"{self.vg}/{self.pool}", "--name", name,
        )  # fmt: skip
        self.made.append(name)
        return Disk(vdev=vdev, path=f"/dev/{self.vg}/{name}", driver="lvm", options=options)

    def cleanup(self) -> None:
        present = lvs(self.vg)
        doomed = [
            n
            for n in present
            if any(n == m or n.startswith(m + "+") for m in self.made)
            and not present[n]["lv_attr"].startswith(("S", "O"))
        ]
        # snapshots first, then origins
        for name in sorted(doomed, key=lambda n: "+" not in n):
            run("lvremove", "-q", "-f", f"{self.vg}/{name}", check=False)


@pytest.fixture(scope="session")
def vg() -> Iterator[str]:
    """The session VG ``sc`` (1 GiB) with a 384 MiB thin pool ``sc/pool``."""
    group = LoopVg(VG, 1024).create()
    run("lvcreate", "-q", "-y", "--size", "384m", "--thinpool", POOL, VG)
    yield VG
    group.destroy()


@pytest.fixture
def volumes(vg: str) -> Iterator[Volumes]:
    """LVs in ``sc`` for this test; removed with their snapshots when it ends."""
    made = Volumes(vg)
    yield made
    made.cleanup()


@pytest.fixture
def small_vg() -> Iterator[LoopVg]:
    """A VG of its own with ten 4 MiB extents (41 MiB: the PV header takes one), for tests
    that run out of space."""
    group = LoopVg(f"scsmall{next(_names)}", 41).create()
    yield group
    group.destroy()


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, Any]]:
    """Measurements: written to $SNAPCORE_LVM_RESULTS (measurements.json, .md) at the end."""
    found: dict[str, Any] = {}
    yield found
    out = os.environ.get("SNAPCORE_LVM_RESULTS")
    if not out or not found:
        return
    Path(out, "measurements.json").write_text(json.dumps(found, indent=2) + "\n")
    lines = ["", "## LVM measurements (TCG guest, 2 vCPUs)", ""]
    for key, value in found.items():
        if isinstance(value, dict) and "table" in value:
            lines += [f"### {key}", "", *value["table"], ""]
    Path(out, "measurements.md").write_text("\n".join(lines) + "\n")
