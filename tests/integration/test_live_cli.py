"""End to end on a running QEMU domain with two qcow2 disks, through the CLI: checkpoints
with memory (internal and external snapshots), reverts both ways, live deletes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.qemuvm import QemuVM

pytestmark = [pytest.mark.integration, pytest.mark.live]


class Live:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.disks = {v: tmp / f"{v}.qcow2" for v in ("vda", "vdb")}
        for path in self.disks.values():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True
            )
        self.vm = QemuVM(tmp, self.disks, name="web1")
        self.domain = str(self.vm.domain_file())
        self.state = tmp / "state"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "snapcore", "--state-dir", str(self.state), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def ok(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def mark(self, value: int) -> None:
        assert self.vm.qtest(f"writel 0x100000 {value:#x}") == ["OK"]

    def read_mark(self) -> int:
        return int(self.vm.qtest("readl 0x100000")[0].split()[1], 16)

    def write(self, vdev: str, byte: int) -> None:
        self.vm.hmp_qemu_io(vdev, f"write -P {byte:#x} 0 64k")

    def reads(self, vdev: str, byte: int) -> bool:
        try:
            self.vm.hmp_qemu_io(vdev, f"read -P {byte:#x} 0 64k")
        except AssertionError:
            return False
        return True

    def kill(self) -> None:
        for pidfile in self.state.glob("domains/*/work/qemu.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    env = Live(tmp_path)
    yield env
    env.kill()


def test_running_domain_round_trip(live: Live) -> None:
    live.ok("domain-start", live.domain)
    live.mark(0x1111)
    live.write("vda", 0x11)
    live.write("vdb", 0x12)
    out = live.ok("snapshot-create", "-n", "one", live.domain)
    assert "memory in" in out

    live.mark(0x2222)
    live.write("vda", 0x21)
    live.write("vdb", 0x22)
    target = live.tmp / "vdb.two.qcow2"
    cfg = live.tmp / "two.cfg"
    cfg.write_text(f'name = "two"\ndisk = [ "vda", "vdb={target}" ]\n')
    plan = json.loads(live.ok("snapshot-create", "--dry-run", "--json", str(cfg), live.domain))
    assert plan["steps"][0]["action"] == "pause"
    assert "background snapshot" in next(
        s["detail"] for s in plan["steps"] if s["action"] == "save memory"
    )
    live.ok(
        "snapshot-create", str(cfg), live.domain
    )  # a second live checkpoint after an external one
    assert target.exists()

    live.mark(0x3333)
    live.write("vda", 0x31)
    live.write("vdb", 0x32)
    live.ok("snapshot-revert", "-n", "one", live.domain)
    assert live.ok("domain-state", live.domain).strip() == "running"
    assert live.read_mark() == 0x1111
    assert live.reads("vda", 0x11)
    assert live.reads("vdb", 0x12)

    live.ok("snapshot-revert", "-n", "two", live.domain)
    assert live.read_mark() == 0x2222
    assert live.reads("vda", 0x21)
    assert live.reads("vdb", 0x22)

    listing = json.loads(live.ok("snapshot-list", "--json", live.domain))
    assert [(c["name"], c["memory"], c["state"]) for c in listing] == [
        ("one", True, "running"),
        ("two", True, "running"),
    ]
    assert [d["type"] for d in listing[1]["disks"]] == ["internal", "external"]

    # vdb's internal snapshot 'one' now lives in the base image of 'two': a live merge would
    # lose it, so snapcore refuses and says how to go on; nothing is touched.
    refused = live.run("snapshot-delete", "-n", "two", live.domain)
    assert refused.returncode == 2
    assert "delete this snapshot while the domain is stopped" in refused.stderr
    assert target.exists()

    live.ok("domain-stop", live.domain)
    live.ok("snapshot-delete", "-n", "two", live.domain)  # the offline merge keeps 'one'
    assert not target.exists()
    data = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "read -P 0x22 0 64k", str(live.disks["vdb"])],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "verification failed" not in data
    live.ok("snapshot-revert", "-n", "one", live.domain)  # memory: QEMU starts again
    assert live.read_mark() == 0x1111
    assert live.reads("vdb", 0x12)
    live.ok("domain-stop", live.domain)
    live.ok("snapshot-delete", "-n", "one", live.domain)
    assert json.loads(live.ok("snapshot-list", "--json", live.domain)) == []
    for path in live.disks.values():
        subprocess.run(["qemu-img", "check", "-q", str(path)], check=True)


def test_external_checkpoints_merged_while_running(live: Live) -> None:
    live.ok("domain-start", live.domain)
    cfg = live.tmp / "ext.cfg"
    cfg.write_text('type = "external"\n')
    live.write("vda", 0x41)
    live.ok("snapshot-create", "-D", "-n", "a", str(cfg), live.domain)
    live.write("vda", 0x42)
    live.ok("snapshot-create", "-D", "-n", "b", str(cfg), live.domain)
    live.write("vda", 0x43)
    bases = sorted(
        p.name for p in live.tmp.glob("*.qcow2") if p.name not in ("vda.qcow2", "vdb.qcow2")
    )
    assert bases == ["vda.a.qcow2", "vda.b.qcow2", "vdb.a.qcow2", "vdb.b.qcow2"]
    live.ok("snapshot-delete", "-n", "a", live.domain)  # block-stream while the guest runs
    live.ok("snapshot-delete", "-n", "b", live.domain)
    assert live.ok("domain-state", live.domain).strip() == "running"
    assert live.reads("vda", 0x43)
    assert not [p for p in live.tmp.glob("*.qcow2") if p.name not in ("vda.qcow2", "vdb.qcow2")]
    live.ok("domain-stop", live.domain)
    chain = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--backing-chain", "--output=json", str(live.disks["vda"])],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert len(chain) == 1  # every layer merged back: no backing file left
