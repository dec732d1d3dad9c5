"""The two engines the vhd backend changes VHD files with: ``vhd-util`` when it is installed,
the native engine (:mod:`snapcore_vhd.ops`) otherwise. Both do the same six things with the same
results on disk; the backend never needs to know which one runs.

Reading the tree of a disk (which file is whose parent) is always done natively and read-only:
it needs no tool and is the same whichever engine changes the files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Final, Protocol

from snapcore.errors import BackendError, CommandError
from snapcore.process import CommandRunner
from snapcore_vhd import ops
from snapcore_vhd.names import DRIVER
from snapcore_vhd.vhd_util import PROGRAM, VhdUtil

NATIVE: Final = "native"
VHD_UTIL: Final = "vhd-util"
#: Values of the ``engine`` disk option.
ENGINE_CHOICES: Final = ("auto", NATIVE, VHD_UTIL)

MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """What the backend asks about one VHD (``vhd-util query -v -s -p -f -d``)."""

    virtual_size: int
    physical_size: int
    parent: str | None
    hidden: bool
    depth: int


class Engine(Protocol):
    """Changes VHD files; every method raises on failure and leaves the files valid."""

    name: str

    def snapshot(self, child: str, parent: str) -> None:
        """Create empty differencing *child* over *parent* (which is used even if empty)."""

    def query(self, path: str) -> NodeInfo:
        """Sizes, parent, hidden flag and chain depth of *path*."""

    def coalesce(self, child: str) -> int:
        """Write *child*'s sectors into its parent; the number of sectors."""

    def set_hidden(self, path: str, hidden: bool) -> None:
        """Set blktap's hidden flag."""

    def set_parent(self, child: str, parent: str) -> None:
        """Relink *child* to *parent* (UUID, name, timestamp, locators)."""

    def check(self, path: str) -> list[str]:
        """What is wrong with *path* and its parents, or ``[]``."""


class NativeEngine:
    """The engine of this package (standard library only)."""

    name = NATIVE

    def snapshot(self, child: str, parent: str) -> None:
        ops.snapshot(child, parent)

    def query(self, path: str) -> NodeInfo:
        q = ops.query(path)
        assert q.depth is not None
        return NodeInfo(
            virtual_size=q.virtual_size,
            physical_size=q.physical_size,
            parent=q.parent,
            hidden=q.hidden,
            depth=q.depth,
        )

    def coalesce(self, child: str) -> int:
        return ops.coalesce(child)

    def set_hidden(self, path: str, hidden: bool) -> None:
        ops.set_hidden(path, hidden)

    def set_parent(self, child: str, parent: str) -> None:
        ops.set_parent(child, parent)

    def check(self, path: str) -> list[str]:
        return ops.check(path, parents=True)


class VhdUtilEngine:
    """blktap's ``vhd-util``, through the hook context's command runner."""

    name = VHD_UTIL

    def __init__(self, run: CommandRunner, program: str = PROGRAM):
        self.tool = VhdUtil(run, program)

    def snapshot(self, child: str, parent: str) -> None:
        self.tool.snapshot(child, parent)

    def query(self, path: str) -> NodeInfo:
        q = self.tool.query(path)
        return NodeInfo(
            virtual_size=q.virtual_mib * MiB,
            physical_size=q.physical_size,
            parent=q.parent,
            hidden=q.hidden,
            depth=q.depth,
        )

    def coalesce(self, child: str) -> int:
        return self.tool.coalesce(child)

    def set_hidden(self, path: str, hidden: bool) -> None:
        self.tool.set_hidden(path, hidden)

    def set_parent(self, child: str, parent: str) -> None:
        """``vhd-util modify -n CHILD -p PARENT``, verified: blktap rewrites the locators in
        place, one after the other, and a failure half way leaves *child* pointing nowhere
        consistent. So *child*'s metadata is copied first and ``vhd-util check -n CHILD`` run
        after; if the modify or the check fails, the copy is written back (*child* is exactly
        as before) and :class:`~snapcore.errors.BackendError` raised. Its message does not
        rely on vhd-util's words (it may print none)."""
        saved = ops.save_metadata(child)
        problems: list[str] = []
        try:
            self.tool.set_parent(child, parent)
            problems = self.tool.check(child)
        except CommandError as exc:
            problems = [f"{PROGRAM} modify exited with status {exc.returncode}"]
        if not problems:
            return
        ops.restore_metadata(saved)
        raise BackendError(
            f"{PROGRAM} could not relink {child} to {parent} ({'; '.join(problems)}); "
            f"{child} was put back as it was",
            driver=DRIVER,
        )

    def check(self, path: str) -> list[str]:
        return self.tool.check(path, parents=True)


def select(run: CommandRunner, choice: str = "auto") -> Engine:
    """The engine for *choice*: ``vhd-util`` when asked or (``auto``) when it is on ``PATH``,
    else the native one.

    :raises ValueError: an unknown choice, or ``vhd-util`` asked for but not installed.
    """
    if choice not in ENGINE_CHOICES:
        raise ValueError(f"engine {choice!r} is not one of {', '.join(ENGINE_CHOICES)}")
    if choice == NATIVE:
        return NativeEngine()
    found = shutil.which(PROGRAM)
    if found is None:
        if choice == VHD_UTIL:
            raise ValueError(f"engine {VHD_UTIL} was asked for, but {PROGRAM} is not on PATH")
        return NativeEngine()
    return VhdUtilEngine(run)
