"""Time the two orientations of the fully connected layer's products on this machine's BLAS.

    python -m benchmarks.gemm_orientation

For x (N, in), W (out, in), g (N, out) it times each product as written and in its transposed form,
(b^T a^T)^T, which gives the same numbers.  On the 2-core machine of benchmarks/README.md, OpenBLAS with
two threads ran the 'wide' orientation (result with fewer rows than columns) 4-8x slower than the tall one
whenever another process wanted a core, and no faster with one thread; minidl.ops.arith.gemm therefore
always takes the tall one.  Run it with OPENBLAS_NUM_THREADS=1 to see the single-thread figures.
"""
import time

import numpy as np

SHAPES = [(64, 3072, 3072), (64, 3072, 1000), (128, 1600, 512), (128, 4096, 512)]


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


if __name__ == "__main__":
    main()
