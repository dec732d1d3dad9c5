"""The core (``snapcore/``) knows no hypervisor: QEMU and QMP live in the qemu plugin, which
offers the monitor to storage plugins through ``domain_service``. Checked on the source (every
import statement of every module of the package) and on a fresh interpreter (what importing
the public API pulls in)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "snapcore"
#: Modules that are QEMU-specific, and the words that would say the core knows QEMU's types.
FORBIDDEN_MODULES = ("qemu", "snapcore_qemu", "snapcore.qmp", "snapcore_qcow2")
FORBIDDEN_NAMES = ("QMPSession", "QMPCommandError", "QemuSettings")


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in CORE.glob("*.py")))
def test_core_module_imports_nothing_qemu_specific(module: str) -> None:
    path = CORE / module
    for name in _imports(path):
        top = name.split(".")
        assert not any(
            name == bad or name.startswith(bad + ".") or top[0] == bad for bad in FORBIDDEN_MODULES
        ), f"snapcore/{module} imports {name}"
    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & set(FORBIDDEN_NAMES), (
        f"snapcore/{module} uses {names & set(FORBIDDEN_NAMES)}"
    )


def test_the_core_has_no_qmp_module() -> None:
    assert not (CORE / "qmp.py").exists()


def test_importing_the_core_loads_no_qemu_module() -> None:
    code = (
        "import sys, snapcore, snapcore.api, snapcore.coordinator, snapcore.cli, snapcore.plugins;"
        "print(sorted(m for m in sys.modules if 'qemu' in m or 'qmp' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
