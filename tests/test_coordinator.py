"""The coordinator: plans, undo on failure, journal recovery, tree of checkpoints, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from snapcore import CreateOptions, DiskChoice, Domain, DomainState, Host, coordinator
from snapcore.api import DomainHandle
from snapcore.errors import (
    BackendError,
    ConfigError,
    CreateBlockedError,
    DeleteBlockedError,
    DeleteFailedError,
    DomainStateError,
    NoBackendError,
    OperationFailedError,
    PartialCheckpointError,
    RecoveryNeededError,
    RevertBlockedError,
    SnapshotExistsError,
    SnapshotNotFoundError,
)
from snapcore.hookspecs import hookimpl
from snapcore.model import Disk, DiskSnapshot, HypervisorInfo, SnapshotRequest

from .fakes import FakeHypervisor, FileBackend


def _disk(tmp_path: Path, vdev: str, content: bytes) -> Disk:
    path = tmp_path / f"{vdev}.img"
    path.write_bytes(content)
    return Disk(vdev=vdev, path=str(path), driver="files")


@pytest.fixture
def backend() -> FileBackend:
    return FileBackend()


@pytest.fixture
def domain(tmp_path: Path) -> Domain:
    return Domain(
        name="dom",
        disks=(_disk(tmp_path, "vda", b"A0"), _disk(tmp_path, "vdb", b"B0")),
    )


def _handle(tmp_path: Path, domain: Domain, *plugins: tuple[str, object]) -> DomainHandle:
    host = Host(state_dir=tmp_path / "state", entry_points=False)
    for name, plugin in plugins:
        host.register(plugin, name)
    return host.open_domain(domain)


@pytest.fixture
def dom(tmp_path: Path, domain: Domain, backend: FileBackend) -> DomainHandle:
    return _handle(tmp_path, domain, ("files", backend))


def _read(domain: Domain, vdev: str) -> bytes:
    return Path(domain.disk(vdev).path).read_bytes()


def _write(domain: Domain, vdev: str, data: bytes) -> None:
    Path(domain.disk(vdev).path).write_bytes(data)


def _snap_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("*.snap"))


# -- create -----------------------------------------------------------------------------------


def test_create_snapshots_every_disk_and_records_tree(dom: DomainHandle, domain: Domain) -> None:
    first = dom.create(CreateOptions(name="one", description="first"))
    assert [d.vdev for d in first.disks] == ["vda", "vdb"]
    assert first.state is DomainState.SHUTOFF
    assert first.memory is None
    assert first.parent is None
    second = dom.create(CreateOptions(name="two"))
    assert second.parent == "one"
    views = {v.checkpoint.name: v for v in dom.list()}
    assert views["two"].current
    assert not views["one"].current
    assert views["one"].children == ("two",)
    assert views["one"].checkpoint.description == "first"
    assert Path(domain.disk("vda").path + ".one.snap").read_bytes() == b"A0"


def test_default_name_is_epoch_seconds_and_never_collides(dom: DomainHandle) -> None:
    names = [dom.create().name for _ in range(3)]
    assert len(set(names)) == 3
    for name in names:
        base, _, suffix = name.partition(".")
        assert abs(int(base) - time.time()) < 60
        assert suffix == "" or suffix.isdigit()


def test_duplicate_name_refused_nothing_touched(
    dom: DomainHandle, backend: FileBackend, tmp_path: Path
) -> None:
    dom.create(CreateOptions(name="x"))
    calls = list(backend.calls)
    with pytest.raises(SnapshotExistsError) as err:
        dom.create(CreateOptions(name="x"))
    assert err.value.exit_code == 2
    assert backend.calls == calls


def test_failure_on_second_disk_leaves_first_without_snapshot(
    dom: DomainHandle, backend: FileBackend, tmp_path: Path
) -> None:
    backend.fail["create", "vdb"] = "disk full"
    with pytest.raises(OperationFailedError) as err:
        dom.create(CreateOptions(name="bad"))
    assert err.value.exit_code == 1
    assert "disk full" in str(err.value)
    assert _snap_files(tmp_path) == []
    assert ("abort", "vda") in backend.calls
    assert ("abort", "vdb") in backend.calls
    assert dom.list() == []
    assert dom.store.journal_path.exists() is False


def test_undo_runs_in_reverse_order(
    tmp_path: Path, backend: FileBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    disks = tuple(_disk(tmp_path, f"vd{c}", c.encode()) for c in "abc")
    dom = _handle(tmp_path, Domain(name="d3", disks=disks), ("files", backend))
    # One worker thread: disks start in order, so the undo order is known.
    monkeypatch.setattr(coordinator, "MAX_PARALLEL", 1)
    backend.fail["create", "vdc"] = "boom"
    with pytest.raises(OperationFailedError):
        dom.create(CreateOptions(name="x"))
    aborts = [v for h, v in backend.calls if h == "abort"]
    assert aborts == ["vdc", "vdb", "vda"]


def test_failed_undo_is_exit_3_and_recover_finishes(
    dom: DomainHandle, backend: FileBackend, tmp_path: Path
) -> None:
    backend.fail["create", "vdb"] = "disk full"
    backend.fail["abort", "vda"] = "abort broke"
    with pytest.raises(PartialCheckpointError) as err:
        dom.create(CreateOptions(name="bad"))
    assert err.value.exit_code == 3
    assert "disk vda" in str(err.value)
    assert "snapcore recover" in str(err.value)
    assert "vda.img.bad.snap" in _snap_files(tmp_path)
    assert dom.store.journal_path.exists()
    # Still broken: recovery reports, keeps the journal.
    with pytest.raises(RecoveryNeededError):
        dom.recover()
    del backend.fail["abort", "vda"]
    assert "undid the interrupted create" in (dom.recover() or "")
    assert _snap_files(tmp_path) == []
    assert not dom.store.journal_path.exists()


def test_blockers_refuse_before_touching(dom: DomainHandle, backend: FileBackend) -> None:
    backend.blockers["create", "vdb"] = ["pool is full"]
    with pytest.raises(CreateBlockedError) as err:
        dom.create(CreateOptions(name="x"))
    assert err.value.exit_code == 2
    assert "disk vdb: pool is full" in str(err.value)
    assert not [c for c in backend.calls if c[0] == "create"]


def test_dry_run_plans_and_changes_nothing(
    dom: DomainHandle, backend: FileBackend, tmp_path: Path
) -> None:
    plan = dom.plan_create(CreateOptions(name="p"))
    assert [s.vdev for s in plan.steps] == ["vda", "vdb"]
    assert plan.to_json()["operation"] == "create"
    assert backend.calls == []
    assert _snap_files(tmp_path) == []
    assert dom.list() == []


def test_readonly_disk_skipped_and_listing_it_refused(tmp_path: Path, backend: FileBackend) -> None:
    cd = tmp_path / "cd.iso"
    cd.write_bytes(b"iso")
    domain = Domain(
        name="ro",
        disks=(
            _disk(tmp_path, "vda", b"A"),
            Disk(vdev="hdc", path=str(cd), readonly=True),
        ),
    )
    dom = _handle(tmp_path, domain, ("files", backend))
    cp = dom.create(CreateOptions(name="x"))
    assert [d.vdev for d in cp.disks] == ["vda"]
    assert "hdc: read-only" in dom.plan_create(CreateOptions(name="y")).skipped
    with pytest.raises(ConfigError, match="read-only"):
        dom.create(CreateOptions(name="z", disks=(DiskChoice(vdev="hdc"),)))


def test_unknown_vdev_in_disk_list_refused(dom: DomainHandle) -> None:
    with pytest.raises(ConfigError, match="no disk 'vdz'"):
        dom.create(CreateOptions(name="x", disks=(DiskChoice(vdev="vdz"),)))


def test_disk_no_backend_claims(tmp_path: Path) -> None:
    path = tmp_path / "disk.weird"
    path.write_bytes(b"?")
    dom = _handle(tmp_path, Domain(name="nb", disks=(Disk(vdev="vda", path=str(path)),)))
    with pytest.raises(NoBackendError) as err:
        dom.create(CreateOptions(name="x"))
    assert err.value.exit_code == 2
    assert "set driver=" in str(err.value)


def test_memory_for_stopped_domain_refused(dom: DomainHandle, backend: FileBackend) -> None:
    with pytest.raises(DomainStateError) as err:
        dom.create(CreateOptions(name="x", memory="yes"))
    assert err.value.exit_code == 2
    assert "shutoff" in str(err.value)
    assert backend.calls == []


# -- running domains (through a hypervisor plugin) ----------------------------------------------


@pytest.fixture
def hv(backend: FileBackend) -> FakeHypervisor:
    return FakeHypervisor(timeline=backend.timeline)


@pytest.fixture
def live(tmp_path: Path, backend: FileBackend, hv: FakeHypervisor) -> DomainHandle:
    return _running(tmp_path, backend, hv)


def _running(
    tmp_path: Path, backend: FileBackend, hv: FakeHypervisor, name: str = "live"
) -> DomainHandle:
    """A domain of two ``files`` disks that the ``fakehv`` hypervisor runs."""
    domain = Domain(
        name=name,
        hypervisor="fakehv",
        disks=(_disk(tmp_path, "vda", b"A0"), _disk(tmp_path, "vdb", b"B0")),
    )
    return _handle(tmp_path, domain, ("files", backend), ("fakehv", hv))


def test_running_checkpoint_pauses_snapshots_disks_then_saves_memory(
    live: DomainHandle, backend: FileBackend, hv: FakeHypervisor
) -> None:
    cp = live.create(CreateOptions(name="m"))
    assert cp.state is DomainState.RUNNING
    assert cp.memory is not None
    assert Path(cp.memory.path).read_bytes() == b"RAM"
    timeline = backend.timeline
    assert timeline[0] == "pause"
    assert sorted(timeline[1:3]) == ["create vda", "create vdb"]
    assert timeline[3:] == ["memory_save", "resume"]
    assert hv.state is DomainState.RUNNING


def test_memory_save_failure_undoes_disks_and_resumes(
    live: DomainHandle, backend: FileBackend, hv: FakeHypervisor, tmp_path: Path
) -> None:
    hv.fail.add("memory_save")
    with pytest.raises(OperationFailedError, match="memory_save failed"):
        live.create(CreateOptions(name="m"))
    assert _snap_files(tmp_path) == []
    assert backend.timeline[-1] == "resume"
    assert hv.state is DomainState.RUNNING
    assert live.list() == []


def test_disk_only_running_checkpoint_pauses_and_resumes(
    live: DomainHandle, hv: FakeHypervisor
) -> None:
    cp = live.create(CreateOptions(name="d", memory="no"))
    assert cp.memory is None
    assert hv.calls == ["pause", "resume"]


def test_failure_while_running_resumes_and_removes_memory(
    live: DomainHandle, backend: FileBackend, hv: FakeHypervisor, tmp_path: Path
) -> None:
    backend.fail["create", "vdb"] = "no space"
    with pytest.raises(OperationFailedError):
        live.create(CreateOptions(name="m"))
    assert hv.calls[-1] == "resume"
    assert hv.state is DomainState.RUNNING
    assert not list(live.store.memory_dir.glob("*"))  # (a new domain's directory is gone)
    assert _snap_files(tmp_path) == []


def test_revert_with_memory_stops_reverts_and_restores(
    live: DomainHandle, backend: FileBackend, hv: FakeHypervisor
) -> None:
    live.create(CreateOptions(name="m"))
    _write(live.domain, "vda", b"A1")
    hv.calls.clear()
    live.revert("m")
    assert _read(live.domain, "vda") == b"A0"
    assert hv.calls == ["stop", "memory_restore:RAM:running"]
    assert hv.state is DomainState.RUNNING


# -- revert -----------------------------------------------------------------------------------


def test_revert_to_older_then_newer_keeps_both(dom: DomainHandle, domain: Domain) -> None:
    dom.create(CreateOptions(name="one"))
    _write(domain, "vda", b"A1")
    _write(domain, "vdb", b"B1")
    dom.create(CreateOptions(name="two"))
    _write(domain, "vda", b"A2")
    dom.revert("one")
    assert _read(domain, "vda") == b"A0"
    assert _read(domain, "vdb") == b"B0"
    assert [v.checkpoint.name for v in dom.list() if v.current] == ["one"]
    dom.revert("two")
    assert (_read(domain, "vda"), _read(domain, "vdb")) == (b"A1", b"B1")
    assert {v.checkpoint.name for v in dom.list()} == {"one", "two"}
    # A checkpoint made after reverting to "one" is a child of "one": the tree branches.
    dom.revert("one")
    three = dom.create(CreateOptions(name="three"))
    assert three.parent == "one"
    views = {v.checkpoint.name: v for v in dom.list()}
    assert set(views["one"].children) == {"two", "three"}


def test_revert_unknown_name(dom: DomainHandle) -> None:
    with pytest.raises(SnapshotNotFoundError) as err:
        dom.revert("nope")
    assert err.value.exit_code == 2
    assert "no snapshot 'nope'" in str(err.value)


def test_revert_blocked_on_one_disk_touches_none(
    dom: DomainHandle, backend: FileBackend, domain: Domain
) -> None:
    dom.create(CreateOptions(name="one"))
    _write(domain, "vda", b"A1")
    backend.blockers["revert", "vdb"] = ["only the latest snapshot can be reverted"]
    with pytest.raises(RevertBlockedError) as err:
        dom.revert("one")
    assert "disk vdb: only the latest" in str(err.value)
    assert _read(domain, "vda") == b"A1"
    assert not [c for c in backend.calls if c[0] == "revert"]


def test_revert_partial_failure_is_completed_by_recover(
    dom: DomainHandle, backend: FileBackend, domain: Domain
) -> None:
    dom.create(CreateOptions(name="one"))
    _write(domain, "vda", b"A1")
    _write(domain, "vdb", b"B1")
    backend.fail["revert", "vdb"] = "io error"
    with pytest.raises(PartialCheckpointError) as err:
        dom.revert("one")
    assert err.value.exit_code == 3
    assert "disks not reverted: vdb" in str(err.value)
    del backend.fail["revert", "vdb"]
    # The next command on the domain completes the revert before doing its own work.
    assert [v.checkpoint.name for v in dom.list() if v.current] == ["one"]
    assert (_read(domain, "vda"), _read(domain, "vdb")) == (b"A0", b"B0")


def test_revert_dry_run(dom: DomainHandle, domain: Domain, backend: FileBackend) -> None:
    dom.create(CreateOptions(name="one"))
    _write(domain, "vda", b"A1")
    plan = dom.plan_revert("one")
    assert [s.action for s in plan.steps] == ["revert snapshot", "revert snapshot"]
    assert _read(domain, "vda") == b"A1"


# -- delete -----------------------------------------------------------------------------------


def test_delete_reparents_children_and_moves_current(
    dom: DomainHandle, domain: Domain, tmp_path: Path
) -> None:
    dom.create(CreateOptions(name="a"))
    dom.create(CreateOptions(name="b"))
    dom.create(CreateOptions(name="c"))
    dom.delete("b")
    views = {v.checkpoint.name: v for v in dom.list()}
    assert set(views) == {"a", "c"}
    assert views["c"].checkpoint.parent == "a"
    assert views["c"].current
    dom.delete("c")
    assert [v.checkpoint.name for v in dom.list() if v.current] == ["a"]
    assert _snap_files(tmp_path) == ["vda.img.a.snap", "vdb.img.a.snap"]


def test_delete_blocked_and_unknown(dom: DomainHandle, backend: FileBackend) -> None:
    dom.create(CreateOptions(name="a"))
    backend.blockers["delete", "vda"] = ["in use"]
    with pytest.raises(DeleteBlockedError):
        dom.delete("a")
    assert len(dom.list()) == 1
    with pytest.raises(SnapshotNotFoundError):
        dom.delete("zzz")


def test_delete_partial_failure_keeps_record_and_retry_finishes(
    dom: DomainHandle, backend: FileBackend, tmp_path: Path
) -> None:
    dom.create(CreateOptions(name="a"))
    backend.fail["delete", "vdb"] = "busy"
    with pytest.raises(PartialCheckpointError) as err:
        dom.delete("a")
    assert "disks not deleted: vdb" in str(err.value)
    assert [v.checkpoint.name for v in dom.list()] == ["a"]
    del backend.fail["delete", "vdb"]
    dom.delete("a")
    assert dom.list() == []
    assert _snap_files(tmp_path) == []


def test_list_verify_reports_snapshot_removed_behind_our_back(
    dom: DomainHandle, domain: Domain
) -> None:
    dom.create(CreateOptions(name="a"))
    os.unlink(domain.disk("vdb").path + ".a.snap")
    (view,) = dom.list(verify=True)
    assert view.missing == ("vdb",)
    (view,) = dom.list()
    assert view.missing == ()


# -- crash recovery -----------------------------------------------------------------------------


def _crash_child(state_dir: str, domain: Domain, crash_at: tuple[str, str]) -> None:
    backend = FileBackend()
    backend.crash.add(crash_at)
    host = Host(state_dir=state_dir, entry_points=False)
    host.register(backend, "files")
    host.open_domain(domain).create(CreateOptions(name="crash"))


@pytest.mark.parametrize("crash_at", [("create", "vda"), ("create", "vdb")])
def test_process_killed_mid_create_is_undone_by_next_command(
    tmp_path: Path, domain: Domain, crash_at: tuple[str, str]
) -> None:
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_crash_child, args=(str(tmp_path / "state"), domain, crash_at))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 9
    dom = _handle(tmp_path, domain, ("files", FileBackend()))
    assert dom.store.journal_path.exists()
    assert dom.list() == []  # the next command recovers first
    assert not dom.store.journal_path.exists()
    assert _snap_files(tmp_path) == []
    assert dom.create(CreateOptions(name="crash")).name == "crash"


def _journal(dom: DomainHandle, entry: dict[str, object]) -> None:
    dom.store.ensure()
    dom.store.journal_path.write_text(json.dumps({"schema": 1, **entry}))


def test_crash_in_commit_phase_is_completed(dom: DomainHandle, domain: Domain) -> None:
    cp = dom.create(CreateOptions(name="a"))
    dom.store.remove("a")
    dom.store.set_current(None)
    _journal(
        dom, {"operation": "create", "name": "a", "phase": "commit", "checkpoint": cp.to_json()}
    )
    assert "completed" in (dom.recover() or "")
    (view,) = dom.list()
    assert view.checkpoint.name == "a"
    assert view.current


def test_crash_mid_delete_is_completed(dom: DomainHandle, tmp_path: Path) -> None:
    dom.create(CreateOptions(name="a"))
    os.unlink(tmp_path / "vda.img.a.snap")  # the first disk was done before the crash
    _journal(dom, {"operation": "delete", "name": "a", "done": ["vda"]})
    assert "completed the interrupted delete" in (dom.recover() or "")
    assert dom.list() == []
    assert _snap_files(tmp_path) == []


def test_crash_mid_revert_is_completed(dom: DomainHandle, domain: Domain) -> None:
    dom.create(CreateOptions(name="a"))
    _write(domain, "vda", b"A0")  # first disk reverted before the crash
    _write(domain, "vdb", b"B9")
    _journal(dom, {"operation": "revert", "name": "a", "done": ["vda"]})
    assert "completed the interrupted revert" in (dom.recover() or "")
    assert _read(domain, "vdb") == b"B0"


def test_recover_forget_and_nothing_to_do(dom: DomainHandle) -> None:
    assert dom.recover() is None
    _journal(dom, {"operation": "revert", "name": "gone", "done": []})
    assert "forgot" in (dom.recover(forget=True) or "")
    assert dom.recover() is None


# -- concurrency --------------------------------------------------------------------------------


def test_concurrent_creates_serialize(tmp_path: Path, domain: Domain) -> None:
    errors: list[BaseException] = []
    names: list[str] = []

    def worker(i: int) -> None:
        try:
            dom = _handle(tmp_path, domain, ("files", FileBackend()))
            names.append(dom.create(CreateOptions(name=f"c{i}")).name)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    dom = _handle(tmp_path, domain, ("files", FileBackend()))
    views = dom.list()
    assert sorted(v.checkpoint.name for v in views) == ["c0", "c1", "c2", "c3"]
    parents = [v.checkpoint.parent for v in views]
    assert parents.count(None) == 1  # a chain, each create saw the one before it


def test_target_without_type_means_external(dom: DomainHandle, tmp_path: Path) -> None:
    choice = DiskChoice(vdev="vda", target=str(tmp_path / "t.img"))
    with pytest.raises(CreateBlockedError, match="cannot make external snapshots"):
        dom.plan_create(CreateOptions(name="x", disks=(choice,)))


def test_disk_only_checkpoint_with_guest_agent_quiesces_and_thaws(
    tmp_path: Path, backend: FileBackend, hv: FakeHypervisor
) -> None:
    domain = Domain(
        name="agent",
        hypervisor="fakehv",
        hypervisor_table={"guest_agent": str(tmp_path / "qga.sock")},
        disks=(_disk(tmp_path, "vda", b"A0"), _disk(tmp_path, "vdb", b"B0")),
    )
    dom = _handle(tmp_path, domain, ("files", backend), ("fakehv", hv))
    dom.create(CreateOptions(name="d", memory="no"))
    assert hv.calls == ["quiesce", "pause", "resume", "thaw"]
    hv.calls.clear()
    backend.fail["create", "vdb"] = "no space"
    with pytest.raises(OperationFailedError):
        dom.create(CreateOptions(name="e", memory="no"))
    assert hv.calls == ["quiesce", "pause", "resume", "thaw"]
    hv.calls.clear()
    del backend.fail["create", "vdb"]
    dom.create(CreateOptions(name="m"))  # with memory: the page cache is saved, no freeze
    assert "quiesce" not in hv.calls


def test_list_puts_parent_before_child_made_in_the_same_second(
    dom: DomainHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    dom.create(CreateOptions(name="zz-parent"))
    dom.create(CreateOptions(name="aa-child"))
    dom.create(CreateOptions(name="mm-grandchild"))
    assert [v.checkpoint.name for v in dom.list()] == ["zz-parent", "aa-child", "mm-grandchild"]


def test_delete_failing_on_every_disk_is_marked_unfinished_exit_1(
    dom: DomainHandle, backend: FileBackend
) -> None:
    """A disk's failed delete may have merged part of the snapshot already (the hook's contract
    allows it): the checkpoint stays listed, marked, cannot be reverted to, and deleting it
    again finishes it."""
    dom.create(CreateOptions(name="a"))
    dom.create(CreateOptions(name="b"))
    backend.fail["delete", "vda"] = "busy"
    backend.fail["delete", "vdb"] = "also busy"
    with pytest.raises(DeleteFailedError) as err:
        dom.delete("a")
    assert err.value.exit_code == 1
    assert "snapshot-delete -n a" in str(err.value)
    assert "undone" not in str(err.value)
    assert [(v.checkpoint.name, v.checkpoint.deleting) for v in dom.list()] == [
        ("a", True),
        ("b", False),
    ]
    assert dom.list()[0].to_json()["deleting"] is True
    with pytest.raises(RevertBlockedError, match="a delete of it failed part-way"):
        dom.revert("a")
    dom.revert("b")  # the others are untouched
    del backend.fail["delete", "vda"], backend.fail["delete", "vdb"]
    dom.delete("a")
    assert [v.checkpoint.name for v in dom.list()] == ["b"]


def test_partial_delete_says_to_delete_again(dom: DomainHandle, backend: FileBackend) -> None:
    dom.create(CreateOptions(name="a"))
    backend.fail["delete", "vdb"] = "busy"
    with pytest.raises(PartialCheckpointError) as err:
        dom.delete("a")
    assert "snapshot-delete -n a" in str(err.value)
    assert "recover" not in str(err.value)
    assert dom.get("a").checkpoint.deleting
    with pytest.raises(RevertBlockedError):
        dom.revert("a")


class GroupBackend(FileBackend):
    """Takes all its disks in one call, as a QMP transaction would."""

    @hookimpl
    def disk_snapshot_create_group(
        self, requests: Sequence[SnapshotRequest]
    ) -> list[DiskSnapshot] | None:
        if requests[0].disk.driver != self.driver:
            return None
        self.timeline.append("group " + ",".join(r.disk.vdev for r in requests))
        if ("group", "all") in self.fail:
            raise BackendError(self.fail["group", "all"], driver=self.driver)
        made = [self.disk_snapshot_create(request=r) for r in requests]
        return [m for m in made if m is not None]


def test_group_hook_takes_every_disk_of_a_driver_in_one_call(
    tmp_path: Path, domain: Domain
) -> None:
    backend = GroupBackend()
    dom = _handle(tmp_path, domain, ("files", backend))
    cp = dom.create(CreateOptions(name="g"))
    assert [d.vdev for d in cp.disks] == ["vda", "vdb"]
    assert backend.timeline[0] == "group vda,vdb"
    backend.fail["group", "all"] = "transaction refused"
    with pytest.raises(OperationFailedError, match="transaction refused"):
        dom.create(CreateOptions(name="h"))
    assert sorted(v for h, v in backend.calls if h == "abort") == ["vda", "vdb"]
    assert [v.checkpoint.name for v in dom.list()] == ["g"]


class PreparingBackend(GroupBackend):
    """Prepares its snapshots while the guest runs, as the qcow2 driver's overlays are."""

    @hookimpl
    def disk_snapshot_prepare_group(self, requests: Sequence[SnapshotRequest]) -> bool | None:
        if requests[0].disk.driver != self.driver:
            return None
        self.timeline.append("prepare " + ",".join(r.disk.vdev for r in requests))
        if ("prepare", "all") in self.fail:
            raise BackendError(self.fail["prepare", "all"], driver=self.driver)
        return True


def test_snapshots_are_prepared_before_the_pause_and_aborted_if_it_fails(
    tmp_path: Path,
) -> None:
    backend = PreparingBackend()
    hv = FakeHypervisor(timeline=backend.timeline)
    dom = _running(tmp_path, backend, hv)
    dom.create(CreateOptions(name="p", memory="no"))
    assert backend.timeline[:3] == ["prepare vda,vdb", "pause", "group vda,vdb"]
    assert backend.timeline[-1] == "resume"

    backend.timeline.clear()
    hv.fail.add("pause")  # prepared, then the pause fails: the preparation is aborted
    with pytest.raises(OperationFailedError, match="pause failed"):
        dom.create(CreateOptions(name="q", memory="no"))
    assert backend.timeline[:2] == ["prepare vda,vdb", "pause"]
    assert sorted(t for t in backend.timeline if t.startswith("abort")) == [
        "abort vda",
        "abort vdb",
    ]
    assert not any(t.startswith(("group", "create")) for t in backend.timeline)

    hv.fail.clear()
    backend.timeline.clear()
    backend.fail["prepare", "all"] = "no room for the overlay"
    with pytest.raises(OperationFailedError, match="no room for the overlay"):
        dom.create(CreateOptions(name="r", memory="no"))
    assert "pause" not in backend.timeline  # the guest was never stopped
    assert sorted(t for t in backend.timeline if t.startswith("abort")) == [
        "abort vda",
        "abort vdb",
    ]
    assert [v.checkpoint.name for v in dom.list()] == ["p"]
    assert hv.state is DomainState.RUNNING


class MemoryFirstHypervisor(FakeHypervisor):
    """Like Xen with PV guests: memory is saved first, with the guest running."""

    @hookimpl
    def hypervisor_info(self) -> HypervisorInfo:
        return HypervisorInfo(name="fakehv", memory=True, memory_first=True)


def test_memory_first_hypervisor_saves_memory_before_the_disks(
    tmp_path: Path, backend: FileBackend
) -> None:
    hv = MemoryFirstHypervisor(timeline=backend.timeline)
    dom = _running(tmp_path, backend, hv, name="pv")
    cp = dom.create(CreateOptions(name="m"))
    assert cp.memory is not None
    assert backend.timeline[0] == "memory_save"
    assert sorted(backend.timeline[1:3]) == ["create vda", "create vdb"]
    assert backend.timeline[3:] == ["resume"]
    backend.timeline.clear()
    backend.fail["create", "vdb"] = "no space"
    with pytest.raises(OperationFailedError):
        dom.create(CreateOptions(name="n"))
    assert backend.timeline[-1] == "resume"
    assert not any(p.name == "n.img" for p in dom.store.memory_dir.iterdir())
