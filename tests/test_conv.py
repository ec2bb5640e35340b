"""conv2d and pooling: the gradient-check cases of tests/cases_conv.py, agreement with
torch.nn.functional in float32 (when torch is importable), and errors on bad input."""
import numpy as np
import pytest

import minidl
from minidl import backend
from minidl.ops.conv import conv2d
from minidl.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from tests.cases_conv import CASES

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is a reference only, not a dependency
    torch = None


def _tensors(arrays, dtype, device):
    return [minidl.Tensor(a.astype(dtype), requires_grad=a.dtype.kind == "f", device=device) for a in arrays]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_forward_and_gradcheck(case, device):
    arrays = case.inputs(np.random.default_rng(0))
    expected = case.ref(*arrays)
    for dtype, tol in ((np.float32, case.f32_tol), (np.float64, 1e-10)):
        out = case.fn(*_tensors(arrays, dtype, device))
        assert out.dtype == dtype
        np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)
    assert minidl.gradcheck(case.fn, _tensors(arrays, np.float64, device), **case.check)


@pytest.mark.parametrize("keep", [2**30, 0], ids=["kept", "rebuilt"])
@pytest.mark.parametrize("planes_max,full_ratio", [(4, 10.0), (0, 10.0), (0, 0.0)],
                         ids=["planes-full", "nhwc-full", "nhwc-col2im"])
@pytest.mark.parametrize("case", [c for c in CASES if c.op == "conv2d"], ids=lambda c: c.name)
def test_conv_cases_through_both_column_layouts(case, planes_max, full_ratio, keep, monkeypatch):
    """The cases' inputs are NCHW arrays with 2-4 channels, which conv2d reads as planes (the input image's
    path); with PLANES_MAX_CHANNELS = 0 the same cases go through the NHWC columns of every later layer.
    FULL_CORRELATION_MAX_RATIO 10 takes the full correlation for dx wherever the stride allows, 0 never;
    KEEP_COLUMNS_BYTES 0 rebuilds the forward's columns in backward, 2**30 keeps them."""
    from minidl.ops import conv as conv_mod
    seen = []
    monkeypatch.setattr(conv_mod, "FULL_CORRELATION_MAX_RATIO", full_ratio)
    monkeypatch.setattr(conv_mod, "KEEP_COLUMNS_BYTES", keep)

    class Recording(conv_mod.Columns):
        def __init__(self, xpad, kernel, stride, dilation, out_hw, planes=False, ones=False, keep=False):
            seen.append((id(xpad), planes, keep))
            super().__init__(xpad, kernel, stride, dilation, out_hw, planes, ones, keep)

    monkeypatch.setattr(conv_mod, "PLANES_MAX_CHANNELS", planes_max)
    monkeypatch.setattr(conv_mod, "Columns", Recording)
    arrays = case.inputs(np.random.default_rng(0))
    out = case.fn(*_tensors(arrays, np.float64, "cpu"))
    np.testing.assert_allclose(out.numpy(), case.ref(*arrays), rtol=1e-10, atol=1e-10)
    assert len(seen) == 1 and seen[0][1] is (planes_max > 0)
    out.sum().backward()
    # the weight gradient rebuilds the forward's columns (same padded input) only when they were not kept
    rebuilt = [s for s in seen[1:] if s[0] == seen[0][0]]
    assert len(rebuilt) == (1 if keep == 0 else 0)
    assert minidl.gradcheck(case.fn, _tensors(arrays, np.float64, "cpu"), **case.check)


def test_every_conv_op_has_a_case():
    ops = {c.op for c in CASES}
    for name in ("conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"):
        assert name in minidl.OP_REGISTRY and name in ops


TORCH_CONFIGS = [
    dict(stride=1, padding=0, dilation=1, k=3, bias=True),
    dict(stride=2, padding=1, dilation=1, k=3, bias=True),
    dict(stride=1, padding="same", dilation=2, k=3, bias=False),
    dict(stride=1, padding="same", dilation=1, k=4, bias=True),
    dict(stride=2, padding=2, dilation=1, k=5, bias=True),
    dict(stride=1, padding=0, dilation=1, k=1, bias=False),
]


@pytest.mark.skipif(torch is None, reason="torch is not installed (it is only a reference for these checks)")
@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@pytest.mark.parametrize("cfg", TORCH_CONFIGS, ids=str)
def test_conv2d_matches_torch_float32(cfg):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 11, 9)).astype(np.float32)
    w = (rng.standard_normal((6, 5, cfg["k"], cfg["k"])) * 0.3).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32) if cfg["bias"] else None
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    mx, mw = minidl.Tensor(x, requires_grad=True), minidl.Tensor(w, requires_grad=True)
    mb = minidl.Tensor(b, requires_grad=True) if b is not None else None
    y = conv2d(mx, mw, mb, **kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if b is not None else None
    ty = F.conv2d(tx, tw, tb, **kw)
    ty.backward(torch.tensor(g))
    assert y.dtype == np.float32 and mx.grad.dtype == np.float32 and mw.grad.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mw.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=3e-4)
    if b is not None:
        np.testing.assert_allclose(mb.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch is None, reason="torch is not installed (it is only a reference for these checks)")
@pytest.mark.parametrize("kind,k,s,p", [("max", 2, None, 0), ("max", 3, 2, 1), ("max", 3, 1, 1), ("avg", 2, None, 0),
                                        ("avg", 3, 2, 1), ("global", 1, None, 0)])
def test_pooling_matches_torch_float32(kind, k, s, p):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    mx, tx = minidl.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    if kind == "max":
        y, ty = max_pool2d(mx, k, s, p), F.max_pool2d(tx, k, s, p)
    elif kind == "avg":
        y, ty = avg_pool2d(mx, k, s, p), F.avg_pool2d(tx, k, s, p)
    else:
        y, ty = adaptive_avg_pool2d(mx, 1), F.adaptive_avg_pool2d(tx, 1)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(torch.tensor(g))
    assert y.dtype == np.float32 and mx.grad.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_max_pool_ties_go_to_the_first_element():
    x = minidl.Tensor(np.zeros((1, 1, 2, 2), np.float32), requires_grad=True)
    max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 0], [0, 0]])


def test_outputs_are_nchw_views_of_nhwc_memory():
    x = minidl.Tensor(np.ones((2, 3, 6, 6), np.float32))
    w = minidl.Tensor(np.ones((4, 3, 3, 3), np.float32))
    y = conv2d(x, w, padding=1)
    assert y.shape == (2, 4, 6, 6)
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous
    assert max_pool2d(y, 2).data.transpose(0, 2, 3, 1).flags.c_contiguous


def test_input_image_gets_no_gradient_work():
    x = minidl.Tensor(np.ones((1, 3, 5, 5), np.float32))  # requires_grad=False: dx is never computed
    w = minidl.Tensor(np.ones((2, 3, 3, 3), np.float32), requires_grad=True)
    conv2d(x, w).sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad.numpy(), np.full((2, 3, 3, 3), 9.0))


def test_conv2d_wrong_channels_names_both_shapes():
    x, w = minidl.zeros(2, 5, 8, 8), minidl.zeros(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"\(2, 5, 8, 8\).*\(4, 3, 3, 3\)"):
        conv2d(x, w)


@pytest.mark.parametrize("call,match", [
    (lambda: conv2d(minidl.zeros(5, 8, 8), minidl.zeros(4, 5, 3, 3)), r"\(N, C, H, W\).*\(5, 8, 8\)"),
    (lambda: conv2d(minidl.zeros(1, 3, 8, 8), minidl.zeros(4, 3, 3, 3), minidl.zeros(3)), r"bias.*\(4,\).*\(3,\)"),
    (lambda: conv2d(minidl.zeros(1, 3, 2, 2), minidl.zeros(4, 3, 3, 3)), r"smaller"),
    (lambda: conv2d(minidl.zeros(1, 3, 8, 8), minidl.zeros(4, 3, 3, 3), stride=2, padding="same"), r"same.*stride"),
    (lambda: conv2d(minidl.zeros(1, 3, 8, 8), minidl.zeros(4, 3, 3, 3), padding="full"), r"padding"),
    (lambda: max_pool2d(minidl.zeros(1, 3, 8, 8), 2, padding=2), r"padding"),
    (lambda: max_pool2d(minidl.zeros(3, 8, 8), 2), r"\(N, C, H, W\)"),
    (lambda: avg_pool2d(minidl.zeros(1, 1, 2, 2), 3), r"smaller"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("planes_max", [4, 0], ids=["planes", "nhwc"])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1), dict(padding="same", dilation=2)], ids=str)
def test_chunked_path_matches_reference_across_chunks(monkeypatch, kw, planes_max):
    """Force one image per chunk and compare forward and all gradients with the one-chunk run."""
    from minidl.ops import conv as conv_mod
    monkeypatch.setattr(conv_mod, "PLANES_MAX_CHANNELS", planes_max)
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 4, 7, 6)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    g = rng.standard_normal(conv2d(minidl.Tensor(x), minidl.Tensor(w), **kw).shape)

    def run():
        ts = [minidl.Tensor(a, requires_grad=True) for a in (x, w, b)]
        y = conv2d(*ts, **kw)
        y.backward(g)
        return [y.numpy()] + [t.grad.numpy() for t in ts]

    whole = run()
    monkeypatch.setattr(conv_mod, "CHUNK_BYTES", 1)  # one image per chunk in every im2col loop
    monkeypatch.setattr(conv_mod, "KEEP_COLUMNS_BYTES", 0)  # and the forward's columns rebuilt in backward
    assert conv_mod._chunks(3, 100) == [(0, 1), (1, 2), (2, 3)]
    for a, e in zip(run(), whole):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for random x and c: the backward of the copy is the scatter-sum."""
    from minidl.ops.conv import col2im, im2col
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 8, 3))
    kernel, stride, dilation, out_hw = (3, 2), (2, 1), (1, 2), (4, 6)
    col = im2col(x, kernel, stride, dilation, out_hw)
    c = rng.standard_normal(col.shape)
    back = col2im(c.reshape(2, 4, 6, 3, 2, 3).transpose(3, 4, 0, 1, 2, 5), x.shape, kernel, stride, dilation, out_hw)
    assert np.isclose((col * c).sum(), (x * back).sum())


@pytest.mark.parametrize("channels", [2, 6], ids=["planes", "nhwc"])
def test_conv_bias_gradient_with_and_without_the_weight_gradient(channels):
    """db comes out of the weight-gradient GEMM (the column of ones) when dW is wanted, from a sum over gy
    when only db is; dW is the same with and without a bias to fold in."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, channels, 7, 6))
    w = rng.standard_normal((4, channels, 3, 3))
    b = rng.standard_normal(4)
    gy = rng.standard_normal((3, 4, 5, 4))

    def grads(w_grad, b_grad, with_bias=True):
        wt = minidl.tensor(w, requires_grad=w_grad)
        bt = minidl.tensor(b, requires_grad=b_grad)
        y = minidl.nn.functional.conv2d(minidl.tensor(x), wt, bt if with_bias else None)
        (y * minidl.tensor(gy)).sum().backward()
        return wt.grad, bt.grad

    expected_db = gy.sum(axis=(0, 2, 3))
    expected_dw = np.einsum("nkij,ncpqij->kcpq", gy, np.lib.stride_tricks.sliding_window_view(x, (5, 4), (2, 3)))
    dw, db = grads(True, True)
    np.testing.assert_allclose(db.numpy(), expected_db, rtol=1e-12)
    np.testing.assert_allclose(dw.numpy(), expected_dw, rtol=1e-12)
    dw_only, none = grads(True, False)
    assert none is None
    np.testing.assert_allclose(dw_only.numpy(), expected_dw, rtol=1e-12)
    none, db_only = grads(False, True)
    assert none is None
    np.testing.assert_allclose(db_only.numpy(), expected_db, rtol=1e-12)
    np.testing.assert_allclose(grads(True, False, with_bias=False)[0].numpy(), expected_dw, rtol=1e-12)
