"""How a QEMU migration writes or reads a memory image: the capabilities it needs, chosen by
what the QEMU offers (``query-migrate-capabilities``), never by its version.

Two image formats:

* ``qemu-migration`` (:data:`STREAM`): QEMU's migration stream, written to a descriptor passed
  with ``getfd`` (URI ``fd:NAME``). Every QEMU writes and reads it; a running guest's
  checkpoint writes it as a background snapshot.
* ``qemu-mapped-ram`` (:data:`MAPPED_RAM`): the ``mapped-ram`` capability (QEMU 9.0 and
  newer) gives each RAM page a fixed place in the image, skips zero pages, and lets ``multifd``
  channels write and read in parallel. It needs a seekable file, which QEMU takes only through
  the ``file:`` transport: the descriptor is passed into an fd set (``add-fd``) and the URI is
  ``file:/dev/fdset/N`` (QEMU 10.0 refuses ``fd:`` with mapped-ram: "Migration requires
  seekable transport"). Every multifd channel dups the set's descriptor, so QEMU never opens
  the image by name.

Capabilities stay set in QEMU after a migration, and QEMU 10.2 refuses ``savevm`` and
``snapshot-save`` while ``multifd`` or ``mapped-ram`` is on; :meth:`Migration.reset` turns
every capability snapcore sets off again, and the callers run it after each save and restore,
failed or not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from snapcore.errors import BackendError
from snapcore_qemu import NAME
from snapcore_qemu.qmp import QMPSession

#: The migration stream (``fd:`` URI); every QEMU reads it.
STREAM: Final = "qemu-migration"
#: RAM pages at fixed offsets (``mapped-ram``; ``file:`` URI on an fd set).
MAPPED_RAM: Final = "qemu-mapped-ram"
#: The formats this plugin writes and reads ("" is a record from before formats were noted).
FORMATS: Final = frozenset({"", STREAM, MAPPED_RAM})
#: The capabilities a memory save or restore sets; :meth:`Migration.reset` clears them all.
CAPABILITIES: Final = ("background-snapshot", "mapped-ram", "multifd")
#: The multifd channels of a mapped-ram save or restore unless ``[qemu] memory_channels``
#: says otherwise: on a 2-CPU host 4 channels saved and restored faster than 2 (the channels
#: mostly wait for the disk), and one is slower than the stream (docs/qemu.md).
DEFAULT_CHANNELS: Final = 4


def open_direct(path: str) -> int | None:
    """*path* opened read-only with ``O_DIRECT``, or ``None`` where its filesystem refuses
    direct I/O (tmpfs)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Method:
    """How one memory image is written or read.

    :ivar format: :data:`STREAM` or :data:`MAPPED_RAM`.
    :ivar background: a background snapshot (the guest runs while the image is written).
    :ivar channels: multifd channels; 1 means a single channel, without ``multifd``.
    :ivar reason: why this method, for the plan.
    """

    format: str
    background: bool = False
    channels: int = 1
    reason: str = ""

    @property
    def mapped_ram(self) -> bool:
        return self.format == MAPPED_RAM

    @property
    def multifd(self) -> bool:
        return self.mapped_ram and self.channels > 1

    def capabilities(self) -> dict[str, bool]:
        """The state of every capability of :data:`CAPABILITIES` for this method."""
        return {
            "background-snapshot": self.background,
            "mapped-ram": self.mapped_ram,
            "multifd": self.multifd,
        }

    def describe(self) -> str:
        """The method in a few words: "mapped-ram, 2 multifd channels", "migration stream"."""
        if not self.mapped_ram:
            return "migration stream"
        if self.multifd:
            return f"mapped-ram, {self.channels} multifd channels"
        return "mapped-ram, one channel"


class Migration:
    """The migration features of one QEMU, read once from its monitor.

    :param qmp: the QEMU's session.
    """

    def __init__(self, qmp: QMPSession):
        self.qmp = qmp
        answer = qmp.execute("query-migrate-capabilities")
        #: capability name → its current state
        self.state: dict[str, bool] = {
            str(c.get("capability")): bool(c.get("state")) for c in answer
        }

        #: ``direct-io`` was turned on by :meth:`set_direct_io`
        self.direct_io = False

    def offers(self, capability: str) -> bool:
        return capability in self.state

    def offers_direct_io(self) -> bool:
        """QEMU has the ``direct-io`` migration parameter (9.1 and newer): multifd channels of
        a ``file:`` migration open the file with ``O_DIRECT``, taking such a descriptor from
        the fd set."""
        return "direct-io" in self.qmp.execute("query-migrate-parameters")

    def set_direct_io(self, on: bool) -> None:
        """Set the ``direct-io`` parameter.

        :raises QMPCommandError: QEMU refused it.
        """
        self.qmp.execute("migrate-set-parameters", {"direct-io": on})
        self.direct_io = on

    @property
    def mapped_ram(self) -> bool:
        """QEMU can write and read mapped-ram images."""
        return self.offers("mapped-ram")

    @property
    def file_transport(self) -> bool:
        """QEMU migrates to and from ``file:`` URIs (fd sets: ``file:/dev/fdset/N``), which
        snapcore then uses for the stream too: QEMU 9.1 and newer deprecate ``fd:`` on a
        regular file ("fd: migration to a file is deprecated. Use file: instead."). Known by
        ``mapped-ram``, which QEMU offers only beside that transport (it refuses ``fd:``)."""
        return self.mapped_ram

    def choose_save(self, *, background: bool, channels: int) -> Method:
        """The method of a save: a background snapshot when *background* (and QEMU offers
        it), otherwise a paused save, with mapped-ram and multifd where QEMU offers them and
        *channels* is at least 2.

        :param background: the guest runs and may be let run while memory is written.
        :param channels: multifd channels for a mapped-ram save.
        """
        if background and self.offers("background-snapshot"):
            # QEMU 10.0 accepts background-snapshot with mapped-ram (one channel), but the
            # image it writes restores a guest whose RAM is all zeros (docs/qemu.md)
            return Method(
                format=STREAM,
                background=True,
                reason="a background snapshot writes the migration stream",
            )
        if not self.mapped_ram:
            return Method(format=STREAM, reason="QEMU does not offer mapped-ram")
        if channels < 2 or not self.offers("multifd"):
            # one mapped-ram channel measured slower than the stream (docs/qemu.md)
            return Method(
                format=STREAM,
                reason="mapped-ram without multifd channels is slower than the stream"
                + ("" if self.offers("multifd") else " (QEMU does not offer multifd)"),
            )
        return Method(
            format=MAPPED_RAM,
            channels=channels,
            reason="QEMU offers mapped-ram: each page has its place in the image, "
            "written in parallel",
        )

    def choose_restore(self, image_format: str, path: str, *, channels: int) -> Method:
        """The method that reads an image of *image_format*.

        :raises BackendError: a mapped-ram image and a QEMU without the capability, or a
            format this plugin does not know.
        """
        if image_format not in FORMATS:
            raise BackendError(
                f"memory image {path} is in format {image_format!r}, which the qemu plugin "
                "cannot restore",
                driver=NAME,
            )
        if image_format != MAPPED_RAM:
            return Method(format=STREAM)
        if not self.mapped_ram:
            raise BackendError(
                f"memory image {path} was written in QEMU's mapped-ram format, and this QEMU "
                "does not offer the mapped-ram migration capability (QEMU 9.0 and newer "
                "do); restore it with a QEMU like the one that saved it",
                driver=NAME,
            )
        multifd = channels > 1 and self.offers("multifd")
        return Method(format=MAPPED_RAM, channels=channels if multifd else 1)

    def set(self, method: Method) -> None:
        """Set *method*'s capabilities (every one of :data:`CAPABILITIES` that QEMU offers,
        on or off, so nothing a previous save left changes this one), ``events``, and the
        multifd channels.

        :raises QMPCommandError: QEMU refused; the capabilities are as they were.
        """
        wanted = {k: v for k, v in method.capabilities().items() if self.offers(k)}
        caps = [{"capability": k, "state": v} for k, v in wanted.items()]
        if self.offers("events"):
            caps.append({"capability": "events", "state": True})
        if method.multifd:
            self.qmp.execute("migrate-set-parameters", {"multifd-channels": method.channels})
        self.qmp.execute("migrate-set-capabilities", {"capabilities": caps})
        self.state.update(wanted)

    def reset(self) -> None:
        """Turn off every capability of :data:`CAPABILITIES` that is on, and ``direct-io``
        if :meth:`set_direct_io` turned it on.

        :raises QMPCommandError: QEMU refused (a migration still runs).
        """
        if self.direct_io:
            self.set_direct_io(False)
        on = [k for k in CAPABILITIES if self.state.get(k)]
        if not on:
            return
        self.qmp.execute(
            "migrate-set-capabilities",
            {"capabilities": [{"capability": k, "state": False} for k in on]},
        )
        self.state.update(dict.fromkeys(on, False))
