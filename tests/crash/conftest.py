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
from tests.crash.world import SCENARIOS, Scenario, Verdict

#: tmpfs when there is one: the commands fsync often, and the kill points are many
_BASE = Path(
    tempfile.mkdtemp(
        prefix="snapcore-crash-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    )
)
atexit.register(shutil.rmtree, _BASE, ignore_errors=True)

_PROBES: dict[str, runner.Probe] = {}
#: (mode, scenario id, event index) -> verdict, for the summary
VERDICTS: dict[tuple[str, str, int], Verdict] = {}

BY_ID = {s.id: s for s in SCENARIOS}


def probe(scenario: Scenario) -> runner.Probe:
    if scenario.id not in _PROBES:
        _PROBES[scenario.id] = runner.probe(scenario, _BASE)
    return _PROBES[scenario.id]


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
            found = runner.kill_points(
                probe(BY_ID[scenario_id]), _BASE / mode, wanted, orphan=mode == "orphan"
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
