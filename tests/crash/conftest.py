"""Shared state of the crash tests: one probe (an uninterrupted run that counts the events) per
scenario, made at collection, and the verdicts of the kill points, computed a scenario at a time
(two kill points at once) the first time a test of that scenario asks, for exactly the kill
points the session selected. The terminal summary gives the counts."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.crash import runner
from tests.crash.seam import Event
from tests.crash.world import SCENARIOS, Scenario, Verdict

#: tmpfs when there is one: the commands fsync often, and the kill points are many
_BASE = Path(
    tempfile.mkdtemp(
        prefix="snapcore-crash-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    )
)
atexit.register(shutil.rmtree, _BASE, ignore_errors=True)

_PROBES: dict[str, runner.Probe] = {}
_RECOVER_PROBES: dict[tuple[str, int], list[Event]] = {}
#: (mode, scenario id, event index) -> verdict, for the summary
VERDICTS: dict[tuple[str, str, int], Verdict] = {}

BY_ID = {s.id: s for s in SCENARIOS}


def probe(scenario: Scenario) -> runner.Probe:
    if scenario.id not in _PROBES:
        _PROBES[scenario.id] = runner.probe(scenario, _BASE)
    return _PROBES[scenario.id]


def recover_probe(scenario: Scenario, at: int) -> list[Event]:
    """The events of the recovery after *scenario*'s operation was killed at event *at*, up to
    the journal's removal (after it, the recovery only releases its locks and removes the lock
    files the killed command left, whose number varies with the disks' threads)."""
    key = (scenario.id, at)
    if key not in _RECOVER_PROBES:
        events = runner.recover_probe(probe(scenario), _BASE, at)
        last = max(i for i, e in enumerate(events) if e.detail.endswith("/journal.json"))
        _RECOVER_PROBES[key] = events[: last + 1]
    return _RECOVER_PROBES[key]


def double_crash_point(scenario: Scenario) -> int:
    """Where the double-crash tests kill *scenario*'s operation first: the middle of the part
    of it that changes disks and records (:func:`window`), where recovery has the most to do."""
    points = window(probe(scenario).events)
    return points[len(points) // 2].index


def window(events: list[Event]) -> list[Event]:
    """The events from the first journal write to the journal's removal: the part of an
    operation that changes the disks and the records (before it, only the locks and the
    domain's directory; after it, the lock files' removal)."""
    points = [e for e in events if not e.noop]
    first = next(i for i, e in enumerate(points) if ".journal.json." in e.detail)
    last = max(i for i, e in enumerate(points) if e.detail.endswith("/journal.json"))
    return points[first : last + 1]


@pytest.fixture(scope="session")
def verdict_of(
    request: pytest.FixtureRequest,
) -> Callable[[str, str, int], Verdict]:
    """``verdict_of(mode, scenario_id, index)``: the verdict of that kill point; every kill
    point of the same mode and scenario selected in this session is run on first use."""

    def get(mode: str, scenario_id: str, index: int) -> Verdict:
        key = (mode, scenario_id, index)
        if key not in VERDICTS:
            wanted = sorted(
                item.callspec.params["index"]  # type: ignore[attr-defined]
                for item in request.session.items
                if getattr(item, "callspec", None) is not None
                and item.callspec.params.get("mode") == mode  # type: ignore[attr-defined]
                and item.callspec.params.get("scenario_id") == scenario_id  # type: ignore[attr-defined]
            )
            if index not in wanted:
                wanted.append(index)
            scenario = BY_ID[scenario_id]
            found = runner.kill_points(
                probe(scenario),
                _BASE / mode,
                wanted,
                orphan=mode == "orphan",
                then_recover_killed_from=double_crash_point(scenario) if mode == "double" else None,
            )
            VERDICTS.update({(mode, scenario_id, n): v for n, v in found.items()})
        return VERDICTS[key]

    return get


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not VERDICTS:
        return
    clean = [v for v in VERDICTS.values() if v.clean]
    cleared = [v for v in clean if v.cleared_after_exit_3]
    bad = {k: v for k, v in VERDICTS.items() if not v.clean}
    terminalreporter.section("snapcore crash test")
    terminalreporter.write_line(
        f"kills: {len(VERDICTS)}, recovered clean: {len(clean)} "
        f"(of which exit 3 first, cleared by a second recover: {len(cleared)}), "
        f"violations: {len(bad)}"
    )
    power = [v for (mode, _, _), v in VERDICTS.items() if mode == "power-loss"]
    if power:
        damaged = [v for v in power if "before recover: none" not in v.event]
        terminalreporter.write_line(
            f"power loss inside qemu-img snapshot -c: {len(damaged)} of {len(power)} left an "
            "image failing qemu-img check before recover"
        )
    modes: dict[str, int] = {}
    for mode, _, _ in VERDICTS:
        modes[mode] = modes.get(mode, 0) + 1
    terminalreporter.write_line(f"by mode: {modes}")
    stale = [v for v in VERDICTS.values() if v.stale_locks]
    terminalreporter.write_line(
        f"kill points leaving lock files in the lock dir after recover and a second command "
        f"(not a violation): {len(stale)}"
    )
    for (mode, sid, _n), v in sorted(bad.items()):
        terminalreporter.write_line(f"  {mode} {sid} at {v.event[:160]}: {'; '.join(v.problems)}")
