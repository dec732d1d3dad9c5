"""snapcore.overlay: the external snapshot procedure of file-based images, on plain files.

The "format" here is a toy: an overlay is a file ``OVERLAY <T>\\n`` followed by the data
written to the disk since; folding it back writes that data into ``T``. Every test checks
names by inode, and the disk's bytes, before and after.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from snapcore import overlay as overlay_module
from snapcore.errors import BackendError
from snapcore.overlay import (
    ExternalOverlay,
    ImageIdentityError,
    default_target,
    file_id,
    remove_scratch,
    replace_image,
    same_file,
    scratch_files,
    scratch_path,
)

ORIGINAL = b"the disk's own bytes\n" * 100


def header(target: str) -> bytes:
    return b"OVERLAY " + target.encode() + b"\n"


def maker(target: str) -> Callable[[str], None]:
    """The trivial overlay maker: an empty overlay backed by *target*."""

    def make(scratch: str) -> None:
        Path(scratch).write_bytes(header(target))

    return make


def fold_back(ov: ExternalOverlay) -> Callable[[], None]:
    """The toy format's fold-back: merge the overlay's data into T, then put T back at P."""

    def fold() -> None:
        data = Path(ov.path).read_bytes()
        head = header(ov.target)
        if not data.startswith(head):
            return  # P is not an overlay of T: T is not ours
        written = data[len(head) :]
        if written:
            with open(ov.target, "r+b") as f:
                f.write(written)
        ov.put_back()

    return fold


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "vda.img"
    path.write_bytes(ORIGINAL)
    path.chmod(0o640)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_create_keeps_the_path_and_freezes_the_old_inode(disk: Path) -> None:
    inode = file_id(disk)
    target = str(disk.with_name("vda.s1.img"))
    ov = ExternalOverlay(str(disk), target, driver="toy", vdev="vda")
    ov.create(maker(target), fold_back=fold_back(ov))
    assert file_id(target) == inode, "T is the image P named before"
    assert file_id(disk) != inode
    assert disk.read_bytes() == header(target)
    assert Path(target).read_bytes() == ORIGINAL
    assert disk.stat().st_mode & 0o777 == 0o640, "the overlay has the image's mode"
    assert listing(disk.parent) == ["vda.img", "vda.s1.img"], "no scratch file left"


def test_scratch_names_are_unique_and_found_by_their_pattern(disk: Path) -> None:
    a, b = ExternalOverlay(str(disk), "/x/t1"), ExternalOverlay(str(disk), "/x/t2")
    assert a.scratch != b.scratch
    assert a.scratch.startswith(f"{disk}.{os.getpid()}-")
    assert a.scratch.endswith(".snapcore-tmp")
    ours = [
        scratch_path(str(disk)),
        scratch_path(str(disk)),
        f"{disk}.1-0123abcd.snapcore-tmp",  # another process's
        f"{disk}.snapcore-tmp",  # snapcore 0.1's fixed name
    ]
    theirs = [
        f"{disk}.snapcore-tmp.bak",
        f"{disk}.s1.img.snapcore-tmp",  # a scratch file of another disk, vda.img.s1.img
        str(disk.with_name("xvda.img.snapcore-tmp")),
        f"{disk}.1-0123abcd.snapcore-new",  # another suffix
        f"{disk}.x-0123abcd.snapcore-tmp",
    ]
    for name in ours + theirs:
        Path(name).write_bytes(b"")
    assert scratch_files(str(disk)) == sorted(ours)
    assert scratch_files(str(disk), ".snapcore-new") == [f"{disk}.1-0123abcd.snapcore-new"]
    assert remove_scratch(str(disk)) == sorted(ours)
    assert all(Path(n).exists() for n in theirs)
    assert scratch_files(str(disk)) == []


def test_default_target() -> None:
    assert default_target("/i/vda.qcow2", "s1", "qcow2") == "/i/vda.s1.qcow2"
    assert default_target("/i/vda.img", "s1", "qcow2") == "/i/vda.s1.qcow2"
    assert default_target("/i/vda.img", "s1", "vhd", strip_any=False) == "/i/vda.img.s1.vhd"
    assert default_target("/i/xvda.vhd", "s1", "vhd", strip_any=False) == "/i/xvda.s1.vhd"


def test_an_existing_target_is_refused_and_left_alone(disk: Path) -> None:
    """Even a target that is already a second name of the disk is not the create's to remove."""
    target = disk.with_name("vda.s1.img")
    os.link(disk, target)
    ov = ExternalOverlay(str(disk), str(target))
    with pytest.raises(BackendError, match="already exists"):
        ov.create(maker(str(target)), fold_back=fold_back(ov))
    assert same_file(disk, target)
    assert listing(disk.parent) == ["vda.img", "vda.s1.img"]


class Boom(Exception):
    pass


def _raise() -> None:
    raise Boom("injected")


@pytest.mark.parametrize("step", ["after-link", "in-write", "after-write", "after-replace"])
def test_a_failure_at_each_step_is_undone(
    disk: Path, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception after the link, after the scratch file is written (inside the maker and
    just before the rename), and after the rename: create raises it, and the disk is its
    old inode with its old bytes, and nothing else is left."""
    inode = file_id(disk)
    target = str(disk.with_name("vda.s1.img"))
    ov = ExternalOverlay(str(disk), target)
    make = maker(target)
    after_link = _raise if step == "after-link" else None
    if step == "in-write":

        def make(scratch: str) -> None:
            maker(target)(scratch)
            _raise()

    real_replace = os.replace
    if step == "after-write":

        def replace(src: str, dst: str) -> None:
            if src == ov.scratch:
                _raise()
            real_replace(src, dst)

        monkeypatch.setattr(overlay_module.os, "replace", replace)
    if step == "after-replace":
        monkeypatch.setattr(ov, "verify", _raise)
    with pytest.raises(Boom):
        ov.create(make, after_link=after_link, fold_back=fold_back(ov))
    monkeypatch.undo()
    assert file_id(disk) == inode
    assert disk.read_bytes() == ORIGINAL
    assert listing(disk.parent) == ["vda.img"]


def test_an_undo_that_fails_is_noted_and_finished_by_running_it_again(disk: Path) -> None:
    target = str(disk.with_name("vda.s1.img"))
    ov = ExternalOverlay(str(disk), target)
    fails = [False, True]  # popped from the end: the first fold fails

    def fold() -> None:
        if fails.pop():
            raise OSError(5, "Input/output error")
        fold_back(ov)()

    def verify() -> None:
        raise ImageIdentityError("injected", path=ov.path, target=ov.target)

    ov.verify = verify  # type: ignore[method-assign]
    with pytest.raises(ImageIdentityError) as info:
        ov.create(maker(target), fold_back=fold)
    assert any("undoing it failed too" in n for n in info.value.__notes__)
    ExternalOverlay(str(disk), target).undo(fold)
    assert disk.read_bytes() == ORIGINAL
    assert listing(disk.parent) == ["vda.img"]


def _crashed(disk: Path, target: str, state: str) -> None:
    """Leave the files as a process killed at *state* would (its own scratch name)."""
    scratch = f"{disk}.99999-deadbeef.snapcore-tmp"
    os.link(disk, target)
    if state == "linked":
        return
    Path(scratch).write_bytes(header(target))
    if state == "written":
        return
    os.replace(scratch, disk)
    with open(disk, "ab") as f:  # the domain wrote after the switch
        f.write(b"written since")
    if state == "switched":
        return
    # a fold-back killed between its merge and its rename
    with open(target, "r+b") as f:
        f.write(b"written since")
    assert state == "merged"


@pytest.mark.parametrize("state", ["linked", "written", "switched", "merged"])
def test_undo_from_a_crash_in_another_process(disk: Path, state: str) -> None:
    """A new ExternalOverlay (another process after a crash) puts the disk back from every
    state, keeps what was written since, and a second undo changes nothing."""
    inode = file_id(disk)
    target = str(disk.with_name("vda.s1.img"))
    _crashed(disk, target, state)
    ov = ExternalOverlay(str(disk), target)
    ov.undo(fold_back(ov))
    expected = ORIGINAL
    if state in ("switched", "merged"):
        expected = b"written since" + ORIGINAL[len(b"written since") :]
    assert file_id(disk) == inode
    assert disk.read_bytes() == expected
    assert listing(disk.parent) == ["vda.img"]
    ov.undo(fold_back(ov))
    assert disk.read_bytes() == expected
    assert listing(disk.parent) == ["vda.img"]


def test_undo_leaves_a_target_that_is_not_its_own(disk: Path) -> None:
    target = disk.with_name("vda.s1.img")
    target.write_bytes(b"someone else's file")
    ov = ExternalOverlay(str(disk), str(target))
    ov.undo(fold_back(ov))
    assert target.read_bytes() == b"someone else's file"
    assert disk.read_bytes() == ORIGINAL


def test_undo_refuses_what_it_cannot_tell(disk: Path) -> None:
    target = str(disk.with_name("vda.s1.img"))
    _crashed(disk, target, "switched")
    with pytest.raises(BackendError, match="no way to fold an overlay back"):
        ExternalOverlay(str(disk), target).undo()
    disk.unlink()
    with pytest.raises(BackendError, match="missing while the snapshot target"):
        ExternalOverlay(str(disk), target).undo()
    assert Path(target).read_bytes() == ORIGINAL


def test_switch_refuses_a_target_that_is_the_live_disk(
    disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command makes P and T one inode right after the rename (the race of issue 9):
    create raises ImageIdentityError instead of returning, and the undo keeps the disk."""
    target = str(disk.with_name("vda.s1.img"))
    ov = ExternalOverlay(str(disk), target, driver="toy", vdev="vda")
    real = overlay_module.fsync_parent

    def hostile(path: str) -> None:
        real(path)
        if path == ov.path and os.path.exists(target) and not same_file(path, target):
            other = f"{disk}.other"
            os.link(target, other)
            os.replace(other, disk)

    monkeypatch.setattr(overlay_module, "fsync_parent", hostile)
    with pytest.raises(ImageIdentityError, match="are one inode") as info:
        ov.create(maker(target), fold_back=fold_back(ov))
    monkeypatch.undo()
    assert info.value.path == str(disk)
    assert info.value.target == target
    assert str(info.value).startswith("disk vda: ")
    assert disk.read_bytes() == ORIGINAL
    assert listing(disk.parent) == ["vda.img"]


def test_switch_refuses_an_image_replaced_by_another_command(
    disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = str(disk.with_name("vda.s1.img"))
    ov = ExternalOverlay(str(disk), target)
    real = overlay_module.fsync_parent

    def hostile(path: str) -> None:
        real(path)
        if path == ov.path and ov.overlay is not None and file_id(path) == ov.overlay:
            other = f"{disk}.other"
            Path(other).write_bytes(header(target))
            os.replace(other, disk)

    monkeypatch.setattr(overlay_module, "fsync_parent", hostile)
    with pytest.raises(ImageIdentityError, match="not the overlay this command wrote"):
        ov.create(maker(target), fold_back=fold_back(ov))


def test_replace_image(disk: Path) -> None:
    replace_image(str(disk), lambda scratch: Path(scratch).write_bytes(b"new"))
    assert disk.read_bytes() == b"new"
    assert disk.stat().st_mode & 0o777 == 0o640

    def broken(scratch: str) -> None:
        Path(scratch).write_bytes(b"half")
        raise Boom("injected")

    with pytest.raises(Boom):
        replace_image(str(disk), broken)
    assert disk.read_bytes() == b"new"
    assert listing(disk.parent) == ["vda.img"]


def test_replace_image_removes_the_scratch_a_killed_command_left(tmp_path: Path) -> None:
    from snapcore.overlay import replace_image, scratch_files, scratch_path

    disk = tmp_path / "vda.img"
    disk.write_bytes(b"old")
    left = Path(scratch_path(str(disk)))  # a revert killed between its write and its rename
    left.write_bytes(b"half")
    other = tmp_path / "vdb.img.123-abcdef01.snapcore-tmp"  # another disk's: not ours
    other.write_bytes(b"x")

    replace_image(str(disk), lambda scratch: Path(scratch).write_bytes(b"new"))

    assert disk.read_bytes() == b"new"
    assert scratch_files(str(disk)) == []
    assert other.exists()


# -- a disk named through a symlink -------------------------------------------------------------


@pytest.fixture
def linked_disk(tmp_path: Path) -> tuple[Path, Path]:
    """A disk named through a relative symlink into another directory: ``links/vda.img ->
    ../images/real.img``; return (the symlink, the image)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "links").mkdir()
    image = tmp_path / "images" / "real.img"
    image.write_bytes(ORIGINAL)
    link = tmp_path / "links" / "vda.img"
    link.symlink_to("../images/real.img")
    return link, image


def test_a_symlinked_disk_keeps_its_symlink_and_the_snapshot_is_the_image_itself(
    linked_disk: tuple[Path, Path],
) -> None:
    link, image = linked_disk
    inode = file_id(image)
    target = str(link.with_name("vda.s1.img"))
    ov = ExternalOverlay(str(link), target)
    ov.create(maker(target), fold_back=fold_back(ov))
    assert link.is_symlink()
    assert os.readlink(link) == "../images/real.img"
    assert image.read_bytes() == header(target), "the symlink names the new overlay"
    assert not os.path.islink(target), "the snapshot is a hard link, not a copy of the symlink"
    assert file_id(target) == inode
    with open(image, "ab") as f:  # the domain writes through either name
        f.write(b"written since")
    assert Path(target).read_bytes() == ORIGINAL, "the checkpoint did not change"
    assert listing(image.parent) == ["real.img"]


@pytest.mark.parametrize("step", ["after-link", "in-write", "after-replace"])
def test_an_undone_create_of_a_symlinked_disk_leaves_the_symlink_and_no_target(
    linked_disk: tuple[Path, Path], step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    link, image = linked_disk
    inode = file_id(image)
    snaps = link.parent.parent / "snaps" / "vda"  # where the symlink's text names nothing
    snaps.mkdir(parents=True)
    target = str(snaps / "vda.s1.img")
    ov = ExternalOverlay(str(link), target)
    make = maker(target)
    if step == "in-write":

        def make(scratch: str) -> None:
            maker(target)(scratch)
            _raise()

    if step == "after-replace":
        monkeypatch.setattr(ov, "verify", _raise)
    with pytest.raises(Boom):
        ov.create(
            make, after_link=_raise if step == "after-link" else None, fold_back=fold_back(ov)
        )
    assert link.is_symlink()
    assert os.readlink(link) == "../images/real.img"
    assert file_id(image) == inode
    assert image.read_bytes() == ORIGINAL
    assert listing(link.parent) == ["vda.img"]
    assert listing(snaps) == [], "no target, dangling or not, is left"
    assert listing(image.parent) == ["real.img"]


def test_replace_image_through_a_symlink_replaces_the_image(
    linked_disk: tuple[Path, Path],
) -> None:
    link, image = linked_disk
    replace_image(str(link), lambda scratch: Path(scratch).write_bytes(b"new"))
    assert link.is_symlink()
    assert image.read_bytes() == b"new"
    assert listing(image.parent) == ["real.img"]
    assert listing(link.parent) == ["vda.img"]
