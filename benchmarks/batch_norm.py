"""A/B timing of batch normalisation on the CPU: minidl.ops.norm's BatchNorm (training) and BatchNormEval
against the implementation they replaced (kept below, verbatim in its arithmetic, as ``Old*``).

    python -m benchmarks.batch_norm [--batch 64 128] [--runs 11]

Shapes are net D's BatchNorm inputs (benchmarks/throughput.py): (N, 32, 32, 32) and (N, 64, 16, 16) as conv2d
returns them, an NCHW view of NHWC memory, and BatchNorm1d's (N, 512).  Old and new run alternately in one
process (the order flips every run) and each figure is the median of ``--runs`` runs, in ms; "diff" is the
largest |new - old| over the largest |old| of y, eval y and the three gradients: float32 rounding, mostly
of the sums over m = N*H*W (1e-6 to 2e-5 at these sizes).
"""
import argparse
import time

import numpy as np

from minidl.ops.norm import BatchNorm, BatchNormEval, channel_dot


class OldBatchNorm:
    """The training forward/backward before this benchmark: mean over axes, xhat kept for backward."""

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, gamma, beta):
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        self.m = x.size // x.shape[1]
        self.mean = x.mean(axis=self.axes)
        xhat = x - self.mean.reshape(self.shape)
        self.var = channel_dot(xhat, xhat) / x.dtype.type(self.m)
        self.inv_std = 1 / np.sqrt(self.var + x.dtype.type(self.eps))
        xhat *= self.inv_std.reshape(self.shape)
        self.xhat, self.gamma = xhat, gamma
        y = xhat * gamma.reshape(self.shape)
        y += beta.reshape(self.shape)
        return y

    def backward(self, gy):
        sum_gy = gy.sum(axis=self.axes)
        sum_gy_xhat = channel_dot(gy, self.xhat)
        k = self.gamma * self.inv_std / gy.dtype.type(self.m)
        gx = gy * (k * gy.dtype.type(self.m)).reshape(self.shape)
        gx -= (k * sum_gy).reshape(self.shape)
        gx -= self.xhat * (k * sum_gy_xhat).reshape(self.shape)
        return gx, sum_gy_xhat, sum_gy


class OldBatchNormEval:
    def forward(self, x, gamma, beta, rm, rv, eps=1e-5):
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        inv_std = 1 / np.sqrt(rv + x.dtype.type(eps))
        return x * (gamma * inv_std).reshape(shape) + (beta - rm * gamma * inv_std).reshape(shape)


def channels_last(shape, rng):
    """A standard-normal float32 array of NCHW ``shape`` over NHWC memory (2-D shapes as they are)."""
    a = rng.standard_normal((shape[0],) + shape[2:] + (shape[1],), dtype=np.float32)
    return np.moveaxis(a, -1, 1)


def rel_diff(new, old):
    return float(np.max(np.abs(new - old)) / np.max(np.abs(old)))


def compare(shape, runs, rng):
    """{'fwd': (old ms, new ms), 'bwd': ..., 'eval': ...} and the largest relative difference, for one shape."""
    x, gy = channels_last(shape, rng), channels_last(shape, rng)
    x = x * np.float32(2) + np.float32(0.5)
    c = shape[1]
    gamma, beta = rng.standard_normal(c, dtype=np.float32), rng.standard_normal(c, dtype=np.float32)
    rm, rv = rng.standard_normal(c, dtype=np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    times = {k: ([], []) for k in ("fwd", "bwd", "eval")}
    outputs = [None, None]  # old's and new's (y, eval y, gx, dgamma, dbeta) of the warm-up run
    for run in range(runs + 1):  # run 0 warms up
        for which in ((0, 1) if run % 2 else (1, 0)):
            op = (OldBatchNorm, BatchNorm)[which]()
            op.needs_input_grad = (True, True, True)
            t0 = time.perf_counter()
            y = op.forward(x, gamma, beta)
            t1 = time.perf_counter()
            grads = op.backward(gy)
            t2 = time.perf_counter()
            ye = (OldBatchNormEval(), BatchNormEval())[which].forward(x, gamma, beta, rm, rv)
            t3 = time.perf_counter()
            if run == 0:
                outputs[which] = (y, ye) + tuple(grads)
            else:
                for k, dt in (("fwd", t1 - t0), ("bwd", t2 - t1), ("eval", t3 - t2)):
                    times[k][which].append(1e3 * dt)
    diff = max(rel_diff(new, old) for old, new in zip(*outputs))
    return {k: (float(np.median(o)), float(np.median(n))) for k, (o, n) in times.items()}, diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--runs", type=int, default=11, help="timed runs per implementation (median)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"batch norm, old vs new (ms, median of {args.runs}; inputs channels-last as conv2d returns them)")
    print(f"{'shape':>18} | {'fwd old':>7} {'new':>6} {'x':>5} | {'bwd old':>7} {'new':>6} {'x':>5} | "
          f"{'eval old':>8} {'new':>6} {'x':>5} | diff")
    for n in args.batch:
        for shape in ((n, 32, 32, 32), (n, 64, 16, 16), (n, 512)):
            t, diff = compare(shape, args.runs, rng)
            cells = " | ".join(f"{o:7.2f} {nw:6.2f} {o / nw:5.2f}" + (" " if k == "eval" else "")
                               for k, (o, nw) in t.items())
            print(f"{str(shape):>18} | {cells} | {diff:.1e}")


if __name__ == "__main__":
    main()
