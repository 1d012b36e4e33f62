"""The fused native kernel's certified bf16 first pass (rq_cpu.c, section 1b): every row it certifies has the
float32 kernel's code, and every row it cannot certify is searched again in float32, so every output is the
float32 kernel's bit for bit: codes, quantized, commitment direction, sqdist, the training statistics and the EMA
state. Checked on random, clustered, small-integer (exact ties), offset and near-tie data (codes closer to each
other than the bf16 error, which a plain bf16 search gets wrong), with non-finite and huge rows, ragged levels,
per-row levels and code tiles; and that the pass really ran (its counters), certified most rows of clustered data
and sent near-ties back to float32.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrq
from fastrq.kernels.cpu import launch
from fastrq.ops import certified, torch_backend

pytestmark = pytest.mark.skipif(
    not launch.bf16_search_available(),
    reason="the native library has no bf16 pass here (needs AVX512-BF16 and OpenMP)",
)

ON, OFF = {"FASTRQ_BF16_SEARCH": "1"}, {"FASTRQ_BF16_SEARCH": "0"}
KINDS = ("random", "clustered", "integers", "offset", "tiny-spread", "near-ties")


def _data(kind: str, n: int, d: int, k: int, levels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    books = (torch.rand(levels, k, d, generator=gen) * 2 - 1) * (3 / d) ** 0.5
    if kind == "random":
        x = torch.randn(n, d, generator=gen) / d ** 0.5
    elif kind == "clustered":
        x = books[0][torch.randint(0, k, (n,), generator=gen)] + 0.05 * torch.randn(n, d, generator=gen) / d ** 0.5
    elif kind == "integers":  # exact float32 scores, many exact ties: smallest index
        books = torch.randint(-2, 3, (levels, k, d), generator=gen).float()
        x = torch.randint(-2, 3, (n, d), generator=gen).float()
    elif kind == "offset":  # a common offset that the centring removes
        books = books + 1000.0
        x = 1000.0 + torch.randn(n, d, generator=gen) / d ** 0.5
    elif kind == "tiny-spread":  # codes within ~2^-10 of one centre: the centring leaves no bf16 difficulty
        centre = torch.randn(levels, 1, d, generator=gen)
        books = centre + 2.0**-10 * torch.randn(levels, k, d, generator=gen)
        x = centre[0] + torch.randn(n, d, generator=gen)
    else:  # near-ties: codes of one norm, rows near their centre: all codes nearly equidistant, the score gaps
        # (~1e-6) far below the bf16 rounding of the codes' norms (~2^-9)
        books = torch.nn.functional.normalize(torch.randn(levels, k, d, generator=gen), dim=-1)
        x = 1e-4 * torch.randn(n, d, generator=gen) / d ** 0.5
    return x.contiguous(), books.contiguous()


def _both(call):
    """call() with the bf16 pass off and on, and the pass's counters of the second run."""
    with mock.patch.dict(os.environ, OFF):
        want = call()
    certified.reset_search_stats()
    with mock.patch.dict(os.environ, ON):
        got = call()
    return want, got, certified.search_stats()


def _assert_same(want, got):
    for a, b in zip(want, got):
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                     and torch.equal(a.nan_to_num(), b.nan_to_num()))


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    n=st.sampled_from([1, 7, 8, 9, 130, 300]),
    d=st.sampled_from([1, 2, 3, 7, 16, 31, 32, 33, 64]),
    k=st.sampled_from([1, 2, 16, 17, 100, 256]),
    levels=st.integers(1, 3),
    ragged=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_training_pass_is_the_float32_result_bit_for_bit(kind, n, d, k, levels, ragged, seed):
    x, books = _data(kind, n, d, k, levels, seed)
    sizes = [max(1, k - 3 * level) for level in range(levels)] if ragged else [k] * levels
    for level, size in enumerate(sizes):
        books[level, size:] = 0.0
    call = lambda: torch_backend.quantize_for_training(x, books, sizes, levels)  # noqa: E731
    want, got, stats = _both(call)
    _assert_same(want, got)
    assert stats["native_rows"] == n * levels  # the bf16 pass searched every row at every level


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(KINDS), n=st.sampled_from([9, 200]), k=st.sampled_from([1100, 2100]),
       seed=st.integers(0, 2**31 - 1))
def test_code_tiles_keep_the_float32_result(kind, n, k, seed):
    """At D = 32 a tile holds 1,024 codes: best and second best are merged over tiles (ties across them too)."""
    x, books = _data(kind, n, 32, k, 1, seed)
    if kind == "random":
        books[0, k - 1] = books[0, 5]  # a twin in another tile: never certified, the smaller index wins
        x[0] = books[0, 5]
    want, got, _ = _both(lambda: fastrq.nearest_code(x, books[0], backend="torch"))
    _assert_same(want, got)


def test_a_near_twin_in_a_later_tile_is_not_overlooked():
    """Row i lies near code i (first tile) and a little nearer its twin, code 1,024 + i (second tile), closer than
    the bf16 error: the second tile's score must enter the row's second best, or the first tile's code would be
    certified where the float32 kernel picks the twin."""
    gen = torch.Generator().manual_seed(9)
    books = torch.nn.functional.normalize(torch.randn(1100, 32, generator=gen), dim=-1)
    step = 1e-3 * torch.nn.functional.normalize(torch.randn(64, 32, generator=gen), dim=-1)
    books[1024:1088] = books[:64] + 1.5 * step
    x = books[:64] + step
    want, got, stats = _both(lambda: fastrq.nearest_code(x, books, backend="torch"))
    _assert_same(want, got)
    assert (want[0] >= 1024).float().mean() > 0.5 and stats["native_researched_rows"] > 0


def test_non_finite_and_huge_rows_are_searched_in_float32():
    x, books = _data("random", 64, 40, 50, 2, 3)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    x[3] = 2.0**50  # norms over the bf16 pass's magnitude limit
    x[4] = 0.0
    want, got, stats = _both(lambda: torch_backend.quantize_for_training(x, books, [books.shape[1]] * 2, 2))
    _assert_same(want, got)
    assert stats["native_researched_rows"] >= 3 * 2


def test_a_non_finite_codebook_keeps_the_float32_search():
    x, books = _data("random", 40, 32, 30, 2, 4)
    books[1, 7, 2] = float("inf")
    want, got, stats = _both(lambda: torch_backend.quantize_for_training(x, books, [books.shape[1]] * 2, 2))
    _assert_same(want, got)
    assert stats["native_rows"] == 40  # level 0 only: level 1's codes are not usable


def test_per_row_levels_and_skipped_levels():
    x, books = _data("clustered", 100, 48, 64, 3, 5)
    row_levels = torch.randint(0, 4, (100,), generator=torch.Generator().manual_seed(1))
    want, got, stats = _both(lambda: torch_backend.quantize_for_training(x, books, [64] * 3, 2, row_levels))
    _assert_same(want, got)
    assert stats["native_rows"] == int(row_levels.clamp(max=2).sum())


def test_clustered_rows_are_certified_and_near_ties_searched_again():
    """The pass is not vacuous: on clustered data it decides almost every row alone; on near-tie data (codes
    closer than its error) it sends nearly every row back to float32, and the codes are still the float32 ones
    (a plain bf16 argmin differs there)."""
    x, books = _data("clustered", 2000, 64, 256, 1, 6)
    _, _, stats = _both(lambda: fastrq.nearest_code(x, books[0], backend="torch"))
    assert stats["native_rows"] == 2000 and stats["native_research_rate"] < 0.05
    x, books = _data("near-ties", 2000, 64, 256, 1, 7)
    want, got, stats = _both(lambda: fastrq.nearest_code(x, books[0], backend="torch"))
    _assert_same(want, got)
    assert stats["native_research_rate"] > 0.9
    plain_bf16 = torch.cdist(x.bfloat16().float(), books[0].bfloat16().float()).argmin(dim=1)
    assert not torch.equal(plain_bf16, want[0])


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(("random", "clustered", "near-ties")), levels=st.integers(1, 3),
       threshold=st.sampled_from([0.0, 2.0]), seed=st.integers(0, 2**31 - 1))
def test_module_training_steps_give_the_float32_state(kind, levels, threshold, seed):
    """Four training steps of an EMA quantizer (the fused native step) with and without the pass: outputs, input
    gradients and the whole state bitwise equal."""
    x, _ = _data(kind, 256, 32, 64, levels, seed)
    results = []
    for env in (OFF, ON):
        torch.manual_seed(seed % 1000)
        module = fastrq.ResidualQuantizer(32, 64, levels, dead_code_threshold=threshold).train()
        outs = []
        with mock.patch.dict(os.environ, env):
            for step in range(4):
                leaf = (x * (1 + 0.1 * step)).requires_grad_()
                quantized, codes, loss = module(leaf)
                (quantized.square().sum() + loss).backward()
                outs += [quantized.detach(), codes, loss.detach(), leaf.grad]
        results.append((outs, module.state_dict()))
    (want, want_state), (got, got_state) = results
    _assert_same(want, got)
    for key in want_state:
        assert torch.equal(want_state[key], got_state[key]), key


def test_auto_mode_takes_the_pass_from_its_width_and_size_and_zero_turns_it_off():
    dim = certified.NATIVE_MIN_DIM
    codes = certified.NATIVE_MIN_CODE_WIDTH // dim
    rows = certified.NATIVE_MIN_PAIRS // codes
    wide = _data("clustered", rows, dim, codes, 1, 8)
    narrow = _data("clustered", rows, dim - 1, codes + 32, 1, 8)  # below the width, with as many code entries
    small = _data("clustered", rows - 1, dim, codes, 1, 8)  # one row short of the pairs
    few = _data("clustered", 2 * rows, dim, codes // 2, 1, 8)  # as many pairs, half the code entries
    for (x, books), expected in ((wide, rows), (narrow, 0), (small, 0), (few, 0)):
        certified.reset_search_stats()
        with mock.patch.dict(os.environ, {"FASTRQ_BF16_SEARCH": "auto"}):
            fastrq.nearest_code(x, books[0], backend="torch")
        assert certified.search_stats()["native_rows"] == expected
    x, books = wide
    certified.reset_search_stats()
    with mock.patch.dict(os.environ, OFF):
        fastrq.nearest_code(x, books[0], backend="torch")
    assert certified.search_stats()["native_rows"] == 0


def test_auto_mode_declines_a_codebook_of_twins(monkeypatch):
    """auto mode: a codebook whose codes come in identical pairs (every row's best code has a twin: an exact tie,
    never certified) sends every row back to float32; the codebook's history then skips the pass for 1, 2, 4 …
    calls (the float32 search, the same outputs), an in-place change keeps the history, another codebook is
    unaffected, and mode 1 always runs the pass."""
    monkeypatch.setattr(certified, "NATIVE_MIN_PAIRS", 0)  # auto mode at this small size too
    monkeypatch.setattr(certified, "NATIVE_MIN_CODE_WIDTH", 0)
    x, books = _data("clustered", 512, 64, 64, 1, 11)
    twins = books[0].clone()
    twins[32:] = twins[:32]
    want, got, stats = _both(lambda: fastrq.nearest_code(x, twins, backend="torch"))
    _assert_same(want, got)
    assert stats["native_research_rate"] == 1.0  # mode 1: the pass ran and certified no row
    ran = []
    certified.reset_search_stats()
    with mock.patch.dict(os.environ, {"FASTRQ_BF16_SEARCH": "auto"}):
        for call in range(8):
            if call == 4:
                twins[63, 0] += 0.5  # in place (a code no row is near): the same buffer, the same history
            with mock.patch.dict(os.environ, OFF):
                want = fastrq.nearest_code(x, twins, backend="torch")
            before = certified.search_stats()["native_rows"]
            _assert_same(want, fastrq.nearest_code(x, twins, backend="torch"))
            if certified.search_stats()["native_rows"] > before:
                ran.append(call)
        assert ran == [0, 2, 5], ran  # ran, skipped 1, ran, skipped 2 (across the change), ran, skipped 4 …
        assert certified.search_stats()["declined_calls"] == 5
        certified.reset_search_stats()
        fastrq.nearest_code(x, books[0], backend="torch")  # another codebook: its own (empty) history
        assert certified.search_stats()["native_rows"] == 512 and certified.search_stats()["declined_calls"] == 0
    certified.reset_search_stats()
    with mock.patch.dict(os.environ, ON):
        fastrq.nearest_code(x, twins, backend="torch")  # mode 1, while auto mode would still skip
    assert certified.search_stats()["native_rows"] == 512
