"""An unreadable journal, checkpoint record or ``current.json`` never leaves a domain stuck.

Each command refuses with a message naming the file and the way out (``snapcore recover
--forget DOMAIN``), changes nothing, and ``recover --forget`` moves the file aside (never
deletes it), after which the domain works again. Runs the real qcow2 driver (qemu-img).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from snapcore import cli
from snapcore.config import load_domain

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

WAY_OUT = "run 'snapcore recover --forget DOMAIN' to move"

# What a kill, a full disk or a hand edit can leave in a JSON file of the store.
BAD_JOURNALS = {
    "empty": (b"", "it is empty"),
    "truncated": (b'{"schema": 1, "operation": "create", "na', "it is not JSON"),
    "not JSON": (b"\x00\x00\x00\x00garbage", "it is not JSON"),
    "wrong schema": (b'{"schema": 0, "operation": "create", "name": "b"}\n', "its schema is 0"),
    "newer schema": (b'{"schema": 7, "operation": "create", "name": "b"}\n', "newer"),
    "not an object": (b"[1, 2]\n", "not an object"),
    "no name": (b'{"schema": 1, "operation": "create"}\n', "its snapshot name is missing"),
}
BAD_RECORDS = {
    "empty": (b"", "it is empty"),
    "truncated": (b'{"checkpoint": {"creation_time": 17', "JSONDecodeError"),
    "not JSON": (b"\xff\xfe garbage", "Error"),
    "wrong schema": (b'{"schema": 1, "checkpoint": {"colour": "blue"}}\n', "Error"),
}
BAD_CURRENTS = {
    "empty": (b"", "it is empty"),
    "truncated": (b'{"schema": 1, "curr', "it is not JSON"),
    "not JSON": (b"a\n", "it is not JSON"),
    "wrong schema": (b'{"schema": 99, "current": "a"}\n', 'it is not {"schema": 1'),
}


def digest(*roots: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@dataclass
class Setup:
    domain: Path
    state: Path
    root: Path
    image: Path

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        code = cli.main(["--state-dir", str(self.state), *args, str(self.domain)])
        out, err = capsys.readouterr()
        return code, out, err

    def tags(self) -> list[str]:
        """The internal snapshot tags of the image, as qemu-img lists them."""
        out = subprocess.run(
            ["qemu-img", "snapshot", "-l", str(self.image)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line.split()[1] for line in out.splitlines()[2:]]


@pytest.fixture
def setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Setup:
    """A domain with one qcow2 disk and one checkpoint, 'a'."""
    image = tmp_path / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    domain = tmp_path / "web.toml"
    domain.write_text(f'name = "web"\n[[disk]]\nvdev = "vda"\npath = "{image}"\n')
    state = tmp_path / "state"
    s = Setup(domain, state, state / "domains" / load_domain(domain).uuid, image)
    assert s.run(capsys, "snapshot-create", "-n", "a")[0] == 0
    assert s.tags() == ["a"]
    return s


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("snapcore: error: ")
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_JOURNALS), ids=str)
def test_unreadable_journal_stops_every_command_until_forget_moves_it_aside(
    setup: Setup, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, reason = BAD_JOURNALS[case]
    journal = setup.root / "journal.json"
    journal.write_bytes(content)
    before = digest(setup.state, setup.image.parent)

    for args in (["snapshot-list"], ["snapshot-create", "-n", "b"], ["recover"]):
        code, out, err = setup.run(capsys, *args)
        line = one_line(err)
        assert (code, out) == (3, ""), args
        assert f"the journal {journal} is unreadable: " in line
        assert reason in line
        assert "run 'snapcore recover --forget DOMAIN' to move the journal aside" in line
        assert digest(setup.state, setup.image.parent) == before, args

    code, out, err = setup.run(capsys, "recover", "--forget")

    assert (code, err) == (0, "")
    assert out.startswith(f"moved the unreadable {journal} aside to {journal}.corrupt-")
    assert not journal.exists()
    (kept,) = setup.root.glob("journal.json.corrupt-*")
    assert kept.read_bytes() == content  # quarantined, never deleted
    assert out.strip().endswith(str(kept))
    assert setup.run(capsys, "snapshot-create", "-n", "b")[0] == 0
    assert setup.tags() == ["a", "b"]


def test_forget_of_a_readable_entry_still_says_what_it_forgot(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    (setup.root / "journal.json").write_text(
        '{"schema": 1, "operation": "delete", "name": "a", "done": []}\n'
    )
    code, out, _ = setup.run(capsys, "recover", "--forget")
    assert (code, out) == (0, "forgot the interrupted delete of snapshot 'a'\n")
    assert sorted(p.name for p in setup.root.iterdir() if "journal" in p.name) == []


@pytest.mark.parametrize("case", list(BAD_RECORDS), ids=str)
def test_unreadable_record_stops_create_list_and_revert_until_forget_moves_it_aside(
    setup: Setup, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, reason = BAD_RECORDS[case]
    record = setup.root / "checkpoints" / "a.json"
    record.write_bytes(content)
    before = digest(setup.state, setup.image.parent)

    for args in (
        ["snapshot-create", "-n", "b"],
        ["snapshot-list"],
        ["snapshot-revert", "-n", "a"],
        ["snapshot-delete", "-n", "a"],
    ):
        code, out, err = setup.run(capsys, *args)
        line = one_line(err)
        assert (code, out) == (1, ""), args
        assert f"snapshot record {record} is unreadable: " in line
        assert reason in line
        assert f"{WAY_OUT} it aside (to a.json.corrupt-<time>)" in line
        assert digest(setup.state, setup.image.parent) == before, args
    assert not (setup.root / "journal.json").exists()
    assert setup.tags() == ["a"]

    code, out, err = setup.run(capsys, "recover", "--forget")

    assert (code, err) == (0, "")
    assert out.startswith(f"moved the unreadable {record} aside to {record}.corrupt-")
    (kept,) = (setup.root / "checkpoints").glob("a.json.corrupt-*")
    assert kept.read_bytes() == content
    assert setup.run(capsys, "snapshot-create", "-n", "b")[0] == 0
    code, out, _ = setup.run(capsys, "snapshot-list")
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["b"]


@pytest.mark.parametrize("case", list(BAD_CURRENTS), ids=str)
def test_garbage_current_file_stops_create_before_it_writes_a_journal(
    setup: Setup, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, reason = BAD_CURRENTS[case]
    current = setup.root / "current.json"
    current.write_bytes(content)
    before = digest(setup.state, setup.image.parent)

    code, out, err = setup.run(capsys, "snapshot-create", "-n", "b")

    line = one_line(err)
    assert (code, out) == (1, "")
    assert f"current-snapshot file {current} is unreadable: {reason}" in line
    assert f"{WAY_OUT} it aside (to current.json.corrupt-<time>)" in line
    assert digest(setup.state, setup.image.parent) == before  # no journal, no snapshot
    assert setup.tags() == ["a"]

    code, out, err = setup.run(capsys, "recover", "--forget")
    assert (code, err) == (0, "")
    assert out.startswith(f"moved the unreadable {current} aside to {current}.corrupt-")
    assert not current.exists()
    code, out, err = setup.run(capsys, "snapshot-create", "-n", "b")
    assert (code, err) == (0, "")
    assert setup.tags() == ["a", "b"]
