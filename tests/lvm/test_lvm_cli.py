"""End to end through the snapcore CLI: one domain with a qcow2 disk and LV disks, created,
reverted and deleted together; a failure on either side undoes the other; bad input refused
with exit 2 before anything is touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from snapcore import cli
from tests.lvm.conftest import Volumes, fill, lv_digest, lvs

pytestmark = pytest.mark.lvm

VENV_BIN = str(Path(sys.executable).parent)


class Cli:
    """The snapcore command line, run in this process (``snapcore.cli.main``) with a state dir
    of its own: a new Python process costs seconds in the TCG guest, whose root is 9p."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any):
        self.state = tmp_path / "state"
        self.tmp = tmp_path
        self._capsys = capsys
        self._monkeypatch = monkeypatch

    def __call__(self, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
        self._capsys.readouterr()
        with self._monkeypatch.context() as m:
            if path is not None:
                m.setenv("PATH", path)
            code = cli.main(["--state-dir", str(self.state), *args])
        out, err = self._capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    def ok(self, *args: str, path: str | None = None) -> str:
        proc = self(*args, path=path)
        assert proc.returncode == 0, f"snapcore {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def domain(self, name: str, disks: list[dict[str, Any]]) -> str:
        lines = [f'name = "{name}"', ""]
        for disk in disks:
            lines.append("[[disk]]")
            for key in ("vdev", "path", "driver"):
                if key in disk:
                    lines.append(f'{key} = "{disk[key]}"')
            if disk.get("options"):
                lines.append("[disk.options]")
                lines += [f'{k} = "{v}"' for k, v in disk["options"].items()]
            lines.append("")
        path = self.tmp / f"{name}.toml"
        path.write_text("\n".join(lines))
        return str(path)

    def checkpoints(self, domain: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.ok("snapshot-list", "--json", domain))
        return data


@pytest.fixture
def snapcore_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    return Cli(tmp_path, capsys, monkeypatch)


def qcow2(tmp_path: Path, name: str = "vda.qcow2") -> str:
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "8M"], check=True)
    return str(path)


def qwrite(path: str, pattern: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 1M", path],
        check=True,
        capture_output=True,
    )


def qholds(path: str, pattern: int) -> bool:
    out = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-r", "-c", f"read -P {pattern} 0 1M", path],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def qtags(path: str) -> list[str]:
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", path], check=True, capture_output=True, text=True
        ).stdout
    )
    return [s["name"] for s in info.get("snapshots", [])]


def fake_tool(tmp_path: Path, name: str, script: str) -> str:
    """A directory holding an executable *name* running *script*; return a PATH with it first."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"


def test_mixed_checkpoint_create_revert_delete(
    snapcore_cli: Cli, tmp_path: Path, volumes: Volumes, host: Any
) -> None:
    vda = qcow2(tmp_path)
    classic = volumes.classic(16, vdev="vdb")
    thin = volumes.thin(16, vdev="vdc")
    vg = volumes.vg
    domain = snapcore_cli.domain(
        "mixed",
        [
            {"vdev": "vda", "path": vda},
            {"vdev": "vdb", "path": classic.path, "options": {"snapshot_size": "100%ORIGIN"}},
            {"vdev": "vdc", "path": thin.path.replace(f"/dev/{vg}/", f"/dev/mapper/{vg}-")},
        ],
    )
    qwrite(vda, 1)
    b1, c1 = fill(classic.path, 61), fill(thin.path, 62)
    snapcore_cli.ok("snapshot-create", "-n", "c1", domain)
    qwrite(vda, 2)
    fill(classic.path, 63)
    fill(thin.path, 64)
    snapcore_cli.ok("snapshot-create", "-n", "c2", domain)
    qwrite(vda, 3)
    fill(classic.path, 65)
    fill(thin.path, 66)

    listed = snapcore_cli.checkpoints(domain)
    assert [c["name"] for c in listed] == ["c1", "c2"]
    assert {d["driver"] for d in listed[0]["disks"]} == {"qcow2", "lvm"}
    long = json.loads(snapcore_cli.ok("snapshot-list", "-l", "--json", domain))
    assert all(not c["missing"] for c in long), long

    snapcore_cli.ok("snapshot-revert", "-n", "c1", domain)
    assert qholds(vda, 1)
    assert lv_digest(vg, classic.path.rsplit("/", 1)[1]) == b1
    assert lv_digest(vg, thin.path.rsplit("/", 1)[1]) == c1

    snapcore_cli.ok("snapshot-delete", "-n", "c1", domain)
    names = set(lvs(vg))
    for disk in (classic, thin):
        lv = disk.path.rsplit("/", 1)[1]
        assert f"{lv}+c1" not in names
        assert f"{lv}+c2" in names
        assert host.file(f"/dev/{vg}/{lv}").exists
    assert qtags(vda) == ["c2"]
    snapcore_cli.ok("snapshot-delete", "-n", "c2", domain)
    origins = {d.path.rsplit("/", 1)[1] for d in (classic, thin)}
    assert not [n for n in lvs(vg) if n.rpartition("+")[0] in origins]
    assert qtags(vda) == []
    assert snapcore_cli.checkpoints(domain) == []


def test_failure_on_the_lv_side_undoes_the_qcow2_side(
    snapcore_cli: Cli, tmp_path: Path, volumes: Volumes
) -> None:
    vda = qcow2(tmp_path)
    disk = volumes.classic(8)
    domain = snapcore_cli.domain(
        "lvfail", [{"vdev": "vda", "path": vda}, {"vdev": "vdb", "path": disk.path}]
    )
    path = fake_tool(tmp_path, "lvcreate", 'echo "  injected: lvcreate refused" >&2\nexit 5\n')
    before = set(lvs(volumes.vg))
    proc = snapcore_cli("snapshot-create", "-n", "c1", domain, path=path)
    assert proc.returncode == 1, proc.stderr
    assert "injected" in proc.stderr
    assert qtags(vda) == [], "the qcow2 snapshot was not undone"
    assert set(lvs(volumes.vg)) == before
    assert snapcore_cli.checkpoints(domain) == []


def test_failure_on_the_qcow2_side_undoes_the_lv_side(
    snapcore_cli: Cli, tmp_path: Path, volumes: Volumes
) -> None:
    vda = qcow2(tmp_path)
    disk = volumes.classic(8)
    domain = snapcore_cli.domain(
        "qfail", [{"vdev": "vda", "path": vda}, {"vdev": "vdb", "path": disk.path}]
    )
    real = shutil.which("qemu-img")
    assert real is not None
    script = (
        'if [ "$1" = snapshot ] && [ "$2" = -c ]; then\n'
        '  echo "qemu-img: injected failure" >&2; exit 1\nfi\n'
        f'exec {real} "$@"\n'
    )
    path = fake_tool(tmp_path, "qemu-img", script)
    before = set(lvs(volumes.vg))
    proc = snapcore_cli("snapshot-create", "-n", "c1", domain, path=path)
    assert proc.returncode == 1, proc.stderr
    assert "injected failure" in proc.stderr
    assert set(lvs(volumes.vg)) == before, "the LV snapshot was not undone"
    assert qtags(vda) == []
    assert snapcore_cli.checkpoints(domain) == []


def test_an_lv_removed_by_hand_shows_as_missing_and_blocks_revert(
    snapcore_cli: Cli, volumes: Volumes
) -> None:
    disk = volumes.classic(8)
    domain = snapcore_cli.domain("byhand", [{"vdev": "vdb", "path": disk.path}])
    snapcore_cli.ok("snapshot-create", "-n", "c1", domain)
    lv = disk.path.rsplit("/", 1)[1]
    subprocess.run(["lvremove", "-q", "-f", f"{volumes.vg}/{lv}+c1"], check=True)
    long = json.loads(snapcore_cli.ok("snapshot-list", "-l", "--json", domain))
    assert long[0]["missing"] == ["vdb"]
    proc = snapcore_cli("snapshot-revert", "-n", "c1", domain)
    assert proc.returncode == 2
    assert "is gone" in proc.stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not-an-lv", "is not an LVM logical volume"),
        # a path that does not exist is refused when the domain file is read (the plugin's own
        # messages for these are checked in tests/backends/test_lvm_volume.py)
        ("no-vg", "path /dev/novg/lv0 does not exist"),
        ("bad-name", "bad!name does not exist"),
        ("no-lv", "nosuchlv does not exist"),
        ("bad-option", "snapshot_size '7%FREE'"),
    ],
)
def test_bad_input_exits_2_before_touching_anything(
    snapcore_cli: Cli, tmp_path: Path, volumes: Volumes, case: str, expected: str
) -> None:
    vda = qcow2(tmp_path)
    good = volumes.classic(8)
    loop = subprocess.run(
        ["losetup", "--find", "--show", vda], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        vdb: dict[str, Any] = {
            "not-an-lv": {"vdev": "vdb", "path": loop, "driver": "lvm"},
            "no-vg": {"vdev": "vdb", "path": "/dev/novg/lv0"},
            "bad-name": {"vdev": "vdb", "path": f"/dev/{volumes.vg}/bad!name", "driver": "lvm"},
            "no-lv": {"vdev": "vdb", "path": f"/dev/{volumes.vg}/nosuchlv", "driver": "lvm"},
            "bad-option": {
                "vdev": "vdb",
                "path": good.path,
                "options": {"snapshot_size": "7%FREE"},
            },
        }[case]
        domain = snapcore_cli.domain(case, [{"vdev": "vda", "path": vda}, vdb])
        before = lvs(volumes.vg)
        proc = snapcore_cli("snapshot-create", "-n", "c1", domain)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr, proc.stderr
        assert lvs(volumes.vg) == before
        assert qtags(vda) == []
        records = [p for p in snapcore_cli.state.rglob("*") if p.is_file()]
        assert {p.name for p in records} <= {"domain.json", "lock"}, records
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_without_lvm_tools_the_plugin_says_why_and_a_domain_needing_it_exits_2(
    snapcore_cli: Cli, tmp_path: Path, volumes: Volumes
) -> None:
    vda = qcow2(tmp_path)
    disk = volumes.classic(8)
    domain = snapcore_cli.domain(
        "notools", [{"vdev": "vda", "path": vda}, {"vdev": "vdb", "path": disk.path}]
    )
    path = f"{VENV_BIN}:/usr/bin:/bin"  # no /sbin, /usr/sbin: no LVM tools
    plugins = json.loads(snapcore_cli.ok("plugins", "--json", path=path))
    lvm = next(p["backend"] for p in plugins if p["name"] == "lvm")
    assert lvm["available"] is False
    assert "LVM tools are not installed" in lvm["unavailable_reason"]
    assert "unavailable: the LVM tools" in snapcore_cli.ok("plugins", path=path)
    before = lvs(volumes.vg)
    proc = snapcore_cli("snapshot-create", "-n", "c1", domain, path=path)
    assert proc.returncode == 2, proc.stderr
    assert "driver 'lvm' is unavailable on this host" in proc.stderr
    assert lvs(volumes.vg) == before
    assert qtags(vda) == []
