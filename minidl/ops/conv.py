"""2-D convolution (cross-correlation, as PyTorch) the textbook way: pad, im2col, one GEMM; col2im back.

x (N, C, H, W), weight w (K, C, kh, kw), bias b (K,), stride s, dilation d, zero padding (top, bottom, left,
right); y (N, K, Ho, Wo) with Ho = (H + top + bottom - d (kh - 1) - 1) // s + 1, and the same for Wo:

    y[n, k, i, j] = b[k] + sum_{c, p, q} w[k, c, p, q] xpad[n, c, s i + d p, s j + d q]

    forward:   col = im2col(xpad)      (N Ho Wo, C kh kw): row (n, i, j) is the window under output (i, j)
               y = col @ W + b         with W = w as a (C kh kw, K) matrix
    backward:  dW = col^T @ gy,  db = sum_{n, i, j} gy,  dx = col2im(gy @ W^T)

col2im is the adjoint of im2col: it adds each window's gradient back where the window was read.  ``Conv2d``
runs this under ``minidl.set_ops("reference")``; by default it hands the same arrays to a fast kernel
(minidl/kernels), which gives the same numbers.
"""
from __future__ import annotations

from minidl import backend, kernels
from minidl.autograd import Function


def pair(v, what, minimum=1):
    """(v, v) for an int v, v for a pair of ints; a TypeError for other types, a ValueError for another length
    or a value below ``minimum``."""
    def is_int(e):
        return isinstance(e, int) and not isinstance(e, bool)
    if not (is_int(v) or (isinstance(v, (tuple, list)) and all(is_int(e) for e in v))):
        raise TypeError(f"{what} must be an int or a pair of ints, got {v!r}")
    if not is_int(v) and len(v) != 2:
        raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")
    v = (v, v) if isinstance(v, int) else tuple(v)
    if min(v) < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {v if v[0] != v[1] else v[0]}")
    return v


def conv_padding(padding, kernel, dilation, stride):
    """(top, bottom, left, right) from an int, a pair, 'valid' or 'same' ('same': d (k - 1) rows and columns
    in all, the odd one at the bottom or right, as PyTorch)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' needs stride 1, got stride {stride}")
        th, tw = (d * (k - 1) for k, d in zip(kernel, dilation))
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if isinstance(padding, str):
        raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = pair(padding, "conv2d: padding", minimum=0)
    return (ph, ph, pw, pw)


def pad(x, pads, value=0.0):
    """x (N, C, H, W) with pads = (top, bottom, left, right) rows and columns of ``value`` around it."""
    t, b, l, r = pads
    return backend.get_array_module(x).pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def im2col(xpad, kernel, stride, dilation, out_hw):
    """col[n, c, p, q, i, j] = xpad[n, c, s i + d p, s j + d q]: the kh kw window under each output pixel."""
    (kh, kw), (s1, s2), (d1, d2), (ho, wo) = kernel, stride, dilation, out_hw
    col = backend.get_array_module(xpad).empty(xpad.shape[:2] + (kh, kw, ho, wo), dtype=xpad.dtype)
    for p in range(kh):
        for q in range(kw):
            col[:, :, p, q] = xpad[:, :, d1 * p:d1 * p + s1 * (ho - 1) + 1:s1, d2 * q:d2 * q + s2 * (wo - 1) + 1:s2]
    return col


def col2im(dcol, padded_shape, stride, dilation):
    """The adjoint of im2col:  dxpad[n, c, s i + d p, s j + d q] += dcol[n, c, p, q, i, j]."""
    _, _, kh, kw, ho, wo = dcol.shape
    (s1, s2), (d1, d2) = stride, dilation
    dxpad = backend.get_array_module(dcol).zeros(padded_shape, dtype=dcol.dtype)
    for p in range(kh):
        for q in range(kw):
            dxpad[:, :, d1 * p:d1 * p + s1 * (ho - 1) + 1:s1, d2 * q:d2 * q + s2 * (wo - 1) + 1:s2] += dcol[:, :, p, q]
    return dxpad


class Conv2d(Function):
    """y = conv2d(x, w) + b: col = im2col(xpad), y = col @ W + b;  dW = col^T gy, db = sum gy,
    dx = col2im(gy W^T) (see the module docstring)."""
    name = "conv2d"
    floating = ("input", "weight", "bias")

    def __init__(self, stride=1, padding=0, dilation=1):
        self.stride, self.dilation = pair(stride, "conv2d: stride"), pair(dilation, "conv2d: dilation")
        self.padding = padding

    def forward(self, x, w, b=None):
        self.setup(x, w, b)
        self.fast = kernels.choose(self.name, x)    # a fast kernel module, or None: the reference below
        if self.fast:
            y, self.saved = self.fast.conv2d_forward(x, w, b, self.stride, self.pads, self.dilation, self.out_hw)
            return y
        (n, c, h, wd), (k, _, kh, kw), (ho, wo) = x.shape, w.shape, self.out_hw
        xpad = pad(x, self.pads)
        col = im2col(xpad, self.kernel, self.stride, self.dilation, self.out_hw)    # (N, C, kh, kw, Ho, Wo)
        self.col = col.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, c * kh * kw)  # rows (n, i, j), cols (c, p, q)
        self.W = w.reshape(k, -1).T                                              # (C kh kw, K)
        y = self.col @ self.W
        if b is not None:
            y = y + b
        self.xpad_shape, self.has_bias = xpad.shape, b is not None
        return y.reshape(n, ho, wo, k).transpose(0, 3, 1, 2)

    def backward(self, gy):
        if self.fast:
            return self.fast.conv2d_backward(gy, self.saved, self.needs_input_grad)
        (n, c, h, wd), (kh, kw), (ho, wo), (t, _, l, _) = self.x_shape, self.kernel, self.out_hw, self.pads
        k = gy.shape[1]
        g = gy.transpose(0, 2, 3, 1).reshape(-1, k)                              # gy as (N Ho Wo, K)
        dw = (self.col.T @ g).T.reshape(k, c, kh, kw)
        db = g.sum(axis=0)
        dcol = (g @ self.W.T).reshape(n, ho, wo, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
        dx = col2im(dcol, self.xpad_shape, self.stride, self.dilation)[:, :, t:t + h, l:l + wd]
        return (dx, dw, db) if self.has_bias else (dx, dw)

    def setup(self, x, w, b):
        """Check the shapes; set ``kernel``, ``pads`` (top, bottom, left, right), ``out_hw`` and ``x_shape``."""
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(f"conv2d: expected input (N, C, H, W) and weight (C_out, C_in, kH, kW), got shapes "
                             f"{tuple(x.shape)} and {tuple(w.shape)}")
        if x.shape[1] != w.shape[1]:
            raise ValueError(f"conv2d: input of shape {tuple(x.shape)} has {x.shape[1]} channels, but weight of "
                             f"shape {tuple(w.shape)} expects {w.shape[1]} input channels")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"conv2d: expected bias of shape ({w.shape[0]},) for weight {tuple(w.shape)}, "
                             f"got {tuple(b.shape)}")
        self.x_shape, self.kernel = x.shape, pair(tuple(w.shape[2:]), "conv2d: kernel size")
        self.pads = conv_padding(self.padding, self.kernel, self.dilation, self.stride)
        t, bt, l, r = self.pads
        self.out_hw = tuple((size + p - d * (kk - 1) - 1) // s + 1 for size, p, kk, s, d in zip(
            x.shape[2:], (t + bt, l + r), self.kernel, self.stride, self.dilation))
        if min(self.out_hw) < 1:
            raise ValueError(f"conv2d: input of shape {tuple(x.shape)} with padding {self.padding!r} is smaller "
                             f"than the dilated kernel {self.kernel} (dilation {self.dilation}): output would be "
                             f"{self.out_hw[0]}x{self.out_hw[1]}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation, as PyTorch) of x (N, C, H, W) with weight (K, C, kH, kW) and an
    optional bias (K,).  padding: int, pair, 'valid' or 'same' (stride 1 only)."""
    op = Conv2d(stride, padding, dilation)
    return op(x, weight) if bias is None else op(x, weight, bias)
