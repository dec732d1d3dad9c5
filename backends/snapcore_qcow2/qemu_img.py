"""A typed wrapper over the ``qemu-img`` command line (checked against QEMU 7.2).

Every command runs through a :class:`~snapcore.process.CommandRunner` as an argument list, never
a shell string. ``qemu-img info --output=json`` is parsed into frozen models whose fields are
the QAPI types QEMU prints (``qapi/block-core.json``: ``ImageInfo`` and ``SnapshotInfo``); each
field's docstring names its JSON key.

Failure guarantee of every method: a qemu-img that fails raises
:class:`~snapcore.errors.CommandError` whose ``stderr`` is qemu-img's message on one line (the
``qemu-img:`` prefix removed, several lines joined with ``; ``); output that cannot be parsed
raises :class:`~snapcore.errors.BackendError`. Methods that change an image say what is left
when they fail. Nothing here attributes errors to a disk: the plugin does that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from snapcore.errors import BackendError, CommandError
from snapcore.model import JSON
from snapcore.process import CommandRunner

#: The program run; found on ``PATH``.
PROGRAM: Final = "qemu-img"
#: The format of every image this backend writes.
QCOW2: Final = "qcow2"


def _int(data: Mapping[str, JSON], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key!r} is {value!r}, not an integer")
    return value


def _opt_int(data: Mapping[str, JSON], key: str) -> int | None:
    return _int(data, key) if key in data else None


def _str(data: Mapping[str, JSON], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} is {value!r}, not a string")
    return value


def _opt_str(data: Mapping[str, JSON], key: str) -> str | None:
    return _str(data, key) if key in data else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    """One internal snapshot of an image (QAPI ``SnapshotInfo``)."""

    #: ``id``: the number qemu-img gives it; ``snapshot -a`` matches ids before tags.
    id: str
    #: ``name``: its tag (for snapcore, the checkpoint name).
    name: str
    #: ``vm-state-size``: bytes of saved VM state (0 for a disk-only snapshot).
    vm_state_size: int
    #: ``date-sec``: creation time, seconds since the epoch.
    date_sec: int
    #: ``vm-clock-sec``/``vm-clock-nsec``: guest clock when taken, in nanoseconds.
    vm_clock_nsec: int

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> SnapshotInfo:
        """Parse one element of ``snapshots``.

        :raises KeyError, TypeError: when a required field is missing or mistyped.
        """
        return cls(
            id=_str(data, "id"),
            name=_str(data, "name"),
            vm_state_size=_int(data, "vm-state-size", 0),
            date_sec=_int(data, "date-sec", 0),
            vm_clock_nsec=_int(data, "vm-clock-sec", 0) * 1_000_000_000
            + _int(data, "vm-clock-nsec", 0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    """One image as ``qemu-img info --output=json`` describes it (QAPI ``ImageInfo``)."""

    #: ``filename``: the image as qemu-img opened it (backing images: resolved by qemu-img).
    filename: str
    #: ``format``: the image format (``qcow2``, ``raw``, ...).
    format: str
    #: ``virtual-size``: the size the guest sees, in bytes.
    virtual_size: int
    #: ``actual-size``: bytes the file occupies on the host, when known.
    actual_size: int | None = None
    #: ``dirty-flag``: the image was not closed cleanly (qcow2 with lazy refcounts).
    dirty: bool = False
    #: ``format-specific.data.corrupt``: qemu marked the qcow2 image corrupt.
    corrupt: bool = False
    #: ``backing-filename``: the backing file exactly as the image header records it.
    backing_filename: str | None = None
    #: ``backing-filename-format``: the backing file's format recorded in the header, if any.
    backing_format: str | None = None
    #: ``snapshots``: the image's internal snapshots (absent in the JSON when there are none).
    snapshots: tuple[SnapshotInfo, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> ImageInfo:
        """Parse one ``ImageInfo`` object.

        :raises KeyError, TypeError: when a required field is missing or mistyped.
        """
        specific = data.get("format-specific") or {}
        specific_data = specific.get("data") if isinstance(specific, dict) else None
        corrupt = bool(specific_data.get("corrupt")) if isinstance(specific_data, dict) else False
        snapshots = data.get("snapshots") or []
        if not isinstance(snapshots, list):
            raise TypeError(f"'snapshots' is {snapshots!r}, not a list")
        return cls(
            filename=_str(data, "filename"),
            format=_str(data, "format"),
            virtual_size=_int(data, "virtual-size"),
            actual_size=_opt_int(data, "actual-size"),
            dirty=bool(data.get("dirty-flag", False)),
            corrupt=corrupt,
            backing_filename=_opt_str(data, "backing-filename"),
            backing_format=_opt_str(data, "backing-filename-format"),
            snapshots=tuple(SnapshotInfo.from_json(s) for s in snapshots),
        )

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags of the internal snapshots, oldest first."""
        return tuple(s.name for s in self.snapshots)

    def snapshot(self, tag: str) -> SnapshotInfo | None:
        """The internal snapshot tagged *tag*, or ``None``."""
        for snap in self.snapshots:
            if snap.name == tag:
                return snap
        return None

    @property
    def backing_path(self) -> str | None:
        """The backing file as an absolute, normalised path; ``None`` when there is none.

        A relative backing file is relative to the directory of the image that names it (how
        QEMU resolves it). Protocol and ``json:`` backing files are returned unchanged.
        """
        backing = self.backing_filename
        if not backing:
            return None
        if backing.startswith("json:") or "://" in backing:
            return backing
        base = os.path.dirname(os.path.abspath(self.filename))
        return os.path.normpath(os.path.join(base, backing))


def _one_line(stderr: str) -> str:
    """qemu-img's message on one line, without its ``qemu-img:`` prefixes."""
    lines = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if line.startswith(f"{PROGRAM}:"):
            line = line[len(PROGRAM) + 1 :].strip()
        if line:
            lines.append(line)
    return "; ".join(lines)


class QemuImg:
    """Runs ``qemu-img`` subcommands through *run* and parses what they print.

    Metadata commands get the runner's default time limit; commands that copy image data
    (``commit``, safe ``rebase``, ``convert``) take as long as they need.
    """

    def __init__(self, run: CommandRunner, *, program: str = PROGRAM):
        self._run = run
        self._program = program

    def _call(self, args: Sequence[str], *, long: bool = False) -> str:
        argv = [self._program, *args]
        try:
            result = self._run(argv, timeout=None) if long else self._run(argv)
        except CommandError as exc:
            raise CommandError(exc.argv, exc.returncode, _one_line(exc.stderr)) from exc
        return result.stdout

    def _json(self, args: Sequence[str], path: str) -> JSON:
        out = self._call(args)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise BackendError(f"qemu-img info printed no JSON for {path}: {exc}") from exc

    # -- queries ----------------------------------------------------------------------------

    def info(self, path: str, *, force_share: bool = False) -> ImageInfo:
        """``qemu-img info --output=json PATH``: the image alone (its backing file is not opened).

        :param force_share: add ``-U`` to read an image another process holds open.
        """
        args = ["info", "--output=json", *(["-U"] if force_share else []), path]
        data = self._json(args, path)
        try:
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            return ImageInfo.from_json(data)
        except (KeyError, TypeError) as exc:
            raise BackendError(f"cannot parse qemu-img info for {path}: {exc}") from exc

    def chain(self, path: str, *, force_share: bool = False) -> tuple[ImageInfo, ...]:
        """``qemu-img info --backing-chain --output=json PATH``: the image, then its backing
        file, then that one's, to the base. Fails when a backing file cannot be opened.
        """
        args = ["info", "--backing-chain", "--output=json", *(["-U"] if force_share else [])]
        data = self._json([*args, path], path)
        try:
            if not isinstance(data, list) or not data:
                raise TypeError("expected a non-empty list")
            return tuple(ImageInfo.from_json(d) for d in data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"cannot parse qemu-img info for {path}: {exc}") from exc

    # -- internal snapshots -----------------------------------------------------------------

    def snapshot_create(self, path: str, tag: str) -> None:
        """``qemu-img snapshot -c TAG PATH``. On failure the image has no new snapshot."""
        self._call(["snapshot", "-c", tag, path])

    def snapshot_delete(self, path: str, tag: str) -> None:
        """``qemu-img snapshot -d TAG PATH`` (matches the tag, never an id)."""
        self._call(["snapshot", "-d", tag, path])

    def snapshot_apply(self, path: str, snapshot: SnapshotInfo) -> None:
        """``qemu-img snapshot -a ID PATH``: make the image's current data the snapshot's.

        The snapshot is named by its id: ``-a`` tries ids before tags, so a tag such as ``"2"``
        could otherwise select the snapshot whose id is 2.
        """
        self._call(["snapshot", "-a", snapshot.id, path])

    # -- images -----------------------------------------------------------------------------

    def create_overlay(
        self, path: str, *, backing: str, backing_format: str, size: int | None = None
    ) -> None:
        """``qemu-img create -f qcow2 -b BACKING -F FMT PATH``: an empty overlay of *backing*,
        of the same virtual size. Overwrites *path* if it exists; on failure *path* may be
        left half-written.

        :param size: the virtual size in bytes. Given, the overlay is made with ``-u`` and
            *backing* is not opened at all (a running QEMU holds it locked).
        """
        args = ["create", "-f", QCOW2, "-b", backing, "-F", backing_format]
        if size is not None:
            args.append("-u")
        args.append(path)
        if size is not None:
            args.append(str(size))
        self._call(args)

    def rebase(
        self, path: str, *, backing: str | None, backing_format: str | None, unsafe: bool
    ) -> None:
        """``qemu-img rebase [-u] -b BACKING [-F FMT] PATH``; *backing* ``None`` removes it.

        Safe mode (``unsafe=False``) first copies into *path* every cluster where the old and
        the new backing chains differ, then rewrites the header: if it fails the image reads
        as before, through the old backing file. It does not look at internal snapshots, whose
        unallocated clusters then read through the new backing file. ``-u`` only rewrites the
        header.
        """
        args = ["rebase", *(["-u"] if unsafe else []), "-b", backing or ""]
        if backing:
            if not backing_format:
                raise BackendError(f"rebase of {path} onto {backing} needs its format")
            args += ["-F", backing_format]
        self._call([*args, path], long=not unsafe)

    def commit(self, path: str) -> None:
        """``qemu-img commit -d PATH``: write the image's data into its backing file.

        ``-d`` leaves *path* as it is (not emptied), so running it again is harmless. On failure
        the backing file may hold part of the data; *path* is unchanged.
        """
        self._call(["commit", "-d", path], long=True)

    def convert(
        self,
        source: str,
        target: str,
        *,
        snapshot: str | None = None,
        backing: str | None = None,
        backing_format: str | None = None,
    ) -> None:
        """``qemu-img convert -O qcow2 [-l snapshot.name=TAG] [-B BACKING -F FMT] SRC DST``.

        With *snapshot*, the data copied is the internal snapshot's. With *backing*, *target*
        gets that backing file and only the clusters the source's own layer holds are copied
        (a shallow copy, correct when the source's backing file is *backing*). On failure
        *target* may be left half-written.
        """
        args = ["convert", "-O", QCOW2]
        if snapshot is not None:
            args += ["-l", f"snapshot.name={snapshot}"]
        if backing is not None:
            if not backing_format:
                raise BackendError(f"convert of {source} onto {backing} needs its format")
            args += ["-B", backing, "-F", backing_format]
        self._call([*args, source, target], long=True)
