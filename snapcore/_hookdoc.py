"""Render ``docs/hooks.md`` from :mod:`snapcore.hookspecs`, its one source of truth.

``python -m snapcore._hookdoc > docs/hooks.md`` writes the page; ``tests/test_docs.py`` fails when
the page differs from what this renders, so a hook, an argument, a type or the API version
cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator

from snapcore import hookspecs, model

#: The models the hooks take and return, in the order the page lists them.
MODELS = (
    model.SnapshotRequest,
    model.Disk,
    model.DiskSnapshot,
    model.MemoryImage,
    model.BackendInfo,
    model.HypervisorInfo,
)

_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc):`~?([\w.]+)`")
_FIELD = re.compile(r"^:(param|returns|raises)\s*([\w., ]*):\s*(.*)$")
_VERSION = re.compile(r"^\.\. version(added|changed):: (\d+\.\d+)\s*(.*)$")


def hooks() -> dict[str, Callable[..., object]]:
    """Every hook spec, in the order of the module."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


def _inline(text: str) -> str:
    def role(match: re.Match[str]) -> str:
        name = match.group(1)
        short = name.rsplit(".", 1)[-1]
        if match.group(0).startswith(":func:") and short in hooks():
            return f"[`{short}`](#{short})"
        return f"`{short}`"

    text = _ROLE.sub(role, text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _paragraphs(doc: str) -> Iterator[list[str]]:
    block: list[str] = []
    for line in doc.splitlines():
        if not line.strip():
            if block:
                yield block
            block = []
        else:
            block.append(line)
    if block:
        yield block


def _markdown(doc: str) -> str:
    """A hook docstring (reST fields and roles) as markdown."""
    out: list[str] = []
    for block in _paragraphs(inspect.cleandoc(doc)):
        items: list[str] = []
        for line in block:
            field = _FIELD.match(line.strip())
            version = _VERSION.match(line.strip())
            if field:
                kind, name, rest = field.groups()
                if kind == "param":
                    items.append(f"- **{name.strip()}**: {rest}")
                elif kind == "returns":
                    items.append(f"- **Returns** {rest}")
                else:
                    items.append(f"- **Raises** `{name.strip()}`: {rest}")
            elif version:
                what, number, rest = version.groups()
                verb = "Added" if what == "added" else "Changed"
                tail = f": {rest}" if rest else "."
                items.append(f"- *{verb} in hook API {number}*{tail}")
            elif items:
                items[-1] += " " + line.strip()
            else:
                items.append(line.strip())
        if items and items[0].startswith("- "):
            out.append("\n".join(_inline(i) for i in items))
        else:
            out.append(_inline(" ".join(items)))
    return "\n\n".join(_wrap(p) for p in out)


def _wrap(paragraph: str, width: int = 100) -> str:
    lines: list[str] = []
    for item in paragraph.split("\n"):
        indent = "  " if item.startswith("- ") else ""
        current = ""
        for word in item.split(" "):
            if current and len(current) + 1 + len(word) > width:
                lines.append(current)
                current = indent + word
            else:
                current = f"{current} {word}" if current else word
        lines.append(current)
    return "\n".join(lines)


def _signature(name: str, fn: Callable[..., object], width: int = 100) -> str:
    """The spec's signature as a stub, wrapped the way ``ruff format`` wraps it."""
    sig = inspect.signature(fn)
    params = [f"{p.name}: {p.annotation}" for p in sig.parameters.values()]
    tail = f") -> {sig.return_annotation}: ..."
    line = f"def {name}({', '.join(params)}{tail}"
    if len(line) <= width:
        return line
    inner = "    " + ", ".join(params)
    if len(inner) <= width:
        return f"def {name}(\n{inner}\n{tail}"
    return f"def {name}(\n" + "".join(f"    {p},\n" for p in params) + tail


def _optional(fn: Callable[..., object]) -> bool:
    return any(p[0].startswith("Optional") for p in _paragraphs(inspect.cleandoc(fn.__doc__ or "")))


def _family(name: str) -> str:
    names = list(hooks())
    return "storage" if names.index(name) < names.index("hypervisor_info") else "hypervisor"


def _summary(fn: Callable[..., object]) -> str:
    first = next(_paragraphs(inspect.cleandoc(fn.__doc__ or "")))
    text = _inline(" ".join(line.strip() for line in first))
    return text.split(". ")[0].rstrip(".") + "."


def _model_line(cls: type) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "").splitlines()[0]
    fields = ", ".join(f"`{f.name}`" for f in dataclasses.fields(cls))
    return f"- `{cls.__name__}`: {_inline(doc.rstrip('.'))}. Fields: {fields}."


def render() -> str:
    """The whole of ``docs/hooks.md``."""
    major, minor = hookspecs.HOOK_API_VERSION
    specs = hooks()
    parts = [
        "# Hook reference",
        _wrap(
            f"Every hook of hook API {major}.{minor}, generated from `snapcore/hookspecs.py` "
            "(`python -m snapcore._hookdoc > docs/hooks.md`; a test fails when this page and the "
            "code differ). How to put hooks together into a plugin is in "
            "[the plugin guide](plugin-guide.md); what changed between versions is in "
            "[the hook API changelog](hook-api-changelog.md)."
        ),
        "## Rules for every hook",
        _markdown(hookspecs.__doc__ or "").split("\n\n", 1)[1],
        "| hook | family | required | what it does |\n|---|---|---|---|\n"
        + "\n".join(
            f"| [`{name}`](#{name}) | {_family(name)} | "
            f"{'optional' if _optional(fn) else 'yes'} | {_summary(fn)} |"
            for name, fn in specs.items()
        ),
    ]
    for family, title in (("storage", "Storage hooks"), ("hypervisor", "Hypervisor hooks")):
        parts.append(f"## {title}")
        for name, fn in specs.items():
            if _family(name) == family:
                parts.append(f"### {name}")
                parts.append(f"```python\n{_signature(name, fn)}\n```")
                parts.append(_markdown(fn.__doc__ or ""))
    parts.append("## Models the hooks use")
    parts.append("\n".join(_wrap(_model_line(cls)) for cls in MODELS))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
