"""Live checkpoints and what they cost, measured in the guest (TCG: figures are slow in absolute
terms; compare them with each other).

The ``qemu`` hypervisor plugin is not part of this suite, so a running domain is played by a
stand-in hypervisor that records when the coordinator pauses and resumes it; the LVM commands
are real. The test checks that every ``lvcreate`` of a checkpoint runs inside the single pause,
and records how long the pause and each ``lvcreate`` take with 1, 2 and 4 LV disks (a qcow2
disk of a running domain needs QMP, so it is left out here). Write throughput is measured with
fio on a plain LV, a classic LV with a full-size snapshot, and a thin LV with a snapshot.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from snapcore import CreateOptions, Host
from snapcore.model import Disk, Domain, DomainState
from snapcore.process import DEFAULT_TIMEOUT, Result, ShRunner
from tests.fakes import FakeHypervisor
from tests.lvm.conftest import MiB, Volumes, fill, lv_digest, run

pytestmark = pytest.mark.lvm


class TimedRunner:
    """The real runner, recording when each command starts and ends."""

    def __init__(self, events: list[tuple[str, float]]):
        self.events = events
        self._real = ShRunner()
        self._lock = threading.Lock()

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Sequence[int] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        start = time.monotonic()
        try:
            return self._real(argv, ok_codes=ok_codes, timeout=timeout, env=env)
        finally:
            with self._lock:
                self.events.append((f"{argv[0]} start", start))
                self.events.append((f"{argv[0]} end", time.monotonic()))


class TimedHypervisor(FakeHypervisor):
    """A running domain whose pause and resume are timed."""

    def __init__(self, events: list[tuple[str, float]]):
        super().__init__(DomainState.RUNNING)
        self.events = events

    def _enter(self, name: str) -> None:
        super()._enter(name)
        self.events.append((name, time.monotonic()))


@pytest.mark.parametrize("count", [1, 2, 4])
def test_live_checkpoint_lvcreate_inside_the_pause(
    count: int, volumes: Volumes, tmp_path: Path, results: dict[str, Any]
) -> None:
    # LV disks only: a running qcow2 disk is snapshotted through QMP, which needs a real QEMU
    origins = [volumes.classic(4, vdev=f"vd{chr(ord('a') + i)}") for i in range(count)]
    digests = [fill(d.path, 70 + i) for i, d in enumerate(origins)]
    disks = [Disk(vdev=d.vdev, path=d.path) for d in origins]  # claimed, not named
    events: list[tuple[str, float]] = []
    host = Host(state_dir=tmp_path / "state", entry_points=True, runner=TimedRunner(events))
    host.register(TimedHypervisor(events), "fakehv")
    domain = host.open_domain(Domain(name=f"live{count}", disks=tuple(disks), hypervisor="fakehv"))

    checkpoint = domain.create(CreateOptions(name="c1", memory="no"))

    assert checkpoint.state is DomainState.RUNNING
    assert [d.driver for d in checkpoint.disks] == ["lvm"] * count
    names = [e for e, _ in events]
    assert names.count("pause") == 1, names
    assert names.count("resume") == 1, names
    paused = next(t for e, t in events if e == "pause")
    resumed = next(t for e, t in events if e == "resume")
    starts = sorted(t for e, t in events if e == "lvcreate start")
    ends = sorted(t for e, t in events if e == "lvcreate end")
    assert len(starts) == count
    assert paused <= starts[0], "an lvcreate started before the pause"
    assert ends[-1] <= resumed, "an lvcreate ended after the resume"
    for origin, expected in zip(origins, digests, strict=True):
        lv = origin.path.rsplit("/", 1)[1]
        assert lv_digest(volumes.vg, f"{lv}+c1") == expected

    each = [e - s for s, e in zip(starts, ends, strict=True)]
    entry = results.setdefault(
        "pause",
        {
            "table": [
                "| LV disks | pause (s) | lvcreate, each (s) |",
                "|---|---|---|",
            ]
        },
    )
    entry[str(count)] = {"pause_s": resumed - paused, "lvcreate_s": each}
    entry["table"].append(
        f"| {count} | {resumed - paused:.2f} | {', '.join(f'{x:.2f}' for x in each)} |"
    )


def _fio(path: str, rw: str, bs: str, size_mib: int) -> float:
    """Write throughput in MiB/s of one fio job (O_DIRECT, psync) on *path*."""
    if shutil.which("fio") is None:
        pytest.skip("fio is not installed")
    out = subprocess.run(
        [
            "fio", "--name=w", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
            f"--size={size_mib}M", "--direct=1", "--ioengine=psync", "--output-format=json",
            "--randrepeat=1", "--norandommap",
        ],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    job = json.loads(out)["jobs"][0]["write"]
    return float(job["bw_bytes"]) / MiB


def test_write_throughput_classic_against_thin(volumes: Volumes, results: dict[str, Any]) -> None:
    size = 48
    plain = volumes.classic(size)
    classic = volumes.classic(size)
    thin = volumes.thin(size)
    thin_plain = volumes.thin(size)
    for disk in (plain, classic, thin, thin_plain):
        fill(disk.path, 80)  # allocate everything first: measure overwrites only
    vg = volumes.vg
    run("lvcreate", "-q", "--snapshot", "--extents", "100%ORIGIN", "--name",
        f"{classic.path.rsplit('/', 1)[1]}+m", classic.path)  # fmt: skip
    run("lvcreate", "-q", "--snapshot", "--setactivationskip", "y", "--name",
        f"{thin.path.rsplit('/', 1)[1]}+m", f"{vg}/{thin.path.rsplit('/', 1)[1]}")  # fmt: skip
    table = [
        "| LV | sequential 1 MiB writes (MiB/s) | random 4 KiB writes (MiB/s) |",
        "|---|---|---|",
    ]
    figures: dict[str, Any] = {}
    for label, disk in (
        ("classic, no snapshot", plain),
        ("classic, 100%ORIGIN snapshot", classic),
        ("thin, no snapshot", thin_plain),
        ("thin, snapshot", thin),
    ):
        rnd = _fio(disk.path, "randwrite", "4k", 8)  # first: into blocks not yet copied
        seq = _fio(disk.path, "write", "1M", size)
        figures[label] = {"seq_mib_s": seq, "rand4k_mib_s": rnd}
        table.append(f"| {label} | {seq:.1f} | {rnd:.2f} |")
        assert seq > 0
        assert rnd > 0
    figures["table"] = table
    results["throughput"] = figures
