"""The qcow2 backend (``snapcore_qcow2``) against real qemu-img images on ``tmp_path``.

Every hook is called the way the coordinator calls it: through a plugin manager, by keyword.
The data is written and read back with qemu-io and qemu-img directly (``conftest.QemuTools``),
never through the plugin, and "exactly as before" means the same guest-visible bytes, the same
backing file and the same internal snapshots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import snapcore_qcow2.plugin
from snapcore.context import HookContext
from snapcore.errors import BackendError, CommandError
from snapcore.model import Disk, DiskSnapshot, DomainState, SnapshotKind, SnapshotRequest
from snapcore.plugins import Plugins
from snapcore.process import Result, ShRunner
from snapcore.testing import BackendConformance, is_listed
from tests.backends.conftest import MakeCtx, QemuTools

INTERNAL = SnapshotKind.INTERNAL
EXTERNAL = SnapshotKind.EXTERNAL
integration = pytest.mark.integration


# -- helpers ----------------------------------------------------------------------------------


def create(
    plugins: Plugins,
    ctx: HookContext,
    disk: Disk,
    name: str,
    kind: SnapshotKind | None = None,
    target: str | None = None,
) -> DiskSnapshot:
    request = SnapshotRequest(disk=disk, name=name, kind=kind, target=target)
    assert plugins.storage("qcow2").disk_snapshot_create_check(request=request, ctx=ctx) == []
    snap = plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=ctx)
    assert isinstance(snap, DiskSnapshot)
    return snap


def revert(
    plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, others: Sequence[DiskSnapshot] = ()
) -> None:
    kw = {"snapshot": snap, "others": list(others), "ctx": ctx}
    assert plugins.storage("qcow2").disk_snapshot_revert_check(**kw) == []
    plugins.storage("qcow2").disk_snapshot_revert(**kw)


def delete(
    plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, others: Sequence[DiskSnapshot] = ()
) -> None:
    kw = {"snapshot": snap, "others": list(others), "ctx": ctx}
    assert plugins.storage("qcow2").disk_snapshot_delete_check(**kw) == []
    plugins.storage("qcow2").disk_snapshot_delete(**kw)


def listed(
    plugins: Plugins, ctx: HookContext, disk: Disk, known: Sequence[DiskSnapshot] = ()
) -> list[DiskSnapshot]:
    found = plugins.storage("qcow2").disk_snapshot_list(disk=disk, known=list(known), ctx=ctx)
    assert isinstance(found, list)
    return found


def state(qemu: QemuTools, path: str | Path) -> tuple[str, str | None, list[str]]:
    """What "exactly as before" compares: content, resolved backing file, internal tags."""
    return qemu.digest(path), qemu.backing(path), qemu.tags(path)


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# -- backend_info and disk_claim --------------------------------------------------------------


@integration
def test_backend_info(plugins: Plugins) -> None:
    info = plugins.backend("qcow2")
    assert info is not None
    assert info.kinds == {INTERNAL, EXTERNAL}
    assert info.default_kind is INTERNAL
    assert (info.live, info.revert_any, info.needs_pause) == (True, True, True)
    assert info.revert_requires_shutdown
    assert info.tools == ("qemu-img",)
    assert info.available, info.unavailable_reason
    version = subprocess.run(
        ["qemu-img", "--version"], check=True, capture_output=True, text=True
    ).stdout
    assert info.tool_version
    assert version.startswith(f"qemu-img version {info.tool_version}")


def test_backend_info_without_qemu_img(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    info = snapcore_qcow2.plugin.backend_info()
    assert not info.available
    assert info.unavailable_reason is not None
    assert "qemu-img" in info.unavailable_reason
    assert info.tool_version is None


@integration
def test_disk_claim(plugins: Plugins, disk: Disk, images: Path) -> None:
    raw = images / "raw.img"
    raw.write_bytes(b"\0" * 4096)
    claim = plugins.hook.disk_claim
    assert claim(disk=Disk(vdev="vda", path=disk.path)) == ["qcow2"]
    assert claim(disk=Disk(vdev="vda", path=str(raw))) == []
    assert claim(disk=Disk(vdev="vda", path=str(images / "missing"))) == []
    assert claim(disk=Disk(vdev="vda", path=str(images))) == []  # a directory


# -- internal snapshots -----------------------------------------------------------------------


@integration
def test_internal_create_revert_delete(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools
) -> None:
    qemu.write(disk.path, 0x11)
    snap = create(plugins, ctx, disk, "s1")
    assert (snap.kind, snap.name, snap.locator, snap.path) == (INTERNAL, "s1", disk.path, disk.path)
    assert (snap.driver, snap.vdev, snap.extra) == ("qcow2", "vda", {"tag": "s1"})
    assert qemu.tags(disk.path) == ["s1"]
    qemu.write(disk.path, 0x22)

    revert(plugins, ctx, snap)
    assert qemu.holds(disk.path, 0x11)
    assert qemu.tags(disk.path) == ["s1"]
    assert is_listed(snap, listed(plugins, ctx, disk, [snap]))

    qemu.write(disk.path, 0x33)
    delete(plugins, ctx, snap)
    assert qemu.tags(disk.path) == []
    assert qemu.holds(disk.path, 0x33)
    assert not is_listed(snap, listed(plugins, ctx, disk, [snap]))
    plugins.storage("qcow2").disk_snapshot_delete(snapshot=snap, others=[], ctx=ctx)
    blockers = plugins.storage("qcow2").disk_snapshot_revert_check(
        snapshot=snap, others=[], ctx=ctx
    )
    assert len(blockers) == 1
    assert "'s1' is gone" in blockers[0]


@integration
def test_internal_revert_older_then_newer(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools
) -> None:
    qemu.write(disk.path, 0x11)
    s1 = create(plugins, ctx, disk, "s1", INTERNAL)
    qemu.write(disk.path, 0x22)
    qemu.write(disk.path, 0x22, 65536)
    s2 = create(plugins, ctx, disk, "s2", INTERNAL)
    qemu.write(disk.path, 0x33)

    revert(plugins, ctx, s1, [s2])
    assert qemu.holds(disk.path, 0x11)
    assert qemu.holds(disk.path, 0x00, 65536)
    revert(plugins, ctx, s2, [s1])
    assert qemu.holds(disk.path, 0x22)
    assert qemu.holds(disk.path, 0x22, 65536)
    assert qemu.tags(disk.path) == ["s1", "s2"]
    # Reverting again is harmless (recovery may run it twice).
    revert(plugins, ctx, s2, [s1])
    assert qemu.holds(disk.path, 0x22)


@integration
def test_internal_tag_that_looks_like_an_id(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools
) -> None:
    """``snapshot -a`` matches ids first: tag "2" must not select the snapshot whose id is 2."""
    qemu.write(disk.path, 0x11)
    two = create(plugins, ctx, disk, "2")  # id 1
    qemu.write(disk.path, 0x22)
    create(plugins, ctx, disk, "x")  # id 2
    qemu.write(disk.path, 0x33)
    revert(plugins, ctx, two)
    assert qemu.holds(disk.path, 0x11)


# -- external snapshots -----------------------------------------------------------------------


@integration
def test_external_create_keeps_path(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    os.chmod(disk.path, 0o640)
    qemu.write(disk.path, 0x11)
    snap = create(plugins, ctx, disk, "e1", EXTERNAL)
    target = str(images / "vda.e1.qcow2")  # the default target
    assert (snap.kind, snap.locator, snap.path, snap.name) == (EXTERNAL, target, disk.path, "e1")
    assert files(images) == ["vda.e1.qcow2", "vda.qcow2"]
    assert qemu.backing(disk.path) == target
    assert os.stat(disk.path).st_mode & 0o777 == 0o640

    qemu.write(disk.path, 0x22)
    assert qemu.holds(disk.path, 0x22)
    assert qemu.holds(target, 0x11)  # the snapshot keeps the old data
    assert qemu.tags(target) == []
    assert is_listed(snap, listed(plugins, ctx, disk, [snap]))


@integration
def test_external_target_elsewhere_with_relative_backing(
    plugins: Plugins, make_ctx: MakeCtx, images: Path, qemu: QemuTools, tmp_path: Path
) -> None:
    """The disk is an overlay whose backing file is relative; the target is in another
    directory, so the snapshot's backing file must become absolute to stay valid there."""
    qemu.create(images / "golden.qcow2")
    qemu.write(images / "golden.qcow2", 0x11)
    path = qemu.create(images / "vda.qcow2", backing="golden.qcow2")
    qemu.write(path, 0x22, 65536)
    disk = Disk(vdev="vda", path=str(path), driver="qcow2")
    ctx = make_ctx(disk)
    elsewhere = tmp_path / "snaps"
    elsewhere.mkdir()
    target = str(elsewhere / "e1.qcow2")

    snap = create(plugins, ctx, disk, "e1", EXTERNAL, target)
    assert qemu.info(target)["backing-filename"] == str(images / "golden.qcow2")
    qemu.write(path, 0x33)
    assert qemu.holds(target, 0x11)
    assert qemu.holds(target, 0x22, 65536)
    revert(plugins, ctx, snap)
    assert qemu.holds(path, 0x11)
    assert qemu.holds(path, 0x22, 65536)
    # The unknown golden image of the chain is listed too, by its file name.
    found = listed(plugins, ctx, disk, [snap])
    assert {(s.kind, s.name) for s in found} == {(EXTERNAL, "e1"), (EXTERNAL, "golden.qcow2")}


@integration
def test_external_revert_older_then_newer(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools
) -> None:
    qemu.write(disk.path, 0x11)
    e1 = create(plugins, ctx, disk, "e1", EXTERNAL)
    qemu.write(disk.path, 0x22)
    e2 = create(plugins, ctx, disk, "e2", EXTERNAL)
    qemu.write(disk.path, 0x33)

    revert(plugins, ctx, e1, [e2])
    assert qemu.holds(disk.path, 0x11)
    assert qemu.backing(disk.path) == e1.locator
    found = listed(plugins, ctx, disk, [e1, e2])
    assert is_listed(e1, found)
    assert is_listed(e2, found)  # off the chain now, still there
    qemu.write(disk.path, 0x44)

    revert(plugins, ctx, e2, [e1])
    assert qemu.holds(disk.path, 0x22)
    revert(plugins, ctx, e2, [e1])  # again: harmless
    assert qemu.holds(disk.path, 0x22)
    assert qemu.holds(e1.locator, 0x11)
    assert qemu.holds(e2.locator, 0x22)


@integration
def test_delete_middle_external_then_last(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    qemu.write(disk.path, 0x11)
    e1 = create(plugins, ctx, disk, "e1", EXTERNAL)
    qemu.write(disk.path, 0x22, 65536)
    e2 = create(plugins, ctx, disk, "e2", EXTERNAL)
    qemu.write(disk.path, 0x33, 131072)
    e2_data = qemu.digest(e2.locator)
    current = qemu.digest(disk.path)

    # e1's only child is e2's file: e2 is committed into e1's, which takes e2's path.
    delete(plugins, ctx, e1, [e2])
    assert files(images) == ["vda.e2.qcow2", "vda.qcow2"]
    assert qemu.backing(e2.locator) is None
    assert qemu.digest(e2.locator) == e2_data
    assert qemu.digest(disk.path) == current
    plugins.storage("qcow2").disk_snapshot_delete(snapshot=e1, others=[e2], ctx=ctx)
    found = listed(plugins, ctx, disk, [e1, e2])
    assert not is_listed(e1, found)
    assert is_listed(e2, found)

    # Then the last one: the disk's image is its only child.
    delete(plugins, ctx, e2, [])
    assert files(images) == ["vda.qcow2"]
    assert qemu.backing(disk.path) is None
    assert qemu.digest(disk.path) == current
    assert listed(plugins, ctx, disk, [e2]) == []


@integration
def test_delete_base_with_two_children(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    qemu.write(disk.path, 0x11)
    e1 = create(plugins, ctx, disk, "e1", EXTERNAL)
    qemu.write(disk.path, 0x22, 65536)
    e2 = create(plugins, ctx, disk, "e2", EXTERNAL)
    revert(plugins, ctx, e1, [e2])
    qemu.write(disk.path, 0x44, 131072)
    e2_data = qemu.digest(e2.locator)
    current = qemu.digest(disk.path)

    # e1's file backs both e2's file and the disk: both are rebased, e1's file removed.
    delete(plugins, ctx, e1, [e2])
    assert files(images) == ["vda.e2.qcow2", "vda.qcow2"]
    assert qemu.backing(e2.locator) is None
    assert qemu.backing(disk.path) is None
    assert qemu.digest(e2.locator) == e2_data
    assert qemu.digest(disk.path) == current
    assert qemu.holds(disk.path, 0x11)
    revert(plugins, ctx, e2, [])
    assert qemu.digest(disk.path) == e2_data


@integration
def test_delete_rerun_after_crash(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    """A delete cut short is finished by running it again: after the commit of the merge
    path, and after one of two rebases."""
    qemu.write(disk.path, 0x11)
    e1 = create(plugins, ctx, disk, "e1", EXTERNAL)
    qemu.write(disk.path, 0x22, 65536)
    e2 = create(plugins, ctx, disk, "e2", EXTERNAL)
    qemu.write(disk.path, 0x33, 131072)
    current, e2_data = qemu.digest(disk.path), qemu.digest(e2.locator)

    qemu.img("commit", "-d", e2.locator)  # crash after the commit, before the rename
    plugins.storage("qcow2").disk_snapshot_delete(snapshot=e1, others=[e2], ctx=ctx)
    assert files(images) == ["vda.e2.qcow2", "vda.qcow2"]
    assert (qemu.digest(disk.path), qemu.digest(e2.locator)) == (current, e2_data)

    e3 = create(plugins, ctx, disk, "e3", EXTERNAL)
    revert(plugins, ctx, e2, [e3])
    qemu.write(disk.path, 0x55, 196608)
    current, e3_data = qemu.digest(disk.path), qemu.digest(e3.locator)
    qemu.img("rebase", "-b", "", e3.locator)  # crash after rebasing one of two children
    plugins.storage("qcow2").disk_snapshot_delete(snapshot=e2, others=[e3], ctx=ctx)
    assert files(images) == ["vda.e3.qcow2", "vda.qcow2"]
    assert (qemu.digest(disk.path), qemu.digest(e3.locator)) == (current, e3_data)


# -- internal and external on one disk --------------------------------------------------------


@integration
def test_mixed_internal_and_external(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    qemu.write(disk.path, 0x11)
    i1 = create(plugins, ctx, disk, "i1", INTERNAL)
    qemu.write(disk.path, 0x22)
    e2 = create(plugins, ctx, disk, "e2", EXTERNAL)
    assert qemu.tags(e2.locator) == ["i1"]  # moved with the old image
    qemu.write(disk.path, 0x33)
    found = listed(plugins, ctx, disk, [i1, e2])
    assert is_listed(i1, found)
    assert is_listed(e2, found)

    # i1 now lives in e2's file: its data is copied into a new image at the disk's path.
    revert(plugins, ctx, i1, [e2])
    assert qemu.holds(disk.path, 0x11)
    assert qemu.tags(e2.locator) == ["i1"]
    revert(plugins, ctx, e2, [i1])
    assert qemu.holds(disk.path, 0x22)

    qemu.write(disk.path, 0x44)
    i3 = create(plugins, ctx, disk, "i3", INTERNAL)  # in the overlay
    qemu.write(disk.path, 0x55)
    all_ = [i1, e2, i3]

    # Replacing the current image would lose i3; merging e2's file away would change i3.
    blockers = plugins.storage("qcow2").disk_snapshot_revert_check(
        snapshot=i1, others=[e2, i3], ctx=ctx
    )
    assert len(blockers) == 1
    assert "'i3'" in blockers[0]
    with pytest.raises(BackendError, match="'i3'"):
        plugins.storage("qcow2").disk_snapshot_revert(snapshot=i1, others=[e2, i3], ctx=ctx)
    blockers = plugins.storage("qcow2").disk_snapshot_delete_check(
        snapshot=e2, others=[i1, i3], ctx=ctx
    )
    assert any("'i3'" in b for b in blockers)
    assert any("'i1'" in b for b in blockers)
    with pytest.raises(BackendError, match="'i3'"):
        plugins.storage("qcow2").disk_snapshot_delete(snapshot=e2, others=[i1, i3], ctx=ctx)
    assert qemu.holds(disk.path, 0x55)  # refused, untouched

    revert(plugins, ctx, i3, [i1, e2])
    assert qemu.holds(disk.path, 0x44)
    delete(plugins, ctx, i3, [i1, e2])
    # Now e2's file has one child without internal snapshots: merged, i1 moves to the disk.
    current = qemu.digest(disk.path)
    delete(plugins, ctx, e2, [i1])
    assert files(images) == ["vda.qcow2"]
    assert qemu.tags(disk.path) == ["i1"]
    assert qemu.digest(disk.path) == current
    revert(plugins, ctx, i1, [])
    assert qemu.holds(disk.path, 0x11)
    delete(plugins, ctx, i1, [])
    assert qemu.tags(disk.path) == []
    assert all(not is_listed(s, listed(plugins, ctx, disk, all_)) for s in all_)


@integration
def test_revert_internal_in_base_over_golden_image(
    plugins: Plugins, make_ctx: MakeCtx, images: Path, qemu: QemuTools
) -> None:
    """An internal snapshot held in a base file that has a backing file itself is copied
    shallowly: the new image keeps that backing file and reads through it."""
    golden = qemu.create(images / "golden.qcow2")
    qemu.write(golden, 0x11)
    path = qemu.create(images / "vda.qcow2", backing=golden)
    qemu.write(path, 0x22, 65536)
    disk = Disk(vdev="vda", path=str(path), driver="qcow2")
    ctx = make_ctx(disk)
    i1 = create(plugins, ctx, disk, "i1", INTERNAL)
    e2 = create(plugins, ctx, disk, "e2", EXTERNAL)
    qemu.write(path, 0x33)
    qemu.write(path, 0x33, 65536)

    revert(plugins, ctx, i1, [e2])
    assert qemu.backing(path) == str(golden)
    assert qemu.holds(path, 0x11)
    assert qemu.holds(path, 0x22, 65536)
    extents = json.loads(qemu.img("map", "--output=json", str(path)))
    assert (extents[0]["start"], extents[0]["depth"]) == (0, 1)  # read from golden: shallow
    found = listed(plugins, ctx, disk, [i1, e2])
    assert is_listed(i1, found)  # held in e2's file, off the chain now
    assert is_listed(e2, found)


@integration
def test_delete_external_holding_internal_is_blocked(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools
) -> None:
    """A snapshot file with no child (after a revert to an internal snapshot it holds) would
    take its internal snapshots with it: blocked, naming them."""
    qemu.write(disk.path, 0x11)
    i1 = create(plugins, ctx, disk, "i1", INTERNAL)
    e2 = create(plugins, ctx, disk, "e2", EXTERNAL)
    revert(plugins, ctx, i1, [e2])
    blockers = plugins.storage("qcow2").disk_snapshot_delete_check(
        snapshot=e2, others=[i1], ctx=ctx
    )
    assert len(blockers) == 1
    assert "'i1'" in blockers[0]
    delete(plugins, ctx, i1, [e2])
    delete(plugins, ctx, e2, [])
    assert qemu.holds(disk.path, 0x11)


# -- abort ------------------------------------------------------------------------------------


@integration
@pytest.mark.parametrize("stage", ["never", "linked", "overlay-written", "done", "committed"])
def test_abort_external_at_each_stage(
    plugins: Plugins,
    ctx: HookContext,
    disk: Disk,
    qemu: QemuTools,
    images: Path,
    stage: str,
) -> None:
    qemu.write(disk.path, 0x11)
    older = create(plugins, ctx, disk, "i0", INTERNAL)
    qemu.write(disk.path, 0x22, 65536)
    before, before_files = state(qemu, disk.path), files(images)
    request = SnapshotRequest(disk=disk, name="e1", kind=EXTERNAL)
    target = images / "vda.e1.qcow2"
    tmp = disk.path + ".snapcore-tmp"
    if stage in ("linked", "overlay-written"):
        os.link(disk.path, target)
    if stage == "overlay-written":
        qemu.create(Path(tmp), backing=target)
    if stage in ("done", "committed"):
        plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=ctx)
    if stage == "committed":  # an abort cut short after its commit
        qemu.img("commit", "-d", disk.path)

    plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    assert state(qemu, disk.path) == before
    assert files(images) == before_files
    plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    assert state(qemu, disk.path) == before
    revert(plugins, ctx, older)
    assert qemu.holds(disk.path, 0x11)


@integration
def test_abort_external_after_rebase_elsewhere(
    plugins: Plugins, make_ctx: MakeCtx, images: Path, qemu: QemuTools, tmp_path: Path
) -> None:
    """Cut short after the target's backing file was made absolute (the target is in another
    directory): the disk keeps its data and backing file (now named by an absolute path)."""
    qemu.create(images / "golden.qcow2")
    qemu.write(images / "golden.qcow2", 0x11)
    path = qemu.create(images / "vda.qcow2", backing="golden.qcow2")
    qemu.write(path, 0x22, 65536)
    disk = Disk(vdev="vda", path=str(path), driver="qcow2")
    ctx = make_ctx(disk)
    target = tmp_path / "e1.qcow2"
    before = state(qemu, path)
    os.link(path, target)
    golden = str(images / "golden.qcow2")
    qemu.img("rebase", "-u", "-b", golden, "-F", "qcow2", str(target))

    request = SnapshotRequest(disk=disk, name="e1", kind=EXTERNAL, target=str(target))
    plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    assert not target.exists()
    assert state(qemu, path) == before


@integration
def test_abort_after_writes_keeps_them(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    """Aborting a finished external create folds the overlay back: nothing written is lost."""
    qemu.write(disk.path, 0x11)
    request = SnapshotRequest(disk=disk, name="e1", kind=EXTERNAL)
    plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=ctx)
    qemu.write(disk.path, 0x22, 65536)
    plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    assert files(images) == ["vda.qcow2"]
    assert qemu.backing(disk.path) is None
    assert qemu.holds(disk.path, 0x11)
    assert qemu.holds(disk.path, 0x22, 65536)


@integration
@pytest.mark.parametrize("stage", ["never", "done"])
def test_abort_internal(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, stage: str
) -> None:
    qemu.write(disk.path, 0x11)
    create(plugins, ctx, disk, "i0", INTERNAL)
    before = state(qemu, disk.path)
    request = SnapshotRequest(disk=disk, name="i1", kind=INTERNAL)
    if stage == "done":
        plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=ctx)
        assert qemu.tags(disk.path) == ["i0", "i1"]
    for _ in range(2):
        plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
        assert state(qemu, disk.path) == before


@integration
def test_abort_leaves_foreign_target_alone(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    """A create refused because its target exists must not let abort touch that file."""
    qemu.write(disk.path, 0x11)
    target = qemu.create(images / "other.qcow2")
    qemu.write(target, 0x77)
    request = SnapshotRequest(disk=disk, name="e1", kind=EXTERNAL, target=str(target))
    with pytest.raises(BackendError, match="already exists"):
        plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=ctx)
    plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    assert qemu.holds(target, 0x77)
    assert qemu.holds(disk.path, 0x11)
    assert qemu.backing(disk.path) is None


# -- preflight checks -------------------------------------------------------------------------


def check(plugins: Plugins, ctx: HookContext, request: SnapshotRequest) -> list[str]:
    blockers = plugins.storage("qcow2").disk_snapshot_create_check(request=request, ctx=ctx)
    assert isinstance(blockers, list)
    return blockers


@integration
def test_create_check_blockers(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path, tmp_path: Path
) -> None:
    def blockers(
        kind: SnapshotKind | None = EXTERNAL, target: str | None = None, format: str | None = None
    ) -> list[str]:
        request = SnapshotRequest(disk=disk, name="s1", kind=kind, target=target, format=format)
        return check(plugins, ctx, request)

    assert blockers() == []
    assert blockers(kind=INTERNAL) == []
    assert blockers(kind=None) == []

    existing = images / "taken.qcow2"
    existing.write_bytes(b"")
    [b] = blockers(target=str(existing))
    assert "already exists" in b
    [b] = blockers(target="relative.qcow2")
    assert "not an absolute path" in b
    [b] = blockers(target=str(tmp_path / "nowhere" / "t.qcow2"))
    assert "does not exist" in b
    [b] = blockers(kind=SnapshotKind.NATIVE)
    assert "native" in b
    [b] = blockers(format="vmdk")
    assert "vmdk" in b

    create(plugins, ctx, disk, "s1", INTERNAL)
    [b] = blockers(kind=INTERNAL)
    assert "already has an internal snapshot 's1'" in b

    running = HookContext(domain=ctx.domain, state=DomainState.RUNNING)
    request = SnapshotRequest(disk=disk, name="s2")
    [b] = check(plugins, running, request)
    assert "running" in b
    assert qemu.tags(disk.path) == ["s1"]


@integration
def test_create_check_other_file_system(
    plugins: Plugins, ctx: HookContext, disk: Disk, tmp_path: Path
) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no writable directory on another file system than tmp_path")
    target = other / f"snapcore-test-{os.getpid()}.qcow2"
    request = SnapshotRequest(disk=disk, name="s1", kind=EXTERNAL, target=str(target))
    [b] = check(plugins, ctx, request)
    assert "another file system" in b
    assert "hard-links" in b
    assert not target.exists()


@integration
def test_create_check_not_qcow2(
    plugins: Plugins, make_ctx: MakeCtx, images: Path, qemu: QemuTools
) -> None:
    raw = images / "raw.img"
    qemu.img("create", "-q", "-f", "raw", str(raw), "1M")
    disk = Disk(vdev="vda", path=str(raw), driver="qcow2")
    ctx = make_ctx(disk)
    [b] = check(plugins, ctx, SnapshotRequest(disk=disk, name="s1"))
    assert "raw image, not qcow2" in b
    missing = Disk(vdev="vda", path=str(images / "missing.qcow2"), driver="qcow2")
    [b] = check(plugins, ctx, SnapshotRequest(disk=missing, name="s1"))
    assert "does not exist" in b


@integration
def test_revert_check_blockers(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools
) -> None:
    e1 = create(plugins, ctx, disk, "e1", EXTERNAL)
    os.unlink(disk.path)  # the disk's image is gone
    [b] = plugins.storage("qcow2").disk_snapshot_revert_check(snapshot=e1, others=[], ctx=ctx)
    assert "does not exist" in b
    os.link(e1.locator, disk.path)
    os.unlink(e1.locator)
    [b] = plugins.storage("qcow2").disk_snapshot_revert_check(snapshot=e1, others=[], ctx=ctx)
    assert "is gone" in b


# -- failures ---------------------------------------------------------------------------------


@integration
def test_qemu_img_failure_names_the_disk(
    plugins: Plugins, ctx: HookContext, disk: Disk, images: Path
) -> None:
    with open(disk.path, "r+b") as f:  # keep the magic, ruin the header
        f.seek(4)
        f.write(b"\xff" * 60)
    request = SnapshotRequest(disk=disk, name="s1")
    with pytest.raises(CommandError) as caught:
        plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=ctx)
    err = caught.value
    message = str(err)
    assert message.startswith("disk vda: qemu-img: ")
    assert "\n" not in message
    assert "Unsupported qcow2 version" in message
    assert (err.vdev, err.driver, err.argv[0]) == ("vda", "qcow2", "qemu-img")
    assert err.returncode == 1
    # The preflight reports the same problem as a blocker instead of raising.
    [b] = check(plugins, ctx, request)
    assert "Unsupported qcow2 version" in b
    assert files(images) == ["vda.qcow2"]


class FailingRunner:
    """The real runner, except that qemu-img *subcommand* fails as qemu-img would."""

    def __init__(self, subcommand: str):
        self.subcommand = subcommand
        self.real = ShRunner()

    def __call__(self, argv: Sequence[str], **kw: Any) -> Result:
        if argv[:2] == ["qemu-img", self.subcommand]:
            raise CommandError(argv, 1, f"qemu-img: {argv[-1]}: injected failure")
        return self.real(argv, **kw)


@integration
def test_failed_external_create_is_undone(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    """The overlay cannot be written after the hard link was made: create undoes the link
    itself before it raises, and the error names the disk."""
    qemu.write(disk.path, 0x11)
    before = state(qemu, disk.path)
    failing = HookContext(domain=ctx.domain, run=FailingRunner("create"))
    request = SnapshotRequest(disk=disk, name="e1", kind=EXTERNAL)
    with pytest.raises(CommandError, match=r"^disk vda: qemu-img: .*injected failure$"):
        plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=failing)
    assert files(images) == ["vda.qcow2"]
    assert state(qemu, disk.path) == before


@integration
def test_file_error_names_the_disk(
    plugins: Plugins, ctx: HookContext, disk: Disk, qemu: QemuTools, images: Path
) -> None:
    """An external create whose hard link fails raises for the disk and leaves nothing."""
    qemu.write(disk.path, 0x11)
    target = images / "sub" / "t.qcow2"  # the directory is missing
    request = SnapshotRequest(disk=disk, name="e1", kind=EXTERNAL, target=str(target))
    with pytest.raises(BackendError, match=r"^disk vda: .*t\.qcow2.*No such file") as caught:
        plugins.storage("qcow2").disk_snapshot_create(request=request, ctx=ctx)
    assert caught.value.vdev == "vda"
    assert files(images) == ["vda.qcow2"]
    assert qemu.holds(disk.path, 0x11)


# -- the hook contract (snapcore's conformance suite) -----------------------------------------


@integration
class TestQcow2Conformance(BackendConformance):
    plugin: ClassVar[object] = snapcore_qcow2.plugin
    driver: ClassVar[str] = "qcow2"
    disk_size: ClassVar[int] = 1024 * 1024

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        path = tmp_path / f"{vdev}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True
        )
        return Disk(vdev=vdev, path=str(path), driver=self.driver)

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        source = Path(disk.path + ".write")
        source.write_bytes(data)
        try:
            command = f"write -s {source} {offset} {len(data)}"
            subprocess.run(["qemu-io", "-c", command, disk.path], check=True, capture_output=True)
        finally:
            source.unlink()

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        dump = Path(disk.path + ".raw")
        subprocess.run(
            ["qemu-img", "convert", "-O", "raw", disk.path, str(dump)],
            check=True,
            capture_output=True,
        )
        try:
            return dump.read_bytes()[offset : offset + length]
        finally:
            dump.unlink()


def test_tools_exist() -> None:
    """The integration tests need qemu-img and qemu-io (Debian qemu-utils)."""
    assert shutil.which("qemu-img"), "qemu-img is missing: apt-get install qemu-utils"
    assert shutil.which("qemu-io"), "qemu-io is missing: apt-get install qemu-utils"
