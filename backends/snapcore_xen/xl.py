"""A typed wrapper over Xen's ``xl`` (checked against xl 4.17's ``tools/xl`` sources).

Every command runs through a :class:`~snapcore.process.CommandRunner` as an argument list; the
domain is named by its xl name, which the plugin validates before it gets here.

* ``xl list NAME`` prints a header and one row per domain, ``Name ID Mem VCPUs State Time(s)``,
  the State column being six letters ``r b p s c d`` (running, blocked, paused, shut down,
  crashed, dying) with ``-`` for each that is not set. A domain that does not exist makes xl print
  ``NAME is an invalid domain identifier (rc=N)`` (or ``Error: Domain 'NAME' does not exist.``)
  on stderr and exit 1.
* ``xl list -l NAME`` prints a JSON array of ``{"domid": N, "config": {...}}``, the config being
  libxl's ``libxl_domain_config``: ``c_info`` (``name``, ``uuid``), ``b_info``, ``disks`` (each
  with ``pdev_path``, ``vdev``, ``backend``, ``format``, ``readwrite``, ``is_cdrom``). It carries
  no run state, which is why the state comes from the table.
* ``xl create [-p] CONFIG`` starts a domain from its xl configuration file (paused).
* ``xl pause``/``unpause``/``destroy NAME``; ``xl save [-c|-p] NAME FILE`` suspends the domain,
  writes its memory and configuration to FILE and then destroys it, leaves it running (``-c``)
  or leaves it paused (``-p``); ``xl restore [-p] FILE`` starts it again from FILE (paused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from snapcore.errors import BackendError, CommandError
from snapcore.model import Disk, DomainState
from snapcore.process import CommandRunner

#: The program run; found on ``PATH``.
PROGRAM: Final = "xl"
#: ``xl save`` and ``xl restore`` may take as long as the memory takes to write.
SAVE_TIMEOUT: Final = None
_MISSING: Final = ("is an invalid domain identifier", "does not exist")
#: libxl disk formats and the snapcore drivers that own them.
DRIVERS: Final = {"vhd": "vhd", "qcow2": "qcow2"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedDomain:
    """One row of ``xl list``."""

    name: str
    domid: int
    flags: str

    @property
    def state(self) -> DomainState | None:
        """Running or paused; ``None`` for a domain shutting down, crashed or dying."""
        if any(letter in self.flags for letter in "scd"):
            return None
        return DomainState.PAUSED if "p" in self.flags else DomainState.RUNNING

    @classmethod
    def parse(cls, out: str, name: str) -> ListedDomain | None:
        """The row of domain *name* in ``xl list`` output, or ``None``."""
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 5 or fields[0] != name:
                continue
            flags = next((f for f in fields[4:] if len(f) == 6 and set(f) <= set("rbpscd-")), None)
            if flags is None:
                continue
            try:
                domid = int(fields[1])
            except ValueError:
                continue
            return cls(name=name, domid=domid, flags=flags)
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class XlDisk:
    """One element of ``disks`` in libxl's domain configuration."""

    pdev_path: str
    vdev: str
    backend: str
    format: str
    readwrite: bool
    is_cdrom: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> XlDisk:
        """:raises KeyError, TypeError, ValueError: a malformed element."""
        path = data.get("pdev_path")
        vdev = data["vdev"]
        if path is not None and not isinstance(path, str):
            raise TypeError(f"pdev_path is {path!r}")
        if not isinstance(vdev, str):
            raise TypeError(f"vdev is {vdev!r}")
        return cls(
            pdev_path=path or "",
            vdev=vdev,
            backend=str(data.get("backend") or "unknown").lower(),
            format=str(data.get("format") or "unknown").lower(),
            readwrite=bool(data.get("readwrite", 1)),
            is_cdrom=bool(data.get("is_cdrom", 0)),
        )

    def to_disk(self) -> Disk:
        """The snapcore disk: driver from the format (vhd, qcow2; others left to be claimed),
        read-only when libxl has it read-only or as a cdrom."""
        return Disk(
            vdev=self.vdev,
            path=self.pdev_path,
            driver=DRIVERS.get(self.format),
            readonly=self.is_cdrom or not self.readwrite,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainConfig:
    """One element of ``xl list -l``."""

    domid: int | None
    name: str
    disks: tuple[XlDisk, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainConfig:
        """:raises KeyError, TypeError, ValueError: a malformed element."""
        config = data["config"]
        domid = data.get("domid")
        c_info = config.get("c_info") or {}
        return cls(
            domid=int(domid) if domid is not None else None,
            name=str(c_info.get("name", "")),
            disks=tuple(
                XlDisk.from_json(d) for d in config.get("disks") or [] if d.get("pdev_path")
            ),
        )


class Xl:
    """The xl commands the xen plugin uses."""

    def __init__(self, run: CommandRunner, program: str = PROGRAM):
        self.run = run
        self.program = program

    def _missing(self, exc: CommandError) -> bool:
        return exc.returncode == 1 and any(m in exc.stderr for m in _MISSING)

    def listed(self, name: str) -> ListedDomain | None:
        """The ``xl list NAME`` row, or ``None`` when no such domain runs."""
        try:
            out = self.run([self.program, "list", name]).stdout
        except CommandError as exc:
            if self._missing(exc):
                return None
            raise
        row = ListedDomain.parse(out, name)
        if row is None:
            raise BackendError(f"{self.program} list {name}: no row for {name} in {out!r}")
        return row

    def config(self, name: str) -> DomainConfig | None:
        """The ``xl list -l NAME`` configuration, or ``None`` when no such domain runs."""
        argv = [self.program, "list", "-l", name]
        try:
            out = self.run(argv).stdout
        except CommandError as exc:
            if self._missing(exc):
                return None
            raise
        try:
            data = json.loads(out)
            entries = [DomainConfig.from_json(e) for e in data]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"{' '.join(argv)}: cannot read its JSON: {exc}") from exc
        for entry in entries:
            if entry.name == name or len(entries) == 1:
                return entry
        return None

    def create(self, config: str, *, paused: bool) -> None:
        """``xl create [-p] CONFIG``: start a domain from its xl configuration file (paused).
        xl returns once the domain is built and its devices are up."""
        argv = [self.program, "create"]
        if paused:
            argv.append("-p")
        self.run([*argv, config], timeout=SAVE_TIMEOUT)

    def pause(self, name: str) -> None:
        self.run([self.program, "pause", name])

    def unpause(self, name: str) -> None:
        self.run([self.program, "unpause", name])

    def destroy(self, name: str) -> None:
        self.run([self.program, "destroy", name])

    def save(self, name: str, path: str, *, keep: str = "paused") -> None:
        """``xl save -p NAME PATH`` (``keep="paused"``) or ``-c`` (``keep="running"``)."""
        flag = {"paused": "-p", "running": "-c"}[keep]
        self.run([self.program, "save", flag, name, path], timeout=SAVE_TIMEOUT)

    def restore(self, path: str, *, paused: bool) -> None:
        """``xl restore [-p] PATH``."""
        argv = [self.program, "restore"]
        if paused:
            argv.append("-p")
        self.run([*argv, path], timeout=SAVE_TIMEOUT)
