"""A two-disk domain on real images, the operations the crash tests interrupt, and the
invariants checked after recovery.

Data is written in *generations*: generation ``g`` fills two 64 KiB regions of every disk (one in
the first 2 MiB block, one in the second) with a byte of its own per disk, so reading those
regions back tells which generation a disk holds, and a disk holding a mix of two generations, or
anything else, reads as ``None``. Generation 0 is the empty disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024
SIZE = 8 * MiB
REGIONS = ((0, 64 * 1024), (3 * MiB + 4096, 64 * 1024))
VDEVS = ("vda", "vdb")
SNAPCORE = [sys.executable, "-m", "snapcore"]

#: Scratch names of snapcore and its backends that must never outlive recovery.
SCRATCH = re.compile(r"\.snapcore-(tmp|new|merge)|\.tmp\Z|\.corrupt-")


def byte(vdev: str, gen: int) -> int:
    """The byte generation *gen* writes to disk *vdev* (0 for generation 0)."""
    return 0 if gen == 0 else (0x40 if vdev == "vda" else 0x80) + gen


@dataclass(frozen=True)
class Kind:
    """How the domain's disks are made and snapshotted."""

    name: str
    suffix: str  # image file suffix
    driver: str
    options: Mapping[str, str] = field(default_factory=dict)
    #: snapshot config file text for checkpoint NAME (``{images}``, ``{name}`` filled in)
    config: str | None = None


KINDS = {
    "internal": Kind("internal", ".qcow2", "qcow2"),
    "external": Kind("external", ".qcow2", "qcow2", config='name = "{name}"\ntype = "external"\n'),
    "mixed": Kind(
        "mixed",
        ".qcow2",
        "qcow2",
        config='name = "{name}"\ndisk = [ "vda", "vdb={images}/vdb.{name}.qcow2,type=qcow2" ]\n',
    ),
    "vhd": Kind("vhd", ".vhd", "vhd", options={"engine": "native"}),
}


@dataclass(frozen=True)
class Outcome:
    """What the domain holds before or after an operation."""

    gen: int  # the generation both disks hold
    checkpoints: Mapping[str, int]  # name -> generation its disks hold


@dataclass(frozen=True)
class Scenario:
    """An operation on a domain of some kind, from a prepared state."""

    kind: str
    op: str  # create / delete / revert

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.op}"

    @property
    def before(self) -> Outcome:
        if self.op == "create":
            return Outcome(2, {"one": 1})
        return Outcome(3, {"one": 1, "two": 2})

    @property
    def after(self) -> Outcome:
        if self.op == "create":
            return Outcome(2, {"one": 1, "two": 2})
        if self.op == "delete":
            return Outcome(3, {"two": 2})
        return Outcome(1, {"one": 1, "two": 2})


SCENARIOS = [Scenario(k, op) for k in KINDS for op in ("create", "delete", "revert")]


class World:
    """A domain ``web1`` with disks ``vda`` and ``vdb`` under *root*, its own state and lock
    dirs, and the snapcore command line run on it."""

    def __init__(self, root: Path, kind: Kind) -> None:
        self.root = root
        self.kind = kind
        self.images = root / "images"
        self.state = root / "state"
        self.locks = root / "locks"
        self.domain = root / "web1.toml"
        self.disks = {v: self.images / f"{v}{kind.suffix}" for v in VDEVS}

    # -- building ------------------------------------------------------------------------------

    def build(self) -> None:
        for d in (self.images, self.state, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        text = 'name = "web1"\n'
        for vdev, path in self.disks.items():
            self.make_image(path)
            text += f'[[disk]]\nvdev = "{vdev}"\npath = "{path}"\ndriver = "{self.kind.driver}"\n'
            if self.kind.options:
                text += "[disk.options]\n"
                text += "".join(f'{k} = "{v}"\n' for k, v in self.kind.options.items())
        self.domain.write_text(text)

    def make_image(self, path: Path) -> None:
        if self.kind.driver == "vhd":
            from snapcore_vhd import ops

            ops.create_dynamic(str(path), SIZE)
        else:
            run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(SIZE)])

    def prepare(self, scenario: Scenario) -> list[str]:
        """Bring the domain to the state *scenario* starts from; return the operation's args."""
        self.build()
        self.write_gen(1)
        self.ok(*self.create_args("one"))
        self.write_gen(2)
        if scenario.op == "create":
            return self.create_args("two")
        self.ok(*self.create_args("two"))
        self.write_gen(3)
        return [f"snapshot-{scenario.op}", "-n", "one", str(self.domain)]

    def create_args(self, name: str) -> list[str]:
        if self.kind.config is None:
            return ["snapshot-create", "-n", name, str(self.domain)]
        cfg = self.root / f"{name}.cfg"
        cfg.write_text(self.kind.config.format(images=self.images, name=name))
        return ["snapshot-create", str(cfg), str(self.domain)]

    # -- running snapcore ------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SNAPCORE_STATE_DIR": str(self.state),
            "SNAPCORE_LOCK_DIR": str(self.locks),
            "SNAPCORE_LOCK_TIMEOUT": "20",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SNAPCORE, *args], env=self.env, capture_output=True, text=True, check=False
        )

    def ok(self, *args: str) -> str:
        proc = self.cli(*args)
        assert proc.returncode == 0, f"snapcore {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    # -- data ------------------------------------------------------------------------------------

    def write_gen(self, gen: int) -> None:
        for vdev, path in self.disks.items():
            b = byte(vdev, gen)
            if self.kind.driver == "vhd":
                from snapcore_vhd.chain import Chain

                with Chain(str(path), writable=True) as chain:
                    for offset, length in REGIONS:
                        chain.write(offset, bytes([b]) * length)
            else:
                cmds = [x for o, n in REGIONS for x in ("-c", f"write -P {b} {o} {n}")]
                run(["qemu-io", "-f", "qcow2", *cmds, str(path)])

    def read_regions(self, vdev: str) -> list[bytes]:
        path = self.disks[vdev]
        if self.kind.driver == "vhd":
            from snapcore_vhd.chain import Chain

            with Chain(str(path)) as chain:
                return [chain.read(o, n) for o, n in REGIONS]
        with tempfile.NamedTemporaryFile(dir=self.root, suffix=".raw") as raw:
            run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(path), raw.name])
            data = Path(raw.name).read_bytes()
        return [data[o : o + n] for o, n in REGIONS]

    def gen_of(self, vdev: str) -> int | None:
        """The generation disk *vdev* holds, or None for anything else (a mix, garbage)."""
        regions = self.read_regions(vdev)
        first = regions[0][:1]
        for gen in range(5):
            want = bytes([byte(vdev, gen)])
            if first == want and all(r == want * len(r) for r in regions):
                return gen
        return None

    def gens(self) -> dict[str, int | None]:
        return {v: self.gen_of(v) for v in VDEVS}

    # -- files -----------------------------------------------------------------------------------

    def image_files(self) -> set[str]:
        return {_normal(p.name) for p in self.images.iterdir()}

    def state_files(self) -> set[str]:
        return {_normal(str(p.relative_to(self.state))) for p in self.state.rglob("*")}

    def listing(self) -> tuple[int, list[dict[str, object]], str]:
        proc = self.cli("snapshot-list", "-l", "--json", str(self.domain))
        if proc.returncode != 0:
            return proc.returncode, [], proc.stderr
        return 0, json.loads(proc.stdout), proc.stderr

    def image_problems(self) -> list[str]:
        """What the format checkers say about every image file in the images dir."""
        problems = []
        for path in sorted(self.images.iterdir()):
            if path.suffix == ".qcow2":
                proc = subprocess.run(
                    ["qemu-img", "check", "-U", "-f", "qcow2", str(path)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if proc.returncode != 0:
                    summary = " ".join((proc.stdout + proc.stderr).split())[:300]
                    problems.append(
                        f"qemu-img check {path.name}: exit {proc.returncode}: {summary}"
                    )
            elif path.suffix == ".vhd":
                from snapcore_vhd import ops

                found = ops.check(str(path))
                if found:
                    problems.append(f"vhd check {path.name}: {'; '.join(found)[:300]}")
        return problems

    def save(self) -> None:
        """Keep a copy of everything under root (beside it), for :meth:`restore`."""
        saved = self.root.with_name(self.root.name + ".orig")
        if saved.exists():
            shutil.rmtree(saved)
        shutil.copytree(self.root, saved, symlinks=True)

    def restore(self) -> None:
        """Put back what :meth:`save` kept, at the same paths (the images name each other and
        the records name the images by absolute path)."""
        saved = self.root.with_name(self.root.name + ".orig")
        shutil.rmtree(self.root)
        shutil.copytree(saved, self.root, symlinks=True)


def _normal(name: str) -> str:
    """A file name with the random parts of snapcore's names replaced."""
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", name)


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@dataclass
class Verdict:
    """What one interrupted run came to."""

    exit_code: int  # of the killed command: -9 when the kill happened
    event: str  # the event it was killed at, as the hook logged it
    recover: list[int] = field(default_factory=list)  # exit codes of the recovers run
    recover_messages: list[str] = field(default_factory=list)
    outcome: str = ""  # "before" / "after" / "" (neither)
    at_kill: set[str] = field(default_factory=set)  # scratch files in the images dir at the kill
    #: lock files left in the lock dir after recover and a second command (not counted as a
    #: violation: the lock dir is on tmpfs and the next command on the image removes its own)
    stale_locks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def cleared_after_exit_3(self) -> bool:
        return bool(self.recover) and self.recover[0] == 3 and self.clean


def verify(
    world: World,
    scenario: Scenario,
    verdict: Verdict,
    files: Mapping[str, tuple[set[str], set[str]]],
    *,
    has_check: bool,
    wait: Callable[[], None] = lambda: None,
    journal_seen: bool = True,
) -> Verdict:
    """Recover *world* after an interrupted run and check every invariant into *verdict*.

    The invariants: ``recover`` exits 0, or 3 with a message and then 0 the second time; no
    journal and no scratch or temporary file is left (images dir and state dir); every qcow2
    file in the images dir passes ``qemu-img check``, every VHD file the native engine's check;
    both disks hold the data of one generation, and that generation and the checkpoints listed
    are all those from before the operation or all those after it; the images dir and the
    state dir hold the same file names as an uninterrupted run to that side; ``snapshot-list
    -l`` exits 0 and reports nothing missing; ``snapcore check`` exits 0; reverting to the
    latest checkpoint gives its data.

    :param files: ``{"images": (before, after), "state": (before, after)}`` file name sets.
    :param journal_seen: whether the killed command got as far as writing its journal.
    """
    problems = verdict.problems
    wait()
    verdict.at_kill = {p.name for p in world.images.iterdir() if SCRATCH.search(p.name)}
    # recover, and once more if it says something is left (exit 3)
    for _ in range(2):
        proc = world.cli("recover", str(world.domain))
        verdict.recover.append(proc.returncode)
        verdict.recover_messages.append((proc.stdout + proc.stderr).strip())
        if proc.returncode != 3:
            break
        if not proc.stderr.strip():
            problems.append("recover exit 3 without saying what is left")
    if verdict.recover[-1] != 0:
        problems.append(f"recover exits {verdict.recover}: {verdict.recover_messages[-1][:400]}")
        return verdict

    journal = list(world.state.rglob("journal.json"))
    if journal:
        problems.append("journal.json still there after recover")
    leftovers = sorted(
        str(p.relative_to(world.root))
        for d in (world.images, world.state)
        for p in d.rglob("*")
        if SCRATCH.search(p.name)
    )
    if leftovers:
        problems.append(f"leftover scratch files: {leftovers}")

    image_problems = world.image_problems()
    problems += image_problems

    gens = world.gens()
    code, listing, err = world.listing()
    if code != 0:
        problems.append(f"snapshot-list -l exits {code}: {err.strip()[:300]}")
    listed = {str(c["name"]): c for c in listing}
    verdict.stale_locks = sorted(p.name for p in world.locks.iterdir())
    missing = {n: c["missing"] for n, c in listed.items() if c.get("missing")}
    if missing:
        problems.append(f"snapshot-list -l reports missing snapshots: {missing}")

    images_now, state_now = world.image_files(), world.state_files()
    for label, outcome in (("before", scenario.before), ("after", scenario.after)):
        if set(gens.values()) == {outcome.gen} and set(listed) == set(outcome.checkpoints):
            verdict.outcome = label
    if not verdict.outcome:
        problems.append(
            "neither before nor after: disks hold generations "
            f"{gens} (before {scenario.before.gen}, after {scenario.after.gen}); "
            f"checkpoints {sorted(listed)} (before {sorted(scenario.before.checkpoints)}, "
            f"after {sorted(scenario.after.checkpoints)})"
        )
    else:
        side = 0 if verdict.outcome == "before" else 1
        if images_now != files["images"][side]:
            problems.append(
                f"images dir holds {sorted(images_now ^ files['images'][side])} unlike an "
                f"uninterrupted run ({verdict.outcome})"
            )
        if state_now != files["state"][side]:
            problems.append(
                f"state dir holds {sorted(state_now ^ files['state'][side])} unlike an "
                f"uninterrupted run ({verdict.outcome})"
            )

    if has_check:
        proc = world.cli("check", str(world.domain))
        if proc.returncode != 0:
            out = " ".join((proc.stdout + proc.stderr).split())[:300]
            problems.append(f"snapcore check exits {proc.returncode}: {out}")

    if not journal_seen:
        # killed before the operation's first journal write: nothing to undo, and nothing the
        # operation touched; the checkpoints' data is checked where it could have changed
        if verdict.recover_messages[0] and "nothing to recover" not in verdict.recover_messages[0]:
            problems.append(f"recover did something: {verdict.recover_messages[0][:200]}")
        return verdict

    # the latest checkpoint listed holds its data (the others are reverted to and read by
    # the scenarios that change them: a revert's outcome, a delete's survivor)
    expected = {**scenario.before.checkpoints, **scenario.after.checkpoints}
    for name in sorted(listed, key=lambda n: -expected.get(n, 0))[:1]:
        proc = world.cli("snapshot-revert", "-n", name, str(world.domain))
        if proc.returncode != 0:
            problems.append(f"revert to {name} exits {proc.returncode}: {proc.stderr[:300]}")
            continue
        got = world.gens()
        if set(got.values()) != {expected.get(name)}:
            problems.append(f"checkpoint {name} holds {got}, not generation {expected.get(name)}")
    if listed and not image_problems:
        problems += [f"after the reverts: {p}" for p in world.image_problems()]
    return verdict
