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


@dataclass(frozen=True, slots=True)
class BoundedResult:
    """What :func:`run_bounded` saw: the status, or that the command timed out or could not
    start, and the end of its output.

    :ivar returncode: the exit status; negative for a signal; ``None`` when it did not start.
    :ivar timed_out: it ran past its timeout and its process group was killed.
    :ivar stdout: the last *max_output* bytes of its stdout, decoded (bad bytes replaced).
    :ivar stderr: the same for stderr.
    :ivar dropped: bytes of output left out of *stdout* and *stderr* together.
    :ivar error: why it did not start (``No such file or directory``), when it did not.
    """

    argv: tuple[str, ...]
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    dropped: int = 0
    error: str | None = None


class _Tail:
    """The last *limit* bytes of a stream, read to its end in a thread."""

    def __init__(self, stream: object, limit: int):
        self.data = bytearray()
        self.dropped = 0
        self._limit = limit
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        read = stream.read1 if hasattr(stream, "read1") else stream.read  # type: ignore[attr-defined]
        with contextlib.suppress(OSError, ValueError):
            while chunk := read(65536):
                self.data += chunk
                excess = len(self.data) - self._limit
                if excess > 0:
                    del self.data[:excess]
                    self.dropped += excess

    def join(self, timeout: float | None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def run_bounded(
    argv: Sequence[str],
    *,
    input: bytes = b"",
    env: Mapping[str, str] | None = None,
    timeout: float,
    max_output: int = 64 * 1024,
    cwd: str | None = None,
) -> BoundedResult:
    """Run *argv* (no shell) in a process group of its own, feed it *input* on stdin, keep the
    last *max_output* bytes of each of its stdout and stderr, and kill its whole process group
    (``SIGKILL``) once *timeout* seconds have passed, or once it has exited while processes it
    left behind in its group still hold its output open (they are killed then, at the latest
    at *timeout*).

    For commands snapcore does not control (hooks): however much they print, memory stays
    bounded; however long they hang, this returns shortly after *timeout*. A failure is data
    (:class:`BoundedResult`), never an exception.

    :param env: the whole environment of the command (default: this process's).
    """
    import subprocess
    import time

    args = _check_argv(argv)
    log.debug("run (bounded, %g s): %s", timeout, " ".join(args))
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return BoundedResult(args, None, False, "", "", error=f"{args[0]}: {exc.strerror or exc}")
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = _Tail(proc.stdout, max_output), _Tail(proc.stderr, max_output)

    def feed(stdin: object) -> None:
        with contextlib.suppress(OSError, ValueError):  # a command that ignores its stdin
            stdin.write(input)  # type: ignore[attr-defined]
        with contextlib.suppress(OSError, ValueError):
            stdin.close()  # type: ignore[attr-defined]

    feeder = threading.Thread(target=feed, args=(proc.stdin,), daemon=True)
    feeder.start()

    def kill_group() -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)

    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group()
        proc.wait()
    # what it left running with our pipes open is killed too, once its output is read
    if not (out.join(max(0.0, deadline - time.monotonic()) + 0.5) and err.join(0.5)):
        kill_group()
        out.join(5.0)
        err.join(5.0)
    for stream in (proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            stream.close()
    return BoundedResult(
        args,
        proc.returncode,
        timed_out,
        bytes(out.data).decode(errors="replace"),
        bytes(err.data).decode(errors="replace"),
        dropped=out.dropped + err.dropped,
    )


def default_runner() -> CommandRunner:
    """Return the runner snapcore uses when none is given."""
    return ShRunner()
