"""Search tiles per (mode class, padded D) and target: GENERATED, do not edit.

Written by ``python -m benchmarks.kernel_report --sweep benchmarks/results/kernels/tile_sweep.json`` on 2026-12-01 (triton 3.8.0) from that file: per class, the candidate
compiled under the run-time specialization (N = 65,536, K = 1,024, L = 8) that does not spill and fits
the shared memory, with the fewest PTX instructions per (row, code) pair (within 3 %: more resident
programs per SM, then the larger tile). fastrq.kernels.search.choose_config reads it.
"""

TILES = {
    ('bf16', 16): {
        'sm_80': {'block_n': 128, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 4.64 PTX/pair (worst of bf16 DP=16 (fp32 D=16 bf16, fp32 D=4 bf16))
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 4.97 PTX/pair (worst of bf16 DP=16 (fp32 D=16 bf16, fp32 D=4 bf16))
    },
    ('bf16', 64): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 6.28 PTX/pair (worst of bf16 DP=64 (fp32 D=64 bf16))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 6.62 PTX/pair (worst of bf16 DP=64 (fp32 D=64 bf16))
    },
    ('bf16', 128): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 8.31 PTX/pair (worst of bf16 DP=128 (fp32 D=128 bf16, fp32 D=100 bf16))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 7.16 PTX/pair (worst of bf16 DP=128 (fp32 D=128 bf16, fp32 D=100 bf16))
    },
    ('bf16', 256): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 12.12 PTX/pair (worst of bf16 DP=256 (fp32 D=256 bf16))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 9.22 PTX/pair (worst of bf16 DP=256 (fp32 D=256 bf16))
    },
    ('certified', 16): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 6.97 PTX/pair (worst of certified DP=16 (fp32 D=16 certified, fp32 D=4 certified))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 7.69 PTX/pair (worst of certified DP=16 (fp32 D=16 certified, fp32 D=4 certified))
    },
    ('certified', 64): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 8.81 PTX/pair (worst of certified DP=64 (fp32 D=64 certified))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 8.62 PTX/pair (worst of certified DP=64 (fp32 D=64 certified))
    },
    ('f64', 16): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 7.88 PTX/pair (worst of f64 DP=16 (fp64 D=16))
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 7.66 PTX/pair (worst of f64 DP=16 (fp64 D=16))
    },
    ('f64', 64): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 19.81 PTX/pair (worst of f64 DP=64 (fp64 D=64))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 20.81 PTX/pair (worst of f64 DP=64 (fp64 D=64))
    },
    ('f64', 128): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 41.62 PTX/pair (worst of f64 DP=128 (fp64 D=128))
        'sm_90': {'block_n': 32, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 45.62 PTX/pair (worst of f64 DP=128 (fp64 D=128))
    },
    ('f64', 256): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': False},  # 74.19 PTX/pair (worst of f64 DP=256 (fp64 D=256))
        'sm_90': {'block_n': 32, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 69.0 PTX/pair (worst of f64 DP=256 (fp64 D=256))
    },
    ('fma', 4): {
        'sm_80': {'block_n': 256, 'block_k': 16, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 10.88 PTX/pair (worst of fma DP=4 (fp32 D=4 ieee))
        'sm_90': {'block_n': 256, 'block_k': 16, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 10.88 PTX/pair (worst of fma DP=4 (fp32 D=4 ieee))
    },
    ('fma64', 4): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 12.41 PTX/pair (worst of fma64 DP=4 (fp64 D=4))
        'sm_90': {'block_n': 256, 'block_k': 16, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 10.03 PTX/pair (worst of fma64 DP=4 (fp64 D=4))
    },
    ('ieee', 16): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 21.03 PTX/pair (worst of ieee DP=16 (fp32 D=16 ieee))
        'sm_90': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 21.03 PTX/pair (worst of ieee DP=16 (fp32 D=16 ieee))
    },
    ('ieee', 32): {
        'sm_80': {'block_n': 32, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 40.44 PTX/pair (worst of ieee DP=32 (fp32 D=32 ieee, fp32 D=17 ieee))
        'sm_90': {'block_n': 32, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 40.94 PTX/pair (worst of ieee DP=32 (fp32 D=32 ieee, fp32 D=17 ieee))
    },
    ('ieee', 64): {
        'sm_80': {'block_n': 32, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 81.62 PTX/pair (worst of ieee DP=64 (fp32 D=64 ieee))
        'sm_90': {'block_n': 32, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 82.62 PTX/pair (worst of ieee DP=64 (fp32 D=64 ieee))
    },
    ('ieee', 128): {
        'sm_80': {'block_n': 32, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 158.62 PTX/pair (worst of ieee DP=128 (fp32 D=128 ieee, fp32 D=100 ieee))
        'sm_90': {'block_n': 32, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 160.62 PTX/pair (worst of ieee DP=128 (fp32 D=128 ieee, fp32 D=100 ieee))
    },
    ('ieee', 256): {
        'sm_80': {'block_n': 64, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # 305.06 PTX/pair (worst of ieee DP=256 (fp32 D=256 ieee))
        'sm_90': {'block_n': 32, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': True},  # 296.38 PTX/pair (worst of ieee DP=256 (fp32 D=256 ieee))
    },
    ('tf32', 64): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 8.03 PTX/pair (worst of tf32 DP=64 (fp32 D=64 tf32))
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 7.88 PTX/pair (worst of tf32 DP=64 (fp32 D=64 tf32))
    },
    ('tf32', 256): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 19.88 PTX/pair (worst of tf32 DP=256 (fp32 D=256 tf32))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 64, 'hoist_a': True},  # 11.75 PTX/pair (worst of tf32 DP=256 (fp32 D=256 tf32))
    },
    ('tf32x3', 8): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 5.66 PTX/pair (worst of tf32x3 DP=8 (fp32 D=4 tf32x3, fp32 D=1 tf32x3))
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 5.67 PTX/pair (worst of tf32x3 DP=8 (fp32 D=4 tf32x3, fp32 D=1 tf32x3))
    },
    ('tf32x3', 16): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 6.81 PTX/pair (worst of tf32x3 DP=16 (fp32 D=16 tf32x3))
        'sm_90': {'block_n': 128, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 6.09 PTX/pair (worst of tf32x3 DP=16 (fp32 D=16 tf32x3))
    },
    ('tf32x3', 32): {
        'sm_80': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 10.19 PTX/pair (worst of tf32x3 DP=32 (fp32 D=32 tf32x3, fp32 D=17 tf32x3))
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 9.0 PTX/pair (worst of tf32x3 DP=32 (fp32 D=32 tf32x3, fp32 D=17 tf32x3))
    },
    ('tf32x3', 64): {
        'sm_80': {'block_n': 128, 'block_k': 32, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 15.88 PTX/pair (worst of tf32x3 DP=64 (fp32 D=64 tf32x3))
        'sm_90': {'block_n': 128, 'block_k': 64, 'num_warps': 8, 'num_stages': 2, 'kernel': 'registers', 'block_d': 0, 'hoist_a': True},  # 12.0 PTX/pair (worst of tf32x3 DP=64 (fp32 D=64 tf32x3))
    },
    ('tf32x3', 128): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # 27.25 PTX/pair (worst of tf32x3 DP=128 (fp32 D=128 tf32x3, fp32 D=100 tf32x3))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # 22.59 PTX/pair (worst of tf32x3 DP=128 (fp32 D=128 tf32x3, fp32 D=100 tf32x3))
    },
    ('tf32x3', 256): {
        'sm_80': {'block_n': 64, 'block_k': 128, 'num_warps': 8, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # 49.0 PTX/pair (worst of tf32x3 DP=256 (fp32 D=256 tf32x3))
        'sm_90': {'block_n': 64, 'block_k': 64, 'num_warps': 4, 'num_stages': 2, 'kernel': 'large', 'block_d': 32, 'hoist_a': False},  # 38.97 PTX/pair (worst of tf32x3 DP=256 (fp32 D=256 tf32x3))
    },
}
