"""Hostile images refused before anything is touched (issue 9, "the door"): a qcow2 whose
backing chain reaches a system file, a device, a raw file outside the domain's image
directories, or loops back on itself; names that cannot fit. Each case is refused with exit 2
naming the file, and the images and the state dir hash the same before and after."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.join(dirpath, name) + "/"] = ""
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


def _overlay(path: Path, backing: str, fmt: str) -> None:
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            backing,
            "-F",
            fmt,
            str(path),
            "16M",
        ],
        check=True,
    )


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapcore", "--state-dir", str(tmp / "state"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _domain(tmp: Path, image: Path) -> Path:
    path = tmp / "dom.toml"
    path.write_text(f'name = "dom"\n[[disk]]\nvdev = "vda"\npath = "{image}"\n')
    return path


@pytest.mark.parametrize(
    ("backing", "fmt", "problem"),
    [
        ("/etc/shadow", "raw", "the backing file /etc/shadow is a system file"),
        ("/dev/zero", "raw", "the backing file /dev/zero is a system file"),
        ("/proc/self/environ", "raw", "is a system file"),
    ],
)
def test_a_backing_chain_into_system_files_is_refused(
    tmp_path: Path, backing: str, fmt: str, problem: str
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    image = images / "vda.qcow2"
    _overlay(image, backing, fmt)
    dom = _domain(tmp_path, image)
    before = _tree(tmp_path)

    for args in (("snapshot-create", "-n", "s1"), ("snapshot-create", "--dry-run", "-n", "s1")):
        proc = _run(tmp_path, *args, str(dom))
        assert proc.returncode == 2, proc.stderr
        assert problem in proc.stderr
        assert "Traceback" not in proc.stderr
    assert _tree(tmp_path) == before


def test_a_raw_backing_file_outside_the_image_directories_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "secrets"
    elsewhere.mkdir()
    (elsewhere / "key").write_bytes(b"not an image" * 100)
    images = tmp_path / "images"
    images.mkdir()
    image = images / "vda.qcow2"
    _overlay(image, str(elsewhere / "key"), "raw")
    dom = _domain(tmp_path, image)
    before = _tree(tmp_path)

    proc = _run(tmp_path, "snapshot-create", "-n", "s1", str(dom))

    assert proc.returncode == 2, proc.stderr
    assert f"the backing file {elsewhere / 'key'} is not an image of a known format" in proc.stderr
    assert _tree(tmp_path) == before


def test_known_images_and_raw_files_beside_the_disk_are_followed(tmp_path: Path) -> None:
    base_dir = tmp_path / "bases"
    base_dir.mkdir()
    base = base_dir / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    images = tmp_path / "images"
    images.mkdir()
    raw = images / "seed.raw"
    raw.write_bytes(bytes(1 << 20))
    vda = images / "vda.qcow2"
    _overlay(vda, str(base), "qcow2")  # a qcow2 base in another directory
    vdb = images / "vdb.qcow2"
    _overlay(vdb, str(raw), "raw")  # a raw base beside the disk
    dom = tmp_path / "dom.toml"
    dom.write_text(
        f'name = "dom"\n[[disk]]\nvdev = "vda"\npath = "{vda}"\n'
        f'[[disk]]\nvdev = "vdb"\npath = "{vdb}"\n'
    )
    proc = _run(tmp_path, "snapshot-create", "-n", "s1", str(dom))
    assert proc.returncode == 0, proc.stderr


def test_a_chain_that_loops_is_refused(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    a, b = images / "a.qcow2", images / "b.qcow2"
    _overlay(a, str(b), "qcow2")
    _overlay(b, str(a), "qcow2")
    dom = _domain(tmp_path, a)
    before = _tree(tmp_path)

    proc = _run(tmp_path, "snapshot-create", "-n", "s1", str(dom))

    assert proc.returncode == 2, proc.stderr
    assert f"its backing chain loops back to {a}" in proc.stderr
    assert _tree(tmp_path) == before


def test_a_name_that_cannot_fit_is_refused_up_front(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    image = images / ("d" * 200 + ".qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    cfg = tmp_path / "s.cfg"
    cfg.write_text('name = "' + "n" * 64 + '"\ntype = "external"\n')
    dom = _domain(tmp_path, image)
    before = _tree(tmp_path)

    proc = _run(tmp_path, "snapshot-create", str(cfg), str(dom))

    assert proc.returncode == 2, proc.stderr
    assert "bytes; at most 255" in proc.stderr or "too long for the scratch name" in proc.stderr
    assert _tree(tmp_path) == before
