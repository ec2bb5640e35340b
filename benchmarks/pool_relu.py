"""A/B timing of max_pool2d's and relu's backward on the NumPy backend: the code before and after the
change that made them faster, on the shapes of the reference nets (benchmarks/throughput.py).

    python -m benchmarks.pool_relu [--runs 15] [--batch 64 128]

Both versions run in one process, alternating run by run on the same arrays (the machine is shared, so
interleaving keeps the load the same for both); it prints the median milliseconds of each and old/new.
The old versions are kept here verbatim as the baseline; the new ones are minidl's own.  Inputs are ReLU
outputs (many exact zeros, so pooling windows have ties) in the NHWC memory minidl's convolutions give.
"""
import argparse
import time

import numpy as np

from minidl.ops.elementwise import ReLU
from minidl.ops.pool import MaxPool2d

# (label, C, H, W, (kernel, stride, padding)) of the tensors entering MaxPool2d and ReLU in the reference
# nets; the last pool is a ResNet stem's overlapping MaxPool2d(3, 2, 1), which takes the general path
POOLS = [("A pool1", 32, 28, 28, (2, 2, 0)), ("A pool2", 64, 10, 10, (2, 2, 0)), ("B pool1", 10, 24, 24, (2, 2, 0)),
         ("D pool1", 32, 32, 32, (2, 2, 0)), ("D pool2", 64, 16, 16, (2, 2, 0)), ("stem 3/2/1", 64, 32, 32, (3, 2, 1))]
RELUS = [("A relu2", 32, 28, 28), ("D relu", 32, 32, 32), ("D relu3", 64, 16, 16)]


def old_max_pool_backward(op, gy):
    """MaxPool2d.backward before the change (NumPy path): per offset, compare, multiply, clear ``left``."""
    xp = np
    left = gy.transpose(0, 2, 3, 1)
    (kh, kw), (s1, s2), (ho, wo) = op.kernel, op.stride, op.out_hw
    hp, wp = op.padded_shape[1:3]
    tiled = (s1, s2) == (kh, kw) and hp == ho * kh and wp == wo * kw
    dxpad = xp.empty(op.padded_shape, dtype=gy.dtype) if tiled else xp.zeros(op.padded_shape, dtype=gy.dtype)
    offsets = op._offsets()
    for k, (p, q) in enumerate(offsets):
        hit = op._slice(op.xpad, p, q) == op.y
        if tiled:
            xp.multiply(left, hit, out=op._slice(dxpad, p, q))
        else:
            op._slice(dxpad, p, q)[...] += left * hit
        if k + 1 < len(offsets):
            if k == 0:
                left = xp.where(hit, gy.dtype.type(0), left)
            else:
                xp.copyto(left, 0, where=hit)
    return op._unpad(dxpad)


def old_relu_backward(op, gy):
    """ReLU.backward before the change."""
    return gy * (op.y > 0)


def nhwc(rng, n, c, h, w):
    """A float32 (N, C, H, W) view of NHWC memory."""
    return rng.standard_normal((n, h, w, c), dtype=np.float32).transpose(0, 3, 1, 2)


def ab(old, new, runs):
    """Median ms of old() and new(), alternating, after one warm-up call of each."""
    old(), new()
    times = {old: [], new: []}
    for _ in range(runs):
        for f in (old, new):
            t0 = time.perf_counter()
            f()
            times[f].append(time.perf_counter() - t0)
    return [1e3 * float(np.median(times[f])) for f in (old, new)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'what':<24} {'shape (N, C, H, W)':<20} {'old ms':>8} {'new ms':>8} {'old/new':>8}")
    for n in args.batch:
        for label, c, h, w, geometry in POOLS:
            op = MaxPool2d(*geometry)
            y = op.forward(np.maximum(nhwc(rng, n, c, h, w), 0))
            gy = nhwc(rng, n, c, *y.shape[2:])
            if not np.array_equal(old_max_pool_backward(op, gy), op.backward(gy)):
                raise AssertionError(f"{label}: old and new max_pool2d backward differ")
            t_old, t_new = ab(lambda: old_max_pool_backward(op, gy), lambda: op.backward(gy), args.runs)
            print(f"{label + ' max_pool bwd':<24} {str((n, c, h, w)):<20} {t_old:8.3f} {t_new:8.3f} "
                  f"{t_old / t_new:7.2f}x")
        for label, c, h, w in RELUS:
            op = ReLU()
            op.forward(nhwc(rng, n, c, h, w))
            gy = nhwc(rng, n, c, h, w)
            a, b = old_relu_backward(op, gy), op.backward(gy)
            if not (np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))):
                raise AssertionError(f"{label}: old and new relu backward differ")
            t_old, t_new = ab(lambda: old_relu_backward(op, gy), lambda: op.backward(gy), args.runs)
            print(f"{label + ' relu bwd':<24} {str((n, c, h, w)):<20} {t_old:8.3f} {t_new:8.3f} {t_old / t_new:7.2f}x")


if __name__ == "__main__":
    main()
