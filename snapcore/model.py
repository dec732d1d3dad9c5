"""The data snapcore works on: domains, disks, snapshots, checkpoints, plans, capabilities.

Every model is a frozen dataclass validated in ``__post_init__``, so an instance that exists is
valid. Models that are stored or printed as JSON have ``to_json``/``from_json``; ``from_json``
raises ``ValueError``, ``KeyError`` or ``TypeError`` on malformed input, which the store
translates into :class:`~snapcore.errors.StoreCorruptError`.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from snapcore.errors import ConfigError, InvalidNameError

if TYPE_CHECKING:
    from snapcore.policy import HookSpec, SnapshotPolicy

#: A JSON value as json.loads returns it.
JSON = Any

NAME_MAX: Final = 64
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_VDEV_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_UUID_NAMESPACE: Final = uuidlib.UUID("6f1b7f2e-5f0c-4b7e-9a43-3c1f0d2a8e11")


def check_name(name: str, *, what: str = "snapshot name") -> str:
    """Return *name* if it is a valid checkpoint or domain name.

    Valid names are 1-64 characters of ``A-Za-z0-9._-`` that do not start with ``.`` or ``-``,
    so a name can never be a path, an option or a hidden file.

    :raises InvalidNameError: naming the first rule the name breaks.
    """
    if not name:
        raise InvalidNameError(name, "it is empty", what=what)
    if len(name) > NAME_MAX:
        raise InvalidNameError(
            name[:20] + "...", f"it is {len(name)} characters long, at most {NAME_MAX}", what=what
        )
    bad = sorted({c for c in name if not _NAME_RE.fullmatch(c)})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidNameError(
            name, f"it contains {shown}; use only letters, digits, '.', '_' and '-'", what=what
        )
    if name[0] in ".-":
        raise InvalidNameError(name, f"it starts with {name[0]!r}", what=what)
    return name


def check_vdev(vdev: str) -> str:
    """Return *vdev* if it is a valid guest device name (``vda``, ``xvda``, ``hdc``, ``disk_1``).

    :raises ConfigError: if it is not.
    """
    if not _VDEV_RE.fullmatch(vdev):
        raise ConfigError(
            f"invalid vdev {vdev!r}: use 1-32 letters, digits, '_' or '-', starting alphanumeric"
        )
    return vdev


class DomainState(StrEnum):
    """What a domain is doing, as recorded in a checkpoint."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"


class SnapshotKind(StrEnum):
    """Where a disk snapshot lives (design brief §2)."""

    #: inside the same image (qcow2 internal snapshot)
    INTERNAL = "internal"
    #: in another file; the disk's path gets a new overlay on top (qcow2 overlay, VHD child)
    EXTERNAL = "external"
    #: the storage's own snapshot object (LVM snapshot LV, a reflink copy, ...)
    NATIVE = "native"


class Operation(StrEnum):
    """The three operations that change checkpoints."""

    CREATE = "create"
    DELETE = "delete"
    REVERT = "revert"


@dataclass(frozen=True, slots=True, kw_only=True)
class Disk:
    """One block device of a domain.

    :ivar vdev: its name in the guest (``vda``).
    :ivar path: its locator: an image file, ``/dev/VG/LV``, a ``.vhd`` file.
    :ivar driver: the storage backend that owns it; ``None`` until a plugin claims it.
    :ivar readonly: read-only disks (a cdrom) are never snapshotted.
    :ivar options: backend-specific settings from the domain file (``[disk.options]``).
    """

    vdev: str
    path: str
    driver: str | None = None
    readonly: bool = False
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_vdev(self.vdev)
        if not self.path or "\0" in self.path:
            raise ConfigError(f"disk {self.vdev}: path is empty or contains a NUL byte")

    def with_driver(self, driver: str) -> Disk:
        """Return a copy of this disk owned by *driver*."""
        return Disk(
            vdev=self.vdev,
            path=self.path,
            driver=driver,
            readonly=self.readonly,
            options=self.options,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Domain:
    """A virtual machine as its domain file describes it.

    :ivar disks: its disks; empty when the domain file leaves them to the hypervisor plugin
        (``domain_disks``), which :meth:`snapcore.Host.open_domain` then asks.
    :ivar uuid: identifies the domain in the state dir; derived from the name when not given.
    :ivar hypervisor: the plugin that controls it when running (``none``: never running).
    :ivar hypervisor_table: the domain file's table named after the hypervisor (``[qemu]``,
        ``[xen]``), as TOML gave it: snapcore does not look inside; the hypervisor plugin checks
        it (``domain_config_check``) and reads it.
    :ivar source: the domain file it came from, if any.
    :ivar policy: its ``[snapshots]`` table, if it has one (``snapcore run-policy`` skips a
        domain without).
    :ivar chain_limits: the ``max_chain`` of each ``[[disk]]`` that gives one, by vdev (the
        policy's ``max_chain`` applies to the others).
    :ivar hooks: its ``[[hook]]`` entries, in file order.
    """

    name: str
    disks: tuple[Disk, ...]
    uuid: str = ""
    hypervisor: str = "none"
    hypervisor_table: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    policy: SnapshotPolicy | None = None
    chain_limits: Mapping[str, int] = field(default_factory=dict)
    hooks: tuple[HookSpec, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name, what="domain name")
        if not self.uuid:
            object.__setattr__(self, "uuid", str(uuidlib.uuid5(_UUID_NAMESPACE, self.name)))
        else:
            try:
                object.__setattr__(self, "uuid", str(uuidlib.UUID(self.uuid)))
            except ValueError:
                raise ConfigError(f"invalid uuid {self.uuid!r}") from None
        seen: set[str] = set()
        for disk in self.disks:
            if disk.vdev in seen:
                raise ConfigError(f"duplicate vdev {disk.vdev!r}")
            seen.add(disk.vdev)

    def disk(self, vdev: str) -> Disk:
        """Return the disk named *vdev*.

        :raises ConfigError: if the domain has no such disk.
        """
        for d in self.disks:
            if d.vdev == vdev:
                return d
        names = ", ".join(d.vdev for d in self.disks)
        raise ConfigError(f"domain {self.name!r} has no disk {vdev!r} (it has {names})")


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRequest:
    """What the coordinator asks a backend to create for one disk.

    :ivar disk: the disk, with ``driver`` set.
    :ivar name: the checkpoint name; unique per domain, valid by :func:`check_name`.
    :ivar kind: the kind asked for; ``None`` lets the backend use its default.
    :ivar target: for an external snapshot, where the snapshot's data goes (absolute path).
    :ivar format: the format asked for the target (``qcow2``), or ``None``.
    """

    disk: Disk
    name: str
    kind: SnapshotKind | None = None
    target: str | None = None
    format: str | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "disk": _disk_to_json(self.disk),
            "name": self.name,
            "kind": self.kind.value if self.kind else None,
            "target": self.target,
            "format": self.format,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> SnapshotRequest:
        kind = data.get("kind")
        return cls(
            disk=_disk_from_json(data["disk"]),
            name=str(data["name"]),
            kind=SnapshotKind(kind) if kind else None,
            target=data.get("target"),
            format=data.get("format"),
        )


def _disk_to_json(disk: Disk) -> dict[str, JSON]:
    return {
        "vdev": disk.vdev,
        "path": disk.path,
        "driver": disk.driver,
        "readonly": disk.readonly,
        "options": dict(disk.options),
    }


def _disk_from_json(data: Mapping[str, JSON]) -> Disk:
    return Disk(
        vdev=str(data["vdev"]),
        path=str(data["path"]),
        driver=data.get("driver"),
        readonly=bool(data.get("readonly", False)),
        options=dict(data.get("options") or {}),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskSnapshot:
    """One disk's saved state, as a backend made it.

    :ivar vdev: the disk it belongs to.
    :ivar path: the disk's path when the snapshot was made.
    :ivar driver: the backend that made it and owns it.
    :ivar kind: internal, external or native.
    :ivar name: the checkpoint name.
    :ivar locator: where the snapshot lives, in the backend's terms (a file, ``vg/lv``, a tag).
    :ivar size: bytes it occupies, if the backend knows.
    :ivar extra: backend data needed to revert or delete it later; JSON-serialisable.
    """

    vdev: str
    path: str
    driver: str
    kind: SnapshotKind
    name: str
    locator: str
    size: int | None = None
    extra: Mapping[str, JSON] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSON]:
        return {
            "vdev": self.vdev,
            "path": self.path,
            "driver": self.driver,
            "type": self.kind.value,
            "name": self.name,
            "locator": self.locator,
            "size": self.size,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> DiskSnapshot:
        size = data.get("size")
        return cls(
            vdev=str(data["vdev"]),
            path=str(data["path"]),
            driver=str(data["driver"]),
            kind=SnapshotKind(data["type"]),
            name=str(data["name"]),
            locator=str(data["locator"]),
            size=int(size) if size is not None else None,
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryImage:
    """The saved RAM and device state of a running domain.

    :ivar path: the file holding it.
    :ivar size: its size in bytes, if known.
    :ivar format: how it was written, for the restoring plugin: ``qemu-migration`` (QEMU's
        migration stream), ``qemu-mapped-ram`` (QEMU's mapped-ram file: each page at its own
        offset, restored with the same capability), ``xl-save``.
    """

    path: str
    size: int | None = None
    format: str = ""

    def to_json(self) -> dict[str, JSON]:
        return {"path": self.path, "size": self.size, "format": self.format}

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> MemoryImage:
        size = data.get("size")
        return cls(
            path=str(data["path"]),
            size=int(size) if size is not None else None,
            format=str(data.get("format", "")),
        )


def _epoch(value: JSON, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """One domain-level snapshot: its disks' snapshots, an optional memory image, metadata.

    ``current`` is not part of the record: the store knows which checkpoint is current.

    :ivar policy_slot: the schedule slot it was made for (epoch seconds), ``None`` if it was
        made by hand; the newest one is the record of the last slot the policy did.
    :ivar expiry: when the policy may prune it (epoch seconds), ``None`` for none.
    :ivar deleting: a delete of it failed part-way: its disks may be partly merged into the
        layers that depend on it, so it cannot be reverted to; only deleting it again is allowed.
    """

    name: str
    domain_uuid: str
    creation_time: int
    state: DomainState
    disks: tuple[DiskSnapshot, ...]
    description: str = ""
    memory: MemoryImage | None = None
    parent: str | None = None
    policy_slot: int | None = None
    expiry: int | None = None
    deleting: bool = False

    def __post_init__(self) -> None:
        check_name(self.name)
        for what in ("policy_slot", "expiry"):
            value = getattr(self, what)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{what} must be epoch seconds, not {value!r}")

    def disk(self, vdev: str) -> DiskSnapshot | None:
        """Return the snapshot of disk *vdev* in this checkpoint, or ``None``."""
        for d in self.disks:
            if d.vdev == vdev:
                return d
        return None

    def to_json(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "domain_uuid": self.domain_uuid,
            "description": self.description,
            "creation_time": self.creation_time,
            "state": self.state.value,
            "memory": self.memory.to_json() if self.memory else None,
            "parent": self.parent,
            "disks": [d.to_json() for d in self.disks],
            # absent from records written before they existed: read as None
            **({"policy_slot": self.policy_slot} if self.policy_slot is not None else {}),
            **({"expiry": self.expiry} if self.expiry is not None else {}),
            **({"deleting": True} if self.deleting else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> Checkpoint:
        memory = data.get("memory")
        slot, expiry = data.get("policy_slot"), data.get("expiry")
        return cls(
            policy_slot=None if slot is None else _epoch(slot, "policy_slot"),
            expiry=None if expiry is None else _epoch(expiry, "expiry"),
            name=str(data["name"]),
            domain_uuid=str(data["domain_uuid"]),
            description=str(data.get("description") or ""),
            creation_time=int(data["creation_time"]),
            state=DomainState(data["state"]),
            memory=MemoryImage.from_json(memory) if memory else None,
            parent=data.get("parent"),
            disks=tuple(DiskSnapshot.from_json(d) for d in data["disks"]),
            deleting=data.get("deleting") is True,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendInfo:
    """What a storage backend is and can do; returned by the ``backend_info`` hook.

    :ivar driver: the driver name disks use to name this backend (unique among plugins).
    :ivar kinds: the snapshot kinds it can make.
    :ivar default_kind: the kind made when the request does not ask for one.
    :ivar live: it can snapshot a disk while its domain runs.
    :ivar revert_any: it can revert to any snapshot, not only the latest.
    :ivar needs_pause: a live snapshot needs the guest paused.
    :ivar revert_requires_shutdown: a revert needs the domain stopped.
    :ivar max_chain: the longest chain of snapshots it supports, if limited.
    :ivar tools: external programs it runs.
    :ivar tool_version: the version of its main tool, if found.
    :ivar available: its tools are present and usable on this host.
    :ivar unavailable_reason: why not, when ``available`` is false.
    :ivar hook_timeout: seconds each of its hooks may take, in place of snapcore's defaults
        (the user's ``SNAPCORE_HOOK_TIMEOUT`` still wins).
    """

    driver: str
    description: str = ""
    version: str = ""
    kinds: frozenset[SnapshotKind] = frozenset()
    default_kind: SnapshotKind | None = None
    live: bool = False
    revert_any: bool = True
    needs_pause: bool = True
    revert_requires_shutdown: bool = True
    max_chain: int | None = None
    tools: tuple[str, ...] = ()
    tool_version: str | None = None
    available: bool = True
    unavailable_reason: str | None = None
    hook_timeout: float | None = None

    def __post_init__(self) -> None:
        check_name(self.driver, what="driver name")
        _check_timeout(self.hook_timeout)
        if self.default_kind is not None and self.default_kind not in self.kinds:
            raise ValueError(f"default_kind {self.default_kind} not in kinds {set(self.kinds)}")

    def to_json(self) -> dict[str, JSON]:
        return {
            "driver": self.driver,
            "description": self.description,
            "version": self.version,
            "kinds": sorted(k.value for k in self.kinds),
            "default_kind": self.default_kind.value if self.default_kind else None,
            "live": self.live,
            "revert_any": self.revert_any,
            "needs_pause": self.needs_pause,
            "revert_requires_shutdown": self.revert_requires_shutdown,
            "max_chain": self.max_chain,
            "tools": list(self.tools),
            "tool_version": self.tool_version,
            "available": self.available,
            "unavailable_reason": self.unavailable_reason,
            "hook_timeout": self.hook_timeout,
        }


def _check_timeout(seconds: float | None) -> None:
    if seconds is not None and not (isinstance(seconds, int | float) and seconds > 0):
        raise ValueError(f"hook_timeout must be a positive number of seconds, not {seconds!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HypervisorInfo:
    """What a hypervisor plugin is; returned by the ``hypervisor_info`` hook."""

    name: str
    description: str = ""
    memory: bool = False
    #: memory must be saved before the disks are snapshotted, with the guest still running
    #: (Xen PV guests suspend themselves when asked and cannot answer while paused);
    #: ``domain_memory_save`` then leaves the guest paused for the disk snapshots.
    memory_first: bool = False
    tools: tuple[str, ...] = ()
    available: bool = True
    unavailable_reason: str | None = None
    #: seconds each of its hooks may take, in place of snapcore's defaults.
    hook_timeout: float | None = None

    def __post_init__(self) -> None:
        _check_timeout(self.hook_timeout)

    def to_json(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "description": self.description,
            "memory": self.memory,
            "memory_first": self.memory_first,
            "tools": list(self.tools),
            "available": self.available,
            "unavailable_reason": self.unavailable_reason,
            "hook_timeout": self.hook_timeout,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskChoice:
    """One entry of a snapshot config file's ``disk`` list: ``VDEV[=TARGET][,type=FORMAT]``."""

    vdev: str
    target: str | None = None
    format: str | None = None
    kind: SnapshotKind | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateOptions:
    """What to create, from the command line and/or a snapshot config file.

    :ivar name: the checkpoint name; ``None`` for the default (creation time in epoch seconds).
    :ivar memory: ``None`` (default: with memory if running), ``"no"``, ``"yes"`` or an absolute
        path for the memory image.
    :ivar kind: the default kind for disks not listed in ``disks``.
    :ivar disks: the disks to include; ``None`` for every writable disk.
    :ivar expiry: when the checkpoint may be pruned (epoch seconds), recorded with it.
    :ivar policy_slot: the schedule slot it is made for (epoch seconds), recorded with it in
        the same write (set by ``run-policy``; ``None`` for a checkpoint made by hand).
    """

    name: str | None = None
    description: str = ""
    memory: str | None = None
    kind: SnapshotKind | None = None
    disks: tuple[DiskChoice, ...] | None = None
    expiry: int | None = None
    policy_slot: int | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name)
        if self.memory not in (None, "yes", "no") and not str(self.memory).startswith("/"):
            raise ConfigError(
                f'memory must be "yes", "no" or an absolute path, not {self.memory!r}'
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanStep:
    """One thing an operation will do to one disk (or to the domain, when ``vdev`` is empty)."""

    vdev: str
    driver: str
    action: str
    kind: SnapshotKind | None = None
    detail: str = ""

    def to_json(self) -> dict[str, JSON]:
        return {
            "vdev": self.vdev,
            "driver": self.driver,
            "action": self.action,
            "type": self.kind.value if self.kind else None,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What an operation will do, computed and validated before anything is touched.

    ``--dry-run`` prints it; running the operation carries it out step by step.
    """

    operation: Operation
    domain: str
    name: str
    state: DomainState
    memory: bool
    steps: tuple[PlanStep, ...]
    skipped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JSON]:
        return {
            "operation": self.operation.value,
            "domain": self.domain,
            "name": self.name,
            "state": self.state.value,
            "memory": self.memory,
            "steps": [s.to_json() for s in self.steps],
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent:
    """A report on a long step: ``done`` of ``total`` units (``total`` 0 when unknown).

    ``unit`` is ``"disks"`` when counting disks done, ``"bytes"`` for data copied (memory
    saves, block jobs).
    """

    step: str
    vdev: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    unit: str = "disks"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointView:
    """A checkpoint as ``snapshot-list`` shows it: the record plus its place in the tree."""

    checkpoint: Checkpoint
    current: bool
    children: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JSON]:
        cp = self.checkpoint
        return {
            "name": cp.name,
            "description": cp.description,
            "creation_time": cp.creation_time,
            "state": cp.state.value,
            "memory": cp.memory is not None,
            "memory_image": cp.memory.to_json() if cp.memory else None,
            "parent": cp.parent,
            "current": self.current,
            "expiry": cp.expiry,
            "policy_slot": cp.policy_slot,
            "deleting": cp.deleting,
            "children": list(self.children),
            "disks": [
                {
                    "vdev": d.vdev,
                    "driver": d.driver,
                    "type": d.kind.value,
                    "path": d.path,
                    "locator": d.locator,
                    "size": d.size,
                }
                for d in cp.disks
            ],
            "missing": list(self.missing),
        }
