"""A small synchronous facade over the ``qemu.qmp`` asyncio client.

snapcore's hooks are synchronous and may run in several threads at once; ``qemu.qmp`` is
asyncio. :class:`QMPSession` runs the client on a private event loop in a daemon thread and
offers blocking, thread-safe calls, each with a timeout (``qemu.qmp`` has none of its own).
Errors are translated here, once: a missing or silent socket becomes
:class:`~snapcore.errors.DomainUnreachableError`, a QMP error reply
:class:`QMPCommandError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from snapcore.errors import BackendError, DomainUnreachableError

if TYPE_CHECKING:
    from snapcore.context import HookContext

log = logging.getLogger(__name__)

T = TypeVar("T")


@final
class QMPCommandError(BackendError):
    """QEMU answered a QMP command with an error (or the connection dropped during it).

    ``command`` is the QMP command, ``error_class`` QEMU's error class (``GenericError``,
    ``DeviceNotFound``...) and ``desc`` its message.
    """

    def __init__(
        self,
        command: str,
        error_class: str,
        desc: str,
        *,
        vdev: str | None = None,
        driver: str | None = None,
    ):
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QMP {command}: {desc}", driver=driver, vdev=vdev)

    def for_disk(self, vdev: str, driver: str | None = None) -> BackendError:
        """The same error naming disk *vdev*, unless it names a disk already."""
        if self.vdev is not None:
            return self
        return QMPCommandError(
            self.command, self.error_class, self.desc, vdev=vdev, driver=driver or self.driver
        )


#: The name under which the qemu hypervisor offers a domain's session to storage plugins
#: (``ctx.service(SERVICE)``; see :func:`monitor`).
SERVICE: Final = "qmp"

#: Default seconds to wait for a connection or a command's answer.
DEFAULT_TIMEOUT: Final = 30.0
#: Connections tried when what QEMU sends first is not its greeting (see :meth:`connect`).
GREETING_ATTEMPTS: Final = 3


class EventWaiter:
    """Collects QMP events of some names from the moment it is created (see
    :meth:`QMPSession.events`), so an event sent in answer to a command is never missed."""

    def __init__(self, session: QMPSession, names: Sequence[str]):
        from qemu.qmp import EventListener

        self._session = session
        self.listener = EventListener(list(names))

    def get(
        self, timeout: float, match: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Return the next event (that *match* accepts), waiting at most *timeout* seconds.

        :raises DomainUnreachableError: when no such event comes in time.
        """

        async def wait() -> dict[str, Any]:
            while True:
                event = await self.listener.get()
                data = dict(event)
                if match is None or match(data):
                    return data

        return self._session._run(
            wait(), timeout, f"waiting for {', '.join(self.listener.names or [])}"
        )


class QMPSession:
    """One connection to a QEMU monitor socket.

    :param address: the UNIX socket path.
    :param domain: the domain's name, for messages.
    :param timeout: default timeout for connecting and for each command.
    :param guest_agent: the socket is a QEMU guest agent's, which speaks the same protocol
        without a greeting.
    """

    def __init__(
        self,
        address: str,
        *,
        domain: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        guest_agent: bool = False,
    ):
        self.address = address
        self.domain = domain
        self.timeout = timeout
        #: a QEMU guest agent socket: no greeting, no capabilities negotiation
        self.guest_agent = guest_agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._fd_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def connect(self) -> QMPSession:
        """Connect and negotiate capabilities.

        :raises DomainUnreachableError: the socket is missing, refuses, or does not greet us.
        """
        from qemu.qmp import QMPClient
        from qemu.qmp.qmp_client import GreetingError

        with self._lock:
            if self._client is not None:
                return self
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name=f"qmp-{self.domain}", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
            for attempt in range(1, GREETING_ATTEMPTS + 1):
                client = QMPClient(self.domain or None)
                if self.guest_agent:
                    client.await_greeting = False
                    client.negotiate = False
                try:
                    self._run(client.connect(self.address), self.timeout, "connecting")
                except DomainUnreachableError:
                    self._stop_loop()
                    raise
                except Exception as exc:  # qemu.qmp ConnectError, OSError...
                    reason = getattr(exc, "exc", None) or exc
                    if attempt < GREETING_ATTEMPTS and isinstance(reason, GreetingError):
                        # QEMU 7.2 sends an event that happens while a client connects (the
                        # RESUME of a QEMU that just started) before its greeting: try again
                        log.debug("qmp %s: %s; connecting again", self.address, reason)
                        with contextlib.suppress(Exception):
                            self._run(client.disconnect(), 5.0, "disconnecting")
                        continue
                    self._stop_loop()
                    raise DomainUnreachableError(self.domain, self.address, str(reason)) from exc
                break
            self._client = client
            log.debug("qmp %s: connected", self.address)
            return self

    def close(self) -> None:
        """Disconnect; safe to call more than once."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._loop is not None:
                with contextlib.suppress(Exception):
                    self._run(client.disconnect(), 5.0, "disconnecting")
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(5)
            loop.close()

    def __enter__(self) -> QMPSession:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls --------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise DomainUnreachableError(self.domain, self.address, "not connected")
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(coro, timeout if timeout is not None else None), loop
        )
        try:
            return future.result()
        except TimeoutError as exc:
            raise DomainUnreachableError(
                self.domain, self.address, f"no answer after {timeout:g} s while {what}"
            ) from exc

    def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one QMP command and return its ``return`` value.

        :raises QMPCommandError: QEMU answered with an error, or the connection dropped.
        :raises DomainUnreachableError: not connected, or no answer within the timeout.
        """
        from qemu.qmp import ExecInterruptedError, ExecuteError, QMPError, Runstate

        if self._client is not None and self._client.runstate != Runstate.RUNNING:
            self.close()  # the connection dropped (QEMU quit or died): start afresh
        if self._client is None:
            self.connect()
        log.debug("qmp %s: %s %s", self.address, command, dict(arguments or {}))
        try:
            return self._run(
                self._client.execute(command, dict(arguments or {})),
                self.timeout if timeout is None else timeout,
                f"running {command}",
            )
        except ExecuteError as exc:
            raise QMPCommandError(command, exc.error_class, str(exc)) from exc
        except ExecInterruptedError as exc:
            raise QMPCommandError(
                command, "Disconnected", f"connection lost ({exc}); did the QEMU process exit?"
            ) from exc
        except QMPError as exc:
            raise DomainUnreachableError(self.domain, self.address, str(exc)) from exc

    def peer_pid(self) -> int | None:
        """The process id of the QEMU at the other end of the socket (``SO_PEERCRED``)."""
        if self._client is None:
            self.connect()
        writer = getattr(self._client, "_writer", None)
        sock = writer.transport.get_extra_info("socket") if writer is not None else None
        if sock is None:
            return None
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", creds)
        return pid or None

    def _pass_fd(self, fd: int, command: str, arguments: Mapping[str, object]) -> Any:
        """Send *fd* over the socket and run the command that takes it, as one step: QEMU
        pairs a passed descriptor with the next command, so two threads must not interleave."""
        with self._fd_lock:
            if self._client is None:
                self.connect()
            client = self._client

            async def send() -> None:
                client.send_fd_scm(fd)

            self._run(send(), self.timeout, "passing a file descriptor")
            return self.execute(command, arguments)

    def send_fd(self, fd: int, name: str) -> None:
        """Pass the open file descriptor *fd* to QEMU under *name* (``getfd``), as migration
        URIs ``fd:NAME`` use. The descriptor is not closed; QEMU gets its own copy."""
        self._pass_fd(fd, "getfd", {"fdname": name})

    def add_fd(self, fd: int, *, opaque: str | None = None, fdset: int | None = None) -> int:
        """Pass *fd* into a new fd set (``add-fd``), or into set *fdset*, as block nodes and
        ``file:`` migrations opened from ``/dev/fdset/N`` use; return N. The descriptor is not
        closed."""
        arguments: dict[str, object] = {"opaque": opaque} if opaque is not None else {}
        if fdset is not None:
            arguments["fdset-id"] = fdset
        info = self._pass_fd(fd, "add-fd", arguments)
        return int(info["fdset-id"])

    @contextlib.contextmanager
    def events(self, *names: str) -> Iterator[EventWaiter]:
        """Collect events named *names* while the ``with`` block runs.

        Enter it before sending the command whose events you wait for.
        """
        if self._client is None:
            self.connect()
        waiter = EventWaiter(self, names)
        self._client.register_listener(waiter.listener)
        try:
            yield waiter
        finally:
            self._client.remove_listener(waiter.listener)


def monitor(ctx: HookContext) -> QMPSession | None:
    """The QMP session the ``qemu`` hypervisor offers for ``ctx.domain``'s operation
    (``ctx.service("qmp")``), or ``None`` when the domain has no QEMU monitor.

    The session is shared by every hook of the operation and closed by snapcore at its end;
    it connects on first use.
    """
    session = ctx.service(SERVICE)
    return session if isinstance(session, QMPSession) else None
