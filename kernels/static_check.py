"""Compile the kernels for NVIDIA targets without a GPU, exactly as the JIT would at run time, and read the result.

*The run-time specialization.* A launch is built by the launchers themselves (:func:`fastrq.kernels.search.
search_launch` and the statistics / decode launch builders) on ``meta`` tensors of the real shapes; the argument list
then goes through the binder Triton's JIT builds for the kernel (``create_function_from_signature`` + ``_pack_args``),
which yields the signature, the constexprs (an int argument equal to 1 becomes a constexpr, as at run time) and the
attributes (``tt.divisibility = 16`` for every pointer, since CUDA allocations are 256-byte aligned and meta tensors
report address 0, and for every int argument divisible by 16). ``triton.compile(ASTSource(fn, signature,
constexprs, attrs), target=GPUTarget("cuda", arch, 32), options)`` then runs the whole NVIDIA pipeline (TTIR →
TTGIR → LLVM → PTX → cubin through the bundled ptxas) on a machine with no GPU or driver.

*What is read.* From the cubin (the bundled ``cuobjdump --dump-resource-usage``): registers, stack frame, local
memory (spills show as ``STACK``), static shared memory; from the metadata the shared memory requested at launch;
from the PTX: the mma / wgmma instruction shapes, and the **inner loop**: the innermost loop of the search (the
loop holding the tensor-core or FMA products), its PTX instruction count, and that count per (row, code) pair:
``instructions × threads / (BLOCK_N × BLOCK_K)`` (each thread owns BLOCK_N·BLOCK_K/threads pairs of a tile).
For tf32x3 the count is also given per MMA pass (÷ 3).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.jit import create_function_from_signature

from . import decode, search, statistics
from .prepare import prepare_codebooks

__all__ = ["Call", "CompileReport", "calls", "compile_report", "TARGETS", "cuobjdump_path", "inner_loop",
           "FLOORS"]

TARGETS = {"sm_80": GPUTarget("cuda", 80, 32), "sm_90": GPUTarget("cuda", 90, 32),
           "sm_100": GPUTarget("cuda", 100, 32), "sm_120": GPUTarget("cuda", 120, 32)}
FLOOR_TARGETS = ("sm_80", "sm_90")
# shared memory per SM (all resident programs together): A100 164 KiB, H100 / B200 228 KiB, sm_120 100 KiB
SM_SHARED = {"sm_80": 167936, "sm_90": 233472, "sm_100": 233472, "sm_120": 102400}
# issue 12's floors: PTX instructions per (row, code) pair in the inner loop (tf32x3: per MMA pass)
FLOORS = {"small": (16, 12), "d64": (64, 16)}


@dataclass(frozen=True)
class Call:
    """One representative launch: what is compiled."""

    kernel: str  # "search" / "statistics" / "decode"
    label: str
    dim: int
    dtype: torch.dtype = torch.float32
    precision: str = "ieee"
    num_rows: int = 65536
    num_codes: int = 1024
    num_levels: int = 8
    op: str = "train"  # search: "train" (search_walk) / "quantize" (residual_quantize) / "nearest" (nearest_code)
    config: search.SearchConfig | None = None  # None: the launchers' choice for the target

    def floor(self) -> int | None:
        """The issue's per-pair floor for this call (None where none applies)."""
        if self.kernel != "search" or self.dtype != torch.float32:
            return None
        mode = search.kernel_mode(self.dim, self.dtype, self.precision)
        if mode == "ieee":
            return None  # FMA-bound by construction: D products per pair on CUDA cores
        if self.dim <= FLOORS["small"][0]:
            return FLOORS["small"][1]
        if self.dim == FLOORS["d64"][0]:
            return FLOORS["d64"][1]
        return None


@dataclass
class CompileReport:
    call: Call
    target: str
    ok: bool
    error: str = ""
    config: str = ""
    mode: str = ""
    registers: int = -1
    stack: int = -1
    local: int = -1
    shared: int = -1  # shared memory requested at launch (metadata.shared)
    shared_limit: int = -1
    mma_shapes: list = field(default_factory=list)
    loop_instructions: int = -1  # PTX instructions of one code tile (per thread)
    pairs_per_thread: float = -1.0
    per_pair: float = -1.0  # PTX instructions per (row, code) pair
    per_pair_nomov: float = -1.0  # the same without register moves and zero-initialisations (ptxas removes them)
    per_pass: float = -1.0  # tf32x3: per_pair / 3
    sass_per_pair: float = -1.0  # SASS instructions per pair (what runs)
    ctas_per_sm: int = -1  # resident programs per SM from registers and shared memory
    loop_ops: dict = field(default_factory=dict)
    specialization: dict = field(default_factory=dict)

    @property
    def spills(self) -> bool:
        return self.stack != 0 or self.local != 0


# the D classes × modes of the report (the floors' D and the grid of the GPU kit)
SEARCH_DIMS = (1, 4, 8, 16, 17, 32, 64, 100, 128, 256)
FP32_MODES = ("ieee", "tf32x3", "tf32", "bf16", "certified")


QUICK_DIMS = (4, 16, 64, 256)
MODULE_STEPS = ((6272, 4, 256, 1), (6272, 4, 128, 2), (6272, 4, 128, 3), (4096, 8, 1024, 9), (4800, 128, 1024, 8))


def calls(dims=SEARCH_DIMS, modes=FP32_MODES, quick: bool = False) -> list[Call]:
    """The representative launches: the training step's search at N = 65,536, K = 1,024, L = 8 per D and mode,
    float64, the inference variants (residual_quantize; nearest_code, where L = 1 is a constexpr), statistics and
    decode. ``quick``: the floors' D (4, 16, 64) and 256 only, float64 at 4 and 64."""
    out: list[Call] = []
    for dim in QUICK_DIMS if quick else dims:
        for mode in modes:
            out.append(Call("search", f"train fp32 D={dim} {mode}", dim, torch.float32, mode))
    for dim in ((4, 64) if quick else (4, 16, 64, 256)):
        out.append(Call("search", f"train fp64 D={dim}", dim, torch.float64, "ieee"))
    out.append(Call("search", "quantize fp32 D=64 tf32x3", 64, torch.float32, "tf32x3", op="quantize"))
    out.append(Call("search", "nearest fp32 D=4 L=1", 4, torch.float32, "ieee", num_levels=1, op="nearest"))
    out.append(Call("search", "nearest fp32 D=64 tf32x3 L=1", 64, torch.float32, "tf32x3", num_levels=1, op="nearest"))
    for n, dim, k, levels in MODULE_STEPS:  # the module-step shapes: smaller N halves the row tile
        out.append(Call("search", f"module step N={n} D={dim} K={k} L={levels} tf32x3", dim, torch.float32,
                        "tf32x3", num_rows=n, num_codes=k, num_levels=levels))
    out.append(Call("statistics", "statistics fp32 D=64", 64))
    out.append(Call("statistics", "statistics fp64 D=256", 256, torch.float64))
    out.append(Call("decode", "decode fp32 D=64", 64))
    return out


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


def _launch_of(call: Call, target: str):
    """(jit function, args, kwargs, config text, mode) of the call as the launcher builds it."""
    n, d, k, levels = call.num_rows, call.dim, call.num_codes, call.num_levels
    x = _meta(n, d, dtype=call.dtype)
    if call.kernel == "search":
        precision = search.resolve_precision(call.precision, torch.device("cuda"), call.dtype)
        mode = search.kernel_mode(d, call.dtype, precision)
        cfg = call.config or search.choose_config(d, call.dtype, precision, target, num_codes=k, num_rows=n,
                                                  num_sms=search.SM_COUNT[target])
        dp = search.padded_dim(d, mode, call.dtype)
        prep = prepare_codebooks(_meta(levels, k, d, dtype=call.dtype), None, mode, cfg.block_k, dp, "tf32x3")
        flags = {"train": dict(want_quantized=True, want_commit=True, want_level_err=True),
                 "quantize": dict(want_quantized=True), "nearest": dict(want_sqdist=True)}[call.op]
        launch = search.search_launch(x, prep, cfg, fallback="tf32x3", **flags)
        text = config_text(cfg)
        return launch.kernel, launch.args, launch.constexprs, text, mode, cfg
    if call.kernel == "statistics":
        fn, args, kwargs, _ = statistics.stats_launch(x, _meta(n, levels, dtype=torch.int64),
                                                      _meta(levels, k, d, dtype=call.dtype), k)
        return fn, args, kwargs, f"{kwargs['BLOCK_R']}x{kwargs['BLOCK_D']}", "", None
    fn, args, kwargs, _ = decode.decode_launch(_meta(n, levels, dtype=torch.int64), _meta(levels, k, d, dtype=call.dtype))
    return fn, args, kwargs, f"{kwargs['BLOCK_N']}x{kwargs['BLOCK_D']}", "", None


def config_text(cfg: search.SearchConfig) -> str:
    text = f"{cfg.block_n}x{cfg.block_k} {cfg.num_warps}w{cfg.num_stages}s"
    if cfg.kernel == "large":
        text += f" large/{cfg.block_d}{'' if cfg.hoist_a else ' A per tile'}"
    return text


def jit_compile(fn, args, kwargs, target: str):
    """Compile ``fn[grid](*args, **kwargs)`` for ``target`` with the JIT's own binder: the same signature,
    constexprs and specialization attributes as a launch with these arguments. Returns (compiled, attrs)."""
    backend = make_backend(TARGETS[target])
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    source = ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=TARGETS[target], options=options.__dict__)
    names = list(fn.arg_names)
    spec = {names[path[0]]: "div16" for path, value in attrs.items() if ["tt.divisibility", 16] in value}
    spec.update({names[path[0]]: "=1" for path in constexprs
                 if signature.get(names[path[0]]) == "constexpr" and names[path[0]] not in kwargs})
    return compiled, spec


def cuobjdump_path() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
_LABEL = re.compile(r"^\s*(\$L__BB\d+_\d+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);")


def _instructions(lines: list[str]) -> list[str]:
    """PTX instructions of ``lines``, one per statement (an inline-asm block ``{ .reg .pred p; setp ...; selp ...; }``
    counts each of its instructions); labels, directives, declarations and braces are not instructions."""
    out = []
    for line in lines:
        text = line.split("//")[0].strip()
        if not text or text.endswith(":"):
            continue
        if text.startswith("{"):  # an inline-asm block: its statements
            text = text.strip("{} \t")
        for stmt in text.split(";"):
            stmt = stmt.strip().lstrip("{").strip()
            if stmt and stmt != "}" and not stmt.startswith("."):
                out.append(stmt)
    return out


def _innermost(loops: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]


def _parent(loop: tuple[int, int], loops: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The smallest loop strictly containing ``loop``."""
    a, b = loop
    outer = [(c, d) for c, d in loops if c <= a and b <= d and (c, d) != (a, b)]
    return min(outer, key=lambda t: t[1] - t[0]) if outer else None


def _ptx_loops(ptx: str) -> tuple[list[str], list[tuple[int, int]]]:
    lines = ptx.splitlines()
    labels = {}
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = i
    loops = []
    for i, line in enumerate(lines):
        m = _BRANCH.search(line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            loops.append((labels[m.group(1)], i))
    return lines, loops


def inner_loop(ptx: str, marker: str) -> tuple[list[str], int]:
    """The instructions of the innermost PTX loop with the most instructions matching ``marker`` (a regex: the
    products of the search), and the number of innermost loops holding any. Loops are back edges: a branch to a
    label above it; innermost: no other back edge inside."""
    lines, loops = _ptx_loops(ptx)
    pattern = re.compile(marker)
    scored = []
    for a, b in _innermost(loops):
        body = _instructions(lines[a + 1 : b + 1])
        hits = sum(1 for x in body if pattern.search(x))
        if hits:
            scored.append((hits, body))
    if not scored:
        return [], 0
    return max(scored, key=lambda t: t[0])[1], len(scored)


def tile_loop(lines: list[str], loops: list[tuple[int, int]], marker: str, inner_trips: int,
              body_of=None) -> tuple[list[str], list[str]]:
    """(instructions of one code tile, the innermost product loop's body). With ``inner_trips`` > 1 the products
    sit in a run-time loop over D chunks nested in the code-tile loop: one tile is then the tile loop's own
    instructions plus ``inner_trips`` times the chunk loop's."""
    body_of = body_of or (lambda a, b: _instructions(lines[a + 1 : b + 1]))
    pattern = re.compile(marker)
    best = None
    for loop in _innermost(loops):
        body = body_of(*loop)
        hits = sum(1 for x in body if pattern.search(x))
        if hits and (best is None or hits > best[0]):
            best = (hits, loop, body)
    if best is None:
        return [], []
    _, loop, body = best
    if inner_trips <= 1:
        return body, body
    parent = _parent(loop, loops)
    if parent is None:
        return body, body
    outer = body_of(*parent)
    own = len(outer) - len(body)
    return outer[:own] + body * inner_trips, body


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_SASS_BRA = re.compile(r"\bBRA(?:\.\w+)*\s+(?:\(\*\s*)?0x([0-9a-f]+)")


def sass_tile(sass: str, marker: str, inner_trips: int) -> list[str]:
    """The SASS instructions of one code tile (see :func:`tile_loop`), NOPs excluded."""
    code = [(int(m.group(1), 16), m.group(2)) for m in _SASS_LINE.finditer(sass)]
    index = {addr: i for i, (addr, _) in enumerate(code)}
    loops = []
    for i, (addr, text) in enumerate(code):
        m = _SASS_BRA.search(text)
        if m and int(m.group(1), 16) < addr and int(m.group(1), 16) in index:
            loops.append((index[int(m.group(1), 16)] - 1, i))
    texts = [t for _, t in code]
    body_of = lambda a, b: [t for t in texts[a + 1 : b + 1] if not t.startswith("NOP")]  # noqa: E731
    tile, _ = tile_loop(texts, loops, marker, inner_trips, body_of)
    return tile


def sass_marker(mode: str, dtype: torch.dtype) -> str:
    if mode == "fma" and dtype == torch.float64:
        return r"\bDFMA\b"
    if mode == "fma" or (mode == "ieee" and dtype == torch.float32):
        return r"\bFFMA\b"
    if mode == "ieee":
        return r"\bDMMA\b|\bDFMA\b"
    if mode == "certified":
        return r"\bHGMMA\.\w+\.F32\.BF16|\bHMMA\.\w+\.F32\.BF16|\bUTC\w*MMA\b"
    return r"\bHGMMA\b|\bHMMA\b|\bUTC\w*MMA\b"


_MOVES = re.compile(r"^mov\.(b32|u32|b64|u64|f32|b16|pred)\s+%\w+,\s*(%\w+|0x0|0|-1)$")


_OP_CLASSES = [("wgmma", r"^wgmma\.mma_async"), ("mma", r"^mma\.sync"), ("fma", r"^fma\.rn"),
               ("setp", r"^(@%p\d+ )?setp"), ("selp", r"^selp"), ("ld.global", r"^(@%p\d+ )?ld\.global"),
               ("cp.async", r"^(@%p\d+ )?cp\.async"), ("ld.shared", r"^ld\.shared|^ldmatrix"),
               ("bar", r"^bar\.|^barrier|^wgmma\.(fence|commit|wait)"), ("shfl", r"^shfl"),
               ("cvt", r"^cvt"), ("mov", r"^mov"), ("int/addr", r"^(add|mul|mad|shl|shr|and|or|xor|sub)\.(s|u|b)")]


def _classify(body: list[str]) -> dict:
    counts: dict[str, int] = {}
    for ins in body:
        for name, pat in _OP_CLASSES:
            if re.search(pat, ins):
                counts[name] = counts.get(name, 0) + 1
                break
        else:
            counts["other"] = counts.get("other", 0) + 1
    return counts


def loop_marker(mode: str, dtype: torch.dtype) -> str:
    """The instructions that identify the search's inner loop in the PTX of ``mode``: the products."""
    if mode == "fma" or (mode == "ieee" and dtype == torch.float32):
        return r"^fma\.rn"
    if mode == "ieee":  # float64: DMMA where tl.dot has tensor-core shapes, else FMA
        return r"^mma\.sync|^fma\.rn\.f64"
    if mode == "certified":  # the first pass (the exact re-search is a second loop)
        return r"^(wgmma\.mma_async|mma\.sync).*bf16|^tcgen05\.mma.*bf16|^tcgen05\.mma"
    return r"^wgmma\.mma_async|^mma\.sync|^tcgen05\.mma"


def compile_report(call: Call, target: str) -> CompileReport:
    """Compile ``call`` for ``target`` and read its resources and inner loop. Never raises for a compile failure:
    the report carries ``ok=False`` and the error text."""
    report = CompileReport(call, target, ok=False, shared_limit=search.SHARED_LIMIT[target])
    try:
        fn, args, kwargs, report.config, report.mode, cfg = _launch_of(call, target)
        compiled, report.specialization = jit_compile(fn, args, kwargs, target)
    except Exception as exc:  # report, do not hide: the table and the test show the message
        text = str(exc).strip()
        report.error = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"[:300]
        return report
    ptx = compiled.asm["ptx"]
    report.shared = int(compiled.metadata.shared)
    shapes = {".".join(t) for t in re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)\.(\w+)\.(\w+)\.(\w+)", ptx)}
    shapes |= {"mma." + ".".join(t) for t in re.findall(r"mma\.sync\.aligned\.(m\d+n\d+k\d+)\.row\.col\.(\w+)\.(\w+)", ptx)}
    shapes |= {"tcgen05." + t for t in re.findall(r"tcgen05\.mma\.cta_group::\d\.kind::(\w+)", ptx)}
    report.mma_shapes = sorted(shapes)
    trips = 1
    if call.kernel == "search":
        if cfg.kernel == "large" and not cfg.hoist_a:
            trips = search.padded_dim(call.dim, report.mode, call.dtype) // cfg.block_d
        lines, loops = _ptx_loops(ptx)
        body, _ = tile_loop(lines, loops, loop_marker(report.mode, call.dtype), trips)
        threads = 32 * cfg.num_warps
        report.loop_instructions = len(body)
        report.pairs_per_thread = cfg.block_n * cfg.block_k / threads
        if body:
            report.per_pair = len(body) / report.pairs_per_thread
            report.per_pair_nomov = sum(1 for x in body if not _MOVES.match(x)) / report.pairs_per_thread
            report.per_pass = report.per_pair / 3 if report.mode == "tf32x3" else report.per_pair
            report.loop_ops = _classify(body)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(compiled.asm["cubin"])
        cubin = handle.name
    try:
        out = subprocess.run([cuobjdump_path(), "--dump-resource-usage", cubin], capture_output=True, text=True,
                             check=True).stdout
        if call.kernel == "search" and report.loop_instructions > 0:
            sass = subprocess.run([cuobjdump_path(), "--dump-sass", cubin], capture_output=True, text=True,
                                  check=True).stdout
            tile = sass_tile(sass, sass_marker(report.mode, call.dtype), trips)
            report.sass_per_pair = len(tile) / report.pairs_per_thread if tile else -1.0
    except (OSError, subprocess.CalledProcessError) as exc:
        report.error = f"cuobjdump failed: {exc}"
        return report
    finally:
        os.unlink(cubin)
    match = _USAGE.search(out)
    if match is None:
        report.error = f"cuobjdump printed no resource line: {out.strip()[:200]}"
        return report
    report.registers, report.stack, _, report.local = (int(g) for g in match.groups())
    threads = 32 * (cfg.num_warps if cfg is not None else kwargs.get("num_warps", 4))
    by_regs = 65536 // max(1, max(report.registers, 1) * threads)
    by_shared = SM_SHARED[target] // report.shared if report.shared else 32
    report.ctas_per_sm = max(0, min(by_regs, by_shared, 64 // (threads // 32)))
    report.ok = True
    return report


# ------------------------------------------------------------------------------------------------- tile sweep
# The search tiles of fastrq.kernels.search.TILES come from compiling these candidates for sm_80 and sm_90 under
# the run-time specialization (``python -m benchmarks.kernel_report --sweep PATH``) and keeping, per class, the
# spill-free candidate that fits the shared memory with the fewest PTX instructions per pair (ties: more resident
# programs per SM, then the larger tile).

SWEEP_CLASSES = [  # (label, D, dtype, precision): the floor classes and the default modes' padded D
    ("fp32 D=4 ieee", 4, torch.float32, "ieee"),
    ("fp32 D=16 ieee", 16, torch.float32, "ieee"),
    ("fp32 D=64 ieee", 64, torch.float32, "ieee"),
    *[(f"fp32 D={d} tf32x3", d, torch.float32, "tf32x3") for d in (4, 16, 32, 64, 128)],
    ("fp32 D=64 tf32", 64, torch.float32, "tf32"),
    *[(f"fp32 D={d} bf16", d, torch.float32, "bf16") for d in (16, 64, 128)],
    *[(f"fp32 D={d} certified", d, torch.float32, "certified") for d in (16, 64)],
    *[(f"fp32 D=256 {m}", 256, torch.float32, m) for m in ("tf32x3", "bf16", "tf32", "ieee")],
    *[(f"fp64 D={d}", d, torch.float64, "ieee") for d in (4, 16, 64, 256)],
    # D below its padded D (masked columns) shares the padded class: a class's tile must fit both
    ("fp32 D=1 tf32x3", 1, torch.float32, "tf32x3"),
    ("fp32 D=17 tf32x3", 17, torch.float32, "tf32x3"),
    ("fp32 D=100 tf32x3", 100, torch.float32, "tf32x3"),
    ("fp32 D=4 bf16", 4, torch.float32, "bf16"),
    ("fp32 D=4 certified", 4, torch.float32, "certified"),
    ("fp32 D=32 ieee", 32, torch.float32, "ieee"),
    ("fp32 D=17 ieee", 17, torch.float32, "ieee"),
    ("fp32 D=128 ieee", 128, torch.float32, "ieee"),
    ("fp32 D=100 ieee", 100, torch.float32, "ieee"),
    ("fp32 D=100 bf16", 100, torch.float32, "bf16"),
    ("fp64 D=128", 128, torch.float64, "ieee"),
]


def candidates(dim: int, dtype: torch.dtype, precision: str) -> list[search.SearchConfig]:
    mode = search.kernel_mode(dim, dtype, precision)
    dp = search.padded_dim(dim, mode, dtype)
    C = search.SearchConfig
    if mode == "fma":
        return [C(bn, bk, 4, 2) for bn in (128, 256, 512) for bk in (16, 32)]
    large_tf32x3 = [C(64, bk, w, 2, "large", bd, False) for bd in (32, 64) for bk in (64, 128) for w in (4, 8)]
    large = [C(bn, bk, w, 2, "large", 64, True) for bn in (64, 128) for bk in (64, 128) for w in (4, 8)]
    if dp >= search.LARGE_MIN_DP:
        if mode == "tf32x3":
            return large_tf32x3
        if mode == "tf32":
            return [c for c in large if c.block_n == 64]
        if mode == "ieee" or dtype == torch.float64:  # FMA dot / DMMA: whole operand rows per thread, small tiles
            return [C(bn, bk, w, 2, "large", bd, h) for bn in (32, 64) for bk in (32, 64) for w in (4, 8)
                    for bd in (32, 64) for h in (True, False)]
        return large
    tiles = [C(bn, bk, w, 2) for bn in (64, 128) for bk in (64, 128) for w in (4, 8)]
    tiles += [C(bn, 32, w, 2) for bn in (64, 128) for w in (4, 8)]  # narrow code tiles: fewer live registers
    if mode == "ieee" or dtype == torch.float64:  # FMA dot / DMMA: whole operand rows per thread
        tiles += [C(32, bk, w, 2) for bk in (32, 64) for w in (4, 8)]
    if dp >= 128:  # the register tile may not fit: the large kernel competes
        tiles += large_tf32x3 if mode == "tf32x3" else large
    return tiles


def sweep_calls(targets=FLOOR_TARGETS) -> list[tuple[Call, str]]:
    jobs = []
    for label, dim, dtype, precision in SWEEP_CLASSES:
        for cfg in candidates(dim, dtype, precision):
            for target in targets:
                jobs.append((Call("search", label, dim, dtype, precision, config=cfg), target))
    return jobs


def acceptable(record: dict) -> bool:
    """A report record (see benchmarks/kernel_report.record) that compiled, does not spill and fits the shared
    memory, with its inner loop found."""
    return (record["ok"] and record["stack"] == 0 and record["local"] == 0 and record["shared"] <= record["shared_limit"]
            and record["per_pair"] > 0)


def best_of(records: list[dict]) -> dict | None:
    """The candidate a class keeps: acceptable, fewest PTX instructions per pair (within 3 %: more resident
    programs per SM, then more pairs per program). ``records`` may hold several sweep labels of one class (the
    same padded D): a candidate must then be acceptable for every one, and counts with its worst per-pair value."""
    by_config: dict = {}
    for r in records:
        by_config.setdefault(r["config"], []).append(r)
    labels = {r["label"] for r in records}
    merged = []
    for group in by_config.values():
        if {r["label"] for r in group} == labels and all(acceptable(r) for r in group):
            worst = max(group, key=lambda r: r["per_pair"])
            merged.append({**worst, "ctas_per_sm": min(r["ctas_per_sm"] for r in group)})
    if not merged:
        return None
    low = min(r["per_pair"] for r in merged)
    near = [r for r in merged if r["per_pair"] <= low * 1.03]
    return max(near, key=lambda r: (r["ctas_per_sm"], r["tiles"]["block_n"] * r["tiles"]["block_k"], -r["per_pair"]))
