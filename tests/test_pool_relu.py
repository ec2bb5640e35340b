"""Backward of max_pool2d and relu on NumPy, bit for bit: the fast kernel's tiled path (one comparison, one
product) against its general per-offset path, the reference op and a plain loop over windows, ties included;
relu's against gy * (y != 0) (PyTorch's mask, 0 where x <= 0: a NaN passes its gradient on)."""
import numpy as np
import pytest

import minidl
from minidl.kernels import cpu
from minidl.ops.elementwise import ReLU
from minidl.ops.pool import MaxPool2d


def reference_backward(x, gy, k, s, pad):
    """dx of max pooling by a loop over windows: each gy goes to the first maximum in row-major order
    (k, s: ints or (rows, columns) pairs)."""
    (kh, kw), (sh, sw) = [(v, v) if isinstance(v, int) else v for v in (k, s)]
    n, c, h, w = x.shape
    xpad = np.full((n, c, h + 2 * pad, w + 2 * pad), -np.inf, dtype=x.dtype)
    xpad[:, :, pad:pad + h, pad:pad + w] = x
    dxpad = np.zeros_like(xpad)
    for i in range(gy.shape[2]):
        for j in range(gy.shape[3]):
            win = xpad[:, :, sh * i:sh * i + kh, sw * j:sw * j + kw].reshape(n, c, kh * kw)
            first = win.argmax(axis=2)  # the first maximum
            for a in range(n):
                for b in range(c):
                    p, q = divmod(first[a, b], kw)
                    dxpad[a, b, sh * i + p, sw * j + q] += gy[a, b, i, j]
    return dxpad[:, :, pad:pad + h, pad:pad + w]


def both_paths(x, gy, k, s=None, pad=0):
    """(tiled?, dx of the tiled path or None, dx of the general path, dx of the fast op, dx of the reference op)."""
    op = MaxPool2d(k, s, pad)
    op.forward(x)
    saved, g = op.saved, gy.transpose(0, 2, 3, 1)
    tiled = cpu.pool_tiles(saved)
    fast = cpu.unpad(cpu.max_pool_dxpad(g, saved, True), x.shape, saved.pads) if tiled else None
    general = cpu.unpad(cpu.max_pool_dxpad(g, saved, False), x.shape, saved.pads)
    op.needs_input_grad = (True,)
    try:
        minidl.set_ops("reference")
        ref = MaxPool2d(k, s, pad)
        ref.forward(x)
        ref.needs_input_grad = (True,)
        reference = ref.backward(gy)
    finally:
        minidl.set_ops("fast")
    return tiled, fast, general, op.backward(gy), reference


def inputs(kind, shape, dtype, rng):
    n, c, h, w = shape
    if kind == "relu":  # many zero ties, NHWC memory as minidl's conv gives
        x = np.maximum(rng.standard_normal((n, h, w, c)), 0).astype(dtype).transpose(0, 3, 1, 2)
    elif kind == "constant":  # every window all equal
        x = np.full(shape, 1.5, dtype=dtype)
    elif kind == "zeros":  # equal zeros of both signs
        x = np.where(rng.random(shape) < 0.5, -0.0, 0.0).astype(dtype)
    elif kind == "levels":  # few distinct values: ties anywhere in a window
        x = rng.integers(0, 3, size=shape).astype(dtype)
    else:  # "strided": a non-contiguous NCHW view
        x = rng.standard_normal((n, c, h, 2 * w)).astype(dtype)[:, :, :, ::2]
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["relu", "constant", "zeros", "levels", "strided"])
@pytest.mark.parametrize("k, pad, hw", [(2, 0, (6, 8)), (3, 0, (9, 6)), (2, 1, (4, 6)), (1, 0, (3, 5)),
                                        ((2, 3), 0, (4, 9)), ((3, 2), 1, (7, 6))])
def test_tiled_fast_path_matches_general_path_and_loop(dtype, kind, k, pad, hw):
    rng = np.random.default_rng(0)
    x = inputs(kind, (2, 5) + hw, dtype, rng)
    kh, kw = (k, k) if isinstance(k, int) else k
    ho, wo = (hw[0] + 2 * pad) // kh, (hw[1] + 2 * pad) // kw
    gy = rng.standard_normal((2, 5, ho, wo)).astype(dtype)
    tiled, fast, general, dx, dx_ref = both_paths(x, gy, k, None, pad)
    assert tiled
    ref = reference_backward(x, gy, k, k, pad)
    for got in (fast, general, dx, dx_ref):
        assert got.dtype == dtype and got.shape == x.shape
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("k, s, pad, hw", [(2, 2, 0, (7, 8)), (2, 2, 0, (8, 5)), (3, 2, 0, (7, 7)),
                                           (3, 1, 1, (5, 6)), (2, 1, 0, (4, 4)), (3, 3, 1, (6, 6))])
def test_other_geometries_take_the_general_path(k, s, pad, hw):
    rng = np.random.default_rng(1)
    x = inputs("levels", (2, 3) + hw, np.float64, rng)
    y = MaxPool2d(k, s, pad).forward(x)
    gy = rng.integers(-4, 5, size=y.shape).astype(np.float64)  # overlapping windows add: exact sums in any order
    tiled, _, general, dx, dx_ref = both_paths(x, gy, k, s, pad)
    assert not tiled
    for got in (general, dx, dx_ref):
        assert np.array_equal(got, reference_backward(x, gy, k, s, pad))


def test_a_fast_path_without_the_first_hit_rule_is_caught(monkeypatch):
    """The tie tests have teeth: keeping every hit (not only the first) of the fast path is detected."""
    rng = np.random.default_rng(2)
    x, gy = inputs("levels", (2, 3, 4, 4), np.float32, rng), rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    monkeypatch.setattr(cpu, "keep_first", lambda hits: None)
    _, fast, _, _, _ = both_paths(x, gy, 2)
    assert not np.array_equal(fast, reference_backward(x, gy, 2, 2, 0))


def relu_inputs(dtype, rng):
    """x with zeros of both signs, inf and NaN; gy with negatives (-0.0 products), inf and NaN."""
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    x.flat[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0]
    gy = rng.standard_normal(x.shape).astype(dtype)
    gy.flat[:6] = [-1.0, -2.0, -np.inf, np.inf, 3.0, np.nan]
    gy.flat[6:9] = [np.inf, -np.inf, np.nan]
    return x, gy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "nhwc", "mixed", "broadcast"])
def test_relu_backward_is_gy_times_the_mask_bit_for_bit(dtype, layout):
    rng = np.random.default_rng(3)
    x, gy = relu_inputs(dtype, rng)
    if layout in ("nhwc", "mixed"):  # NCHW views of NHWC memory, for x alone or for both
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        if layout == "nhwc":
            gy = np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "broadcast":  # a gradient with zero strides, as sum's backward gives
        gy = np.broadcast_to(gy[:, :1], x.shape)
    gy_before = gy.copy()
    op = ReLU()
    with np.errstate(invalid="ignore"):  # inf * 0 = nan, on purpose
        y = op.forward(x)
        dx = op.backward(gy)
        want = gy * (y != 0)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert np.array_equal(dx, want, equal_nan=True)
    assert np.array_equal(np.signbit(dx), np.signbit(want))  # -0.0 where gy < 0 is masked, as gy * False
    assert np.array_equal(gy, gy_before, equal_nan=True)  # gy is never written
