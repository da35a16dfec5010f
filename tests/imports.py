"""The import graph of the kit (kit/mlpipeline) and the project (src/myproject), read statically
(imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

KIT = ROOT / "kit"  # the kit's package, mlpipeline
SRC = ROOT / "src"  # the project's own package
ROOTS = (KIT, SRC)


def module_file(name: str) -> Path | None:
    """The file of module `name` under kit/ or src/, or None (a name from another package)."""
    for root in ROOTS:
        path = root.joinpath(*name.split("."))
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
    return None


def module_name(path: Path) -> str:
    root = next(r for r in ROOTS if path.is_relative_to(r))
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The modules `path` imports; for `from a import b` both `a` and `a.b`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def closure(name: str) -> set[Path]:
    """Every file of mlpipeline that importing `name` may run: its own, its packages'
    __init__ files, and what those import, transitively."""
    seen: set[Path] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the parent packages
        path = module_file(current)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += [n for n in imports(path) if n.split(".")[0] == "mlpipeline"]
    return seen


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, at top level or inside functions; a
    module's own parent packages are left out (Python has already started them)."""
    graph: dict[str, set[str]] = {}
    top = module_name(package)
    for path in sorted(package.rglob("*.py")):
        name = module_name(path)
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = (
            {
                module_name(found)
                for n in imports(path)
                if n.split(".")[0] == top and (found := module_file(n)) is not None
            }
            - ancestors
            - {name}
        )
    return graph


def import_cycles(package: Path) -> list[list[str]]:
    """One cycle (its modules, the first repeated at the end) per strongly connected group of
    `package`'s import graph."""
    graph = import_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while (member := stack.pop()) != node:
                group.add(member)
            groups.append(group | {node})

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, g) for g in groups if len(g) > 1]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    return sorted(group)
