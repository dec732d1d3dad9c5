"""Domain files (TOML) and snapshot config files (the ``xl.snapshot.cfg`` syntax).

Everything here only reads: no function touches a disk, the state dir or a domain. Every problem
with a file or an option is raised as one :class:`~snapcore.errors.ConfigError` whose message is
one line naming the problem, with ``source`` (the file as given) and, when known, ``line`` set.
Foreign errors (``OSError``, ``UnicodeDecodeError``, ``tomllib.TOMLDecodeError``) never escape.

Domain file (design brief §5)::

    name = "web1"
    hypervisor = "qemu"
    [qemu]
    qmp = "/run/web1.qmp"
    [[disk]]
    vdev = "vda"
    path = "web1.qcow2"          # relative paths are resolved against the file's directory
    max_chain = 10               # optional: this disk's chain limit
    [snapshots]                  # optional: the snapshot policy (snapcore.policy, docs/policy.md)
    schedule = "@hourly"
    [[hook]]                     # optional: commands run around create/revert/delete
    command = ["/usr/local/bin/db-flush"]

Snapshot config file, the libxlu ``KEY = VALUE`` syntax of xl (statements end at a newline or
``;``; values are quoted strings, integers or ``[ ... ]`` lists of them; ``#`` comments)::

    name = "before-upgrade"
    memory = "yes"
    disk = [ "vda",
             "vdb=/srv/snap/vdb.qcow2,type=qcow2",   # external snapshot into this file
           ]
"""

from __future__ import annotations

import dataclasses
import os
import stat
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final

from snapcore.errors import ConfigError
from snapcore.model import (
    CreateOptions,
    Disk,
    DiskChoice,
    Domain,
    SnapshotKind,
    check_name,
    check_vdev,
)
from snapcore.policy import disk_chain_limit, hooks_from_toml, policy_from_toml

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_FILE_SIZE",
    "check_description",
    "check_distinct_disks",
    "load_domain",
    "load_snapshot_config",
    "merge_create_options",
    "parse_snapshot_config",
    "resolve_domain_path",
]

_TOP_KEYS: Final = ("name", "uuid", "hypervisor", "description", "disk", "snapshots", "hook")
_DISK_KEYS: Final = ("vdev", "path", "driver", "readonly", "options", "max_chain")
_SNAPSHOT_KEYS: Final = ("name", "description", "memory", "type", "disk")
_FORMAT_CHARS: Final = frozenset(string.ascii_lowercase + string.digits)

#: The largest domain file or snapshot config file read, in bytes (1 MiB).
MAX_FILE_SIZE: Final = 1 << 20
#: The longest checkpoint description, in characters.
MAX_DESCRIPTION: Final = 4096
#: The most characters of an input value an error message quotes.
QUOTE_MAX: Final = 60


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _q(text: str) -> str:
    """*text* quoted for an error message, cut to :data:`QUOTE_MAX` characters: an error line
    never carries a whole input."""
    if len(text) <= QUOTE_MAX:
        return repr(text)
    return f"{text[:QUOTE_MAX]!r}... ({len(text)} characters)"


def _kind_of_file(mode: int) -> str:
    for test, kind in (
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "special file"


def _read_text(path: str | os.PathLike[str], what: str) -> str:
    """Return the UTF-8 text of the file at *path*; *what* names the kind of file in errors.

    At most :data:`MAX_FILE_SIZE` bytes are read: a larger file, or a device, socket or
    directory, is refused before it is read (a pipe, such as ``<(...)`` in a shell, is read
    up to the limit).

    :raises ConfigError: with ``source`` set if the file is missing, unreadable, too large, not
        a regular file or a pipe, or not UTF-8.
    """
    source = os.fspath(path)
    limit = f"the limit is {MAX_FILE_SIZE // 1024 // 1024} MiB ({MAX_FILE_SIZE} bytes)"
    try:
        mode = os.stat(path).st_mode  # refuse a device before opening it
        if stat.S_ISDIR(mode):
            raise ConfigError(f"cannot read {what}: it is a directory", source=source)
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ConfigError(
                f"cannot read {what}: it is a {_kind_of_file(mode)}, not a regular file",
                source=source,
            )
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                raise ConfigError(f"cannot read {what}: it is not a regular file", source=source)
            if st.st_size > MAX_FILE_SIZE:
                raise ConfigError(
                    f"{what} is too large ({st.st_size} bytes); {limit}", source=source
                )
            os.set_blocking(fd, True)  # a pipe: wait for its writer
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE_SIZE:
                chunk = os.read(fd, MAX_FILE_SIZE + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ConfigError(f"no such {what}", source=source) from None
    except PermissionError:
        raise ConfigError(f"cannot read {what}: permission denied", source=source) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot read {what}: {reason}", source=source) from None
    if size > MAX_FILE_SIZE:
        raise ConfigError(
            f"{what} is too large (more than {MAX_FILE_SIZE} bytes); {limit}", source=source
        )
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            source=source,
            line=line,
        ) from None


def _relocate(exc: ConfigError, source: str, line: int | None = None) -> ConfigError:
    """Return a ConfigError with *exc*'s message located at *source* (and *line*).

    Used for errors raised by the models (which know no file), including InvalidNameError.
    """
    return ConfigError(exc.message, source=source, line=exc.line if line is None else line)


# --------------------------------------------------------------------------------------------
# Domain files
# --------------------------------------------------------------------------------------------


def resolve_domain_path(arg: str, domains_dir: str | os.PathLike[str]) -> Path:
    """Return the domain file that the command-line argument DOMAIN designates.

    *arg* is a path if it contains ``/`` or ends with ``.toml``; otherwise it is a domain name,
    looked up as ``<domains_dir>/<arg>.toml``. The file is not opened.

    :raises InvalidNameError: if *arg* is taken as a name and is not a valid domain name.
    """
    if "/" in arg or arg.endswith(".toml"):
        return Path(arg)
    check_name(arg, what="domain name")
    return Path(domains_dir) / f"{arg}.toml"


def load_domain(path: str | os.PathLike[str]) -> Domain:
    """Read the TOML domain file at *path* and return the :class:`Domain` it describes.

    Relative disk paths are resolved against the file's directory and every disk path must
    exist. ``Domain.source`` is the file's absolute path.

    :raises ConfigError: one per file, naming the first problem found, with ``source`` set to
        *path* as given (and ``line`` for TOML syntax errors): missing, unreadable or non-UTF-8
        file, TOML syntax, unknown key, wrong type, missing key, invalid name, uuid or vdev,
        duplicate vdev, no disks, a disk path that does not exist. Nothing else is raised.
    """
    source = os.fspath(path)
    text = _read_text(path, "domain file")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = _split_toml_error(str(exc), text)
        raise ConfigError(f"TOML syntax error: {message}", source=source, line=line) from None
    absolute = os.path.abspath(source)
    try:
        return _build_domain(doc, Path(absolute).parent, absolute)
    except ConfigError as exc:
        raise _relocate(exc, source) from None


def _split_toml_error(message: str, text: str) -> tuple[str, int | None]:
    """Split a tomllib message ``"Invalid value (at line 3, column 5)"`` into text and line."""
    head, sep, tail = message.rpartition(" (at ")
    if not sep or not tail.endswith(")"):
        return message, None
    where = tail[:-1]
    if where == "end of document":
        last_line = text.count("\n") + (0 if text.endswith("\n") else 1)
        return f"{head} at the end of the file", max(last_line, 1)
    line_part, _, column_part = where.partition(", ")
    words = line_part.split()
    if len(words) == 2 and words[0] == "line" and words[1].isdigit():
        return f"{head} ({column_part})" if column_part else head, int(words[1])
    return message, None


def _where_disk(index: int) -> str:
    return f" in [[disk]] #{index}"


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            place = where or " at the top level"
            raise ConfigError(f"unknown key {_q(key)}{place}; known keys: {', '.join(allowed)}")


def _opt_str(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{_q(key)}{where} must be a string")
    return value


def _req_str(table: Mapping[str, Any], key: str, where: str) -> str:
    value = _opt_str(table, key, where)
    if value is None:
        raise ConfigError(f"missing required key {_q(key)}{where}")
    return value


def _build_domain(doc: Mapping[str, Any], base: Path, source: str) -> Domain:
    """Build the Domain from a parsed TOML document; raise ConfigError without a source."""
    hypervisor = _opt_str(doc, "hypervisor", "")
    if hypervisor is None:
        hypervisor = "none"
    check_name(hypervisor, what="hypervisor name")
    # The table named after the hypervisor ([qemu], [xen]) is the hypervisor plugin's to check.
    _check_keys(doc, (*_TOP_KEYS, hypervisor) if hypervisor != "none" else _TOP_KEYS, "")
    name = _req_str(doc, "name", "")
    check_name(name, what="domain name")
    uuid = _opt_str(doc, "uuid", "") or ""
    _opt_str(doc, "description", "")
    table = doc.get(hypervisor, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{hypervisor!r} must be a table ([{hypervisor}])")

    raw_disks = doc.get("disk")
    if raw_disks is None and hypervisor != "none":
        raw_disks = []  # the hypervisor plugin says which disks the domain has (domain_disks)
    if raw_disks is None:
        raise ConfigError("no disks: a domain file needs at least one [[disk]] table")
    if not isinstance(raw_disks, list):
        raise ConfigError("'disk' must be an array of tables ([[disk]])")
    if not raw_disks and hypervisor == "none":
        raise ConfigError("no disks: a domain file needs at least one [[disk]] table")
    disks: list[Disk] = []
    first_seen: dict[str, int] = {}
    chain_limits: dict[str, int] = {}
    for index, raw in enumerate(raw_disks, start=1):
        disk = _build_disk(raw, index, base)
        if "max_chain" in raw:
            chain_limits[disk.vdev] = disk_chain_limit(raw["max_chain"], disk.vdev)
        if disk.vdev in first_seen:
            raise ConfigError(
                f"duplicate vdev {disk.vdev!r}{_where_disk(index)} "
                f"(already used by [[disk]] #{first_seen[disk.vdev]})"
            )
        first_seen[disk.vdev] = index
        disks.append(disk)
    check_distinct_disks(disks)
    policy = policy_from_toml(doc["snapshots"]) if "snapshots" in doc else None
    hooks = hooks_from_toml(doc["hook"], base) if "hook" in doc else ()
    return Domain(
        name=name,
        disks=tuple(disks),
        uuid=uuid,
        hypervisor=hypervisor,
        hypervisor_table=table,
        source=source,
        policy=policy,
        chain_limits=chain_limits,
        hooks=hooks,
    )


def _image_identity(path: str) -> tuple[object, ...]:
    """What *path* resolves to: a device number for a device, a file's device and inode, or,
    for a path that does not exist (yet), its real path (symlinks resolved)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return ("path", os.path.realpath(path))
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return ("device", st.st_rdev)
    return ("file", st.st_dev, st.st_ino)


def check_distinct_disks(disks: Sequence[Disk]) -> None:
    """Refuse disks of which two are one image: the same file (through a symlink, a hard link
    or another spelling of its path) or the same device (``/dev/vg/lv`` and ``/dev/dm-3``).

    Two snapshots of one image in one checkpoint would be one snapshot taken twice, and an
    external one would leave one disk's checkpoint writable through the other disk.

    :raises ConfigError: naming both vdevs and both paths.
    """
    seen: dict[tuple[object, ...], Disk] = {}
    for disk in disks:
        key = _image_identity(disk.path)
        first = seen.setdefault(key, disk)
        if first is not disk:
            same = f"{disk.path}" if disk.path == first.path else f"{disk.path} is {first.path}"
            raise ConfigError(
                f"disks {first.vdev} and {disk.vdev} are one image ({same}); "
                "a domain may name each image only once"
            )


def _build_disk(raw: object, index: int, base: Path) -> Disk:
    where = _where_disk(index)
    if not isinstance(raw, dict):
        raise ConfigError(f"[[disk]] #{index} must be a table")
    _check_keys(raw, _DISK_KEYS, where)
    vdev = _req_str(raw, "vdev", where)
    raw_path = _req_str(raw, "path", where)
    driver = _opt_str(raw, "driver", where)
    if driver is not None:
        check_name(driver, what="driver name")
    readonly = raw.get("readonly", False)
    if not isinstance(readonly, bool):
        raise ConfigError(f"'readonly'{where} must be true or false")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"'options'{where} must be a table of strings")
    for key, value in options.items():
        if not isinstance(value, str):
            raise ConfigError(f"option {_q(key)}{where} must be a string")
    # An empty path or one with a NUL byte is left as is for Disk to refuse.
    path = str(base / raw_path) if raw_path and "\0" not in raw_path else raw_path
    disk = Disk(vdev=vdev, path=path, driver=driver, readonly=readonly, options=dict(options))
    if not os.path.exists(disk.path):
        raise ConfigError(f"disk {disk.vdev}: path {disk.path} does not exist")
    return disk


# --------------------------------------------------------------------------------------------
# Snapshot config files: tokenizer
# --------------------------------------------------------------------------------------------


class _Tok(Enum):
    IDENT = "name"
    STRING = "string"
    INT = "number"
    EQUALS = "'='"
    LBRACKET = "'['"
    RBRACKET = "']'"
    COMMA = "','"
    SEMI = "';'"
    NEWLINE = "end of line"
    EOF = "end of file"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Tok
    text: str
    line: int

    def describe(self) -> str:
        if self.kind is _Tok.IDENT:
            return f"name {_q(self.text)}"
        if self.kind is _Tok.INT:
            return f"number {self.text}"
        if self.kind is _Tok.STRING:
            return f"string {_q(self.text)}"
        return str(self.kind.value)


_PUNCT: Final = {
    "=": _Tok.EQUALS,
    "[": _Tok.LBRACKET,
    "]": _Tok.RBRACKET,
    ",": _Tok.COMMA,
    ";": _Tok.SEMI,
    "\n": _Tok.NEWLINE,
}
_ESCAPES: Final = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_IDENT_START: Final = frozenset(string.ascii_letters + "_")
_WORD_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_")


class _Lexer:
    """Splits snapshot config text into tokens, tracking line numbers."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.line = 1

    def error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(message, source=self.source, line=self.line if line is None else line)

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t\r\f\v":
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif c in _PUNCT:
                out.append(_Token(_PUNCT[c], c, self.line))
                self.pos += 1
                if c == "\n":
                    self.line += 1
            elif c == '"':
                out.append(self._double_quoted())
            elif c == "'":
                out.append(self._single_quoted())
            elif c in _WORD_CHARS:
                out.append(self._word())
            else:
                hint = "; strings must be quoted" if c in "/.-~" else ""
                raise self.error(f"unexpected character {c!r}{hint}")
        out.append(_Token(_Tok.EOF, "", self.line))
        return out

    def _double_quoted(self) -> _Token:
        start_line = self.line
        text = self.text
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(text):
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return _Token(_Tok.STRING, "".join(chars), start_line)
            if c == "\n":
                break
            if c == "\\":
                nxt = text[self.pos + 1 : self.pos + 2]
                if nxt in ("", "\n"):
                    break
                if nxt not in _ESCAPES:
                    raise self.error(
                        f"unknown escape '\\{nxt}' in string; "
                        'use \\", \\\\, \\n or \\t (or a single-quoted string)'
                    )
                chars.append(_ESCAPES[nxt])
                self.pos += 2
                continue
            chars.append(c)
            self.pos += 1
        raise self.error("unterminated string: missing closing '\"'", start_line)

    def _single_quoted(self) -> _Token:
        start_line = self.line
        end = self.pos + 1
        text = self.text
        while end < len(text) and text[end] not in "'\n":
            end += 1
        if end >= len(text) or text[end] != "'":
            raise self.error('unterminated string: missing closing "\'"', start_line)
        token = _Token(_Tok.STRING, text[self.pos + 1 : end], start_line)
        self.pos = end + 1
        return token

    def _word(self) -> _Token:
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] in _WORD_CHARS:
            self.pos += 1
        word = text[start : self.pos]
        if word[0] in _IDENT_START:
            return _Token(_Tok.IDENT, word, self.line)
        if word.isascii() and word.isdigit():
            return _Token(_Tok.INT, word, self.line)
        raise self.error(f"bad token {_q(word)}: neither a number nor a name")


# --------------------------------------------------------------------------------------------
# Snapshot config files: parser
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    """A parsed value: a string, an integer or a list of values, with the line it starts on."""

    data: str | int | tuple[_Value, ...]
    line: int

    def type_name(self) -> str:
        if isinstance(self.data, str):
            return "a string"
        if isinstance(self.data, int):
            return "an integer"
        return "a list"


class _Parser:
    """Parses the token list into ``{key: value}``, checking keys as it goes."""

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.pos = 0

    def error(self, message: str, line: int) -> ConfigError:
        return ConfigError(message, source=self.source, line=line)

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind is not _Tok.EOF:
            self.pos += 1
        return token

    def parse(self) -> dict[str, _Value]:
        settings: dict[str, _Value] = {}
        key_lines: dict[str, int] = {}
        while True:
            token = self.advance()
            if token.kind in (_Tok.NEWLINE, _Tok.SEMI):
                continue
            if token.kind is _Tok.EOF:
                return settings
            if token.kind is not _Tok.IDENT:
                raise self.error(
                    f"expected a setting name at the start of a statement, "
                    f"found {token.describe()}",
                    token.line,
                )
            key = token.text
            if key not in _SNAPSHOT_KEYS:
                raise self.error(
                    f"unknown key {_q(key)}; known keys: {', '.join(_SNAPSHOT_KEYS)}", token.line
                )
            if key in settings:
                raise self.error(
                    f"duplicate key {_q(key)} (first set on line {key_lines[key]})", token.line
                )
            equals = self.advance()
            if equals.kind is not _Tok.EQUALS:
                raise self.error(
                    f"missing '=' after {_q(key)} (found {equals.describe()})", equals.line
                )
            settings[key] = self._value(key)
            key_lines[key] = token.line
            end = self.advance()
            if end.kind not in (_Tok.NEWLINE, _Tok.SEMI, _Tok.EOF):
                raise self.error(
                    f"expected ';' or end of line after the value of {_q(key)}, "
                    f"found {end.describe()}",
                    end.line,
                )

    def _value(self, key: str) -> _Value:
        token = self.advance()
        if token.kind is _Tok.STRING:
            return _Value(token.text, token.line)
        if token.kind is _Tok.INT:
            return _Value(int(token.text), token.line)
        if token.kind is _Tok.LBRACKET:
            return self._list(token)
        hint = "; strings must be quoted" if token.kind is _Tok.IDENT else ""
        raise self.error(
            f"expected a value for {_q(key)} (a quoted string, a number or a list), "
            f"found {token.describe()}{hint}",
            token.line,
        )

    def _skip_newlines(self) -> _Token:
        while self.peek().kind is _Tok.NEWLINE:
            self.advance()
        return self.advance()

    def _list(self, opening: _Token) -> _Value:
        items: list[_Value] = []
        while True:
            token = self._skip_newlines()
            if token.kind is _Tok.RBRACKET:
                break
            if token.kind is _Tok.EOF:
                raise self.error("unclosed list: '[' has no matching ']'", opening.line)
            if token.kind is _Tok.STRING:
                items.append(_Value(token.text, token.line))
            elif token.kind is _Tok.INT:
                items.append(_Value(int(token.text), token.line))
            elif token.kind is _Tok.LBRACKET:
                raise self.error("lists cannot be nested", token.line)
            else:
                raise self.error(
                    f"expected a list item or ']', found {token.describe()}", token.line
                )
            token = self._skip_newlines()
            if token.kind is _Tok.RBRACKET:
                break
            if token.kind is _Tok.EOF:
                raise self.error("unclosed list: '[' has no matching ']'", opening.line)
            if token.kind is not _Tok.COMMA:
                raise self.error(
                    f"expected ',' or ']' after a list item, found {token.describe()}",
                    token.line,
                )
        return _Value(tuple(items), opening.line)


# --------------------------------------------------------------------------------------------
# Snapshot config files: meaning
# --------------------------------------------------------------------------------------------


def parse_snapshot_config(text: str, source: str = "<snapshot config>") -> CreateOptions:
    """Parse snapshot config *text* (xl.snapshot.cfg syntax) into :class:`CreateOptions`.

    Keys: ``name``, ``description``, ``memory`` (``"yes"``, ``"no"`` or an absolute path),
    ``type`` (``"internal"`` or ``"external"``) and ``disk`` (a list of ``"VDEV"`` or
    ``"VDEV=TARGET[,type=FORMAT]"``). Double-quoted strings understand ``\\"``, ``\\\\``,
    ``\\n`` and ``\\t``; single-quoted strings are taken literally.

    :raises ConfigError: with ``source`` and ``line`` set, naming the first problem: a syntax
        error (unterminated string, missing ``=``, bad token, unclosed list), an unknown or
        duplicate key, a value of the wrong type, or a value that breaks the rules above
        (including an invalid name or vdev). Nothing else is raised.
    """
    settings = _Parser(_Lexer(text, source).tokens(), source).parse()

    def fail(message: str, value: _Value) -> ConfigError:
        return ConfigError(message, source=source, line=value.line)

    def string_of(key: str) -> tuple[str, _Value] | None:
        value = settings.get(key)
        if value is None:
            return None
        if not isinstance(value.data, str):
            raise fail(f"{_q(key)} must be a string, not {value.type_name()}", value)
        return value.data, value

    name: str | None = None
    if (found := string_of("name")) is not None:
        name, value = found
        try:
            check_name(name)
        except ConfigError as exc:
            raise _relocate(exc, source, value.line) from None

    description = ""
    if (found := string_of("description")) is not None:
        description, value = found
        try:
            check_description(description)
        except ConfigError as exc:
            raise _relocate(exc, source, value.line) from None

    memory: str | None = None
    if (found := string_of("memory")) is not None:
        memory, value = found
        if memory not in ("yes", "no") and (not memory.startswith("/") or "\0" in memory):
            raise fail(f'memory must be "yes", "no" or an absolute path, not {_q(memory)}', value)

    kind: SnapshotKind | None = None
    if (found := string_of("type")) is not None:
        text_kind, value = found
        if text_kind not in (SnapshotKind.INTERNAL, SnapshotKind.EXTERNAL):
            raise fail(f'type must be "internal" or "external", not {_q(text_kind)}', value)
        kind = SnapshotKind(text_kind)

    disks: tuple[DiskChoice, ...] | None = None
    disk_value = settings.get("disk")
    if disk_value is not None:
        disks = _disk_choices(disk_value, source)

    try:
        return CreateOptions(
            name=name, description=description, memory=memory, kind=kind, disks=disks
        )
    except ConfigError as exc:  # pragma: no cover - every field was checked above
        raise _relocate(exc, source) from None


def _disk_choices(value: _Value, source: str) -> tuple[DiskChoice, ...]:
    """Turn the ``disk`` list into DiskChoices, one per entry, refusing a vdev given twice."""
    if not isinstance(value.data, tuple):
        raise ConfigError(
            f"'disk' must be a list of strings, not {value.type_name()}",
            source=source,
            line=value.line,
        )
    if not value.data:
        raise ConfigError(
            "'disk' lists no disks; leave it out to include every writable disk",
            source=source,
            line=value.line,
        )
    choices: list[DiskChoice] = []
    first_line: dict[str, int] = {}
    for item in value.data:
        if not isinstance(item.data, str):
            raise ConfigError(
                f"'disk' must be a list of strings; this item is {item.type_name()}",
                source=source,
                line=item.line,
            )
        try:
            choice = _disk_choice(item.data)
        except ConfigError as exc:
            raise _relocate(exc, source, item.line) from None
        if choice.vdev in first_line:
            raise ConfigError(
                f"vdev {choice.vdev!r} is listed twice in 'disk' "
                f"(first on line {first_line[choice.vdev]})",
                source=source,
                line=item.line,
            )
        first_line[choice.vdev] = item.line
        choices.append(choice)
    return tuple(choices)


def _disk_choice(entry: str) -> DiskChoice:
    """Parse one ``VDEV[=TARGET[,type=FORMAT]]`` entry; raise ConfigError without a location."""
    head, comma, rest = entry.partition(",")
    vdev, equals, target = head.partition("=")
    check_vdev(vdev)
    if not equals:
        if comma:
            raise ConfigError(
                f"disk entry {_q(entry)}: options need a target; use VDEV=TARGET,type=FORMAT"
            )
        return DiskChoice(vdev=vdev)
    if not target.startswith("/") or "\0" in target:
        raise ConfigError(
            f"disk entry {_q(entry)}: target {_q(target)} "
            "must be an absolute path without NUL bytes"
        )
    fmt: str | None = None
    if comma:
        for option in rest.split(","):
            key, eq, val = option.partition("=")
            if key != "type" or not eq:
                raise ConfigError(
                    f"disk entry {_q(entry)}: unknown option {_q(option)}; "
                    "only type=FORMAT is allowed"
                )
            if fmt is not None:
                raise ConfigError(f"disk entry {_q(entry)}: type= given twice")
            if not val or not set(val) <= _FORMAT_CHARS:
                raise ConfigError(
                    f"disk entry {_q(entry)}: format {_q(val)} must be lowercase letters and digits"
                )
            fmt = val
    return DiskChoice(vdev=vdev, target=target, format=fmt, kind=SnapshotKind.EXTERNAL)


def check_description(description: str) -> str:
    """Return *description* if it is at most :data:`MAX_DESCRIPTION` characters long.

    :raises ConfigError: if it is longer.
    """
    if len(description) > MAX_DESCRIPTION:
        raise ConfigError(
            f"description is {len(description)} characters long; at most {MAX_DESCRIPTION}"
        )
    return description


def load_snapshot_config(path: str | os.PathLike[str]) -> CreateOptions:
    """Read the snapshot config file at *path* and parse it (see :func:`parse_snapshot_config`).

    :raises ConfigError: with ``source`` set to *path* as given, if the file is missing,
        unreadable or not UTF-8, or for any problem :func:`parse_snapshot_config` reports.
    """
    text = _read_text(path, "snapshot config file")
    return parse_snapshot_config(text, source=os.fspath(path))


# --------------------------------------------------------------------------------------------
# Combining the file with the command line
# --------------------------------------------------------------------------------------------


def merge_create_options(
    file_options: CreateOptions | None, *, name: str | None, disk_only: bool
) -> CreateOptions:
    """Combine a snapshot config file's options with ``-n NAME`` and ``-D/--disk-only``.

    ``-n`` fills in the name (the same name in the file is fine); ``-D`` sets memory to
    ``"no"``. The inputs are not modified.

    :raises InvalidNameError: if *name* is not a valid snapshot name.
    :raises ConfigError: if ``-n`` and the file give different names, or ``-D`` meets a file
        that asks for memory (``"yes"`` or a path).
    """
    options = file_options if file_options is not None else CreateOptions()
    final_name = options.name
    if name is not None:
        check_name(name)
        if options.name is not None and options.name != name:
            raise ConfigError(
                f"snapshot name given twice: -n {name!r} and name = {options.name!r} "
                "in the snapshot config file"
            )
        final_name = name
    memory = options.memory
    if disk_only:
        if options.memory not in (None, "no"):
            raise ConfigError(
                f"-D/--disk-only conflicts with memory = {_q(options.memory)} "
                "in the snapshot config file"
            )
        memory = "no"
    return dataclasses.replace(options, name=final_name, memory=memory)
