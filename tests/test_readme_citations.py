"""Every number in README.md and benchmarks/README.md comes from a stored result file (issue 14).

- every results path the READMEs cite exists (and a cited results JSON is readable);
- every results-table block equals its rendering from the file it names (`python -m benchmarks.readme_tables`);
- every paragraph or table that states a measurement (a number with a unit of time, memory, speed or a ratio)
  cites a results file — or is in a section of :data:`NOT_YET_BACKED`, the measured numbers that have no stored
  result yet, listed here so that the gap stays visible (each entry must still match, so a fixed one must go).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import harness, readme_tables

ROOT = Path(__file__).resolve().parents[1]
READMES = {"README.md": ROOT / "README.md", "benchmarks/README.md": ROOT / "benchmarks" / "README.md"}
CITATION = re.compile(r"(?:benchmarks/)?results/[\w./{},*-]+")
MEASUREMENT = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?(?:ms|µs|s|min|minutes|×|MiB|GiB|%|GFLOP/s|TFLOP/s|"
                         r"images/s|ns/row)(?![\w/])")
TABLE_NUMBER = re.compile(r"\|\s*\**\d[\d,]*\.\d+\**\*?\s*\|")
# (README, the first words of the paragraph or table row block): measured numbers with no stored results file yet
NOT_YET_BACKED = {
    ("README.md", "`python -m pytest -q` (or bare `pytest`) runs about"): "test-suite size and duration",
    ("README.md", "The setting was chosen on the seed-1 sweep"): "an earlier prior run (26 min, 0.765, 4.0×): not stored",
}


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, with whole results-table blocks kept as one."""
    text = re.sub(r"<!-- results-table .*?<!-- /results-table -->", lambda m: m.group(0).replace("\n\n", "\n"),
                  text, flags=re.S)
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _expand(path: str) -> list[str]:
    """Brace and glob forms as the READMEs write them: ``a.{md,json}``, ``ops_full.*``."""
    match = re.search(r"\{([^}]*)\}", path)
    if match:
        return [p for part in match.group(1).split(",")
                for p in _expand(path[: match.start()] + part + path[match.end():])]
    return [path]


def _resolve(readme: str, cited: str) -> list[Path]:
    cited = cited.rstrip(".,;:)")
    base = ROOT if cited.startswith("benchmarks/") else READMES[readme].parent
    found = []
    for path in _expand(cited):
        if "*" in path:
            matches = sorted(base.glob(path))
            assert matches, f"{readme}: {cited} matches no file"
            found += matches
        else:
            found.append(base / path)
    return found


@pytest.mark.parametrize("readme", sorted(READMES))
def test_every_cited_results_file_exists(readme):
    cited = CITATION.findall(READMES[readme].read_text())
    assert cited, f"{readme} cites no results file"
    for citation in cited:
        for path in _resolve(readme, citation):
            assert path.exists(), f"{readme} cites {citation}: {path.relative_to(ROOT)} does not exist"
            if path.suffix == ".json" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", path.parent.name):
                assert harness.read_results(path)["records"], path


@pytest.mark.parametrize("readme", sorted(READMES))
def test_every_results_table_is_rendered_from_its_file(readme):
    path = READMES[readme]
    assert readme_tables.stale(path) == [], "run: python -m benchmarks.readme_tables"
    for spec, body in readme_tables.blocks(path):
        source = spec.split()[-1]
        assert (ROOT / source).exists() and f"Source: [`{source}`]" in body


@pytest.mark.parametrize("readme", sorted(READMES))
def test_every_measurement_cites_a_results_file(readme):
    uncited, exempted = [], set()
    paragraphs = _paragraphs(READMES[readme].read_text())
    for i, paragraph in enumerate(paragraphs):
        if paragraph.startswith(("```", "#")) or "<!-- results-table" in paragraph:
            continue
        if not (MEASUREMENT.search(paragraph) or TABLE_NUMBER.search(paragraph)):
            continue
        # a table may be introduced by the (at most two) paragraphs before it, which then carry the citation
        context = paragraphs[max(0, i - 2): i] if paragraph.startswith("|") else []
        if CITATION.search(paragraph) or any(CITATION.search(p) and not p.startswith("#") for p in context):
            continue
        key = next((k for k in NOT_YET_BACKED if k[0] == readme and k[1] in paragraph), None)
        if key is not None:
            exempted.add(key)
            continue
        uncited.append(paragraph[:160])
    assert not uncited, f"{readme}: measurements without a cited results file:\n" + "\n---\n".join(uncited)
    stale = {k for k in NOT_YET_BACKED if k[0] == readme} - exempted
    assert not stale, f"NOT_YET_BACKED entries that match nothing any more (remove them): {stale}"


def test_the_checks_catch_what_they_must():
    assert MEASUREMENT.search("takes 3.7 s at batch 1") and MEASUREMENT.search("median ratio 16.5× in two runs")
    assert MEASUREMENT.search("measured 18–33 MiB at N") and not MEASUREMENT.search("K = 16,384, D = 64")
    assert TABLE_NUMBER.search("| 4 | 256 | 31.8 | 8.2 |") and not TABLE_NUMBER.search("| `FASTRQ_FAISS` | auto |")
    assert _expand("results/a.{md,json}") == ["results/a.md", "results/a.json"]
    text = "intro\n\n<!-- results-table x p -->\n| 1.5 |\n\nSource: [`p`](p).\n<!-- /results-table -->\n\nend"
    assert len(_paragraphs(text)) == 3
