"""End to end: the snapcore CLI on real qcow2 images, data checked with qemu-io and qemu-img."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from snapcore import CreateOptions, Host
from snapcore.errors import CommandError, OperationFailedError
from snapcore.model import SnapshotKind
from snapcore.process import CommandRunner, Result, ShRunner
from tests.qemuvm import QEMU

pytestmark = pytest.mark.integration

SNAPCORE = [sys.executable, "-m", "snapcore"]


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def write(img: Path, pattern: int, offset: str = "0", length: str = "64k") -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} {length}", str(img)],
        check=True,
        capture_output=True,
    )


def reads(img: Path, pattern: int, offset: str = "0", length: str = "64k") -> bool:
    out = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {offset} {length}", str(img)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "verification failed" not in out and "read " in out


def internal_tags(img: Path) -> list[str]:
    info = json.loads(qemu_img("info", "--output=json", str(img)))
    return [s["name"] for s in info.get("snapshots", [])]


class Env:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.state = tmp / "state"
        self.vda = tmp / "vda.qcow2"
        self.vdb = tmp / "vdb.qcow2"
        for img in (self.vda, self.vdb):
            qemu_img("create", "-q", "-f", "qcow2", str(img), "16M")
        self.domain = tmp / "web1.toml"
        self.domain.write_text(
            'name = "web1"\n'
            f'[[disk]]\nvdev = "vda"\npath = "{self.vda}"\n'
            f'[[disk]]\nvdev = "vdb"\npath = "{self.vdb}"\ndriver = "qcow2"\n'
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SNAPCORE, "--state-dir", str(self.state), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def ok(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def listing(self) -> list[dict[str, object]]:
        return json.loads(self.ok("snapshot-list", "--json", str(self.domain)))  # type: ignore[no-any-return]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_create_list_revert_delete_round_trip(env: Env) -> None:
    write(env.vda, 0x11)
    write(env.vdb, 0x22)
    out = env.ok("snapshot-create", "-n", "one", str(env.domain))
    assert "created snapshot one" in out
    write(env.vda, 0x33)
    write(env.vdb, 0x44)
    env.ok("snapshot-create", "-n", "two", str(env.domain))
    write(env.vda, 0x55)

    env.ok("snapshot-revert", "-n", "one", str(env.domain))
    assert reads(env.vda, 0x11)
    assert reads(env.vdb, 0x22)
    env.ok("snapshot-revert", "-n", "two", str(env.domain))
    assert reads(env.vda, 0x33)
    assert reads(env.vdb, 0x44)

    listing = env.listing()
    assert [c["name"] for c in listing] == ["one", "two"]
    two = listing[1]
    assert two["current"] is True
    assert two["parent"] == "one"
    assert two["state"] == "shutoff"
    assert two["memory"] is False
    assert isinstance(two["creation_time"], int)
    assert [(d["vdev"], d["driver"], d["type"]) for d in two["disks"]] == [  # type: ignore[attr-defined]
        ("vda", "qcow2", "internal"),
        ("vdb", "qcow2", "internal"),
    ]
    table = env.ok("snapshot-list", "-l", str(env.domain))
    assert "* " in table
    assert "MISSING" not in table

    env.ok("snapshot-delete", "-n", "one", str(env.domain))
    assert internal_tags(env.vda) == ["two"]
    assert reads(env.vda, 0x33)
    assert [c["name"] for c in env.listing()] == ["two"]


def test_external_snapshot_from_config_file(env: Env) -> None:
    write(env.vdb, 0x22)
    target = env.tmp / "vdb.before.qcow2"
    cfg = env.tmp / "snap.cfg"
    cfg.write_text(
        'name = "before"   # the name\n'
        'description = "external vdb"\n'
        f'disk = [ "vda",\n  "vdb={target},type=qcow2" ]\n'
    )
    env.ok("snapshot-create", str(cfg), str(env.domain))
    info = json.loads(qemu_img("info", "--output=json", str(env.vdb)))
    assert Path(info["full-backing-filename"]) == target
    write(env.vdb, 0x66)
    assert reads(target, 0x22)  # the snapshot's data is in the target, untouched
    env.ok("snapshot-revert", "-n", "before", str(env.domain))
    assert reads(env.vdb, 0x22)
    (cp,) = env.listing()
    assert cp["description"] == "external vdb"
    assert cp["disks"][1]["type"] == "external"  # type: ignore[index]
    env.ok("snapshot-delete", "-n", "before", str(env.domain))
    assert not target.exists()
    assert reads(env.vdb, 0x22)
    qemu_img("check", str(env.vdb))


def test_existing_external_target_refused_nothing_touched(env: Env) -> None:
    target = env.tmp / "taken.qcow2"
    target.write_bytes(b"precious")
    cfg = env.tmp / "snap.cfg"
    cfg.write_text(f'disk = [ "vdb={target}" ]\n')
    before = hashlib.sha256(env.vdb.read_bytes()).hexdigest()
    proc = env.run("snapshot-create", str(cfg), str(env.domain))
    assert proc.returncode == 2
    assert "disk vdb" in proc.stderr
    assert "exists" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert target.read_bytes() == b"precious"
    assert hashlib.sha256(env.vdb.read_bytes()).hexdigest() == before
    assert env.listing() == []


def test_dry_run_changes_nothing(env: Env) -> None:
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (env.vda, env.vdb)}
    out = env.ok("snapshot-create", "--dry-run", "-n", "p", str(env.domain))
    assert "dry run" in out
    assert "vda (qcow2): create snapshot [internal]" in out
    plan = json.loads(env.ok("snapshot-create", "--dry-run", "--json", "-n", "p", str(env.domain)))
    assert plan["operation"] == "create"
    assert [s["vdev"] for s in plan["steps"]] == ["vda", "vdb"]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (env.vda, env.vdb)} == before
    assert internal_tags(env.vda) == []
    assert env.listing() == []


def test_revert_and_delete_unknown_name_exit_2(env: Env) -> None:
    for command in ("snapshot-revert", "snapshot-delete"):
        proc = env.run(command, "-n", "ghost", str(env.domain))
        assert proc.returncode == 2
        assert "no snapshot 'ghost'" in proc.stderr


def test_duplicate_name_exit_2(env: Env) -> None:
    env.ok("snapshot-create", "-n", "one", str(env.domain))
    proc = env.run("snapshot-create", "-n", "one", str(env.domain))
    assert proc.returncode == 2
    assert "already has a snapshot named 'one'" in proc.stderr
    assert internal_tags(env.vda) == ["one"]


def test_snapshot_removed_by_hand_is_reported(env: Env) -> None:
    env.ok("snapshot-create", "-n", "one", str(env.domain))
    qemu_img("snapshot", "-d", "one", str(env.vdb))
    out = env.ok("snapshot-list", "-l", str(env.domain))
    assert "MISSING" in out
    proc = env.run("snapshot-revert", "-n", "one", str(env.domain))
    assert proc.returncode == 2
    assert "disk vdb" in proc.stderr


class FailOn:
    """A runner that fails the qemu-img command touching one image, and runs the rest."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.real: CommandRunner = ShRunner()

    def __call__(self, argv: Sequence[str], **kwargs: object) -> Result:
        if argv[0] == "qemu-img" and "snapshot" in argv and self.path in argv:
            raise CommandError(argv, 1, "qemu-img: injected failure: No space left on device")
        return self.real(argv, **kwargs)  # type: ignore[arg-type]


def test_failure_on_second_disk_leaves_first_without_snapshot(env: Env) -> None:
    write(env.vda, 0x11)
    host = Host(state_dir=env.state, runner=FailOn(env.vdb))
    dom = host.open_domain(env.domain)
    with pytest.raises(OperationFailedError) as err:
        dom.create(CreateOptions(name="one"))
    assert "disk vdb" in str(err.value)
    assert "No space left on device" in str(err.value)
    assert internal_tags(env.vda) == []
    assert internal_tags(env.vdb) == []
    assert reads(env.vda, 0x11)
    assert env.listing() == []


def test_concurrent_creates_both_succeed_or_one_refused(env: Env) -> None:
    procs = [
        subprocess.Popen(
            [*SNAPCORE, "--state-dir", str(env.state), "snapshot-create", str(env.domain)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        p.communicate(timeout=60)
    codes = [p.returncode for p in procs]
    assert all(code in (0, 1, 2) for code in codes)
    assert 0 in codes
    listing = env.listing()  # every record parses
    assert len(listing) == codes.count(0)
    assert sorted(internal_tags(env.vda)) == sorted(str(c["name"]) for c in listing)


def test_qemu_img_error_names_disk_in_one_line(env: Env) -> None:
    env.ok("snapshot-create", "-n", "one", str(env.domain))
    # Break vdb's header after the snapshot exists: qemu-img can no longer open it.
    with env.vdb.open("r+b") as fh:
        fh.seek(4)
        fh.write(b"\xff\xff\xff\xff")
    proc = env.run("snapshot-revert", "-n", "one", str(env.domain))
    assert proc.returncode in (1, 2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "disk vdb" in lines[0]
    assert "qemu-img" in lines[0]


@pytest.mark.live
def test_demo_runs(tmp_path: Path) -> None:
    """The demo, its running-domain part on the QEMU the live tests run (SNAPCORE_TEST_QEMU)."""
    proc = subprocess.run(
        [*SNAPCORE, "demo", "--qemu", QEMU],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    version = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True)
    number = version.stdout.split()[3]  # "QEMU emulator version 10.0.2 (Debian ...)"
    assert f"running domain: QEMU {number} " in proc.stdout
    assert "every check passed" in proc.stdout


class FailCreateOn:
    """A runner that fails ``qemu-img create`` of an overlay beside one image."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.real: CommandRunner = ShRunner()

    def __call__(self, argv: Sequence[str], **kwargs: object) -> Result:
        if argv[:2] == ["qemu-img", "create"] and any(a.startswith(self.path) for a in argv):
            raise CommandError(argv, 1, "qemu-img: injected failure: No space left on device")
        return self.real(argv, **kwargs)  # type: ignore[arg-type]


def test_a_disk_named_through_a_symlink_keeps_it_and_its_checkpoint_never_changes(
    tmp_path: Path,
) -> None:
    """vda is ``links/vda.qcow2 -> ../images/real.qcow2``. External checkpoints leave the
    symlink in place, naming the current image; the checkpoint is the image itself (a write
    through the image's real name does not change it); an undone create leaves no target,
    dangling or not, and revert and delete keep the symlink too."""
    (tmp_path / "images").mkdir()
    (tmp_path / "links").mkdir()
    real = tmp_path / "images" / "real.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(real), "16M")
    link = tmp_path / "links" / "vda.qcow2"
    link.symlink_to("../images/real.qcow2")
    vdb = tmp_path / "images" / "vdb.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(vdb), "16M")
    domain = tmp_path / "d.toml"
    domain.write_text(
        f'name = "d"\n[[disk]]\nvdev = "vda"\npath = "{link}"\n'
        f'[[disk]]\nvdev = "vdb"\npath = "{vdb}"\n'
    )
    external = CreateOptions(name="one", kind=SnapshotKind.EXTERNAL)
    write(real, 0x11)

    def symlink_intact() -> bool:
        return link.is_symlink() and str(link.readlink()) == "../images/real.qcow2"

    failing = Host(state_dir=tmp_path / "state", runner=FailCreateOn(vdb))
    with pytest.raises(OperationFailedError):
        failing.open_domain(domain).create(external)
    assert symlink_intact()
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["vda.qcow2"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["real.qcow2", "vdb.qcow2"]
    assert reads(link, 0x11)

    host = Host(state_dir=tmp_path / "state")
    host.open_domain(domain).create(external)
    assert symlink_intact()
    target = tmp_path / "links" / "vda.one.qcow2"
    assert not target.is_symlink()
    assert target.stat().st_ino != real.stat().st_ino
    write(real, 0x22)  # through the image's own name
    assert reads(target, 0x11), "the checkpoint changed"
    assert reads(link, 0x22)

    host.open_domain(domain).revert("one")
    assert symlink_intact()
    assert reads(link, 0x11)
    host.open_domain(domain).delete("one")
    assert symlink_intact()
    assert reads(link, 0x11)
    assert not target.exists()
    assert json.loads(qemu_img("info", "--output=json", str(real))).get("backing-filename") is None
