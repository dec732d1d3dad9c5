"""Tests of snapcore.model: names, domains and the JSON forms of the models."""

from __future__ import annotations

import json
import uuid

import pytest

from snapcore.errors import ConfigError, InvalidNameError
from snapcore.model import (
    NAME_MAX,
    BackendInfo,
    Checkpoint,
    CheckpointView,
    Disk,
    DiskSnapshot,
    Domain,
    DomainState,
    MemoryImage,
    SnapshotKind,
    SnapshotRequest,
    check_name,
)


def through_json(obj: object) -> object:
    """Serialise *obj* to text and back, as the store and the CLI do."""
    return json.loads(json.dumps(obj))


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "Z", "0", "1700000000", "before-upgrade", "a.b_c-d", "a.", "a-", "a..b", "x" * NAME_MAX],
)
def test_valid_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("", "it is empty", id="empty"),
        pytest.param("x" * 65, "it is 65 characters long, at most 64", id="65-chars"),
        pytest.param("a/b", "it contains '/'", id="slash"),
        pytest.param("../x", "it contains '/'", id="parent-dir"),
        pytest.param("a b", "it contains ' '", id="space"),
        pytest.param("a\nb", "it contains '\\n'", id="newline"),
        pytest.param("a\0b", "it contains '\\x00'", id="nul"),
        pytest.param("café", "it contains 'é'", id="non-ascii-letter"),
        pytest.param("٣", "it contains '٣'", id="non-ascii-digit"),
        pytest.param("a*b?", "it contains '*', '?'", id="glob"),
        pytest.param(".", "it starts with '.'", id="dot"),
        pytest.param("..", "it starts with '.'", id="dotdot"),
        pytest.param(".hidden", "it starts with '.'", id="leading-dot"),
        pytest.param("-n", "it starts with '-'", id="leading-dash"),
    ],
)
def test_invalid_names_are_refused_naming_the_problem(name: str, reason: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        check_name(name)
    assert info.value.reason.startswith(reason)
    assert reason in str(info.value)
    assert "snapshot name" in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, ValueError)


def test_name_error_says_what_kind_of_name() -> None:
    with pytest.raises(InvalidNameError, match="invalid domain name '-x'"):
        check_name("-x", what="domain name")


def test_long_name_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidNameError) as info:
        check_name("y" * 5000)
    assert len(str(info.value)) < 200


# -- domains and disks -------------------------------------------------------------------------


def vda(**kw: object) -> Disk:
    return Disk(vdev="vda", path="/srv/a.qcow2", **kw)  # type: ignore[arg-type]


def test_domain_uuid_is_derived_from_the_name_and_stable() -> None:
    a = Domain(name="web1", disks=(vda(),))
    again = Domain(name="web1", disks=(Disk(vdev="xvda", path="/other.vhd"),))
    other = Domain(name="web2", disks=(vda(),))

    assert a.uuid == again.uuid
    assert a.uuid != other.uuid
    assert str(uuid.UUID(a.uuid)) == a.uuid
    # The state dir is keyed by this uuid: changing the derivation orphans every record.
    assert a.uuid == "707b329a-391c-5c93-947b-69867deef55f"


def test_explicit_uuid_is_kept_in_canonical_form() -> None:
    given = "0D2A8E11-5F0C-4B7E-9A43-3C1F6F1B7F2E"
    domain = Domain(name="web1", disks=(vda(),), uuid=given)
    assert domain.uuid == given.lower()


def test_invalid_uuid_is_refused() -> None:
    with pytest.raises(ConfigError, match="not-a-uuid"):
        Domain(name="web1", disks=(vda(),), uuid="not-a-uuid")


def test_domain_name_is_checked() -> None:
    with pytest.raises(InvalidNameError, match="domain name"):
        Domain(name="../etc", disks=(vda(),))


def test_duplicate_vdevs_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate vdev 'vda'"):
        Domain(name="web1", disks=(vda(), Disk(vdev="vdb", path="/b"), vda(driver="lvm")))


def test_domain_without_disks_leaves_them_to_its_hypervisor() -> None:
    # The model allows it: Host.open_domain asks the hypervisor (domain_disks); a domain file
    # of hypervisor "none" without disks is refused by config.load_domain.
    assert Domain(name="web1", hypervisor="xen", disks=()).disks == ()


def test_domain_disk_lookup() -> None:
    domain = Domain(name="web1", disks=(vda(), Disk(vdev="vdb", path="/b")))
    assert domain.disk("vdb").path == "/b"
    with pytest.raises(ConfigError, match=r"vdz.*vda, vdb"):
        domain.disk("vdz")


@pytest.mark.parametrize("vdev", ["", "-vda", "a/b", "v" * 33, "vd a"])
def test_invalid_vdev_is_refused(vdev: str) -> None:
    with pytest.raises(ConfigError, match="invalid vdev"):
        Disk(vdev=vdev, path="/x")


@pytest.mark.parametrize("path", ["", "/x\0y"])
def test_empty_or_nul_path_is_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="vda"):
        Disk(vdev="vda", path=path)


def test_with_driver_keeps_everything_else() -> None:
    disk = Disk(vdev="vda", path="/x", readonly=True, options={"pool": "thin"})
    owned = disk.with_driver("lvm")
    assert owned == Disk(
        vdev="vda", path="/x", driver="lvm", readonly=True, options={"pool": "thin"}
    )
    assert disk.driver is None


# -- JSON round trips --------------------------------------------------------------------------


def disk_snapshot(vdev: str = "vda", **kw: object) -> DiskSnapshot:
    fields: dict[str, object] = {
        "vdev": vdev,
        "path": f"/srv/{vdev}.qcow2",
        "driver": "qcow2",
        "kind": SnapshotKind.EXTERNAL,
        "name": "cp1",
        "locator": f"/srv/{vdev}-cp1.qcow2",
        "size": 196_624,
        "extra": {"backing": f"/srv/{vdev}.qcow2", "chain": [1, 2], "nested": {"a": None}},
    }
    fields.update(kw)
    return DiskSnapshot(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "snap",
    [
        pytest.param(disk_snapshot(), id="external"),
        pytest.param(
            disk_snapshot(kind=SnapshotKind.INTERNAL, size=None, extra={}), id="internal-bare"
        ),
        pytest.param(disk_snapshot(driver="lvm", kind=SnapshotKind.NATIVE), id="native"),
    ],
)
def test_disk_snapshot_round_trip(snap: DiskSnapshot) -> None:
    data = snap.to_json()
    assert data["type"] == snap.kind.value
    assert DiskSnapshot.from_json(through_json(data)) == snap  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "image",
    [
        MemoryImage(path="/var/lib/snapcore/m.img", size=1 << 30, format="qemu-migration"),
        MemoryImage(path="/m.img"),
    ],
)
def test_memory_image_round_trip(image: MemoryImage) -> None:
    assert MemoryImage.from_json(through_json(image.to_json())) == image  # type: ignore[arg-type]


def checkpoint(**kw: object) -> Checkpoint:
    fields: dict[str, object] = {
        "name": "before-upgrade",
        "domain_uuid": "707b329a-391c-5c93-947b-69867deef55f",
        "creation_time": 1_700_000_000,
        "state": DomainState.RUNNING,
        "disks": (disk_snapshot("vda"), disk_snapshot("vdb", driver="lvm")),
        "description": "after OS install",
        "memory": MemoryImage(path="/m.img", size=10, format="qemu-migration"),
        "parent": "base",
    }
    fields.update(kw)
    return Checkpoint(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cp",
    [
        pytest.param(checkpoint(), id="full"),
        pytest.param(
            checkpoint(memory=None, parent=None, description="", state=DomainState.SHUTOFF),
            id="disk-only-root",
        ),
        pytest.param(checkpoint(state=DomainState.PAUSED, disks=()), id="paused-no-disks"),
    ],
)
def test_checkpoint_round_trip(cp: Checkpoint) -> None:
    assert Checkpoint.from_json(through_json(cp.to_json())) == cp  # type: ignore[arg-type]


def test_checkpoint_name_is_checked() -> None:
    with pytest.raises(InvalidNameError):
        checkpoint(name="a/b")


def test_checkpoint_disk_lookup() -> None:
    cp = checkpoint()
    found = cp.disk("vdb")
    assert found is not None
    assert found.driver == "lvm"
    assert cp.disk("vdz") is None


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(SnapshotRequest(disk=vda(driver="qcow2"), name="cp1"), id="defaults"),
        pytest.param(
            SnapshotRequest(
                disk=Disk(
                    vdev="vdb",
                    path="/dev/vg/lv",
                    driver="lvm",
                    readonly=True,
                    options={"pool": "thin"},
                ),
                name="cp1",
                kind=SnapshotKind.EXTERNAL,
                target="/srv/vdb-cp1.qcow2",
                format="qcow2",
            ),
            id="external-target",
        ),
    ],
)
def test_snapshot_request_round_trip(request_: SnapshotRequest) -> None:
    data = through_json(request_.to_json())
    assert SnapshotRequest.from_json(data) == request_  # type: ignore[arg-type]


def test_backend_info_default_kind_must_be_one_of_its_kinds() -> None:
    with pytest.raises(ValueError, match="default_kind"):
        BackendInfo(
            driver="x",
            kinds=frozenset({SnapshotKind.INTERNAL}),
            default_kind=SnapshotKind.EXTERNAL,
        )


def test_backend_info_driver_name_is_checked() -> None:
    with pytest.raises(InvalidNameError, match="driver name"):
        BackendInfo(driver="a/b")


# -- snapshot-list --json (design brief §5) ----------------------------------------------------


@pytest.mark.parametrize(
    ("cp", "current", "memory"),
    [
        pytest.param(checkpoint(), True, True, id="with-memory-current"),
        pytest.param(checkpoint(memory=None, parent=None), False, False, id="disk-only"),
    ],
)
def test_checkpoint_view_json_has_the_promised_keys(
    cp: Checkpoint, current: bool, memory: bool
) -> None:
    data = through_json(CheckpointView(checkpoint=cp, current=current).to_json())
    assert isinstance(data, dict)

    assert data["name"] == cp.name
    assert data["description"] == cp.description
    assert data["creation_time"] == 1_700_000_000
    assert type(data["creation_time"]) is int
    assert data["state"] == cp.state.value
    assert data["state"] in {"running", "paused", "shutoff"}
    assert data["memory"] is memory
    assert data["parent"] == cp.parent
    assert data["current"] is current
    assert [{k: d[k] for k in ("vdev", "driver", "type", "path")} for d in data["disks"]] == [
        {"vdev": "vda", "driver": "qcow2", "type": "external", "path": "/srv/vda.qcow2"},
        {"vdev": "vdb", "driver": "lvm", "type": "external", "path": "/srv/vdb.qcow2"},
    ]
