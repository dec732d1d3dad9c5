"""A typed wrapper over the LVM command-line tools (checked against LVM 2.03.16).

Every command runs through a :class:`~snapcore.process.CommandRunner` as an argument list with
``LVM_SUPPRESS_FD_WARNINGS=1``. Reports are read with ``lvs --reportformat json --units b
--nosuffix --binary``, so that sizes are integers of bytes, two-valued fields are ``0``/``1``
(``-1`` when they do not apply) and nothing is scraped from the human output: every field is
parsed into :class:`LogicalVolume`, whose attributes name the ``lvs`` field they come from
(lvs(8), lvmreport(7)). Names reach a command line only after
:meth:`~snapcore_lvm.devices.LvRef.problem` found nothing wrong with them (the callers check).

Failure guarantee of every method: an LVM tool that fails raises
:class:`~snapcore.errors.CommandError` with its message; LVM rolls back a failed ``lvcreate``,
``lvrename``, ``lvremove`` or ``lvchange`` itself, so a failed call changed nothing. A report
that cannot be parsed raises :class:`~snapcore.errors.BackendError`. Nothing here attributes
errors to a disk: the plugin does that.
"""

from __future__ import annotations

import functools
import json
import mmap
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from snapcore.errors import BackendError, CommandError
from snapcore.model import JSON
from snapcore.process import CommandRunner
from snapcore_lvm.devices import TAG, LvRef

#: The programs this backend runs (all are links to ``lvm`` on Debian).
PROGRAMS: Final = ("lvs", "lvcreate", "lvconvert", "lvremove", "lvrename", "lvchange")
#: Set for every LVM command: descriptors inherited from snapcore are not LVM's business.
ENV: Final = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
#: The ``lvs`` fields every report asks for, in the order of :class:`LogicalVolume`.
LV_FIELDS: Final = (
    "lv_name",
    "vg_name",
    "lv_uuid",
    "lv_attr",
    "lv_size",
    "segtype",
    "origin",
    "pool_lv",
    "lv_tags",
    "data_percent",
    "metadata_percent",
    "snap_percent",
    "lv_device_open",
    "lv_merging",
    "lv_snapshot_invalid",
    "vg_extent_size",
    "vg_free_count",
)
#: Exit status of an LVM command that found nothing to act on (ECMD_FAILED).
NOT_FOUND_STATUS: Final = 5
#: Longest wait for a merge started by ``lvchange --refresh``, in seconds.
MERGE_TIMEOUT: Final = 3600.0
#: Chunk size of a classic snapshot when ``lvcreate`` is given none (lvcreate(8)).
DEFAULT_CHUNK: Final = 4096

_VERSION_RE: Final = re.compile(rb"(\d+\.\d+\.\d+\(\d+\)\S*) \(\d{4}-\d\d-\d\d\)")
_VG_MISSING_RE: Final = re.compile(r'Volume group "([^"]*)" not found')
_LV_MISSING_RE: Final = re.compile(r'Failed to find logical volume "([^"]*)"')


class VolumeGroupNotFoundError(BackendError):
    """``lvs`` says the volume group does not exist."""

    def __init__(self, vg: str):
        self.vg = vg
        super().__init__(f"volume group {vg!r} does not exist")


def _str(row: Mapping[str, JSON], key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} is {value!r}, not a string")
    return value


def _int(row: Mapping[str, JSON], key: str) -> int:
    return int(_str(row, key))


def _percent(row: Mapping[str, JSON], key: str) -> float | None:
    value = _str(row, key)
    return float(value) if value else None


def _flag(row: Mapping[str, JSON], key: str) -> bool | None:
    """A ``--binary`` field: ``1`` true, ``0`` false, ``-1`` or empty: does not apply."""
    value = _str(row, key)
    if value in ("", "-1"):
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{key!r} is {value!r}, not 0, 1 or -1")
    return value == "1"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogicalVolume:
    """One row of ``lvs --reportformat json --units b --nosuffix --binary -o LV_FIELDS``."""

    #: ``lv_name``, without the brackets ``lvs --all`` puts around hidden LVs.
    name: str
    #: ``vg_name``
    vg: str
    #: ``lv_uuid``
    uuid: str
    #: ``lv_attr``: ten characters; see lvs(8) "NOTES" for each position.
    attr: str
    #: ``lv_size``, bytes.
    size: int
    #: ``segtype``: ``linear``, ``striped``, ``thin``, ``thin-pool``, ``raid1``, ...
    segtype: str
    #: ``origin``: the LV a snapshot was taken of (empty for thin LVs once it is gone).
    origin: str
    #: ``pool_lv``: the thin pool of a thin LV.
    pool: str
    #: ``lv_tags``, split at ``,``.
    tags: tuple[str, ...]
    #: ``data_percent``: use of a snapshot's COW space, a thin LV or a thin pool; ``None``
    #: when LVM cannot tell (inactive).
    data_percent: float | None
    #: ``metadata_percent``: metadata use of a thin pool.
    metadata_percent: float | None
    #: ``snap_percent``: use of a classic snapshot's COW space.
    snap_percent: float | None
    #: ``lv_device_open``: someone holds the device open; ``None`` when inactive.
    open: bool | None
    #: ``lv_merging``: a snapshot merge into this origin is pending or running.
    merging: bool
    #: ``lv_snapshot_invalid``: a classic snapshot that overflowed; ``None`` for other LVs.
    snapshot_invalid: bool | None
    #: ``vg_extent_size``, bytes.
    extent_size: int
    #: ``vg_free_count``: unallocated extents of the VG.
    vg_free_extents: int

    @classmethod
    def from_json(cls, row: Mapping[str, JSON]) -> LogicalVolume:
        """Parse one element of ``report[0].lv``.

        :raises KeyError, TypeError, ValueError: when a field is missing or malformed.
        """
        attr = _str(row, "lv_attr")
        if len(attr) < 10:
            raise ValueError(f"'lv_attr' is {attr!r}, not ten characters")
        tags = _str(row, "lv_tags")
        return cls(
            # --all shows hidden LVs (a snapshot whose merge is pending) in brackets
            name=_str(row, "lv_name").removeprefix("[").removesuffix("]"),
            vg=_str(row, "vg_name"),
            uuid=_str(row, "lv_uuid"),
            attr=attr,
            size=_int(row, "lv_size"),
            segtype=_str(row, "segtype"),
            origin=_str(row, "origin"),
            pool=_str(row, "pool_lv"),
            tags=tuple(t for t in tags.split(",") if t),
            data_percent=_percent(row, "data_percent"),
            metadata_percent=_percent(row, "metadata_percent"),
            snap_percent=_percent(row, "snap_percent"),
            open=_flag(row, "lv_device_open"),
            merging=bool(_flag(row, "lv_merging")),
            snapshot_invalid=_flag(row, "lv_snapshot_invalid"),
            extent_size=_int(row, "vg_extent_size"),
            vg_free_extents=_int(row, "vg_free_count"),
        )

    @property
    def ref(self) -> LvRef:
        return LvRef(self.vg, self.name)

    @property
    def extents(self) -> int:
        """Its size in extents."""
        return -(-self.size // self.extent_size)

    @property
    def is_thin(self) -> bool:
        """A thin volume (thin snapshots included)."""
        return self.segtype == "thin"

    @property
    def is_thin_pool(self) -> bool:
        return self.segtype == "thin-pool"

    @property
    def is_classic_snapshot(self) -> bool:
        """A classic (COW) snapshot: ``s``, or ``S`` while it merges."""
        return self.attr[0] in "sS"

    @property
    def is_merging_origin(self) -> bool:
        """An origin into which a merge is pending or running (``O``)."""
        return self.attr[0] == "O" or self.merging

    @property
    def is_invalid(self) -> bool:
        """A classic snapshot that overflowed (``I`` or ``S`` in attr[4]): its data is lost."""
        return bool(self.snapshot_invalid) or (self.is_classic_snapshot and self.attr[4] in "IS")

    @property
    def is_open(self) -> bool:
        """Its device is open (by a domain, a mount, ...)."""
        return bool(self.open) or self.attr[5] == "o"

    @property
    def is_ours(self) -> bool:
        """It carries snapcore's tag."""
        return TAG in self.tags

    @property
    def skip_activation(self) -> bool:
        return self.attr[9] == "k"

    @property
    def health(self) -> str:
        """attr[8]: ``-`` healthy; thin pools: ``F`` failed, ``D`` out of data space, ``M``
        metadata read-only; snapshots: ``F`` failed."""
        return self.attr[8]


def parse_report(text: str) -> list[LogicalVolume]:
    """The LVs of an ``lvs --reportformat json`` report.

    :raises BackendError: when the report cannot be parsed.
    """
    try:
        data = json.loads(text)
        rows = data["report"][0]["lv"]
        if not isinstance(rows, list):
            raise TypeError(f"'lv' is {type(rows).__name__}, not a list")
        return [LogicalVolume.from_json(row) for row in rows]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BackendError(f"cannot parse the lvs report: {exc}") from exc


def cow_max_bytes(origin_size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    """The largest COW space a classic snapshot of an origin of *origin_size* bytes can use:
    a header chunk, the exception table (16 bytes a chunk) and a chunk for every chunk of the
    origin. LVM's ``_cow_max_size`` (lib/metadata/snapshot_manip.c), in bytes.
    """
    sector = 512
    origin = -(-origin_size // sector)
    chunk = chunk_size // sector
    metadata = (-(-origin // chunk) * 16 + 511) // sector
    return (chunk + (-(-metadata // chunk) * chunk) + (-(-origin // chunk) * chunk)) * sector


class MergeOutcome(StrEnum):
    """What ``lvconvert --merge`` did."""

    #: The snapshot's data is in the origin now and the snapshot LV is gone.
    DONE = "done"
    #: LVM put the merge off until the origin is next activated (the origin was open).
    DEFERRED = "deferred"


_UNIT: Final = {
    "": 1024**2,  # lvcreate -L without a unit means MiB
    "b": 1,
    "s": 512,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "p": 1024**5,
    "e": 1024**6,
}
_SIZE_RE: Final = re.compile(r"([0-9]{1,19})\s*([bskmgtpe]?)(?:i?b)?", re.IGNORECASE)
_PERCENT_RE: Final = re.compile(r"([0-9]{1,3})%ORIGIN", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SizePolicy:
    """How big a classic snapshot is made: a share of its origin or a fixed size.

    The domain file gives it per disk as ``snapshot_size`` in ``[disk.options]``: ``"100%ORIGIN"``
    (the default: room for a full rewrite of the origin, as Incus does), ``"20%ORIGIN"``, or a
    size such as ``"512M"`` or ``"2G"`` (binary units, as lvcreate reads them).
    """

    #: A percentage of the origin (1-100), or ``None``.
    percent: int | None = None
    #: A size in bytes (a multiple of 512), or ``None``.
    size: int | None = None

    def __post_init__(self) -> None:
        if (self.percent is None) == (self.size is None):
            raise ValueError("give a percentage or a size")
        if self.size is not None and (self.size <= 0 or self.size % 512):
            raise ValueError(f"a snapshot size must be a positive multiple of 512, not {self.size}")

    @classmethod
    def parse(cls, text: str) -> SizePolicy:
        """Parse ``N%ORIGIN`` or ``SIZE[unit]``.

        :raises ValueError: naming the accepted forms.
        """
        value = text.strip()
        m = _PERCENT_RE.fullmatch(value)
        if m:
            percent = int(m.group(1))
            if not 1 <= percent <= 100:
                raise ValueError(f"snapshot_size {text!r}: the percentage must be 1-100")
            return cls(percent=percent)
        m = _SIZE_RE.fullmatch(value)
        if m:
            size = int(m.group(1)) * _UNIT[m.group(2).lower()]
            if size <= 0:
                raise ValueError(f"snapshot_size {text!r} is zero")
            return cls(size=-(-size // 512) * 512)  # lvcreate takes whole sectors
        raise ValueError(
            f'snapshot_size {text!r} is neither "N%ORIGIN" (N 1-100) nor a size such as "512M"'
        )

    def __str__(self) -> str:
        return f"{self.percent}%ORIGIN" if self.percent is not None else f"{self.size}B"

    def extents(self, origin_size: int, extent_size: int) -> int:
        """The extents lvcreate allocates for a snapshot of an origin of *origin_size* bytes
        (measured on LVM 2.03.16; never less than it does, so a preflight can trust it).

        ``N%ORIGIN`` gives N% of the origin's extents, rounded up, plus the extents the COW
        metadata of a full-size snapshot needs beyond the origin's size; a size is rounded up
        to whole extents. Neither goes past (and ``100%ORIGIN`` is exactly) what a full rewrite
        of the origin can use: lvcreate trims a larger request down to that.
        """
        origin_extents = -(-origin_size // extent_size)
        most = -(-cow_max_bytes(origin_size) // extent_size)
        if self.percent is not None:
            if self.percent >= 100:
                return most
            wanted = -(-(origin_extents * self.percent) // 100) + (most - origin_extents)
        else:
            assert self.size is not None
            wanted = -(-self.size // extent_size)
        return max(1, min(wanted, most))


#: The default size policy.
FULL: Final = SizePolicy(percent=100)


@functools.cache
def tool_version(executable: str) -> str | None:
    """The LVM version of the ``lvm`` binary at *executable* (``2.03.16(2)``), read from the
    banner string the binary carries, so that no process runs; ``None`` if not found."""
    try:
        with open(executable, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            # The banner reads "2.03.16(2) (2022-05-18)": look only around each ") (" rather
            # than running the pattern over the whole 3 MB binary (20 ms on every command).
            start = 0
            while (i := m.find(b") (", start)) != -1:
                found = _VERSION_RE.search(m[max(0, i - 40) : i + 16])
                if found:
                    return found.group(1).decode("ascii")
                start = i + 1
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    return None


def find_tools() -> tuple[str | None, str | None]:
    """``(path of lvm, None)``, or ``(None, why the tools cannot be used)``. Never raises."""
    missing = [p for p in ("lvm", *PROGRAMS) if shutil.which(p) is None]
    if missing:
        return None, (
            f"the LVM tools are not installed or not on PATH ({', '.join(missing)} not found; "
            "Debian package lvm2)"
        )
    return shutil.which("lvm"), None


class Lvm:
    """Runs the LVM tools through *run* and parses what they report."""

    def __init__(self, run: CommandRunner):
        self._run = run

    def _call(
        self, argv: Sequence[str], *, ok_codes: Sequence[int] = (0,), long: bool = False
    ) -> tuple[int, str, str]:
        if long:
            result = self._run(argv, ok_codes=ok_codes, env=ENV, timeout=None)
        else:
            result = self._run(argv, ok_codes=ok_codes, env=ENV)
        return result.returncode, result.stdout, result.stderr

    # -- reports ----------------------------------------------------------------------------

    def _report(self, target: str, *, hidden: bool) -> tuple[int, list[LogicalVolume], str]:
        argv = ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "--binary"]
        if hidden:
            argv.append("--all")
        argv += ["--options", ",".join(LV_FIELDS), target]
        code, out, err = self._call(argv, ok_codes=(0, NOT_FOUND_STATUS))
        lvs = parse_report(out) if out.strip() else []
        return code, lvs, err

    def _raise_missing(self, argv_target: str, code: int, err: str) -> None:
        if code == 0:
            return
        vg = _VG_MISSING_RE.search(err)
        if vg:
            raise VolumeGroupNotFoundError(vg.group(1))
        if _LV_MISSING_RE.search(err):
            return
        raise CommandError(["lvs", argv_target], code, err)

    def volumes(self, vg: str, *, hidden: bool = False) -> list[LogicalVolume]:
        """``lvs VG``: every LV of *vg* (hidden ones too with *hidden*: a snapshot whose merge
        is pending is hidden).

        :raises VolumeGroupNotFoundError: when the VG does not exist.
        """
        code, lvs, err = self._report(vg, hidden=hidden)
        self._raise_missing(vg, code, err)
        return lvs

    def get(self, ref: LvRef, *, hidden: bool = False) -> LogicalVolume | None:
        """``lvs VG/LV``: the LV, or ``None`` if the VG has no such LV (a hidden LV, such as a
        snapshot whose merge is pending, only with *hidden*).

        :raises VolumeGroupNotFoundError: when the VG does not exist.
        """
        code, lvs, err = self._report(ref.full, hidden=hidden)
        self._raise_missing(ref.full, code, err)
        for lv in lvs:
            if lv.name == ref.lv:
                return lv
        return None

    # -- changes ----------------------------------------------------------------------------

    def create_snapshot(
        self,
        origin: LvRef,
        name: str,
        *,
        extents: int | None,
        writable: bool = False,
        skip_activation: bool | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        """``lvcreate --snapshot --name NAME [--extents N] --permission r|rw ... VG/ORIGIN``.

        Without *extents* the snapshot is a thin one (the origin must be thin); with them, a
        classic COW snapshot of exactly that many extents. (An ``N%ORIGIN`` request is not
        passed on as such: lvcreate silently shrinks it to the VG's free space, down to a
        single extent, and such a snapshot would overflow; an exact count fails instead.)
        LVM suspends the origin for the switch, so writes in flight are flushed first.
        """
        argv = ["lvcreate", "--snapshot", "--name", name]
        if extents is not None:
            argv += ["--extents", str(extents)]
        argv += ["--permission", "rw" if writable else "r"]
        if skip_activation is not None:
            argv += ["--setactivationskip", "y" if skip_activation else "n"]
            if not skip_activation:
                argv += ["--activate", "y"]
        for tag in tags:
            argv += ["--addtag", tag]
        argv.append(origin.full)
        self._call(argv)

    def merge(self, snapshot: LvRef, origin: LvRef) -> MergeOutcome:
        """``lvconvert --merge --yes --interval 1 VG/SNAPSHOT``: merge a classic snapshot into
        *origin*, waiting for the data to be copied back.

        LVM exits 0 and puts the merge off ("Delaying merge since origin is open") when the
        origin is open; that case is told from the origin's state afterwards (``O`` in attr[0],
        ``lv_merging``), not taken as done.
        """
        _code, out, err = self._call(
            ["lvconvert", "--merge", "--yes", "--interval", "1", snapshot.full], long=True
        )
        after = self.get(origin)
        if "Delaying merge" in out + err or (after is not None and after.is_merging_origin):
            return MergeOutcome.DEFERRED
        return MergeOutcome.DONE

    def start_pending_merge(
        self, snapshot: LvRef, origin: LvRef, *, timeout: float = MERGE_TIMEOUT
    ) -> MergeOutcome:
        """Start a merge LVM put off, now that the origin is closed, and wait for its end.

        ``lvconvert --merge`` refuses a snapshot already marked for merging; ``lvchange
        --refresh`` of the origin starts the merge (checked on LVM 2.03.16), which is then
        followed with ``lvs`` until the snapshot LV is gone.

        :raises BackendError: when the merge has not ended after *timeout* seconds.
        """
        self._call(["lvchange", "--refresh", origin.full])
        deadline = time.monotonic() + timeout
        while True:
            after = self.get(origin)
            if self.get(snapshot, hidden=True) is None and (
                after is None or not after.is_merging_origin
            ):
                return MergeOutcome.DONE
            if after is not None and after.is_open and after.is_merging_origin:
                return MergeOutcome.DEFERRED
            if time.monotonic() > deadline:
                raise BackendError(
                    f"the merge of {snapshot.full} into {origin.full} has not ended after "
                    f"{timeout:g} s"
                )
            time.sleep(0.5)

    def remove(self, ref: LvRef) -> None:
        """``lvremove --force VG/LV``."""
        self._call(["lvremove", "--force", ref.full])

    def rename(self, ref: LvRef, new: str) -> None:
        """``lvrename VG OLD NEW``."""
        self._call(["lvrename", ref.vg, ref.lv, new])

    def add_tag(self, ref: LvRef, tag: str) -> None:
        """``lvchange --addtag TAG VG/LV``."""
        self._call(["lvchange", "--addtag", tag, ref.full])

    def delete_tag(self, ref: LvRef, tag: str) -> None:
        """``lvchange --deltag TAG VG/LV``."""
        self._call(["lvchange", "--deltag", tag, ref.full])
