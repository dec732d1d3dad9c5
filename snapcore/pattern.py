"""Names of scheduled checkpoints: a ``strftime`` pattern plus a counter.

A pattern is ``strftime`` text (``%Y``, ``%m``, ``%d``, ``%H``, ``%M``, ...), expanded with the
checkpoint's slot in the policy's time zone, with at most one counter, ``{n}`` or ``{n:0W}``
(the number zero-padded to W digits, W from 1 to 9):

- with a counter, the number is one more than the highest number among the existing names that
  the pattern makes for the same slot (1 if there is none), so numbers are never reused while a
  higher one exists: ``snap-{n}`` makes ``snap-1``, ``snap-2``, ...;
- without one, the expansion is the name if no checkpoint has it; otherwise ``-2``, ``-3``, ...
  is appended, the first that is free.

Every name made is a valid checkpoint name (:func:`snapcore.model.check_name`); a pattern is
checked when it is parsed by expanding it for a sample time.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final

from snapcore.errors import ConfigError, InvalidNameError
from snapcore.model import check_name
from snapcore.schedule import parse_timezone

__all__ = ["DEFAULT_PATTERN", "NamePattern"]

#: The pattern of scheduled checkpoints when the policy gives none: ``auto-20261203-1000``.
DEFAULT_PATTERN: Final = "auto-%Y%m%d-%H%M"
_COUNTER: Final = re.compile(r"\{n(?::0([1-9]))?\}")
#: Times a pattern is tried on when parsed: a winter and a summer one (zone names and offsets
#: change), at the widest values of each field.
_SAMPLES: Final = (datetime(2026, 12, 31, 23, 59, 59), datetime(2026, 7, 31, 23, 59, 59))


@dataclass(frozen=True, slots=True)
class NamePattern:
    """A parsed name pattern; build one with :meth:`parse`."""

    #: The pattern as written.
    text: str
    #: The ``strftime`` text before and after the counter (all of it in *before* without one).
    before: str
    after: str
    #: Whether the pattern has a counter, and its zero-padded width (0: no padding).
    counter: bool
    width: int
    tz: tzinfo

    @classmethod
    def parse(cls, text: str, *, tz: str | tzinfo = "UTC") -> NamePattern:
        """Parse *text* and check that the names it makes are valid.

        :param tz: the time zone slots are expanded in.
        :raises ConfigError: ``pattern "<text>": <what is wrong>``: empty, more than one
            counter, a brace that is not a counter, or names that are not valid checkpoint
            names.
        """
        zone = parse_timezone(tz)
        if not isinstance(text, str) or not text:
            raise ConfigError(f"pattern {text!r}: expected strftime text such as {DEFAULT_PATTERN}")
        counters = list(_COUNTER.finditer(text))
        if len(counters) > 1:
            raise ConfigError(f'pattern "{text}": it has {len(counters)} counters; use one at most')
        if counters:
            match = counters[0]
            before, after = text[: match.start()], text[match.end() :]
            width = int(match[1] or 0)
        else:
            before, after, width = text, "", 0
        if "{" in before + after or "}" in before + after:
            raise ConfigError(
                f'pattern "{text}": braces are only for the counter, {{n}} or {{n:0W}}'
            )
        pattern = cls(text, before, after, bool(counters), width, zone)
        for sample in _SAMPLES:
            pattern._checked(pattern._expand(sample.replace(tzinfo=zone), 1))
        return pattern

    def _expand(self, slot: datetime, n: int) -> str:
        local = slot.astimezone(self.tz)
        if not self.counter:
            return local.strftime(self.before)
        return f"{local.strftime(self.before)}{n:0{self.width}d}{local.strftime(self.after)}"

    def _checked(self, name: str) -> str:
        try:
            return check_name(name)
        except InvalidNameError as exc:
            raise ConfigError(
                f'pattern "{self.text}": it makes names such as {exc.name!r}, which are not valid '
                f"snapshot names: {exc.reason}"
            ) from None

    def name_for(self, slot: datetime, existing: Collection[str]) -> str:
        """The name of the checkpoint for *slot* (timezone-aware), given the names that
        *existing* checkpoints of the domain have: never one of them.

        :raises ConfigError: if the name made is not a valid checkpoint name (a counter grown
            past 64 characters, a time zone abbreviation with a ``+``).
        """
        if slot.tzinfo is None or slot.utcoffset() is None:
            raise ValueError(f"slot must be a timezone-aware datetime, not naive {slot}")
        if self.counter:
            local = slot.astimezone(self.tz)
            head, tail = local.strftime(self.before), local.strftime(self.after)
            own = re.compile(re.escape(head) + r"([0-9]+)" + re.escape(tail))
            numbers = [int(m[1]) for name in existing if (m := own.fullmatch(name))]
            n = max(numbers, default=0) + 1
            name = self._expand(slot, n)
            while name in existing:  # a padded and an unpadded spelling of one number
                n += 1
                name = self._expand(slot, n)
            return self._checked(name)
        base = self._expand(slot, 0)
        name, n = base, 2
        while name in existing:
            name = f"{base}-{n}"
            n += 1
        return self._checked(name)
