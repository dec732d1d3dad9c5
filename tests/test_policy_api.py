"""The policy through the library: ``DomainHandle.run_policy`` and ``set_expiry`` on real qcow2
images with ``now`` passed in, checkpoint records with and without ``policy_slot``/``expiry``,
and the hooks and chain limits around a create made by a program."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from snapcore import CreateOptions, Host
from snapcore.errors import ConfigError, CreateBlockedError, HookFailedError
from snapcore.model import Checkpoint
from snapcore.policy import parse_when

T0 = datetime(2026, 12, 3, 10, 0, 30, tzinfo=UTC)


def make_domain(tmp_path: Path, extra: str) -> Path:
    image = tmp_path / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    path = tmp_path / "web1.toml"
    path.write_text(f'name = "web1"\n[[disk]]\nvdev = "vda"\npath = "vda.qcow2"\n{extra}')
    return path


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    monkeypatch.setenv("SNAPCORE_LOCK_DIR", str(tmp_path / "locks"))
    return Host(state_dir=tmp_path / "state", hooks_dir="")


def test_run_policy_with_now(host: Host, tmp_path: Path) -> None:
    web1 = host.open_domain(
        make_domain(tmp_path, '[snapshots]\nschedule = "@hourly"\nkeep = {last = 1}\n')
    )
    run = web1.run_policy(now=T0)
    assert run.status == "done"
    assert run.slot == datetime(2026, 12, 3, 10, tzinfo=UTC)
    assert [(a.action, a.name, a.done) for a in run.actions] == [
        ("create", "auto-20261203-1000", True)
    ]
    assert run.exit_code == 0
    (view,) = web1.list()
    assert view.checkpoint.policy_slot == int(datetime(2026, 12, 3, 10, tzinfo=UTC).timestamp())
    assert view.checkpoint.description == "scheduled for 2026-12-03T10:00+00:00"
    plan = web1.run_policy(now=T0 + timedelta(hours=1), dry_run=True)
    assert plan.status == "planned"
    assert [(a.action, a.name) for a in plan.actions] == [
        ("create", "auto-20261203-1100"),
        ("prune", "auto-20261203-1000"),
    ]
    assert plan.kept == (("auto-20261203-1100", "kept: one of the last 1 (1 of 1)"),)
    assert len(web1.list()) == 1
    json.dumps(plan.to_json())  # JSON-ready
    with pytest.raises(ValueError, match="timezone-aware"):
        web1.run_policy(now=datetime(2026, 12, 3, 10))


def test_run_policy_without_a_table_is_skipped(host: Host, tmp_path: Path) -> None:
    web1 = host.open_domain(make_domain(tmp_path, ""))
    run = web1.run_policy(now=T0)
    assert (run.status, run.error, run.actions) == ("skipped", "no [snapshots] table", ())


def test_set_expiry(host: Host, tmp_path: Path) -> None:
    web1 = host.open_domain(make_domain(tmp_path, ""))
    web1.create(CreateOptions(name="manual"))
    when = datetime(2027, 1, 1, tzinfo=UTC)
    cp = web1.set_expiry("manual", when)
    assert cp.expiry == int(when.timestamp())
    assert web1.get("manual").checkpoint.expiry == int(when.timestamp())
    assert web1.get("manual").to_json()["expiry"] == int(when.timestamp())
    assert web1.set_expiry("manual", None).expiry is None
    with pytest.raises(ConfigError, match="has no time zone"):
        web1.set_expiry("manual", datetime(2027, 1, 1))


def test_a_create_with_options_records_slot_and_expiry_in_one_record(
    host: Host, tmp_path: Path
) -> None:
    web1 = host.open_domain(make_domain(tmp_path, ""))
    web1.create(CreateOptions(name="c1", expiry=2_000_000_000, policy_slot=1_900_000_000))
    (record,) = (tmp_path / "state").glob("domains/*/checkpoints/c1.json")
    data = json.loads(record.read_text())["checkpoint"]
    assert (data["expiry"], data["policy_slot"]) == (2_000_000_000, 1_900_000_000)


def test_old_records_without_the_fields_are_read_and_written_as_before() -> None:
    old = {
        "name": "c1",
        "domain_uuid": "00000000-0000-0000-0000-000000000000",
        "description": "",
        "creation_time": 5,
        "state": "shutoff",
        "memory": None,
        "parent": None,
        "disks": [],
    }
    cp = Checkpoint.from_json(old)
    assert (cp.policy_slot, cp.expiry) == (None, None)
    assert cp.to_json() == old  # a record without them is written without them
    with pytest.raises(TypeError):
        Checkpoint.from_json({**old, "expiry": "soon"})


def test_manual_create_refused_by_a_disk_chain_limit(host: Host, tmp_path: Path) -> None:
    web1 = host.open_domain(
        make_domain(tmp_path, 'max_chain = 2\n[snapshots]\nschedule = "@daily"\n')
    )
    web1.create(CreateOptions(name="a"))
    web1.create(CreateOptions(name="b"))
    with pytest.raises(CreateBlockedError) as info:
        web1.create(CreateOptions(name="c"))
    assert info.value.blockers == (
        "disk vda: a new snapshot would make its chain 3 long, past its limit of 2 (max_chain)",
        "delete 'a' first",
    )
    with pytest.raises(CreateBlockedError):
        web1.plan_create(CreateOptions(name="c"))
    assert [v.checkpoint.name for v in web1.list()] == ["a", "b"]


def test_fatal_pre_hook_through_the_library(host: Host, tmp_path: Path) -> None:
    web1 = host.open_domain(
        make_domain(tmp_path, '[[hook]]\ncommand = ["false"]\nphases = ["pre-create"]\n')
    )
    with pytest.raises(HookFailedError) as info:
        web1.create(CreateOptions(name="a"))
    assert info.value.exit_code == 2
    assert [o.hook for o in web1.hook_outcomes] == ["false"]
    assert web1.list() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", T0 + timedelta(days=30)),
        ("1w 2d", T0 + timedelta(days=9)),
        ("2026-12-24T08:00+01:00", datetime(2026, 12, 24, 7, tzinfo=UTC)),
        ("2026-12-24T07:00Z", datetime(2026, 12, 24, 7, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, T0) == expected
