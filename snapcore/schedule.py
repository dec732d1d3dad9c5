"""Schedule expressions for scheduled checkpoints: when a checkpoint is due.

A schedule is one or several cron expressions, evaluated in the wall-clock time of one time zone
(UTC unless the policy names another). Five fields, ``minute hour day-of-month month
day-of-week``, each ``*``, a number, a range ``a-b``, a step ``*/s``, ``a-b/s`` or ``a/s``
(from *a* to the field's maximum), or a comma-separated list of these; months and days of the
week may be given by their English three-letter names (``jan``..``dec``, ``sun``..``sat``, any
case), and day-of-week 0 and 7 are both Sunday. The day rule is cron's (Vixie cron, cronie):
when the day-of-month and day-of-week fields both restrict the day (neither starts with ``*``),
a day matches if it matches either field; otherwise it must match both. ``@hourly``,
``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly`` (``@annually``) stand for
``0 * * * *``, ``0 0 * * *``, ``0 0 * * 0``, ``0 0 1 * *`` and ``0 0 1 1 *``.

A *slot* is an instant the schedule names. Daylight saving time is handled as cron does, with a
rule that makes each wall-clock slot fire exactly once:

- a slot whose wall-clock time does not exist (the hour skipped when clocks go forward) is the
  instant the clocks jump, the first instant whose wall-clock time is at or past it;
- a slot whose wall-clock time occurs twice (the hour repeated when clocks go back) is its first
  occurrence only;
- slots that land on the same instant (``30 2 * * *`` and ``0 3 * * *`` on the day the clocks
  skip 02:00-03:00) are one slot.

:meth:`Schedule.due` gives the catch-up rule of ``snapcore run-policy``: whatever the number of
slots missed since the last one done, one checkpoint is due, named for the latest of them.

Everything here is pure: no clock is read, nothing is printed. Invalid expressions raise
:class:`~snapcore.errors.ConfigError` with one line naming the expression and what is wrong.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from snapcore.errors import ConfigError

__all__ = ["CronExpression", "Schedule", "parse_timezone"]

MACROS: Final[dict[str, str]] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_MONTHS: Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
_WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: The longest each month can be (February in a leap year).
_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MINUTE: Final = timedelta(minutes=1)
_NUMBER: Final = re.compile(r"[0-9]+")
#: How far the field search may go before giving up: far past any expression that can match
#: (February 29 recurs within 8 years), so reaching it means a bug, never a slow schedule.
_SEARCH_YEARS: Final = 400


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    #: The value the names start at (1 for months, 0 for days of the week).
    first_name_value: int = 0

    @property
    def hint(self) -> str:
        if self.name == "month":
            return " or a month name (jan..dec)"
        if self.name == "day-of-week":
            return " or a day name (sun..sat)"
        return ""


_FIELDS: Final = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    # 7 is accepted as Sunday and folded to 0 after parsing
    _Field("day-of-week", 0, 7, _WEEKDAYS, 0),
)


def _value(field: _Field, token: str) -> int:
    if _NUMBER.fullmatch(token):
        number = int(token)
        if not field.low <= number <= field.high:
            raise ValueError(f"{field.name} {number} is out of range {field.low}-{field.high}")
        return number
    lowered = token.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.first_name_value
    if not token:
        raise ValueError(f"{field.name} has an empty value")
    raise ValueError(f'{field.name} "{token}" is not a number{field.hint}')


def _item(field: _Field, item: str) -> range:
    """The values of one list item of *field*: ``*``, ``a``, ``a-b``, each with an optional
    ``/step``."""
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
            raise ValueError(f'{field.name} step "{step_text}" must be a whole number, 1 or more')
        step = int(step_text)
    if base == "*":
        high = 6 if field.name == "day-of-week" else field.high
        return range(field.low, high + 1, step)
    start_text, dash, end_text = base.partition("-")
    if not dash:
        start = _value(field, base)
        # "a/s" runs from a to the field's maximum; a lone "a" is that value only
        return range(start, (field.high if slash else start) + 1, step)
    if not start_text or not end_text:
        raise ValueError(f'{field.name} range "{base}" needs a start and an end')
    start, end = _value(field, start_text), _value(field, end_text)
    if end < start:
        raise ValueError(f"{field.name} range {base} goes backwards ({start} > {end})")
    return range(start, end + 1, step)


def _parse_field(field: _Field, text: str) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f'{field.name} list "{text}" has an empty item')
        values.update(_item(field, item))
    if field.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


def _quoted(expression: str) -> str:
    return f'schedule "{expression}"'


@dataclass(frozen=True, slots=True, kw_only=True)
class CronExpression:
    """One parsed cron expression: the values each field allows, in wall-clock time.

    Build one with :meth:`parse`. Days of the week count from 0, Sunday, to 6, Saturday.
    """

    #: The expression as written (an ``@``-name stays an ``@``-name).
    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    #: The day-of-month field starts with ``*`` (cron's test for "does not restrict the day").
    any_day: bool
    #: The day-of-week field starts with ``*``.
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse one expression: five fields, or one of the ``@`` names.

        :raises ConfigError: ``schedule "<text>": <what is wrong>``, e.g.
            ``schedule "61 * * * *": minute 61 is out of range 0-59``.
        """
        shown = text.strip()
        if shown.startswith("@"):
            fields_text = MACROS.get(shown.lower())
            if fields_text is None:
                raise ConfigError(
                    f"{_quoted(shown)}: unknown @-expression; use @hourly, @daily, @weekly, "
                    "@monthly, @yearly or @annually"
                )
        else:
            fields_text = shown
        fields = fields_text.split()
        if len(fields) != len(_FIELDS):
            raise ConfigError(
                f"{_quoted(shown)}: expected 5 fields (minute hour day-of-month month "
                f"day-of-week) or an @-expression such as @daily, found {len(fields)}"
            )
        try:
            parsed = [_parse_field(f, t) for f, t in zip(_FIELDS, fields, strict=True)]
        except ValueError as exc:
            raise ConfigError(f"{_quoted(shown)}: {exc}") from None
        minutes, hours, days, months, weekdays = parsed
        expression = cls(
            text=shown,
            minutes=minutes,
            hours=hours,
            days=days,
            months=months,
            weekdays=weekdays,
            any_day=fields[2].startswith("*"),
            any_weekday=fields[4].startswith("*"),
        )
        if expression._both_days and not any(d <= _MONTH_DAYS[m - 1] for m in months for d in days):
            raise ConfigError(
                f"{_quoted(shown)}: day-of-month {fields[2]} never occurs in month {fields[3]}"
            )
        return expression

    @property
    def _both_days(self) -> bool:
        """A day must match both day fields (cron: one of them starts with ``*``)."""
        return self.any_day or self.any_weekday

    def day_matches(self, year: int, month: int, day: int) -> bool:
        """Whether the date matches the day-of-month, month and day-of-week fields."""
        if month not in self.months:
            return False
        in_days = day in self.days
        in_weekdays = (calendar.weekday(year, month, day) + 1) % 7 in self.weekdays
        if self._both_days:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def matches(self, wall: datetime) -> bool:
        """Whether the wall-clock time *wall* (its minute; seconds are ignored) is one this
        expression names. The time zone of *wall*, if any, is ignored."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and self.day_matches(wall.year, wall.month, wall.day)
        )

    def next_wall(self, wall: datetime) -> datetime:
        """The earliest naive wall-clock minute at or after *wall* (naive, whole minute) that
        this expression names."""
        t = wall
        limit = wall.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                i = bisect_right(self.months, t.month)
                t = (
                    datetime(t.year, self.months[i], 1)
                    if i < len(self.months)
                    else datetime(t.year + 1, self.months[0], 1)
                )
                continue
            if not self.day_matches(t.year, t.month, t.day):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                i = bisect_right(self.hours, t.hour)
                if i == len(self.hours):
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                else:
                    t = t.replace(hour=self.hours[i], minute=0)
                continue
            if t.minute not in self.minutes:
                i = bisect_right(self.minutes, t.minute)
                if i == len(self.minutes):
                    t = t.replace(minute=0) + timedelta(hours=1)
                else:
                    t = t.replace(minute=self.minutes[i])
                continue
            return t
        raise AssertionError(f"{_quoted(self.text)}: no slot within {_SEARCH_YEARS} years")

    def previous_wall(self, wall: datetime) -> datetime:
        """The latest naive wall-clock minute at or before *wall* (naive, whole minute) that
        this expression names."""
        t = wall
        limit = wall.year - _SEARCH_YEARS
        while t.year >= limit:
            if t.month not in self.months:
                i = bisect_left(self.months, t.month)
                year, month = (t.year, self.months[i - 1]) if i else (t.year - 1, self.months[-1])
                last_day = calendar.monthrange(year, month)[1]
                t = datetime(year, month, last_day, 23, 59)
                continue
            if not self.day_matches(t.year, t.month, t.day):
                t = datetime(t.year, t.month, t.day) - _MINUTE
                continue
            if t.hour not in self.hours:
                i = bisect_left(self.hours, t.hour)
                if i == 0:
                    t = datetime(t.year, t.month, t.day) - _MINUTE
                else:
                    t = t.replace(hour=self.hours[i - 1], minute=59)
                continue
            if t.minute not in self.minutes:
                i = bisect_left(self.minutes, t.minute)
                if i == 0:
                    t = t.replace(minute=0) - _MINUTE
                else:
                    t = t.replace(minute=self.minutes[i - 1])
                continue
            return t
        raise AssertionError(f"{_quoted(self.text)}: no slot within {_SEARCH_YEARS} years")


def parse_timezone(name: str | tzinfo) -> tzinfo:
    """The time zone named *name* (an IANA name such as ``Europe/Berlin``, or ``UTC``).

    A :class:`~datetime.tzinfo` is returned as it is. The zone data come from the system
    (``/usr/share/zoneinfo``) or, where it has none, the ``tzdata`` package.

    :raises ConfigError: ``timezone "<name>": not a known time zone ...``.
    """
    if isinstance(name, tzinfo):
        return name
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f'timezone "{name}": not a known time zone; use an IANA name such as UTC or '
            "Europe/Berlin"
        ) from None


def _require_aware(t: datetime, what: str) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not naive {t.isoformat()}")


def _naive_minute(t: datetime) -> datetime:
    return t.replace(tzinfo=None, fold=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One or several cron expressions evaluated in the wall-clock time of *tz*.

    Its slots are the union of its expressions' slots, mapped to instants by the DST rule of
    this module's docstring. Every datetime it takes must be timezone-aware (a naive one raises
    ``ValueError``); every slot it returns is in UTC, on a whole minute. (UTC, not *tz*: Python
    compares two datetimes of one zone by their wall-clock times, ignoring ``fold``, and never
    finds a time of the repeated hour equal to one of another zone; instants in UTC compare as
    instants. ``slot.astimezone(schedule.tz)`` gives the wall-clock time.)
    """

    expressions: tuple[CronExpression, ...]
    tz: tzinfo = UTC

    @classmethod
    def parse(cls, spec: str | Sequence[str], *, tz: str | tzinfo = "UTC") -> Schedule:
        """Parse *spec*: one expression, or a list of them (a TOML string or array).

        :param tz: the time zone whose wall-clock time the expressions name.
        :raises ConfigError: for an empty list, an item that is not a string, an invalid
            expression (see :meth:`CronExpression.parse`) or an unknown time zone.
        """
        zone = parse_timezone(tz)
        items: Sequence[object] = [spec] if isinstance(spec, str) else spec
        if not isinstance(items, Sequence) or not items:
            raise ConfigError(
                'schedule: give one expression or a list of them, such as "@daily" or '
                '["0 * * * *", "30 2 * * sun"]'
            )
        expressions = []
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(f"schedule: expected a string expression, not {item!r}")
            expressions.append(CronExpression.parse(item))
        return cls(tuple(expressions), zone)

    def __str__(self) -> str:
        return ", ".join(f'"{e.text}"' for e in self.expressions)

    def matches(self, wall: datetime) -> bool:
        """Whether the wall-clock minute *wall* is named by one of the expressions."""
        return any(e.matches(wall) for e in self.expressions)

    def instant(self, wall: datetime) -> datetime:
        """The instant, in UTC, of the naive wall-clock time *wall* of *tz* under the DST rule:
        its first occurrence, or the instant the clocks jumped if it does not exist."""
        first = wall.replace(tzinfo=self.tz, fold=0)
        utc = first.astimezone(UTC)
        local = utc.astimezone(self.tz)
        if local.replace(tzinfo=None, fold=0) == wall:
            return utc
        # In a gap: fold=1 reads it with the offset after the jump, an instant before the jump;
        # fold=0 with the offset before it, an instant after. Find the jump to the second.
        lo = int(wall.replace(tzinfo=self.tz, fold=1).timestamp())
        hi = int(utc.timestamp())
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).replace(tzinfo=None, fold=0) >= wall:
                hi = mid
            else:
                lo = mid
        return datetime.fromtimestamp(hi, UTC)

    def _next_wall(self, wall: datetime) -> datetime:
        return min(e.next_wall(wall) for e in self.expressions)

    def _previous_wall(self, wall: datetime) -> datetime:
        return max(e.previous_wall(wall) for e in self.expressions)

    def next_after(self, t: datetime) -> datetime:
        """The first slot strictly after the instant *t*."""
        _require_aware(t, "t")
        t = t.astimezone(UTC)
        wall = _naive_minute(t.astimezone(self.tz))
        while True:
            slot_wall = self._next_wall(wall)
            slot = self.instant(slot_wall)
            if slot > t:
                return slot
            wall = slot_wall + _MINUTE

    def slot_at_or_before(self, t: datetime) -> datetime:
        """The last slot at or before the instant *t*."""
        _require_aware(t, "t")
        t = t.astimezone(UTC)
        local = t.astimezone(self.tz)
        wall = _naive_minute(local)
        if local.fold:
            # t is in the second pass of a repeated hour: slots with a later wall-clock time in
            # that hour fired in its first pass, before t.
            first_offset = local.replace(fold=0).utcoffset()
            second_offset = local.utcoffset()
            assert first_offset is not None
            assert second_offset is not None
            wall += first_offset - second_offset
        while True:
            slot_wall = self._previous_wall(wall)
            slot = self.instant(slot_wall)
            if slot <= t:
                return slot
            wall = slot_wall - _MINUTE

    def due(self, last_run: datetime | None, now: datetime) -> datetime | None:
        """The slot a checkpoint is due for at *now*, or ``None`` if none is.

        *last_run* is the slot of the last checkpoint made by this schedule (``None`` if none
        was). The answer is the latest slot at or before *now* if it is later than
        *last_run*: however many slots were missed, one checkpoint is due, for the latest of
        them (a missed run catches up once, never twice). With no *last_run*, the latest slot
        at or before *now* is due, so a new policy makes its first checkpoint at once. A
        *last_run* later than *now* (the clock went back) makes nothing due until the clock
        passes a slot later than it.
        """
        if last_run is not None:
            _require_aware(last_run, "last_run")
            last_run = last_run.astimezone(UTC)
        slot = self.slot_at_or_before(now)
        if last_run is None or slot > last_run:
            return slot
        return None
