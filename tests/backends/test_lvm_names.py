"""LVM names, paths and size policies (snapcore_lvm.devices, snapcore_lvm.lvm.SizePolicy): pure
functions, no LVM needed. The sizes lvcreate allocates were measured with LVM 2.03.16 in the
virtme-ng guest (scripts/lvm-guest.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapcore.errors import InvalidNameError
from snapcore_lvm import devices
from snapcore_lvm.devices import LvRef
from snapcore_lvm.lvm import SizePolicy, cow_max_bytes, find_tools, tool_version

MiB = 1024 * 1024
EXTENT = 4 * MiB
LVM_NAME = st.from_regex(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,40}", fullmatch=True)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("lv0", None),
        ("web_1.data+x-y", None),
        ("", "empty or reserved"),
        ("..", "empty or reserved"),
        ("-lv", "starts with '-'"),
        ("bad!name", "contains '!'"),
        ("a b$c", "contains ' ', '$'"),
        ("snapshot1", "starts with 'snapshot'"),
        ("pvmove0", "starts with 'pvmove'"),
        ("x_tmeta", "contains '_tmeta'"),
        ("a" * 128, "128 characters long"),
    ],
)
def test_lv_name_rules(name: str, problem: str | None) -> None:
    found = devices.name_problem(name)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_vg_names_may_use_lv_reserved_words() -> None:
    assert devices.name_problem("snapshot", "VG") is None
    assert devices.name_problem("vg_tmeta", "VG") is None


@pytest.mark.parametrize(
    ("dm", "split"),
    [
        ("vg0-lv0", ("vg0", "lv0")),
        ("my--vg-my--lv", ("my-vg", "my-lv")),
        ("vg-lv--", ("vg", "lv-")),
        ("vg0-lv0+c1", ("vg0", "lv0+c1")),
        ("control", None),
        ("vg-", None),
        ("-lv", None),
    ],
)
def test_split_dm_name(dm: str, split: tuple[str, str] | None) -> None:
    assert devices.split_dm_name(dm) == split


@given(LVM_NAME, LVM_NAME)
def test_dm_name_round_trip(vg: str, lv: str) -> None:
    assert devices.split_dm_name(devices.dm_name(vg, lv)) == (vg, lv)


@pytest.mark.parametrize(
    ("path", "ref"),
    [
        ("/dev/vg0/lv0", LvRef("vg0", "lv0")),
        ("/dev/vg0/lv0/", LvRef("vg0", "lv0")),
        ("/dev/mapper/vg0-lv0", LvRef("vg0", "lv0")),
        ("/dev/mapper/my--vg-web--1", LvRef("my-vg", "web-1")),
        ("/dev/vg0/bad!name", LvRef("vg0", "bad!name")),  # found by form, refused by problem()
        ("/dev/mapper/control", None),
        ("/dev/disk/lv0", None),
        ("/dev/disk/by-id/dm-name-vg0-lv0", None),
        ("/dev/loop0", None),
        ("/dev/vg0/lv0/x", None),
        ("/srv/images/web.qcow2", None),
        ("vg0/lv0", None),
    ],
)
def test_parse_path(path: str, ref: LvRef | None) -> None:
    assert devices.parse_path(path) == ref


def test_from_device_needs_an_lvm_uuid_without_a_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    lv_uuid = "LVM-" + "a" * 64
    answers = {
        "/dev/dm-1": ("my--vg-web", lv_uuid),
        "/dev/dm-2": ("vg0-web-cow", lv_uuid + "-cow"),
        "/dev/dm-3": ("luks-1234", "CRYPT-LUKS2-1234-luks-1234"),
    }
    monkeypatch.setattr(devices, "_sysfs_dm", answers.get)
    assert devices.from_device("/dev/dm-1") == LvRef("my-vg", "web")
    assert devices.from_device("/dev/dm-2") is None
    assert devices.from_device("/dev/dm-3") is None
    assert devices.from_device("/dev/dm-4") is None
    assert devices.locate("/dev/dm-1") == LvRef("my-vg", "web")
    assert devices.is_lvm_path("/dev/dm-1")


def test_is_lvm_path(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 512)
    assert not devices.is_lvm_path(str(image))
    assert not devices.is_lvm_path("/dev/null")  # exists, not device-mapper
    assert not devices.is_lvm_path("/dev/mapper/novg-lv0")  # a dm name decides nothing
    assert not devices.is_lvm_path("/dev/disk/lv0")
    assert not devices.is_lvm_path("/dev/bad!vg/lv0")
    # an LV path that does not exist: an inactive LV or a missing VG; the check says which
    assert devices.is_lvm_path("/dev/snapcore-test-no-such-vg/lv0")


def test_snapshot_names_split_back_unambiguously() -> None:
    assert devices.snapshot_name("web", "before-upgrade") == "web+before-upgrade"
    assert devices.split_snapshot_name("web+before-upgrade") == ("web", "before-upgrade")
    assert devices.split_snapshot_name("a+b+c1") == ("a+b", "c1")
    assert devices.split_snapshot_name("web") is None
    assert devices.split_snapshot_name("+c1") is None
    assert devices.split_snapshot_name("web" + devices.REVERT_SUFFIX) is None
    assert devices.split_snapshot_name("web" + devices.OLD_SUFFIX) is None
    with pytest.raises(InvalidNameError):
        devices.snapshot_name("web", "a+b")


@given(LVM_NAME, st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,30}", fullmatch=True))
def test_snapshot_name_round_trip(origin: str, checkpoint: str) -> None:
    assert devices.split_snapshot_name(devices.snapshot_name(origin, checkpoint)) == (
        origin,
        checkpoint,
    )


def test_length_limits() -> None:
    assert devices.length_problem("vg0", "a" * 119) is None  # vg0-aaa...-cow: 127 characters
    assert "device-mapper name" in str(devices.length_problem("vg0", "a" * 120))
    assert "at most 124" in str(devices.length_problem("vg0", "a" * 121))
    assert "device-mapper name" in str(devices.length_problem("vg0", "-" * 70))


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("100%ORIGIN", SizePolicy(percent=100)),
        ("20%origin", SizePolicy(percent=20)),
        (" 5%ORIGIN ", SizePolicy(percent=5)),
        ("512M", SizePolicy(size=512 * MiB)),
        ("512", SizePolicy(size=512 * MiB)),  # lvcreate's default unit is MiB
        ("2GiB", SizePolicy(size=2048 * MiB)),
        ("1k", SizePolicy(size=1024)),
        ("1b", SizePolicy(size=512)),  # whole sectors
    ],
)
def test_size_policy_parse(text: str, policy: SizePolicy) -> None:
    assert SizePolicy.parse(text) == policy


@pytest.mark.parametrize("text", ["0%ORIGIN", "101%ORIGIN", "7%FREE", "0", "-1M", "1.5G", "big"])
def test_size_policy_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="snapshot_size"):
        SizePolicy.parse(text)


def test_size_policy_text() -> None:
    assert str(SizePolicy(percent=100)) == "100%ORIGIN"
    assert str(SizePolicy(size=8 * MiB)) == "8388608B"
    assert SizePolicy.parse(str(SizePolicy(size=8 * MiB))) == SizePolicy(size=8 * MiB)
    with pytest.raises(ValueError, match="multiple of 512"):
        SizePolicy(size=1000)


def test_cow_max_is_lvm_s_formula() -> None:
    # 64 MiB origin, 4 KiB chunks: 8 sectors of header, 512 of exception table, 131072 of data
    assert cow_max_bytes(64 * MiB) == (8 + 512 + 131072) * 512


@pytest.mark.parametrize(
    ("origin_mib", "policy", "extents"),
    [
        # lvcreate --snapshot --extents N%ORIGIN on a 64 MiB origin (16 extents)
        (64, "10%ORIGIN", 3),
        (64, "20%ORIGIN", 5),
        (64, "30%ORIGIN", 6),
        (64, "50%ORIGIN", 9),
        (64, "99%ORIGIN", 17),
        (64, "100%ORIGIN", 17),
        # on a 20 MiB origin (5 extents)
        (20, "10%ORIGIN", 2),
        (20, "30%ORIGIN", 3),
        (20, "50%ORIGIN", 4),
        (20, "99%ORIGIN", 6),
        (20, "100%ORIGIN", 6),
        # --size: rounded up to extents, trimmed to what a full rewrite can use
        (64, "8M", 2),
        (64, "5M", 2),
        (20, "1000M", 6),
    ],
)
def test_size_policy_predicts_lvcreate(origin_mib: int, policy: str, extents: int) -> None:
    assert SizePolicy.parse(policy).extents(origin_mib * MiB, EXTENT) == extents


def test_tool_version_is_read_from_the_binary(tmp_path: Path) -> None:
    fake = tmp_path / "lvm"
    fake.write_bytes(b"\x7fELF...\0  LVM version:     %s\0" + b"2.03.16(2) (2022-05-18)\0...")
    assert tool_version(str(fake)) == "2.03.16(2)"
    empty = tmp_path / "empty"
    empty.write_bytes(b"\0" * 100)
    assert tool_version(str(empty)) is None
    assert tool_version(str(tmp_path / "missing")) is None


def test_find_tools_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    path, reason = find_tools()
    assert path is None
    assert reason is not None
    assert "lvcreate" in reason
    assert "lvm2" in reason
