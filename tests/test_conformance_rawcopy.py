"""The example out-of-tree backend, examples/snapcore-rawcopy, against the conformance suite,
plus the rawcopy specifics the suite does not cover (claims, blockers, commands, failures).

The example is imported as installed when it is (``pip install -e examples/snapcore-rawcopy``),
and from its source tree otherwise, so this module runs in CI without a manual step.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from snapcore.context import HookContext
from snapcore.errors import BackendError, CommandError
from snapcore.hookspecs import HOOK_API_VERSION
from snapcore.model import Disk, Domain, SnapshotKind, SnapshotRequest
from snapcore.plugins import ENTRY_POINT_GROUP, Plugins, load_plugins
from snapcore.testing import BackendConformance, RecordingRunner

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "snapcore-rawcopy"


def _import_rawcopy() -> ModuleType:
    try:
        return importlib.import_module("snapcore_rawcopy.plugin")
    except ModuleNotFoundError:
        sys.path.append(str(EXAMPLE))
        return importlib.import_module("snapcore_rawcopy.plugin")


rawcopy = _import_rawcopy()


def _make_raw(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)


def _write(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


class TestRawcopyConformance(BackendConformance):
    plugin = rawcopy
    driver = "rawcopy"
    own_samples = frozenset({"raw"})  # it claims every ``*.raw`` path

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        path = tmp_path / f"{vdev}.raw"
        _make_raw(path, size)
        return Disk(vdev=vdev, path=str(path), driver=self.driver)

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        _write(disk.path, offset, data)

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        return _read(disk.path, offset, length)


# -- the package, as a third party ships it ------------------------------------------------------


def test_pyproject_declares_the_entry_point() -> None:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "snapcore-rawcopy"
    assert meta["build-system"]["build-backend"] == "hatchling.build"
    deps = [re.split(r"[ <>=!~;\[]", d, maxsplit=1)[0] for d in project["dependencies"]]
    assert "snapcore" in deps
    assert project["entry-points"][ENTRY_POINT_GROUP] == {"rawcopy": "snapcore_rawcopy.plugin"}
    assert meta["tool"]["hatch"]["version"]["path"] == "snapcore_rawcopy/plugin.py"


def test_entry_point_target_is_the_plugin_for_its_driver() -> None:
    major, minor = rawcopy.SNAPCORE_HOOK_API
    assert major == HOOK_API_VERSION[0]
    assert minor <= HOOK_API_VERSION[1]
    assert rawcopy.backend_info().driver == "rawcopy"  # the entry point's name is the driver
    init = importlib.import_module("snapcore_rawcopy")
    hooks = [name for name in vars(init) if name.startswith(("disk_", "backend_"))]
    assert hooks == [], "importing the package must register nothing"


# -- rawcopy specifics ----------------------------------------------------------------------------


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(entry_points=False, extra=[("rawcopy", rawcopy)])


@pytest.fixture
def disk(tmp_path: Path) -> Disk:
    path = tmp_path / "web1.raw"
    _make_raw(path, 1 << 20)
    return Disk(vdev="vda", path=str(path), driver="rawcopy")


def _ctx(disk: Disk, runner: RecordingRunner | None = None) -> HookContext:
    if runner is None:
        return HookContext(domain=Domain(name="web1", disks=(disk,)))
    return HookContext(domain=Domain(name="web1", disks=(disk,)), run=runner)


def test_claims_raw_paths_only(plugins: Plugins, tmp_path: Path) -> None:
    raw = Disk(vdev="vda", path=str(tmp_path / "a.raw"))
    qcow2 = Disk(vdev="vdb", path=str(tmp_path / "a.qcow2"))
    assert plugins.hook.disk_claim(disk=raw) == ["rawcopy"]
    assert plugins.hook.disk_claim(disk=qcow2) == []
    assert plugins.resolve_disk(raw).driver == "rawcopy"


def test_snapshot_lives_next_to_the_disk(plugins: Plugins, disk: Disk) -> None:
    ctx = _ctx(disk)
    snap = plugins.storage("rawcopy").disk_snapshot_create(
        request=SnapshotRequest(disk=disk, name="c1"), ctx=ctx
    )
    expected = Path(disk.path).parent / ".web1.raw.snapcore" / "c1.raw"
    assert snap.locator == str(expected)
    assert snap.kind is SnapshotKind.NATIVE
    assert expected.is_file()
    assert expected.read_bytes() == Path(disk.path).read_bytes()


def test_create_check_blockers(plugins: Plugins, disk: Disk, tmp_path: Path) -> None:
    def check(request: SnapshotRequest) -> list[str]:
        blockers = plugins.storage("rawcopy").disk_snapshot_create_check(
            request=request, ctx=_ctx(disk)
        )
        assert isinstance(blockers, list)
        return blockers

    missing = Disk(vdev="vda", path=str(tmp_path / "missing.raw"), driver="rawcopy")
    assert check(SnapshotRequest(disk=missing, name="c1")) == [f"{missing.path} does not exist"]
    directory = Disk(vdev="vda", path=str(tmp_path), driver="rawcopy")
    assert check(SnapshotRequest(disk=directory, name="c1")) == [
        f"{tmp_path} is not a regular file"
    ]
    wrong = check(
        SnapshotRequest(disk=disk, name="c1", kind=SnapshotKind.EXTERNAL, target="/x.qcow2")
    )
    assert len(wrong) == 2
    assert "native snapshots only" in wrong[0]
    assert "no target" in wrong[1]
    plugins.storage("rawcopy").disk_snapshot_create(
        request=SnapshotRequest(disk=disk, name="c1"), ctx=_ctx(disk)
    )
    [exists] = check(SnapshotRequest(disk=disk, name="c1"))
    assert "already exists" in exists


def test_runs_cp_as_an_argument_list(plugins: Plugins, disk: Disk) -> None:
    runner = RecordingRunner(passthrough=True)
    ctx = _ctx(disk, runner)
    snap = plugins.storage("rawcopy").disk_snapshot_create(
        request=SnapshotRequest(disk=disk, name="c1"), ctx=ctx
    )
    plugins.storage("rawcopy").disk_snapshot_revert(snapshot=snap, others=[], ctx=ctx)
    partial = str(Path(snap.locator).with_name(".c1.raw.partial"))
    tmp = str(Path(disk.path).with_name(".web1.raw.snapcore-revert"))
    cp = ("cp", "--reflink=auto", "--sparse=always", "--")
    assert runner.argvs == [(*cp, disk.path, partial), (*cp, snap.locator, tmp)]
    assert all(c.result is not None and c.result.returncode == 0 for c in runner.calls)


def test_failed_create_leaves_nothing_behind(plugins: Plugins, disk: Disk) -> None:
    runner = RecordingRunner().fail(["cp"], prefix=True, stderr="cp: No space left on device")
    ctx = _ctx(disk, runner)
    with pytest.raises(CommandError) as info:
        plugins.storage("rawcopy").disk_snapshot_create(
            request=SnapshotRequest(disk=disk, name="c1"), ctx=ctx
        )
    assert info.value.vdev == "vda"
    assert info.value.driver == "rawcopy"
    assert "No space left" in str(info.value)
    assert not rawcopy.snapshot_dir(disk.path).exists()
    assert plugins.storage("rawcopy").disk_snapshot_list(disk=disk, known=[], ctx=ctx) == []


def test_failed_revert_keeps_the_disk(plugins: Plugins, disk: Disk) -> None:
    _write(disk.path, 0, b"snapshot")
    snap = plugins.storage("rawcopy").disk_snapshot_create(
        request=SnapshotRequest(disk=disk, name="c1"), ctx=_ctx(disk)
    )
    _write(disk.path, 0, b"current!")
    inode = os.stat(disk.path).st_ino
    runner = RecordingRunner().fail(["cp"], prefix=True, stderr="cp: Input/output error")
    with pytest.raises(CommandError):
        plugins.storage("rawcopy").disk_snapshot_revert(
            snapshot=snap, others=[], ctx=_ctx(disk, runner)
        )
    assert _read(disk.path, 0, 8) == b"current!"
    assert os.stat(disk.path).st_ino == inode
    assert sorted(p.name for p in Path(disk.path).parent.iterdir()) == [
        ".web1.raw.snapcore",
        "web1.raw",
    ]


def test_file_errors_are_backend_errors(plugins: Plugins, disk: Disk) -> None:
    rawcopy.snapshot_dir(disk.path).write_bytes(b"in the way")
    request = SnapshotRequest(disk=disk, name="c1")
    ctx = _ctx(disk)
    [blocker] = plugins.storage("rawcopy").disk_snapshot_create_check(request=request, ctx=ctx)
    assert blocker.endswith(".web1.raw.snapcore is not a directory")
    with pytest.raises(BackendError) as info:
        plugins.storage("rawcopy").disk_snapshot_create(request=request, ctx=ctx)
    assert (info.value.vdev, info.value.driver) == ("vda", "rawcopy")
    assert isinstance(info.value.__cause__, OSError)


def test_revert_keeps_the_disk_mode(plugins: Plugins, disk: Disk) -> None:
    ctx = _ctx(disk)
    snap = plugins.storage("rawcopy").disk_snapshot_create(
        request=SnapshotRequest(disk=disk, name="c1"), ctx=ctx
    )
    os.chmod(disk.path, 0o640)
    plugins.storage("rawcopy").disk_snapshot_revert(snapshot=snap, others=[], ctx=ctx)
    assert os.stat(disk.path).st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_revert_keeps_the_disk_owner(plugins: Plugins, disk: Disk) -> None:
    ctx = _ctx(disk)
    snap = plugins.storage("rawcopy").disk_snapshot_create(
        request=SnapshotRequest(disk=disk, name="c1"), ctx=ctx
    )
    os.chown(disk.path, 64055, 64056)
    plugins.storage("rawcopy").disk_snapshot_revert(snapshot=snap, others=[], ctx=ctx)
    st = os.stat(disk.path)
    assert (st.st_uid, st.st_gid) == (64055, 64056)


def test_list_ignores_partial_and_foreign_files(plugins: Plugins, disk: Disk) -> None:
    ctx = _ctx(disk)
    plugins.storage("rawcopy").disk_snapshot_create(
        request=SnapshotRequest(disk=disk, name="c2"), ctx=ctx
    )
    directory = rawcopy.snapshot_dir(disk.path)
    for junk in (".c1.raw.partial", "notes.txt", "-bad.raw"):
        (directory / junk).write_bytes(b"x")
    (directory / "sub.raw").mkdir()
    listed = plugins.storage("rawcopy").disk_snapshot_list(disk=disk, known=[], ctx=ctx)
    assert [s.name for s in listed] == ["c2"]


def test_abort_removes_a_partial_copy(plugins: Plugins, disk: Disk) -> None:
    request = SnapshotRequest(disk=disk, name="c1")
    directory = rawcopy.snapshot_dir(disk.path)
    directory.mkdir()
    (directory / ".c1.raw.partial").write_bytes(b"half")
    plugins.storage("rawcopy").disk_snapshot_abort(request=request, ctx=_ctx(disk))
    assert not directory.exists()
