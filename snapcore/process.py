"""The one way snapcore and its plugins run external commands.

Commands are argument lists, never shell strings. :class:`CommandRunner` is the protocol every
backend receives through its hook context; :class:`ShRunner` runs commands for real through
``sh`` (stdout not a tty, ``LC_ALL=C``, a timeout), and tests may pass any other runner, such as
:class:`snapcore.testing.RecordingRunner`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from snapcore.errors import CommandError

log = logging.getLogger(__name__)

#: Default time limit for one command, in seconds.
DEFAULT_TIMEOUT: Final = 600.0


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished command produced."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    """Runs one command to completion.

    Implementations must not use a shell. ``ok_codes`` lists the exit statuses that count as
    success. On any other status, a missing program or a timeout, they raise
    :class:`~snapcore.errors.CommandError` carrying the argv, the status and the tool's stderr.
    """

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Sequence[int] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result: ...


def _check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str) or not argv:
        raise TypeError("argv must be a non-empty sequence of strings, not a shell string")
    out = tuple(argv)
    for arg in out:
        if not isinstance(arg, str):
            raise TypeError(f"argv items must be str, got {type(arg).__name__}: {arg!r}")
        if "\0" in arg:
            raise ValueError(f"argument contains a NUL byte: {arg!r}")
    return out


class ShRunner:
    """Runs commands through ``sh`` with machine-readable settings.

    stdout is a pipe (``_tty_out=False``), the locale is ``C`` so tools print parseable output,
    and a command that outlives its timeout gets SIGTERM (safer than SIGKILL for storage tools).
    """

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Sequence[int] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        import sh  # imported lazily: most commands never run a tool

        args = _check_argv(argv)
        full_env = dict(os.environ)
        full_env["LC_ALL"] = "C"
        if env:
            full_env.update(env)
        log.debug("run: %s", " ".join(args))
        try:
            cmd = sh.Command(args[0])
        except sh.CommandNotFound as exc:
            raise CommandError(args, None, "command not found") from exc
        # sh's own _timeout polls every 0.1 s and adds that much to every command; a timer
        # that sends SIGTERM (safer than SIGKILL for storage tools) costs nothing.
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        try:
            proc = cmd(
                *args[1:],
                _env=full_env,
                _ok_code=list(ok_codes),
                _tty_out=False,
                _return_cmd=True,
                _in=None,
                _bg=True,
                _bg_exc=False,
                _decode_errors="replace",
            )
            if timeout is not None:

                def expire() -> None:
                    timed_out.set()
                    with contextlib.suppress(OSError):
                        proc.signal(signal.SIGTERM)

                timer = threading.Timer(timeout, expire)
                timer.daemon = True
                timer.start()
            proc.wait()
        except sh.ErrorReturnCode as exc:
            if timed_out.is_set():
                raise CommandError(args, None, f"timed out after {timeout:g} s") from exc
            stderr = exc.stderr.decode(errors="replace") if exc.stderr else ""
            if not stderr.strip() and exc.stdout:
                stderr = exc.stdout.decode(errors="replace")
            raise CommandError(args, exc.exit_code, stderr) from exc
        except OSError as exc:
            raise CommandError(args, None, f"{args[0]}: {exc.strerror or exc}") from exc
        finally:
            if timer is not None:
                timer.cancel()
        return Result(
            argv=args,
            returncode=proc.exit_code,
            stdout=proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace"),
        )


def default_runner() -> CommandRunner:
    """Return the runner snapcore uses when none is given."""
    return ShRunner()
