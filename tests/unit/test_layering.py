"""Imports inside recsys/ point down only, in the layer order of DESIGN.md (lowest first)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import recsys

PACKAGE = Path(recsys.__file__).resolve().parent

# DESIGN.md, "Layout": inside recsys/, imports point down only, in this order (lowest first). A layer may hold
# more than one top-level module or package: modules of one layer may import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "progress", "arrays"),  # leaves: import nothing from recsys
    ("schema",), ("config",), ("storage",), ("registry",), ("notify",),
    ("datasets", "streaming"),  # adapters that publish raw partitions (bundled data, simulator, Kafka sink)
    ("features",), ("validation",),
    ("spark",),  # the Spark engine of the validate and features steps (RECSYS_COMPUTE=spark)
    ("model",), ("training", "training_distributed"),
    ("ranking",),  # the second stage (issue 19): reads features, is given a retrieval scorer; serving may use it
    ("serving",), ("evaluation",), ("report",),
    ("retrain",), ("cli",),
]
_LAYER = {name: n for n, names in enumerate(LAYERS) for name in names}


def layer_of(module: str) -> int | None:
    """The layer of a dotted ``recsys`` module name: its first component below ``recsys``.

    ``recsys`` itself (the package ``__init__``: sets environment variables, imports nothing) is below every
    layer (-1). None: not a recsys module.
    """
    parts = module.split(".")
    if parts[0] != "recsys":
        return None
    if len(parts) == 1:
        return -1
    if parts[1] not in _LAYER:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to DESIGN.md's order)")
    return _LAYER[parts[1]]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``source``, at any depth (function-level ones too).

    ``from recsys import registry`` counts as an import of ``recsys.registry``; relative imports are
    resolved against ``module``.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            if base == "recsys":  # from recsys import registry, schema
                found += [(node.lineno, f"recsys.{alias.name}") for alias in node.names]
    return found


def upward_imports(path: Path, source: str) -> list[str]:
    module = module_name(path)
    own = layer_of(module)
    assert own is not None
    bad = []
    for line, name in imported_modules(source, module, path.name == "__init__.py"):
        target = layer_of(name)
        if target is not None and target > own:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}, a higher layer")
    return bad


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    for path in _modules():
        assert layer_of(module_name(path)) is not None


def test_the_leaves_import_nothing_from_recsys():
    for name in LAYERS[0]:
        path = PACKAGE / f"{name}.py"
        imported = [m for _, m in imported_modules(path.read_text(), f"recsys.{name}", False)]
        assert [m for m in imported if m.split(".")[0] == "recsys"] == []


def test_no_module_imports_from_a_higher_layer():
    problems = [p for path in _modules() for p in upward_imports(path, path.read_text(encoding="utf-8"))]
    assert problems == []


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("features/build.py", "from recsys.validation.partition import read_partition\n"),
        ("model/export.py", "def f():\n    from recsys.serving.index import Scorer\n"),  # function level
        ("storage/base.py", "from recsys import registry\n"),
        ("errors.py", "import recsys.config\n"),
        ("serving/index.py", "from ..retrain import retrain\n"),  # relative
    ],
)
def test_an_upward_import_is_reported(relative, source):
    assert len(upward_imports(PACKAGE / relative, source)) == 1


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("features/build.py", "from recsys.storage.raw import read_partition\nfrom recsys import schema\n"),
        ("serving/export.py", "from recsys.serving.index import Scorer\n"),  # same layer
        ("cli.py", "from recsys.retrain import retrain\nimport pandas\n"),
        ("storage/__init__.py", "from .base import PartitionStore\n"),
    ],
)
def test_downward_and_same_layer_imports_are_fine(relative, source):
    assert upward_imports(PACKAGE / relative, source) == []


def import_graph() -> dict[str, set[str]]:
    """Module -> the recsys modules it imports (at any depth), package faces (``__init__``) left out.

    ``from recsys.storage import layout`` is an import of the module ``recsys.storage.layout`` where that is a
    module; a package's ``__init__`` only re-exports its modules, so an edge to it is an edge to nothing.
    """
    modules = {module_name(p): p for p in _modules() if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports directly or through others."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo += graph.get(v, ())
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other (directly or through others), each sorted."""
    reach = {v: reachable(graph, v) for v in graph}
    groups = {frozenset({v} | {w for w in reach[v] if v in reach.get(w, ())}) for v in graph if v in reach[v]}
    return sorted(sorted(g) for g in groups)


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
