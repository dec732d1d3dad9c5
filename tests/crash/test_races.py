"""The two races of issue 9 item 1, made deterministic: one external create is held at the seam
right after its first ``os.link`` (the disk's image then has its second name, the snapshot's
target) while a second external create on the same image runs, from another domain file that
shares the disk, or from another state dir over the same images. The second must be refused
as busy (exit 4, naming the disk) or wait for the first, and afterwards no checkpoint's file is
the live disk's inode and writing the disks changes no checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.crash import seam

pytestmark = pytest.mark.crash

SNAPCORE = [sys.executable, "-m", "snapcore"]


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def write(img: Path, pattern: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 64k", str(img)],
        check=True,
        capture_output=True,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Race:
    """Images ``shared.qcow2`` (and one private disk per domain file), the domain files
    ``a.toml`` and ``b.toml``, state dirs ``state-a`` and ``state-b``, one lock dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        self.shared = root / "shared.qcow2"
        self.own = {d: root / f"{d}-own.qcow2" for d in "ab"}
        for img in (self.shared, *self.own.values()):
            qemu_img("create", "-q", "-f", "qcow2", str(img), "8M")
            write(img, 0x11)
        for d in "ab":
            (root / f"{d}.toml").write_text(
                f'name = "dom{d}"\n'
                f'[[disk]]\nvdev = "vda"\npath = "{self.shared}"\n'
                f'[[disk]]\nvdev = "vdb"\npath = "{self.own[d]}"\n'
            )
        (root / "external.cfg").write_text('type = "external"\n')

    def env(self, state: str, timeout: float) -> dict[str, str]:
        return {
            **os.environ,
            "SNAPCORE_STATE_DIR": str(self.root / state),
            "SNAPCORE_LOCK_DIR": str(self.root / "locks"),
            "SNAPCORE_LOCK_TIMEOUT": str(timeout),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def args(self, domain: str, name: str) -> list[str]:
        return [
            "snapshot-create",
            str(self.root / "external.cfg"),
            "-n",
            name,
            str(self.root / f"{domain}.toml"),
        ]

    def cli(self, state: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SNAPCORE, *args], env=self.env(state, 5), capture_output=True, text=True, check=False
        )

    def first_link(self, state: str, domain: str) -> int:
        """The index of the event right after the first ``os.link`` of an external create (run
        in a copy, which is then thrown away)."""
        probe = Race(self.root / "probe")
        log = probe.root / "events.log"
        proc = seam.run(probe.args(domain, "p"), env=probe.env(state, 5), log=log)
        assert proc.returncode == 0, proc.stderr
        events, _, _ = seam.parse_log(log)
        link = next(e for e in events if e.name == "os.link")
        return link.index + 1

    def checkpoints(self, state: str, domain: str) -> list[dict[str, object]]:
        proc = self.cli(state, "snapshot-list", "-l", "--json", str(self.root / f"{domain}.toml"))
        assert proc.returncode == 0, proc.stderr
        listing: list[dict[str, object]] = json.loads(proc.stdout)
        return listing


def hold_first(
    race: Race, state: str, domain: str, name: str
) -> tuple[subprocess.Popen[str], Path]:
    hold_at = race.first_link(state, domain)
    log, fifo = race.root / "held.log", race.root / "hold.fifo"
    first = seam.start(
        race.args(domain, name), env=race.env(state, 5), log=log, hold=fifo, hold_at=hold_at
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and first.poll() is None:
        if seam.parse_log(log)[2]:
            break
        time.sleep(0.02)
    assert seam.parse_log(log)[2], f"the first create never reached the seam: {first.poll()}"
    return first, fifo


def release(first: subprocess.Popen[str], fifo: Path) -> None:
    with open(fifo, "w") as f:
        f.write("go\n")
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err


def assert_checkpoints_frozen(race: Race, lists: list[list[dict[str, object]]]) -> None:
    live = {os.stat(p).st_ino: p for p in (race.shared, *race.own.values())}
    files: list[Path] = []
    for listing in lists:
        for checkpoint in listing:
            assert not checkpoint["missing"], checkpoint
            for disk in checkpoint["disks"]:  # type: ignore[attr-defined]
                locator = Path(disk["locator"])
                ino = os.stat(locator).st_ino
                assert ino not in live, f"checkpoint file {locator} is the live disk {live[ino]}"
                files.append(locator)
    before = {f: digest(f) for f in files}
    for img in live.values():
        write(img, 0x77)
    assert {f: digest(f) for f in files} == before, "writing the disks changed a checkpoint"
    for img in [*live.values(), *files]:
        proc = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, check=False)
        assert proc.returncode == 0, f"qemu-img check {img}: {proc.stdout!r}"
    leftovers = [p.name for p in race.root.iterdir() if ".snapcore-tmp" in p.name]
    assert not leftovers, leftovers


# (second command's state dir, domain file): another domain file sharing the disk, in the same
# state dir; or the same domain file under another state dir.
RACES = {"two-domains-one-disk": ("state-a", "b"), "two-state-dirs": ("state-b", "a")}


@pytest.mark.parametrize("race_id", sorted(RACES))
def test_second_create_is_refused_as_busy(race_id: str, tmp_path: Path) -> None:
    race = Race(tmp_path)
    state2, domain2 = RACES[race_id]
    first, fifo = hold_first(race, "state-a", "a", "x")
    try:
        second = subprocess.run(
            [*SNAPCORE, *race.args(domain2, "y")],
            env=race.env(state2, 1),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        release(first, fifo)
    assert second.returncode == 4, second.stderr
    # the busy message names a disk the two commands share (both disks, for two state dirs)
    shared = [race.shared] if domain2 == "b" else [race.shared, race.own["a"]]
    assert "busy" in second.stderr, second.stderr
    assert any(str(p) in second.stderr for p in shared), second.stderr
    lists = [race.checkpoints("state-a", "a"), race.checkpoints(state2, domain2)]
    assert [c["name"] for c in lists[0]] == ["x"]
    assert [c["name"] for c in lists[1] if c["name"] == "y"] == []
    assert not (tmp_path / "shared.y.qcow2").exists(), "the refused create left its target"
    assert_checkpoints_frozen(race, lists)


@pytest.mark.parametrize("race_id", sorted(RACES))
def test_second_create_waits_for_the_first(race_id: str, tmp_path: Path) -> None:
    race = Race(tmp_path)
    state2, domain2 = RACES[race_id]
    first, fifo = hold_first(race, "state-a", "a", "x")
    try:
        second = subprocess.Popen(
            [*SNAPCORE, *race.args(domain2, "y")],
            env=race.env(state2, 60),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # the second is now waiting on a lock the held first one has
        assert second.poll() is None, second.communicate()
    finally:
        release(first, fifo)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    lists = [race.checkpoints("state-a", "a"), race.checkpoints(state2, domain2)]
    names = sorted(str(c["name"]) for listing in lists for c in listing)
    assert names == ["x", "y"]
    assert_checkpoints_frozen(race, lists)
