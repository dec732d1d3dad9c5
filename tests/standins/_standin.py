"""Shared by snapcore's stand-in executables for ``vhd-util``, ``tap-ctl`` and ``xl``.

The stand-ins are test doubles: Xen and blktap are not packaged for Debian 12, so the tests put
these scripts first on ``PATH`` instead of the real tools. Each reproduces the real tool's
documented command lines, output formats and exit statuses (see docs/vhd.md), does the work on
real files (VHD work through snapcore's own native engine), and appends its argv to the log
named by ``$SNAPCORE_STANDIN_LOG`` (one JSON object a line: ``{"tool": ..., "argv": [...]}``).
``tap-ctl`` and ``xl`` keep the tapdisks and domains they pretend to run in JSON files in
``$SNAPCORE_STANDIN_STATE``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOG_ENV = "SNAPCORE_STANDIN_LOG"
STATE_ENV = "SNAPCORE_STANDIN_STATE"
#: ``TOOL SUBCOMMAND`` pairs (comma-separated) that fail with EIO, for failure tests.
FAIL_ENV = "SNAPCORE_STANDIN_FAIL"


def record(tool: str) -> None:
    """Append this invocation to the stand-in log, if one is set; then fail with EIO if
    ``$SNAPCORE_STANDIN_FAIL`` names this tool and subcommand."""
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps({"tool": tool, "argv": sys.argv[1:]}) + "\n")
    wanted = {w.strip() for w in os.environ.get(FAIL_ENV, "").split(",") if w.strip()}
    this = f"{tool} {sys.argv[1] if len(sys.argv) > 1 else ''}".strip()
    if this in wanted:
        sys.stderr.write(os.strerror(errno.EIO) + "\n")
        sys.stdout.write(f"{this} failed: {os.strerror(errno.EIO)}\n")
        sys.exit(errno.EIO)


def state_dir() -> str:
    folder = os.environ.get(STATE_ENV)
    if not folder:
        sys.stderr.write(f"stand-in: ${STATE_ENV} is not set\n")
        sys.exit(1)
    os.makedirs(folder, exist_ok=True)
    return folder


_held = [0]


@contextmanager
def _locked() -> Iterator[None]:
    """The stand-ins' lock on their state directory; reentrant within one process."""
    if _held[0]:
        _held[0] += 1
        try:
            yield
        finally:
            _held[0] -= 1
        return
    with open(os.path.join(state_dir(), ".lock"), "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held[0] = 1
        try:
            yield
        finally:
            _held[0] = 0


@contextmanager
def state(name: str, default: Any) -> Iterator[Any]:
    """The JSON state file *name*, locked; written back when the block ends without error."""
    path = os.path.join(state_dir(), name)
    with _locked():
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            data = default
        yield data
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)


def engine_path() -> None:
    """Make snapcore's ``snapcore_vhd`` importable (the stand-ins run with the test Python)."""
    here = os.path.dirname(os.path.realpath(__file__))
    backends = os.path.join(os.path.dirname(os.path.dirname(here)), "backends")
    if backends not in sys.path:
        sys.path.insert(0, backends)
