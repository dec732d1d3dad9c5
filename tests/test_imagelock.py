"""Host-wide image locks: two commands never work on one image at once, whatever the domain
file or the state dir they come from."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapcore import cli
from snapcore.errors import ImageLockedError, StoreLockedError
from snapcore.imagelock import hold_images, image_keys, lock_dir
from snapcore.model import Disk, Domain


@pytest.fixture(autouse=True)
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lock directory of this test's own (the host's is /run/snapcore/locks)."""
    path = tmp_path / "locks"
    monkeypatch.setenv("SNAPCORE_LOCK_DIR", str(path))
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    (d / "a.img").write_bytes(b"a")
    (d / "b.img").write_bytes(b"a")  # same content, another image
    return d


def domain(name: str, *paths: Path | str, readonly: bool = False) -> Domain:
    return Domain(
        name=name,
        disks=tuple(
            Disk(vdev=f"vd{chr(ord('a') + i)}", path=str(p), readonly=readonly)
            for i, p in enumerate(paths)
        ),
    )


# -- keys --------------------------------------------------------------------------------------


def test_every_name_of_one_image_shares_a_key(images: Path) -> None:
    (images / "alias.img").symlink_to("a.img")
    os.link(images / "a.img", images / "hard.img")
    names = ["a.img", "alias.img", "hard.img", "./a.img"]
    keysets = [set(image_keys(str(images / n))) for n in names]
    for keys in keysets[1:]:
        assert keys & keysets[0], names
    assert not set(image_keys(str(images / "b.img"))) & keysets[0]


def test_a_path_that_does_not_exist_is_keyed_by_its_real_path(tmp_path: Path) -> None:
    (keys,) = {image_keys(str(tmp_path / "gone" / ".." / "x.img"))}
    assert len(keys) == 1
    assert keys == image_keys(str(tmp_path / "x.img"))


def test_the_lock_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lock_dir(tmp_path / "state") == tmp_path / "locks"  # $SNAPCORE_LOCK_DIR
    monkeypatch.delenv("SNAPCORE_LOCK_DIR")
    if os.access("/run", os.W_OK):
        assert lock_dir(tmp_path / "state") == Path("/run/snapcore/locks")


# -- in one process ----------------------------------------------------------------------------


def test_two_domains_sharing_an_image_contend_from_two_state_dirs(
    tmp_path: Path, images: Path, locks: Path
) -> None:
    (images / "shared.img").symlink_to("a.img")
    first = domain("one", images / "a.img")
    second = domain("two", images / "b.img", images / "shared.img")

    with hold_images(first, state_dir=tmp_path / "s1", timeout=1):
        with (
            pytest.raises(ImageLockedError) as info,
            hold_images(second, state_dir=tmp_path / "s2", timeout=0),
        ):
            pytest.fail("two commands hold one image")
        assert isinstance(info.value, StoreLockedError)  # busy: exit 4
        assert (info.value.vdev, info.value.path) == ("vdb", str(images / "shared.img"))
        assert str(info.value).startswith(
            f"disk vdb ({images}/shared.img) of domain 'two' is busy: another command held "
            "its image lock for the 0 s this one waited; nothing was changed"
        )
        # what the refused call had taken (b.img's keys) was released again
        with hold_images(domain("three", images / "b.img"), state_dir=tmp_path, timeout=0):
            pass

    with hold_images(second, state_dir=tmp_path / "s2", timeout=0):
        pass
    assert list(locks.iterdir()) == []  # no lock file is left behind


def test_read_only_disks_are_not_locked(tmp_path: Path, images: Path) -> None:
    iso = domain("cd", images / "a.img", readonly=True)
    with (
        hold_images(domain("one", images / "a.img"), state_dir=tmp_path, timeout=0),
        hold_images(iso, state_dir=tmp_path, timeout=0),
    ):
        pass


def test_without_a_lock_dir_the_state_dir_holds_them_and_keeps_no_trace(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("snapcore.imagelock.RUN_LOCK_DIR", Path("/proc/no-such-dir"))
    monkeypatch.delenv("SNAPCORE_LOCK_DIR")
    state = tmp_path / "state"
    state.mkdir()
    with hold_images(domain("one", images / "a.img"), state_dir=state, timeout=0):
        assert len(list((state / "locks").iterdir())) == 2
        with (
            pytest.raises(ImageLockedError),
            hold_images(domain("two", images / "a.img"), state_dir=state, timeout=0),
        ):
            pytest.fail("two commands hold one image")
    assert list(state.iterdir()) == []


def test_the_lock_files_of_a_killed_command_are_removed_by_the_next_one(
    tmp_path: Path, images: Path, locks: Path
) -> None:
    """A command killed while it held its image locks leaves their files (the kernel drops
    only the locks); the next command on any image removes them, but never a file another
    live command holds, nor a file not named like a lock."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from snapcore.imagelock import hold_images
        from snapcore.model import Disk, Domain

        dom = Domain(name="k", disks=(Disk(vdev="vda", path=sys.argv[1]),))
        with hold_images(dom, state_dir=sys.argv[2], timeout=5):
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(images / "a.img"), str(tmp_path)], check=False
    )
    assert killed.returncode == -9
    left = sorted(p.name for p in locks.iterdir())
    assert sorted(image_keys(str(images / "a.img"))) == left
    (locks / "notes.txt").write_text("not a lock")
    held = domain("live", images / "b.img")
    with hold_images(held, state_dir=tmp_path, timeout=0):
        with hold_images(domain("next", tmp_path / "c.img"), state_dir=tmp_path, timeout=0):
            names = {p.name for p in locks.iterdir()}
        assert not names & set(left), "the killed command's lock files are still there"
        assert set(image_keys(str(images / "b.img"))) <= names, "a held lock file was removed"
        assert "notes.txt" in names
        # and the image the killed command held can be locked again
        with hold_images(domain("again", images / "a.img"), state_dir=tmp_path, timeout=0):
            pass


# -- two processes, through the command line ---------------------------------------------------

# Holds what a command on domain file argv[2] in state dir argv[1] holds (the domain's lock,
# then its images' locks) until a line arrives on stdin.
HOLD = textwrap.dedent(
    """
    import sys
    from snapcore.config import load_domain
    from snapcore.imagelock import hold_images
    from snapcore.store import CheckpointStore

    dom = load_domain(sys.argv[2])
    with CheckpointStore(sys.argv[1], dom).lock(timeout=5):
        with hold_images(dom, state_dir=sys.argv[1], timeout=5):
            print("locked", flush=True)
            sys.stdin.readline()
    """
)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def two_domains(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Domain files one.toml and two.toml whose disks are one qcow2 image (two through a
    symlink); return both and the image."""
    if shutil.which("qemu-img") is None:
        pytest.skip("needs qemu-img")
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    (tmp_path / "alias.qcow2").symlink_to("disk.qcow2")
    one = tmp_path / "one.toml"
    one.write_text(f'name = "one"\n[[disk]]\nvdev = "vda"\npath = "{image}"\n')
    two = tmp_path / "two.toml"
    two.write_text(f'name = "two"\n[[disk]]\nvdev = "xvda"\npath = "{tmp_path}/alias.qcow2"\n')
    return one, two, image


@pytest.fixture
def holder(tmp_path: Path, two_domains: tuple[Path, Path, Path]) -> Iterator[subprocess.Popen[str]]:
    """A process holding what a command on domain one (state dir s1) holds."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    argv = [sys.executable, str(script), str(tmp_path / "s1"), str(two_domains[0])]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            proc.kill()
            proc.wait()


def _tags(image: Path) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "snapshot", "-l", str(image)], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[1] for line in out.splitlines()[2:]]


def test_a_command_on_another_domain_sharing_the_disk_is_refused_as_busy(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    two_domains: tuple[Path, Path, Path],
    holder: subprocess.Popen[str],
) -> None:
    two = two_domains[1]
    before = digest(tmp_path)

    state = ["--state-dir", str(tmp_path / "s2"), "--lock-timeout", "0.5"]
    code = cli.main([*state, "snapshot-create", "-n", "x", str(two)])

    out, err = capsys.readouterr()
    assert (code, out) == (4, "")
    assert err.startswith(
        f"snapcore: error: disk xvda ({tmp_path}/alias.qcow2) of domain 'two' is busy: "
        f"another command (pid {holder.pid}: {sys.executable} "
    )
    assert len(err.splitlines()) == 1
    assert digest(tmp_path) == before  # the image, and no s2 at all
    assert not (tmp_path / "s2").exists()


def _has_open_file_in(pid: int, directory: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"{directory}/"):
                return True
    return False


def test_the_second_command_waits_for_the_first_and_then_runs(
    tmp_path: Path,
    two_domains: tuple[Path, Path, Path],
    holder: subprocess.Popen[str],
    locks: Path,
) -> None:
    _, two, image = two_domains
    argv = [sys.executable, "-m", "snapcore", "--state-dir", str(tmp_path / "s2")]
    with subprocess.Popen(
        [*argv, "snapshot-create", "-n", "x", str(two)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as second:
        # it takes domain two's own lock, then waits with the image's lock file open
        while not _has_open_file_in(second.pid, locks) and second.poll() is None:
            os.sched_yield()
        assert second.poll() is None, second.communicate()
        assert _tags(image) == []
        assert holder.stdin is not None
        holder.stdin.write("release\n")
        holder.stdin.close()
        out, err = second.communicate(timeout=60)
    assert (second.returncode, err) == (0, "")
    assert out == "created snapshot x of domain two (xvda internal)\n"
    assert _tags(image) == ["x"]
