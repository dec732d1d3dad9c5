"""Tests of snapcore.config: domain files (TOML) and snapshot config files (xl syntax)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapcore.config import (
    check_distinct_disks,
    load_domain,
    load_snapshot_config,
    merge_create_options,
    parse_snapshot_config,
    resolve_domain_path,
)
from snapcore.errors import ConfigError, InvalidNameError
from snapcore.model import (
    CreateOptions,
    Disk,
    DiskChoice,
    Domain,
    SnapshotKind,
)

# Names every name check must refuse: (name, the reason named in the message).
BAD_NAMES = [
    pytest.param("a/b", "it contains '/'", id="slash"),
    pytest.param("..", "it starts with '.'", id="dotdot"),
    pytest.param("a b", "it contains ' '", id="space"),
    pytest.param("a\x01b", "it contains '\\x01'", id="control-char"),
    pytest.param("a\nb", "it contains '\\n'", id="newline"),
    pytest.param("x" * 65, "it is 65 characters long, at most 64", id="65-chars"),
    pytest.param(".hidden", "it starts with '.'", id="leading-dot"),
    pytest.param("-n", "it starts with '-'", id="leading-dash"),
    pytest.param("", "it is empty", id="empty"),
]


def toml_str(value: str) -> str:
    """Quote *value* as a TOML basic string (control characters escaped)."""
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def cfg_str(value: str) -> str:
    """Quote *value* as a snapshot config double-quoted string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


# ============================================================================================
# Domain files
# ============================================================================================


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A directory with two existing disk images, a.img and b.img."""
    (tmp_path / "a.img").write_bytes(b"")
    (tmp_path / "b.img").write_bytes(b"")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def two_disks(images: Path) -> str:
    return (
        f'[[disk]]\nvdev = "vda"\npath = "{images}/a.img"\n'
        f'[[disk]]\nvdev = "vdb"\npath = "{images}/b.img"\n'
    )


def domain_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    assert info.value.source == str(path)
    assert "\n" not in str(info.value)
    return info.value


class TestLoadDomain:
    def test_design_example(self, images: Path) -> None:
        web1 = images / "web1.qcow2"
        web1.write_bytes(b"")
        path = write(
            images / "web1.toml",
            f"""\
name = "web1"                 # required
uuid = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"
hypervisor = "qemu"           # "none" (default), "qemu", "xen"
description = "the web server"

[qemu]
qmp = "/run/web1.qmp"         # QMP socket of the running QEMU
argv = ["qemu-system-x86_64", "-accel", "tcg"]
guest_agent = "/run/web1.qga" # optional: quiesce with guest-fsfreeze

[[disk]]
vdev = "vda"
path = "{web1}"
driver = "qcow2"              # optional: otherwise backends claim the disk
readonly = false              # read-only disks (cdrom) are never snapshotted

[[disk]]
vdev = "hdc"
path = "a.img"
readonly = true
options = {{ cache = "none", aio = "native" }}
""",
        )
        domain = load_domain(path)
        assert domain.name == "web1"
        assert domain.uuid == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        assert domain.hypervisor == "qemu"
        assert domain.hypervisor_table == {  # the qemu plugin's to check (test_qemu.py)
            "qmp": "/run/web1.qmp",
            "argv": ["qemu-system-x86_64", "-accel", "tcg"],
            "guest_agent": "/run/web1.qga",
        }
        assert domain.source == str(path)
        vda, hdc = domain.disks
        assert (vda.vdev, vda.path, vda.driver, vda.readonly, dict(vda.options)) == (
            "vda",
            str(web1),
            "qcow2",
            False,
            {},
        )
        assert (hdc.vdev, hdc.path, hdc.driver, hdc.readonly) == (
            "hdc",
            str(images / "a.img"),
            None,
            True,
        )
        assert dict(hdc.options) == {"cache": "none", "aio": "native"}

    def test_defaults(self, images: Path) -> None:
        path = write(images / "d.toml", 'name = "db"\n' + two_disks(images))
        domain = load_domain(path)
        assert domain.hypervisor == "none"
        assert domain.hypervisor_table == {}
        assert domain.uuid == Domain(name="db", disks=domain.disks).uuid
        assert [d.vdev for d in domain.disks] == ["vda", "vdb"]
        assert all(d.driver is None and not d.readonly for d in domain.disks)
        assert all(dict(d.options) == {} for d in domain.disks)

    def test_options_as_subtable(self, images: Path) -> None:
        path = write(
            images / "d.toml",
            'name = "db"\n[[disk]]\nvdev = "vda"\npath = "a.img"\n'
            '[disk.options]\nthin_pool = "pool0"\n',
        )
        assert dict(load_domain(path).disks[0].options) == {"thin_pool": "pool0"}

    def test_relative_disk_paths_resolve_against_the_file(self, images: Path) -> None:
        (images / "img" / "sub").mkdir(parents=True)
        (images / "img" / "sub" / "c.img").write_bytes(b"")
        path = write(
            images / "domains" / "d.toml",
            'name = "db"\n'
            '[[disk]]\nvdev = "vda"\npath = "../a.img"\n'
            '[[disk]]\nvdev = "vdb"\npath = "./../img/sub/c.img"\n',
        )
        vda, vdb = load_domain(path).disks
        assert os.path.isabs(vda.path)
        assert os.path.isabs(vdb.path)
        assert Path(vda.path).resolve() == (images / "a.img").resolve()
        assert Path(vdb.path).resolve() == (images / "img" / "sub" / "c.img").resolve()
        assert vda.path.startswith(str(images / "domains"))

    def test_relative_file_path_gives_absolute_source(
        self, images: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write(images / "d.toml", 'name = "db"\n[[disk]]\nvdev = "vda"\npath = "a.img"\n')
        monkeypatch.chdir(images)
        domain = load_domain("d.toml")
        assert domain.source == str(images / "d.toml")
        assert domain.disks[0].path == str(images / "a.img")

    def test_pathlike_source_in_errors(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.toml"
        with pytest.raises(ConfigError) as info:
            load_domain(path)
        assert info.value.source == str(path)
        assert str(info.value) == f"{path}: no such domain file"

    # ---- file problems -------------------------------------------------------------------

    def test_missing_file(self, tmp_path: Path) -> None:
        err = domain_error(tmp_path / "missing.toml")
        assert err.message == "no such domain file"
        assert err.line is None

    def test_directory(self, tmp_path: Path) -> None:
        (tmp_path / "dir.toml").mkdir()
        err = domain_error(tmp_path / "dir.toml")
        assert err.message == "cannot read domain file: it is a directory"

    def test_permission_denied(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = write(tmp_path / "d.toml", 'name = "x"\n')

        real_open = os.open

        def refuse(file: str | os.PathLike[str], *args: int) -> int:
            if os.fspath(file) == os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return real_open(file, *args)

        monkeypatch.setattr(os, "open", refuse)
        assert domain_error(path).message == "cannot read domain file: permission denied"

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
    def test_permission_denied_for_real(self, tmp_path: Path) -> None:
        path = write(tmp_path / "d.toml", 'name = "x"\n')
        path.chmod(0)
        assert domain_error(path).message == "cannot read domain file: permission denied"

    def test_other_os_error(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        err = domain_error(tmp_path / "file" / "d.toml")
        assert err.message == "cannot read domain file: Not a directory"

    def test_not_utf8_names_the_line(self, tmp_path: Path) -> None:
        path = tmp_path / "d.toml"
        path.write_bytes(b'name = "x"\n\ndescription = "caf\xe9"\n')
        err = domain_error(path)
        assert err.line == 3
        assert err.message.startswith("domain file is not valid UTF-8 (byte 0xe9")
        assert str(err).startswith(f"{path}:3: ")

    @pytest.mark.parametrize(
        ("text", "line", "problem"),
        [
            ('name = "x"\nhypervisor = qemu\n', 2, "TOML syntax error: Invalid value (column 14)"),
            ('name = "x"\n\n[[disk]\n', 3, "TOML syntax error: "),
            ('name = "x"\nname = "y"\n', 2, "TOML syntax error: Cannot overwrite a value"),
            ('name = "x"\ndescription = "open\n', 2, "TOML syntax error: "),
        ],
    )
    def test_toml_syntax_error_gives_line(
        self, tmp_path: Path, text: str, line: int, problem: str
    ) -> None:
        err = domain_error(write(tmp_path / "d.toml", text))
        assert err.line == line
        assert err.message.startswith(problem)
        assert "(at line" not in err.message
        assert str(err).startswith(f"{tmp_path / 'd.toml'}:{line}: TOML syntax error: ")

    @pytest.mark.parametrize(
        ("text", "line", "problem"),
        [
            ('name = "x"\nuuid = ', 2, "Invalid value"),
            ('name = "x"\n[qemu', 2, "Expected ']' at the end of a table declaration"),
            ('name = "x"\n[qemu]\nargv = ["a",\n"b"\n', 4, "Unclosed array"),
        ],
    )
    def test_toml_error_at_end_of_document(
        self, tmp_path: Path, text: str, line: int, problem: str
    ) -> None:
        err = domain_error(write(tmp_path / "d.toml", text))
        assert err.line == line
        assert err.message == f"TOML syntax error: {problem} at the end of the file"

    # ---- structure and types -------------------------------------------------------------

    @pytest.mark.parametrize(
        ("head", "disks", "problem"),
        [
            pytest.param(
                'name = "x"\nfoo = 1\n',
                None,
                "unknown key 'foo' at the top level",
                id="unknown-top",
            ),
            pytest.param(
                'name = "x"\n[foo]\nbar = 1\n',
                None,
                "unknown key 'foo' at the top level",
                id="unknown-table",
            ),
            pytest.param(
                'name = "x"\n[qemu]\nqmp = "/q"\n',
                None,
                "unknown key 'qemu' at the top level",
                id="qemu-table-without-qemu-hypervisor",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\n'
                '[[disk]]\nvdev = "vdb"\npath = "b.img"\nfoo = 1\n',
                "unknown key 'foo' in [[disk]] #2",
                id="unknown-disk",
            ),
            pytest.param("name = 7\n", None, "'name' must be a string", id="name-not-str"),
            pytest.param(
                'name = "x"\nuuid = 5\n', None, "'uuid' must be a string", id="uuid-not-str"
            ),
            pytest.param(
                'name = "x"\nhypervisor = ["qemu"]\n',
                None,
                "'hypervisor' must be a string",
                id="hypervisor-not-str",
            ),
            pytest.param(
                'name = "x"\ndescription = 1\n',
                None,
                "'description' must be a string",
                id="description-not-str",
            ),
            pytest.param(
                'name = "x"\nhypervisor = "qemu"\nqemu = "/run/q"\n',
                None,
                "'qemu' must be a table ([qemu])",
                id="qemu-not-table",
            ),
            pytest.param(
                'name = "x"\n[disk]\nvdev = "vda"\npath = "a.img"\n',
                "",
                "'disk' must be an array of tables ([[disk]])",
                id="disk-not-array",
            ),
            pytest.param(
                'name = "x"\ndisk = ["vda"]\n',
                "",
                "[[disk]] #1 must be a table",
                id="disk-item-not-table",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = 1\npath = "a.img"\n',
                "'vdev' in [[disk]] #1 must be a string",
                id="vdev-not-str",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = ["a.img"]\n',
                "'path' in [[disk]] #1 must be a string",
                id="path-not-str",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\ndriver = 2\n',
                "'driver' in [[disk]] #1 must be a string",
                id="driver-not-str",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\nreadonly = "no"\n',
                "'readonly' in [[disk]] #1 must be true or false",
                id="readonly-not-bool",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\nreadonly = 0\n',
                "'readonly' in [[disk]] #1 must be true or false",
                id="readonly-int",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\noptions = "cache=none"\n',
                "'options' in [[disk]] #1 must be a table of strings",
                id="options-not-table",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\n'
                '[[disk]]\nvdev = "vdb"\npath = "b.img"\noptions = { size = 10 }\n',
                "option 'size' in [[disk]] #2 must be a string",
                id="option-not-str",
            ),
            pytest.param('uuid = "x"\n', None, "missing required key 'name'", id="no-name"),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\n[[disk]]\npath = "b.img"\n',
                "missing required key 'vdev' in [[disk]] #2",
                id="no-vdev",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\n',
                "missing required key 'path' in [[disk]] #1",
                id="no-path",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\n[[disk]]\nvdev = "vda"\npath = "b.img"\n',
                "duplicate vdev 'vda' in [[disk]] #2",
                id="duplicate-vdev",
            ),
            pytest.param(
                'name = "x"\n', "", "no disks: a domain file needs at least one", id="no-disks"
            ),
            pytest.param(
                'name = "x"\ndisk = []\n',
                "",
                "no disks: a domain file needs at least one",
                id="empty-disks",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "v da"\npath = "a.img"\n',
                "invalid vdev 'v da'",
                id="bad-vdev",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = ""\n',
                "disk vda: path is empty or contains a NUL byte",
                id="empty-path",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img\\u0000"\n',
                "disk vda: path is empty or contains a NUL byte",
                id="nul-path",
            ),
            pytest.param(
                'name = "x"\nuuid = "not-a-uuid"\n',
                None,
                "invalid uuid 'not-a-uuid'",
                id="bad-uuid",
            ),
            pytest.param(
                'name = "x"\nhypervisor = "../xl"\n',
                None,
                "invalid hypervisor name '../xl': it contains '/'",
                id="bad-hypervisor",
            ),
            pytest.param(
                'name = "x"\nhypervisor = ""\n',
                None,
                "invalid hypervisor name '': it is empty",
                id="empty-hypervisor",
            ),
            pytest.param(
                'name = "x"\n',
                '[[disk]]\nvdev = "vda"\npath = "a.img"\ndriver = "-lvm"\n',
                "invalid driver name '-lvm': it starts with '-'",
                id="bad-driver",
            ),
        ],
    )
    def test_problem_named(self, images: Path, head: str, disks: str | None, problem: str) -> None:
        body = head + (two_disks(images) if disks is None else disks)
        path = write(images / "d.toml", body)
        err = domain_error(path)
        assert err.message.startswith(problem), err.message
        assert str(err) == f"{path}: {err.message}"

    def test_disk_path_does_not_exist(self, images: Path) -> None:
        path = write(
            images / "d.toml",
            'name = "x"\n[[disk]]\nvdev = "vda"\npath = "a.img"\n'
            '[[disk]]\nvdev = "vdb"\npath = "/x/y"\n',
        )
        assert domain_error(path).message == "disk vdb: path /x/y does not exist"

    def test_relative_disk_path_does_not_exist_shows_absolute(self, images: Path) -> None:
        path = write(images / "d.toml", 'name = "x"\n[[disk]]\nvdev = "vda"\npath = "nope.img"\n')
        expected = f"disk vda: path {images / 'nope.img'} does not exist"
        assert domain_error(path).message == expected

    def test_known_keys_listed(self, images: Path) -> None:
        path = write(images / "d.toml", 'name = "x"\nfoo = 1\n' + two_disks(images))
        assert domain_error(path).message == (
            "unknown key 'foo' at the top level; "
            "known keys: name, uuid, hypervisor, description, disk, snapshots, hook"
        )

    def test_duplicate_vdev_names_first_use(self, images: Path) -> None:
        path = write(
            images / "d.toml",
            'name = "x"\n'
            '[[disk]]\nvdev = "vda"\npath = "a.img"\n'
            '[[disk]]\nvdev = "vdb"\npath = "b.img"\n'
            '[[disk]]\nvdev = "vda"\npath = "b.img"\n',
        )
        assert domain_error(path).message == (
            "duplicate vdev 'vda' in [[disk]] #3 (already used by [[disk]] #1)"
        )

    @pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
    def test_bad_domain_names(self, images: Path, name: str, reason: str) -> None:
        path = write(images / "d.toml", f"name = {toml_str(name)}\n" + two_disks(images))
        err = domain_error(path)
        assert err.message.startswith("invalid domain name ")
        assert err.message.endswith(reason) or reason + ";" in err.message

    def test_64_character_name_accepted(self, images: Path) -> None:
        name = "a" + "-._" * 21
        assert len(name) == 64
        path = write(images / "d.toml", f'name = "{name}"\n' + two_disks(images))
        assert load_domain(path).name == name


class TestOneImageNamedTwice:
    """Disks are told apart by what their paths resolve to, never by the path text."""

    @staticmethod
    def domain_naming(images: Path, vda: str, vdb: str) -> Path:
        return write(
            images / "d.toml",
            f'name = "d"\n[[disk]]\nvdev = "vda"\npath = "{vda}"\n'
            f'[[disk]]\nvdev = "vdb"\npath = "{vdb}"\n',
        )

    def test_a_symlink_to_another_disk_is_refused_naming_both_vdevs(self, images: Path) -> None:
        (images / "alias.img").symlink_to("a.img")
        err = domain_error(self.domain_naming(images, "a.img", "alias.img"))
        assert err.message == (
            f"disks vda and vdb are one image ({images}/alias.img is {images}/a.img); "
            "a domain may name each image only once"
        )

    def test_a_symlink_into_another_directory_is_refused(self, images: Path) -> None:
        (images / "links").mkdir()
        (images / "links" / "disk").symlink_to("../a.img")
        err = domain_error(self.domain_naming(images, "links/disk", f"{images}/a.img"))
        assert err.message.startswith("disks vda and vdb are one image")

    def test_a_hard_link_is_refused(self, images: Path) -> None:
        os.link(images / "a.img", images / "same.img")
        err = domain_error(self.domain_naming(images, "same.img", "a.img"))
        assert "disks vda and vdb are one image" in err.message

    @pytest.mark.parametrize("spelling", ["./a.img", "sub/../a.img", "a.img"])
    def test_another_spelling_of_the_same_path_is_refused(
        self, images: Path, spelling: str
    ) -> None:
        (images / "sub").mkdir()
        err = domain_error(self.domain_naming(images, "a.img", spelling))
        assert err.message.startswith("disks vda and vdb are one image")

    def test_a_device_through_two_names_is_refused(self, images: Path) -> None:
        (images / "null-alias").symlink_to("/dev/null")
        err = domain_error(self.domain_naming(images, "/dev/null", "null-alias"))
        assert err.message.startswith("disks vda and vdb are one image")

    def test_two_images_with_equal_content_are_two_disks(self, images: Path) -> None:
        domain = load_domain(self.domain_naming(images, "a.img", "b.img"))
        assert [d.vdev for d in domain.disks] == ["vda", "vdb"]

    def test_the_library_refuses_disks_given_twice_too(self, images: Path) -> None:
        (images / "alias.img").symlink_to("a.img")
        disks = [
            Disk(vdev="xvda", path=str(images / "a.img")),
            Disk(vdev="xvdb", path=str(images / "b.img")),
            Disk(vdev="xvdc", path=str(images / "alias.img")),
        ]
        with pytest.raises(ConfigError, match="disks xvda and xvdc are one image"):
            check_distinct_disks(disks)
        check_distinct_disks(disks[:2])
        # paths that do not exist here are compared by their real path
        check_distinct_disks([Disk(vdev="a", path="/nonexistent/x"), Disk(vdev="b", path="/y")])
        with pytest.raises(ConfigError):
            check_distinct_disks(
                [Disk(vdev="a", path="/nonexistent/x"), Disk(vdev="b", path="/nonexistent/./x")]
            )


# ============================================================================================
# DOMAIN on the command line
# ============================================================================================


class TestResolveDomainPath:
    @pytest.mark.parametrize(
        "arg", ["./web1", "/etc/snapcore/domains/web1.toml", "web1.toml", "sub/web1", "a b.toml"]
    )
    def test_paths_taken_as_given(self, tmp_path: Path, arg: str) -> None:
        assert resolve_domain_path(arg, tmp_path) == Path(arg)

    @pytest.mark.parametrize("name", ["web1", "db.prod", "a_b-c", "x" * 64])
    def test_names_looked_up(self, tmp_path: Path, name: str) -> None:
        assert resolve_domain_path(name, tmp_path) == tmp_path / f"{name}.toml"
        assert resolve_domain_path(name, str(tmp_path)) == tmp_path / f"{name}.toml"

    @pytest.mark.parametrize(
        ("name", "reason"),
        [p for p in BAD_NAMES if p.id != "slash"],
    )
    def test_bad_names_refused(self, tmp_path: Path, name: str, reason: str) -> None:
        with pytest.raises(InvalidNameError) as info:
            resolve_domain_path(name, tmp_path)
        assert info.value.message.startswith("invalid domain name ")
        assert reason in info.value.message

    def test_dotdot_is_a_name_and_refused(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidNameError) as info:
            resolve_domain_path("..", tmp_path)
        assert info.value.message == "invalid domain name '..': it starts with '.'"


# ============================================================================================
# Snapshot config files
# ============================================================================================


def cfg_error(text: str, source: str = "<snapshot config>") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_snapshot_config(text, source)
    err = info.value
    assert err.source == source
    assert err.line is not None
    assert str(err) == f"{source}:{err.line}: {err.message}"
    assert "\n" not in str(err)
    return err


DESIGN_EXAMPLE = """\
name = "before-upgrade"
description = "after OS install"
memory = "yes"                # "no" (disk-only), "yes" (image kept in the state dir), or a path
type = "internal"             # or "external": the default for disks not given below
disk = [ "vda", "vdb=/srv/snap/vdb-before-upgrade.qcow2,type=qcow2" ]
"""


class TestParseSnapshotConfig:
    def test_design_example(self) -> None:
        assert parse_snapshot_config(DESIGN_EXAMPLE) == CreateOptions(
            name="before-upgrade",
            description="after OS install",
            memory="yes",
            kind=SnapshotKind.INTERNAL,
            disks=(
                DiskChoice(vdev="vda"),
                DiskChoice(
                    vdev="vdb",
                    target="/srv/snap/vdb-before-upgrade.qcow2",
                    format="qcow2",
                    kind=SnapshotKind.EXTERNAL,
                ),
            ),
        )

    @pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  # another\n", ";;\n;"])
    def test_empty(self, text: str) -> None:
        assert parse_snapshot_config(text) == CreateOptions()

    def test_semicolons_and_no_final_newline(self) -> None:
        opts = parse_snapshot_config('name="a";memory = "no" ; type="external";')
        assert opts == CreateOptions(name="a", memory="no", kind=SnapshotKind.EXTERNAL)
        assert parse_snapshot_config('name = "b"').name == "b"

    def test_crlf_line_ends(self) -> None:
        opts = parse_snapshot_config('name = "a"\r\nmemory = "no"\r\n')
        assert (opts.name, opts.memory) == ("a", "no")

    def test_double_quoted_escapes(self) -> None:
        text = r'description = "say \"hi\"\\ back\n\tnow # not a comment; nor a separator"'
        assert parse_snapshot_config(text).description == (
            'say "hi"\\ back\n\tnow # not a comment; nor a separator'
        )

    def test_single_quoted_is_literal(self) -> None:
        text = "description = 'C:\\temp \"quoted\" # kept; too'  # comment"
        assert parse_snapshot_config(text).description == 'C:\\temp "quoted" # kept; too'

    def test_empty_strings(self) -> None:
        assert parse_snapshot_config("description = ''").description == ""
        assert parse_snapshot_config('description = ""').description == ""

    def test_multiline_list_with_comments_and_trailing_comma(self) -> None:
        text = """\
# which disks
disk = [   # opening comment
    "vda",            # system disk
    # a full-line comment inside the list

    'vdb=/srv/snap/b.qcow2,type=qcow2',
    "xvdc=/srv/snap/c.vhd",   # external, format left to the backend
]
name = "multi"
"""
        opts = parse_snapshot_config(text)
        assert opts.name == "multi"
        assert opts.disks == (
            DiskChoice(vdev="vda"),
            DiskChoice(
                vdev="vdb",
                target="/srv/snap/b.qcow2",
                format="qcow2",
                kind=SnapshotKind.EXTERNAL,
            ),
            DiskChoice(vdev="xvdc", target="/srv/snap/c.vhd", kind=SnapshotKind.EXTERNAL),
        )

    def test_list_forms(self) -> None:
        assert parse_snapshot_config('disk=["vda"]').disks == (DiskChoice(vdev="vda"),)
        assert parse_snapshot_config('disk=[\n"vda",\n]').disks == (DiskChoice(vdev="vda"),)
        assert parse_snapshot_config('disk=["vda"\n,"vdb"]').disks == (
            DiskChoice(vdev="vda"),
            DiskChoice(vdev="vdb"),
        )

    @pytest.mark.parametrize("memory", ["yes", "no", "/var/lib/snap/mem.img", "/"])
    def test_memory_accepted(self, memory: str) -> None:
        assert parse_snapshot_config(f"memory = {cfg_str(memory)}").memory == memory

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [("internal", SnapshotKind.INTERNAL), ("external", SnapshotKind.EXTERNAL)],
    )
    def test_type_accepted(self, kind: str, expected: SnapshotKind) -> None:
        assert parse_snapshot_config(f'type = "{kind}"').kind is expected

    def test_64_character_name_accepted(self) -> None:
        name = "Z9" * 32
        assert parse_snapshot_config(f'name = "{name}"').name == name

    # ---- syntax errors -------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("text", "line", "problem"),
        [
            pytest.param(
                'name = "x"\ndescription = "open\n',
                2,
                "unterminated string: missing closing '\"'",
                id="unterminated-double",
            ),
            pytest.param(
                'name = "x"\n\ndescription = "open',
                3,
                "unterminated string: missing closing '\"'",
                id="unterminated-at-eof",
            ),
            pytest.param(
                "description = 'open\n'",
                1,
                'unterminated string: missing closing "\'"',
                id="unterminated-single",
            ),
            pytest.param(
                'description = "ends in backslash\\',
                1,
                "unterminated string",
                id="unterminated-backslash",
            ),
            pytest.param(
                'description = "a\\qb"',
                1,
                "unknown escape '\\q' in string",
                id="unknown-escape",
            ),
            pytest.param('\nname "x"\n', 2, "missing '=' after 'name'", id="missing-equals"),
            pytest.param("name\n", 1, "missing '=' after 'name' (found end of line)", id="bare"),
            pytest.param(
                'name = "x"\n\nmemory\n= "no"\n',
                3,
                "missing '=' after 'memory'",
                id="equals-next-line",
            ),
            pytest.param(
                'name = "x" "y"\n',
                1,
                "expected ';' or end of line after the value of 'name', found string 'y'",
                id="two-values",
            ),
            pytest.param(
                "memory = yes\n",
                1,
                "expected a value for 'memory' (a quoted string, a number or a list), "
                "found name 'yes'; strings must be quoted",
                id="unquoted-word",
            ),
            pytest.param("memory = /var/mem\n", 1, "unexpected character '/'", id="unquoted-path"),
            pytest.param('name = "x"\nmemory = 12ab\n', 2, "bad token '12ab'", id="bad-token"),
            pytest.param('name = "x" @\n', 1, "unexpected character '@'", id="bad-char"),
            pytest.param('= "x"\n', 1, "expected a setting name", id="no-key"),
            pytest.param('"name" = "x"\n', 1, "expected a setting name", id="quoted-key"),
            pytest.param('name = \n"x"\n', 1, "expected a value for 'name'", id="no-value"),
            pytest.param("name = ", 1, "expected a value for 'name'", id="no-value-eof"),
            pytest.param(
                'name = "x"\ndisk = [ "vda",\n  "vdb",\n',
                2,
                "unclosed list: '[' has no matching ']'",
                id="unclosed-list",
            ),
            pytest.param(
                'disk = [ "vda"\n\n', 1, "unclosed list: '[' has no matching ']'", id="unclosed-2"
            ),
            pytest.param(
                'disk = [ "vda",\n  "vdb"\n  "vdc" ]\n',
                3,
                "expected ',' or ']' after a list item, found string 'vdc'",
                id="missing-comma",
            ),
            pytest.param(
                'disk = [ "vda",\n , "vdb" ]\n',
                2,
                "expected a list item or ']', found ','",
                id="empty-item",
            ),
            pytest.param(
                'disk = [ "vda" ; "vdb" ]\n',
                1,
                "expected ',' or ']' after a list item, found ';'",
                id="semicolon-in-list",
            ),
            pytest.param('disk = [ [ "vda" ] ]\n', 1, "lists cannot be nested", id="nested-list"),
            pytest.param(
                'name = "a"\n# comment\nname = "b"\n',
                3,
                "duplicate key 'name' (first set on line 1)",
                id="duplicate-key",
            ),
            pytest.param(
                'name = "a"; description = "d"; description = "e"',
                1,
                "duplicate key 'description' (first set on line 1)",
                id="duplicate-same-line",
            ),
            pytest.param(
                '\n\nkeep = "yes"\n',
                3,
                "unknown key 'keep'; known keys: name, description, memory, type, disk",
                id="unknown-key",
            ),
            pytest.param("Name = 'x'\n", 1, "unknown key 'Name'", id="keys-case-sensitive"),
        ],
    )
    def test_syntax_errors(self, text: str, line: int, problem: str) -> None:
        err = cfg_error(text)
        assert err.line == line
        assert err.message.startswith(problem), err.message

    # ---- types and values ----------------------------------------------------------------

    @pytest.mark.parametrize(
        ("text", "line", "problem"),
        [
            pytest.param("name = 5", 1, "'name' must be a string, not an integer", id="name-int"),
            pytest.param(
                '\nname = ["a"]', 2, "'name' must be a string, not a list", id="name-list"
            ),
            pytest.param(
                "description = 1", 1, "'description' must be a string, not an integer", id="desc"
            ),
            pytest.param("memory = 0", 1, "'memory' must be a string, not an integer", id="mem"),
            pytest.param(
                'type = ["internal"]', 1, "'type' must be a string, not a list", id="type-list"
            ),
            pytest.param(
                'disk = "vda"', 1, "'disk' must be a list of strings, not a string", id="disk-str"
            ),
            pytest.param(
                'disk = [\n"vda",\n 2]',
                3,
                "'disk' must be a list of strings; this item is an integer",
                id="disk-int-item",
            ),
            pytest.param(
                "disk = [ ]",
                1,
                "'disk' lists no disks; leave it out to include every writable disk",
                id="disk-empty",
            ),
            pytest.param(
                'memory = "maybe"',
                1,
                'memory must be "yes", "no" or an absolute path, not \'maybe\'',
                id="memory-word",
            ),
            pytest.param(
                'memory = "YES"', 1, 'memory must be "yes", "no" or an absolute', id="memory-case"
            ),
            pytest.param(
                'name = "a"\nmemory = "snap/mem.img"',
                2,
                'memory must be "yes", "no" or an absolute path, not \'snap/mem.img\'',
                id="memory-relative",
            ),
            pytest.param(
                'memory = ""', 1, 'memory must be "yes", "no" or an absolute', id="memory-empty"
            ),
            pytest.param(
                'memory = "/mem\x00"', 1, 'memory must be "yes", "no" or an', id="memory-nul"
            ),
            pytest.param(
                'type = "native"',
                1,
                'type must be "internal" or "external", not \'native\'',
                id="type-native",
            ),
        ],
    )
    def test_value_errors(self, text: str, line: int, problem: str) -> None:
        err = cfg_error(text)
        assert err.line == line
        assert err.message.startswith(problem), err.message

    @pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
    def test_bad_snapshot_names(self, name: str, reason: str) -> None:
        err = cfg_error(f'# names\ndescription = "d"\nname = {cfg_str(name)}\n')
        assert err.line == 3
        assert err.message.startswith("invalid snapshot name ")
        assert reason in err.message

    def test_control_char_raw_in_single_quotes(self) -> None:
        err = cfg_error("name = 'a\x07b'")
        assert err.line == 1
        assert "it contains '\\x07'" in err.message

    # ---- disk entries --------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("entry", "choice"),
        [
            ("vda", DiskChoice(vdev="vda")),
            ("xvda", DiskChoice(vdev="xvda")),
            ("disk_1", DiskChoice(vdev="disk_1")),
            ("vdb=/t.qcow2", DiskChoice(vdev="vdb", target="/t.qcow2", kind=SnapshotKind.EXTERNAL)),
            (
                "vdb=/srv/x y/t.qcow2,type=qcow2",
                DiskChoice(
                    vdev="vdb",
                    target="/srv/x y/t.qcow2",
                    format="qcow2",
                    kind=SnapshotKind.EXTERNAL,
                ),
            ),
            (
                "hdc=/srv/t=1.vhd,type=vpc2",
                DiskChoice(
                    vdev="hdc", target="/srv/t=1.vhd", format="vpc2", kind=SnapshotKind.EXTERNAL
                ),
            ),
        ],
    )
    def test_disk_entries(self, entry: str, choice: DiskChoice) -> None:
        assert parse_snapshot_config(f"disk = [{cfg_str(entry)}]").disks == (choice,)

    @pytest.mark.parametrize(
        ("entry", "problem"),
        [
            pytest.param("vd a", "invalid vdev 'vd a'", id="vdev-space"),
            pytest.param("", "invalid vdev ''", id="vdev-empty"),
            pytest.param("-vda", "invalid vdev '-vda'", id="vdev-dash"),
            pytest.param("=/t", "invalid vdev ''", id="no-vdev"),
            pytest.param(
                "vdb=t.qcow2",
                "disk entry 'vdb=t.qcow2': target 't.qcow2' must be an absolute path",
                id="relative-target",
            ),
            pytest.param(
                "vdb=", "disk entry 'vdb=': target '' must be an absolute path", id="empty-target"
            ),
            pytest.param(
                "vdb=/t\x00x", "target '/t\\x00x' must be an absolute path without NUL", id="nul"
            ),
            pytest.param(
                "vdb=/t,type=QCOW2",
                "disk entry 'vdb=/t,type=QCOW2': format 'QCOW2' must be lowercase letters",
                id="format-case",
            ),
            pytest.param("vdb=/t,type=q-cow", "format 'q-cow' must be lowercase", id="format-dash"),
            pytest.param("vdb=/t,type=", "format '' must be lowercase", id="format-empty"),
            pytest.param(
                "vdb=/t,size=1G",
                "disk entry 'vdb=/t,size=1G': unknown option 'size=1G'; only type=FORMAT",
                id="other-option",
            ),
            pytest.param("vdb=/t,type", "unknown option 'type'", id="option-no-equals"),
            pytest.param("vdb=/t,", "unknown option ''", id="trailing-comma"),
            pytest.param("vdb=/t,type=qcow2,type=raw", "type= given twice", id="type-twice"),
            pytest.param(
                "vdb,type=qcow2",
                "disk entry 'vdb,type=qcow2': options need a target",
                id="options-no-target",
            ),
        ],
    )
    def test_bad_disk_entries(self, entry: str, problem: str) -> None:
        err = cfg_error(f'name = "n"\ndisk = [\n  "vda",\n  {cfg_str(entry)},\n]\n')
        assert err.line == 4
        assert problem in err.message, err.message

    @pytest.mark.parametrize(
        ("first", "second"), [("vda", "vda"), ("vda", "vda=/t"), ("vda=/t", "vda=/u,type=raw")]
    )
    def test_vdev_listed_twice(self, first: str, second: str) -> None:
        err = cfg_error(f'disk = [ "{first}", "vdb",\n\n  "{second}" ]')
        assert err.line == 3
        assert err.message == "vdev 'vda' is listed twice in 'disk' (first on line 1)"

    def test_source_in_errors(self) -> None:
        err = cfg_error('name = "a/b"', source="/etc/x.cfg")
        assert str(err).startswith("/etc/x.cfg:1: invalid snapshot name 'a/b'")


class TestLoadSnapshotConfig:
    def test_reads_file(self, tmp_path: Path) -> None:
        path = write(tmp_path / "xl.snapshot.cfg", DESIGN_EXAMPLE)
        assert load_snapshot_config(path) == parse_snapshot_config(DESIGN_EXAMPLE)
        assert load_snapshot_config(str(path)) == parse_snapshot_config(DESIGN_EXAMPLE)

    def test_parse_error_names_file_and_line(self, tmp_path: Path) -> None:
        path = write(tmp_path / "s.cfg", 'name = "a"\n\ntype = "sideways"\n')
        with pytest.raises(ConfigError) as info:
            load_snapshot_config(path)
        assert (info.value.source, info.value.line) == (str(path), 3)
        assert str(info.value) == (
            f'{path}:3: type must be "internal" or "external", not \'sideways\''
        )

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as info:
            load_snapshot_config(tmp_path / "none.cfg")
        assert info.value.message == "no such snapshot config file"
        assert info.value.source == str(tmp_path / "none.cfg")

    def test_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as info:
            load_snapshot_config(tmp_path)
        assert info.value.message == "cannot read snapshot config file: it is a directory"

    def test_permission_denied(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = write(tmp_path / "s.cfg", "")

        real_open = os.open

        def refuse(file: str | os.PathLike[str], *args: int) -> int:
            if os.fspath(file) == os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return real_open(file, *args)

        monkeypatch.setattr(os, "open", refuse)
        with pytest.raises(ConfigError) as info:
            load_snapshot_config(path)
        assert info.value.message == "cannot read snapshot config file: permission denied"

    def test_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "s.cfg"
        path.write_bytes(b'name = "a"\ndescription = "\xff\xfe"\n')
        with pytest.raises(ConfigError) as info:
            load_snapshot_config(path)
        assert info.value.line == 2
        assert info.value.message.startswith("snapshot config file is not valid UTF-8")
        assert info.value.source == str(path)


# ============================================================================================
# Combining the file with -n and -D
# ============================================================================================


class TestMergeCreateOptions:
    def test_nothing_given(self) -> None:
        assert merge_create_options(None, name=None, disk_only=False) == CreateOptions()

    def test_name_only(self) -> None:
        assert merge_create_options(None, name="n1", disk_only=False) == CreateOptions(name="n1")

    def test_disk_only(self) -> None:
        assert merge_create_options(None, name=None, disk_only=True) == CreateOptions(memory="no")

    def test_file_fields_kept(self) -> None:
        file_options = parse_snapshot_config(DESIGN_EXAMPLE.replace('"yes"', '"no"'))
        merged = merge_create_options(file_options, name="before-upgrade", disk_only=True)
        assert merged == file_options
        assert merged.disks == file_options.disks
        assert merged.kind is SnapshotKind.INTERNAL
        assert merged.description == "after OS install"

    def test_name_fills_file_without_name(self) -> None:
        file_options = CreateOptions(memory="yes", kind=SnapshotKind.EXTERNAL)
        merged = merge_create_options(file_options, name="cli", disk_only=False)
        assert merged == CreateOptions(name="cli", memory="yes", kind=SnapshotKind.EXTERNAL)
        assert file_options.name is None

    def test_file_name_kept_without_n(self) -> None:
        merged = merge_create_options(CreateOptions(name="f"), name=None, disk_only=False)
        assert merged.name == "f"

    def test_same_name_twice_is_fine(self) -> None:
        merged = merge_create_options(CreateOptions(name="same"), name="same", disk_only=False)
        assert merged.name == "same"

    def test_different_names_conflict(self) -> None:
        with pytest.raises(ConfigError) as info:
            merge_create_options(CreateOptions(name="file"), name="cli", disk_only=False)
        assert info.value.message == (
            "snapshot name given twice: -n 'cli' and name = 'file' in the snapshot config file"
        )

    @pytest.mark.parametrize("memory", ["yes", "/srv/mem.img"])
    def test_disk_only_conflicts_with_memory(self, memory: str) -> None:
        with pytest.raises(ConfigError) as info:
            merge_create_options(CreateOptions(memory=memory), name=None, disk_only=True)
        assert info.value.message == (
            f"-D/--disk-only conflicts with memory = {memory!r} in the snapshot config file"
        )

    def test_disk_only_with_memory_no(self) -> None:
        merged = merge_create_options(CreateOptions(memory="no"), name=None, disk_only=True)
        assert merged.memory == "no"

    def test_memory_kept_without_disk_only(self) -> None:
        merged = merge_create_options(CreateOptions(memory="yes"), name=None, disk_only=False)
        assert merged.memory == "yes"

    @pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
    def test_bad_name(self, name: str, reason: str) -> None:
        with pytest.raises(InvalidNameError) as info:
            merge_create_options(None, name=name, disk_only=False)
        assert info.value.message.startswith("invalid snapshot name ")
        assert reason in info.value.message
