"""Runs an operation of a :class:`~tests.crash.world.Scenario` once to count its events, then
once per kill point, each from a fresh copy of the prepared state, and judges each with
:func:`~tests.crash.world.verify`. Kill points run two at a time (two copies of the domain),
which the waits on qemu-img and fsync leave room for on two cores."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.crash import seam
from tests.crash.world import KINDS, Scenario, Verdict, World, verify

WORKERS = 2


@dataclass(frozen=True)
class Probe:
    """An uninterrupted run of a scenario's operation under the hook."""

    scenario: Scenario
    events: list[seam.Event]
    root: Path
    files: dict[str, tuple[set[str], set[str]]]


def probe(scenario: Scenario, base: Path) -> Probe:
    world = World(base / f"{scenario.id}-probe", KINDS[scenario.kind])
    args = world.prepare(scenario)
    before = (world.image_files(), world.state_files())
    log = world.root / "events.log"
    proc = seam.run(args, env=world.env, log=log)
    assert proc.returncode == 0, f"{scenario.id}: {proc.stderr}"
    log_events, _, _ = seam.parse_log(log)
    log.unlink()
    after = (world.image_files(), world.state_files())
    files = {"images": (before[0], after[0]), "state": (before[1], after[1])}
    return Probe(scenario, log_events, world.root, files)


def recover_probe(p: Probe, base: Path, at: int) -> list[seam.Event]:
    """The events of ``snapcore recover`` after the operation of *p* was killed at event
    *at* (an uninterrupted recovery, under the hook)."""
    world = World(base / f"{p.scenario.id}-recover-probe", KINDS[p.scenario.kind])
    args = world.prepare(p.scenario)
    killed = seam.run(args, env=world.env, at=at)
    assert killed.returncode == -9, f"{p.scenario.id}: not killed at {at}: {killed.stderr}"
    log = world.root / "events.log"
    proc = seam.run(["recover", str(world.domain)], env=world.env, log=log)
    assert proc.returncode == 0, f"{p.scenario.id}: recover: {proc.stderr}"
    events, _, _ = seam.parse_log(log)
    return [e for e in events if not e.noop]


def has_check_command(world: World) -> bool:
    """Whether this snapcore has ``snapcore check`` (issue 9; being added)."""
    return world.cli("check", "--help").returncode == 0


def wait_for(pids: Sequence[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        break
            except OSError:
                break
            time.sleep(0.01)


def kill_points(
    p: Probe,
    base: Path,
    indexes: Sequence[int],
    *,
    orphan: bool = False,
    extra_env: dict[str, str] | None = None,
    prepare: Callable[[World], None] | None = None,
    then_recover_killed_from: int | None = None,
) -> dict[int, Verdict]:
    """Kill the operation at each event of *indexes* and judge what recovery leaves.

    With *then_recover_killed_from* N (a double crash): the operation is killed at event N
    every time, then ``snapcore recover`` is killed at each event of *indexes* of its own run,
    and what the next recovery leaves is judged."""
    slots: list[tuple[World, list[str]]] = []
    tag = "orphan" if orphan else "kill"
    if then_recover_killed_from is not None:
        tag = "double"
    if extra_env:
        tag = "env"
    for k in range(min(WORKERS, len(indexes))):
        world = World(base / f"{p.scenario.id}-{tag}{k}", KINDS[p.scenario.kind])
        args = world.prepare(p.scenario)
        if prepare is not None:
            prepare(world)
        world.save()
        slots.append((world, args))
    has_check = has_check_command(slots[0][0])

    def work(k: int) -> dict[int, Verdict]:
        world, args = slots[k]
        out: dict[int, Verdict] = {}
        for n in indexes[k :: len(slots)]:
            world.restore()
            log = world.root / "events.log"
            env = {**world.env, **(extra_env or {})}
            first: str | None = None
            if then_recover_killed_from is not None:
                proc = seam.run(args, env=env, at=then_recover_killed_from)
                if proc.returncode != -9:
                    first = f"the operation was not killed (exit {proc.returncode})"
                args_now = ["recover", str(world.domain)]
            else:
                args_now = args
            proc = seam.run(args_now, env=env, log=log, at=n, orphan=orphan)
            events, orphans, _ = seam.parse_log(log)
            log.unlink(missing_ok=True)
            if orphan:
                spawned = [e for e in events if e.name in seam.SPAWNS]
                hit = spawned[n] if n < len(spawned) else None
            else:
                hit = next((e for e in events if e.index == n), None)
            verdict = Verdict(
                exit_code=proc.returncode,
                event=f"{hit.index} {hit.name} {hit.detail}" if hit else f"{n} (not reached)",
            )
            if orphan:
                verdict.event += f" (children left running: {orphans or 'none'})"
                if not orphans:
                    verdict.problems.append("no child of snapcore was running when it was killed")
            if then_recover_killed_from is not None:
                verdict.event = (
                    f"{then_recover_killed_from}, then recover at {verdict.event}"
                    if first is None
                    else f"{then_recover_killed_from}: {first}"
                )
                if first is not None:
                    verdict.problems.append(first)
                    out[n] = verdict
                    continue
            if proc.returncode != -9:
                verdict.problems.append(
                    f"the command was not killed at event {n} (exit {proc.returncode}): "
                    f"{proc.stderr.strip()[:300]}"
                )
                out[n] = verdict
                continue
            out[n] = verify(
                world,
                p.scenario,
                verdict,
                p.files,
                has_check=has_check,
                wait=lambda orphans=orphans: wait_for(orphans),  # type: ignore[misc]
                journal_seen=then_recover_killed_from is not None
                or any(".journal.json." in e.detail for e in events if hit and e.index < hit.index),
            )
        return out

    results: dict[int, Verdict] = {}
    with ThreadPoolExecutor(len(slots)) as pool:
        for part in pool.map(work, range(len(slots))):
            results.update(part)
    return results
