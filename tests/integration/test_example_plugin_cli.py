"""The out-of-tree example backend, installed as a separate distribution (the README's test
command installs it), found through its entry point and driven through the CLI."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def snapcore(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapcore", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_installed_as_its_own_distribution() -> None:
    dist = importlib.metadata.distribution("snapcore-rawcopy")
    eps = [ep for ep in dist.entry_points if ep.group == "snapcore.plugins"]
    assert [(ep.name, ep.value) for ep in eps] == [("rawcopy", "snapcore_rawcopy.plugin")]


def test_cli_round_trip_with_a_qcow2_disk_beside_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    raw = tmp_path / "data.raw"
    raw.write_bytes(b"v1" * 4096)
    qcow = tmp_path / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "8M"], check=True)
    dom = tmp_path / "mixed.toml"
    dom.write_text(
        'name = "mixed"\n'
        f'[[disk]]\nvdev = "vda"\npath = "{qcow}"\n'
        f'[[disk]]\nvdev = "vdb"\npath = "{raw}"\n'  # claimed by rawcopy: it ends in .raw
    )
    plugins = json.loads(snapcore(state, "plugins", "--json").stdout)
    rawcopy = next(p for p in plugins if p["name"] == "rawcopy")
    assert rawcopy["backend"]["kinds"] == ["native"]
    assert "snapcore-rawcopy" in rawcopy["source"]

    proc = snapcore(state, "snapshot-create", "-n", "one", str(dom))
    assert proc.returncode == 0, proc.stderr
    raw.write_bytes(b"v2" * 4096)
    proc = snapcore(state, "snapshot-revert", "-n", "one", str(dom))
    assert proc.returncode == 0, proc.stderr
    assert raw.read_bytes() == b"v1" * 4096
    listing = json.loads(snapcore(state, "snapshot-list", "--json", str(dom)).stdout)
    assert [(d["vdev"], d["driver"], d["type"]) for d in listing[0]["disks"]] == [
        ("vda", "qcow2", "internal"),
        ("vdb", "rawcopy", "native"),
    ]
    proc = snapcore(state, "snapshot-delete", "-n", "one", str(dom))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(snapcore(state, "snapshot-list", "--json", str(dom)).stdout) == []
    assert not list(tmp_path.glob(".data.raw.snapcore/*.raw"))
