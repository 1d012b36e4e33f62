"""The module-level import graph of fastrq, read from import statements with ``ast`` (nothing is executed): the
one implementation behind the layering test (``tests/test_architecture.py``) and the code-structure report
(:mod:`benchmarks.architecture_report`)."""

from __future__ import annotations

import ast
from typing import Collection, Mapping

__all__ = ["module_imports", "find_cycle"]


def module_imports(name: str, source: str, is_package: bool, modules: Collection[str]) -> set[str]:
    """The fastrq modules that module ``name`` (source text ``source``; ``is_package`` for an ``__init__``) imports,
    among ``modules``: ``from x import y`` counts as x.y when that is a module, else as x; a name that is not a
    module counts as its nearest enclosing module. Imports inside functions count too."""
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fastrq"):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("fastrq"):
                continue
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                add(candidate if candidate in modules else module)
    return found


def find_cycle(graph: Mapping[str, Collection[str]]) -> list[str] | None:
    """One import cycle ``[a, b, …, a]`` of ``graph`` (module → the modules it imports), or None; deterministic
    (modules and their imports visited in sorted order)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None
