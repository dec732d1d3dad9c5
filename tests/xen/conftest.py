"""Fixtures of the Xen suite, which runs in dom0 of a real Xen 4.17 host (scripts/xen-guest.sh).

Outside that guest every test here is skipped (``SNAPCORE_XEN_GUEST=1`` says we are in it, and
``/proc/xen/capabilities`` must say ``control_d``). Test domains are PV guests booted from the
kernel and busybox initramfs the harness puts in ``/opt/xen-guest``; their qcow2 disks are
served by libxl's qdisk QEMU. The domU's init prints ``[domU] heartbeat N`` on its console every
second; xenconsoled logs it to ``/var/log/xen/console/guest-NAME.log``, so a test can tell
whether a domain runs, and which memory image it was restored from (the count goes back).
Everything is checked with ``xl`` and ``qemu-io``/``qemu-img`` directly, never through snapcore.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapcore import cli

IN_GUEST = os.environ.get("SNAPCORE_XEN_GUEST") == "1"
GUEST_FILES = Path("/opt/xen-guest")
CONSOLE_LOGS = Path("/var/log/xen/console")
RESULTS = Path(os.environ.get("SNAPCORE_XEN_RESULTS", "/tmp"))
HEARTBEAT = re.compile(rb"\[domU\] heartbeat (\d+)")
FOUND = re.compile(r"\[domU\] found /dev/(xvd\w): ([^\r\n]+)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "xen: needs a real Xen dom0; runs inside scripts/xen-guest.sh"
    )


def _dom0() -> bool:
    try:
        return "control_d" in Path("/proc/xen/capabilities").read_text()
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if IN_GUEST and _dom0():
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="needs a Xen dom0: run scripts/xen-guest.sh")
    for item in items:
        if here in item.path.parents:
            item.add_marker(skip)


# -- commands, run directly (not through the plugin) --------------------------------------------


def run(*argv: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(argv)}: rc {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


def xl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("xl", *args, check=check)


def xl_flags(name: str) -> str | None:
    """The state letters of *name* in ``xl list`` (``r-----``, ``--p---``...), or ``None``."""
    proc = xl("list", name, check=False)
    if proc.returncode != 0:
        return None
    fields = proc.stdout.splitlines()[1].split()
    return fields[4]


def qemu_io(img: Path, command: str, *, force_share: bool = False) -> str:
    argv = ["qemu-io", "-f", "qcow2", "-c", command, str(img)]
    if force_share:
        argv[1:1] = ["-U", "-r"]
    return run(*argv).stdout


def write(img: Path, pattern: int, offset: str = "0", length: str = "64k") -> None:
    qemu_io(img, f"write -P {pattern} {offset} {length}")


def reads(img: Path, pattern: int, offset: str = "0", length: str = "64k") -> bool:
    out = qemu_io(img, f"read -P {pattern} {offset} {length}")
    return "verification failed" not in out and "read " in out


def qemu_img_info(img: Path) -> dict[str, Any]:
    return json.loads(run("qemu-img", "info", "-U", "--output=json", str(img)).stdout)  # type: ignore[no-any-return]


def measure(line: str) -> None:
    """Add *line* to the measurements the harness prints at the end."""
    with open(RESULTS / "measurements.md", "a", encoding="utf-8") as f:
        f.write(line + "\n")


class PausePoller:
    """Watch a domain's state from outside: ``xl list NAME`` in a loop on a thread, each
    answer timed at the middle of its call. Xen's pause is not an event a tool can wait for
    (the qdisk QEMU of a PV guest never stops, so it sends no STOP/RESUME), so the pause is
    bracketed by the samples: at least from the first to the last sample that saw ``p``, at
    most from the last running sample before them to the first one after."""

    def __init__(self, name: str):
        self.name = name
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            before = time.monotonic()
            flags = xl_flags(self.name)
            self.samples.append(((before + time.monotonic()) / 2, "p" in (flags or "")))

    def __enter__(self) -> PausePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def interval(self) -> float:
        """The mean time between two samples."""
        times = [t for t, _ in self.samples]
        return (times[-1] - times[0]) / max(len(times) - 1, 1)

    def window(self) -> tuple[float, float] | None:
        """(at least, at most) seconds the domain was seen paused, or ``None`` if no sample
        saw it paused."""
        paused = [i for i, (_, p) in enumerate(self.samples) if p]
        if not paused:
            return None
        first, last = paused[0], paused[-1]
        at_least = self.samples[last][0] - self.samples[first][0]
        before = self.samples[first - 1][0] if first > 0 else self.samples[first][0]
        after = self.samples[last + 1][0] if last + 1 < len(self.samples) else self.samples[last][0]
        return at_least, after - before


# -- test domains -------------------------------------------------------------------------------


class XenDomain:
    """A PV test domain: its xl configuration, disks and domain file (not started).

    *disks* qcow2 disks come first (``xvda``...), then *vhd* dynamic VHD disks made by
    ``qemu-img create -f vpc``; libxl serves both through the qdisk QEMU (``format=vhd`` is
    QEMU's ``vpc`` driver), and the domain file gives the VHD disks to the vhd driver with its
    native engine (no vhd-util in dom0)."""

    def __init__(self, tmp: Path, name: str, disks: int = 1, memory: int = 128, vhd: int = 0):
        self.tmp = tmp
        self.name = name
        self.state = tmp / "state"
        vdevs = [f"xvd{chr(ord('a') + i)}" for i in range(disks + vhd)]
        self.disks = [tmp / f"{name}-{v}.qcow2" for v in vdevs[:disks]]
        self.vhds = [tmp / f"{name}-{v}.vhd" for v in vdevs[disks:]]
        for img in self.disks:
            run("qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M")
        for img in self.vhds:
            run("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", str(img), "16M")
        formats = ["qcow2"] * disks + ["vhd"] * vhd
        images = [*self.disks, *self.vhds]
        specs = ", ".join(
            f'"format={fmt},vdev={vdev},access=rw,backendtype=qdisk,target={img}"'
            for fmt, vdev, img in zip(formats, vdevs, images, strict=True)
        )
        self.cfg = tmp / f"{name}.cfg"
        self.cfg.write_text(
            f'name = "{name}"\ntype = "pv"\n'
            f'kernel = "{GUEST_FILES / "vmlinuz"}"\nramdisk = "{GUEST_FILES / "domU-initrd.gz"}"\n'
            f'extra = "console=hvc0 loglevel=4"\nmemory = {memory}\nvcpus = 1\n'
            f"disk = [ {specs} ]\n"
            'on_crash = "preserve"\n'
        )
        self.domain = tmp / f"{name}.toml"
        self.domain.write_text(
            f'name = "{name}"\nhypervisor = "xen"\n[xen]\nconfig = "{self.cfg}"\n'
            + "".join(
                f'[[disk]]\nvdev = "{vdev}"\npath = "{img}"\ndriver = "{fmt}"\n'
                + ('[disk.options]\nengine = "native"\n' if fmt == "vhd" else "")
                for fmt, vdev, img in zip(formats, vdevs, images, strict=True)
            )
        )
        self.console = CONSOLE_LOGS / f"guest-{name}.log"

    def create(self, *, wait: bool = True) -> None:
        """``snapcore domain-start`` (``xl create`` of the ``[xen] config`` file), then wait for
        the guest's first heartbeat.

        Tried twice, the second time with ``xl create``: libxl gives the qdisk QEMU 10 s per
        QMP command while it starts, which a loaded machine under TCG can miss ("Post DM
        startup configs failed, rc=-9")."""
        if self.cli("domain-start", str(self.domain)) != 0:
            measure("- `snapcore domain-start` (xl create) failed once; retried with xl create")
            self.destroy()
            xl("create", str(self.cfg))
        if wait:
            self.wait_heartbeat(1)

    def destroy(self) -> None:
        if xl_flags(self.name) is not None:
            xl("destroy", self.name)

    def domid(self) -> int:
        return int(xl("domid", self.name).stdout.strip())

    def heartbeats(self) -> list[int]:
        """Every heartbeat count on the guest's console so far, oldest first."""
        try:
            data = self.console.read_bytes()
        except FileNotFoundError:
            return []
        return [int(m) for m in HEARTBEAT.findall(data)]

    def found(self) -> dict[str, str]:
        """What each disk held in its second sector when the guest last started, as the guest
        read it (``[domU] found /dev/xvdb: beat 00000012`` or ``zeros``), by device name."""
        try:
            data = self.console.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return {}
        return dict(FOUND.findall(data))

    def heartbeat(self) -> int:
        beats = self.heartbeats()
        return beats[-1] if beats else 0

    def wait_heartbeat(self, count: int, *, after: int = 0, timeout: float = 120) -> int:
        """Wait until the console shows heartbeat *count* or more, among the lines past the
        first *after* heartbeats; return the newest count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            beats = self.heartbeats()[after:]
            if beats and beats[-1] >= count:
                return beats[-1]
            time.sleep(0.5)
        tail = self.console.read_bytes()[-400:] if self.console.exists() else b"(no console log)"
        raise AssertionError(f"{self.name}: no heartbeat {count} in {timeout} s: {tail!r}")

    def cli(self, *args: str) -> int:
        return cli.main(["--state-dir", str(self.state), *args])


@pytest.fixture
def make_domain(tmp_path: Path) -> Iterator[Any]:
    made: list[XenDomain] = []
    counter = iter(range(1, 100))

    def make(disks: int = 1, memory: int = 128, vhd: int = 0) -> XenDomain:
        dom = XenDomain(tmp_path, f"t{os.getpid() % 1000}x{next(counter)}", disks, memory, vhd)
        made.append(dom)
        return dom

    yield make
    for dom in made:
        dom.destroy()
