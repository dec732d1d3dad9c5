"""Live qcow2 (``snapcore_qcow2.live``) against real QEMU processes (TCG, no guest OS).

Every hook is called through a plugin manager, by keyword, with the context of a running
domain (``ctx.state`` RUNNING, ``ctx.service("qmp")`` a session with the test's QEMU). The
guest's disk I/O is played by HMP ``qemu-io`` on the guest's own block device; after QEMU stops,
images are read back with qemu-io and qemu-img directly, never through the plugin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from snapcore.context import HookContext
from snapcore.errors import BackendError, UnsupportedOperationError
from snapcore.model import (
    Disk,
    DiskSnapshot,
    Domain,
    DomainState,
    ProgressEvent,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.overlay import ExternalOverlay, ImageIdentityError
from snapcore.plugins import Plugins
from snapcore_qcow2.offline import TMP_SUFFIX
from snapcore_qemu.qmp import SERVICE, QMPCommandError, QMPSession
from tests.backends.conftest import QemuTools
from tests.qemuvm import QemuVM

pytestmark = [pytest.mark.integration, pytest.mark.live]

INTERNAL = SnapshotKind.INTERNAL
EXTERNAL = SnapshotKind.EXTERNAL
K64 = 65536


class Live:
    """A running QEMU with disks vda and vdb, and the hook context of its domain."""

    def __init__(self, tmp: Path, images: Path, qemu: QemuTools, plugins: Plugins):
        self.images = images
        self.qemu = qemu
        self.plugins = plugins
        self.paths = {v: qemu.create(images / f"{v}.qcow2") for v in ("vda", "vdb")}
        self.disks = {v: Disk(vdev=v, path=str(p), driver="qcow2") for v, p in self.paths.items()}
        self.vm = QemuVM(tmp, dict(self.paths))
        self.events: list[ProgressEvent] = []
        self.qmp: QMPSession | None = None

    def start(self) -> Live:
        self.vm.start()
        self.qmp = QMPSession(str(self.vm.qmp_path), domain="vm")
        return self

    def stop(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        self.vm.stop()

    def ctx(self, state: DomainState = DomainState.RUNNING) -> HookContext:
        return HookContext(
            domain=Domain(name="vm", disks=tuple(self.disks.values())),
            state=state,
            service=self.service,
            progress=self.events.append,
        )

    def service(self, name: str) -> object | None:
        """What the qemu hypervisor offers storage plugins: this test's session as "qmp"."""
        return self.qmp if name == SERVICE else None

    @property
    def session(self) -> QMPSession:
        assert self.qmp is not None
        return self.qmp

    def io(self, vdev: str, command: str) -> str:
        """qemu-io on the guest's device (QEMU takes one monitor client: ours)."""
        device = f"/machine/peripheral/{vdev}-dev/virtio-backend"
        out = str(
            self.session.execute(
                "human-monitor-command", {"command-line": f'qemu-io -d {device} "{command}"'}
            )
        )
        assert "verification failed" not in out, out
        assert "rror" not in out, out
        return out

    def write(self, vdev: str, pattern: int, offset: int = 0, length: int = K64) -> None:
        self.io(vdev, f"write -P {pattern:#04x} {offset} {length}")

    def reads(self, vdev: str, pattern: int, offset: int = 0, length: int = K64) -> None:
        self.io(vdev, f"read -P {pattern:#04x} {offset} {length}")

    def block(self) -> dict[str, dict[str, Any]]:
        """query-block, by the guest device's vdev: the active node and its file."""
        out = {}
        for b in self.session.execute("query-block"):
            vdev = b["qdev"].split("/")[3].removesuffix("-dev")
            out[vdev] = b["inserted"]
        return out

    def device(self, vdev: str) -> dict[str, Any]:
        """query-block's entry of *vdev* but for what changes without us: the file system's
        block count (``actual-size``) and the write cache mode (``cache.writeback``), which
        the firmware's virtio driver sets while it boots."""
        entry = self.block()[vdev]
        image = {k: v for k, v in entry["image"].items() if k != "actual-size"}
        cache = {k: v for k, v in entry["cache"].items() if k != "writeback"}
        return {**entry, "image": image, "cache": cache}

    def node_names(self) -> set[str]:
        return {n["node-name"] for n in self.session.execute("query-named-block-nodes")}

    def tags(self, vdev: str) -> list[str]:
        image = self.block()[vdev]["image"]
        return [s["name"] for s in image.get("snapshots", [])]

    # -- hooks ----------------------------------------------------------------------------

    def request(
        self, vdev: str, name: str, kind: SnapshotKind, target: str | None = None
    ) -> SnapshotRequest:
        return SnapshotRequest(disk=self.disks[vdev], name=name, kind=kind, target=target)

    def check(self, request: SnapshotRequest) -> list[str]:
        found = self.plugins.storage("qcow2").disk_snapshot_create_check(
            request=request, ctx=self.ctx()
        )
        assert isinstance(found, list)
        return found

    def create(self, *requests: SnapshotRequest) -> list[DiskSnapshot]:
        for request in requests:
            assert self.check(request) == []
        snaps = self.plugins.storage("qcow2").disk_snapshot_create_group(
            requests=requests, ctx=self.ctx()
        )
        assert isinstance(snaps, list)
        assert [s.vdev for s in snaps] == [r.disk.vdev for r in requests]
        return snaps

    def delete(self, snap: DiskSnapshot, others: Sequence[DiskSnapshot] = ()) -> None:
        kw = {"snapshot": snap, "others": list(others), "ctx": self.ctx()}
        assert self.plugins.storage("qcow2").disk_snapshot_delete_check(**kw) == []
        self.plugins.storage("qcow2").disk_snapshot_delete(**kw)

    def delete_blockers(self, snap: DiskSnapshot, others: Sequence[DiskSnapshot] = ()) -> list[str]:
        found = self.plugins.storage("qcow2").disk_snapshot_delete_check(
            snapshot=snap, others=list(others), ctx=self.ctx()
        )
        assert isinstance(found, list)
        return found


@pytest.fixture
def live(tmp_path: Path, images: Path, qemu: QemuTools, plugins: Plugins) -> Iterator[Live]:
    domain = Live(tmp_path, images, qemu, plugins)
    try:
        yield domain.start()
    finally:
        domain.stop()


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


NODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,30}")


# -- create -----------------------------------------------------------------------------------


def test_backend_info_says_live(plugins: Plugins) -> None:
    info = plugins.backend("qcow2")
    assert info is not None
    assert info.live


def test_internal_and_external_switch_in_one_transaction(live: Live, qemu: QemuTools) -> None:
    live.write("vda", 0x11)
    live.write("vdb", 0x11)
    before = live.block()
    target = str(live.images / "vdb.s1.qcow2")
    internal, external = live.create(
        live.request("vda", "s1", INTERNAL), live.request("vdb", "s1", EXTERNAL, target)
    )
    assert (internal.kind, internal.locator, internal.extra["tag"]) == (
        INTERNAL,
        str(live.paths["vda"]),
        "s1",
    )
    assert (external.kind, external.locator) == (EXTERNAL, target)
    node = str(external.extra["node"])
    assert NODE_NAME.fullmatch(node), node
    assert external.extra["base_node"] == "vdb"

    after = live.block()
    assert live.tags("vda") == ["s1"]
    assert after["vda"]["node-name"] == before["vda"]["node-name"] == "vda"
    assert after["vdb"]["node-name"] == node
    assert files(live.images) == ["vda.qcow2", "vdb.qcow2", "vdb.s1.qcow2"]
    live.write("vda", 0x22)
    live.write("vdb", 0x22)
    live.reads("vda", 0x22)
    live.reads("vdb", 0x22)
    live.stop()

    assert qemu.holds(live.paths["vda"], 0x22)
    assert qemu.raw(live.paths["vda"], snapshot="s1")[:K64] == b"\x11" * K64
    assert qemu.holds(target, 0x11)
    assert qemu.holds(live.paths["vdb"], 0x22)
    assert qemu.backing(live.paths["vdb"]) == target
    assert qemu.backing(target) is None


def test_external_snapshots_stack_and_the_paths_stay(live: Live, qemu: QemuTools) -> None:
    """Two external snapshots in a row: the second switches from an overlay the first made."""
    live.write("vda", 0x11, 0)
    [s1] = live.create(live.request("vda", "s1", EXTERNAL))
    live.write("vda", 0x22, K64)
    [s2] = live.create(live.request("vda", "s2", EXTERNAL))
    live.write("vda", 0x33, 2 * K64)
    assert s2.extra["base_node"] == s1.extra["node"]
    assert live.block()["vda"]["node-name"] == s2.extra["node"]
    live.stop()

    p = live.paths["vda"]
    assert qemu.backing(p) == s2.locator
    assert qemu.backing(s2.locator) == s1.locator
    for offset, pattern in ((0, 0x11), (K64, 0x22), (2 * K64, 0x33)):
        assert qemu.holds(p, pattern, offset)
    assert qemu.holds(s2.locator, 0x22, K64)
    assert qemu.holds(s2.locator, 0, 2 * K64)
    assert qemu.holds(s1.locator, 0, K64)


def test_transaction_failure_on_the_second_disk_leaves_the_first_untouched(
    live: Live, qemu: QemuTools
) -> None:
    live.write("vda", 0x11)
    requests = (live.request("vda", "s1", EXTERNAL), live.request("vdb", "s1", INTERNAL))
    for request in requests:
        assert live.check(request) == []
    # A tag that appears on vdb only after the checks: QEMU refuses vdb's action.
    live.session.execute("blockdev-snapshot-internal-sync", {"device": "vdb", "name": "s1"})
    before = (live.device("vda"), live.node_names(), files(live.images))
    with pytest.raises(QMPCommandError, match="already exists"):
        live.plugins.storage("qcow2").disk_snapshot_create_group(requests=requests, ctx=live.ctx())
    # vda's query-block entry is the same; no node, fd set or file was left
    assert (live.device("vda"), live.node_names(), files(live.images)) == before
    assert live.session.execute("query-fdsets") == []
    assert live.tags("vda") == []
    assert live.tags("vdb") == ["s1"]
    live.reads("vda", 0x11)
    live.stop()
    assert qemu.backing(live.paths["vda"]) is None
    assert qemu.holds(live.paths["vda"], 0x11)


def test_transaction_failure_undoes_internal_snapshots_of_the_first_disk(live: Live) -> None:
    requests = (live.request("vda", "s1", INTERNAL), live.request("vdb", "s1", INTERNAL))
    live.session.execute("blockdev-snapshot-internal-sync", {"device": "vdb", "name": "s1"})
    with pytest.raises(QMPCommandError):
        live.plugins.storage("qcow2").disk_snapshot_create_group(requests=requests, ctx=live.ctx())
    assert live.tags("vda") == []


def test_failure_after_the_switch_is_undone(
    live: Live, qemu: QemuTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename after the transaction fails for vdb: both disks are switched back."""
    live.write("vda", 0x11)
    live.write("vdb", 0x11)
    before = (live.block(), files(live.images))
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).endswith("vdb.qcow2") and str(src).endswith(TMP_SUFFIX):
            raise OSError(5, "Input/output error", src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    requests = (live.request("vda", "s1", EXTERNAL), live.request("vdb", "s1", EXTERNAL))
    with pytest.raises(BackendError, match="Input/output error"):
        live.plugins.storage("qcow2").disk_snapshot_create_group(requests=requests, ctx=live.ctx())
    monkeypatch.undo()
    after = live.block()
    assert {v: after[v]["node-name"] for v in after} == {"vda": "vda", "vdb": "vdb"}
    assert {v: after[v]["file"] for v in after} == {v: before[0][v]["file"] for v in after}
    assert files(live.images) == before[1]
    live.reads("vdb", 0x11)
    live.stop()
    for p in live.paths.values():
        assert qemu.backing(p) is None
        assert qemu.holds(p, 0x11)


def test_prepared_overlays_wait_while_the_guest_writes_then_switch(
    live: Live, qemu: QemuTools
) -> None:
    """prepare_group makes the external overlay and its node while the guest runs; the guest
    keeps writing to its image until create_group's transaction, whose instant the snapshot
    holds."""
    live.write("vda", 0x11)
    requests = (live.request("vda", "s1", EXTERNAL), live.request("vdb", "s1", INTERNAL))
    for request in requests:
        assert live.check(request) == []
    nodes = live.node_names()
    prepared = live.plugins.storage("qcow2").disk_snapshot_prepare_group(
        requests=requests, ctx=live.ctx()
    )
    assert prepared is not None
    [overlay] = [n for n in live.node_names() - nodes if not n.startswith("#")]  # not in use yet
    assert live.block()["vda"]["node-name"] == "vda"
    assert live.tags("vdb") == []
    live.write("vda", 0x22)  # after the preparation, before the switch: in the snapshot
    # the same requests, in another order: the snapshots come back in the caller's order
    internal, ext = live.plugins.storage("qcow2").disk_snapshot_create_group(
        requests=requests[::-1], prepared=prepared, ctx=live.ctx()
    )
    assert live.block()["vda"]["node-name"] == ext.extra["node"] == overlay
    assert live.tags("vdb") == ["s1"]
    assert (internal.vdev, internal.kind, ext.vdev, ext.kind) == ("vdb", INTERNAL, "vda", EXTERNAL)
    live.write("vda", 0x33)
    live.stop()
    assert qemu.holds(ext.locator, 0x22)
    assert qemu.holds(live.paths["vda"], 0x33)
    assert qemu.backing(live.paths["vda"]) == ext.locator


def test_prepared_then_aborted_leaves_nothing(live: Live, qemu: QemuTools) -> None:
    """The coordinator aborts a prepared checkpoint that never reached its pause (another
    driver failed): no node, fd set or file is left and the next checkpoint starts afresh."""
    live.write("vda", 0x11)
    before = (live.device("vda"), live.node_names(), files(live.images))
    requests = (live.request("vda", "s1", EXTERNAL), live.request("vdb", "s1", EXTERNAL))
    prepared = live.plugins.storage("qcow2").disk_snapshot_prepare_group(
        requests=requests, ctx=live.ctx()
    )
    assert prepared is not None
    assert files(live.images) != before[2]
    for request in reversed(requests):
        live.plugins.storage("qcow2").disk_snapshot_abort(
            request=request, prepared=prepared, ctx=live.ctx()
        )
    assert (live.device("vda"), live.node_names(), files(live.images)) == before
    assert live.session.execute("query-fdsets") == []
    [snap] = live.create(live.request("vda", "s1", EXTERNAL))  # not the aborted preparation
    live.write("vda", 0x22)
    live.stop()
    assert qemu.holds(snap.locator, 0x11)
    assert qemu.holds(live.paths["vda"], 0x22)


def test_prepared_switch_refused_when_the_disk_changed_meanwhile(
    live: Live, qemu: QemuTools, images: Path
) -> None:
    """Someone else switched vda to an overlay between the preparation and the pause: the
    prepared internal snapshot would land on the wrong image, so nothing is switched."""
    requests = (live.request("vda", "s1", INTERNAL), live.request("vdb", "s1", EXTERNAL))
    vdb_before, files_before = live.device("vdb"), files(live.images)
    prepared = live.plugins.storage("qcow2").disk_snapshot_prepare_group(
        requests=requests, ctx=live.ctx()
    )
    assert prepared is not None
    theirs = str(images / "theirs.qcow2")
    live.session.execute(
        "blockdev-snapshot-sync",
        {"node-name": "vda", "snapshot-file": theirs, "snapshot-node-name": "theirs"},
    )
    with pytest.raises(BackendError, match="vda changed from vda to theirs"):
        live.plugins.storage("qcow2").disk_snapshot_create_group(
            requests=requests, prepared=prepared, ctx=live.ctx()
        )
    assert live.block()["vda"]["node-name"] == "theirs"
    assert live.tags("vda") == []
    assert qemu.tags(live.paths["vda"]) == []
    assert live.device("vdb") == vdb_before
    assert files(live.images) == sorted([*files_before, "theirs.qcow2"])
    assert live.session.execute("query-fdsets") == []
    assert not any(n.startswith("snap-") for n in live.node_names())


def test_create_check_blockers(live: Live, images: Path, qemu: QemuTools) -> None:
    other = qemu.create(images / "other.qcow2")
    stray = Disk(vdev="vdc", path=str(other), driver="qcow2")
    [b] = live.check(SnapshotRequest(disk=stray, name="s1", kind=INTERNAL))
    assert "vdc" in b
    assert str(other) in b
    assert "does not have" in b

    live.session.execute("blockdev-snapshot-internal-sync", {"device": "vda", "name": "s1"})
    [b] = live.check(live.request("vda", "s1", INTERNAL))
    assert "already has an internal snapshot 's1'" in b
    (images / "taken.qcow2").write_bytes(b"")
    [b] = live.check(live.request("vda", "s2", EXTERNAL, str(images / "taken.qcow2")))
    assert "already exists" in b

    no_qmp = HookContext(domain=live.ctx().domain, state=DomainState.RUNNING)
    request = live.request("vda", "s2", INTERNAL)
    [b] = live.plugins.storage("qcow2").disk_snapshot_create_check(request=request, ctx=no_qmp)
    assert "QMP" in b
    assert "running" in b


def test_create_check_reads_the_chain_qemu_has_open(live: Live, qemu: QemuTools) -> None:
    """A tag in a backing image of the running disk blocks a new internal snapshot of that
    name (tags are unique along a chain), as QEMU's own view of the images shows."""
    live.session.execute("blockdev-snapshot-internal-sync", {"device": "vdb", "name": "t0"})
    [snap] = live.create(live.request("vdb", "e1", EXTERNAL))
    [b] = live.check(live.request("vdb", "t0", INTERNAL))
    assert f"its backing file {snap.locator} already has an internal snapshot 't0'" in b
    assert live.check(live.request("vdb", "t1", INTERNAL)) == []


# -- abort ------------------------------------------------------------------------------------


def test_abort_of_a_finished_external_create_puts_the_disk_back(
    live: Live, qemu: QemuTools
) -> None:
    live.write("vda", 0x11)
    before = (live.block()["vda"], files(live.images))
    request = live.request("vda", "s1", EXTERNAL)
    [snap] = live.create(request)
    live.write("vda", 0x22, K64)  # written after the switch: an abort keeps it
    live.session.execute("stop")  # the coordinator undoes with the guest paused
    ctx = live.ctx(DomainState.PAUSED)
    live.plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    top = live.block()["vda"]
    assert (top["node-name"], top["file"]) == (before[0]["node-name"], before[0]["file"])
    assert top["backing_file_depth"] == 0
    assert snap.extra["node"] not in live.node_names()
    assert files(live.images) == before[1]
    live.plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)  # again
    live.session.execute("cont")
    # QEMU closes a removed fd set of a paused guest later, once it runs (here: reconnecting)
    live.session.close()
    assert live.session.execute("query-fdsets") == []
    live.reads("vda", 0x11)
    live.reads("vda", 0x22, K64)
    # the same name can be used again
    [again] = live.create(request)
    assert again.locator == snap.locator
    live.stop()
    assert qemu.holds(snap.locator, 0x11)
    assert qemu.holds(snap.locator, 0x22, K64)


def test_recovery_that_says_shut_off_still_undoes_through_qemu(live: Live) -> None:
    """Crash recovery may call abort with the state "shut off" while QEMU runs on: the
    driver asks QEMU, and undoes through it rather than delete the overlay QEMU writes to."""
    live.write("vda", 0x11)
    request = live.request("vda", "s1", EXTERNAL)
    [snap] = live.create(request)
    live.write("vda", 0x22)
    ctx = live.ctx(DomainState.SHUTOFF)
    live.plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    assert live.block()["vda"]["node-name"] == "vda"
    assert not os.path.exists(snap.locator)
    live.reads("vda", 0x22)


def test_abort_of_an_internal_create_and_of_one_never_made(live: Live) -> None:
    request = live.request("vda", "s1", INTERNAL)
    live.create(request)
    ctx = live.ctx()
    live.plugins.storage("qcow2").disk_snapshot_abort(request=request, ctx=ctx)
    assert live.tags("vda") == []
    never = live.request("vdb", "s9", EXTERNAL)
    before = (live.node_names(), live.block()["vdb"]["file"], files(live.images))
    live.plugins.storage("qcow2").disk_snapshot_abort(request=never, ctx=ctx)
    assert (live.node_names(), live.block()["vdb"]["file"], files(live.images)) == before


# -- delete -----------------------------------------------------------------------------------


def test_live_delete_of_external_snapshots_streams_and_keeps_every_data(
    live: Live, qemu: QemuTools
) -> None:
    live.write("vda", 0x11, 0)
    [s1] = live.create(live.request("vda", "s1", EXTERNAL))
    live.write("vda", 0x22, K64)
    [s2] = live.create(live.request("vda", "s2", EXTERNAL))
    live.write("vda", 0x33, 2 * K64)

    live.delete(s1, [s2])  # s1's image lies under s2's: streamed into it
    assert not os.path.exists(s1.locator)
    steps = [e for e in live.events if e.step == "delete" and e.unit == "bytes"]
    assert steps
    assert steps[-1].total > 0
    assert steps[-1].done == steps[-1].total
    live.reads("vda", 0x11, 0)
    live.reads("vda", 0x22, K64)
    live.reads("vda", 0x33, 2 * K64)
    live.write("vda", 0x44, 3 * K64)  # the guest keeps writing

    live.delete(s2)  # now the bottom image: streamed into the active overlay
    assert files(live.images) == ["vda.qcow2", "vdb.qcow2"]
    assert live.block()["vda"]["backing_file_depth"] == 0
    live.stop()

    p = live.paths["vda"]
    assert qemu.backing(p) is None
    for offset, pattern in ((0, 0x11), (K64, 0x22), (2 * K64, 0x33), (3 * K64, 0x44)):
        assert qemu.holds(p, pattern, offset)


def test_live_delete_of_the_older_snapshot_keeps_the_newer_ones_data(
    live: Live, qemu: QemuTools
) -> None:
    live.write("vda", 0x11, 0)
    [s1] = live.create(live.request("vda", "s1", EXTERNAL))
    live.write("vda", 0x22, K64)
    [s2] = live.create(live.request("vda", "s2", EXTERNAL))
    live.write("vda", 0x33, 2 * K64)
    expected = live.images / "s2-before.raw"
    qemu.img("convert", "-U", "-O", "raw", s2.locator, str(expected))
    live.delete(s1, [s2])
    live.stop()
    assert qemu.backing(s2.locator) is None
    assert qemu.backing(live.paths["vda"]) == s2.locator
    qemu.img("compare", "-f", "qcow2", "-F", "raw", s2.locator, str(expected))
    assert qemu.holds(live.paths["vda"], 0x33, 2 * K64)


def test_live_delete_of_internal_snapshots(live: Live, qemu: QemuTools) -> None:
    live.write("vda", 0x11)
    [s1] = live.create(live.request("vda", "s1", INTERNAL))
    live.write("vda", 0x22)
    live.delete(s1)
    assert live.tags("vda") == []
    live.reads("vda", 0x22)
    live.delete(s1)  # already gone: done

    # an internal snapshot moved into a backing image by an external one is out of reach
    [s2] = live.create(live.request("vda", "s2", INTERNAL))
    [s3] = live.create(live.request("vda", "s3", EXTERNAL))
    [b] = live.delete_blockers(s2, [s3])
    assert "backing image" in b
    assert "stopped" in b
    # ... and the external snapshot holding it would lose it when merged live
    [b] = live.delete_blockers(s3, [s2])
    assert "'s2'" in b
    live.stop()
    assert qemu.tags(s3.locator) == ["s2"]
    assert qemu.holds(live.paths["vda"], 0x22)


def test_delete_into_the_image_qemu_opened_by_an_old_name_is_refused(
    tmp_path: Path, images: Path, qemu: QemuTools, plugins: Plugins
) -> None:
    """vda.qcow2 already has an external snapshot s0 when QEMU starts; the first live
    external snapshot s1 moves QEMU's own node to s1's file, which QEMU still names
    vda.qcow2. Merging s0 into it live would make QEMU reopen it by that name: refused."""
    domain = Live(tmp_path, images, qemu, plugins)
    p = domain.paths["vda"]
    qemu.write(p, 0x11)
    offline = HookContext(domain=domain.ctx().domain, state=DomainState.SHUTOFF)
    s0 = plugins.storage("qcow2").disk_snapshot_create(
        request=domain.request("vda", "s0", EXTERNAL), ctx=offline
    )
    assert isinstance(s0, DiskSnapshot)
    try:
        domain.start()
        [s1] = domain.create(domain.request("vda", "s1", EXTERNAL))
        [b] = domain.delete_blockers(s0, [s1])
        assert "a name that now belongs to another image" in b
        domain.delete(s1, [s0])  # the newer one merges fine
    finally:
        domain.stop()
    assert qemu.backing(p) == s0.locator
    assert qemu.holds(p, 0x11)


# -- revert -----------------------------------------------------------------------------------


def test_revert_check_reads_beside_qemu_and_revert_needs_it_stopped(
    live: Live, qemu: QemuTools
) -> None:
    live.write("vda", 0x11)
    [s1] = live.create(live.request("vda", "s1", EXTERNAL))
    [s2] = live.create(live.request("vdb", "s2", INTERNAL))
    ctx = live.ctx()
    for snap in (s1, s2):
        kw = {"snapshot": snap, "others": [], "ctx": ctx}
        assert live.plugins.storage("qcow2").disk_snapshot_revert_check(**kw) == []
        with pytest.raises(UnsupportedOperationError, match="stopped"):
            live.plugins.storage("qcow2").disk_snapshot_revert(**kw)
    live.write("vda", 0x22)
    live.stop()
    stopped = HookContext(domain=ctx.domain, state=DomainState.SHUTOFF)
    live.plugins.storage("qcow2").disk_snapshot_revert(snapshot=s1, others=[], ctx=stopped)
    assert qemu.holds(live.paths["vda"], 0x11)


def test_target_in_another_directory_keeps_a_relative_backing_file_resolvable(
    tmp_path: Path, images: Path, qemu: QemuTools, plugins: Plugins
) -> None:
    """vda.qcow2 names its backing file relatively; its snapshot goes to a subdirectory, so
    QEMU rewrites that name as an absolute path before the image moves (qemu-img may not)."""
    base = qemu.create(images / "base.qcow2")
    qemu.write(base, 0x11)
    domain = Live(tmp_path, images, qemu, plugins)
    p = domain.paths["vda"]
    p.unlink()
    qemu.img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(p))
    (images / "snaps").mkdir()
    target = str(images / "snaps" / "vda.s1.qcow2")
    try:
        domain.start()
        domain.write("vda", 0x22, K64)
        [snap] = domain.create(domain.request("vda", "s1", EXTERNAL, target))
        domain.write("vda", 0x33, 2 * K64)
    finally:
        domain.stop()
    assert qemu.backing(p) == target
    assert qemu.backing(target) == str(base)
    assert snap.locator == target
    for offset, pattern in ((0, 0x11), (K64, 0x22), (2 * K64, 0x33)):
        assert qemu.holds(p, pattern, offset)
    assert qemu.holds(target, 0, 2 * K64)


def test_live_delete_of_a_snapshot_left_off_the_chain_by_a_revert(
    tmp_path: Path, images: Path, qemu: QemuTools, plugins: Plugins
) -> None:
    """s1 and s2 were taken, the domain reverted to s1 and started again: s2's image is on a
    branch QEMU does not have open, and is deleted with qemu-img beside the running QEMU."""
    domain = Live(tmp_path, images, qemu, plugins)
    p = domain.paths["vda"]
    offline = HookContext(domain=domain.ctx().domain, state=DomainState.SHUTOFF)
    qemu.write(p, 0x11)
    s1 = plugins.storage("qcow2").disk_snapshot_create(
        request=domain.request("vda", "s1", EXTERNAL), ctx=offline
    )
    qemu.write(p, 0x22)
    s2 = plugins.storage("qcow2").disk_snapshot_create(
        request=domain.request("vda", "s2", EXTERNAL), ctx=offline
    )
    assert isinstance(s1, DiskSnapshot)
    assert isinstance(s2, DiskSnapshot)
    plugins.storage("qcow2").disk_snapshot_revert(snapshot=s1, others=[s2], ctx=offline)
    try:
        domain.start()
        domain.write("vda", 0x33, K64)
        domain.delete(s2, [s1])
        assert not os.path.exists(s2.locator)
        domain.reads("vda", 0x33, K64)
    finally:
        domain.stop()
    assert qemu.backing(p) == s1.locator
    assert qemu.holds(p, 0x11)


# -- the file procedure and the prepared switches ----------------------------------------------


def test_a_live_external_snapshot_is_never_the_live_disks_inode(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the switch the disk's path and the snapshot's file are two inodes, the snapshot's
    the one the disk had; when that check fails (ImageIdentityError, as when another command
    replaced a name meanwhile), both disks are switched back and nothing is left."""
    live.write("vda", 0x11)
    inode = os.stat(live.paths["vda"]).st_ino
    [snap] = live.create(live.request("vda", "s1", EXTERNAL))
    assert os.stat(snap.locator).st_ino == inode
    assert os.stat(live.paths["vda"]).st_ino != inode
    assert not [n for n in files(live.images) if "snapcore" in n]

    before = (live.block(), files(live.images))

    def verify(self: ExternalOverlay) -> None:
        raise ImageIdentityError("injected", path=self.path, target=self.target)

    monkeypatch.setattr(ExternalOverlay, "verify", verify)
    requests = (live.request("vda", "s2", EXTERNAL), live.request("vdb", "s2", EXTERNAL))
    with pytest.raises(ImageIdentityError, match="injected"):
        live.plugins.storage("qcow2").disk_snapshot_create_group(requests=requests, ctx=live.ctx())
    monkeypatch.undo()
    after = live.block()
    assert {v: after[v]["node-name"] for v in after} == {
        v: before[0][v]["node-name"] for v in after
    }
    assert files(live.images) == before[1]
    live.reads("vda", 0x11)
