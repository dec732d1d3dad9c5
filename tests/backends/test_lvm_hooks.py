"""The lvm plugin's hooks on this host, with LVM answered by snapcore.testing.RecordingRunner
from real output: tests/data/lvm/NAME.{out,err,rc} were recorded inside the virtme-ng guest by
tests/data/lvm/record.sh (LVM 2.03.16). The same hooks run against real LVM in tests/lvm/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snapcore.context import HookContext
from snapcore.errors import BackendError, CommandError
from snapcore.model import Disk, DiskSnapshot, Domain, DomainState, SnapshotKind, SnapshotRequest
from snapcore.plugins import Plugins, load_plugins
from snapcore.testing import RecordingRunner
from snapcore_lvm import lvm as lvm_module
from snapcore_lvm import plugin
from snapcore_lvm.lvm import LV_FIELDS, Lvm, MergeOutcome, VolumeGroupNotFoundError, parse_report
from snapcore_lvm.volume import DeferredMergeError

DATA = Path(__file__).resolve().parents[1] / "data" / "lvm"
MiB = 1024 * 1024
WEB = Disk(vdev="vdb", path="/dev/vg0/web", driver="lvm")
DB = Disk(vdev="vdc", path="/dev/mapper/vg0-db", driver="lvm")


def recorded(name: str) -> tuple[str, str, int]:
    return (
        (DATA / f"{name}.out").read_text(),
        (DATA / f"{name}.err").read_text(),
        int((DATA / f"{name}.rc").read_text()),
    )


def lvs_argv(target: str, *, hidden: bool) -> list[str]:
    argv = ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "--binary"]
    if hidden:
        argv.append("--all")
    return [*argv, "--options", ",".join(LV_FIELDS), target]


def edit(name: str, lv: str, **fields: str) -> str:
    """The recorded report *name* with some fields of LV *lv* changed."""
    data = json.loads(recorded(name)[0])
    for row in data["report"][0]["lv"]:
        if row["lv_name"].strip("[]") == lv:
            row.update(fields)
    return json.dumps(data)


class Lvs:
    """Answers lvs calls of a RecordingRunner from recordings."""

    def __init__(self, runner: RecordingRunner):
        self.runner = runner

    def vg(self, name: str, target: str = "vg0", *, times: int | None = None) -> None:
        out, err, rc = recorded(name)
        self.runner.on(
            lvs_argv(target, hidden=True), stdout=out, stderr=err, returncode=rc, times=times
        )

    def lv(
        self, name: str, target: str, *, hidden: bool = False, stdout: str | None = None
    ) -> None:
        out, err, rc = recorded(name)
        self.runner.on(
            lvs_argv(target, hidden=hidden), stdout=stdout or out, stderr=err, returncode=rc
        )

    def vg_text(self, text: str, target: str = "vg0") -> None:
        self.runner.on(lvs_argv(target, hidden=True), stdout=text)

    def ok(self, *argv: str, name: str | None = None) -> None:
        out, err, rc = recorded(name) if name else ("", "", 0)
        self.runner.on(list(argv), stdout=out, stderr=err, returncode=rc)


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def answers(runner: RecordingRunner) -> Lvs:
    return Lvs(runner)


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(entry_points=False, extra=[("lvm", plugin)])


MakeCtx = Callable[..., HookContext]


@pytest.fixture
def ctx(runner: RecordingRunner) -> MakeCtx:
    def make(*disks: Disk, state: DomainState = DomainState.SHUTOFF) -> HookContext:
        return HookContext(
            domain=Domain(name="vm1", disks=disks or (WEB,)), state=state, run=runner
        )

    return make


def snap(
    disk: Disk, name: str, lv: str, kind: str, size: str | None = "100%ORIGIN"
) -> DiskSnapshot:
    vg = "small" if lv.startswith("ov") else "vg0"
    return DiskSnapshot(
        vdev=disk.vdev,
        path=disk.path,
        driver="lvm",
        kind=SnapshotKind.NATIVE,
        name=name,
        locator=f"{vg}/{lv}+{name}",
        extra={"type": kind, "vg": vg, "origin": lv, "snapshot_size": size},
    )


# -- the report --------------------------------------------------------------------------------


def test_report_is_parsed_into_typed_volumes() -> None:
    by_name = {lv.name: lv for lv in parse_report(recorded("lvs_vg0")[0])}
    web, c1, manual, db, dbc1, pool = (
        by_name[n] for n in ("web", "web+c1", "manual", "db", "db+c1", "pool")
    )
    assert web.size == 64 * MiB
    assert web.extents == 16
    assert web.extent_size == 4 * MiB
    assert web.vg_free_extents == 154
    assert not web.is_classic_snapshot
    assert not web.is_thin
    assert not web.is_open
    assert c1.is_classic_snapshot
    assert c1.is_ours
    assert c1.origin == "web"
    assert c1.size == 68 * MiB  # 100%ORIGIN: room for a full rewrite
    assert not c1.is_invalid
    assert not manual.is_ours
    assert db.is_thin
    assert db.pool == "pool"
    assert dbc1.is_thin
    assert dbc1.skip_activation
    assert dbc1.open is None  # inactive
    assert pool.is_thin_pool
    assert pool.data_percent == 6.25
    assert pool.metadata_percent == 11.13
    assert by_name["pool_tmeta"].name == "pool_tmeta"  # brackets of hidden LVs removed


def test_report_flags_overflow_merging_and_open() -> None:
    small = {lv.name: lv for lv in parse_report(recorded("lvs_small")[0])}
    assert small["ov+c1"].is_invalid
    assert small["ov+c1"].snap_percent == 100.0
    assert small["tp"].data_percent == 93.75
    pending = {lv.name: lv for lv in parse_report(recorded("lvs_vg0_merge_pending")[0])}
    assert pending["web"].is_merging_origin
    assert pending["web"].is_open
    assert pending["web+c2"].attr[0] == "S"
    assert pending["web"].tags == ("snapcore_merge=c2=K4rZBj-QWvu-zCOU-0Psa-1qgc-W9TR-MPLz9w",)


@pytest.mark.parametrize("bad", ["", "{}", '{"report": [{"lv": [{"lv_name": "x"}]}]}', "[1]"])
def test_unparseable_report_is_a_backend_error(bad: str) -> None:
    with pytest.raises(BackendError, match="cannot parse the lvs report"):
        parse_report(bad)


def test_missing_vg_and_lv(runner: RecordingRunner, answers: Lvs) -> None:
    answers.lv("lvs_no_vg", "novg", hidden=True)
    answers.lv("lvs_no_lv", "vg0/nolv")
    tool = Lvm(runner)
    with pytest.raises(VolumeGroupNotFoundError, match="'novg' does not exist"):
        tool.volumes("novg", hidden=True)
    assert tool.get(lvm_module.LvRef("vg0", "nolv")) is None
    runner.fail(lvs_argv("vg1", hidden=False), stderr="  Locking failed", returncode=3)
    with pytest.raises(CommandError, match="Locking failed"):
        tool.volumes("vg1")
    assert all(dict(c.env or {}).get("LVM_SUPPRESS_FD_WARNINGS") == "1" for c in runner.calls)


def test_merge_put_off_is_told_from_merge_done(runner: RecordingRunner, answers: Lvs) -> None:
    tool = Lvm(runner)
    web = lvm_module.LvRef("vg0", "web")
    answers.ok(
        "lvconvert", "--merge", "--yes", "--interval", "1", "vg0/web+c2", name="lvconvert_deferred"
    )
    answers.lv("lvs_web_merge_pending", "vg0/web")
    assert tool.merge(web.with_lv("web+c2"), web) is MergeOutcome.DEFERRED
    runner2 = RecordingRunner()
    Lvs(runner2).ok(
        "lvconvert", "--merge", "--yes", "--interval", "1", "vg0/web+c3", name="lvconvert_done"
    )
    Lvs(runner2).lv("lvs_web", "vg0/web")
    assert Lvm(runner2).merge(web.with_lv("web+c3"), web) is MergeOutcome.DONE
    merge = next(c for c in runner2.calls if c.argv[0] == "lvconvert")
    assert merge.timeout is None  # a merge copies data back: no time limit


# -- backend_info and disk_claim ---------------------------------------------------------------


def test_backend_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "find_tools", lambda: ("/sbin/lvm", None))
    monkeypatch.setattr(plugin, "tool_version", lambda path: "2.03.16(2)")
    monkeypatch.setattr(plugin, "_device_mapper_problem", lambda: None)
    info = plugin.backend_info()
    assert info.driver == "lvm"
    assert info.kinds == frozenset({SnapshotKind.NATIVE})
    assert info.default_kind is SnapshotKind.NATIVE
    assert info.live
    assert info.revert_any
    assert info.available
    assert info.tool_version == "2.03.16(2)"
    assert "lvconvert" in info.tools


def test_backend_info_unavailable_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    info = plugin.backend_info()
    assert not info.available
    assert "LVM tools are not installed" in str(info.unavailable_reason)
    monkeypatch.setattr(plugin, "find_tools", lambda: ("/sbin/lvm", None))
    monkeypatch.setattr(plugin, "PROC_MISC", str(tmp_path / "misc"))
    monkeypatch.setattr(plugin.os, "uname", type("U", (), {"release": "0.0-none"}))
    info = plugin.backend_info()
    assert not info.available
    assert "no device-mapper" in str(info.unavailable_reason)


def test_claim_is_cheap_and_never_fails(tmp_path: Path) -> None:
    image = tmp_path / "vda.qcow2"
    image.write_bytes(b"QFI\xfb")
    assert plugin.disk_claim(disk=Disk(vdev="vda", path=str(image))) is None
    assert plugin.disk_claim(disk=Disk(vdev="vda", path="/dev/null")) is None
    assert plugin.disk_claim(disk=Disk(vdev="vda", path="/dev/snapcore-nosuchvg/lv0")) == "lvm"


# -- create ------------------------------------------------------------------------------------


def request(disk: Disk = WEB, name: str = "c9", **kw: Any) -> SnapshotRequest:
    return SnapshotRequest(disk=disk, name=name, **kw)


def test_create_check_passes_and_runs_one_lvs(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.vg("lvs_vg0")
    hook = plugins.storage("lvm").disk_snapshot_create_check
    assert hook(request=request(), ctx=ctx()) == []
    assert hook(request=request(DB), ctx=ctx(DB)) == []
    assert runner.argvs == [tuple(lvs_argv("vg0", hidden=True))] * 2


@pytest.mark.parametrize(
    ("disk", "req", "blocker"),
    [
        (WEB, {"name": "c1"}, "snapshot LV vg0/web+c1 already exists"),
        (WEB, {"kind": SnapshotKind.INTERNAL}, "not internal ones"),
        (WEB, {"target": "/tmp/x"}, "take no target"),
        (Disk(vdev="vdb", path="/dev/vg0/web", options={"snapshot_size": "7%FREE"}), {}, "7%FREE"),
        (Disk(vdev="vdb", path="/dev/vg0/web", options={"colour": "red"}), {}, "unknown option"),
        (
            Disk(vdev="vdc", path="/dev/vg0/db", options={"snapshot_size": "1G"}),
            {},
            "classic LVs only",
        ),
        (Disk(vdev="vdb", path="/dev/vg0/nolv"), {}, "logical volume vg0/nolv does not exist"),
        (Disk(vdev="vdb", path="/dev/vg0/web+c1"), {}, "is itself a classic snapshot"),
        (Disk(vdev="vdb", path="/dev/vg0/pool"), {}, "thin-pool LV"),
    ],
)
def test_create_check_blockers(
    plugins: Plugins,
    ctx: MakeCtx,
    answers: Lvs,
    disk: Disk,
    req: dict[str, Any],
    blocker: str,
) -> None:
    answers.vg("lvs_vg0")
    disk = Disk(vdev=disk.vdev, path=disk.path, driver="lvm", options=disk.options)
    blockers = plugins.storage("lvm").disk_snapshot_create_check(
        request=request(disk, **req), ctx=ctx(disk)
    )
    assert any(blocker in b for b in blockers), blockers


@pytest.mark.parametrize(
    ("path", "blocker"),
    [
        ("/srv/web.img", "/srv/web.img is not an LVM logical volume"),
        ("/dev/loop0", "is not an LVM logical volume"),
        ("/dev/vg0/bad!name", "LV name 'bad!name' contains '!'"),
        ("/dev/vg$0/web", "VG name 'vg$0' contains '$'"),
    ],
)
def test_bad_paths_are_refused_without_running_anything(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, path: str, blocker: str
) -> None:
    disk = Disk(vdev="vdb", path=path, driver="lvm")
    blockers = plugins.storage("lvm").disk_snapshot_create_check(
        request=request(disk), ctx=ctx(disk)
    )
    assert blockers == [blocker] or any(blocker in b for b in blockers), blockers
    assert runner.argvs == []


def test_missing_vg_is_a_blocker(plugins: Plugins, ctx: MakeCtx, answers: Lvs) -> None:
    answers.vg("lvs_no_vg", "novg")
    disk = Disk(vdev="vdb", path="/dev/novg/lv0", driver="lvm")
    blockers = plugins.storage("lvm").disk_snapshot_create_check(
        request=request(disk), ctx=ctx(disk)
    )
    assert blockers == ["volume group 'novg' of /dev/novg/lv0 does not exist"]


def test_space_is_checked_for_every_disk_of_the_domain_in_the_vg(
    plugins: Plugins, ctx: MakeCtx, answers: Lvs
) -> None:
    # 154 free extents; web needs 17 (100%ORIGIN of 64 MiB)
    answers.vg_text(edit("lvs_vg0", "web", vg_free_count="16"))
    blockers = plugins.storage("lvm").disk_snapshot_create_check(request=request(), ctx=ctx())
    assert blockers == [
        "volume group 'vg0' has 16 free extents (64 MiB); the snapshot of vg0/web needs 17 "
        "(68 MiB): extend the VG or set a smaller snapshot_size"
    ]
    small = Disk(vdev="vdb", path=WEB.path, driver="lvm", options={"snapshot_size": "50%ORIGIN"})
    assert (
        plugins.storage("lvm").disk_snapshot_create_check(request=request(small), ctx=ctx(small))
        == []
    )


def test_thin_pool_use_is_checked(plugins: Plugins, ctx: MakeCtx, answers: Lvs) -> None:
    answers.vg("lvs_small", "small")
    disk = Disk(vdev="vdb", path="/dev/small/t1", driver="lvm")
    blockers = plugins.storage("lvm").disk_snapshot_create_check(
        request=request(disk), ctx=ctx(disk)
    )
    assert blockers == [
        "thin pool small/tp is 93.75% full (data), at or above the limit of 90% "
        "(thin_pool_limit); extend the pool or free space first"
    ]
    relaxed = Disk(vdev="vdb", path=disk.path, driver="lvm", options={"thin_pool_limit": "95"})
    assert (
        plugins.storage("lvm").disk_snapshot_create_check(
            request=request(relaxed), ctx=ctx(relaxed)
        )
        == []
    )


def test_create_classic_asks_for_exact_extents(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.lv("lvs_web", "vg0/web")
    create = ["lvcreate", "--snapshot", "--name", "web+c9", "--extents", "17", "--permission", "r",
              "--addtag", "snapcore", "vg0/web"]  # fmt: skip
    answers.ok(*create, name="lvcreate_classic")
    made = plugins.storage("lvm").disk_snapshot_create(request=request(), ctx=ctx())
    assert made.locator == "vg0/web+c9"
    assert made.kind is SnapshotKind.NATIVE
    assert made.size == 68 * MiB
    assert made.extra["type"] == "classic"
    assert made.extra["snapshot_size"] == "100%ORIGIN"
    assert runner.argvs[-1] == tuple(create)


def test_create_thin_takes_no_size(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.lv("lvs_vg0", "vg0/db")  # the report of the whole VG holds db too
    create = ["lvcreate", "--snapshot", "--name", "db+c9", "--permission", "r",
              "--setactivationskip", "y", "--addtag", "snapcore", "vg0/db"]  # fmt: skip
    runner.on(lvs_argv("vg0/db", hidden=False), stdout=recorded("lvs_vg0")[0])
    answers.ok(*create, name="lvcreate_thin")
    made = plugins.storage("lvm").disk_snapshot_create(request=request(DB), ctx=ctx(DB))
    assert made.locator == "vg0/db+c9"
    assert made.extra["type"] == "thin"
    assert runner.argvs[-1] == tuple(create)


def test_create_failure_is_attributed_to_the_disk(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.lv("lvs_web", "vg0/web")
    _out, err, rc = recorded("lvcreate_exists")
    runner.fail(["lvcreate"], prefix=True, stderr=err, returncode=rc)
    with pytest.raises(CommandError, match='disk vdb: lvcreate: Logical Volume "web\\+c2"') as exc:
        plugins.storage("lvm").disk_snapshot_create(request=request(), ctx=ctx())
    assert exc.value.driver == "lvm"


def test_create_group_reads_each_vg_once_and_undoes_on_failure(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.vg("lvs_vg0", times=None)
    runner.on(lvs_argv("vg0", hidden=False), stdout=recorded("lvs_vg0")[0])
    runner.on(["lvcreate", "--snapshot", "--name", "web+c9"], prefix=True)
    runner.fail(["lvcreate", "--snapshot", "--name", "db+c9"], prefix=True, stderr="  pool full")
    runner.on(["lvremove", "--force", "vg0/web+c9"])
    requests = (request(WEB), request(DB))
    with pytest.raises(CommandError, match="disk vdc: lvcreate: pool full"):
        plugins.storage("lvm").disk_snapshot_create_group(requests=requests, ctx=ctx(WEB, DB))
    assert [a[0] for a in runner.argvs] == ["lvs", "lvcreate", "lvcreate", "lvremove"]


# -- abort, delete -----------------------------------------------------------------------------


def test_abort_removes_only_its_own_tagged_snapshot(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.lv("lvs_vg0", "vg0/web+c1", hidden=True)
    runner.on(["lvremove", "--force", "vg0/web+c1"])
    plugins.storage("lvm").disk_snapshot_abort(request=request(name="c1"), ctx=ctx())
    assert runner.argvs[-1] == ("lvremove", "--force", "vg0/web+c1")
    # never made: nothing to remove
    runner2 = RecordingRunner()
    Lvs(runner2).lv("lvs_no_lv", "vg0/web+c9", hidden=True)
    assert plugin.disk_snapshot_abort(request=request(), ctx=ctx().__class__(
        domain=Domain(name="vm1", disks=(WEB,)), run=runner2)) is True  # fmt: skip
    assert [a[0] for a in runner2.argvs] == ["lvs"]
    # someone else's LV of that name: left alone
    runner3 = RecordingRunner()
    runner3.on(lvs_argv("vg0/web+c1", hidden=True), stdout=edit("lvs_vg0", "web+c1", lv_tags=""))
    ctx3 = HookContext(domain=Domain(name="vm1", disks=(WEB,)), run=runner3)
    assert plugin.disk_snapshot_abort(request=request(name="c1"), ctx=ctx3) is True
    assert [a[0] for a in runner3.argvs] == ["lvs"]


def test_delete_is_idempotent(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    c1 = snap(WEB, "c1", "web", "classic")
    answers.vg("lvs_vg0")
    assert (
        plugins.storage("lvm").disk_snapshot_delete_check(snapshot=c1, others=[], ctx=ctx()) == []
    )
    answers.lv("lvs_vg0", "vg0/web+c1", hidden=True, stdout=recorded("lvs_vg0")[0])
    runner.on(["lvremove", "--force", "vg0/web+c1"])
    plugins.storage("lvm").disk_snapshot_delete(snapshot=c1, others=[], ctx=ctx())
    gone = snap(WEB, "c7", "web", "classic")
    answers.lv("lvs_no_lv", "vg0/web+c7", hidden=True)
    plugins.storage("lvm").disk_snapshot_delete(snapshot=gone, others=[], ctx=ctx())
    assert [a[0] for a in runner.argvs].count("lvremove") == 1


def test_delete_of_a_merging_snapshot_is_blocked(
    plugins: Plugins, ctx: MakeCtx, answers: Lvs
) -> None:
    c2 = snap(WEB, "c2", "web", "classic")
    answers.vg("lvs_vg0_merge_pending")
    blockers = plugins.storage("lvm").disk_snapshot_delete_check(snapshot=c2, others=[], ctx=ctx())
    assert any("interrupted" in b for b in blockers), blockers
    assert any("merge of vg0/web+c2" in b for b in blockers), blockers


# -- revert ------------------------------------------------------------------------------------


def test_revert_check(plugins: Plugins, ctx: MakeCtx, answers: Lvs) -> None:
    answers.vg("lvs_vg0")
    check = plugins.storage("lvm").disk_snapshot_revert_check
    assert check(snapshot=snap(WEB, "c1", "web", "classic"), others=[], ctx=ctx()) == []
    assert check(snapshot=snap(DB, "c1", "db", "thin"), others=[], ctx=ctx(DB)) == []
    gone = check(snapshot=snap(WEB, "c7", "web", "classic"), others=[], ctx=ctx())
    assert gone == ["snapshot LV vg0/web+c7 is gone (removed outside snapcore?)"]


def test_revert_check_reports_overflow_and_open_origin(
    plugins: Plugins, ctx: MakeCtx, answers: Lvs
) -> None:
    answers.vg("lvs_small", "small")
    ov = Disk(vdev="vdb", path="/dev/small/ov", driver="lvm")
    blockers = plugins.storage("lvm").disk_snapshot_revert_check(
        snapshot=snap(ov, "c1", "ov", "classic"), others=[], ctx=ctx(ov)
    )
    assert len(blockers) == 1
    assert "small/ov+c1 overflowed" in blockers[0]
    answers.vg_text(edit("lvs_vg0", "web", lv_device_open="1", lv_attr="owi-aos---"))
    c1 = snap(WEB, "c1", "web", "classic")
    blockers = plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=ctx())
    assert blockers == [
        "vg0/web is open (in use by another process): LVM would put the revert off until it "
        "is closed; close it first"
    ]
    running = ctx(state=DomainState.RUNNING)  # the coordinator stops it first
    assert (
        plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=running) == []
    )


def _revert_classic_commands(uuid: str) -> list[list[str]]:
    return [
        ["lvchange", "--addtag", f"snapcore_merge=c1={uuid}", "vg0/web"],
        ["lvconvert", "--merge", "--yes", "--interval", "1", "vg0/web+c1"],
        [
            "lvcreate",
            "--snapshot",
            "--name",
            "web+c1",
            "--extents",
            "17",
            "--permission",
            "r",
            "--addtag",
            "snapcore",
            "vg0/web",
        ],
        ["lvchange", "--deltag", f"snapcore_merge=c1={uuid}", "vg0/web"],
    ]


def _c1_uuid() -> str:
    """The UUID of snapshot LV vg0/web+c1 in the recorded report lvs_vg0."""
    return next(lv.uuid for lv in parse_report(recorded("lvs_vg0")[0]) if lv.name == "web+c1")


def _answer_classic_revert(answers: Lvs) -> list[list[str]]:
    """Answer the report and the commands of a classic revert of vg0/web to c1 that merges;
    return the commands that change something, in order."""
    answers.vg("lvs_vg0")
    steps = _revert_classic_commands(_c1_uuid())
    for argv in steps:
        answers.ok(*argv, name="lvconvert_done" if argv[0] == "lvconvert" else None)
    return steps


def test_revert_classic_merges_then_makes_the_snapshot_again(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    steps = _answer_classic_revert(answers)
    answers.lv("lvs_web", "vg0/web")
    c1 = snap(WEB, "c1", "web", "classic")
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx())
    changes = [list(a) for a in runner.argvs if a[0] != "lvs"]
    assert changes == steps


def test_revert_classic_that_fails_after_the_merge_makes_the_snapshot_again(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    """The merge consumed the snapshot LV, then the look at the origin failed: the revert
    fails, but the checkpoint keeps its snapshot (made again from the reverted origin)."""
    steps = _answer_classic_revert(answers)
    runner.fail(lvs_argv("vg0/web", hidden=False), stderr="  injected", times=1)
    answers.lv("lvs_no_lv", "vg0/web+c1", hidden=True)
    answers.lv("lvs_web", "vg0/web")
    c1 = snap(WEB, "c1", "web", "classic")
    with pytest.raises(CommandError, match="injected"):
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx())
    assert [list(a) for a in runner.argvs if a[0] != "lvs"] == steps


def test_revert_classic_that_fails_before_the_merge_makes_nothing_again(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.vg("lvs_vg0")
    uuid = _c1_uuid()
    tag, merge = _revert_classic_commands(uuid)[:2]
    answers.ok(*tag)
    runner.fail(merge, stderr="  injected")
    answers.lv("lvs_vg0", "vg0/web+c1", hidden=True)
    c1 = snap(WEB, "c1", "web", "classic")
    with pytest.raises(CommandError, match="injected"):
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx())
    assert [a[0] for a in runner.argvs if a[0] != "lvs"] == ["lvchange", "lvconvert"]


def test_revert_classic_put_off_is_reported_not_taken_as_done(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.vg("lvs_vg0")
    uuid = _c1_uuid()
    tag, merge = _revert_classic_commands(uuid)[:2]
    answers.ok(*tag)
    answers.ok(*merge, name="lvconvert_deferred")
    answers.lv("lvs_web_merge_pending", "vg0/web")
    c1 = snap(WEB, "c1", "web", "classic")
    with pytest.raises(DeferredMergeError, match="put off the merge of vg0/web\\+c1") as exc:
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx())
    assert exc.value.vdev == "vdb"
    assert "lvcreate" not in [a[0] for a in runner.argvs]


def test_revert_classic_after_a_crash_past_the_merge(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    # the origin carries the revert's tag and the snapshot is gone: make it again, drop the tag
    answers.vg("lvs_vg0_merged")
    tag = "snapcore_merge=c2=K4rZBj-QWvu-zCOU-0Psa-1qgc-W9TR-MPLz9w"
    recreate = ["lvcreate", "--snapshot", "--name", "web+c2", "--extents", "17", "--permission",
                "r", "--addtag", "snapcore", "vg0/web"]  # fmt: skip
    answers.ok(*recreate)
    answers.ok("lvchange", "--deltag", tag, "vg0/web")
    c2 = snap(WEB, "c2", "web", "classic")
    assert (
        plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c2, others=[], ctx=ctx()) == []
    )
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c2, others=[], ctx=ctx())
    assert [list(a) for a in runner.argvs if a[0] != "lvs"] == [
        recreate,
        ["lvchange", "--deltag", tag, "vg0/web"],
    ]


def test_revert_classic_starts_a_merge_put_off_earlier_once_closed(
    plugins: Plugins,
    ctx: MakeCtx,
    runner: RecordingRunner,
    answers: Lvs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = edit("lvs_vg0_merge_pending", "web", lv_device_open="0", lv_attr="Owi-a-s---")
    answers.vg_text(closed)
    answers.ok("lvchange", "--refresh", "vg0/web", name="lvchange_refresh")
    answers.lv("lvs_no_lv", "vg0/web+c2", hidden=True)
    answers.lv("lvs_web", "vg0/web")
    tag = "snapcore_merge=c2=K4rZBj-QWvu-zCOU-0Psa-1qgc-W9TR-MPLz9w"
    runner.on(["lvcreate", "--snapshot", "--name", "web+c2", "--extents", "17"], prefix=True)
    answers.ok("lvchange", "--deltag", tag, "vg0/web")
    c2 = snap(WEB, "c2", "web", "classic")
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c2, others=[], ctx=ctx())
    assert [a[:2] for a in runner.argvs if a[0] != "lvs"] == [
        ("lvchange", "--refresh"),
        ("lvcreate", "--snapshot"),
        ("lvchange", "--deltag"),
    ]


def test_revert_thin_swaps_names(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.vg("lvs_vg0")
    steps = [
        [
            "lvcreate",
            "--snapshot",
            "--name",
            "db+.revert",
            "--permission",
            "rw",
            "--setactivationskip",
            "n",
            "--activate",
            "y",
            "vg0/db+c1",
        ],
        ["lvrename", "vg0", "db", "db+.old"],
        ["lvrename", "vg0", "db+.revert", "db"],
        ["lvremove", "--force", "vg0/db+.old"],
    ]
    for argv in steps:
        answers.ok(*argv)
    c1 = snap(DB, "c1", "db", "thin")
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx(DB))
    assert [list(a) for a in runner.argvs if a[0] != "lvs"] == steps


def test_revert_thin_that_fails_between_the_renames_gives_the_disk_its_name_back(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.vg("lvs_vg0")
    runner.on(["lvcreate", "--snapshot", "--name", "db+.revert"], prefix=True)
    answers.ok("lvrename", "vg0", "db", "db+.old")
    runner.fail(["lvrename", "vg0", "db+.revert", "db"], stderr="  injected")
    answers.ok("lvrename", "vg0", "db+.old", "db")
    c1 = snap(DB, "c1", "db", "thin")
    with pytest.raises(CommandError, match="injected"):
        plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx(DB))
    assert [list(a[:4]) for a in runner.argvs if a[0] == "lvrename"] == [
        ["lvrename", "vg0", "db", "db+.old"],
        ["lvrename", "vg0", "db+.revert", "db"],
        ["lvrename", "vg0", "db+.old", "db"],
    ]
    assert "lvremove" not in [a[0] for a in runner.argvs]


def test_revert_thin_after_a_crash_between_the_renames(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner, answers: Lvs
) -> None:
    answers.vg("lvs_vg0_thin_interrupted")
    answers.ok("lvrename", "vg0", "db+.revert", "db")
    answers.ok("lvremove", "--force", "vg0/db+.old")
    c1 = snap(DB, "c1", "db", "thin")
    assert (
        plugins.storage("lvm").disk_snapshot_revert_check(snapshot=c1, others=[], ctx=ctx(DB)) == []
    )
    plugins.storage("lvm").disk_snapshot_revert(snapshot=c1, others=[], ctx=ctx(DB))
    assert [list(a) for a in runner.argvs if a[0] != "lvs"] == [
        ["lvrename", "vg0", "db+.revert", "db"],
        ["lvremove", "--force", "vg0/db+.old"],
    ]


# -- list --------------------------------------------------------------------------------------


def test_list_reads_the_vg(
    plugins: Plugins, ctx: MakeCtx, answers: Lvs, runner: RecordingRunner
) -> None:
    runner.on(lvs_argv("vg0", hidden=False), stdout=recorded("lvs_vg0")[0])
    listed = plugins.storage("lvm").disk_snapshot_list(disk=WEB, known=[], ctx=ctx())
    assert [(s.name, s.locator, s.extra["ours"]) for s in listed] == [
        ("manual", "vg0/manual", False),  # someone else's snapshot of the same LV
        ("c1", "vg0/web+c1", True),
    ]
    listed = plugins.storage("lvm").disk_snapshot_list(disk=DB, known=[], ctx=ctx(DB))
    assert [s.locator for s in listed] == ["vg0/db+c1"]


def test_list_leaves_out_overflowed_snapshots_and_missing_vgs(
    plugins: Plugins, ctx: MakeCtx, runner: RecordingRunner
) -> None:
    runner.on(lvs_argv("small", hidden=False), stdout=recorded("lvs_small")[0])
    ov = Disk(vdev="vdb", path="/dev/small/ov", driver="lvm")
    assert plugins.storage("lvm").disk_snapshot_list(disk=ov, known=[], ctx=ctx(ov)) == []
    out, err, rc = recorded("lvs_no_vg")
    runner.on(lvs_argv("novg", hidden=False), stdout=out, stderr=err, returncode=rc)
    gone = Disk(vdev="vdb", path="/dev/novg/lv0", driver="lvm")
    assert plugins.storage("lvm").disk_snapshot_list(disk=gone, known=[], ctx=ctx(gone)) == []
