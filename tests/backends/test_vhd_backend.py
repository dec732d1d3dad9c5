"""The vhd storage backend (``snapcore_vhd``) on real VHD files.

Hooks are called as the coordinator calls them: through a plugin manager, by keyword. The
disks' data is written and read with the native engine's :class:`~snapcore_vhd.chain.Chain`
(what a guest would see), and the chain's shape is read from the files. Every behaviour is
tested with the native engine and with vhd-util, which here is the stand-in of
``tests/standins`` (blktap is not packaged for Debian 12): its recorded argv shows the exact
command lines the backend runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

import snapcore_qcow2.plugin
import snapcore_vhd.plugin
from snapcore import cli
from snapcore.context import HookContext
from snapcore.errors import BackendError
from snapcore.model import Disk, DiskSnapshot, Domain, DomainState, SnapshotKind, SnapshotRequest
from snapcore.plugins import Plugins, load_plugins
from snapcore.testing import BackendConformance, is_listed
from snapcore_vhd import ops
from snapcore_vhd.chain import Chain
from snapcore_vhd.format import Footer, Header
from snapcore_vhd.storage import default_target
from tests.standins import StandIns

MiB = 1024 * 1024
SIZE = 4 * MiB
EXTERNAL = SnapshotKind.EXTERNAL


# -- helpers ----------------------------------------------------------------------------------


def make_vhd(path: Path, size: int = SIZE) -> Path:
    ops.create_dynamic(str(path), size)
    return path


def put(path: Path | str, offset: int, data: bytes) -> None:
    with Chain(str(path), writable=True) as chain:
        chain.write(offset, data)


def get(path: Path | str, offset: int = 0, length: int | None = None) -> bytes:
    with Chain(str(path)) as chain:
        return chain.read(offset, chain.size if length is None else length)


def uuid_of(path: Path | str) -> bytes:
    return Footer.unpack(Path(path).read_bytes()[-512:]).uuid


def parent_uuid_of(path: Path | str) -> bytes:
    return Header.unpack(Path(path).read_bytes()[512:1536]).parent_uuid


def parent_of(path: Path | str) -> str | None:
    return ops.query(str(path), depth=False).parent


def hidden(path: Path | str) -> bool:
    return ops.query(str(path), depth=False).hidden


def depth(path: Path | str) -> int:
    q = ops.query(str(path))
    assert q.depth is not None
    return q.depth


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(entry_points=False, extra=[("vhd", snapcore_vhd.plugin)])


def ctx_for(
    *disks: Disk, state: DomainState = DomainState.SHUTOFF, hv: str = "none"
) -> HookContext:
    return HookContext(domain=Domain(name="vm1", disks=disks, hypervisor=hv), state=state)


def create(
    plugins: Plugins, ctx: HookContext, disk: Disk, name: str, target: str | None = None
) -> DiskSnapshot:
    request = SnapshotRequest(disk=disk, name=name, target=target)
    blockers = plugins.storage("vhd").disk_snapshot_create_check(request=request, ctx=ctx)
    assert blockers == [], blockers
    snap = plugins.storage("vhd").disk_snapshot_create(request=request, ctx=ctx)
    assert isinstance(snap, DiskSnapshot)
    return snap


def revert(
    plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, others: Sequence[DiskSnapshot] = ()
) -> None:
    kw = {"snapshot": snap, "others": list(others), "ctx": ctx}
    assert plugins.storage("vhd").disk_snapshot_revert_check(**kw) == []
    plugins.storage("vhd").disk_snapshot_revert(**kw)


def delete(
    plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, others: Sequence[DiskSnapshot] = ()
) -> None:
    kw = {"snapshot": snap, "others": list(others), "ctx": ctx}
    assert plugins.storage("vhd").disk_snapshot_delete_check(**kw) == []
    plugins.storage("vhd").disk_snapshot_delete(**kw)


ENGINES = ["native", "vhd-util"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Each test once with the native engine and once with the vhd-util stand-in."""
    if request.param == "vhd-util":
        StandIns.install(monkeypatch, tmp_path)
    return str(request.param)


@pytest.fixture
def disk(tmp_path: Path, engine: str) -> Disk:
    path = make_vhd(tmp_path / "xvda.vhd")
    return Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": engine})


# -- conformance ------------------------------------------------------------------------------


class _Conformance(BackendConformance):
    plugin = snapcore_vhd.plugin
    driver = "vhd"
    engine: ClassVar[str] = "native"

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        path = make_vhd(tmp_path / f"{vdev}.vhd", size)
        return Disk(vdev=vdev, path=str(path), driver=self.driver, options={"engine": self.engine})

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        put(disk.path, offset, data)

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        return get(disk.path, offset, length)


class TestVhdNativeConformance(_Conformance):
    engine = "native"


class TestVhdUtilStandinConformance(_Conformance):
    """The same contract, the files changed by the vhd-util stand-in.

    The kill variant of fault injection runs on the native engine only: the storage logic it
    tests is the same, and here every vhd-util call is a Python process (about a minute of
    the suite's time). The exception variant covers the vhd-util path's own recovery."""

    engine = "vhd-util"
    kill_faults = False

    @pytest.fixture(autouse=True)
    def _standins(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        StandIns.install(monkeypatch, tmp_path)


# -- XAPI semantics -----------------------------------------------------------------------------


def test_snapshot_turns_the_leaf_into_a_hidden_base(
    plugins: Plugins, disk: Disk, tmp_path: Path
) -> None:
    ctx = ctx_for(disk)
    put(disk.path, 0, b"A" * 4096)
    leaf_uuid = uuid_of(disk.path)
    snap = create(plugins, ctx, disk, "s1")
    base = tmp_path / "xvda.s1.vhd"
    assert snap.locator == str(base) == default_target(disk.path, "s1")
    assert snap.kind is EXTERNAL
    assert uuid_of(base) == leaf_uuid, "the old leaf itself became the base"
    assert hidden(base)
    assert not hidden(disk.path)
    assert parent_of(disk.path) == str(base)
    assert parent_uuid_of(disk.path) == leaf_uuid
    assert get(disk.path, 0, 4096) == b"A" * 4096
    put(disk.path, 0, b"B" * 512)
    assert get(base, 0, 512) == b"A" * 512, "the base is not written"
    assert ops.check(str(disk.path), parents=True) == []
    assert not Path(disk.path + ".snapcore-new").exists()


def test_revert_to_any_snapshot_keeps_the_newer(plugins: Plugins, disk: Disk) -> None:
    ctx = ctx_for(disk)
    snaps = []
    for i in range(3):
        put(disk.path, 0, bytes([65 + i]) * 512)
        snaps.append(create(plugins, ctx, disk, f"s{i}"))
    put(disk.path, 0, b"Z" * 512)
    revert(plugins, ctx, snaps[0], snaps[1:])
    assert get(disk.path, 0, 512) == b"A" * 512
    assert parent_of(disk.path) == snaps[0].locator
    for s in snaps:
        assert os.path.exists(s.locator)
    put(disk.path, 0, b"Y" * 512)
    revert(plugins, ctx, snaps[2], snaps[:2])
    assert get(disk.path, 0, 512) == b"C" * 512
    revert(plugins, ctx, snaps[1], [snaps[0], snaps[2]])
    assert get(disk.path, 0, 512) == b"B" * 512
    listed = plugins.storage("vhd").disk_snapshot_list(disk=disk, known=snaps, ctx=ctx)
    assert all(is_listed(s, listed) for s in snaps)


def test_delete_merges_without_breaking_chains(plugins: Plugins, disk: Disk) -> None:
    """Oldest, middle and newest snapshots deleted in turn: the others and the current data
    read the same after each delete, and the chain gets shorter."""
    ctx = ctx_for(disk)
    snaps, views = [], []
    for i in range(4):
        put(disk.path, i * 4096, bytes([65 + i]) * 4096)
        views.append(get(disk.path))
        snaps.append(create(plugins, ctx, disk, f"s{i}"))
    put(disk.path, 0, b"Z" * 100)
    current = get(disk.path)
    assert depth(disk.path) == 5
    for victim in (snaps[1], snaps[0], snaps[3]):
        others = [s for s in snaps if s is not victim]
        delete(plugins, ctx, victim, others)
        snaps.remove(victim)
        assert not os.path.exists(victim.locator)
        assert get(disk.path) == current
        for s in snaps:
            assert get(s.locator) == views[int(s.name[1:])], s.name
        assert ops.check(disk.path, parents=True) == []
    assert depth(disk.path) == 2
    delete(plugins, ctx, snaps[0], [])
    assert depth(disk.path) == 1
    assert get(disk.path) == current
    assert not hidden(disk.path)


def test_delete_after_revert_keeps_a_base_for_both_branches(
    plugins: Plugins, disk: Disk, tmp_path: Path
) -> None:
    """A base two leaves depend on (the disk was reverted to it) is kept under a new name when
    its snapshot is deleted, and merged once one branch is gone."""
    ctx = ctx_for(disk)
    put(disk.path, 0, b"A" * 512)
    s1 = create(plugins, ctx, disk, "s1")
    put(disk.path, 0, b"B" * 512)
    s2 = create(plugins, ctx, disk, "s2")
    revert(plugins, ctx, s1, [s2])
    put(disk.path, 512, b"C" * 512)
    delete(plugins, ctx, s1, [s2])
    assert not os.path.exists(s1.locator)
    kept = [p for p in os.listdir(tmp_path) if ".base-" in p]
    assert len(kept) == 1, os.listdir(tmp_path)
    assert get(disk.path, 0, 1024) == b"A" * 512 + b"C" * 512
    assert get(s2.locator, 0, 512) == b"B" * 512
    listed = plugins.storage("vhd").disk_snapshot_list(disk=disk, known=[s1, s2], ctx=ctx)
    assert not is_listed(s1, listed)
    assert is_listed(s2, listed)
    delete(plugins, ctx, s2, [])  # s2's base goes: the kept base has one child left, merged
    assert [p for p in os.listdir(tmp_path) if ".base-" in p] == []
    assert get(disk.path, 0, 1024) == b"A" * 512 + b"C" * 512
    assert depth(disk.path) == 1


def test_interrupted_delete_is_finished_by_running_it_again(
    plugins: Plugins, disk: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ctx_for(disk)
    put(disk.path, 0, b"A" * 512)
    s1 = create(plugins, ctx, disk, "s1")
    put(disk.path, 512, b"B" * 512)
    s2 = create(plugins, ctx, disk, "s2")
    put(disk.path, 1024, b"C" * 512)
    current, view2 = get(disk.path), get(s2.locator)
    from snapcore_vhd import storage

    real = storage.VhdDisk._resume
    calls = [0]

    def crash_in_relink(self: storage.VhdDisk, journal: str) -> None:
        # the merge coalesces s2's base into s1's, then the relink of the leaf "crashes"
        calls[0] += 1
        monkeypatch.setattr(self.engine, "set_parent", _boom)
        real(self, journal)

    monkeypatch.setattr(storage.VhdDisk, "_resume", crash_in_relink)
    with pytest.raises(BackendError, match="crash"):
        plugins.storage("vhd").disk_snapshot_delete(snapshot=s1, others=[s2], ctx=ctx)
    assert Path(s1.locator + ".snapcore-merge").exists()
    assert get(disk.path) == current  # the failed delete broke no chain
    assert get(s2.locator) == view2
    monkeypatch.setattr(storage.VhdDisk, "_resume", real)
    delete(plugins, ctx, s1, [s2])
    assert not Path(s1.locator + ".snapcore-merge").exists()
    assert get(disk.path) == current
    assert get(s2.locator) == view2
    assert ops.check(disk.path, parents=True) == []


def _boom(*args: object) -> None:
    raise BackendError("crash")


def test_abort_undoes_any_prefix_of_create(plugins: Plugins, disk: Disk, tmp_path: Path) -> None:
    ctx = ctx_for(disk)
    put(disk.path, 0, b"A" * 512)
    before = get(disk.path)
    uuid = uuid_of(disk.path)
    request = SnapshotRequest(disk=disk, name="s1")
    base = tmp_path / "xvda.s1.vhd"
    # stopped after the hard link
    os.link(disk.path, base)
    plugins.storage("vhd").disk_snapshot_abort(request=request, ctx=ctx)
    assert not base.exists()
    assert get(disk.path) == before
    # finished, then written to
    create(plugins, ctx, disk, "s1")
    put(disk.path, 512, b"B" * 512)
    plugins.storage("vhd").disk_snapshot_abort(request=request, ctx=ctx)
    assert not base.exists()
    assert uuid_of(disk.path) == uuid
    assert not hidden(disk.path)
    assert get(disk.path, 0, 1024) == b"A" * 512 + b"B" * 512
    plugins.storage("vhd").disk_snapshot_abort(request=request, ctx=ctx)


def test_depth_limit_is_refused_in_preflight(plugins: Plugins, disk: Disk) -> None:
    """XAPI's limit: a leaf 30 files deep cannot be snapshotted; nothing is written."""
    ctx = ctx_for(disk)
    for i in range(29):
        create(plugins, ctx, replace(disk, options={"engine": "native"}), f"s{i}")
    assert depth(disk.path) == 30
    request = SnapshotRequest(disk=disk, name="one-more")
    blockers = plugins.storage("vhd").disk_snapshot_create_check(request=request, ctx=ctx)
    assert blockers == [
        f"the VHD chain of {disk.path} is 30 files deep and the limit is 30 (as XAPI's); "
        "delete a snapshot of this disk first"
    ]
    smaller = replace(disk, options={"engine": "native", "max_depth": "40"})
    ctx40 = ctx_for(smaller)
    assert (
        plugins.storage("vhd").disk_snapshot_create_check(
            request=SnapshotRequest(disk=smaller, name="x"), ctx=ctx40
        )
        == []
    )


def test_bad_options_are_blockers(plugins: Plugins, tmp_path: Path) -> None:
    path = make_vhd(tmp_path / "xvda.vhd")
    for options, text in (
        ({"engine": "fast"}, "engine='fast'"),
        ({"max_depth": "1"}, "max_depth='1'"),
        ({"colour": "red"}, "unknown vhd disk option(s) colour"),
    ):
        disk = Disk(vdev="xvda", path=str(path), driver="vhd", options=options)
        blockers = plugins.storage("vhd").disk_snapshot_create_check(
            request=SnapshotRequest(disk=disk, name="s"), ctx=ctx_for(disk)
        )
        assert len(blockers) == 1
        assert text in blockers[0]


def test_disk_claim(tmp_path: Path) -> None:
    vhd = make_vhd(tmp_path / "a.vhd")
    raw = tmp_path / "b.img"
    raw.write_bytes(bytes(4096))
    assert snapcore_vhd.plugin.disk_claim(disk=Disk(vdev="a", path=str(vhd))) == "vhd"
    assert snapcore_vhd.plugin.disk_claim(disk=Disk(vdev="b", path=str(raw))) is None
    assert snapcore_vhd.plugin.disk_claim(disk=Disk(vdev="c", path=str(tmp_path / "x"))) is None


# -- vhd-util command lines --------------------------------------------------------------------


def test_vhd_util_command_lines(
    plugins: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact vhd-util command lines of a create, a revert and a delete."""
    standins = StandIns.install(monkeypatch, tmp_path)
    path = make_vhd(tmp_path / "xvda.vhd")
    disk = Disk(vdev="xvda", path=str(path), driver="vhd")  # engine auto: vhd-util is on PATH
    ctx = ctx_for(disk)
    base = str(tmp_path / "xvda.s1.vhd")
    new = "<scratch>"  # the new leaf's scratch name, unique to each command (snapcore.overlay)

    def calls() -> list[tuple[str, ...]]:
        def name(arg: str) -> str:
            scratch = arg.startswith(f"{path}.") and arg.endswith(".snapcore-new")
            return new if scratch else arg

        return [tuple(name(a) for a in call) for call in standins.calls()]

    s1 = create(plugins, ctx, disk, "s1")
    assert calls() == [
        ("vhd-util", "check", "-n", str(path), "-p"),
        ("vhd-util", "query", "-n", str(path), "-v", "-s", "-p", "-f", "-d"),
        ("vhd-util", "snapshot", "-n", new, "-p", base, "-e"),
        ("vhd-util", "set", "-n", base, "-f", "hidden", "-v", "1"),
        ("vhd-util", "query", "-n", base, "-v", "-s", "-p", "-f", "-d"),
    ]
    standins.clear()
    revert(plugins, ctx, s1)
    assert calls() == [
        ("vhd-util", "check", "-n", base, "-p"),
        ("vhd-util", "snapshot", "-n", new, "-p", base, "-e"),
    ]
    put(path, 0, b"x" * 512)
    standins.clear()
    delete(plugins, ctx, s1)
    assert standins.calls() == [
        ("vhd-util", "coalesce", "-n", str(path)),
        ("vhd-util", "set", "-n", base, "-f", "hidden", "-v", "0"),
    ]
    assert get(path, 0, 512) == b"x" * 512


# -- bad input through the command line: one line, exit 2, nothing written ----------------------


def _domain_file(tmp_path: Path, disk_path: Path, extra: str = "") -> Path:
    domain = tmp_path / "vm1.toml"
    domain.write_text(
        f'name = "vm1"\n[[disk]]\nvdev = "xvda"\npath = "{disk_path}"\ndriver = "vhd"\n{extra}'
    )
    return domain


def _corrupt_footer(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-512 + 40] ^= 0xFF
    path.write_bytes(data)


def _cycle(path: Path) -> None:
    other = path.with_name("other.vhd")
    ops.snapshot(str(other), str(path))
    tmp = path.with_name("tmp.vhd")
    ops.snapshot(str(tmp), str(other))
    footer = Footer.unpack(path.read_bytes()[-512:])
    tmp.replace(path)
    data = bytearray(path.read_bytes())
    fixed = replace(Footer.unpack(bytes(data[-512:])), uuid=footer.uuid).pack()
    data[:512] = fixed
    data[-512:] = fixed
    path.write_bytes(data)


def _uuid_mismatch(path: Path) -> None:
    base = path.with_name("base.vhd")
    make_vhd(base)
    ops.snapshot(str(path.with_name("new.vhd")), str(base))
    base.unlink()
    make_vhd(base)
    path.with_name("new.vhd").replace(path)


def _missing_parent(path: Path) -> None:
    base = path.with_name("base.vhd")
    make_vhd(base)
    ops.snapshot(str(path.with_name("new.vhd")), str(base))
    base.unlink()
    path.with_name("new.vhd").replace(path)


def _block_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = replace(Header.unpack(bytes(data[512:1536])), block_size=512 * 1024, max_entries=8)
    data[512:1536] = header.pack()
    path.write_bytes(data)


def _deep(path: Path) -> None:
    current = path
    for i in range(30):
        child = path.with_name(f"d{i}.vhd")
        ops.snapshot(str(child), str(current))
        current = child
    current.replace(path.with_name("leaf.vhd"))
    path.with_name("leaf.vhd").rename(path.with_name("xvda2.vhd"))


BAD = {
    "not-a-vhd": (lambda p: p.write_bytes(b"just text\n" * 300), "no VHD footer"),
    "bad-checksum": (_corrupt_footer, "footer checksum is wrong"),
    "missing-parent": (_missing_parent, "parent base.vhd not found"),
    "cyclic-chain": (_cycle, "(a loop)"),
    "uuid-mismatch": (_uuid_mismatch, "but the child expects"),
    "block-size": (_block_size, "block size 524288 is not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spoil, text = BAD[case]
    path = make_vhd(tmp_path / "xvda.vhd")
    spoil(path)
    domain = _domain_file(tmp_path, path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = cli.main(
        ["--state-dir", str(tmp_path / "state"), "snapshot-create", "-n", "s1", str(domain)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert text in err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before


def test_chain_at_the_depth_limit_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_vhd(tmp_path / "base.vhd")
    _deep(path)
    leaf = tmp_path / "xvda2.vhd"
    assert depth(leaf) == 31
    domain = _domain_file(tmp_path, leaf)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = cli.main(
        ["--state-dir", str(tmp_path / "state"), "snapshot-create", "-n", "s1", str(domain)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "is 31 files deep and the limit is 30" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


# -- a mixed checkpoint ----------------------------------------------------------------------------


def test_mixed_checkpoint_with_qcow2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One stopped domain, a qcow2 and a VHD disk: create, write, revert, delete through the CLI;
    each disk's data checked with its own reader."""
    import shutil
    import subprocess

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    qcow = tmp_path / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "4M"], check=True)
    vhd = make_vhd(tmp_path / "xvdb.vhd")
    domain = tmp_path / "mixed.toml"
    domain.write_text(
        'name = "mixed"\n'
        f'[[disk]]\nvdev = "vda"\npath = "{qcow}"\n'
        f'[[disk]]\nvdev = "xvdb"\npath = "{vhd}"\n'
    )
    state = str(tmp_path / "state")

    def io(pattern: int) -> None:
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 4k", str(qcow)],
            check=True,
            capture_output=True,
        )
        put(vhd, 0, bytes([pattern]) * 4096)

    def holds(pattern: int) -> bool:
        out = subprocess.run(
            ["qemu-io", "-f", "qcow2", "-r", "-c", f"read -P {pattern} 0 4k", str(qcow)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return "verification failed" not in out and get(vhd, 0, 4096) == bytes([pattern]) * 4096

    io(1)
    assert cli.main(["--state-dir", state, "snapshot-create", "-n", "one", str(domain)]) == 0
    io(2)
    assert cli.main(["--state-dir", state, "snapshot-create", "-n", "two", str(domain)]) == 0
    io(3)
    assert cli.main(["--state-dir", state, "snapshot-revert", "-n", "one", str(domain)]) == 0
    assert holds(1)
    assert cli.main(["--state-dir", state, "snapshot-delete", "-n", "one", str(domain)]) == 0
    assert holds(1)
    assert cli.main(["--state-dir", state, "snapshot-revert", "-n", "two", str(domain)]) == 0
    assert holds(2)
    capsys.readouterr()
    assert cli.main(["--state-dir", state, "snapshot-list", "--json", str(domain)]) == 0
    out = capsys.readouterr().out
    assert '"name": "two"' in out
    assert '"driver": "vhd"' in out
    assert ops.check(str(vhd), parents=True) == []
    _ = snapcore_qcow2.plugin


@pytest.mark.parametrize("step", ["link", "snapshot", "replace", "set_hidden"])
def test_create_failing_at_each_step_leaves_the_disk_as_it_was(
    plugins: Plugins, disk: Disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Whatever step of a create fails, the create undoes itself: same leaf, same data, no
    base, no scratch file."""
    from snapcore_vhd import engine as engines
    from snapcore_vhd import storage

    ctx = ctx_for(disk)
    put(disk.path, 0, b"A" * 4096)
    before = Path(disk.path).read_bytes()

    fired = []

    def boom(*args: object, **kwargs: object) -> None:
        if not fired:  # fail once: the undo that follows may use the same step
            fired.append(step)
            raise OSError(5, f"injected failure at {step}")
        return original(*args, **kwargs)

    original: Any = None

    real_replace = os.replace
    if step == "link":
        original = os.link
        monkeypatch.setattr(storage.os, "link", boom)
    elif step == "replace":

        def replace_once(src: str, dst: str) -> None:
            if src.endswith(".snapcore-new"):
                boom()
            real_replace(src, dst)

        monkeypatch.setattr(storage.os, "replace", replace_once)
    else:
        cls = engines.NativeEngine if disk.options["engine"] == "native" else engines.VhdUtilEngine
        method = getattr(cls, step)

        def bound(self: object, *args: object) -> None:
            if not fired:
                fired.append(step)
                raise OSError(5, f"injected failure at {step}")
            method(self, *args)

        monkeypatch.setattr(cls, step, bound)
    request = SnapshotRequest(disk=disk, name="s1")
    assert plugins.storage("vhd").disk_snapshot_create_check(request=request, ctx=ctx) == []
    with pytest.raises(BackendError, match="injected failure"):
        plugins.storage("vhd").disk_snapshot_create(request=request, ctx=ctx)
    assert Path(disk.path).read_bytes() == before
    assert sorted(
        p.name for p in tmp_path.iterdir() if p.suffix == ".vhd" or "snapcore" in p.name
    ) == ["xvda.vhd"]
    plugins.storage("vhd").disk_snapshot_abort(request=request, ctx=ctx)
    assert Path(disk.path).read_bytes() == before


def test_a_base_another_disk_depends_on_is_not_merged(
    plugins: Plugins, disk: Disk, tmp_path: Path
) -> None:
    """A disk cloned from this disk's snapshot (a file of another disk, in the same directory)
    blocks the delete: merging would change the other disk."""
    ctx = ctx_for(disk)
    put(disk.path, 0, b"A" * 512)
    s1 = create(plugins, ctx, disk, "s1")
    clone = tmp_path / "other-disk.vhd"
    ops.snapshot(str(clone), s1.locator)
    put(clone, 512, b"C" * 512)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix == ".vhd"}
    blockers = plugins.storage("vhd").disk_snapshot_delete_check(snapshot=s1, others=[], ctx=ctx)
    assert len(blockers) == 1
    assert f"{clone} is based on {s1.locator} but is not a file of this disk" in blockers[0]
    with pytest.raises(BackendError, match="not a file of this disk"):
        plugins.storage("vhd").disk_snapshot_delete(snapshot=s1, others=[], ctx=ctx)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix == ".vhd"} == before
