"""The plugin boundary (snapcore/boundary.py): routing to the owner only, result checks,
exception mapping, time limits, abandoned calls, and hook API 1.x plugins through it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from snapcore.api import Host
from snapcore.boundary import CallRegistry, describe, hook_timeout
from snapcore.context import HookContext
from snapcore.errors import (
    BackendError,
    ConfigError,
    HookTimeoutError,
    OperationFailedError,
    PluginContractError,
)
from snapcore.hookspecs import hookimpl
from snapcore.model import (
    BackendInfo,
    CreateOptions,
    Disk,
    DiskSnapshot,
    Domain,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.plugins import Plugins, load_plugins
from snapcore.testing import InstalledBackendConformance
from tests.legacy import rawcopy_api1

NATIVE = SnapshotKind.NATIVE


class Recorder:
    """A storage plugin for driver *driver* that records every hook it is called for."""

    def __init__(self, driver: str, timeout: float | None = None):
        self.driver = driver
        self.timeout = timeout
        self.calls: list[tuple[str, str]] = []
        self.answer: dict[str, object] = {}
        self.delay = 0.0

    def _ret(self, hook: str, vdev: str, default: object) -> object:
        self.calls.append((hook, vdev))
        if self.delay:
            time.sleep(self.delay)
        return self.answer.get(hook, default)

    def _snap(self, disk: Disk, name: str) -> DiskSnapshot:
        return DiskSnapshot(
            vdev=disk.vdev, path=disk.path, driver=self.driver, kind=NATIVE, name=name, locator="x"
        )

    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            driver=self.driver,
            kinds=frozenset({NATIVE}),
            default_kind=NATIVE,
            hook_timeout=self.timeout,
        )

    @hookimpl
    def disk_snapshot_create_check(self, request: SnapshotRequest) -> object:
        return self._ret("disk_snapshot_create_check", request.disk.vdev, [])

    @hookimpl
    def disk_snapshot_create(self, request: SnapshotRequest) -> object:
        return self._ret(
            "disk_snapshot_create", request.disk.vdev, self._snap(request.disk, request.name)
        )

    @hookimpl
    def disk_snapshot_abort(self, request: SnapshotRequest, created: object) -> object:
        return self._ret("disk_snapshot_abort", f"{request.disk.vdev}:{created is not None}", True)

    @hookimpl
    def disk_snapshot_delete(self, snapshot: DiskSnapshot, disk: Disk) -> object:
        return self._ret("disk_snapshot_delete", f"{snapshot.vdev}:{disk.path}", True)

    @hookimpl
    def disk_snapshot_list(self, disk: Disk) -> object:
        return self._ret("disk_snapshot_list", disk.vdev, [])


def _plugins(*recorders: Recorder, timeout: float | None = None) -> Plugins:
    return load_plugins(
        entry_points=False, extra=[(r.driver, r) for r in recorders], hook_timeout=timeout
    )


def _ctx(*disks: Disk) -> HookContext:
    return HookContext(domain=Domain(name="dom", disks=disks))


DISK = Disk(vdev="vda", path="/images/a", driver="a")


# -- routing ------------------------------------------------------------------------------------


def test_a_checkpoint_calls_each_plugin_for_its_own_disks_only(tmp_path: Path) -> None:
    a, b = Recorder("a"), Recorder("b")
    for vdev in ("vda", "vdb"):
        (tmp_path / vdev).write_bytes(b"x")
    host = Host(state_dir=tmp_path / "state", entry_points=False)
    host.register(a, "a")
    host.register(b, "b")
    domain = Domain(
        name="dom",
        disks=(
            Disk(vdev="vda", path=str(tmp_path / "vda"), driver="a"),
            Disk(vdev="vdb", path=str(tmp_path / "vdb"), driver="b"),
        ),
    )
    host.open_domain(domain).create(CreateOptions(name="c1"))

    assert {vdev for _, vdev in a.calls} == {"vda"}
    assert {vdev for _, vdev in b.calls} == {"vdb"}
    assert [hook for hook, _ in a.calls] == ["disk_snapshot_create_check", "disk_snapshot_create"]


def test_the_backend_of_a_driver_is_the_plugin_that_reports_it() -> None:
    plugins = _plugins(Recorder("a"), Recorder("b"))
    assert plugins.storage("a").name == "a"
    assert plugins.storage("b").driver == "b"


# -- result checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (None, "it returned None, not a DiskSnapshot"),
        ({"vdev": "vda"}, "it returned a dict ({'vdev': 'vda'}), not a DiskSnapshot"),
        ("done", "it returned a str ('done'), not a DiskSnapshot"),
        (True, "it returned True, not a DiskSnapshot"),
    ],
)
def test_create_must_return_a_snapshot(answer: object, problem: str) -> None:
    rec = Recorder("a")
    rec.answer["disk_snapshot_create"] = answer
    with pytest.raises(PluginContractError) as info:
        _plugins(rec).storage("a").disk_snapshot_create(
            request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK)
        )
    assert str(info.value) == (
        f"plugin 'a' broke the contract of disk_snapshot_create for disk vda: {problem}"
    )
    assert (info.value.plugin, info.value.hook, info.value.vdev) == (
        "a",
        "disk_snapshot_create",
        "vda",
    )


def test_create_must_return_the_snapshot_of_its_own_disk() -> None:
    rec = Recorder("a")
    other = Disk(vdev="vdz", path="/z", driver="a")
    rec.answer["disk_snapshot_create"] = rec._snap(other, "c1")
    with pytest.raises(PluginContractError, match="the snapshot of disk vdz"):
        _plugins(rec).storage("a").disk_snapshot_create(
            request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK)
        )


@pytest.mark.parametrize("answer", ["blocked", None, [1], {"x": 1}])
def test_a_check_must_return_a_list_of_strings(answer: object) -> None:
    rec = Recorder("a")
    rec.answer["disk_snapshot_create_check"] = answer
    with pytest.raises(PluginContractError, match="not a list of strings"):
        _plugins(rec).storage("a").disk_snapshot_create_check(
            request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK)
        )


def test_a_check_may_return_a_tuple_of_strings() -> None:
    rec = Recorder("a")
    rec.answer["disk_snapshot_create_check"] = ("full",)
    found = (
        _plugins(rec)
        .storage("a")
        .disk_snapshot_create_check(request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK))
    )
    assert found == ["full"]


@pytest.mark.parametrize("answer", [False, None, 1, "yes"])
def test_a_delete_must_acknowledge_with_true(answer: object) -> None:
    rec = Recorder("a")
    rec.answer["disk_snapshot_delete"] = answer
    snap = rec._snap(DISK, "c1")
    with pytest.raises(PluginContractError, match=r"not True \(done\); raise to fail"):
        _plugins(rec).storage("a").disk_snapshot_delete(snapshot=snap, ctx=_ctx(DISK))


def test_delete_gets_the_disk_and_abort_what_create_returned() -> None:
    rec = Recorder("a")
    backend = _plugins(rec).storage("a")
    snap = rec._snap(DISK, "c1")
    now = Disk(vdev="vda", path="/images/moved", driver="a")
    backend.disk_snapshot_delete(snapshot=snap, disk=now, ctx=_ctx(now))
    request = SnapshotRequest(disk=DISK, name="c1")
    backend.disk_snapshot_abort(request=request, created=snap, ctx=_ctx(DISK))
    backend.disk_snapshot_abort(request=request, ctx=_ctx(DISK))
    assert rec.calls == [
        ("disk_snapshot_delete", "vda:/images/moved"),
        ("disk_snapshot_abort", "vda:True"),
        ("disk_snapshot_abort", "vda:False"),
    ]


def test_a_list_must_be_snapshots() -> None:
    rec = Recorder("a")
    rec.answer["disk_snapshot_list"] = "c1"
    with pytest.raises(PluginContractError, match=r"it returned a str \('c1'\), not a list"):
        _plugins(rec).storage("a").disk_snapshot_list(disk=DISK, known=(), ctx=_ctx(DISK))


def test_a_required_hook_left_out_is_named() -> None:
    rec = Recorder("a")
    with pytest.raises(PluginContractError, match="it does not implement this hook"):
        _plugins(rec).storage("a").disk_snapshot_revert(
            snapshot=rec._snap(DISK, "c1"), ctx=_ctx(DISK)
        )


def test_a_hypervisor_that_cannot_start_domains_is_a_usage_error() -> None:
    plugins = load_plugins(entry_points=False)
    with pytest.raises(ConfigError, match="hypervisor 'none' cannot start domains"):
        plugins.controller("none").domain_start(paused=False, ctx=_ctx(DISK))


def test_describe_is_short() -> None:
    assert describe(None) == "None"
    assert describe(False) == "False"
    assert describe("x" * 500).startswith("a str ('xxx")
    assert len(describe("x" * 500)) < 80


# -- exceptions ---------------------------------------------------------------------------------


class Raiser(Recorder):
    def __init__(self, exc: BaseException):
        super().__init__("a")
        self.exc = exc

    @hookimpl
    def disk_snapshot_create(self, request: SnapshotRequest) -> object:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (SystemExit(7), "it raised SystemExit: 7"),
        (ValueError("bad"), "it raised ValueError: bad"),
        (GeneratorExit(), "it raised GeneratorExit"),
    ],
)
def test_foreign_exceptions_become_contract_errors(exc: BaseException, expected: str) -> None:
    with pytest.raises(PluginContractError) as info:
        _plugins(Raiser(exc)).storage("a").disk_snapshot_create(
            request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK)
        )
    assert str(info.value).endswith(expected)
    assert info.value.__cause__ is exc


def test_os_errors_become_backend_errors_naming_the_disk() -> None:
    error = FileNotFoundError(2, "No such file or directory", "/images/a")
    with pytest.raises(BackendError) as info:
        _plugins(Raiser(error)).storage("a").disk_snapshot_create(
            request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK)
        )
    assert str(info.value) == "disk vda: /images/a: No such file or directory"
    assert not isinstance(info.value, PluginContractError)


def test_snapcore_errors_pass_unchanged() -> None:
    error = BackendError("pool full", driver="a", vdev="vda")
    with pytest.raises(BackendError) as info:
        _plugins(Raiser(error)).storage("a").disk_snapshot_create(
            request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK)
        )
    assert info.value is error
    assert info.value.__cause__ is None


def test_keyboard_interrupt_passes() -> None:
    with pytest.raises(KeyboardInterrupt):
        _plugins(Raiser(KeyboardInterrupt())).storage("a").disk_snapshot_create(
            request=SnapshotRequest(disk=DISK, name="c1"), ctx=_ctx(DISK)
        )


# -- time limits --------------------------------------------------------------------------------


def test_time_limit_defaults_plugin_and_user() -> None:
    assert hook_timeout("disk_snapshot_create_check", None, None) == 600
    assert hook_timeout("disk_snapshot_delete", None, None) == 4 * 3600
    assert hook_timeout("disk_snapshot_delete", 30, None) == 30
    assert hook_timeout("disk_snapshot_delete", 30, 5) == 5


def test_a_hook_past_its_limit_is_abandoned_for_its_disk_only() -> None:
    rec = Recorder("a")
    rec.delay = 2.0
    backend = _plugins(rec, timeout=0.2).storage("a")
    request = SnapshotRequest(disk=DISK, name="c1")
    with pytest.raises(HookTimeoutError) as info:
        backend.disk_snapshot_create(request=request, ctx=_ctx(DISK))
    assert info.value.abandoned
    assert "did not return within 0.2 s; it was left running" in str(info.value)
    # never called again for that disk in this process: the undo must not race the hook
    with pytest.raises(HookTimeoutError, match="after disk_snapshot_create was abandoned"):
        backend.disk_snapshot_abort(request=request, ctx=_ctx(DISK))
    assert [c for c in rec.calls if c[0] == "disk_snapshot_abort"] == []
    # another disk is not affected
    rec.delay = 0
    other = Disk(vdev="vdb", path="/images/b", driver="a")
    backend.disk_snapshot_list(disk=other, known=(), ctx=_ctx(other))


def test_the_plugins_own_limit_applies() -> None:
    rec = Recorder("a", timeout=0.2)
    rec.delay = 2.0
    with pytest.raises(HookTimeoutError, match=r"within 0\.2 s"):
        _plugins(rec).storage("a").disk_snapshot_list(disk=DISK, known=(), ctx=_ctx(DISK))


def test_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPCORE_HOOK_TIMEOUT", "7.5")
    assert load_plugins(entry_points=False).hook_timeout == 7.5
    monkeypatch.setenv("SNAPCORE_HOOK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="SNAPCORE_HOOK_TIMEOUT must be a positive number"):
        load_plugins(entry_points=False)


def test_registry_lists_running_calls_oldest_first() -> None:
    rec = Recorder("a")
    rec.delay = 0.5
    plugins = _plugins(rec)
    worker = threading.Thread(
        target=plugins.storage("a").disk_snapshot_list,
        kwargs={"disk": DISK, "known": (), "ctx": _ctx(DISK)},
    )
    worker.start()
    for _ in range(100):
        if plugins.calls.running():
            break
        time.sleep(0.01)
    [call] = plugins.calls.running()
    assert str(call).startswith("plugin 'a' (disk_snapshot_list for disk vda, running for ")
    worker.join()
    assert plugins.calls.running() == []
    assert isinstance(plugins.calls, CallRegistry)


# -- hook API 1.x ---------------------------------------------------------------------------------


def test_a_hook_api_1_plugin_is_loaded_and_marked_deprecated() -> None:
    plugins = load_plugins(entry_points=False, extra=[("rawcopy1", rawcopy_api1)])
    [record] = [r for r in plugins.records() if r.name == "rawcopy1"]
    assert record.api == (1, 0)
    assert record.deprecated is not None
    assert record.deprecated.startswith("written for hook API 1.0, loaded through compatibility")


def test_a_hook_api_1_plugin_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"v1" * 4096)
    host = Host(state_dir=tmp_path / "state", entry_points=False)
    host.register(rawcopy_api1, "rawcopy1")
    dom = host.open_domain(Domain(name="old", disks=(Disk(vdev="vda", path=str(disk)),)))
    dom.create(CreateOptions(name="one"))
    disk.write_bytes(b"v2" * 4096)
    dom.revert("one")
    assert disk.read_bytes() == b"v1" * 4096
    dom.delete("one")
    assert [v.checkpoint.name for v in dom.list()] == []
    assert not list(tmp_path.glob(".d.raw.snapcore/*.raw"))


class TestLegacyRawcopyConformance(InstalledBackendConformance):
    """The rawcopy example as published for hook API 1.0 passes the conformance suite (on
    the suite's own raw-file disks, ``*.raw``)."""

    plugin = rawcopy_api1
    driver = "rawcopy"
    own_samples = ("raw",)  # rawcopy claims files by their .raw name


@pytest.mark.parametrize("answer", [True, False, None])
def test_a_legacy_prepare_hands_nothing_back(answer: object) -> None:
    class Old(Recorder):
        SNAPCORE_HOOK_API = (1, 2)  # 1.2: True meant "I kept what I prepared myself"

        @hookimpl
        def disk_snapshot_prepare_group(self) -> object:
            return answer

    plugins = load_plugins(entry_points=False, extra=[("old", Old("a"))])
    request = SnapshotRequest(disk=DISK, name="c1")
    backend = plugins.storage("a")
    assert backend.disk_snapshot_prepare_group(requests=[request], ctx=_ctx(DISK)) is None


# -- what a driver prepares, the operation holds -------------------------------------------


class Preparer(Recorder):
    """Prepares a handle for its group, takes it back in the pause, and fails there if asked."""

    def __init__(self) -> None:
        super().__init__("a")
        self.handle = object()
        self.seen: list[tuple[str, object]] = []
        self.fail_create = False

    @hookimpl
    def disk_snapshot_prepare_group(self, requests: list[SnapshotRequest]) -> object:
        self.seen.append(("prepare", len(requests)))
        return self.handle

    @hookimpl
    def disk_snapshot_create_group(
        self, requests: list[SnapshotRequest], prepared: object
    ) -> list[DiskSnapshot]:
        self.seen.append(("create_group", prepared))
        if self.fail_create:
            raise BackendError("the switch failed", driver="a")
        return [self._snap(r.disk, r.name) for r in requests]

    @hookimpl
    def disk_snapshot_abort(self, request: SnapshotRequest, prepared: object) -> bool:
        self.seen.append(("abort", prepared))
        return True


def test_the_prepared_group_is_handed_back_to_create_and_to_abort(tmp_path: Path) -> None:
    rec = Preparer()
    disks = []
    for vdev in ("vda", "vdb"):
        (tmp_path / vdev).write_bytes(b"x")
        disks.append(Disk(vdev=vdev, path=str(tmp_path / vdev), driver="a"))
    host = Host(state_dir=tmp_path / "state", entry_points=False)
    host.register(rec, "a")
    dom = host.open_domain(Domain(name="dom", disks=tuple(disks)))

    dom.create(CreateOptions(name="c1"))
    assert rec.seen == [("prepare", 2), ("create_group", rec.handle)]

    rec.seen.clear()
    rec.fail_create = True
    with pytest.raises(OperationFailedError):
        dom.create(CreateOptions(name="c2"))
    assert rec.seen == [
        ("prepare", 2),
        ("create_group", rec.handle),
        ("abort", rec.handle),
        ("abort", rec.handle),
    ]
