"""The layering of the installed package, read from its import statements (``ast``, nothing is executed).

kernel → launcher → op and dispatch (``fastrq.ops``) → registration / autograd (``fastrq.library``,
``fastrq.autograd``) → ``nn.Module`` (``fastrq.modules``) → models → CLI. Each rule below is one arrow that must not
point backwards; the last test checks that the module-level import graph has no cycle at all.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from benchmarks.import_graph import find_cycle, module_imports


def _package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not importable"
    return Path(next(iter(spec.submodule_search_locations)))


def _modules() -> dict[str, Path]:
    """Every module of the installed package ``fastrq`` (with ``fastrq.kernels`` and ``fastrq.models``)."""
    out: dict[str, Path] = {}
    for package in ("fastrq", "fastrq.kernels", "fastrq.models"):
        root = _package_root(package)
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "fastrq" and parts and parts[0] in ("kernels", "models"):
                continue  # only when the folders are installed inside fastrq/ (not the case with package_dir)
            out[name] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastrq modules that ``name`` imports (``from x import y`` counts as x.y when that is a module)."""
    return module_imports(name, path.read_text(encoding="utf-8"), _is_package(path), modules)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _outside(imports: set[str], allowed: tuple[str, ...]) -> set[str]:
    return {m for m in imports if not any(m == a or m.startswith(a + ".") for a in allowed)}


def test_ops_layer_imports_nothing_above_it(graph):
    for name, imports in graph.items():
        if name.startswith("fastrq.ops"):
            bad = _outside(imports, ("fastrq.ops", "fastrq.errors", "fastrq.kernels"))
            assert not bad, f"{name} (ops layer) imports {sorted(bad)} from a layer above it"


def test_registration_and_autograd_import_only_the_ops_layer(graph):
    for name in ("fastrq.library", "fastrq.autograd"):
        bad = _outside(graph[name], ("fastrq.ops", "fastrq.errors", "fastrq.library"))
        assert not bad, f"{name} imports {sorted(bad)}; it may import only fastrq.ops"


def test_modules_hold_only_nn_modules(graph):
    """``fastrq/modules/`` holds nn.Modules only: every top-level class there is an ``nn.Module`` subclass and
    every top-level function is private."""
    import importlib

    import torch

    modules = _modules()
    for name, path in modules.items():
        if not name.startswith("fastrq.modules"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        loaded = importlib.import_module(name)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                assert node.name.startswith("_"), f"{name}.{node.name}: functional math belongs in fastrq.ops"
            if isinstance(node, ast.ClassDef):
                assert issubclass(getattr(loaded, node.name), torch.nn.Module), f"{name}.{node.name} is not an nn.Module"
        allowed = ("fastrq.ops", "fastrq.errors", "fastrq.library", "fastrq.autograd", "fastrq.modules", "fastrq.interop")
        bad = _outside(graph[name], allowed)
        assert not bad, f"{name} imports {sorted(bad)}"


def test_interop_sits_below_the_modules(graph):
    """Converters receive the module class they build; they never import fastrq.modules (no cycle with the
    modules' ``from_*`` class methods)."""
    for name, imports in graph.items():
        if name.startswith("fastrq.interop"):
            bad = _outside(imports, ("fastrq.interop", "fastrq.errors", "fastrq.ops"))
            assert not bad, f"{name} imports {sorted(bad)}"


def test_kernels_import_only_the_ops_layer_of_fastrq(graph):
    for name, imports in graph.items():
        if name.startswith("fastrq.kernels"):
            bad = _outside(imports, ("fastrq.kernels", "fastrq.ops", "fastrq.errors"))
            assert not bad, f"{name} imports {sorted(bad)}"


# fastrq.models in three layers, each importing only the ones below it (and the library under them); above them
# all, the CLI. The command-line entry points kept for ``python -m fastrq.models.train`` (also under torchrun),
# ``python -m fastrq.models.generative_eval`` and ``python -m fastrq.models.classifier`` call the CLI and hold
# nothing else.
MODEL_LAYERS = ("fastrq.models.networks", "fastrq.models.training", "fastrq.models.study")
MODEL_ENTRY_POINTS = ("fastrq.models.train", "fastrq.models.generative_eval", "fastrq.models.classifier")


def _model_layer(name: str) -> int | None:
    for index, layer in enumerate(MODEL_LAYERS):
        if name == layer or name.startswith(layer + "."):
            return index
    return None


def test_models_layers_import_only_downwards(graph):
    for name, imports in graph.items():
        layer = _model_layer(name)
        if layer is None:
            continue
        allowed = ("fastrq.errors", "fastrq.ops", "fastrq.modules", "fastrq.library", "fastrq.autograd",
                   *MODEL_LAYERS[:layer + 1])
        bad = {m for m in _outside(imports, allowed) if m != "fastrq"}  # ``import fastrq``: the library's top level
        assert not bad, f"{name} ({MODEL_LAYERS[layer]}) imports {sorted(bad)} from a layer above it"
    for name in MODEL_ENTRY_POINTS:
        assert graph[name] == {"fastrq.cli"}, f"{name} is an entry point into fastrq.cli, it imports {graph[name]}"
    assert not any(m.startswith("fastrq.models") for m in graph["fastrq.models"] if _model_layer(m) != 0), \
        "importing fastrq.models must import only its networks"


def test_import_graph_has_no_cycle(graph):
    """Imports inside functions count too: a lazy import that dodges a cycle is still a cycle of the design."""
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)
