"""The domain file's ``[snapshots]`` table, ``[[hook]]`` entries and ``max_chain``: what is
read, and every mistake refused with one exit-2 line naming the file and the key, before
anything is touched."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from snapcore.config import load_domain
from snapcore.errors import ConfigError
from snapcore.policy import Phase

SNAPCORE = [sys.executable, "-m", "snapcore"]


def domain_file(tmp_path: Path, extra: str, disk_extra: str = "") -> Path:
    image = tmp_path / "vda.qcow2"
    if not image.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    path = tmp_path / "web1.toml"
    path.write_text(
        f'name = "web1"\n[[disk]]\nvdev = "vda"\npath = "vda.qcow2"\n{disk_extra}\n{extra}'
    )
    return path


def test_a_full_policy_is_read(tmp_path: Path) -> None:
    path = domain_file(
        tmp_path,
        "[snapshots]\n"
        'schedule = ["0 * * * *", "30 2 * * sun"]\n'
        'timezone = "Europe/Berlin"\n'
        'pattern = "hourly-%Y%m%d-%H%M"\n'
        "memory = false\n"
        "max_chain = 12\n"
        "[snapshots.keep]\nhourly = 24\ndaily = 7\n"
        "[[hook]]\n"
        'command = ["hooks/flush", "--quiet"]\n'
        'phases = ["pre-create", "post-create"]\n'
        "timeout = 5\n"
        "[[hook]]\n"
        'name = "notify"\ncommand = ["logger", "snap"]\nfatal = false\n',
        disk_extra="max_chain = 3",
    )
    domain = load_domain(path)
    policy = domain.policy
    assert policy is not None
    assert policy.schedule is not None
    assert [e.text for e in policy.schedule.expressions] == ["0 * * * *", "30 2 * * sun"]
    assert policy.to_json()["schedule"] == ["0 * * * *", "30 2 * * sun"]
    assert str(policy.tz) == "Europe/Berlin"
    assert policy.pattern.text == "hourly-%Y%m%d-%H%M"
    assert policy.memory == "no"
    assert policy.max_chain == 12
    assert policy.keep is not None
    assert (policy.keep.hourly, policy.keep.daily) == (24, 7)
    assert policy.expiry is None
    assert domain.chain_limits == {"vda": 3}
    flush, notify = domain.hooks
    assert flush.name == "flush"
    assert flush.command == (str(tmp_path / "hooks" / "flush"), "--quiet")
    assert flush.phases == {Phase.PRE_CREATE, Phase.POST_CREATE}
    assert flush.timeout == 5.0
    assert flush.is_fatal(Phase.PRE_CREATE)
    assert not flush.is_fatal(Phase.POST_CREATE)
    assert notify.command == ("logger", "snap")  # a bare name is looked up in $PATH
    assert notify.phases == set(Phase)
    assert not notify.is_fatal(Phase.PRE_DELETE)


def test_defaults(tmp_path: Path) -> None:
    domain = load_domain(domain_file(tmp_path, '[snapshots]\nexpiry = "1w 2d"\n'))
    policy = domain.policy
    assert policy is not None
    assert policy.schedule is None  # prunes only
    assert policy.pattern.text == "auto-%Y%m%d-%H%M"
    assert str(policy.tz) == "UTC"
    assert policy.memory is None
    assert policy.expiry == timedelta(days=9)
    assert domain.hooks == ()
    assert load_domain(domain_file(tmp_path, "")).policy is None


BAD = [
    pytest.param(
        '[snapshots]\nschedule = "61 * * * *"\n',
        '[snapshots] schedule "61 * * * *": minute 61 is out of range 0-59',
        id="schedule-range",
    ),
    pytest.param(
        "[snapshots]\nschedule = 5\n",
        "[snapshots] schedule must be a string or a non-empty list of strings, "
        'such as "@hourly" or ["0 * * * *", "30 2 * * sun"]',
        id="schedule-type",
    ),
    pytest.param(
        "[snapshots]\nschedule = []\n",
        "[snapshots] schedule must be a string or a non-empty list of strings, "
        'such as "@hourly" or ["0 * * * *", "30 2 * * sun"]',
        id="schedule-empty-list",
    ),
    pytest.param(
        '[snapshots]\nschedule = "@reboot"\n',
        '[snapshots] schedule "@reboot": unknown @-expression; use @hourly, @daily, @weekly, '
        "@monthly, @yearly or @annually",
        id="schedule-macro",
    ),
    pytest.param(
        '[snapshots]\ntimezone = "Mars/Olympus"\n',
        '[snapshots] timezone "Mars/Olympus": not a known time zone; use an IANA name such as '
        "UTC or Europe/Berlin",
        id="timezone",
    ),
    pytest.param(
        '[snapshots]\npattern = "%H:%M"\n',
        "[snapshots] pattern \"%H:%M\": it makes names such as '23:59', which are not valid "
        "snapshot names: it contains ':'; use only letters, digits, '.', '_' and '-'",
        id="pattern",
    ),
    pytest.param(
        '[snapshots]\nexpiry = "3x"\n',
        '[snapshots] expiry "3x": unknown unit "x"; use m, h, d or w, as in 30d or 12h',
        id="expiry-unit",
    ),
    pytest.param(
        "[snapshots]\nexpiry = 30\n",
        '[snapshots] expiry = 30: must be a duration such as "30d" or "12h"',
        id="expiry-type",
    ),
    pytest.param(
        '[snapshots]\nexpiry = "30d"\nkeep = {daily = 7}\n',
        "[snapshots] keep and expiry together: a checkpoint with an expiry is judged by it "
        "alone, so use keep rules or an expiry for scheduled checkpoints, not both",
        id="keep-and-expiry",
    ),
    pytest.param(
        "[snapshots]\nkeep = {dayly = 7}\n",
        "[snapshots] keep: unknown rule 'dayly'; the rules are last, hourly, daily, weekly, "
        "monthly, yearly",
        id="keep-rule",
    ),
    pytest.param(
        "[snapshots.keep]\ndaily = -1\n",
        "[snapshots] keep.daily = -1: must be a whole number, 0 or more",
        id="keep-negative",
    ),
    pytest.param(
        "[snapshots]\nkeep = {daily = 0}\n",
        "[snapshots] keep: no rule keeps anything; set one of last, hourly, daily, weekly, "
        "monthly or yearly above 0, or leave keep out to keep every scheduled checkpoint",
        id="keep-nothing",
    ),
    pytest.param(
        '[snapshots]\nmemory = "maybe"\n',
        '[snapshots] memory = \'maybe\': must be "auto", "yes", "no", true or false',
        id="memory",
    ),
    pytest.param(
        "[snapshots]\nmax_chain = 0\n",
        "[snapshots] max_chain = 0: must be a whole number, 1 or more",
        id="max-chain-zero",
    ),
    pytest.param(
        "[snapshots]\nmax_chain = true\n",
        "[snapshots] max_chain = True: must be a whole number, 1 or more",
        id="max-chain-bool",
    ),
    pytest.param(
        "[snapshots]\nkeeps = 3\n",
        "[snapshots] unknown key 'keeps'; known keys: schedule, timezone, memory, pattern, "
        "expiry, keep, max_chain",
        id="unknown-key",
    ),
    pytest.param(
        '[[hook]]\ncommand = "db-flush --quiet"\n',
        "[[hook]] #1: command must be a non-empty list of strings, such as "
        '["/usr/local/bin/db-flush", "--quiet"] (no shell string)',
        id="hook-shell-string",
    ),
    pytest.param(
        "[[hook]]\nname = 'x'\n",
        "[[hook]] #1: missing required key 'command' (a list of strings)",
        id="hook-no-command",
    ),
    pytest.param(
        '[[hook]]\ncommand = ["true"]\n[[hook]]\ncommand = ["true"]\nphases = ["pre-snap"]\n',
        "[[hook]] #2: unknown phase 'pre-snap'; the phases are pre-create, post-create, "
        "pre-revert, post-revert, pre-delete, post-delete",
        id="hook-phase",
    ),
    pytest.param(
        '[[hook]]\ncommand = ["true"]\ntimeout = 0\n',
        "[[hook]] #1: timeout = 0: must be a number of seconds above 0, at most 3600",
        id="hook-timeout-zero",
    ),
    pytest.param(
        '[[hook]]\ncommand = ["true"]\ntimeout = 1e9\n',
        "[[hook]] #1: timeout = 1000000000.0: must be a number of seconds above 0, at most 3600",
        id="hook-timeout-huge",
    ),
    pytest.param(
        '[[hook]]\ncommand = ["true"]\nfatal = "yes"\n',
        "[[hook]] #1: fatal = 'yes': must be true or false",
        id="hook-fatal",
    ),
    pytest.param(
        '[[hook]]\ncommand = ["true"]\nwhen = "pre"\n',
        "[[hook]] #1: unknown key 'when'; known keys: name, command, phases, timeout, fatal",
        id="hook-unknown-key",
    ),
    pytest.param(
        '[[hook]]\ncommand = [""]\n',
        "[[hook]] #1: command's program (its first entry) is empty",
        id="hook-empty-program",
    ),
    pytest.param(
        '[[hook]]\ncommand = ["a\\u0000b"]\n',
        "[[hook]] #1: command has a NUL byte, more than 256 entries or one longer than 4096 "
        "characters",
        id="hook-nul",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_policy_refused(tmp_path: Path, text: str, message: str) -> None:
    path = domain_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    assert str(info.value) == f"{path}: {message}"


def test_snapshots_not_a_table(tmp_path: Path) -> None:
    path = domain_file(tmp_path, "")
    path.write_text("snapshots = 3\n" + path.read_text())
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    assert str(info.value) == f"{path}: 'snapshots' must be a table ([snapshots])"


def test_bad_disk_max_chain(tmp_path: Path) -> None:
    path = domain_file(tmp_path, "", disk_extra='max_chain = "3"')
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    assert (
        str(info.value)
        == f"{path}: [[disk]] vda: max_chain = '3': must be a whole number, 1 or more"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["run-policy"],
        ["run-policy", "--dry-run"],
        ["snapshot-create", "-n", "x"],
        ["snapshot-list"],
    ],
    ids=["run-policy", "dry-run", "create", "list"],
)
def test_cli_exit_2_one_line_nothing_written(tmp_path: Path, command: list[str]) -> None:
    path = domain_file(
        tmp_path, '[snapshots]\nschedule = "@hourly"\nexpiry = "30d"\nkeep = {last = 2}\n'
    )
    state = tmp_path / "state"
    before = (tmp_path / "vda.qcow2").read_bytes()
    proc = subprocess.run(
        [*SNAPCORE, "--state-dir", str(state), *command, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"snapcore: error: {path}: [snapshots] keep and expiry together: a checkpoint with an "
        "expiry is judged by it alone, so use keep rules or an expiry for scheduled "
        "checkpoints, not both"
    ]
    assert not state.exists()
    assert (tmp_path / "vda.qcow2").read_bytes() == before


def test_run_policy_json_reports_a_bad_domain_file_and_runs_the_others(tmp_path: Path) -> None:
    domains = tmp_path / "domains"
    domains.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "ok.qcow2"), "1M"], check=True
    )
    (domains / "bad.toml").write_text(
        f'name = "bad"\n[[disk]]\nvdev = "vda"\npath = "{tmp_path}/ok.qcow2"\n'
        "[snapshots]\nmax_chain = -1\n"
    )
    (domains / "plain.toml").write_text(
        f'name = "plain"\n[[disk]]\nvdev = "vda"\npath = "{tmp_path}/ok.qcow2"\n'
    )
    proc = subprocess.run(
        [
            *SNAPCORE,
            "--state-dir",
            str(tmp_path / "state"),
            "--domains-dir",
            str(domains),
            "run-policy",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    import json

    bad, plain = json.loads(proc.stdout)
    assert bad["status"] == "failed"
    assert bad["exit_code"] == 2
    assert bad["error"].endswith("[snapshots] max_chain = -1: must be a whole number, 1 or more")
    assert plain["domain"] == "plain"
    assert plain["status"] == "skipped"
    assert plain["error"] == "no [snapshots] table"
