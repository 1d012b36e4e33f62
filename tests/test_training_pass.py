"""The training pass (:mod:`fastrq.ops.training`): every backend against the float64 reference.

Codes are checked by distance (each level's code is near-optimal for the residual the earlier codes leave), and
every other output (quantized, per-level errors, commitment direction, counts, sums) must equal the reference walk
over the same codes. On small-integer data every distance is exact, so codes must match index for index (ties
included). Also: quantizer dropout (``num_active``), per-row levels (masks, per-sample dropout), per-level codebook
sizes, non-finite rows, and the native EMA step against the torch one.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrq
from fastrq.ops import codebook_state, reference, training
from tests.strategies import backend_env, seeds

VARIANTS = ["reference", "torch", "torch-native", "torch-pure", "torch-faiss", pytest.param("triton", marks=pytest.mark.triton)]


def _draw_problem(seed, n, d, k, levels, ragged, with_rows, integer):
    gen = torch.Generator().manual_seed(seed)
    if integer:
        x = torch.randint(-3, 4, (n, d), generator=gen).float()
        codebooks = torch.randint(-2, 3, (levels, k, d), generator=gen).float()
        codebooks[:, 3::3] = codebooks[:, :1]  # duplicate rows: exact ties between twins
    else:
        x = torch.randn(n, d, generator=gen)
        codebooks = torch.randn(levels, k, d, generator=gen) * 0.6 ** torch.arange(levels, dtype=torch.float32)[:, None, None]
    sizes = [k] * levels
    if ragged:
        sizes = [int(s) for s in torch.randint(1, k + 1, (levels,), generator=gen)]
        sizes[0] = k
    num_active = int(torch.randint(1, levels + 1, (), generator=gen))
    row_levels = torch.randint(0, levels + 1, (n,), generator=gen) if with_rows else None
    return x, codebooks, sizes, num_active, row_levels


def _check_against_reference(x, codebooks, sizes, num_active, row_levels, out, exact):
    quantized, codes, level_sqerr, commit_dir, counts, sums = out
    n, levels = x.shape[0], codebooks.shape[0]
    assert codes.shape == (n, levels) and codes.dtype == torch.int64
    assert torch.all(codes[:, num_active:] == -1)
    take = torch.full((n,), num_active) if row_levels is None else row_levels.clamp(max=num_active)
    expected_taken = torch.arange(levels)[None, :] < take[:, None]
    assert torch.equal(codes >= 0, expected_taken), "codes must be −1 exactly at the skipped (row, level) pairs"
    x64, cb64 = x.double(), codebooks.double()
    residual = x64.clone()
    for level in range(num_active):
        table = cb64[level, : sizes[level]]
        rows = expected_taken[:, level]
        if not rows.any():
            continue
        dist = (residual[rows, None, :] - table[None]).square().sum(-1)
        chosen = codes[rows, level]
        assert int(chosen.max()) < sizes[level], "a code beyond the level's size was chosen"
        picked = dist.gather(1, chosen[:, None])[:, 0]
        best = dist.min(1).values
        if exact:
            assert torch.equal(chosen, dist.argmin(1)), f"level {level}: smallest index among exact ties"
        else:
            scale = residual[rows].square().sum(1) + table.square().sum(1).max()
            assert torch.all(picked - best <= 2e-6 * scale + 1e-12), f"level {level}: a code is not near-optimal"
        residual[rows] -= table[chosen]
    expected = training.walk_given_codes(x64, cb64, codes, num_active, row_levels, "reference")  # the oracle's walk
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(quantized.double(), expected[0], **tol)
    torch.testing.assert_close(level_sqerr.double(), expected[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(commit_dir.double(), expected[3], **tol)
    torch.testing.assert_close(counts.double(), expected[4], rtol=0, atol=0)
    torch.testing.assert_close(sums.double(), expected[5], **tol)


@pytest.mark.parametrize("variant", VARIANTS)
@given(
    n=st.sampled_from([0, 1, 7, 65, 200]),
    d=st.sampled_from([1, 3, 4, 8, 17, 40]),
    k=st.sampled_from([1, 5, 16, 33]),
    levels=st.sampled_from([1, 2, 4]),
    ragged=st.booleans(),
    with_rows=st.booleans(),
    integer=st.booleans(),
    seed=seeds,
)
def test_training_pass_matches_the_reference(variant, n, d, k, levels, ragged, with_rows, integer, seed):
    if variant == "triton" and n * k * max(d, 16) > 65 * 33 * 64:
        n = min(n, 7)
    x, codebooks, sizes, num_active, row_levels = _draw_problem(seed, n, d, k, levels, ragged, with_rows, integer)
    with backend_env(variant) as backend:
        out = training.quantize_for_training(x, codebooks, sizes, num_active, row_levels, backend)
    _check_against_reference(x, codebooks, sizes, num_active, row_levels, out, exact=integer)


@pytest.mark.parametrize("variant", ["reference", "torch", "torch-native", "torch-pure", "torch-faiss"])
@pytest.mark.parametrize("period", [1, 3, 16, 17, 64])
def test_exact_ties_go_to_the_smallest_index(variant, period):
    """A codebook that repeats every ``period`` rows (period 16: twins in the same SIMD lane of the native kernel;
    period 1: every code equal): each row must get the first of its nearest twins."""
    gen = torch.Generator().manual_seed(period)
    base = torch.randn(period, 4, generator=gen)
    codebooks = base.repeat(200 // period + 1, 1)[:200][None]
    x = torch.cat([base, base + 0.01 * torch.randn(period, 4, generator=gen), torch.randn(30, 4, generator=gen)])
    with backend_env(variant) as backend:
        _, codes, *_ = training.quantize_for_training(x, codebooks, [200], 1, None, backend)
    expected = (x.double()[:, None, :] - codebooks[0].double()[None]).square().sum(-1).argmin(1)
    assert torch.equal(codes[:, 0], expected)
    assert int(codes.max()) < period


@pytest.mark.parametrize("variant", ["torch", "torch-native", "torch-pure", "torch-faiss"])
def test_nonfinite_rows_get_codes_in_range_and_poison_only_their_statistics(variant):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=gen)
    x[3, 1], x[7, 0] = float("nan"), float("inf")
    codebooks = torch.randn(2, 9, 4, generator=gen)
    with backend_env(variant) as backend:
        _, codes, level_sqerr, _, counts, _ = training.quantize_for_training(x, codebooks, [9, 5], 2, None, backend)
    assert int(codes.min()) >= 0 and int(codes[:, 0].max()) < 9 and int(codes[:, 1].max()) < 5
    assert not torch.isfinite(level_sqerr).all()  # the module reads this to skip or refuse the update
    assert float(counts.sum()) == 100.0


@given(levels=st.sampled_from([1, 3]), k=st.sampled_from([1, 6, 40]), d=st.sampled_from([1, 4, 9]),
       decay=st.sampled_from([0.0, 0.5, 0.99]), ragged=st.booleans(), seed=seeds)
def test_native_ema_step_equals_the_torch_one(levels, k, d, decay, ragged, seed):
    """codebook_update_ on the CPU updates float32 state in place with the native kernel; the torch formula
    (fastrq.ops.ema_step) must give the same state (up to one rounding of the fused multiply-adds)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [k] * levels if not ragged else [int(s) for s in torch.randint(1, k + 1, (levels,), generator=gen)]
    x = torch.randn(30, d, generator=gen)
    codebooks = torch.randn(levels, k, d, generator=gen)
    for level, size in enumerate(sizes):
        codebooks[level, size:] = 0.0
    cluster = torch.rand(levels, k, generator=gen) * torch.stack(
        [(torch.arange(k) < size).float() for size in sizes]
    )
    embed = codebooks * cluster[..., None]
    out = training.quantize_for_training(x, codebooks, sizes, levels, None, "torch")
    results = []
    for mode in ("1", "0"):
        state = [t.clone() for t in (codebooks, cluster, embed)] + [torch.tensor([7, 0])]
        with backend_env("torch-native" if mode == "1" else "torch-pure"):
            codebook_state.codebook_update_(
                state[0], state[1], state[2], state[3], x, out[1], out[4], out[5], True, levels, sizes,
                decay, 1e-5, 0.0, True, False,
            )
        results.append(state)
    for native, plain in zip(results[0][:3], results[1][:3]):
        torch.testing.assert_close(native, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", ["openmp", "python"])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("n", [1001, 9000])
def test_native_kernel_row_chunks_on_threads_match_one_call(monkeypatch, pool, threads, n):
    """Large calls split rows across threads (torch's OpenMP team inside the library, or a Python thread pool where
    it is built without OpenMP): the result must be bitwise the one-thread result. The statistics are summed over
    runs of rows that the shape alone fixes (one run at N = 1,001, four at 9,000), so they too; and they are the
    float64 walk's to rounding."""
    from fastrq.kernels.cpu import build, launch

    gen = torch.Generator().manual_seed(0)
    x, codebooks = torch.randn(n, 5, generator=gen), torch.randn(3, 40, 5, generator=gen)
    row_levels = torch.randint(0, 4, (n,), generator=gen)
    with backend_env("torch-native"):
        lib = build.library()
        assert lib.fastrq_statistics_chunks(n, 40) == (1 if n < 4096 else 4)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = launch.residual_pass(x, codebooks, [40, 30, 20], 3, row_levels, True)
        finally:
            torch.set_num_threads(before)
        if pool == "python":
            monkeypatch.setattr(lib, "fastrq_openmp", lambda: 0)
        elif not lib.fastrq_openmp():
            pytest.skip("the native library was built without OpenMP here (the compiler lacks -fopenmp)")
        monkeypatch.setattr(launch, "PAIRS_PER_THREAD", 64)
        monkeypatch.setattr(launch, "PYTHON_PAIRS_PER_THREAD", 64)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            split = launch.residual_pass(x, codebooks, [40, 30, 20], 3, row_levels, True)
        finally:
            torch.set_num_threads(before)
    for a, b in zip(one, split):
        assert torch.equal(a, b)
    _, codes, sqerr, _, counts, sums = one
    want = training.walk_given_codes(x.double(), codebooks.double(), codes, 3, row_levels, "reference")
    assert torch.equal(counts.double(), want[4])
    torch.testing.assert_close(sums.double(), want[5], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(sqerr.double(), want[2], rtol=1e-5, atol=0)

# Builds of rq_cpu.c whose search must agree bitwise with the default one: without AVX-512 (8 lanes, AVX2's running
# minimum), the 16-lane layout without AVX-512 (portable minimum and merge), without AVX2 either (portable forms
# of everything), and 4-row blocks.
SEARCH_LAYOUTS = {
    "no-avx512": ("-mno-avx512f",),
    "16-lanes": ("-mno-avx512f", "-DLANES=16"),
    "no-avx2": ("-mno-avx512f", "-mno-avx2"),
    "4-rows": ("-DROWS=4",),
}


@pytest.mark.parametrize("layout", SEARCH_LAYOUTS)
def test_every_search_layout_gives_the_default_outputs(layout):
    """rq_cpu.c scores 16 codes a vector with AVX-512 and 8 otherwise, keeps each lane's running minimum with
    AVX-512F or AVX2 instructions where the compiler targets them, else with portable vector code, and merges the
    lanes with AVX-512F or a scan: every build gives bitwise the default build's outputs, on exact ties (twins in
    the same and in other lanes, every code equal), ragged levels, skipped levels, rows holding NaN or inf, and
    random data, at the compiled widths and others, one pair of code blocks at a time (D ≥ 16) and in code tiles
    (D = 64, K = 600)."""
    from fastrq.kernels.cpu import build, launch

    with backend_env("torch-native"):
        default = build.library()
    portable, reason = build.load_built(build._compiler(), build.VARIANT_FLAGS + build.OPENMP_FLAGS + SEARCH_LAYOUTS[layout])
    assert portable is not None, reason
    if layout == "16-lanes":
        assert portable.fastrq_lanes() == 16
    elif layout == "4-rows":
        assert portable.fastrq_rows() == 4
    else:
        assert portable.fastrq_lanes() == 8
    gen = torch.Generator().manual_seed(0)
    cases = []
    # D = 64, K = 600: a tiled level (more than CODE_TILE_BYTES of transposed codes)
    for d, k, period in ((4, 200, 16), (4, 37, 1), (3, 64, 5), (8, 130, 17), (32, 48, 16), (13, 100, 3), (48, 90, 32),
                         (64, 600, 64)):
        base = torch.randint(-2, 3, (period, d), generator=gen).float()
        books = torch.stack([base.repeat(k // period + 1, 1)[:k], torch.randn(k, d, generator=gen)])
        x = torch.cat([torch.randint(-3, 4, (150, d), generator=gen).float(), torch.randn(60, d, generator=gen)])
        x[5, 0], x[9, d - 1] = float("nan"), float("inf")
        row_levels = torch.randint(0, 3, (x.shape[0],), generator=gen)
        cases.append((x, books, [k, max(1, k // 2)], row_levels))
    for x, books, sizes, row_levels in cases:
        with mock.patch.object(launch, "loaded_library", lambda: default):
            want = launch.residual_pass(x, books, sizes, 2, row_levels, True)
        with mock.patch.object(launch, "loaded_library", lambda: portable):
            got = launch.residual_pass(x, books, sizes, 2, row_levels, True)
        for a, b in zip(got, want):
            assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                         and torch.equal(a.nan_to_num(), b.nan_to_num()))
        # the integer rows that run level 0, but for the NaN / inf ones
        finite = torch.arange(150)[torch.isfinite(x[:150]).all(1) & (row_levels[:150] > 0)]
        dist = (x[finite, None].double() - books[0, None].double()).square().sum(-1)
        assert torch.equal(want[1][finite, 0], dist.argmin(1)), "exact ties: the smallest index"


@pytest.mark.parametrize("tile_codes", [32, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_code_tiles_give_the_untiled_result(monkeypatch, tile_codes, threads):
    """A level whose transposed codebook exceeds the tile is searched tile after tile for groups of row blocks: the
    outputs are bitwise the untiled ones (ties across tiles go to the earlier tile's code, NaN rows keep code 0,
    padding codes of a ragged level never win), at several widths, with skipped levels and rows past a group."""
    from fastrq.kernels.cpu import launch

    gen = torch.Generator().manual_seed(tile_codes + threads)
    for d, k, period in ((4, 200, 7), (16, 130, 40), (32, 97, 33), (64, 300, 64)):
        base = torch.randint(-2, 3, (period, d), generator=gen).float()
        books = torch.stack([base.repeat(k // period + 1, 1)[:k], torch.randn(k, d, generator=gen)])
        x = torch.cat([torch.randint(-3, 4, (300, d), generator=gen).float(), torch.randn(77, d, generator=gen)])
        x[5, 0], x[200, d - 1] = float("nan"), float("inf")
        row_levels = torch.randint(0, 3, (x.shape[0],), generator=gen)
        sizes = [k, k - 37]
        with backend_env("torch-native"):
            want = launch.residual_pass(x, books, sizes, 2, row_levels, True)
            with monkeypatch.context() as patch:
                patch.setattr(launch, "CODE_TILE_BYTES", 4 * d * tile_codes)
                patch.setattr(launch, "PAIRS_PER_THREAD", 64)
                assert launch._code_tile(d) == tile_codes
                before = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    got = launch.residual_pass(x, books, sizes, 2, row_levels, True)
                    codes, _ = launch.nearest_code(x, books[0].contiguous())
                finally:
                    torch.set_num_threads(before)
        for a, b in zip(got, want):
            assert torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan())
        assert torch.equal(codes, launch.nearest_code(x, books[0].contiguous())[0])
        assert int(want[1][5, 0]) == 0 or row_levels[5] == 0


@pytest.mark.parametrize("variant", ["torch", "torch-pure"])
@settings(max_examples=20)
@given(n=st.integers(1, 300), d=st.sampled_from([65, 72]), k=st.sampled_from([5, 16, 33]),
       levels=st.sampled_from([1, 3]), ragged=st.booleans(), seed=seeds)
def test_row_blocks_of_the_gemm_path_match_the_reference(variant, n, d, k, levels, ragged, seed):
    """D > 64 (the GEMM path: with the native library its walk runs natively, level by level) with the tiles shrunk
    so that one call crosses many row blocks, whose statistics and errors accumulate across blocks: exact on
    small-integer data."""
    from unittest import mock

    from fastrq.ops import torch_backend

    x, codebooks, sizes, num_active, _ = _draw_problem(seed, n, d, k, levels, ragged, False, True)
    with mock.patch.multiple(torch_backend, CODE_BLOCK=16, TILE_ELEMENTS=64 * 16), backend_env(variant) as backend:
        out = training.quantize_for_training(x, codebooks, sizes, num_active, None, backend)
        quantized, codes = fastrq.residual_quantize(x, codebooks, backend=backend)
    _check_against_reference(x, codebooks, sizes, num_active, None, out, exact=True)
    expected_quantized, expected_codes = reference.residual_quantize(x.double(), codebooks.double())
    assert torch.equal(codes, expected_codes) and torch.equal(quantized.double(), expected_quantized)


@pytest.mark.parametrize("variant", ["torch", "torch-native", "torch-pure"])
@pytest.mark.parametrize("d, k, levels", [(4, 16, 2), (40, 33, 2), (64, 256, 2), (72, 33, 2), (40, 600, 1)])
def test_a_float64_default_dtype_changes_nothing_for_float32_data(variant, d, k, levels):
    """``torch.set_default_dtype(torch.float64)`` (common in scientific code) must not reach the float32 paths'
    own buffers: the native kernels write float32 into them (a float64 buffer read back garbage statistics and an
    infinite codebook, found 2026-12-01). Same outputs as under the float32 default, module step included."""
    x = torch.randn(300, d, generator=torch.Generator().manual_seed(0))
    books = torch.randn(levels, k, d, generator=torch.Generator().manual_seed(1))

    def run():
        with backend_env(variant) as backend:
            out = training.quantize_for_training(x, books, [k] * levels, levels, None, backend)
            quantized, codes = fastrq.residual_quantize(x, books, backend=backend)
            nearest = fastrq.nearest_code(x, books[0], backend=backend)
        return [*out, quantized, codes, *nearest]

    want = run()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = run()
    finally:
        torch.set_default_dtype(previous)
    for a, b in zip(want, got):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_float64_default_dtype_leaves_a_float32_module_step_unchanged():
    """The module built under the float32 default, stepped once under each default: the same state after it."""
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))

    def step(default):
        torch.manual_seed(0)
        rq = fastrq.ResidualQuantizer(4, 16, 2).train()
        previous = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            quantized, codes, loss = rq(x)
        finally:
            torch.set_default_dtype(previous)
        return [quantized, codes, loss, *rq.state_dict().values()]

    for a, b in zip(step(torch.float32), step(torch.float64)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_gemm_path_walk_does_not_depend_on_the_thread_count():
    """The GEMM path's native walk splits its statistics by code and its row updates by rows over the threads
    (kernels/cpu/rq_cpu.c): the outputs are bitwise those of one thread, at a size that runs threaded, and within
    the float32 tolerance of the reference; a codebook where most rows share one code (one thread's share)
    included."""
    from fastrq.kernels.cpu import launch

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 72, generator=gen)
    if not launch.walk_available(x):
        pytest.skip("the native library does not build here (the tensor-op walk's reductions follow torch's threads)")
    books = torch.randn(2, 40, 72, generator=gen)
    books[1, 1:] += 50.0  # level 1: nearly every row takes code 0
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            with backend_env("torch") as backend:
                results.append(training.quantize_for_training(x, books, [40, 40], 2, None, backend))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)
    want = reference.quantize_for_training(x.double(), books.double(), [40, 40], 2, None)
    torch.testing.assert_close(results[0][1], want[1])
    for got, expected in zip(results[0][2:], want[2:]):
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-3)
