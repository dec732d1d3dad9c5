"""Data round trips on real LVs, checked by checksums of the LV contents, and LV state checked
with testinfra's ``host`` (the guest itself, local backend)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

import snapcore_lvm.plugin
from snapcore.context import HookContext
from snapcore.model import Disk, DiskSnapshot, Domain, DomainState, SnapshotRequest
from snapcore.plugins import Plugins, load_plugins
from tests.lvm.conftest import Volumes, fill, lv_digest, lvs, run

pytestmark = pytest.mark.lvm
KINDS = ["classic", "thin"]


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(entry_points=False, extra=[("lvm", snapcore_lvm.plugin)])


def ctx_for(*disks: Disk, state: DomainState = DomainState.SHUTOFF) -> HookContext:
    return HookContext(domain=Domain(name="vm1", disks=disks), state=state)


def create(plugins: Plugins, disk: Disk, name: str) -> DiskSnapshot:
    ctx = ctx_for(disk)
    request = SnapshotRequest(disk=disk, name=name)
    assert plugins.storage("lvm").disk_snapshot_create_check(request=request, ctx=ctx) == []
    snap = plugins.storage("lvm").disk_snapshot_create(request=request, ctx=ctx)
    assert isinstance(snap, DiskSnapshot)
    return snap


def revert(
    plugins: Plugins, disk: Disk, snap: DiskSnapshot, others: Sequence[DiskSnapshot] = ()
) -> None:
    kw: dict[str, Any] = {"snapshot": snap, "others": list(others), "ctx": ctx_for(disk)}
    assert plugins.storage("lvm").disk_snapshot_revert_check(**kw) == []
    plugins.storage("lvm").disk_snapshot_revert(**kw)


def lv_state(host: Any, vg: str) -> dict[str, dict[str, str]]:
    """LVs of *vg* as testinfra's host sees them (``lvs --reportformat json``)."""
    out = host.check_output(
        "lvs --reportformat json --units b --nosuffix -o lv_name,lv_attr,lv_size,origin,lv_tags %s",
        vg,
    )
    return {r["lv_name"]: r for r in json.loads(out)["report"][0]["lv"]}


def name_of(disk: Disk) -> str:
    return disk.path.rsplit("/", 1)[1]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_and_revert_to_older(
    kind: str, volumes: Volumes, plugins: Plugins, host: Any
) -> None:
    disk = volumes.thin(8) if kind == "thin" else volumes.classic(8)
    lv = name_of(disk)
    vg = volumes.vg
    first = fill(disk.path, 1)
    c1 = create(plugins, disk, "c1")
    second = fill(disk.path, 2)
    c2 = create(plugins, disk, "c2")
    third = fill(disk.path, 3)
    assert len({first, second, third}) == 3
    # each snapshot holds the data of its time, read straight from its LV
    assert lv_digest(vg, f"{lv}+c1") == first
    assert lv_digest(vg, f"{lv}+c2") == second

    state = lv_state(host, vg)
    size_before = state[lv]["lv_size"]
    for cp in ("c1", "c2"):
        snap = state[f"{lv}+{cp}"]
        assert snap["lv_tags"] == "snapcore"
        assert snap["lv_attr"][1] == "r", f"snapshot {cp} is not read-only: {snap['lv_attr']}"
        assert snap["lv_attr"][0] == ("V" if kind == "thin" else "s")
        if kind == "classic":
            assert snap["origin"] == lv
    assert host.file(disk.path).exists

    revert(plugins, disk, c1, others=[c2])  # the older of two
    assert lv_digest(vg, lv) == first
    assert lv_digest(vg, f"{lv}+c1") == first, "the snapshot reverted to changed"
    assert lv_digest(vg, f"{lv}+c2") == second, "the newer snapshot changed"
    state = lv_state(host, vg)
    assert state[lv]["lv_size"] == size_before
    assert {f"{lv}+c1", f"{lv}+c2"} <= set(state)
    assert not [n for n in state if n.startswith(f"{lv}+.")], "revert left a work LV behind"
    assert "snapcore" not in state[lv]["lv_tags"]

    fill(disk.path, 4)
    revert(plugins, disk, c2, others=[c1])
    assert lv_digest(vg, lv) == second

    ctx = ctx_for(disk)
    assert (
        plugins.storage("lvm").disk_snapshot_delete_check(snapshot=c1, others=[c2], ctx=ctx) == []
    )
    plugins.storage("lvm").disk_snapshot_delete(snapshot=c1, others=[c2], ctx=ctx)
    plugins.storage("lvm").disk_snapshot_delete(snapshot=c1, others=[c2], ctx=ctx)
    state = lv_state(host, vg)
    assert f"{lv}+c1" not in state
    assert f"{lv}+c2" in state
    assert lv_digest(vg, lv) == second
    listed = plugins.storage("lvm").disk_snapshot_list(disk=disk, known=[c1, c2], ctx=ctx)
    assert [s.locator for s in listed] == [c2.locator]


def test_thin_revert_keeps_name_size_tags_and_activation(
    volumes: Volumes, plugins: Plugins, host: Any
) -> None:
    disk = volumes.thin(8)
    lv = name_of(disk)
    run("lvchange", "--addtag", "owner=ops", f"{volumes.vg}/{lv}")
    first = fill(disk.path, 11)
    c1 = create(plugins, disk, "c1")
    fill(disk.path, 12)
    revert(plugins, disk, c1)
    state = lv_state(host, volumes.vg)[lv]
    assert state["lv_tags"] == "owner=ops"
    assert state["lv_size"] == str(8 * 1024 * 1024)
    assert state["lv_attr"][0] == "V"
    assert state["lv_attr"][1] == "w"
    assert state["lv_attr"][4] == "a", "the reverted LV is not active"
    assert state["lv_attr"][9] != "k", "the reverted LV would be skipped on activation"
    assert host.file(disk.path).exists
    assert lv_digest(volumes.vg, lv) == first


def test_thin_revert_interrupted_between_renames_is_finished(
    volumes: Volumes, plugins: Plugins
) -> None:
    disk = volumes.thin(8)
    lv, vg = name_of(disk), volumes.vg
    first = fill(disk.path, 21)
    c1 = create(plugins, disk, "c1")
    fill(disk.path, 22)
    # the steps of a revert, cut short after the origin was moved away
    run(
        "lvcreate", "-q", "--snapshot", "--name", f"{lv}+.revert", "--permission", "rw",
        "--setactivationskip", "n", "--activate", "y", f"{vg}/{lv}+c1",
    )  # fmt: skip
    run("lvrename", vg, lv, f"{lv}+.old")
    assert (
        plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=ctx_for(disk))
        == []
    )
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx_for(disk))
    names = set(lvs(vg))
    assert lv in names
    assert f"{lv}+.revert" not in names
    assert f"{lv}+.old" not in names
    assert lv_digest(vg, lv) == first


def test_classic_revert_interrupted_after_merge_is_finished(
    volumes: Volumes, plugins: Plugins
) -> None:
    disk = volumes.classic(8)
    lv, vg = name_of(disk), volumes.vg
    first = fill(disk.path, 31)
    c1 = create(plugins, disk, "c1")
    fill(disk.path, 32)
    uuid = lvs(vg)[f"{lv}+c1"]["lv_uuid"]
    # the steps of a revert, cut short after the merge consumed the snapshot
    run("lvchange", "--addtag", f"snapcore_merge=c1={uuid}", f"{vg}/{lv}")
    run("lvconvert", "--merge", "--yes", "--interval", "1", f"{vg}/{lv}+c1")
    assert f"{lv}+c1" not in lvs(vg)
    ctx = ctx_for(disk)
    assert plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=ctx) == []
    assert plugins.storage("lvm").disk_snapshot_delete_check(snapshot=c1, others=[], ctx=ctx) != []
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx)
    state = lvs(vg)
    assert state[f"{lv}+c1"]["lv_tags"] == "snapcore", "the consumed snapshot was not made again"
    assert state[lv]["lv_tags"] == "", "the revert left its tag on the origin"
    assert lv_digest(vg, lv) == first
    assert lv_digest(vg, f"{lv}+c1") == first
