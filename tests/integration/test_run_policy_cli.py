"""``snapcore run-policy`` end to end through the CLI, on real qcow2 images (qemu-img) and VHD
chains (snapcore's native engine), on a fake clock (``SNAPCORE_NOW``, honoured only with
``SNAPCORE_TESTING=1``): scheduled checkpoints made once per slot, missed runs caught up once,
keep rules and expiry pruning, chain limits, runs killed half-way and run again, busy domains,
dry runs, ``snapshot-set``."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.crash.world import KINDS, SNAPCORE, World

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 3, 10, 0, 20, tzinfo=UTC)


class PolicyWorld(World):
    """The crash suite's two-disk domain ``web1``, with a ``[snapshots]`` table and a clock."""

    def set_policy(self, table: str, extra: str = "") -> None:
        text = self.domain.read_text().split("[snapshots]")[0]
        self.domain.write_text(f"{text}[snapshots]\n{table}{extra}")

    def at(
        self, when: datetime, *args: str, domains_dir: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **self.env,
            "SNAPCORE_TESTING": "1",
            "SNAPCORE_NOW": when.isoformat(),
            "SNAPCORE_HOOKS_DIR": "",
        }
        head = ["--domains-dir", str(domains_dir)] if domains_dir else []
        return subprocess.run(
            [*SNAPCORE, *head, *args], env=env, capture_output=True, text=True, check=False
        )

    def policy(self, when: datetime, *args: str) -> subprocess.CompletedProcess[str]:
        return self.at(when, "run-policy", *args, str(self.domain))

    def policy_json(self, when: datetime, *args: str) -> dict[str, Any]:
        proc = self.policy(when, "--json", *args)
        assert proc.returncode == 0, proc.stderr
        (run,) = json.loads(proc.stdout)
        assert isinstance(run, dict)
        return run

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        code, views, err = self.listing()
        assert code == 0, err
        return {str(v["name"]): v for v in views}


@pytest.fixture(params=["internal", "vhd"], ids=["qcow2", "vhd"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> PolicyWorld:
    w = PolicyWorld(tmp_path / "w", KINDS[request.param])
    w.build()
    return w


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def test_hourly_with_keep_last(world: PolicyWorld) -> None:
    world.set_policy('schedule = "@hourly"\nkeep = {last = 2}\n')
    world.write_gen(1)
    run = world.policy_json(T0)
    assert run["status"] == "done"
    assert [(a["action"], a["name"], a["done"]) for a in run["actions"]] == [
        ("create", "auto-20261203-1000", True)
    ]
    assert run["slot"] == int(datetime(2026, 12, 3, 10, tzinfo=UTC).timestamp())
    # the same slot again, a minute later and a second later: nothing to do
    for later in (minutes(1), minutes(59)):
        again = world.policy_json(T0 + later)
        assert again["actions"] == []
    world.write_gen(2)
    world.policy_json(T0 + minutes(60))
    world.write_gen(3)
    run = world.policy_json(T0 + minutes(120))
    assert [(a["action"], a["name"]) for a in run["actions"]] == [
        ("create", "auto-20261203-1200"),
        ("prune", "auto-20261203-1000"),
    ]
    assert run["actions"][1]["why"] == "kept by no rule (last = 2)"
    cps = world.checkpoints()
    assert sorted(cps) == ["auto-20261203-1100", "auto-20261203-1200"]
    assert cps["auto-20261203-1200"]["policy_slot"] == int(
        datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()
    )
    assert cps["auto-20261203-1200"]["expiry"] is None
    assert cps["auto-20261203-1200"]["current"] is True
    # the data of each scheduled checkpoint is what the disks held when its slot ran
    world.write_gen(4)
    assert (
        world.cli("snapshot-revert", "-n", "auto-20261203-1100", str(world.domain)).returncode == 0
    )
    assert world.gens() == {"vda": 2, "vdb": 2}
    assert world.image_problems() == []


def test_missed_runs_catch_up_once(world: PolicyWorld) -> None:
    world.set_policy('schedule = "*/15 * * * *"\n')
    world.policy_json(T0)
    run = world.policy_json(T0 + timedelta(days=2, hours=5, minutes=7))
    assert [(a["action"], a["name"]) for a in run["actions"]] == [("create", "auto-20261205-1500")]
    assert sorted(world.checkpoints()) == ["auto-20261203-1000", "auto-20261205-1500"]


def test_expiry_from_the_policy_and_snapshot_set(world: PolicyWorld) -> None:
    world.set_policy('schedule = "@hourly"\nexpiry = "90m"\n')
    world.policy_json(T0)
    cps = world.checkpoints()
    assert cps["auto-20261203-1000"]["expiry"] == int((T0 + minutes(90)).timestamp())
    # a checkpoint made by hand is kept ... until it is given an expiry
    assert world.cli("snapshot-create", "-n", "manual", str(world.domain)).returncode == 0
    proc = world.at(
        T0,
        "snapshot-set",
        "-n",
        "manual",
        "--expiry",
        "2026-12-03T13:30+00:00",
        "--json",
        str(world.domain),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["expiry"] == int(
        datetime(2026, 12, 3, 13, 30, tzinfo=UTC).timestamp()
    )
    long = world.cli("snapshot-list", "-l", str(world.domain)).stdout
    assert "  expires: " in long
    assert "  scheduled for: " in long
    world.policy_json(T0 + minutes(60))
    run = world.policy_json(T0 + minutes(120))
    assert [(a["action"], a["name"], a["why"]) for a in run["actions"]] == [
        ("create", "auto-20261203-1200", "due slot 2026-12-03T12:00+00:00 (2026-12-03T12:00Z)"),
        ("prune", "auto-20261203-1000", "expired 2026-12-03T11:30:20Z"),
    ]
    run = world.policy_json(T0 + minutes(240))
    pruned = [a["name"] for a in run["actions"] if a["action"] == "prune"]
    assert sorted(pruned) == ["auto-20261203-1100", "auto-20261203-1200", "manual"]
    assert sorted(world.checkpoints()) == ["auto-20261203-1400"]
    assert world.image_problems() == []


def test_snapshot_set_refuses_bad_times_and_takes_expiry_away(world: PolicyWorld) -> None:
    world.set_policy('schedule = "@hourly"\n')
    assert world.cli("snapshot-create", "-n", "manual", str(world.domain)).returncode == 0
    for when, message in [
        (
            "tomorrow",
            'snapcore: error: --expiry "tomorrow": expected a duration such as 30d or '
            "12h, or an ISO time such as 2026-12-24T08:00 or 2026-12-24T08:00+01:00",
        ),
        (
            "3x",
            'snapcore: error: --expiry "3x": unknown unit "x"; use m, h, d or w, as in 30d or 12h',
        ),
        (
            "2026-12-01T00:00+00:00",
            'snapcore: error: --expiry "2026-12-01T00:00+00:00": '
            "2026-12-01T00:00Z is not in the future (now is 2026-12-03T10:00:20Z); delete the "
            "snapshot to be rid of it now",
        ),
    ]:
        proc = world.at(T0, "snapshot-set", "-n", "manual", "--expiry", when, str(world.domain))
        assert (proc.returncode, proc.stderr.strip()) == (2, message)
    assert (
        world.at(T0, "snapshot-set", "-n", "manual", "--expiry", "1d", str(world.domain)).returncode
        == 0
    )
    assert world.checkpoints()["manual"]["expiry"] == int((T0 + timedelta(days=1)).timestamp())
    proc = world.at(T0, "snapshot-set", "-n", "manual", "--no-expiry", str(world.domain))
    assert proc.stdout == "snapshot manual of domain web1 has no expiry\n"
    assert world.checkpoints()["manual"]["expiry"] is None
    proc = world.at(T0, "snapshot-set", "-n", "nosuch", "--expiry", "1d", str(world.domain))
    assert proc.returncode == 2
    assert proc.stderr == "snapcore: error: domain 'web1' has no snapshot 'nosuch'\n"


def test_snapshot_create_with_an_expiry_is_pruned_by_run_policy(world: PolicyWorld) -> None:
    world.set_policy('schedule = "@daily"\n')
    proc = world.at(T0, "snapshot-create", "-n", "manual", "--expiry", "2h", str(world.domain))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(", expires 2026-12-03 12:00:20 +0000)")
    assert world.checkpoints()["manual"]["expiry"] == int((T0 + timedelta(hours=2)).timestamp())
    bad = world.at(T0, "snapshot-create", "-n", "other", "--expiry", "3x", str(world.domain))
    assert bad.returncode == 2
    assert bad.stderr.startswith('snapcore: error: --expiry "3x": unknown unit "x"')
    assert sorted(world.checkpoints()) == ["manual"]
    world.policy_json(T0)  # the day's slot: auto-20261203-0000
    assert "manual" in world.checkpoints()
    run = world.policy_json(T0 + minutes(121))
    assert [(a["action"], a["name"]) for a in run["actions"]] == [("prune", "manual")]
    assert sorted(world.checkpoints()) == ["auto-20261203-0000"]


def test_dry_run_shows_the_plan_and_changes_nothing(world: PolicyWorld) -> None:
    world.set_policy('schedule = "@hourly"\nkeep = {last = 1}\n')
    world.policy_json(T0)
    before = world.state_files()
    proc = world.policy(T0 + minutes(60), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "web1: would create auto-20261203-1100: due slot 2026-12-03T11:00+00:00 "
        "(2026-12-03T11:00Z)",
        "web1: would prune auto-20261203-1000: kept by no rule (last = 1)",
        "web1: keep auto-20261203-1100: one of the last 1 (1 of 1)",
    ]
    plan = world.policy_json(T0 + minutes(60), "--dry-run")
    assert plan["status"] == "planned"
    assert [a["done"] for a in plan["actions"]] == [False, False]
    assert world.state_files() == before
    assert sorted(world.checkpoints()) == ["auto-20261203-1000"]


def test_chain_limit_deletes_prunable_first_or_refuses(world: PolicyWorld) -> None:
    world.set_policy('schedule = "@hourly"\nexpiry = "90m"\nmax_chain = 2\n')
    world.policy_json(T0)
    world.policy_json(T0 + minutes(60))
    # at 12:00 the chain holds 10:00 (expired at 11:30) and 11:00: 10:00 must go first
    run = world.policy_json(T0 + minutes(120))
    assert [(a["action"], a["name"]) for a in run["actions"]] == [
        ("delete", "auto-20261203-1000"),
        ("create", "auto-20261203-1200"),
    ]
    assert run["actions"][0]["why"].startswith(
        "makes room for auto-20261203-1200 in a disk's chain (max_chain); expired "
    )
    # a create by hand deletes nothing: refused, naming what to delete, nothing touched
    before = world.state_files()
    proc = world.cli("snapshot-create", "-n", "manual", str(world.domain))
    assert proc.returncode == 2
    assert proc.stderr == (
        "snapcore: error: cannot create snapshot 'manual': disk vda: a new snapshot would "
        "make its chain 3 long, past its limit of 2 (max_chain); disk vdb: a new snapshot "
        "would make its chain 3 long, past its limit of 2 (max_chain); delete "
        "'auto-20261203-1100' first\n"
    )
    assert world.state_files() == before
    # nothing prunable at 12:10 (the 11:00 expires at 12:30): run-policy refuses too, exit 2
    world.set_policy('schedule = "*/10 * * * *"\nexpiry = "90m"\nmax_chain = 2\n')
    proc = world.policy(T0 + minutes(130), "--json")
    assert proc.returncode == 2
    (run,) = json.loads(proc.stdout)
    assert run["status"] == "failed"
    assert run["error"] == (
        "cannot create snapshot 'auto-20261203-1210': disk vda: a new snapshot would make its "
        "chain 3 long, past its limit of 2 (max_chain); disk vdb: a new snapshot would make its "
        "chain 3 long, past its limit of 2 (max_chain); delete 'auto-20261203-1100' first"
    )
    assert sorted(world.checkpoints()) == ["auto-20261203-1100", "auto-20261203-1200"]
    assert world.image_problems() == []


def kill_parent_hook(phase: str) -> str:
    return (
        f'[[hook]]\nname = "crash"\ncommand = ["sh", "-c", "kill -9 $PPID"]\nphases = ["{phase}"]\n'
    )


@pytest.mark.parametrize("phase", ["post-create", "pre-delete", "post-delete"])
def test_run_killed_between_create_and_prune_is_finished_by_the_next(
    world: PolicyWorld, phase: str
) -> None:
    policy = 'schedule = "@hourly"\nkeep = {last = 1}\n'
    world.set_policy(policy)
    world.policy_json(T0)
    world.policy_json(T0 + minutes(60))  # 10:00 pruned, 11:00 kept
    world.set_policy(policy, extra=kill_parent_hook(phase))
    killed = world.policy(T0 + minutes(120))
    assert killed.returncode == -9, killed.stderr
    after_kill = sorted(world.checkpoints())
    assert "auto-20261203-1200" in after_kill
    if phase == "post-delete":
        assert after_kill == ["auto-20261203-1200"]
    else:
        assert after_kill == ["auto-20261203-1100", "auto-20261203-1200"]
    world.set_policy(policy)
    run = world.policy_json(T0 + minutes(121))
    assert [(a["action"], a["name"]) for a in run["actions"]] == (
        [] if phase == "post-delete" else [("prune", "auto-20261203-1100")]
    )
    assert sorted(world.checkpoints()) == ["auto-20261203-1200"]
    assert world.image_problems() == []
    assert world.cli("check", str(world.domain)).returncode == 0


def test_run_killed_before_its_create_makes_the_slot_once(world: PolicyWorld) -> None:
    """A run killed once its create is validated (at the pre-create hook): nothing was
    touched, and the next run makes the slot's checkpoint, once. (Kills inside a create are
    the crash suite's: the journal finishes or undoes them, and the slot is in the record.)"""
    policy = 'schedule = "@hourly"\n'
    world.set_policy(policy, extra=kill_parent_hook("pre-create"))
    killed = world.policy(T0)
    assert killed.returncode == -9
    world.set_policy(policy)
    run = world.policy_json(T0 + minutes(1))
    assert [a["name"] for a in run["actions"]] == ["auto-20261203-1000"]
    assert world.policy_json(T0 + minutes(2))["actions"] == []
    assert sorted(world.checkpoints()) == ["auto-20261203-1000"]


def test_busy_domain_is_skipped_and_others_run(world: PolicyWorld, tmp_path: Path) -> None:
    world.set_policy('schedule = "@hourly"\n')
    domains = tmp_path / "domains"
    domains.mkdir()
    (domains / "web1.toml").symlink_to(world.domain)
    (domains / "plain.toml").write_text(
        'name = "plain"\n[[disk]]\nvdev = "vda"\npath = "' + str(world.disks["vda"]) + '"\n'
    )
    world.policy_json(T0)  # makes the domain's state dir
    (lock,) = world.state.glob("domains/*/lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = world.at(
            T0 + minutes(60), "--lock-timeout", "0", "run-policy", "--json", domains_dir=domains
        )
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    plain, web1 = json.loads(proc.stdout)
    assert (plain["domain"], plain["status"]) == ("plain", "skipped")
    assert web1["status"] == "busy"
    assert "busy" in web1["error"] or "lock" in web1["error"]
    proc = world.at(T0 + minutes(61), "run-policy", domains_dir=domains)
    assert proc.returncode == 0
    assert proc.stdout == (
        "web1: created auto-20261203-1100: due slot 2026-12-03T11:00+00:00 (2026-12-03T11:00Z)\n"
    )


def test_snapcore_now_is_ignored_without_snapcore_testing(world: PolicyWorld) -> None:
    world.set_policy('schedule = "@yearly"\n')
    env = {**world.env, "SNAPCORE_NOW": "2001-01-01T00:00:30+00:00", "SNAPCORE_HOOKS_DIR": ""}
    env.pop("SNAPCORE_TESTING", None)
    proc = subprocess.run(
        [*SNAPCORE, "run-policy", "--json", str(world.domain)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    (run,) = json.loads(proc.stdout)
    assert run["now"] > int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
