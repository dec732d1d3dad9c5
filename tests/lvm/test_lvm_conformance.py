"""The hook contract (snapcore.testing.BackendConformance) on real classic and thin LVs.

The tests of conformance suite 2.0 that rerun an operation once per layer or once per command
(fault injection) take minutes each on device-mapper in a TCG guest: together they overran the
guest's 20 minutes. They are left out of the CI run and run with
``SNAPCORE_LVM_FULL_CONFORMANCE=1 scripts/lvm-guest.sh tests/lvm/test_lvm_conformance.py``.
"""

from __future__ import annotations

import os
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
    # The kill variant reruns create, delete and revert once per command in a forked child,
    # each rerun with the recovery after it: hours on device-mapper under TCG. Off, even with
    # $SNAPCORE_LVM_FULL_CONFORMANCE (the exception variant there covers the same commands).
    kill_faults = False
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


#: The suite tests left out unless $SNAPCORE_LVM_FULL_CONFORMANCE is set (see the docstring).
SLOW_ON_LVM = (
    "test_delete_one_layer_keeps_the_others",
    "test_delete_every_layer_in_turn",
    "test_delete_after_revert_keeps_every_branch",
    "test_failed_create_leaves_nothing",
    "test_failed_revert_is_all_or_nothing",
    "test_failed_delete_keeps_every_other_layer",
)
if not os.environ.get("SNAPCORE_LVM_FULL_CONFORMANCE"):
    for _name in SLOW_ON_LVM:
        setattr(_LvmConformance, _name, None)  # not a test any more in these classes
