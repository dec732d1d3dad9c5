"""A plugin that breaks its hooks' contract, driven through the CLI: every misbehaviour gives a
one-line error naming plugin, hook and disk, the normal undo, and the documented exit code.

The ``flaky`` plugin (tests/misbehaving) is installed for these runs as a third party would be:
a distribution's ``entry_points.txt`` on the path, found by ``importlib.metadata``. The domain
has a ``rawcopy`` disk (the example plugin) beside it, whose snapshot must be undone too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class Domain:
    """A two-disk domain (``vda`` rawcopy, ``vdb`` flaky) and the CLI to drive it."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        site = tmp_path / "site"
        info = site / "snapcore_test_flaky-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: snapcore-test-flaky\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(
            "[snapcore.plugins]\nflaky = tests.misbehaving.plugin\n"
        )
        self.site = site
        self.env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT}")
        self.env.pop("FLAKY_MISBEHAVE", None)
        self.raw = tmp_path / "a.raw"
        self.raw.write_bytes(b"A1" * 2048)
        self.flaky = tmp_path / "b.flaky"
        self.flaky.write_bytes(b"B1" * 2048)
        self.file = tmp_path / "dom.toml"
        self.file.write_text(
            'name = "dom"\n'
            f'[[disk]]\nvdev = "vda"\npath = "{self.raw}"\ndriver = "rawcopy"\n'
            f'[[disk]]\nvdev = "vdb"\npath = "{self.flaky}"\ndriver = "flaky"\n'
        )

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "snapcore", "--state-dir", str(self.state), *args]

    def run(self, *args: str, misbehave: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        run_env = dict(self.env, **env)
        if misbehave:
            run_env["FLAKY_MISBEHAVE"] = misbehave
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, check=False, env=run_env
        )

    def names(self) -> list[str]:
        proc = self.run("snapshot-list", "--json", str(self.file))
        assert proc.returncode == 0, proc.stderr
        return [c["name"] for c in json.loads(proc.stdout)]

    def rawcopy_snapshot(self, name: str) -> Path:
        return self.tmp / ".a.raw.snapcore" / f"{name}.raw"

    def journal(self) -> list[Path]:
        return list(self.state.rglob("journal.json"))


@pytest.fixture
def dom(tmp_path: Path) -> Domain:
    return Domain(tmp_path)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("how", "what"),
    [
        ("dict", "it returned a dict ({'vdev': 'vdb'}), not a DiskSnapshot"),
        ("str", "it returned a str ('blocked by something'), not a DiskSnapshot"),
        ("true", "it returned True, not a DiskSnapshot"),
        ("none", "it returned None, not a DiskSnapshot"),
        ("exit", "it raised SystemExit: 7"),
        ("raise", "it raised ValueError: something went wrong inside the plugin"),
    ],
)
def test_a_broken_create_is_named_and_undone(dom: Domain, how: str, what: str) -> None:
    proc = dom.run(
        "snapshot-create", "-n", "s1", str(dom.file), misbehave=f"disk_snapshot_create={how}"
    )

    assert proc.returncode == 1, proc.stderr
    line = _one_line(proc.stderr)
    assert "plugin 'flaky' broke the contract of disk_snapshot_create for disk vdb" in line
    assert line.endswith(what)
    # undone: the other disk's snapshot, the plugin's file, the journal, the record
    assert not dom.rawcopy_snapshot("s1").exists()
    assert not Path(f"{dom.flaky}.s1.snap").exists()
    assert dom.journal() == []
    assert dom.names() == []


def test_a_check_returning_a_string_is_a_contract_error_and_touches_nothing(dom: Domain) -> None:
    proc = dom.run(
        "snapshot-create", "-n", "s1", str(dom.file), misbehave="disk_snapshot_create_check=str"
    )

    assert proc.returncode == 1, proc.stderr
    line = _one_line(proc.stderr)
    assert (
        "plugin 'flaky' broke the contract of disk_snapshot_create_check for disk vdb: "
        "it returned a str ('blocked by something'), not a list of strings (the blockers)"
    ) in line
    assert "disk vdb: b;" not in line  # not iterated character by character
    assert not dom.rawcopy_snapshot("s1").exists()
    assert dom.journal() == []


def test_a_delete_returning_false_fails_and_keeps_the_checkpoint(dom: Domain) -> None:
    assert dom.run("snapshot-create", "-n", "s1", str(dom.file)).returncode == 0

    proc = dom.run(
        "snapshot-delete", "-n", "s1", str(dom.file), misbehave="disk_snapshot_delete=false"
    )

    assert proc.returncode != 0, proc.stderr
    assert "plugin 'flaky' broke the contract of disk_snapshot_delete for disk vdb" in proc.stderr
    assert "it returned False, not True (done); raise to fail" in proc.stderr
    assert dom.names() == ["s1"]  # the record is kept: running the delete again finishes it
    assert Path(f"{dom.flaky}.s1.snap").exists()
    proc = dom.run("snapshot-delete", "-n", "s1", str(dom.file))
    assert proc.returncode == 0, proc.stderr
    assert dom.names() == []


def test_a_list_hook_raising_is_a_warning_not_a_traceback(dom: Domain) -> None:
    assert dom.run("snapshot-create", "-n", "s1", str(dom.file)).returncode == 0

    proc = dom.run("snapshot-list", "-l", str(dom.file), misbehave="disk_snapshot_list=raise")

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "disk vdb: cannot list snapshots" in proc.stderr
    assert "plugin 'flaky' broke the contract of disk_snapshot_list" in proc.stderr
    assert "s1" in proc.stdout


def test_a_hook_past_its_time_limit_is_abandoned_and_recover_undoes_it(dom: Domain) -> None:
    proc = dom.run(
        "snapshot-create",
        "-n",
        "s1",
        str(dom.file),
        misbehave="disk_snapshot_create=sleep:20",
        SNAPCORE_HOOK_TIMEOUT="1",
    )

    assert proc.returncode == 3, proc.stderr
    assert "plugin 'flaky' broke the contract of disk_snapshot_create for disk vdb" in proc.stderr
    assert "it did not return within 1 s; it was left running" in proc.stderr
    assert "snapcore recover" in proc.stderr
    assert not dom.rawcopy_snapshot("s1").exists()  # the other disk was undone
    assert dom.journal() != []  # vdb's undo is left to recover

    proc = dom.run("recover", str(dom.file))
    assert proc.returncode == 0, proc.stderr
    assert dom.journal() == []
    assert not Path(f"{dom.flaky}.s1.snap").exists()
    assert dom.names() == []


def test_ctrl_c_says_which_plugin_it_waits_for_then_undoes(dom: Domain) -> None:
    mark = dom.tmp / "started"
    env = dict(dom.env, FLAKY_MISBEHAVE="disk_snapshot_create=sleep:3", FLAKY_MARK=str(mark))
    proc = subprocess.Popen(
        dom.argv("snapshot-create", "-n", "s1", str(dom.file)),
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for _ in range(600):
        if mark.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert mark.exists(), "the plugin's create never started"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert "interrupted: waiting for " in stderr
    assert "plugin 'flaky' (disk_snapshot_create for disk vdb, running for " in stderr
    assert "to return before undoing (press Ctrl-C again to stop waiting)" in stderr
    assert "Traceback" not in stderr
    assert not dom.rawcopy_snapshot("s1").exists()
    assert not Path(f"{dom.flaky}.s1.snap").exists()  # undone after the hook returned
    assert dom.journal() == []
    assert dom.names() == []


def test_a_hook_api_1_plugin_works_through_the_cli_and_is_marked_deprecated(dom: Domain) -> None:
    # The rawcopy example as published for hook API 1.0, installed in place of today's.
    legacy = dom.site / "snapcore_test_legacy-1.0.dist-info"
    legacy.mkdir()
    (legacy / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: snapcore-test-legacy\nVersion: 1.0\n"
    )
    (legacy / "entry_points.txt").write_text(
        "[snapcore.plugins]\nrawcopy1 = tests.legacy.rawcopy_api1\n"
    )
    env = {"SNAPCORE_DISABLE_PLUGINS": "rawcopy"}

    proc = dom.run("plugins", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        "snapcore: plugin 'rawcopy1' is deprecated: written for hook API 1.0, loaded through "
        "compatibility rules; update it to 2.x (docs/hook-api-changelog.md)\n"
    )
    listed = {p["name"]: p for p in json.loads(dom.run("plugins", "--json", **env).stdout)}
    assert (listed["rawcopy1"]["hook_api"], listed["flaky"]["hook_api"]) == ("1.0", "2.0")
    assert listed["flaky"]["deprecated"] is None

    for args in (("snapshot-create", "-n", "s1"), ("snapshot-revert", "-n", "s1")):
        if args[0] == "snapshot-revert":
            dom.raw.write_bytes(b"A2" * 2048)
        proc = dom.run(*args, str(dom.file), **env)
        assert proc.returncode == 0, proc.stderr
    assert dom.raw.read_bytes() == b"A1" * 2048
    proc = dom.run("snapshot-delete", "-n", "s1", str(dom.file), **env)
    assert proc.returncode == 0, proc.stderr
    assert not dom.rawcopy_snapshot("s1").exists()
