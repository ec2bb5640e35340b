"""Time the two ways conv2d computes the input gradient at stride 1, on the layers of the reference nets.

    python -m benchmarks.conv_input_grad [--runs 9]

``full``: dx = conv(pad(gy), flipped kernel), an im2col + GEMM with N H W rows (the input's pixels);
``col2im``: dcol = gy @ W^T with N Ho Wo rows, then kh kw strided additions.  The two alternate inside
every round; medians in ms.  ``minidl.kernels.cpu.FULL_CORRELATION_MAX_RATIO`` picks ``full`` when
H W <= ratio * Ho Wo (``full_correlation_pads``); the last column says what it picks.
"""
import argparse
import statistics
import time

import numpy as np

import minidl
from minidl.kernels import cpu as conv

# (name, N, C_in, H, C_out, k, padding): the stride-1 convolutions of nets A, B and D that need dx
LAYERS = [("A conv2", 64, 32, 30, 32, 3, 0), ("A conv3", 64, 32, 14, 64, 3, 0), ("A conv4", 64, 64, 12, 64, 3, 0),
          ("B conv2", 64, 10, 12, 20, 5, 0), ("D conv2", 64, 32, 32, 32, 3, 1), ("D conv4", 64, 64, 16, 64, 3, 1),
          ("A conv2 b128", 128, 32, 30, 32, 3, 0), ("B conv2 b128", 128, 10, 12, 20, 5, 0)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"ratio threshold {conv.FULL_CORRELATION_MAX_RATIO}; ms, median of {args.runs}")
    print(f"{'layer':>14} {'HW/HoWo':>8} {'full':>8} {'col2im':>8}  picks")
    for name, n, c, h, k, ks, pad in LAYERS:
        w = rng.standard_normal((k, c, ks, ks), dtype=np.float32)
        x_shape, pads, ho = (n, c, h, h), (pad,) * 4, h + 2 * pad - ks + 1
        g = rng.standard_normal((n, ho, ho, k), dtype=np.float32)
        full = (ks - 1 - pad,) * 4
        ways = {"full": lambda: conv.conv_input_grad_full(g, w, x_shape, (1, 1), full),
                "col2im": lambda: conv.conv_input_grad_col2im(g, w, x_shape, (1, 1), pads, (1, 1), (ho, ho))}
        np.testing.assert_allclose(ways["full"](), ways["col2im"](), rtol=1e-3, atol=1e-3)
        times = {m: [] for m in ways}
        for _ in range(args.runs + 1):
            for m, f in ways.items():
                t0 = time.perf_counter()
                f()
                times[m].append(time.perf_counter() - t0)
        med = {m: 1e3 * statistics.median(v[1:]) for m, v in times.items()}
        ratio = h * h / (ho * ho)
        picks = "col2im" if conv.full_correlation_pads(x_shape, (ks, ks), (1, 1), pads, (1, 1), (ho, ho)) is None \
            else "full"
        print(f"{name:>14} {ratio:8.2f} {med['full']:8.2f} {med['col2im']:8.2f}  {picks}")


if __name__ == "__main__":
    minidl.manual_seed(0)
    main()
