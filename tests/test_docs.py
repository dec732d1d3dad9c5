"""The documentation in docs/ against the code: the examples marked ``<!-- tested -->`` run, and
every hook, CLI command and option, JSON field, capability field and error class is documented
as the code has it now. Links between the pages resolve."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from snapcore import api, cli, errors, hookspecs, model, plugins

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ("index.md", "cli.md", "api.md", "plugin-guide.md", "hooks.md", "hook-api-changelog.md")

#: A fenced code block: its language and its text.
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
#: A code block marked to be run by this module.
TESTED = re.compile(r"^<!-- tested -->\n```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^(?P<level>#{1,6}) (?P<title>.+?)\s*$", re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def section(text: str, title: str) -> str:
    """The text under the heading *title*, up to the next heading of the same or a higher level.

    :raises AssertionError: when there is no such heading.
    """
    for match in HEADING.finditer(text):
        if match["title"] == title:
            level = len(match["level"])
            end = len(text)
            for later in HEADING.finditer(text, match.end()):
                if len(later["level"]) <= level:
                    end = later.start()
                    break
            return text[match.end() : end]
    raise AssertionError(f"no heading {title!r}")


def python_blocks(text: str) -> list[str]:
    return [m["code"] for m in FENCE.finditer(text) if m["lang"] == "python"]


def examples_to_run() -> list[pytest.ParameterSet]:
    out = []
    for page in doc_pages():
        for n, match in enumerate(TESTED.finditer(page.read_text(encoding="utf-8")), 1):
            out.append(pytest.param(page.name, match["code"], id=f"{page.name}-{n}"))
    return out


def slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def normalised(annotation: str) -> str:
    return ast.unparse(ast.parse(annotation, mode="eval").body)


def hookspec_functions() -> dict[str, Callable[..., object]]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
    }


def documented_function(block: str, name: str) -> ast.FunctionDef:
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"the code block does not define {name}()")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no subcommands")


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            out += action.option_strings
        elif action.metavar:
            out.append(str(action.metavar))
    return out


def documents(text: str, option: str) -> bool:
    """Whether *text* shows *option* in code, alone or with its value: `-n` or `-n NAME`."""
    return re.search(rf"`{re.escape(option)}[` ]", text) is not None


# -- pages and links --------------------------------------------------------------------------


def test_every_page_exists_and_is_linked_from_the_index() -> None:
    index = read("index.md")
    for page in (*PAGES[1:], "design-notes.md"):
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
        assert f"({page})" in index, f"docs/index.md does not link to {page}"


@pytest.mark.parametrize("page", [p.name for p in doc_pages()])
def test_relative_links_resolve(page: str) -> None:
    for match in LINK.finditer(read(page)):
        target = match["target"]
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = DOCS / path if path else DOCS / page
        assert linked.exists(), f"{page}: link to {target}: {linked} does not exist"
        if anchor:
            assert linked.suffix == ".md", f"{page}: anchor on a non-page: {target}"
            anchors = {slug(h["title"]) for h in HEADING.finditer(linked.read_text())}
            assert anchor in anchors, f"{page}: link to {target}: no such heading"


@pytest.mark.parametrize("page", [p.name for p in doc_pages()])
def test_python_blocks_are_valid_python(page: str) -> None:
    for block in python_blocks(read(page)):
        try:
            ast.parse(block)
        except SyntaxError as exc:
            pytest.fail(f"{page}: a python block does not parse: {exc}\n{block}")


# -- tested examples --------------------------------------------------------------------------


def test_there_is_a_tested_example() -> None:
    pages = {param.values[0] for param in examples_to_run()}
    assert "api.md" in pages, "docs/api.md has no block marked <!-- tested -->"


@pytest.mark.integration
@pytest.mark.parametrize(("page", "code"), examples_to_run())
def test_tested_example_runs(
    page: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # An example that forgets its own state dir must not write to /var/lib/snapcore.
    monkeypatch.setenv("SNAPCORE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SNAPCORE_DOMAINS_DIR", str(tmp_path / "domains"))
    exec(compile(code, f"docs/{page}", "exec"), {"__name__": "__docs_example__"})


# -- hooks ------------------------------------------------------------------------------------


def test_hookspecs_are_found() -> None:
    names = set(hookspec_functions())
    assert {"backend_info", "disk_snapshot_create", "domain_memory_restore"} <= names


@pytest.mark.parametrize("name", sorted(hookspec_functions()))
def test_hook_is_documented_with_its_signature(name: str) -> None:
    text = section(read("hooks.md"), name)
    blocks = python_blocks(text)
    assert blocks, f"hooks.md: section {name} has no python block with its signature"
    node = documented_function(blocks[0], name)
    signature = inspect.signature(hookspec_functions()[name])

    documented = [a.arg for a in node.args.args + node.args.kwonlyargs]
    assert documented == list(signature.parameters), (
        f"hooks.md documents {name}({', '.join(documented)}), "
        f"the spec is {name}({', '.join(signature.parameters)})"
    )
    for arg in node.args.args + node.args.kwonlyargs:
        param = signature.parameters[arg.arg]
        assert arg.annotation is not None, f"hooks.md: {name}: {arg.arg} has no type"
        assert ast.unparse(arg.annotation) == normalised(str(param.annotation)), (
            f"hooks.md: {name}: {arg.arg} is documented as {ast.unparse(arg.annotation)}, "
            f"the spec says {param.annotation}"
        )
    assert node.returns is not None, f"hooks.md: {name} has no return type"
    assert ast.unparse(node.returns) == normalised(str(signature.return_annotation)), (
        f"hooks.md: {name} returns {ast.unparse(node.returns)}, "
        f"the spec says {signature.return_annotation}"
    )


def test_hooks_md_documents_only_hooks() -> None:
    specs = set(hookspec_functions())
    for match in HEADING.finditer(read("hooks.md")):
        if len(match["level"]) == 3:
            assert match["title"] in specs, f"hooks.md: {match['title']!r} is not a hook"


def test_changelog_has_the_current_version_and_every_hook() -> None:
    text = read("hook-api-changelog.md")
    major, minor = hookspecs.HOOK_API_VERSION
    section(text, f"{major}.{minor}")
    for name in hookspec_functions():
        assert f"`{name}(" in text, f"hook-api-changelog.md never mentions the hook {name}"


# -- command line -----------------------------------------------------------------------------


def test_every_command_is_documented() -> None:
    documented = {
        m["title"].removeprefix("snapcore ")
        for m in HEADING.finditer(read("cli.md"))
        if len(m["level"]) == 3 and m["title"].startswith("snapcore ")
    }
    assert documented == set(cli.COMMANDS), (
        f"cli.md documents {sorted(documented)}; the commands are {sorted(cli.COMMANDS)}"
    )
    assert set(subcommands()) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_option_of_a_command_is_documented(command: str) -> None:
    text = section(read("cli.md"), f"snapcore {command}")
    for option in option_strings(subcommands()[command]):
        if option in ("-h", "--help"):
            continue
        assert documents(text, option), (
            f"cli.md: section 'snapcore {command}' does not document {option}"
        )


def test_global_options_are_documented() -> None:
    text = section(read("cli.md"), "Global options")
    for option in option_strings(cli.build_parser()):
        assert documents(text, option), f"cli.md: global option {option} is not documented"


def test_environment_variables_are_documented() -> None:
    text = section(read("cli.md"), "Environment variables")
    for variable in (
        "SNAPCORE_STATE_DIR",
        "SNAPCORE_DOMAINS_DIR",
        plugins.DISABLE_ENV,
        plugins.HOOK_TIMEOUT_ENV,
    ):
        assert f"`{variable}`" in text, f"cli.md does not document ${variable}"


def test_exit_codes_are_documented() -> None:
    text = section(read("cli.md"), "Exit codes")
    codes = {0} | {cls.exit_code for cls in _error_classes()}
    rows = {int(m[1]) for m in re.finditer(r"^\| (\d+) \|", text, re.MULTILINE)}
    assert codes <= rows, f"cli.md: exit codes {sorted(codes - rows)} are not in the table"


def _sample_view() -> model.CheckpointView:
    snapshot = model.DiskSnapshot(
        vdev="vda",
        path="/images/a.qcow2",
        driver="qcow2",
        kind=model.SnapshotKind.INTERNAL,
        name="c1",
        locator="/images/a.qcow2",
    )
    checkpoint = model.Checkpoint(
        name="c1",
        domain_uuid="00000000-0000-0000-0000-000000000000",
        creation_time=0,
        state=model.DomainState.SHUTOFF,
        disks=(snapshot,),
        memory=model.MemoryImage(path="/state/c1.img"),
    )
    return model.CheckpointView(checkpoint=checkpoint, current=True)


def _sample_plan() -> model.Plan:
    step = model.PlanStep(vdev="vda", driver="qcow2", action="create snapshot")
    return model.Plan(
        operation=model.Operation.CREATE,
        domain="web1",
        name="c1",
        state=model.DomainState.SHUTOFF,
        memory=False,
        steps=(step,),
    )


def _json_keys(value: object) -> set[str]:
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            keys.add(key)
            keys |= _json_keys(item)
    elif isinstance(value, list):
        for item in value:
            keys |= _json_keys(item)
    return keys


@pytest.mark.parametrize("sample", [_sample_view, _sample_plan], ids=["snapshot-list", "dry-run"])
def test_json_fields_are_documented(
    sample: Callable[[], model.CheckpointView | model.Plan],
) -> None:
    text = section(read("cli.md"), "JSON output")
    for key in sorted(_json_keys(sample().to_json())):
        assert f"`{key}`" in text or f'"{key}"' in text, (
            f"cli.md: JSON output does not document the field {key!r}"
        )


# -- library API and plugin guide -------------------------------------------------------------


def test_host_signature_is_documented() -> None:
    block = next(b for b in python_blocks(read("api.md")) if "class Host" in b)
    node = documented_function(block, "__init__")
    documented = [a.arg for a in node.args.args + node.args.kwonlyargs]
    assert documented == list(inspect.signature(api.Host.__init__).parameters)


def test_domain_handle_methods_are_documented() -> None:
    text = section(read("api.md"), "`DomainHandle`")
    public = [
        name
        for name, fn in vars(api.DomainHandle).items()
        if inspect.isfunction(fn) and not name.startswith("_")
    ]
    for name in public:
        assert f"`{name}(" in text, f"api.md: DomainHandle.{name} is not documented"


@pytest.mark.parametrize("cls", [model.CreateOptions, model.DiskChoice])
def test_option_fields_are_documented(cls: type) -> None:
    text = read("api.md")
    for field in dataclasses.fields(cls):
        assert re.search(rf"\b{field.name}\b", section(text, f"`{cls.__name__}`")), (
            f"api.md: {cls.__name__}.{field.name} is not documented"
        )


def test_backend_info_fields_are_documented() -> None:
    text = section(read("plugin-guide.md"), "Capabilities: `BackendInfo`")
    for field in dataclasses.fields(model.BackendInfo):
        assert f"| `{field.name}` |" in text, f"plugin-guide.md: BackendInfo.{field.name}"


def _error_classes() -> list[type[errors.SnapcoreError]]:
    return [
        cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type)
        and issubclass(cls, errors.SnapcoreError)
        and not name.startswith("_")
    ]


def test_error_classes_and_exit_codes_are_documented() -> None:
    text = section(read("api.md"), "Errors")
    documented: dict[str, int] = {}
    for row in re.finditer(r"^\|(?P<names>[^|]*)\| (?P<code>\d+) \|", text, re.MULTILINE):
        for name in re.findall(r"`(\w+Error)`", row["names"]):
            documented[name] = int(row["code"])
    bases = {"SnapcoreError", "SnapshotError", "CheckpointError"}
    for cls in _error_classes():
        if cls.__name__ in bases:
            continue
        assert cls.__name__ in documented, f"api.md: {cls.__name__} is not in the error table"
        assert documented[cls.__name__] == cls.exit_code, (
            f"api.md: {cls.__name__} is documented with exit code "
            f"{documented[cls.__name__]}, it has {cls.exit_code}"
        )


def test_hooks_md_is_generated_from_the_hookspecs() -> None:
    from snapcore import _hookdoc

    assert read("hooks.md") == _hookdoc.render(), (
        "docs/hooks.md differs from the hookspecs: run "
        "'.venv/bin/python -m snapcore._hookdoc > docs/hooks.md'"
    )


@pytest.mark.parametrize("page", ["plugin-guide.md", "hook-api-changelog.md", "index.md"])
def test_docs_name_the_current_hook_api_version(page: str) -> None:
    text = read(page)
    major, minor = hookspecs.HOOK_API_VERSION
    for found in re.findall(r"SNAPCORE_HOOK_API(?:: Final)? = \((\d+), (\d+)\)", text):
        assert found == (str(major), str(minor)), (
            f"{page} shows SNAPCORE_HOOK_API = {found}, the current version is {major}.{minor}"
        )
    for found in re.findall(r"hook API (\d+\.\d+)\)", text):
        assert found == f"{major}.{minor}", f"{page} says it is hook API {found}"


def test_example_plugin_declares_the_current_hook_api() -> None:
    source = (DOCS.parent / "examples/snapcore-rawcopy/snapcore_rawcopy/plugin.py").read_text()
    major, minor = hookspecs.HOOK_API_VERSION
    assert f"SNAPCORE_HOOK_API: Final = ({major}, {minor})" in source
