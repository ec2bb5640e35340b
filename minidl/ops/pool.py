"""Pooling over 2-D windows of NCHW tensors: max, average, adaptive (global) average.

Max and average pooling are im2col without the GEMM (minidl/ops/conv.py): the windows of the padded input,
col[n, c, p, q, i, j] = xpad[n, c, s i + p, s j + q], reduced over the window's kh kw values; backward
puts each window's gradient into a dcol of the same shape and col2im adds it back where it was read.

    max:      y = max_{p, q} col,                 dcol = gy where (p, q) is the window's first maximum, else 0
              (in a window holding NaN, y is NaN and the gradient goes to its last NaN, as in PyTorch)
    average:  y = (1 / (kh kw)) sum_{p, q} col,   dcol = gy / (kh kw) at every (p, q)

Max pooling pads with -inf, average pooling with zeros that count in the divisor (count_include_pad=True, as
PyTorch).  Like ``Conv2d``, both hand the same arrays to a fast kernel (minidl/kernels) unless
``minidl.set_ops("reference")`` is in force.
"""
from __future__ import annotations

from minidl import backend, kernels
from minidl.autograd import Function
from minidl.ops.conv import col2im, im2col, pad, pair


class _Pool2d(Function):
    floating = ("input",)
    fill = 0.0   # the padding value

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = pair(kernel_size, f"{self.name}: kernel_size")
        self.stride = self.kernel if stride is None else pair(stride, f"{self.name}: stride")
        ph, pw = pair(padding, f"{self.name}: padding", minimum=0)
        if ph > self.kernel[0] // 2 or pw > self.kernel[1] // 2:
            raise ValueError(f"{self.name}: padding must lie in [0, kernel_size // 2], got padding {padding} "
                             f"for kernel_size {kernel_size}")
        self.pads = (ph, ph, pw, pw)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self.name}: expected input of shape (N, C, H, W), got {tuple(x.shape)}")
        (n, c, h, w), (kh, kw), (s1, s2), (t, b, l, r) = x.shape, self.kernel, self.stride, self.pads
        self.x_shape, self.out_hw = x.shape, ((h + t + b - kh) // s1 + 1, (w + l + r - kw) // s2 + 1)
        if min(self.out_hw) < 1:
            raise ValueError(f"{self.name}: input of shape {tuple(x.shape)} is smaller than the kernel "
                             f"{self.kernel} (padding {self.pads[::2]})")
        self.fast = kernels.choose(self.name, x)    # a fast kernel module, or None: the reference
        if self.fast:
            y, self.saved = getattr(self.fast, self.name + "_forward")(x, self.kernel, self.stride, self.pads,
                                                                       self.out_hw)
            return y
        xpad = pad(x, self.pads, self.fill)
        self.xpad_shape = xpad.shape
        col = im2col(xpad, self.kernel, self.stride, (1, 1), self.out_hw)
        return self.pool(col.reshape(n, c, kh * kw, *self.out_hw))   # the window's kh kw values on axis 2

    def backward(self, gy):
        if self.fast:
            return getattr(self.fast, self.name + "_backward")(gy, self.saved, self.needs_input_grad)
        (n, c, h, w), (kh, kw), (t, _, l, _) = self.x_shape, self.kernel, self.pads
        dcol = self.unpool(gy[:, :, None]).reshape(n, c, kh, kw, *self.out_hw)
        return col2im(dcol, self.xpad_shape, self.stride, (1, 1))[:, :, t:t + h, l:l + w]


class MaxPool2d(_Pool2d):
    """y[n, c, i, j] = max_{p, q} xpad[n, c, s i + p, s j + q]  (padding counts as -inf);
    dx = col2im(dcol), dcol = gy at each window's first maximum, 0 elsewhere.  As in PyTorch, whose scan of
    a window takes a value greater than the best so far or NaN: the first of tied maxima, the last NaN."""
    name = "max_pool2d"
    fill = -float("inf")

    def pool(self, col):
        xp = backend.get_array_module(col)
        nan = xp.isnan(col)
        last_nan = col.shape[2] - 1 - nan[:, :, ::-1].argmax(axis=2)
        self.arg = xp.where(nan.any(axis=2), last_nan, col.argmax(axis=2))   # the window's last NaN, or first maximum
        return col.max(axis=2)

    def unpool(self, g):
        kk = self.kernel[0] * self.kernel[1]
        onehot = backend.get_array_module(g).arange(kk).reshape(1, 1, kk, 1, 1) == self.arg[:, :, None]
        return onehot * g


class AvgPool2d(_Pool2d):
    """y[n, c, i, j] = (1 / (kh kw)) sum_{p, q} xpad[n, c, s i + p, s j + q]  (zero padding counted);
    dx = col2im(dcol), dcol = gy / (kh kw) at every window position."""
    name = "avg_pool2d"

    def pool(self, col):
        return col.mean(axis=2)

    def unpool(self, g):
        kk = self.kernel[0] * self.kernel[1]
        return backend.get_array_module(g).broadcast_to(g / g.dtype.type(kk), g.shape[:2] + (kk,) + g.shape[3:])


class AdaptiveAvgPool2d(Function):
    """Average over an output_size grid of cells, cell i spanning rows floor(i H / Ho) .. ceil((i+1) H / Ho)
    (PyTorch's rule); output_size 1 is the global average  y[n, c] = mean_{h, w} x[n, c, h, w].
    dx = each cell's gy / (cell area) spread over the cell."""
    name = "adaptive_avg_pool2d"
    floating = ("input",)

    def __init__(self, output_size=1):
        self.out_hw = pair(output_size, "adaptive_avg_pool2d: output_size")

    @staticmethod
    def _bounds(size, out):
        return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"adaptive_avg_pool2d: expected input of shape (N, C, H, W), got {tuple(x.shape)}")
        xp = backend.get_array_module(x)
        n, c, h, w = x.shape
        self.x_shape = x.shape
        if self.out_hw == (1, 1):
            return x.mean(axis=(2, 3), keepdims=True)
        self.rows, self.cols = self._bounds(h, self.out_hw[0]), self._bounds(w, self.out_hw[1])
        y = xp.empty((n, c) + self.out_hw, dtype=x.dtype)
        for i, (a, b) in enumerate(self.rows):
            for j, (e, f) in enumerate(self.cols):
                y[:, :, i, j] = x[:, :, a:b, e:f].mean(axis=(2, 3))
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        n, c, h, w = self.x_shape
        if self.out_hw == (1, 1):
            return xp.broadcast_to(gy * gy.dtype.type(1.0 / (h * w)), self.x_shape)
        dx = xp.zeros(self.x_shape, dtype=gy.dtype)
        for i, (a, b) in enumerate(self.rows):
            for j, (e, f) in enumerate(self.cols):
                dx[:, :, a:b, e:f] += gy[:, :, i:i + 1, j:j + 1] * gy.dtype.type(1.0 / ((b - a) * (f - e)))
        return dx


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over kernel_size windows of x (N, C, H, W) every ``stride`` (default: kernel_size) pixels,
    with ``padding`` of -inf on each side."""
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over kernel_size windows (stride defaults to kernel_size; zero padding is counted)."""
    return AvgPool2d(kernel_size, stride, padding)(x)


def adaptive_avg_pool2d(x, output_size=1):
    """Average over an output_size grid (1: the global average, shape (N, C, 1, 1))."""
    return AdaptiveAvgPool2d(output_size)(x)
