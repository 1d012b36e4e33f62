"""Issue 14's before / after report of the code's structure, from two git revisions (no checkout needed).

    python -m benchmarks.architecture_report [--before REV] [--after REV] [--out DIR]

Per revision: lines per Python file of the package (``fastrq/``, ``kernels/``, ``models/``) and of ``benchmarks/``
(the largest files, and a histogram), the longest functions (lines from ``def`` to the end of the body, by ``ast``),
and the package's internal import graph (edges between top-level subpackages / modules, cycles among modules).
Writes ``architecture.json`` / ``.md``. Test time is not measured here (it needs a run of the suite at each
revision); the note that cites this report gives it.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from collections import defaultdict
from pathlib import Path

from . import harness

ROOTS = ("fastrq/", "kernels/", "models/", "benchmarks/")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=harness.ROOT, capture_output=True, text=True, check=True).stdout


def _files(rev: str) -> dict[str, str]:
    names = [n for n in _git("ls-tree", "-r", "--name-only", rev).splitlines()
             if n.endswith(".py") and n.startswith(ROOTS)]
    return {n: _git("show", f"{rev}:{n}") for n in names}


def _module(path: str) -> str:
    """The installed module name of a repository path (kernels/ -> fastrq.kernels, models/ -> fastrq.models)."""
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts[0] in ("kernels", "models"):
        parts = ["fastrq", *parts]
    return ".".join(parts)


def _imports(module: str, tree: ast.AST, is_package: bool, modules: dict[str, str]) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                target = node.module
            else:
                continue
            # ``from package import module`` depends on that module (resolved by the caller), else on the target
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
    return {f for f in found if f.startswith("fastrq")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def analyse(rev: str) -> dict:
    files = _files(rev)
    lines = {n: len(text.splitlines()) for n, text in files.items()}
    functions, graph = [], defaultdict(set)
    modules = {_module(n): n for n in files if not n.startswith("benchmarks/")}
    for name, text in files.items():
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append({"file": name, "function": node.name, "lines": node.end_lineno - node.lineno + 1})
        if name.startswith("benchmarks/"):
            continue
        module = _module(name)
        for target in _imports(module, tree, name.endswith("__init__.py"), modules):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    package = {n: c for n, c in lines.items() if not n.startswith("benchmarks/")}

    def layer(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:3]) if parts[:2] in (["fastrq", "kernels"], ["fastrq", "models"]) else ".".join(parts[:2])

    edges = sorted({(layer(a), layer(b)) for a, targets in graph.items() for b in targets if layer(a) != layer(b)})
    return {
        "rev": _git("rev-parse", "--short", rev).strip(),
        "package_files": len(package), "package_lines": sum(package.values()),
        "largest_files": sorted(({"file": n, "lines": c} for n, c in lines.items()), key=lambda r: -r["lines"])[:12],
        "files_over_500_lines": sum(c > 500 for c in lines.values()),
        "longest_functions": sorted(functions, key=lambda r: -r["lines"])[:10],
        "functions_over_100_lines": sum(f["lines"] > 100 for f in functions),
        "layer_edges": [list(e) for e in edges],
        "module_cycles": _cycles(graph),
    }


def render(before: dict, after: dict) -> str:
    out = ["# Code structure before and after issue 14", "",
           f"Before: `{before['rev']}`; after: `{after['rev']}` (`python -m benchmarks.architecture_report`).", "",
           "| | before | after |", "|---|---:|---:|"]
    for key, label in (("package_files", "Python files in fastrq/, kernels/, models/"),
                       ("package_lines", "their lines"), ("files_over_500_lines", "files over 500 lines (with benchmarks/)"),
                       ("functions_over_100_lines", "functions over 100 lines (with benchmarks/)")):
        out.append(f"| {label} | {before[key]:,} | {after[key]:,} |")
    out.append(f"| module import cycles | {len(before['module_cycles'])} | {len(after['module_cycles'])} |")
    for title, key, cols in (("Largest files", "largest_files", ("file", "lines")),
                             ("Longest functions", "longest_functions", ("file", "function", "lines"))):
        for rev, doc in (("before", before), ("after", after)):
            out += ["", f"### {title}, {rev}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in doc[key]]
    for rev, doc in (("before", before), ("after", after)):
        out += ["", f"### Import edges between layers, {rev}", ""]
        out += [f"- `{a}` → `{b}`" for a, b in doc["layer_edges"]]
        out += ["", "Module cycles: " + ("none" if not doc["module_cycles"] else
                                          "; ".join(" ↔ ".join(c) for c in doc["module_cycles"]))]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.architecture_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="7baed6f~1", help="the revision before issue 14's first commit")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    before, after = analyse(args.before), analyse(args.after)
    import datetime

    folder = harness.results_dir(datetime.date.today().isoformat(), args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "architecture.json").write_text(json.dumps({"before": before, "after": after}, indent=1) + "\n")
    (folder / "architecture.md").write_text(render(before, after))
    print(render(before, after))


if __name__ == "__main__":
    main()
