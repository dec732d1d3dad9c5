"""Broken copies of the example plugin, examples/snapcore-rawcopy.

:class:`Rawcopy` is the example plugin as an object whose hooks are the module's own functions;
each mutant overrides one hook with a broken version. The example is imported as installed, or
from its source tree (as tests/test_conformance_rawcopy.py does).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from snapcore.context import HookContext
from snapcore.hookspecs import hookimpl
from snapcore.model import Disk, DiskSnapshot, SnapshotRequest
from snapcore.testing import InstalledBackendConformance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "snapcore-rawcopy"
try:
    rawcopy: Any = importlib.import_module("snapcore_rawcopy.plugin")
except ModuleNotFoundError:
    sys.path.append(str(EXAMPLE))
    rawcopy = importlib.import_module("snapcore_rawcopy.plugin")

_HOOKS = [
    name
    for name in dir(rawcopy)
    if name.startswith(("backend_", "disk_")) and hasattr(getattr(rawcopy, name), "snapcore_impl")
]


class Rawcopy:
    """The example plugin, hook for hook."""

    SNAPCORE_HOOK_API = rawcopy.SNAPCORE_HOOK_API
    locals().update({name: staticmethod(getattr(rawcopy, name)) for name in _HOOKS})


class RawcopyConformance(InstalledBackendConformance):
    """The conformance suite for rawcopy mutants (on the suite's raw-file disks, ``*.raw``);
    subclasses set ``plugin``."""

    driver = "rawcopy"
    disk_size = 1024 * 1024
    own_samples = frozenset({"raw"})


# -- mutants ---------------------------------------------------------------------------------------


class ClaimsEverything(Rawcopy):
    """disk_claim claims every file, whatever its format."""

    @hookimpl
    def disk_claim(self, disk: Disk) -> str | None:
        return "rawcopy"


class ClaimAnswersTrue(Rawcopy):
    """disk_claim answers ``True``/``None`` instead of the driver name."""

    @hookimpl
    def disk_claim(self, disk: Disk) -> object:
        return True if disk.path.endswith(".raw") else None


class CreateCheckMakesDir(Rawcopy):
    """The create check makes the snapshot directory (to test that it can write there)."""

    @hookimpl
    def disk_snapshot_create_check(self, request: SnapshotRequest, ctx: HookContext) -> list[str]:
        rawcopy.snapshot_dir(request.disk.path).mkdir(exist_ok=True)
        return list(rawcopy.disk_snapshot_create_check(request=request, ctx=ctx))


class PlanOnTwoLines(Rawcopy):
    """The plan is two lines, not one."""

    @hookimpl
    def disk_snapshot_plan(self, request: SnapshotRequest) -> str:
        return f"copy {request.disk.path}\nthen rename it"


class RevertUnlinkThenRename(Rawcopy):
    """Revert copies the snapshot aside, removes the disk and renames the copy into place:
    two steps where os.replace is one, so a failure in between leaves no disk."""

    @hookimpl
    def disk_snapshot_revert(self, snapshot: DiskSnapshot, disk: Disk, ctx: HookContext) -> bool:
        tmp = Path(disk.path).with_name(".revert.tmp")
        rawcopy._copy(ctx, Path(snapshot.locator), tmp, disk.vdev)
        os.unlink(disk.path)
        os.rename(tmp, disk.path)
        return True


class CreateLeavesPartial(Rawcopy):
    """A create that fails after the copy leaves the partial copy behind; abort removes only
    the finished snapshot file."""

    @hookimpl
    def disk_snapshot_create(self, request: SnapshotRequest, ctx: HookContext) -> DiskSnapshot:
        disk = request.disk
        final = rawcopy.snapshot_file(disk.path, request.name)
        partial = final.with_name(f"{request.name}.partial")
        final.parent.mkdir(exist_ok=True)
        rawcopy._copy(ctx, Path(disk.path), partial, disk.vdev)
        partial.rename(final)
        return rawcopy._snapshot(disk, request.name, final, final.stat())

    @hookimpl
    def disk_snapshot_abort(self, request: SnapshotRequest) -> bool:
        rawcopy.snapshot_file(request.disk.path, request.name).unlink(missing_ok=True)
        return True


class RevertTruncatesThenCopies(Rawcopy):
    """Revert copies the disk aside, empties the disk and copies the snapshot into it, putting
    the copy back if anything fails: right under every failure that raises, but a crash after
    the truncate leaves the disk empty."""

    @hookimpl
    def disk_snapshot_revert(self, snapshot: DiskSnapshot, disk: Disk, ctx: HookContext) -> bool:
        backup = rawcopy._revert_file(disk.path)
        rawcopy._copy(ctx, Path(disk.path), backup, disk.vdev)
        try:
            os.truncate(disk.path, 0)
            ctx.run(["cp", "--sparse=always", "--", snapshot.locator, disk.path])
        except BaseException:
            os.replace(backup, disk.path)
            raise
        os.unlink(backup)
        return True
