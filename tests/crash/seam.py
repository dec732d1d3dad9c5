"""The seam: run the ``snapcore`` CLI in a child Python whose audit hook (:pep:`578`) sees every
file operation, lock and subprocess start, and can SIGKILL the process, or hold it, at the Nth.

Nothing in snapcore is changed for it: the child runs ``python -c HOOK`` with the CLI's
arguments, the hook is installed first, then ``runpy`` runs ``snapcore`` as ``__main__``. What the
hook does is set by environment variables:

``SNAPCORE_CRASH_LOG``
    a file to which each event of interest is appended as one line ``INDEX NAME DETAIL``
    (written with ``os.write`` on a descriptor opened before the hook, so it adds no event).
``SNAPCORE_CRASH_AT``
    the index of the event at which the process kills itself with SIGKILL, before the operation
    happens (events 0 .. N-1 took place, N and later did not).
``SNAPCORE_CRASH_ORPHAN``
    ``SNAPCORE_CRASH_AT`` then counts subprocess starts only (fork, Popen, posix_spawn: their
    order is fixed, where the other events of two disks' threads interleave): let the Nth
    child start, then kill only snapcore while it runs on; the child's pids are logged as
    ``orphan PID`` lines.
``SNAPCORE_CRASH_HOLD`` / ``SNAPCORE_CRASH_HOLD_AT``
    a FIFO and an event index: before that event, write ``held`` to the log and block until a
    line can be read from the FIFO.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The events counted: a file opened for writing, a rename, link, unlink, truncate, directory
#: made or removed, a lock, a subprocess start.
#: The events that start a subprocess.
SPAWNS = ("subprocess.Popen", "os.posix_spawn", "os.fork")

EVENTS = (
    "open",
    "os.rename",
    "os.link",
    "os.symlink",
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.truncate",
    "fcntl.flock",
    "fcntl.lockf",
    "subprocess.Popen",
    "os.posix_spawn",
    "os.exec",
    "os.fork",
)

HOOK = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    EVENTS = frozenset(%(events)r)
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    env = os.environ
    log_path = env.pop("SNAPCORE_CRASH_LOG", None)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if log_path else -1
    at = int(env.pop("SNAPCORE_CRASH_AT", "-1"))
    orphan = env.pop("SNAPCORE_CRASH_ORPHAN", "") == "1"
    hold = env.pop("SNAPCORE_CRASH_HOLD", None)
    hold_at = int(env.pop("SNAPCORE_CRASH_HOLD_AT", "-1"))
    SPAWNS = frozenset(("subprocess.Popen", "os.posix_spawn", "os.fork"))
    state = {"n": 0, "spawns": 0, "busy": False}
    me = os.getpid()
    guard = threading.Lock()

    def say(line):
        if log >= 0:
            os.write(log, (line + "\\n").encode(errors="replace"))

    def kill_when_child_runs():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pids = []
            for tid in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{tid}/children") as f:
                        pids += f.read().split()
                except OSError:
                    pass  # a thread that has just ended
            if pids:
                for pid in pids:
                    say(f"orphan {pid}")
                break
            time.sleep(0.0005)
        os.kill(os.getpid(), signal.SIGKILL)

    def describe(event, args):
        if event == "os.mkdir" and os.path.isdir(args[0]):
            return f"{args[0]} (exists)"
        if event == "open":
            return str(args[0])
        if event == "subprocess.Popen":
            argv = args[1]
            return " ".join(map(str, argv if isinstance(argv, (list, tuple)) else [argv]))[:200]
        return " ".join(str(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike)))

    def hook(event, args):
        if event not in EVENTS or state["busy"] or os.getpid() != me:
            return  # a forked child (sh forks, then execs) is not snapcore
        if event == "open":
            path, flags = args[0], args[2]
            if not isinstance(path, (str, bytes, os.PathLike)) or not flags & WRITE:
                return
            if str(path).startswith(("/dev/", "/proc/")):
                return
        with guard:
            n = state["n"]
            state["n"] += 1
            spawn = state["spawns"] if event in SPAWNS else -1
            state["spawns"] += event in SPAWNS
            state["busy"] = True
            try:
                say(f"{n} {event} {describe(event, args)}")
                if n == hold_at and hold:
                    say("held")
                    with open(hold) as fifo:
                        fifo.readline()
            finally:
                state["busy"] = False
        if orphan and spawn == at:
            threading.Thread(target=kill_when_child_runs, daemon=True).start()
        elif not orphan and n == at:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    import runpy
    sys.argv = ["snapcore", *sys.argv[1:]]
    runpy.run_module("snapcore", run_name="__main__", alter_sys=True)
    """
) % {"events": EVENTS}


@dataclass(frozen=True)
class Event:
    """One event of interest, as the hook logged it."""

    index: int
    name: str
    detail: str

    @property
    def noop(self) -> bool:
        """A mkdir of a directory that exists changes nothing: a kill there leaves what a kill
        at the next event leaves."""
        return self.name == "os.mkdir" and self.detail.endswith(" (exists)")

    def label(self, root: Path | None = None) -> str:
        """A short name for test ids: the event and the base name of what it touches."""
        detail = self.detail
        if root is not None:
            detail = detail.replace(str(root) + "/", "")
        word = detail.split(" ")[0] if self.name != "subprocess.Popen" else detail
        if self.name == "subprocess.Popen":
            parts = detail.split(" ")
            word = "-".join(os.path.basename(p) for p in parts[:3])
        else:
            word = os.path.basename(word)
        # the random parts of temporary names, so that ids stay the same from run to run
        word = re.sub(r"\.[a-z0-9_]{8}\.tmp\Z", ".tmp", word)
        word = re.sub(r"\.\d+-[0-9a-f]{8}\.snapcore-", ".snapcore-", word)
        return f"{self.name}:{word}"


def parse_log(path: Path) -> tuple[list[Event], list[int], bool]:
    """The events, the orphaned child pids and whether a hold was reached, from a hook log."""
    events: list[Event] = []
    orphans: list[int] = []
    held = False
    if not path.exists():
        return events, orphans, held
    for line in path.read_text().splitlines():
        if line == "held":
            held = True
        elif line.startswith("orphan "):
            orphans.append(int(line.split()[1]))
        else:
            index, name, *rest = line.split(" ", 2)
            events.append(Event(int(index), name, rest[0] if rest else ""))
    return events, orphans, held


def command(args: Sequence[str]) -> list[str]:
    """The argv that runs ``snapcore ARGS`` under the hook."""
    return [sys.executable, "-c", HOOK, *args]


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path | None = None,
    at: int | None = None,
    orphan: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``snapcore ARGS`` under the hook, logging to *log* and killed at event *at*."""
    full = dict(env)
    if log is not None:
        full["SNAPCORE_CRASH_LOG"] = str(log)
    if at is not None:
        full["SNAPCORE_CRASH_AT"] = str(at)
    if orphan:
        full["SNAPCORE_CRASH_ORPHAN"] = "1"
    return subprocess.run(
        command(args), env=full, capture_output=True, text=True, check=False, timeout=timeout
    )


def start(
    args: Sequence[str], *, env: Mapping[str, str], log: Path, hold: Path, hold_at: int
) -> subprocess.Popen[str]:
    """Start ``snapcore ARGS`` under the hook, to block before event *hold_at* until a line is
    written to the FIFO *hold* (made here); it logs ``held`` to *log* when it blocks."""
    os.mkfifo(hold)
    full = {
        **env,
        "SNAPCORE_CRASH_LOG": str(log),
        "SNAPCORE_CRASH_HOLD": str(hold),
        "SNAPCORE_CRASH_HOLD_AT": str(hold_at),
    }
    return subprocess.Popen(
        command(args), env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
