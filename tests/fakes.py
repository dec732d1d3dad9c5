"""Test plugins for the coordinator's own tests (not stand-ins for any real tool).

``FileBackend`` is a real, minimal storage backend: a disk is a regular file and a snapshot is a
copy of it, so data round trips can be checked by reading files back. It can be told to fail or
to kill the process at a chosen hook and disk, to test undo and crash recovery.
``FakeHypervisor`` records pause/resume/memory calls for a domain said to be running; there is
no real process behind it, which is what the ``qemu`` plugin will provide later.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from snapcore import (
    BackendInfo,
    Disk,
    DiskSnapshot,
    DomainState,
    HookContext,
    HypervisorInfo,
    MemoryImage,
    SnapshotKind,
    SnapshotRequest,
    hookimpl,
)
from snapcore.errors import BackendError


class FileBackend:
    """Driver ``files``: snapshot = a copy at ``<path>.<name>.snap``."""

    driver = "files"

    def __init__(self, timeline: list[str] | None = None) -> None:
        self.timeline = timeline if timeline is not None else []
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], str] = {}  # (hook, vdev) -> message
        self.crash: set[tuple[str, str]] = set()  # (hook, vdev) -> os._exit
        self.blockers: dict[tuple[str, str], list[str]] = {}
        self.actions: dict[tuple[str, str], Callable[[], None]] = {}  # run at (hook, vdev)
        self._lock = threading.Lock()

    def _enter(self, hook: str, vdev: str) -> None:
        with self._lock:
            self.calls.append((hook, vdev))
            self.timeline.append(f"{hook} {vdev}")
        if (hook, vdev) in self.actions:
            self.actions[hook, vdev]()
        if (hook, vdev) in self.crash:
            os._exit(9)
        if (hook, vdev) in self.fail:
            raise BackendError(self.fail[hook, vdev], driver=self.driver, vdev=vdev)

    @staticmethod
    def snap_path(path: str, name: str) -> str:
        return f"{path}.{name}.snap"

    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            driver=self.driver,
            kinds=frozenset({SnapshotKind.NATIVE}),
            default_kind=SnapshotKind.NATIVE,
            live=True,
        )

    @hookimpl
    def disk_claim(self, disk: Disk) -> str | None:
        return self.driver if disk.path.endswith(".img") else None

    @hookimpl
    def disk_snapshot_create_check(self, request: SnapshotRequest) -> list[str] | None:
        if request.disk.driver != self.driver:
            return None
        found = list(self.blockers.get(("create", request.disk.vdev), []))
        if os.path.exists(self.snap_path(request.disk.path, request.name)):
            found.append("snapshot file exists")
        return found

    @hookimpl
    def disk_snapshot_create(self, request: SnapshotRequest) -> DiskSnapshot | None:
        if request.disk.driver != self.driver:
            return None
        self._enter("create", request.disk.vdev)
        target = self.snap_path(request.disk.path, request.name)
        shutil.copyfile(request.disk.path, target)
        return DiskSnapshot(
            vdev=request.disk.vdev,
            path=request.disk.path,
            driver=self.driver,
            kind=SnapshotKind.NATIVE,
            name=request.name,
            locator=target,
            size=os.path.getsize(target),
        )

    @hookimpl
    def disk_snapshot_abort(self, request: SnapshotRequest) -> bool | None:
        if request.disk.driver != self.driver:
            return None
        self._enter("abort", request.disk.vdev)
        Path(self.snap_path(request.disk.path, request.name)).unlink(missing_ok=True)
        return True

    @hookimpl
    def disk_snapshot_delete_check(self, snapshot: DiskSnapshot) -> list[str] | None:
        if snapshot.driver != self.driver:
            return None
        return list(self.blockers.get(("delete", snapshot.vdev), []))

    @hookimpl
    def disk_snapshot_delete(self, snapshot: DiskSnapshot) -> bool | None:
        if snapshot.driver != self.driver:
            return None
        self._enter("delete", snapshot.vdev)
        Path(snapshot.locator).unlink(missing_ok=True)
        return True

    @hookimpl
    def disk_snapshot_revert_check(self, snapshot: DiskSnapshot) -> list[str] | None:
        if snapshot.driver != self.driver:
            return None
        found = list(self.blockers.get(("revert", snapshot.vdev), []))
        if not os.path.exists(snapshot.locator):
            found.append("snapshot file is gone")
        return found

    @hookimpl
    def disk_snapshot_revert(self, snapshot: DiskSnapshot) -> bool | None:
        if snapshot.driver != self.driver:
            return None
        self._enter("revert", snapshot.vdev)
        shutil.copyfile(snapshot.locator, snapshot.path + ".tmp")
        os.replace(snapshot.path + ".tmp", snapshot.path)
        return True

    @hookimpl
    def disk_snapshot_list(
        self, disk: Disk, known: Sequence[DiskSnapshot]
    ) -> list[DiskSnapshot] | None:
        if disk.driver != self.driver:
            return None
        return [s for s in known if os.path.exists(s.locator)]


class FakeHypervisor:
    """Hypervisor ``fakehv``: a domain whose state the test sets; records every call."""

    def __init__(
        self, state: DomainState = DomainState.RUNNING, timeline: list[str] | None = None
    ) -> None:
        self.state = state
        self.timeline = timeline if timeline is not None else []
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        self.timeline.append(name)
        if name in self.fail:
            raise BackendError(f"{name} failed", driver="fakehv")

    @hookimpl
    def hypervisor_info(self) -> HypervisorInfo:
        return HypervisorInfo(name="fakehv", memory=True)

    @hookimpl
    def domain_state(self, ctx: HookContext) -> DomainState | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        return self.state

    @hookimpl
    def domain_quiesce(self, ctx: HookContext) -> bool | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        if not ctx.domain.hypervisor_table.get("guest_agent"):  # as qemu: only with an agent
            return False
        self._enter("quiesce")
        return True

    @hookimpl
    def domain_thaw(self, ctx: HookContext) -> bool | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        self._enter("thaw")
        return True

    @hookimpl
    def domain_pause(self, ctx: HookContext) -> bool | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        self._enter("pause")
        self.state = DomainState.PAUSED
        return True

    @hookimpl
    def domain_resume(self, ctx: HookContext) -> bool | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        self._enter("resume")
        self.state = DomainState.RUNNING
        return True

    @hookimpl
    def domain_stop(self, ctx: HookContext) -> bool | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        self._enter("stop")
        self.state = DomainState.SHUTOFF
        return True

    @hookimpl
    def domain_memory_save(self, path: str, ctx: HookContext) -> MemoryImage | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        self._enter("memory_save")
        Path(path).write_bytes(b"RAM")
        self.state = DomainState.PAUSED
        return MemoryImage(path=path, size=3, format="fake")

    @hookimpl
    def domain_memory_restore(
        self, image: MemoryImage, state: DomainState, ctx: HookContext
    ) -> bool | None:
        if ctx.domain.hypervisor != "fakehv":
            return None
        self._enter(f"memory_restore:{Path(image.path).read_bytes().decode()}:{state}")
        self.state = state
        return True
