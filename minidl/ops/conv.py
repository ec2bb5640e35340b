"""2-D convolution as im2col + one GEMM, and its col2im backward.

Shapes: x (N, C, H, W), weight (K, C, kh, kw), bias (K,), y (N, K, Ho, Wo) with
Ho = (H + pad_top + pad_bottom - d (kh - 1) - 1) // s + 1 (same for W).

    y[n, k, i, j] = b[k] + sum_{c, p, q} w[k, c, p, q] * xpad[n, c, s i + d p, s j + d q]

Memory layout.  The API is NCHW, as in PyTorch, but the arrays underneath are
NHWC: ``conv2d`` returns ``y_nhwc.transpose(0, 3, 1, 2)``, an NCHW-shaped view of
an NHWC-contiguous buffer.  Elementwise ops (NumPy's default ``order='K'``) keep
that layout, and the next convolution's ``x.transpose(0, 2, 3, 1)`` is then a free,
contiguous view.  In NHWC the im2col matrix has rows (n, i, j) and columns
(p, q, c), so ``col @ W`` with W = weight as (kh kw C, K) gives y in NHWC at once,
with no transpose of the GEMM result; and col2im adds (N, Ho, Wo, C) slices.
"""
from __future__ import annotations

from minidl import backend
from minidl.autograd import Function
from minidl.ops.reduce import channel_sum


def _pair(v, what):
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, (tuple, list)) and len(v) == 2
                                                          and all(isinstance(e, int) for e in v))):
        raise TypeError(f"conv2d: {what} must be an int or a pair of ints, got {v!r}")
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_padding(padding, kernel, dilation, stride):
    """(top, bottom, left, right) zero padding from an int, a pair, 'valid' or 'same'.
    'same' pads d (k - 1) in total per axis, the extra one at the end, as PyTorch does."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' needs stride 1, got stride {stride}")
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"conv2d: padding must be >= 0, got {padding!r}")
    return (ph, ph, pw, pw)


def pad_nhwc(x, pads, value=0):
    """x (N, H, W, C) with ``pads`` = (top, bottom, left, right) rows/columns of ``value`` around it (a new
    C-contiguous array; ``x`` itself when there is nothing to pad and it is already contiguous)."""
    t, b, l, r = pads
    xp = backend.get_array_module(x)
    if not any(pads):
        return xp.ascontiguousarray(x)
    n, h, w, c = x.shape
    out = xp.empty((n, h + t + b, w + l + r, c), dtype=x.dtype)
    if value == 0:
        out[:, :t] = 0
        out[:, h + t:] = 0
        out[:, t:h + t, :l] = 0
        out[:, t:h + t, w + l:] = 0
    else:
        out[:, :t] = value
        out[:, h + t:] = value
        out[:, t:h + t, :l] = value
        out[:, t:h + t, w + l:] = value
    out[:, t:h + t, l:w + l] = x
    return out


def windows(xpad, kernel, stride, dilation, out_hw):
    """A read-only strided view (N, Ho, Wo, kh, kw, C) of the sliding windows of an NHWC C-contiguous array:
    view[n, i, j, p, q, c] = xpad[n, s i + d p, s j + d q, c].  No copy."""
    xp = backend.get_array_module(xpad)
    n, _, _, c = xpad.shape
    sn, sh, sw, sc = xpad.strides
    (kh, kw), (s1, s2), (d1, d2), (ho, wo) = kernel, stride, dilation, out_hw
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, ho, wo, kh, kw, c), strides=(sn, s1 * sh, s2 * sw, d1 * sh, d2 * sw, sc))


def im2col(xpad, kernel, stride, dilation, out_hw):
    """The (N Ho Wo, kh kw C) matrix of windows of an NHWC array: one copy of the strided view."""
    n, _, _, c = xpad.shape
    kh, kw = kernel
    ho, wo = out_hw
    xp = backend.get_array_module(xpad)
    col = xp.empty((n, ho, wo, kh, kw, c), dtype=xpad.dtype)
    col[...] = windows(xpad, kernel, stride, dilation, out_hw)
    return col.reshape(n * ho * wo, kh * kw * c)


def col2im(dcol, padded_shape, kernel, stride, dilation, out_hw, out=None):
    """The adjoint of im2col: dcol (kh, kw, N, Ho, Wo, C), offset-major, summed back into an (N, Hp, Wp, C)
    array (``out`` if given).  A loop over the kh kw kernel offsets, each adding one contiguous (N, Ho, Wo, C)
    block into a strided slice (no scatter-add)."""
    xp = backend.get_array_module(dcol)
    (kh, kw), (s1, s2), (d1, d2), (ho, wo) = kernel, stride, dilation, out_hw
    if out is None:
        dx = xp.zeros(padded_shape, dtype=dcol.dtype)
    else:
        dx = out
        dx[...] = 0
    for p in range(kh):
        for q in range(kw):
            dx[:, d1 * p:d1 * p + s1 * (ho - 1) + 1:s1, d2 * q:d2 * q + s2 * (wo - 1) + 1:s2] += dcol[p, q]
    return dx


def out_size(size, pad, k, s, d):
    return (size + pad - d * (k - 1) - 1) // s + 1


# Bytes of im2col columns built at a time.  Chunks of whole images bound the memory that col takes (the
# full matrix is kh kw times the input) and let the GEMM read a chunk while it is still in cache; but each
# multi-threaded BLAS call must wait for all its threads, which on a busy 2-core machine can cost a scheduler
# quantum per call.  `python -m benchmarks.conv_chunks` times the 3x3 layers of nets A and D: on the quiet
# 2-core machine, forward + weight gradient summed over the layers took 110 ms with 2 MB chunks, 113 ms
# with 4 MB and 133 ms with 16 MB; with other processes on the cores, 0.5-2 MB chunks became up to 20x slower
# than 16 MB on the 16x16x64 layer (one image per chunk: 128 BLAS calls) and 4 MB 3x slower.
CHUNK_BYTES = 4 * 2**20
# For stride 1, dx is the full correlation of the padded gy when the input has at most this many times the
# output's pixels, else col2im: the full correlation multiplies N H W rows, col2im N Ho Wo rows plus kh kw
# strided additions.  `python -m benchmarks.conv_input_grad` times both on the reference layers (quiet machine,
# batch 64): with padding (ratio 1.0) the full correlation took 0.79-0.82x col2im's time and on A's 30x30 layer
# (1.15) 0.92-0.98x; on A's 14x14 and 12x12 layers (1.36, 1.44) col2im took 0.67-0.88x the full's, on the
# MNIST CNN's 5x5 layer (2.25) 0.49x.
FULL_CORRELATION_MAX_RATIO = 1.25
# A forward's columns of at most this many bytes are built whole and kept for the backward instead of
# rebuilt there: the first layers (input image, 25-27 columns), whose columns are many times their small
# input but few MB.  `python -m benchmarks.conv_chunks` (second table) times forward + backward of the first
# layers of nets A, D and B kept and rebuilt: kept took 0.81-0.89x the time at batch 64, 0.75-0.93x at 128
# (2026-11-23).  It costs memory: B's peak in a training step at batch 128 went from 24 to 38 MB.
KEEP_COLUMNS_BYTES = 16 * 2**20
# Inputs with at most this many channels and NCHW memory (images) are read as planes (see Columns).
PLANES_MAX_CHANNELS = 4


def _chunks(n, row_bytes):
    step = max(1, CHUNK_BYTES // row_bytes)
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def pad_nchw(x, pads):
    """x (N, C, H, W) with ``pads`` = (top, bottom, left, right) rows/columns of zeros around it (C-contiguous):
    ``pad_nhwc`` of its (N C, H, W, 1) view."""
    n, c, h, w = x.shape
    out = pad_nhwc(x.reshape(n * c, h, w, 1), pads)
    return out.reshape(n, c, out.shape[1], out.shape[2])


class Columns:
    """The im2col matrix of a padded input, built chunk by chunk of whole images into one reused buffer:
    ``for s, e, col in Columns(...)`` gives col (rows (n, i, j) of images s..e, one column per window
    feature, and with ``ones=True`` a last column of ones that multiplies the bias).  Two memory layouts:

    - NHWC, ``xpad`` (N, Hp, Wp, C) (every layer after the first): features (p, q, c); a chunk is one
      strided copy of the ``windows`` view, whose contiguous runs are kw C elements.
    - planes, ``xpad`` (N, C, Hp, Wp) C-contiguous (the input image: NCHW memory, few channels): features
      (c, p, q); a chunk is C kh kw copies of shifted (N, Ho, Wo) planes, with contiguous runs of Wo
      elements, into a (features, rows) buffer whose transpose is col (BLAS reads it transposed at no
      cost).  With C = 1 or 3 the NHWC copy would move runs of only 5-9 elements: this is 4x faster for
      the MNIST CNN's first layer (0.25 against 0.96 ms at batch 64).

    ``keep=True`` (the forward's columns): where the whole matrix takes at most KEEP_COLUMNS_BYTES it is
    built in one chunk and kept, so that iterating again (the backward's weight gradient) rebuilds nothing.

    The column of ones folds the bias into the GEMMs:  [col, 1] @ [W; b] = col @ W + b  and
    [col, 1]^T @ gy = [dW; db], so neither y += b nor the bias gradient's sum takes a pass of its own over
    y or gy (rows of only K elements, slow to broadcast over: 0.5 of the MNIST CNN's first layer's 1.9 ms).
    """

    def __init__(self, xpad, kernel, stride, dilation, out_hw, planes=False, ones=False, keep=False):
        self.xp = backend.get_array_module(xpad)
        self.xpad, self.kernel, self.stride, self.dilation, self.out_hw = xpad, kernel, stride, dilation, out_hw
        self.planes, self.ones = planes, ones
        n, self.c = xpad.shape[0], xpad.shape[1 if planes else 3]
        (kh, kw), (ho, wo) = kernel, out_hw
        self.features = kh * kw * self.c
        self.width = self.features + ones           # columns of col
        row_bytes = xpad.itemsize * ho * wo * self.width
        self.keep = keep and n * row_bytes <= KEEP_COLUMNS_BYTES
        self.ranges = [(0, n)] if self.keep else _chunks(n, row_bytes)
        self.built = None
        step = self.ranges[0][1] - self.ranges[0][0]
        self.buf = self.xp.empty(step * ho * wo * self.width, dtype=xpad.dtype)
        if not planes:
            self.win = windows(xpad, kernel, stride, dilation, out_hw)

    def __iter__(self):
        (kh, kw), (s1, s2), (d1, d2), (ho, wo) = self.kernel, self.stride, self.dilation, self.out_hw
        f = self.features
        if self.built is not None:
            yield 0, self.xpad.shape[0], self.built
            return
        for s, e in self.ranges:
            rows = (e - s) * ho * wo
            if not self.planes:
                col = self.buf[:rows * self.width].reshape(rows, self.width)
                col[:, :f].reshape((e - s,) + self.win.shape[1:])[...] = self.win[s:e]
                if self.ones:
                    col[:, f] = 1
                if self.keep:
                    self.built = col
                yield s, e, col
                continue
            colt = self.buf[:rows * self.width].reshape(self.width, rows)
            planes = colt[:f].reshape(self.c, kh, kw, e - s, ho, wo)
            for p in range(kh):
                for q in range(kw):
                    i = slice(d1 * p, d1 * p + s1 * (ho - 1) + 1, s1)
                    j = slice(d2 * q, d2 * q + s2 * (wo - 1) + 1, s2)
                    planes[:, p, q] = self.xpad[s:e, :, i, j].transpose(1, 0, 2, 3)
            if self.ones:
                colt[f] = 1
            if self.keep:
                self.built = colt.T
            yield s, e, colt.T

    def weight_matrix(self, w, b=None):
        """w (K, C, kh, kw) as the (features, K) matrix that col multiplies; with ``ones``, b (K,) below it."""
        k = w.shape[0]
        wmat = w.reshape(k, self.features).T if self.planes else w.transpose(2, 3, 1, 0).reshape(self.features, k)
        return self.xp.concatenate([wmat, b.reshape(1, k)]) if self.ones else wmat

    def weight_grad(self, dwt):
        """dW^T (K, width) back in the weight's layout (K, C, kh, kw); with ``ones``, (dW, db)."""
        k, (kh, kw), f = dwt.shape[0], self.kernel, self.features
        if self.planes:
            gw = self.xp.ascontiguousarray(dwt[:, :f]).reshape(k, self.c, kh, kw)
        else:
            gw = self.xp.ascontiguousarray(dwt[:, :f].reshape(k, kh, kw, self.c).transpose(0, 3, 1, 2))
        return (gw, self.xp.ascontiguousarray(dwt[:, f])) if self.ones else gw


def conv_gemm(cols, wmat):
    """y (N, Ho, Wo, K) = col @ wmat for ``Columns`` cols and wmat (width, K) (``weight_matrix``, which
    carries the bias when cols has its column of ones): one GEMM per chunk of images, straight into y's rows."""
    (ho, wo), k = cols.out_hw, wmat.shape[1]
    y = cols.xp.empty((cols.xpad.shape[0], ho, wo, k), dtype=cols.xpad.dtype)
    for s, e, col in cols:
        cols.xp.matmul(col, wmat, out=y[s:e].reshape(-1, k))
    return y


def conv_weight_grad(cols, g):
    """dW^T (K, width) = g^T @ col for g (N, Ho, Wo, K), chunk by chunk of ``cols`` (rebuilt, or kept whole).
    The product is taken in the orientation whose result has at least as many rows as columns (col^T @ g
    when width >= K, else g^T @ col): with the long inner dimension N Ho Wo, OpenBLAS ran the other
    orientation 30 times slower here (0.37 s against 0.012 s for a 13312-row chunk of a 32-channel layer)."""
    xp, k = cols.xp, g.shape[3]
    tall = cols.width >= k
    gw = xp.zeros((cols.width, k) if tall else (k, cols.width), dtype=g.dtype)
    for s, e, col in cols:
        gm = xp.ascontiguousarray(g[s:e]).reshape(-1, k)
        gw += col.T @ gm if tall else gm.T @ col
    return gw.T if tall else gw


class Conv2d(Function):
    """y = conv2d(x, w) + b, computed as  col = im2col(x)  (N Ho Wo, kh kw C);  y = col @ W + b  with
    W = w as (kh kw C, K).  Backward:  dW = col^T @ gy,  db = sum_{n,i,j} gy,  dx = col2im(gy @ W^T);
    dx is skipped when x needs no gradient (the input image).

    Fast path (same math): im2col and GEMM run over chunks of images (``Columns``, ``conv_gemm``), and backward
    rebuilds each chunk's columns from the saved padded input instead of keeping col (kh kw times the
    input) alive, except where col is small (KEEP_COLUMNS_BYTES: the first layers); b and db ride in the
    GEMMs on a column of ones (``Columns``).  For stride 1, dx is itself a convolution, the full correlation
    of gy with the flipped kernel:  dx = conv(pad(gy, d (k - 1) - pad), flip(w) with in/out channels
    swapped),  which needs one strided copy and one GEMM per chunk instead of a GEMM that writes col plus
    kh kw strided additions; it is taken where the input has at most FULL_CORRELATION_MAX_RATIO times the
    output's pixels."""
    name = "conv2d"

    def __init__(self, stride=1, padding=0, dilation=1):
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"conv2d: stride and dilation must be >= 1, got stride {stride}, dilation {dilation}")
        self.padding = padding

    def forward(self, x, w, b=None):
        if backend.device_of(x) == "cuda":  # CuPy: im2col kernel + one cuBLAS GEMM (minidl/cuda_kernels.py)
            from minidl import cuda_kernels
            return cuda_kernels.conv2d_forward(self, x, w, b)
        self.geometry(x, w, b)
        # the input image (NCHW memory, few channels) is read as planes, every other input as NHWC
        planes = x.shape[1] <= PLANES_MAX_CHANNELS and x.flags.c_contiguous
        xpad = pad_nchw(x, self.pads) if planes else pad_nhwc(x.transpose(0, 2, 3, 1), self.pads)
        cols = Columns(xpad, self.kernel, self.stride, self.dilation, self.out_hw, planes, b is not None, keep=True)
        y = conv_gemm(cols, cols.weight_matrix(w, b))
        self.xpad, self.planes, self.w, self.has_bias = xpad, planes, w, b is not None
        self.cols = cols if cols.keep else None
        return y.transpose(0, 3, 1, 2)

    def geometry(self, x, w, b):
        """Check the shapes and set ``kernel``, ``pads`` (top, bottom, left, right), ``out_hw`` and
        ``x_nhwc_shape`` (shared by the NumPy and the CuPy forward)."""
        _check_shapes(x, w, b)
        self.x_nhwc_shape = (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
        h, wd = x.shape[2:]
        kh, kw = self.kernel = w.shape[2:]
        self.pads = conv_padding(self.padding, self.kernel, self.dilation, self.stride)
        t, bt, l, r = self.pads
        ho = out_size(h, t + bt, kh, self.stride[0], self.dilation[0])
        wo = out_size(wd, l + r, kw, self.stride[1], self.dilation[1])
        if ho < 1 or wo < 1:
            raise ValueError(f"conv2d: input of shape {tuple(x.shape)} with padding {self.padding!r} is smaller "
                             f"than the dilated kernel {(kh, kw)} (dilation {self.dilation}): output would be "
                             f"{ho}x{wo}")
        self.out_hw = (ho, wo)

    def backward(self, gy):
        if hasattr(self, "gpu_saved"):
            from minidl import cuda_kernels
            return cuda_kernels.conv2d_backward(self, gy)
        g = gy.transpose(0, 2, 3, 1)  # NHWC; contiguous when gy kept conv's layout
        gb = gw = gx = None
        need_gb = self.has_bias and self.needs_input_grad[2]
        if self.needs_input_grad[1]:  # with the column of ones, db comes out of the same GEMM as dW
            cols = self.cols if self.cols is not None else Columns(
                self.xpad, self.kernel, self.stride, self.dilation, self.out_hw, self.planes, need_gb)
            gw = cols.weight_grad(conv_weight_grad(cols, g))
            if cols.ones:
                gw, db = gw
                gb = db if need_gb else None
        elif need_gb:
            gb = channel_sum(gy)      # einsum: 4x faster than g.sum(axis=(0, 1, 2)) on (64, 30, 30, 32)
        if self.needs_input_grad[0]:
            gx = self._input_grad(g).transpose(0, 3, 1, 2)
        return (gx, gw, gb) if self.has_bias else (gx, gw)

    def _input_grad(self, g):
        """dx in NHWC (unpadded): the full correlation where it applies and costs little more, else col2im."""
        full = self.full_correlation_pads()
        return self._input_grad_col2im(g) if full is None else self._input_grad_full(g, full)

    def full_correlation_pads(self):
        """The padding (top, bottom, left, right) of gy whose full correlation with the flipped kernel gives dx,
        where dx is taken that way: stride 1, pads no wider than the dilated kernel, and an input with at most
        FULL_CORRELATION_MAX_RATIO times the output's pixels; None where dx goes by col2im."""
        _, h, wd, _ = self.x_nhwc_shape
        kh, kw = self.kernel
        (d1, d2), (t, bt, l, r), (ho, wo) = self.dilation, self.pads, self.out_hw
        full = (d1 * (kh - 1) - t, d1 * (kh - 1) - bt, d2 * (kw - 1) - l, d2 * (kw - 1) - r)
        if self.stride == (1, 1) and min(full) >= 0 and h * wd <= FULL_CORRELATION_MAX_RATIO * ho * wo:
            return full
        return None

    def _input_grad_full(self, g, full):
        """dx = conv(pad(gy, full), flip(w) with in/out channels swapped) for stride 1: one strided copy and
        one GEMM per chunk, with N H W rows (the input's size, not the output's)."""
        k, c, kh, kw = self.w.shape
        _, h, wd, _ = self.x_nhwc_shape
        wflip = self.w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * k, c)
        return conv_gemm(Columns(pad_nhwc(g, full), self.kernel, (1, 1), self.dilation, (h, wd)), wflip)

    def _input_grad_col2im(self, g):
        """dcol = gy @ W^T, chunk by chunk, summed back into dx by col2im (kh kw strided additions).  dcol is
        made offset-major, (kh kw, N Ho Wo, C), by one batched product gy @ W_pq^T per kernel offset, so
        each addition reads a contiguous block (1.9x faster for the MNIST CNN's 5x5 layer than reading
        runs of C elements out of (N Ho Wo, kh kw C) rows)."""
        xp = backend.get_array_module(g)
        k, c, kh, kw = self.w.shape
        n, h, wd, _ = self.x_nhwc_shape
        (t, bt, l, r), (ho, wo) = self.pads, self.out_hw
        w_pq = self.w.transpose(2, 3, 0, 1).reshape(kh * kw, k, c)      # W_pq^T: (K, C) per offset
        dxpad = xp.empty((n, t + h + bt, l + wd + r, c), dtype=g.dtype)
        chunks = _chunks(n, g.itemsize * ho * wo * kh * kw * c)
        buf = xp.empty(kh * kw * (chunks[0][1] - chunks[0][0]) * ho * wo * c, dtype=g.dtype)
        for s, e in chunks:
            dcol = buf[:kh * kw * (e - s) * ho * wo * c].reshape(kh * kw, (e - s) * ho * wo, c)
            xp.matmul(xp.ascontiguousarray(g[s:e]).reshape(1, -1, k), w_pq, out=dcol)
            col2im(dcol.reshape(kh, kw, e - s, ho, wo, c), None, self.kernel, self.stride, self.dilation,
                   self.out_hw, out=dxpad[s:e])
        return dxpad[:, t:t + h, l:l + wd]


def _check_shapes(x, w, b):
    if x.ndim != 4:
        raise ValueError(f"conv2d: expected input of shape (N, C, H, W), got {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: expected weight of shape (C_out, C_in, kH, kW), got {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: input of shape {tuple(x.shape)} has {x.shape[1]} channels, but weight of "
                         f"shape {tuple(w.shape)} expects {w.shape[1]} input channels")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"conv2d: expected bias of shape ({w.shape[0]},) for weight {tuple(w.shape)}, "
                         f"got {tuple(b.shape)}")
    if x.dtype != w.dtype:
        raise TypeError(f"conv2d: input dtype {x.dtype} and weight dtype {w.dtype} differ")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation, as PyTorch) of x (N, C, H, W) with weight (K, C, kH, kW) and an
    optional bias (K,).  padding: int, pair, 'valid' or 'same' (stride 1 only)."""
    op = Conv2d(stride, padding, dilation)
    return op(x, weight) if bias is None else op(x, weight, bias)
