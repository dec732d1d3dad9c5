"""A QEMU domain driven over QMP: state, pause, resume, start, stop, memory save and restore.

QEMU 7.2 facts this relies on (checked on Debian 12's QEMU):

* ``stop`` returns once the vCPUs are stopped and in-flight disk requests drained.
* A migration with the ``background-snapshot`` capability captures RAM as it is when the
  migration starts, then write-protects guest memory (userfaultfd) and lets the guest run while
  pages are written; it restarts the vCPUs itself, even if they were stopped before. Its
  ``downtime`` is a millisecond or so. Without it (older kernels), a migration of a stopped
  guest writes everything while the guest stays stopped.
* ``max-bandwidth`` defaults to 128 MiB/s, which would slow every save: raised for ours.
* The memory image goes to a file descriptor passed over the socket (``getfd`` + ``fd:``), so
  no shell runs and snapcore never holds the image in memory.
* A QEMU started with ``-incoming defer -S`` loads an image through ``migrate-incoming`` and
  stays paused until ``cont``.
* Where QEMU offers the ``mapped-ram`` capability (9.0 and newer), a paused save and the
  restore of such an image use it, with multifd channels (:mod:`snapcore_qemu.migration`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Final

from snapcore.context import HookContext
from snapcore.errors import (
    BackendError,
    ConfigError,
    DomainStateError,
    DomainUnreachableError,
)
from snapcore.model import DomainState, MemoryImage, ProgressEvent
from snapcore_qemu import NAME
from snapcore_qemu.migration import (
    DEFAULT_CHANNELS,
    FORMATS,
    STREAM,
    Method,
    Migration,
    open_direct,
)
from snapcore_qemu.qmp import SERVICE, QMPCommandError, QMPSession
from snapcore_qemu.settings import QemuSettings

log = logging.getLogger(__name__)

#: Options snapcore adds to ``[qemu] argv`` itself; a domain file must not carry them.
MANAGED_OPTIONS: Final = ("-qmp", "-daemonize", "-pidfile", "-incoming", "-S")
#: Seconds between two looks at a running migration (its end event wakes the wait earlier).
MIGRATION_POLL: Final = 0.1
#: The states a migration ends in.
MIGRATION_ENDS: Final = frozenset({"completed", "failed", "cancelled"})
#: Bandwidth for memory saves (bytes/s): high enough never to be the limit.
SAVE_BANDWIDTH: Final = 64 << 30
#: How often, and how long, to look for a background snapshot's first pages (then the guest
#: is let run: :meth:`QemuDomain._resume_once_tracking`).
TRACKING_POLL: Final = 0.001
TRACKING_TIMEOUT: Final = 30.0
#: Seconds to keep trying to turn the capabilities off after a migration ended.
RESET_TIMEOUT: Final = 5.0
#: The name under which the memory image's descriptor is passed to QEMU (``getfd``).
MEMORY_FD: Final = "snapcore-memory"
#: Room kept for device state on top of the guest's RAM in a memory image.
IMAGE_OVERHEAD: Final = 64 << 20
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 30.0
_PAUSED_STATES: Final = frozenset(
    {
        "paused",
        "postmigrate",
        "prelaunch",
        "inmigrate",
        "finish-migrate",
        "save-vm",
        "restore-vm",
        "suspended",
        "debug",
        "io-error",
        "watchdog",
        "guest-panicked",
        "internal-error",
        "shutdown",
        "colo",
    }
)


class QemuDomain:
    """Operations on the QEMU process of ``ctx.domain``."""

    def __init__(self, ctx: HookContext):
        self.ctx = ctx
        self.domain = ctx.domain
        self.settings = QemuSettings.of(self.domain)
        if not self.settings.qmp:
            raise ConfigError(
                f"domain {self.domain.name!r} uses hypervisor qemu but its file has no "
                "[qemu] qmp socket"
            )
        self.address = self.settings.qmp
        self._own: QMPSession | None = None

    # -- helpers ------------------------------------------------------------------------------

    @property
    def qmp(self) -> QMPSession:
        """The operation's session (``ctx.service("qmp")``), or a private one when none was
        given."""
        shared = self.ctx.service(SERVICE)
        if isinstance(shared, QMPSession):
            return shared
        if self._own is None:
            self._own = QMPSession(self.address, domain=self.domain.name)
        return self._own

    @property
    def pidfile(self) -> Path | None:
        work = self.ctx.work_dir
        return work / "qemu.pid" if work is not None else None

    def _recorded_pid(self) -> int | None:
        """The pid snapcore started QEMU with, if that process still lives."""
        path = self.pidfile
        if path is None:
            return None
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    # -- state --------------------------------------------------------------------------------

    def state(self) -> DomainState:
        """Running, paused (any stopped-vCPU state of a live QEMU) or shut off.

        A missing socket means shut off, unless a QEMU snapcore started for this domain still
        runs (then the socket path is wrong). A socket that refuses or stays silent is an error.

        :raises DomainUnreachableError: exit 2, nothing touched.
        """
        if not os.path.exists(self.address):
            pid = self._recorded_pid()
            if pid is not None:
                raise DomainUnreachableError(
                    self.domain.name,
                    self.address,
                    f"the socket is missing but QEMU (pid {pid}) runs; check [qemu] qmp",
                )
            return DomainState.SHUTOFF
        try:
            status = self.qmp.execute("query-status")
        except DomainUnreachableError:
            if self._recorded_pid() is None and self.pidfile is not None and self.pidfile.exists():
                # snapcore started this QEMU and it is gone: a stale socket after a crash.
                return DomainState.SHUTOFF
            raise
        name = str(status.get("status", ""))
        if status.get("running"):
            return DomainState.RUNNING
        if name in _PAUSED_STATES:
            return DomainState.PAUSED
        return DomainState.PAUSED

    def open_images(self) -> set[str]:
        """The real paths of the images at the top of QEMU's block devices.

        A node opened from a passed descriptor (``/dev/fdset/N``, as live external snapshots
        make them) is named by its fd set's ``opaque`` string, ``snapcore:VDEV:NAME:PATH``.
        """
        fdsets = {
            f"/dev/fdset/{fdset['fdset-id']}": str(fd.get("opaque", ""))
            for fdset in self.qmp.execute("query-fdsets")
            for fd in fdset.get("fds", ())
        }
        found: set[str] = set()
        for device in self.qmp.execute("query-block"):
            name = str((device.get("inserted") or {}).get("file") or "")
            if name.startswith("json:"):
                name = _protocol_filename(json.loads(name[5:])) or ""
            opaque = fdsets.get(name, "")
            if opaque.startswith("snapcore:"):
                name = opaque.split(":", 3)[3]
            if name and not name.startswith("/dev/fdset/"):
                found.add(os.path.realpath(name))
        return found

    def check_disks(self) -> list[str]:
        """Blockers for disks of the domain file that the running QEMU does not have open."""
        open_files = self.open_images()
        return [
            f"disk {d.vdev}: QEMU does not have {d.path} open "
            f"(it has {', '.join(sorted(open_files)) or 'no disk'})"
            for d in self.domain.disks
            if os.path.realpath(d.path) not in open_files
        ]

    # -- pause/resume -------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop the vCPUs; QEMU drains in-flight disk requests before answering."""
        self.qmp.execute("stop")

    def resume(self) -> None:
        """Let the vCPUs run (also from ``postmigrate``)."""
        status = self.qmp.execute("query-status")
        if not status.get("running"):
            self.qmp.execute("cont")

    # -- guest agent --------------------------------------------------------------------------

    def quiesce(self) -> bool:
        """Freeze the guest's file systems through its agent; ``False`` when it cannot.

        A missing or silent agent is not an error: the checkpoint goes on, crash-consistent,
        and a warning says so.
        """
        path = self.settings.guest_agent
        if not path:
            return False
        agent = QMPSession(path, domain=self.domain.name, timeout=10.0, guest_agent=True)
        try:
            with agent:
                frozen = agent.execute("guest-fsfreeze-freeze")
        except (DomainUnreachableError, BackendError) as exc:
            log.warning("cannot quiesce %s through its guest agent: %s", self.domain.name, exc)
            return False
        log.info("froze %s file systems of %s", frozen, self.domain.name)
        return True

    def thaw(self) -> None:
        """Thaw the guest's file systems; succeeds when they were not frozen."""
        path = self.settings.guest_agent
        if not path:
            return
        with QMPSession(path, domain=self.domain.name, timeout=10.0, guest_agent=True) as agent:
            agent.execute("guest-fsfreeze-thaw")

    # -- lifecycle ----------------------------------------------------------------------------

    def _argv(self, *extra: str) -> list[str]:
        argv = list(self.settings.argv)
        if not argv:
            raise ConfigError(
                f"domain {self.domain.name!r}: [qemu] argv is empty; snapcore cannot start it"
            )
        clash = sorted({a for a in argv if a in MANAGED_OPTIONS})
        if clash:
            raise ConfigError(
                f"domain {self.domain.name!r}: [qemu] argv must not contain {', '.join(clash)}; "
                "snapcore adds them itself"
            )
        pidfile = self.pidfile
        assert pidfile is not None
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        return [
            *argv,
            "-qmp",
            f"unix:{self.address},server=on,wait=off",
            "-daemonize",
            "-pidfile",
            str(pidfile),
            *extra,
        ]

    def start(self, *, paused: bool, incoming: bool = False) -> None:
        """Launch QEMU from ``[qemu] argv`` and wait for its monitor.

        :raises ConfigError: argv missing or carrying options snapcore manages.
        :raises DomainStateError-like BackendError: QEMU failed to start (its message).
        """
        extra: list[str] = []
        if paused or incoming:
            extra.append("-S")
        if incoming:
            extra += ["-incoming", "defer"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)  # a stale socket from a QEMU that died
        self.ctx.run(self._argv(*extra), timeout=START_TIMEOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.address):
            if time.monotonic() > deadline:
                raise BackendError(f"QEMU did not create its QMP socket {self.address}")
            time.sleep(0.01)
        self.qmp.connect()

    def stop(self) -> None:
        """Quit QEMU and wait until the process is gone (its image locks released).

        :raises BackendError: when QEMU is still there after the timeout.
        """
        pid = self.qmp.peer_pid() or self._recorded_pid()
        with contextlib.suppress(Exception):
            self.qmp.execute("quit")
        self.qmp.close()
        if pid is None:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise BackendError(f"QEMU (pid {pid}) did not quit within {STOP_TIMEOUT:g} s")
            time.sleep(0.01)

    # -- memory -------------------------------------------------------------------------------

    def check_space(self, path: str) -> None:
        """Refuse a memory image that might not fit where it is to go.

        The image holds at most the guest's RAM plus device state. A save that runs out of
        space fails, and QEMU 7.2 was seen to hang for good when a background snapshot hit
        ENOSPC, so the space is checked before anything starts.

        :raises ConfigError: (exit 2) when the filesystem has less free space than the RAM.
        """
        ram = int(self.qmp.execute("query-memory-size-summary").get("base-memory", 0))
        need = ram + IMAGE_OVERHEAD
        try:
            st = os.statvfs(os.path.dirname(path) or ".")
        except OSError as exc:
            raise ConfigError(f"memory image {path}: {exc.strerror or exc}") from exc
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise ConfigError(
                f"memory image {path}: {free >> 20} MiB free on its filesystem, but the guest's "
                f"{ram >> 20} MiB of RAM may need up to {need >> 20} MiB"
            )

    @property
    def channels(self) -> int:
        """The multifd channels of a mapped-ram save or restore (``[qemu] memory_channels``)."""
        return self.settings.memory_channels or DEFAULT_CHANNELS

    def memory_plan(self, path: str, state: DomainState) -> str:
        """Say how :meth:`save_memory` will save the memory of a domain in *state*, and why.

        :raises ConfigError: (exit 2) *path*'s filesystem has less room than the guest's RAM.
        """
        self.check_space(path)
        self._check_not_postmigrate()
        method = Migration(self.qmp).choose_save(
            background=state is DomainState.RUNNING, channels=self.channels
        )
        if method.background:
            return (
                f"live (background snapshot, {method.describe()}): the guest runs again while "
                f"memory is written; {method.reason}"
            )
        why = method.reason
        if state is DomainState.RUNNING:
            why += "; QEMU cannot do a background snapshot here (userfaultfd write-protection)"
        return (
            f"paused save ({method.describe()}): the guest stays stopped until memory is "
            f"written; {why}"
        )

    def _check_not_postmigrate(self) -> None:
        """Refuse a memory save of a guest that the previous one left stopped.

        A save of a paused domain leaves QEMU in state ``postmigrate``, its disks handed over
        (inactive) until the guest runs again; QEMU 7.2 and 10.0 both refuse another
        migration then ("Can't migrate the vm that was paused due to previous migration").

        :raises DomainStateError: (exit 2) QEMU is in ``postmigrate``.
        """
        status = self.qmp.execute("query-status")
        if status.get("status") == "postmigrate":
            raise DomainStateError(
                self.domain.name,
                "stopped by its previous memory save (QEMU's postmigrate state)",
                "resumed first: QEMU refuses another migration until the guest has run",
                "a checkpoint with memory",
            )

    def prepare_memory(self, path: str, *, live: bool) -> None:
        """Do, before the guest is paused, all a memory save can do in advance: check the
        space, choose the method, set the capabilities of a stream save (QEMU 7.2 takes up to
        60 ms to set background-snapshot), raise the bandwidth, create *path* and pass a
        stream save's descriptor to QEMU.

        A mapped-ram save (a paused save, where QEMU offers it) gets its capabilities and its
        descriptor in :meth:`save_memory`, which resets them when it ends: capabilities left
        on by a checkpoint abandoned in between would change what QEMU does next (10.2 refuses
        ``savevm`` with mapped-ram or multifd on), and a passed descriptor would keep the
        removed image's space.

        Failure guarantee: *path* does not exist afterwards.
        """
        qmp = self.qmp
        self.check_space(path)
        self._check_not_postmigrate()
        migration = Migration(qmp)
        method = migration.choose_save(background=live, channels=self.channels)
        if method.background:
            try:
                migration.set(method)
            except BackendError as exc:
                log.warning("background snapshot unavailable (%s); saving memory paused", exc)
                method = migration.choose_save(background=False, channels=self.channels)
        if method.mapped_ram:
            with contextlib.suppress(BackendError):
                migration.reset()  # whatever an earlier save left on
        elif not method.background:
            migration.set(method)
        qmp.execute("migrate-set-parameters", {"max-bandwidth": SAVE_BANDWIDTH})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if method.mapped_ram:
                pass  # its fd set is made by save_memory
            elif migration.file_transport:
                self._drop_memory_fdsets()
                qmp.add_fd(fd, opaque=f"{MEMORY_FD}:{path}")
            else:
                qmp.send_fd(fd, MEMORY_FD)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        finally:
            os.close(fd)

    def save_memory(self, path: str, *, live: bool) -> MemoryImage:
        """Write the guest's memory as it is now to *path*.

        With *live*, a background snapshot: the guest is let run while pages are written; if
        the host cannot do it, a paused save instead, with a warning. Without, a migration of
        the stopped guest, which stays stopped, in QEMU's mapped-ram format with multifd
        channels where QEMU offers it. When :meth:`prepare_memory` ran for *path* (the
        coordinator calls it before pausing), only what it could not do beforehand runs here,
        which keeps the guest's pause short.

        Failure guarantee: *path* does not exist afterwards, and no capability this save set
        is left on (unless QEMU stopped answering).

        :raises BackendError: QEMU reported the migration failed.
        """
        qmp = self.qmp
        if not (os.path.exists(path) and os.path.getsize(path) == 0):
            self.prepare_memory(path, live=live)
        migration = Migration(qmp)
        if migration.state.get("background-snapshot"):  # prepared for a background snapshot
            method = Method(format=STREAM, background=True)
        else:
            method = migration.choose_save(background=False, channels=self.channels)
        fdset: int | None = None
        try:
            if method.mapped_ram:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    fdset = qmp.add_fd(fd, opaque=f"{MEMORY_FD}:{path}")
                finally:
                    os.close(fd)
                migration.set(method)
                uri = f"file:/dev/fdset/{fdset}"
            elif migration.file_transport:
                fdset = self._memory_fdset(path)
                uri = f"file:/dev/fdset/{fdset}"
            else:
                uri = f"fd:{MEMORY_FD}"
            info = self._migrate("migrate", uri, "save memory", resume=method.background)
        except BaseException:
            with contextlib.suppress(Exception):
                qmp.execute("migrate_cancel")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        finally:
            self._clean_up(migration, fdset)
        if not method.background:
            self._activate_disks()
        log.info(
            "memory of %s saved (%s): %s bytes, guest downtime %s ms",
            self.domain.name,
            method.describe(),
            os.path.getsize(path),
            info.get("downtime"),
        )
        return MemoryImage(path=path, size=os.path.getsize(path), format=method.format)

    def _memory_fdsets(self) -> dict[str, int]:
        """The fd sets snapcore passed for memory images, by their opaque string."""
        sets: dict[str, int] = {}
        for fdset in self.qmp.execute("query-fdsets"):
            for fd in fdset.get("fds", []):
                opaque = str(fd.get("opaque", ""))
                if opaque.startswith(f"{MEMORY_FD}:"):
                    sets[opaque] = int(fdset["fdset-id"])
        return sets

    def _drop_memory_fdsets(self) -> None:
        """Remove the memory image fd sets an abandoned checkpoint left (each would keep its
        removed image's space), as ``getfd`` under the same name replaced the old one."""
        for fdset in self._memory_fdsets().values():
            with contextlib.suppress(QMPCommandError):
                self.qmp.execute("remove-fd", {"fdset-id": fdset})

    def _memory_fdset(self, path: str) -> int:
        """The fd set :meth:`prepare_memory` passed for *path*.

        :raises BackendError: there is none (prepared otherwise, or removed meanwhile).
        """
        fdset = self._memory_fdsets().get(f"{MEMORY_FD}:{path}")
        if fdset is None:
            raise BackendError(f"QEMU holds no descriptor of memory image {path}", driver=NAME)
        return fdset

    def _activate_disks(self) -> None:
        """Give the stopped guest's disks back to QEMU after a migration: take their images
        out of the inactive state a migration leaves them in, without letting the guest run.

        After a save of a stopped guest, and after an incoming migration into a QEMU started
        with ``-S`` (QEMU 10.0 activates the disks only at ``cont`` then; 7.2 did at the end of
        the migration), QEMU keeps every block node inactive, and refuses snapshots and block
        jobs on them ("does not support internal snapshots"). QEMU 10.0's
        ``blockdev-set-active`` activates them; where QEMU lacks it (7.2), the disks stay as
        QEMU left them until the guest runs.
        """
        commands = {str(c.get("name")) for c in self.qmp.execute("query-commands")}
        if "blockdev-set-active" in commands:
            self.qmp.execute("blockdev-set-active", {"active": True})

    def _clean_up(self, migration: Migration, fdset: int | None) -> None:
        """After a migration: turn its capabilities off and drop its fd set. QEMU may still
        be ending the migration for a moment after it reported its end, and refuses new
        capabilities until then: tried again for up to :data:`RESET_TIMEOUT` seconds."""
        deadline = time.monotonic() + RESET_TIMEOUT
        while True:
            try:
                migration.reset()
                break
            except QMPCommandError as exc:
                if time.monotonic() > deadline:
                    log.warning("cannot turn QEMU's migration capabilities off: %s", exc)
                    break
                time.sleep(MIGRATION_POLL)
            except DomainUnreachableError as exc:
                log.warning("cannot turn QEMU's migration capabilities off: %s", exc)
                break
        if fdset is not None:
            with contextlib.suppress(BackendError, DomainUnreachableError):
                self.qmp.execute("remove-fd", {"fdset-id": fdset})

    def _migrate(
        self, command: str, uri: str, step: str, *, resume: bool = False
    ) -> dict[str, Any]:
        """Run migration *command* (``migrate``, ``migrate-incoming``) to or from *uri* and
        wait until it ends, reporting progress; return ``query-migrate``'s last answer.

        A ``MIGRATION`` event (sent when the ``events`` capability is on) ends each wait at
        once; without it, ``query-migrate`` is asked every :data:`MIGRATION_POLL` seconds.
        With *resume* (a background snapshot of a guest snapcore stopped), the guest is let
        run as soon as QEMU writes protected pages (:meth:`_resume_once_tracking`).

        :raises BackendError: the migration failed or was cancelled.
        """
        qmp = self.qmp
        with qmp.events("MIGRATION") as waiter:
            qmp.execute(command, {"uri": uri})
            if resume:
                self._resume_once_tracking()
            while True:
                info: dict[str, Any] = qmp.execute("query-migrate")
                status = info.get("status")
                if status == "completed":
                    return info
                if status in ("failed", "cancelled"):
                    raise BackendError(
                        f"{step} failed: {info.get('error-desc') or status}", driver=NAME
                    )
                ram = info.get("ram") or {}
                self.ctx.progress(
                    ProgressEvent(
                        step=step,
                        done=int(ram.get("transferred", 0)),
                        total=int(ram.get("total", 0)),
                        unit="bytes",
                    )
                )
                with contextlib.suppress(DomainUnreachableError):  # no end yet: look again
                    waiter.get(
                        MIGRATION_POLL,
                        match=lambda e: e.get("data", {}).get("status") in MIGRATION_ENDS,
                    )

    def _resume_once_tracking(self) -> None:
        """Let the guest run again once a background snapshot has captured the memory.

        A background snapshot stops the vCPUs, saves the device state, write-protects the
        RAM (userfaultfd) and then puts the vCPUs back as they were when it stopped them.
        QEMU 7.2 always started them; QEMU 9.0 and newer restore the previous run state, and
        snapcore had stopped the guest for its disks, so the guest stayed stopped for the whole
        save (1.7 s instead of 60 ms for 1 GiB, measured). So: ``query-migrate`` is asked every
        millisecond until the RAM page counters move (QEMU walks the pages only once they are
        write-protected and the device state is saved), then ``cont`` if the guest is not
        running. Decided by what QEMU does, not by its version: on 7.2 the guest already runs.

        Failure guarantee: a migration that ends or fails first is left to the caller's wait,
        and the guest as it is.
        """
        deadline = time.monotonic() + TRACKING_TIMEOUT
        while time.monotonic() < deadline:
            info: dict[str, Any] = self.qmp.execute("query-migrate")
            ram = info.get("ram") or {}
            if info.get("status") in MIGRATION_ENDS:
                return
            if int(ram.get("normal", 0)) + int(ram.get("duplicate", 0)) > 0:
                if self.qmp.execute("query-status").get("status") != "running":
                    self.qmp.execute("cont")
                return
            time.sleep(TRACKING_POLL)
        log.warning("the background snapshot did not start writing pages; the guest stays paused")

    def restore_memory(self, image: MemoryImage, state: DomainState) -> None:
        """Start QEMU from *image* (disks already reverted) and leave it *state*.

        An image in QEMU's mapped-ram format is read with the same capability, through
        multifd channels where QEMU offers them; a QEMU without mapped-ram refuses it.

        Failure guarantee: on failure the QEMU started for the restore is stopped again.

        :raises BackendError: the image's format is not one this QEMU reads (nothing is
            started for an unknown format), or the restore failed.
        """
        if image.format not in FORMATS:
            raise BackendError(
                f"memory image {image.path} is in format {image.format!r}, not one of QEMU's",
                driver=NAME,
            )
        fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.start(paused=True, incoming=True)
            fdset: int | None = None
            try:
                migration = Migration(self.qmp)
                method = migration.choose_restore(image.format, image.path, channels=self.channels)
                if method.mapped_ram:
                    fdset = self.qmp.add_fd(fd, opaque=f"{MEMORY_FD}:{image.path}")
                    migration.set(method)
                    if method.multifd:
                        self._direct_io(migration, image.path, fdset)
                    uri = f"file:/dev/fdset/{fdset}"
                else:
                    if migration.file_transport:
                        fdset = self.qmp.add_fd(fd, opaque=f"{MEMORY_FD}:{image.path}")
                        uri = f"file:/dev/fdset/{fdset}"
                    else:
                        self.qmp.send_fd(fd, MEMORY_FD)
                        uri = f"fd:{MEMORY_FD}"
                    with contextlib.suppress(QMPCommandError):  # only wakes the wait earlier
                        migration.set(method)
                self._migrate("migrate-incoming", uri, "restore memory")
                self._clean_up(migration, fdset)
                if state is DomainState.RUNNING:
                    self.qmp.execute("cont")
                else:
                    self._activate_disks()
            except BaseException:
                with contextlib.suppress(Exception):
                    self.stop()
                raise
        finally:
            os.close(fd)

    def _direct_io(self, migration: Migration, path: str, fdset: int) -> None:
        """Let the multifd channels of a mapped-ram restore read *path* with ``O_DIRECT``
        where QEMU (``direct-io``) and the filesystem allow it: measured 3x faster than
        through the page cache (docs/qemu.md). The main channel keeps the ordinary descriptor
        of *fdset*; the ``O_DIRECT`` one joins it."""
        if not migration.offers_direct_io():
            return
        direct = open_direct(path)
        if direct is None:
            return
        try:
            self.qmp.add_fd(direct, fdset=fdset, opaque=f"{MEMORY_FD}:{path}")
        finally:
            os.close(direct)
        migration.set_direct_io(True)


def _protocol_filename(spec: object) -> str | None:
    """The ``filename`` of the top node's protocol child in a ``json:{...}`` description
    (following ``file``, never ``backing``)."""
    while isinstance(spec, dict):
        if isinstance(spec.get("filename"), str):
            return str(spec["filename"])
        spec = spec.get("file")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False
