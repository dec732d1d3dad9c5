"""Tests of snapcore.schedule: cron expressions, slots, the DST rule and the catch-up rule."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapcore.errors import ConfigError
from snapcore.schedule import CronExpression, Schedule, parse_timezone

BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = timedelta(minutes=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def slots(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Every slot in (start, end], by next_after."""
    out = []
    t = schedule.next_after(start)
    while t <= end:
        out.append(t)
        t = schedule.next_after(t)
    return out


# -- parsing -----------------------------------------------------------------------------------


def test_fields_lists_ranges_steps_and_names() -> None:
    e = CronExpression.parse("1,5,10-12 */6 1-30/10 jan,MAR-may mon-fri")
    assert e.minutes == (1, 5, 10, 11, 12)
    assert e.hours == (0, 6, 12, 18)
    assert e.days == (1, 11, 21)
    assert e.months == (1, 3, 4, 5)
    assert e.weekdays == (1, 2, 3, 4, 5)
    assert not e.any_day
    assert not e.any_weekday


def test_a_value_with_a_step_runs_to_the_fields_maximum() -> None:
    assert CronExpression.parse("50/3 * * * *").minutes == (50, 53, 56, 59)
    assert CronExpression.parse("*/25 * * * *").minutes == (0, 25, 50)


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN", "Sun"])
def test_day_of_week_0_and_7_and_sun_are_sunday(dow: str) -> None:
    assert CronExpression.parse(f"0 0 * * {dow}").weekdays == (0,)


def test_a_range_to_7_ends_on_sunday() -> None:
    assert CronExpression.parse("0 0 * * fri-7").weekdays == (0, 5, 6)
    assert CronExpression.parse("0 0 * * */2").weekdays == (0, 2, 4, 6)


@pytest.mark.parametrize(
    ("macro", "fields"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_at_expressions_stand_for_their_fields(macro: str, fields: str) -> None:
    a, b = CronExpression.parse(macro), CronExpression.parse(fields)
    assert a.text == macro
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (
        b.minutes,
        b.hours,
        b.days,
        b.months,
        b.weekdays,
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("61 * * * *", 'schedule "61 * * * *": minute 61 is out of range 0-59'),
        ("0 24 * * *", 'schedule "0 24 * * *": hour 24 is out of range 0-23'),
        ("0 0 0 * *", 'schedule "0 0 0 * *": day-of-month 0 is out of range 1-31'),
        ("0 0 32 * *", 'schedule "0 0 32 * *": day-of-month 32 is out of range 1-31'),
        ("0 0 * 13 *", 'schedule "0 0 * 13 *": month 13 is out of range 1-12'),
        ("0 0 * * 8", 'schedule "0 0 * * 8": day-of-week 8 is out of range 0-7'),
        ("x * * * *", 'schedule "x * * * *": minute "x" is not a number'),
        (
            "0 0 * foo *",
            'schedule "0 0 * foo *": month "foo" is not a number or a month name (jan..dec)',
        ),
        (
            "0 0 * * fun",
            'schedule "0 0 * * fun": day-of-week "fun" is not a number or a day name (sun..sat)',
        ),
        ("0 0 mon * *", 'schedule "0 0 mon * *": day-of-month "mon" is not a number'),
        ("5-1 * * * *", 'schedule "5-1 * * * *": minute range 5-1 goes backwards (5 > 1)'),
        (
            "0 0 * * fri-mon",
            'schedule "0 0 * * fri-mon": day-of-week range fri-mon goes backwards (5 > 1)',
        ),
        (
            "*/0 * * * *",
            'schedule "*/0 * * * *": minute step "0" must be a whole number, 1 or more',
        ),
        (
            "*/x * * * *",
            'schedule "*/x * * * *": minute step "x" must be a whole number, 1 or more',
        ),
        ("1,,2 * * * *", 'schedule "1,,2 * * * *": minute list "1,,2" has an empty item'),
        ("1- * * * *", 'schedule "1- * * * *": minute range "1-" needs a start and an end'),
        ("-1 * * * *", 'schedule "-1 * * * *": minute range "-1" needs a start and an end'),
        ("L * * * *", 'schedule "L * * * *": minute "L" is not a number'),
        (
            "* * *",
            'schedule "* * *": expected 5 fields (minute hour day-of-month month day-of-week) '
            "or an @-expression such as @daily, found 3",
        ),
        (
            "0 0 * * * 2026",
            'schedule "0 0 * * * 2026": expected 5 fields (minute hour day-of-month month '
            "day-of-week) or an @-expression such as @daily, found 6",
        ),
        (
            "@reboot",
            'schedule "@reboot": unknown @-expression; use @hourly, @daily, @weekly, @monthly, '
            "@yearly or @annually",
        ),
        ("0 0 31 2 *", 'schedule "0 0 31 2 *": day-of-month 31 never occurs in month 2'),
        (
            "0 0 30,31 feb *",
            'schedule "0 0 30,31 feb *": day-of-month 30,31 never occurs in month feb',
        ),
        (
            "0 0 31 apr,jun,sep,nov *",
            'schedule "0 0 31 apr,jun,sep,nov *": day-of-month 31 never occurs in month '
            "apr,jun,sep,nov",
        ),
    ],
)
def test_bad_expressions_are_refused_with_one_exact_line(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Schedule.parse(spec)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


def test_a_day_that_never_occurs_is_fine_when_the_weekday_field_may_match() -> None:
    # both day fields restricted: cron matches either, so Fridays match even in February
    expression = CronExpression.parse("0 0 31 2 fri")
    assert Schedule((expression,)).next_after(utc(2026, 1, 31)) == utc(2026, 2, 6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "schedule: give one expression or a list of them"),
        ([5], "schedule: expected a string expression, not 5"),
    ],
)
def test_bad_schedule_lists_are_refused(spec: list[object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Schedule.parse(spec)  # type: ignore[arg-type]


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Schedule.parse("@daily", tz="Mars/Olympus")
    assert str(caught.value) == (
        'timezone "Mars/Olympus": not a known time zone; use an IANA name such as UTC or '
        "Europe/Berlin"
    )
    with pytest.raises(ConfigError, match="not a known time zone"):
        parse_timezone("../../etc/passwd")


def test_several_expressions_are_one_schedule_without_duplicates() -> None:
    s = Schedule.parse(["0 6 * * *", "0 18 * * *", "0 */6 * * *"])
    assert slots(s, utc(2026, 5, 1), utc(2026, 5, 2)) == [
        utc(2026, 5, 1, 6),
        utc(2026, 5, 1, 12),
        utc(2026, 5, 1, 18),
        utc(2026, 5, 2, 0),
    ]
    assert str(s) == '"0 6 * * *", "0 18 * * *", "0 */6 * * *"'


# -- next_after and cron's edge cases ------------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    s = Schedule.parse("*/15 * * * *")
    assert s.next_after(utc(2026, 5, 1, 10, 15)) == utc(2026, 5, 1, 10, 30)
    almost = utc(2026, 5, 1, 10, 14, 59) + timedelta(microseconds=999999)
    assert s.next_after(almost) == utc(2026, 5, 1, 10, 15)
    assert s.slot_at_or_before(utc(2026, 5, 1, 10, 15)) == utc(2026, 5, 1, 10, 15)
    assert s.slot_at_or_before(utc(2026, 5, 1, 10, 14, 59)) == utc(2026, 5, 1, 10, 0)


def test_february_29_waits_for_a_leap_year_and_skips_2100() -> None:
    s = Schedule.parse("0 0 29 2 *")
    assert s.next_after(utc(2026, 3, 1)) == utc(2028, 2, 29)
    assert s.next_after(utc(2096, 3, 1)) == utc(2104, 2, 29)
    assert s.slot_at_or_before(utc(2104, 2, 28)) == utc(2096, 2, 29)


def test_day_31_skips_the_months_without_one() -> None:
    s = Schedule.parse("0 0 31 * *")
    got = slots(s, utc(2025, 12, 31), utc(2026, 12, 31))
    assert [t.month for t in got] == [1, 3, 5, 7, 8, 10, 12]
    assert s.slot_at_or_before(utc(2026, 5, 30)) == utc(2026, 3, 31)


def test_both_day_fields_restricted_match_either() -> None:
    # Friday the 13th in cron is every 13th and every Friday
    s = Schedule.parse("0 0 13 * fri")
    got = {t.date() for t in slots(s, utc(2026, 2, 1), utc(2026, 2, 28, 23))}
    fridays = {date(2026, 2, d) for d in (6, 13, 20, 27)}
    assert got == fridays | {date(2026, 2, 13)}


def test_a_day_field_starting_with_a_star_makes_both_fields_needed() -> None:
    # Vixie cron and cronie: "*/2" counts as unrestricted, so the fields are AND-ed
    s = Schedule.parse("0 0 */2 * mon")
    got = [t.date() for t in slots(s, utc(2026, 6, 1), utc(2026, 6, 30))]
    assert got == [date(2026, 6, 15), date(2026, 6, 29)]  # odd days that are Mondays


def test_dow_0_and_7_give_the_same_slots() -> None:
    a, b = Schedule.parse("0 12 * * 0"), Schedule.parse("0 12 * * 7")
    assert slots(a, utc(2026, 1, 1), utc(2026, 3, 1)) == slots(b, utc(2026, 1, 1), utc(2026, 3, 1))
    assert all(t.weekday() == 6 for t in slots(a, utc(2026, 1, 1), utc(2026, 3, 1)))


def test_naive_times_are_a_programming_error() -> None:
    s = Schedule.parse("@daily")
    with pytest.raises(ValueError, match="timezone-aware"):
        s.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        s.due(datetime(2026, 1, 1), utc(2026, 1, 2))


# -- the catch-up rule -------------------------------------------------------------------------


def test_a_missed_run_catches_up_once_for_the_latest_missed_slot() -> None:
    s = Schedule.parse("@hourly")
    last = utc(2026, 3, 2, 10)
    now = utc(2026, 3, 5, 15, 20)  # three days and five hours of slots missed
    assert s.due(last, now) == utc(2026, 3, 5, 15)
    # the catch-up checkpoint is made: its slot is now the last run, nothing more is due
    assert s.due(utc(2026, 3, 5, 15), now) is None
    assert s.due(utc(2026, 3, 5, 15), utc(2026, 3, 5, 15, 59, 59)) is None
    assert s.due(utc(2026, 3, 5, 15), utc(2026, 3, 5, 16)) == utc(2026, 3, 5, 16)


def test_without_a_last_run_the_latest_slot_is_due() -> None:
    s = Schedule.parse("30 2 * * *")
    assert s.due(None, utc(2026, 3, 5, 1)) == utc(2026, 3, 4, 2, 30)


def test_a_clock_gone_back_makes_nothing_due() -> None:
    s = Schedule.parse("@hourly")
    assert s.due(utc(2026, 3, 5, 15), utc(2026, 3, 5, 12, 30)) is None


def test_running_every_minute_makes_each_slot_due_exactly_once() -> None:
    s = Schedule.parse(["*/7 * * * *", "@hourly"])
    last: datetime | None = utc(2026, 1, 1)
    done = []
    now = utc(2026, 1, 1)
    while now < utc(2026, 1, 2):
        now += MINUTE
        slot = s.due(last, now)
        if slot is not None:
            done.append(slot)
            last = slot
    assert done == slots(s, utc(2026, 1, 1), utc(2026, 1, 2))
    assert len(done) == len(set(done)) == 24 * 9  # 0, 7, ..., 56: @hourly's 0 is one of them


# -- daylight saving time (Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) --


def run_every_minute(s: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """What a run-policy loop started every minute from start to end makes: the slots due."""
    last: datetime | None = start
    made = []
    now = start
    while now <= end:
        slot = s.due(last, now)
        if slot is not None:
            made.append(slot)
            last = slot
        now += MINUTE
    return made


def test_a_slot_in_the_skipped_hour_fires_once_when_the_clocks_jump() -> None:
    s = Schedule.parse("30 2 * * *", tz=BERLIN)
    made = run_every_minute(s, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert made == [
        datetime(2026, 3, 28, 2, 30, tzinfo=BERLIN),
        datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN),  # 02:30 does not exist: at the jump
        datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN),
    ]
    assert made[1] == utc(2026, 3, 29, 1)
    assert [t.astimezone(BERLIN).strftime("%H:%M%z") for t in made] == [
        "02:30+0100",
        "03:00+0200",
        "02:30+0200",
    ]
    assert all(t.tzinfo is UTC for t in made)


def test_a_slot_in_the_repeated_hour_fires_once_in_its_first_pass() -> None:
    s = Schedule.parse("30 2 * * *", tz=BERLIN)
    made = run_every_minute(s, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert made == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert made[0].astimezone(BERLIN).strftime("%H:%M%z") == "02:30+0200"  # CEST, fold 0
    # (made[0] == datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN) is False in Python: an
    # ambiguous time never equals a time of another zone; slots are in UTC for that reason)
    # in the second pass of 02:30 (CET) the slot is the first pass, not a new one
    second_pass = utc(2026, 10, 25, 1, 30)
    assert s.slot_at_or_before(second_pass) == made[0]
    assert s.due(made[0], second_pass) is None
    assert s.next_after(made[0]) == made[1]


def test_slots_in_and_after_the_gap_on_one_instant_are_one_slot() -> None:
    s = Schedule.parse(["30 2 * * *", "0 3 * * *"], tz=BERLIN)
    got = slots(s, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert got == [utc(2026, 3, 29, 1)]


def test_hourly_in_berlin_on_the_dst_days() -> None:
    s = Schedule.parse("@hourly", tz=BERLIN)
    spring = slots(s, datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN))
    assert len(spring) == 23
    assert [t.astimezone(BERLIN).hour for t in spring][:4] == [1, 3, 4, 5]
    autumn = slots(s, datetime(2026, 10, 25, tzinfo=BERLIN), datetime(2026, 10, 26, tzinfo=BERLIN))
    assert len(autumn) == 24
    assert autumn[1:3] == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]  # 02:00 CEST, 03:00 CET
    assert len(set(autumn)) == len(autumn)
    assert run_every_minute(s, utc(2026, 10, 24, 22), utc(2026, 10, 25, 4)) == slots(
        s, utc(2026, 10, 24, 22), utc(2026, 10, 25, 4)
    )


def test_a_year_of_hourly_slots_in_berlin_has_one_per_wall_clock_hour_but_the_skipped_one() -> None:
    s = Schedule.parse("@hourly", tz=BERLIN)
    got = slots(
        s, datetime(2025, 12, 31, 23, tzinfo=BERLIN), datetime(2026, 12, 31, 23, tzinfo=BERLIN)
    )
    assert len(got) == 365 * 24 - 1
    assert got == sorted(set(got))


def test_instant_maps_walls_as_documented() -> None:
    s = Schedule.parse("@hourly", tz=BERLIN)
    assert s.instant(datetime(2026, 3, 29, 2, 59)) == utc(2026, 3, 29, 1)
    assert s.instant(datetime(2026, 10, 25, 2, 59)) == utc(2026, 10, 25, 0, 59)
    assert s.instant(datetime(2026, 10, 25, 3, 0)) == utc(2026, 10, 25, 2)


# -- properties --------------------------------------------------------------------------------


@st.composite
def field(draw: st.DrawFn, low: int, high: int, *, weekday: bool = False) -> tuple[str, set[int]]:
    """A field's text and the values it stands for, computed here without the parser."""
    top = 6 if weekday else high
    kind = draw(st.sampled_from(["star", "star_step", "value", "range", "range_step", "list"]))
    if kind == "star":
        return "*", set(range(low, top + 1))
    if kind == "star_step":
        step = draw(st.integers(1, high - low + 1))
        return f"*/{step}", set(range(low, top + 1, step))
    if kind == "list":
        values = draw(st.sets(st.integers(low, high), min_size=1, max_size=4))
        text = ",".join(str(v) for v in sorted(values))
    else:
        a = draw(st.integers(low, high))
        if kind == "value":
            values, text = {a}, str(a)
        else:
            b = draw(st.integers(a, high))
            step = draw(st.integers(1, 5)) if kind == "range_step" else 1
            values = set(range(a, b + 1, step))
            text = f"{a}-{b}" + (f"/{step}" if kind == "range_step" else "")
    if weekday and 7 in values:
        values = (values - {7}) | {0}
    return text, values


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, dict[str, set[int]], bool]:
    parts = {
        "minute": draw(field(0, 59)),
        "hour": draw(field(0, 23)),
        "dom": draw(field(1, 31)),
        "month": draw(field(1, 12)),
        "dow": draw(field(0, 7, weekday=True)),
    }
    text = " ".join(t for t, _ in parts.values())
    both_needed = parts["dom"][0].startswith("*") or parts["dow"][0].startswith("*")
    if both_needed and not any(
        d <= calendar.monthrange(2028, m)[1] for m in parts["month"][1] for d in parts["dom"][1]
    ):
        parts["dom"] = ("*", set(range(1, 32)))
        text = " ".join(t for t, _ in parts.values())
    return text, {k: v for k, (_, v) in parts.items()}, both_needed


def oracle_next(sets: dict[str, set[int]], both_needed: bool, t: datetime) -> datetime:
    """The first matching UTC minute after t, day by day: independent of the field search."""
    day = t.date()
    for _ in range(9 * 366):
        in_dom = day.day in sets["dom"]
        in_dow = (day.weekday() + 1) % 7 in sets["dow"]
        day_ok = (in_dom and in_dow) if both_needed else (in_dom or in_dow)
        if day.month in sets["month"] and day_ok:
            for hour in sorted(sets["hour"]):
                for minute in sorted(sets["minute"]):
                    candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                    if candidate > t:
                        return candidate
        day += timedelta(days=1)
    raise AssertionError("no slot in 9 years")


instants = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2090, 12, 31),
).map(lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(expressions(), instants)
def test_next_after_is_the_first_matching_minute_after_t(
    expression: tuple[str, dict[str, set[int]], bool], t: datetime
) -> None:
    text, sets, both_needed = expression
    s = Schedule.parse(text)
    got = s.next_after(t)
    assert got > t
    assert s.matches(got.replace(tzinfo=None))
    assert got == oracle_next(sets, both_needed, t)


@settings(max_examples=300, deadline=None)
@given(expressions(), instants, st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]))
def test_forward_and_backward_searches_agree(
    expression: tuple[str, dict[str, set[int]], bool], t: datetime, tz: str
) -> None:
    s = Schedule.parse(expression[0], tz=tz)
    following = s.next_after(t)
    previous = s.slot_at_or_before(t)
    assert previous <= t < following
    assert s.slot_at_or_before(following) == following
    assert s.slot_at_or_before(following - timedelta(microseconds=1)) == previous
    assert s.next_after(previous) == following
    assert s.due(previous, t) is None
    assert s.due(previous, following) == following


def test_times_given_in_the_zone_with_a_fold_are_read_as_instants() -> None:
    s = Schedule.parse("@hourly", tz=BERLIN)
    second_pass = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN)  # 01:30Z
    assert s.next_after(second_pass) == utc(2026, 10, 25, 2)  # 03:00 CET
    assert s.slot_at_or_before(second_pass) == utc(2026, 10, 25, 0)  # 02:00 CEST
    first_pass = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)  # 00:30Z
    assert s.due(second_pass, utc(2026, 10, 25, 1, 59)) is None
    assert s.due(first_pass, utc(2026, 10, 25, 1, 59)) is None
    assert s.due(datetime(2026, 10, 25, 1, 59, tzinfo=BERLIN), first_pass) == utc(2026, 10, 25, 0)
