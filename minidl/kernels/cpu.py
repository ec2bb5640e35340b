"""Fast NumPy kernels for conv2d, max/avg pooling and batch norm: the numbers of the references in minidl/ops,
computed in fewer passes over memory.  Each op has ``<op>_forward(...) -> (y, saved)`` and
``<op>_backward(gy, saved, needs)``; everything else here is public too, for the A/B benchmarks.

The tricks (what each buys: benchmarks/README.md, "What the fast kernels buy"):

- NHWC memory under the NCHW API.  conv2d returns ``y_nhwc.transpose(0, 3, 1, 2)``, an NCHW view of NHWC
  memory; elementwise ops keep that layout, so the next layer's windows have contiguous runs of kw C values
  and the im2col matrix, rows (n, i, j) and columns (p, q, c), times W = w as (kh kw C, K) is y in NHWC.
- im2col in chunks of whole images into one reused buffer, each followed by its GEMM (``Columns``): the
  columns never exist whole (they are kh kw times the input), and backward rebuilds them from the padded
  input rather than keeping them, except where they are small (the first layer's).
- The input image (NCHW memory, few channels) is read as shifted planes, with runs of Wo values.
- The bias rides in the GEMMs on a column of ones:  [col, 1] @ [W; b] = col W + b,  [col, 1]^T gy = [dW; db].
- Every product is taken in the orientation whose result is tall (see ``conv_weight_grad``).
- The stride-1 input gradient is the full correlation of gy with the flipped kernel where that multiplies
  fewer rows than col2im's GEMM plus its kh kw additions.
- Max pooling of tiling windows (stride = kernel) builds the backward's mask in one comparison.
- Batch norm's per-channel sums are einsums, and its backward is one pass writing dx and three in place.

The functions use ``backend.get_array_module``, so the ones that minidl/kernels/cuda.py does not replace
(avg pooling, eval-mode batch norm) run unchanged on CuPy.
"""
from __future__ import annotations

from collections import namedtuple

from minidl import backend

# Bytes of im2col columns built at a time: small enough to stay in cache for their GEMM, large enough that
# a busy machine's wait for BLAS threads at each call stays rare (python -m benchmarks.conv_chunks).
CHUNK_BYTES = 4 * 2**20
# A forward's columns of at most this many bytes (the first layers') are built whole and kept for the
# weight gradient instead of rebuilt (python -m benchmarks.conv_chunks, second table).
KEEP_COLUMNS_BYTES = 16 * 2**20
# Stride-1 input gradient by full correlation where the input has at most this many times the output's
# pixels, else by col2im (python -m benchmarks.conv_input_grad).
FULL_CORRELATION_MAX_RATIO = 1.25
# Inputs with at most this many channels and NCHW memory (images) are read as planes (see ``Columns``).
PLANES_MAX_CHANNELS = 4


# ====================================================================== padding, windows, columns
def pad_nhwc(x, pads, value=0, out=None):
    """x (N, H, W, C) with ``pads`` = (top, bottom, left, right) rows/columns of ``value`` around it, written
    into ``out`` (N, H + top + bottom, W + left + right, C) when given, else a new C-contiguous array (``x``
    itself where there is nothing to pad and it is C-contiguous already)."""
    t, b, l, r = pads
    n, h, w, c = x.shape
    if out is None and not any(pads):
        return backend.get_array_module(x).ascontiguousarray(x)
    if out is None:
        out = backend.get_array_module(x).empty((n, h + t + b, w + l + r, c), dtype=x.dtype)
    for rows in (out[:, :t], out[:, h + t:], out[:, t:h + t, :l], out[:, t:h + t, w + l:]):
        rows[...] = value
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


def chunks(n, row_bytes):
    """[(start, end)] ranges of the n images, each chunk's columns at most CHUNK_BYTES (one image at least);
    one empty range for n = 0."""
    step = max(1, CHUNK_BYTES // row_bytes)
    return [(s, min(n, s + step)) for s in range(0, max(n, 1), step)]


class Columns:
    """The im2col matrix of an input with zero padding ``pads``, built chunk by chunk of whole images into one
    reused buffer: ``for s, e, col in Columns(...)`` gives col (rows (n, i, j) of images s..e, one column per
    window feature, and with ``ones=True`` a last column of ones that multiplies the bias).  Each chunk's
    images are first padded into a small reused buffer (there is no padded copy of the whole input, which
    would be as large again).  Two memory layouts:

    - NHWC, ``x`` (N, H, W, C) (every layer after the first): features (p, q, c); a chunk is one strided copy
      of the ``windows`` view, whose contiguous runs are kw C elements.
    - planes, ``x`` (N, C, H, W) C-contiguous (the input image: NCHW memory, few channels): features
      (c, p, q); a chunk is C kh kw copies of shifted (N, Ho, Wo) planes, with contiguous runs of Wo
      elements, into a (features, rows) buffer whose transpose is col (BLAS reads it transposed at no cost).

    ``keep=True`` (the forward's columns): where the whole matrix takes at most KEEP_COLUMNS_BYTES it is
    built in one chunk and kept, so that iterating again (the backward's weight gradient) rebuilds nothing.
    """

    def __init__(self, x, pads, kernel, stride, dilation, out_hw, planes=False, ones=False, keep=False):
        self.xp = backend.get_array_module(x)
        self.x, self.pads, self.kernel, self.stride, self.dilation = x, tuple(pads), kernel, stride, dilation
        self.out_hw, self.planes, self.ones = out_hw, planes, ones
        n, self.c = x.shape[0], x.shape[1 if planes else 3]
        (kh, kw), (ho, wo), (t, b, l, r) = kernel, out_hw, self.pads
        self.features = kh * kw * self.c
        self.width = self.features + ones           # columns of col
        row_bytes = x.itemsize * ho * wo * self.width
        self.keep = keep and n * row_bytes <= KEEP_COLUMNS_BYTES
        self.ranges = [(0, n)] if self.keep else chunks(n, row_bytes)
        self.built = None
        step = self.ranges[0][1] - self.ranges[0][0]
        self.buf = self.xp.empty(step * ho * wo * self.width, dtype=x.dtype)
        h, w = x.shape[2:] if planes else x.shape[1:3]
        self.pbuf = None if not any(self.pads) else self.xp.empty(
            (step * self.c if planes else step, h + t + b, w + l + r, 1 if planes else self.c), dtype=x.dtype)

    def padded(self, s, e):
        """Images s..e padded, NHWC (or, for planes, (N, C, Hp, Wp)): in the reused buffer, or x itself."""
        if self.pbuf is None:
            return self.xp.ascontiguousarray(self.x[s:e])
        if not self.planes:
            return pad_nhwc(self.x[s:e], self.pads, out=self.pbuf[:e - s])
        n, c, h, w = self.x[s:e].shape
        out = pad_nhwc(self.x[s:e].reshape(n * c, h, w, 1), self.pads, out=self.pbuf[:n * c])
        return out.reshape(n, c, out.shape[1], out.shape[2])

    def __iter__(self):
        (kh, kw), (s1, s2), (d1, d2), (ho, wo) = self.kernel, self.stride, self.dilation, self.out_hw
        f = self.features
        if self.built is not None:
            yield 0, self.x.shape[0], self.built
            return
        for s, e in self.ranges:
            rows = (e - s) * ho * wo
            xpad = self.padded(s, e)
            if not self.planes:
                col = self.buf[:rows * self.width].reshape(rows, self.width)
                win = windows(xpad, self.kernel, self.stride, self.dilation, self.out_hw)
                col[:, :f].reshape(win.shape)[...] = win
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
                    planes[:, p, q] = xpad[:, :, i, j].transpose(1, 0, 2, 3)
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
    y = cols.xp.empty((cols.x.shape[0], ho, wo, k), dtype=cols.x.dtype)
    for s, e, col in cols:
        cols.xp.matmul(col, wmat, out=y[s:e].reshape(-1, k))
    return y


def conv_weight_grad(cols, g):
    """dW^T (K, width) = g^T @ col for g (N, Ho, Wo, K), chunk by chunk of ``cols`` (rebuilt, or kept whole).
    The product is taken in the orientation whose result has at least as many rows as columns (col^T @ g
    when width >= K, else g^T @ col): with the long inner dimension N Ho Wo, OpenBLAS runs the other one
    many times slower (python -m benchmarks.gemm_orientation)."""
    xp, k = cols.xp, g.shape[3]
    tall = cols.width >= k
    gw = xp.zeros((cols.width, k) if tall else (k, cols.width), dtype=g.dtype)
    for s, e, col in cols:
        gm = xp.ascontiguousarray(g[s:e]).reshape(-1, k)
        gw += col.T @ gm if tall else gm.T @ col
    return gw.T if tall else gw


def col2im_offsets(dcol, kernel, stride, dilation, out_hw, out):
    """The adjoint of im2col: dcol (kh, kw, N, Ho, Wo, C), offset-major, summed into ``out`` (N, Hp, Wp, C), a
    loop over the kh kw kernel offsets, each adding one contiguous (N, Ho, Wo, C) block into a strided slice."""
    (kh, kw), (s1, s2), (d1, d2), (ho, wo) = kernel, stride, dilation, out_hw
    out[...] = 0
    for p in range(kh):
        for q in range(kw):
            out[:, d1 * p:d1 * p + s1 * (ho - 1) + 1:s1, d2 * q:d2 * q + s2 * (wo - 1) + 1:s2] += dcol[p, q]
    return out


# ====================================================================== conv2d
ConvSaved = namedtuple("ConvSaved", "x planes cols w has_bias stride pads dilation out_hw")
"""What conv2d_backward needs: the input (NHWC, or NCHW for planes), the kept columns or None, the geometry."""


def conv2d_forward(x, w, b, stride, pads, dilation, out_hw):
    """y (N, K, Ho, Wo), an NCHW view of NHWC memory, of conv2d (minidl/ops/conv.py), and what backward needs."""
    # the input image (NCHW memory, few channels) is read as planes, every other input as NHWC
    planes = x.shape[1] <= PLANES_MAX_CHANNELS and x.flags.c_contiguous
    xl = x if planes else x.transpose(0, 2, 3, 1)
    cols = Columns(xl, pads, w.shape[2:], stride, dilation, out_hw, planes, b is not None, keep=True)
    y = conv_gemm(cols, cols.weight_matrix(w, b))
    saved = ConvSaved(xl, planes, cols if cols.keep else None, w, b is not None, stride, pads, dilation, out_hw)
    return y.transpose(0, 3, 1, 2), saved


def conv2d_backward(gy, s, needs):
    """(dx, dW[, db]) of conv2d, each None where ``needs`` (one flag per input) says nobody wants it."""
    g = gy.transpose(0, 2, 3, 1)  # NHWC; contiguous when gy kept conv's layout
    gb = gw = gx = None
    need_gb = s.has_bias and needs[2]
    if needs[1]:  # with the column of ones, db comes out of the same GEMM as dW
        cols = s.cols if s.cols is not None else Columns(
            s.x, s.pads, s.w.shape[2:], s.stride, s.dilation, s.out_hw, s.planes, need_gb)
        gw = cols.weight_grad(conv_weight_grad(cols, g))
        if cols.ones:
            gw, db = gw
            gb = db if need_gb else None
    elif need_gb:
        gb = channel_sum(gy)
    if needs[0]:
        x_shape = s.x.shape if s.planes else (s.x.shape[0], s.x.shape[3]) + s.x.shape[1:3]
        full = full_correlation_pads(x_shape, s.w.shape[2:], s.stride, s.pads, s.dilation, s.out_hw)
        if full is None:
            gx = conv_input_grad_col2im(g, s.w, x_shape, s.stride, s.pads, s.dilation, s.out_hw)
        else:
            gx = conv_input_grad_full(g, s.w, x_shape, s.dilation, full)
        gx = gx.transpose(0, 3, 1, 2)
    return (gx, gw, gb) if s.has_bias else (gx, gw)


def full_correlation_pads(x_shape, kernel, stride, pads, dilation, out_hw):
    """The padding (top, bottom, left, right) of gy whose full correlation with the flipped kernel gives dx,
    where dx is taken that way: stride 1, pads no wider than the dilated kernel, and an input (x_shape,
    NCHW) with at most FULL_CORRELATION_MAX_RATIO times the output's pixels; None where dx goes by col2im."""
    _, _, h, wd = x_shape
    (kh, kw), (d1, d2), (t, bt, l, r), (ho, wo) = kernel, dilation, pads, out_hw
    full = (d1 * (kh - 1) - t, d1 * (kh - 1) - bt, d2 * (kw - 1) - l, d2 * (kw - 1) - r)
    if tuple(stride) == (1, 1) and min(full) >= 0 and h * wd <= FULL_CORRELATION_MAX_RATIO * ho * wo:
        return full
    return None


def conv_input_grad_full(g, w, x_shape, dilation, full):
    """dx (N, H, W, C) = conv(pad(gy, full), flip(w) with in/out channels swapped), stride 1: one strided copy
    and one GEMM per chunk, with N H W rows (the input's size, not the output's)."""
    k, c, kh, kw = w.shape
    wflip = w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * k, c)
    return conv_gemm(Columns(g, full, (kh, kw), (1, 1), dilation, tuple(x_shape[2:])), wflip)


def conv_input_grad_col2im(g, w, x_shape, stride, pads, dilation, out_hw):
    """dx (N, H, W, C) by dcol = gy @ W^T, chunk by chunk, summed back by col2im (kh kw strided additions).
    dcol is made offset-major, (kh kw, N Ho Wo, C), by one batched product gy @ W_pq^T per kernel offset, so
    each addition reads a contiguous block instead of runs of C elements."""
    xp = backend.get_array_module(g)
    k, c, kh, kw = w.shape
    n, _, h, wd = x_shape
    (t, bt, l, r), (ho, wo) = pads, out_hw
    w_pq = w.transpose(2, 3, 0, 1).reshape(kh * kw, k, c)      # W_pq^T: (K, C) per offset
    dxpad = xp.empty((n, t + h + bt, l + wd + r, c), dtype=g.dtype)
    ranges = chunks(n, g.itemsize * ho * wo * kh * kw * c)
    buf = xp.empty(kh * kw * (ranges[0][1] - ranges[0][0]) * ho * wo * c, dtype=g.dtype)
    for s, e in ranges:
        dcol = buf[:kh * kw * (e - s) * ho * wo * c].reshape(kh * kw, (e - s) * ho * wo, c)
        xp.matmul(xp.ascontiguousarray(g[s:e]).reshape(1, -1, k), w_pq, out=dcol)
        col2im_offsets(dcol.reshape(kh, kw, e - s, ho, wo, c), (kh, kw), stride, dilation, out_hw, dxpad[s:e])
    return dxpad[:, t:t + h, l:l + wd]


# ====================================================================== pooling
PoolSaved = namedtuple("PoolSaved", "xpad y x_shape kernel stride pads out_hw")


def pool_slice(a, p, q, stride, out_hw):
    """The (N, Ho, Wo, C) slice of an (N, Hp, Wp, C) array at kernel offset (p, q)."""
    (s1, s2), (ho, wo) = stride, out_hw
    return a[:, p:p + s1 * (ho - 1) + 1:s1, q:q + s2 * (wo - 1) + 1:s2]


def _offsets(kernel):
    return [(p, q) for p in range(kernel[0]) for q in range(kernel[1])]


def unpad(dxpad, x_shape, pads):
    """The (N, C, H, W) view of the unpadded part of an (N, Hp, Wp, C) gradient."""
    t, _, l, _ = pads
    _, _, h, w = x_shape
    return dxpad[:, t:t + h, l:l + w].transpose(0, 3, 1, 2)


def max_pool2d_forward(x, kernel, stride, pads, out_hw):
    """y (N, C, Ho, Wo), an NCHW view of NHWC memory: kh kw - 1 elementwise maxima of strided slices."""
    xp = backend.get_array_module(x)
    xpad = pad_nhwc(x.transpose(0, 2, 3, 1), pads, -float("inf"))
    offsets = _offsets(kernel)
    if len(offsets) == 1:
        y = pool_slice(xpad, 0, 0, stride, out_hw).copy()
    else:
        y = xp.maximum(pool_slice(xpad, *offsets[0], stride, out_hw), pool_slice(xpad, *offsets[1], stride, out_hw))
        for p, q in offsets[2:]:
            xp.maximum(y, pool_slice(xpad, p, q, stride, out_hw), out=y)
    return y.transpose(0, 3, 1, 2), PoolSaved(xpad, y, x.shape, kernel, stride, pads, out_hw)


def max_pool2d_backward(gy, s, needs=(True,)):
    """dx: gy routed to the first maximum of each window, or its last NaN (the reference's rule)."""
    return unpad(max_pool_dxpad(gy.transpose(0, 2, 3, 1), s, pool_tiles(s)), s.x_shape, s.pads)


def pool_tiles(s):
    """True when the windows tile the padded input: every padded pixel lies in exactly one window."""
    (kh, kw), (ho, wo), (hp, wp) = s.kernel, s.out_hw, s.xpad.shape[1:3]
    return tuple(s.stride) == tuple(s.kernel) and (hp, wp) == (ho * kh, wo * kw)


def keep_first(hits):
    """In place: clear every hits[k] (bool) that an earlier hits[j], j < k, already has set."""
    xp = backend.get_array_module(hits[0])
    taken = hits[0].copy()
    for k in range(1, len(hits)):
        xp.greater(hits[k], taken, out=hits[k])  # hit and not taken
        if k + 1 < len(hits):
            xp.logical_or(taken, hits[k], out=taken)


def keep_last_nan(slices, hits):
    """In place: in each window holding NaN (whose y is NaN, so that no slice equals it and no hits[k] is
    set), set the hit of its last NaN, where PyTorch's scan (a value greater than the best so far, or NaN)
    ends.  ``slices``: the per-offset slices of xpad that ``hits`` (bool) were compared from."""
    xp = backend.get_array_module(hits[0])
    nans = [xp.isnan(sl) for sl in slices]
    keep_first(nans[::-1])
    for h, nan in zip(hits, nans):
        xp.logical_or(h, nan, out=h)


def max_pool_dxpad(g, s, tiled):
    """The gradient of the padded NHWC input from g = gy as (N, Ho, Wo, C).  Each offset's slice is compared
    with y (hits[k] = slice_k == y), ``keep_first`` keeps only the first hit of each window (and, where y has
    NaN, ``keep_last_nan`` adds the NaN windows' hits), and gy times the hits goes back.  With ``tiled``
    windows the masks of all offsets are one array laid out like xpad, viewed as (N, Ho, kh, Wo, kw, C): one
    comparison and one product give dxpad, with no per-offset passes.  Both ways give the same numbers (a
    zero off the argmax is gy * 0, so -0.0 where gy < 0)."""
    xp = backend.get_array_module(g)
    (kh, kw), offsets, shape = s.kernel, _offsets(s.kernel), s.xpad.shape
    has_nan = bool(xp.isnan(s.y).any())
    if tiled:
        (ho, wo), c = s.out_hw, shape[3]
        xwin = s.xpad.reshape(shape[0], ho, kh, wo, kw, c)
        hits = xwin == s.y[:, :, None, :, None]
        keep_first([hits[:, :, p, :, q] for p, q in offsets])
        if has_nan:
            keep_last_nan([xwin[:, :, p, :, q] for p, q in offsets], [hits[:, :, p, :, q] for p, q in offsets])
        return (g[:, :, None, :, None] * hits).reshape(shape)
    hits = xp.empty((len(offsets),) + s.y.shape, dtype=bool)
    for k, (p, q) in enumerate(offsets):
        xp.equal(pool_slice(s.xpad, p, q, s.stride, s.out_hw), s.y, out=hits[k])
    keep_first(hits)
    if has_nan:
        keep_last_nan([pool_slice(s.xpad, p, q, s.stride, s.out_hw) for p, q in offsets], hits)
    dxpad = xp.zeros(shape, dtype=g.dtype)
    for k, (p, q) in enumerate(offsets):
        pool_slice(dxpad, p, q, s.stride, s.out_hw)[...] += g * hits[k]
    return dxpad


def avg_pool2d_forward(x, kernel, stride, pads, out_hw):
    """y (N, C, Ho, Wo), an NCHW view of NHWC memory: the sum of the kh kw strided slices, scaled once."""
    xpad = pad_nhwc(x.transpose(0, 2, 3, 1), pads, 0)
    y = None
    for p, q in _offsets(kernel):
        sl = pool_slice(xpad, p, q, stride, out_hw)
        y = sl.copy() if y is None else y.__iadd__(sl)
    y *= y.dtype.type(1.0 / (kernel[0] * kernel[1]))
    return y.transpose(0, 3, 1, 2), PoolSaved(None, None, x.shape, kernel, stride, pads, out_hw)


def avg_pool2d_backward(gy, s, needs=(True,)):
    """dx: gy / (kh kw) added into each window's slice of the padded input."""
    xp = backend.get_array_module(gy)
    (kh, kw), (t, b, l, r), (n, c, h, w) = s.kernel, s.pads, s.x_shape
    g = gy.transpose(0, 2, 3, 1) * gy.dtype.type(1.0 / (kh * kw))
    dxpad = xp.zeros((n, h + t + b, w + l + r, c), dtype=gy.dtype)
    for p, q in _offsets(s.kernel):
        pool_slice(dxpad, p, q, s.stride, s.out_hw)[...] += g
    return unpad(dxpad, s.x_shape, s.pads)


# ====================================================================== batch norm
def _channel_subscripts(ndim):
    return "nc" + "abdefghijklm"[:ndim - 2]


def channel_sum(a):
    """The sum of a over every axis but the channel axis 1, by one einsum (several times faster than
    a.sum(axes) on channels-last memory: python -m benchmarks.kernels)."""
    s = _channel_subscripts(a.ndim)
    return backend.get_array_module(a).einsum(f"{s}->c", a)


def channel_dot(a, b):
    """The sum of a * b over every axis but the channel axis 1: one einsum, with no a * b temporary."""
    s = _channel_subscripts(a.ndim)
    return backend.get_array_module(a).einsum(f"{s},{s}->c", a, b)


BatchNormSaved = namedtuple("BatchNormSaved", "x gamma mean inv_std m shape")


def batch_norm_forward(x, gamma, beta, eps):
    """(y, mean, biased var, saved) of training-mode batch norm, with s = 1 / sqrt(var + eps), each step one
    reduction or one pass.  Mean and variance by the shifted-data algorithm, with k a typical value of each
    channel (the mean of the first four samples): mu = k + d, d = mean(x - k), var = mean (x - k)^2 - d^2.  Its
    float32 sums add values of the spread's size, not the mean's, so a mean large against the spread loses no
    digits, and d^2 cancels little of the mean square while k is within a few spreads of mu.  Then
    y = (x - k) gamma s + (beta - d gamma s), in place.  xhat is not kept: backward rebuilds what it needs
    from x.  (What the accuracy costs: benchmarks/README.md, "What float32 accuracy costs batch norm".)"""
    xp = backend.get_array_module(x)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    count = x.size // x.shape[1]                    # m, the values of each channel
    m = x.dtype.type(count)
    head = x[:4]                                    # k: the first samples' mean, a typical value of each channel
    k = channel_sum(head) / x.dtype.type(head.size // x.shape[1])
    y = x - k.reshape(shape)                        # x - k, then scaled and shifted in place
    d = channel_sum(y) / m                          # mu - k
    var = xp.maximum(channel_dot(y, y) / m - d * d, 0)
    inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
    scale = gamma * inv_std
    y *= scale.reshape(shape)
    y += (beta - d * scale).reshape(shape)
    mean = k + d
    return y, mean, var, BatchNormSaved(x, gamma, mean, inv_std, count, shape)


def batch_norm_backward(gy, s, needs):
    """(dx, dgamma, dbeta) with xc = x - mu rebuilt in one pass (so that no sum over x loses digits to a large
    mean), sum gy xhat = s sum gy xc and dx = a (gy + p xc - sum gy / m), a = gamma s, p = -s sum(gy xhat) / m:
    dx written over xc, in place."""
    m = gy.dtype.type(s.m)
    sum_gy = channel_sum(gy)
    xc = s.x - s.mean.reshape(s.shape)
    sum_gy_xhat = s.inv_std * channel_dot(gy, xc)
    gx = None
    if needs[0]:
        gx = xc
        gx *= (-s.inv_std * sum_gy_xhat / m).reshape(s.shape)
        gx += gy
        gx -= (sum_gy / m).reshape(s.shape)
        gx *= (s.gamma * s.inv_std).reshape(s.shape)
    return gx, sum_gy_xhat, sum_gy


BatchNormEvalSaved = namedtuple("BatchNormEvalSaved", "x gamma rm inv_std shape")


def batch_norm_eval_forward(x, gamma, beta, running_mean, running_var, eps):
    """y = x (gamma s) + (beta - rm gamma s), s = 1 / sqrt(rv + eps): two passes, no xhat."""
    xp = backend.get_array_module(x)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    rm = running_mean.astype(x.dtype, copy=False)
    inv_std = 1 / xp.sqrt(running_var.astype(x.dtype, copy=False) + x.dtype.type(eps))
    scale = gamma * inv_std
    y = x * scale.reshape(shape)
    y += (beta - rm * scale).reshape(shape)
    return y, BatchNormEvalSaved(x, gamma, rm, inv_std, shape)


def batch_norm_eval_backward(gy, s, needs):
    """(dx, dgamma, dbeta, None, None) with sum gy xhat = s (sum gy x - rm sum gy): no xhat array."""
    gx = gy * (s.gamma * s.inv_std).reshape(s.shape) if needs[0] else None
    sum_gy = channel_sum(gy) if needs[1] or needs[2] else None
    ggamma = s.inv_std * (channel_dot(gy, s.x) - s.rm * sum_gy) if needs[1] else None
    return gx, ggamma, sum_gy if needs[2] else None, None, None
