"""Memory images in QEMU's mapped-ram format, against real QEMU processes (TCG, no guest OS).

Where the QEMU under test offers the ``mapped-ram`` migration capability (QEMU 10 from
``scripts/qemu10.sh``, selected with ``SNAPCORE_TEST_QEMU``), a paused save and its restore use
it; where it does not (Debian 12's QEMU 7.2), the same tests check the fallback to the
migration stream. The tests that move an image between two QEMUs (a stream image from one
without mapped-ram restored by one with it, a mapped-ram image offered to one without) run
when both are on this machine (the system's QEMU and ``.cache/qemu10``), on the machine type
both know.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapcore import CreateOptions, DomainState
from snapcore.errors import BackendError, DomainStateError, SnapcoreError
from snapcore_qemu.domain import QemuDomain
from snapcore_qemu.migration import MAPPED_RAM, STREAM
from snapcore_qemu.qmp import QMPSession
from tests.backends.test_qemu import Guest
from tests.qemuvm import QEMU, write_domain_file

pytestmark = [pytest.mark.integration, pytest.mark.live]

ROOT = Path(__file__).resolve().parents[2]
#: The QEMUs this machine has: the system's and the one ``scripts/qemu10.sh`` unpacks.
CANDIDATES = ("qemu-system-x86_64", str(ROOT / ".cache/qemu10/bin/qemu-system-x86_64"))
#: A machine type that QEMU 7.2 and 10.0 both know, so an image moves between them.
COMMON_MACHINE = "pc-q35-7.2"
CAPABILITIES = ("background-snapshot", "mapped-ram", "multifd")


@functools.cache
def probe(binary: str, command: str) -> Any:
    """*command*'s answer from *binary* started with ``-machine none`` (``None`` when it cannot
    be run or does not answer)."""
    if shutil.which(binary) is None:
        return None
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        sock = os.path.join(scratch, "probe.qmp")
        argv = [binary, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                "-qmp", f"unix:{sock},server=on,wait=off"]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock) and proc.poll() is None:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.02)
            time.sleep(0.1)
            with QMPSession(sock) as qmp:
                return qmp.execute(command)
        except SnapcoreError:
            return None
        finally:
            proc.kill()
            proc.wait()


def capabilities(binary: str) -> frozenset[str]:
    """The migration capabilities *binary* offers (empty when it cannot be run)."""
    caps = probe(binary, "query-migrate-capabilities") or []
    return frozenset(str(c["capability"]) for c in caps)


def has_command(binary: str, command: str) -> bool:
    return command in {c["name"] for c in probe(binary, "query-commands") or []}


def mapped_ram(binary: str) -> bool:
    return "mapped-ram" in capabilities(binary)


def other_qemu(*, with_mapped_ram: bool) -> str:
    for binary in CANDIDATES:
        if capabilities(binary) and mapped_ram(binary) is with_mapped_ram:
            return binary
    pytest.skip(f"no QEMU {'with' if with_mapped_ram else 'without'} mapped-ram on this machine")


def capability_state(guest: Guest) -> dict[str, bool]:
    with guest.vm.qmp() as qmp:
        answer = qmp.execute("query-migrate-capabilities")
    return {c["capability"]: c["state"] for c in answer if c["capability"] in CAPABILITIES}


def fdsets(guest: Guest) -> list[object]:
    """QEMU's fd sets once the image's are gone: an fd set removed while a multifd channel
    still holds a dup of its descriptor lingers, empty, until that channel's thread closes
    it, a moment after the migration ended."""
    deadline = time.monotonic() + 10
    with guest.vm.qmp() as qmp:
        while True:
            found = list(qmp.execute("query-fdsets"))
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def use_qemu(guest: Guest, binary: str, *, channels: int | None = None) -> None:
    """Point the guest's domain file at *binary* on :data:`COMMON_MACHINE`."""
    argv = list(guest.vm.argv)
    argv[0] = binary
    argv[argv.index("-machine") + 1] = COMMON_MACHINE
    write_domain_file(guest.domain_file, "g1", {"vda": guest.disk}, guest.vm.qmp_path, argv)
    if channels is not None:
        text = guest.domain_file.read_text()
        guest.domain_file.write_text(
            text.replace("[qemu]\n", f"[qemu]\nmemory_channels = {channels}\n")
        )


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    g = Guest(tmp_path)
    yield g
    g.shutdown()


def test_paused_save_and_restore_use_mapped_ram_where_qemu_offers_it(guest: Guest) -> None:
    dom = guest.handle()
    dom.start(paused=True)
    guest.mark(0x1234ABCD)
    guest.write_disk(0x41)
    cp = dom.create(CreateOptions(name="p"))
    assert cp.memory is not None
    expected = MAPPED_RAM if mapped_ram(QEMU) else STREAM
    assert cp.memory.format == expected
    record = next(guest.state_dir.glob("domains/*/checkpoints/p.json"))
    assert json.loads(record.read_text())["checkpoint"]["memory"]["format"] == expected
    assert dom.state() is DomainState.PAUSED
    assert not any(capability_state(guest).values())
    assert fdsets(guest) == []

    guest.mark(0x0BADF00D)  # (QEMU's disks stay inactive until the guest runs: no writes)
    dom.stop()
    guest.disk.write_bytes(b"\x42" * (1 << 20))
    dom.revert("p")
    assert dom.state() is DomainState.PAUSED
    assert guest.read_mark() == 0x1234ABCD
    assert guest.disk_has(0x41)
    assert not any(capability_state(guest).values())  # the restore turned them off too
    assert fdsets(guest) == []
    with guest.vm.qmp() as qmp:  # (a multifd restore reads with direct-io where QEMU can)
        assert not qmp.execute("query-migrate-parameters").get("direct-io")


def test_running_checkpoint_keeps_the_background_stream(guest: Guest) -> None:
    dom = guest.handle()
    dom.start()
    guest.mark(0x77)
    cp = dom.create(CreateOptions(name="r"))
    assert cp.memory is not None
    assert cp.memory.format == STREAM
    assert dom.state() is DomainState.RUNNING
    assert not any(capability_state(guest).values())
    guest.mark(0x78)
    dom.revert("r")
    assert guest.read_mark() == 0x77


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_plan_says_which_method_and_why(guest: Guest, channels: int | None) -> None:
    use_qemu(guest, QEMU, channels=channels)
    dom = guest.handle()
    dom.start(paused=True)
    (step,) = [
        s for s in dom.plan_create(CreateOptions(name="x")).steps if s.action.endswith("memory")
    ]
    if not mapped_ram(QEMU):
        assert "paused save (migration stream)" in step.detail
        assert "QEMU does not offer mapped-ram" in step.detail
        return
    wanted = channels if channels is not None else 4
    if wanted == 1:
        assert "paused save (migration stream)" in step.detail
        assert "mapped-ram without multifd channels is slower than the stream" in step.detail
        return
    assert f"paused save (mapped-ram, {wanted} multifd channels)" in step.detail
    assert "QEMU offers mapped-ram" in step.detail
    assert "written in parallel" in step.detail
    cp = dom.create(CreateOptions(name="x"))
    assert cp.memory is not None
    assert cp.memory.format == MAPPED_RAM
    guest.mark(0x1)
    dom.revert("x")
    assert guest.read_mark() == 0


def test_plan_of_a_running_domain_names_the_background_snapshot(guest: Guest) -> None:
    dom = guest.handle()
    dom.start()
    (step,) = [
        s for s in dom.plan_create(CreateOptions(name="x")).steps if s.action.endswith("memory")
    ]
    assert "live (background snapshot, migration stream)" in step.detail


def test_a_failed_save_leaves_no_capability_and_no_image(
    guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = QemuDomain._migrate

    def fails_after(
        self: QemuDomain, command: str, uri: str, step: str, *, resume: bool = False
    ) -> object:
        real(self, command, uri, step, resume=resume)
        raise BackendError("injected failure after the migration")

    monkeypatch.setattr(QemuDomain, "_migrate", fails_after)
    dom = guest.handle()
    dom.start(paused=True)
    with pytest.raises(SnapcoreError, match="injected failure"):
        dom.create(CreateOptions(name="f"))
    assert not any(capability_state(guest).values())
    assert fdsets(guest) == []
    assert not list(guest.state_dir.glob("domains/*/memory/*"))
    assert dom.list() == []


def test_a_second_memory_checkpoint_of_a_domain_left_stopped_is_refused_first(
    guest: Guest,
) -> None:
    """A save of a paused domain leaves QEMU in ``postmigrate``, where it refuses another
    migration: refused at plan time (exit 2), nothing touched; once resumed, it works."""
    dom = guest.handle()
    dom.start(paused=True)
    dom.create(CreateOptions(name="a"))
    with pytest.raises(DomainStateError, match="postmigrate") as err:
        dom.create(CreateOptions(name="b"))
    assert err.value.exit_code == 2
    assert [v.checkpoint.name for v in dom.list()] == ["a"]
    assert len(list(guest.state_dir.glob("domains/*/memory/*"))) == 1
    dom.create(CreateOptions(name="disk-only", memory="no"))
    with guest.vm.qmp() as qmp:
        qmp.execute("cont")
    dom.create(CreateOptions(name="b"))


def test_stream_image_of_a_qemu_without_mapped_ram_restores_on_one_with_it(
    guest: Guest,
) -> None:
    old, new = other_qemu(with_mapped_ram=False), other_qemu(with_mapped_ram=True)
    use_qemu(guest, old)
    dom = guest.handle()
    dom.start(paused=True)
    guest.mark(0x72)
    guest.write_disk(0x72)
    cp = dom.create(CreateOptions(name="old"))
    assert cp.memory is not None
    assert cp.memory.format == STREAM
    dom.stop()
    use_qemu(guest, new)
    dom = guest.handle()
    dom.revert("old")
    assert dom.state() is DomainState.PAUSED
    assert guest.read_mark() == 0x72
    assert guest.disk_has(0x72)


def test_mapped_ram_image_is_refused_clearly_by_a_qemu_without_it(guest: Guest) -> None:
    old, new = other_qemu(with_mapped_ram=False), other_qemu(with_mapped_ram=True)
    use_qemu(guest, new)
    dom = guest.handle()
    dom.start(paused=True)
    cp = dom.create(CreateOptions(name="new"))
    assert cp.memory is not None
    assert cp.memory.format == MAPPED_RAM
    dom.stop()
    use_qemu(guest, old)
    dom = guest.handle()
    with pytest.raises(SnapcoreError, match="mapped-ram") as err:
        dom.revert("new")
    assert "does not offer the mapped-ram migration capability" in str(err.value)
    assert dom.state() is DomainState.SHUTOFF  # the QEMU started for it was stopped


# -- qcow2 disks around memory saves of a paused domain ----------------------------------------


def test_qcow2_disks_after_memory_saves_and_restores_of_a_paused_domain(tmp_path: Path) -> None:
    """A save of a stopped guest leaves QEMU's disks inactive, and QEMU 10.0 keeps them
    inactive after an incoming migration into a QEMU started with ``-S`` until ``cont``:
    snapcore activates them again where QEMU can (``blockdev-set-active``), so the paused
    domain's next checkpoints (internal qcow2 snapshots) work."""
    from tests.integration.test_live_cli import Live

    live = Live(tmp_path)
    try:
        live.ok("domain-start", "--paused", live.domain)
        live.mark(0x5151)
        live.ok("snapshot-create", "-n", "m1", live.domain)
        if has_command(QEMU, "blockdev-set-active"):  # 7.2 cannot without running the guest
            live.ok("snapshot-create", "-D", "-n", "d1", live.domain)
        live.mark(0x5252)
        live.ok("snapshot-revert", "-n", "m1", live.domain)
        assert live.read_mark() == 0x5151
        live.ok("snapshot-create", "-n", "m2", live.domain)  # 10.0: only with the disks active
        live.ok("snapshot-revert", "-n", "m2", live.domain)
        assert live.read_mark() == 0x5151
        assert live.run("domain-state", live.domain).stdout.strip() == "paused"
    finally:
        live.kill()
