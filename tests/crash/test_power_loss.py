"""Power loss inside ``qemu-img snapshot -c``: snapcore and its qemu-img die together, qemu-img
at its Nth ``pwrite64`` (issue 9 item 2), for every second N (1, 3, 5 ...). ``qemu-img`` is
found on ``PATH`` first as a stand-in script which, for ``snapshot -c`` only, kills snapcore
(its parent) and then runs the real qemu-img under ``strace`` with a SIGKILL injected at that
write. Then ``recover`` and the invariants of :func:`tests.crash.world.verify`.

Known (issue 9 item 2): the image can be left with leaked clusters or OFLAG_COPIED errors that
recover does not repair, so ``qemu-img check`` fails after an exit 0. A qemu-img check/repair
step in recover is being added; until then a case whose only problems are ``qemu-img check``
failures is marked ``xfail(strict=False)``, the one class marked non-strict: which writes leave
damage depends on qemu-img's threads, and the repair may turn these into passes. Any other
problem fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.crash.conftest import BY_ID, VERDICTS, probe
from tests.crash.runner import has_check_command
from tests.crash.world import KINDS, Verdict, World, verify

pytestmark = [
    pytest.mark.crash,
    pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace"),
]

QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"

SHIM = """#!/bin/sh
# qemu-img for the power-loss test: on snapshot -c, kill snapcore, then die at the Nth pwrite64
if [ "$1" = snapshot ] && [ "$2" = -c ]; then
    echo $$ >> "$SNAPCORE_CRASH_PIDS"
    kill -9 $PPID
    exec strace -f -o /dev/null -e trace=pwrite64 \\
        -e inject=pwrite64:signal=SIGKILL:when=$SNAPCORE_CRASH_PWRITE {qemu_img} "$@"
fi
exec {qemu_img} "$@"
"""


def pwrites() -> int:
    """How many pwrite64 a ``qemu-img snapshot -c`` makes on an image like the test's."""
    if shutil.which("strace") is None:
        return 0
    with __import__("tempfile").TemporaryDirectory() as d:
        world = World(Path(d), KINDS["internal"])
        world.build()
        world.write_gen(1)
        img = str(world.disks["vda"])
        subprocess.run([QEMU_IMG, "snapshot", "-c", "one", img], check=True)
        world.write_gen(2)
        trace = Path(d) / "trace"
        strace = ["strace", "-f", "-o", str(trace), "-e", "trace=pwrite64"]
        subprocess.run(
            [*strace, QEMU_IMG, "snapshot", "-c", "two", img],
            check=True,
            capture_output=True,
        )
        return sum("pwrite64(" in line for line in trace.read_text().splitlines())


@pytest.mark.parametrize("when", range(1, pwrites() + 1, 2))
def test_power_loss_inside_qemu_img_snapshot(
    when: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scenario = BY_ID["internal-create"]
    files = probe(scenario).files
    world = World(tmp_path / "w", KINDS["internal"])
    args = world.prepare(scenario)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "qemu-img").write_text(SHIM.replace("{qemu_img}", QEMU_IMG))
    (shim / "qemu-img").chmod(0o755)
    pids = tmp_path / "pids"
    env = {
        **world.env,
        "PATH": f"{shim}:{world.env['PATH']}",
        "SNAPCORE_CRASH_PWRITE": str(when),
        "SNAPCORE_CRASH_PIDS": str(pids),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "snapcore", *args], env=env, capture_output=True, check=False
    )
    assert proc.returncode == -9, proc.stderr
    for pid in pids.read_text().split():  # strace and its qemu-img run on after snapcore died
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    damaged = [
        img.name
        for img in world.disks.values()
        if subprocess.run(
            ["qemu-img", "check", str(img)], capture_output=True, check=False
        ).returncode
    ]
    verdict = verify(
        world,
        scenario,
        Verdict(exit_code=-9, event=f"pwrite64 #{when} of qemu-img snapshot -c"),
        files,
        has_check=has_check_command(world),
    )
    verdict.event += f" (failing qemu-img check before recover: {damaged or 'none'})"
    VERDICTS["power-loss", scenario.id, when] = verdict
    if verdict.problems and all(p.startswith("qemu-img check") for p in verdict.problems):
        request.applymarker(
            pytest.mark.xfail(
                strict=False,
                reason="issue 9 item 2: a kill inside qemu-img snapshot -c leaves an image "
                "failing qemu-img check (leaks, OFLAG_COPIED) that recover does not repair",
            )
        )
    assert verdict.outcome in ("before", "after"), verdict.problems
    assert verdict.clean, "; ".join(verdict.problems)
