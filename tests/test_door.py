"""Bad input is refused at the door: exit 2, one short error line, and nothing written.

Each test hashes the state dir and the images before and after the refused command. The
domain's one disk is a real qcow2 image (qemu-img).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapcore import cli
from snapcore.config import MAX_FILE_SIZE, load_domain

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

LIMIT = "the limit is 1 MiB (1048576 bytes)"


def digest(root: Path) -> dict[str, str]:
    """Every file and directory under *root* (an empty directory counts too)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "d"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def domain(tmp_path: Path) -> Path:
    image = tmp_path / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    dom = tmp_path / "web.toml"
    dom.write_text(f'name = "web"\n[[disk]]\nvdev = "vda"\npath = "{image}"\n')
    return dom


def refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> str:
    """Run the command; assert exit 2, nothing on stdout, one short error line, and no change
    to anything under *tmp_path* (images, domain file, state dir); return the line."""
    before = digest(tmp_path)
    code = cli.main(["--state-dir", str(tmp_path / "state"), *args])
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    lines = err.splitlines()
    assert len(lines) == 1, err[:2000]
    assert lines[0].startswith("snapcore: error: ")
    assert len(lines[0]) < 1200
    assert digest(tmp_path) == before
    return lines[0]


# -- size limits and special files -------------------------------------------------------------


def test_dev_zero_as_snapshot_config_is_refused_without_reading_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path
) -> None:
    line = refused(capsys, tmp_path, "snapshot-create", "/dev/zero", str(domain))
    assert line == (
        "snapcore: error: /dev/zero: cannot read snapshot config file: "
        "it is a character device, not a regular file"
    )


@pytest.mark.parametrize("command", ["snapshot-create", "snapshot-list", "recover"])
def test_dev_zero_as_domain_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    line = refused(capsys, tmp_path, command, "/dev/zero")
    assert "/dev/zero: cannot read domain file: it is a character device" in line


@pytest.mark.parametrize("which", ["config", "domain"])
def test_a_50_mb_file_is_refused_naming_the_file_and_the_limit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path, which: str
) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        fh.truncate(50_000_000)  # sparse: its size says enough
    if which == "config":
        line = refused(capsys, tmp_path, "snapshot-create", str(big), str(domain))
        what = "snapshot config file"
    else:
        line = refused(capsys, tmp_path, "snapshot-create", "-n", "a", str(big))
        what = "domain file"
    assert line == f"snapcore: error: {big}: {what} is too large (50000000 bytes); {LIMIT}"


@pytest.fixture
def endless_pipe() -> Iterator[str]:
    """A pipe (as ``<(...)`` gives) whose writer would write 3 MiB of valid config text."""
    rfd, wfd = os.pipe()

    def write() -> None:
        try:
            for _ in range(3 * 1024):
                os.write(wfd, b"# " + b"x" * 1021 + b"\n")
        except BrokenPipeError:
            pass
        finally:
            os.close(wfd)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield f"/dev/fd/{rfd}"
    finally:
        os.close(rfd)
        writer.join()


def test_a_pipe_is_read_only_up_to_the_limit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path, endless_pipe: str
) -> None:
    line = refused(capsys, tmp_path, "snapshot-create", endless_pipe, str(domain))
    assert line == (
        f"snapcore: error: {endless_pipe}: snapshot config file is too large "
        f"(more than {MAX_FILE_SIZE} bytes); {LIMIT}"
    )


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path, domain: Path) -> None:
    text = domain.read_text()
    padded = tmp_path / "padded.toml"
    padded.write_text(text + "#" * (MAX_FILE_SIZE - len(text) - 1) + "\n")
    assert padded.stat().st_size == MAX_FILE_SIZE
    assert load_domain(padded).name == "web"


# -- error lines carry no megabytes --------------------------------------------------------------

HUGE = "a" * 900_000


@pytest.mark.parametrize(
    "config",
    [
        f"{HUGE} = 1\n",
        f'name = "x"\nmemory = "{HUGE}"\n',
        f'disk = [ "vda={HUGE}" ]\n',
        f'disk = [ "{HUGE}" ]\n',
        f'type = "{HUGE}"\n',
        f'name = "x" {HUGE}\n',
    ],
    ids=["key", "memory", "target", "vdev", "type", "trailing"],
)
def test_error_lines_quote_at_most_a_little_of_a_huge_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path, config: str
) -> None:
    cfg = tmp_path / "snap.cfg"
    cfg.write_text(config)
    line = refused(capsys, tmp_path, "snapshot-create", str(cfg), str(domain))
    assert "aaaaaaaaaa" in line  # it still shows what it refuses
    assert len(line) < 1200


def test_a_huge_key_in_a_domain_file_gives_a_short_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path
) -> None:
    domain.write_text(domain.read_text() + f"{HUGE} = 1\n")
    line = refused(capsys, tmp_path, "snapshot-list", str(domain))
    assert "unknown key 'aaaa" in line
    assert "(900000 characters)" in line


# -- descriptions --------------------------------------------------------------------------------


def test_a_description_over_4096_characters_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path
) -> None:
    cfg = tmp_path / "snap.cfg"
    cfg.write_text(f'name = "a"\ndescription = "{"d" * 4097}"\n')
    line = refused(capsys, tmp_path, "snapshot-create", str(cfg), str(domain))
    assert line == (f"snapcore: error: {cfg}:2: description is 4097 characters long; at most 4096")


def test_a_description_of_4096_characters_is_kept(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path
) -> None:
    cfg = tmp_path / "snap.cfg"
    cfg.write_text(f'name = "a"\ndescription = "{"d" * 4096}"\n')
    state = ["--state-dir", str(tmp_path / "state")]
    assert cli.main([*state, "snapshot-create", str(cfg), str(domain)]) == 0
    assert cli.main([*state, "snapshot-list", "--json", str(domain)]) == 0
    out = capsys.readouterr().out
    assert '"d' + "d" * 4095 + '"' in out


def test_the_library_refuses_a_long_description_too(tmp_path: Path, domain: Path) -> None:
    import snapcore
    from snapcore.errors import ConfigError

    dom = snapcore.Host(state_dir=tmp_path / "state").open_domain(domain)
    before = digest(tmp_path)
    with pytest.raises(ConfigError, match="at most 4096"):
        dom.create(snapcore.CreateOptions(name="a", description="d" * 50_000))
    with pytest.raises(ConfigError, match="at most 4096"):
        dom.plan_create(snapcore.CreateOptions(name="a", description="d" * 50_000))
    assert digest(tmp_path) == before


# -- nothing written for a refused command ------------------------------------------------------


def test_a_refused_domain_gets_no_directory_in_the_state_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    raw = tmp_path / "disk.bin"
    raw.write_bytes(b"\0" * 4096)  # no backend claims a plain file
    dom = tmp_path / "raw.toml"
    dom.write_text(f'name = "raw"\n[[disk]]\nvdev = "vda"\npath = "{raw}"\n')

    line = refused(capsys, tmp_path, "snapshot-create", "-n", "x", str(dom))

    assert "no plugin claims this disk" in line
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["snapshot-create", "-n", "a"],  # the name is taken
        ["snapshot-delete", "-n", "nope"],
        ["snapshot-revert", "-n", "nope"],
        ["snapshot-list", "-n", "nope"],
    ],
    ids=["name-taken", "delete-unknown", "revert-unknown", "list-unknown"],
)
def test_a_refused_command_on_a_known_domain_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path, args: list[str]
) -> None:
    assert (
        cli.main(
            ["--state-dir", str(tmp_path / "state"), "snapshot-create", "-n", "a", str(domain)]
        )
        == 0
    )
    capsys.readouterr()
    line = refused(capsys, tmp_path, *args, str(domain))
    assert "snapshot" in line


def test_a_refused_create_on_a_new_domain_leaves_no_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, domain: Path
) -> None:
    cfg = tmp_path / "snap.cfg"
    cfg.write_text('disk = [ "vda=/nonexistent-dir/x.qcow2" ]\n')
    (tmp_path / "state").mkdir()  # the state dir exists; the domain's directory does not

    refused(capsys, tmp_path, "snapshot-create", str(cfg), str(domain))

    assert list((tmp_path / "state").iterdir()) == []
    uuid = load_domain(domain).uuid
    assert not (tmp_path / "state" / "domains" / uuid).exists()


# -- one image named twice ------------------------------------------------------------------------


def test_a_domain_naming_one_image_twice_through_a_symlink_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    (tmp_path / "alias.qcow2").symlink_to("vda.qcow2")
    dom = tmp_path / "twice.toml"
    dom.write_text(
        'name = "twice"\n'
        '[[disk]]\nvdev = "vda"\npath = "vda.qcow2"\n'
        '[[disk]]\nvdev = "vdb"\npath = "alias.qcow2"\n'
    )
    cfg = tmp_path / "snap.cfg"
    cfg.write_text('name = "k"\ntype = "external"\n')

    line = refused(capsys, tmp_path, "snapshot-create", str(cfg), str(dom))

    assert line == (
        f"snapcore: error: {dom}: disks vda and vdb are one image "
        f"({tmp_path}/alias.qcow2 is {tmp_path}/vda.qcow2); a domain may name each image only once"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alias.qcow2",
        "snap.cfg",
        "twice.toml",
        "vda.qcow2",
    ]
