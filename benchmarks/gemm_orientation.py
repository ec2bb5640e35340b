"""Time the two orientations of the fully connected layer's products on this machine's BLAS.

    python -m benchmarks.gemm_orientation

For x (N, in), W (out, in), g (N, out) it times each product as written and in its transposed form,
(b^T a^T)^T, which gives the same numbers.  On the 2-core machine of benchmarks/README.md, OpenBLAS with
two threads ran the 'wide' orientation (result with fewer rows than columns) 4-8x slower than the tall one
whenever another process wanted a core, and no faster with one thread; minidl.ops.arith.gemm therefore
always takes the tall one.  Run it with OPENBLAS_NUM_THREADS=1 to see the single-thread figures.

It then times conv2d's products on their chunk shapes (M rows of im2col, K = kh kw C features, N output
channels) in GFLOP/s, tall (col @ W) and wide ((W^T col^T)^T): the rate that bounds a convolution's time.
"""
import time

import numpy as np

SHAPES = [(64, 3072, 3072), (64, 3072, 1000), (128, 1600, 512), (128, 4096, 512)]
# (M, K, N) of one 4 MB im2col chunk of nets A, B and D: A's second layer (4 images of 28x28, 3x3x32 -> 32),
# A's fourth (3x3x64 -> 64), D's second (3x3x32 -> 32 on 32x32) and the MNIST CNN's second (5x5x10 -> 20)
CONV_SHAPES = [(3136, 288, 32), (1600, 576, 64), (3072, 288, 32), (4096, 250, 20)]


def median_ms(f, runs=15):
    f()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    print(f"{'N, in, out':>18} | {'y = x W^T':>9} {'(W x^T)^T':>10} | {'dx = g W':>9} {'(W^T g^T)^T':>11}")
    for n, i, o in SHAPES:
        x = rng.standard_normal((n, i), dtype=np.float32)
        w = rng.standard_normal((o, i), dtype=np.float32)
        g = rng.standard_normal((n, o), dtype=np.float32)
        print(f"{str((n, i, o)):>18} | {median_ms(lambda: x @ w.T):9.2f} {median_ms(lambda: (w @ x.T).T):10.2f} | "
              f"{median_ms(lambda: g @ w):9.2f} {median_ms(lambda: (w.T @ g.T).T):11.2f}   (ms, median of 15)")
    print(f"\n{'conv chunk M, K, N':>18} | {'col @ W':>9} {'(W^T col^T)^T':>14}   (GFLOP/s, median of 15)")
    for m, k, n in CONV_SHAPES:
        col = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        gflop = 2 * m * k * n / 1e6  # per ms
        print(f"{str((m, k, n)):>18} | {gflop / median_ms(lambda: col @ w):9.0f} "
              f"{gflop / median_ms(lambda: (w.T @ col.T).T):14.0f}")


if __name__ == "__main__":
    main()
