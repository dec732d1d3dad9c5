"""The ``[qemu]`` table of a domain file: what the ``qemu`` hypervisor plugin needs to reach and
start a domain. The core keeps the table as it is (``Domain.hypervisor_table``); this module
checks it and gives it a type.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from snapcore.errors import ConfigError
from snapcore.model import Domain

#: The keys a ``[qemu]`` table may have.
KEYS: Final = ("qmp", "argv", "guest_agent", "timeout", "memory_channels")
#: The most multifd channels ``memory_channels`` may ask for.
MAX_CHANNELS: Final = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class QemuSettings:
    """A checked ``[qemu]`` table.

    :ivar qmp: the QMP socket of the running QEMU (absolute path).
    :ivar argv: how to start QEMU (``snapcore domain-start``, revert with memory).
    :ivar guest_agent: the guest agent's socket, for ``guest-fsfreeze`` (absolute path).
    :ivar timeout: seconds to wait for the monitor to answer one command.
    :ivar memory_channels: multifd channels for memory images in QEMU's mapped-ram format
        (``None``: 4; 1: paused saves write the migration stream, which is faster than one
        mapped-ram channel, and mapped-ram images are read with one channel).
    """

    qmp: str | None = None
    argv: tuple[str, ...] = ()
    guest_agent: str | None = None
    timeout: float = 30.0
    memory_channels: int | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, object]) -> QemuSettings:
        """Check *table* (the ``[qemu]`` table as TOML gave it) and build the settings.

        :raises ConfigError: an unknown key, or a value of the wrong type; exit 2.
        """
        where = " in [qemu]"
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r}{where}; known keys: {', '.join(KEYS)}")
        argv = table.get("argv", [])
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ConfigError(f"'argv'{where} must be a list of strings")
        timeout = table.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"'timeout'{where} must be a positive number of seconds")
        channels = table.get("memory_channels")
        if channels is not None and (
            isinstance(channels, bool)
            or not isinstance(channels, int)
            or not 1 <= channels <= MAX_CHANNELS
        ):
            raise ConfigError(
                f"'memory_channels'{where} must be a whole number from 1 to {MAX_CHANNELS}"
            )
        paths: dict[str, str | None] = {}
        for key in ("qmp", "guest_agent"):
            value = table.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key!r}{where} must be a string")
            if value is not None and not os.path.isabs(value):
                raise ConfigError(f"{key!r}{where} must be an absolute path, not {value!r}")
            paths[key] = value
        return cls(
            qmp=paths["qmp"],
            argv=tuple(argv),
            guest_agent=paths["guest_agent"],
            timeout=float(timeout),
            memory_channels=channels,
        )

    @classmethod
    def of(cls, domain: Domain) -> QemuSettings:
        """The settings of *domain*'s ``[qemu]`` table (defaults when it has none).

        :raises ConfigError: as :meth:`from_table`.
        """
        return cls.from_table(domain.hypervisor_table)
