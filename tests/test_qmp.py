"""The QMP facade against a real QEMU (TCG, no guest OS)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapcore.errors import DomainUnreachableError, QMPCommandError
from snapcore.qmp import QMPSession
from tests.qemuvm import QemuVM

pytestmark = pytest.mark.integration


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
