"""The ``flaky`` storage plugin: raw files ``*.flaky`` snapshotted by copying them, which breaks
one hook's contract when ``$FLAKY_MISBEHAVE`` says so.

``FLAKY_MISBEHAVE=HOOK=HOW`` makes hook ``HOOK`` (``disk_snapshot_create``, say) misbehave
``HOW``: return a ``dict``, a ``str``, ``True``, ``False`` or ``None`` in place of its result,
raise ``SystemExit(7)`` (``exit``) or ``ValueError`` (``raise``), or sleep ``sleep:SECONDS``
first (writing ``$FLAKY_MARK``, when set, as it starts). Every other hook keeps its contract.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Final

from snapcore.hookspecs import hookimpl
from snapcore.model import BackendInfo, Disk, DiskSnapshot, SnapshotKind, SnapshotRequest

SNAPCORE_HOOK_API: Final = (2, 0)
DRIVER: Final = "flaky"
ENV: Final = "FLAKY_MISBEHAVE"

_ANSWERS: Final[dict[str, object]] = {
    "dict": {"vdev": "vdb"},
    "str": "blocked by something",
    "true": True,
    "false": False,
    "none": None,
}


class _Keep(Exception):
    """Raised inside :func:`_misbehave` when the hook is to keep its contract."""


def _misbehave(hook: str) -> object:
    """What the hook is to return instead of its result; raises :class:`_Keep` when none."""
    wanted, _, how = os.environ.get(ENV, "").partition("=")
    if wanted != hook:
        raise _Keep
    if how.startswith("sleep:"):
        mark = os.environ.get("FLAKY_MARK")
        if mark:
            Path(mark).write_text(hook)
        time.sleep(float(how.removeprefix("sleep:")))
        raise _Keep
    if how == "exit":
        raise SystemExit(7)
    if how == "raise":
        raise ValueError("something went wrong inside the plugin")
    return _ANSWERS[how]


def _snapshot_file(path: str, name: str) -> Path:
    return Path(f"{path}.{name}.snap")


def _snapshot(disk: Disk, name: str) -> DiskSnapshot:
    return DiskSnapshot(
        vdev=disk.vdev,
        path=disk.path,
        driver=DRIVER,
        kind=SnapshotKind.NATIVE,
        name=name,
        locator=str(_snapshot_file(disk.path, name)),
    )


@hookimpl
def backend_info() -> BackendInfo:
    return BackendInfo(
        driver=DRIVER,
        kinds=frozenset({SnapshotKind.NATIVE}),
        default_kind=SnapshotKind.NATIVE,
    )


@hookimpl
def disk_claim(disk: Disk) -> str | None:
    return DRIVER if disk.path.endswith(".flaky") else None


@hookimpl
def disk_snapshot_create_check(request: SnapshotRequest) -> object:
    try:
        return _misbehave("disk_snapshot_create_check")
    except _Keep:
        exists = _snapshot_file(request.disk.path, request.name).exists()
        return ["the snapshot file exists"] if exists else []


@hookimpl
def disk_snapshot_create(request: SnapshotRequest) -> object:
    try:
        return _misbehave("disk_snapshot_create")
    except _Keep:
        shutil.copyfile(request.disk.path, _snapshot_file(request.disk.path, request.name))
        return _snapshot(request.disk, request.name)


@hookimpl
def disk_snapshot_abort(request: SnapshotRequest) -> object:
    try:
        return _misbehave("disk_snapshot_abort")
    except _Keep:
        _snapshot_file(request.disk.path, request.name).unlink(missing_ok=True)
        return True


@hookimpl
def disk_snapshot_delete_check() -> list[str]:
    return []


@hookimpl
def disk_snapshot_delete(snapshot: DiskSnapshot) -> object:
    try:
        return _misbehave("disk_snapshot_delete")
    except _Keep:
        Path(snapshot.locator).unlink(missing_ok=True)
        return True


@hookimpl
def disk_snapshot_revert_check(snapshot: DiskSnapshot) -> list[str]:
    return [] if Path(snapshot.locator).exists() else ["the snapshot file is gone"]


@hookimpl
def disk_snapshot_revert(snapshot: DiskSnapshot, disk: Disk) -> object:
    try:
        return _misbehave("disk_snapshot_revert")
    except _Keep:
        tmp = Path(f"{disk.path}.revert")
        shutil.copyfile(snapshot.locator, tmp)
        os.replace(tmp, disk.path)
        return True


@hookimpl
def disk_snapshot_list(disk: Disk, known: list[DiskSnapshot]) -> object:
    try:
        return _misbehave("disk_snapshot_list")
    except _Keep:
        return [s for s in known if Path(s.locator).exists()]
