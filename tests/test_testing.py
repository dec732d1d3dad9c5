"""Tests of snapcore.testing: the RecordingRunner, and the conformance suite itself.

The suite is checked from the outside, with pytester: a small in-memory backend passes all of
it, and for every test of the suite a backend broken in one way makes that test fail (or skip,
where the backend says it cannot do the thing), for the expected reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from snapcore.errors import CommandError
from snapcore.model import DiskSnapshot, SnapshotKind
from snapcore.process import CommandRunner, Result
from snapcore.testing import (
    BackendConformance,
    CommandFault,
    FileFault,
    RecordingRunner,
    UnexpectedCommandError,
    call_in_child,
    is_listed,
)

pytest_plugins = ["pytester"]


# -- RecordingRunner ------------------------------------------------------------------------------


def test_answers_from_the_table_and_records() -> None:
    runner = RecordingRunner()
    runner.on(["qemu-img", "info", "a.qcow2"], stdout='{"format": "qcow2"}')
    result = runner(["qemu-img", "info", "a.qcow2"], timeout=5, env={"X": "1"})
    assert result == Result(("qemu-img", "info", "a.qcow2"), 0, '{"format": "qcow2"}', "")
    [call] = runner.calls
    assert call.argv == ("qemu-img", "info", "a.qcow2")
    assert call.ok_codes == (0,)
    assert call.timeout == 5
    assert call.env == {"X": "1"}
    assert call.result == result
    assert call.error is None
    assert runner.argvs == [("qemu-img", "info", "a.qcow2")]


def test_is_a_command_runner() -> None:
    runner: CommandRunner = RecordingRunner(strict=False)
    assert runner(["true"]).returncode == 0


def test_unanswered_command_fails_the_test_and_is_recorded() -> None:
    runner = RecordingRunner()
    with pytest.raises(UnexpectedCommandError, match=r"unexpected command: lvs 'a b'"):
        runner(["lvs", "a b"])
    assert isinstance(UnexpectedCommandError(["x"]), AssertionError)
    assert not isinstance(UnexpectedCommandError(["x"]), CommandError)
    [call] = runner.calls
    assert (call.argv, call.result, call.error) == (("lvs", "a b"), None, None)


def test_not_strict_answers_unknown_commands_with_success() -> None:
    runner = RecordingRunner(strict=False)
    assert runner(["anything", "at", "all"]) == Result(("anything", "at", "all"), 0, "", "")
    assert runner.argvs == [("anything", "at", "all")]


def test_failure_raises_command_error() -> None:
    runner = RecordingRunner().fail(["lvcreate", "-s"], prefix=True, stderr="  VG full\n")
    with pytest.raises(CommandError) as info:
        runner(["lvcreate", "-s", "-n", "snap", "vg/lv"])
    assert info.value.argv == ("lvcreate", "-s", "-n", "snap", "vg/lv")
    assert info.value.returncode == 1
    assert info.value.stderr == "VG full"
    assert runner.calls[0].error is info.value
    assert runner.calls[0].result is None


def test_missing_program() -> None:
    runner = RecordingRunner().fail(["vhd-util"], prefix=True, returncode=None)
    with pytest.raises(CommandError, match="could not be run") as info:
        runner(["vhd-util", "query"])
    assert info.value.returncode is None


def test_status_is_checked_against_ok_codes() -> None:
    runner = RecordingRunner().on(["cmp", "a", "b"], returncode=1, stdout="differ")
    assert runner(["cmp", "a", "b"], ok_codes=(0, 1)).returncode == 1
    with pytest.raises(CommandError, match="differ"):
        runner(["cmp", "a", "b"])


def test_first_matching_answer_wins_and_times_runs_out() -> None:
    runner = RecordingRunner()
    runner.on(["lvs"], stdout="first", times=2).on(["lvs"], prefix=True, stdout="then")
    runner.on(["lvs", "vg"], stdout="never: the prefix answer above comes first")
    outputs = [runner(["lvs"]).stdout for _ in range(3)] + [runner(["lvs", "vg"]).stdout]
    assert outputs == ["first", "first", "then", "then"]
    exact = RecordingRunner().on(["lvs"], times=1)
    exact(["lvs"])
    with pytest.raises(UnexpectedCommandError):
        exact(["lvs"])
    with pytest.raises(UnexpectedCommandError):
        exact(["lvs", "vg"])  # an exact answer does not match longer commands
    with pytest.raises(ValueError, match="times"):
        exact.on(["lvs"], times=0)


def test_refuses_shell_strings() -> None:
    runner = RecordingRunner(strict=False)
    with pytest.raises(TypeError, match="shell string"):
        runner("rm -rf /tmp/x")
    with pytest.raises(TypeError):
        runner.on("ls -l")
    assert runner.calls == []


def test_passthrough_runs_for_real_and_records() -> None:
    runner = RecordingRunner(passthrough=True)
    runner.on(["uname"], stdout="canned")
    assert runner(["printf", "%s", "hi"]).stdout == "hi"
    assert runner(["uname"]).stdout == "canned"  # answers still come first
    with pytest.raises(CommandError) as info:
        runner(["sh", "-c", "echo oops >&2; exit 3"])
    assert (info.value.returncode, info.value.stderr) == (3, "oops")
    assert runner.argvs == [
        ("printf", "%s", "hi"),
        ("uname",),
        ("sh", "-c", "echo oops >&2; exit 3"),
    ]
    assert runner.calls[0].result is not None
    assert runner.calls[0].result.stdout == "hi"
    assert runner.calls[2].error is info.value


def test_passthrough_to_another_runner() -> None:
    inner = RecordingRunner().on(["x"], stdout="inner")
    outer = RecordingRunner(passthrough=True, runner=inner)
    assert outer(["x"]).stdout == "inner"
    assert outer.argvs == inner.argvs == [("x",)]


def test_shared_by_threads() -> None:
    runner = RecordingRunner().on(["c"], stdout="a", times=100).on(["c"], stdout="b")
    outputs: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            out = runner(["c"]).stdout
            with lock:
                outputs.append(out)
            time.sleep(0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(runner.calls) == 400
    assert outputs.count("a") == 100


def test_fixture_comes_from_the_pytest11_entry_point(
    recording_runner: RecordingRunner, pytestconfig: pytest.Config
) -> None:
    import snapcore.testing

    assert isinstance(recording_runner, RecordingRunner)
    assert recording_runner.calls == []
    assert pytestconfig.pluginmanager.get_plugin("snapcore") is snapcore.testing


def test_import_is_cheap() -> None:
    code = "import sys, snapcore.testing; print(sorted({'sh', 'qemu'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- kill faults in a child process ---------------------------------------------------------------


def test_a_child_gives_back_what_it_returned_and_leaves_the_parent_alone(tmp_path: Path) -> None:
    def work() -> dict[str, int]:
        (tmp_path / "done").write_text("yes")
        os.environ["SNAPCORE_CHILD_RAN"] = "1"  # changes the child's memory, not ours
        return {"pid": os.getpid()}

    outcome = call_in_child(work)
    assert outcome.killed is None
    assert outcome.error is None
    assert isinstance(outcome.value, dict)
    assert outcome.value["pid"] != os.getpid()
    assert (tmp_path / "done").read_text() == "yes"
    assert "SNAPCORE_CHILD_RAN" not in os.environ


def test_a_child_reports_what_it_raised() -> None:
    def work() -> None:
        raise CommandError(("qemu-img", "info"), 1, "no such file")

    outcome = call_in_child(work)
    assert outcome.killed is None
    assert outcome.error is not None
    assert "CommandError" in outcome.error
    assert "no such file" in outcome.error


def test_a_command_kill_stops_the_child_before_the_command(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    fault = CommandFault(RecordingRunner(passthrough=True), 2, kill=True)

    def work() -> None:
        fault(["touch", str(tmp_path / "one")])
        fault(["touch", str(tmp_path / "two")])
        marks.write_text("after the second command")

    outcome = call_in_child(work)
    assert outcome.killed == f"before command #2 (touch {tmp_path / 'two'}) started"
    assert (tmp_path / "one").exists()
    assert not (tmp_path / "two").exists()
    assert not marks.exists()


@pytest.mark.parametrize("point", ["before", "after"])
def test_a_file_kill_stops_the_child_at_the_operation(tmp_path: Path, point: str) -> None:
    fault = FileFault(2, [tmp_path], kill=point)

    def work() -> None:
        with fault.active():
            os.mkdir(tmp_path / "d")  # operation 1
            os.rename(tmp_path / "d", tmp_path / "e")  # operation 2
            (tmp_path / "f").write_text("x")  # operation 3: built-in open, for writing

    outcome = call_in_child(work)
    assert outcome.killed is not None
    assert outcome.killed.startswith(f"{point} file operation #2 (rename(")
    assert (tmp_path / "e").exists() is (point == "after")
    assert (tmp_path / "d").exists() is (point == "before")
    assert not (tmp_path / "f").exists()


def test_a_file_kill_counts_writes_through_the_built_in_open(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("kept")
    fault = FileFault(1, [tmp_path], kill="after")

    def work() -> None:
        with fault.active():
            with open(tmp_path / "old") as f:  # reading: not an operation
                f.read()
            with open(tmp_path / "new", "w") as f:
                f.write("never written")

    outcome = call_in_child(work)
    assert outcome.killed == f"after file operation #1 (builtins.open({tmp_path / 'new'})) returned"
    assert (tmp_path / "new").read_text() == ""
    assert FileFault(1, [tmp_path]).opens is False, "the raising variant leaves open() alone"


def test_a_kill_outside_a_child_refuses_to_kill_the_test_process(tmp_path: Path) -> None:
    fault = CommandFault(RecordingRunner(strict=False), 1, kill=True)
    with pytest.raises(RuntimeError, match="outside the child process of call_in_child"):
        fault(["true"])
    with (
        pytest.raises(RuntimeError, match="outside the child process"),
        FileFault(1, [tmp_path], kill="before").active(),
    ):
        os.mkdir(tmp_path / "d")
    assert not (tmp_path / "d").exists()
    with pytest.raises(ValueError, match="kill must be one of"):
        FileFault(1, [tmp_path], kill="during")


def test_a_child_that_dies_otherwise_or_hangs_fails() -> None:
    with pytest.raises(AssertionError, match="ended by exit status 3 without saying why"):
        call_in_child(lambda: os._exit(3))
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"did not finish within 0\.5 s"):
        call_in_child(lambda: time.sleep(30), timeout=0.5)
    assert time.monotonic() - started < 10


# -- is_listed ------------------------------------------------------------------------------------


def _snap(kind: SnapshotKind, name: str, locator: str) -> DiskSnapshot:
    return DiskSnapshot(vdev="vda", path="/d", driver="x", kind=kind, name=name, locator=locator)


def test_is_listed_follows_the_list_hook_rule() -> None:
    internal = _snap(SnapshotKind.INTERNAL, "c1", "/d")
    native = _snap(SnapshotKind.NATIVE, "c1", "/d.c1")
    assert is_listed(internal, [_snap(SnapshotKind.INTERNAL, "c1", "id-7")])
    assert not is_listed(internal, [_snap(SnapshotKind.INTERNAL, "c2", "/d")])
    assert is_listed(native, [_snap(SnapshotKind.NATIVE, "other-name", "/d.c1")])
    assert not is_listed(native, [_snap(SnapshotKind.NATIVE, "c1", "/elsewhere")])
    assert not is_listed(native, [_snap(SnapshotKind.EXTERNAL, "c1", "/d.c1")])
    assert not is_listed(native, [])


# -- the conformance suite, from the outside ------------------------------------------------------

MEMBACK = '''
"""An in-memory backend with internal snapshots, and broken variants of it."""

from snapcore.hookspecs import hookimpl
from snapcore.model import BackendInfo, Disk, DiskSnapshot, SnapshotKind
from snapcore.testing import BackendConformance

DRIVER = "mem"
KIND = SnapshotKind.INTERNAL


class MemBackend:
    """Disks are bytearrays by path; snapshots are copies by path and name, oldest first."""

    driver = DRIVER
    available = True
    revert_any = True

    def __init__(self):
        self.disks = {}
        self.snaps = {}

    def _snap(self, path, vdev, name):
        return DiskSnapshot(
            vdev=vdev, path=path, driver=DRIVER, kind=KIND, name=name, locator=f"{path}#{name}"
        )

    @hookimpl
    def backend_info(self):
        return BackendInfo(
            driver=self.driver,
            kinds=frozenset({KIND}),
            default_kind=KIND,
            revert_any=self.revert_any,
            available=self.available,
            unavailable_reason=None if self.available else "broken on purpose",
        )

    @hookimpl
    def disk_snapshot_create_check(self, request):
        if request.disk.driver != DRIVER:
            return None
        if request.name in self.snaps.get(request.disk.path, {}):
            return ["exists"]
        return []

    @hookimpl
    def disk_snapshot_create(self, request):
        if request.disk.driver != DRIVER:
            return None
        path = request.disk.path
        self.snaps.setdefault(path, {})[request.name] = bytes(self.disks[path])
        return self._snap(path, request.disk.vdev, request.name)

    @hookimpl
    def disk_snapshot_abort(self, request):
        if request.disk.driver != DRIVER:
            return None
        self.snaps.get(request.disk.path, {}).pop(request.name, None)
        return True

    @hookimpl
    def disk_snapshot_delete_check(self, snapshot):
        return None if snapshot.driver != DRIVER else []

    @hookimpl
    def disk_snapshot_delete(self, snapshot):
        if snapshot.driver != DRIVER:
            return None
        self.snaps.get(snapshot.path, {}).pop(snapshot.name, None)
        return True

    @hookimpl
    def disk_snapshot_revert_check(self, snapshot):
        if snapshot.driver != DRIVER:
            return None
        return [] if snapshot.name in self.snaps.get(snapshot.path, {}) else ["it is gone"]

    @hookimpl
    def disk_snapshot_revert(self, snapshot):
        if snapshot.driver != DRIVER:
            return None
        self.disks[snapshot.path][:] = self.snaps[snapshot.path][snapshot.name]
        return True

    @hookimpl
    def disk_snapshot_list(self, disk):
        if disk.driver != DRIVER:
            return None
        return [self._snap(disk.path, disk.vdev, n) for n in self.snaps.get(disk.path, {})]


class WrongDriver(MemBackend):
    driver = "other"


class Unavailable(MemBackend):
    available = False


class CheckBlocks(MemBackend):
    @hookimpl
    def disk_snapshot_create_check(self, request):
        return None if request.disk.driver != DRIVER else ["always blocked"]


class CreateZeroes(MemBackend):
    @hookimpl
    def disk_snapshot_create(self, request):
        snap = super().disk_snapshot_create(request)
        if snap is not None:
            self.disks[request.disk.path][:] = bytes(len(self.disks[request.disk.path]))
        return snap


class ListsNothing(MemBackend):
    @hookimpl
    def disk_snapshot_list(self, disk):
        return None if disk.driver != DRIVER else []


class RevertDoesNothing(MemBackend):
    @hookimpl
    def disk_snapshot_revert(self, snapshot):
        return None if snapshot.driver != DRIVER else True


class RevertToLatest(MemBackend):
    @hookimpl
    def disk_snapshot_revert(self, snapshot):
        if snapshot.driver != DRIVER:
            return None
        latest = list(self.snaps[snapshot.path].values())[-1]
        self.disks[snapshot.path][:] = latest
        return True


class RevertDropsNewer(MemBackend):
    @hookimpl
    def disk_snapshot_revert(self, snapshot, others):
        if snapshot.driver != DRIVER:
            return None
        done = super().disk_snapshot_revert(snapshot)
        names = list(self.snaps.get(snapshot.path, {}))
        for name in names[names.index(snapshot.name) + 1 :]:
            del self.snaps[snapshot.path][name]
        return done


class LatestOnly(RevertDropsNewer):
    revert_any = False


class DeleteTakesAll(MemBackend):
    @hookimpl
    def disk_snapshot_delete(self, snapshot):
        if snapshot.driver != DRIVER:
            return None
        self.snaps.pop(snapshot.path, None)
        return True


class DeleteNotIdempotent(MemBackend):
    @hookimpl
    def disk_snapshot_delete(self, snapshot):
        if snapshot.driver != DRIVER:
            return None
        del self.snaps[snapshot.path][snapshot.name]
        return True


class RevertCheckAllowsAll(MemBackend):
    @hookimpl
    def disk_snapshot_revert_check(self, snapshot):
        return None if snapshot.driver != DRIVER else []


class AbortDoesNothing(MemBackend):
    @hookimpl
    def disk_snapshot_abort(self, request):
        return None if request.disk.driver != DRIVER else True


class AbortTakesAll(MemBackend):
    @hookimpl
    def disk_snapshot_abort(self, request):
        if request.disk.driver != DRIVER:
            return None
        self.snaps.pop(request.disk.path, None)
        return True


class MemConformance(BackendConformance):
    driver = DRIVER
    kill_faults = False  # a killed process takes an in-memory backend's state with it

    def make_disk(self, tmp_path, vdev, size):
        path = str(tmp_path / f"{vdev}.mem")
        self.plugin.disks[path] = bytearray(size)
        return Disk(vdev=vdev, path=path, driver=DRIVER)

    def write(self, disk, offset, data):
        self.plugin.disks[disk.path][offset : offset + len(data)] = data

    def read(self, disk, offset, length):
        return bytes(self.plugin.disks[disk.path][offset : offset + length])
'''

#: Every test of the suite, with a backend that must fail it and words the failure must hold.
BROKEN = [
    ("test_backend_info", "WrongDriver", "not 'mem'"),
    ("test_backend_info", "Unavailable", "broken on purpose"),
    ("test_create_check_passes_on_fresh_disk", "CheckBlocks", "always blocked"),
    ("test_create_then_list", "ListsNothing", "is not listed"),
    ("test_create_then_list", "CreateZeroes", "does not hold the data 'before'"),
    ("test_revert_restores_snapshot", "RevertDoesNothing", "does not hold the data 'snap'"),
    ("test_revert_older_then_newer", "RevertToLatest", "does not hold the data 'old'"),
    ("test_revert_older_then_newer", "RevertDropsNewer", "'c2' is not listed"),
    ("test_delete_older_keeps_newer", "DeleteTakesAll", "'c2' is not listed"),
    ("test_delete_older_keeps_newer", "RevertCheckAllowsAll", "allows reverting to a deleted"),
    ("test_delete_is_idempotent", "DeleteNotIdempotent", "KeyError"),
    ("test_abort_after_create", "AbortDoesNothing", "'c1' is still listed"),
    ("test_abort_without_create", "AbortTakesAll", "removed an existing snapshot"),
]


def _suite(pytester: pytest.Pytester, backend: str) -> None:
    pytester.syspathinsert()
    pytester.makepyfile(
        memback=MEMBACK,
        test_mem=f"""
        import memback

        class TestMem(memback.MemConformance):
            plugin = memback.{backend}()
        """,
    )


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # Without hypothesis's plugin, which re-imports much of hypothesis in every inner run.
    return pytester.runpytest("-p", "no:hypothesispytest", *args)


def test_a_correct_backend_passes_every_test(pytester: pytest.Pytester) -> None:
    _suite(pytester, "MemBackend")
    result = _run(pytester, "-v", "-rs")
    # internal snapshots have no target and no backing chain: three tests say so and skip;
    # the kill variant of fault injection (three tests, two faults each) is off in memory
    result.assert_outcomes(passed=24, skipped=9)
    result.stdout.fnmatch_lines(["*the kill variant is off (TestMem.kill_faults = False)*"])
    result.stdout.fnmatch_lines(["*test_revert_older_then_newer?internal? PASSED*"])
    result.stdout.fnmatch_lines(["*internal snapshots have no target*"])
    result.stdout.fnmatch_lines(["*internal snapshots have no backing chain to break*"])


@pytest.mark.parametrize(("test", "backend", "reason"), BROKEN, ids=[b[1] for b in BROKEN])
def test_a_broken_backend_fails(
    pytester: pytest.Pytester, test: str, backend: str, reason: str
) -> None:
    _suite(pytester, backend)
    result = _run(pytester, "-k", test)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{reason}*"])
    result.stdout.fnmatch_lines([f"FAILED test_mem.py::TestMem::{test}*"])


def test_every_broken_backend_is_named_for_a_suite_test() -> None:
    # Whether every suite test can fail is checked with the file-based mutants as well, in
    # tests/conformance_mutants/test_mutants.py.
    tests = {name for name in dir(BackendConformance) if name.startswith("test_")}
    assert {test for test, _, _ in BROKEN} <= tests


def test_revert_any_false_skips_reverting_to_older(pytester: pytest.Pytester) -> None:
    _suite(pytester, "LatestOnly")
    result = _run(pytester, "-rs")
    # + test_revert_older_then_newer and both test_delete_after_revert_keeps_every_branch
    result.assert_outcomes(passed=21, skipped=12)
    result.stdout.fnmatch_lines(["*reverts only to the latest snapshot*"])


def test_kinds_narrows_the_kinds_tested(pytester: pytest.Pytester) -> None:
    _suite(pytester, "MemBackend")
    pytester.makepyfile(
        test_mem="""
        import memback
        from snapcore.model import SnapshotKind

        class TestMem(memback.MemConformance):
            plugin = memback.MemBackend()
            kinds = {SnapshotKind.EXTERNAL}
        """
    )
    result = pytester.runpytest(
        "-p", "no:hypothesispytest", "-v", "-k", "backend_info or create_then_list"
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*test_create_then_list?external? FAILED*"])
    result.stdout.fnmatch_lines(["*are not in backend_info*"])


# -- pytest --snapcore-driver ---------------------------------------------------------------------


def _rawcopy_installed() -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == "rawcopy" for ep in entry_points(group="snapcore.plugins"))


@pytest.mark.skipif(not _rawcopy_installed(), reason="examples/snapcore-rawcopy is not installed")
def test_snapcore_driver_runs_the_suite_on_an_installed_plugin(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "-v", "--snapcore-driver=rawcopy", "--snapcore-disk-suffix=raw")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 20
    result.stdout.fnmatch_lines(["*TestInstalledBackend::test_claims_only_its_own_format PASSED*"])
    result.stdout.fnmatch_lines(["*TestInstalledBackend::test_failed_revert_is_all_or_nothing*"])
    import snapcore.testing

    assert not hasattr(snapcore.testing, "TestInstalledBackend"), "the class outlived the run"


def test_snapcore_driver_names_a_missing_driver(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--snapcore-driver=nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no installed plugin provides driver 'nosuch' (installed: *"])
