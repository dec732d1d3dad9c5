"""A domain's snapshot policy and hooks, as its file gives them, and one run of the policy.

The domain file's ``[snapshots]`` table becomes a :class:`SnapshotPolicy`; its ``[[hook]]``
entries (and the executable files of the hooks directory) become :class:`HookSpec` objects.
:func:`plan_policy_run` is the pure part of ``snapcore run-policy``: given the checkpoints and the
time, what to delete to make room, what to create, and what to prune, each with its reason.
:mod:`snapcore.api` carries the plan out under the domain's lock
(:meth:`snapcore.api.DomainHandle.run_policy`).

The rules (schedules, names, keep rules, expiry, chain limits) are those of
:mod:`snapcore.schedule`, :mod:`snapcore.pattern` and :mod:`snapcore.retention`; see
``docs/policy.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from snapcore.errors import ConfigError
from snapcore.pattern import DEFAULT_PATTERN, NamePattern
from snapcore.retention import (
    ChainFit,
    ChainMember,
    CheckpointTimes,
    KeepRules,
    RetentionPlan,
    fit_chain,
    format_instant,
    last_slot,
    parse_duration,
    plan_retention,
)
from snapcore.schedule import Schedule, parse_timezone

if TYPE_CHECKING:
    from snapcore.apphooks import HookOutcome
    from snapcore.model import Checkpoint

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "HOOK_KEYS",
    "SNAPSHOTS_KEYS",
    "HookSpec",
    "Phase",
    "PolicyAction",
    "PolicyPlan",
    "PolicyRun",
    "SnapshotPolicy",
    "chain_members",
    "checkpoint_times",
    "describe_slot",
    "disk_chain_limit",
    "effective_limits",
    "hooks_from_toml",
    "parse_when",
    "plan_policy_run",
    "policy_from_toml",
]

#: The keys of the ``[snapshots]`` table, in the order messages list them.
SNAPSHOTS_KEYS: Final = (
    "schedule",
    "timezone",
    "memory",
    "pattern",
    "expiry",
    "keep",
    "max_chain",
)
#: The keys of a ``[[hook]]`` entry.
HOOK_KEYS: Final = ("name", "command", "phases", "timeout", "fatal")
#: Seconds a hook may run when its entry gives no ``timeout``.
DEFAULT_HOOK_TIMEOUT: Final = 60.0
#: The longest ``timeout`` a hook may have, in seconds (one hour).
MAX_HOOK_TIMEOUT: Final = 3600.0
#: The most entries of a hook's ``command``, and the longest one.
_MAX_ARGS: Final = 256
_MAX_ARG: Final = 4096


class Phase(StrEnum):
    """When a hook runs: before or after a create, revert or delete."""

    PRE_CREATE = "pre-create"
    POST_CREATE = "post-create"
    PRE_REVERT = "pre-revert"
    POST_REVERT = "post-revert"
    PRE_DELETE = "pre-delete"
    POST_DELETE = "post-delete"

    @property
    def pre(self) -> bool:
        """Whether it runs before the operation (and so may stop it)."""
        return self.value.startswith("pre-")

    @property
    def operation(self) -> str:
        """``create``, ``revert`` or ``delete``."""
        return self.value.partition("-")[2]

    @classmethod
    def of(cls, when: str, operation: str) -> Phase:
        """``Phase.of("pre", "create")`` is :attr:`PRE_CREATE`."""
        return cls(f"{when}-{operation}")


_PHASES: Final = tuple(p.value for p in Phase)


@dataclass(frozen=True, slots=True, kw_only=True)
class HookSpec:
    """One hook: a command run at some phases.

    :ivar name: what messages call it (the entry's ``name``, or its file's name).
    :ivar command: the argument list; the program is an absolute path, a path relative to the
        domain file's directory (resolved when read), or a name looked up in ``$PATH``.
    :ivar phases: the phases it runs at.
    :ivar timeout: seconds it may run; then its process group is killed and it failed.
    :ivar fatal: whether its failure stops the operation; ``None``: fatal at the ``pre-``
        phases, not at the ``post-`` ones (which can never undo the operation).
    :ivar origin: ``"domain file"`` or ``"hooks dir"``.
    """

    name: str
    command: tuple[str, ...]
    phases: frozenset[Phase] = frozenset(Phase)
    timeout: float = DEFAULT_HOOK_TIMEOUT
    fatal: bool | None = None
    origin: str = "domain file"

    def __post_init__(self) -> None:
        if not self.command or any(not isinstance(a, str) or "\0" in a for a in self.command):
            raise ConfigError(f"hook {self.name!r}: command must be a list of strings, no NUL")
        if not (0 < self.timeout <= MAX_HOOK_TIMEOUT):
            raise ConfigError(f"hook {self.name!r}: timeout must be from 0 to {MAX_HOOK_TIMEOUT}")

    def is_fatal(self, phase: Phase) -> bool:
        """Whether a failure at *phase* stops the operation (never after it: a ``post-``
        hook's failure is reported only)."""
        if not phase.pre:
            return False
        return True if self.fatal is None else self.fatal

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": list(self.command),
            "phases": sorted(p.value for p in self.phases),
            "timeout": self.timeout,
            "fatal": self.fatal,
            "origin": self.origin,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPolicy:
    """The domain file's ``[snapshots]`` table.

    :ivar schedule: when scheduled checkpoints are due; ``None``: none is made (run-policy only
        prunes).
    :ivar pattern: how they are named.
    :ivar keep: the keep rules; ``None``: scheduled checkpoints without expiry are kept.
    :ivar expiry: the expiry given to each scheduled checkpoint, counted from its creation.
    :ivar memory: ``None`` (with memory when the domain runs), ``"yes"`` or ``"no"``.
    :ivar max_chain: the chain limit of every disk without a ``max_chain`` of its own.
    """

    tz: tzinfo = UTC
    schedule: Schedule | None = None
    pattern: NamePattern = field(default_factory=lambda: NamePattern.parse(DEFAULT_PATTERN))
    keep: KeepRules | None = None
    expiry: timedelta | None = None
    memory: str | None = None
    max_chain: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": [e.text for e in self.schedule.expressions] if self.schedule else None,
            "timezone": str(self.tz),
            "pattern": self.pattern.text,
            "keep": self.keep.to_json() if self.keep else None,
            "expiry_seconds": int(self.expiry.total_seconds()) if self.expiry else None,
            "memory": self.memory,
            "max_chain": self.max_chain,
        }


# -- reading the domain file ---------------------------------------------------------------------


def _chain_limit(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigError(f"{where}max_chain = {value!r}: must be a whole number, 1 or more")
    return value


def disk_chain_limit(value: object, vdev: str) -> int:
    """A ``[[disk]]`` entry's ``max_chain``.

    :raises ConfigError: ``[[disk]] vda: max_chain = 0: must be a whole number, 1 or more``.
    """
    return _chain_limit(value, f"[[disk]] {vdev}: ")


def policy_from_toml(table: object) -> SnapshotPolicy:
    """Validate the ``[snapshots]`` table as ``tomllib`` read it.

    :raises ConfigError: one line starting ``[snapshots]`` and naming the key and the problem:
        an unknown key, a value of the wrong type, a bad schedule, time zone, pattern, keep
        rule or duration, or ``keep`` and ``expiry`` together.
    """
    if not isinstance(table, Mapping):
        raise ConfigError("'snapshots' must be a table ([snapshots])")
    try:
        return _policy(table)
    except ConfigError as exc:
        raise ConfigError(f"[snapshots] {exc.message}") from None


def _schedule(spec: object, tz: tzinfo) -> Schedule | None:
    if spec is None:
        return None
    if isinstance(spec, str) or (
        isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec)
    ):
        return Schedule.parse(spec, tz=tz)
    raise ConfigError(
        "schedule must be a string or a non-empty list of strings, "
        'such as "@hourly" or ["0 * * * *", "30 2 * * sun"]'
    )


def _memory(memory: object) -> str | None:
    if memory is True or memory == "yes":
        return "yes"
    if memory is False or memory == "no":
        return "no"
    if memory is None or memory == "auto":
        return None
    raise ConfigError(f'memory = {memory!r}: must be "auto", "yes", "no", true or false')


def _policy(table: Mapping[str, Any]) -> SnapshotPolicy:
    for key in table:
        if key not in SNAPSHOTS_KEYS:
            raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(SNAPSHOTS_KEYS)}")
    zone_name = table.get("timezone", "UTC")
    if not isinstance(zone_name, str):
        raise ConfigError(f"timezone = {zone_name!r}: must be a string such as UTC")
    tz = parse_timezone(zone_name)
    schedule = _schedule(table.get("schedule"), tz)
    text = table.get("pattern", DEFAULT_PATTERN)
    if not isinstance(text, str):
        raise ConfigError(f"pattern = {text!r}: must be a string such as {DEFAULT_PATTERN}")
    pattern = NamePattern.parse(text, tz=tz)
    keep = KeepRules.from_mapping(table["keep"]) if "keep" in table else None
    expiry = None
    if "expiry" in table:
        value = table["expiry"]
        if not isinstance(value, str):
            raise ConfigError(f'expiry = {value!r}: must be a duration such as "30d" or "12h"')
        expiry = parse_duration(value)
    if keep is not None and expiry is not None:
        raise ConfigError(
            "keep and expiry together: a checkpoint with an expiry is judged by it alone, so "
            "use keep rules or an expiry for scheduled checkpoints, not both"
        )
    memory = _memory(table.get("memory"))
    max_chain = table.get("max_chain")
    if max_chain is not None:
        max_chain = _chain_limit(max_chain, "")
    return SnapshotPolicy(
        tz=tz,
        schedule=schedule,
        pattern=pattern,
        keep=keep,
        expiry=expiry,
        memory=memory,
        max_chain=max_chain,
    )


def _hook_name_ok(name: str) -> bool:
    return bool(name) and len(name) <= 64 and name.isprintable()


def hooks_from_toml(entries: object, base: str | os.PathLike[str]) -> tuple[HookSpec, ...]:
    """Validate the ``[[hook]]`` entries as ``tomllib`` read them; *base* is the domain file's
    directory, against which a program given as a relative path (``./hooks/db-flush``,
    ``hooks/db-flush``) is resolved.

    :raises ConfigError: one line starting ``[[hook]] #N`` naming the key and the problem.
    """
    if not isinstance(entries, list):
        raise ConfigError("'hook' must be an array of tables ([[hook]])")
    return tuple(_hook(raw, f"[[hook]] #{index}", base) for index, raw in enumerate(entries, 1))


def _hook_command(raw: Mapping[str, Any], where: str, base: str | os.PathLike[str]) -> list[str]:
    command = raw.get("command")
    if command is None:
        raise ConfigError(f"{where}: missing required key 'command' (a list of strings)")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise ConfigError(
            f"{where}: command must be a non-empty list of strings, such as "
            '["/usr/local/bin/db-flush", "--quiet"] (no shell string)'
        )
    if len(command) > _MAX_ARGS or any(len(a) > _MAX_ARG or "\0" in a for a in command):
        raise ConfigError(
            f"{where}: command has a NUL byte, more than {_MAX_ARGS} "
            f"entries or one longer than {_MAX_ARG} characters"
        )
    if not command[0]:
        raise ConfigError(f"{where}: command's program (its first entry) is empty")
    program = command[0]
    if "/" in program and not os.path.isabs(program):
        program = os.path.normpath(os.path.join(base, program))
    return [program, *command[1:]]


def _hook_phases(raw: Mapping[str, Any], where: str) -> frozenset[Phase]:
    phases = raw.get("phases", list(_PHASES))
    if not isinstance(phases, list) or not phases or not all(isinstance(p, str) for p in phases):
        raise ConfigError(f"{where}: phases must be a non-empty list of {', '.join(_PHASES)}")
    for p in phases:
        if p not in _PHASES:
            raise ConfigError(
                f"{where}: unknown phase {p[:40]!r}; the phases are {', '.join(_PHASES)}"
            )
    return frozenset(Phase(p) for p in phases)


def _hook(raw: object, where: str, base: str | os.PathLike[str]) -> HookSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    for key in raw:
        if key not in HOOK_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(HOOK_KEYS)}")
    command = _hook_command(raw, where, base)
    name = raw.get("name", os.path.basename(command[0]))
    if not isinstance(name, str) or not _hook_name_ok(name):
        raise ConfigError(f"{where}: name must be 1-64 printable characters")
    timeout = raw.get("timeout", DEFAULT_HOOK_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_HOOK_TIMEOUT
    ):
        raise ConfigError(
            f"{where}: timeout = {timeout!r}: must be a number of seconds above 0, "
            f"at most {MAX_HOOK_TIMEOUT:g}"
        )
    fatal = raw.get("fatal")
    if fatal is not None and not isinstance(fatal, bool):
        raise ConfigError(f"{where}: fatal = {fatal!r}: must be true or false")
    return HookSpec(
        name=name,
        command=tuple(command),
        phases=_hook_phases(raw, where),
        timeout=float(timeout),
        fatal=fatal,
    )


# -- one run of the policy -------------------------------------------------------------------------


def _utc(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def checkpoint_times(checkpoints: Iterable[Checkpoint]) -> list[CheckpointTimes]:
    """What retention knows of each checkpoint record."""
    return [
        CheckpointTimes(
            name=cp.name,
            created=datetime.fromtimestamp(cp.creation_time, UTC),
            expiry=_utc(cp.expiry),
            slot=_utc(cp.policy_slot),
        )
        for cp in checkpoints
    ]


def effective_limits(
    disks: Iterable[tuple[str, int | None, int | None]], domain_limit: int | None
) -> dict[str, int]:
    """Each disk's chain limit: the smallest of its own ``max_chain`` (else the domain's) and
    its backend's, for disks ``(vdev, own limit, backend limit)``; disks without any are left
    out."""
    limits: dict[str, int] = {}
    for vdev, own, backend in disks:
        file_limit = own if own is not None else domain_limit
        found = [x for x in (file_limit, backend) if x is not None]
        if found:
            limits[vdev] = min(found)
    return limits


def chain_members(
    checkpoints: Iterable[Checkpoint], prunable: Collection[str] = ()
) -> list[ChainMember]:
    """The checkpoints as :func:`~snapcore.retention.fit_chain` sees them."""
    return [
        ChainMember(
            name=cp.name,
            created=datetime.fromtimestamp(cp.creation_time, UTC),
            disks=frozenset(d.vdev for d in cp.disks),
            prunable=cp.name in prunable,
        )
        for cp in checkpoints
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyAction:
    """One step of a run of the policy.

    :ivar action: ``"delete"`` (to make room in a chain: ``why`` says so), ``"create"`` or
        ``"prune"`` (by retention: ``why`` is its verdict).
    :ivar name: the checkpoint.
    :ivar why: the reason, one line.
    :ivar slot: for a create, the slot it is made for.
    :ivar expiry: for a create, its expiry, if the policy gives one.
    :ivar done: whether the run carried it out (always false for a dry run).
    :ivar error: why it failed, if it did.
    """

    action: str
    name: str
    why: str
    slot: datetime | None = None
    expiry: datetime | None = None
    done: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "why": self.why,
            "slot": int(self.slot.timestamp()) if self.slot else None,
            "expiry": int(self.expiry.timestamp()) if self.expiry else None,
            "done": self.done,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPlan:
    """What one run of the policy does at *now*, before it does it.

    :ivar slot: the slot due, if any (``None``: nothing to create).
    :ivar create: the name of the checkpoint to create for it.
    :ivar expiry: its expiry, if the policy gives one.
    :ivar fit: the chain fit for it: :attr:`ChainFit.delete` are deleted first; if it does not
        fit, the create is refused (:meth:`ChainFit.check`).
    :ivar retention: the verdicts on the checkpoints as they are now (before the create).
    """

    now: datetime
    slot: datetime | None = None
    create: str | None = None
    expiry: datetime | None = None
    fit: ChainFit = field(default_factory=ChainFit)
    retention: RetentionPlan = field(default_factory=lambda: RetentionPlan(()))


def plan_policy_run(
    policy: SnapshotPolicy,
    checkpoints: Sequence[Checkpoint],
    now: datetime,
    limits: Mapping[str, int],
    disks: Collection[str],
) -> PolicyPlan:
    """The first half of a run: what is due at *now* and what must go to make room for it.

    :param limits: each disk's chain limit (:func:`effective_limits`).
    :param disks: the disks the new checkpoint will include.
    """
    times = checkpoint_times(checkpoints)
    retention = plan_retention(times, policy.keep, now, tz=policy.tz)
    if policy.schedule is None:
        return PolicyPlan(now=now, retention=retention)
    slot = policy.schedule.due(last_slot(times), now)
    if slot is None:
        return PolicyPlan(now=now, retention=retention)
    name = policy.pattern.name_for(slot, {cp.name for cp in checkpoints})
    expiry = now + policy.expiry if policy.expiry is not None else None
    fit = fit_chain(limits, chain_members(checkpoints, retention.pruned), disks)
    return PolicyPlan(now=now, slot=slot, create=name, expiry=expiry, fit=fit, retention=retention)


def describe_slot(slot: datetime, tz: tzinfo) -> str:
    """A slot as reasons show it: its wall-clock time in the policy's zone, and UTC."""
    local = slot.astimezone(tz)
    return f"due slot {local.isoformat(timespec='minutes')} ({format_instant(slot)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRun:
    """What one run of a domain's policy did (or, for a dry run, would do).

    :ivar domain: the domain's name. :ivar source: its domain file.
    :ivar status: ``"done"`` (ran to the end, maybe with nothing to do), ``"planned"`` (a dry
        run), ``"skipped"`` (no ``[snapshots]`` table), ``"busy"`` (another command held the
        domain: the next run catches up) or ``"failed"``.
    :ivar now: the time the run judged at.
    :ivar slot: the slot that was due, if one was.
    :ivar actions: the steps, in order, each with its reason and whether it was done.
    :ivar kept: the checkpoints kept, each with its verdict (``kept: ...``).
    :ivar hooks: the hooks that failed without stopping anything (post- hooks), as
        :class:`snapcore.apphooks.HookOutcome`.
    :ivar error: why it failed or was skipped, one line.
    :ivar exit_code: the exit status this domain alone would give (0, or the error's).
    """

    domain: str
    source: str | None
    status: str
    now: datetime
    slot: datetime | None = None
    actions: tuple[PolicyAction, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()
    hooks: tuple[HookOutcome, ...] = ()
    error: str | None = None
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "source": self.source,
            "status": self.status,
            "now": int(self.now.timestamp()),
            "slot": int(self.slot.timestamp()) if self.slot else None,
            "actions": [a.to_json() for a in self.actions],
            "kept": [{"name": n, "why": why} for n, why in self.kept],
            "hook_failures": [h.to_json() for h in self.hooks],
            "error": self.error,
            "exit_code": self.exit_code,
        }


def parse_when(text: str, now: datetime, *, what: str = "--expiry") -> datetime:
    """An expiry as an operator writes it: a duration from *now* (``30d``, ``12h``,
    ``1w 2d``) or an ISO 8601 time (``2026-12-24``, ``2026-12-24T08:00``,
    ``2026-12-24T08:00+01:00``; without an offset, the host's local time). In UTC.

    :raises ConfigError: ``--expiry "...": ...`` for anything else, or a time not after *now*.
    """
    text = text.strip()
    if text and text[0].isdigit() and text[-1].isalpha() and not any(c in text for c in "-:T"):
        return (now + parse_duration(text, what=what)).astimezone(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f'{what} "{text[:60]}": expected a duration such as 30d or 12h, or an ISO time '
            "such as 2026-12-24T08:00 or 2026-12-24T08:00+01:00"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # the host's local time
    if when <= now:
        raise ConfigError(
            f'{what} "{text[:60]}": {format_instant(when)} is not in the future (now is '
            f"{format_instant(now)}); delete the snapshot to be rid of it now"
        )
    return when.astimezone(UTC)
