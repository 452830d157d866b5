"""recsys.errors: one base class of every domain exception, in a leaf module."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import recsys
from recsys.errors import DOMAIN_ERRORS, RecsysError


def _exception_classes(package: object) -> list[type[BaseException]]:
    """Every exception class defined (not just imported) in any module of ``package``."""
    found = []
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):  # type: ignore[attr-defined]
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def _non_domain(classes: list[type[BaseException]]) -> list[str]:
    return [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, RecsysError)]


def test_every_exception_class_in_recsys_derives_from_the_base():
    classes = _exception_classes(recsys)
    assert len(classes) >= 15  # the walk really found the package's exceptions
    assert _non_domain(classes) == []


def test_the_walk_reports_an_exception_outside_the_hierarchy(tmp_path, monkeypatch):
    """The check above can fail: a package with a plain RuntimeError subclass is reported."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(
        "from recsys.errors import RecsysError\n"
        "class Good(RecsysError, ValueError): pass\n"
        "class Stray(RuntimeError): pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = importlib.import_module("fakepkg")
    assert _non_domain(_exception_classes(fake)) == ["fakepkg.mod.Stray"]


def test_the_errors_module_is_a_leaf():
    tree = ast.parse(Path(inspect.getfile(importlib.import_module("recsys.errors"))).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert [m for m in imported if m and m.split(".")[0] == "recsys"] == []


def test_domain_errors_is_the_base_class():
    assert DOMAIN_ERRORS is RecsysError


@pytest.mark.parametrize("plain", [KeyError, TypeError, ValueError, RuntimeError])
def test_plain_programming_errors_are_not_domain_errors(plain):
    assert not issubclass(plain, DOMAIN_ERRORS)
