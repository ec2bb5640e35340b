"""How fast could minidl's training step be if its matrix products were all it did?

    python -m benchmarks.gemm_bound [--nets A B C D] [--batch 64 128] [--runs 5] [--reps 9]

For each reference net of ``benchmarks.throughput`` it lists the GEMMs of one minidl training step, as
conv2d's fast kernel decides them (``minidl.kernels.cpu``: ``Columns`` chunks, first layers' columns kept
whole, ``full_correlation_pads`` for the input gradient) and the Linear layers' three products,
and times each alone, on random operands that stay hot in the cache, best of ``--reps`` calls.  Their
sum is set beside minidl's and PyTorch's whole training steps, measured as ``benchmarks.throughput``
measures them (``measure``: alternating runs of steps, a pause before each, the median of ``--runs``).

``torch/GEMMs`` (PyTorch's step over these GEMMs' time) bounds the ratio that an implementation making
these products with this BLAS (im2col convolutions, as minidl's) can reach: it charges nothing for the im2col
copies, the elementwise layers, the optimizer or operands that come cold from memory.  ``minidl-GEMMs`` is
what minidl's step spends beyond its GEMMs' hot-cache time; ``python -m benchmarks.throughput --profile``
splits both frameworks' steps by layer.
"""
from __future__ import annotations

import argparse
import collections
import time

import numpy as np

import minidl
from minidl.kernels import cpu as conv
from minidl.ops.arith import gemm
from minidl.ops.conv import Conv2d

from benchmarks import throughput as tp

# a @ b, taken ``count`` times; ``transposed`` names the operands ("a", "b") that minidl passes as transposed
# views (col^T in dW = col^T gy, W^T in y = x W^T); ``gemm``: through arith.gemm, which takes the tall
# orientation, as Linear's forward and input gradient do (the other products are a plain a @ b)
Product = collections.namedtuple("Product", "a b count transposed gemm", defaults=(1, "", False))


def layers(net):
    """The layers of ``net`` that multiply matrices, read off the model ``benchmarks.throughput`` builds, in
    order: ("conv", C_in, C_out, kernel, padding, input height) (square kernels, padding and maps, stride 1,
    as in the reference nets) or ("linear", in, out)."""
    nn = tp.minidl_namespace()[0]
    model = tp.build(nn, net)
    model.eval()
    x = minidl.Tensor(np.zeros((1,) + tp.INPUT[net], dtype=np.float32))
    out = []
    with minidl.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d):
                out.append(("conv", m.in_channels, m.out_channels, m.kernel_size[0], m.padding[0], x.shape[2]))
            elif isinstance(m, nn.Linear):
                out.append(("linear", m.in_features, m.out_features))
            x = m(x)
    return out


def _conv_products(n, cin, k, ks, pad, size, first):
    """The products of one conv layer's forward, weight gradient and (unless it is the first layer) input
    gradient, in minidl's chunks (see ``products``): the fast kernel's own ``Columns`` and
    ``full_correlation_pads`` decide them, on empty arrays of the layer's shapes."""
    op = Conv2d(padding=pad)
    op.setup(np.empty((n, cin, size, size), np.float32), np.empty((k, cin, ks, ks), np.float32), None)
    # the input image (few channels) is read as planes into a (features, rows) buffer, and col is its transpose
    planes = first and cin <= conv.PLANES_MAX_CHANNELS
    cols = conv.Columns(np.empty((n, cin, size, size) if planes else (n, size, size, cin), np.float32), op.pads,
                        op.kernel, op.stride, op.dilation, op.out_hw, planes, ones=True, keep=True)
    prods = []
    for rows, width in _col_shapes(cols):
        prods.append(Product((rows, width), (width, k), 1, "a" if planes else ""))     # y = col @ W
        if width >= k:                                                                   # dW^T = col^T @ gy
            prods.append(Product((width, rows), (rows, k), 1, "" if planes else "a"))
        else:                                                                            # dW = gy^T @ col
            prods.append(Product((k, rows), (rows, width), 1, "ab" if planes else "a"))
    if first:
        return prods
    full = conv.full_correlation_pads(op.x_shape, op.kernel, op.stride, op.pads, op.dilation, op.out_hw)
    if full is not None:                                      # dx = full correlation of gy
        gcols = conv.Columns(np.empty((n,) + op.out_hw + (k,), np.float32), full, op.kernel, (1, 1), op.dilation,
                             (size, size))
        prods += [Product((rows, width), (width, cin)) for rows, width in _col_shapes(gcols)]
    else:                                                     # dcol = gy @ W_pq^T per offset, then col2im
        out = op.out_hw[0]
        for s, e in conv.chunks(n, 4 * out * out * ks * ks * cin):
            prods.append(Product(((e - s) * out * out, k), (k, cin), ks * ks))
    return prods


def _col_shapes(cols):
    """The (rows, width) of each chunk of a ``Columns``, without building it."""
    ho, wo = cols.out_hw
    return [((e - s) * ho * wo, cols.width) for s, e in cols.ranges]


def products(net, n):
    """Every GEMM of one training step of ``net`` at batch ``n``, as a list of ``Product``."""
    prods = []
    for i, layer in enumerate(layers(net)):
        if layer[0] == "conv":
            prods += _conv_products(n, *layer[1:], first=i == 0)
        else:
            fin, fout = layer[1:]
            prods.append(Product((n, fin), (fin, fout), 1, "b", gemm=True))          # y = x W^T
            prods.append(Product((fout, n), (n, fin), 1, "a"))                       # dW = gy^T x
            if i > 0:
                prods.append(Product((n, fout), (fout, fin), 1, "", gemm=True))      # dx = gy W
    return prods


def time_product(prod, reps):
    """Best time of ``reps`` calls of one ``Product`` (once; ``count`` is not applied), on random operands."""
    rng = np.random.default_rng(0)

    def operand(shape, name):
        if name in prod.transposed:
            return rng.standard_normal(shape[::-1], dtype=np.float32).T
        return rng.standard_normal(shape, dtype=np.float32)
    a, b = operand(prod.a, "a"), operand(prod.b, "b")
    mul = gemm if prod.gemm else np.matmul
    mul(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        mul(a, b)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", nargs="+", default=["A", "B", "C", "D"])
    p.add_argument("--batch", nargs="+", type=int, default=[64, 128])
    p.add_argument("--runs", type=int, default=5, help="timed runs of training steps per framework (median)")
    p.add_argument("--reps", type=int, default=9, help="calls per GEMM (best)")
    args = p.parse_args(argv)
    use_torch = tp.torch is not None
    print(f"{'net':<4}{'batch':>6}{'GFLOP':>7}{'GEMMs':>6}{'GEMM ms':>9}{'GFLOP/s':>8}{'minidl ms':>10}"
          f"{'torch ms':>9}{'torch/GEMMs':>12}{'minidl-GEMMs':>13}")
    rows = []
    for net in args.nets:
        for n in args.batch:
            prods = products(net, n)
            cache = {}
            for pr in prods:
                key = pr._replace(count=1)
                if key not in cache:
                    cache[key] = time_product(pr, args.reps)
            gemm_s = sum(pr.count * cache[pr._replace(count=1)] for pr in prods)
            gflop = sum(2 * pr.a[0] * pr.a[1] * pr.b[1] * pr.count for pr in prods) / 1e9
            runners = [tp.MinidlRunner(net, n, "cpu")] + ([tp.TorchRunner(net, n, "cpu")] if use_torch else [])
            img_s = tp.measure(runners, lambda r: r.train_step, n, args.runs, warmup=2)
            mine = 1e3 * n / img_s["minidl"]
            torch_ms = 1e3 * n / img_s["torch"] if use_torch else None
            row = {"net": net, "batch": n, "gflop": gflop, "gemms": sum(pr.count for pr in prods),
                   "gemm_ms": 1e3 * gemm_s, "minidl_ms": mine, "torch_ms": torch_ms}
            rows.append(row)
            bound = "-" if torch_ms is None else f"{torch_ms / row['gemm_ms']:.2f}"
            print(f"{net:<4}{n:>6}{gflop:>7.2f}{row['gemms']:>6}{row['gemm_ms']:>9.1f}{gflop / gemm_s:>8.0f}"
                  f"{mine:>10.1f}{'-' if torch_ms is None else f'{torch_ms:.1f}':>9}{bound:>12}"
                  f"{mine - row['gemm_ms']:>13.1f}", flush=True)
    if not use_torch:
        print("PyTorch is not importable: no torch column")
    return rows


if __name__ == "__main__":
    main()
