"""Batch normalisation's CPU arithmetic, the reference (minidl/ops/norm.py) and the fast kernel
(minidl/kernels/cpu.py), on every memory layout it meets, against the plain float64 formulas, and with input
whose mean is far from zero, where a one-pass variance E[x^2] - mu^2 would lose every digit."""
import numpy as np
import pytest

import minidl
from minidl.ops.norm import BatchNorm, BatchNormEval

EPS = 1e-5


def channels_last(a):
    """``a`` (N, C, ...) with the same values over channels-last memory, as conv2d returns its output."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)


LAYOUTS = {  # name: (shape, make the array from C-contiguous values)
    "NCHW-over-NHWC": ((8, 6, 5, 7), channels_last),
    "NCHW-contiguous": ((8, 6, 5, 7), np.ascontiguousarray),
    "NC": ((32, 6), np.ascontiguousarray),
    "NCL": ((8, 6, 9), np.ascontiguousarray),
    "NCL-over-NLC": ((8, 6, 9), channels_last),
    "NCHW-strided-slice": ((8, 6, 10, 7), lambda a: a[:, :, ::2]),
}


def ref_train(x, gy, gamma, beta):
    """The docstring's formulas in float64: y and (dx, dgamma, dbeta), plus (mean, biased var)."""
    x, gy = x.astype(np.float64), gy.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    s = 1 / np.sqrt(var + EPS)
    xhat = (x - mu.reshape(shape)) * s.reshape(shape)
    y = xhat * gamma.reshape(shape) + beta.reshape(shape)
    mean_gy, mean_gy_xhat = gy.mean(axis=axes), (gy * xhat).mean(axis=axes)
    dx = (gamma * s).reshape(shape) * (gy - mean_gy.reshape(shape) - xhat * mean_gy_xhat.reshape(shape))
    m = x.size // x.shape[1]
    return y, (dx, m * mean_gy_xhat, m * mean_gy), (mu, var)


def assert_close(got, ref, tol):
    """Largest error within ``tol`` of the largest |ref| (float32 rounding: ~1e-7 per operation)."""
    err = float(np.max(np.abs(np.asarray(got, np.float64) - ref)))
    assert err <= tol * float(np.max(np.abs(ref))), (err, float(np.max(np.abs(ref))))


def make(layout, dtype, seed=0, offset=0.5):
    shape, arrange = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = arrange((rng.standard_normal(shape) * 2 + offset).astype(dtype))
    gy = arrange(rng.standard_normal(shape).astype(dtype))
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    return x, gy, gamma, beta


def run_train(op, x, gy, gamma, beta):
    op.needs_input_grad = (True, True, True)
    y = op.forward(x, gamma, beta)
    return y, op.backward(gy)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_training_forward_backward_match_the_float64_formulas(layout, dtype, tol, ops_mode):
    x, gy, gamma, beta = make(layout, dtype)
    op = BatchNorm(EPS)
    y, grads = run_train(op, x, gy, gamma, beta)
    y_ref, grads_ref, (mu, var) = ref_train(x, gy, gamma.astype(np.float64), beta.astype(np.float64))
    assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert_close(y, y_ref, tol)
    for g, r in zip(grads, grads_ref):
        assert g.shape == r.shape
        assert_close(g, r, tol)
    assert_close(op.mean, mu, tol)
    assert_close(op.var, var, tol)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_eval_forward_backward_match_the_float64_formulas(layout, dtype, tol, ops_mode):
    x, gy, gamma, beta = make(layout, dtype)
    c = x.shape[1]
    rng = np.random.default_rng(1)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    op = BatchNormEval(EPS)
    op.needs_input_grad = (True, True, True, False, False)
    y = op.forward(x, gamma, beta, rm, rv)
    gx, dgamma, dbeta, grm, grv = op.backward(gy)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    s = 1 / np.sqrt(rv.astype(np.float64) + EPS)
    xhat = (x - rm.reshape(shape).astype(np.float64)) * s.reshape(shape)
    assert y.dtype == gx.dtype == dgamma.dtype == dtype and grm is None and grv is None
    assert_close(y, xhat * gamma.reshape(shape) + beta.reshape(shape), tol)
    assert_close(gx, gy * (gamma * s).reshape(shape), tol)
    assert_close(dgamma, (gy * xhat).sum(axis=axes), tol)
    assert_close(dbeta, gy.astype(np.float64).sum(axis=axes), tol)


def test_channels_last_input_gives_channels_last_output_and_gradient(ops_mode):
    """conv2d returns NCHW views of NHWC memory; batch norm's y and dx keep that layout (no hidden copies)."""
    x, gy, gamma, beta = make("NCHW-over-NHWC", np.float32)
    y, (gx, _, _) = run_train(BatchNorm(EPS), x, gy, gamma, beta)
    for a in (y, gx, BatchNormEval(EPS).forward(x, gamma, beta, gamma - 1, gamma)):
        assert a.transpose(0, 2, 3, 1).flags.c_contiguous


def test_variance_and_gradients_stay_accurate_far_from_zero_mean(ops_mode):
    """x = 1000 + N(0, 1) in float32: the two-pass variance keeps ~5 digits (E[x^2] - mu^2 in float32 keeps
    none); sum gy xhat taken as s (sum gy x - mu sum gy) loses about log10(|mu| / sigma) digits, as
    normalising x - mu in float32 does anyway."""
    rng = np.random.default_rng(2)
    shape = (32, 4, 8, 8)
    x = channels_last((1000 + rng.standard_normal(shape)).astype(np.float32))
    gy = channels_last(rng.standard_normal(shape).astype(np.float32))
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    op = BatchNorm(EPS)
    y, grads = run_train(op, x, gy, gamma, beta)
    y_ref, grads_ref, (mu, var) = ref_train(x, gy, gamma.astype(np.float64), beta.astype(np.float64))
    np.testing.assert_allclose(op.var, var, rtol=1e-4)
    assert_close(y, y_ref, 1e-3)
    for g, r in zip(grads, grads_ref):
        assert_close(g, r, 2e-3)


VIEWS = {  # gradcheck perturbs a contiguous float64 input; the function hands batch norm a view of it
    "NCHW-over-NHWC": ((5, 4, 3, 6), lambda t: t.permute(0, 3, 1, 2)),
    "NCL-over-NLC": ((6, 5, 4), lambda t: t.permute(0, 2, 1)),
    "NCHW-strided-slice": ((4, 6, 3, 5), lambda t: t[:, :, ::2]),
}


@pytest.mark.parametrize("layout", list(VIEWS))
def test_gradcheck_on_channels_last_and_strided_views(layout, ops_mode):
    shape, view = VIEWS[layout]
    rng = np.random.default_rng(4)
    x = minidl.Tensor(rng.standard_normal(shape) * 2 + 0.5, requires_grad=True)
    c = view(x).shape[1]
    assert not view(x).data.flags.c_contiguous
    gamma = minidl.Tensor(rng.uniform(0.5, 1.5, c), requires_grad=True)
    beta = minidl.Tensor(rng.standard_normal(c), requires_grad=True)
    assert minidl.gradcheck(lambda a, g, b: BatchNorm(EPS)(view(a), g, b), [x, gamma, beta], atol=1e-5)
    rm, rv = minidl.Tensor(rng.standard_normal(c)), minidl.Tensor(rng.uniform(0.5, 2, c))
    assert minidl.gradcheck(lambda a, g, b: BatchNormEval(EPS)(view(a), g, b, rm, rv), [x, gamma, beta],
                            atol=1e-5)
