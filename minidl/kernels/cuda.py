"""Fast CuPy kernels: conv2d, max pooling and batch norm as CUDA kernels plus cuBLAS, and the fused SGD and
Adam updates, each beside the plain array expression it must equal.

The op pairs have the signatures of minidl/kernels/cpu.py (``<op>_forward(...) -> (y, saved)``,
``<op>_backward(gy, saved, needs)``); average pooling and eval-mode batch norm are cpu.py's own array
expressions, which run unchanged on CuPy.  This module does not import CuPy: a kernel is compiled on first
use through ``backend.require_cuda()``, so the kernel sources and the references can be read (and emulated,
see tests/kernel_emulator.py) on a machine without a GPU.

Every kernel is a CuPy ``ElementwiseKernel`` (or ``ReductionKernel``) given by a ``Spec``: parameters and a
CUDA C body written one statement per line.  ``i`` is the element's flat (C-order) index over the non-raw
arrays; ``raw`` arrays are indexed by flat C-order index and are passed C-contiguous here.  A type
placeholder is one letter (``T``, ``I``): CuPy reads longer names as dtype names.  Each kernel has a reference
function ``<name>_ref`` computing the same thing with whole-array operations on NumPy or CuPy
(tests/test_cuda_kernels.py compares the two, emulated on the CPU and compiled on a GPU).

Images are NHWC underneath their NCHW views, as on the CPU; the im2col matrix has rows (n, i, j) and columns
(p, q, c), so ``col @ W`` with W = weight as (kh kw C, K) is the output in NHWC.

    col[(n, i, j), (p, q, c)] = x[n, s1 i - pt + d1 p, s2 j - pl + d2 q, c]   (0 outside the image)
"""
from __future__ import annotations

import math
from collections import namedtuple

from minidl import backend
from minidl.kernels.cpu import (avg_pool2d_backward, avg_pool2d_forward, batch_norm_eval_backward,  # noqa: F401
                                batch_norm_eval_forward)

Spec = namedtuple("Spec", "name in_params out_params body")
"""An ElementwiseKernel: ``in_params``/``out_params`` in CuPy's syntax, ``body`` CUDA C (one statement a line)."""

ReductionSpec = namedtuple("ReductionSpec", "name in_params out_params map_expr reduce_expr post_map identity")


# ====================================================================== im2col / col2im
IM2COL = Spec(
    "minidl_im2col",
    "raw T x, int32 H, int32 W, int32 C, int32 Ho, int32 Wo, int32 kh, int32 kw, "
    "int32 s1, int32 s2, int32 pt, int32 pl, int32 d1, int32 d2",
    "T col",
    """
    ptrdiff_t c = i % C;
    ptrdiff_t r = i / C;
    ptrdiff_t q = r % kw;
    r = r / kw;
    ptrdiff_t p = r % kh;
    r = r / kh;
    ptrdiff_t oj = r % Wo;
    r = r / Wo;
    ptrdiff_t oi = r % Ho;
    ptrdiff_t n = r / Ho;
    ptrdiff_t h = oi * s1 - pt + p * d1;
    ptrdiff_t w = oj * s2 - pl + q * d2;
    if (h >= 0 && h < H && w >= 0 && w < W) {
        col = x[((n * H + h) * W + w) * C + c];
    } else {
        col = T(0);
    }
    """)

COL2IM = Spec(
    "minidl_col2im",
    "raw T dcol, int32 H, int32 W, int32 C, int32 Ho, int32 Wo, int32 kh, int32 kw, "
    "int32 s1, int32 s2, int32 pt, int32 pl, int32 d1, int32 d2",
    "T dx",
    """
    ptrdiff_t c = i % C;
    ptrdiff_t r = i / C;
    ptrdiff_t w = r % W;
    r = r / W;
    ptrdiff_t h = r % H;
    ptrdiff_t n = r / H;
    ptrdiff_t kkc = kh * kw * C;
    T acc = T(0);
    for (int p = 0; p < kh; ++p) {
        ptrdiff_t th = h + pt - p * d1;
        if (th < 0 || th % s1 != 0) {
            continue;
        }
        ptrdiff_t oi = th / s1;
        if (oi >= Ho) {
            continue;
        }
        for (int q = 0; q < kw; ++q) {
            ptrdiff_t tw = w + pl - q * d2;
            if (tw < 0 || tw % s2 != 0) {
                continue;
            }
            ptrdiff_t oj = tw / s2;
            if (oj >= Wo) {
                continue;
            }
            acc += dcol[((n * Ho + oi) * Wo + oj) * kkc + (p * kw + q) * C + c];
        }
    }
    dx = acc;
    """)
"""Gather-style col2im: each input pixel sums the columns that read it, in the order (p, q) of the kernel
offsets, as the NumPy loop over offsets adds them: no atomics, the same result on every run."""


def _geometry(x_shape_nhwc, kernel, stride, pads, dilation, out_hw):
    _, h, w, c = x_shape_nhwc
    (kh, kw), (s1, s2), (d1, d2), (ho, wo) = kernel, stride, dilation, out_hw
    return dict(H=h, W=w, C=c, Ho=ho, Wo=wo, kh=kh, kw=kw, s1=s1, s2=s2, pt=pads[0], pl=pads[2], d1=d1, d2=d2)


_GEOMETRY_ORDER = ("H", "W", "C", "Ho", "Wo", "kh", "kw", "s1", "s2", "pt", "pl", "d1", "d2")


def im2col_ref(xh, kernel, stride, pads, dilation, out_hw):
    """col (N Ho Wo, kh kw C) of an unpadded NHWC array ``xh``, zero padding ``pads`` = (top, bottom, left, right)."""
    xp = backend.get_array_module(xh)
    n, h, w, c = xh.shape
    (kh, kw), (s1, s2), (d1, d2), (ho, wo) = kernel, stride, dilation, out_hw
    t, b, l, r = pads
    xpad = xp.zeros((n, h + t + b, w + l + r, c), dtype=xh.dtype)
    xpad[:, t:t + h, l:l + w] = xh
    col = xp.empty((n, ho, wo, kh, kw, c), dtype=xh.dtype)
    for p in range(kh):
        for q in range(kw):
            col[:, :, :, p, q] = xpad[:, d1 * p:d1 * p + s1 * (ho - 1) + 1:s1, d2 * q:d2 * q + s2 * (wo - 1) + 1:s2]
    return col.reshape(n * ho * wo, kh * kw * c)


def im2col(xh, kernel, stride, pads, dilation, out_hw):
    """IM2COL on a GPU: the same matrix as ``im2col_ref``."""
    xp = backend.get_array_module(xh)
    xh = xp.ascontiguousarray(xh)
    g = _geometry(xh.shape, kernel, stride, pads, dilation, out_hw)
    col = xp.empty((xh.shape[0] * g["Ho"] * g["Wo"], g["kh"] * g["kw"] * g["C"]), dtype=xh.dtype)
    _kernel(IM2COL)(xh, *(g[k] for k in _GEOMETRY_ORDER), col)
    return col


def col2im_ref(dcol, x_shape_nhwc, kernel, stride, pads, dilation, out_hw):
    """The adjoint of im2col: dcol (N Ho Wo, kh kw C) summed back into an unpadded (N, H, W, C) array."""
    xp = backend.get_array_module(dcol)
    n, h, w, c = x_shape_nhwc
    (kh, kw), (s1, s2), (d1, d2), (ho, wo) = kernel, stride, dilation, out_hw
    t, b, l, r = pads
    d = dcol.reshape(n, ho, wo, kh, kw, c)
    dxpad = xp.zeros((n, h + t + b, w + l + r, c), dtype=dcol.dtype)
    for p in range(kh):
        for q in range(kw):
            dxpad[:, d1 * p:d1 * p + s1 * (ho - 1) + 1:s1, d2 * q:d2 * q + s2 * (wo - 1) + 1:s2] += d[:, :, :, p, q]
    return xp.ascontiguousarray(dxpad[:, t:t + h, l:l + w])


def col2im(dcol, x_shape_nhwc, kernel, stride, pads, dilation, out_hw):
    """COL2IM on a GPU: the same array as ``col2im_ref``."""
    xp = backend.get_array_module(dcol)
    g = _geometry(x_shape_nhwc, kernel, stride, pads, dilation, out_hw)
    dx = xp.empty(tuple(x_shape_nhwc), dtype=dcol.dtype)
    _kernel(COL2IM)(xp.ascontiguousarray(dcol), *(g[k] for k in _GEOMETRY_ORDER), dx)
    return dx


# ====================================================================== max pooling
MAXPOOL_FORWARD = Spec(
    "minidl_maxpool_forward",
    "raw T x, int32 H, int32 W, int32 C, int32 Ho, int32 Wo, int32 kh, int32 kw, "
    "int32 s1, int32 s2, int32 pt, int32 pl, T lowest",
    "T y, I idx",
    """
    ptrdiff_t c = i % C;
    ptrdiff_t r = i / C;
    ptrdiff_t oj = r % Wo;
    r = r / Wo;
    ptrdiff_t oi = r % Ho;
    ptrdiff_t n = r / Ho;
    T best = lowest;
    int arg = 0;
    for (int p = 0; p < kh; ++p) {
        for (int q = 0; q < kw; ++q) {
            ptrdiff_t h = oi * s1 - pt + p;
            ptrdiff_t w = oj * s2 - pl + q;
            T v = lowest;
            if (h >= 0 && h < H && w >= 0 && w < W) {
                v = x[((n * H + h) * W + w) * C + c];
            }
            int k = p * kw + q;
            if (k == 0 || v > best || v != v) {
                best = v;
                arg = k;
            }
        }
    }
    y = best;
    idx = arg;
    """)
"""Max over each window, padding counting as -inf (``lowest``), and the window offset k = p kw + q of the
maximum, by PyTorch's scan (a value greater than the best so far, or NaN): the first of tied maxima, the last
NaN (so that the gradient goes to a NaN, as on the CPU)."""

MAXPOOL_BACKWARD = Spec(
    "minidl_maxpool_backward",
    "raw T gy, raw I idx, int32 H, int32 W, int32 C, int32 Ho, int32 Wo, int32 kh, int32 kw, "
    "int32 s1, int32 s2, int32 pt, int32 pl",
    "T dx",
    """
    ptrdiff_t c = i % C;
    ptrdiff_t r = i / C;
    ptrdiff_t w = r % W;
    r = r / W;
    ptrdiff_t h = r % H;
    ptrdiff_t n = r / H;
    T acc = T(0);
    for (int p = 0; p < kh; ++p) {
        ptrdiff_t th = h + pt - p;
        if (th < 0 || th % s1 != 0) {
            continue;
        }
        ptrdiff_t oi = th / s1;
        if (oi >= Ho) {
            continue;
        }
        for (int q = 0; q < kw; ++q) {
            ptrdiff_t tw = w + pl - q;
            if (tw < 0 || tw % s2 != 0) {
                continue;
            }
            ptrdiff_t oj = tw / s2;
            if (oj >= Wo) {
                continue;
            }
            ptrdiff_t o = ((n * Ho + oi) * Wo + oj) * C + c;
            if (idx[o] == p * kw + q) {
                acc += gy[o];
            }
        }
    }
    dx = acc;
    """)
"""Gather-style max-pool backward: each input pixel sums gy of the windows whose maximum it is (no atomics)."""


def _pool_geometry(x_shape_nhwc, kernel, stride, pads, out_hw):
    _, h, w, c = x_shape_nhwc
    (kh, kw), (s1, s2), (ho, wo) = kernel, stride, out_hw
    return (h, w, c, ho, wo, kh, kw, s1, s2, pads[0], pads[2])


def _index_dtype(xp, kernel):
    return xp.uint8 if kernel[0] * kernel[1] < 256 else xp.int32


def maxpool_forward_ref(xh, kernel, stride, pads, out_hw):
    """(y, idx), both (N, Ho, Wo, C), of an unpadded NHWC ``xh``: the window maxima and their offsets p kw + q
    (the first of tied maxima, the last NaN)."""
    xp = backend.get_array_module(xh)
    n, h, w, c = xh.shape
    (kh, kw), (s1, s2), (ho, wo) = kernel, stride, out_hw
    t, b, l, r = pads
    xpad = xp.full((n, h + t + b, w + l + r, c), -xp.inf, dtype=xh.dtype)
    xpad[:, t:t + h, l:l + w] = xh
    y = idx = None
    for p in range(kh):
        for q in range(kw):
            s = xpad[:, p:p + s1 * (ho - 1) + 1:s1, q:q + s2 * (wo - 1) + 1:s2]
            if y is None:
                y, idx = s.copy(), xp.zeros(s.shape, dtype=_index_dtype(xp, kernel))
            else:
                idx = xp.where((s > y) | xp.isnan(s), p * kw + q, idx).astype(idx.dtype)
                y = xp.maximum(y, s)
    return y, idx


def maxpool_forward(xh, kernel, stride, pads, out_hw):
    xp = backend.get_array_module(xh)
    xh = xp.ascontiguousarray(xh)
    shape = (xh.shape[0],) + tuple(out_hw) + (xh.shape[3],)
    y = xp.empty(shape, dtype=xh.dtype)
    idx = xp.empty(shape, dtype=_index_dtype(xp, kernel))
    _kernel(MAXPOOL_FORWARD)(xh, *_pool_geometry(xh.shape, kernel, stride, pads, out_hw), -float("inf"), y, idx)
    return y, idx


def maxpool_backward_ref(g, idx, x_shape_nhwc, kernel, stride, pads, out_hw):
    """dx (N, H, W, C): each window's gradient g (N, Ho, Wo, C) added at its maximum."""
    xp = backend.get_array_module(g)
    n, h, w, c = x_shape_nhwc
    (kh, kw), (s1, s2), (ho, wo) = kernel, stride, out_hw
    t, b, l, r = pads
    dxpad = xp.zeros((n, h + t + b, w + l + r, c), dtype=g.dtype)
    for p in range(kh):
        for q in range(kw):
            dxpad[:, p:p + s1 * (ho - 1) + 1:s1, q:q + s2 * (wo - 1) + 1:s2] += g * (idx == p * kw + q)
    return xp.ascontiguousarray(dxpad[:, t:t + h, l:l + w])


def maxpool_backward(g, idx, x_shape_nhwc, kernel, stride, pads, out_hw):
    xp = backend.get_array_module(g)
    dx = xp.empty(tuple(x_shape_nhwc), dtype=g.dtype)
    _kernel(MAXPOOL_BACKWARD)(xp.ascontiguousarray(g), xp.ascontiguousarray(idx),
                              *_pool_geometry(x_shape_nhwc, kernel, stride, pads, out_hw), dx)
    return dx


# ====================================================================== batch normalisation
# x2 is the input as an (M, C) matrix, channels last (see ``channels_last``); per-channel vectors have shape (C,).
BN_SQUARED_DEVIATION = ReductionSpec(
    "minidl_bn_sqdev", "T x, T mean", "T total", "(x - mean) * (x - mean)", "a + b", "total = a", "0")
"""sum_m (x - mean)^2 per channel (divided by m afterwards: the biased variance)."""

BN_SUM_PRODUCT = ReductionSpec("minidl_bn_sumprod", "T gy, T xhat", "T total", "gy * xhat", "a + b", "total = a", "0")
"""sum_m gy xhat per channel, without the temporary product array."""

BN_NORMALIZE = Spec(
    "minidl_bn_normalize", "T x, T mean, T inv_std, T gamma, T beta", "T xhat, T y",
    """
    xhat = (x - mean) * inv_std;
    y = xhat * gamma + beta;
    """)
"""xhat = (x - mu) / sqrt(var + eps) and y = gamma xhat + beta in one pass."""

BN_BACKWARD = Spec(
    "minidl_bn_backward", "T gy, T xhat, T a, T b, T c", "T gx",
    """
    gx = gy * a - b - xhat * c;
    """)
"""dx = gy a - b - xhat c with per-channel a = gamma / sqrt(var + eps), b = a mean(gy), c = a mean(gy xhat)."""


def channels_last(x):
    """(x2, shape): x (N, C, ...) as a C-contiguous (M, C) matrix, free when the memory is channels-last already
    (NHWC under an NCHW view), and the channels-last shape to undo it with ``from_channels_last``."""
    xp = backend.get_array_module(x)
    xt = xp.moveaxis(x, 1, -1)
    return xp.ascontiguousarray(xt).reshape(-1, x.shape[1]), xt.shape


def from_channels_last(x2, shape):
    return backend.get_array_module(x2).moveaxis(x2.reshape(shape), -1, 1)


def column_mean(x2):
    """The mean of each column of x2 (M, C), summed in float64 (as PyTorch's CPU kernel does): a float32 sum of
    values far from 0 loses the digits that tell them apart (batch norm of 100 + randn)."""
    return x2.mean(axis=0, dtype="float64").astype(x2.dtype)


def bn_stats_ref(x2):
    """(mean, biased variance) of each column of x2 (M, C)."""
    mean = column_mean(x2)
    d = x2 - mean
    return mean, (d * d).mean(axis=0)


def bn_stats(x2):
    mean = column_mean(x2)
    return mean, _kernel(BN_SQUARED_DEVIATION)(x2, mean, axis=0) / x2.dtype.type(x2.shape[0])


def bn_normalize_ref(x2, mean, inv_std, gamma, beta):
    xhat = (x2 - mean) * inv_std
    return xhat, xhat * gamma + beta


def bn_normalize(x2, mean, inv_std, gamma, beta):
    return _kernel(BN_NORMALIZE)(x2, mean, inv_std, gamma, beta)


def bn_sums_ref(g2, xhat2):
    """(sum gy, sum gy xhat) per column."""
    return g2.sum(axis=0), (g2 * xhat2).sum(axis=0)


def bn_sums(g2, xhat2):
    return g2.sum(axis=0), _kernel(BN_SUM_PRODUCT)(g2, xhat2, axis=0)


def bn_backward_ref(g2, xhat2, a, b, c):
    return g2 * a - b - xhat2 * c


def bn_backward(g2, xhat2, a, b, c):
    return _kernel(BN_BACKWARD)(g2, xhat2, a, b, c)


# ====================================================================== fused optimizer updates
SGD_PLAIN = Spec(
    "minidl_sgd", "T g, T lr, T wd, bool maximize", "T p",
    """
    T d = g;
    if (maximize) {
        d = -g;
    }
    if (wd != T(0)) {
        d = wd * p + d;
    }
    p = p - lr * d;
    """)

SGD_MOMENTUM = Spec(
    "minidl_sgd_momentum", "T g, T lr, T momentum, T keep, T wd, bool nesterov, bool maximize, bool first",
    "T p, T buf",
    """
    T d = g;
    if (maximize) {
        d = -g;
    }
    if (wd != T(0)) {
        d = wd * p + d;
    }
    if (first) {
        buf = d;
    } else {
        buf = momentum * buf + keep * d;
    }
    if (nesterov) {
        d = momentum * buf + d;
    } else {
        d = buf;
    }
    p = p - lr * d;
    """)
"""One SGD step of torch.optim.SGD's rule (see minidl/optim/sgd.py) in one pass; ``keep`` = 1 - dampening."""

ADAM = Spec(
    "minidl_adam",
    "T g, T beta1, T beta2, T one_minus_beta1, T one_minus_beta2, T sqrt_bc2, T eps, T step_size, T wd, T decay, "
    "bool maximize",
    "T p, T m, T v",
    """
    T d = g;
    if (maximize) {
        d = -g;
    }
    if (decay != T(1)) {
        p = p * decay;
    }
    if (wd != T(0)) {
        d = p * wd + d;
    }
    m = m * beta1 + d * one_minus_beta1;
    v = v * beta2 + (d * d) * one_minus_beta2;
    T denom = sqrt(v) / sqrt_bc2 + eps;
    p = p - (m / denom) * step_size;
    """)
"""One Adam/AdamW step (see minidl/optim/adam.py) in one pass: ``decay`` = 1 - lr wd for AdamW (else 1),
``wd`` the coupled L2 factor for Adam (else 0), ``step_size`` = lr / (1 - beta1^t), ``sqrt_bc2`` =
sqrt(1 - beta2^t)."""


def sgd_args(group):
    """The SGD kernel's scalars from a parameter group."""
    return dict(lr=float(group["lr"]), momentum=float(group["momentum"]), keep=1.0 - float(group["dampening"]),
                wd=float(group["weight_decay"]), nesterov=bool(group["nesterov"]), maximize=bool(group["maximize"]))


def sgd_ref(p, g, buf, lr, momentum, keep, wd, nesterov, maximize, first):
    """The SGD step on arrays, in place on ``p`` and ``buf`` (``buf`` is None without momentum)."""
    d = -g if maximize else g
    if wd != 0:
        d = wd * p + d
    if momentum != 0:
        if first:
            buf[...] = d
        else:
            buf *= momentum
            buf += keep * d
        d = momentum * buf + d if nesterov else buf
    p -= lr * d


def sgd_update(p, g, state, group):
    """SGD._update on a GPU: the momentum buffer lives in ``state`` as on the CPU."""
    xp = backend.get_array_module(p)
    a = sgd_args(group)
    if a["momentum"] == 0:
        _kernel(SGD_PLAIN)(g, a["lr"], a["wd"], a["maximize"], p)
        return
    buf = state.get("momentum_buffer")
    first = buf is None
    if first:
        buf = state["momentum_buffer"] = xp.empty_like(p)
    _kernel(SGD_MOMENTUM)(g, a["lr"], a["momentum"], a["keep"], a["wd"], a["nesterov"], a["maximize"], first, p, buf)


def adam_args(group, t):
    """The Adam kernel's scalars from a parameter group at step ``t``."""
    lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
    beta1, beta2 = (float(b) for b in group["betas"])
    decoupled = bool(group.get("decoupled_weight_decay", False))
    return dict(beta1=beta1, beta2=beta2, one_minus_beta1=1.0 - beta1, one_minus_beta2=1.0 - beta2,
                sqrt_bc2=math.sqrt(1.0 - beta2 ** t), eps=eps, step_size=lr / (1.0 - beta1 ** t),
                wd=0.0 if decoupled else wd, decay=1.0 - lr * wd if decoupled and wd != 0 else 1.0,
                maximize=bool(group["maximize"]))


def adam_ref(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, sqrt_bc2, eps, step_size, wd, decay,
             maximize):
    """The Adam step on arrays, in place on ``p``, ``m``, ``v``."""
    xp = backend.get_array_module(p)
    d = -g if maximize else g
    if decay != 1:
        p *= p.dtype.type(decay)
    if wd != 0:
        d = p * wd + d
    m *= beta1
    m += d * one_minus_beta1
    v *= beta2
    v += (d * d) * one_minus_beta2
    p -= (m / (xp.sqrt(v) / sqrt_bc2 + eps)) * step_size


def adam_update(p, g, state, group):
    """Adam._update on a GPU (without amsgrad): state 'step', 'exp_avg', 'exp_avg_sq' as on the CPU."""
    xp = backend.get_array_module(p)
    if not state:
        state["step"] = 0
        state["exp_avg"] = xp.zeros_like(p)
        state["exp_avg_sq"] = xp.zeros_like(p)
    state["step"] += 1
    a = adam_args(group, state["step"])
    _kernel(ADAM)(g, a["beta1"], a["beta2"], a["one_minus_beta1"], a["one_minus_beta2"], a["sqrt_bc2"], a["eps"],
                  a["step_size"], a["wd"], a["decay"], a["maximize"], p, state["exp_avg"], state["exp_avg_sq"])


# ====================================================================== the ops' kernels
def conv2d_forward(x, w, b, stride, pads, dilation, out_hw):
    """y = im2col(x) @ W (+ b) with the IM2COL kernel (padding inside the kernel) and one cuBLAS GEMM; y is an
    NCHW view of NHWC memory, as on the CPU.  Saves x in NHWC and W."""
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    k, _, kh, kw = w.shape
    xh = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))
    wmat = xp.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw * c, k)
    y = im2col(xh, (kh, kw), stride, pads, dilation, out_hw) @ wmat
    if b is not None:
        y += b
    saved = (xh, wmat, b is not None, (kh, kw), stride, pads, dilation, out_hw)
    return y.reshape((n,) + tuple(out_hw) + (k,)).transpose(0, 3, 1, 2), saved


def conv2d_backward(gy, saved, needs):
    """db = sum gy, dW = im2col(x)^T gy (columns rebuilt, not kept from forward), dx = col2im(gy W^T) by the
    gather kernel; gradients nobody needs are skipped."""
    xp = backend.get_array_module(gy)
    xh, wmat, has_bias, (kh, kw), stride, pads, dilation, out_hw = saved
    k, c = gy.shape[1], xh.shape[3]
    g = xp.ascontiguousarray(gy.transpose(0, 2, 3, 1)).reshape(-1, k)
    gx = gw = gb = None
    if has_bias and needs[2]:
        gb = g.sum(axis=0)
    if needs[1]:
        col = im2col(xh, (kh, kw), stride, pads, dilation, out_hw)
        gw = xp.ascontiguousarray((col.T @ g).reshape(kh, kw, c, k).transpose(3, 2, 0, 1))
        del col
    if needs[0]:
        gx = col2im(g @ wmat.T, xh.shape, (kh, kw), stride, pads, dilation, out_hw).transpose(0, 3, 1, 2)
    return (gx, gw, gb) if has_bias else (gx, gw)


def max_pool2d_forward(x, kernel, stride, pads, out_hw):
    """y by the MAXPOOL_FORWARD kernel (padding as -inf inside the kernel), and the argmax offsets."""
    y, idx = maxpool_forward(x.transpose(0, 2, 3, 1), kernel, stride, pads, out_hw)
    return y.transpose(0, 3, 1, 2), (idx, x.shape, kernel, stride, pads, out_hw)


def max_pool2d_backward(gy, saved, needs=(True,)):
    """dx by the MAXPOOL_BACKWARD gather kernel."""
    idx, (n, c, h, w), kernel, stride, pads, out_hw = saved
    return maxpool_backward(gy.transpose(0, 2, 3, 1), idx, (n, h, w, c), kernel, stride, pads,
                            out_hw).transpose(0, 3, 1, 2)


def batch_norm_forward(x, gamma, beta, eps):
    """(y, mean, var, saved): statistics by reductions over the (M, C) channels-last matrix, xhat and y by one
    BN_NORMALIZE pass."""
    xp = backend.get_array_module(x)
    x2, shape = channels_last(x)
    mean, var = bn_stats(x2)
    inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
    xhat2, y2 = bn_normalize(x2, mean, inv_std, gamma, beta)
    return from_channels_last(y2, shape), mean, var, (xhat2, shape, gamma, inv_std, x2.shape[0])


def batch_norm_backward(gy, saved, needs):
    """(dx, dgamma, dbeta): per-channel sums by reductions, dx by one BN_BACKWARD pass."""
    xhat2, shape, gamma, inv_std, m = saved
    g2, _ = channels_last(gy)
    sum_gy, sum_gy_xhat = bn_sums(g2, xhat2)
    gx = None
    if needs[0]:
        k = gamma * inv_std / gy.dtype.type(m)
        gx = from_channels_last(bn_backward(g2, xhat2, k * gy.dtype.type(m), k * sum_gy, k * sum_gy_xhat), shape)
    return gx, sum_gy_xhat, sum_gy


# ====================================================================== compilation
_compiled: dict = {}


def _kernel(spec):
    """The compiled CuPy kernel of a Spec or ReductionSpec (compiled once, on first use)."""
    k = _compiled.get(spec.name)
    if k is None:
        cp = backend.require_cuda()
        if isinstance(spec, Spec):
            k = cp.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name)
        else:
            k = cp.ReductionKernel(spec.in_params, spec.out_params, spec.map_expr, spec.reduce_expr, spec.post_map,
                                   spec.identity, spec.name)
        _compiled[spec.name] = k
    return k


ELEMENTWISE_SPECS = (IM2COL, COL2IM, MAXPOOL_FORWARD, MAXPOOL_BACKWARD, BN_NORMALIZE, BN_BACKWARD, SGD_PLAIN,
                     SGD_MOMENTUM, ADAM)
REDUCTION_SPECS = (BN_SQUARED_DEVIATION, BN_SUM_PRODUCT)
