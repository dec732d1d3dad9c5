"""Stand-in executables for ``vhd-util``, ``tap-ctl`` and ``xl``, and their test helper.

Xen and blktap are not packaged for Debian 12, so the vhd and xen plugins are tested against
these stand-ins: scripts that reproduce the real tools' documented command lines, output
formats and exit statuses, work on real files, and record every argv they get.
:meth:`StandIns.install` puts them first on ``PATH`` for one test.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
TOOLS = ("vhd-util", "tap-ctl", "xl")


@dataclass
class StandIns:
    """The stand-ins installed for one test: their log and their state directory."""

    log: Path
    state: Path

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StandIns:
        """Put the stand-ins first on ``PATH`` (and this Python's bin after them, so that their
        ``#!/usr/bin/env python3`` finds an interpreter) for the current test."""
        state = tmp_path / "standin-state"
        state.mkdir(exist_ok=True)
        log = tmp_path / "standin.log"
        log.touch()
        path = os.pathsep.join(
            [str(HERE), os.path.dirname(sys.executable), os.environ.get("PATH", "")]
        )
        monkeypatch.setenv("PATH", path)
        monkeypatch.setenv("SNAPCORE_STANDIN_LOG", str(log))
        monkeypatch.setenv("SNAPCORE_STANDIN_STATE", str(state))
        return cls(log=log, state=state)

    def calls(self, tool: str | None = None) -> list[tuple[str, ...]]:
        """Every recorded call, oldest first, as ``(tool, *argv)``."""
        out = []
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            if tool is None or entry["tool"] == tool:
                out.append((entry["tool"], *entry["argv"]))
        return out

    def clear(self) -> None:
        self.log.write_text("")

    def read_state(self, name: str) -> Any:
        path = self.state / name
        return json.loads(path.read_text()) if path.exists() else None

    def write_state(self, name: str, data: Any) -> None:
        (self.state / name).write_text(json.dumps(data, indent=1))

    def add_tapdisk(self, path: str, *, pid: int = 4242, minor: int = 0) -> None:
        """Pretend a tapdisk serves VHD *path* (as ``tap-ctl create`` would make it)."""
        taps = self.read_state("tapdisks.json") or []
        taps.append({"pid": pid, "minor": minor, "state": 0, "type": "vhd", "path": path})
        self.write_state("tapdisks.json", taps)

    def tapdisks(self) -> list[dict[str, Any]]:
        return list(self.read_state("tapdisks.json") or [])
