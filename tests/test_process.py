"""Tests of snapcore.process: ShRunner runs real commands (echo, sh, sleep, python)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from snapcore.errors import CommandError
from snapcore.process import CommandRunner, Result, ShRunner, default_runner


@pytest.fixture
def run() -> ShRunner:
    return ShRunner()


def test_runs_a_command_and_returns_its_output(run: ShRunner) -> None:
    result = run(["echo", "hi"])

    assert result == Result(argv=("echo", "hi"), returncode=0, stdout="hi\n", stderr="")


def test_arguments_are_passed_verbatim_without_a_shell(run: ShRunner) -> None:
    tricky = ["$HOME", "a b", "*", "; echo pwned", "'q'", ""]
    result = run([sys.executable, "-c", "import sys; print(sys.argv[1:])", *tricky])

    assert result.stdout == f"{tricky!r}\n"


def test_stdout_is_not_a_tty(run: ShRunner) -> None:
    result = run([sys.executable, "-c", "import sys; print(sys.stdout.isatty())"])
    assert result.stdout.strip() == "False"


def test_stderr_is_returned_separately(run: ShRunner) -> None:
    result = run(["sh", "-c", "echo out; echo err >&2"])
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_locale_is_c(run: ShRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    assert run(["printenv", "LC_ALL"]).stdout == "C\n"


def test_env_is_added_to_the_environment(run: ShRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPCORE_TEST_INHERITED", "yes")
    result = run(
        ["sh", "-c", 'echo "$SNAPCORE_TEST_INHERITED $SNAPCORE_TEST_EXTRA $LC_ALL"'],
        env={"SNAPCORE_TEST_EXTRA": "extra"},
    )
    assert result.stdout == "yes extra C\n"


def test_nonzero_exit_raises_with_status_and_the_tools_last_stderr_line(run: ShRunner) -> None:
    argv = ["sh", "-c", "echo progress; echo 'warning: x' >&2; echo 'disk is full' >&2; exit 3"]

    with pytest.raises(CommandError) as info:
        run(argv)
    err = info.value
    assert err.returncode == 3
    assert err.argv == tuple(argv)
    assert err.stderr == "warning: x\ndisk is full"
    assert "disk is full" in str(err)
    assert "warning" not in str(err)
    assert str(err).startswith("sh")


def test_nonzero_exit_without_stderr_reports_stdout_or_status(run: ShRunner) -> None:
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo 'said on stdout'; exit 4"])
    assert info.value.returncode == 4
    assert "said on stdout" in str(info.value)

    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "exit 5"])
    assert "status 5" in str(info.value)


def test_ok_codes_are_honoured(run: ShRunner) -> None:
    result = run(["sh", "-c", "echo found; exit 1"], ok_codes=(0, 1))
    assert (result.returncode, result.stdout) == (1, "found\n")

    with pytest.raises(CommandError) as info:
        run(["true"], ok_codes=(1,))
    assert info.value.returncode == 0


def test_missing_program_is_a_command_error(run: ShRunner) -> None:
    with pytest.raises(CommandError) as info:
        run(["no-such-program-snapcore-xyz", "--version"])
    assert info.value.returncode is None
    assert "command not found" in str(info.value)
    assert "no-such-program-snapcore-xyz" in str(info.value)


def test_missing_program_is_named_once(run: ShRunner) -> None:
    with pytest.raises(CommandError) as info:
        run(["no-such-program-snapcore-xyz"])
    assert str(info.value).count("no-such-program-snapcore-xyz") == 1


def test_timeout_stops_the_command(run: ShRunner) -> None:
    start = time.monotonic()
    with pytest.raises(CommandError) as info:
        run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - start < 10
    assert info.value.returncode is None
    assert "timed out" in str(info.value)
    assert str(info.value).startswith("sleep")


def test_a_timed_out_command_is_not_left_running(run: ShRunner, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(CommandError, match="timed out"):
        run(["sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 30'], timeout=0.3)

    proc = Path(f"/proc/{pid_file.read_text().strip()}")
    deadline = time.monotonic() + 5
    while proc.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.exists()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param("echo hi", id="shell-string"),
        pytest.param([], id="empty"),
        pytest.param(["echo", 1], id="not-str"),
        pytest.param(["echo", b"hi"], id="bytes"),
    ],
)
def test_argv_must_be_a_list_of_strings(run: ShRunner, argv: object) -> None:
    with pytest.raises(TypeError):
        run(argv)  # type: ignore[arg-type]


def test_nul_byte_in_an_argument_is_refused(run: ShRunner) -> None:
    with pytest.raises(ValueError, match="NUL"):
        run(["echo", "a\0b"])


def test_a_tool_reading_stdin_gets_eof_instead_of_waiting() -> None:
    # The caller's stdin is an open pipe nobody writes to: a tool that prompts (lvremove
    # asking "Do you really want to remove?") must see end of input, not wait for it.
    code = textwrap.dedent(
        """
        from snapcore.process import ShRunner
        print(repr(ShRunner()(["cat"], timeout=5).stdout))
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            proc.wait(timeout=20)
        finally:
            proc.kill()
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    assert out == "''\n"


def test_default_runner_is_a_command_runner() -> None:
    runner: CommandRunner = default_runner()
    assert runner(["echo", "ok"]).stdout == "ok\n"
