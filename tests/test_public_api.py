"""Meta-tests of the public API: ``snapcore.__all__`` is sorted, complete and documented."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import types

import pytest

import snapcore


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then the rest."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted() -> None:
    assert snapcore.__all__ == sorted(snapcore.__all__, key=isort_key)


def test_all_has_no_duplicates() -> None:
    assert len(snapcore.__all__) == len(set(snapcore.__all__))


@pytest.mark.parametrize("name", snapcore.__all__)
def test_every_name_in_all_exists(name: str) -> None:
    assert hasattr(snapcore, name)


def test_all_is_complete() -> None:
    public = {
        name
        for name, obj in vars(snapcore).items()
        if not name.startswith("_") and not isinstance(obj, types.ModuleType)
    }
    assert public <= set(snapcore.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from snapcore import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(snapcore.__all__)


def own_docstring(obj: object) -> str:
    """The docstring written for *obj*, not one Python made up or inherited."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    doc = (doc or "").strip()
    if (
        isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and doc.startswith(obj.__name__ + "(")
    ):
        return ""  # dataclass() writes "Name(field, ...)" when a class has no docstring
    return doc


PUBLIC_CALLABLES = [
    name
    for name in snapcore.__all__
    if inspect.isclass(getattr(snapcore, name)) or inspect.isfunction(getattr(snapcore, name))
]


def test_the_api_has_classes_to_check() -> None:
    assert len(PUBLIC_CALLABLES) >= 20


@pytest.mark.parametrize("name", PUBLIC_CALLABLES)
def test_every_public_class_and_function_has_a_docstring(name: str) -> None:
    assert own_docstring(getattr(snapcore, name))


def test_version_matches_the_installed_distribution() -> None:
    assert snapcore.__version__ == importlib.metadata.version("snapcore")


def test_hook_api_version_is_a_pair_of_ints() -> None:
    major, minor = snapcore.HOOK_API_VERSION
    assert isinstance(major, int)
    assert isinstance(minor, int)
