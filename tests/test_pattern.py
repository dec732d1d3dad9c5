"""Tests of snapcore.pattern: names of scheduled checkpoints from a strftime pattern."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapcore.errors import ConfigError
from snapcore.model import check_name
from snapcore.pattern import DEFAULT_PATTERN, NamePattern

SLOT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_the_default_pattern_names_the_slot_in_the_policys_zone() -> None:
    assert DEFAULT_PATTERN == "auto-%Y%m%d-%H%M"
    assert NamePattern.parse(DEFAULT_PATTERN).name_for(SLOT, []) == "auto-20261203-0900"
    berlin = NamePattern.parse(DEFAULT_PATTERN, tz=ZoneInfo("Europe/Berlin"))
    assert berlin.name_for(SLOT, []) == "auto-20261203-1000"


def test_without_a_counter_a_taken_name_gets_a_number() -> None:
    p = NamePattern.parse("nightly-%Y%m%d")
    assert p.name_for(SLOT, {"nightly-20261203"}) == "nightly-20261203-2"
    assert p.name_for(SLOT, {"nightly-20261203", "nightly-20261203-2"}) == "nightly-20261203-3"
    assert p.name_for(SLOT, {"nightly-20261203-2"}) == "nightly-20261203"


def test_a_counter_is_one_more_than_the_highest_for_the_same_slot() -> None:
    p = NamePattern.parse("snap-%Y-{n}")
    assert p.name_for(SLOT, []) == "snap-2026-1"
    assert p.name_for(SLOT, ["snap-2026-1", "snap-2026-7", "snap-2025-9", "other"]) == "snap-2026-8"
    # gaps are not filled: numbers only grow while a higher one exists
    assert p.name_for(SLOT, ["snap-2026-3"]) == "snap-2026-4"


def test_a_padded_counter() -> None:
    p = NamePattern.parse("s{n:03}")
    assert p.name_for(SLOT, []) == "s001"
    assert p.name_for(SLOT, ["s009"]) == "s010"
    assert p.name_for(SLOT, ["s999"]) == "s1000"
    # "s1" and "s001" are the same number; the name made is never one that exists
    assert p.name_for(SLOT, ["s1", "s002"]) == "s003"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "pattern '': expected strftime text such as auto-%Y%m%d-%H%M"),
        (
            "%H:%M",
            "pattern \"%H:%M\": it makes names such as '23:59', which are not valid snapshot "
            "names: it contains ':'; use only letters, digits, '.', '_' and '-'",
        ),
        (
            "snap %F",
            "pattern \"snap %F\": it makes names such as 'snap 2026-12-31', which are not valid "
            "snapshot names: it contains ' '; use only letters, digits, '.', '_' and '-'",
        ),
        (
            ".%Y",
            "pattern \".%Y\": it makes names such as '.2026', which are not valid snapshot names: "
            "it starts with '.'",
        ),
        (
            "%z",
            "pattern \"%z\": it makes names such as '+0000', which are not valid snapshot names: "
            "it contains '+'; use only letters, digits, '.', '_' and '-'",
        ),
        ("a{n}-{n}", 'pattern "a{n}-{n}": it has 2 counters; use one at most'),
        ("a{x}", 'pattern "a{x}": braces are only for the counter, {n} or {n:0W}'),
        ("a{n:3}", 'pattern "a{n:3}": braces are only for the counter, {n} or {n:0W}'),
        (
            "x" * 60 + "%Y%m",
            f"pattern \"{'x' * 60}%Y%m\": it makes names such as 'xxxxxxxxxxxxxxxxxxxx...', "
            "which are not valid snapshot names: it is 66 characters long, at most 64",
        ),
    ],
)
def test_bad_patterns_are_refused_with_one_exact_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NamePattern.parse(text)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


def test_a_name_grown_too_long_by_its_counter_is_refused_when_made() -> None:
    p = NamePattern.parse("x" * 63 + "{n}")
    assert p.name_for(SLOT, []) == "x" * 63 + "1"
    with pytest.raises(ConfigError, match="at most 64"):
        p.name_for(SLOT, ["x" * 63 + "9"])


def test_a_naive_slot_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        NamePattern.parse("a").name_for(datetime(2026, 1, 1), [])


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["auto-%Y%m%d-%H%M", "snap{n}", "d%j.{n:04}", "fixed", "w%V-%a"]),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1)),
    st.lists(st.integers(1, 30), max_size=8),
)
def test_names_made_are_valid_and_never_taken(
    text: str, when: datetime, numbers: list[int]
) -> None:
    p = NamePattern.parse(text)
    slot = when.replace(tzinfo=UTC)
    existing: set[str] = set()
    for _ in numbers:
        name = p.name_for(slot, existing)
        assert check_name(name) == name
        assert name not in existing
        existing.add(name)
