"""The systemd units that run ``snapcore run-policy`` every minute.

:func:`policy_units` writes the text of ``snapcore-policy.service`` (a oneshot running
``snapcore ... run-policy``) and ``snapcore-policy.timer`` (``OnCalendar=minutely``);
:func:`install_units` and :func:`uninstall_units` put them in, and take them out of, a unit
directory (``/etc/systemd/system`` by default). Nothing here runs ``systemctl``: the command
line tells the operator what to run.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from snapcore.errors import ConfigError, StoreError
from snapcore.store import atomic_write

__all__ = [
    "DEFAULT_UNIT_DIR",
    "SERVICE",
    "TIMER",
    "install_units",
    "policy_units",
    "snapcore_command",
    "uninstall_units",
]

DEFAULT_UNIT_DIR: Final = "/etc/systemd/system"
SERVICE: Final = "snapcore-policy.service"
TIMER: Final = "snapcore-policy.timer"
#: What marks a unit file as written by snapcore (uninstall removes no other).
MARK: Final = "# Written by 'snapcore policy install'"
_PLAIN: Final = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def snapcore_command() -> list[str]:
    """How this snapcore was started, as absolute paths: its console script, or
    ``python -m snapcore`` with this interpreter."""
    argv0 = sys.argv[0] if sys.argv else ""
    if (
        os.path.basename(argv0).startswith("snapcore")
        and os.path.isfile(argv0)
        and not argv0.endswith(".py")
    ):
        return [os.path.abspath(argv0)]
    return [os.path.abspath(sys.executable), "-m", "snapcore"]


def _quote(arg: str) -> str:
    """*arg* as one word of a systemd ``ExecStart=`` line (systemd.service(5), "Command
    lines"): specifiers (``%``) and variables (``$``) doubled, quoted when it has blanks or
    quotes."""
    if not arg or any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise ConfigError(f"cannot put {arg!r} in a systemd unit: empty or a control character")
    text = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(arg):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_units(
    command: Sequence[str],
    *,
    state_dir: str | os.PathLike[str],
    domains_dir: str | os.PathLike[str],
    hooks_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The two unit files, by name: the service runs *command* (the snapcore executable as
    an argument list, absolute) with ``--state-dir``, ``--domains-dir`` and ``--hooks-dir``
    as given (made absolute), then ``run-policy``; the timer starts it every minute.

    :raises ConfigError: a path that is not absolute after all, or that a unit cannot hold.
    """
    if not command or not os.path.isabs(command[0]):
        raise ConfigError(f"the snapcore command must start with an absolute path: {command!r}")
    argv = [*command, "--state-dir", os.path.abspath(state_dir)]
    argv += ["--domains-dir", os.path.abspath(domains_dir)]
    if hooks_dir is not None:
        argv += ["--hooks-dir", os.path.abspath(hooks_dir) if os.fspath(hooks_dir) else ""]
    argv.append("run-policy")
    exec_start = " ".join(_quote(a) if a else '""' for a in argv)
    service = f"""{MARK}; remove with 'snapcore policy uninstall'.
[Unit]
Description=snapcore: take the scheduled snapshots and prune the expired ones (run-policy)
After=local-fs.target

[Service]
Type=oneshot
ExecStart={exec_start}
# run-policy exits 1, 2 or 3 when a domain failed (the unit is then marked failed);
# the next minute's run tries again.
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
"""
    timer = f"""{MARK}; remove with 'snapcore policy uninstall'.
[Unit]
Description=snapcore: run-policy every minute

[Timer]
OnCalendar=minutely
AccuracySec=1s
# a run missed while the host was off is made up once at boot (run-policy catches up once)
Persistent=true
Unit={SERVICE}

[Install]
WantedBy=timers.target
"""
    return {SERVICE: service, TIMER: timer}


def install_units(unit_dir: str | os.PathLike[str], units: Mapping[str, str]) -> list[Path]:
    """Write *units* into *unit_dir* (made if missing), each atomically, mode 0644; replace
    units snapcore wrote, refuse to overwrite any other file.

    :raises ConfigError: a file of that name that snapcore did not write is in the way.
    :raises StoreError: the directory cannot be written.
    """
    directory = Path(unit_dir)
    for name in units:
        path = directory / name
        if path.exists() and not _ours(path):
            raise ConfigError(f"{path} exists and was not written by snapcore; move it away first")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    written = []
    for name, text in units.items():
        path = directory / name
        atomic_write(path, text.encode())
        try:
            path.chmod(0o644)
        except OSError as exc:
            raise StoreError(f"cannot set the mode of {path}: {exc.strerror or exc}") from exc
        written.append(path)
    return written


def _ours(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(MARK)).decode(errors="replace") == MARK
    except OSError:
        return False


def uninstall_units(unit_dir: str | os.PathLike[str], *, dry_run: bool = False) -> list[Path]:
    """Remove the units snapcore wrote from *unit_dir*; return those removed (or, with
    *dry_run*, those that would be). Files of those names that snapcore did not write are
    left, and missing ones are no error.

    :raises StoreError: a unit cannot be removed.
    """
    removed = []
    for name in (TIMER, SERVICE):
        path = Path(unit_dir) / name
        if not path.is_file() or not _ours(path):
            continue
        if not dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        removed.append(path)
    return removed
