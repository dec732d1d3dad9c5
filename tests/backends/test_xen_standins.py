"""The xen hypervisor plugin and the vhd backend's live path, through stand-ins.

Xen's ``xl`` and blktap's ``vhd-util`` and ``tap-ctl`` cannot run on this machine (not packaged
for Debian 12), so these tests put the stand-in executables of ``tests/standins`` first on
``PATH``: they reproduce the real tools' command lines and output formats, keep the domains and
tapdisks they pretend to run in JSON files, work on the real VHD files, and record every argv.
The tests assert the exact command sequences snapcore runs, and the files and states left.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import snapcore_vhd.plugin
import snapcore_xen.plugin
from snapcore import cli
from snapcore.context import HookContext
from snapcore.errors import ConfigError, DomainStateError
from snapcore.model import Disk, Domain, DomainState, MemoryImage, SnapshotRequest
from snapcore.plugins import load_plugins
from snapcore_vhd import ops
from snapcore_vhd.chain import Chain
from snapcore_xen.xl import DomainConfig, ListedDomain
from tests.standins import StandIns

MiB = 1024 * 1024


def put(path: Path | str, offset: int, data: bytes) -> None:
    with Chain(str(path), writable=True) as chain:
        chain.write(offset, data)


def get(path: Path | str, offset: int, length: int) -> bytes:
    with Chain(str(path)) as chain:
        return chain.read(offset, length)


def libxl_config(name: str, disks: list[tuple[str, str, str]]) -> dict[str, object]:
    """A libxl domain configuration as ``xl list -l`` shows it (trimmed to what matters)."""
    return {
        "c_info": {"type": "hvm", "name": name, "uuid": "4e0a8f4c-6b53-4a6e-9d43-2a1b2c3d4e5f"},
        "b_info": {"max_vcpus": 2, "target_memkb": 524288, "max_memkb": 524288},
        "disks": [
            {
                "backend_domid": 0,
                "pdev_path": path,
                "vdev": vdev,
                "backend": "tap",
                "format": fmt,
                "script": None,
                "removable": 0,
                "readwrite": 1,
                "is_cdrom": 0,
            }
            for path, vdev, fmt in disks
        ],
        "on_reboot": "restart",
    }


class XenHost:
    """A host with the stand-ins: one running Xen domain ``vm1`` with one VHD disk served by
    a tapdisk, and its domain file."""

    def __init__(self, tmp_path: Path, standins: StandIns):
        self.tmp = tmp_path
        self.standins = standins
        self.state = tmp_path / "state"
        self.disk = tmp_path / "xvda.vhd"
        ops.create_dynamic(str(self.disk), 8 * MiB)
        put(self.disk, 0, b"A" * 4096)
        self.domain = tmp_path / "vm1.toml"
        self.domain.write_text(
            'name = "vm1"\nhypervisor = "xen"\n'
            f'[[disk]]\nvdev = "xvda"\npath = "{self.disk}"\ndriver = "vhd"\n'
        )
        standins.write_state(
            "xl.json",
            {
                "next_domid": 8,
                "domains": {
                    "vm1": {
                        "domid": 7,
                        "paused": False,
                        "config": libxl_config("vm1", [(str(self.disk), "xvda", "vhd")]),
                    }
                },
            },
        )
        standins.add_tapdisk(str(self.disk))

    def cli(self, *args: str) -> int:
        return cli.main(["--state-dir", str(self.state), *args])

    def xl_domains(self) -> dict[str, dict[str, object]]:
        data = self.standins.read_state("xl.json")
        return dict(data["domains"])


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StandIns:
    return StandIns.install(monkeypatch, tmp_path)


@pytest.fixture
def host(tmp_path: Path, standins: StandIns) -> XenHost:
    return XenHost(tmp_path, standins)


def test_live_disk_only_checkpoint_argv(host: XenHost, capsys: pytest.CaptureFixture[str]) -> None:
    """The exact commands of a disk-only checkpoint of a running Xen domain: xl pause, tap-ctl
    pause, vhd-util snapshot (and hidden flag), tap-ctl unpause -a onto the new leaf, xl
    unpause."""
    assert host.cli("snapshot-create", "-D", "-n", "s1", str(host.domain)) == 0, (
        capsys.readouterr().err
    )
    disk, base = str(host.disk), str(host.tmp / "xvda.s1.vhd")
    # the new leaf is built under a scratch name unique to the command (snapcore.overlay)
    [new] = [c[3] for c in host.standins.calls() if c[:2] == ("vhd-util", "snapshot")]
    assert re.fullmatch(re.escape(disk) + r"\.[0-9]+-[0-9a-f]{8}\.snapcore-new", new), new
    pause = ("tap-ctl", "pause", "-p", "4242", "-m", "0")
    unpause = ("tap-ctl", "unpause", "-p", "4242", "-m", "0", "-a", f"vhd:{disk}")
    assert host.standins.calls() == [
        ("xl", "list", "vm1"),
        ("xl", "list", "-l", "vm1"),
        ("vhd-util", "check", "-n", disk, "-p"),
        ("vhd-util", "query", "-n", disk, "-v", "-s", "-p", "-f", "-d"),
        ("tap-ctl", "list", "-f", disk),
        ("xl", "pause", "vm1"),
        ("tap-ctl", "list", "-f", disk),
        pause,
        ("vhd-util", "snapshot", "-n", new, "-p", base, "-e"),
        ("vhd-util", "set", "-n", base, "-f", "hidden", "-v", "1"),
        unpause,
        ("vhd-util", "query", "-n", base, "-v", "-s", "-p", "-f", "-d"),
        ("xl", "unpause", "vm1"),
    ]
    changes = [c for c in host.standins.calls() if c[1] in ("pause", "unpause", "snapshot", "set")]
    assert changes == [
        ("xl", "pause", "vm1"),
        pause,
        ("vhd-util", "snapshot", "-n", new, "-p", base, "-e"),
        ("vhd-util", "set", "-n", base, "-f", "hidden", "-v", "1"),
        unpause,
        ("xl", "unpause", "vm1"),
    ]
    assert host.standins.tapdisks() == [
        {"pid": 4242, "minor": 0, "state": 0, "type": "vhd", "path": disk}
    ]
    assert host.xl_domains()["vm1"]["paused"] is False
    assert ops.query(disk).parent == base
    assert ops.query(base).hidden
    assert get(disk, 0, 4096) == b"A" * 4096


def test_live_checkpoint_with_memory_and_revert(
    host: XenHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """With memory (xen sets memory_first): xl save -p while the guest runs (it suspends
    itself), the disk switch while it stays paused, xl unpause.
    Reverting to it: xl destroy, a fresh leaf over the base, xl restore (running, as saved)."""
    assert host.cli("snapshot-create", "-n", "m1", str(host.domain)) == 0, capsys.readouterr().err
    calls = host.standins.calls()
    memory = next(c for c in calls if c[:2] == ("xl", "save"))
    image = memory[4]
    assert memory == ("xl", "save", "-p", "vm1", image)
    order = [c[:2] for c in calls if c[1] in ("save", "pause", "snapshot", "unpause")]
    assert order == [
        ("xl", "save"),
        ("tap-ctl", "pause"),
        ("vhd-util", "snapshot"),
        ("tap-ctl", "unpause"),
        ("xl", "unpause"),
    ]
    assert Path(image).read_bytes().startswith(b"Xen saved domain, xl format")
    assert host.xl_domains()["vm1"]["paused"] is False
    put(host.disk, 0, b"B" * 4096)
    host.standins.clear()
    assert host.cli("snapshot-revert", "-n", "m1", str(host.domain)) == 0, capsys.readouterr().err
    calls = host.standins.calls()
    destroy = calls.index(("xl", "destroy", "vm1"))
    snapshot = next(i for i, c in enumerate(calls) if c[:2] == ("vhd-util", "snapshot"))
    assert destroy < snapshot
    # restored paused, its disks looked at before the guest runs, then let run as saved
    assert calls[-3:] == [
        ("xl", "restore", "-p", image),
        ("xl", "list", "-l", "vm1"),
        ("xl", "unpause", "vm1"),
    ]
    assert get(host.disk, 0, 4096) == b"A" * 4096
    assert host.xl_domains()["vm1"]["paused"] is False
    assert [t["path"] for t in host.standins.tapdisks()] == [str(host.disk)]


def test_memory_of_a_pvh_guest_is_saved_while_it_runs(
    host: XenHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """libxl cannot suspend a paused PVH guest (it must answer the request itself), so the xen
    plugin sets memory_first: the save runs while the guest runs, then the disks switch."""
    data = host.standins.read_state("xl.json")
    data["domains"]["vm1"]["config"]["c_info"]["type"] = "pvh"
    host.standins.write_state("xl.json", data)
    assert host.cli("snapshot-create", "-n", "m1", str(host.domain)) == 0, capsys.readouterr().err
    assert (host.tmp / "xvda.m1.vhd").exists()
    assert list(host.state.rglob("m1.img"))
    assert host.xl_domains()["vm1"]["paused"] is False
    assert host.standins.tapdisks()[0]["state"] == 0


def test_preflight_compares_the_domain_file_with_xl(
    host: XenHost, capsys: pytest.CaptureFixture[str]
) -> None:
    other = host.tmp / "other.vhd"
    ops.create_dynamic(str(other), 8 * MiB)
    host.domain.write_text(
        'name = "vm1"\nhypervisor = "xen"\n'
        f'[[disk]]\nvdev = "xvda"\npath = "{other}"\ndriver = "vhd"\n'
    )
    assert host.cli("snapshot-create", "-D", "-n", "s1", str(host.domain)) == 2
    err = capsys.readouterr().err
    assert f"the domain file says {other} but xl has {host.disk} open" in err
    assert not any(c[1] in ("pause", "snapshot") for c in host.standins.calls())


def test_failed_snapshot_unpauses_everything_and_keeps_the_disk(
    host: XenHost, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = host.disk.read_bytes()
    monkeypatch.setenv("SNAPCORE_STANDIN_FAIL", "vhd-util snapshot")
    assert host.cli("snapshot-create", "-D", "-n", "s1", str(host.domain)) == 1
    err = capsys.readouterr().err
    assert "failed and was undone" in err
    calls = host.standins.calls()
    assert calls[-2:] == [
        ("tap-ctl", "unpause", "-p", "4242", "-m", "0", "-a", f"vhd:{host.disk}"),
        ("xl", "unpause", "vm1"),
    ]
    assert host.disk.read_bytes() == before
    assert not (host.tmp / "xvda.s1.vhd").exists()
    assert host.standins.tapdisks()[0]["state"] == 0
    assert host.xl_domains()["vm1"]["paused"] is False


def test_running_disk_without_tapdisk_is_refused(
    host: XenHost, capsys: pytest.CaptureFixture[str]
) -> None:
    host.standins.write_state("tapdisks.json", [])
    before = host.disk.read_bytes()
    assert host.cli("snapshot-create", "-D", "-n", "s1", str(host.domain)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no tapdisk serves" in err
    assert host.disk.read_bytes() == before
    assert not any(c[1] in ("pause", "snapshot") for c in host.standins.calls())


def test_a_running_qemu_domain_cannot_switch_a_vhd(tmp_path: Path) -> None:
    path = tmp_path / "xvda.vhd"
    ops.create_dynamic(str(path), 4 * MiB)
    disk = Disk(vdev="xvda", path=str(path), driver="vhd", options={"engine": "native"})
    ctx = HookContext(
        domain=Domain(name="q1", disks=(disk,), hypervisor="qemu"), state=DomainState.RUNNING
    )
    blockers = snapcore_vhd.plugin.disk_snapshot_create_check(
        request=SnapshotRequest(disk=disk, name="s"), ctx=ctx
    )
    assert blockers is not None
    assert any("only be switched by tapdisk, in a Xen domain" in b for b in blockers)


# -- the xen plugin's hooks -------------------------------------------------------------------


def _ctx(host: XenHost) -> HookContext:
    disk = Disk(vdev="xvda", path=str(host.disk), driver="vhd")
    return HookContext(domain=Domain(name="vm1", disks=(disk,), hypervisor="xen"))


def test_state_from_xl_list(host: XenHost, standins: StandIns) -> None:
    ctx = _ctx(host)
    assert snapcore_xen.plugin.domain_state(ctx=ctx) is DomainState.RUNNING
    assert snapcore_xen.plugin.domain_pause(ctx=ctx) is True
    assert snapcore_xen.plugin.domain_state(ctx=ctx) is DomainState.PAUSED
    assert snapcore_xen.plugin.domain_resume(ctx=ctx) is True
    assert snapcore_xen.plugin.domain_state(ctx=ctx) is DomainState.RUNNING
    assert snapcore_xen.plugin.domain_stop(ctx=ctx) is True
    assert snapcore_xen.plugin.domain_state(ctx=ctx) is DomainState.SHUTOFF
    assert snapcore_xen.plugin.domain_stop(ctx=ctx) is True, "stopping a stopped domain is fine"
    assert standins.calls("xl") == [
        ("xl", "list", "vm1"),
        ("xl", "pause", "vm1"),
        ("xl", "list", "vm1"),
        ("xl", "unpause", "vm1"),
        ("xl", "list", "vm1"),
        ("xl", "list", "vm1"),
        ("xl", "destroy", "vm1"),
        ("xl", "list", "vm1"),
        ("xl", "list", "vm1"),
    ]
    assert standins.tapdisks() == [], "destroying the domain closed its tapdisk"


def test_crashed_domain_is_a_state_error(host: XenHost) -> None:
    with pytest.raises(DomainStateError, match="shutting down, crashed or dying") as info:
        snapcore_xen.plugin.domain_state(
            ctx=HookContext(
                domain=Domain(name="vm1", disks=(Disk(vdev="a", path="/x"),), hypervisor="xen"),
                run=_fake_list(f"{'vm1':<40} {7:5d} {512:5d} {2:5d}     ---c--  {1.0:8.1f}\n"),
            )
        )
    assert info.value.exit_code == 2


def _fake_list(row: str):  # type: ignore[no-untyped-def]
    from snapcore.testing import RecordingRunner

    runner = RecordingRunner()
    runner.on(["xl", "list", "vm1"], stdout="Name  ID   Mem VCPUs\tState\tTime(s)\n" + row)
    return runner


def test_missing_xl_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ctx = HookContext(
        domain=Domain(name="vm1", disks=(Disk(vdev="a", path="/x"),), hypervisor="xen")
    )
    with pytest.raises(ConfigError, match="xl cannot be run"):
        snapcore_xen.plugin.domain_state(ctx=ctx)


def test_memory_save_failure_removes_the_image(
    host: XenHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPCORE_STANDIN_FAIL", "xl save")
    image = host.tmp / "mem.img"
    image_path = str(image)
    with pytest.raises(Exception, match="xl"):
        snapcore_xen.plugin.domain_memory_save(path=image_path, ctx=_ctx(host))
    assert not image.exists()


def test_disks_from_libxl_json(host: XenHost) -> None:
    """xl list -l gives the disks: pdev_path, vdev, and the driver from format."""
    cfg = libxl_config(
        "vm1",
        [
            (str(host.disk), "xvda", "vhd"),
            ("/srv/b.qcow2", "xvdb", "qcow2"),
            ("/dev/x", "xvdc", "raw"),
        ],
    )
    cfg["disks"].append(  # type: ignore[attr-defined]
        {"pdev_path": "/srv/cd.iso", "vdev": "xvdd", "format": "raw", "readwrite": 0, "is_cdrom": 1}
    )
    host.standins.write_state(
        "xl.json",
        {"next_domid": 8, "domains": {"vm1": {"domid": 7, "paused": False, "config": cfg}}},
    )
    disks = snapcore_xen.plugin.domain_disks(ctx=_ctx(host))
    assert disks == [
        Disk(vdev="xvda", path=str(host.disk), driver="vhd"),
        Disk(vdev="xvdb", path="/srv/b.qcow2", driver="qcow2"),
        Disk(vdev="xvdc", path="/dev/x", driver=None),
        Disk(vdev="xvdd", path="/srv/cd.iso", driver=None, readonly=True),
    ]
    out = json.loads(json.dumps([{"domid": 7, "config": cfg}]))
    assert DomainConfig.from_json(out[0]).domid == 7


def test_list_table_parsing() -> None:
    out = (
        "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
        "Domain-0                                     0  4096     4     r-----     120.3\n"
        "vm1                                          7   512     2     --p---       1.0\n"
    )
    row = ListedDomain.parse(out, "vm1")
    assert row is not None
    assert (row.domid, row.flags, row.state) == (7, "--p---", DomainState.PAUSED)
    assert ListedDomain.parse(out, "vm2") is None


def test_plugins_load_with_the_stand_ins(standins: StandIns) -> None:
    plugins = load_plugins(entry_points=False, extra=[("xen", snapcore_xen.plugin)])
    assert plugins.hypervisor("xen").memory


def test_domain_file_without_disks_takes_them_from_xl(
    host: XenHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Xen domain file may leave its disks out: xl list -l says which disks the domain has
    (pdev_path, vdev, format), and the checkpoint covers them."""
    host.domain.write_text('name = "vm1"\nhypervisor = "xen"\n')
    assert host.cli("snapshot-create", "-D", "-n", "s1", str(host.domain)) == 0, (
        capsys.readouterr().err
    )
    capsys.readouterr()
    assert host.cli("snapshot-list", "--json", str(host.domain)) == 0
    (cp,) = json.loads(capsys.readouterr().out)
    assert [(d["vdev"], d["driver"], d["path"]) for d in cp["disks"]] == [
        ("xvda", "vhd", str(host.disk))
    ]
    assert (host.tmp / "xvda.s1.vhd").exists()


def test_domain_without_disks_anywhere_is_exit_2(
    host: XenHost, capsys: pytest.CaptureFixture[str]
) -> None:
    host.domain.write_text('name = "ghost"\nhypervisor = "xen"\n')
    assert host.cli("snapshot-create", "-D", "-n", "s1", str(host.domain)) == 2
    assert "lists no [[disk]] and hypervisor 'xen' reports none" in capsys.readouterr().err


# -- the stand-in xl answers as the real one (recorded in a dom0: tests/xen/record.sh) ---------


def _xl(*args: str) -> tuple[int, str, str]:
    import subprocess

    proc = subprocess.run(["xl", *args], capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_standin_counts_pauses_as_xen_does(host: XenHost) -> None:
    """Xen counts toolstack pauses: paused twice, a domain runs again after two unpauses."""
    assert _xl("pause", "vm1")[0] == 0
    assert _xl("pause", "vm1")[0] == 0
    assert _xl("unpause", "vm1")[0] == 0
    paused = ListedDomain.parse(_xl("list", "vm1")[1], "vm1")
    assert paused is not None
    assert paused.state is DomainState.PAUSED
    assert _xl("unpause", "vm1")[0] == 0
    row = ListedDomain.parse(_xl("list", "vm1")[1], "vm1")
    assert row is not None
    assert (row.flags, row.state) == ("-b----", DomainState.RUNNING)


def test_standin_messages_of_the_real_xl(host: XenHost, tmp_path: Path) -> None:
    assert _xl("domid", "vm1") == (0, "7\n", "")
    assert _xl("domid", "nosuch") == (
        1,
        "",
        "Can't get domid of domain name 'nosuch', maybe this domain does not exist.\n",
    )
    assert _xl("list", "-l", "nosuch") == (
        1,
        "",
        "nosuch is an invalid domain identifier (rc=-6)\n",
    )
    missing = tmp_path / "nothere.save"
    assert _xl("restore", str(missing)) == (
        1,
        "",
        "Can't open restore file: No such file or directory\n",
    )
    everything = json.loads(_xl("list", "-l")[1])
    assert [(e["domid"], e["config"]["c_info"]["name"]) for e in everything] == [
        (0, "Domain-0"),
        (7, "vm1"),
    ]
    assert "disks" not in everything[0]["config"]
    rc, _, err = _xl("save", "-p", "vm1", str(tmp_path / "m.save"))
    assert rc == 0
    assert err.splitlines()[1] == "xc: info: Saving domain 7, type x86 HVM"
    assert _xl("destroy", "vm1")[0] == 0
    rc, _, err = _xl("restore", "-p", str(tmp_path / "m.save"))
    assert rc == 0
    assert err.splitlines()[1:] == [
        " Savefile contains xl domain config in JSON format",
        "Parsing config from <saved>",
    ]


def test_domain_start_runs_xl_create_with_the_xen_table(tmp_path: Path) -> None:
    """``[xen] config`` names the xl configuration file: domain-start is ``xl create [-p]``."""
    from snapcore.testing import RecordingRunner

    cfg = tmp_path / "vm1.cfg"
    cfg.write_text('name = "vm1"\n')
    runner = RecordingRunner()
    runner.on(["xl", "create", "-p", str(cfg)])
    runner.on(
        ["xl", "list", "-l", "vm1"],
        stdout=json.dumps([{"domid": 3, "config": libxl_config("vm1", [])}]),
    )
    runner.on(["xl", "unpause", "vm1"])
    domain = Domain(
        name="vm1",
        disks=(Disk(vdev="xvda", path="/x"),),
        hypervisor="xen",
        hypervisor_table={"config": str(cfg)},
    )
    ctx = HookContext(domain=domain, run=runner)
    assert snapcore_xen.plugin.domain_start(paused=True, ctx=ctx) is True
    assert snapcore_xen.plugin.domain_start(paused=False, ctx=ctx) is True
    assert runner.argvs == [
        ("xl", "create", "-p", str(cfg)),
        ("xl", "list", "-l", "vm1"),
        ("xl", "create", "-p", str(cfg)),
        ("xl", "list", "-l", "vm1"),
        ("xl", "unpause", "vm1"),
    ]
    bare = HookContext(domain=Domain(name="vm1", disks=domain.disks, hypervisor="xen"), run=runner)
    with pytest.raises(ConfigError, match=r"names no xl configuration file \(\[xen\] config\)"):
        snapcore_xen.plugin.domain_start(paused=False, ctx=bare)
    for table, message in [
        ({"config": "vm1.cfg"}, "must be an absolute path"),
        ({"cfg": str(cfg)}, "unknown key 'cfg' in"),
        ({"config": str(tmp_path / "none.cfg")}, "no xl configuration file"),
    ]:
        odd = HookContext(
            domain=Domain(name="vm1", disks=domain.disks, hypervisor="xen", hypervisor_table=table),
            run=runner,
        )
        with pytest.raises(ConfigError, match=message):
            snapcore_xen.plugin.domain_start(paused=False, ctx=odd)


def test_xen_table_is_checked_when_the_domain_is_opened(
    host: XenHost, capsys: pytest.CaptureFixture[str]
) -> None:
    host.domain.write_text(host.domain.read_text() + '[xen]\nconfig = "vm1.cfg"\n')
    assert host.cli("snapshot-create", "-D", "-n", "s1", str(host.domain)) == 2
    assert "'config' in [xen] must be an absolute path" in capsys.readouterr().err
    assert host.standins.calls() == []


@pytest.mark.parametrize("start", ["domain-start", "memory restore"])
def test_a_vhd_chain_given_to_qdisk_is_refused_before_the_guest_runs(
    tmp_path: Path, start: str
) -> None:
    """QEMU's vpc driver (qdisk) ignores a VHD's parent and overwrites the leaf's batmap and
    locators at its first write (seen on real Xen: docs/xen.md). A domain whose libxl
    configuration gives a differencing VHD to qdisk is built paused, destroyed again before
    its guest runs, and refused (exit 2) naming the disk; a dynamic VHD on qdisk, or a chain on
    blktap (backend tap), starts as before. No disk file changes."""
    from snapcore.testing import RecordingRunner

    cfg = tmp_path / "vm1.cfg"
    cfg.write_text('name = "vm1"\n')
    base, leaf, single = tmp_path / "base.vhd", tmp_path / "xvdb.vhd", tmp_path / "xvdc.vhd"
    ops.create_dynamic(str(base), 8 * MiB)
    put(base, 0, b"B" * 4096)
    ops.snapshot(str(leaf), str(base))
    ops.create_dynamic(str(single), 8 * MiB)
    before = {p: p.read_bytes() for p in (base, leaf, single)}
    image = MemoryImage(path=str(tmp_path / "m.save"), format="xl-save")
    runners: list[RecordingRunner] = []

    def attempt(disks: list[tuple[str, str, str]], backend: str) -> RecordingRunner:
        config = libxl_config("vm1", disks)
        for d in config["disks"]:  # type: ignore[attr-defined]
            d["backend"] = backend
        runner = RecordingRunner()
        runners.append(runner)
        runner.on(["xl", "create", "-p", str(cfg)])
        runner.on(["xl", "restore", "-p", image.path])
        runner.on(["xl", "list", "-l", "vm1"], stdout=json.dumps([{"domid": 3, "config": config}]))
        runner.on(["xl", "destroy", "vm1"])
        runner.on(["xl", "unpause", "vm1"])
        domain = Domain(
            name="vm1", disks=(), hypervisor="xen", hypervisor_table={"config": str(cfg)}
        )
        ctx = HookContext(domain=domain, run=runner)
        if start == "domain-start":
            snapcore_xen.plugin.domain_start(paused=False, ctx=ctx)
        else:
            snapcore_xen.plugin.domain_memory_restore(
                image=image, state=DomainState.RUNNING, ctx=ctx
            )
        return runner

    first = (
        ("xl", "create", "-p", str(cfg))
        if start == "domain-start"
        else ("xl", "restore", "-p", image.path)
    )
    with pytest.raises(ConfigError) as err:
        attempt([(str(single), "xvdc", "vhd"), (str(leaf), "xvdb", "vhd")], "qdisk")
    assert err.value.exit_code == 2
    assert f"disk xvdb ({leaf}) is a VHD with a parent" in str(err.value)
    assert "xvdc" not in str(err.value)
    assert "backendtype=tap" in str(err.value)
    assert runners[-1].argvs == [first, ("xl", "list", "-l", "vm1"), ("xl", "destroy", "vm1")]
    for disks, backend in [
        ([(str(single), "xvdc", "vhd")], "qdisk"),
        ([(str(leaf), "xvdb", "vhd")], "tap"),
    ]:
        assert attempt(disks, backend).argvs == [
            first,
            ("xl", "list", "-l", "vm1"),
            ("xl", "unpause", "vm1"),
        ]
    assert {p: p.read_bytes() for p in (base, leaf, single)} == before
