"""Build, cache and load ``rq_cpu.c``.

The library is compiled with ``$CC`` (default ``cc``) as ``-O3 -march=native -shared -fPIC`` into the cache folder
(``$FASTRQ_CACHE_DIR``, default ``$XDG_CACHE_HOME/fastrq`` or ``~/.cache/fastrq``), under a name that hashes the
source, the flags, the compiler and this CPU's feature flags, so a shared home folder never serves a binary built for
another CPU. Compilation writes a temporary file and renames it, so concurrent processes (DDP ranks, test workers)
never load a half-written library. ``FASTRQ_CPU_KERNEL=0`` turns the kernels off.

It is built with ``-fopenmp`` where the compiler supports it (else without, and the launcher splits rows across
Python threads). The library then needs ``libgomp.so.1``, which the dynamic loader resolves to the copy torch has
already loaded (same soname), so the search runs on torch's own OpenMP thread team.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from fastrq.ops import environment

__all__ = ["library", "loaded_library", "unavailable_reason", "ENV_VAR"]

ENV_VAR = "FASTRQ_CPU_KERNEL"
SOURCE = Path(__file__).with_name("rq_cpu.c")
# gnu11: fused multiply-adds allowed (ISO C11 mode turns contraction off and costs 15–25 % here)
FLAGS = ("-O3", "-march=native", "-std=gnu11", "-funroll-loops", "-shared", "-fPIC")
OPENMP_FLAGS = ("-fopenmp",)
# Builds of variants for the tests of the portable code paths (tests/test_training_pass.py): without AVX-512 GCC 12
# lowers the 16-lane vectors to pairs of AVX2 registers, which took 2 min 25 s at -O3 -funroll-loops on this 2-core
# machine (2026-12-02; over the old 120 s limit); -O2 compiles the same source, with the same floating-point
# semantics (no unsafe math at any level), in 7 s.
VARIANT_FLAGS = ("-O2", "-march=native", "-std=gnu11", "-shared", "-fPIC")
BUILD_TIMEOUT_S = 600

_P = ctypes.c_void_p
_I = ctypes.c_int64
_D = ctypes.c_double
_SIGNATURES = {
    "fastrq_lanes": ([], ctypes.c_int),
    "fastrq_rows": ([], ctypes.c_int),
    "fastrq_max_dim": ([], ctypes.c_int),
    "fastrq_prepare_books": ([_P, _I, _I, _I, _P, _I, _P, _P, _P], None),
    "fastrq_openmp": ([], ctypes.c_int),
    "fastrq_search_walk": ([_P, _I, _I, _I, _P, _P, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P, _P], None),
    "fastrq_search_walk_parallel": (
        [_P, _I, _I, _I, _P, _P, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _I, _P], None
    ),
    "fastrq_nearest_code": ([_P, _I, _I, _I, _P, _I, _I, _I, _P, _P, _P, _I, _P], None),
    "fastrq_bf16_search": ([], ctypes.c_int),
    "fastrq_statistics": ([_P, _I, _I, _I, _P, _I, _I, _I, _P, _P, _P, _P, _P], None),
    "fastrq_statistics_chunks": ([_I, _I], _I),
    "fastrq_ema_update": ([_P, _P, _P, _P, _P, _I, _I, _I, _P, _P, ctypes.c_double, ctypes.c_double], None),
    "fastrq_certified_rows": ([_P, _I, _I, _P, _P, _I], None),
    "fastrq_certified_codes": ([_P, _P, _I, _I, _I, _P, _P], None),
    "fastrq_row_hashes": ([_P, _I, _I, _P, _P], None),
    "fastrq_hash_uniform_int": ([_I, _I, _I, _I, _P], None),
    "fastrq_dead_code_candidates": ([_P, _I, _I, _I, _P, _I, _I, _P, _I, _I, _I, _I, _I, _P, _P], _I),
    "fastrq_restart_dead": ([_P, _P, _P, _P, _I, _I, _I, _P, _P, _D], None),
    "fastrq_level_statistics": ([_P, _P, _P, _I, _I, _I, _P, _D, _D, _P], None),
    "fastrq_training_step": (
        [_P, _I, _I, _I, _P, _P, _P, _P, _I, _I, _P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _D, _D, _D, _I, _P, _P,
         _P, _I, _P],
        _I,
    ),
    "fastrq_walk_level": ([_P, _I, _I, _P, _I, _P, _P, _P, _P, _P, _P, _I, _P, _I], None),
    "fastrq_prepare_centred": ([_P, _I, _I, _I, _P, _P, _P, _P], _I),
    "fastrq_repeated_hashes": ([_P, _I, _I, _P, _P, _I, _P], None),
    "fastrq_certified_select": (
        [_P, _I, _I, _I, _I, _P, _P, _D, _D, _D, _P, _I, _P, _P, _I, _P, _P, _P, _I], None
    ),
}


# What the launchers (launch.LANES, launch.ROWS) pad codebooks and cut row runs to: multiples of every build's
# lanes (16 with AVX-512, else 8) and rows a block (8).
PAD_CODES, PAD_ROWS = 16, 8


def _cache_dir() -> Path:
    if os.environ.get("FASTRQ_CACHE_DIR"):
        return Path(os.environ["FASTRQ_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastrq"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    name = os.environ.get("CC", "cc")
    return shutil.which(name) or shutil.which("gcc") or shutil.which("clang")


def _build(compiler: str, flags: tuple[str, ...]) -> tuple[Path | None, str | None]:
    """The cached library built with ``flags`` (compiled now if missing), or None and why not."""
    key = hashlib.sha256(
        b"\0".join([SOURCE.read_bytes(), " ".join(flags).encode(), compiler.encode(), platform.machine().encode(),
                    _cpu_flags().encode()])
    ).hexdigest()[:16]
    folder = _cache_dir()
    target = folder / f"rq_cpu-{key}.so"
    if target.exists():
        return target, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".so", delete=False) as tmp:
            partial = Path(tmp.name)
        result = subprocess.run(
            [compiler, *flags, "-o", str(partial), str(SOURCE), "-lm"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            return None, f"compiling {SOURCE.name} failed: {result.stderr.strip()[:500]}"
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not build {SOURCE.name} in {folder}: {exc}"
    return target, None


@functools.lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found ($CC, cc, gcc or clang)"
    reasons = []
    for flags in (FLAGS + OPENMP_FLAGS, FLAGS):  # with OpenMP where the compiler has it
        lib, reason = load_built(compiler, flags)
        if lib is not None:
            return lib, None
        reasons.append(reason)
    return None, "; ".join(reasons)


def load_built(compiler: str, flags: tuple[str, ...]) -> tuple[ctypes.CDLL | None, str | None]:
    """The library built with ``flags`` (compiled now if not cached), loaded with its signatures set; or None and
    why not. (Tests load variants with it, e.g. without AVX-512BW, to check the portable code paths.)"""
    import torch  # noqa: F401  (loaded first, so that libgomp.so.1 resolves to torch's own copy)

    target, reason = _build(compiler, flags)
    if target is None:
        return None, reason
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        return None, f"could not load {target}: {exc}"
    for name, (argtypes, restype) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    if PAD_CODES % lib.fastrq_lanes() or PAD_ROWS % lib.fastrq_rows():
        return None, (f"{target.name} scores {lib.fastrq_lanes()} codes of {lib.fastrq_rows()} rows at a time; the "
                      f"launchers pad to multiples of {PAD_CODES} codes and {PAD_ROWS} rows")
    return lib, None


def library() -> ctypes.CDLL | None:
    """The loaded library, or None when ``FASTRQ_CPU_KERNEL=0`` or it cannot be built or loaded here
    (:func:`unavailable_reason` says why). ``FASTRQ_CPU_KERNEL=1`` makes a failed build an error."""
    mode = environment.get(ENV_VAR, "auto")
    if mode == "0":
        return None
    lib, reason = _load()
    if lib is None and mode == "1":
        from fastrq.errors import BackendUnavailableError

        raise BackendUnavailableError(f"{ENV_VAR}=1 but the native CPU kernel is unavailable: {reason}")
    return lib


def loaded_library() -> ctypes.CDLL | None:
    """The loaded library without reading ``FASTRQ_CPU_KERNEL`` again: for launchers whose caller has just
    checked :func:`library` (the environment read costs about a microsecond a call)."""
    return _load()[0]


def unavailable_reason() -> str | None:
    """None when the kernels can run here, else why not."""
    if environment.get(ENV_VAR, "auto") == "0":
        return f"{ENV_VAR}=0"
    return _load()[1]
