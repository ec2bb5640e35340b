"""Time conv2d's chunked im2col + GEMM (forward and weight gradient) for several chunk sizes, and its
first layers with their columns kept from forward to backward or rebuilt.

    python -m benchmarks.conv_chunks [--runs 7] [--sizes 0.5 1 2 4 16]

``minidl.kernels.cpu.CHUNK_BYTES`` bounds the im2col columns built at a time.  For the 3x3 layers of the
reference nets A and D (batch 64 and 128) this times ``conv_gemm`` (forward; the stride-1 input gradient is
the same function) and ``conv_weight_grad`` with each chunk size, the sizes alternating inside every
round so that machine noise hits all alike, and prints medians in ms and their sum over the layers.

``minidl.kernels.cpu.KEEP_COLUMNS_BYTES``: columns up to that size are built whole in forward and kept for the
weight gradient.  The second table times the fast kernel's forward + backward (dW, db; no dx: the input
image) on the first layers of nets A, B and D with the columns kept and with KEEP_COLUMNS_BYTES = 0
(rebuilt), alternating, and prints medians in ms.
"""
import argparse
import statistics
import time

import numpy as np

from minidl.kernels import cpu as conv

# (N, H, W, C_in, C_out, padding) of the 3x3 convolutions of nets A and D
LAYERS = [(64, 32, 32, 3, 32, 0), (64, 30, 30, 32, 32, 0), (64, 14, 14, 32, 64, 0), (64, 12, 12, 64, 64, 0),
          (64, 32, 32, 32, 32, 1), (64, 16, 16, 64, 64, 1), (128, 30, 30, 32, 32, 0)]
# (N, C_in, H, C_out, kernel, padding) of the first layers of nets A, D and B (NCHW input images)
FIRST_LAYERS = [(64, 3, 32, 32, 3, 0), (128, 3, 32, 32, 3, 0), (64, 3, 32, 32, 3, 1), (128, 3, 32, 32, 3, 1),
                (64, 1, 28, 10, 5, 0), (128, 1, 28, 10, 5, 0)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.5, 1, 2, 4, 16], help="chunk sizes in MB")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    saved = conv.CHUNK_BYTES
    total = dict.fromkeys(args.sizes, 0.0)
    print(f"current CHUNK_BYTES: {saved / 2**20:g} MB; ms, median of {args.runs}, forward + weight gradient")
    print(f"{'N, H, W, Cin, Cout, pad':>26} | " + " ".join(f"{s:>7g}MB" for s in args.sizes))
    try:
        for n, h, w, c, k, pad in LAYERS:
            x = rng.standard_normal((n, h, w, c), dtype=np.float32)
            wmat = rng.standard_normal((9 * c, k), dtype=np.float32)
            out_hw = (h + 2 * pad - 2, w + 2 * pad - 2)
            g = rng.standard_normal((n,) + out_hw + (k,), dtype=np.float32)
            times = {s: [] for s in args.sizes}
            for _ in range(args.runs + 1):
                for s in args.sizes:
                    conv.CHUNK_BYTES = int(s * 2**20)
                    t0 = time.perf_counter()
                    conv.conv_gemm(conv.Columns(x, (pad,) * 4, (3, 3), (1, 1), (1, 1), out_hw), wmat)
                    conv.conv_weight_grad(conv.Columns(x, (pad,) * 4, (3, 3), (1, 1), (1, 1), out_hw), g)
                    times[s].append(time.perf_counter() - t0)
            med = {s: 1e3 * statistics.median(v[1:]) for s, v in times.items()}
            for s in args.sizes:
                total[s] += med[s]
            print(f"{str((n, h, w, c, k, pad)):>26} | " + " ".join(f"{med[s]:9.2f}" for s in args.sizes))
    finally:
        conv.CHUNK_BYTES = saved
    print(f"{'sum':>26} | " + " ".join(f"{total[s]:9.2f}" for s in args.sizes))
    keep_or_rebuild(rng, args.runs)


def keep_or_rebuild(rng, runs):
    saved = conv.KEEP_COLUMNS_BYTES
    print(f"\nfirst layers, conv2d forward + backward (dW, db), ms, median of {runs}: columns kept "
          f"(KEEP_COLUMNS_BYTES {saved / 2**20:g} MB) or rebuilt (0)")
    print(f"{'N, Cin, H, Cout, k, pad':>26} | {'col MB':>7} {'kept':>8} {'rebuilt':>8} {'ratio':>6}")
    try:
        for n, c, h, k, ks, pad in FIRST_LAYERS:
            x = rng.standard_normal((n, c, h, h), dtype=np.float32)
            w = rng.standard_normal((k, c, ks, ks), dtype=np.float32)
            b = rng.standard_normal(k, dtype=np.float32)
            ho = h + 2 * pad - ks + 1
            gy = np.ascontiguousarray(rng.standard_normal((n, ho, ho, k), dtype=np.float32)).transpose(0, 3, 1, 2)
            times = {saved: [], 0: []}
            for _ in range(runs + 1):
                for keep in times:
                    conv.KEEP_COLUMNS_BYTES = keep
                    t0 = time.perf_counter()
                    _, state = conv.conv2d_forward(x, w, b, (1, 1), (pad,) * 4, (1, 1), (ho, ho))
                    conv.conv2d_backward(gy, state, (False, True, True))
                    times[keep].append(time.perf_counter() - t0)
            kept, rebuilt = (1e3 * statistics.median(times[k][1:]) for k in (saved, 0))
            mb = n * ho * ho * (c * ks * ks + 1) * 4 / 2**20
            print(f"{str((n, c, h, k, ks, pad)):>26} | {mb:7.1f} {kept:8.2f} {rebuilt:8.2f} {kept / rebuilt:6.2f}")
    finally:
        conv.KEEP_COLUMNS_BYTES = saved


if __name__ == "__main__":
    main()
