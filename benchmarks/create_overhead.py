"""Wall time of ``snapcore snapshot-create`` against ``qemu-img snapshot -c``, and of
``snapcore snapshot-list`` with 10,000 checkpoints.

Run: ``.venv/bin/python benchmarks/create_overhead.py [--runs N]``

Both create commands run alternately in the same loop on copies of the same one-disk offline
domain, so machine noise hits both alike; the figures are medians. The list benchmark writes
10,000 checkpoint records through the store (as snapcore itself would) and times the CLI.
Targets (issue 2): create overhead under 150 ms over qemu-img; list under 0.5 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
SNAPCORE = str(VENV_BIN / "snapcore")


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def bench_create(work: Path, runs: int) -> None:
    img_peer = work / "peer.qcow2"
    img_ours = work / "ours.qcow2"
    for img in (img_peer, img_ours):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "1G"], check=True)
    dom = work / "bench.toml"
    dom.write_text(f'name = "bench"\n[[disk]]\nvdev = "vda"\npath = "{img_ours}"\n')
    state = work / "state"
    peer, ours, start_up = [], [], []
    for i in range(runs):
        peer.append(timed(["qemu-img", "snapshot", "-c", f"s{i}", str(img_peer)]))
        ours.append(
            timed([SNAPCORE, "--state-dir", str(state), "snapshot-create", "-n", f"s{i}", str(dom)])
        )
        start_up.append(timed([SNAPCORE, "--version"]))
    p, o, s = (statistics.median(x) * 1000 for x in (peer, ours, start_up))
    print(f"snapshot-create on a one-disk offline domain, {runs} runs each, medians:")
    print(f"  {'qemu-img snapshot -c':<34}{p:8.1f} ms")
    print(f"  {'snapcore snapshot-create':<34}{o:8.1f} ms   ({o / p:.2f}x qemu-img)")
    print(f"  {'overhead (target < 150 ms)':<34}{o - p:8.1f} ms")
    print(f"  {'of which: snapcore --version':<34}{s:8.1f} ms   (interpreter + CLI start-up)")


def bench_list(work: Path, count: int, runs: int) -> None:
    from snapcore.config import load_domain
    from snapcore.model import Checkpoint, DiskSnapshot, DomainState, SnapshotKind
    from snapcore.store import CheckpointStore

    img = work / "list.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "1G"], check=True)
    dom_file = work / "list.toml"
    dom_file.write_text(f'name = "listbench"\n[[disk]]\nvdev = "vda"\npath = "{img}"\n')
    domain = load_domain(dom_file)
    store = CheckpointStore(work / "state-list", domain)
    parent = None
    for i in range(count):
        name = f"cp{i:05d}"
        store.save(
            Checkpoint(
                name=name,
                domain_uuid=domain.uuid,
                creation_time=1_700_000_000 + i,
                state=DomainState.SHUTOFF,
                parent=parent,
                disks=(
                    DiskSnapshot(
                        vdev="vda",
                        path=str(img),
                        driver="qcow2",
                        kind=SnapshotKind.INTERNAL,
                        name=name,
                        locator=str(img),
                        extra={"tag": name},
                    ),
                ),
            )
        )
        parent = name
    store.set_current(parent)
    base = [SNAPCORE, "--state-dir", str(work / "state-list"), "snapshot-list"]
    table = [timed([*base, str(dom_file)]) for _ in range(runs)]
    as_json = [timed([*base, "--json", str(dom_file)]) for _ in range(runs)]
    print(f"\nsnapshot-list with {count} checkpoints, {runs} runs each, medians (target < 0.5 s):")
    print(f"  {'table':<34}{statistics.median(table):8.3f} s")
    print(f"  {'--json':<34}{statistics.median(as_json):8.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--checkpoints", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapcore-bench-"))
    try:
        bench_create(work, args.runs)
        bench_list(work, args.checkpoints, max(3, args.runs // 3))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
