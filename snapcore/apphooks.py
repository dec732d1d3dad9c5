"""Operator hooks: commands run before and after a create, revert or delete.

Not to be confused with the plugin hooks of :mod:`snapcore.hookspecs`: these are the domain
file's ``[[hook]]`` entries and the executable files of the hooks directory
(``/etc/snapcore/hooks.d/``), run at ``pre-create``, ``post-create``, ``pre-revert``,
``post-revert``, ``pre-delete`` and ``post-delete`` (``docs/policy.md``).

Each hook runs through :func:`snapcore.process.run_bounded`: an argument list, never a shell
string; in a process group of its own, killed (the whole group) at its timeout; the last
:data:`MAX_OUTPUT` bytes of each of its stdout and stderr kept, the rest dropped. Its
environment holds ``SNAPCORE_DOMAIN``, ``SNAPCORE_DOMAIN_FILE``, ``SNAPCORE_DOMAIN_UUID``,
``SNAPCORE_CHECKPOINT``, ``SNAPCORE_PHASE``, ``SNAPCORE_OPERATION`` and ``SNAPCORE_CAUSE``
(``command`` or ``policy``), and its stdin one JSON object (:func:`hook_input`).

A hook *fails* when it cannot start, exits with a status other than 0, is killed by a signal,
or runs past its timeout; what it writes to stderr with status 0 is not a failure. The hooks
of a phase run one after the other: the hooks dir's files by name, then the domain file's
entries in file order. At a ``pre-`` phase the first fatal failure stops the operation
(:class:`~snapcore.errors.HookFailedError`, exit 2: nothing was touched) and no further hook
runs; at a ``post-`` phase every hook runs and failures are only reported
(:class:`HookOutcome`), since the operation is done and is never undone for a hook.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from snapcore.errors import ConfigError, HookFailedError
from snapcore.model import Disk, Domain
from snapcore.policy import DEFAULT_HOOK_TIMEOUT, HookSpec, Phase
from snapcore.process import BoundedResult, run_bounded

__all__ = [
    "DEFAULT_HOOKS_DIR",
    "MAX_OUTPUT",
    "HookOutcome",
    "HookRunner",
    "hook_input",
    "hooks_dir_from_env",
    "hooks_in_dir",
]

log = logging.getLogger(__name__)

DEFAULT_HOOKS_DIR: Final = "/etc/snapcore/hooks.d"
#: Bytes of each of a hook's stdout and stderr that are kept (the last ones).
MAX_OUTPUT: Final = 64 * 1024
#: A hooks dir file name run-parts would run: letters, digits, ``_`` and ``-`` (and ``.``,
#: not first), so editor backups (``x~``) and package leftovers (``x.dpkg-old``) are
#: skipped as run-parts skips them.
_HOOK_FILE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_SKIPPED_SUFFIXES: Final = (".dpkg-old", ".dpkg-new", ".dpkg-dist", ".rpmsave", ".rpmnew")


def hooks_dir_from_env() -> str:
    """``$SNAPCORE_HOOKS_DIR``, or :data:`DEFAULT_HOOKS_DIR` when unset or empty."""
    return os.environ.get("SNAPCORE_HOOKS_DIR") or DEFAULT_HOOKS_DIR


def hooks_in_dir(directory: str | os.PathLike[str]) -> tuple[HookSpec, ...]:
    """The hooks of a hooks directory: its executable regular files (symlinks followed) whose
    names are letters, digits, ``_``, ``-`` and ``.`` (not first), by name; each runs at every
    phase with the default timeout (:data:`~snapcore.policy.DEFAULT_HOOK_TIMEOUT`), fatal at
    the ``pre-`` phases. A missing directory has none.

    :raises ConfigError: the directory exists but cannot be read.
    """
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return ()
    except OSError as exc:
        raise ConfigError(
            f"cannot read hooks directory {os.fspath(directory)}: {exc.strerror or exc}"
        ) from None
    found: list[HookSpec] = []
    for entry in entries:
        if not _HOOK_FILE.fullmatch(entry.name) or entry.name.endswith(_SKIPPED_SUFFIXES):
            continue
        try:
            mode = os.stat(entry.path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode) or not os.access(entry.path, os.X_OK):
            continue
        found.append(
            HookSpec(
                name=entry.name,
                command=(os.path.abspath(entry.path),),
                timeout=DEFAULT_HOOK_TIMEOUT,
                origin="hooks dir",
            )
        )
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class HookOutcome:
    """How one hook ran.

    :ivar hook: its name. :ivar phase: the phase it ran at.
    :ivar ok: it exited with status 0 within its timeout.
    :ivar reason: for a failure, why (``exit status 3``, ``killed by signal 9``,
        ``killed after its timeout of 5 s``, ``cannot start: ...``); ``""`` when *ok*.
    :ivar fatal: whether the failure stopped the operation.
    :ivar returncode: its exit status (negative: the signal), ``None`` if it did not start.
    :ivar seconds: how long it ran.
    :ivar stdout: the end of its stdout (at most :data:`MAX_OUTPUT` bytes, decoded).
    :ivar stderr: the end of its stderr, likewise.
    :ivar dropped: bytes of its output left out.
    """

    hook: str
    phase: Phase
    ok: bool
    reason: str
    fatal: bool
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str
    dropped: int = 0

    def __str__(self) -> str:
        if self.ok:
            return f"{self.phase} hook {self.hook!r}: ok ({self.seconds:.1f} s)"
        last = self.stderr.strip().splitlines()[-1:] if self.stderr.strip() else []
        said = f": {last[0][:200]}" if last else ""
        return f"{self.phase} hook {self.hook!r} failed ({self.reason}){said}"

    def to_json(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "phase": self.phase.value,
            "ok": self.ok,
            "reason": self.reason,
            "fatal": self.fatal,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "dropped": self.dropped,
        }


def hook_input(
    domain: Domain,
    phase: Phase,
    name: str,
    *,
    cause: str = "command",
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object a hook reads on stdin: ``phase``, ``operation``, ``cause``, ``domain``
    (``name``, ``uuid``, ``file``, ``disks``: ``vdev``, ``driver``, ``path``), ``checkpoint``
    (its name) and ``details`` (the plan before the operation, the checkpoint after a
    create)."""
    return {
        "phase": phase.value,
        "operation": phase.operation,
        "cause": cause,
        "domain": {
            "name": domain.name,
            "uuid": domain.uuid,
            "file": domain.source,
            "disks": [{"vdev": d.vdev, "driver": d.driver, "path": d.path} for d in domain.disks],
        },
        "checkpoint": name,
        "details": dict(details or {}),
    }


def _reason(result: BoundedResult, timeout: float) -> str:
    if result.error is not None:
        return f"cannot start: {result.error}"
    if result.timed_out:
        return f"killed after its timeout of {timeout:g} s"
    assert result.returncode is not None
    if result.returncode < 0:
        return f"killed by signal {-result.returncode}"
    return f"exit status {result.returncode}"


class HookRunner:
    """Runs the hooks of one domain.

    :param domain: the domain (its ``hooks`` are the file's entries).
    :param hooks_dir: the hooks directory; ``None``: no directory.
    :param state_dir: passed to hooks as ``SNAPCORE_STATE_DIR``.
    :param max_output: bytes kept of each of a hook's stdout and stderr.
    :param resolve: fills in a disk's driver for the JSON hooks read (called only when a
        hook runs).
    """

    def __init__(
        self,
        domain: Domain,
        *,
        hooks_dir: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        max_output: int = MAX_OUTPUT,
        resolve: Callable[[Disk], Disk] | None = None,
    ):
        self.domain = domain
        self._resolve = resolve
        self._described: Domain | None = None
        self.hooks_dir = hooks_dir
        self.state_dir = state_dir
        self.max_output = max_output
        self._dir_hooks: tuple[HookSpec, ...] | None = None
        #: Every hook run by this runner, in order.
        self.outcomes: list[HookOutcome] = []

    def hooks(self) -> tuple[HookSpec, ...]:
        """The hooks dir's hooks (read once), then the domain file's.

        :raises ConfigError: the hooks dir cannot be read.
        """
        if self._dir_hooks is None:
            self._dir_hooks = hooks_in_dir(self.hooks_dir) if self.hooks_dir else ()
        return (*self._dir_hooks, *self.domain.hooks)

    def for_phase(self, phase: Phase) -> list[HookSpec]:
        return [h for h in self.hooks() if phase in h.phases]

    def _env(self, phase: Phase, name: str, cause: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SNAPCORE_DOMAIN=self.domain.name,
            SNAPCORE_DOMAIN_UUID=self.domain.uuid,
            SNAPCORE_DOMAIN_FILE=self.domain.source or "",
            SNAPCORE_CHECKPOINT=name,
            SNAPCORE_PHASE=phase.value,
            SNAPCORE_OPERATION=phase.operation,
            SNAPCORE_CAUSE=cause,
        )
        if self.state_dir is not None:
            env["SNAPCORE_STATE_DIR"] = os.fspath(self.state_dir)
        return env

    def run(
        self,
        phase: Phase,
        name: str,
        *,
        cause: str = "command",
        details: Mapping[str, Any] | None = None,
    ) -> list[HookOutcome]:
        """Run the hooks of *phase* for checkpoint *name*; return how each ran.

        :raises HookFailedError: at a ``pre-`` phase, when a fatal hook failed (the hooks after
            it were not run).
        :raises ConfigError: the hooks dir cannot be read.
        """
        hooks = self.for_phase(phase)
        if not hooks:
            return []
        if self._described is None:
            disks = self.domain.disks
            if self._resolve is not None:
                disks = tuple(self._resolve(d) for d in disks)
            self._described = dataclasses.replace(self.domain, disks=disks)
        payload = json.dumps(
            hook_input(self._described, phase, name, cause=cause, details=details)
        ).encode()
        env = self._env(phase, name, cause)
        cwd = str(Path(self.domain.source).parent) if self.domain.source else None
        outcomes: list[HookOutcome] = []
        for hook in hooks:
            started = time.monotonic()
            result = run_bounded(
                hook.command,
                input=payload,
                env=env,
                timeout=hook.timeout,
                max_output=self.max_output,
                cwd=cwd if cwd and os.path.isdir(cwd) else None,
            )
            ok = result.error is None and not result.timed_out and result.returncode == 0
            fatal = not ok and hook.is_fatal(phase)
            outcome = HookOutcome(
                hook=hook.name,
                phase=phase,
                ok=ok,
                reason="" if ok else _reason(result, hook.timeout),
                fatal=fatal,
                returncode=result.returncode,
                seconds=time.monotonic() - started,
                stdout=result.stdout,
                stderr=result.stderr,
                dropped=result.dropped,
            )
            outcomes.append(outcome)
            self.outcomes.append(outcome)
            if ok:
                log.info("%s", outcome)
            else:
                log.debug("%s; stderr: %s", outcome, result.stderr[-2000:])
            if fatal:
                raise HookFailedError(
                    self.domain.name,
                    name,
                    hook=hook.name,
                    phase=phase.value,
                    reason=outcome.reason,
                    stderr=outcome.stderr,
                )
        return outcomes

    def failures(self, phases: Iterable[Phase] | None = None) -> list[HookOutcome]:
        """The hooks that failed without stopping anything (``post-`` hooks, non-fatal ones)."""
        wanted = set(phases) if phases is not None else set(Phase)
        return [o for o in self.outcomes if not o.ok and not o.fatal and o.phase in wanted]
