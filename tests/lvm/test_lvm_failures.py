"""What LVM can refuse or lose, on real volumes: a merge put off because the origin is open, a
VG or thin pool without room, a classic snapshot that overflowed, a name already taken."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import snapcore_lvm.plugin
from snapcore.errors import BackendError
from snapcore.model import Disk, DomainState, SnapshotRequest
from snapcore.plugins import Plugins, load_plugins
from snapcore.process import ShRunner
from snapcore_lvm.devices import LvRef
from snapcore_lvm.lvm import Lvm, MergeOutcome
from snapcore_lvm.volume import DeferredMergeError, LvmDisk
from tests.lvm.conftest import LoopVg, Volumes, fill, lv_digest, lvs, run
from tests.lvm.test_lvm_data import create, ctx_for, name_of

pytestmark = pytest.mark.lvm


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(entry_points=False, extra=[("lvm", snapcore_lvm.plugin)])


@pytest.fixture
def opened() -> Iterator[list[int]]:
    """File descriptors to close at the end, holding devices open meanwhile."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def test_revert_of_an_open_origin_is_refused_and_a_put_off_merge_is_reported(
    volumes: Volumes, plugins: Plugins, opened: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = volumes.classic(8)
    lv, vg = name_of(disk), volumes.vg
    first = fill(disk.path, 41)
    c1 = create(plugins, disk, "c1")
    current = fill(disk.path, 42)
    fd = os.open(disk.path, os.O_RDONLY)
    opened.append(fd)
    ctx = ctx_for(disk)

    blockers = plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=ctx)
    assert any("is open" in b for b in blockers), blockers
    with pytest.raises(BackendError, match="is open"):
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx)
    assert lv_digest(vg, lv) == current
    assert lvs(vg)[f"{lv}+c1"]["lv_attr"][0] == "s", "the snapshot was touched"

    # Past the check (as when the origin is opened between check and merge), LVM puts the merge
    # off and exits 0: the revert must say so, not report success.
    monkeypatch.setattr(LvmDisk, "_check_closed", lambda self, origin: None)
    with pytest.raises(DeferredMergeError, match="put off the merge"):
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx)
    state = lvs(vg)
    assert state[lv]["lv_attr"][0] == "O", state[lv]
    assert state[f"{lv}+c1"]["lv_attr"][0] == "S", state[f"{lv}+c1"]
    assert lv_digest(vg, lv) == current, "the disk changed while the merge was put off"
    with pytest.raises(DeferredMergeError):  # still open: still put off, still reported
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx)
    monkeypatch.undo()

    os.close(opened.pop())  # closed now: running the revert again completes it
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx)
    state = lvs(vg)
    assert state[lv]["lv_attr"][0] == "o"
    assert state[lv]["lv_tags"] == ""
    assert state[f"{lv}+c1"]["lv_tags"] == "snapcore"
    assert lv_digest(vg, lv) == first
    assert lv_digest(vg, f"{lv}+c1") == first


def test_wrapper_tells_a_put_off_merge_from_a_done_one(
    volumes: Volumes, plugins: Plugins, opened: list[int]
) -> None:
    disk = volumes.classic(8)
    lv, vg = name_of(disk), volumes.vg
    create(plugins, disk, "c1")
    create(plugins, disk, "c2")
    tool = Lvm(ShRunner())
    origin = LvRef(vg, lv)
    assert tool.merge(origin.with_lv(f"{lv}+c2"), origin) is MergeOutcome.DONE
    opened.append(os.open(disk.path, os.O_RDONLY))
    assert tool.merge(origin.with_lv(f"{lv}+c1"), origin) is MergeOutcome.DEFERRED
    os.close(opened.pop())
    assert tool.start_pending_merge(origin.with_lv(f"{lv}+c1"), origin) is MergeOutcome.DONE
    assert not [n for n in lvs(vg) if n.startswith(f"{lv}+")]


def _lvs_of(vg: str) -> dict[str, tuple[str, str]]:
    return {n: (r["lv_attr"], r["lv_size"]) for n, r in lvs(vg).items()}


def test_vg_without_room_is_refused_in_preflight_with_nothing_created(
    small_vg: LoopVg, plugins: Plugins
) -> None:
    # 10 extents of 4 MiB: a 20 MiB LV leaves 5, and 100%ORIGIN of it needs 6
    volumes = Volumes(small_vg.name, pool=None)
    disk = volumes.classic(20)
    before = _lvs_of(small_vg.name)
    request = SnapshotRequest(disk=disk, name="c1")
    blockers = plugins.storage("lvm").disk_snapshot_create_check(request=request, ctx=ctx_for(disk))
    assert len(blockers) == 1
    assert "has 5 free extents" in blockers[0], blockers
    assert "needs 6" in blockers[0], blockers
    assert _lvs_of(small_vg.name) == before
    # with a smaller size policy it fits, and lvcreate takes no more than the check predicted
    small = Disk(vdev="vdb", path=disk.path, driver="lvm", options={"snapshot_size": "50%ORIGIN"})
    snap = create(plugins, small, "c1")
    extents = int(lvs(small_vg.name)[f"{name_of(disk)}+c1"]["lv_size"]) // (4 * 1024 * 1024)
    assert snap.size is not None
    assert extents * 4 * 1024 * 1024 <= snap.size


def test_two_disks_in_one_vg_are_counted_together(small_vg: LoopVg, plugins: Plugins) -> None:
    # two 12 MiB LVs leave 4 extents; each snapshot needs 4: one fits, both do not
    volumes = Volumes(small_vg.name, pool=None)
    vda = volumes.classic(12, vdev="vda")
    vdb = volumes.classic(12, vdev="vdb")
    for disk in (vda, vdb):
        alone = ctx_for(disk)
        request = SnapshotRequest(disk=disk, name="c1")
        assert plugins.storage("lvm").disk_snapshot_create_check(request=request, ctx=alone) == []
        both = ctx_for(vda, vdb)
        blockers = plugins.storage("lvm").disk_snapshot_create_check(request=request, ctx=both)
        assert len(blockers) == 1
        assert "vda, vdb" in blockers[0], blockers


def test_overflowed_classic_snapshot_is_reported_invalid(
    volumes: Volumes, plugins: Plugins
) -> None:
    disk = volumes.classic(16, snapshot_size="4M")
    lv, vg = name_of(disk), volumes.vg
    fill(disk.path, 51)
    c1 = create(plugins, disk, "c1")
    fill(disk.path, 52)  # 16 MiB of changes into 4 MiB of COW space
    state = lvs(vg)[f"{lv}+c1"]
    assert state["lv_attr"][4] == "I", f"the snapshot did not overflow: {state}"
    ctx = ctx_for(disk)
    blockers = plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=ctx)
    assert len(blockers) == 1
    assert "overflowed" in blockers[0], blockers
    with pytest.raises(BackendError, match="overflowed"):
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx)
    assert plugins.storage("lvm").disk_snapshot_list(disk=disk, known=[c1], ctx=ctx) == []
    assert plugins.storage("lvm").disk_snapshot_delete_check(snapshot=c1, others=[], ctx=ctx) == []
    plugins.storage("lvm").disk_snapshot_delete(snapshot=c1, others=[], ctx=ctx)
    assert f"{lv}+c1" not in lvs(vg)


def test_thin_pool_near_full_is_refused(small_vg: LoopVg, plugins: Plugins) -> None:
    run("lvcreate", "-q", "-y", "--size", "16m", "--thinpool", "tp", small_vg.name)
    volumes = Volumes(small_vg.name, pool="tp")
    disk = volumes.thin(32)
    path = disk.path
    with open(path, "r+b") as f:  # 15 of the pool's 16 MiB
        for _ in range(15):
            f.write(b"\xa5" * (1024 * 1024))
        f.flush()
        os.fsync(f.fileno())
    request = SnapshotRequest(disk=disk, name="c1")
    before = _lvs_of(small_vg.name)
    blockers = plugins.storage("lvm").disk_snapshot_create_check(request=request, ctx=ctx_for(disk))
    assert len(blockers) == 1
    assert "full (data)" in blockers[0], blockers
    assert _lvs_of(small_vg.name) == before
    relaxed = Disk(vdev="vdb", path=path, driver="lvm", options={"thin_pool_limit": "99.9%"})
    request = SnapshotRequest(disk=relaxed, name="c1")
    assert (
        plugins.storage("lvm").disk_snapshot_create_check(request=request, ctx=ctx_for(relaxed))
        == []
    )


def test_a_name_taken_by_someone_else_is_refused_and_never_removed(
    volumes: Volumes, plugins: Plugins
) -> None:
    disk = volumes.classic(8)
    lv, vg = name_of(disk), volumes.vg
    run("lvcreate", "-q", "-y", "--size", "4m", "--name", f"{lv}+c1", vg)
    request = SnapshotRequest(disk=disk, name="c1")
    ctx = ctx_for(disk)
    blockers = plugins.storage("lvm").disk_snapshot_create_check(request=request, ctx=ctx)
    assert blockers == [f"an LV named {vg}/{lv}+c1 already exists and was not made by snapcore"]
    plugins.storage("lvm").disk_snapshot_abort(request=request, ctx=ctx)
    assert f"{lv}+c1" in lvs(vg), "abort removed an LV snapcore did not make"
    assert plugins.storage("lvm").disk_snapshot_list(disk=disk, known=[], ctx=ctx) == []


def test_running_domain_check_does_not_block_on_open_origin(
    volumes: Volumes, plugins: Plugins, opened: list[int]
) -> None:
    """A running domain holds its LV open; the coordinator stops it before reverting."""
    disk = volumes.classic(8)
    c1 = create(plugins, disk, "c1")
    opened.append(os.open(disk.path, os.O_RDONLY))
    running = ctx_for(disk, state=DomainState.RUNNING)
    assert (
        plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=running) == []
    )
