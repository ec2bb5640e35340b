"""Time conv2d's chunked im2col + GEMM (forward and weight gradient) for several chunk sizes.

    python -m benchmarks.conv_chunks [--runs 7] [--sizes 0.5 1 2 4 16]

``minidl.ops.conv.CHUNK_BYTES`` bounds the im2col columns built at a time.  For the 3x3 layers of the
reference nets A and D (batch 64 and 128) this times ``conv_gemm`` (forward; the stride-1 input gradient is
the same function) and ``conv_weight_grad`` with each chunk size, the sizes alternating inside every
round so that machine noise hits all alike, and prints medians in ms and their sum over the layers.
"""
import argparse
import statistics
import time

import numpy as np

import minidl.ops.conv as conv

# (N, H, W, C_in, C_out, padding) of the 3x3 convolutions of nets A and D
LAYERS = [(64, 32, 32, 3, 32, 0), (64, 30, 30, 32, 32, 0), (64, 14, 14, 32, 64, 0), (64, 12, 12, 64, 64, 0),
          (64, 32, 32, 32, 32, 1), (64, 16, 16, 64, 64, 1), (128, 30, 30, 32, 32, 0)]


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
            xpad = conv.pad_nhwc(rng.standard_normal((n, h, w, c), dtype=np.float32), (pad,) * 4)
            wmat = rng.standard_normal((9 * c, k), dtype=np.float32)
            out_hw = (h + 2 * pad - 2, w + 2 * pad - 2)
            g = rng.standard_normal((n,) + out_hw + (k,), dtype=np.float32)
            times = {s: [] for s in args.sizes}
            for _ in range(args.runs + 1):
                for s in args.sizes:
                    conv.CHUNK_BYTES = int(s * 2**20)
                    t0 = time.perf_counter()
                    conv.conv_gemm(conv.Columns(xpad, (3, 3), (1, 1), (1, 1), out_hw), wmat)
                    conv.conv_weight_grad(conv.Columns(xpad, (3, 3), (1, 1), (1, 1), out_hw), g)
                    times[s].append(time.perf_counter() - t0)
            med = {s: 1e3 * statistics.median(v[1:]) for s, v in times.items()}
            for s in args.sizes:
                total[s] += med[s]
            print(f"{str((n, h, w, c, k, pad)):>26} | " + " ".join(f"{med[s]:9.2f}" for s in args.sizes))
    finally:
        conv.CHUNK_BYTES = saved
    print(f"{'sum':>26} | " + " ".join(f"{total[s]:9.2f}" for s in args.sizes))


if __name__ == "__main__":
    main()
