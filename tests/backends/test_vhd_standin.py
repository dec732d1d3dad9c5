"""The vhd-util stand-in (``tests/standins/vhd-util``) behaves as the real blktap vhd-util
4.0.8 does where the two were compared (see docs/vhd.md, "How it is tested"): each difference
the comparison found has a test here, run on real files, so that snapcore is tested against the
real tool's quirks, not a kinder double."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapcore_vhd import ops
from snapcore_vhd.chain import Chain
from snapcore_vhd.format import Footer, Header
from tests.standins import HERE

MiB = 1024 * 1024
STANDIN = str(HERE / "vhd-util")


def vu(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPCORE_STANDIN")}
    return subprocess.run(
        [sys.executable, STANDIN, *args], capture_output=True, text=True, check=False, env=env
    )


def put(path: Path, offset: int, data: bytes) -> None:
    with Chain(str(path), writable=True) as chain:
        chain.write(offset, data)


def get(path: Path, offset: int, length: int) -> bytes:
    with Chain(str(path)) as chain:
        return chain.read(offset, length)


def chain_of(tmp_path: Path) -> tuple[Path, Path]:
    base, leaf = tmp_path / "base.vhd", tmp_path / "leaf.vhd"
    ops.create_dynamic(str(base), 4 * MiB)
    put(base, 0, b"B" * 4096)
    ops.snapshot(str(leaf), str(base))
    return base, leaf


def test_snapshot_and_create_truncate_an_existing_target(tmp_path: Path) -> None:
    """blktap opens the target with O_TRUNC: the file that was there (here a second name of
    the base) is overwritten in place, and the command exits 0 saying nothing."""
    base, _leaf = chain_of(tmp_path)
    alias = tmp_path / "alias.vhd"
    os.link(base, alias)
    proc = vu("snapshot", "-n", str(alias), "-p", str(base), "-e")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert alias.stat().st_ino == base.stat().st_ino, "the same inode, truncated"
    assert ops.query(str(base), depth=False).disk_type == 4, "the base itself was overwritten"
    other = tmp_path / "other.vhd"
    other.write_bytes(b"x" * 10000)
    proc = vu("create", "-n", str(other), "-s", "8")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert ops.query(str(other)).virtual_size == 8 * MiB


def test_failing_snapshot_prints_nothing(tmp_path: Path) -> None:
    proc = vu("snapshot", "-n", str(tmp_path / "c.vhd"), "-p", str(tmp_path / "missing.vhd"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "")
    text = tmp_path / "text.vhd"
    text.write_bytes(b"not a vhd\n" * 100)
    proc = vu("snapshot", "-n", str(tmp_path / "c.vhd"), "-p", str(text), "-e")
    assert (proc.returncode, proc.stdout) == (22, "")
    assert not (tmp_path / "c.vhd").exists()


def _long_named_base(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A chain whose leaf has blktap's 512-byte locators, and a second base whose name is 255
    characters: its W2ku path (``.\\`` + name, UTF-16) needs 514 bytes; the MacX one fits."""
    base, leaf = chain_of(tmp_path)
    long_base = tmp_path / ("n" * 251 + ".vhd")
    ops.create_dynamic(str(long_base), 4 * MiB)
    return base, leaf, long_base


def test_modify_is_not_atomic_and_check_then_fails(tmp_path: Path) -> None:
    """The real ``modify -p`` rewrites locator 0 (MacX) before it finds that the path does not
    fit locator 1 (W2ku): it fails with ENAMETOOLONG, the header still names the old parent, and
    ``check`` finds locator 0 does not match it."""
    _base, leaf, long_base = _long_named_base(tmp_path)
    proc = vu("modify", "-n", str(leaf), "-p", str(long_base))
    assert proc.returncode == 36
    assert proc.stdout == f"failed to set parent to '{long_base}': -36\n"
    header = Header.unpack(leaf.read_bytes()[512:1536])
    assert header.parent_name == "base.vhd"
    proc = vu("check", "-n", str(leaf))
    assert proc.returncode == 22
    first = proc.stdout.splitlines()[0]
    assert first.startswith("parent locator 0 name (n")
    assert first.endswith(") does not match header name (base.vhd)")
    assert f"{leaf} appears invalid; dumping metadata\n" in proc.stdout
    assert "VHD Footer Summary:" in proc.stdout


def test_modify_relinks(tmp_path: Path) -> None:
    base, leaf = chain_of(tmp_path)
    put(leaf, 4096, b"L" * 512)
    copy = tmp_path / "copy.vhd"
    copy.write_bytes(base.read_bytes())
    proc = vu("modify", "-n", str(leaf), "-p", str(copy))
    # the copy has the same UUID: the relinked leaf reads the same through it
    assert (proc.returncode, proc.stdout) == (0, "")
    base.unlink()
    assert get(leaf, 0, 4608) == b"B" * 4096 + b"L" * 512
    assert vu("check", "-n", str(leaf), "-p").returncode == 0


def test_raw_parent_snapshot_checks_valid(tmp_path: Path) -> None:
    raw = tmp_path / "base.raw"
    raw.write_bytes(b"R" * (4 * MiB))
    child = tmp_path / "c.vhd"
    proc = vu("snapshot", "-n", str(child), "-p", str(raw), "-m")
    assert (proc.returncode, proc.stdout) == (0, "")
    proc = vu("check", "-n", str(child), "-p")
    assert (proc.returncode, proc.stdout) == (0, f"{child} is valid\n")
    assert get(child, 0, 8) == b"R" * 8
    proc = vu("query", "-n", str(child), "-d", "-p")
    assert proc.stdout == f"{raw}\nchain depth: 2\n"


def test_query_accepts_a_bad_footer_checksum(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    data = bytearray(path.read_bytes())
    data[-512 + 40] ^= 0x01  # original size: the checksum no longer matches
    path.write_bytes(data)
    proc = vu("query", "-n", str(path), "-v", "-f")
    assert (proc.returncode, proc.stdout) == (0, "4\nhidden: 0\n")
    assert vu("check", "-n", str(path)).stdout.startswith(
        "primary footer invalid: invalid checksum\n"
    )


def test_check_parents_prints_a_line_for_each(tmp_path: Path) -> None:
    base, leaf = chain_of(tmp_path)
    top = tmp_path / "top.vhd"
    ops.snapshot(str(top), str(leaf))
    proc = vu("check", "-n", str(top), "-p")
    assert proc.returncode == 0
    assert proc.stdout == f"{top} is valid\n{leaf} is valid\n{base} is valid\n"
    # a damaged parent: its messages, the dump, then the parents walk fails
    data = bytearray(base.read_bytes())
    data[-512 + 40] ^= 0x01
    base.write_bytes(data)
    proc = vu("check", "-n", str(leaf), "-p")
    assert proc.returncode == 22
    lines = proc.stdout.splitlines()
    assert lines[:3] == [
        f"{leaf} is valid",
        "primary footer invalid: invalid checksum",
        f"{base} appears invalid; dumping metadata",
    ]
    assert lines[-1] == "error checking parents: -22"


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.vhd"
    proc = vu("check", "-n", str(missing), "-p")
    assert (proc.returncode, proc.stdout) == (2, f"cannot stat {missing}: 2\n")


def test_coalesce_of_a_dynamic_disk(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    proc = vu("coalesce", "-n", str(path))
    assert proc.returncode == 22
    assert proc.stdout == (
        "coalescing of non-differencing disks is not supported\nerror coalescing: -22\n"
    )


def test_set_hidden_2_and_marker(tmp_path: Path) -> None:
    path = tmp_path / "d.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    assert vu("set", "-n", str(path), "-f", "hidden", "-v", "2").returncode == 0
    assert Footer.unpack(path.read_bytes()[-512:]).hidden == 2
    assert vu("query", "-n", str(path), "-f").stdout == "hidden: 2\n"
    assert "invalid 'hidden' state" in vu("check", "-n", str(path)).stdout
    assert vu("set", "-n", str(path), "-f", "hidden", "-v", "0").returncode == 0
    assert vu("set", "-n", str(path), "-f", "marker", "-v", "1").returncode == 0
    assert vu("query", "-n", str(path), "-m").stdout == "marker: 1\n"
    assert vu("check", "-n", str(path)).returncode == 0


@pytest.mark.parametrize("command", ["snapshot", "query", "check"])
def test_help_exits_0(command: str) -> None:
    proc = vu(command, "-h")
    assert proc.returncode == 0
    assert proc.stdout.startswith("options:")


@pytest.mark.parametrize("argv", [[], ["frobnicate"]])
def test_no_or_unknown_command_lists_the_commands(argv: list[str]) -> None:
    proc = vu(*argv)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "usage: vhd-util COMMAND [OPTIONS]",
        "COMMAND := { create | snapshot | query | read | set | repair | resize | fill | "
        "coalesce | modify | scan | check | revert | key | copy }",
    ]


def test_options_of_the_real_tool_are_accepted(tmp_path: Path) -> None:
    _base, leaf = chain_of(tmp_path)
    created = tmp_path / "new.vhd"
    assert vu("create", "-n", str(created), "-s", "4", "-S", "16").returncode == 0
    proc = vu("query", "-n", str(leaf), "-p", "-u")
    assert (proc.returncode, proc.stdout) == (0, "./base.vhd\n")
    for flags in (["-I"], ["-t"], ["-B"], ["-b"], ["-s"], ["-I", "-t", "-B", "-b", "-s", "-p"]):
        assert vu("check", "-n", str(leaf), *flags).returncode == 0, flags
    assert vu("repair", "-n", str(leaf), "-b").returncode == 0
    physical = ops.query(str(leaf), depth=False).physical_size
    assert vu("modify", "-n", str(leaf), "-s", str(physical + 4096)).returncode == 0
    assert vu("check", "-n", str(leaf)).returncode == 0
    put(leaf, 0, b"Z" * 512)
    assert vu("modify", "-n", str(leaf), "-z").returncode == 0
    assert get(leaf, 0, 512) == b"B" * 512, "the leaf's data is gone: the parent shows through"
    assert vu("check", "-n", str(leaf)).returncode == 0
