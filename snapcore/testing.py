"""Test helpers for snapcore and its plugins: a recording command runner and a conformance suite
that every storage backend can run in its own tests.

This module is also a pytest plugin, registered through the ``pytest11`` entry point, so that the
:func:`recording_runner` fixture is available wherever snapcore is installed. Importing it is
cheap and changes nothing.

Testing a backend's commands without its tools, with :class:`RecordingRunner`::

    from snapcore.testing import RecordingRunner

    def test_create_runs_lvcreate(recording_runner: RecordingRunner) -> None:
        recording_runner.on(["lvs", "--reportformat=json", "vg0/web1"], stdout=LVS_JSON)
        recording_runner.fail(["lvcreate", "--snapshot"], prefix=True, stderr="VG vg0 is full")
        ...  # call the hook with HookContext(domain=..., run=recording_runner)
        assert recording_runner.argvs[0][0] == "lvs"

Checking that a backend keeps the hook contract, with :class:`BackendConformance`: subclass it
in a test module of your plugin, name the subclass ``Test...``, and tell it how to make a disk
and how to read and write the disk's current data. Every test of the suite then runs against
your plugin, once per snapshot kind it reports::

    from pathlib import Path

    import snapcore_rawcopy.plugin
    from snapcore.model import Disk
    from snapcore.testing import BackendConformance


    class TestRawcopyConformance(BackendConformance):
        plugin = snapcore_rawcopy.plugin
        driver = "rawcopy"

        def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
            path = tmp_path / f"{vdev}.raw"
            with path.open("wb") as f:
                f.truncate(size)
            return Disk(vdev=vdev, path=str(path), driver=self.driver)

        def write(self, disk: Disk, offset: int, data: bytes) -> None:
            with open(disk.path, "r+b") as f:
                f.seek(offset)
                f.write(data)

        def read(self, disk: Disk, offset: int, length: int) -> bytes:
            with open(disk.path, "rb") as f:
                f.seek(offset)
                return f.read(length)

A backend that needs a tool this host lacks marks its subclass with ``pytest.mark.skipif``; one
that runs its tools through a different runner overrides the ``runner`` fixture.

Fault injection comes in two variants. ``test_failed_*`` makes create, revert and delete raise
at each of their commands (:class:`CommandFault`) and file operations (:class:`FileFault`) in
turn. ``test_killed_*`` runs each step in a forked child process (:func:`call_in_child`) that
is killed with SIGKILL just before a command starts, or just before or just after a file
operation, then does what snapcore's crash recovery does (abort a create, run a revert or delete
again; then ``disk_repair`` and ``disk_verify``) and checks the same all-or-nothing promises.
Set :attr:`BackendConformance.kill_faults` to ``False`` where that is too slow, or where the
backend's state lives in the test process's memory.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import functools
import hashlib
import io
import os
import pickle
import select
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, NoReturn

import pytest

from snapcore.boundary import StorageBackend
from snapcore.context import HookContext, InfoContext
from snapcore.errors import BackendError, CommandError, PluginContractError, SnapcoreError
from snapcore.model import (
    BackendInfo,
    Disk,
    DiskSnapshot,
    Domain,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.plugins import Plugins, load_plugins
from snapcore.process import (
    DEFAULT_TIMEOUT,
    CommandRunner,
    Result,
    ShRunner,
    _check_argv,
    default_runner,
)

__all__ = [
    "SAMPLE_KINDS",
    "BackendConformance",
    "Call",
    "ChildOutcome",
    "CommandFault",
    "FileFault",
    "RecordingRunner",
    "UnexpectedCommandError",
    "call_in_child",
    "is_listed",
    "make_samples",
    "recording_runner",
    "tree_changes",
    "tree_state",
]

# --------------------------------------------------------------------------------------------
# RecordingRunner
# --------------------------------------------------------------------------------------------


class UnexpectedCommandError(AssertionError):
    """A :class:`RecordingRunner` was asked to run a command it has no answer for.

    It is an ``AssertionError``, not a :class:`~snapcore.errors.CommandError`, so that plugin
    code that handles failed commands cannot swallow it: the test fails and names the command.
    """

    def __init__(self, argv: Sequence[str]):
        self.argv = tuple(argv)
        super().__init__(
            f"unexpected command: {shlex.join(self.argv)} "
            "(give it an answer with runner.on(...) or use RecordingRunner(passthrough=True))"
        )


@dataclass(frozen=True, slots=True)
class Call:
    """One command a :class:`RecordingRunner` was asked to run, and how it ended.

    :ivar result: what the command produced, or ``None`` when it raised.
    :ivar error: the :class:`~snapcore.errors.CommandError` it raised, if any.
    """

    argv: tuple[str, ...]
    ok_codes: tuple[int, ...]
    timeout: float | None
    env: Mapping[str, str] | None
    result: Result | None = None
    error: CommandError | None = None


@dataclass(slots=True)
class _Answer:
    argv: tuple[str, ...]
    prefix: bool
    returncode: int | None
    stdout: str
    stderr: str
    times: int | None

    def matches(self, argv: tuple[str, ...]) -> bool:
        if self.times == 0:
            return False
        if self.prefix:
            return argv[: len(self.argv)] == self.argv
        return argv == self.argv


class RecordingRunner:
    """A :class:`~snapcore.process.CommandRunner` for tests: it records every command and
    answers from a table of canned results.

    Answers are added with :meth:`on` (a result) and :meth:`fail` (a failure). A command is
    answered by the first answer added that matches it: the same argv, or an argv that starts
    with the answer's when ``prefix=True``. An answer given ``times=N`` is used N times and then
    skipped, so a sequence of answers for one command is written as several calls to
    :meth:`on`. A command whose status is not in the caller's ``ok_codes`` raises
    :class:`~snapcore.errors.CommandError`, exactly as the real runner does.

    A command with no answer is run for real by :class:`~snapcore.process.ShRunner` when
    ``passthrough`` is true (canned answers still take precedence); otherwise it raises
    :class:`UnexpectedCommandError`, or succeeds with empty output when ``strict`` is false.

    Every command is recorded in :attr:`calls` in the order it was asked for, whatever its
    outcome. The runner may be shared by hooks running in several threads.

    :param passthrough: run unanswered commands for real.
    :param strict: fail on unanswered commands (ignored with ``passthrough``).
    :param runner: the runner used for passthrough; :class:`~snapcore.process.ShRunner` by
        default.
    """

    def __init__(
        self,
        *,
        passthrough: bool = False,
        strict: bool = True,
        runner: CommandRunner | None = None,
    ):
        self.passthrough = passthrough
        self.strict = strict
        self._real = runner
        self._answers: list[_Answer] = []
        self._lock = threading.Lock()
        #: Every command run so far, oldest first.
        self.calls: list[Call] = []

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        """The argv of every command run so far, oldest first."""
        with self._lock:
            return [c.argv for c in self.calls]

    def on(
        self,
        argv: Sequence[str],
        *,
        stdout: str = "",
        stderr: str = "",
        returncode: int | None = 0,
        prefix: bool = False,
        times: int | None = None,
    ) -> RecordingRunner:
        """Answer *argv* with this output and exit status.

        :param returncode: the exit status; ``None`` means the program could not be started.
        :param prefix: match every command that starts with *argv*.
        :param times: use this answer that many times only (default: always).
        :returns: the runner, so that calls can be chained.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        answer = _Answer(_check_argv(argv), prefix, returncode, stdout, stderr, times)
        with self._lock:
            self._answers.append(answer)
        return self

    def fail(
        self,
        argv: Sequence[str],
        *,
        stderr: str = "",
        returncode: int | None = 1,
        prefix: bool = False,
        times: int | None = None,
    ) -> RecordingRunner:
        """Make *argv* fail with this message and exit status (``None``: could not start)."""
        return self.on(argv, stderr=stderr, returncode=returncode, prefix=prefix, times=times)

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Sequence[int] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        args = _check_argv(argv)
        codes = tuple(ok_codes)
        with self._lock:
            answer = next((a for a in self._answers if a.matches(args)), None)
            if answer is not None and answer.times is not None:
                answer.times -= 1
        if answer is None and self.passthrough:
            real = self._real or ShRunner()
            try:
                result = real(args, ok_codes=codes, timeout=timeout, env=env)
            except CommandError as exc:
                self._record(Call(args, codes, timeout, env, error=exc))
                raise
            self._record(Call(args, codes, timeout, env, result=result))
            return result
        if answer is None:
            if self.strict:
                self._record(Call(args, codes, timeout, env))
                raise UnexpectedCommandError(args)
            answer = _Answer(args, False, 0, "", "", None)
        if answer.returncode is None or answer.returncode not in codes:
            error = CommandError(args, answer.returncode, answer.stderr or answer.stdout)
            self._record(Call(args, codes, timeout, env, error=error))
            raise error
        result = Result(args, answer.returncode, answer.stdout, answer.stderr)
        self._record(Call(args, codes, timeout, env, result=result))
        return result

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


@pytest.fixture
def recording_runner() -> RecordingRunner:
    """A fresh, strict :class:`RecordingRunner` with no answers."""
    return RecordingRunner()


# --------------------------------------------------------------------------------------------
# File trees: did something change anything?
# --------------------------------------------------------------------------------------------


def _describe_entry(path: Path) -> str:
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return f"symbolic link to {os.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return f"directory, mode {mode:o}, modified {st.st_mtime_ns}"
    if stat.S_ISREG(st.st_mode):
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        return (
            f"file of {st.st_size} bytes, mode {mode:o}, modified {st.st_mtime_ns}, "
            f"sha256 {digest[:16]}"
        )
    return f"special file, mode {st.st_mode:o}"


def tree_state(*roots: Path | str) -> dict[str, str]:
    """Every directory, file and symbolic link under *roots* (the roots included), by path,
    each with what it is: a file's size, mode, modification time and SHA-256 hash, a
    directory's mode and modification time (which changes when an entry is added or removed,
    even if it is removed again), a link's target. Links are not followed.

    Take one before and one after a call and compare them with :func:`tree_changes` to see
    whether the call changed anything. A root that does not exist is left out.
    """
    state: dict[str, str] = {}
    for root in dict.fromkeys(Path(r) for r in roots):
        if not root.exists() and not root.is_symlink():
            continue
        state[str(root)] = _describe_entry(root)
        if not root.is_dir() or root.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in (*dirnames, *filenames):
                path = Path(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    state[str(path)] = _describe_entry(path)
    return state


def tree_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What differs between two :func:`tree_state` answers, one sentence per path (sorted);
    an empty list when nothing changed."""
    changes = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            changes.append(f"{path} was created ({new})")
        elif new is None:
            changes.append(f"{path} was removed (it was a {old})")
        else:
            changes.append(f"{path} changed (from {old} to {new})")
    return changes


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------

#: The message of every failure :class:`CommandFault` and :class:`FileFault` inject.
INJECTED: Final = "injected failure (snapcore.testing)"


class CommandFault:
    """A :class:`~snapcore.process.CommandRunner` that fails the *n*-th command it is asked
    to run (counting from 1) with a :class:`~snapcore.errors.CommandError`, as if the tool had
    failed, and runs every other command through *runner*.

    With *kill*, the process is killed with SIGKILL just before the *n*-th command would start,
    as a crash or a power cut would stop it; this works only in the child process of
    :func:`call_in_child`, which reports what the kill cut short.

    :ivar fired: what was failed (for messages), or ``None`` while no command was failed.
    """

    def __init__(self, runner: CommandRunner, n: int, *, kill: bool = False):
        self.runner = runner
        self.n = n
        self.kill = kill
        self.count = 0
        self.fired: str | None = None
        self._lock = threading.Lock()

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Sequence[int] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        with self._lock:
            self.count += 1
            hit = self.count == self.n
        if hit:
            self.fired = f"command #{self.n} ({shlex.join(argv)})"
            if self.kill:
                _die(f"before {self.fired} started")
            raise CommandError(tuple(argv), 1, INJECTED)
        return self.runner(argv, ok_codes=ok_codes, timeout=timeout, env=env)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Nothing to switch on: the fault is in the runner given to the hook."""
        yield


#: The file operations :class:`FileFault` watches, as ``(module, function)``.
FILE_OPERATIONS: Final = (
    (os, "replace"),
    (os, "rename"),
    (os, "renames"),
    (os, "unlink"),
    (os, "remove"),
    (os, "link"),
    (os, "symlink"),
    (os, "mkdir"),
    (os, "makedirs"),
    (os, "rmdir"),
    (os, "truncate"),
    (os, "open"),
    (shutil, "copyfile"),
    (shutil, "copy"),
    (shutil, "copy2"),
    (shutil, "move"),
    (shutil, "rmtree"),
)

_WRITE_FLAGS: Final = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


#: When a kill of :class:`FileFault` strikes: just before the operation, or just after it.
KILL_POINTS: Final = ("before", "after")

_WRITE_MODES: Final = frozenset("wax+")


class FileFault:
    """Makes the *n*-th file operation (counting from 1) on a path under *roots* raise
    ``OSError(EIO)``, while :meth:`active`.

    The operations are those of :data:`FILE_OPERATIONS` (``os.open`` only when it opens for
    writing); :mod:`pathlib` goes through them too. An operation called by another one
    (``shutil.move`` calling ``os.rename``) counts once. Only calls naming a path under
    *roots* count, so the test runner's own work and the command runner are not disturbed.
    Writes through the built-in ``open`` (and ``io.open``, which :mod:`pathlib` uses) count
    only with *opens*.

    With *kill* (``"before"`` or ``"after"``, see :data:`KILL_POINTS`), the process is killed
    with SIGKILL just before the *n*-th operation, or just after it returned, instead: the
    state a crash there leaves on disk. This works only in the child process of
    :func:`call_in_child`. *opens* is then on unless given: opening a file for writing creates
    or truncates it, a crash point as real as a rename.

    :ivar fired: what was failed (for messages), or ``None`` while nothing was failed.
    """

    def __init__(
        self,
        n: int,
        roots: Sequence[Path | str],
        *,
        kill: str | None = None,
        opens: bool | None = None,
    ):
        if kill not in (None, *KILL_POINTS):
            raise ValueError(f"kill must be one of {KILL_POINTS} or None, not {kill!r}")
        self.n = n
        self.kill = kill
        self.opens = kill is not None if opens is None else opens
        self.count = 0
        self.fired: str | None = None
        self._roots = tuple(os.path.realpath(r) for r in roots)
        self._lock = threading.Lock()
        self._inside = threading.local()
        self._pid = os.getpid()

    def _under_roots(self, arg: object) -> str | None:
        if isinstance(arg, str | os.PathLike):
            path = os.path.realpath(os.fspath(arg))
            if any(path == r or path.startswith(r + os.sep) for r in self._roots):
                return str(os.fspath(arg))
        return None

    def _watched(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[str]:
        if name == "open":
            flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
            if not isinstance(flags, int) or not flags & _WRITE_FLAGS:
                return []
        if name == "builtins.open":
            mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
            if not isinstance(mode, str) or not _WRITE_MODES & set(mode):
                return []
            path = self._under_roots(args[0] if args else kwargs.get("file"))
            return [path] if path is not None else []
        return [p for a in (*args, *kwargs.values()) if (p := self._under_roots(a)) is not None]

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def faulty(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._inside, "busy", False) or os.getpid() != self._pid:
                return fn(*args, **kwargs)  # inside a watched call, or in a forked child of it
            paths = self._watched(name, args, kwargs)
            hit = False
            if paths:
                with self._lock:
                    self.count += 1
                    hit = self.count == self.n
                if hit:
                    self.fired = f"file operation #{self.n} ({name}({', '.join(paths)}))"
                    if self.kill == "before":
                        _die(f"before {self.fired}")
                    elif self.kill is None:
                        raise OSError(errno.EIO, INJECTED, paths[0])
            self._inside.busy = True
            try:
                result = fn(*args, **kwargs)
            finally:
                self._inside.busy = False
            if hit and self.kill == "after":
                _die(f"after {self.fired} returned")
            return result

        return faulty

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Watch the file operations for the duration of the ``with`` block."""
        self._pid = os.getpid()
        with pytest.MonkeyPatch.context() as mp:
            for module, name in FILE_OPERATIONS:
                mp.setattr(module, name, self._wrap(name, getattr(module, name)))
            if self.opens:
                opener = self._wrap("builtins.open", builtins.open)
                mp.setattr(builtins, "open", opener)
                mp.setattr(io, "open", opener)
            yield


# --------------------------------------------------------------------------------------------
# Running a step in a child process that a kill fault may SIGKILL
# --------------------------------------------------------------------------------------------

#: How long :func:`call_in_child` waits for its child by default, in seconds.
CHILD_TIMEOUT: Final = 600.0

#: The pipe to the parent, in the child process :func:`call_in_child` forked (only there).
_report_fd: int | None = None
_report_pid: int | None = None


def _send(fd: int, message: tuple[str, object]) -> None:
    try:
        data = pickle.dumps(message)
    except Exception:  # a result that does not pickle: say what it was instead
        data = pickle.dumps((message[0], repr(message[1])))
    data = struct.pack(">Q", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _die(what: str) -> NoReturn:
    """Kill this process with SIGKILL, after telling the parent of :func:`call_in_child` *what*
    it was killed at."""
    if _report_fd is None or os.getpid() != _report_pid:
        raise RuntimeError(
            f"a kill fault fired ({what}) outside the child process of call_in_child: "
            "it would have killed the test process itself"
        )
    _send(_report_fd, ("killed", what))
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("still alive after SIGKILL")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """How the child process of :func:`call_in_child` ended: killed by a kill fault
    (:attr:`killed`), or it finished, returning :attr:`value` or raising (:attr:`error`)."""

    #: What the child was killed at (a kill fault's description), or ``None``.
    killed: str | None = None
    #: What the function returned (a copy, through :mod:`pickle`; its ``repr`` when it does not
    #: pickle), when it finished.
    value: object = None
    #: The traceback of what the function raised, or ``None``.
    error: str | None = None


def call_in_child(fn: Callable[[], object], *, timeout: float = CHILD_TIMEOUT) -> ChildOutcome:
    """Run *fn* in a forked child process and wait for it: the way to let a kill fault
    (``CommandFault(kill=True)``, ``FileFault(kill=...)``) SIGKILL a hook without killing
    the test.

    The child is a copy of this process with only the calling thread in it (call this from
    the thread that runs the test, with no hook of snapcore's boundary running in another
    thread); snapcore's boundary starts the hook's thread in the child itself. The child never
    returns into pytest: it leaves with :func:`os._exit`. What happens on disk stays; what
    changes in the child's memory (a plugin's caches, an in-memory backend) is lost, as in a
    crash.

    :returns: how the child ended.
    :raises AssertionError: the child died in another way (another signal, ``os._exit`` in
        the hook) or did not end within *timeout* seconds (it is then killed).
    """
    global _report_fd, _report_pid
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() with threads running may deadlock the child: the child
        # here runs only the calling thread, and starts its own threads.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_fd)
            _report_fd, _report_pid = write_fd, os.getpid()
            try:
                message: tuple[str, object] = ("done", fn())
            except BaseException as exc:
                message = ("error", "".join(traceback.format_exception(exc)))
            _send(write_fd, message)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        data = _read_child(read_fd, pid, timeout)
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    messages = _unpack(data)
    kind, payload = messages[-1] if messages else ("", None)
    if kind == "killed" and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return ChildOutcome(killed=str(payload))
    if kind == "done" and os.WIFEXITED(status):
        return ChildOutcome(value=payload)
    if kind == "error" and os.WIFEXITED(status):
        return ChildOutcome(error=str(payload))
    how = (
        f"signal {os.WTERMSIG(status)}"
        if os.WIFSIGNALED(status)
        else f"exit status {os.WEXITSTATUS(status)}"
    )
    raise AssertionError(f"the child process ended by {how} without saying why")


def _read_child(fd: int, pid: int, timeout: float) -> bytes:
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the child process did not finish within {timeout:g} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _unpack(data: bytes) -> list[tuple[str, object]]:
    messages = []
    while len(data) >= 8:
        (size,) = struct.unpack(">Q", data[:8])
        messages.append(pickle.loads(data[8 : 8 + size]))
        data = data[8 + size :]
    return messages


# --------------------------------------------------------------------------------------------
# Image samples, for claims
# --------------------------------------------------------------------------------------------

#: The kinds of sample image :func:`make_samples` makes.
SAMPLE_KINDS: Final = ("qcow2", "raw", "vhd", "vmdk")


def _qcow2_header(size: int) -> bytes:
    # QEMU docs/interop/qcow2.txt: magic, version, backing file offset and size, cluster bits,
    # size, encryption, L1 size and offset, refcount table offset and clusters, snapshots.
    header = struct.pack(">4sIQIIQIIQQIIQ", b"QFI\xfb", 3, 0, 0, 16, size, 0, 0, 0, 0, 0, 0, 0)
    return header.ljust(65536, b"\0")


def _vmdk_header(size: int) -> bytes:
    # VMware Virtual Disk Format 1.1, "hosted sparse extent header".
    header = struct.pack(
        "<4sIIQQQQIQQQ?4s",
        b"KDMV",
        1,
        3,
        size // 512,
        128,
        1,
        20,
        512,
        0,
        0,
        128,
        False,
        b"\n \r\n",
    )
    descriptor = b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicSparse"\n'
    return header.ljust(512, b"\0") + descriptor.ljust(20 * 512, b"\0")


def _vhd_footer(size: int) -> bytes:
    # Microsoft "Virtual Hard Disk Image Format Specification", the hard disk footer of a fixed
    # disk (see also docs' reference/vhd-format.md); the checksum is the ones' complement of
    # the sum of the footer's bytes.
    fields = struct.pack(
        ">8sIIQI4sI4sQQHBBII16s?",
        b"conectix",
        2,
        0x00010000,
        0xFFFFFFFFFFFFFFFF,
        0,
        b"sncr",
        0x00010000,
        b"Wi2k",
        size,
        size,
        size // 512 // 255 // 63 or 1,
        16,
        255,
        2,
        0,
        uuid.UUID(int=0x5C).bytes,
        False,
    )
    footer = fields.ljust(512, b"\0")
    checksum = ~sum(footer) & 0xFFFFFFFF
    return footer[:64] + struct.pack(">I", checksum) + footer[68:]


def make_samples(directory: Path, size: int = 1024 * 1024) -> dict[str, Path]:
    """Make one small image of each of :data:`SAMPLE_KINDS` in *directory*, named
    ``sample.<kind>``, and return them by kind.

    The qcow2 sample is made by ``qemu-img create -f qcow2`` when qemu-img is installed, and
    is a crafted qcow2 header otherwise; the others are crafted: a raw file (some text and
    zeros), a fixed VHD (zeros and a footer) and a VMDK sparse extent header with its
    descriptor. They are enough for a plugin that looks at names and headers, not images a
    hypervisor could use.
    """
    directory.mkdir(parents=True, exist_ok=True)
    samples = {kind: directory / f"sample.{kind}" for kind in SAMPLE_KINDS}
    qemu_img = shutil.which("qemu-img")
    made = False
    if qemu_img is not None:
        proc = subprocess.run(
            [qemu_img, "create", "-q", "-f", "qcow2", str(samples["qcow2"]), str(size)],
            capture_output=True,
            check=False,
        )
        made = proc.returncode == 0
    if not made:
        samples["qcow2"].write_bytes(_qcow2_header(size))
    samples["raw"].write_bytes(b"snapcore raw sample: no header here\n".ljust(size, b"\0"))
    samples["vhd"].write_bytes(bytes(size) + _vhd_footer(size))
    samples["vmdk"].write_bytes(_vmdk_header(size))
    return samples


# --------------------------------------------------------------------------------------------
# BackendConformance
# --------------------------------------------------------------------------------------------

#: Bytes written per block by the conformance tests; a multiple of any sector size.
BLOCK: Final = 4096


def is_listed(snapshot: DiskSnapshot, listed: Sequence[DiskSnapshot]) -> bool:
    """Whether *listed* (a ``disk_snapshot_list`` answer) shows *snapshot* as present.

    The rule of the ``disk_snapshot_list`` hook: a snapshot of the same kind with the same
    ``locator`` (external, native) or the same ``name`` (internal).
    """
    for s in listed:
        if s.kind != snapshot.kind:
            continue
        if snapshot.kind is SnapshotKind.INTERNAL:
            if s.name == snapshot.name:
                return True
        elif s.locator == snapshot.locator:
            return True
    return False


#: Snapshots the layered tests make, each over the one before.
LAYERS: Final = 3
#: What blocks 0..LAYERS hold after :meth:`BackendConformance._build_layers`.
_CURRENT_LAYERS: Final = (*(f"layer{k}" for k in range(LAYERS)), "current")


def _layer_tags(k: int) -> list[str]:
    """What blocks 0..LAYERS of snapshot s{k} of the layered tests hold."""
    return [f"layer{i}" for i in range(k + 1)] + ["base"] * (LAYERS - k)


def _block(tag: str, offset: int) -> bytes:
    unit = f"<{tag}@{offset}>".encode()
    return (unit * (BLOCK // len(unit) + 1))[:BLOCK]


class BackendConformance:
    """The hook contract of a storage backend, as a test class to subclass.

    A subclass sets :attr:`plugin` and :attr:`driver` and implements :meth:`make_disk`,
    :meth:`write` and :meth:`read`; see the module docstring for an example. It may set
    :attr:`kinds` to test fewer kinds, :attr:`disk_size`, override :meth:`make_request` (to
    choose where external snapshots go) and override the fixtures ``runner`` (default: the
    real runner), ``disk`` and ``ctx``.

    The tests call the hooks the way the coordinator does, through a fresh plugin manager that
    holds only the built-in ``none`` hypervisor and :attr:`plugin`, with keyword arguments, and
    check each answer against the contract written in :mod:`snapcore.hookspecs`: the data read
    back from the disk after each step and whether each snapshot is listed or gone.
    """

    #: The module or object holding the backend's hook implementations.
    plugin: ClassVar[object]
    #: The driver name the backend reports in ``backend_info``.
    driver: ClassVar[str]
    #: The kinds to test; ``None`` for every kind the backend's ``backend_info`` lists.
    kinds: ClassVar[Collection[SnapshotKind] | None] = None
    #: Size in bytes of the disks the tests make.
    disk_size: ClassVar[int] = 4 * 1024 * 1024
    #: The kinds of :data:`SAMPLE_KINDS` that are the backend's own format and that its
    #: ``disk_claim`` may claim; ``None`` for the sample named like the driver, if any.
    own_samples: ClassVar[Collection[str] | None] = None
    #: The most steps (commands, file operations) fault injection tries in one operation.
    max_fault_steps: ClassVar[int] = 200
    #: Whether to run the kill variant of fault injection (``test_killed_*``: the hook in a
    #: forked child SIGKILLed at each command and file operation, then recovered as snapcore
    #: recovers). Turn it off for a backend whose state lives in the test process's memory (a
    #: kill loses it all), or where each step is too slow (LVM in a TCG guest); the tests then
    #: skip, saying so.
    kill_faults: ClassVar[bool] = True
    #: Tests the backend is known to fail, ``{test name: reason}``: each is marked
    #: ``xfail(strict=True)``, so the run stays green while the bug is open and fails once it
    #: is fixed. A name is a test's (``test_x``) or one case's (``test_x[external]``).
    known_failures: ClassVar[Mapping[str, str]] = {}

    # -- to implement ---------------------------------------------------------------------------

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        """Make a fresh writable disk of *size* bytes under *tmp_path* (for file-based backends;
        a fresh directory, the ``disk_dir`` fixture) and return it with ``driver`` set to
        :attr:`driver`."""
        raise NotImplementedError

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        """Write *data* into the disk's current data at *offset*, as a guest would."""
        raise NotImplementedError

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        """Read *length* bytes of the disk's current data at *offset*, as a guest would."""
        raise NotImplementedError

    def make_request(
        self, disk: Disk, name: str, kind: SnapshotKind, tmp_path: Path
    ) -> SnapshotRequest:
        """The request the tests create; external snapshots get a target under *tmp_path*."""
        target = None
        if kind is SnapshotKind.EXTERNAL:
            target = str(tmp_path / f"{disk.vdev}.{name}.snapshot")
        return SnapshotRequest(disk=disk, name=name, kind=kind, target=target)

    def watched_paths(self, disk: Disk, disk_dir: Path, ctx: HookContext) -> list[Path]:
        """Where the backend keeps the disk's files: what the tests hash to see whether a hook
        changed anything, and where fault injection fails file operations. By default
        *disk_dir* (the directory given to :meth:`make_disk`), ``ctx.work_dir`` and, when the
        disk is a file, its directory."""
        paths = [disk_dir]
        if ctx.work_dir is not None:
            paths.append(ctx.work_dir)
        if os.path.isfile(disk.path):
            paths.append(Path(disk.path).parent)
        return paths

    def break_chain(self, disk: Disk, snapshot: DiskSnapshot) -> None:
        """Break the backing chain of *disk*, of which *snapshot* (just made) is a layer, the
        way a file removed behind snapcore's back does.

        By default, for an external snapshot whose ``locator`` is a file other than the disk,
        the file is moved away; otherwise the test that needs a broken chain is skipped.
        Override it for a backend whose chain breaks otherwise.
        """
        locator = snapshot.locator
        if (
            snapshot.kind is not SnapshotKind.EXTERNAL
            or not os.path.isfile(locator)
            or os.path.realpath(locator) == os.path.realpath(disk.path)
        ):
            pytest.skip(f"{snapshot.kind.value} snapshots have no backing chain to break")
        os.rename(locator, locator + ".moved-away")

    # -- parametrization and fixtures -----------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run each test that takes ``kind`` once per kind to test."""
        if "kind" in metafunc.fixturenames:
            kinds = self._kinds_to_test()
            metafunc.parametrize("kind", kinds, ids=[k.value for k in kinds])

    def _kinds_to_test(self) -> list[SnapshotKind]:
        if self.kinds is not None:
            return sorted(self.kinds)
        try:
            info = load_plugins(entry_points=False, extra=[(self.driver, self.plugin)]).backend(
                self.driver
            )
        except SnapcoreError:
            info = None  # test_backend_info reports why
        return sorted(info.kinds) if info else []

    @pytest.fixture(autouse=True)
    def _known_failure(self, request: pytest.FixtureRequest) -> None:
        """Mark the tests of :attr:`known_failures` ``xfail(strict=True)``."""
        node = request.node
        reason = self.known_failures.get(node.name) or self.known_failures.get(
            getattr(node, "originalname", node.name)
        )
        if reason is not None:
            node.add_marker(pytest.mark.xfail(strict=True, reason=reason))

    @pytest.fixture
    def plugins(self) -> Plugins:
        """A fresh plugin manager holding the backend under test."""
        return load_plugins(entry_points=False, extra=[(self.driver, self.plugin)])

    @pytest.fixture
    def info(self, plugins: Plugins) -> BackendInfo:
        """The backend's ``backend_info``."""
        info = plugins.backend(self.driver)
        assert info is not None, f"no loaded plugin reports driver {self.driver!r}"
        return info

    @pytest.fixture
    def runner(self) -> CommandRunner:
        """The runner given to the hooks; the real one unless overridden."""
        return default_runner()

    @pytest.fixture
    def disk_dir(self, tmp_path: Path) -> Path:
        """The directory given to :meth:`make_disk` and :meth:`make_request`: ``disks`` under
        *tmp_path*, so that what the test's own helpers keep in *tmp_path* (logs of stand-in
        tools, say) is not taken for the backend's files."""
        path = tmp_path / "disks"
        path.mkdir(exist_ok=True)
        return path

    @pytest.fixture
    def disk(self, disk_dir: Path) -> Disk:
        """A fresh disk made by :meth:`make_disk`."""
        disk = self.make_disk(disk_dir, "vda", self.disk_size)
        assert disk.driver == self.driver, (
            f"make_disk must return a disk with driver={self.driver!r}, not {disk.driver!r}"
        )
        return disk

    @pytest.fixture
    def ctx(self, disk: Disk, runner: CommandRunner, tmp_path: Path) -> HookContext:
        """The hook context: a one-disk domain and a private work directory."""
        work_dir = tmp_path / "work"
        work_dir.mkdir(exist_ok=True)
        return HookContext(
            domain=Domain(name="conformance", disks=(disk,)), run=runner, work_dir=work_dir
        )

    # -- helpers --------------------------------------------------------------------------------

    def _fill(self, disk: Disk, tag: str) -> None:
        """Write data marked *tag* at the start and in the middle of the disk."""
        for offset in self._offsets():
            self.write(disk, offset, _block(tag, offset))

    def _read(self, disk: Disk, offset: int, when: str) -> bytes:
        try:
            return self.read(disk, offset, BLOCK)
        except Exception as exc:  # any failure to read is the finding
            pytest.fail(f"{when}: the disk cannot be read at offset {offset}: {exc!r}")

    def _expect(self, disk: Disk, tag: str, when: str) -> None:
        for offset in self._offsets():
            got = self._read(disk, offset, when)
            assert got == _block(tag, offset), (
                f"{when}: the disk at offset {offset} does not hold the data {tag!r} "
                f"(it holds {got[:24]!r}...)"
            )

    def _offsets(self) -> tuple[int, int]:
        return (0, (self.disk_size // 2) // BLOCK * BLOCK)

    def _put(self, disk: Disk, k: int, tag: str) -> None:
        """Write block *k* (at ``k * BLOCK``) marked *tag*."""
        self.write(disk, k * BLOCK, _block(tag, k * BLOCK))

    def _expect_blocks(self, disk: Disk, tags: Sequence[str], when: str) -> None:
        """Block *k* holds the data marked ``tags[k]``, for every *k*."""
        for k, tag in enumerate(tags):
            got = self._read(disk, k * BLOCK, when)
            assert got == _block(tag, k * BLOCK), (
                f"{when}: block {k} (offset {k * BLOCK}) does not hold the data {tag!r} "
                f"(it holds {got[:24]!r}...)"
            )

    def _holds(self, disk: Disk, tags: Sequence[str], when: str) -> str | None:
        """Which of *tags* the disk holds at every offset of :meth:`_fill`, or ``None``."""
        got = [self._read(disk, offset, when) for offset in self._offsets()]
        for tag in tags:
            if got == [_block(tag, offset) for offset in self._offsets()]:
                return tag
        return None

    def _build_layers(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        *,
        verify: bool = True,
    ) -> list[DiskSnapshot]:
        """Blocks 0..LAYERS hold "base"; then for each layer k, block k gets "layer{k}" and
        snapshot s{k} is made; at last block LAYERS gets "current" (read back unless not
        *verify*)."""
        for k in range(LAYERS + 1):
            self._put(disk, k, "base")
        snaps = []
        for k in range(LAYERS):
            self._put(disk, k, f"layer{k}")
            snaps.append(
                self._create(plugins, ctx, self.make_request(disk, f"s{k}", kind, disk_dir))
            )
        self._put(disk, LAYERS, "current")
        if verify:
            self._expect_blocks(disk, _CURRENT_LAYERS, "after making the layers")
        return snaps

    def _fault(
        self,
        fault: str,
        n: int,
        ctx: HookContext,
        roots: Sequence[Path],
        kill: str | None = None,
    ) -> tuple[CommandFault | FileFault, HookContext]:
        if fault == "command":
            injector = CommandFault(ctx.run, n, kill=kill is not None)
            return injector, dataclasses.replace(ctx, run=injector)
        return FileFault(n, roots, kill=kill), ctx

    def _kill_steps(self, fault: str) -> Iterator[tuple[int, str]]:
        """The kill points to try, in order: before each command (``fault=command``), or
        before and after each file operation (``fault=file``)."""
        if not self.kill_faults:
            pytest.skip(f"the kill variant is off ({type(self).__name__}.kill_faults = False)")
        for n in range(1, self.max_fault_steps + 1):
            yield n, "before"
            if fault == "file":
                yield n, "after"

    def _killed(
        self,
        hook: str,
        fault: str,
        n: int,
        when: str,
        ctx: HookContext,
        roots: Sequence[Path],
        call: Callable[..., object],
    ) -> ChildOutcome:
        """Run ``call(ctx=ctx)`` in a child process (:func:`call_in_child`) with a kill fault at
        step *n* (*when*: before or after it)."""
        injector, faulty_ctx = self._fault(fault, n, ctx, roots, kill=when)

        def step() -> object:
            with injector.active():
                return call(ctx=faulty_ctx)

        outcome = call_in_child(step)
        if outcome.error is not None:
            pytest.fail(
                f"{hook} raised with nothing injected but a kill at step {n} (in a child "
                f"process):\n{outcome.error}"
            )
        return outcome

    def _recovered(
        self, plugins: Plugins, ctx: HookContext, known: Sequence[DiskSnapshot], when: str
    ) -> None:
        """What snapcore's recovery does after it has finished or undone the operation a
        crash cut short: ``disk_repair``, then ``disk_verify``, which must find nothing."""
        backend, disk = self._backend(plugins), ctx.domain.disks[0]
        backend.disk_repair(disk=disk, known=known, ctx=ctx)
        problems = backend.disk_verify(disk=disk, known=known, ctx=ctx)
        assert not problems, f"{when}: disk_verify finds {problems}"

    def _backend(self, plugins: Plugins) -> StorageBackend:
        """The backend under test, called through snapcore's plugin boundary, which checks
        every result's type (a wrong one raises :class:`~snapcore.errors.PluginContractError`)."""
        return plugins.storage(self.driver)

    def _check(self, plugins: Plugins, ctx: HookContext, request: SnapshotRequest) -> list[str]:
        return self._backend(plugins).disk_snapshot_create_check(request=request, ctx=ctx)

    def _create(self, plugins: Plugins, ctx: HookContext, request: SnapshotRequest) -> DiskSnapshot:
        blockers = self._check(plugins, ctx, request)
        assert blockers == [], f"disk_snapshot_create_check blocks {request.name!r}: {blockers}"
        snap = self._backend(plugins).disk_snapshot_create(request=request, ctx=ctx)
        assert snap.driver == self.driver, f"snapshot driver is {snap.driver!r}"
        assert snap.vdev == request.disk.vdev, f"snapshot vdev is {snap.vdev!r}"
        assert snap.name == request.name, f"snapshot name is {snap.name!r}"
        if request.kind is not None:
            assert snap.kind is request.kind, f"asked for {request.kind}, made {snap.kind}"
        return snap

    def _list(self, plugins: Plugins, ctx: HookContext, *known: DiskSnapshot) -> list[DiskSnapshot]:
        disk = ctx.domain.disks[0]
        return self._backend(plugins).disk_snapshot_list(disk=disk, known=known, ctx=ctx)

    def _assert_listed(
        self, plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, when: str
    ) -> None:
        listed = self._list(plugins, ctx, snap)
        assert is_listed(snap, listed), f"{when}: snapshot {snap.name!r} is not listed: {listed}"

    def _assert_gone(
        self, plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, when: str
    ) -> None:
        listed = self._list(plugins, ctx, snap)
        assert not is_listed(snap, listed), f"{when}: snapshot {snap.name!r} is still listed"

    def _revert(
        self,
        plugins: Plugins,
        ctx: HookContext,
        snap: DiskSnapshot,
        others: Sequence[DiskSnapshot] = (),
    ) -> None:
        backend, disk = self._backend(plugins), ctx.domain.disks[0]
        blockers = backend.disk_snapshot_revert_check(
            snapshot=snap, disk=disk, others=others, ctx=ctx
        )
        assert blockers == [], f"disk_snapshot_revert_check blocks {snap.name!r}: {blockers!r}"
        backend.disk_snapshot_revert(snapshot=snap, disk=disk, others=others, ctx=ctx)

    def _delete(
        self,
        plugins: Plugins,
        ctx: HookContext,
        snap: DiskSnapshot,
        others: Sequence[DiskSnapshot] = (),
    ) -> None:
        backend, disk = self._backend(plugins), ctx.domain.disks[0]
        blockers = backend.disk_snapshot_delete_check(
            snapshot=snap, disk=disk, others=others, ctx=ctx
        )
        assert blockers == [], f"disk_snapshot_delete_check blocks {snap.name!r}: {blockers!r}"
        backend.disk_snapshot_delete(snapshot=snap, disk=disk, others=others, ctx=ctx)

    def _assert_create_undone(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        request: SnapshotRequest,
        created: DiskSnapshot | None,
        roots: Sequence[Path],
        files_before: set[str],
        when: str,
    ) -> None:
        """After a create that failed (or was killed) and its undo: the disk holds its data
        from before, the snapshot is not listed, and no file was left under *roots*."""
        self._expect(disk, "before", when)
        listed = self._list(plugins, ctx, *([created] if created else []))
        assert request.name not in [s.name for s in listed], f"{when}: it is listed"
        left = sorted(set(tree_state(*roots)) - files_before)
        assert not left, f"{when}: files are left behind: {left}"

    # -- the tests ------------------------------------------------------------------------------

    def test_backend_info(self, plugins: Plugins) -> None:
        """backend_info reports this driver, available, with its default kind among its kinds."""
        drivers = plugins.drivers
        assert self.driver in drivers, (
            f"backend_info reports drivers {sorted(drivers)}, not {self.driver!r}"
        )
        info = drivers[self.driver]
        assert isinstance(info, BackendInfo)
        assert info.available, f"the backend is unavailable: {info.unavailable_reason}"
        assert info.kinds, "backend_info lists no snapshot kinds"
        assert info.default_kind in info.kinds, (
            f"default_kind {info.default_kind} is not one of {sorted(info.kinds)}"
        )
        if self.kinds is not None:
            missing = set(self.kinds) - info.kinds
            assert not missing, f"kinds to test {sorted(missing)} are not in backend_info"

    def test_create_check_passes_on_fresh_disk(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """A fresh disk has no blockers, and checking changes nothing."""
        self._fill(disk, "fresh")
        request = self.make_request(disk, "c1", kind, disk_dir)
        roots = self.watched_paths(disk, disk_dir, ctx)
        before = tree_state(*roots)
        blockers = self._check(plugins, ctx, request)
        assert blockers == [], f"a fresh disk is blocked: {blockers}"
        changes = tree_changes(before, tree_state(*roots))
        assert not changes, f"disk_snapshot_create_check changed files: {'; '.join(changes)}"
        self._expect(disk, "fresh", "after disk_snapshot_create_check")
        assert self._list(plugins, ctx) == [], "a fresh disk lists snapshots after a check"

    def test_create_then_list(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """A snapshot just made is listed, and making it does not change the disk's data."""
        self._fill(disk, "before")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._expect(disk, "before", "after disk_snapshot_create")
        self._assert_listed(plugins, ctx, snap, "after disk_snapshot_create")

    def test_revert_restores_snapshot(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """Data written after a snapshot is gone after reverting to it; the snapshot stays."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "later")
        self._expect(disk, "later", "after writing past the snapshot")
        self._revert(plugins, ctx, snap)
        self._expect(disk, "snap", "after disk_snapshot_revert")
        self._assert_listed(plugins, ctx, snap, "after disk_snapshot_revert")

    def test_revert_older_then_newer(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        info: BackendInfo,
    ) -> None:
        """With two snapshots, reverting to either restores its data and keeps both."""
        if not info.revert_any:
            pytest.skip(f"{self.driver} reverts only to the latest snapshot (revert_any=False)")
        self._fill(disk, "old")
        old = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "new")
        new = self._create(plugins, ctx, self.make_request(disk, "c2", kind, disk_dir))
        self._fill(disk, "current")
        self._revert(plugins, ctx, old, others=[new])
        self._expect(disk, "old", "after reverting to the older snapshot")
        self._assert_listed(plugins, ctx, old, "after reverting to the older snapshot")
        self._assert_listed(plugins, ctx, new, "after reverting to the older snapshot")
        self._revert(plugins, ctx, new, others=[old])
        self._expect(disk, "new", "after reverting to the newer snapshot")
        self._assert_listed(plugins, ctx, old, "after reverting to the newer snapshot")
        self._assert_listed(plugins, ctx, new, "after reverting to the newer snapshot")

    def test_delete_older_keeps_newer(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """Deleting the older of two snapshots loses neither the newer one nor the current data;
        a deleted snapshot cannot be reverted to."""
        self._fill(disk, "old")
        old = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "new")
        new = self._create(plugins, ctx, self.make_request(disk, "c2", kind, disk_dir))
        self._fill(disk, "current")
        self._delete(plugins, ctx, old, others=[new])
        self._expect(disk, "current", "after deleting the older snapshot")
        self._assert_gone(plugins, ctx, old, "after deleting it")
        self._assert_listed(plugins, ctx, new, "after deleting the older snapshot")
        blockers = self._backend(plugins).disk_snapshot_revert_check(
            snapshot=old, disk=disk, others=[new], ctx=ctx
        )
        assert blockers, "disk_snapshot_revert_check allows reverting to a deleted snapshot"
        self._revert(plugins, ctx, new)
        self._expect(disk, "new", "after reverting to the newer snapshot")

    def test_delete_is_idempotent(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """Deleting a snapshot twice succeeds twice and leaves the disk's data alone."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "current")
        self._delete(plugins, ctx, snap)
        self._assert_gone(plugins, ctx, snap, "after disk_snapshot_delete")
        # a second delete must succeed (the boundary refuses anything but True)
        self._backend(plugins).disk_snapshot_delete(snapshot=snap, disk=disk, others=[], ctx=ctx)
        self._expect(disk, "current", "after deleting the snapshot twice")
        self._assert_gone(plugins, ctx, snap, "after deleting it twice")

    def test_abort_after_create(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """Aborting a finished create removes the snapshot and keeps the data from before."""
        self._fill(disk, "before")
        request = self.make_request(disk, "c1", kind, disk_dir)
        snap = self._create(plugins, ctx, request)
        backend = self._backend(plugins)
        backend.disk_snapshot_abort(request=request, created=snap, ctx=ctx)
        self._expect(disk, "before", "after disk_snapshot_abort")
        self._assert_gone(plugins, ctx, snap, "after disk_snapshot_abort")
        backend.disk_snapshot_abort(request=request, created=snap, ctx=ctx)
        self._expect(disk, "before", "after a second disk_snapshot_abort")

    def test_abort_without_create(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """Aborting a create that never ran succeeds and touches nothing: not the data, not
        another snapshot of the disk."""
        self._fill(disk, "kept")
        kept = self._create(plugins, ctx, self.make_request(disk, "c0", kind, disk_dir))
        self._fill(disk, "current")
        request = self.make_request(disk, "c1", kind, disk_dir)
        self._backend(plugins).disk_snapshot_abort(request=request, created=None, ctx=ctx)
        self._expect(disk, "current", "after aborting a create that never ran")
        listed = self._list(plugins, ctx, kept)
        assert is_listed(kept, listed), "aborting another create removed an existing snapshot"
        assert [s.name for s in listed if s.name == "c1"] == [], f"c1 appeared: {listed}"
        self._revert(plugins, ctx, kept)
        self._expect(disk, "kept", "after reverting to a snapshot made before the abort")

    # -- layers: every delete keeps every other layer -------------------------------------------

    @pytest.mark.parametrize("victim", range(LAYERS), ids=["oldest", "middle", "newest"])
    def test_delete_one_layer_keeps_the_others(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        info: BackendInfo,
        victim: int,
    ) -> None:
        """Three snapshots, each made after writing a block of its own (block k for s{k}, at
        ``k * BLOCK``): deleting any one of them keeps every block of the current data (a
        block written before the deleted snapshot must still read back, from whatever layer
        now holds it) and every block of the other snapshots (reverted to, newest first)."""
        snaps = self._build_layers(plugins, ctx, disk, kind, disk_dir)
        rest = [s for k, s in enumerate(snaps) if k != victim]
        self._delete(plugins, ctx, snaps[victim], others=rest)
        when = f"after deleting snapshot s{victim} of s0..s{LAYERS - 1}"
        self._expect_blocks(disk, _CURRENT_LAYERS, when)
        self._assert_gone(plugins, ctx, snaps[victim], when)
        for snap in rest:
            self._assert_listed(plugins, ctx, snap, when)
        kept = [k for k in range(LAYERS) if k != victim]
        for k in reversed(kept):
            if not info.revert_any and k != kept[-1]:
                continue
            others = [s for s in rest if s is not snaps[k]]
            self._revert(plugins, ctx, snaps[k], others=others)
            self._expect_blocks(disk, _layer_tags(k), f"{when}, then reverting to s{k}")

    def test_delete_every_layer_in_turn(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """Deleting three layered snapshots one after another (middle, oldest, newest) keeps
        every block of the current data after every delete."""
        snaps = self._build_layers(plugins, ctx, disk, kind, disk_dir)
        remaining = list(snaps)
        for k in (1, 0, 2):
            remaining.remove(snaps[k])
            self._delete(plugins, ctx, snaps[k], others=remaining)
            when = f"after deleting s{k} (left: {[s.name for s in remaining]})"
            self._expect_blocks(disk, _CURRENT_LAYERS, when)
            self._assert_gone(plugins, ctx, snaps[k], when)
            for snap in remaining:
                self._assert_listed(plugins, ctx, snap, when)

    @pytest.mark.parametrize("then", ["write", "snapshot"])
    def test_delete_after_revert_keeps_every_branch(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        info: BackendInfo,
        then: str,
    ) -> None:
        """Snapshot s1, write, snapshot s2, revert to s1, write (and, with ``then=snapshot``,
        snapshot s3 and write again): s1 now has several dependants (s2, and the current data
        or s3). Deleting s1 keeps the current data, s2 and s3 (reverted to, to read them)."""
        if not info.revert_any:
            pytest.skip(f"{self.driver} reverts only to the latest snapshot (revert_any=False)")
        for k in range(4):
            self._put(disk, k, "base")
        self._put(disk, 0, "a")
        s1 = self._create(plugins, ctx, self.make_request(disk, "s1", kind, disk_dir))
        self._put(disk, 1, "b")
        s2 = self._create(plugins, ctx, self.make_request(disk, "s2", kind, disk_dir))
        self._revert(plugins, ctx, s1, others=[s2])
        self._expect_blocks(disk, ["a", "base", "base", "base"], "after reverting to s1")
        self._put(disk, 2, "c")
        later = [s2]
        if then == "snapshot":
            later.append(self._create(plugins, ctx, self.make_request(disk, "s3", kind, disk_dir)))
            self._put(disk, 3, "d")
        self._delete(plugins, ctx, s1, others=later)
        when = f"after deleting s1 (on which {[s.name for s in later]} and the disk were made)"
        self._expect_blocks(disk, ["a", "base", "c", "d" if then == "snapshot" else "base"], when)
        self._assert_gone(plugins, ctx, s1, when)
        for snap in later:
            self._assert_listed(plugins, ctx, snap, when)
        if then == "snapshot":
            self._revert(plugins, ctx, later[1], others=[s2])
            self._expect_blocks(disk, ["a", "base", "c", "base"], f"{when}, then reverting to s3")
        self._revert(plugins, ctx, s2, others=later[1:])
        self._expect_blocks(disk, ["a", "b", "base", "base"], f"{when}, then reverting to s2")

    # -- checks change nothing ------------------------------------------------------------------

    def test_looking_changes_nothing(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
    ) -> None:
        """The hooks that only look (the create, delete and revert checks, plan, list, claim)
        change no file: every file under :meth:`watched_paths` has the same content, mode and
        modification time afterwards, and no file or directory was added or removed."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "current")
        backend = self._backend(plugins)
        request = self.make_request(disk, "c2", kind, disk_dir)
        unclaimed = Disk(vdev=disk.vdev, path=disk.path, options=disk.options)
        looks: list[tuple[str, Callable[[], object]]] = [
            ("disk_snapshot_create_check", lambda: self._check(plugins, ctx, request)),
            ("disk_snapshot_plan", lambda: backend.disk_snapshot_plan(request=request, ctx=ctx)),
            (
                "disk_snapshot_delete_check",
                lambda: backend.disk_snapshot_delete_check(snapshot=snap, disk=disk, ctx=ctx),
            ),
            (
                "disk_snapshot_revert_check",
                lambda: backend.disk_snapshot_revert_check(snapshot=snap, disk=disk, ctx=ctx),
            ),
            ("disk_snapshot_list", lambda: self._list(plugins, ctx, snap)),
            ("disk_claim", lambda: backend.disk_claim(unclaimed)),
        ]
        roots = self.watched_paths(disk, disk_dir, ctx)
        for hook, look in looks:
            before = tree_state(*roots)
            look()
            changes = tree_changes(before, tree_state(*roots))
            assert not changes, f"{hook} changed files: {'; '.join(changes)}"
        self._expect(disk, "current", "after the checks")

    def test_create_check_refuses_an_existing_target(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """An external snapshot whose target already exists is blocked by the create check,
        which leaves that file alone."""
        if kind is not SnapshotKind.EXTERNAL:
            pytest.skip(f"{kind.value} snapshots have no target")
        request = self.make_request(disk, "c1", kind, disk_dir)
        if request.target is None:
            pytest.skip("make_request gives external snapshots no target")
        target = Path(request.target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"someone else's file, not a snapshot\n")
        roots = [*self.watched_paths(disk, disk_dir, ctx), target.parent]
        before = tree_state(*roots)
        blockers = self._check(plugins, ctx, request)
        assert blockers, f"disk_snapshot_create_check allows a snapshot into existing {target}"
        changes = tree_changes(before, tree_state(*roots))
        assert not changes, f"disk_snapshot_create_check changed files: {'; '.join(changes)}"

    def test_list_reports_a_broken_chain(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """With a layer of its backing chain gone (:meth:`break_chain`), the list hook raises a
        :class:`~snapcore.errors.BackendError` saying what is broken: not another exception,
        and not a list as if all were well."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "current")
        self.break_chain(disk, snap)
        try:
            listed = self._list(plugins, ctx, snap)
        except PluginContractError as exc:
            pytest.fail(f"disk_snapshot_list on a broken chain broke the hook contract: {exc}")
        except BackendError:
            return
        pytest.fail(
            f"disk_snapshot_list on a broken chain returned {listed} instead of raising "
            "a BackendError that says what is broken"
        )

    def test_create_check_blocks_a_broken_chain(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """With a layer of its backing chain gone (:meth:`break_chain`), the create check lists
        a blocker (and raises nothing)."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "current")
        self.break_chain(disk, snap)
        request = self.make_request(disk, "c2", kind, disk_dir)
        try:
            blockers = self._check(plugins, ctx, request)
        except SnapcoreError as exc:
            pytest.fail(f"disk_snapshot_create_check raised on a broken chain: {exc!r}")
        assert blockers, "disk_snapshot_create_check finds nothing wrong with a broken chain"

    # -- claims ---------------------------------------------------------------------------------

    def test_claims_only_its_own_format(
        self, plugins: Plugins, tmp_path: Path, disk: Disk, ctx: HookContext
    ) -> None:
        """``disk_claim`` claims none of the samples of :func:`make_samples` but its own
        (:attr:`own_samples`), answers ``None`` or its driver, and changes no sample."""
        own = set(self.own_samples if self.own_samples is not None else {self.driver})
        samples = make_samples(tmp_path / "samples")
        backend = self._backend(plugins)
        before = tree_state(tmp_path / "samples")
        claimed = []
        for kind, path in samples.items():
            try:
                if backend.disk_claim(Disk(vdev="vdz", path=str(path))):
                    claimed.append(kind)
            except PluginContractError as exc:
                pytest.fail(f"disk_claim of a {kind} sample: {exc}")
        foreign = sorted(set(claimed) - own)
        assert not foreign, (
            f"disk_claim claims files of other formats: {foreign} (own formats: {sorted(own)})"
        )
        changes = tree_changes(before, tree_state(tmp_path / "samples"))
        assert not changes, f"disk_claim changed files: {'; '.join(changes)}"

    # -- fault injection ------------------------------------------------------------------------

    @pytest.mark.parametrize("fault", ["command", "file"])
    def test_failed_create_leaves_nothing(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        fault: str,
    ) -> None:
        """Make the create fail at its first external command (``fault=command``: a
        :class:`CommandFault` in ``ctx.run``) or file operation (``fault=file``: a
        :class:`FileFault` under :meth:`watched_paths`), then at its second, and so on until it
        finishes without reaching the failure. After each failure and the abort that snapcore
        then calls, the disk holds its data from before, the snapshot is not listed and no
        file is left behind."""
        self._fill(disk, "before")
        backend = self._backend(plugins)
        request = self.make_request(disk, "c1", kind, disk_dir)
        roots = self.watched_paths(disk, disk_dir, ctx)
        assert self._check(plugins, ctx, request) == []
        files_before = set(tree_state(*roots))
        for n in range(1, self.max_fault_steps + 1):
            injector, faulty_ctx = self._fault(fault, n, ctx, roots)
            created: DiskSnapshot | None = None
            try:
                with injector.active():
                    created = backend.disk_snapshot_create(request=request, ctx=faulty_ctx)
            except PluginContractError:
                raise
            except SnapcoreError:
                if injector.fired is None:
                    raise
            if injector.fired is None:
                assert created is not None
                self._expect(disk, "before", "after disk_snapshot_create")
                self._assert_listed(plugins, ctx, created, "after disk_snapshot_create")
                return
            when = f"after {injector.fired} failed in disk_snapshot_create and the abort"
            backend.disk_snapshot_abort(request=request, created=created, ctx=ctx)
            self._assert_create_undone(
                plugins, ctx, disk, request, created, roots, files_before, when
            )
        pytest.fail(f"disk_snapshot_create took more than {self.max_fault_steps} steps")

    @pytest.mark.parametrize("fault", ["command", "file"])
    def test_failed_revert_is_all_or_nothing(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        fault: str,
    ) -> None:
        """Make the revert fail at each of its external commands or file operations in turn
        (as :meth:`test_failed_create_leaves_nothing` does). After each failure the disk holds
        either its data from before or the snapshot's, never a mix and never nothing; the
        snapshot is still listed, and the revert run again (as recovery does) succeeds."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "current")
        backend = self._backend(plugins)
        roots = self.watched_paths(disk, disk_dir, ctx)
        for n in range(1, self.max_fault_steps + 1):
            injector, faulty_ctx = self._fault(fault, n, ctx, roots)
            try:
                with injector.active():
                    backend.disk_snapshot_revert(
                        snapshot=snap, disk=disk, others=[], ctx=faulty_ctx
                    )
            except PluginContractError:
                raise
            except SnapcoreError:
                if injector.fired is None:
                    raise
                when = f"after {injector.fired} failed in disk_snapshot_revert"
                held = self._holds(disk, ["current", "snap"], when)
                assert held is not None, (
                    f"{when}: the disk holds neither its data from before nor the snapshot's"
                )
                self._assert_listed(plugins, ctx, snap, when)
                self._revert(plugins, ctx, snap)
                when += ", then the revert again"
            else:
                when = "after disk_snapshot_revert"
            self._expect(disk, "snap", when)
            self._assert_listed(plugins, ctx, snap, when)
            if injector.fired is None:
                return
            self._fill(disk, "current")
        pytest.fail(f"disk_snapshot_revert took more than {self.max_fault_steps} steps")

    @pytest.mark.parametrize("fault", ["command", "file"])
    def test_killed_create_leaves_nothing(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        fault: str,
    ) -> None:
        """Run the create in a child process (:func:`call_in_child`) that is killed with
        SIGKILL just before its first external command (``fault=command``), or just before
        and then just after its first file operation under :meth:`watched_paths`
        (``fault=file``; writes through the built-in ``open`` count too), then at the second,
        and so on until it finishes without reaching the kill. After each kill, what snapcore's
        crash recovery does: ``disk_snapshot_abort`` with ``created=None`` and
        ``prepared=None``, then ``disk_repair``, and ``disk_verify`` must find nothing. Then the
        disk holds its data from before, the snapshot is not listed and no file is left behind.
        The create that finishes in the child has made a snapshot this process lists."""
        self._fill(disk, "before")
        backend = self._backend(plugins)
        request = self.make_request(disk, "c1", kind, disk_dir)
        roots = self.watched_paths(disk, disk_dir, ctx)
        assert self._check(plugins, ctx, request) == []
        files_before = set(tree_state(*roots))
        create = functools.partial(backend.disk_snapshot_create, request=request)
        for n, point in self._kill_steps(fault):
            outcome = self._killed("disk_snapshot_create", fault, n, point, ctx, roots, create)
            if outcome.killed is None:
                when = "after disk_snapshot_create in a child process"
                assert isinstance(outcome.value, DiskSnapshot), f"{when}: {outcome.value!r}"
                self._expect(disk, "before", when)
                self._assert_listed(plugins, ctx, outcome.value, when)
                return
            when = f"after a kill {outcome.killed} in disk_snapshot_create and the recovery"
            backend.disk_snapshot_abort(request=request, created=None, prepared=None, ctx=ctx)
            self._recovered(plugins, ctx, [], when)
            self._assert_create_undone(plugins, ctx, disk, request, None, roots, files_before, when)
        pytest.fail(f"disk_snapshot_create took more than {self.max_fault_steps} steps")

    @pytest.mark.parametrize("fault", ["command", "file"])
    def test_killed_revert_is_all_or_nothing(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        disk_dir: Path,
        fault: str,
    ) -> None:
        """Run the revert in a child process killed at each of its commands or file
        operations in turn (as :meth:`test_killed_create_leaves_nothing` does). After each
        kill the disk holds either its data from before or the snapshot's, never a mix and
        never nothing; then, as snapcore's recovery does, the revert is run again (no check
        first), ``disk_repair`` runs and ``disk_verify`` finds nothing, and the disk holds the
        snapshot's data, which is still listed."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, disk_dir))
        self._fill(disk, "current")
        backend = self._backend(plugins)
        roots = self.watched_paths(disk, disk_dir, ctx)
        revert = functools.partial(backend.disk_snapshot_revert, snapshot=snap, disk=disk)
        for n, point in self._kill_steps(fault):
            outcome = self._killed("disk_snapshot_revert", fault, n, point, ctx, roots, revert)
            if outcome.killed is None:
                when = "after disk_snapshot_revert in a child process"
                self._expect(disk, "snap", when)
                self._assert_listed(plugins, ctx, snap, when)
                return
            when = f"after a kill {outcome.killed} in disk_snapshot_revert"
            held = self._holds(disk, ["current", "snap"], when)
            assert held is not None, (
                f"{when}: the disk holds neither its data from before nor the snapshot's"
            )
            revert(ctx=ctx)
            when += ", then the revert again (as recovery runs it)"
            self._recovered(plugins, ctx, [snap], when)
            self._expect(disk, "snap", when)
            self._assert_listed(plugins, ctx, snap, when)
            self._fill(disk, "current")
        pytest.fail(f"disk_snapshot_revert took more than {self.max_fault_steps} steps")

    def _layers_for_step(
        self, plugins: Plugins, ctx: HookContext, kind: SnapshotKind, disk_dir: Path, step: str
    ) -> tuple[HookContext, list[DiskSnapshot], list[Path]]:
        """A fresh disk of its own for one step of the delete fault tests, with the layers of
        :meth:`_build_layers`: the context of a domain holding it, the snapshots, and the
        paths to watch."""
        step_dir = disk_dir / step
        step_dir.mkdir()
        disk = self.make_disk(step_dir, ctx.domain.disks[0].vdev, self.disk_size)
        step_ctx = dataclasses.replace(ctx, domain=dataclasses.replace(ctx.domain, disks=(disk,)))
        snaps = self._build_layers(plugins, step_ctx, disk, kind, step_dir, verify=False)
        return step_ctx, snaps, self.watched_paths(disk, step_dir, step_ctx)

    def _expect_middle_deleted(
        self, plugins: Plugins, ctx: HookContext, snaps: Sequence[DiskSnapshot], when: str
    ) -> None:
        """After deleting s1 of :meth:`_build_layers`: every block of the current data reads
        back, s1 is gone, s0 and s2 are listed, and s2 (reverted to) holds its blocks, among
        them those it read from s1."""
        disk = ctx.domain.disks[0]
        self._expect_blocks(disk, _CURRENT_LAYERS, when)
        listed = self._list(plugins, ctx, *snaps)
        assert not is_listed(snaps[1], listed), f"{when}: snapshot 's1' is still listed"
        for snap in (snaps[0], snaps[2]):
            assert is_listed(snap, listed), f"{when}: snapshot {snap.name!r} is not listed"
        self._revert(plugins, ctx, snaps[2], others=[snaps[0]])
        self._expect_blocks(disk, _layer_tags(2), f"{when}, then reverting to s2")

    @pytest.mark.parametrize("fault", ["command", "file"])
    def test_failed_delete_keeps_every_other_layer(
        self,
        plugins: Plugins,
        ctx: HookContext,
        kind: SnapshotKind,
        disk_dir: Path,
        fault: str,
    ) -> None:
        """Delete the middle one of three layered snapshots (:meth:`_build_layers`, on a
        fresh disk for each step), failing its first external command or file operation, then
        its second, and so on (as :meth:`test_failed_create_leaves_nothing` does). After each
        failure every block of the disk's current data still reads back and the other two
        snapshots are listed; the delete run again (check, then delete, as a user's second
        ``snapshot-delete`` does) succeeds. Then s1 is gone, the current data and s0 and s2
        are listed, and s2, reverted to, holds every block it had."""
        backend = self._backend(plugins)
        for n in range(1, self.max_fault_steps + 1):
            step_ctx, snaps, roots = self._layers_for_step(plugins, ctx, kind, disk_dir, f"step{n}")
            disk, victim, rest = step_ctx.domain.disks[0], snaps[1], [snaps[0], snaps[2]]
            blockers = backend.disk_snapshot_delete_check(
                snapshot=victim, disk=disk, others=rest, ctx=step_ctx
            )
            assert blockers == [], f"disk_snapshot_delete_check blocks s1: {blockers!r}"
            injector, faulty_ctx = self._fault(fault, n, step_ctx, roots)
            try:
                with injector.active():
                    backend.disk_snapshot_delete(
                        snapshot=victim, disk=disk, others=rest, ctx=faulty_ctx
                    )
            except PluginContractError:
                raise
            except SnapcoreError:
                if injector.fired is None:
                    raise
                when = f"after {injector.fired} failed in disk_snapshot_delete of s1"
                self._expect_blocks(disk, _CURRENT_LAYERS, when)
                for snap in rest:
                    self._assert_listed(plugins, step_ctx, snap, when)
                self._delete(plugins, step_ctx, victim, others=rest)
                when += ", then the delete again"
            else:
                when = "after disk_snapshot_delete of s1"
            self._expect_middle_deleted(plugins, step_ctx, snaps, when)
            if injector.fired is None:
                return
        pytest.fail(f"disk_snapshot_delete took more than {self.max_fault_steps} steps")

    @pytest.mark.parametrize("fault", ["command", "file"])
    def test_killed_delete_keeps_every_other_layer(
        self,
        plugins: Plugins,
        ctx: HookContext,
        kind: SnapshotKind,
        disk_dir: Path,
        fault: str,
    ) -> None:
        """Delete the middle one of three layered snapshots in a child process killed at each
        of its commands or file operations in turn (as
        :meth:`test_killed_create_leaves_nothing` does; a fresh disk for each step). After
        each kill every block of the disk's current data still reads back; then, as snapcore's
        recovery does, the delete is run again (no check first), ``disk_repair`` runs and
        ``disk_verify`` finds nothing. Then s1 is gone, the current data and s0 and s2 are
        as in :meth:`test_failed_delete_keeps_every_other_layer`."""
        backend = self._backend(plugins)
        for n, point in self._kill_steps(fault):
            step_ctx, snaps, roots = self._layers_for_step(
                plugins, ctx, kind, disk_dir, f"step{n}-{point}"
            )
            disk, rest = step_ctx.domain.disks[0], [snaps[0], snaps[2]]
            delete = functools.partial(
                backend.disk_snapshot_delete, snapshot=snaps[1], disk=disk, others=rest
            )
            outcome = self._killed("disk_snapshot_delete", fault, n, point, step_ctx, roots, delete)
            if outcome.killed is None:
                when = "after disk_snapshot_delete of s1 in a child process"
                self._expect_middle_deleted(plugins, step_ctx, snaps, when)
                return
            when = f"after a kill {outcome.killed} in disk_snapshot_delete of s1"
            self._expect_blocks(disk, _CURRENT_LAYERS, when)
            delete(ctx=step_ctx)
            when += ", then the delete again (as recovery runs it)"
            self._recovered(plugins, step_ctx, rest, when)
            self._expect_middle_deleted(plugins, step_ctx, snaps, when)
        pytest.fail(f"disk_snapshot_delete took more than {self.max_fault_steps} steps")

    # -- results --------------------------------------------------------------------------------

    def test_every_hook_answers_in_its_type(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, disk_dir: Path
    ) -> None:
        """Each hook, called once the way the coordinator calls it (prepare and group create
        first, one create when the group call declines), answers with the type its spec
        declares: snapcore's boundary raises no :class:`~snapcore.errors.PluginContractError`."""
        backend = self._backend(plugins)
        request = self.make_request(disk, "c1", kind, disk_dir)
        try:
            backend.backend_info(InfoContext(run=ctx.run))
            backend.disk_claim(Disk(vdev=disk.vdev, path=disk.path, options=disk.options))
            backend.disk_snapshot_create_check(request=request, ctx=ctx)
            backend.disk_snapshot_plan(request=request, ctx=ctx)
            backend.disk_snapshot_prepare_group(requests=[request], ctx=ctx)
            group = backend.disk_snapshot_create_group(requests=[request], ctx=ctx)
            snap = group[0] if group else backend.disk_snapshot_create(request=request, ctx=ctx)
            backend.disk_snapshot_list(disk=disk, known=[snap], ctx=ctx)
            backend.disk_snapshot_revert_check(snapshot=snap, disk=disk, ctx=ctx)
            backend.disk_snapshot_revert(snapshot=snap, disk=disk, ctx=ctx)
            backend.disk_snapshot_delete_check(snapshot=snap, disk=disk, ctx=ctx)
            backend.disk_snapshot_delete(snapshot=snap, disk=disk, ctx=ctx)
            never = self.make_request(disk, "c2", kind, disk_dir)
            backend.disk_snapshot_abort(request=never, created=None, ctx=ctx)
        except PluginContractError as exc:
            pytest.fail(f"a hook broke its contract: {exc}")


# --------------------------------------------------------------------------------------------
# pytest --snapcore-driver=NAME: the suite against an installed plugin, no test module needed
# --------------------------------------------------------------------------------------------


class InstalledBackendConformance(BackendConformance):
    """The suite against an installed plugin, for ``pytest --snapcore-driver=NAME``.

    Its disks are plain files of zeros named ``vda.<suffix>`` (``--snapcore-disk-suffix``,
    default ``raw``), read and written directly: the guest's bytes are the file's bytes. So it
    fits backends of raw image files (as the rawcopy example); a backend whose disks have a
    format of their own (qcow2, VMDK, LVM volumes) needs a subclass of
    :class:`BackendConformance` that knows how to make, read and write them.
    """

    #: The file name suffix of the disks.
    suffix: ClassVar[str] = "raw"

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        path = tmp_path / f"{vdev}.{self.suffix}"
        with path.open("wb") as f:
            f.truncate(size)
        return Disk(vdev=vdev, path=str(path), driver=self.driver)

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        with open(disk.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        with open(disk.path, "rb") as f:
            f.seek(offset)
            return f.read(length)


#: The name of the test class ``--snapcore-driver`` adds to this module while pytest runs.
INSTALLED_TEST_CLASS: Final = "TestInstalledBackend"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--snapcore-driver`` and ``--snapcore-disk-suffix``."""
    group = parser.getgroup("snapcore", "snapcore conformance suite")
    group.addoption(
        "--snapcore-driver",
        metavar="NAME",
        default=None,
        help="run snapcore's conformance suite against the installed plugin providing NAME "
        "(disks are raw files: see snapcore.testing.InstalledBackendConformance)",
    )
    group.addoption(
        "--snapcore-disk-suffix",
        metavar="EXT",
        default="raw",
        help="file name suffix of the disks --snapcore-driver makes (default: raw)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """With ``--snapcore-driver``: load the installed plugins through their entry points, add
    a test class for that driver's plugin to this module and this module to the paths to
    collect."""
    driver = config.getoption("snapcore_driver", None)
    if not driver:
        return
    suffix = config.getoption("snapcore_disk_suffix")
    try:
        plugins = load_plugins()
    except SnapcoreError as exc:
        raise pytest.UsageError(f"--snapcore-driver={driver}: {exc}") from exc
    if driver not in plugins.drivers:
        raise pytest.UsageError(
            f"--snapcore-driver={driver}: no installed plugin provides driver {driver!r} "
            f"(installed: {', '.join(plugins.drivers) or 'none'})"
        )
    backend = plugins.storage(driver)
    attrs = {
        "plugin": backend.plugin,
        "driver": driver,
        "suffix": suffix,
        "own_samples": frozenset({suffix}),
        "__module__": __name__,
        "__doc__": f"snapcore's conformance suite against the installed {driver!r} plugin.",
    }
    setattr(
        sys.modules[__name__],
        INSTALLED_TEST_CLASS,
        type(INSTALLED_TEST_CLASS, (InstalledBackendConformance,), attrs),
    )
    here = str(Path(__file__).resolve())
    if here not in config.args:
        config.args.append(here)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Take the test class ``--snapcore-driver`` added away again."""
    if config.getoption("snapcore_driver", None):
        with contextlib.suppress(AttributeError):
            delattr(sys.modules[__name__], INSTALLED_TEST_CLASS)
