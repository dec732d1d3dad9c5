"""Retention of checkpoints: which to keep and which to prune, and what makes room in a chain.

:func:`plan_retention` judges each checkpoint of a domain, in this order (the first that
applies decides):

1. **expiry.** A checkpoint with an expiry is kept while its expiry is in the future and pruned
   once it has passed; the keep rules do not apply to it. (One exception, rule 5.)
2. **by hand.** A checkpoint not made by the schedule and without an expiry is kept.
3. **no rules.** Without keep rules, a scheduled checkpoint without an expiry is kept.
4. **keep rules (grids).** The other scheduled checkpoints, those without an expiry, are judged
   by the rules, like sanoid's and zrepl's grids. A checkpoint's time is its slot (the instant
   the schedule named for it). ``last = N`` keeps the N newest. ``hourly``, ``daily``,
   ``weekly``, ``monthly`` and ``yearly = N`` each keep, for each of the N calendar periods
   counted back from *now* (the period holding *now* is number 1), the newest checkpoint of
   that period; a period without checkpoints still counts (the window does not reach further
   back to make up for it). Periods are local to the policy's time zone: hours as the local
   clock shows them (the repeated hour of an autumn night is two hours), days, ISO weeks
   (Monday to Sunday, ``2026-W53``), months, years. A checkpoint kept by no rule is pruned; one
   whose time is later than *now* is kept.
5. **the last slot done.** The newest scheduled checkpoint is always kept, even past its expiry
   or outside every grid: it records the last slot the schedule did, so pruning it would make
   that slot due again.

Only scheduled checkpoints fill grid periods: a checkpoint made by hand never takes a period's
place.

:func:`fit_chain` says which checkpoints to delete, oldest first, so that a new checkpoint fits
each disk's chain limit (``max_chain``), or that it cannot fit and which ones the operator would
have to delete.

Everything here is pure and deterministic: the same checkpoints, in any order, give the same
answer. No clock is read, nothing is printed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from snapcore.errors import ConfigError, CreateBlockedError
from snapcore.schedule import parse_timezone

__all__ = [
    "KEEP_RULES",
    "ChainFit",
    "ChainMember",
    "ChainOverflow",
    "CheckpointTimes",
    "KeepRules",
    "RetentionPlan",
    "Verdict",
    "fit_chain",
    "format_instant",
    "last_slot",
    "parse_duration",
    "plan_retention",
]

#: The keep rules, in the order messages list them.
KEEP_RULES: Final = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
#: The grid rules and the words reasons use for their periods.
_PERIODS: Final = {
    "hourly": "hour",
    "daily": "day",
    "weekly": "week",
    "monthly": "month",
    "yearly": "year",
}
_DURATION_UNITS: Final = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*")


def _require_aware(t: datetime, what: str) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not naive {t.isoformat()}")


def format_instant(t: datetime) -> str:
    """*t* in UTC as reasons show it: ``2026-12-01T00:00Z`` (seconds only when not zero)."""
    u = t.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%SZ" if u.second else "%Y-%m-%dT%H:%MZ")


def parse_duration(text: str, *, what: str = "expiry") -> timedelta:
    """A duration such as ``30d``, ``12h``, ``1w 2d`` or ``90m``: numbers with a unit,
    ``m`` (minutes), ``h``, ``d`` or ``w``, added up.

    :raises ConfigError: ``<what> "<text>": ...`` for anything else, or a zero duration.
    """
    pos = 0
    seconds = 0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None or match.end() == pos:
            break
        unit = match[2]
        if unit not in _DURATION_UNITS:
            raise ConfigError(
                f'{what} "{text}": unknown unit "{unit}"; use m, h, d or w, as in 30d or 12h'
                if unit
                else f'{what} "{text}": {match[1]} needs a unit: m, h, d or w, as in 30d or 12h'
            )
        seconds += int(match[1]) * _DURATION_UNITS[unit]
        pos = match.end()
    if pos < len(text) or not text.strip():
        raise ConfigError(f'{what} "{text}": expected a duration such as 30d, 12h or 1w 2d')
    if seconds == 0:
        raise ConfigError(f'{what} "{text}": the duration must be longer than 0')
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepRules:
    """How many scheduled checkpoints to keep: the ``[snapshots.keep]`` table.

    Each rule is a whole number, 0 (the default) leaving the rule out; at least one is above 0.
    """

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for rule in KEEP_RULES:
            value: object = getattr(self, rule)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"keep.{rule} = {value!r}: must be a whole number, 0 or more")
        if not any(getattr(self, rule) for rule in KEEP_RULES):
            raise ConfigError(
                "keep: no rule keeps anything; set one of last, hourly, daily, weekly, monthly "
                "or yearly above 0, or leave keep out to keep every scheduled checkpoint"
            )

    @classmethod
    def from_mapping(cls, value: object) -> KeepRules:
        """Validate a plain mapping, as ``tomllib`` reads ``[snapshots.keep]`` or
        ``keep = {daily = 7, weekly = 4}``.

        :raises ConfigError: for a value that is not a mapping, an unknown rule, a count that
            is not a whole number of 0 or more, or rules that keep nothing.
        """
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"keep must be a table of rules such as {{daily = 7, weekly = 4}}, not {value!r}"
            )
        counts: dict[str, int] = {}
        for key, count in value.items():
            if key not in KEEP_RULES:
                raise ConfigError(
                    f"keep: unknown rule {key!r}; the rules are {', '.join(KEEP_RULES)}"
                )
            counts[key] = count
        return cls(**counts)

    def __str__(self) -> str:
        return ", ".join(f"{r} = {getattr(self, r)}" for r in KEEP_RULES if getattr(self, r))

    def to_json(self) -> dict[str, int]:
        return {rule: getattr(self, rule) for rule in KEEP_RULES}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointTimes:
    """What retention needs to know of one checkpoint.

    The three times must be timezone-aware; they are held in UTC.

    :ivar name: the checkpoint's name, unique among those judged together.
    :ivar created: when it was made.
    :ivar expiry: when it may be pruned, or ``None`` for none.
    :ivar slot: the schedule slot it was made for, or ``None`` if it was made by hand.
    """

    name: str
    created: datetime
    expiry: datetime | None = None
    slot: datetime | None = None

    def __post_init__(self) -> None:
        # Held in UTC: Python compares two datetimes of one zone by wall-clock time, which
        # orders the repeated hour of an autumn night wrongly.
        for what in ("created", "expiry", "slot"):
            value: datetime | None = getattr(self, what)
            if value is not None:
                _require_aware(value, what)
                object.__setattr__(self, what, value.astimezone(UTC))

    @property
    def scheduled(self) -> bool:
        """Whether the schedule made it."""
        return self.slot is not None

    @property
    def time(self) -> datetime:
        """Its time for the grids: its slot, or when it was made."""
        return self.slot if self.slot is not None else self.created


def last_slot(checkpoints: Iterable[CheckpointTimes]) -> datetime | None:
    """The latest slot a scheduled checkpoint records, ``None`` if none does: the *last_run*
    of :meth:`snapcore.schedule.Schedule.due`.

    Derived from the checkpoints themselves, so a run that made a checkpoint and was killed
    before anything else is never repeated for the same slot.
    """
    return max((c.slot for c in checkpoints if c.slot is not None), default=None)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to keep a checkpoint, and why. ``str()`` is ``kept: <reasons>`` or
    ``pruned: <reason>``."""

    name: str
    keep: bool
    #: One or more reasons, each a phrase; a kept checkpoint lists every rule that keeps it.
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return f"{'kept' if self.keep else 'pruned'}: {'; '.join(self.reasons)}"


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """The verdict on each checkpoint, oldest first (by time, then name)."""

    verdicts: tuple[Verdict, ...]

    @property
    def kept(self) -> tuple[str, ...]:
        """The names of the checkpoints to keep, oldest first."""
        return tuple(v.name for v in self.verdicts if v.keep)

    @property
    def pruned(self) -> tuple[str, ...]:
        """The names of the checkpoints to prune, oldest first."""
        return tuple(v.name for v in self.verdicts if not v.keep)

    def verdict(self, name: str) -> Verdict:
        """The verdict on checkpoint *name*.

        :raises KeyError: if it was not judged.
        """
        for v in self.verdicts:
            if v.name == name:
                return v
        raise KeyError(name)


def _period_number(rule: str, t: datetime) -> int:
    """The period of *t* (in the policy's zone) for grid *rule*, as a number that counts
    periods: two numbers' difference is the count of periods between them."""
    if rule == "hourly":
        # the instant the local hour began, in hours since the epoch (the fold is kept)
        return (int(t.timestamp()) - t.minute * 60 - t.second) // 3600
    if rule == "daily":
        return t.toordinal()
    if rule == "weekly":
        return (t.toordinal() - t.weekday()) // 7
    if rule == "monthly":
        return t.year * 12 + t.month - 1
    return t.year


def _period_label(rule: str, t: datetime) -> str:
    """The name of the period of *t* for grid *rule*: ``2026-12-03T10:00+01`` (the offset's
    minutes only when not zero: ``T10:00+05:30``), ``2026-12-03``, ``2026-W49``, ``2026-12``,
    ``2026``."""
    day = f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    if rule == "hourly":
        offset = int((t.utcoffset() or timedelta(0)).total_seconds()) // 60
        hours, minutes = divmod(abs(offset), 60)
        zone = f"{'-' if offset < 0 else '+'}{hours:02d}" + (f":{minutes:02d}" if minutes else "")
        return f"{day}T{t.hour:02d}:00{zone}"
    if rule == "daily":
        return day
    if rule == "weekly":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if rule == "monthly":
        return day[:7]
    return f"{t.year}"


def plan_retention(
    checkpoints: Iterable[CheckpointTimes],
    rules: KeepRules | None,
    now: datetime,
    *,
    tz: str | tzinfo = "UTC",
) -> RetentionPlan:
    """Judge *checkpoints* at *now* by their expiry and *rules* (``None``: no keep rules),
    as this module's docstring says; periods are those of time zone *tz*.

    Judging the kept checkpoints again at the same *now* prunes none of them.

    :raises ValueError: for two checkpoints of one name or a naive *now*.
    :raises ConfigError: for an unknown *tz*.
    """
    _require_aware(now, "now")
    now = now.astimezone(UTC)
    zone = parse_timezone(tz)
    items = sorted(checkpoints, key=lambda c: (c.time, c.name))
    names = [c.name for c in items]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"checkpoint {duplicate!r} is given twice")
    scheduled = [c for c in items if c.scheduled]
    newest = scheduled[-1].name if scheduled else None
    reasons: dict[str, list[str]] = {c.name: [] for c in items}
    prune: dict[str, str] = {}
    graded: list[CheckpointTimes] = []
    for c in items:
        keep, why = _judge_alone(c, rules, now, newest=c.name == newest)
        if why is None:
            graded.append(c)
        elif keep:
            reasons[c.name].append(why)
        else:
            prune[c.name] = why
    if rules is not None and graded:
        _apply_grids(graded, rules, now.astimezone(zone), zone, reasons)
        for c in graded:
            if not reasons[c.name]:
                if c.name == newest:
                    reasons[c.name].append(
                        "newest scheduled checkpoint, the record of the last slot done"
                    )
                else:
                    prune[c.name] = f"kept by no rule ({rules})"
    return RetentionPlan(
        tuple(
            Verdict(c.name, False, (prune[c.name],))
            if c.name in prune
            else Verdict(c.name, True, tuple(reasons[c.name]))
            for c in items
        )
    )


def _judge_expiry(expiry: datetime, now: datetime, *, newest: bool) -> tuple[bool, str]:
    expired = f"expired {format_instant(expiry)}"
    if expiry > now:
        return True, f"expires {format_instant(expiry)}"
    if newest:
        return True, f"newest scheduled checkpoint, the record of the last slot done ({expired})"
    return False, expired


def _judge_alone(
    c: CheckpointTimes, rules: KeepRules | None, now: datetime, *, newest: bool
) -> tuple[bool, str | None]:
    """The verdict on *c* by rules 1-3 and 5 of the module docstring: (keep, reason), or
    (False, None) when the grids judge it."""
    if c.expiry is not None:
        return _judge_expiry(c.expiry, now, newest=newest)
    if not c.scheduled:
        return True, "made by hand, no expiry"
    if rules is None:
        return True, "no keep rules"
    if c.time > now:
        return True, f"its slot {format_instant(c.time)} is later than now"
    return False, None


def _apply_grids(
    graded: list[CheckpointTimes],
    rules: KeepRules,
    now: datetime,
    zone: tzinfo,
    reasons: dict[str, list[str]],
) -> None:
    newest_first = graded[::-1]
    for i, c in enumerate(newest_first[: rules.last]):
        reasons[c.name].append(f"one of the last {rules.last} ({i + 1} of {rules.last})")
    local = [c.time.astimezone(zone) for c in newest_first]
    for rule, word in _PERIODS.items():
        count: int = getattr(rules, rule)
        if not count:
            continue
        current = _period_number(rule, now)
        seen: set[int] = set()
        for c, t in zip(newest_first, local, strict=True):
            number = _period_number(rule, t)
            if number in seen:
                continue
            seen.add(number)
            back = current - number
            if back >= count:
                break  # newest first: every later checkpoint is older still
            label = _period_label(rule, t)
            reasons[c.name].append(f"newest of {word} {label} ({rule} {back + 1} of {count})")


# -- chain limits ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainMember:
    """A checkpoint as the chain limits see it.

    :ivar name: its name.
    :ivar created: when it was made; older ones are deleted first.
    :ivar disks: the disks (vdevs) whose chains hold one of its snapshots.
    :ivar prunable: the policy may delete it (its expiry passed, or retention prunes it).
    """

    name: str
    created: datetime
    disks: frozenset[str]
    prunable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainOverflow:
    """A disk whose chain would pass its limit with one more snapshot."""

    vdev: str
    #: Snapshots its chain would hold with the new one, after the deletions of the fit.
    length: int
    limit: int

    def __str__(self) -> str:
        return (
            f"disk {self.vdev}: a new snapshot would make its chain {self.length} long, "
            f"past its limit of {self.limit} (max_chain)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainFit:
    """The answer of :func:`fit_chain`.

    :ivar delete: prunable checkpoints to delete, oldest first, before the new one.
    :ivar suggest: checkpoints the policy may not delete that the operator would have to
        delete as well, oldest first; empty when the new checkpoint fits.
    :ivar over: the disks whose chains would still be too long after deleting *delete*.
    """

    delete: tuple[str, ...] = ()
    suggest: tuple[str, ...] = ()
    over: tuple[ChainOverflow, ...] = ()

    @property
    def fits(self) -> bool:
        """Whether the new checkpoint fits once *delete* are deleted."""
        return not self.over

    def blockers(self) -> list[str]:
        """One line per disk that does not fit, then the checkpoints to delete; empty when it
        fits."""
        if self.fits:
            return []
        lines = [str(o) for o in self.over]
        names = (*self.delete, *self.suggest)
        if names:
            lines.append("delete " + ", ".join(repr(n) for n in names) + " first")
        return lines

    def check(self, name: str) -> None:
        """Refuse to create checkpoint *name* if it does not fit.

        :raises CreateBlockedError: with :meth:`blockers` (exit 2, nothing touched).
        """
        if not self.fits:
            raise CreateBlockedError(name, self.blockers())


def fit_chain(
    limits: Mapping[str, int],
    checkpoints: Iterable[ChainMember],
    disks: Collection[str] | None = None,
) -> ChainFit:
    """What to delete so that a new checkpoint on *disks* fits each disk's chain limit.

    A disk's chain holds one snapshot per checkpoint that includes it; a new checkpoint adds one
    to each of *disks* (default: every disk in *limits*), and a chain may hold at most its limit
    (a disk without a limit has none). Deleting a checkpoint takes one from each of its disks'
    chains. Prunable checkpoints are taken oldest first (by creation time, then name), each
    only if it shortens a chain still too long; if they are not enough, the others are taken
    the same way as :attr:`ChainFit.suggest` and the disks stay in :attr:`ChainFit.over`.

    :raises ConfigError: for a limit that is not a whole number of 1 or more.
    """
    for vdev, limit in limits.items():
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"max_chain for disk {vdev} = {limit!r}: must be 1 or more")
    targets = set(limits) if disks is None else set(disks) & set(limits)
    members = sorted(checkpoints, key=lambda m: (m.created, m.name))
    length = {vdev: 1 + sum(vdev in m.disks for m in members) for vdev in targets}
    excess = {vdev: length[vdev] - limits[vdev] for vdev in targets}

    def take(candidates: Iterable[ChainMember]) -> tuple[str, ...]:
        taken = []
        for m in candidates:
            helped = [vdev for vdev in m.disks if excess.get(vdev, 0) > 0]
            if helped:
                taken.append(m.name)
                for vdev in m.disks & targets:
                    excess[vdev] -= 1
                    length[vdev] -= 1
        return tuple(taken)

    delete = take(m for m in members if m.prunable)
    over = tuple(
        ChainOverflow(vdev=v, length=length[v], limit=limits[v])
        for v in sorted(targets)
        if excess[v] > 0
    )
    suggest = take(m for m in members if not m.prunable) if over else ()
    return ChainFit(delete=delete, suggest=suggest, over=over)
