"""The command line: argument handling, bad input (exit 2, one line, nothing touched), output."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapcore import cli
from snapcore.model import ProgressEvent


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def raw_domain(tmp_path: Path) -> Path:
    """A domain whose only disk is a plain file no installed backend claims."""
    disk = tmp_path / "disk.bin"
    disk.write_bytes(b"\0" * 4096)
    dom = tmp_path / "raw.toml"
    dom.write_text(f'name = "raw"\n[[disk]]\nvdev = "vda"\npath = "{disk}"\n')
    return dom


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("snapcore: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a/b", "'/'"),
        ("..", "starts with '.'"),
        ("../etc", "'/'"),
        ("with space", "' '"),
        ("tab\there", "'\\t'"),
        ("bell\x07", "'\\x07'"),
        ("x" * 65, "65 characters"),
        ("-n", "starts with '-'"),
        ("", "empty"),
    ],
)
@pytest.mark.parametrize("command", ["snapshot-create", "snapshot-delete", "snapshot-revert"])
def test_bad_names_refused_exit_2_nothing_touched(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    raw_domain: Path,
    command: str,
    name: str,
    problem: str,
) -> None:
    before = _tree_digest(tmp_path)
    code, out, err = run(
        capsys, "--state-dir", str(tmp_path / "state"), command, f"--name={name}", str(raw_domain)
    )
    assert code == 2
    assert out == ""
    line = _one_line_error(err)
    assert "invalid snapshot name" in line
    assert problem in line
    assert _tree_digest(tmp_path) == before


def test_missing_domain_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "--state-dir", str(tmp_path), "snapshot-list", str(tmp_path / "nope.toml")
    )
    assert code == 2
    assert "no such domain file" in _one_line_error(err)


def test_domain_name_looked_up_in_domains_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys,
        "--state-dir",
        str(tmp_path),
        "--domains-dir",
        str(tmp_path / "domains"),
        "snapshot-list",
        "web1",
    )
    assert code == 2
    assert str(tmp_path / "domains" / "web1.toml") in _one_line_error(err)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            'name = "d"\n[[disk]]\nvdev = "vda"\npath = "DISK"\n[[disk]]\nvdev = "vda"\n'
            'path = "DISK"\n',
            "duplicate vdev 'vda'",
        ),
        (
            'name = "d"\ncolour = "red"\n[[disk]]\nvdev = "vda"\npath = "DISK"\n',
            "unknown key 'colour'",
        ),
        ('name = "d"\n[[disk]]\nvdev = "vda"\npath = "/no/such/disk.qcow2"\n', "does not exist"),
        ('name = "d"\n[[disk]\n', "d.toml:2: TOML syntax error"),
    ],
)
def test_bad_domain_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, problem: str
) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(b"x")
    dom = tmp_path / "d.toml"
    dom.write_text(text.replace("DISK", str(disk)))
    code, _, err = run(capsys, "--state-dir", str(tmp_path / "s"), "snapshot-create", str(dom))
    assert code == 2
    assert problem in _one_line_error(err)
    assert not (tmp_path / "s").exists()


def test_disk_no_backend_claims(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, raw_domain: Path
) -> None:
    code, _, err = run(
        capsys, "--state-dir", str(tmp_path / "s"), "snapshot-create", "-n", "x", str(raw_domain)
    )
    assert code == 2
    assert "no plugin claims this disk" in _one_line_error(err)


@pytest.mark.parametrize(
    ("cfg", "problem"),
    [
        ('name = "ok"\nmemory = "yes\n', "snap.cfg:2: unterminated string"),
        ('name = "ok"\n\nbogus = 1\n', "snap.cfg:3: unknown key 'bogus'"),
        ('disk = [ "vdz" ]\n', "no disk 'vdz'"),
        ('memory = "yes"\n', "needs it running"),
    ],
)
def test_bad_snapshot_config_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cfg: str, problem: str
) -> None:
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    dom = tmp_path / "d.toml"
    dom.write_text(f'name = "d"\n[[disk]]\nvdev = "vda"\npath = "{disk}"\n')
    conf = tmp_path / "snap.cfg"
    conf.write_text(cfg)
    before = _tree_digest(tmp_path)
    code, _, err = run(
        capsys, "--state-dir", str(tmp_path / "s"), "snapshot-create", str(conf), str(dom)
    )
    assert code == 2
    assert problem in _one_line_error(err)
    after = _tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("s/")} == before
    assert not [k for k in after if "/checkpoints/" in k]


def test_name_given_twice_conflicts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = tmp_path / "snap.cfg"
    conf.write_text('name = "a"\n')
    code, _, err = run(capsys, "snapshot-create", str(conf), "-n", "b", str(tmp_path / "x.toml"))
    assert code == 2
    assert "given twice" in _one_line_error(err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["snapshot-delete", "dom"])  # -n is required
    assert exc.value.code == 2
    assert "-n/--name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2


def test_plugins_lists_builtin_qcow2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    assert "driver qcow2" in out
    assert "hypervisor none" in out
    code, out, _ = run(capsys, "plugins", "--json")
    import json

    names = {p["name"]: p for p in json.loads(out)}
    assert names["qcow2"]["backend"]["driver"] == "qcow2"
    assert "internal" in names["qcow2"]["backend"]["kinds"]


def test_disabled_plugin_is_not_loaded(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--disable-plugin", "qcow2", "plugins")
    assert code == 0
    assert "driver qcow2" not in out


def test_python_dash_m_and_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snapcore", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("snapcore ")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shown_on_a_terminal_and_silent_when_piped() -> None:
    tty = _Tty()
    progress = cli._Progress(tty)
    progress(ProgressEvent(step="create", vdev="vda", done=1, total=2))
    progress(ProgressEvent(step="save memory", done=1 << 20, total=2 << 20, unit="bytes"))
    shown = tty.getvalue()
    assert "[1/2] create vda" in shown
    assert "save memory 50% (1.0 MiB of 2.0 MiB)" in shown
    piped = io.StringIO()
    cli._Progress(piped)(ProgressEvent(step="create", vdev="vda", done=1, total=2))
    assert piped.getvalue() == ""


def test_a_command_removes_temp_files_left_by_a_killed_write(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, raw_domain: Path
) -> None:
    from snapcore.config import load_domain

    state = tmp_path / "state"
    root = state / "domains" / load_domain(raw_domain).uuid
    (root / "checkpoints").mkdir(parents=True)
    left = [
        root / ".journal.json.x8k2_a0q.tmp",
        root / ".current.json.abc123de.tmp",
        root / "checkpoints" / ".nightly.json.0p9o8i7u.tmp",
    ]
    kept = root / "checkpoints" / "my-notes.tmp"
    for path in [*left, kept]:
        path.write_text('{"schema": 1, "oper')

    code, out, err = run(capsys, "--state-dir", str(state), "snapshot-list", str(raw_domain))

    assert (code, out, err) == (0, "no snapshots\n", "")
    assert [p.name for p in left if p.exists()] == []
    assert kept.read_text() == '{"schema": 1, "oper'


# -- busy ----------------------------------------------------------------------------------------

HOLD = """
import sys, time
from snapcore.config import load_domain
from snapcore.store import CheckpointStore

with CheckpointStore(sys.argv[1], load_domain(sys.argv[2])).lock(timeout=5):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path: Path, raw_domain: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of *raw_domain* in ``tmp_path/state``."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    argv = [sys.executable, str(script), str(tmp_path / "state"), str(raw_domain), "holder-mark"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "args", [["snapshot-create", "-n", "x"], ["snapshot-list"], ["recover", "--forget"]]
)
def test_busy_domain_exits_4_naming_the_holder_and_touches_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    raw_domain: Path,
    held: subprocess.Popen[str],
    args: list[str],
) -> None:
    before = _tree_digest(tmp_path)
    state = str(tmp_path / "state")

    code, out, err = run(
        capsys, "--state-dir", state, "--lock-timeout", "0.5", *args, str(raw_domain)
    )

    assert (code, out) == (4, "")
    line = _one_line_error(err)
    assert line.startswith(
        f"snapcore: error: domain 'raw' is busy: another command (pid {held.pid}: "
    )
    assert "holder-mark" in line  # its command line
    assert "held its lock for the 0.5 s this one waited; nothing was changed" in line
    assert _tree_digest(tmp_path) == before


def test_lock_timeout_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    raw_domain: Path,
    held: subprocess.Popen[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAPCORE_LOCK_TIMEOUT", "0.25")
    code, _, err = run(
        capsys, "--state-dir", str(tmp_path / "state"), "snapshot-list", str(raw_domain)
    )
    assert code == 4
    assert "for the 0.25 s this one waited" in _one_line_error(err)
    # the option wins over the environment
    code, _, err = run(
        capsys,
        "--state-dir",
        str(tmp_path / "state"),
        "--lock-timeout",
        "0",
        "snapshot-list",
        str(raw_domain),
    )
    assert code == 4
    assert "for the 0 s this one waited" in _one_line_error(err)


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", ""])
def test_bad_lock_timeout_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, raw_domain: Path, value: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(
            [
                "--state-dir",
                str(tmp_path / "state"),
                f"--lock-timeout={value}",
                "snapshot-list",
                str(raw_domain),
            ]
        )
    out, err = capsys.readouterr()
    assert (exc.value.code, out) == (2, "")
    assert "--lock-timeout: not a number of seconds, 0 or more" in err
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "1e999"])
def test_bad_lock_timeout_in_the_environment_is_refused(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    raw_domain: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    monkeypatch.setenv("SNAPCORE_LOCK_TIMEOUT", value)
    code, out, err = run(
        capsys, "--state-dir", str(tmp_path / "s"), "snapshot-list", str(raw_domain)
    )
    assert (code, out) == (2, "")
    assert "SNAPCORE_LOCK_TIMEOUT must be a number of seconds, 0 or more" in _one_line_error(err)
    assert not (tmp_path / "s").exists()
