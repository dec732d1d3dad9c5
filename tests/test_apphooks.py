"""Operator hooks (``[[hook]]`` and the hooks directory) on real qcow2 images through the CLI,
and the bounded runner under them: hooks that hang, fail, print megabytes, or write to stderr
and exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snapcore.apphooks import HookRunner, hooks_in_dir
from snapcore.errors import HookFailedError
from snapcore.model import Disk, Domain
from snapcore.policy import HookSpec, Phase
from snapcore.process import run_bounded

SNAPCORE = [sys.executable, "-m", "snapcore"]
PY = sys.executable


class Env:
    """Domain ``web1`` with one qcow2 disk, its own state dir and an empty hooks dir."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.state = tmp / "state"
        self.hooks_dir = tmp / "hooks.d"
        self.hooks_dir.mkdir()
        self.image = tmp / "vda.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(self.image), "1M"], check=True
        )
        self.domain = tmp / "web1.toml"
        self.log = tmp / "hook.log"

    def write(self, hooks: str) -> None:
        self.domain.write_text(
            f'name = "web1"\n[[disk]]\nvdev = "vda"\npath = "{self.image}"\n{hooks}'
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SNAPCORE_LOCK_DIR": str(self.tmp / "locks")}
        return subprocess.run(
            [
                *SNAPCORE,
                "--state-dir",
                str(self.state),
                "--hooks-dir",
                str(self.hooks_dir),
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )

    def tags(self) -> list[str]:
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", str(self.image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return [s["name"] for s in json.loads(out).get("snapshots", [])]

    def records(self) -> list[str]:
        return sorted(p.name for p in self.state.glob("domains/*/checkpoints/*.json"))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def hook(command: list[str], **keys: object) -> str:
    text = f"[[hook]]\ncommand = {json.dumps(command)}\n"
    for key, value in keys.items():
        text += f"{key} = {json.dumps(value)}\n"
    return text


def logger(log: Path) -> list[str]:
    """A hook that appends its phase, checkpoint, cause and stdin to *log*."""
    code = (
        "import json, os, sys; data = json.load(sys.stdin); "
        f"open({str(log)!r}, 'a').write(json.dumps({{'env': "
        "[os.environ[k] for k in ('SNAPCORE_PHASE', 'SNAPCORE_CHECKPOINT', 'SNAPCORE_DOMAIN', "
        "'SNAPCORE_OPERATION', 'SNAPCORE_CAUSE')], 'stdin': data}) + '\\n')"
    )
    return [PY, "-c", code]


def logged(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_phase_runs_with_its_environment_and_json_on_stdin(env: Env) -> None:
    env.write(hook(logger(env.log)))
    assert env.run("snapshot-create", "-n", "one", str(env.domain)).returncode == 0
    assert env.run("snapshot-revert", "-n", "one", str(env.domain)).returncode == 0
    assert env.run("snapshot-delete", "-n", "one", str(env.domain)).returncode == 0
    entries = logged(env.log)
    assert [e["env"] for e in entries] == [
        [phase, "one", "web1", phase.partition("-")[2], "command"]
        for phase in (
            "pre-create",
            "post-create",
            "pre-revert",
            "post-revert",
            "pre-delete",
            "post-delete",
        )
    ]
    pre, post = entries[0]["stdin"], entries[1]["stdin"]
    assert isinstance(pre, dict)
    assert isinstance(post, dict)
    assert pre["phase"] == "pre-create"
    assert pre["checkpoint"] == "one"
    assert pre["domain"]["name"] == "web1"
    assert pre["domain"]["disks"] == [{"vdev": "vda", "driver": "qcow2", "path": str(env.image)}]
    assert pre["details"]["plan"]["steps"][0]["action"] == "create snapshot"
    assert post["details"]["checkpoint"]["name"] == "one"


def test_a_request_refused_by_validation_runs_no_hook(env: Env) -> None:
    env.write(hook(logger(env.log)))
    proc = env.run("snapshot-delete", "-n", "nosuch", str(env.domain))
    assert proc.returncode == 2
    assert logged(env.log) == []


def test_dry_run_runs_no_hook(env: Env) -> None:
    env.write(hook(logger(env.log)))
    assert env.run("snapshot-create", "--dry-run", "-n", "one", str(env.domain)).returncode == 0
    assert logged(env.log) == []


def test_failed_fatal_pre_hook_exit_2_nothing_touched(env: Env) -> None:
    env.write(
        hook(
            [PY, "-c", "import sys; sys.stderr.write('database busy\\n'); sys.exit(3)"],
            name="db-flush",
            phases=["pre-create"],
        )
        + hook(logger(env.log))
    )
    before = env.image.read_bytes()
    proc = env.run("snapshot-create", "-n", "one", str(env.domain))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "snapcore: error: pre-create hook 'db-flush' failed (exit status 3): database busy; "
        "snapshot 'one' of domain 'web1': nothing was changed"
    ]
    assert env.image.read_bytes() == before
    assert env.tags() == []
    assert env.records() == []
    assert logged(env.log) == []  # the hooks after a fatal failure are not run


def test_non_fatal_pre_hook_failure_is_reported_and_the_create_goes_on(env: Env) -> None:
    env.write(hook(["false"], name="advisory", phases=["pre-create"], fatal=False))
    proc = env.run("snapshot-create", "-n", "one", str(env.domain))
    assert proc.returncode == 0, proc.stderr
    assert "snapcore: warning: pre-create hook 'advisory' failed (exit status 1)" in proc.stderr
    assert env.tags() == ["one"]


def test_failed_post_hook_is_reported_and_never_undoes_the_checkpoint(env: Env) -> None:
    env.write(
        hook(
            [PY, "-c", "import sys; print('thaw failed', file=sys.stderr); sys.exit(5)"],
            name="thaw",
            phases=["post-create"],
        )
    )
    proc = env.run("snapshot-create", "--json", "-n", "one", str(env.domain))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "snapcore: warning: post-create hook 'thaw' failed (exit status 5): thaw failed"
    ]
    out = json.loads(proc.stdout)
    assert out["name"] == "one"
    (failure,) = out["hook_failures"]
    assert failure["hook"] == "thaw"
    assert failure["phase"] == "post-create"
    assert failure["returncode"] == 5
    assert failure["fatal"] is False
    assert failure["stderr"] == "thaw failed\n"
    assert env.tags() == ["one"]
    assert env.records() == ["one.json"]


def test_hook_that_hangs_is_killed_at_its_timeout_with_its_children(env: Env) -> None:
    pidfile = env.tmp / "child.pid"
    hang = [
        "sh",
        "-c",
        f"sleep 300 & echo $! > {pidfile}; sleep 300",
    ]
    env.write(hook(hang, name="hang", phases=["pre-create"], timeout=1))
    started = time.monotonic()
    proc = env.run("snapshot-create", "-n", "one", str(env.domain))
    elapsed = time.monotonic() - started
    assert proc.returncode == 2
    assert "pre-create hook 'hang' failed (killed after its timeout of 1 s)" in proc.stderr
    assert elapsed < 15
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the hook's child {child} outlived the timeout")
    assert env.tags() == []


def test_hook_that_prints_megabytes_costs_only_its_tail(env: Env) -> None:
    spew = [
        PY,
        "-c",
        "import sys; sys.stdout.write('x' * (20 << 20)); sys.stderr.write('e' * (20 << 20)); "
        "sys.stderr.write('THE END'); sys.exit(1)",
    ]
    env.write(hook(spew, name="spew", phases=["post-create"]))
    proc = env.run("snapshot-create", "--json", "-n", "one", str(env.domain))
    assert proc.returncode == 0, proc.stderr[-500:]
    (failure,) = json.loads(proc.stdout)["hook_failures"]
    assert len(failure["stdout"]) == 64 * 1024
    assert len(failure["stderr"]) == 64 * 1024
    assert failure["stderr"].endswith("THE END")
    assert failure["dropped"] == 2 * (20 << 20) + len("THE END") - 2 * 64 * 1024
    assert len(proc.stderr) < 1000  # the warning line quotes at most the last line's start


def test_hook_exiting_0_with_stderr_is_a_success(env: Env) -> None:
    env.write(hook(["sh", "-c", "echo 'just saying' >&2; exit 0"], name="chatty"))
    proc = env.run("snapshot-create", "--json", "-n", "one", str(env.domain))
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert json.loads(proc.stdout)["hook_failures"] == []


def test_hook_that_cannot_start_is_a_failure(env: Env) -> None:
    env.write(hook([str(env.tmp / "missing")], phases=["pre-delete"]))
    assert env.run("snapshot-create", "-n", "one", str(env.domain)).returncode == 0
    proc = env.run("snapshot-delete", "-n", "one", str(env.domain))
    assert proc.returncode == 2
    assert "pre-delete hook 'missing' failed (cannot start: " in proc.stderr
    assert env.tags() == ["one"]


def test_hooks_dir_runs_executables_by_name_before_the_domain_hooks(env: Env) -> None:
    order = env.tmp / "order"
    for name in ("20-second", "10-first", "skipped~", "not-executable", ".hidden"):
        path = env.hooks_dir / name
        path.write_text(f"#!/bin/sh\necho {name} $SNAPCORE_PHASE >> {order}\n")
        if name != "not-executable":
            path.chmod(0o755)
    env.write(hook(["sh", "-c", f"echo domain $SNAPCORE_PHASE >> {order}"], phases=["pre-create"]))
    assert env.run("snapshot-create", "-n", "one", str(env.domain)).returncode == 0
    assert order.read_text().splitlines() == [
        "10-first pre-create",
        "20-second pre-create",
        "domain pre-create",
        "10-first post-create",
        "20-second post-create",
    ]


def test_hooks_dir_from_the_environment(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "other.d"
    other.mkdir()
    (other / "deny").write_text("#!/bin/sh\n[ $SNAPCORE_PHASE != pre-create ]\n")
    (other / "deny").chmod(0o755)
    env.write("")
    proc = subprocess.run(
        [*SNAPCORE, "--state-dir", str(env.state), "snapshot-create", "-n", "one", str(env.domain)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SNAPCORE_HOOKS_DIR": str(other)},
    )
    assert proc.returncode == 2
    assert "pre-create hook 'deny' failed (exit status 1)" in proc.stderr


# -- the runner, directly ------------------------------------------------------------------------


def test_run_bounded_feeds_stdin_and_keeps_the_tail() -> None:
    result = run_bounded(
        [PY, "-c", "import sys; d = sys.stdin.read(); print(d * 3)"],
        input=b"abc",
        timeout=10,
        max_output=5,
    )
    assert result.returncode == 0
    assert result.stdout == "cabc\n"  # the last 5 bytes of "abcabcabc\n"
    assert result.dropped == len("abcabcabc\n") - 5
    assert not result.timed_out


def test_run_bounded_ignoring_stdin_is_fine() -> None:
    result = run_bounded(["true"], input=b"x" * (1 << 20), timeout=10)
    assert result.returncode == 0


def test_run_bounded_kills_a_background_child_holding_the_output() -> None:
    started = time.monotonic()
    result = run_bounded(["sh", "-c", "sleep 300 & echo started"], timeout=1)
    assert time.monotonic() - started < 10
    assert result.returncode == 0
    assert result.stdout == "started\n"


def test_hook_runner_fatal_stops_the_phase(tmp_path: Path) -> None:
    domain = Domain(
        name="web1",
        disks=(Disk(vdev="vda", path=str(tmp_path / "a")),),
        hooks=(
            HookSpec(name="no", command=("false",), phases=frozenset({Phase.PRE_REVERT})),
            HookSpec(name="never", command=("true",)),
        ),
    )
    runner = HookRunner(domain)
    with pytest.raises(HookFailedError) as info:
        runner.run(Phase.PRE_REVERT, "c1")
    assert (info.value.hook, info.value.phase, info.value.reason) == (
        "no",
        "pre-revert",
        "exit status 1",
    )
    assert info.value.exit_code == 2
    assert [o.hook for o in runner.outcomes] == ["no"]
    post = runner.run(Phase.POST_REVERT, "c1")
    assert [o.ok for o in post] == [True]


def test_hooks_in_a_missing_dir_are_none(tmp_path: Path) -> None:
    assert hooks_in_dir(tmp_path / "nope") == ()
