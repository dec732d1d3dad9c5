"""The QMP facade against a real QEMU (TCG, no guest OS)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapcore.errors import DomainUnreachableError
from snapcore_qemu.qmp import QMPCommandError, QMPSession
from tests.qemuvm import QemuVM

pytestmark = [pytest.mark.integration, pytest.mark.live]


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[QemuVM]:
    disk = tmp_path / "d.img"
    disk.write_bytes(b"\0" * 65536)
    machine = QemuVM(tmp_path, {"vda": disk}).start()
    yield machine
    machine.stop()


def test_commands_errors_and_events(vm: QemuVM) -> None:
    with QMPSession(str(vm.qmp_path), domain="vm") as qmp:
        assert qmp.execute("query-status")["status"] == "running"
        with pytest.raises(QMPCommandError) as err:
            qmp.execute("blockdev-del", {"node-name": "nope"})
        assert err.value.command == "blockdev-del"
        assert "nope" in str(err.value)
        with qmp.events("STOP", "RESUME") as events:
            qmp.execute("stop")
            qmp.execute("cont")
            assert [events.get(5)["event"], events.get(5)["event"]] == ["STOP", "RESUME"]
        assert qmp.peer_pid() == vm.proc.pid  # type: ignore[union-attr]


def test_calls_from_several_threads_share_one_session(vm: QemuVM) -> None:
    answers: list[str] = []
    with QMPSession(str(vm.qmp_path)) as qmp:

        def ask() -> None:
            for _ in range(20):
                answers.append(qmp.execute("query-status")["status"])

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert answers == ["running"] * 80


def test_missing_socket_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(DomainUnreachableError) as err:
        QMPSession(str(tmp_path / "none.qmp"), domain="web1").connect()
    assert err.value.exit_code == 2
    assert "none.qmp" in str(err.value)
    assert "No such file" in str(err.value)


def test_session_reconnects_after_qemu_restarts(vm: QemuVM) -> None:
    qmp = QMPSession(str(vm.qmp_path))
    try:
        assert qmp.execute("query-status")["running"] is True
        vm.stop()
        with pytest.raises((QMPCommandError, DomainUnreachableError)):
            qmp.execute("query-status")
        vm.start()
        assert qmp.execute("query-status")["running"] is True
    finally:
        qmp.close()


def test_an_event_before_the_greeting_is_met_by_connecting_again(tmp_path: Path) -> None:
    """QEMU 7.2, just started, once sent its RESUME event to a connecting client before its
    greeting (seen in this suite under load). The peer here replays that byte sequence on the
    first connection and behaves like QEMU's monitor on the next one."""
    path = tmp_path / "monitor.sock"
    version = {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}
    greeting = {"QMP": {"version": version, "capabilities": []}}
    resume = {"timestamp": {"seconds": 1, "microseconds": 0}, "event": "RESUME"}
    connections: list[int] = []

    def serve(server: socket.socket) -> None:
        for n in (1, 2):
            conn, _ = server.accept()
            connections.append(n)
            if n == 1:  # the event, then the greeting, on which the client has hung up
                with conn, contextlib.suppress(OSError):
                    conn.sendall(json.dumps(resume).encode() + b"\r\n")
                    conn.sendall(json.dumps(greeting).encode() + b"\r\n")
                    while conn.recv(4096):
                        pass
                continue
            with conn:
                conn.sendall(json.dumps(greeting).encode() + b"\r\n")
                decoder, pending = json.JSONDecoder(), ""
                while chunk := conn.recv(4096):  # JSON objects, one after the other
                    pending += chunk.decode()
                    while pending.strip():
                        try:
                            request, end = decoder.raw_decode(pending.lstrip())
                        except json.JSONDecodeError:
                            break  # the rest of the object is still to come
                        pending = pending.lstrip()[end:]
                        answer: dict[str, Any] = {"return": {}}
                        if request["execute"] == "query-status":
                            answer["return"] = {"status": "running", "running": True}
                        if "id" in request:
                            answer["id"] = request["id"]
                        conn.sendall(json.dumps(answer).encode() + b"\r\n")

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        thread = threading.Thread(target=serve, args=(server,), daemon=True)
        thread.start()
        with QMPSession(str(path), domain="vm", timeout=10) as qmp:
            assert qmp.execute("query-status")["status"] == "running"
    assert connections == [1, 2]


def test_a_qmp_error_is_attributed_to_the_disk_once() -> None:
    from snapcore.errors import for_disk

    with pytest.raises(QMPCommandError) as named, for_disk("vdb", "qcow2"):
        raise QMPCommandError("transaction", "GenericError", "busy")
    assert (named.value.vdev, named.value.driver) == ("vdb", "qcow2")
    assert str(named.value) == "disk vdb: QMP transaction: busy"
    with pytest.raises(QMPCommandError) as kept, for_disk("vdb", "qcow2"):
        raise QMPCommandError("transaction", "GenericError", "busy", vdev="vda")
    assert kept.value.vdev == "vda"  # already attributed: kept
