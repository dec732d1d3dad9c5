"""``snapcore policy install|uninstall``: the systemd units it writes pass ``systemd-analyze
verify`` without a warning, and the service's ``ExecStart`` command line, run as systemd would
split it, runs the policy of the domains dir. ``systemctl`` is never run."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapcore.errors import ConfigError
from snapcore.systemd import SERVICE, TIMER, policy_units

SNAPCORE = [sys.executable, "-m", "snapcore"]


def snapcore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SNAPCORE, *args], capture_output=True, text=True, check=False)


def exec_start(service: str) -> list[str]:
    """The service's ExecStart, split as systemd does for these simple words and quotes."""
    (line,) = [x for x in service.splitlines() if x.startswith("ExecStart=")]
    text = line.removeprefix("ExecStart=").replace("%%", "%").replace("$$", "$")
    return shlex.split(text)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A host layout under a directory whose name has a blank (quoting is needed)."""
    root = tmp_path / "my host"
    (root / "domains").mkdir(parents=True)
    (root / "hooks.d").mkdir()
    image = root / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    (root / "domains" / "web1.toml").write_text(
        f'name = "web1"\n[[disk]]\nvdev = "vda"\npath = "{image}"\n'
        '[snapshots]\nschedule = "@hourly"\nkeep = {last = 2}\n'
    )
    return root


def install(site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return snapcore(
        "--state-dir",
        str(site / "state"),
        "--domains-dir",
        str(site / "domains"),
        "--hooks-dir",
        str(site / "hooks.d"),
        "policy",
        "install",
        "--unit-dir",
        str(site / "units"),
        *extra,
    )


def test_install_writes_two_units_and_says_what_to_run(site: Path) -> None:
    proc = install(site)
    assert proc.returncode == 0, proc.stderr
    units = site / "units"
    assert sorted(p.name for p in units.iterdir()) == [SERVICE, TIMER]
    assert proc.stdout.splitlines() == [
        f"wrote {units / SERVICE}",
        f"wrote {units / TIMER}",
        f"now run: systemctl daemon-reload; systemctl enable --now {TIMER}",
        f"(it starts {SERVICE} every minute)",
    ]
    timer = (units / TIMER).read_text()
    assert "\nOnCalendar=minutely\n" in timer
    assert f"\nUnit={SERVICE}\n" in timer
    service = (units / SERVICE).read_text()
    assert "\nType=oneshot\n" in service
    argv = exec_start(service)
    assert argv == [
        os.path.abspath(sys.executable),
        "-m",
        "snapcore",
        "--state-dir",
        str(site / "state"),
        "--domains-dir",
        str(site / "domains"),
        "--hooks-dir",
        str(site / "hooks.d"),
        "run-policy",
    ]
    assert oct((units / SERVICE).stat().st_mode & 0o777) == "0o644"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_pass_systemd_analyze_verify(site: Path) -> None:
    assert install(site).returncode == 0
    units = site / "units"
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(units / SERVICE), str(units / TIMER)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # not even a warning about our units (unknown keys only warn); systemd-analyze also loads
    # the host's units and may warn about those (libvirt 11.3's libvirtd.service uses a
    # service type Debian 12's systemd does not know): those lines are not ours to judge
    ours = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if not line.startswith(("/lib/systemd/", "/usr/lib/systemd/", "/etc/systemd/"))
    ]
    assert ours == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_catches_a_broken_unit(site: Path) -> None:
    """The check above can fail: a relative ExecStart is refused by the same command."""
    assert install(site).returncode == 0
    service = (site / "units" / SERVICE).read_text()
    broken = site / "units" / "broken.service"
    broken.write_text(service.replace("ExecStart=/", "ExecStart="))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(broken)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode != 0


def test_the_service_command_runs_the_policy_of_the_domains_dir(site: Path) -> None:
    assert install(site).returncode == 0
    argv = exec_start((site / "units" / SERVICE).read_text())
    env = {
        **os.environ,
        "SNAPCORE_TESTING": "1",
        "SNAPCORE_NOW": "2026-12-03T10:00:30+00:00",
        "SNAPCORE_LOCK_DIR": str(site / "locks"),
    }
    env.pop("SNAPCORE_STATE_DIR", None)
    env.pop("SNAPCORE_DOMAINS_DIR", None)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "web1: created auto-20261203-1000: due slot 2026-12-03T10:00+00:00 (2026-12-03T10:00Z)\n"
    )
    listing = snapcore(
        "--state-dir",
        str(site / "state"),
        "snapshot-list",
        "--json",
        str(site / "domains/web1.toml"),
    )
    assert [c["name"] for c in json.loads(listing.stdout)] == ["auto-20261203-1000"]
    # every minute: the next run in the same hour does nothing
    env["SNAPCORE_NOW"] = "2026-12-03T10:01:30+00:00"
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd="/")
    assert (proc.returncode, proc.stdout) == (0, "web1: nothing to do\n")


def test_dry_run_writes_nothing(site: Path) -> None:
    proc = install(site, "--dry-run")
    assert proc.returncode == 0
    assert f"# would write {site / 'units' / SERVICE}:" in proc.stdout
    assert "ExecStart=" in proc.stdout
    assert not (site / "units").exists()


def test_uninstall_removes_only_what_install_wrote(site: Path) -> None:
    units = site / "units"
    assert install(site).returncode == 0
    (units / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    proc = snapcore("policy", "uninstall", "--unit-dir", str(units), "--dry-run")
    assert proc.stdout.splitlines() == [
        f"would remove {units / TIMER}",
        f"would remove {units / SERVICE}",
    ]
    assert (units / SERVICE).exists()
    proc = snapcore("policy", "uninstall", "--unit-dir", str(units))
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        f"removed {units / TIMER}",
        f"removed {units / SERVICE}",
        f"now run: systemctl disable --now {TIMER}; systemctl daemon-reload",
    ]
    assert sorted(p.name for p in units.iterdir()) == ["other.service"]
    proc = snapcore("policy", "uninstall", "--unit-dir", str(units))
    assert (proc.returncode, proc.stdout) == (0, f"no snapcore policy units in {units}\n")


def test_install_refuses_to_overwrite_a_foreign_unit(site: Path) -> None:
    units = site / "units"
    units.mkdir()
    (units / SERVICE).write_text("[Service]\nExecStart=/bin/true\n")
    proc = install(site)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"snapcore: error: {units / SERVICE} exists and was not written by snapcore; "
        "move it away first\n"
    )
    assert not (units / TIMER).exists()
    assert proc.stdout == ""


def test_units_quote_specifiers_and_refuse_control_characters(tmp_path: Path) -> None:
    units = policy_units(
        ["/usr/bin/snapcore"], state_dir="/srv/a%b $x", domains_dir="/etc/snapcore/domains"
    )
    (line,) = [x for x in units[SERVICE].splitlines() if x.startswith("ExecStart=")]
    assert line == (
        'ExecStart=/usr/bin/snapcore --state-dir "/srv/a%%b $$x" '
        "--domains-dir /etc/snapcore/domains run-policy"
    )
    with pytest.raises(ConfigError):
        policy_units(["/usr/bin/snapcore"], state_dir="/srv/a\nb", domains_dir="/d")
    with pytest.raises(ConfigError):
        policy_units(["snapcore"], state_dir="/s", domains_dir="/d")
