"""Checkpoints of a running Xen PV domain: snapcore against the same steps by hand with xl.

Runs inside dom0 of the Xen guest (scripts/xen-guest.sh boots it); from this machine::

    scripts/xen-guest.sh --exec '.venv/bin/python benchmarks/xen_checkpoint.py --runs 3'

One PV domain (Debian's kernel, the harness's busybox initramfs that writes a heartbeat to its
disks every second), 96 MiB, two 16 MiB qcow2 disks served by libxl's qdisk QEMU. Two
measurements, the two sides alternating run by run so that the machine's load hits both alike;
figures are medians:

* **disk-only checkpoint** (``snapcore snapshot-create -D``): how long the guest is paused, from
  the start of ``xl pause`` to the start of ``xl unpause`` (snapcore's ``-vv`` log lines,
  timestamped as they arrive), and the command's wall time. The peer does the same by hand:
  ``xl pause``, one QMP ``transaction`` of ``blockdev-snapshot-internal-sync`` on both disks
  sent straight to libxl's socket ``/run/xen/qmp-libxl-DOMID`` (a minimal client), ``xl
  unpause``;
* **checkpoint with memory** (``snapcore snapshot-create``: ``xl save -p``, the disks switched
  over QMP, ``xl unpause``): wall time, and the time the guest is stopped (from ``xl save`` to
  ``xl unpause``). The peer is the plain way: ``xl save NAME FILE`` (the domain is destroyed
  and its qdisk QEMU exits), ``qemu-img snapshot -c`` of each disk, ``xl restore FILE`` to
  have the guest running again as snapcore leaves it (times given per step).

Both sides are also watched from outside: a thread runs ``xl list NAME`` in a loop and
reports how long it saw the domain stopped (paused, suspended or gone), bracketed by its
samples. Everything runs as subprocesses, snapcore included (``.venv/bin/snapcore``), whose
start-up time is given too. Memory images are removed after each run (dom0's /tmp is RAM).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GUEST_FILES = Path("/opt/xen-guest")
CONSOLE_LOGS = Path("/var/log/xen/console")
HEARTBEAT = re.compile(rb"\[domU\] heartbeat (\d+)")
SNAPCORE = Path(sys.executable).with_name("snapcore")


def sh(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def timed(*argv: str) -> float:
    start = time.monotonic()
    sh(*argv)
    return time.monotonic() - start


def xl_flags(name: str) -> str | None:
    proc = subprocess.run(["xl", "list", name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.splitlines()[1].split()[4]


class Watch:
    """``xl list NAME`` in a loop: how long the domain was seen stopped (paused, suspended,
    or not there), at least (first to last stopped sample) and at most (the running samples
    around them)."""

    def __init__(self, name: str):
        self.name = name
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            before = time.monotonic()
            flags = xl_flags(self.name)
            stopped = flags is None or "p" in flags or "s" in flags
            self.samples.append(((before + time.monotonic()) / 2, stopped))

    def __enter__(self) -> Watch:
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self._stop.set()
        self._thread.join()

    def window(self) -> tuple[float, float, float]:
        """(at least, at most, mean sampling interval) in seconds."""
        s = self.samples
        interval = (s[-1][0] - s[0][0]) / max(len(s) - 1, 1)
        stopped = [i for i, (_, p) in enumerate(s) if p]
        if not stopped:
            return 0.0, interval * 2, interval
        first, last = stopped[0], stopped[-1]
        before = s[first - 1][0] if first > 0 else s[first][0]
        after = s[last + 1][0] if last + 1 < len(s) else s[last][0]
        return s[last][0] - s[first][0], after - before, interval


class Qmp:
    """Just enough QMP for the by-hand side: greeting, capabilities, one command at a time
    (events are skipped)."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self._read()
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = json.loads(self.file.readline())
            if "event" not in msg:
                return msg

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise SystemExit(f"QMP {command}: {reply['error']}")
        return reply["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Domain:
    """The PV domain both sides checkpoint."""

    def __init__(self, tmp: Path, name: str, memory: int):
        self.name = name
        self.tmp = tmp
        self.state = tmp / "state"
        self.disks = [tmp / f"{name}-xvd{v}.qcow2" for v in "ab"]
        for img in self.disks:
            sh("qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M")
        specs = ", ".join(
            f'"format=qcow2,vdev=xvd{v},access=rw,backendtype=qdisk,target={img}"'
            for v, img in zip("ab", self.disks, strict=True)
        )
        self.cfg = tmp / f"{name}.cfg"
        self.cfg.write_text(
            f'name = "{name}"\ntype = "pv"\nkernel = "{GUEST_FILES / "vmlinuz"}"\n'
            f'ramdisk = "{GUEST_FILES / "domU-initrd.gz"}"\nextra = "console=hvc0 loglevel=4"\n'
            f"memory = {memory}\nvcpus = 1\ndisk = [ {specs} ]\n"
        )
        self.file = tmp / f"{name}.toml"
        self.file.write_text(
            f'name = "{name}"\nhypervisor = "xen"\n[xen]\nconfig = "{self.cfg}"\n'
            + "".join(
                f'[[disk]]\nvdev = "xvd{v}"\npath = "{img}"\ndriver = "qcow2"\n'
                for v, img in zip("ab", self.disks, strict=True)
            )
        )
        self.console = CONSOLE_LOGS / f"guest-{name}.log"

    def heartbeat(self) -> int:
        try:
            beats = HEARTBEAT.findall(self.console.read_bytes())
        except FileNotFoundError:
            return 0
        return int(beats[-1]) if beats else 0

    def wait_running(self, beats: int = 2, timeout: float = 180) -> None:
        """Wait until the guest counts *beats* more heartbeats (it runs, steadily)."""
        goal = self.heartbeat() + beats
        deadline = time.monotonic() + timeout
        while self.heartbeat() < goal:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: no heartbeat {goal} in {timeout} s")
            time.sleep(0.3)

    def create(self) -> float:
        start = time.monotonic()
        for attempt in (1, 2):
            proc = subprocess.run(
                ["xl", "create", str(self.cfg)], capture_output=True, text=True, check=False
            )
            if proc.returncode == 0:
                break
            # libxl gives the qdisk QEMU 10 s per QMP command while it starts: a loaded
            # machine misses it now and then ("Post DM startup configs failed")
            subprocess.run(["xl", "destroy", self.name], capture_output=True, check=False)
            if attempt == 2:
                raise SystemExit(f"xl create: {proc.stderr.strip()}")
        self.wait_running(1)
        return time.monotonic() - start

    def domid(self) -> int:
        return int(sh("xl", "domid", self.name).stdout)

    def snapcore(self, *args: str) -> tuple[float, dict[str, float], str]:
        """Run ``snapcore -vv ARGS DOMAIN``: wall time, the arrival time of each ``run: xl
        VERB`` log line (the first of each verb), stdout."""
        argv = [str(SNAPCORE), "-vv", "--state-dir", str(self.state), *args, str(self.file)]
        marks: dict[str, float] = {}
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        assert proc.stdout is not None
        err = []
        commands = 0
        for line in proc.stderr:
            now = time.monotonic()
            err.append(line)
            commands += "DEBUG: run" in line
            m = re.search(r"run: xl (\w+)", line)
            if m:
                marks.setdefault(m.group(1), now)
        marks["commands"] = commands
        marks["start"] = start
        out = proc.stdout.read()
        rc = proc.wait()
        wall = time.monotonic() - start
        if rc != 0:
            raise SystemExit(f"snapcore {' '.join(args)}: exit {rc}: {''.join(err[-5:])}")
        return wall, marks, out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def disk_only(dom: Domain, run: int) -> dict[str, float]:
    dom.wait_running()
    with Watch(dom.name) as watch:
        wall, marks, _ = dom.snapcore("snapshot-create", "-D", "-n", f"d{run}")
    seen = watch.window()
    return {
        "wall": wall,
        "to_pause": marks["pause"] - marks["start"],
        "commands": marks["commands"],
        "paused": marks["unpause"] - marks["pause"],
        "seen_min": seen[0],
        "seen_max": seen[1],
        "poll": seen[2],
    }


def disk_only_by_hand(dom: Domain, run: int) -> dict[str, float]:
    dom.wait_running()
    with Watch(dom.name) as watch:
        start = time.monotonic()
        qmp = Qmp(f"/run/xen/qmp-libxl-{dom.domid()}")
        nodes = [b["inserted"]["node-name"] for b in qmp.execute("query-block") if "inserted" in b]
        paused = time.monotonic()  # from the start of xl pause, as snapcore's figure
        sh("xl", "pause", dom.name)
        actions = [
            {
                "type": "blockdev-snapshot-internal-sync",
                "data": {"device": node, "name": f"hd{run}"},
            }
            for node in nodes
        ]
        qmp.execute("transaction", {"actions": actions})
        unpausing = time.monotonic()
        sh("xl", "unpause", dom.name)
        qmp.close()
        wall = time.monotonic() - start
    seen = watch.window()
    return {
        "wall": wall,
        "paused": unpausing - paused,
        "seen_min": seen[0],
        "seen_max": seen[1],
        "poll": seen[2],
    }


def with_memory(dom: Domain, run: int) -> dict[str, float]:
    dom.wait_running()
    with Watch(dom.name) as watch:
        wall, marks, out = dom.snapcore("snapshot-create", "-n", f"m{run}")
    seen = watch.window()
    image = re.search(r"memory in (\S+?)[,)]", out)
    if image:
        Path(image.group(1)).unlink(missing_ok=True)
    return {
        "wall": wall,
        "to_save": marks["save"] - marks["start"],
        "commands": marks["commands"],
        "stopped": marks["unpause"] - marks["save"],
        "seen_min": seen[0],
        "seen_max": seen[1],
        "poll": seen[2],
    }


def with_memory_by_hand(dom: Domain, run: int) -> dict[str, float]:
    dom.wait_running()
    image = dom.tmp / f"hand{run}.save"
    with Watch(dom.name) as watch:
        start = time.monotonic()
        save = timed("xl", "save", dom.name, str(image))
        snap = sum(timed("qemu-img", "snapshot", "-c", f"hm{run}", str(img)) for img in dom.disks)
        restore = timed("xl", "restore", str(image))
        wall = time.monotonic() - start
    seen = watch.window()
    image.unlink()
    return {
        "wall": wall,
        "save": save,
        "qemu-img": snap,
        "restore": restore,
        "stopped": wall,
        "seen_min": seen[0],
        "seen_max": seen[1],
        "poll": seen[2],
    }


Side = Callable[[Domain, int], dict[str, float]]


def alternate(dom: Domain, runs: int, a: Side, b: Side, label: str) -> tuple[list[Any], list[Any]]:
    ra: list[dict[str, float]] = []
    rb: list[dict[str, float]] = []
    for i in range(runs):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        for side in (first, second):
            result = side(dom, i)
            (ra if side is a else rb).append(result)
            who = "snapcore" if side is a else "by hand"
            shown = " ".join(f"{k}={v:.2f}" for k, v in result.items())
            print(f"  {label} run {i + 1} {who}: {shown}", flush=True)
    return ra, rb


def med(results: list[dict[str, float]], key: str) -> float:
    return median([r[key] for r in results])


def row(what: str, mine: float, peer: float, peer_what: str) -> str:
    ratio = mine / peer if peer else float("nan")
    return f"| {what} | {mine:.2f} s | {peer_what} | {peer:.2f} s | x{ratio:.2f} |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--memory", type=int, default=96, help="the domain's MiB (default 96)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    try:
        dom0 = "control_d" in Path("/proc/xen/capabilities").read_text()
    except OSError:
        dom0 = False
    if not dom0:
        print("needs a Xen dom0: scripts/xen-guest.sh --exec '.venv/bin/python ...'")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="xenbench-"))
    dom = Domain(tmp, "bench", args.memory)
    try:
        start = time.monotonic()
        sh(str(SNAPCORE), "--version")
        startup = time.monotonic() - start
        print(f"snapcore start-up (snapcore --version): {startup:.2f} s", flush=True)
        created = dom.create()
        print(f"xl create to the first heartbeat: {created:.1f} s", flush=True)
        d_mine, d_hand = alternate(dom, args.runs, disk_only, disk_only_by_hand, "disk-only")
        m_mine, m_hand = alternate(dom, args.runs, with_memory, with_memory_by_hand, "memory")
    finally:
        subprocess.run(["xl", "destroy", dom.name], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"Xen 4.17 PV domain, {args.memory} MiB, 2 qcow2 disks on qdisk; "
        f"medians of {args.runs} alternating runs"
    )
    print()
    print("| measure | snapcore | peer (by hand) | peer figure | ratio |")
    print("|---|---|---|---|---|")
    print(
        row(
            "disk-only: guest paused (xl pause to xl unpause)",
            med(d_mine, "paused"),
            med(d_hand, "paused"),
            "xl pause, one QMP transaction, xl unpause",
        )
    )
    print(
        row(
            "disk-only: paused as `xl list` saw it (at most)",
            med(d_mine, "seen_max"),
            med(d_hand, "seen_max"),
            "the same",
        )
    )
    print(row("disk-only: wall time", med(d_mine, "wall"), med(d_hand, "wall"), "the same"))
    print(
        f"| disk-only: snapcore's start to its `xl pause` | {med(d_mine, 'to_pause'):.2f} s "
        f"| ({med(d_mine, 'commands'):.0f} commands run in all) | | |"
    )
    print(
        row(
            "with memory: wall time, the guest running again",
            med(m_mine, "wall"),
            med(m_hand, "wall"),
            "xl save, qemu-img snapshot x2, xl restore",
        )
    )
    hand_no_restore = [r["save"] + r["qemu-img"] for r in m_hand]
    print(
        row(
            "with memory: wall time, without the peer's restore",
            med(m_mine, "wall"),
            median(hand_no_restore),
            "xl save, qemu-img snapshot x2 (domain left stopped)",
        )
    )
    print(
        row(
            "with memory: guest stopped",
            med(m_mine, "stopped"),
            med(m_hand, "stopped"),
            "xl save to the end of xl restore",
        )
    )
    print(
        row(
            "with memory: stopped as `xl list` saw it (at most)",
            med(m_mine, "seen_max"),
            med(m_hand, "seen_max"),
            "the same",
        )
    )
    print(
        f"| with memory: snapcore's start to its `xl save` | {med(m_mine, 'to_save'):.2f} s "
        f"| ({med(m_mine, 'commands'):.0f} commands run in all) | | |"
    )
    print()
    print(
        f"by hand, medians: xl save {med(m_hand, 'save'):.2f} s, qemu-img snapshot x2 "
        f"{med(m_hand, 'qemu-img'):.2f} s, xl restore {med(m_hand, 'restore'):.2f} s; "
        f"`xl list` polled every {med(d_mine + m_mine + d_hand + m_hand, 'poll'):.2f} s; "
        f"snapcore start-up {startup:.2f} s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "startup": startup,
                    "create": created,
                    "disk_only": {"snapcore": d_mine, "by_hand": d_hand},
                    "with_memory": {"snapcore": m_mine, "by_hand": m_hand},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
