"""Every module's ``__all__`` names what it really exports; packages declare theirs."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import iiotbed


def _modules() -> list[str]:
    names = ["iiotbed"]
    for info in pkgutil.walk_packages(iiotbed.__path__, "iiotbed."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_"):
            continue  # private modules (generated protobuf code, helpers) need no __all__
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_lists_real_public_names(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    assert all(not n.startswith("_") or n.startswith("__") for n in exported)


def test_version_is_exported() -> None:
    assert iiotbed.__version__.count(".") == 2
