"""Test helpers for snapcore and its plugins: a recording command runner and a conformance suite
that every storage backend can run in its own tests.

This module is also a pytest plugin, registered through the ``pytest11`` entry point, so that the
:func:`recording_runner` fixture is available wherever snapcore is installed. Importing it is
cheap and changes nothing.

Testing a backend's commands without its tools, with :class:`RecordingRunner`::

    from snapcore.testing import RecordingRunner

    def test_create_runs_lvcreate(recording_runner: RecordingRunner) -> None:
        recording_runner.on(["lvs", "--reportformat=json", "vg0/web1"], stdout=LVS_JSON)
        recording_runner.fail(["lvcreate", "--snapshot"], prefix=True, stderr="VG vg0 is full")
        ...  # call the hook with HookContext(domain=..., run=recording_runner)
        assert recording_runner.argvs[0][0] == "lvs"

Checking that a backend keeps the hook contract, with :class:`BackendConformance`: subclass it
in a test module of your plugin, name the subclass ``Test...``, and tell it how to make a disk
and how to read and write the disk's current data. Every test of the suite then runs against
your plugin, once per snapshot kind it reports::

    from pathlib import Path

    import snapcore_rawcopy.plugin
    from snapcore.model import Disk
    from snapcore.testing import BackendConformance


    class TestRawcopyConformance(BackendConformance):
        plugin = snapcore_rawcopy.plugin
        driver = "rawcopy"

        def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
            path = tmp_path / f"{vdev}.raw"
            with path.open("wb") as f:
                f.truncate(size)
            return Disk(vdev=vdev, path=str(path), driver=self.driver)

        def write(self, disk: Disk, offset: int, data: bytes) -> None:
            with open(disk.path, "r+b") as f:
                f.seek(offset)
                f.write(data)

        def read(self, disk: Disk, offset: int, length: int) -> bytes:
            with open(disk.path, "rb") as f:
                f.seek(offset)
                return f.read(length)

A backend that needs a tool this host lacks marks its subclass with ``pytest.mark.skipif``; one
that runs its tools through a different runner overrides the ``runner`` fixture.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

import pytest

from snapcore.boundary import StorageBackend
from snapcore.context import HookContext
from snapcore.errors import CommandError, SnapcoreError
from snapcore.model import (
    BackendInfo,
    Disk,
    DiskSnapshot,
    Domain,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.plugins import Plugins, load_plugins
from snapcore.process import (
    DEFAULT_TIMEOUT,
    CommandRunner,
    Result,
    ShRunner,
    _check_argv,
    default_runner,
)

__all__ = [
    "BackendConformance",
    "Call",
    "RecordingRunner",
    "UnexpectedCommandError",
    "is_listed",
    "recording_runner",
]

# --------------------------------------------------------------------------------------------
# RecordingRunner
# --------------------------------------------------------------------------------------------


class UnexpectedCommandError(AssertionError):
    """A :class:`RecordingRunner` was asked to run a command it has no answer for.

    It is an ``AssertionError``, not a :class:`~snapcore.errors.CommandError`, so that plugin
    code that handles failed commands cannot swallow it: the test fails and names the command.
    """

    def __init__(self, argv: Sequence[str]):
        self.argv = tuple(argv)
        super().__init__(
            f"unexpected command: {shlex.join(self.argv)} "
            "(give it an answer with runner.on(...) or use RecordingRunner(passthrough=True))"
        )


@dataclass(frozen=True, slots=True)
class Call:
    """One command a :class:`RecordingRunner` was asked to run, and how it ended.

    :ivar result: what the command produced, or ``None`` when it raised.
    :ivar error: the :class:`~snapcore.errors.CommandError` it raised, if any.
    """

    argv: tuple[str, ...]
    ok_codes: tuple[int, ...]
    timeout: float | None
    env: Mapping[str, str] | None
    result: Result | None = None
    error: CommandError | None = None


@dataclass(slots=True)
class _Answer:
    argv: tuple[str, ...]
    prefix: bool
    returncode: int | None
    stdout: str
    stderr: str
    times: int | None

    def matches(self, argv: tuple[str, ...]) -> bool:
        if self.times == 0:
            return False
        if self.prefix:
            return argv[: len(self.argv)] == self.argv
        return argv == self.argv


class RecordingRunner:
    """A :class:`~snapcore.process.CommandRunner` for tests: it records every command and
    answers from a table of canned results.

    Answers are added with :meth:`on` (a result) and :meth:`fail` (a failure). A command is
    answered by the first answer added that matches it: the same argv, or an argv that starts
    with the answer's when ``prefix=True``. An answer given ``times=N`` is used N times and then
    skipped, so a sequence of answers for one command is written as several calls to
    :meth:`on`. A command whose status is not in the caller's ``ok_codes`` raises
    :class:`~snapcore.errors.CommandError`, exactly as the real runner does.

    A command with no answer is run for real by :class:`~snapcore.process.ShRunner` when
    ``passthrough`` is true (canned answers still take precedence); otherwise it raises
    :class:`UnexpectedCommandError`, or succeeds with empty output when ``strict`` is false.

    Every command is recorded in :attr:`calls` in the order it was asked for, whatever its
    outcome. The runner may be shared by hooks running in several threads.

    :param passthrough: run unanswered commands for real.
    :param strict: fail on unanswered commands (ignored with ``passthrough``).
    :param runner: the runner used for passthrough; :class:`~snapcore.process.ShRunner` by
        default.
    """

    def __init__(
        self,
        *,
        passthrough: bool = False,
        strict: bool = True,
        runner: CommandRunner | None = None,
    ):
        self.passthrough = passthrough
        self.strict = strict
        self._real = runner
        self._answers: list[_Answer] = []
        self._lock = threading.Lock()
        #: Every command run so far, oldest first.
        self.calls: list[Call] = []

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        """The argv of every command run so far, oldest first."""
        with self._lock:
            return [c.argv for c in self.calls]

    def on(
        self,
        argv: Sequence[str],
        *,
        stdout: str = "",
        stderr: str = "",
        returncode: int | None = 0,
        prefix: bool = False,
        times: int | None = None,
    ) -> RecordingRunner:
        """Answer *argv* with this output and exit status.

        :param returncode: the exit status; ``None`` means the program could not be started.
        :param prefix: match every command that starts with *argv*.
        :param times: use this answer that many times only (default: always).
        :returns: the runner, so that calls can be chained.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        answer = _Answer(_check_argv(argv), prefix, returncode, stdout, stderr, times)
        with self._lock:
            self._answers.append(answer)
        return self

    def fail(
        self,
        argv: Sequence[str],
        *,
        stderr: str = "",
        returncode: int | None = 1,
        prefix: bool = False,
        times: int | None = None,
    ) -> RecordingRunner:
        """Make *argv* fail with this message and exit status (``None``: could not start)."""
        return self.on(argv, stderr=stderr, returncode=returncode, prefix=prefix, times=times)

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Sequence[int] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        args = _check_argv(argv)
        codes = tuple(ok_codes)
        with self._lock:
            answer = next((a for a in self._answers if a.matches(args)), None)
            if answer is not None and answer.times is not None:
                answer.times -= 1
        if answer is None and self.passthrough:
            real = self._real or ShRunner()
            try:
                result = real(args, ok_codes=codes, timeout=timeout, env=env)
            except CommandError as exc:
                self._record(Call(args, codes, timeout, env, error=exc))
                raise
            self._record(Call(args, codes, timeout, env, result=result))
            return result
        if answer is None:
            if self.strict:
                self._record(Call(args, codes, timeout, env))
                raise UnexpectedCommandError(args)
            answer = _Answer(args, False, 0, "", "", None)
        if answer.returncode is None or answer.returncode not in codes:
            error = CommandError(args, answer.returncode, answer.stderr or answer.stdout)
            self._record(Call(args, codes, timeout, env, error=error))
            raise error
        result = Result(args, answer.returncode, answer.stdout, answer.stderr)
        self._record(Call(args, codes, timeout, env, result=result))
        return result

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


@pytest.fixture
def recording_runner() -> RecordingRunner:
    """A fresh, strict :class:`RecordingRunner` with no answers."""
    return RecordingRunner()


# --------------------------------------------------------------------------------------------
# BackendConformance
# --------------------------------------------------------------------------------------------

#: Bytes written per block by the conformance tests; a multiple of any sector size.
BLOCK: Final = 4096


def is_listed(snapshot: DiskSnapshot, listed: Sequence[DiskSnapshot]) -> bool:
    """Whether *listed* (a ``disk_snapshot_list`` answer) shows *snapshot* as present.

    The rule of the ``disk_snapshot_list`` hook: a snapshot of the same kind with the same
    ``locator`` (external, native) or the same ``name`` (internal).
    """
    for s in listed:
        if s.kind != snapshot.kind:
            continue
        if snapshot.kind is SnapshotKind.INTERNAL:
            if s.name == snapshot.name:
                return True
        elif s.locator == snapshot.locator:
            return True
    return False


def _block(tag: str, offset: int) -> bytes:
    unit = f"<{tag}@{offset}>".encode()
    return (unit * (BLOCK // len(unit) + 1))[:BLOCK]


class BackendConformance:
    """The hook contract of a storage backend, as a test class to subclass.

    A subclass sets :attr:`plugin` and :attr:`driver` and implements :meth:`make_disk`,
    :meth:`write` and :meth:`read`; see the module docstring for an example. It may set
    :attr:`kinds` to test fewer kinds, :attr:`disk_size`, override :meth:`make_request` (to
    choose where external snapshots go) and override the fixtures ``runner`` (default: the
    real runner), ``disk`` and ``ctx``.

    The tests call the hooks the way the coordinator does, through a fresh plugin manager that
    holds only the built-in ``none`` hypervisor and :attr:`plugin`, with keyword arguments, and
    check each answer against the contract written in :mod:`snapcore.hookspecs`: the data read
    back from the disk after each step and whether each snapshot is listed or gone.
    """

    #: The module or object holding the backend's hook implementations.
    plugin: ClassVar[object]
    #: The driver name the backend reports in ``backend_info``.
    driver: ClassVar[str]
    #: The kinds to test; ``None`` for every kind the backend's ``backend_info`` lists.
    kinds: ClassVar[Collection[SnapshotKind] | None] = None
    #: Size in bytes of the disks the tests make.
    disk_size: ClassVar[int] = 4 * 1024 * 1024

    # -- to implement ---------------------------------------------------------------------------

    def make_disk(self, tmp_path: Path, vdev: str, size: int) -> Disk:
        """Make a fresh writable disk of *size* bytes under *tmp_path* (for file-based
        backends) and return it with ``driver`` set to :attr:`driver`."""
        raise NotImplementedError

    def write(self, disk: Disk, offset: int, data: bytes) -> None:
        """Write *data* into the disk's current data at *offset*, as a guest would."""
        raise NotImplementedError

    def read(self, disk: Disk, offset: int, length: int) -> bytes:
        """Read *length* bytes of the disk's current data at *offset*, as a guest would."""
        raise NotImplementedError

    def make_request(
        self, disk: Disk, name: str, kind: SnapshotKind, tmp_path: Path
    ) -> SnapshotRequest:
        """The request the tests create; external snapshots get a target under *tmp_path*."""
        target = None
        if kind is SnapshotKind.EXTERNAL:
            target = str(tmp_path / f"{disk.vdev}.{name}.snapshot")
        return SnapshotRequest(disk=disk, name=name, kind=kind, target=target)

    # -- parametrization and fixtures -----------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run each test that takes ``kind`` once per kind to test."""
        if "kind" in metafunc.fixturenames:
            kinds = self._kinds_to_test()
            metafunc.parametrize("kind", kinds, ids=[k.value for k in kinds])

    def _kinds_to_test(self) -> list[SnapshotKind]:
        if self.kinds is not None:
            return sorted(self.kinds)
        try:
            info = load_plugins(entry_points=False, extra=[(self.driver, self.plugin)]).backend(
                self.driver
            )
        except SnapcoreError:
            info = None  # test_backend_info reports why
        return sorted(info.kinds) if info else []

    @pytest.fixture
    def plugins(self) -> Plugins:
        """A fresh plugin manager holding the backend under test."""
        return load_plugins(entry_points=False, extra=[(self.driver, self.plugin)])

    @pytest.fixture
    def info(self, plugins: Plugins) -> BackendInfo:
        """The backend's ``backend_info``."""
        info = plugins.backend(self.driver)
        assert info is not None, f"no loaded plugin reports driver {self.driver!r}"
        return info

    @pytest.fixture
    def runner(self) -> CommandRunner:
        """The runner given to the hooks; the real one unless overridden."""
        return default_runner()

    @pytest.fixture
    def disk(self, tmp_path: Path) -> Disk:
        """A fresh disk made by :meth:`make_disk`."""
        disk = self.make_disk(tmp_path, "vda", self.disk_size)
        assert disk.driver == self.driver, (
            f"make_disk must return a disk with driver={self.driver!r}, not {disk.driver!r}"
        )
        return disk

    @pytest.fixture
    def ctx(self, disk: Disk, runner: CommandRunner, tmp_path: Path) -> HookContext:
        """The hook context: a one-disk domain and a private work directory."""
        work_dir = tmp_path / "work"
        work_dir.mkdir(exist_ok=True)
        return HookContext(
            domain=Domain(name="conformance", disks=(disk,)), run=runner, work_dir=work_dir
        )

    # -- helpers --------------------------------------------------------------------------------

    def _fill(self, disk: Disk, tag: str) -> None:
        """Write data marked *tag* at the start and in the middle of the disk."""
        for offset in self._offsets():
            self.write(disk, offset, _block(tag, offset))

    def _expect(self, disk: Disk, tag: str, when: str) -> None:
        for offset in self._offsets():
            got = self.read(disk, offset, BLOCK)
            assert got == _block(tag, offset), (
                f"{when}: the disk at offset {offset} does not hold the data {tag!r} "
                f"(it holds {got[:24]!r}...)"
            )

    def _offsets(self) -> tuple[int, int]:
        return (0, (self.disk_size // 2) // BLOCK * BLOCK)

    def _backend(self, plugins: Plugins) -> StorageBackend:
        """The backend under test, called through snapcore's plugin boundary, which checks
        every result's type (a wrong one raises :class:`~snapcore.errors.PluginContractError`)."""
        return plugins.storage(self.driver)

    def _check(self, plugins: Plugins, ctx: HookContext, request: SnapshotRequest) -> list[str]:
        return self._backend(plugins).disk_snapshot_create_check(request=request, ctx=ctx)

    def _create(self, plugins: Plugins, ctx: HookContext, request: SnapshotRequest) -> DiskSnapshot:
        blockers = self._check(plugins, ctx, request)
        assert blockers == [], f"disk_snapshot_create_check blocks {request.name!r}: {blockers}"
        snap = self._backend(plugins).disk_snapshot_create(request=request, ctx=ctx)
        assert snap.driver == self.driver, f"snapshot driver is {snap.driver!r}"
        assert snap.vdev == request.disk.vdev, f"snapshot vdev is {snap.vdev!r}"
        assert snap.name == request.name, f"snapshot name is {snap.name!r}"
        if request.kind is not None:
            assert snap.kind is request.kind, f"asked for {request.kind}, made {snap.kind}"
        return snap

    def _list(self, plugins: Plugins, ctx: HookContext, *known: DiskSnapshot) -> list[DiskSnapshot]:
        disk = ctx.domain.disks[0]
        return self._backend(plugins).disk_snapshot_list(disk=disk, known=known, ctx=ctx)

    def _assert_listed(
        self, plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, when: str
    ) -> None:
        listed = self._list(plugins, ctx, snap)
        assert is_listed(snap, listed), f"{when}: snapshot {snap.name!r} is not listed: {listed}"

    def _assert_gone(
        self, plugins: Plugins, ctx: HookContext, snap: DiskSnapshot, when: str
    ) -> None:
        listed = self._list(plugins, ctx, snap)
        assert not is_listed(snap, listed), f"{when}: snapshot {snap.name!r} is still listed"

    def _revert(
        self,
        plugins: Plugins,
        ctx: HookContext,
        snap: DiskSnapshot,
        others: Sequence[DiskSnapshot] = (),
    ) -> None:
        backend, disk = self._backend(plugins), ctx.domain.disks[0]
        blockers = backend.disk_snapshot_revert_check(
            snapshot=snap, disk=disk, others=others, ctx=ctx
        )
        assert blockers == [], f"disk_snapshot_revert_check blocks {snap.name!r}: {blockers!r}"
        backend.disk_snapshot_revert(snapshot=snap, disk=disk, others=others, ctx=ctx)

    def _delete(
        self,
        plugins: Plugins,
        ctx: HookContext,
        snap: DiskSnapshot,
        others: Sequence[DiskSnapshot] = (),
    ) -> None:
        backend, disk = self._backend(plugins), ctx.domain.disks[0]
        blockers = backend.disk_snapshot_delete_check(
            snapshot=snap, disk=disk, others=others, ctx=ctx
        )
        assert blockers == [], f"disk_snapshot_delete_check blocks {snap.name!r}: {blockers!r}"
        backend.disk_snapshot_delete(snapshot=snap, disk=disk, others=others, ctx=ctx)

    # -- the tests ------------------------------------------------------------------------------

    def test_backend_info(self, plugins: Plugins) -> None:
        """backend_info reports this driver, available, with its default kind among its kinds."""
        drivers = plugins.drivers
        assert self.driver in drivers, (
            f"backend_info reports drivers {sorted(drivers)}, not {self.driver!r}"
        )
        info = drivers[self.driver]
        assert isinstance(info, BackendInfo)
        assert info.available, f"the backend is unavailable: {info.unavailable_reason}"
        assert info.kinds, "backend_info lists no snapshot kinds"
        assert info.default_kind in info.kinds, (
            f"default_kind {info.default_kind} is not one of {sorted(info.kinds)}"
        )
        if self.kinds is not None:
            missing = set(self.kinds) - info.kinds
            assert not missing, f"kinds to test {sorted(missing)} are not in backend_info"

    def test_create_check_passes_on_fresh_disk(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, tmp_path: Path
    ) -> None:
        """A fresh disk has no blockers, and checking changes nothing."""
        self._fill(disk, "fresh")
        request = self.make_request(disk, "c1", kind, tmp_path)
        blockers = self._check(plugins, ctx, request)
        assert blockers == [], f"a fresh disk is blocked: {blockers}"
        self._expect(disk, "fresh", "after disk_snapshot_create_check")
        assert self._list(plugins, ctx) == [], "a fresh disk lists snapshots after a check"

    def test_create_then_list(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, tmp_path: Path
    ) -> None:
        """A snapshot just made is listed, and making it does not change the disk's data."""
        self._fill(disk, "before")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, tmp_path))
        self._expect(disk, "before", "after disk_snapshot_create")
        self._assert_listed(plugins, ctx, snap, "after disk_snapshot_create")

    def test_revert_restores_snapshot(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, tmp_path: Path
    ) -> None:
        """Data written after a snapshot is gone after reverting to it; the snapshot stays."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, tmp_path))
        self._fill(disk, "later")
        self._expect(disk, "later", "after writing past the snapshot")
        self._revert(plugins, ctx, snap)
        self._expect(disk, "snap", "after disk_snapshot_revert")
        self._assert_listed(plugins, ctx, snap, "after disk_snapshot_revert")

    def test_revert_older_then_newer(
        self,
        plugins: Plugins,
        ctx: HookContext,
        disk: Disk,
        kind: SnapshotKind,
        tmp_path: Path,
        info: BackendInfo,
    ) -> None:
        """With two snapshots, reverting to either restores its data and keeps both."""
        if not info.revert_any:
            pytest.skip(f"{self.driver} reverts only to the latest snapshot (revert_any=False)")
        self._fill(disk, "old")
        old = self._create(plugins, ctx, self.make_request(disk, "c1", kind, tmp_path))
        self._fill(disk, "new")
        new = self._create(plugins, ctx, self.make_request(disk, "c2", kind, tmp_path))
        self._fill(disk, "current")
        self._revert(plugins, ctx, old, others=[new])
        self._expect(disk, "old", "after reverting to the older snapshot")
        self._assert_listed(plugins, ctx, old, "after reverting to the older snapshot")
        self._assert_listed(plugins, ctx, new, "after reverting to the older snapshot")
        self._revert(plugins, ctx, new, others=[old])
        self._expect(disk, "new", "after reverting to the newer snapshot")
        self._assert_listed(plugins, ctx, old, "after reverting to the newer snapshot")
        self._assert_listed(plugins, ctx, new, "after reverting to the newer snapshot")

    def test_delete_older_keeps_newer(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, tmp_path: Path
    ) -> None:
        """Deleting the older of two snapshots loses neither the newer one nor the current data;
        a deleted snapshot cannot be reverted to."""
        self._fill(disk, "old")
        old = self._create(plugins, ctx, self.make_request(disk, "c1", kind, tmp_path))
        self._fill(disk, "new")
        new = self._create(plugins, ctx, self.make_request(disk, "c2", kind, tmp_path))
        self._fill(disk, "current")
        self._delete(plugins, ctx, old, others=[new])
        self._expect(disk, "current", "after deleting the older snapshot")
        self._assert_gone(plugins, ctx, old, "after deleting it")
        self._assert_listed(plugins, ctx, new, "after deleting the older snapshot")
        blockers = self._backend(plugins).disk_snapshot_revert_check(
            snapshot=old, disk=disk, others=[new], ctx=ctx
        )
        assert blockers, "disk_snapshot_revert_check allows reverting to a deleted snapshot"
        self._revert(plugins, ctx, new)
        self._expect(disk, "new", "after reverting to the newer snapshot")

    def test_delete_is_idempotent(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, tmp_path: Path
    ) -> None:
        """Deleting a snapshot twice succeeds twice and leaves the disk's data alone."""
        self._fill(disk, "snap")
        snap = self._create(plugins, ctx, self.make_request(disk, "c1", kind, tmp_path))
        self._fill(disk, "current")
        self._delete(plugins, ctx, snap)
        self._assert_gone(plugins, ctx, snap, "after disk_snapshot_delete")
        # a second delete must succeed (the boundary refuses anything but True)
        self._backend(plugins).disk_snapshot_delete(snapshot=snap, disk=disk, others=[], ctx=ctx)
        self._expect(disk, "current", "after deleting the snapshot twice")
        self._assert_gone(plugins, ctx, snap, "after deleting it twice")

    def test_abort_after_create(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, tmp_path: Path
    ) -> None:
        """Aborting a finished create removes the snapshot and keeps the data from before."""
        self._fill(disk, "before")
        request = self.make_request(disk, "c1", kind, tmp_path)
        snap = self._create(plugins, ctx, request)
        backend = self._backend(plugins)
        backend.disk_snapshot_abort(request=request, created=snap, ctx=ctx)
        self._expect(disk, "before", "after disk_snapshot_abort")
        self._assert_gone(plugins, ctx, snap, "after disk_snapshot_abort")
        backend.disk_snapshot_abort(request=request, created=snap, ctx=ctx)
        self._expect(disk, "before", "after a second disk_snapshot_abort")

    def test_abort_without_create(
        self, plugins: Plugins, ctx: HookContext, disk: Disk, kind: SnapshotKind, tmp_path: Path
    ) -> None:
        """Aborting a create that never ran succeeds and touches nothing: not the data, not
        another snapshot of the disk."""
        self._fill(disk, "kept")
        kept = self._create(plugins, ctx, self.make_request(disk, "c0", kind, tmp_path))
        self._fill(disk, "current")
        request = self.make_request(disk, "c1", kind, tmp_path)
        self._backend(plugins).disk_snapshot_abort(request=request, created=None, ctx=ctx)
        self._expect(disk, "current", "after aborting a create that never ran")
        listed = self._list(plugins, ctx, kept)
        assert is_listed(kept, listed), "aborting another create removed an existing snapshot"
        assert [s.name for s in listed if s.name == "c1"] == [], f"c1 appeared: {listed}"
        self._revert(plugins, ctx, kept)
        self._expect(disk, "kept", "after reverting to a snapshot made before the abort")
