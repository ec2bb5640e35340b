"""Pooling over 2-D windows of NCHW tensors: max, average, adaptive (global) average.

Like ``conv2d`` these work on the NHWC memory underneath the NCHW shape (see
minidl/ops/conv.py): the input is viewed as (N, H, W, C), each window offset
(p, q) is one strided (N, Ho, Wo, C) slice of the padded input,

    slice_pq[n, i, j, c] = xpad[n, s i + p, s j + q, c],

and the output is an NCHW view of an NHWC array.  Loops run over the kh kw
offsets only, never over pixels; backward routes gy back through the same slices.
"""
from __future__ import annotations

from minidl import backend
from minidl.autograd import Function
from minidl.ops.conv import pad_nhwc


def _pair(v, what):
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, (tuple, list)) and len(v) == 2
                                                          and all(isinstance(e, int) for e in v))):
        raise TypeError(f"pooling: {what} must be an int or a pair of ints, got {v!r}")
    return (v, v) if isinstance(v, int) else tuple(v)


class _Pool2d(Function):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel if stride is None else _pair(stride, "stride")
        ph, pw = _pair(padding, "padding")
        if min(self.kernel) < 1 or min(self.stride) < 1:
            raise ValueError(f"{self.name}: kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        if not (0 <= ph <= self.kernel[0] // 2 and 0 <= pw <= self.kernel[1] // 2):
            raise ValueError(f"{self.name}: padding must lie in [0, kernel_size // 2], got padding {padding} "
                             f"for kernel_size {kernel_size}")
        self.pads = (ph, ph, pw, pw)

    def _setup(self, x, fill):
        """The padded NHWC input; checks the shape and sets the output size."""
        self.geometry(x)
        xpad = pad_nhwc(x.transpose(0, 2, 3, 1), self.pads, fill)
        self.padded_shape = xpad.shape
        return xpad

    def geometry(self, x):
        """Check the shape and set ``x_shape`` and ``out_hw`` (shared by the NumPy and the CuPy forward)."""
        if x.ndim != 4:
            raise ValueError(f"{self.name}: expected input of shape (N, C, H, W), got {tuple(x.shape)}")
        n, c, h, w = x.shape
        (kh, kw), (s1, s2), (t, b, l, r) = self.kernel, self.stride, self.pads
        ho, wo = (h + t + b - kh) // s1 + 1, (w + l + r - kw) // s2 + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"{self.name}: input of shape {tuple(x.shape)} is smaller than the kernel "
                             f"{self.kernel} (padding {self.pads[::2]})")
        self.x_shape, self.out_hw = x.shape, (ho, wo)

    def _slice(self, a, p, q):
        """The (N, Ho, Wo, C) slice of an (N, Hp, Wp, C) array at kernel offset (p, q)."""
        (s1, s2), (ho, wo) = self.stride, self.out_hw
        return a[:, p:p + s1 * (ho - 1) + 1:s1, q:q + s2 * (wo - 1) + 1:s2]

    def _offsets(self):
        return [(p, q) for p in range(self.kernel[0]) for q in range(self.kernel[1])]

    def _unpad(self, dxpad):
        t, _, l, _ = self.pads
        _, _, h, w = self.x_shape
        return dxpad[:, t:t + h, l:l + w].transpose(0, 3, 1, 2)


class MaxPool2d(_Pool2d):
    """y[n, c, i, j] = max_{p, q} xpad[n, c, s i + p, s j + q]  (padding counts as -inf);
    dx = gy routed to the argmax of each window (the first one on ties, as PyTorch).

    Forward is kh kw - 1 elementwise maxima of strided slices, nothing else.  Backward compares each
    slice with y (hits[k] = slice_k == y), keeps only the first hit of each window in offset order
    (``_keep_first``) and multiplies gy by it.  When the windows tile the padded input (stride ==
    kernel and the sizes divide) the masks of all offsets are one array laid out like xpad, viewed as
    (N, Ho, kh, Wo, kw, C): one comparison with y and one product with gy give dxpad directly, with no
    per-offset passes (the usual MaxPool2d(2); 2.7-3.7x the per-offset version on the reference nets'
    maps, ``python -m benchmarks.pool_relu``).  Both give the same numbers; a zero off the argmax is
    gy * 0, so it may be -0.0 where gy < 0."""
    name = "max_pool2d"

    def forward(self, x):
        if backend.device_of(x) == "cuda":  # CuPy: one gather kernel each way (minidl/cuda_kernels.py)
            from minidl import cuda_kernels
            return cuda_kernels.max_pool2d_forward(self, x)
        xp = backend.get_array_module(x)
        xpad = self._setup(x, -float("inf"))
        offsets = self._offsets()
        if len(offsets) == 1:
            y = self._slice(xpad, 0, 0).copy()
        else:
            y = xp.maximum(self._slice(xpad, *offsets[0]), self._slice(xpad, *offsets[1]))
            for p, q in offsets[2:]:
                xp.maximum(y, self._slice(xpad, p, q), out=y)
        self.xpad, self.y = xpad, y
        return y.transpose(0, 3, 1, 2)

    def backward(self, gy):
        if hasattr(self, "gpu_idx"):
            from minidl import cuda_kernels
            return cuda_kernels.max_pool2d_backward(self, gy)
        return self._unpad(self._dxpad(gy.transpose(0, 2, 3, 1), self._tiled()))

    def _tiled(self):
        """True when every padded pixel lies in exactly one window."""
        (kh, kw), (ho, wo), (hp, wp) = self.kernel, self.out_hw, self.padded_shape[1:3]
        return self.stride == self.kernel and (hp, wp) == (ho * kh, wo * kw)

    @staticmethod
    def _keep_first(hits):
        """In place: clear every hits[k] (bool) that an earlier hits[j], j < k, already has set."""
        xp = backend.get_array_module(hits[0])
        taken = hits[0].copy()
        for k in range(1, len(hits)):
            xp.greater(hits[k], taken, out=hits[k])  # hit and not taken
            if k + 1 < len(hits):
                xp.logical_or(taken, hits[k], out=taken)

    def _dxpad(self, g, tiled):
        """The gradient of the padded NHWC input from g = gy as (N, Ho, Wo, C)."""
        xp = backend.get_array_module(g)
        (kh, kw), (ho, wo), offsets = self.kernel, self.out_hw, self._offsets()
        if tiled:
            n, _, _, c = self.padded_shape
            hits = self.xpad.reshape(n, ho, kh, wo, kw, c) == self.y[:, :, None, :, None]
            self._keep_first([hits[:, :, p, :, q] for p, q in offsets])
            return (g[:, :, None, :, None] * hits).reshape(self.padded_shape)
        hits = xp.empty((len(offsets),) + self.y.shape, dtype=bool)
        for k, (p, q) in enumerate(offsets):
            xp.equal(self._slice(self.xpad, p, q), self.y, out=hits[k])
        self._keep_first(hits)
        dxpad = xp.zeros(self.padded_shape, dtype=g.dtype)
        for k, (p, q) in enumerate(offsets):
            self._slice(dxpad, p, q)[...] += g * hits[k]
        return dxpad


class AvgPool2d(_Pool2d):
    """y[n, c, i, j] = (1 / (kh kw)) sum_{p, q} xpad[n, c, s i + p, s j + q]  (zero padding counted in the
    divisor: count_include_pad=True, as PyTorch);  dx = each window's gy / (kh kw) added back."""
    name = "avg_pool2d"

    def forward(self, x):
        xpad = self._setup(x, 0)
        y = None
        for p, q in self._offsets():
            s = self._slice(xpad, p, q)
            y = s.copy() if y is None else y.__iadd__(s)
        y *= y.dtype.type(1.0 / (self.kernel[0] * self.kernel[1]))
        return y.transpose(0, 3, 1, 2)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        g = gy.transpose(0, 2, 3, 1) * gy.dtype.type(1.0 / (self.kernel[0] * self.kernel[1]))
        dxpad = xp.zeros(self.padded_shape, dtype=gy.dtype)
        for p, q in self._offsets():
            self._slice(dxpad, p, q)[...] += g
        return self._unpad(dxpad)


class AdaptiveAvgPool2d(Function):
    """Average over an output_size grid of cells, cell i spanning rows floor(i H / Ho) .. ceil((i+1) H / Ho)
    (PyTorch's rule); output_size 1 is the global average  y[n, c] = mean_{h, w} x[n, c, h, w].
    dx = each cell's gy / (cell area) spread over the cell."""
    name = "adaptive_avg_pool2d"

    def __init__(self, output_size=1):
        self.out_hw = _pair(output_size, "output_size")
        if min(self.out_hw) < 1:
            raise ValueError(f"adaptive_avg_pool2d: output_size must be >= 1, got {output_size}")

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
