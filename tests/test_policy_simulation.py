"""A year of ``run-policy`` against a fake clock: schedule, names and retention together.

``run_policy`` below is the pure core that ``snapcore run-policy`` will run for each domain:
the last slot done is read from the checkpoints themselves (each scheduled checkpoint records
its slot), the due slot is made under the pattern's name, then retention prunes. A "crash" is
an exception raised between two of its steps; the next run must neither make a second
checkpoint for the same slot nor leave a prune undone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from snapcore.pattern import NamePattern
from snapcore.retention import CheckpointTimes, KeepRules, last_slot, plan_retention
from snapcore.schedule import Schedule

HOUR = timedelta(hours=1)
BERLIN = ZoneInfo("Europe/Berlin")


class Crash(Exception):
    """The process died here."""


@dataclass
class Policy:
    schedule: Schedule
    pattern: NamePattern
    keep: KeepRules | None


def policy(tz: str = "UTC", **keep: int) -> Policy:
    return Policy(
        Schedule.parse("@hourly", tz=tz),
        NamePattern.parse("auto-%Y%m%d-%H%M", tz=tz),
        KeepRules(**keep) if keep else None,
    )


def run_policy(
    domain: dict[str, CheckpointTimes], p: Policy, now: datetime, *, crash: str = ""
) -> str | None:
    """One run: make the due checkpoint, then prune. Returns the name made, if any."""
    slot = p.schedule.due(last_slot(domain.values()), now)
    made = None
    if slot is not None:
        made = p.pattern.name_for(slot, domain.keys())
        domain[made] = CheckpointTimes(name=made, created=now, slot=slot)
    if crash == "after create":
        raise Crash
    plan = plan_retention(domain.values(), p.keep, now, tz=p.schedule.tz)
    for name in plan.pruned:
        del domain[name]
        if crash == "after one prune":
            raise Crash
    return made


def hourly_runs(start: datetime, hours: int) -> list[datetime]:
    """Run times: 30 s past each hour from start, for *hours* hours."""
    return [start + i * HOUR + timedelta(seconds=30) for i in range(hours)]


def expected_2026_grid() -> set[str]:
    """What hourly=24, daily=7, weekly=4, monthly=12 keep of a year of hourly checkpoints on
    the last run, 2026-12-31 23:00:30 (a Thursday), derived by hand:

    - hourly 24: the 24 hours of Dec 31, 00:00 to 23:00 (24 checkpoints);
    - daily 7: Dec 25 to Dec 31, each day's newest, 23:00 (6 more: Dec 25-30);
    - weekly 4: ISO weeks 2026-W53 (Dec 28-Jan 3, newest Dec 31 23:00), W52 (newest Sunday
      Dec 27 23:00, already kept), W51 (Sunday Dec 20 23:00) and W50 (Sunday Dec 13 23:00):
      2 more;
    - monthly 12: January to December 2026, each month's last day at 23:00 (11 more, December
      being Dec 31 23:00).

    43 in all.
    """
    names = {f"auto-20261231-{h:02d}00" for h in range(24)}
    names |= {f"auto-202612{d}-2300" for d in range(25, 31)}
    names |= {"auto-20261220-2300", "auto-20261213-2300"}
    month_ends = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30]
    names |= {f"auto-2026{m:02d}{d}-2300" for m, d in enumerate(month_ends, start=1)}
    assert len(names) == 43
    return names


def test_a_year_of_hourly_runs_keeps_exactly_the_grid() -> None:
    p = policy(hourly=24, daily=7, weekly=4, monthly=12)
    domain: dict[str, CheckpointTimes] = {}
    started = time.perf_counter()
    made = [
        run_policy(domain, p, now) for now in hourly_runs(datetime(2026, 1, 1, tzinfo=UTC), 8760)
    ]
    elapsed = time.perf_counter() - started
    assert None not in made
    assert len(set(made)) == 8760
    assert set(domain) == expected_2026_grid()
    assert elapsed < 10, f"a year of hourly runs took {elapsed:.1f} s"


def test_a_year_of_hourly_runs_in_berlin_makes_each_wall_clock_hour_once() -> None:
    p = policy("Europe/Berlin", hourly=24, daily=7, weekly=4, monthly=12)
    domain: dict[str, CheckpointTimes] = {}
    start = datetime(2025, 12, 31, 23, tzinfo=UTC)  # 2026-01-01 00:00 in Berlin
    made = [run_policy(domain, p, now) for now in hourly_runs(start, 8760)]
    created = [m for m in made if m is not None]
    # 8760 runs, 8760 wall-clock hours; 02:00 on Mar 29 does not exist (its slot is 03:00, made
    # once), and the run in the second pass of 02:00 on Oct 25 has nothing to do
    assert len(created) == len(set(created)) == 8759
    assert "auto-20260329-0200" not in created
    assert "auto-20260329-0300" in created
    assert (
        made[hourly_runs(start, 8760).index(datetime(2026, 10, 25, 1, 0, 30, tzinfo=UTC))] is None
    )
    assert not any(m.endswith("-2") for m in created)
    assert set(domain) == expected_2026_grid()  # December is all CET: the same local names


@pytest.mark.parametrize("crash", ["after create", "after one prune"])
def test_an_interrupted_run_is_finished_by_the_next_one_without_a_duplicate(crash: str) -> None:
    p = policy(hourly=3, daily=2)
    # the last run, at 00:00:30 on May 3, prunes two: the 21:00 of May 2 (out of the last 3
    # hours) and the 23:00 of May 1 (out of the last 2 days)
    runs = hourly_runs(datetime(2026, 5, 1, tzinfo=UTC), 49)
    interrupted: dict[str, CheckpointTimes] = {}
    reference: dict[str, CheckpointTimes] = {}
    for now in runs[:-1]:
        run_policy(interrupted, p, now)
        run_policy(reference, p, now)
    with pytest.raises(Crash):
        run_policy(interrupted, p, runs[-1], crash=crash)
    assert "auto-20260503-0000" in interrupted  # the checkpoint was made before the crash
    run_policy(reference, p, runs[-1])
    assert interrupted != reference
    # the next run, the same minute or the next one, makes nothing and finishes the prune
    assert run_policy(interrupted, p, runs[-1]) is None
    assert run_policy(interrupted, p, runs[-1] + timedelta(minutes=1)) is None
    assert interrupted == reference
    assert sorted(interrupted) == [
        "auto-20260502-2200",
        "auto-20260502-2300",
        "auto-20260503-0000",
    ]


def test_runs_missed_for_days_catch_up_once() -> None:
    p = policy(hourly=48)
    domain: dict[str, CheckpointTimes] = {}
    for now in hourly_runs(datetime(2026, 3, 2, tzinfo=UTC), 11):  # up to 10:00:30
        run_policy(domain, p, now)
    # the host is off until Mar 5 15:20, then the timer runs every minute
    made = []
    now = datetime(2026, 3, 5, 15, 20, tzinfo=UTC)
    while now < datetime(2026, 3, 5, 17, 5, tzinfo=UTC):
        made.append(run_policy(domain, p, now))
        now += timedelta(minutes=1)
    assert [m for m in made if m] == [
        "auto-20260305-1500",
        "auto-20260305-1600",
        "auto-20260305-1700",
    ]
    assert made[0] == "auto-20260305-1500"
    assert domain["auto-20260305-1500"].created == datetime(2026, 3, 5, 15, 20, tzinfo=UTC)


def test_checkpoints_made_by_hand_do_not_disturb_the_schedule() -> None:
    p = policy(last=2)
    domain: dict[str, CheckpointTimes] = {}
    runs = hourly_runs(datetime(2026, 6, 1, tzinfo=UTC), 5)
    for now in runs[:3]:
        run_policy(domain, p, now)
    domain["auto-20260601-0300"] = CheckpointTimes(
        name="auto-20260601-0300", created=runs[2] + timedelta(minutes=5)
    )
    for now in runs[3:]:
        run_policy(domain, p, now)
    assert sorted(domain) == [
        "auto-20260601-0300",  # by hand, taken before the schedule got there
        "auto-20260601-0300-2",
        "auto-20260601-0400",
    ]
    assert domain["auto-20260601-0300-2"].slot == datetime(2026, 6, 1, 3, tzinfo=UTC)
