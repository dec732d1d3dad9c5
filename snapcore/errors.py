"""The exception tree of snapcore.

Everything snapcore raises on purpose derives from :class:`SnapcoreError`. Data lives in
attributes; ``str()`` is one sentence for a human. Foreign exceptions (``OSError``,
``subprocess``/``sh`` errors, ``tomllib`` errors) are translated once, where they
enter snapcore, with ``raise ... from exc``. The CLI maps each branch to an exit code::

    SnapcoreError
    ├── ConfigError (ValueError)          bad input: names, files, options      exit 2
    │   └── InvalidNameError
    ├── PluginError                                                               exit 2
    │   ├── PluginLoadError                a plugin failed to import or validate
    │   ├── BackendConflictError           two plugins claim one driver
    │   ├── NoBackendError                 no plugin owns a disk (.disk)
    │   └── NoHypervisorError              no plugin controls the domain's hypervisor
    ├── BackendError                       a backend operation failed            exit 1
    │   ├── CommandError                   an external tool failed (.argv, .returncode, .stderr)
    │   ├── UnsupportedOperationError      the backend cannot do this for this disk
    │   └── PluginContractError            a plugin broke its hook's contract (.plugin, .hook)
    │       └── HookTimeoutError           a hook ran past its time limit (.seconds)
    ├── SnapshotError
    │   ├── SnapshotNotFoundError (LookupError)                                   exit 2
    │   ├── SnapshotExistsError                                                   exit 2
    │   ├── CreateBlockedError             preflight found blockers (.blockers)   exit 2
    │   ├── DeleteBlockedError             preflight found blockers (.blockers)   exit 2
    │   └── RevertBlockedError             preflight found blockers (.blockers)   exit 2
    ├── CheckpointError
    │   ├── DomainStateError               wrong domain state (.state, .required) exit 2
    │   ├── DomainUnreachableError         its monitor is missing or silent (.address) exit 2
    │   ├── HookFailedError                a fatal pre- hook failed; nothing touched
    │   │                                  (.hook, .phase, .reason)                exit 2
    │   ├── OperationFailedError           failed and fully undone (.cause)       exit 1
    │   ├── DeleteFailedError              a delete failed on every disk; its data
    │   │                                  may be partly merged (.cause)           exit 1
    │   └── PartialCheckpointError         undo failed too (.leftovers)           exit 3
    └── StoreError                                                                exit 1
        ├── StoreLockedError               busy: another command holds the lock   exit 4
        │   └── ImageLockedError           busy: another command works on a disk (.vdev, .path)
        ├── StoreCorruptError              a record or current.json cannot be read (.path)
        │   └── JournalCorruptError        the journal cannot be read (.path)     exit 3
        └── RecoveryNeededError            an interrupted operation is pending    exit 3

An unreadable file of the store never leaves a domain stuck: its message names the file and
the way out, ``snapcore recover --forget DOMAIN``, which moves it aside (never deletes it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import final

#: The longest reason an error about an unreadable file quotes (the file's content may be huge).
_REASON_MAX = 200
#: The longest message of a :class:`ConfigError`: an error line never carries a whole input.
_CONFIG_MESSAGE_MAX = 1000


def _shorten(text: str, limit: int = _REASON_MAX) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class SnapcoreError(Exception):
    """Base of every error snapcore raises on purpose."""

    #: Exit code the CLI uses for this error.
    exit_code: int = 1


class ConfigError(SnapcoreError, ValueError):
    """Bad input: a name, a domain file, a snapshot config file or a command-line option.

    Raised before anything is touched. ``source`` and ``line`` locate the problem when known.
    ``str()`` is cut to 1000 characters, so that no input, however large, floods a terminal.
    """

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.message = message
        self.source = source
        self.line = line
        where = source or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        super().__init__(_shorten(f"{where}: {message}" if where else message, _CONFIG_MESSAGE_MAX))


@final
class InvalidNameError(ConfigError):
    """A checkpoint or domain name that snapcore refuses (see :func:`snapcore.model.check_name`)."""

    def __init__(self, name: str, reason: str, *, what: str = "snapshot name"):
        self.name = name
        self.reason = reason
        super().__init__(f"invalid {what} {name!r}: {reason}")


class PluginError(SnapcoreError):
    """A plugin could not be loaded, or the plugins cannot serve a domain."""

    exit_code = 2


@final
class PluginLoadError(PluginError):
    """A plugin failed to import, or its hook implementations do not match the hook specs."""

    def __init__(self, plugin: str, reason: str):
        self.plugin = plugin
        self.reason = reason
        super().__init__(f"plugin {plugin!r} cannot be loaded: {reason}")


@final
class BackendConflictError(PluginError):
    """Two plugins claim the same driver name."""

    def __init__(self, driver: str, plugins: Sequence[str]):
        self.driver = driver
        self.plugins = tuple(plugins)
        names = " and ".join(repr(p) for p in self.plugins)
        super().__init__(
            f"plugins {names} both provide driver {driver!r}; "
            "uninstall one or disable it with --disable-plugin"
        )


@final
class NoBackendError(PluginError):
    """No loaded plugin owns a disk."""

    def __init__(self, vdev: str, path: str, driver: str | None, reason: str = ""):
        self.vdev = vdev
        self.path = path
        self.driver = driver
        self.reason = reason
        if reason:
            text = f"disk {vdev} ({path}): {reason}"
        elif driver:
            text = f"disk {vdev} ({path}): no plugin provides driver {driver!r}"
        else:
            text = (
                f"disk {vdev} ({path}): no plugin claims this disk; set driver= in the domain file"
            )
        super().__init__(text)


@final
class NoHypervisorError(PluginError):
    """No loaded plugin controls the domain's hypervisor."""

    def __init__(self, hypervisor: str):
        self.hypervisor = hypervisor
        super().__init__(f"no plugin provides hypervisor {hypervisor!r}")


class BackendError(SnapcoreError):
    """A backend operation failed. ``driver`` and ``vdev`` say where, when known."""

    exit_code = 1

    def __init__(self, message: str, *, driver: str | None = None, vdev: str | None = None):
        self.message = message
        self.driver = driver
        self.vdev = vdev
        prefix = f"disk {vdev}: " if vdev else ""
        super().__init__(f"{prefix}{message}")

    def for_disk(self, vdev: str, driver: str | None = None) -> BackendError:
        """The same error attributed to disk *vdev*, for :func:`for_disk` to raise in its place.

        This base class returns itself unchanged; a subclass whose message names the disk once
        it is known (:class:`CommandError`, a plugin's own errors such as the qemu plugin's
        ``QMPCommandError``) returns a copy naming *vdev*.
        """
        del vdev, driver
        return self

    @classmethod
    def from_os_error(
        cls, exc: OSError, *, driver: str | None = None, vdev: str | None = None
    ) -> BackendError:
        """The failed file operation *exc*, as one line naming the file(s) and the reason."""
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        what = exc.strerror or str(exc)
        return cls(f"{names}: {what}" if names else what, driver=driver, vdev=vdev)


@final
class CommandError(BackendError):
    """An external command failed or could not be started.

    ``argv`` is the command as run, ``returncode`` its exit status (``None`` when it could not
    start or timed out) and ``stderr`` the tool's own message, stripped.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str,
        *,
        vdev: str | None = None,
        driver: str | None = None,
    ):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        tool = self.argv[0] if self.argv else "command"
        last = self.stderr.splitlines()[-1].strip() if self.stderr else ""
        # Many tools start their messages with their own name; do not say it twice.
        for prefix in (f"{tool}:", f"{os.path.basename(tool)}:"):
            if last.startswith(prefix):
                last = last[len(prefix) :].strip()
                break
        if returncode is None:
            detail = last or "could not be run"
        else:
            detail = last or f"exited with status {returncode}"
        super().__init__(f"{tool}: {detail}", driver=driver, vdev=vdev)

    def for_disk(self, vdev: str, driver: str | None = None) -> CommandError:
        """Return the same error attributed to disk *vdev*."""
        return CommandError(
            self.argv, self.returncode, self.stderr, vdev=vdev, driver=driver or self.driver
        )


@final
class UnsupportedOperationError(BackendError):
    """The backend cannot perform this operation on this disk."""


class PluginContractError(BackendError):
    """A plugin broke the contract of a hook: it returned something of the wrong type, nothing
    where a result is due, or raised something other than a :class:`SnapcoreError`.

    Raised by the plugin boundary (:mod:`snapcore.boundary`) in place of the plugin's result, so
    the operation fails for that disk and is undone like any other failure. ``plugin`` and
    ``hook`` name the culprit, ``vdev`` the disk (empty for domain-wide hooks) and ``problem``
    what came back.
    """

    def __init__(self, plugin: str, hook: str, vdev: str, problem: str, *, driver: str = ""):
        self.plugin = plugin
        self.hook = hook
        self.problem = problem
        where = f" for disk {vdev}" if vdev else ""
        super().__init__(
            f"plugin {plugin!r} broke the contract of {hook}{where}: {problem}",
            driver=driver or None,
            vdev=None,
        )
        self.vdev = vdev or None


@final
class HookTimeoutError(PluginContractError):
    """A hook did not return within its time limit (``seconds``).

    ``abandoned`` is true when the plugin's code may still be running: snapcore then does not
    undo that disk behind the plugin's back, keeps the journal, and leaves the undo to
    ``snapcore recover`` once this process has ended.
    """

    def __init__(
        self,
        plugin: str,
        hook: str,
        vdev: str,
        seconds: float,
        *,
        abandoned: bool,
        driver: str = "",
    ):
        self.seconds = seconds
        self.abandoned = abandoned
        why = f"it did not return within {seconds:g} s"
        if abandoned:
            why += "; it was left running"
        super().__init__(plugin, hook, vdev, why, driver=driver)


class SnapshotError(SnapcoreError):
    """A problem with a named checkpoint or disk snapshot."""

    exit_code = 2


@final
class SnapshotNotFoundError(SnapshotError, LookupError):
    """No checkpoint of that name exists for the domain."""

    def __init__(self, domain: str, name: str):
        self.domain = domain
        self.name = name
        super().__init__(f"domain {domain!r} has no snapshot {name!r}")


@final
class SnapshotExistsError(SnapshotError):
    """A checkpoint of that name already exists for the domain."""

    def __init__(self, domain: str, name: str):
        self.domain = domain
        self.name = name
        super().__init__(f"domain {domain!r} already has a snapshot named {name!r}")


class _BlockedError(SnapshotError):
    verb = "operation"

    def __init__(self, name: str, blockers: Sequence[str]):
        self.name = name
        self.blockers = tuple(blockers)
        super().__init__(f"cannot {self.verb} snapshot {name!r}: " + "; ".join(self.blockers))


@final
class CreateBlockedError(_BlockedError):
    """Preflight found reasons not to create the checkpoint; nothing was touched."""

    verb = "create"


@final
class DeleteBlockedError(_BlockedError):
    """Preflight found reasons not to delete the checkpoint; nothing was touched."""

    verb = "delete"


@final
class RevertBlockedError(_BlockedError):
    """Preflight found reasons not to revert to the checkpoint; nothing was touched."""

    verb = "revert to"


class CheckpointError(SnapcoreError):
    """A checkpoint operation could not be carried out."""


@final
class DomainStateError(CheckpointError):
    """The domain is in a state that does not allow the operation."""

    exit_code = 2

    def __init__(self, domain: str, state: str, required: str, action: str):
        self.domain = domain
        self.state = state
        self.required = required
        self.action = action
        super().__init__(f"domain {domain!r} is {state}; {action} needs it {required}")


@final
class DomainUnreachableError(CheckpointError):
    """The domain's monitor (a QMP socket, the xl toolstack) is missing or does not answer."""

    exit_code = 2

    def __init__(self, domain: str, address: str, reason: str):
        self.domain = domain
        self.address = address
        self.reason = reason
        super().__init__(f"domain {domain!r}: cannot reach its monitor {address}: {reason}")


@final
class HookFailedError(CheckpointError):
    """A fatal hook (``[[hook]]`` or the hooks dir) failed before the operation, which was
    not started: nothing was touched.

    :ivar hook: the hook's name. :ivar phase: ``pre-create``, ``pre-revert`` or ``pre-delete``.
    :ivar reason: ``exit status 3``, ``killed after its timeout of 5 s``...
    :ivar stderr: the end of what it wrote to stderr (at most a few KiB).
    """

    exit_code = 2

    def __init__(
        self, domain: str, name: str, *, hook: str, phase: str, reason: str, stderr: str = ""
    ):
        self.domain = domain
        self.name = name
        self.hook = hook
        self.phase = phase
        self.reason = reason
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
        said = f": {_shorten(tail[0])}" if tail else ""
        super().__init__(
            f"{phase} hook {hook!r} failed ({reason}){said}; snapshot {name!r} of domain "
            f"{domain!r}: nothing was changed"
        )


@final
class OperationFailedError(CheckpointError):
    """The operation failed and everything it had done was undone."""

    exit_code = 1

    def __init__(self, operation: str, name: str, cause: BaseException):
        self.operation = operation
        self.name = name
        self.cause = cause
        super().__init__(f"{operation} of snapshot {name!r} failed and was undone: {cause}")


@final
class DeleteFailedError(CheckpointError):
    """A delete failed before any disk's delete finished. A disk delete that fails may already
    have merged part of the snapshot into the layers that depend on it (never losing their
    data), so the checkpoint is marked as an unfinished delete: it can no longer be reverted to,
    and running the delete again finishes it. The current data and every other checkpoint are
    as they were."""

    exit_code = 1

    def __init__(self, name: str, cause: BaseException):
        self.operation = "delete"
        self.name = name
        self.cause = cause
        super().__init__(
            f"delete of snapshot {name!r} failed: {cause}; its disks may be partly merged "
            "already, so it can no longer be reverted to: run 'snapcore snapshot-delete -n "
            f"{name} DOMAIN' again to finish (the current data and every other snapshot are "
            "unchanged)"
        )


@final
class PartialCheckpointError(CheckpointError):
    """The operation failed and undoing it failed too; ``leftovers`` need attention."""

    exit_code = 3

    def __init__(
        self,
        operation: str,
        name: str,
        cause: BaseException,
        leftovers: Sequence[str],
        *,
        remedy: str = "run 'snapcore recover DOMAIN' to finish the cleanup",
    ):
        self.operation = operation
        self.name = name
        self.cause = cause
        self.leftovers = tuple(leftovers)
        self.remedy = remedy
        super().__init__(
            f"{operation} of snapshot {name!r} failed ({cause}) and could not be fully undone: "
            + "; ".join(self.leftovers)
            + f"; {remedy}"
        )


class StoreError(SnapcoreError):
    """The checkpoint store cannot be used."""


class StoreLockedError(StoreError):
    """Another command held the domain's lock for as long as this one would wait: busy.

    Exit 4, its own code: nothing was touched, and trying again later may well succeed (exit 1
    means an operation failed and was undone). ``holder`` says who holds the lock when the
    system tells (``"pid 1234: snapcore snapshot-create ..."``), else ``None``.
    """

    exit_code = 4

    def __init__(self, domain: str, timeout: float, holder: str | None = None):
        self.domain = domain
        self.timeout = timeout
        self.holder = holder
        who = f"another command ({holder})" if holder else "another command"
        super().__init__(
            f"domain {domain!r} is busy: {who} held its lock for the {timeout:g} s this one "
            "waited; nothing was changed; try again later, or wait longer with --lock-timeout"
        )


@final
class ImageLockedError(StoreLockedError):
    """Another command, of this domain or of another one sharing the image, held the host-wide
    lock of one of the domain's disks for as long as this one would wait (exit 4, busy).

    ``vdev`` and ``path`` name the disk; ``holder`` as for :class:`StoreLockedError`.
    """

    def __init__(
        self, domain: str, vdev: str, path: str, timeout: float, holder: str | None = None
    ):
        self.vdev = vdev
        self.path = path
        who = f"another command ({holder})" if holder else "another command"
        StoreError.__init__(
            self,
            f"disk {vdev} ({path}) of domain {domain!r} is busy: {who} held its image lock for "
            f"the {timeout:g} s this one waited; nothing was changed; try again later, or wait "
            "longer with --lock-timeout",
        )
        self.domain = domain
        self.timeout = timeout
        self.holder = holder


class StoreCorruptError(StoreError):
    """A file of the store (a checkpoint record, ``current.json``) cannot be read.

    ``path`` is the file, ``reason`` what is wrong with it, ``what`` the kind of file. Nothing
    was changed; ``snapcore recover --forget DOMAIN`` moves the file aside.
    """

    #: The kind of file, as the message names it.
    what = "snapshot record"

    def __init__(self, path: str, reason: str, *, what: str | None = None):
        self.path = path
        self.reason = reason
        if what is not None:
            self.what = what
        super().__init__(self._message())

    def _message(self) -> str:
        return (
            f"{self.what} {self.path} is unreadable: {_shorten(self.reason)}; nothing was "
            "changed; run 'snapcore recover --forget DOMAIN' to move it aside "
            f"(to {os.path.basename(self.path)}.corrupt-<time>)"
        )


@final
class JournalCorruptError(StoreCorruptError):
    """The domain's journal cannot be read: an interrupted operation of unknown extent.

    Exit 3, as for :class:`RecoveryNeededError`: snapcore cannot finish or undo what the
    journal was recording, and ``snapcore recover --forget DOMAIN`` (after a look at the
    domain's disks) moves it aside.
    """

    exit_code = 3
    what = "journal"

    def _message(self) -> str:
        return (
            f"the journal {self.path} is unreadable: {_shorten(self.reason)}; an interrupted "
            "operation may have left changes that snapcore cannot finish or undo: check the "
            "domain's disks, then run 'snapcore recover --forget DOMAIN' to move the journal "
            "aside (to journal.json.corrupt-<time>)"
        )


@final
class RecoveryNeededError(StoreError):
    """An interrupted operation could not be finished or undone automatically."""

    exit_code = 3

    def __init__(self, domain: str, reason: str):
        self.domain = domain
        self.reason = reason
        super().__init__(
            f"domain {domain!r} has an interrupted operation that could not be recovered: {reason}"
        )


@contextmanager
def for_disk(vdev: str, driver: str) -> Iterator[None]:
    """Attribute to disk *vdev* of *driver* what a backend's work on it raises.

    For storage plugins, around each hook's work: a :class:`BackendError` comes out as its
    :meth:`BackendError.for_disk` makes it (a :class:`CommandError` naming the disk, say), and
    an ``OSError`` as a :class:`BackendError` naming the file(s). Anything else passes
    unchanged.
    """
    try:
        yield
    except BackendError as exc:
        attributed = exc.for_disk(vdev, driver)
        if attributed is exc:
            raise
        raise attributed from exc
    except OSError as exc:
        raise BackendError.from_os_error(exc, driver=driver, vdev=vdev) from exc
