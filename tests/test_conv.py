"""conv2d and pooling: the gradient-check cases of tests/cases_conv.py on the fast kernels and on the references,
agreement with torch.nn.functional in float32 (when torch is importable), and errors on bad input."""
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
def test_case_forward_and_gradcheck(case, device, ops_mode):
    arrays = case.inputs(np.random.default_rng(0))
    expected = case.ref(*arrays)
    for dtype, tol in ((np.float32, case.f32_tol), (np.float64, 1e-10)):
        out = case.fn(*_tensors(arrays, dtype, device))
        assert out.dtype == dtype
        np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)
    assert minidl.gradcheck(case.fn, _tensors(arrays, np.float64, device), **case.check)


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


def test_outputs_are_nchw_views_of_nhwc_memory():  # the fast kernels' layout
    x = minidl.Tensor(np.ones((2, 3, 6, 6), np.float32))
    w = minidl.Tensor(np.ones((4, 3, 3, 3), np.float32))
    y = conv2d(x, w, padding=1)
    assert y.shape == (2, 4, 6, 6)
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous
    assert max_pool2d(y, 2).data.transpose(0, 2, 3, 1).flags.c_contiguous


def test_input_image_gets_no_gradient_work(ops_mode):
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
def test_bad_input_raises_clear_errors(call, match, ops_mode):
    with pytest.raises(ValueError, match=match):
        call()


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for random x and c: the backward of the copy is the scatter-sum; and the
    fast kernel's offset-major col2im is the same sum."""
    from minidl.kernels.cpu import col2im_offsets
    from minidl.ops.conv import col2im, im2col
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8))
    kernel, stride, dilation, out_hw = (3, 2), (2, 1), (1, 2), (4, 6)
    col = im2col(x, kernel, stride, dilation, out_hw)
    c = rng.standard_normal(col.shape)
    back = col2im(c, x.shape, stride, dilation)
    assert np.isclose((col * c).sum(), (x * back).sum())
    fast = col2im_offsets(c.transpose(2, 3, 0, 4, 5, 1), kernel, stride, dilation, out_hw, np.empty((2, 9, 8, 3)))
    np.testing.assert_allclose(fast.transpose(0, 3, 1, 2), back, rtol=1e-12, atol=1e-12)


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
