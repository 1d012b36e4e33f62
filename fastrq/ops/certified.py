"""Certified-exact mixed-precision nearest-code search for the torch backend on the CPU: a bfloat16 first pass over
every code, an error bound that proves which codes can still be the float32 answer, and an exact float32 re-score
of those few. Pure PyTorch (no triton import).

The problem (one level, centred as in :mod:`fastrq.ops.torch_backend`): a = x − μ (a float32 row [D]),
b_k = e_k − μ (float32 codes [K, D]), h_k = fl32(½‖b_k‖²) (the half norms the float32 path uses), and the score of
the float32 contract

    s_k = h_k − a·b_k        (exact real arithmetic on those float32 numbers),
    r_k = fl32(h_k − fl32(a·b_k))   the float32 score as the exact re-score computes it (any summation order).

**The answer** is c = min{k : r_k = min_j r_j}: the first float32 argmin over *all* K codes. It is what the float32
path returns wherever its arithmetic is exact (small integers: exact ties go to the smallest index), and within
the float32 tolerance of the true nearest code elsewhere, exactly like the float32 path.

**First pass.** One bf16 GEMM with float32 accumulation per tile, on operands augmented by four columns

    â' = (bf16(a), 1, 1, ĉ, 0),    b̂'_k = (−bf16(b_k), hi(h_k), lo(h_k), 1, 0),

with hi(h) = bf16(h), lo(h) = bf16(h − hi(h)) and ĉ = bf16(½‖a‖²) (any per-row constant would do: it only makes
the output ≈ ½‖a − b_k‖² ≥ 0, so that bf16 bit patterns read as int16 sort like the values, and small near the
minimum, where the output rounding is then small). The GEMM returns d̃_k = bf16(y_k), y_k the float32 accumulation
of ĉ + hi + lo − Σ_d â_d b̂_kd, an approximation of ĉ + s_k.

**The bound** (the one proved here and checked by ``tests/test_certified.py``). With u = u_o = 2⁻⁸ (bf16 unit roundoff;
u_o that of the output conversion, to nearest as probed), γ_n = n·2⁻²⁴ / (1 − n·2⁻²⁴) (float32
accumulation of n terms in any order), η = 2⁻¹²⁶ (the smallest normal: the most a flushed subnormal can lose),
α = bf16(a) − a and β_k = bf16(b_k) − b_k (computed exactly), for every code k:

    |d̃_k − (ĉ + s_k)| ≤ u_o·|d̃_k| + E,
    E = ‖a‖·β* + ‖α‖·b̂* + λ + γ_{D+4}·(ĉ + 2H + (‖a‖ + ‖α‖)·b̂*) + η·(√D·(‖a‖ + ‖α‖ + b̂* + 2) + 4D + 16),

where β* = max_k ‖β_k‖, b̂* = max_k ‖bf16(b_k)‖, H = max_k h_k, λ = max_k |h_k − hi(h_k) − lo(h_k)| (≤ u²·H)
are per codebook and ‖a‖, ‖α‖ per row (upper bounds of the float32-computed norms). Proof: the exact products of
the rounded operands differ from the target by h − hi − lo (≤ λ) plus Σ_d (â_d b̂_d − a_d b_d) = a·β + α·b̂, and
by Cauchy–Schwarz |a·β_k| ≤ ‖a‖‖β_k‖, |α·b̂_k| ≤ ‖α‖‖b̂_k‖. Products of two bf16 numbers are exact in float32
(8 + 8 significant bits ≤ 24) unless they underflow (≤ η each); float32 summation of the D + 4 products in any order
errs by at most γ_{D+4}·Σ|p| (+η per flushed partial sum), Σ|p| ≤ ĉ + 2H + ‖bf16(a)‖·b̂*, ‖bf16(a)‖ ≤ ‖a‖ + ‖α‖; the
output conversion errs by at most u_o·|d̃| (+η); a kernel that treats subnormal inputs as zero changes each operand
entry by less than η, which the η·√D·(…) term covers. The float32 re-score obeys |r_k − s_k| ≤ F with
F = γ_{D+1}·(H + ‖a‖·b*) + (D + 2)·η (b* = max_k ‖b_k‖). Nothing here depends on the data's distribution.

**Candidates.** Let j be the code of the row's smallest bf16 output, v = d̃_j. Then r_min ≤ r_j ≤ v + u_o|v| + E + F
− ĉ, and r_k ≥ d̃_k − u_o|d̃_k| − E − F − ĉ for every k. Since d ↦ d − u_o|d| is increasing, every k with
d̃_k > T, T = f⁻¹(v + u_o|v| + 2(E + F)) (f(d) = d − u_o|d|), has r_k > r_min and can be neither the argmin nor
tied with it. The candidates {k : d̃_k ≤ T} therefore hold every float32 argmin; a row with one candidate is decided
by the bf16 pass alone; a row with 2 … ``MAX_CANDIDATES`` gets its candidates re-scored exactly in float32 (same
formula, smallest index among exact ties); a row with more, or whose norms are not finite or exceed
``MAGNITUDE_LIMIT`` (so no partial sum can overflow), is searched again by the exact float32 path. T is taken ≥ 0,
computed in float64 and rounded up to a bf16 value, so that comparing int16 bit patterns is exact.

**Cheap candidate extraction.** Per code tile (``CODE_TILE`` codes, a multiple of ``GROUPS``): the GEMM writes bf16
outputs into a stored row block [R, K]; their int16 view (whose order matches the values' for non-negative ones;
negative outputs, which only rounding can produce, are always candidates and sort below every non-negative one)
is reduced over the middle axis of a [R, kb/G, G] view into G strided group minima (a vectorised ``amin``, ~5% of
the GEMM; an inner-axis reduction or a comparison would cost 3–10× more), merged over tiles. The threshold then
picks the few candidate groups per row, then the tiles where each passes, whose kb/G members are gathered and
compared. Extra memory: per codebook level, its augmented bf16 copy [K, D + 4] (cached with the prepared
codebook); per thread, kept between calls for the last ``BUFFER_SHAPES`` shapes, the stored row block of at most
``STORE_ELEMENTS`` bf16 outputs (8 MiB; rows are sub-blocked to fit), its group minima, and a bf16 and a float32
copy of the row block (R × D, R ≤ the caller's row block: about 6 MiB at D = 256, K = 256); never N×K. Measured
costs and rates: ``benchmarks/certified_search.py``.

**Preconditions, checked at run time:** the bf16 ``torch.mm`` must accumulate in float32 (probed once per operand
width, :func:`float32_accumulation_verified`); the codebook must be finite with norms ≤ ``MAGNITUDE_LIMIT``
(:class:`CertifiedLevel` is not built otherwise and the float32 path runs).

``FASTRQ_BF16_SEARCH``: ``auto`` (default: where bf16 matmul is fast on this CPU, detected from /proc/cpuinfo's
``amx_bf16`` / ``avx512_bf16``, and the problem is large enough to pay off; a level whose last try sent most of
its rows to the exact path takes the float32 path for a while, :class:`LevelHistory`), ``1`` (always, on CPU
float32 data: for tests), ``0`` (never). :func:`search_stats` counts rows, rows re-scored, rows re-searched
exactly, candidates and declined calls.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import threading
from collections.abc import Callable

import torch

from ..errors import InvalidArgumentError
from ..kernels.cpu import launch as cpu_kernels
from . import environment

__all__ = [
    "ENV_VAR",
    "MODES",
    "search_mode",
    "bf16_matmul_is_fast",
    "float32_accumulation_verified",
    "pays_off",
    "CertifiedLevel",
    "level_operands",
    "certified_codes",
    "bf16_scores",
    "score_error_bound",
    "rescore_error_bound",
    "search_stats",
    "LevelHistory",
    "native_counters",
    "record_native",
    "reset_search_stats",
]

ENV_VAR = "FASTRQ_BF16_SEARCH"
MODES = ("auto", "1", "0")

U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
U_OUT = U_BF16  # the bf16 output conversion, to nearest (probed): |fl(y) − y| ≤ u·|fl(y)|
U_FP32 = 2.0**-24
ETA = 2.0**-126  # smallest normal float32 / bfloat16: the most a flushed subnormal input, product or sum loses
MAGNITUDE_LIMIT = 2.0**60  # rows and codes with norms above this (or not finite) take the exact path
EXTRA_COLUMNS = 4  # 1·hi(h), 1·lo(h), ĉ·1, and a zero pad (an even width)
GROUPS = 64  # strided groups per code tile whose minima locate the candidates
CODE_TILE = 1024  # codes per bf16 GEMM
STORE_ELEMENTS = 1 << 22  # bf16 outputs kept per row sub-block (8 MiB)
MAX_CANDIDATES = 64  # rows with more candidates are searched again by the exact float32 path
BUFFER_SHAPES = 2  # per-thread buffer sets kept between calls
THRESHOLD_SCALE = (1.0 + 2.0**-22) / (1.0 - U_OUT)  # W⁺ → T: the inverse of d ↦ d − u_o·|d|, with a margin
# auto mode: where the bf16 pass pays off (measured on AVX-512-BF16, benchmarks/certified_search.py): with the
# tensor-op row passes from D = 64, K = 512; with the native ones (2026-12-01, N = 512 and 4,096, D = 33 … 256:
# certified / float32 0.28–0.99 from K = 128, 0.56–1.23 at K = 64) from K = 128 at any D the GEMM path serves
AUTO_MIN_DIM = 64
AUTO_MIN_CODES = 512
AUTO_MIN_ROWS = 512
AUTO_MIN_CODES_NATIVE = 128
# auto mode: a codebook level whose rows the bf16 pass mostly cannot decide (more than this fraction searched again
# exactly in one call) takes the float32 path for its next calls, 1, 2, 4 … DECLINE_MAX_SKIP of them while that
# persists (then one more try): in that regime the certified search costs the float32 search and more. Seen in a long
# EnCodec-like run on one fixed batch (N = K = 1,024, D = 128, L = 8: after ~1,500 steps the levels after the first
# quantize residuals of ~0 against codes of norm ~1, 87 % of rows searched again exactly, the step 27 ms against 20
# for float32 and 7 before; benchmarks/README.md, note 22)
DECLINE_EXACT_FRACTION = 0.5
DECLINE_MAX_SKIP = 32
# the same for the fused native kernel's bf16 pass, per codebook (the rows it does not certify are searched again
# whole: forced bf16 / float32 crosses 1 at 16–26 % of them on random rows, and is 1.55–1.91 on codebooks of twins,
# where no row is certified; results/2026-12-02/native_bf16.md, note 22)
NATIVE_DECLINE_FRACTION = 0.25
NATIVE_HISTORIES = 64  # codebooks whose history is kept (least recently used dropped)
# auto mode, the fused native kernel's own bf16 first pass (rq_cpu.c, section 1b: no GEMM, its bound without the
# output rounding, the rows it cannot certify searched again in float32 inside the same call): from this width
# (benchmarks/README.md, note 21, measured on a Zen 5 with AVX512-BF16)
NATIVE_MIN_DIM = 32
# … for calls of at least NATIVE_MIN_PAIRS (row, code) pairs a level, on levels of at least NATIVE_MIN_CODE_WIDTH
# code entries (K · D): below either the pass's per-call and per-row costs (the codes' and the rows' bf16
# conversion, the rows' norms in float64) outweigh what it saves. Measured before these rules
# (results/2026-12-02/native_bf16_earlier/at_1e428d6.md, note 22), forced bf16 / float32: N = 1,024, K = 256:
# 0.99–1.27 on random and clustered rows; D = 32, K = 256: 0.95–1.27 at every N; D = 64, K = 256 from N = 6,272:
# 0.79–1.06; K ≥ 1,024 from N = 1,024: 0.63–0.84 on clustered rows.
NATIVE_MIN_PAIRS = 1 << 20
NATIVE_MIN_CODE_WIDTH = 1 << 14


def gamma(n: int) -> float:
    """γ_n = n·u / (1 − n·u) with u = 2⁻²⁴: the relative error bound of a float32 sum of n terms in any order."""
    nu = n * U_FP32
    if nu >= 0.5:
        return math.inf
    return nu / (1.0 - nu)


# ------------------------------------------------------------------------------------------------ choice


def search_mode() -> str:
    """``$FASTRQ_BF16_SEARCH`` (``auto`` when unset); an unknown value raises InvalidArgumentError."""
    mode = environment.get(ENV_VAR, "auto") or "auto"
    if mode not in MODES:
        raise InvalidArgumentError(f"{ENV_VAR}={mode!r} is not one of {', '.join(MODES)}")
    return mode


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def bf16_matmul_is_fast() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AMX-BF16 or AVX512-BF16; /proc/cpuinfo flags), where a
    bf16 ``torch.mm`` runs several times faster than float32. Elsewhere torch emulates bf16 and auto mode stays
    off."""
    flags = _cpu_flags()
    return bool(flags & {"amx_bf16", "avx512_bf16"})


@functools.lru_cache(maxsize=None)
def float32_accumulation_verified(width: int) -> bool:
    """Whether a bf16 ``torch.mm`` with inner dimension ``width`` accumulates in float32 and rounds its output to
    nearest, the preconditions of the bound (cached per width; 4 ≤ width ≤ 4096).

    Probe rows times ones: (1, 2⁻⁹, …, 2⁻⁹) with the 1 first, last or in the middle (a float32 accumulator gives
    1 + (width − 1)·2⁻⁹; a bf16 one, each 2⁻⁹ a tie that rounds back to 1, gives 1); a cancelling row
    (2¹⁰, −2¹⁰, 2⁻⁹, …) that must keep the small terms; ±(1, 2⁻⁹, 2⁻⁹, 2⁻⁹, 0, …), whose sum 1 + 3·2⁻⁹ rounds to
    1 + 2⁻⁷ to nearest but to 1 by truncation. Every output must equal the exact sum rounded to nearest, at a
    small shape and at a row-block shape."""
    if width < 4 or width > 4096:
        return False
    rows = torch.full((6, width), 2.0**-9, dtype=torch.float32)
    rows[0, 0] = rows[1, -1] = rows[2, width // 2] = 1.0
    rows[3, 0], rows[3, 1] = 2.0**10, -(2.0**10)
    rows[4:, 4:] = 0.0
    rows[4, 0] = 1.0
    rows[5] = -rows[4]
    ok = True
    for copies, codes in ((1, 64), (48, 1024)):
        probe = rows.repeat(copies, 1)
        got = torch.mm(probe.bfloat16(), torch.ones(width, codes, dtype=torch.bfloat16)).float()
        want = torch.mm(probe.double(), torch.ones(width, codes, dtype=torch.float64)).float().bfloat16().float()
        ok = ok and bool(torch.equal(got, want))
    return ok


def pays_off(num_rows: int, dim: int, num_codes: int) -> bool:
    """auto mode: the problem sizes where the bf16 pass beats the float32 GEMM (measured crossover, for the row
    passes that will run: native where the library builds, else tensor ops)."""
    if num_rows < AUTO_MIN_ROWS:
        return False
    if cpu_kernels.certified_available():
        return num_codes >= AUTO_MIN_CODES_NATIVE
    return dim >= AUTO_MIN_DIM and num_codes >= AUTO_MIN_CODES


# ------------------------------------------------------------------------------------------------ operands


class CertifiedLevel:
    """The bf16 operands of one codebook level and the per-codebook constants of the bound, prepared once per
    codebook (the caller caches it with its :class:`~fastrq.ops.torch_backend.PreparedLevels`).

    ``codes_aug`` bf16 [K_pad, D + 4]: rows (−bf16(b_k), hi(h_k), lo(h_k), 1, 0), padded to ``K_pad`` (a multiple
    of ``GROUPS`` · tiles) with rows whose output is +inf; ``centred`` float32 [K, D] and ``half_norms`` [K]: the
    exact operands (the float32 path's own); ``beta``, ``bhat``, ``bnorm``, ``hmax``, ``hsplit``: β*, b̂*, b*, H, λ
    of the bound (float64 upper bounds).
    """

    def __init__(self, centred: torch.Tensor, half_norms: torch.Tensor):
        num_codes, dim = centred.shape
        self.num_codes, self.dim = num_codes, dim
        self.centred, self.half_norms = centred, half_norms
        tiles = max(1, -(-num_codes // CODE_TILE))
        self.tile = -(-num_codes // (tiles * GROUPS)) * GROUPS
        self.tiles = tiles
        self.padded = self.tile * tiles
        self.centred_rows = centred.contiguous()  # [K, D] row-major (a view of the caller's centred codes)
        if cpu_kernels.certified_available() and num_codes > 0:
            aug, maxima = self._operands_native()
        else:
            aug, maxima = self._operands_torch()
        slack = 1.0 + 2.0**-40  # float64 evaluation of these maxima
        beta, bhat, bnorm, self.hmax, hsplit = maxima
        self.beta, self.bhat, self.bnorm, self.hsplit = beta * slack, bhat * slack, bnorm * slack, hsplit * slack
        self.codes_aug = aug
        self.coefficients = slack_coefficients(self)
        k_row, k_rounding, k_constant, k_zero = self.coefficients
        self.weights = torch.tensor([2 * k_row, 2 * k_rounding, 2 * k_constant, 1.0, U_OUT], dtype=torch.float64)
        self.offset = 2 * k_zero
        self.history: LevelHistory | None = None  # auto mode: where certified_codes reports how it fared

    @functools.cached_property
    def member_offsets(self) -> torch.Tensor:
        """[tile / GROUPS]: a group's members' offsets in a tile (the tensor-op row pass only)."""
        return torch.arange(0, self.tile, GROUPS)

    @functools.cached_property
    def tile_offsets(self) -> torch.Tensor:
        """[tiles]: the tile indices (the tensor-op row pass only)."""
        return torch.arange(self.tiles)

    def _operands_torch(self) -> tuple[torch.Tensor, list[float]]:
        """codes_aug and (β*, b̂*, b*, H, λ) before the slack, in tensor ops."""
        centred, half_norms, num_codes, dim = self.centred, self.half_norms, self.num_codes, self.dim
        rounded = centred.bfloat16()
        c64, r64 = centred.double(), rounded.double()
        h_hi = half_norms.bfloat16()
        h_lo = (half_norms - h_hi.float()).bfloat16()
        maxima = [
            float((r64 - c64).norm(dim=1).max()), float(r64.norm(dim=1).max()), float(c64.norm(dim=1).max()),
            float(half_norms.double().max()), float((half_norms.double() - h_hi.double() - h_lo.double()).abs().max()),
        ]
        aug = torch.zeros(self.padded, dim + EXTRA_COLUMNS, dtype=torch.bfloat16)
        aug[:num_codes, :dim] = -rounded
        aug[:num_codes, dim] = h_hi
        aug[:num_codes, dim + 1] = h_lo
        aug[:num_codes, dim + 2] = 1.0
        aug[num_codes:, dim] = float("inf")  # padding codes: output +inf, never a candidate
        return aug, maxima

    def _operands_native(self) -> tuple[torch.Tensor, list[float]]:
        """The same in one native pass over the codes (``rq_cpu.c``; the maxima summed in its order)."""
        aug = torch.empty(self.padded, self.dim + EXTRA_COLUMNS, dtype=torch.bfloat16)
        maxima = torch.empty(5, dtype=torch.float64)
        cpu_kernels.certified_codes(self.centred_rows, self.half_norms.contiguous(), self.padded, aug, maxima)
        return aug, maxima.tolist()

    @property
    def valid(self) -> bool:
        """Finite and within ``MAGNITUDE_LIMIT`` (else the bound's overflow-free precondition fails)."""
        values = (self.beta, self.bhat, self.bnorm, self.hmax, self.hsplit)
        return all(math.isfinite(v) for v in values) and max(self.bhat, self.bnorm) <= MAGNITUDE_LIMIT


class LevelHistory:
    """How the certified search fared on one codebook level in ``auto`` mode, kept across the level's
    re-preparations (the torch backend hands it from a codebook buffer's old preparation to its new one, so an EMA
    codebook updated in place every step keeps it), or, for the fused native kernel's bf16 pass, on one codebook
    buffer (:func:`native_counters`): after a call that searched more than ``fraction`` (``DECLINE_EXACT_FRACTION``,
    ``NATIVE_DECLINE_FRACTION``) of its rows again exactly, the next ``skip`` calls take the float32 path, ``skip``
    doubling (up to ``DECLINE_MAX_SKIP``) while the tries that follow fail too and back to none after one that does
    not. Only the speed depends on it: both paths return the same codes. Counts are per call of the level's search
    (one per row block of the walk), never per thread or timing, so a run is reproducible."""

    __slots__ = ("skip", "backoff", "fraction", "lock")

    def __init__(self, fraction: float = DECLINE_EXACT_FRACTION) -> None:
        self.skip = 0
        self.backoff = 0
        self.fraction = fraction
        self.lock = threading.Lock()

    def declines(self) -> bool:
        """Whether this call takes the float32 path (and counts it)."""
        with self.lock:
            if self.skip <= 0:
                return False
            self.skip -= 1
        with _STATS.lock:
            _STATS.declined_calls += 1
        return True

    def observe(self, rows: int, exact_rows: int) -> None:
        """One certified call's outcome: ``exact_rows`` of its ``rows`` searched again by the exact path."""
        with self.lock:
            if rows and exact_rows > self.fraction * rows:
                self.backoff = min(2 * self.backoff if self.backoff else 1, DECLINE_MAX_SKIP)
                self.skip = self.backoff
            else:
                self.backoff = self.skip = 0


def level_operands(prep, level: int, num_rows: int):
    """The :class:`CertifiedLevel` of ``prep``'s ``level`` when the certified search runs for a row block of
    ``num_rows`` rows, else None. Built on first use and kept in ``prep.certified[level]`` (so once per codebook:
    the caller caches ``prep``); False is kept for a level whose codebook is out of range. In ``auto`` mode also
    None while the level's :class:`LevelHistory` (``prep.certified_history[level]``) declines."""
    mode = search_mode()
    if mode == "0":
        return None
    centred_t, half_norms = prep.centred_t[level], prep.half_norms[level]
    if centred_t.device.type != "cpu" or centred_t.dtype != torch.float32:
        return None
    dim, num_codes = centred_t.shape[0], prep.level_sizes[level]
    if mode == "auto" and not (bf16_matmul_is_fast() and pays_off(num_rows, dim, num_codes)):
        return None
    if not float32_accumulation_verified(dim + EXTRA_COLUMNS):
        return None
    history = prep.certified_history[level]
    if mode == "auto" and history.declines():
        return None
    cached = prep.certified[level]
    if cached is None:
        operands = CertifiedLevel(centred_t.t()[:num_codes], half_norms[:num_codes].contiguous())
        cached = prep.certified[level] = operands if operands.valid else False
    if cached:
        cached.history = history if mode == "auto" else None
    return cached or None


# ------------------------------------------------------------------------------------------------ the bound


def _norm_upper(squared_sum: torch.Tensor, dim: int) -> torch.Tensor:
    """An upper bound (float64) of ‖v‖ from fl32(Σ fl32(v_d²)) (any summation order): the float32 sum of D rounded
    squares is ≥ (1 − γ_D) of the true one up to D flushed squares (< η each), and the square root adds one
    rounding; so ‖v‖ ≤ fl(√fl(Σ))·(1 + 2γ_{D+2}) + √D·2⁻⁶²."""
    return squared_sum.double().sqrt() * NORM_FACTOR(dim) + math.sqrt(dim) * 2.0**-62


def NORM_FACTOR(dim: int) -> float:  # noqa: N802 - a constant of D
    return 1.0 + 2.0 * gamma(dim + 2)


def score_error_bound(
    row_norm: torch.Tensor, rounding_norm: torch.Tensor, row_constant: torch.Tensor, level: CertifiedLevel
) -> torch.Tensor:
    """E (float64, one per row) of the bound |d̃_k − (ĉ + s_k)| ≤ u_o·|d̃_k| + E (module docstring), from upper
    bounds of ‖a‖ and ‖α‖ and the value ĉ of each row."""
    dim = level.dim
    ahat = row_norm + rounding_norm
    bound = (
        row_norm * level.beta
        + rounding_norm * level.bhat
        + level.hsplit
        + gamma(dim + EXTRA_COLUMNS) * (row_constant.abs() + 2.0 * level.hmax + ahat * level.bhat)
        + ETA * (math.sqrt(dim) * (ahat + level.bhat + 2.0) + 4 * dim + 16)
    )
    return bound * (1.0 + 2.0**-40)


def rescore_error_bound(row_norm: torch.Tensor, level: CertifiedLevel) -> torch.Tensor:
    """F (float64, one per row): |r_k − s_k| ≤ F for the float32 re-score r_k = fl(h_k − fl(a·b_k)) (products
    rounded or flushed, sum in any order, one subtraction)."""
    dim = level.dim
    return (gamma(dim + 1) * (level.hmax + row_norm * level.bnorm) + (dim + 2) * ETA) * (1.0 + 2.0**-40)


def slack_coefficients(level: CertifiedLevel) -> tuple[float, float, float, float]:
    """(k_a, k_α, k_c, k_0) with E + F = k_a·n_a + k_α·n_α + k_c·ĉ + k_0, where n_a, n_α are the float32-computed
    norms ‖a‖, ‖α‖ (their upper bounds :func:`_norm_upper` folded in): :func:`score_error_bound` +
    :func:`rescore_error_bound` expanded, so that the hot loop evaluates it with one matrix-vector product."""
    dim = level.dim
    g4, g1 = gamma(dim + EXTRA_COLUMNS), gamma(dim + 1)
    root = math.sqrt(dim)
    factor, floor = NORM_FACTOR(dim), root * 2.0**-62
    k_row = level.beta + g4 * level.bhat + ETA * root + g1 * level.bnorm
    k_rounding = level.bhat + g4 * level.bhat + ETA * root
    k_constant = g4
    k_zero = (
        level.hsplit
        + 2.0 * g4 * level.hmax
        + ETA * (root * (level.bhat + 2.0) + 4 * dim + 16)
        + g1 * level.hmax
        + (dim + 2) * ETA
        + (k_row + k_rounding) * floor
    )
    slack = 1.0 + 2.0**-38  # the float64 evaluation of this sum and of the hot loop's
    return k_row * factor * slack, k_rounding * factor * slack, k_constant * slack, k_zero * slack


def _row_terms(rows: torch.Tensor, aug: torch.Tensor, scratch: torch.Tensor, terms: torch.Tensor) -> None:
    """Fill the augmented bf16 row block ``aug`` [R, D + 4] (its constant columns are already set) from float32
    rows [R, D], and ``terms`` float64 [R, 5] with (‖a‖, ‖α‖, ĉ, ·, ·): the norms as float32 computes them,
    fl(√fl(Σ_d fl(v_d²))), and the value of the bf16 constant column."""
    dim = rows.shape[1]
    aug[:, :dim].copy_(rows)
    sq = torch.sum(torch.mul(rows, rows, out=scratch), dim=1)
    aug[:, dim + 2].copy_(sq.mul(0.5))
    scratch.copy_(aug[:, :dim]).sub_(rows)  # α = bf16(a) − a, exact in float32
    sq_rounding = torch.sum(scratch.mul_(scratch), dim=1)
    terms[:, 0].copy_(sq.sqrt_())
    terms[:, 1].copy_(sq_rounding.sqrt_())
    terms[:, 2].copy_(aug[:, dim + 2])


def bf16_scores(rows: torch.Tensor, level: CertifiedLevel):
    """The first pass on its own, for tests of the bound: (d̃ float64 [R, K] as the bf16 GEMM returns it, the
    per-row E, ĉ and F, float64 [R]). rows: centred float32 [R, D] with finite norms."""
    aug = _new_aug(rows.shape[0], level.dim)
    terms = torch.empty(rows.shape[0], 5, dtype=torch.float64)
    _row_terms(rows, aug, torch.empty_like(rows), terms)
    factor, floor = NORM_FACTOR(level.dim), math.sqrt(level.dim) * 2.0**-62
    row_norm, rounding_norm, row_constant = terms[:, 0] * factor + floor, terms[:, 1] * factor + floor, terms[:, 2]
    out = torch.mm(aug, level.codes_aug.t())[:, : level.num_codes]
    bound = score_error_bound(row_norm, rounding_norm, row_constant, level)
    return out.double(), bound, row_constant, rescore_error_bound(row_norm, level)


# ------------------------------------------------------------------------------------------------ the search


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.rows = self.rescored_rows = self.exact_rows = self.candidates = self.calls = 0
        self.native_rows = self.native_researched = 0
        self.declined_calls = 0

    def record_native(self, rows: int, researched: int) -> None:
        """One fused-kernel call's counts: row-levels its bf16 pass searched, and searched again in float32."""
        with self.lock:
            self.native_rows += rows
            self.native_researched += researched

    def record(self, rows: int, rescored: int, exact: int, candidates: int) -> None:
        """One row block's counts (either row pass)."""
        with self.lock:
            self.calls += 1
            self.rows += rows
            self.rescored_rows += rescored
            self.exact_rows += exact
            self.candidates += candidates


_STATS = _Stats()


def search_stats() -> dict:
    """Counters since the last :func:`reset_search_stats`: rows searched by the certified path, rows re-scored in
    float32 (2 … MAX_CANDIDATES candidates), rows re-searched by the exact float32 path, total candidates, and the
    rates derived from them; the calls a level's :class:`LevelHistory` sent to the float32 path
    (``declined_calls``); for the fused native kernel's bf16 pass (:func:`native_counters`) the row-levels it
    searched (``native_rows``) and those it searched again in float32 (``native_researched_rows``,
    ``native_research_rate``)."""
    with _STATS.lock:
        rows, rescored, exact, cands = _STATS.rows, _STATS.rescored_rows, _STATS.exact_rows, _STATS.candidates
        calls, declined = _STATS.calls, _STATS.declined_calls
        native_rows, native_researched = _STATS.native_rows, _STATS.native_researched
    return {
        "native_rows": native_rows,
        "native_researched_rows": native_researched,
        "native_research_rate": native_researched / native_rows if native_rows else 0.0,
        "calls": calls,
        "declined_calls": declined,
        "rows": rows,
        "rescored_rows": rescored,
        "exact_rows": exact,
        "candidates": cands,
        "exact_rate": exact / rows if rows else 0.0,
        "rescore_rate": rescored / rows if rows else 0.0,
        "mean_candidates": cands / rows if rows else 0.0,
    }


_NATIVE_HISTORY: collections.OrderedDict[tuple, LevelHistory] = collections.OrderedDict()
_NATIVE_HISTORY_LOCK = threading.Lock()


def _native_history(codebooks: torch.Tensor) -> LevelHistory:
    """The :class:`LevelHistory` of the native bf16 pass on this codebook buffer (its address and shape: an EMA
    codebook updated in place keeps its history)."""
    key = (codebooks.data_ptr(), tuple(codebooks.shape))
    with _NATIVE_HISTORY_LOCK:
        history = _NATIVE_HISTORY.get(key)
        if history is None:
            history = _NATIVE_HISTORY[key] = LevelHistory(NATIVE_DECLINE_FRACTION)
            while len(_NATIVE_HISTORY) > NATIVE_HISTORIES:
                _NATIVE_HISTORY.popitem(last=False)
        else:
            _NATIVE_HISTORY.move_to_end(key)
    return history


def native_counters(num_rows: int, dim: int, codebooks: torch.Tensor):
    """For a call of the fused native kernel on ``num_rows`` rows of width ``dim`` against ``codebooks`` (``[K, D]``
    or ``[L, K, D]``): a ctypes int64 pair that turns its certified bf16 first pass on (the kernel adds its counts to
    it; hand it to :func:`record_native` after the call) where that pass runs here
    (:func:`fastrq.kernels.cpu.launch.bf16_search_available`) and ``FASTRQ_BF16_SEARCH`` asks for it (``1``;
    ``auto`` from ``NATIVE_MIN_DIM``, ``NATIVE_MIN_PAIRS`` and ``NATIVE_MIN_CODE_WIDTH`` unless the codebook's
    :class:`LevelHistory` declines); else None (the float32 search)."""
    mode = search_mode()
    if mode == "0":
        return None
    if mode == "auto":  # the size rules first: they are integer comparisons, and decide most small calls
        num_codes = codebooks.shape[-2]
        if dim < NATIVE_MIN_DIM or num_rows * num_codes < NATIVE_MIN_PAIRS or num_codes * dim < NATIVE_MIN_CODE_WIDTH:
            return None
    if not cpu_kernels.bf16_search_available():
        return None
    if mode == "auto" and _native_history(codebooks).declines():
        return None
    return (ctypes.c_int64 * 2)()


def record_native(counters, codebooks: torch.Tensor) -> None:
    """Add a fused-kernel call's counts (from :func:`native_counters`; None: nothing) to :func:`search_stats`, and in
    ``auto`` mode to the codebook's :class:`LevelHistory`."""
    if counters is None or not counters[0]:
        return
    _STATS.record_native(counters[0], counters[1])
    if search_mode() == "auto":
        _native_history(codebooks).observe(counters[0], counters[1])


def reset_search_stats() -> None:
    """Zero :func:`search_stats` and forget the native bf16 pass's per-codebook histories (a new codebook at the
    address of an old one would otherwise take over its history; the GEMM path's go with its cached
    preparations)."""
    with _STATS.lock:
        _STATS.reset()
    with _NATIVE_HISTORY_LOCK:
        _NATIVE_HISTORY.clear()


def _new_aug(rows: int, dim: int) -> torch.Tensor:
    """An augmented bf16 row block [rows, D + 4] with its constant columns (1, 1, ·, 0) set."""
    aug = torch.empty(rows, dim + EXTRA_COLUMNS, dtype=torch.bfloat16)
    aug[:, dim : dim + 2] = 1.0
    aug[:, dim + 3] = 0.0
    return aug


_BUFFERS = threading.local()


def _buffers(rows: int, dim: int, tile: int, tiles: int):
    """Reused per-thread buffers for at least ``rows`` rows (no allocation, hence no page faults, per block): the
    augmented rows, a float32 row scratch, the per-row terms, the stored bf16 outputs and their group minima. Kept
    per (D, tile, tiles, inference mode) for the last ``BUFFER_SHAPES`` shapes (levels of different sizes alternate
    in one walk)."""
    cache = getattr(_BUFFERS, "value", None)
    if cache is None:
        cache = _BUFFERS.value = {}
    # an inference tensor (made under torch.inference_mode) cannot be written outside it, nor a normal one saved
    # for backward from inside: one set of buffers per mode
    key = (dim, tile, tiles, torch.is_inference_mode_enabled())
    cached = cache.get(key)
    if cached is None or cached[0] < rows:
        store = torch.empty(tiles * rows * tile, dtype=torch.bfloat16)
        minima = torch.empty(tiles, rows, GROUPS, dtype=torch.int16)
        terms = torch.empty(rows, 5, dtype=torch.float64)
        cached = rows, _new_aug(rows, dim), torch.empty(rows, dim, dtype=torch.float32), terms, store, minima
        cache.pop(key, None)
        while len(cache) >= BUFFER_SHAPES:
            cache.pop(next(iter(cache)))
        cache[key] = cached
    return cached[1:]


def _threshold_keys(terms: torch.Tensor, weights: torch.Tensor, offset: float) -> torch.Tensor:
    """int16 bit patterns of bf16 values ≥ T per row, from ``terms`` [R, 5] = (‖a‖, ‖α‖, ĉ, v, |v|) (v the row's
    smallest bf16 output) and ``weights`` = 2·(k_a, k_α, k_c) (1, u_o), ``offset`` = 2·k_0:
    W = v + u_o|v| + 2(E + F) in one matrix-vector product; T = W⁺ / (1 − u_o) (the inverse of d ↦ d − u_o|d| on
    T ≥ 0), rounded up to float32 (a relative margin larger than float32's rounding, plus one below its
    subnormals), then to bf16 (a carry into the upper half of the float32 pattern whenever its lower half is not
    zero). NaN or inf come out ≥ 0x7F80."""
    w = torch.mv(terms, weights).add_(offset).clamp_(min=0.0)
    t32 = w.mul_(THRESHOLD_SCALE).add_(2.0**-140).float()
    return t32.view(torch.int32).add_(0xFFFF).bitwise_right_shift_(16).to(torch.int16)


@torch.no_grad()
def certified_codes(
    rows: torch.Tensor, level: CertifiedLevel, exact: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Codes int64 [R] of centred float32 rows [R, D]: the first float32 argmin over all K codes (module
    docstring). ``exact(subset)`` is the float32 path, for the rows the bf16 pass cannot decide."""
    num_rows = rows.shape[0]
    block = max(64, STORE_ELEMENTS // level.padded)
    buffers = _buffers(min(block, num_rows), level.dim, level.tile, level.tiles)
    run = _native_block if cpu_kernels.certified_available() else _certified_block
    rows = rows.contiguous()
    searched_again = [0]  # rows the blocks sent to the exact path (for the level's history)

    def counted_exact(subset: torch.Tensor) -> torch.Tensor:
        searched_again[0] += subset.shape[0]
        return exact(subset)

    if num_rows <= block:
        codes = run(rows, level, counted_exact, buffers)
    else:
        parts = [run(rows[r0 : r0 + block], level, counted_exact, buffers) for r0 in range(0, num_rows, block)]
        codes = torch.cat(parts)
    if level.history is not None:
        level.history.observe(num_rows, searched_again[0])
    return codes


def _native_block(rows: torch.Tensor, level: CertifiedLevel, exact, buffers) -> torch.Tensor:
    """:func:`_certified_block` with its row work native (``rq_cpu.c``): the augmented rows and their terms in one
    pass, the GEMM(s) here, then one pass per row over its outputs for v, T, the candidates and their exact
    re-score (the same bound and the same rules; the re-score sums in the kernel's order, which the bound allows)."""
    num_rows = rows.shape[0]
    tile, tiles = level.tile, level.tiles
    aug_buf, _, _, store, _ = buffers
    aug = aug_buf[:num_rows]
    terms = torch.empty(num_rows, 3, dtype=torch.float64)
    cpu_kernels.certified_rows(rows, aug, terms)
    tile_size = num_rows * tile
    for t in range(tiles):
        scores = store[t * tile_size : (t + 1) * tile_size].view(num_rows, tile)
        torch.mm(aug, level.codes_aug[t * tile : (t + 1) * tile].t(), out=scores)
    codes = torch.empty(num_rows, dtype=torch.long)
    status = torch.empty(num_rows, dtype=torch.uint8)
    counters = torch.zeros(3, dtype=torch.int64)
    cpu_kernels.certified_select(
        store, num_rows, tile, tiles, level.num_codes, terms, level.weights, level.offset, THRESHOLD_SCALE,
        MAGNITUDE_LIMIT, rows, level.centred_rows, level.half_norms, MAX_CANDIDATES, codes, status, counters,
    )
    rescored, exact_rows, candidates = counters.tolist()
    if exact_rows:
        exact_index = (status == 2).nonzero().view(-1)
        codes[exact_index] = exact(rows.index_select(0, exact_index))
    _STATS.record(num_rows, rescored, exact_rows, candidates)
    return codes


def _certified_block(rows: torch.Tensor, level: CertifiedLevel, exact, buffers) -> torch.Tensor:
    num_rows, dim = rows.shape
    tile, tiles = level.tile, level.tiles
    members = tile // GROUPS
    aug_buf, scratch_buf, terms_buf, store, minima = buffers
    aug, scratch, terms = aug_buf[:num_rows], scratch_buf[:num_rows], terms_buf[:num_rows]
    _row_terms(rows, aug, scratch, terms)
    # first pass: bf16 outputs kept, their strided group minima (int16 order = value order for d̃ ≥ 0)
    tile_size = num_rows * tile
    for t in range(tiles):
        scores = store[t * tile_size : (t + 1) * tile_size].view(num_rows, tile)
        torch.mm(aug, level.codes_aug[t * tile : (t + 1) * tile].t(), out=scores)
        torch.amin(scores.view(torch.int16).view(num_rows, members, GROUPS), dim=1, out=minima[t, :num_rows])
    tile_min = minima[:, :num_rows]  # [tiles, R, G]
    group_min = tile_min[0] if tiles == 1 else tile_min.amin(dim=0)  # [R, G], over all tiles
    smallest = group_min.amin(dim=1)
    terms[:, 3].copy_(smallest.view(torch.bfloat16))  # one output of each row: the least if any is ≥ 0
    torch.abs(terms[:, 3], out=terms[:, 4])
    limit = _threshold_keys(terms, level.weights, level.offset)
    # rows out of range get a limit that no pattern passes (but −0: harmless, they are searched exactly)
    valid = (terms[:, 0] <= MAGNITUDE_LIMIT) & (limit >= 0) & (limit < 0x7F80)
    limit.masked_fill_(~valid, -(2**15))
    # candidate groups (n, g) first, then (more than one tile) the tiles t where that group passes, then the
    # members of each (n, t, g); int16 comparisons are exact on the patterns (see _threshold_keys)
    f = (group_min <= limit[:, None]).view(-1).nonzero().view(-1)
    row_of, group = f.div(GROUPS, rounding_mode="floor"), f.remainder(GROUPS)
    if tiles == 1:
        tile_of = None
    else:
        tile_keys = tile_min.reshape(-1).take(f[:, None] + level.tile_offsets * (num_rows * GROUPS))  # [P, tiles]
        q = (tile_keys <= limit.index_select(0, row_of)[:, None]).view(-1).nonzero().view(-1)
        pair, tile_of = q.div(tiles, rounding_mode="floor"), q.remainder(tiles)
        row_of, group = row_of.index_select(0, pair), group.index_select(0, pair)
    # flat index of the group's first member in the stored outputs: (t·R + n)·tile + g
    base = row_of * tile + group if tile_of is None else (tile_of * num_rows + row_of).mul_(tile).add_(group)
    member_keys = store.view(torch.int16).take(base[:, None] + level.member_offsets)  # [P, members]
    q = (member_keys <= limit.index_select(0, row_of)[:, None]).view(-1).nonzero().view(-1)
    pair, member = q.div(members, rounding_mode="floor"), q.remainder(members)
    cand_row = row_of.index_select(0, pair)
    pair_code = group if tile_of is None else tile_of.mul(tile).add_(group)  # code = t·tile + g + member·G
    cand_code = pair_code.index_select(0, pair).add_(member.mul_(GROUPS))
    counts = torch.bincount(cand_row, minlength=num_rows)
    codes = torch.zeros(num_rows, dtype=torch.long).index_copy_(0, cand_row, cand_code)  # right where counts == 1
    to_exact = ~valid | (counts > MAX_CANDIDATES) | (counts == 0)  # (no candidate: impossible, but never guess)
    multi = (counts >= 2) & ~to_exact
    pick = multi.index_select(0, cand_row).nonzero().view(-1)
    if pick.numel():
        r_rows, r_codes = cand_row.index_select(0, pick), cand_code.index_select(0, pick)
        dots = rows.index_select(0, r_rows).mul_(level.centred.index_select(0, r_codes)).sum(dim=1)
        scores32 = level.half_norms.index_select(0, r_codes).sub_(dots)
        best = torch.full((num_rows,), math.inf, dtype=torch.float32).scatter_reduce_(0, r_rows, scores32, "amin")
        tied = (scores32 == best.index_select(0, r_rows)).nonzero().view(-1)
        first = torch.full((num_rows,), level.padded, dtype=torch.long)
        first.scatter_reduce_(0, r_rows.index_select(0, tied), r_codes.index_select(0, tied), "amin")
        codes = torch.where(multi, first, codes)
    exact_index = to_exact.nonzero().view(-1)
    if exact_index.numel():
        codes[exact_index] = exact(rows.index_select(0, exact_index))
    rescored = int(multi.sum()) if pick.numel() else 0
    _STATS.record(num_rows, rescored, int(exact_index.numel()), int(cand_row.numel()))
    return codes
