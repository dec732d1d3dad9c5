"""Tests of snapcore.plugins: loading, validating and routing to plugins."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

import pytest

from snapcore.errors import (
    BackendConflictError,
    NoBackendError,
    NoHypervisorError,
    PluginContractError,
    PluginLoadError,
)
from snapcore.hookspecs import HOOK_API_OLDEST_MAJOR, HOOK_API_VERSION, hookimpl
from snapcore.model import BackendInfo, Disk, HypervisorInfo, SnapshotKind
from snapcore.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, Plugins, load_plugins


class Backend:
    """A minimal storage plugin: reports *driver* and claims disks whose path ends in *suffix*."""

    def __init__(
        self,
        driver: str,
        suffix: str | None = None,
        *,
        available: bool = True,
        reason: str | None = None,
    ):
        self.driver = driver
        self.suffix = suffix
        self.available = available
        self.reason = reason

    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            driver=self.driver,
            kinds=frozenset({SnapshotKind.INTERNAL}),
            available=self.available,
            unavailable_reason=self.reason,
        )

    @hookimpl
    def disk_claim(self, disk: Disk) -> str | None:
        if self.suffix is not None and disk.path.endswith(self.suffix):
            return self.driver
        return None


class Hypervisor:
    def __init__(self, name: str):
        self.name = name

    @hookimpl
    def hypervisor_info(self) -> HypervisorInfo:
        return HypervisorInfo(name=self.name)


def fresh() -> Plugins:
    return load_plugins(entry_points=False)


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: importlib.metadata.EntryPoint) -> None:
    def entry_points(**kw: object) -> list[importlib.metadata.EntryPoint]:
        return list(eps) if kw.get("group") == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


BROKEN = importlib.metadata.EntryPoint("broken", "no_such_module_xyz", ENTRY_POINT_GROUP)


# -- loading -----------------------------------------------------------------------------------


def test_builtin_none_hypervisor_is_always_loaded() -> None:
    plugins = fresh()

    assert "none" in plugins.hypervisors
    assert plugins.hypervisor("none").name == "none"
    assert [r.name for r in plugins.records()] == ["none"]
    assert plugins.drivers == {}


def test_each_load_builds_a_fresh_manager() -> None:
    a = load_plugins(entry_points=False, extra=[("x", Backend("xdrv"))])
    b = fresh()

    assert "xdrv" in a.drivers
    assert "xdrv" not in b.drivers
    assert a.pm is not b.pm


def test_a_registered_backend_is_listed_with_its_info() -> None:
    plugins = load_plugins(entry_points=False, extra=[("mine", Backend("mydrv"))])

    info = plugins.backend("mydrv")
    assert info is not None
    assert info.driver == "mydrv"
    assert list(plugins.drivers) == ["mydrv"]
    record = {r.name: r for r in plugins.records()}["mine"]
    assert record.backend == info
    assert record.source == "registered by the caller"
    assert plugins.backend("other") is None


def test_installed_qcow2_entry_point_is_discovered() -> None:
    plugins = load_plugins(entry_points=True)

    records = {r.name: r for r in plugins.records()}
    assert "qcow2" in records
    assert "snapcore" in records["qcow2"].source
    assert "none" in records


class Typo:
    @hookimpl
    def disk_snapshot_craete(self, request: object) -> None:
        return None


def test_hookimpl_for_an_unknown_hook_is_refused_naming_plugin_and_hook() -> None:
    plugins = fresh()

    with pytest.raises(PluginLoadError) as info:
        plugins.register(Typo(), "typo-plugin")
    assert info.value.plugin == "typo-plugin"
    assert "typo-plugin" in str(info.value)
    assert "disk_snapshot_craete" in str(info.value)
    assert not plugins.pm.has_plugin("typo-plugin")
    assert "typo-plugin" not in [r.name for r in plugins.records()]


def test_unknown_hook_is_refused_through_load_plugins_too() -> None:
    with pytest.raises(PluginLoadError, match="disk_snapshot_craete"):
        load_plugins(entry_points=False, extra=[("typo-plugin", Typo())])


def test_unknown_hook_marked_optional_is_accepted() -> None:
    class Newer:
        @hookimpl(optionalhook=True)
        def disk_snapshot_future_hook(self) -> None:
            return None

    plugins = fresh()
    plugins.register(Newer(), "newer")
    assert plugins.pm.has_plugin("newer")


class ExtraArgument:
    @hookimpl
    def disk_claim(self, disk: Disk, colour: str) -> str | None:
        return None


def test_hookimpl_asking_for_an_unknown_argument_is_refused_naming_the_plugin() -> None:
    plugins = fresh()

    with pytest.raises(PluginLoadError) as info:
        plugins.register(ExtraArgument(), "greedy")
    assert info.value.plugin == "greedy"
    assert "greedy" in str(info.value)
    assert "colour" in str(info.value)
    assert not plugins.pm.has_plugin("greedy")


def test_a_hookimpl_may_take_a_subset_of_the_spec_arguments() -> None:
    class NoArgs:
        @hookimpl
        def disk_claim(self) -> str | None:
            return None

    plugins = fresh()
    plugins.register(NoArgs(), "lazy")
    assert plugins.pm.has_plugin("lazy")


def test_two_plugins_with_one_driver_conflict_and_the_second_is_not_kept() -> None:
    plugins = fresh()
    first = Backend("lvm", ".lv")
    plugins.register(first, "lvm-classic")

    with pytest.raises(BackendConflictError) as info:
        plugins.register(Backend("lvm", ".img"), "lvm-thin")
    assert info.value.driver == "lvm"
    assert info.value.plugins == ("lvm-classic", "lvm-thin")
    assert "lvm-classic" in str(info.value)
    assert "lvm-thin" in str(info.value)

    assert not plugins.pm.has_plugin("lvm-thin")
    assert [r.name for r in plugins.records()] == ["lvm-classic", "none"]
    # the loser's hooks are gone: it no longer claims disks
    assert plugins.hook.disk_claim(disk=Disk(vdev="vda", path="/x.img")) == []
    assert plugins.resolve_disk(Disk(vdev="vda", path="/x.lv")).driver == "lvm"


def test_conflict_is_raised_by_load_plugins() -> None:
    with pytest.raises(BackendConflictError, match=r"'a'.*'b'"):
        load_plugins(entry_points=False, extra=[("a", Backend("d")), ("b", Backend("d"))])


def test_two_plugins_with_one_hypervisor_conflict() -> None:
    plugins = fresh()

    with pytest.raises(BackendConflictError) as info:
        plugins.register(Hypervisor("none"), "my-none")
    assert info.value.plugins == ("none", "my-none")
    assert not plugins.pm.has_plugin("my-none")


def test_a_plugin_name_cannot_be_registered_twice() -> None:
    plugins = fresh()
    plugins.register(Backend("a"), "same")

    with pytest.raises(PluginLoadError, match="same"):
        plugins.register(Backend("b"), "same")
    assert list(plugins.drivers) == ["a"]


def api_plugin(version: object) -> object:
    class Versioned(Backend):
        SNAPCORE_HOOK_API = version

    return Versioned("v")


@pytest.mark.parametrize(
    "version",
    [
        pytest.param((HOOK_API_VERSION[0] + 1, 0), id="newer-major"),
        pytest.param((HOOK_API_OLDEST_MAJOR - 1, 9), id="older-than-the-oldest-major"),
        pytest.param((HOOK_API_VERSION[0], HOOK_API_VERSION[1] + 1), id="newer-minor"),
    ],
)
def test_plugin_for_an_incompatible_hook_api_is_refused(version: tuple[int, int]) -> None:
    plugins = fresh()

    with pytest.raises(PluginLoadError) as info:
        plugins.register(api_plugin(version), "old")
    message = str(info.value)
    assert "old" in message
    assert f"{version[0]}.{version[1]}" in message
    assert f"{HOOK_API_VERSION[0]}.{HOOK_API_VERSION[1]}" in message
    assert not plugins.pm.has_plugin("old")
    assert plugins.drivers == {}


def test_plugin_for_the_current_hook_api_is_loaded() -> None:
    plugins = fresh()
    plugins.register(api_plugin(HOOK_API_VERSION), "current")
    assert "v" in plugins.drivers
    [record] = [r for r in plugins.records() if r.name == "current"]
    assert (record.api, record.deprecated) == (HOOK_API_VERSION, None)


@pytest.mark.parametrize("minor", [0, 1, 2])
def test_plugin_for_hook_api_1_is_loaded_and_marked_deprecated(minor: int) -> None:
    plugins = fresh()
    plugins.register(api_plugin((1, minor)), "old")
    assert "v" in plugins.drivers
    [record] = [r for r in plugins.records() if r.name == "old"]
    assert record.api == (1, minor)
    assert record.deprecated is not None
    assert f"hook API 1.{minor}" in record.deprecated
    assert "hook-api-changelog" in record.deprecated


def test_hook_api_3_is_refused_with_what_this_snapcore_loads() -> None:
    with pytest.raises(PluginLoadError) as info:
        fresh().register(api_plugin((3, 0)), "future")
    assert str(info.value) == (
        "plugin 'future' cannot be loaded: it needs hook API 3.0; this snapcore provides "
        f"{HOOK_API_VERSION[0]}.{HOOK_API_VERSION[1]} and loads plugins written for "
        f"1.x to {HOOK_API_VERSION[0]}.{HOOK_API_VERSION[1]}"
    )


@pytest.mark.parametrize("version", ["1.0", (1,), (1, 0, 0), (1, "x"), 1])
def test_malformed_hook_api_version_is_refused(version: object) -> None:
    with pytest.raises(PluginLoadError, match="SNAPCORE_HOOK_API"):
        fresh().register(api_plugin(version), "odd")


class CrashingBackend:
    @hookimpl
    def backend_info(self) -> BackendInfo:
        raise RuntimeError("probe exploded")


class CrashingHypervisor:
    @hookimpl
    def hypervisor_info(self) -> HypervisorInfo:
        raise RuntimeError("probe exploded")


@pytest.mark.parametrize("plugin_class", [CrashingBackend, CrashingHypervisor])
def test_an_info_hook_that_raises_is_a_load_error(plugin_class: type) -> None:
    plugins = fresh()

    with pytest.raises(PluginLoadError) as info:
        plugins.register(plugin_class(), "crashy")
    assert info.value.plugin == "crashy"
    assert "crashy" in str(info.value)
    assert "probe exploded" in str(info.value)
    assert not plugins.pm.has_plugin("crashy")


def test_backend_info_of_the_wrong_type_is_a_load_error() -> None:
    class Wrong:
        @hookimpl
        def backend_info(self) -> object:
            return {"driver": "dict"}

    with pytest.raises(PluginLoadError, match="BackendInfo"):
        fresh().register(Wrong(), "wrong")


def test_backend_info_declared_with_specname_is_indexed() -> None:
    class Renamed:
        @hookimpl(specname="backend_info")
        def describe(self) -> BackendInfo:
            return BackendInfo(driver="renamed")

    plugins = fresh()
    plugins.register(Renamed(), "renamed-plugin")
    assert "renamed" in plugins.drivers


def test_entry_point_that_fails_to_import_names_the_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_entry_points(monkeypatch, BROKEN)

    with pytest.raises(PluginLoadError) as info:
        load_plugins(entry_points=True)
    assert info.value.plugin == "broken"
    assert "broken" in str(info.value)
    assert "no_such_module_xyz" in str(info.value)


def test_entry_points_are_not_read_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, BROKEN)

    plugins = load_plugins(entry_points=False)
    assert [r.name for r in plugins.records()] == ["none"]


def test_disabled_entry_point_is_not_even_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, BROKEN)
    monkeypatch.delenv(DISABLE_ENV, raising=False)

    plugins = load_plugins(entry_points=True, disabled=["broken"])
    assert "broken" not in [r.name for r in plugins.records()]


@pytest.mark.parametrize("value", ["broken", "other, broken", " broken ,x,"])
def test_plugins_disabled_in_the_environment_are_not_loaded(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    fake_entry_points(monkeypatch, BROKEN)
    monkeypatch.setenv(DISABLE_ENV, value)

    plugins = load_plugins(entry_points=True)
    assert "broken" not in [r.name for r in plugins.records()]


def test_disabled_extra_plugin_is_not_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_ENV, "from-env")
    extra = [("by-arg", Backend("a")), ("from-env", Backend("b")), ("kept", Backend("c"))]

    plugins = load_plugins(entry_points=False, disabled=["by-arg"], extra=extra)
    assert [r.name for r in plugins.records()] == ["kept", "none"]
    assert list(plugins.drivers) == ["c"]


# -- routing disks -----------------------------------------------------------------------------


def two_backends(*more: tuple[str, object]) -> Plugins:
    return load_plugins(
        entry_points=False,
        extra=[
            ("qcow2-plugin", Backend("qcow2", ".qcow2")),
            ("vhd-plugin", Backend("vhd", ".vhd")),
            *more,
        ],
    )


def test_explicit_driver_is_used_without_asking_for_claims() -> None:
    plugins = two_backends()
    disk = Disk(vdev="vda", path="/images/a.vhd", driver="qcow2")

    assert plugins.resolve_disk(disk) == disk


def test_disk_claimed_by_one_plugin_gets_its_driver() -> None:
    plugins = two_backends()
    disk = Disk(vdev="vdb", path="/images/b.vhd", readonly=True, options={"k": "v"})

    resolved = plugins.resolve_disk(disk)
    assert resolved.driver == "vhd"
    assert (resolved.vdev, resolved.path, resolved.readonly) == ("vdb", "/images/b.vhd", True)
    assert dict(resolved.options) == {"k": "v"}


def test_disk_claimed_by_nobody_asks_for_driver() -> None:
    plugins = two_backends()

    with pytest.raises(NoBackendError) as info:
        plugins.resolve_disk(Disk(vdev="vdc", path="/images/c.raw"))
    assert info.value.vdev == "vdc"
    assert "driver=" in str(info.value)
    assert "vdc" in str(info.value)
    assert "/images/c.raw" in str(info.value)


def test_disk_claimed_by_two_plugins_names_both() -> None:
    plugins = two_backends(("greedy", Backend("raw", ".vhd")))

    with pytest.raises(NoBackendError) as info:
        plugins.resolve_disk(Disk(vdev="vda", path="/images/a.vhd"))
    assert "raw" in str(info.value)
    assert "vhd" in str(info.value)
    assert "driver=" in str(info.value)


def test_disk_claimed_by_two_plugins_is_not_reported_as_unclaimed() -> None:
    plugins = two_backends(("greedy", Backend("raw", ".vhd")))

    with pytest.raises(NoBackendError) as info:
        plugins.resolve_disk(Disk(vdev="vda", path="/images/a.vhd"))
    assert "no plugin claims" not in str(info.value)


def test_explicit_driver_nobody_provides_is_named() -> None:
    plugins = two_backends()

    with pytest.raises(NoBackendError) as info:
        plugins.resolve_disk(Disk(vdev="vda", path="/dev/vg/lv", driver="lvm"))
    assert info.value.driver == "lvm"
    assert "'lvm'" in str(info.value)


class LiarClaim:
    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(driver="liar")

    @hookimpl
    def disk_claim(self, disk: Disk) -> str:
        return "ghost"


def test_claim_naming_another_driver_is_a_contract_error() -> None:
    plugins = load_plugins(entry_points=False, extra=[("liar", LiarClaim())])

    with pytest.raises(PluginContractError) as info:
        plugins.resolve_disk(Disk(vdev="vda", path="/x"))
    assert str(info.value) == (
        "plugin 'liar' broke the contract of disk_claim for disk vda: "
        "it returned a str ('ghost'); a claim is None or 'liar'"
    )


class ClaimOnly:
    @hookimpl
    def disk_claim(self, disk: Disk) -> str:
        return "ghost"


def test_claim_of_a_plugin_without_a_driver_is_not_asked() -> None:
    plugins = load_plugins(entry_points=False, extra=[("claims", ClaimOnly())])

    with pytest.raises(NoBackendError, match="no plugin claims this disk"):
        plugins.resolve_disk(Disk(vdev="vda", path="/x"))


@pytest.mark.parametrize(
    "make_disk",
    [
        pytest.param(lambda: Disk(vdev="vda", path="/dev/vg/lv", driver="lvm"), id="explicit"),
        pytest.param(lambda: Disk(vdev="vda", path="/dev/vg/lv"), id="claimed"),
    ],
)
def test_unavailable_backend_is_refused_with_its_reason(make_disk: Callable[[], Disk]) -> None:
    plugins = load_plugins(
        entry_points=False,
        extra=[("lvm", Backend("lvm", "/lv", available=False, reason="lvcreate not found"))],
    )

    with pytest.raises(NoBackendError) as info:
        plugins.resolve_disk(make_disk())
    assert "lvcreate not found" in str(info.value)
    assert "unavailable" in str(info.value)


def test_unavailable_backend_is_not_reported_as_missing() -> None:
    plugins = load_plugins(
        entry_points=False,
        extra=[("lvm", Backend("lvm", available=False, reason="lvcreate not found"))],
    )

    with pytest.raises(NoBackendError) as info:
        plugins.resolve_disk(Disk(vdev="vda", path="/dev/vg/lv", driver="lvm"))
    assert "no plugin provides" not in str(info.value)


def test_unknown_or_unavailable_hypervisor_is_refused() -> None:
    class Down:
        @hookimpl
        def hypervisor_info(self) -> HypervisorInfo:
            return HypervisorInfo(name="xen", available=False, unavailable_reason="no xl")

    plugins = load_plugins(entry_points=False, extra=[("xen", Down())])

    with pytest.raises(NoHypervisorError, match="'qemu'"):
        plugins.hypervisor("qemu")
    with pytest.raises(NoHypervisorError, match="no xl"):
        plugins.hypervisor("xen")
