"""A typed wrapper over blktap's ``tap-ctl``: find the tapdisk serving a VHD, pause it, and
unpause it on a new leaf.

Every command runs through a :class:`~snapcore.process.CommandRunner` as an argument list.
``tap-ctl list`` prints, when its output is not a terminal, one line per tapdisk:
``pid=PID minor=MINOR state=STATE args=TYPE:PATH`` (fields it does not know are left out;
``state`` is C's ``%#x``, so ``0`` or ``0x20`` when paused). ``pause -p PID -m MINOR`` quiesces
the tapdisk and closes its image chain; ``unpause -p PID -m MINOR -a vhd:PATH`` reopens the chain
from *PATH*, the new leaf. On failure tap-ctl prints ``strerror`` on stderr and exits with the
errno, which the runner raises as :class:`~snapcore.errors.CommandError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from snapcore.errors import BackendError
from snapcore.process import CommandRunner

#: The program run; found on ``PATH``.
PROGRAM: Final = "tap-ctl"
#: ``state`` bit of a paused tapdisk.
PAUSED: Final = 0x20


@dataclass(frozen=True, slots=True, kw_only=True)
class Tapdisk:
    """One line of ``tap-ctl list``."""

    pid: int
    minor: int
    state: int
    #: the driver type (``vhd``, ``aio``)
    type: str
    path: str

    @property
    def paused(self) -> bool:
        return bool(self.state & PAUSED)

    @classmethod
    def parse(cls, line: str) -> Tapdisk | None:
        """Parse one ``list`` line; ``None`` for a line without pid, minor or args."""
        fields: dict[str, str] = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep:
                fields[key] = value
        if not {"pid", "minor", "args"} <= fields.keys():
            return None
        kind, sep, path = fields["args"].partition(":")
        if not sep:
            return None
        try:
            return cls(
                pid=int(fields["pid"]),
                minor=int(fields["minor"]),
                state=int(fields.get("state", "0"), 16),
                type=kind,
                path=path,
            )
        except ValueError:
            return None


class TapCtl:
    """The tap-ctl commands the vhd backend uses."""

    def __init__(self, run: CommandRunner, program: str = PROGRAM):
        self.run = run
        self.program = program

    def list(self, path: str | None = None) -> list[Tapdisk]:
        """``tap-ctl list [-f PATH]``: the tapdisks (serving *PATH*)."""
        argv = [self.program, "list"]
        if path is not None:
            argv += ["-f", path]
        out = self.run(argv).stdout
        return [t for t in (Tapdisk.parse(line) for line in out.splitlines()) if t is not None]

    def find(self, path: str) -> Tapdisk | None:
        """The tapdisk serving VHD *path*, looked up as given and, if different, by its real
        path; ``None`` when none does.

        :raises BackendError: when several tapdisks serve it.
        """
        wanted = [path]
        real = os.path.realpath(path)
        if real != path:
            wanted.append(real)
        for name in wanted:
            found = [t for t in self.list(name) if t.path == name]
            if len(found) > 1:
                pids = ", ".join(f"pid {t.pid} minor {t.minor}" for t in found)
                raise BackendError(f"several tapdisks serve {path} ({pids})")
            if found:
                return found[0]
        return None

    def pause(self, tap: Tapdisk) -> None:
        """``tap-ctl pause -p PID -m MINOR``."""
        self.run([self.program, "pause", "-p", str(tap.pid), "-m", str(tap.minor)])

    def unpause(self, tap: Tapdisk, path: str | None = None) -> None:
        """``tap-ctl unpause -p PID -m MINOR [-a vhd:PATH]``: reopen, on *path* if given."""
        argv = [self.program, "unpause", "-p", str(tap.pid), "-m", str(tap.minor)]
        if path is not None:
            argv += ["-a", f"{tap.type or 'vhd'}:{path}"]
        self.run(argv)
