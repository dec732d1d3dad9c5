"""A typed wrapper over blktap's ``vhd-util`` command line.

Every command runs through a :class:`~snapcore.process.CommandRunner` as an argument list. The
command lines and output formats are those of blktap 4 (``vhd/lib/vhd-util-*.c``): vhd-util
prints its results *and its errors* on stdout and exits with the errno of a failure; a
successful ``snapshot``, ``set``, ``modify`` or ``repair`` prints nothing. ``query`` prints one
line per flag asked for, always in the order ``-v -s -p -f -d`` whatever the order given.

Failure guarantee of every method: a vhd-util that fails raises
:class:`~snapcore.errors.CommandError` carrying vhd-util's message; output that cannot be
parsed raises :class:`~snapcore.errors.BackendError`. Paths are checked by the caller
(:func:`check_path`) before they reach a command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from snapcore.errors import BackendError
from snapcore.process import CommandRunner

#: The program run; found on ``PATH``.
PROGRAM: Final = "vhd-util"

_COALESCED: Final = re.compile(r"Coalesced (\d+) sectors")
_INVALID_MARK: Final = "appears invalid; dumping metadata"
#: Every exit status, so that ``check`` can read the problems vhd-util prints.
_ANY_STATUS: Final = tuple(range(256))


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryResult:
    """``vhd-util query -n PATH -v -s -p -f -d``, parsed."""

    #: ``-v``: the virtual size in MiB
    virtual_mib: int
    #: ``-s``: end of data plus the footer, in bytes
    physical_size: int
    #: ``-p``: the parent's path as blktap resolved it, or ``None`` (``... has no parent``)
    parent: str | None
    #: ``-f``: the hidden flag
    hidden: bool
    #: ``-d``: files in the chain
    depth: int


def _int(text: str, what: str, argv: list[str]) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise BackendError(f"{' '.join(argv)}: cannot read {what} from {text!r}") from None


class VhdUtil:
    """The vhd-util commands the vhd backend uses.

    :param run: the command runner (``ctx.run``).
    :param program: the vhd-util to run.
    """

    def __init__(self, run: CommandRunner, program: str = PROGRAM):
        self.run = run
        self.program = program

    def snapshot(self, child: str, parent: str) -> None:
        """``vhd-util snapshot -n CHILD -p PARENT -e``: a new empty differencing *child* over
        *parent* itself (``-e``: even when *parent* has no allocated block, where vhd-util would
        otherwise link the child to the first non-empty ancestor)."""
        self.run([self.program, "snapshot", "-n", child, "-p", parent, "-e"])

    def query(self, path: str) -> QueryResult:
        """``vhd-util query -n PATH -v -s -p -f -d``."""
        argv = [self.program, "query", "-n", path, "-v", "-s", "-p", "-f", "-d"]
        lines = self.run(argv).stdout.splitlines()
        if len(lines) < 5:
            raise BackendError(f"{' '.join(argv)}: expected 5 lines, got {lines!r}")
        parent_line = lines[2].strip()
        if parent_line == "query failed":
            raise BackendError(f"{PROGRAM} cannot resolve the parent of {path}")
        parent = None if parent_line.endswith(" has no parent") else parent_line
        hidden = lines[3].strip()
        depth = lines[4].strip()
        if not hidden.startswith("hidden: ") or not depth.startswith("chain depth: "):
            raise BackendError(f"{' '.join(argv)}: unexpected output {lines!r}")
        return QueryResult(
            virtual_mib=_int(lines[0], "the virtual size", argv),
            physical_size=_int(lines[1], "the physical size", argv),
            parent=parent,
            hidden=_int(hidden.removeprefix("hidden: "), "the hidden flag", argv) != 0,
            depth=_int(depth.removeprefix("chain depth: "), "the chain depth", argv),
        )

    def coalesce(self, child: str) -> int:
        """``vhd-util coalesce -n CHILD``: *child*'s sectors into its parent; the count."""
        argv = [self.program, "coalesce", "-n", child]
        out = self.run(argv, timeout=None).stdout
        match = _COALESCED.search(out)
        if match is None:
            raise BackendError(f"{' '.join(argv)}: unexpected output {out!r}")
        return int(match.group(1))

    def set_hidden(self, path: str, hidden: bool) -> None:
        """``vhd-util set -n PATH -f hidden -v 0|1``."""
        self.run([self.program, "set", "-n", path, "-f", "hidden", "-v", "1" if hidden else "0"])

    def set_parent(self, child: str, parent: str) -> None:
        """``vhd-util modify -n CHILD -p PARENT``: relink *child* to *parent*."""
        self.run([self.program, "modify", "-n", child, "-p", parent])

    def check(self, path: str, *, parents: bool = False) -> list[str]:
        """``vhd-util check -n PATH [-p]``: ``[]`` when valid, else vhd-util's messages (the
        ``NAME is valid`` lines of the files that passed and the metadata dump that follows
        the messages of the one that failed left out)."""
        argv = [self.program, "check", "-n", path]
        if parents:
            argv.append("-p")
        result = self.run(argv, ok_codes=_ANY_STATUS)
        if result.returncode == 0:
            return []
        problems: list[str] = []
        for line in result.stdout.splitlines():
            if _INVALID_MARK in line:
                break
            if line.strip() and not line.endswith(" is valid"):
                problems.append(line.strip())
        return problems or [f"vhd-util check exited with status {result.returncode}"]
