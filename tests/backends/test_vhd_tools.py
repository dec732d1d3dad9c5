"""The vhd-util and tap-ctl wrappers parse the real tools' output formats (blktap 4, as
documented in docs/vhd.md), given here verbatim through a RecordingRunner."""

from __future__ import annotations

import pytest

from snapcore.errors import BackendError, CommandError
from snapcore.testing import RecordingRunner
from snapcore_vhd.tap_ctl import TapCtl, Tapdisk
from snapcore_vhd.vhd_util import VhdUtil


def test_query_parses_every_line() -> None:
    run = RecordingRunner()
    argv = ["vhd-util", "query", "-n", "/s/c.vhd", "-v", "-s", "-p", "-f", "-d"]
    run.on(argv, stdout="10240\n7680512\n/s/base.vhd\nhidden: 1\nchain depth: 3\n")
    q = VhdUtil(run).query("/s/c.vhd")
    assert (q.virtual_mib, q.physical_size, q.parent, q.hidden, q.depth) == (
        10240,
        7680512,
        "/s/base.vhd",
        True,
        3,
    )
    run = RecordingRunner()
    run.on(argv, stdout="10240\n5120\n/s/c.vhd has no parent\nhidden: 0\nchain depth: 1\n")
    q = VhdUtil(run).query("/s/c.vhd")
    assert q.parent is None
    assert not q.hidden
    run = RecordingRunner()
    run.on(argv, stdout="10240\n5120\nquery failed\nhidden: 0\nchain depth: 1\n")
    with pytest.raises(BackendError, match="cannot resolve the parent"):
        VhdUtil(run).query("/s/c.vhd")


def test_query_open_failure_is_a_command_error() -> None:
    run = RecordingRunner()
    run.on(
        ["vhd-util", "query", "-n", "/s/x.vhd", "-v", "-s", "-p", "-f", "-d"],
        stdout="error opening /s/x.vhd: -22\n",
        returncode=22,
    )
    with pytest.raises(CommandError, match=r"error opening /s/x\.vhd: -22"):
        VhdUtil(run).query("/s/x.vhd")


def test_coalesce_count_without_newline() -> None:
    run = RecordingRunner()
    run.on(["vhd-util", "coalesce", "-n", "/s/c.vhd"], stdout="Coalesced 4104 sectors")
    assert VhdUtil(run).coalesce("/s/c.vhd") == 4104


def test_check_messages_without_the_dump() -> None:
    run = RecordingRunner()
    run.on(
        ["vhd-util", "check", "-n", "/s/c.vhd", "-p"],
        stdout=(
            "primary footer invalid: invalid checksum\n"
            "/s/c.vhd appears invalid; dumping metadata\n"
            "VHD Footer Summary:\n-------------------\nCookie              : conectix\n"
        ),
        returncode=22,
    )
    assert VhdUtil(run).check("/s/c.vhd", parents=True) == [
        "primary footer invalid: invalid checksum"
    ]
    run = RecordingRunner()  # with -p: a line per parent that passed, then the failing one
    run.on(
        ["vhd-util", "check", "-n", "/s/c.vhd", "-p"],
        stdout=(
            "/s/c.vhd is valid\n/s/b.vhd is valid\nprimary footer invalid: invalid checksum\n"
            "/s/a.vhd appears invalid; dumping metadata\nVHD Footer Summary:\n"
            "error checking parents: -22\n"
        ),
        returncode=22,
    )
    assert VhdUtil(run).check("/s/c.vhd", parents=True) == [
        "primary footer invalid: invalid checksum"
    ]
    run = RecordingRunner()
    run.on(["vhd-util", "check", "-n", "/s/c.vhd"], stdout="/s/c.vhd is valid\n")
    assert VhdUtil(run).check("/s/c.vhd") == []


def test_tap_ctl_list_lines() -> None:
    assert Tapdisk.parse("pid=1234 minor=2 state=0 args=vhd:/s/a.vhd") == Tapdisk(
        pid=1234, minor=2, state=0, type="vhd", path="/s/a.vhd"
    )
    paused = Tapdisk.parse("pid=1234 minor=2 state=0x20 args=vhd:/s/a.vhd")
    assert paused is not None
    assert paused.paused
    assert Tapdisk.parse("pid=7 minor=0 args=aio:/dev/x").state == 0  # type: ignore[union-attr]
    assert Tapdisk.parse("pid=7 minor=0 state=0") is None, "no args: not a disk"
    assert Tapdisk.parse("minor=3 state=0 args=vhd:/s/a.vhd") is None


def test_tap_ctl_find_pause_unpause() -> None:
    run = RecordingRunner()
    run.on(
        ["tap-ctl", "list", "-f", "/s/a.vhd"], stdout="pid=9 minor=1 state=0 args=vhd:/s/a.vhd\n"
    )
    run.on(["tap-ctl", "pause", "-p", "9", "-m", "1"])
    run.on(["tap-ctl", "unpause", "-p", "9", "-m", "1", "-a", "vhd:/s/a.vhd"])
    tap = TapCtl(run)
    found = tap.find("/s/a.vhd")
    assert found is not None
    tap.pause(found)
    tap.unpause(found, "/s/a.vhd")
    assert run.argvs == [
        ("tap-ctl", "list", "-f", "/s/a.vhd"),
        ("tap-ctl", "pause", "-p", "9", "-m", "1"),
        ("tap-ctl", "unpause", "-p", "9", "-m", "1", "-a", "vhd:/s/a.vhd"),
    ]
    run = RecordingRunner()
    run.on(["tap-ctl", "list", "-f", "/s/b.vhd"], stdout="")
    assert TapCtl(run).find("/s/b.vhd") is None
