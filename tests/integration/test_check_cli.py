"""``snapcore check``: records reconciled with storage, read-only unless --repair, through the
CLI on real qcow2 images (issue 9)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


class Setup:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.state = tmp / "state"
        self.domains = tmp / "domains"
        self.domains.mkdir()
        self.vda = tmp / "vda.qcow2"
        self.vdb = tmp / "vdb.qcow2"
        for image in (self.vda, self.vdb):
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True
            )
        self.file = self.domains / "web.toml"
        self.file.write_text(
            'name = "web"\n'
            f'[[disk]]\nvdev = "vda"\npath = "{self.vda}"\n'
            f'[[disk]]\nvdev = "vdb"\npath = "{self.vdb}"\n'
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "snapcore", "--state-dir", str(self.state)]
        argv += ["--domains-dir", str(self.domains), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def ok(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def digest(self) -> dict[str, str]:
        """Every file under tmp (images and state dir) by content, plus the listing."""
        out = {}
        for root, dirs, files in os.walk(self.tmp):
            for name in sorted(dirs):
                out[os.path.join(root, name) + "/"] = ""
            for name in sorted(files):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[path] = hashlib.sha256(f.read()).hexdigest()
        return out


@pytest.fixture
def web(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def _leak(image: Path) -> None:
    """Leave leaked clusters and refcount errors, as a qemu-img snapshot -c killed half-way."""
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x11 0 8M", str(image)], check=True, capture_output=True
    )
    subprocess.run(
        [
            "strace",
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "inject=pwrite64:signal=SIGKILL:when=3",
            "qemu-img",
            "snapshot",
            "-c",
            "x",
            str(image),
        ],
        capture_output=True,
        check=False,
    )
    assert (
        subprocess.run(
            ["qemu-img", "check", str(image)], capture_output=True, check=False
        ).returncode
        != 0
    )


def test_a_clean_domain_is_clean_and_nothing_changes(web: Setup) -> None:
    web.ok("snapshot-create", "-n", "one", "web")
    web.ok("snapshot-create", "-n", "two", "web")
    before = web.digest()

    assert web.ok("check", "web") == "web: clean (2 checkpoints)\n"
    report = json.loads(web.ok("check", "--json"))  # no DOMAIN: every domain file
    assert report == [
        {"domain": "web", "clean": True, "checkpoints": 2, "findings": [], "repairs": []}
    ]
    assert web.digest() == before


def test_snapshots_gone_or_unrecorded_are_reported_and_left(web: Setup) -> None:
    web.ok("snapshot-create", "-n", "one", "web")
    subprocess.run(["qemu-img", "snapshot", "-d", "one", str(web.vdb)], check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", "manual", str(web.vda)], check=True)
    before = web.digest()

    proc = web.run("check", "web")
    assert proc.returncode == 1, proc.stderr
    assert (
        "web: disk vdb: the internal snapshot of checkpoint 'one' "
        f"({web.vdb}) is gone from storage" in proc.stdout
    )
    assert "web: disk vda: the internal snapshot 'manual'" in proc.stdout
    assert "is on storage but in no checkpoint; left alone" in proc.stdout
    assert web.digest() == before
    proc = web.run("check", "--repair", "web")
    assert proc.returncode == 1  # neither is safe to repair: both are left
    assert web.digest() == before


def test_leaked_clusters_are_found_and_repaired(web: Setup) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    web.ok("snapshot-create", "-n", "one", "web")
    _leak(web.vda)

    proc = web.run("check", "--json", "web")
    assert proc.returncode == 1
    [report] = json.loads(proc.stdout)
    [finding] = report["findings"]
    assert finding["subject"] == "disk vda"
    assert finding["problem"].startswith(f"{web.vda}: qemu-img check found ")
    assert "leaked clusters" in finding["problem"]
    assert finding["repaired"] is None

    proc = web.run("check", "--repair", "web")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"web: repaired: disk vda: {web.vda}: qemu-img check -r leaks repaired" in proc.stdout
    assert (
        subprocess.run(
            ["qemu-img", "check", str(web.vda)], capture_output=True, check=False
        ).returncode
        == 0
    )
    assert web.ok("check", "web") == "web: clean (1 checkpoints)\n"


def test_a_corrupt_journal_is_reported_then_moved_aside(web: Setup) -> None:
    web.ok("snapshot-create", "-n", "one", "web")
    [root] = [p for p in (web.state / "domains").iterdir() if p.is_dir()]
    (root / "journal.json").write_text("{ not json")

    proc = web.run("check", "web")
    assert proc.returncode == 1
    assert "web: journal: it is not JSON" in proc.stdout
    assert (root / "journal.json").exists()

    proc = web.run("check", "--repair", "web")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "web: journal: it is not JSON" in proc.stdout
    assert "repaired: moved aside to" in proc.stdout
    assert not (root / "journal.json").exists()
    assert len(list(root.glob("journal.json.corrupt-*"))) == 1
    assert web.ok("check", "web") == "web: clean (1 checkpoints)\n"


def test_an_interrupted_create_is_reported_and_recovered_on_repair(web: Setup) -> None:
    web.ok("snapshot-create", "-n", "one", "web")
    [root] = [p for p in (web.state / "domains").iterdir() if p.is_dir()]
    # a create killed right after its intent was journaled and vda's tag was written
    subprocess.run(["qemu-img", "snapshot", "-c", "two", str(web.vda)], check=True)
    request = {"disk": {"vdev": "vda", "path": str(web.vda), "driver": "qcow2"}, "name": "two"}
    entry = {
        "schema": 1,
        "operation": "create",
        "name": "two",
        "phase": "disks",
        "state": "shutoff",
        "requests": [request],
        "memory": None,
    }
    (root / "journal.json").write_text(json.dumps(entry))

    proc = web.run("check", "web")
    assert proc.returncode == 1
    assert "web: journal: an interrupted create of snapshot 'two' is pending" in proc.stdout
    proc = web.run("check", "--repair", "web")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "repaired: undid the interrupted create of snapshot 'two'" in proc.stdout
    tags = subprocess.run(
        ["qemu-img", "snapshot", "-l", str(web.vda)], capture_output=True, text=True, check=True
    ).stdout
    assert "two" not in tags


def test_a_checkpoint_file_that_is_the_live_disk_is_reported(web: Setup) -> None:
    target = web.tmp / "vdb.one.qcow2"
    cfg = web.tmp / "ext.cfg"
    cfg.write_text(f'name = "one"\ndisk = [ "vda", "vdb={target},type=qcow2" ]\n')
    web.ok("snapshot-create", str(cfg), "web")
    # the failure of issue 9: the checkpoint's file and the disk one inode
    target.unlink()
    os.link(web.vdb, target)

    proc = web.run("check", "web")
    assert proc.returncode == 1
    assert (
        f"web: disk vdb: {target}, the file of snapshot 'one', is the disk's own image "
        f"{web.vdb}: writing the disk would change the snapshot" in proc.stdout
    )


def test_check_needs_a_domain_when_the_domains_dir_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snapcore",
            "--state-dir",
            str(tmp_path / "s"),
            "--domains-dir",
            str(empty),
            "check",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert f"no domain named, and no domain file in {empty}" in proc.stderr
    assert not (tmp_path / "s").exists()
