"""Tests of snapcore.retention: keep rules, expiry, grids, and fitting a chain limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapcore.errors import ConfigError, CreateBlockedError
from snapcore.retention import (
    KEEP_RULES,
    ChainMember,
    CheckpointTimes,
    KeepRules,
    fit_chain,
    format_instant,
    last_slot,
    parse_duration,
    plan_retention,
)

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def scheduled(name: str, slot: datetime, expiry: datetime | None = None) -> CheckpointTimes:
    return CheckpointTimes(
        name=name, created=slot + timedelta(seconds=20), slot=slot, expiry=expiry
    )


def manual(name: str, created: datetime, expiry: datetime | None = None) -> CheckpointTimes:
    return CheckpointTimes(name=name, created=created, expiry=expiry)


# -- keep rules --------------------------------------------------------------------------------


def test_keep_rules_from_a_toml_table() -> None:
    rules = KeepRules.from_mapping({"hourly": 24, "daily": 7, "weekly": 4, "monthly": 12})
    assert rules == KeepRules(hourly=24, daily=7, weekly=4, monthly=12)
    assert str(rules) == "hourly = 24, daily = 7, weekly = 4, monthly = 12"
    assert rules.to_json() == {
        "last": 0,
        "hourly": 24,
        "daily": 7,
        "weekly": 4,
        "monthly": 12,
        "yearly": 0,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"dayly": 7},
            "keep: unknown rule 'dayly'; the rules are last, hourly, daily, weekly, monthly, "
            "yearly",
        ),
        ({"daily": -1}, "keep.daily = -1: must be a whole number, 0 or more"),
        ({"daily": "7"}, "keep.daily = '7': must be a whole number, 0 or more"),
        ({"daily": 7.5}, "keep.daily = 7.5: must be a whole number, 0 or more"),
        ({"last": True}, "keep.last = True: must be a whole number, 0 or more"),
        (
            7,
            "keep must be a table of rules such as {daily = 7, weekly = 4}, not 7",
        ),
        (
            {},
            "keep: no rule keeps anything; set one of last, hourly, daily, weekly, monthly or "
            "yearly above 0, or leave keep out to keep every scheduled checkpoint",
        ),
        (
            {"daily": 0, "last": 0},
            "keep: no rule keeps anything; set one of last, hourly, daily, weekly, monthly or "
            "yearly above 0, or leave keep out to keep every scheduled checkpoint",
        ),
    ],
)
def test_bad_keep_rules_are_refused_with_one_exact_line(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KeepRules.from_mapping(value)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("1w 2d", timedelta(days=9)),
        ("90m", timedelta(minutes=90)),
        (" 1d12h ", timedelta(hours=36)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3x", 'expiry "3x": unknown unit "x"; use m, h, d or w, as in 30d or 12h'),
        ("30", 'expiry "30": 30 needs a unit: m, h, d or w, as in 30d or 12h'),
        ("", 'expiry "": expected a duration such as 30d, 12h or 1w 2d'),
        ("d", 'expiry "d": expected a duration such as 30d, 12h or 1w 2d'),
        ("1d-", 'expiry "1d-": expected a duration such as 30d, 12h or 1w 2d'),
        ("0d", 'expiry "0d": the duration must be longer than 0'),
        ("1M", 'expiry "1M": unknown unit "M"; use m, h, d or w, as in 30d or 12h'),
    ],
)
def test_bad_durations_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


def test_format_instant() -> None:
    assert format_instant(datetime(2026, 12, 1, 1, 0, tzinfo=BERLIN)) == "2026-12-01T00:00Z"
    assert format_instant(utc(2026, 12, 1, 0, 0, 5)) == "2026-12-01T00:00:05Z"


# -- expiry, checkpoints made by hand, no rules ------------------------------------------------


def test_expiry_decides_for_checkpoints_that_have_one() -> None:
    now = utc(2026, 12, 3, 12)
    plan = plan_retention(
        [
            manual("old-manual", utc(2025, 1, 1)),
            manual("gone", utc(2026, 11, 1), expiry=utc(2026, 12, 1)),
            manual("pinned", utc(2026, 11, 2), expiry=utc(2026, 12, 10)),
            scheduled("sched-expired", utc(2026, 11, 3), expiry=utc(2026, 12, 3, 12)),
            scheduled("sched-pinned", utc(2020, 1, 1), expiry=utc(2030, 1, 1)),
            scheduled("newest", utc(2026, 12, 3, 12)),
        ],
        KeepRules(last=1),
        now,
    )
    assert [str(v) for v in plan.verdicts] == [
        "kept: expires 2030-01-01T00:00Z",
        "kept: made by hand, no expiry",
        "pruned: expired 2026-12-01T00:00Z",
        "kept: expires 2026-12-10T00:00Z",
        "pruned: expired 2026-12-03T12:00Z",  # an expiry at now has passed
        "kept: one of the last 1 (1 of 1)",
    ]
    assert plan.kept == ("sched-pinned", "old-manual", "pinned", "newest")
    assert plan.pruned == ("gone", "sched-expired")
    assert plan.verdict("gone").reasons == ("expired 2026-12-01T00:00Z",)
    with pytest.raises(KeyError):
        plan.verdict("nope")


def test_the_newest_scheduled_checkpoint_is_kept_past_its_expiry() -> None:
    plan = plan_retention(
        [
            scheduled("a", utc(2026, 1, 1), expiry=utc(2026, 1, 2)),
            scheduled("b", utc(2026, 1, 2), expiry=utc(2026, 1, 3)),
            manual("c", utc(2026, 1, 3)),  # newer, but made by hand: records no slot
        ],
        None,
        utc(2026, 2, 1),
    )
    assert [str(v) for v in plan.verdicts] == [
        "pruned: expired 2026-01-02T00:00Z",
        "kept: newest scheduled checkpoint, the record of the last slot done "
        "(expired 2026-01-03T00:00Z)",
        "kept: made by hand, no expiry",
    ]


def test_without_keep_rules_scheduled_checkpoints_without_expiry_are_kept() -> None:
    plan = plan_retention(
        [scheduled(f"s{i}", utc(2026, 1, 1) + i * HOUR) for i in range(5)], None, utc(2027, 1, 1)
    )
    assert plan.pruned == ()
    assert {str(v) for v in plan.verdicts} == {"kept: no keep rules"}


def test_manual_checkpoints_take_no_place_in_the_grids() -> None:
    plan = plan_retention(
        [scheduled("s", utc(2026, 5, 1, 8)), manual("m", utc(2026, 5, 1, 9))],
        KeepRules(daily=1),
        utc(2026, 5, 1, 10),
    )
    assert plan.kept == ("s", "m")
    assert str(plan.verdict("s")) == "kept: newest of day 2026-05-01 (daily 1 of 1)"


# -- grids -------------------------------------------------------------------------------------


def test_daily_keeps_the_newest_of_each_of_the_last_n_days_counted_from_now() -> None:
    cps = [
        scheduled(f"d{day}-h{hour}", utc(2026, 12, day, hour))
        for day in (1, 2, 3)
        for hour in (0, 12, 23)
    ]
    plan = plan_retention(cps, KeepRules(daily=2), utc(2026, 12, 3, 23, 30))
    assert plan.kept == ("d2-h23", "d3-h23")
    assert str(plan.verdict("d3-h23")) == "kept: newest of day 2026-12-03 (daily 1 of 2)"
    assert str(plan.verdict("d2-h23")) == "kept: newest of day 2026-12-02 (daily 2 of 2)"
    assert str(plan.verdict("d1-h23")) == "pruned: kept by no rule (daily = 2)"


def test_an_empty_period_still_counts() -> None:
    # nothing on Dec 2: daily = 2 covers Dec 3 and Dec 2, not Dec 1
    cps = [scheduled("d1", utc(2026, 12, 1, 5)), scheduled("d3", utc(2026, 12, 3, 5))]
    plan = plan_retention(cps, KeepRules(daily=2), utc(2026, 12, 3, 6))
    assert plan.kept == ("d3",)


def test_last_keeps_the_n_newest() -> None:
    cps = [scheduled(f"s{i}", utc(2026, 1, 1) + i * HOUR) for i in range(6)]
    plan = plan_retention(cps, KeepRules(last=3), utc(2026, 1, 2))
    assert plan.kept == ("s3", "s4", "s5")
    assert str(plan.verdict("s3")) == "kept: one of the last 3 (3 of 3)"
    assert str(plan.verdict("s5")) == "kept: one of the last 3 (1 of 3)"


def test_every_rule_that_keeps_a_checkpoint_is_named() -> None:
    cp = scheduled("x", utc(2026, 12, 31, 23))
    plan = plan_retention([cp], KeepRules(last=1, daily=1, weekly=1, monthly=1, yearly=1), cp.time)
    assert str(plan.verdict("x")) == (
        "kept: one of the last 1 (1 of 1); newest of day 2026-12-31 (daily 1 of 1); "
        "newest of week 2026-W53 (weekly 1 of 1); newest of month 2026-12 (monthly 1 of 1); "
        "newest of year 2026 (yearly 1 of 1)"
    )


def test_weeks_are_iso_weeks_across_the_new_year() -> None:
    # 2026-W53 runs from Monday 2026-12-28 to Sunday 2027-01-03; 2027-W01 starts 2027-01-04
    cps = [
        scheduled("sun-w52", utc(2026, 12, 27, 23)),
        scheduled("mon-w53", utc(2026, 12, 28, 0)),
        scheduled("sun-w53", utc(2027, 1, 3, 23)),
        scheduled("mon-w01", utc(2027, 1, 4, 0)),
    ]
    plan = plan_retention(cps, KeepRules(weekly=2), utc(2027, 1, 5))
    assert plan.kept == ("sun-w53", "mon-w01")
    assert str(plan.verdict("sun-w53")) == "kept: newest of week 2026-W53 (weekly 2 of 2)"
    assert str(plan.verdict("mon-w01")) == "kept: newest of week 2027-W01 (weekly 1 of 2)"
    plan = plan_retention(cps, KeepRules(weekly=3), utc(2027, 1, 5))
    assert plan.kept == ("sun-w52", "sun-w53", "mon-w01")


def test_months_and_years() -> None:
    cps = [scheduled(f"m{m}", utc(2025, m, 15)) for m in range(1, 13)]
    cps += [scheduled(f"n{m}", utc(2026, m, 15)) for m in range(1, 4)]
    plan = plan_retention(cps, KeepRules(monthly=4, yearly=3), utc(2026, 3, 20))
    assert plan.kept == ("m12", "n1", "n2", "n3")
    assert str(plan.verdict("m12")) == (
        "kept: newest of month 2025-12 (monthly 4 of 4); newest of year 2025 (yearly 2 of 3)"
    )


def test_days_are_local_to_the_policys_time_zone() -> None:
    cps = [
        scheduled("early", utc(2026, 12, 2, 1)),  # Dec 2 in UTC and in Berlin (02:00)
        scheduled("late", utc(2026, 12, 2, 23, 30)),  # Dec 2 in UTC, Dec 3 00:30 in Berlin
        scheduled("next", utc(2026, 12, 3, 7)),
    ]
    now = utc(2026, 12, 3, 8)
    assert plan_retention(cps, KeepRules(daily=2), now).kept == ("late", "next")
    berlin = plan_retention(cps, KeepRules(daily=2), now, tz="Europe/Berlin")
    assert berlin.kept == ("early", "next")
    assert str(berlin.verdict("early")) == "kept: newest of day 2026-12-02 (daily 2 of 2)"
    assert str(berlin.verdict("late")) == "pruned: kept by no rule (daily = 2)"


def test_the_repeated_hour_of_an_autumn_night_is_two_hourly_periods() -> None:
    first = scheduled("cest", utc(2026, 10, 25, 0, 30))  # 02:30 CEST
    second = scheduled("cet", utc(2026, 10, 25, 1, 30))  # 02:30 CET
    plan = plan_retention([first, second], KeepRules(hourly=2), utc(2026, 10, 25, 1, 45), tz=BERLIN)
    assert [str(v) for v in plan.verdicts] == [
        "kept: newest of hour 2026-10-25T02:00+02 (hourly 2 of 2)",
        "kept: newest of hour 2026-10-25T02:00+01 (hourly 1 of 2)",
    ]


@pytest.mark.parametrize(
    ("tz", "label"),
    [
        ("UTC", "2026-01-15T12:00+00"),
        ("Asia/Kolkata", "2026-01-15T18:00+05:30"),
        ("America/St_Johns", "2026-01-15T09:00-03:30"),
    ],
)
def test_hours_are_named_with_their_offset(tz: str, label: str) -> None:
    plan = plan_retention(
        [scheduled("a", utc(2026, 1, 15, 12, 30)), scheduled("b", utc(2026, 1, 15, 12, 40))],
        KeepRules(hourly=1),
        utc(2026, 1, 15, 12, 45),
        tz=tz,
    )
    assert str(plan.verdict("b")) == f"kept: newest of hour {label} (hourly 1 of 1)"
    assert plan.pruned == ("a",)


def test_a_checkpoint_later_than_now_is_kept() -> None:
    plan = plan_retention(
        [scheduled("a", utc(2026, 1, 1)), scheduled("future", utc(2026, 1, 9))],
        KeepRules(last=1),
        utc(2026, 1, 2),
    )
    assert str(plan.verdict("future")) == "kept: its slot 2026-01-09T00:00Z is later than now"
    assert str(plan.verdict("a")) == "kept: one of the last 1 (1 of 1)"


def test_the_newest_scheduled_checkpoint_outside_every_grid_is_kept() -> None:
    plan = plan_retention([scheduled("a", utc(2026, 1, 1))], KeepRules(hourly=1), utc(2026, 3, 1))
    assert str(plan.verdict("a")) == (
        "kept: newest scheduled checkpoint, the record of the last slot done"
    )


def test_duplicate_names_and_naive_times_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="'a' is given twice"):
        plan_retention(
            [manual("a", utc(2026, 1, 1)), manual("a", utc(2026, 1, 2))], None, utc(2026, 2, 1)
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        manual("a", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_retention([], None, datetime(2026, 1, 1))


def test_last_slot_is_the_latest_recorded_slot() -> None:
    cps = [
        scheduled("a", utc(2026, 1, 2)),
        scheduled("b", utc(2026, 1, 1)),
        manual("m", utc(2026, 1, 5)),
    ]
    assert last_slot(cps) == utc(2026, 1, 2)
    assert last_slot([manual("m", utc(2026, 1, 5))]) is None


# -- properties --------------------------------------------------------------------------------

START = utc(2026, 1, 1)


@st.composite
def checkpoint_sets(draw: st.DrawFn) -> list[CheckpointTimes]:
    count = draw(st.integers(0, 40))
    out = []
    for i in range(count):
        minutes = draw(st.integers(0, 60 * 24 * 400))
        created = START + timedelta(minutes=minutes)
        offset = draw(st.none() | st.integers(-60 * 24 * 30, 60 * 24 * 400))
        expiry = None if offset is None else created + timedelta(minutes=offset)
        slot = draw(st.none() | st.just(created.replace(second=0)))
        out.append(CheckpointTimes(name=f"c{i}", created=created, expiry=expiry, slot=slot))
    return out


rule_sets = st.none() | st.tuples(
    st.integers(0, 5),
    st.integers(0, 30),
    st.integers(0, 10),
    st.integers(0, 6),
    st.integers(0, 13),
    st.integers(0, 3),
).filter(any).map(lambda counts: KeepRules(**dict(zip(KEEP_RULES, counts, strict=True))))
nows = st.integers(0, 60 * 24 * 420).map(lambda m: START + timedelta(minutes=m))
zones = st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"])


@settings(max_examples=200, deadline=None)
@given(checkpoint_sets(), st.data(), nows, zones)
def test_retention_never_prunes_what_it_promises_to_keep(
    cps: list[CheckpointTimes], data: st.DataObject, now: datetime, tz: str
) -> None:
    rules = data.draw(rule_sets)
    plan = plan_retention(cps, rules, now, tz=tz)
    by_name = {c.name: c for c in cps}
    assert sorted(plan.kept + plan.pruned) == sorted(by_name)
    for name in plan.pruned:
        c = by_name[name]
        if c.expiry is not None:
            assert c.expiry <= now, "an unexpired expiry was pruned"
        else:
            assert c.scheduled, "a checkpoint made by hand without expiry was pruned"
    newest = max((c for c in cps if c.scheduled), key=lambda c: (c.time, c.name), default=None)
    if newest is not None:
        assert newest.name in plan.kept
    for v in plan.verdicts:
        assert v.reasons
        assert str(v).startswith("kept: " if v.keep else "pruned: ")


@settings(max_examples=200, deadline=None)
@given(checkpoint_sets(), st.data(), nows, zones, st.randoms())
def test_retention_is_deterministic_and_stable(
    cps: list[CheckpointTimes], data: st.DataObject, now: datetime, tz: str, rnd: object
) -> None:
    rules = data.draw(rule_sets)
    plan = plan_retention(cps, rules, now, tz=tz)
    shuffled = list(cps)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert plan_retention(shuffled, rules, now, tz=tz) == plan
    survivors = [c for c in cps if c.name in plan.kept]
    again = plan_retention(survivors, rules, now, tz=tz)
    assert again.pruned == ()
    assert again.kept == plan.kept


# -- chain limits ------------------------------------------------------------------------------


def member(name: str, day: int, disks: str = "vda vdb", *, prunable: bool = False) -> ChainMember:
    return ChainMember(
        name=name, created=utc(2026, 1, day), disks=frozenset(disks.split()), prunable=prunable
    )


def test_a_create_that_fits_deletes_nothing() -> None:
    fit = fit_chain({"vda": 3}, [member("a", 1), member("b", 2)])
    assert fit.fits
    assert fit.delete == fit.suggest == ()
    assert fit.over == ()
    assert fit.blockers() == []
    fit.check("new")


def test_the_oldest_prunable_checkpoints_that_help_are_deleted_first() -> None:
    members = [
        member("a", 1),
        member("b", 2, "vdb", prunable=True),  # not on vda: deleting it does not help
        member("c", 3, prunable=True),
        member("d", 4, prunable=True),
        member("e", 5, prunable=True),
    ]
    fit = fit_chain({"vda": 3, "vdb": 10}, members)
    # vda holds a, c, d, e: the new one would make 5, so two must go
    assert fit.fits
    assert fit.delete == ("c", "d")
    assert fit.suggest == ()


def test_a_create_that_cannot_fit_names_what_to_delete() -> None:
    members = [member("a", 1), member("b", 2), member("c", 3, prunable=True)]
    fit = fit_chain({"vda": 2, "vdb": 5}, members)
    assert not fit.fits
    assert fit.delete == ("c",)
    assert fit.suggest == ("a",)
    assert [str(o) for o in fit.over] == [
        "disk vda: a new snapshot would make its chain 3 long, past its limit of 2 (max_chain)"
    ]
    assert fit.blockers() == [
        "disk vda: a new snapshot would make its chain 3 long, past its limit of 2 (max_chain)",
        "delete 'c', 'a' first",
    ]
    with pytest.raises(CreateBlockedError) as caught:
        fit.check("auto-1")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "cannot create snapshot 'auto-1': disk vda: a new snapshot would make its chain 3 long, "
        "past its limit of 2 (max_chain); delete 'c', 'a' first"
    )


def test_only_the_disks_of_the_new_checkpoint_count() -> None:
    members = [member("a", 1), member("b", 2)]
    assert not fit_chain({"vda": 2, "vdb": 2}, members).fits
    assert fit_chain({"vda": 2, "vdb": 2}, members, disks=["vdc"]).fits
    assert fit_chain({"vda": 5, "vdb": 2}, members, disks=["vda"]).fits


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limits_are_refused(limit: object) -> None:
    with pytest.raises(ConfigError) as caught:
        fit_chain({"vda": limit}, [])  # type: ignore[dict-item]
    assert str(caught.value) == f"max_chain for disk vda = {limit!r}: must be 1 or more"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sets(st.sampled_from(["vda", "vdb", "vdc"])), st.booleans()), max_size=15
    ),
    st.dictionaries(st.sampled_from(["vda", "vdb", "vdc"]), st.integers(1, 8)),
)
def test_after_the_deletions_of_a_fit_every_chain_has_room(
    specs: list[tuple[set[str], bool]], limits: dict[str, int]
) -> None:
    members = [
        ChainMember(name=f"c{i}", created=START + i * HOUR, disks=frozenset(d), prunable=p)
        for i, (d, p) in enumerate(specs)
    ]
    fit = fit_chain(limits, members)
    gone = set(fit.delete) | set(fit.suggest)
    assert set(fit.delete) <= {m.name for m in members if m.prunable}
    assert not set(fit.suggest) & {m.name for m in members if m.prunable}
    for vdev, limit in limits.items():
        left = sum(vdev in m.disks for m in members if m.name not in gone)
        assert left + 1 <= limit
        after_delete = sum(vdev in m.disks for m in members if m.name not in fit.delete)
        assert (after_delete + 1 <= limit) == (vdev not in {o.vdev for o in fit.over})
