"""Which code writes the model registry (``registry/two_tower.json``): a static call graph of the sources.

The functions and methods of ``recsys`` and ``plugins/recsys_airflow`` are nodes; a node refers to another
when its body (nested functions included) names it: a call, or a function passed on as a callback, through
module-level or function-local imports and re-exports. A node *writes* the registry when it calls a write
of the store (``write_*``, ``publish*``, ``delete*``, ``rename*``) with ``layout.REGISTRY`` as an argument,
or refers to a node that writes it. Over-approximate on purpose: a name that might be called counts.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"recsys": REPO_ROOT / "recsys", "recsys_airflow": REPO_ROOT / "plugins" / "recsys_airflow"}
REGISTRY_PATH = "recsys.storage.layout.REGISTRY"
WRITES = ("write", "publish", "delete", "rename")


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(module: str, is_package: bool, tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted target of every import anywhere in ``tree`` (function-local ones too)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            for a in node.names:
                aliases[a.asname or a.name] = f"{base}.{a.name}"
    return aliases


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


class CallGraph:
    """The nodes of ``recsys`` and ``recsys_airflow`` and the names each one refers to."""

    def __init__(self) -> None:
        self.aliases: dict[str, dict[str, str]] = {}  # module -> its imports
        self.bodies: dict[str, ast.AST] = {}  # qualified node name -> its definition
        self.classes: dict[str, str] = {}  # qualified node name -> its class's qualified name
        for package, root in PACKAGES.items():
            for path in sorted(root.rglob("*.py")):
                module = _module_name(package, root, path)
                tree = ast.parse(path.read_text(), str(path))
                self.aliases[module] = _imports(module, path.name == "__init__.py", tree)
                for node in tree.body:
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                        self.bodies[f"{module}.{node.name}"] = node
                    elif isinstance(node, ast.ClassDef):
                        for item in node.body:
                            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                                self.bodies[f"{module}.{node.name}.{item.name}"] = item
                                self.classes[f"{module}.{node.name}.{item.name}"] = f"{module}.{node.name}"

    def resolve(self, dotted: str) -> str:
        """Follow re-exports (``from recsys.x import f`` in a package's ``__init__``) to a node's name."""
        for _ in range(10):
            if dotted in self.bodies:
                return dotted
            parts = dotted.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                module, name = ".".join(parts[:cut]), parts[cut]
                if module in self.aliases and name in self.aliases[module]:
                    dotted = ".".join([self.aliases[module][name], *parts[cut + 1:]])
                    break
            else:
                return dotted
        return dotted

    def references(self, body: ast.AST, module: str, aliases: dict[str, str], cls: str | None = None) -> set[str]:
        """The qualified names ``body`` refers to (resolved; ``self.x`` as ``cls.x``)."""
        found = set()
        for node in ast.walk(body):
            if not isinstance(node, ast.Name | ast.Attribute):
                continue
            dotted = _dotted(node)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            if head == "self" and cls and rest:
                target = f"{cls}.{rest}"
            elif head in aliases:
                target = ".".join(filter(None, [aliases[head], rest]))
            elif f"{module}.{head}" in self.bodies or f"{module}.{dotted}" in self.bodies:
                target = f"{module}.{dotted}"
            else:
                continue
            found.add(self.resolve(target))
        return found

    def writes_directly(self, body: ast.AST, module: str, aliases: dict[str, str]) -> bool:
        for node in ast.walk(body):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith(
                WRITES
            ):
                args = [*node.args, *(k.value for k in node.keywords)]
                if any(REGISTRY_PATH in self.references(a, module, aliases) for a in args):
                    return True
        return False

    @functools.cache  # noqa: B019 - one graph per test session
    def writers(self) -> frozenset[str]:
        """Every node that writes the registry, directly or through the nodes it refers to."""
        edges, direct = {}, set()
        for name, body in self.bodies.items():
            module = name.rsplit(".", 2 if name in self.classes else 1)[0]
            edges[name] = self.references(body, module, self.aliases[module], self.classes.get(name))
            if self.writes_directly(body, module, self.aliases[module]):
                direct.add(name)
        result = set(direct)
        changed = True
        while changed:
            changed = False
            for name, targets in edges.items():
                if name not in result and targets & result:
                    result.add(name)
                    changed = True
        return frozenset(result)

    def writes(self, targets: Iterable[str]) -> set[str]:
        """The ``targets`` that write the registry."""
        return {t for t in targets if t in self.writers()}


def _qualified(obj: Any) -> str | None:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else None


def task_writes_registry(graph: CallGraph, task: Any) -> set[str]:
    """The registry-writing nodes an Airflow task reaches; empty if it never writes the registry.

    A Python task: its callable's body (function-local imports and the DAG module's globals resolved).
    A container fine-tune (``command``/``arguments`` ``["train", ...]``): the ``recsys`` CLI command it runs.
    Any other operator: the methods its class defines in ``recsys_airflow`` (``execute``, ``poke``).
    """
    from recsys import cli

    python_callable = getattr(task, "python_callable", None)
    if python_callable is not None:
        function = inspect.unwrap(python_callable)
        body = ast.parse(textwrap.dedent(inspect.getsource(function)))
        aliases = {name: q for name, value in function.__globals__.items() if (q := _qualified(value))}
        aliases |= _imports(function.__module__, False, body)
        return graph.writes(graph.references(body, function.__module__, aliases))
    command = getattr(task, "command", None) or getattr(task, "arguments", None)
    if command:
        return graph.writes({graph.resolve(_qualified(cli._COMMANDS[command[0]]) or "")})
    return graph.writes(
        {f"{cls.__module__}.{cls.__qualname__}.{m}" for cls in type(task).__mro__ for m in ("execute", "poke")
         if m in vars(cls)}
    )
