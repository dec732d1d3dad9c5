"""SIGKILL of the ``snapcore`` CLI at each file operation, lock and subprocess start of create,
delete and revert, on a two-disk domain of each kind (qcow2 internal, qcow2 external, mixed:
vda internal + vdb external, VHD with the native engine); after each kill ``snapcore recover``
(twice if the first exits 3), ``snapshot-list -l --json``, ``snapcore check`` (when this
snapcore has it) and, once the operation had written its journal, a revert to the latest
checkpoint run, and the invariants of :func:`tests.crash.world.verify` are checked.

Counts (kills, recovered clean, exit 3 then cleared, violations) are printed at the end of the
run: ``.venv/bin/pytest tests/crash -q``.

Which events (a mkdir of a directory that already exists is never one: a kill there leaves what
a kill at the next event leaves): every event of the qcow2 internal create; for the other
operations every event of the *window*, from the first journal write to the journal's removal
(before it the command only takes its locks and makes the domain's directory, the same code for
every operation, which the internal create covers; after it, it only removes lock files).
``orphan`` kills snapcore alone just after each subprocess it starts in the window of the
internal and external creates; the child (qemu-img) runs on to its end before recovery.
``double`` kills the operation in the middle of its window and then ``snapcore recover`` at
each of its own events, for the scenarios whose recovery does the most (:data:`DOUBLE`); the next
recovery must still leave one side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.crash.conftest import BY_ID, double_crash_point, probe, recover_probe, window
from tests.crash.seam import SPAWNS, Event
from tests.crash.world import SCENARIOS, Verdict

pytestmark = pytest.mark.crash

#: The scenarios whose recovery is killed too (double crash): those whose recovery does the
#: most (folding an external overlay back; finishing a journaled qcow2 or VHD merge).
DOUBLE = ("external-create", "external-delete", "vhd-delete")


def kill_indexes(scenario_id: str, events: list[Event]) -> list[int]:
    if scenario_id == "internal-create":
        return [e.index for e in events if not e.noop]
    return [e.index for e in window(events)]


@dataclass(frozen=True)
class KnownBug:
    """An open bug this test finds. It is recognised by what the kill left (which kill points
    hit it depends on how the two disks' threads interleave, which varies from run to run), and
    the test is then marked ``xfail(strict=True)``: it must fail, and its passing (the bug
    fixed) fails the suite until the entry is removed."""

    scenarios: tuple[str, ...]
    left: tuple[str, ...]  # name parts of the scratch files present when the command was killed
    reason: str

    def applies(self, scenario_id: str, verdict: Verdict) -> bool:
        return scenario_id in self.scenarios and any(
            part in f for part in self.left for f in verdict.at_kill
        )


KNOWN: tuple[KnownBug, ...] = ()  # none open; the revert scratch leftover is fixed


def _params() -> list[object]:
    params: list[object] = []
    for scenario in SCENARIOS:
        p = probe(scenario)
        by_index = {e.index: e for e in p.events}
        for n in kill_indexes(scenario.id, p.events):
            params.append(
                pytest.param(
                    "kill", scenario.id, n, id=f"{scenario.id}-{n}-{by_index[n].label(p.root)}"
                )
            )
    for sid in DOUBLE:
        scenario = BY_ID[sid]
        first = double_crash_point(scenario)
        for e in recover_probe(scenario, first):
            params.append(
                pytest.param(
                    "double", sid, e.index, id=f"double-{sid}-{first}-recover-{e.index}-{e.label()}"
                )
            )
    for sid in ("internal-create", "external-create"):
        p = probe(BY_ID[sid])
        spawns = [e for e in p.events if e.name in SPAWNS]
        for k, e in enumerate(spawns):
            if e in window(p.events):  # the Nth subprocess start, by its ordinal
                params.append(pytest.param("orphan", sid, k, id=f"orphan-{sid}-spawn{k}"))
    return params


@pytest.mark.parametrize(("mode", "scenario_id", "index"), _params())
def test_recovered_after_kill(
    mode: str,
    scenario_id: str,
    index: int,
    verdict_of: Callable[[str, str, int], Verdict],
    request: pytest.FixtureRequest,
) -> None:
    verdict = verdict_of(mode, scenario_id, index)
    for bug in KNOWN:
        if bug.applies(scenario_id, verdict):
            request.applymarker(pytest.mark.xfail(strict=True, reason=bug.reason))
    where = f"{scenario_id} killed at event {verdict.event}"
    assert verdict.exit_code == -9, where
    assert verdict.clean, f"{where}: " + "; ".join(verdict.problems)
    assert verdict.outcome in ("before", "after"), where
