"""Names and paths of logical volumes, worked out without running any command.

A disk of the ``lvm`` driver is named by its device path: ``/dev/VG/LV`` (the symlink udev and
LVM make), ``/dev/mapper/VG-LV`` (the device-mapper name, every ``-`` inside VG and LV doubled)
or any other path of the same block device (``/dev/dm-3``, ``/dev/disk/by-id/dm-name-...``),
which is recognised through sysfs as a device-mapper device whose UUID starts with ``LVM-``.

Name rules are LVM's own (lvm(8), "VALID NAMES"): VG and LV names use ``A-Za-z0-9+_.-``, do not
start with ``-``, are not ``.`` or ``..``; an LV name does not start with ``snapshot`` or
``pvmove`` nor contain the suffixes LVM keeps for its hidden volumes. LVM also refuses an LV
whose full name ``VG/LV`` is longer than it can handle (checked on LVM 2.03.16: 124 characters
work, 130 do not), and a classic snapshot adds ``-cow`` to the device-mapper name.

Snapshot LVs made by snapcore are named ``<origin>+<checkpoint>``. Checkpoint names never
contain ``+`` (:func:`snapcore.model.check_name`), so the name splits back into origin and
checkpoint unambiguously at its last ``+``, and two disks' snapshots can never get one name.
Each is also tagged ``snapcore`` when made; an LV that has the name but not the tag was not made
by snapcore and is never touched. The names ``<origin>+.revert`` and ``<origin>+.old`` (whose
part after ``+`` is no valid checkpoint name) are kept for the steps of a thin revert.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Final

from snapcore.errors import InvalidNameError
from snapcore.model import check_name

#: The tag on every snapshot LV snapcore makes.
TAG: Final = "snapcore"
#: Between the origin's name and the checkpoint's in a snapshot LV name.
SEP: Final = "+"
#: Suffix of the LV a thin revert builds before it takes the origin's name.
REVERT_SUFFIX: Final = SEP + ".revert"
#: Suffix the origin is renamed to while a thin revert swaps names.
OLD_SUFFIX: Final = SEP + ".old"

#: Longest ``VG/LV`` snapcore creates (LVM 2.03.16 refuses 130, accepts 124).
FULL_NAME_MAX: Final = 124
#: Longest device-mapper name (DM_NAME_LEN is 128 with the NUL).
DM_NAME_MAX: Final = 127

_NAME_RE: Final = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")
_RESERVED_PREFIXES: Final = ("snapshot", "pvmove")
_RESERVED_PARTS: Final = (
    "_cdata",
    "_cmeta",
    "_corig",
    "_iorig",
    "_mimage",
    "_mlog",
    "_pmspare",
    "_rimage",
    "_rmeta",
    "_tdata",
    "_tmeta",
    "_vdata",
    "_vorigin",
    "_wcorig",
)
#: Directories of /dev that are never volume groups (a path under them is not claimed).
_NOT_VGS: Final = frozenset(
    {
        "block",
        "bsg",
        "bus",
        "char",
        "cpu",
        "disk",
        "dma_heap",
        "dri",
        "fd",
        "hugepages",
        "input",
        "mapper",
        "md",
        "mqueue",
        "net",
        "pts",
        "serial",
        "shm",
        "snd",
        "usb",
        "vfio",
        "virtio-ports",
        "xen",
        "zvol",
    }
)
_DM_UUID_PREFIX: Final = "LVM-"
#: "LVM-" + 32 characters of VG UUID + 32 of LV UUID; layers (-cow, -real, -tpool) add more.
_DM_UUID_LEN: Final = 68


def name_problem(name: str, what: str = "LV") -> str | None:
    """Why LVM would refuse *name* as a VG or LV name (``what``), or ``None`` if it is valid."""
    problem = None
    if not name or name in (".", ".."):
        problem = f"the {what} name {name!r} is empty or reserved"
    elif len(name) > 127:
        problem = f"{what} name {name[:20]!r}... is {len(name)} characters long, at most 127"
    elif not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not _NAME_RE.fullmatch(c) and c != "-"})
        shown = ", ".join(repr(c) for c in bad)
        problem = (
            f"{what} name {name!r} contains {shown}; LVM allows only A-Za-z0-9+_.-"
            if bad
            else f"{what} name {name!r} starts with '-'"
        )
    elif what == "LV":
        prefix = next((p for p in _RESERVED_PREFIXES if name.startswith(p)), None)
        part = next((p for p in _RESERVED_PARTS if p in name), None)
        if prefix:
            problem = f"LV name {name!r} starts with {prefix!r}, which LVM reserves"
        elif part:
            problem = f"LV name {name!r} contains {part!r}, which LVM reserves"
    return problem


def dm_escape(name: str) -> str:
    """A VG or LV name as it appears inside a device-mapper name (``-`` doubled)."""
    return name.replace("-", "--")


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name of LV *lv* in VG *vg* (``/dev/mapper/<this>``)."""
    return f"{dm_escape(vg)}-{dm_escape(lv)}"


def split_dm_name(name: str) -> tuple[str, str] | None:
    """Split a device-mapper name into ``(vg, lv)`` at its single ``-``; ``None`` if it has none
    (``--`` stands for a ``-`` inside a name)."""
    i = 0
    while i < len(name):
        if name[i] == "-":
            if i + 1 < len(name) and name[i + 1] == "-":
                i += 2
                continue
            vg, lv = name[:i], name[i + 1 :]
            if not vg or not lv:
                return None
            return vg.replace("--", "-"), lv.replace("--", "-")
        i += 1
    return None


@dataclass(frozen=True, slots=True, order=True)
class LvRef:
    """A logical volume by name: volume group *vg*, logical volume *lv*."""

    vg: str
    lv: str

    @property
    def full(self) -> str:
        """``VG/LV``, as LVM commands take it."""
        return f"{self.vg}/{self.lv}"

    @property
    def path(self) -> str:
        """``/dev/VG/LV``."""
        return f"/dev/{self.vg}/{self.lv}"

    def problem(self) -> str | None:
        """Why LVM would refuse these names, or ``None``."""
        return name_problem(self.vg, "VG") or name_problem(self.lv, "LV")

    def with_lv(self, lv: str) -> LvRef:
        """Another LV of the same VG."""
        return LvRef(self.vg, lv)


def parse_path(path: str) -> LvRef | None:
    """The LV a path names by its form alone: ``/dev/VG/LV`` or ``/dev/mapper/VG-LV``.

    Nothing is looked up and the names are not checked (see :meth:`LvRef.problem`); ``None``
    when the path has neither form.
    """
    norm = os.path.normpath(path)
    parts = norm.split("/")
    if len(parts) != 4 or parts[0] != "" or parts[1] != "dev" or not parts[2] or not parts[3]:
        return None
    if parts[2] == "mapper":
        split = split_dm_name(parts[3])
        return LvRef(*split) if split else None
    if parts[2] in _NOT_VGS:
        return None
    return LvRef(parts[2], parts[3])


def _sysfs_dm(path: str) -> tuple[str, str] | None:
    """``(dm name, dm uuid)`` of the block device at *path*, or ``None``."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    base = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/dm"
    try:
        with open(f"{base}/name", encoding="utf-8") as f:
            name = f.read().strip()
        with open(f"{base}/uuid", encoding="utf-8") as f:
            uuid = f.read().strip()
    except OSError:
        return None
    return name, uuid


def from_device(path: str) -> LvRef | None:
    """The LV whose block device *path* is (any path to it), from sysfs; ``None`` if *path* is
    not an active LVM logical volume. Runs no command."""
    found = _sysfs_dm(path)
    if found is None:
        return None
    name, uuid = found
    if not uuid.startswith(_DM_UUID_PREFIX) or len(uuid) != _DM_UUID_LEN:
        return None
    split = split_dm_name(name)
    return LvRef(*split) if split else None


def locate(path: str) -> LvRef | None:
    """The LV a disk path names: the active device it is, else its form."""
    return from_device(path) or parse_path(path)


def _only_dm_links(directory: str) -> bool:
    """Whether *directory* is missing or holds only links to ``dm-N`` devices (a VG's
    directory under ``/dev``)."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        targets = [os.readlink(os.path.join(directory, e)) for e in entries]
    except OSError:
        return False
    return all(os.path.basename(t).startswith("dm-") for t in targets)


def is_lvm_path(path: str) -> bool:
    """Whether a disk with this path belongs to the ``lvm`` driver (for ``disk_claim``).

    True for an active LV under any path, and for a ``/dev/VG/LV`` path that does not exist
    (an inactive LV, or a VG that is missing: the create check then says which) unless
    ``/dev/VG`` exists and holds anything but device-mapper links. Looks at ``/dev`` and
    ``/sys`` only.
    """
    if from_device(path) is not None:
        return True
    if os.path.lexists(path) or os.path.normpath(path).startswith("/dev/mapper/"):
        return False
    ref = parse_path(path)
    if ref is None or name_problem(ref.vg, "VG") is not None:
        return False
    return _only_dm_links(f"/dev/{ref.vg}")


# -- snapshot LV names -------------------------------------------------------------------------


def snapshot_name(origin: str, checkpoint: str) -> str:
    """The name of the snapshot LV of *origin* for *checkpoint*: ``<origin>+<checkpoint>``.

    :raises InvalidNameError: if *checkpoint* is not a valid checkpoint name.
    """
    check_name(checkpoint)
    return f"{origin}{SEP}{checkpoint}"


def split_snapshot_name(name: str) -> tuple[str, str] | None:
    """``(origin, checkpoint)`` of a snapshot LV name made by :func:`snapshot_name`, or
    ``None`` when *name* is not one."""
    origin, sep, checkpoint = name.rpartition(SEP)
    if not sep or not origin:
        return None
    try:
        check_name(checkpoint)
    except InvalidNameError:
        return None
    return origin, checkpoint


def length_problem(vg: str, lv: str) -> str | None:
    """Why an LV called *lv* in *vg* would be too long for LVM, or ``None``."""
    full = len(vg) + 1 + len(lv)
    if full > FULL_NAME_MAX:
        return (
            f"the snapshot LV name {vg}/{lv[:30]}... would be {full} characters long, "
            f"at most {FULL_NAME_MAX}; use a shorter snapshot name"
        )
    if len(dm_name(vg, lv)) + len("-cow") > DM_NAME_MAX:
        return (
            f"the device-mapper name of snapshot LV {vg}/{lv[:30]}... would be too long; "
            "use a shorter snapshot name"
        )
    return None
