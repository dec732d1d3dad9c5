"""The qemu hypervisor plugin against real QEMU processes (TCG, no guest OS).

Guest memory is changed at any moment through QEMU's qtest socket and read back the same way,
so a marker written before a checkpoint and overwritten after it shows whether a revert really
restored memory. Disks here are raw files handled by the test suite's file-copy backend
(tests/fakes.py), so these tests exercise the hypervisor side alone; live qcow2 has its own.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapcore import CreateOptions, DomainState, Host
from snapcore.api import DomainHandle
from snapcore.errors import ConfigError, OperationFailedError
from tests.fakes import FileBackend
from tests.qemuvm import QemuVM, write_domain_file

pytestmark = [pytest.mark.integration, pytest.mark.live]

MARK = "0x100000"  # a guest-physical address inside RAM


class Guest:
    """A QEMU domain started through snapcore, with helpers to poke its RAM and disk."""

    def __init__(self, tmp: Path, name: str = "g1"):
        self.tmp = tmp
        self.disk = tmp / f"{name}-vda.img"
        self.disk.write_bytes(b"\0" * (1 << 20))
        self.vm = QemuVM(tmp, {"vda": self.disk}, name=name, memory_mib=64)
        self.domain_file = self.vm.domain_file()
        self.state_dir = tmp / "state"
        self.backend = FileBackend()

    def handle(self) -> DomainHandle:
        host = Host(state_dir=self.state_dir)
        host.register(self.backend, "files")
        return host.open_domain(self.domain_file)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "snapcore", "--state-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def mark(self, value: int) -> None:
        assert self.vm.qtest(f"writel {MARK} {value:#x}") == ["OK"]

    def read_mark(self) -> int:
        (answer,) = self.vm.qtest(f"readl {MARK}")
        assert answer.startswith("OK "), answer
        return int(answer.split()[1], 16)

    def write_disk(self, byte: int) -> None:
        self.vm.hmp_qemu_io("vda", f"write -P {byte:#x} 0 64k")

    def disk_has(self, byte: int) -> bool:
        try:
            self.vm.hmp_qemu_io("vda", f"read -P {byte:#x} 0 64k")
        except AssertionError:
            return False
        return True

    def pid(self) -> int:
        pidfile = next(self.state_dir.glob("domains/*/work/qemu.pid"))
        return int(pidfile.read_text())

    def shutdown(self) -> None:
        try:
            pid = self.pid()
        except (StopIteration, OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    g = Guest(tmp_path)
    yield g
    g.shutdown()


def test_lifecycle_through_the_cli(guest: Guest) -> None:
    dom = str(guest.domain_file)
    assert guest.cli("domain-state", dom).stdout.strip() == "shutoff"
    proc = guest.cli("domain-start", dom)
    assert proc.returncode == 0, proc.stderr
    assert guest.cli("domain-state", dom).stdout.strip() == "running"
    again = guest.cli("domain-start", dom)
    assert again.returncode == 2
    assert "is running" in again.stderr
    assert guest.cli("domain-stop", dom).returncode == 0
    assert guest.cli("domain-state", dom).stdout.strip() == "shutoff"
    assert guest.cli("domain-start", "--paused", dom).returncode == 0
    assert guest.cli("domain-state", dom).stdout.strip() == "paused"


def test_memory_checkpoint_and_revert_restore_marker_and_disk(guest: Guest) -> None:
    dom = guest.handle()
    dom.start()
    guest.mark(0x11111111)
    guest.write_disk(0x11)
    cp = dom.create(CreateOptions(name="one"))
    assert cp.memory is not None
    assert cp.state is DomainState.RUNNING
    assert dom.state() is DomainState.RUNNING
    image_size = os.path.getsize(cp.memory.path)
    assert 0 < image_size < 64 << 20  # at most the guest's RAM (mostly zero pages here)

    guest.mark(0x22222222)
    guest.write_disk(0x22)
    dom.revert("one")
    assert dom.state() is DomainState.RUNNING
    assert guest.read_mark() == 0x11111111  # memory restored, not reloaded
    assert guest.disk_has(0x11)


def test_revert_to_older_then_newer(guest: Guest) -> None:
    dom = guest.handle()
    dom.start()
    guest.mark(0xA)
    guest.write_disk(0xAA)
    dom.create(CreateOptions(name="a"))
    guest.mark(0xB)
    guest.write_disk(0xBB)
    dom.create(CreateOptions(name="b"))
    guest.mark(0xC)
    dom.revert("a")
    assert guest.read_mark() == 0xA
    assert guest.disk_has(0xAA)
    dom.revert("b")
    assert guest.read_mark() == 0xB
    assert guest.disk_has(0xBB)


def test_paused_domain_stays_paused(guest: Guest) -> None:
    dom = guest.handle()
    dom.start(paused=True)
    guest.mark(0x5)
    cp = dom.create(CreateOptions(name="p"))
    assert cp.state is DomainState.PAUSED
    assert dom.state() is DomainState.PAUSED
    guest.mark(0x6)
    dom.revert("p")
    assert dom.state() is DomainState.PAUSED
    assert guest.read_mark() == 0x5


def test_disk_only_checkpoint_has_no_memory_and_revert_leaves_domain_off(guest: Guest) -> None:
    dom = guest.handle()
    dom.start()
    guest.write_disk(0x31)
    cp = dom.create(CreateOptions(name="d", memory="no"))
    assert cp.memory is None
    assert dom.state() is DomainState.RUNNING
    dom.revert("d")
    assert dom.state() is DomainState.SHUTOFF
    assert guest.disk.read_bytes()[:65536] == b"\x31" * 65536


def test_socket_missing_while_qemu_runs_is_exit_2(guest: Guest, tmp_path: Path) -> None:
    guest.handle().start()
    wrong = write_domain_file(
        tmp_path / "wrong.toml", "g1", {"vda": guest.disk}, tmp_path / "nope.qmp", guest.vm.argv
    )
    proc = guest.cli("snapshot-create", "-n", "x", str(wrong))
    assert proc.returncode == 2
    assert "socket is missing but QEMU" in proc.stderr
    assert not list((guest.state_dir).glob("domains/*/checkpoints/*.json"))


def test_socket_that_never_answers_is_exit_2(tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(b"\0" * 4096)
    sock_path = tmp_path / "silent.qmp"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    dom_file = write_domain_file(tmp_path / "s.toml", "silent", {"vda": disk}, sock_path, [])
    dom_file.write_text(dom_file.read_text().replace("argv = []", "argv = []\ntimeout = 1"))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "snapcore", "--state-dir", str(tmp_path / "st"),
             "snapshot-create", "-n", "x", str(dom_file)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    assert proc.returncode == 2
    assert "no answer after 1 s" in proc.stderr
    assert disk.read_bytes() == b"\0" * 4096


def test_domain_file_disks_must_match_what_qemu_has_open(guest: Guest, tmp_path: Path) -> None:
    guest.handle().start()
    extra = tmp_path / "extra.img"
    extra.write_bytes(b"\0" * 4096)
    text = guest.domain_file.read_text() + f'\n[[disk]]\nvdev = "vdb"\npath = "{extra}"\n'
    other = tmp_path / "mismatch.toml"
    other.write_text(text)
    host = Host(state_dir=guest.state_dir)
    host.register(guest.backend, "files")
    with pytest.raises(Exception, match=r"QEMU does not have .*extra\.img open") as err:
        host.open_domain(other).create(CreateOptions(name="x"))
    assert getattr(err.value, "exit_code", None) == 2


def test_memory_for_a_shut_off_domain_is_exit_2(guest: Guest) -> None:
    cfg = guest.tmp / "snap.cfg"
    cfg.write_text('memory = "yes"\n')
    proc = guest.cli("snapshot-create", str(cfg), str(guest.domain_file))
    assert proc.returncode == 2
    assert "shutoff" in proc.stderr


def test_qemu_killed_in_the_middle_is_undone(guest: Guest) -> None:
    dom = guest.handle()
    dom.start()
    guest.backend.actions["create", "vda"] = lambda: os.kill(guest.pid(), signal.SIGKILL)
    with pytest.raises(OperationFailedError):
        dom.create(CreateOptions(name="k"))
    assert not list(guest.tmp.glob("*.snap"))
    assert not list(guest.state_dir.glob("domains/*/memory/*"))
    assert not list(guest.state_dir.glob("domains/*/journal.json"))
    assert dom.list() == []


def test_memory_image_that_may_not_fit_is_refused_before_anything(
    guest: Guest, tmp_path: Path
) -> None:
    """A save that runs out of space would fail half-way (and QEMU 7.2 can hang when a
    background snapshot hits ENOSPC), so a filesystem with less room than the guest's RAM is
    refused at plan time: exit 2, nothing touched."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)]
    if subprocess.run(mount, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        dom = guest.handle()
        dom.start()
        with pytest.raises(ConfigError, match="MiB free on its filesystem") as err:
            dom.create(CreateOptions(name="full", memory=str(tiny / "mem.img")))
        assert err.value.exit_code == 2
        assert not (tiny / "mem.img").exists()
        assert not list(guest.tmp.glob("*.snap"))
        assert guest.backend.calls == []
        assert dom.state() is DomainState.RUNNING
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def _crash_during_create(state_dir: str, domain_file: str) -> None:
    backend = FileBackend()
    backend.crash.add(("create", "vda"))
    host = Host(state_dir=state_dir)
    host.register(backend, "files")
    host.open_domain(domain_file).create(CreateOptions(name="crash"))


def test_snapcore_killed_mid_checkpoint_next_command_resumes_guest(guest: Guest) -> None:
    dom = guest.handle()
    dom.start()
    proc = multiprocessing.get_context("fork").Process(
        target=_crash_during_create, args=(str(guest.state_dir), str(guest.domain_file))
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    assert dom.state() is DomainState.PAUSED  # the dead command had paused it
    assert dom.list() == []  # the next command recovers first
    assert dom.state() is DomainState.RUNNING
    assert not list(guest.tmp.glob("*.snap"))


class AgentStandIn:
    """A stand-in for the QEMU guest agent (there is no guest OS here): a UNIX socket that
    answers guest-fsfreeze-freeze/thaw as the real agent documents, and records the commands."""

    def __init__(self, path: Path):
        self.path = path
        self.commands: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                buffer = ""
                decoder = json.JSONDecoder()
                while chunk := conn.recv(4096):
                    buffer += chunk.decode()
                    while buffer.strip():
                        try:
                            request, end = decoder.raw_decode(buffer.lstrip())
                        except ValueError:
                            break  # an incomplete message: read more
                        buffer = buffer.lstrip()[end:]
                        self.commands.append(request["execute"])
                        freeze = request["execute"] == "guest-fsfreeze-freeze"
                        answer = {"return": 2 if freeze else 0}
                        if "id" in request:
                            answer["id"] = request["id"]
                        conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


def test_disk_only_checkpoint_freezes_and_thaws_through_the_guest_agent(guest: Guest) -> None:
    agent = AgentStandIn(guest.tmp / "qga.sock")
    try:
        text = guest.domain_file.read_text().replace(
            "[qemu]\n", f'[qemu]\nguest_agent = "{agent.path}"\n'
        )
        guest.domain_file.write_text(text)
        dom = guest.handle()
        dom.start()
        dom.create(CreateOptions(name="frozen", memory="no"))
        assert agent.commands == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
        dom.create(CreateOptions(name="with-memory"))  # memory keeps the page cache: no freeze
        assert agent.commands == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    finally:
        agent.close()


def test_missing_guest_agent_does_not_stop_a_checkpoint(guest: Guest) -> None:
    text = guest.domain_file.read_text().replace(
        "[qemu]\n", f'[qemu]\nguest_agent = "{guest.tmp / "absent.sock"}"\n'
    )
    guest.domain_file.write_text(text)
    dom = guest.handle()
    dom.start()
    cp = dom.create(CreateOptions(name="crash-consistent", memory="no"))
    assert [d.vdev for d in cp.disks] == ["vda"]
    assert dom.state() is DomainState.RUNNING


# -- the [qemu] table: opaque to the core, checked by the qemu plugin ------------------------------


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('qmp = "/q"\nmonitor = "/m"\n', "unknown key 'monitor' in [qemu]"),
        ("qmp = 1\n", "'qmp' in [qemu] must be a string"),
        ('qmp = "run/q"\n', "'qmp' in [qemu] must be an absolute path, not 'run/q'"),
        ('argv = "qemu-system-x86_64 -m 1G"\n', "'argv' in [qemu] must be a list of strings"),
        ('argv = ["qemu", 1]\n', "'argv' in [qemu] must be a list of strings"),
        ("guest_agent = true\n", "'guest_agent' in [qemu] must be a string"),
        ("timeout = 0\n", "'timeout' in [qemu] must be a positive number of seconds"),
        ("memory_channels = 0\n", "'memory_channels' in [qemu] must be a whole number from 1"),
        ("memory_channels = 65\n", "'memory_channels' in [qemu] must be a whole number from 1"),
        ("memory_channels = 2.5\n", "'memory_channels' in [qemu] must be a whole number from 1"),
    ],
)
def test_a_bad_qemu_table_refuses_the_domain_naming_the_key(
    tmp_path: Path, table: str, problem: str
) -> None:
    image = tmp_path / "a.qcow2"
    image.write_bytes(b"")
    path = tmp_path / "dom.toml"
    path.write_text(
        f'name = "dom"\nhypervisor = "qemu"\n[qemu]\n{table}'
        f'[[disk]]\nvdev = "vda"\npath = "{image}"\n'
    )
    host = Host(state_dir=tmp_path / "state")
    with pytest.raises(ConfigError) as info:
        host.open_domain(path)
    assert problem in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2
    assert not (tmp_path / "state").exists()


def test_the_qemu_table_as_settings(tmp_path: Path) -> None:
    from snapcore.model import Disk, Domain
    from snapcore_qemu.settings import QemuSettings

    domain = Domain(
        name="d",
        hypervisor="qemu",
        disks=(Disk(vdev="vda", path="/a"),),
        hypervisor_table={
            "qmp": "/run/d.qmp",
            "argv": ["qemu-system-x86_64"],
            "timeout": 5,
            "memory_channels": 3,
        },
    )
    assert QemuSettings.of(domain) == QemuSettings(
        qmp="/run/d.qmp", argv=("qemu-system-x86_64",), timeout=5.0, memory_channels=3
    )


def test_the_guest_runs_again_while_its_background_snapshot_is_written(tmp_path: Path) -> None:
    """The guest of a checkpoint with memory is stopped only while its disks switch and QEMU
    captures the memory: it runs again (QEMU's ``RESUME``) before the memory image is complete
    (``MIGRATION`` ``completed``), on every QEMU. QEMU 9.0 and newer put the vCPUs back as they
    were when the snapshot began, stopped by snapcore; before the fix the guest stayed stopped
    for the whole save on QEMU 10. Seen on a second QMP monitor of the domain's own."""
    from snapcore_qemu.qmp import QMPSession
    from tests.qemuvm import domain_argv

    disk = tmp_path / "vda.img"
    disk.write_bytes(b"\0" * (1 << 20))
    watch = tmp_path / "watch.qmp"
    argv = domain_argv({"vda": disk}, memory_mib=256)
    argv += ["-chardev", f"socket,id=watch,path={watch},server=on,wait=off"]
    argv += ["-mon", "chardev=watch,mode=control"]
    domain_file = write_domain_file(
        tmp_path / "bg.toml", "bg", {"vda": disk}, tmp_path / "bg.qmp", argv
    )
    host = Host(state_dir=tmp_path / "state")
    host.register(FileBackend(), "files")
    dom = host.open_domain(domain_file)
    dom.start()
    try:
        with (
            QMPSession(str(watch), domain="bg").connect() as watcher,
            watcher.events("STOP", "RESUME", "MIGRATION") as events,
        ):
            dom.create(CreateOptions(name="m"))
            seen: list[tuple[str, float]] = []
            while not any(name == "RESUME" for name, _ in seen) or not any(
                name == "completed" for name, _ in seen
            ):
                event = events.get(10)
                stamp = event["timestamp"]
                when = stamp["seconds"] + stamp["microseconds"] / 1e6
                status = event.get("data", {}).get("status")
                seen.append((status if event["event"] == "MIGRATION" else event["event"], when))
        assert dom.state() is DomainState.RUNNING
        names = [name for name, _ in seen]
        resumed = next(when for name, when in seen if name == "RESUME")
        completed = next(when for name, when in seen if name == "completed")
        assert names.index("STOP") < names.index("RESUME"), names
        assert resumed < completed, f"the guest ran again only when the save ended: {seen}"
    finally:
        dom.stop()
