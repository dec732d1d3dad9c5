"""Fixtures for the storage backends' tests: plugin managers, contexts and real qcow2 images."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import snapcore_qcow2.plugin
from snapcore.context import HookContext
from snapcore.model import Disk, Domain, DomainState
from snapcore.plugins import Plugins, load_plugins

MiB = 1024 * 1024


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


class QemuTools:
    """qemu-img and qemu-io, run directly, to build images and read them back independently
    of the plugin under test."""

    def __init__(self, scratch: Path):
        self._scratch = scratch
        self._n = 0

    def _tmp(self) -> Path:
        self._n += 1
        return self._scratch / f"dump{self._n}.raw"

    def img(self, *args: str) -> str:
        """Run ``qemu-img ARGS``; fail the test with qemu-img's message if it fails."""
        proc = _run("qemu-img", *args)
        assert proc.returncode == 0, f"qemu-img {' '.join(args)}: {proc.stderr.strip()}"
        return proc.stdout

    def create(self, path: Path, size: int = MiB, *, backing: Path | str | None = None) -> Path:
        """A qcow2 image at *path*, empty or an overlay of *backing* (recorded as given)."""
        if backing is None:
            self.img("create", "-q", "-f", "qcow2", str(path), str(size))
        else:
            self.img("create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "qcow2", str(path))
        return path

    def write(self, path: Path | str, pattern: int, offset: int = 0, length: int = 65536) -> None:
        """Write *length* bytes of *pattern* at *offset*, as a guest would."""
        proc = _run("qemu-io", "-c", f"write -P {pattern:#04x} {offset} {length}", str(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def holds(self, path: Path | str, pattern: int, offset: int = 0, length: int = 65536) -> bool:
        """Whether *length* bytes at *offset* all read *pattern* (``qemu-io -r read -P``)."""
        proc = _run("qemu-io", "-r", "-c", f"read -P {pattern:#04x} {offset} {length}", str(path))
        out = proc.stdout + proc.stderr
        assert "Could not open" not in out, out
        return proc.returncode == 0 and "Pattern verification failed" not in out

    def raw(self, path: Path | str, *, snapshot: str | None = None) -> bytes:
        """The whole guest-visible content of *path* (or of its internal *snapshot*)."""
        out = self._tmp()
        args = ["convert", "-O", "raw"]
        if snapshot is not None:
            args += ["-l", f"snapshot.name={snapshot}"]
        self.img(*args, str(path), str(out))
        try:
            return out.read_bytes()
        finally:
            out.unlink()

    def digest(self, path: Path | str, *, snapshot: str | None = None) -> str:
        """A hash of :meth:`raw`, to compare contents exactly."""
        return hashlib.sha256(self.raw(path, snapshot=snapshot)).hexdigest()

    def info(self, path: Path | str) -> dict[str, Any]:
        """``qemu-img info --output=json`` of *path* alone."""
        data: dict[str, Any] = json.loads(self.img("info", "--output=json", "-U", str(path)))
        return data

    def tags(self, path: Path | str) -> list[str]:
        """The internal snapshot tags of *path*."""
        return [s["name"] for s in self.info(path).get("snapshots", [])]

    def backing(self, path: Path | str) -> str | None:
        """The resolved real path of the backing file of *path*, or ``None``."""
        value = self.info(path).get("backing-filename")
        if value is None:
            return None
        return os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(path)), value))


@pytest.fixture
def qemu(tmp_path: Path) -> QemuTools:
    """qemu-img and qemu-io helpers working in a scratch directory."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return QemuTools(scratch)


@pytest.fixture
def plugins() -> Plugins:
    """A fresh plugin manager with the qcow2 backend registered as a plugin."""
    return load_plugins(entry_points=False, extra=[("qcow2", snapcore_qcow2.plugin)])


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """The directory the disk images live in."""
    path = tmp_path / "images"
    path.mkdir()
    return path


@pytest.fixture
def disk(images: Path, qemu: QemuTools) -> Disk:
    """A fresh 1 MiB qcow2 disk ``vda`` owned by the qcow2 driver."""
    path = qemu.create(images / "vda.qcow2")
    return Disk(vdev="vda", path=str(path), driver="qcow2")


MakeCtx = Callable[..., HookContext]


@pytest.fixture
def make_ctx() -> MakeCtx:
    """Build the hook context of a one-domain test for some disks (and a domain state)."""

    def make(*disks: Disk, state: DomainState = DomainState.SHUTOFF) -> HookContext:
        return HookContext(domain=Domain(name="vm1", disks=disks), state=state)

    return make


@pytest.fixture
def ctx(make_ctx: MakeCtx, disk: Disk) -> HookContext:
    """The hook context of domain ``vm1``, shut off, with :func:`disk`."""
    return make_ctx(disk)
