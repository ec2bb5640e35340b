"""The CuPy kernels of minidl/kernels/cuda.py against their references and against the reference ops.

Without a GPU, three kinds of test still run here, for real:
  * each kernel's CUDA C body, translated into Python by tests/kernel_emulator.py and run element by element,
    against the kernel's array-expression reference (index arithmetic, bounds, C integer division);
  * the ops' GPU kernels (kernels.cuda.conv2d_forward/backward, max_pool2d_*, batch_norm_*, sgd_update,
    adam_update) with those emulated kernels on NumPy arrays, against minidl's reference ops and optimizers;
  * every kernel compiled by nvcc for sm_90 as CuPy lays it out (skipped where nvcc is absent).
With a GPU, the compiled kernels run against the references, and the GPU ops against the NumPy ops.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import minidl
from minidl import backend
from minidl.kernels import cuda as K
from minidl.ops.conv import Conv2d
from minidl.ops.loss import nan_where_invalid
from minidl.ops.norm import BatchNorm
from minidl.ops.pool import MaxPool2d
from tests import kernel_emulator as E

GPU_WHY = backend.cupy_status()
if GPU_WHY is None and backend._cupy.__name__ != "cupy":
    GPU_WHY = f"the CuPy stand-in {backend._cupy.__name__} is installed (MINIDL_FAKE_CUPY=1), not CuPy"
needs_gpu = pytest.mark.skipif(GPU_WHY is not None, reason=f"needs CuPy on a CUDA GPU: {GPU_WHY}")

# (N, C, H, W, K, kh, kw, stride, padding, dilation): odd sizes, strides with gaps, asymmetric everything
CONV_CONFIGS = [
    (2, 3, 5, 6, 4, 3, 3, 1, 0, 1),
    (2, 2, 6, 5, 3, 3, 2, (2, 1), (1, 2), 1),
    (1, 3, 7, 7, 2, 3, 3, 2, 1, 2),
    (2, 2, 5, 5, 3, 1, 1, 1, 0, 1),
    (1, 2, 6, 6, 2, 3, 3, 1, "same", 1),
    (2, 1, 5, 7, 2, 2, 3, (1, 2), (0, 1), (2, 1)),
    (1, 2, 7, 8, 2, 2, 2, 3, 0, 1),  # stride > kernel: some pixels are in no window
    (1, 2, 5, 6, 2, 2, 4, 1, "same", (2, 1)),  # 'same' with even kernels: more padding at the bottom/right
]
# (kernel, stride, padding) of max pooling: disjoint, overlapping, gaps, padded
POOL_CONFIGS = [(2, None, 0), (3, 2, 1), (3, 1, 1), (2, 3, 0), ((3, 2), (2, 1), (1, 0)), (1, 1, 0)]


@pytest.fixture
def emulated(monkeypatch):
    """kernels.cuda with every kernel launch replaced by its emulation on NumPy arrays."""
    def fake(spec):
        if isinstance(spec, K.Spec):
            return lambda *args: E.run_elementwise(spec, *args)
        return lambda *args, axis: E.run_reduction(spec, *args, axis=axis)
    monkeypatch.setattr(K, "_kernel", fake)


def _geometry(cfg):
    n, c, h, w, k, kh, kw, stride, padding, dilation = cfg
    op = Conv2d(stride, padding, dilation)
    op.setup(np.empty((n, c, h, w)), np.empty((k, c, kh, kw)), None)
    return op, op.kernel, op.stride, op.pads, op.dilation, op.out_hw


# ---------------------------------------------------------------- the emulator itself
def test_emulator_uses_c_integer_division():
    assert [E._cdiv(a, b) for a, b in ((7, 2), (-7, 2), (7, -2), (-1, 2))] == [3, -3, -3, 0]
    assert [E._cmod(a, b) for a, b in ((7, 2), (-7, 2), (7, -2), (-1, 2))] == [1, -1, 1, -1]
    env = {"_cdiv": E._cdiv, "_cmod": E._cmod, "a": -3, "b": 2}
    assert eval(E.expr("a / b + a % b"), env) == -1 + -1  # Python's -3 // 2 + -3 % 2 would be -2 + 1


@pytest.mark.parametrize("line", ["x = a ? b : c;", "if (!a) {", "x = (int)y;", "while (a) {", "x = a < b < c;"])
def test_emulator_rejects_c_it_does_not_model(line):
    with pytest.raises(ValueError):
        E.translate(line + ("\n}" if line.endswith("{") else ""))


def test_every_kernel_parameter_type_is_a_dtype_or_a_one_letter_placeholder():
    """CuPy reads a parameter's type as a type placeholder only when it is one character; anything longer must be
    a dtype name ('IDX' failed on the first real GPU: "data type 'IDX' not understood")."""
    for spec in K.ELEMENTWISE_SPECS + K.REDUCTION_SPECS:
        params = spec.in_params + "," + spec.out_params
        for raw, typ, name in E.parse_params(params):
            assert len(typ) == 1 or typ in E._CTYPES, f"{spec.name}: parameter {name} has type {typ!r}"


def test_every_kernel_translates():
    for spec in K.ELEMENTWISE_SPECS:
        compile(E.translate(spec.body), spec.name, "exec")


# ---------------------------------------------------------------- kernels (emulated) == references
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_im2col_and_col2im_kernels_match_references(cfg, emulated):
    n, c, h, w = cfg[:4]
    _, kernel, stride, pads, dilation, out_hw = _geometry(cfg)
    rng = np.random.default_rng(0)
    xh = rng.standard_normal((n, h, w, c)).astype(np.float32)
    col = K.im2col(xh, kernel, stride, pads, dilation, out_hw)
    np.testing.assert_array_equal(col, K.im2col_ref(xh, kernel, stride, pads, dilation, out_hw))
    dcol = rng.standard_normal(col.shape).astype(np.float32)
    dx = K.col2im(dcol, xh.shape, kernel, stride, pads, dilation, out_hw)
    assert dx.shape == xh.shape and dx.dtype == np.float32
    # the same additions in the same order (kernel offsets p, q) as the reference: equal to the last bit
    np.testing.assert_array_equal(dx, K.col2im_ref(dcol, xh.shape, kernel, stride, pads, dilation, out_hw))


def test_col2im_is_the_adjoint_of_im2col(emulated):
    """<im2col(x), d> = <x, col2im(d)> for random x, d: the kernels are each other's transposes."""
    _, kernel, stride, pads, dilation, out_hw = _geometry(CONV_CONFIGS[2])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 7, 7, 3))
    col = K.im2col(x, kernel, stride, pads, dilation, out_hw)
    d = rng.standard_normal(col.shape)
    lhs = (col * d).sum()
    rhs = (x * K.col2im(d, x.shape, kernel, stride, pads, dilation, out_hw)).sum()
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_maxpool_kernels_match_references(cfg, ties, emulated):
    op = MaxPool2d(*cfg)
    rng = np.random.default_rng(2)
    n, c, h, w = 2, 3, 6, 7
    xh = (rng.integers(0, 3, (n, h, w, c)) if ties else rng.standard_normal((n, h, w, c))).astype(np.float32)
    (kh, kw), (s1, s2), (t, b, l, r) = op.kernel, op.stride, op.pads
    out_hw = ((h + t + b - kh) // s1 + 1, (w + l + r - kw) // s2 + 1)
    y, idx = K.maxpool_forward(xh, op.kernel, op.stride, op.pads, out_hw)
    y_ref, idx_ref = K.maxpool_forward_ref(xh, op.kernel, op.stride, op.pads, out_hw)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    assert idx.dtype == idx_ref.dtype == np.uint8
    g = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(K.maxpool_backward(g, idx, xh.shape, op.kernel, op.stride, op.pads, out_hw),
                                  K.maxpool_backward_ref(g, idx, xh.shape, op.kernel, op.stride, op.pads, out_hw))


def test_maxpool_kernel_propagates_nan_and_points_at_the_last_nan(emulated):
    """As PyTorch's scan (a value greater than the best so far, or NaN): y is NaN, idx the window's last NaN."""
    xh = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    xh[0, 0, 1, 0] = xh[0, 1, 0, 0] = xh[1, 2, 3, 0] = np.nan
    y, idx = K.maxpool_forward(xh, (2, 2), (2, 2), (0, 0, 0, 0), (2, 2))
    y_ref, idx_ref = K.maxpool_forward_ref(xh, (2, 2), (2, 2), (0, 0, 0, 0), (2, 2))
    np.testing.assert_array_equal(y, y_ref)  # assert_array_equal treats NaN == NaN
    np.testing.assert_array_equal(idx, idx_ref)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 2 and idx[1, 1, 1, 0] == 1


@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (6, 5), (3, 2, 4)], ids=str)
def test_batchnorm_kernels_match_references(shape, emulated):
    rng = np.random.default_rng(3)
    x2, _ = K.channels_last(rng.standard_normal(shape).astype(np.float32) * 3 + 1)
    c = x2.shape[1]
    mean, var = K.bn_stats(x2)
    mean_ref, var_ref = K.bn_stats_ref(x2)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-6)
    np.testing.assert_allclose(var, var_ref, rtol=1e-5)
    inv_std = (1 / np.sqrt(var + np.float32(1e-5))).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    for got, ref in zip(K.bn_normalize(x2, mean, inv_std, gamma, beta),
                        K.bn_normalize_ref(x2, mean, inv_std, gamma, beta)):
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    g2 = rng.standard_normal(x2.shape).astype(np.float32)
    xhat2 = K.bn_normalize_ref(x2, mean, inv_std, gamma, beta)[0]
    for got, ref in zip(K.bn_sums(g2, xhat2), K.bn_sums_ref(g2, xhat2)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    a, b, cc = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(K.bn_backward(g2, xhat2, a, b, cc), K.bn_backward_ref(g2, xhat2, a, b, cc),
                               rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- GPU op kernels (emulated) == reference ops
@pytest.fixture
def reference():
    """The ops on their references (whose numbers the kernels must give)."""
    minidl.set_ops("reference")
    yield
    minidl.set_ops("fast")


def _conv_reference(x, w, b, gy, cfg):
    stride, padding, dilation = cfg[7:]
    xt, wt, bt = (minidl.Tensor(a, requires_grad=True) for a in (x, w, b))
    y = minidl.ops.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation)
    y.backward(gy)
    return y.data, xt.grad.data, wt.grad.data, bt.grad.data


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_conv2d_gpu_kernel_matches_the_reference(cfg, emulated, reference):
    n, c, h, w, k, kh, kw = cfg[:7]
    rng = np.random.default_rng(4)
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c, kh, kw)), rng.standard_normal(k)
    op, kernel, stride, pads, dilation, out_hw = _geometry(cfg)
    y, saved = K.conv2d_forward(x, wt, b, stride, pads, dilation, out_hw)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = K.conv2d_backward(gy, saved, (True, True, True))
    for got, ref in zip((y, gx, gw, gb), _conv_reference(x, wt, b, gy, cfg)):
        assert got.shape == ref.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_conv2d_gpu_kernel_skips_unneeded_gradients(emulated):
    cfg = CONV_CONFIGS[0]
    n, c, h, w, k, kh, kw = cfg[:7]
    rng = np.random.default_rng(5)
    _, kernel, stride, pads, dilation, out_hw = _geometry(cfg)
    y, saved = K.conv2d_forward(rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c, kh, kw)), None,
                                stride, pads, dilation, out_hw)
    gx, gw = K.conv2d_backward(rng.standard_normal(y.shape), saved, (False, True))
    assert gx is None and gw.shape == (k, c, kh, kw)


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_max_pool2d_gpu_kernel_matches_the_reference(cfg, emulated, reference):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 4, (2, 3, 6, 7)).astype(np.float64)  # many ties: the first maximum must win on both
    xt = minidl.Tensor(x, requires_grad=True)
    y_ref = minidl.ops.max_pool2d(xt, *cfg)
    gy = rng.standard_normal(y_ref.shape)
    y_ref.backward(gy)
    op = MaxPool2d(*cfg)
    y, saved = K.max_pool2d_forward(x, op.kernel, op.stride, op.pads, y_ref.shape[2:])
    np.testing.assert_array_equal(y, y_ref.data)
    np.testing.assert_allclose(K.max_pool2d_backward(gy, saved, (True,)), xt.grad.data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,nhwc", [((4, 3, 2, 3), False), ((4, 3, 2, 3), True), ((6, 5), False),
                                         ((3, 2, 4), False)], ids=str)
def test_batch_norm_gpu_kernel_matches_the_reference(shape, nhwc, emulated, reference):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape) * 2 + 0.5
    if nhwc:  # an NCHW view of NHWC memory, as conv2d returns
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    ref = BatchNorm(1e-5)
    ts = [minidl.Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    y_ref = ref(*ts)
    ref_mean, ref_var = ref.mean, ref.var  # freed by backward
    gy = rng.standard_normal(shape)
    y_ref.backward(gy)
    y, mean, var, saved = K.batch_norm_forward(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(y, y_ref.data, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(var, ref_var, rtol=1e-10)
    for got, t in zip(K.batch_norm_backward(gy, saved, (True, True, True)), ts):
        np.testing.assert_allclose(got, t.grad.data, rtol=1e-9, atol=1e-11)


SGD_CONFIGS = [dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
               dict(lr=0.02, momentum=0.8, dampening=0.3, weight_decay=0.1, maximize=True),
               dict(lr=0.1, weight_decay=0.5)]
ADAM_CONFIGS = [dict(), dict(lr=1e-2, weight_decay=0.1), dict(lr=3e-3, betas=(0.8, 0.9), eps=1e-6, maximize=True),
                dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)]


def _steps(opt_class, kw, update, n=3, dtype=np.float32):
    """Run n steps of the NumPy optimizer and of ``update`` (the GPU path) from the same start and gradients."""
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal((5, 4)).astype(dtype)
    grads = [rng.standard_normal((5, 4)).astype(dtype) for _ in range(n)]
    t = minidl.Tensor(p0.copy(), requires_grad=True)
    opt = opt_class([t], **kw)
    p, state = p0.copy(), {}
    for g in grads:
        t.grad = minidl.Tensor(g)
        opt.step()
        update(p, g, state, opt.param_groups[0])
    return p, t.data, state, opt.state[t]


@pytest.mark.parametrize("kw", SGD_CONFIGS, ids=str)
def test_sgd_kernel_matches_numpy_sgd(kw, emulated):
    p, ref, state, ref_state = _steps(minidl.optim.SGD, kw, K.sgd_update)
    np.testing.assert_allclose(p, ref, rtol=1e-6, atol=1e-7)
    if kw.get("momentum"):
        np.testing.assert_allclose(state["momentum_buffer"], ref_state["momentum_buffer"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw", ADAM_CONFIGS, ids=str)
def test_adam_kernel_matches_numpy_adam(kw, emulated):
    p, ref, state, ref_state = _steps(minidl.optim.Adam, kw, K.adam_update)
    np.testing.assert_allclose(p, ref, rtol=1e-6, atol=1e-7)
    assert state["step"] == ref_state["step"] == 3
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(state[key], ref_state[key], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kw", SGD_CONFIGS, ids=str)
def test_sgd_reference_matches_numpy_sgd(kw):
    def ref_update(p, g, state, group):
        a = K.sgd_args(group)
        first = "momentum_buffer" not in state
        buf = state.setdefault("momentum_buffer", np.empty_like(p)) if a["momentum"] else None
        K.sgd_ref(p, g, buf, first=first, **a)
    p, ref, _, _ = _steps(minidl.optim.SGD, kw, ref_update)
    np.testing.assert_allclose(p, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw", ADAM_CONFIGS, ids=str)
def test_adam_reference_matches_numpy_adam(kw):
    def ref_update(p, g, state, group):
        if not state:
            state.update(step=0, m=np.zeros_like(p), v=np.zeros_like(p))
        state["step"] += 1
        K.adam_ref(p, g, state["m"], state["v"], **K.adam_args(group, state["step"]))
    p, ref, _, _ = _steps(minidl.optim.Adam, kw, ref_update)
    np.testing.assert_allclose(p, ref, rtol=1e-6, atol=1e-7)


def test_cross_entropy_marks_bad_targets_nan_without_reading_them():
    loss = np.array([0.5, 1.0, 2.0, 3.0], dtype=np.float32)
    out = nan_where_invalid(loss, np.array([0, 3, -1, 2]), 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), [False, True, True, False])
    np.testing.assert_array_equal(out[[0, 3]], loss[[0, 3]])


# ---------------------------------------------------------------- the CUDA source compiles
def _nvcc_release():
    """(major, minor) of the installed nvcc, or None."""
    if shutil.which("nvcc") is None:
        return None
    import re
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


@pytest.mark.skipif((_nvcc_release() or (0, 0)) < (11, 8),
                    reason=f"needs nvcc >= 11.8 (for sm_90); found {_nvcc_release() or 'none'}")
def test_every_kernel_compiles_with_nvcc(tmp_path):
    src = tmp_path / "minidl_kernels.cu"
    src.write_text(E.cuda_source(K.ELEMENTWISE_SPECS, K.REDUCTION_SPECS))
    r = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "k.cubin"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]


# ---------------------------------------------------------------- on a GPU: compiled kernels and GPU ops
@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_gpu_im2col_col2im_match_references(cfg, dtype):
    import cupy as cp
    n, c, h, w = cfg[:4]
    _, kernel, stride, pads, dilation, out_hw = _geometry(cfg)
    xh = cp.random.standard_normal((n, h, w, c)).astype(dtype)
    col = K.im2col(xh, kernel, stride, pads, dilation, out_hw)
    cp.testing.assert_array_equal(col, K.im2col_ref(xh, kernel, stride, pads, dilation, out_hw))
    dcol = cp.random.standard_normal(col.shape).astype(dtype)
    cp.testing.assert_allclose(K.col2im(dcol, xh.shape, kernel, stride, pads, dilation, out_hw),
                               K.col2im_ref(dcol, xh.shape, kernel, stride, pads, dilation, out_hw),
                               rtol=1e-6, atol=1e-6)


@needs_gpu
@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_gpu_maxpool_matches_references(cfg):
    import cupy as cp
    op = MaxPool2d(*cfg)
    xh = cp.random.standard_normal((4, 9, 10, 5)).astype(cp.float32)
    (kh, kw), (s1, s2), (t, b, l, r) = op.kernel, op.stride, op.pads
    out_hw = ((9 + t + b - kh) // s1 + 1, (10 + l + r - kw) // s2 + 1)
    y, idx = K.maxpool_forward(xh, op.kernel, op.stride, op.pads, out_hw)
    y_ref, idx_ref = K.maxpool_forward_ref(xh, op.kernel, op.stride, op.pads, out_hw)
    cp.testing.assert_array_equal(y, y_ref)
    cp.testing.assert_array_equal(idx, idx_ref)
    g = cp.random.standard_normal(y.shape).astype(cp.float32)
    cp.testing.assert_allclose(K.maxpool_backward(g, idx, xh.shape, op.kernel, op.stride, op.pads, out_hw),
                               K.maxpool_backward_ref(g, idx, xh.shape, op.kernel, op.stride, op.pads, out_hw),
                               rtol=1e-6, atol=1e-6)


@needs_gpu
def test_gpu_batchnorm_kernels_match_references():
    import cupy as cp
    x2 = cp.random.standard_normal((1000, 16)).astype(cp.float32) * 3 + 1
    for got, ref in zip(K.bn_stats(x2), K.bn_stats_ref(x2)):
        cp.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    mean, var = K.bn_stats_ref(x2)
    inv_std = 1 / cp.sqrt(var + cp.float32(1e-5))
    gamma, beta = cp.random.standard_normal(16).astype(cp.float32), cp.random.standard_normal(16).astype(cp.float32)
    for got, ref in zip(K.bn_normalize(x2, mean, inv_std, gamma, beta),
                        K.bn_normalize_ref(x2, mean, inv_std, gamma, beta)):
        cp.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    g2 = cp.random.standard_normal(x2.shape).astype(cp.float32)
    xhat2 = K.bn_normalize_ref(x2, mean, inv_std, gamma, beta)[0]
    for got, ref in zip(K.bn_sums(g2, xhat2), K.bn_sums_ref(g2, xhat2)):
        cp.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
    a, b, c = (cp.random.standard_normal(16).astype(cp.float32) for _ in range(3))
    cp.testing.assert_allclose(K.bn_backward(g2, xhat2, a, b, c), K.bn_backward_ref(g2, xhat2, a, b, c),
                               rtol=1e-5, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize("kw", SGD_CONFIGS, ids=str)
def test_gpu_sgd_matches_numpy_sgd(kw):
    p, ref, _, _ = _steps(minidl.optim.SGD, kw, lambda p, g, s, grp: _on_gpu(K.sgd_update, p, g, s, grp))
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)


@needs_gpu
@pytest.mark.parametrize("kw", ADAM_CONFIGS, ids=str)
def test_gpu_adam_matches_numpy_adam(kw):
    p, ref, _, _ = _steps(minidl.optim.Adam, kw, lambda p, g, s, grp: _on_gpu(K.adam_update, p, g, s, grp))
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)


def _on_gpu(update, p, g, state, group):
    """Apply a GPU update to the host arrays p (in place) and state, through device copies."""
    import cupy as cp
    pd = cp.asarray(p)
    dstate = {k: (cp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    update(pd, cp.asarray(g), dstate, group)
    p[...] = pd.get()
    state.clear()
    state.update({k: (v.get() if isinstance(v, cp.ndarray) else v) for k, v in dstate.items()})


@needs_gpu
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_gpu_conv2d_matches_the_reference(cfg):
    n, c, h, w, k, kh, kw = cfg[:7]
    rng = np.random.default_rng(9)
    x, wt, b = (rng.standard_normal(s).astype(np.float32) for s in ((n, c, h, w), (k, c, kh, kw), (k,)))
    ts = [minidl.Tensor(a, requires_grad=True, device="cuda") for a in (x, wt, b)]
    y = minidl.ops.conv2d(*ts, stride=cfg[7], padding=cfg[8], dilation=cfg[9])
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(minidl.Tensor(gy, device="cuda"))
    minidl.set_ops("reference")
    try:
        ref = _conv_reference(x, wt, b, gy, cfg)
    finally:
        minidl.set_ops("fast")
    for got, r in zip((y.data, ts[0].grad.data, ts[1].grad.data, ts[2].grad.data), ref):
        np.testing.assert_allclose(backend.to_numpy(got), r, rtol=1e-4, atol=1e-4)


@needs_gpu
def test_gpu_training_step_has_no_host_synchronisation():
    """Forward, loss, backward and SGD step of a small BN ConvNet can be captured into a CUDA graph: stream capture
    fails on any host synchronisation (a device-to-host copy such as float(loss) or int(t.max()), a stream
    synchronize), so a clean capture shows that the training step never waits for the GPU."""
    import cupy as cp
    from minidl import nn, optim
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Dropout(0.2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = minidl.Tensor(np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32), device="cuda")
    y = minidl.Tensor(np.array([1, 2, 3, 4]), device="cuda")

    def step():
        loss = minidl.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    first = step()  # compiles the kernels, creates the momentum buffers and fills the memory pool
    assert np.isfinite(first.item())
    stream = cp.cuda.Stream(non_blocking=True)
    try:
        with stream:
            stream.begin_capture()
            try:
                step()
            finally:
                graph = stream.end_capture()
    except Exception as e:  # say which: a host read fails the capture, but so could a library's capture support
        raise AssertionError(f"the training step could not be captured as a CUDA graph: {type(e).__name__}: {e}. "
                             "A host synchronisation (a device-to-host copy) fails a capture; so would a library "
                             "that does not support capture (then see test_fake_gpu.py's host-read count)") from e
    assert graph is not None
