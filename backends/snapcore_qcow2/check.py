"""Checking and repairing the qcow2 images of a disk with ``qemu-img check``.

``qemu-img check --output=json`` exits 0 (clean), 2 (corruptions: "errors"), 3 (leaked clusters
only) or 1 (the check could not be completed); its JSON says how many of each. Leaks waste
space but lose nothing, and ``-r leaks`` rebuilds the refcounts from the references, which also
clears the refcount errors a ``qemu-img snapshot -c`` killed half-way leaves (OFLAG_COPIED with
refcount 2, measured on QEMU 7.2). ``-r all`` is never run: it may choose the wrong fix for real
corruption, which is reported instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from snapcore.model import Disk, DiskSnapshot, SnapshotKind
from snapcore.process import CommandRunner

PROGRAM: Final = "qemu-img"
#: Seconds one ``qemu-img check`` may take (it reads the metadata only).
CHECK_TIMEOUT: Final = 600.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What ``qemu-img check`` found in one image."""

    path: str
    corruptions: int
    leaks: int
    #: what a repair fixed
    fixed: int
    incomplete: bool

    @property
    def clean(self) -> bool:
        return not (self.corruptions or self.leaks or self.incomplete)

    def problem(self) -> str:
        """One sentence for a report (the image is not clean)."""
        parts = []
        if self.corruptions:
            parts.append(f"{self.corruptions} errors (corruptions)")
        if self.leaks:
            parts.append(f"{self.leaks} leaked clusters")
        if self.incomplete:
            parts.append("the check could not be completed")
        return f"{self.path}: qemu-img check found " + " and ".join(parts)


def files_of(disk: Disk, known: Sequence[DiskSnapshot]) -> list[str]:
    """The qcow2 files of *disk* to check: its image and the files of its external snapshots
    that exist, each once."""
    files = [os.path.abspath(disk.path)]
    for snap in known:
        if snap.kind is SnapshotKind.EXTERNAL and os.path.isfile(snap.locator):
            path = os.path.abspath(snap.locator)
            if path not in files:
                files.append(path)
    return [f for f in files if os.path.isfile(f)]


def check(
    run: CommandRunner, path: str, *, force_share: bool = False, repair: bool = False
) -> CheckResult:
    """``qemu-img check`` of the qcow2 image at *path* (not its backing files); with *repair*,
    ``-r leaks`` first, and the result is what is left after the repair (qemu-img checks again
    after repairing).

    :raises CommandError: qemu-img could not be run.
    """
    argv = [PROGRAM, "check", "--output=json"]
    if force_share:
        argv.append("-U")
    if repair:
        argv += ["-r", "leaks"]
    # The image alone, its backing file not opened: each file of a chain is checked on its own,
    # and a chain that loops back on itself (hostile input) cannot make qemu-img recurse.
    spec = {"driver": "qcow2", "file": {"driver": "file", "filename": path}, "backing": None}
    result = run([*argv, "json:" + json.dumps(spec)], ok_codes=(0, 1, 2, 3), timeout=CHECK_TIMEOUT)
    try:
        data = json.loads(result.stdout)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return CheckResult(path=path, corruptions=0, leaks=0, fixed=0, incomplete=True)
    return CheckResult(
        path=path,
        corruptions=_count(data, "corruptions"),
        leaks=_count(data, "leaks"),
        fixed=_count(data, "leaks-fixed") + _count(data, "corruptions-fixed"),
        incomplete=result.returncode == 1 or _count(data, "check-errors") > 0,
    )


def _count(data: dict[str, object], key: str) -> int:
    value = data.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
