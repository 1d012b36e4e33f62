"""Search tiles per (mode class, padded D) and target: GENERATED, do not edit.

Written by ``python -m benchmarks.kernel_report --sweep benchmarks/results/kernels/tile_sweep.json`` on 2026-12-01 (triton 3.8.0) from that file: per class, the candidate
compiled under the run-time specialization (N = 65,536, K = 1,024, L = 8) that does not spill and fits
the shared memory, with the fewest PTX instructions per (row, code) pair (within 3 %: more resident
programs per SM, then the larger tile). fastrq.kernels.search.choose_config reads it.
"""

TILES = {
    ('bf16', 16): {
        'sm_80': {'block_n': 128, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 bf16: 4.64 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 128, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 bf16: 4.34 PTX/pair
    },
    ('bf16', 64): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 bf16: 6.28 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 bf16: 6.62 PTX/pair
    },
    ('bf16', 128): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=128 bf16: 8.16 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # fp32 D=128 bf16: 7.16 PTX/pair
    },
    ('bf16', 256): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # fp32 D=256 bf16: 12.12 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # fp32 D=256 bf16: 9.22 PTX/pair
    },
    ('certified', 16): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 certified: 6.97 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 certified: 7.69 PTX/pair
    },
    ('certified', 64): {
        'sm_80': {'block_n': 64, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 certified: 8.81 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 certified: 8.62 PTX/pair
    },
    ('f64', 16): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp64 D=16: 7.88 PTX/pair
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp64 D=16: 7.66 PTX/pair
    },
    ('f64', 64): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp64 D=64: 19.81 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp64 D=64: 20.81 PTX/pair
    },
    ('f64', 256): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': False},  # fp64 D=256: 74.19 PTX/pair
        'sm_90': {'block_n': 32, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # fp64 D=256: 69.0 PTX/pair
    },
    ('fma', 4): {
        'sm_80': {'block_n': 256, 'block_k': 16, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=4 ieee: 10.88 PTX/pair
        'sm_90': {'block_n': 256, 'block_k': 16, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=4 ieee: 10.88 PTX/pair
    },
    ('fma64', 4): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp64 D=4: 12.41 PTX/pair
        'sm_90': {'block_n': 256, 'block_k': 16, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp64 D=4: 10.03 PTX/pair
    },
    ('ieee', 16): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 ieee: 21.03 PTX/pair
        'sm_90': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 ieee: 21.03 PTX/pair
    },
    ('ieee', 64): {
        'sm_80': {'block_n': 32, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 ieee: 81.62 PTX/pair
        'sm_90': {'block_n': 32, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 ieee: 82.62 PTX/pair
    },
    ('ieee', 256): {
        'sm_80': {'block_n': 64, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # fp32 D=256 ieee: 305.06 PTX/pair
        'sm_90': {'block_n': 32, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': True},  # fp32 D=256 ieee: 296.38 PTX/pair
    },
    ('tf32', 64): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 tf32: 8.03 PTX/pair
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 tf32: 7.88 PTX/pair
    },
    ('tf32', 256): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # fp32 D=256 tf32: 19.88 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # fp32 D=256 tf32: 11.75 PTX/pair
    },
    ('tf32x3', 8): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=4 tf32x3: 5.66 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 128, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=4 tf32x3: 4.97 PTX/pair
    },
    ('tf32x3', 16): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 tf32x3: 6.81 PTX/pair
        'sm_90': {'block_n': 128, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=16 tf32x3: 6.09 PTX/pair
    },
    ('tf32x3', 32): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=32 tf32x3: 9.5 PTX/pair
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=32 tf32x3: 9.0 PTX/pair
    },
    ('tf32x3', 64): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 tf32x3: 15.88 PTX/pair
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # fp32 D=64 tf32x3: 12.0 PTX/pair
    },
    ('tf32x3', 128): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # fp32 D=128 tf32x3: 27.25 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # fp32 D=128 tf32x3: 22.59 PTX/pair
    },
    ('tf32x3', 256): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # fp32 D=256 tf32x3: 49.0 PTX/pair
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # fp32 D=256 tf32x3: 38.97 PTX/pair
    },
}
