"""The vhd backend under the real vhd-util's quirks and under crashes (issue 9): an existing
target refused up front, a relink that does not fit refused up front, a half-done ``modify -p``
undone, raw parents (``vhd-util snapshot -m``) used as blktap does, parent locators switched
atomically by the native engine (SIGKILL at every write), no stray ``base-<uuid>`` link after a
failed delete, and stray links found and removed by ``disk_verify``/``disk_repair``.

vhd-util is the stand-in of ``tests/standins`` (blktap is not packaged for Debian 12); it
reproduces the real tool's behaviour as compared in docs/vhd.md.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import snapcore_vhd.plugin
from snapcore import cli
from snapcore.context import HookContext
from snapcore.errors import BackendError
from snapcore.model import (
    Disk,
    DiskSnapshot,
    Domain,
    DomainState,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.plugins import Plugins, load_plugins
from snapcore.process import default_runner
from snapcore_vhd import ops
from snapcore_vhd.engine import VhdUtilEngine
from snapcore_vhd.format import Header
from tests.backends.test_vhd_backend import get, put
from tests.standins import HERE, StandIns

MiB = 1024 * 1024
ENGINES = ["native", "vhd-util"]


def digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and "standin" not in p.name
    }


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(entry_points=False, extra=[("vhd", snapcore_vhd.plugin)])


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    if request.param == "vhd-util":
        StandIns.install(monkeypatch, tmp_path)
    return str(request.param)


def ctx_for(*disks: Disk) -> HookContext:
    return HookContext(domain=Domain(name="vm1", disks=disks), state=DomainState.SHUTOFF)


def create(plugins: Plugins, disk: Disk, name: str) -> DiskSnapshot:
    request = SnapshotRequest(disk=disk, name=name)
    ctx = ctx_for(disk)
    assert plugins.storage("vhd").disk_snapshot_create_check(request=request, ctx=ctx) == []
    snap = plugins.storage("vhd").disk_snapshot_create(request=request, ctx=ctx)
    assert isinstance(snap, DiskSnapshot)
    return snap


def hook_kw(disk: Disk, snap: DiskSnapshot, others: Sequence[DiskSnapshot]) -> dict[str, Any]:
    return {"snapshot": snap, "disk": disk, "others": list(others), "ctx": ctx_for(disk)}


# -- item: the target is checked by snapcore, not left to vhd-util -----------------------------


def test_existing_target_is_refused_before_vhd_util_truncates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real ``vhd-util snapshot`` truncates an existing target and says nothing; here the
    target is a second name of another disk's image. The create is refused (exit 2) before
    vhd-util runs, and nothing changes."""
    standins = StandIns.install(monkeypatch, tmp_path)
    disk_path = tmp_path / "xvda.vhd"
    ops.create_dynamic(str(disk_path), 4 * MiB)
    other = tmp_path / "other.vhd"
    ops.create_dynamic(str(other), 4 * MiB)
    put(other, 0, b"O" * 4096)
    os.link(other, tmp_path / "xvda.s1.vhd")
    domain = tmp_path / "vm1.toml"
    domain.write_text(
        f'name = "vm1"\n[[disk]]\nvdev = "xvda"\npath = "{disk_path}"\ndriver = "vhd"\n'
        '[disk.options]\nengine = "vhd-util"\n'
    )
    before = digest(tmp_path)
    code = cli.main(
        ["--state-dir", str(tmp_path / "state"), "snapshot-create", "-n", "s1", str(domain)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "xvda.s1.vhd already exists" in err
    assert digest(tmp_path) == before
    assert get(other, 0, 4096) == b"O" * 4096
    assert [c for c in standins.calls() if c[1] == "snapshot"] == []


# -- item: a relink that cannot fit is refused up front ------------------------------------------

#: A disk file name of 210 characters: its bases' names fit the 512 bytes blktap reserves for a
#: locator (``.\\`` + 213 characters in UTF-16: 430 bytes), but the name a base with two children
#: is kept under, ``<stem>.s1.base-<uuid>.vhd`` (255 characters), needs 514.
LONG_STEM = "d" * 206


def _two_branches(plugins: Plugins, disk: Disk) -> tuple[DiskSnapshot, DiskSnapshot]:
    """s1, s2, then a revert to s1: s1's base has two children."""
    put(disk.path, 0, b"A" * 512)
    s1 = create(plugins, disk, "s1")
    put(disk.path, 0, b"B" * 512)
    s2 = create(plugins, disk, "s2")
    kw = hook_kw(disk, s1, [s2])
    assert plugins.storage("vhd").disk_snapshot_revert_check(**kw) == []
    plugins.storage("vhd").disk_snapshot_revert(**kw)
    put(disk.path, 512, b"C" * 512)
    return s1, s2


def test_a_kept_base_name_that_does_not_fit_the_locators_is_a_blocker(
    plugins: Plugins, engine: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{LONG_STEM}.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": engine})
    s1, s2 = _two_branches(plugins, disk)
    before = digest(tmp_path)
    blockers = plugins.storage("vhd").disk_snapshot_delete_check(**hook_kw(disk, s1, [s2]))
    assert blockers, "the delete would fail half way"
    assert all("needs 514 bytes" in b and "room for 512" in b for b in blockers), blockers
    with pytest.raises(BackendError, match="needs 514 bytes"):
        plugins.storage("vhd").disk_snapshot_delete(**hook_kw(disk, s1, [s2]))
    assert digest(tmp_path) == before, "refused before anything was touched"
    assert get(path, 0, 1024) == b"A" * 512 + b"C" * 512
    assert ops.check(str(path), parents=True) == []


def test_a_merge_name_that_does_not_fit_the_locators_is_a_blocker(
    plugins: Plugins, engine: str, tmp_path: Path
) -> None:
    """A merge moves the disk over to ``<base>.snapcore-link`` for a moment; a path to it that
    does not fit the disk's locators (a base of 241 characters, so a link name of 255: 257
    UTF-16 characters with ``./``) is a blocker of the delete, found before anything is
    touched."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = tmp_path / "a" / "xvda.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": engine})
    ctx = ctx_for(disk)
    snaps = []
    for name, target in (("s1", "b" * 237 + ".vhd"), ("s2", "s2.vhd")):
        put(path, 0, name.encode() * 256)
        request = SnapshotRequest(disk=disk, name=name, target=str(tmp_path / "a" / target))
        assert plugins.storage("vhd").disk_snapshot_create_check(request=request, ctx=ctx) == []
        snap = plugins.storage("vhd").disk_snapshot_create(request=request, ctx=ctx)
        assert isinstance(snap, DiskSnapshot)
        snaps.append(snap)
    s1, s2 = snaps
    current = get(path)
    before = digest(tmp_path / "b") | digest(tmp_path / "a")
    blockers = plugins.storage("vhd").disk_snapshot_delete_check(**hook_kw(disk, s1, [s2]))
    assert blockers, "the delete would fail half way"
    assert all("needs 514 bytes" in b and "room for 512" in b for b in blockers), blockers
    with pytest.raises(BackendError, match="needs 514 bytes"):
        plugins.storage("vhd").disk_snapshot_delete(**hook_kw(disk, s1, [s2]))
    assert digest(tmp_path / "b") | digest(tmp_path / "a") == before, "nothing was touched"
    assert get(path) == current
    assert ops.check(str(path), parents=True) == []


def test_long_kept_base_name_is_exit_2_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{LONG_STEM}.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    domain = tmp_path / "vm1.toml"
    domain.write_text(f'name = "vm1"\n[[disk]]\nvdev = "xvda"\npath = "{path}"\n')
    state = ["--state-dir", str(tmp_path / "state")]
    put(path, 0, b"A" * 512)
    assert cli.main([*state, "snapshot-create", "-n", "s1", str(domain)]) == 0
    put(path, 0, b"B" * 512)
    assert cli.main([*state, "snapshot-create", "-n", "s2", str(domain)]) == 0
    assert cli.main([*state, "snapshot-revert", "-n", "s1", str(domain)]) == 0
    capsys.readouterr()
    before = digest(tmp_path)
    code = cli.main([*state, "snapshot-delete", "-n", "s1", str(domain)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "needs 514 bytes" in err
    assert digest(tmp_path) == before


# -- item: a failed vhd-util modify -p is undone -------------------------------------------------


def test_half_done_vhd_util_modify_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``modify -p`` rewrites locator 0 and then fails on locator 1; the engine puts
    the child's metadata back byte for byte and says so."""
    StandIns.install(monkeypatch, tmp_path)
    base, leaf = tmp_path / "base.vhd", tmp_path / "leaf.vhd"
    ops.create_dynamic(str(base), 4 * MiB)
    put(base, 0, b"B" * 4096)
    ops.snapshot(str(leaf), str(base))
    put(leaf, 4096, b"L" * 4096)
    long_base = tmp_path / ("n" * 251 + ".vhd")
    ops.create_dynamic(str(long_base), 4 * MiB)
    before = leaf.read_bytes()
    engine = VhdUtilEngine(default_runner())
    with pytest.raises(BackendError, match="was put back as it was"):
        engine.set_parent(str(leaf), str(long_base))
    assert leaf.read_bytes() == before
    assert ops.check(str(leaf), parents=True) == []
    assert get(leaf, 0, 8192) == b"B" * 4096 + b"L" * 4096


def test_vhd_util_modify_that_fits_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StandIns.install(monkeypatch, tmp_path)
    base, leaf = tmp_path / "base.vhd", tmp_path / "leaf.vhd"
    ops.create_dynamic(str(base), 4 * MiB)
    put(base, 0, b"B" * 4096)
    ops.snapshot(str(leaf), str(base))
    os.link(base, tmp_path / "other.vhd")
    VhdUtilEngine(default_runner()).set_parent(str(leaf), str(tmp_path / "other.vhd"))
    assert Header.unpack(leaf.read_bytes()[512:1536]).parent_name == "other.vhd"
    assert ops.check(str(leaf), parents=True) == []


# -- item: raw parents ---------------------------------------------------------------------


def test_a_disk_over_a_raw_parent(plugins: Plugins, engine: str, tmp_path: Path) -> None:
    """A leaf made by ``vhd-util snapshot -m`` over a raw image: checked valid, snapshotted,
    listed (the raw file is not a snapshot), reverted and deleted, the data read back through
    the raw parent at every step."""
    raw = tmp_path / "golden.raw"
    golden = os.urandom(4 * MiB)
    raw.write_bytes(golden)
    path = tmp_path / "xvda.vhd"
    proc = subprocess.run(
        [sys.executable, str(HERE / "vhd-util"), "snapshot", "-n", str(path), "-p", str(raw), "-m"],
        check=False,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SNAPCORE_STANDIN")},
    )
    assert proc.returncode == 0, proc.stdout
    assert ops.check(str(path), parents=True) == []
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": engine})
    assert get(path) == golden
    put(path, 4096, b"1" * 4096)
    view1 = get(path)
    s1 = create(plugins, disk, "s1")
    put(path, 8192, b"2" * 4096)
    view2 = get(path)
    s2 = create(plugins, disk, "s2")
    put(path, 0, b"3" * 512)
    listed = plugins.storage("vhd").disk_snapshot_list(disk=disk, known=[s1, s2], ctx=ctx_for(disk))
    assert sorted(s.locator for s in listed) == sorted([s1.locator, s2.locator])
    kw = hook_kw(disk, s1, [s2])
    assert plugins.storage("vhd").disk_snapshot_revert_check(**kw) == []
    plugins.storage("vhd").disk_snapshot_revert(**kw)
    assert get(path) == view1
    kw = hook_kw(disk, s2, [s1])
    assert plugins.storage("vhd").disk_snapshot_delete_check(**kw) == []
    plugins.storage("vhd").disk_snapshot_delete(**kw)
    kw = hook_kw(disk, s1, [])
    assert plugins.storage("vhd").disk_snapshot_delete_check(**kw) == []
    plugins.storage("vhd").disk_snapshot_delete(**kw)
    assert get(path) == view1
    assert view2 != view1
    assert raw.read_bytes() == golden, "the raw parent is never written"
    assert ops.check(str(path), parents=True) == []
    q = ops.query(str(path))
    assert (q.parent, q.depth) == (str(raw), 2)
    assert plugins.storage("vhd").disk_verify(disk=disk, known=[], ctx=ctx_for(disk)) == []


def test_the_raw_parent_itself_is_never_deleted(plugins: Plugins, tmp_path: Path) -> None:
    raw = tmp_path / "golden.raw"
    raw.write_bytes(b"G" * (4 * MiB))
    path = tmp_path / "xvda.vhd"
    ops.snapshot(str(path), str(raw), raw_parent=True)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": "native"})
    fake = DiskSnapshot(
        vdev="xvda",
        path=str(path),
        driver="vhd",
        kind=SnapshotKind.EXTERNAL,
        name="golden",
        locator=str(raw),
    )
    blockers = plugins.storage("vhd").disk_snapshot_delete_check(**hook_kw(disk, fake, []))
    assert any("is a raw file" in b for b in blockers), blockers
    assert raw.read_bytes() == b"G" * (4 * MiB)


# -- item: atomic parent-locator changes (SIGKILL at every write) ------------------------


class _Probe:
    def __init__(self) -> None:
        self.labels: list[str] = []

    def __call__(self, label: str) -> None:
        self.labels.append(label)


def _kill_at(n: int) -> object:
    count = [0]

    def fault(label: str) -> None:
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1

    return fault


def _relink_setup(d: Path, size: int, leaf_data: bool) -> tuple[Path, Path, Path, bytes]:
    """base <- mid <- leaf, mid coalesced into base: the leaf reads the same over either."""
    base, mid, leaf = d / "base.vhd", d / "mid.vhd", d / "leaf.vhd"
    ops.create_dynamic(str(base), size)
    put(base, 0, b"b" * MiB)
    ops.snapshot(str(mid), str(base))
    put(mid, 512, b"m" * 3000)
    ops.snapshot(str(leaf), str(mid))
    if leaf_data:
        put(leaf, 2 * MiB + 4096, b"l" * 5000)
    ops.coalesce(str(mid))
    return base, mid, leaf, get(leaf, 0, 3 * MiB)


LAYOUTS = {
    # free sectors between the locators and the first block: one header write
    "gap": (8 * MiB, True),
    # no block: the locators go past the footer, which moves first
    "no-block": (8 * MiB, False),
    # 800 blocks: the first block starts right after the locators (no free sector), so the
    # switch goes through a header keeping one old locator
    "no-gap": (1600 * MiB, True),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_relink_killed_at_every_write_leaves_old_or_new_parent(layout: str, tmp_path: Path) -> None:
    size, leaf_data = LAYOUTS[layout]
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    _b, _m, leaf, _ = _relink_setup(probe_dir, size, leaf_data)
    probe = _Probe()
    ops.set_parent(str(leaf), str(probe_dir / "base.vhd"), fault=probe)
    assert len(probe.labels) >= 3, probe.labels
    if layout == "no-gap":
        assert probe.labels.count("header") >= 2, probe.labels
    seen: set[str] = set()
    for n in range(len(probe.labels) + 1):
        d = tmp_path / f"kill{n}"
        d.mkdir()
        base, mid, leaf, view = _relink_setup(d, size, leaf_data)
        pid = os.fork()
        if pid == 0:  # the child relinks and is killed at write n
            try:
                ops.set_parent(str(leaf), str(base), fault=_kill_at(n))  # type: ignore[arg-type]
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert killed == (n < len(probe.labels)), (n, status)
        where = f"{layout}: killed before write {n} ({probe.labels[n] if killed else 'none'})"
        assert ops.check(str(leaf)) == [], where
        parent = ops.query(str(leaf)).parent
        assert parent in (str(base), str(mid)), where
        header = Header.unpack(leaf.read_bytes()[512:1536])
        assert header.parent_name == os.path.basename(parent), where
        assert get(leaf, 0, 3 * MiB) == view, where
        seen.add(os.path.basename(parent))
        ops.set_parent(str(leaf), str(base))  # and it can be done again from there
        assert ops.check(str(leaf), parents=True) == [], where
        assert get(leaf, 0, 3 * MiB) == view, where
    assert seen == {"base.vhd", "mid.vhd"}


def test_relinks_reuse_the_freed_slots(tmp_path: Path) -> None:
    """Relinks back and forth never grow the metadata into the data: the old slots are reused."""
    base, mid, leaf, view = _relink_setup(tmp_path, 8 * MiB, True)
    for i in range(6):
        ops.set_parent(str(leaf), str(base if i % 2 == 0 else mid))
        assert ops.check(str(leaf), parents=True) == []
        assert get(leaf, 0, 3 * MiB) == view


# -- item: no stray base-<uuid> link ---------------------------------------------------------------


def test_failed_retire_leaves_no_base_link(
    plugins: Plugins, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapcore_vhd import engine as engines

    path = tmp_path / "xvda.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": engine})
    s1, s2 = _two_branches(plugins, disk)
    current, view2 = get(path), get(s2.locator)
    cls = engines.NativeEngine if engine == "native" else engines.VhdUtilEngine
    real = cls.set_parent
    calls = [0]

    def second_fails(self: object, child: str, parent: str) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise BackendError("injected: the second relink fails")
        real(self, child, parent)  # type: ignore[arg-type]

    monkeypatch.setattr(cls, "set_parent", second_fails)
    with pytest.raises(BackendError, match="injected"):
        plugins.storage("vhd").disk_snapshot_delete(**hook_kw(disk, s1, [s2]))
    assert [p.name for p in tmp_path.iterdir() if ".base-" in p.name] == []
    assert os.path.exists(s1.locator)
    assert get(path) == current
    assert get(s2.locator) == view2
    assert ops.check(str(path), parents=True) == []
    assert ops.check(s2.locator, parents=True) == []
    monkeypatch.setattr(cls, "set_parent", real)
    plugins.storage("vhd").disk_snapshot_delete(**hook_kw(disk, s1, [s2]))
    assert get(path) == current
    assert get(s2.locator) == view2


def test_verify_and_repair_find_a_stray_base_link(plugins: Plugins, tmp_path: Path) -> None:
    path = tmp_path / "xvda.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": "native"})
    put(path, 0, b"A" * 512)
    s1 = create(plugins, disk, "s1")
    uuid = ops.query(s1.locator).uuid
    stray = tmp_path / f"xvda.base-{uuid}.vhd"
    os.link(s1.locator, stray)  # what a delete killed after its link leaves
    ctx = ctx_for(disk)
    vhd = plugins.storage("vhd")
    problems = vhd.disk_verify(disk=disk, known=[s1], ctx=ctx) or []
    assert len(problems) == 1
    assert str(stray) in problems[0]
    assert vhd.disk_repair(disk=disk, known=[s1], ctx=ctx) == [
        f"removed {stray}, a stray second name of a base"
    ]
    assert not stray.exists()
    assert os.path.exists(s1.locator)
    assert get(path, 0, 512) == b"A" * 512
    assert vhd.disk_verify(disk=disk, known=[s1], ctx=ctx) == []
    assert vhd.disk_repair(disk=disk, known=[s1], ctx=ctx) == []


def test_a_kept_base_in_use_is_not_stray(plugins: Plugins, tmp_path: Path) -> None:
    path = tmp_path / "xvda.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": "native"})
    s1, s2 = _two_branches(plugins, disk)
    plugins.storage("vhd").disk_snapshot_delete(**hook_kw(disk, s1, [s2]))
    kept = [p for p in tmp_path.iterdir() if ".base-" in p.name]
    assert len(kept) == 1
    ctx = ctx_for(disk)
    assert plugins.storage("vhd").disk_verify(disk=disk, known=[s2], ctx=ctx) == []
    assert plugins.storage("vhd").disk_repair(disk=disk, known=[s2], ctx=ctx) == []
    assert kept[0].exists()


# -- item: a middle layer's delete is all-or-nothing (SIGKILL at every write) --------------------


class _Points:
    """Crash points of a delete: every write, fsync and truncate of the native engine (its
    ``fault`` labels), every rename, link and unlink, every file opened for writing and every
    command run. With *kill_at*, the process SIGKILLs itself just before that point."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.labels: list[str] = []

    def hit(self, label: str) -> None:
        if len(self.labels) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.labels.append(label)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import builtins

        from snapcore_vhd import image

        monkeypatch.setattr(image, "_no_fault", self.hit)
        for name in ("link", "replace", "rename", "remove", "unlink"):
            monkeypatch.setattr(os, name, self._wrap(f"os.{name}", getattr(os, name)))
        real_open, real_os_open = builtins.open, os.open
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC

        def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & writes:
                self.hit(f"os.open({os.path.basename(str(path))})")
            return real_os_open(path, flags, *args, **kwargs)

        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if set(mode) & set("wax+"):
                self.hit(f"open({os.path.basename(str(file))})")
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)

    def _wrap(self, label: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.hit(f"{label}({', '.join(os.path.basename(str(a)) for a in args)})")
            return fn(*args, **kwargs)

        return wrapped

    def runner(self, run: Any) -> Any:
        def wrapped(argv: Sequence[str], **kwargs: Any) -> Any:
            self.hit(" ".join(os.path.basename(a) for a in argv[:2]))
            return run(argv, **kwargs)

        return wrapped


def _three_layers(d: Path) -> tuple[Disk, list[DiskSnapshot], dict[str, bytes]]:
    """s0 <- s1 <- s2 <- xvda.vhd, made natively, each layer with data of its own (some over
    the layer below, some beside it); and what the disk and each snapshot read."""
    plugins = load_plugins(entry_points=False, extra=[("vhd", snapcore_vhd.plugin)])
    path = d / "xvda.vhd"
    ops.create_dynamic(str(path), 8 * MiB)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": "native"})
    snaps: list[DiskSnapshot] = []
    for i, tag in enumerate(b"ABCD"):
        put(path, i * 2 * MiB, bytes([tag]) * 8192)  # a block of its own
        put(path, 4096 * i, bytes([tag + 32]) * 4096)  # over the layers below, block 0
        if i < 3:
            snaps.append(create(plugins, disk, f"s{i}"))
    views = {"disk": get(path)} | {s.name: get(s.locator) for s in snaps}
    return disk, snaps, views


def _delete_s1(disk: Disk, snaps: list[DiskSnapshot], engine: str, run: Any = None) -> None:
    plugins = load_plugins(entry_points=False, extra=[("vhd", snapcore_vhd.plugin)])
    disk = Disk(vdev=disk.vdev, path=disk.path, driver="vhd", options={"engine": engine})
    ctx = (
        ctx_for(disk)
        if run is None
        else HookContext(domain=Domain(name="vm1", disks=(disk,)), run=run)
    )
    plugins.storage("vhd").disk_snapshot_delete(
        snapshot=snaps[1], others=[snaps[0], snaps[2]], ctx=ctx
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_middle_delete_killed_anywhere_leaves_the_old_chain_or_the_new(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delete s1 of s0 <- s1 <- s2 <- disk, killed (SIGKILL) just before each write, fsync,
    rename, link, unlink, opening for writing and command in turn. After every kill the disk,
    s0 and s2 read back through their chains what they read before, every file passes
    ``check -p``, and s1 is either still there and listed (the old chain) or gone and not
    listed (the new one); the delete run again then finishes it, leaving no journal or
    second name behind."""
    if engine == "vhd-util":
        StandIns.install(monkeypatch, tmp_path)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    disk, snaps, _ = _three_layers(probe_dir)
    probe = _Points()
    with monkeypatch.context() as mp:
        probe.install(mp)
        _delete_s1(disk, snaps, engine, probe.runner(default_runner()))
    assert any(label.startswith("os.replace") for label in probe.labels), probe.labels
    outcomes: set[str] = set()
    for n in range(len(probe.labels) + 1):
        d = tmp_path / f"kill{n}"
        d.mkdir()
        disk, snaps, views = _three_layers(d)
        pid = os.fork()
        if pid == 0:  # the child deletes s1 and is killed at point n
            try:
                points = _Points(kill_at=n)
                with pytest.MonkeyPatch.context() as mp:
                    points.install(mp)
                    _delete_s1(disk, snaps, engine, points.runner(default_runner()))
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert killed == (n < len(probe.labels)), (n, status)
        where = f"killed before point {n} ({probe.labels[n] if killed else 'none: finished'})"
        assert get(disk.path) == views["disk"], where
        for snap in (snaps[0], snaps[2]):
            assert get(snap.locator) == views[snap.name], f"{where}: {snap.name}"
            problems = ops.check(snap.locator, parents=True)
            assert all(_footer_to_repair(p) for p in problems), f"{where}: {problems}"
        problems = ops.check(disk.path, parents=True)
        assert all(_footer_to_repair(p) for p in problems), f"{where}: {problems}"
        listed = plugins_list(disk, snaps)
        old = os.path.exists(snaps[1].locator)
        assert listed == ({"s0", "s1", "s2"} if old else {"s0", "s2"}), f"{where}: {listed}"
        outcomes.add("old" if old else "new")
        _delete_s1(disk, snaps, engine)  # as recovery runs it again
        where += ", then the delete again"
        assert not os.path.exists(snaps[1].locator), where
        assert get(disk.path) == views["disk"], where
        for snap in (snaps[0], snaps[2]):
            assert get(snap.locator) == views[snap.name], f"{where}: {snap.name}"
        assert ops.check(disk.path, parents=True) == [], where
        left = sorted(p.name for p in d.iterdir() if "snapcore" in p.name)
        assert left == [], f"{where}: {left}"
        assert plugins_list(disk, snaps) == {"s0", "s2"}, where
    assert outcomes == {"old", "new"}


def _footer_to_repair(problem: str) -> bool:
    """A problem an interrupted block allocation leaves (the footer at the end overwritten,
    readers use the copy at offset 0; the next writable open puts it back)."""
    return "primary footer invalid" in problem or "footers do not match" in problem


def plugins_list(disk: Disk, snaps: Sequence[DiskSnapshot]) -> set[str]:
    plugins = load_plugins(entry_points=False, extra=[("vhd", snapcore_vhd.plugin)])
    listed = plugins.storage("vhd").disk_snapshot_list(
        disk=disk, known=list(snaps), ctx=ctx_for(disk)
    )
    return {s.name for s in listed}


# -- a disk named through a symlink ----------------------------------------------------------------


def test_a_disk_named_through_a_symlink_keeps_it_through_every_operation(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``links/vda.vhd -> ../images/real.vhd``: create, revert, a delete that keeps a base for
    two children, a delete that merges into the disk; the symlink stays and names the current
    image, every parent locator resolves from the file it is in, the data reads back, and
    ``snapcore check`` is clean after each step (a kept base is no unrecorded snapshot)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "links").mkdir()
    real = tmp_path / "images" / "real.vhd"
    ops.create_dynamic(str(real), 4 * MiB)
    link = tmp_path / "links" / "vda.vhd"
    link.symlink_to("../images/real.vhd")
    domain = tmp_path / "vm1.toml"
    domain.write_text(f'name = "vm1"\n[[disk]]\nvdev = "xvda"\npath = "{link}"\n')
    state = ["--state-dir", str(tmp_path / "state")]

    def ok(*args: str) -> None:
        assert cli.main([*state, *args, str(domain)]) == 0, capsys.readouterr().err
        assert link.is_symlink(), f"after {args[0]}"
        assert os.readlink(link) == "../images/real.vhd"
        assert ops.check(str(real), parents=True) == []
        assert cli.main([*state, "check", str(domain)]) == 0, capsys.readouterr().out

    put(link, 0, b"A" * 512)
    ok("snapshot-create", "-n", "s1")
    put(link, 0, b"B" * 512)
    ok("snapshot-create", "-n", "s2")
    put(link, 0, b"C" * 512)
    ok("snapshot-revert", "-n", "s1")
    assert get(link, 0, 512) == b"A" * 512
    ok("snapshot-delete", "-n", "s1")  # its base has two children: kept as base-<uuid>
    assert get(link, 0, 512) == b"A" * 512
    ok("snapshot-revert", "-n", "s2")
    assert get(link, 0, 512) == b"B" * 512
    ok("snapshot-delete", "-n", "s2")
    assert get(link, 0, 512) == b"B" * 512
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["vda.vhd"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["real.vhd"]


def test_a_target_outside_the_image_directory_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base in another directory would carry the disk's parent locators, relative to the
    disk's directory, and its chain would break at the next snapshot (as it did before):
    exit 2, nothing touched."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "c").mkdir(parents=True)
    path = tmp_path / "a" / "vda.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    domain = tmp_path / "vm1.toml"
    domain.write_text(f'name = "vm1"\n[[disk]]\nvdev = "xvda"\npath = "{path}"\n')
    config = tmp_path / "s1.cfg"
    config.write_text(f'name = "s1"\ndisk = ["xvda={tmp_path}/b/c/s1.vhd"]\n')
    before = digest(tmp_path / "a")
    code = cli.main(
        ["--state-dir", str(tmp_path / "state"), "snapshot-create", str(config), str(domain)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"the snapshot target {tmp_path}/b/c/s1.vhd is not in {tmp_path}/a" in err
    assert digest(tmp_path / "a") == before
    assert list((tmp_path / "b" / "c").iterdir()) == []


# -- a delete that fails after the merge began: no revert to the half-merged checkpoint ---------


def test_a_middle_delete_failing_after_the_coalesce_blocks_a_revert_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vhd-util coalesce`` has written s2's data into s1 when the relink (``modify``) fails:
    s1's own view is no longer what it was. The CLI says the delete failed (exit 1, not
    "undone"), lists s1 as an unfinished delete, refuses a revert to it (exit 2, nothing
    touched), reverts to the others as before, and the delete run again finishes it."""
    standins = StandIns.install(monkeypatch, tmp_path)
    disk_path = tmp_path / "xvda.vhd"
    ops.create_dynamic(str(disk_path), 4 * MiB)
    domain = tmp_path / "vm1.toml"
    domain.write_text(
        f'name = "vm1"\n[[disk]]\nvdev = "xvda"\npath = "{disk_path}"\ndriver = "vhd"\n'
        '[disk.options]\nengine = "vhd-util"\n'
    )
    state = ["--state-dir", str(tmp_path / "state")]

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main([*state, *args, str(domain)])
        out, err = capsys.readouterr()
        return code, out, err

    for gen, name in enumerate(["s1", "s2", "s3"], 1):
        put(disk_path, 0, bytes([gen]) * 4096)
        assert run("snapshot-create", "-n", name)[0] == 0
    put(disk_path, 0, b"\x09" * 4096)
    monkeypatch.setenv("SNAPCORE_STANDIN_FAIL", "vhd-util modify")
    code, _, err = run("snapshot-delete", "-n", "s2")
    assert code == 1, err
    assert "delete of snapshot 's2' failed" in err
    assert "undone" not in err
    assert "snapshot-delete -n s2" in err
    assert [c[1] for c in standins.calls() if c[1] in ("coalesce", "modify")][:2] == [
        "coalesce",
        "modify",
    ]  # the merge ran before the failing relink
    monkeypatch.delenv("SNAPCORE_STANDIN_FAIL")
    assert get(disk_path, 0, 4096) == b"\x09" * 4096  # the current data is intact
    code, out, _ = run("snapshot-list")
    assert "[delete unfinished]" in out
    before = digest(tmp_path)
    code, _, err = run("snapshot-revert", "-n", "s2")
    assert code == 2
    assert "a delete of it failed part-way" in err
    assert digest(tmp_path) == before
    for name, gen in (("s1", 1), ("s3", 3)):  # the other checkpoints read as they did
        assert run("snapshot-revert", "-n", name)[0] == 0
        assert get(disk_path, 0, 4096) == bytes([gen]) * 4096
    code, _, err = run("snapshot-delete", "-n", "s2")
    assert code == 0, err
    code, out, _ = run("snapshot-list")
    assert "s2" not in out
    assert "delete unfinished" not in out
    for name, gen in (("s1", 1), ("s3", 3)):
        assert run("snapshot-revert", "-n", name)[0] == 0
        assert get(disk_path, 0, 4096) == bytes([gen]) * 4096
