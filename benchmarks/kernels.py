"""What each fast kernel buys, op by op: the forward and backward of conv2d, max_pool2d, avg_pool2d, batch_norm
and batch_norm_eval on their textbook references (minidl/ops) and on their fast kernels (minidl/kernels), on
the shapes those ops meet in the reference nets of ``benchmarks.throughput``.

    python -m benchmarks.kernels [--nets A B D] [--batch 64] [--runs 9]

Reference and fast runs alternate (``minidl.set_ops``), each after a short pause; medians in ms, and
reference / fast (> 1: the kernel is faster).  Inputs are random, in the NHWC memory (NCHW views) that the
fast convolutions hand to the next layer; the input image is NCHW.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import minidl
from minidl import nn
from minidl.nn import functional as F

from benchmarks import throughput as tp


def layers(net):
    """[(label, op name, call, input shape)] of the ops with fast kernels in ``net``, in order, for one image:
    ``call(x)`` applies the layer's op to a tensor x (with the layer's own parameters)."""
    model = tp.build(nn, net)
    x = minidl.Tensor(np.zeros((2,) + tp.INPUT[net], dtype=np.float32))
    out = []
    with minidl.no_grad():
        for i, m in enumerate(model):
            label = f"{net}{i} {type(m).__name__}"
            if isinstance(m, nn.Conv2d):
                out.append((label, "conv2d", m, x.shape[1:]))
            elif isinstance(m, nn.MaxPool2d):
                out.append((label, "max_pool2d", m, x.shape[1:]))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                out.append((label, "batch_norm", lambda t, m=m: m.train()(t), x.shape[1:]))
                out.append((label + " eval", "batch_norm_eval", lambda t, m=m: m.eval()(t), x.shape[1:]))
            x = m(x)
            if isinstance(m, nn.Conv2d) and net == "D" and i == 3:   # the ops nets A-D leave out: one of each
                out.append(("avg_pool2d 3/2/1", "avg_pool2d", lambda t: F.avg_pool2d(t, 3, 2, 1), x.shape[1:]))
    return out


def time_op(call, shape, n, runs, rng, first):
    """{mode: (forward ms, backward ms)}, medians of ``runs`` alternating runs of the reference and the fast
    kernel on one random input of (n,) + shape."""
    a = rng.standard_normal((n,) + tuple(shape), dtype=np.float32)
    if len(shape) == 3 and not first:   # NHWC memory under the NCHW view, as a fast conv2d returns it
        a = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    times = {m: ([], []) for m in ("reference", "fast")}
    gy = None
    try:
        for run in range(runs + 1):
            for mode in times:
                minidl.set_ops(mode)
                x = minidl.Tensor(a, requires_grad=not first)
                time.sleep(0.05)
                t0 = time.perf_counter()
                y = call(x)
                t1 = time.perf_counter()
                if gy is None:
                    gy = minidl.Tensor(rng.standard_normal(y.shape, dtype=np.float32))
                y.backward(gy)
                t2 = time.perf_counter()
                if run:
                    times[mode][0].append(t1 - t0)
                    times[mode][1].append(t2 - t1)
    finally:
        minidl.set_ops("fast")
    return {m: tuple(1e3 * statistics.median(v) for v in fb) for m, fb in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["A", "B", "D"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    minidl.manual_seed(0)
    print(f"batch {args.batch}; ms, median of {args.runs}; ref/fast > 1: the fast kernel is faster")
    print(f"{'layer':<22}{'op':<16}{'input (C, H, W)':<16}{'fwd ref':>9}{'fast':>8}{'x':>6}{'bwd ref':>9}{'fast':>8}"
          f"{'x':>6}")
    rows = []
    for net in args.nets:
        for k, (label, op, call, shape) in enumerate(layers(net)):
            t = time_op(call, shape, args.batch, args.runs, rng, first=k == 0 and op == "conv2d")
            (fr, br), (ff, bf) = t["reference"], t["fast"]
            rows.append({"layer": label, "op": op, "shape": tuple(shape), "fwd_ref": fr, "fwd_fast": ff,
                         "bwd_ref": br, "bwd_fast": bf})
            print(f"{label:<22}{op:<16}{str(tuple(shape)):<16}{fr:9.2f}{ff:8.2f}{fr / ff:6.2f}{br:9.2f}{bf:8.2f}"
                  f"{br / bf:6.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
