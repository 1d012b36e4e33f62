"""docs/migrating-from-vector-quantize-pytorch.md cannot rot: every ```python block in it runs as written (each in a
fresh namespace, its asserts being the guide's claims), the guide names every vector-quantize-pytorch (VQP)
argument of the installed VQP's three classes and every VQP name the modules' error hints point to it for, and the
README links it."""

from __future__ import annotations

import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastrq.modules.quantizer import VQP_ARGUMENT_HINTS

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "migrating-from-vector-quantize-pytorch.md"
HAS_VQP = importlib.util.find_spec("vector_quantize_pytorch") is not None


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the block's first code line in the guide
    heading: str
    code: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"L{self.line}-{slug}"


def _python_blocks(text: str) -> list[Block]:
    blocks, heading, inside, start, lines = [], "", False, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if not inside and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif not inside and line.strip() == "```python":
            inside, start, lines = True, number + 1, []
        elif inside and line.strip() == "```":
            blocks.append(Block(start, heading, "\n".join(lines) + "\n"))
            inside = False
        elif inside:
            lines.append(line)
    assert not inside, "an unclosed ```python block in the guide"
    return blocks


def _names_in_code_spans(text: str) -> set[str]:
    """The identifiers that occur inside `code spans` of the guide's prose and tables."""
    return {name for span in re.findall(r"`([^`\n]+)`", text) for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}


BLOCKS = _python_blocks(GUIDE.read_text(encoding="utf-8"))
NAMES = _names_in_code_spans(GUIDE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
@pytest.mark.filterwarnings("ignore:fastrq. converted from vector-quantize-pytorch")  # the guide shows this warning
def test_guide_block_runs(block: Block):
    if "vector_quantize_pytorch" in block.code and not HAS_VQP:
        pytest.skip("this block compares with vector-quantize-pytorch, which comes with the bench extra")
    torch.manual_seed(0)
    # padded to its line in the guide, so that a failing assert's traceback points at the guide's own line
    code = compile("\n" * (block.line - 1) + block.code, str(GUIDE), "exec")
    exec(code, {"__name__": f"migration_guide_{block.line}"})


def test_the_guide_has_its_examples():
    headings = {block.heading for block in BLOCKS}
    for heading in ("Example: an audio codec", "Example: an image tokenizer", "The loss",
                    "Converting a trained VQP model", "Gradients: two measured differences"):
        assert heading in headings, f"no python block under '{heading}'"


def test_every_hinted_vqp_name_is_in_the_guide():
    """The modules' errors for VQP names say "See docs/migrating-from-vector-quantize-pytorch.md"."""
    missing = [name for name in VQP_ARGUMENT_HINTS if name not in NAMES]
    assert not missing, f"VQP names with a hint but not in the guide: {missing}"


@pytest.mark.skipif(not HAS_VQP, reason="vector-quantize-pytorch comes with the bench extra")
def test_every_vqp_argument_is_in_the_guide():
    """Every argument of the installed VQP's VectorQuantize / ResidualVQ / GroupedResidualVQ constructors and
    forwards is named in the guide (a newer VQP with new arguments fails here until the guide covers them)."""
    import vector_quantize_pytorch as vqp

    missing = {}
    for cls in (vqp.VectorQuantize, vqp.ResidualVQ, vqp.GroupedResidualVQ):
        for method in (cls.__init__, cls.forward):
            names = [
                p.name for p in inspect.signature(method).parameters.values()
                if p.name not in ("self", "x") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            ]
            absent = [name for name in names if name not in NAMES]
            if absent:
                missing[f"{cls.__name__}.{method.__name__}"] = absent
    assert not missing, f"VQP arguments the guide does not mention: {missing}"


def test_the_readme_links_the_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/migrating-from-vector-quantize-pytorch.md)" in readme
