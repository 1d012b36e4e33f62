"""Issue 14's before / after report of the code's structure, from two git revisions (no checkout needed).

    python -m benchmarks.architecture_report [--before REV] [--after REV] [--out DIR]

Per revision: lines per Python file of the package (``fastrq/``, ``kernels/``, ``models/``) and of ``benchmarks/``
(the largest files, and a histogram), the longest functions (lines from ``def`` to the end of the body, by ``ast``),
and the package's internal import graph (edges between top-level subpackages / modules, and an import cycle if there is one: the same reading of
the imports as ``tests/test_architecture.py``, :mod:`benchmarks.import_graph`).
Writes ``architecture.json`` / ``.md``. Test time is not measured here (it needs a run of the suite at each
revision); the note that cites this report gives it.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess

from . import harness
from .import_graph import find_cycle, module_imports

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


def analyse(rev: str) -> dict:
    files = _files(rev)
    lines = {n: len(text.splitlines()) for n, text in files.items()}
    functions, graph = [], {}
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
        graph[module] = module_imports(module, text, name.endswith("__init__.py"), modules)
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
        "import_cycle": find_cycle(graph),
    }


def render(before: dict, after: dict) -> str:
    out = ["# Code structure before and after issue 14", "",
           f"Before: `{before['rev']}`; after: `{after['rev']}` (`python -m benchmarks.architecture_report`).", "",
           "| | before | after |", "|---|---:|---:|"]
    for key, label in (("package_files", "Python files in fastrq/, kernels/, models/"),
                       ("package_lines", "their lines"), ("files_over_500_lines", "files over 500 lines (with benchmarks/)"),
                       ("functions_over_100_lines", "functions over 100 lines (with benchmarks/)")):
        out.append(f"| {label} | {before[key]:,} | {after[key]:,} |")
    cycle = lambda doc: "none" if doc["import_cycle"] is None else " → ".join(doc["import_cycle"])  # noqa: E731
    out.append(f"| an import cycle between modules | {cycle(before)} | {cycle(after)} |")
    for title, key, cols in (("Largest files", "largest_files", ("file", "lines")),
                             ("Longest functions", "longest_functions", ("file", "function", "lines"))):
        for rev, doc in (("before", before), ("after", after)):
            out += ["", f"### {title}, {rev}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in doc[key]]
    for rev, doc in (("before", before), ("after", after)):
        out += ["", f"### Import edges between layers, {rev}", ""]
        out += [f"- `{a}` → `{b}`" for a, b in doc["layer_edges"]]
        out += ["", "Import cycle: " + ("none" if doc["import_cycle"] is None else " → ".join(doc["import_cycle"]))]
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
