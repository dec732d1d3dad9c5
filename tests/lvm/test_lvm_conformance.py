"""The hook contract (snapcore.testing.BackendConformance) on real classic and thin LVs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import snapcore_lvm.plugin
from snapcore.model import Disk
from snapcore.testing import BackendConformance
from tests.lvm.conftest import Volumes, read, write

pytestmark = pytest.mark.lvm


class _LvmConformance(BackendConformance):
    plugin = snapcore_lvm.plugin
    driver = "lvm"
    disk_size = 4 * 1024 * 1024
    thin: ClassVar[bool] = False
    _volumes: Volumes

    @pytest.fixture(autouse=True)
    def _lvs(self, volumes: Volumes) -> Iterator[None]:
        self._volumes = volumes
        return

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        del tmp_path
        size_mib = size // (1024 * 1024)
        if self.thin:
            return self._volumes.thin(size_mib, vdev=vdev)
        return self._volumes.classic(size_mib, vdev=vdev)

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        write(disk.path, offset, data)

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        return read(disk.path, offset, length)


class TestClassicConformance(_LvmConformance):
    thin = False


class TestThinConformance(_LvmConformance):
    thin = True
