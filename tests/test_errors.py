"""Tests of snapcore.errors: the exception tree, exit codes and messages."""

from __future__ import annotations

import inspect

import pytest

from snapcore import errors
from snapcore.errors import (
    BackendConflictError,
    BackendError,
    CheckpointError,
    CommandError,
    ConfigError,
    CreateBlockedError,
    DeleteBlockedError,
    DeleteFailedError,
    DomainStateError,
    DomainUnreachableError,
    HookFailedError,
    HookTimeoutError,
    ImageLockedError,
    InvalidNameError,
    JournalCorruptError,
    NoBackendError,
    NoHypervisorError,
    OperationFailedError,
    PartialCheckpointError,
    PluginContractError,
    PluginError,
    PluginLoadError,
    RecoveryNeededError,
    RevertBlockedError,
    SnapcoreError,
    SnapshotError,
    SnapshotExistsError,
    SnapshotNotFoundError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    UnsupportedOperationError,
    for_disk,
)

ALL_ERRORS = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
]


def test_the_module_defines_the_expected_errors() -> None:
    # guards the test below against an empty list
    assert len(ALL_ERRORS) >= 20


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_derives_from_snapcore_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, SnapcoreError)
    if not cls.__name__.startswith("_"):
        assert cls.__doc__


# One instance of each error, built as the code raises it.
CAUSE = RuntimeError("lvcreate: Insufficient free space")
SAMPLES: list[tuple[SnapcoreError, int]] = [
    (ConfigError("bad option"), 2),
    (InvalidNameError("a/b", "it contains '/'"), 2),
    (PluginLoadError("lvm", "import failed"), 2),
    (BackendConflictError("lvm", ["a", "b"]), 2),
    (NoBackendError("vda", "/x", None), 2),
    (NoHypervisorError("xen"), 2),
    (SnapshotNotFoundError("web1", "cp1"), 2),
    (SnapshotExistsError("web1", "cp1"), 2),
    (CreateBlockedError("cp1", ["disk vda: target exists"]), 2),
    (DeleteBlockedError("cp1", ["disk vda: in use"]), 2),
    (RevertBlockedError("cp1", ["disk vda: gone"]), 2),
    (DomainStateError("web1", "shutoff", "running", "saving memory"), 2),
    (DomainUnreachableError("web1", "/run/web1.qmp", "connection refused"), 2),
    (
        HookFailedError("web1", "c1", hook="db-flush", phase="pre-create", reason="exit status 3"),
        2,
    ),
    (BackendError("failed", driver="lvm", vdev="vda"), 1),
    (CommandError(["lvcreate", "-s"], 5, "Insufficient free space"), 1),
    (UnsupportedOperationError("no external snapshots", driver="lvm"), 1),
    (PluginContractError("vmdk", "disk_snapshot_create", "vdb", "it returned None"), 1),
    (HookTimeoutError("vmdk", "disk_snapshot_delete", "vdb", 600, abandoned=True), 1),
    (OperationFailedError("create", "cp1", CAUSE), 1),
    (DeleteFailedError("cp1", CAUSE), 1),
    (PartialCheckpointError("create", "cp1", CAUSE, ["vg/lv-cp1 left behind"]), 3),
    (StoreError("cannot write"), 1),
    (StoreLockedError("web1", 60), 4),
    (ImageLockedError("web1", "vda", "/srv/web1.qcow2", 0.5, "pid 42: snapcore list web2"), 4),
    (StoreLockedError("web1", 0.5, "pid 42: snapcore snapshot-create -n a web1"), 4),
    (StoreCorruptError("/var/lib/snapcore/x.json", "bad JSON"), 1),
    (JournalCorruptError("/var/lib/snapcore/journal.json", "it is empty"), 3),
    (RecoveryNeededError("web1", "undo of vda failed"), 3),
]


def test_samples_cover_every_concrete_error() -> None:
    sampled = {type(e) for e, _ in SAMPLES}
    concrete = {c for c in ALL_ERRORS if not c.__name__.startswith("_")}
    bases = {SnapcoreError, PluginError, SnapshotError, CheckpointError}
    assert concrete - bases <= sampled


@pytest.mark.parametrize(("error", "code"), SAMPLES, ids=lambda v: type(v).__name__)
def test_exit_codes(error: SnapcoreError, code: int) -> None:
    assert error.exit_code == code


@pytest.mark.parametrize(("error", "code"), SAMPLES, ids=lambda v: type(v).__name__)
def test_message_is_one_line_for_a_human(error: SnapcoreError, code: int) -> None:
    text = str(error)
    assert text
    assert "\n" not in text
    assert not text.startswith(("(", "["))  # not a repr of the args


def test_families_share_exit_codes() -> None:
    assert ConfigError.exit_code == 2
    assert InvalidNameError.exit_code == 2
    assert PluginError.exit_code == 2
    assert issubclass(PluginLoadError, PluginError)
    assert issubclass(BackendConflictError, PluginError)
    assert issubclass(NoBackendError, PluginError)
    assert issubclass(CommandError, BackendError)
    assert issubclass(StoreLockedError, StoreError)
    assert issubclass(StoreCorruptError, StoreError)


def test_config_error_is_a_value_error_and_locates_the_problem() -> None:
    err = ConfigError("unknown key 'foo'", source="/etc/snapcore/domains/web1.toml", line=7)
    assert isinstance(err, ValueError)
    assert str(err) == "/etc/snapcore/domains/web1.toml:7: unknown key 'foo'"
    assert str(ConfigError("x", line=3)) == "line 3: x"
    assert err.message == "unknown key 'foo'"


def test_snapshot_not_found_is_a_lookup_error_naming_domain_and_snapshot() -> None:
    err = SnapshotNotFoundError("web1", "cp1")
    assert isinstance(err, LookupError)
    assert (err.domain, err.name) == ("web1", "cp1")
    assert "web1" in str(err)
    assert "cp1" in str(err)
    with pytest.raises(LookupError):
        raise err


def test_command_error_carries_the_tool_output() -> None:
    err = CommandError(["lvcreate", "-s", "vg/lv"], 5, "WARNING: x\nInsufficient space\n")
    assert err.argv == ("lvcreate", "-s", "vg/lv")
    assert err.returncode == 5
    assert err.stderr == "WARNING: x\nInsufficient space"
    assert str(err) == "lvcreate: Insufficient space"
    assert err.vdev is None


def test_command_error_message_is_not_indented_like_lvm_output() -> None:
    stderr = '  WARNING: x\n  Volume group "vg" has insufficient free space\n'
    err = CommandError(["lvcreate", "-s", "vg/lv"], 5, stderr)
    assert str(err) == 'lvcreate: Volume group "vg" has insufficient free space'


def test_command_error_without_stderr_gives_the_status() -> None:
    assert str(CommandError(["qemu-img"], 1, "")) == "qemu-img: exited with status 1"
    assert str(CommandError(["qemu-img"], None, "")) == "qemu-img: could not be run"


def test_command_error_for_disk_names_the_disk() -> None:
    err = CommandError(["qemu-img", "snapshot"], 1, "Could not open 'x'", driver="qcow2")
    on_disk = err.for_disk("vdb")

    assert isinstance(on_disk, CommandError)
    assert on_disk.vdev == "vdb"
    assert str(on_disk).startswith("disk vdb: ")
    assert "Could not open 'x'" in str(on_disk)
    assert (on_disk.argv, on_disk.returncode, on_disk.stderr) == (err.argv, 1, err.stderr)
    assert on_disk.driver == "qcow2"
    assert err.for_disk("vdb", driver="lvm").driver == "lvm"
    assert err.vdev is None  # the original is unchanged


def test_command_error_does_not_repeat_the_tools_own_prefix() -> None:
    err = CommandError(["qemu-img", "info"], 1, "qemu-img: Could not open 'x': No such file")
    assert str(err) == "qemu-img: Could not open 'x': No such file"


def test_blocked_errors_list_every_blocker() -> None:
    err = RevertBlockedError("cp1", ["disk vda: snapshot gone", "disk vdb: not the latest"])
    assert err.blockers == ("disk vda: snapshot gone", "disk vdb: not the latest")
    assert "revert to snapshot 'cp1'" in str(err)
    assert "snapshot gone" in str(err)
    assert "not the latest" in str(err)


def test_partial_checkpoint_lists_leftovers_and_the_way_out() -> None:
    err = PartialCheckpointError("create", "cp1", CAUSE, ["vg/lv-cp1", "/m.img"])
    assert err.leftovers == ("vg/lv-cp1", "/m.img")
    assert err.cause is CAUSE
    for part in ("vg/lv-cp1", "/m.img", "snapcore recover", "Insufficient free space"):
        assert part in str(err)


def test_operation_failed_keeps_its_cause() -> None:
    err = OperationFailedError("delete", "cp1", CAUSE)
    assert err.cause is CAUSE
    assert "undone" in str(err)
    assert "Insufficient free space" in str(err)


def test_conflict_names_both_plugins_and_the_driver() -> None:
    err = BackendConflictError("lvm", ["lvm-a", "lvm-b"])
    for part in ("'lvm-a'", "'lvm-b'", "'lvm'"):
        assert part in str(err)


def test_for_disk_names_the_disk_in_what_a_backend_raises() -> None:
    with pytest.raises(CommandError) as cmd, for_disk("vdb", "qcow2"):
        raise CommandError(["qemu-img", "info", "x"], 1, "Could not open 'x'")
    assert (cmd.value.vdev, cmd.value.driver) == ("vdb", "qcow2")
    assert "Could not open 'x'" in str(cmd.value)
    with pytest.raises(BackendError) as os_error, for_disk("vdb", "qcow2"):
        raise FileNotFoundError(2, "No such file or directory", "/img/vdb.qcow2")
    assert (os_error.value.vdev, str(os_error.value)) == (
        "vdb",
        "disk vdb: /img/vdb.qcow2: No such file or directory",
    )
    unsupported = UnsupportedOperationError("no external snapshots", driver="qcow2")
    with pytest.raises(UnsupportedOperationError) as kept, for_disk("vdb", "qcow2"):
        raise unsupported
    assert kept.value is unsupported  # a BackendError that does not rebuild itself: unchanged
    with pytest.raises(ValueError, match="plugin bug"), for_disk("vdb", "qcow2"):
        raise ValueError("plugin bug")  # not the backend's to translate


def test_contract_error_names_plugin_hook_and_disk() -> None:
    error = PluginContractError(
        "vmdk", "disk_snapshot_create", "vdb", "it returned a dict ({})", driver="vmdk"
    )
    assert str(error) == (
        "plugin 'vmdk' broke the contract of disk_snapshot_create for disk vdb: "
        "it returned a dict ({})"
    )
    assert (error.plugin, error.hook, error.vdev, error.driver) == (
        "vmdk",
        "disk_snapshot_create",
        "vdb",
        "vmdk",
    )
    assert isinstance(error, BackendError)


def test_timeout_says_whether_the_hook_was_left_running() -> None:
    left = HookTimeoutError("slow", "domain_pause", "", 2.5, abandoned=True)
    assert str(left) == (
        "plugin 'slow' broke the contract of domain_pause: "
        "it did not return within 2.5 s; it was left running"
    )
    assert left.abandoned
    assert left.vdev is None
