"""Every fast kernel (minidl/kernels) against the textbook reference of its op (minidl/ops), on every case of the
case suite (tests/cases_*.py): forward and every gradient, float32 and float64, on each backend; the CPU conv
kernel also through each of its inner paths; and the switch itself (set_ops, MINIDL_OPS)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl
from minidl import kernels
from minidl.kernels import cpu
from tests.gradcases import all_cases

CASES = [c for c in all_cases() if c.op in kernels.OPS]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(case, dtype, device, mode, seed=0):
    """y and the gradients of every input that requires one, with the ops on ``mode``, for an upstream
    gradient drawn from ``seed``."""
    arrays = case.inputs(np.random.default_rng(seed))
    tensors = [minidl.Tensor(np.asarray(a).astype(dtype) if np.asarray(a).dtype.kind == "f" else a,
                             requires_grad=np.asarray(a).dtype.kind == "f", device=device) for a in arrays]
    minidl.set_ops(mode)
    try:
        y = case.fn(*tensors)
        gy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
        y.backward(minidl.Tensor(gy, device=device))
    finally:
        minidl.set_ops(os.environ.get("MINIDL_OPS", "fast"))
    return [y.numpy()] + [t.grad.numpy() for t in tensors if t.requires_grad]


def assert_same(got, want, tol):
    """Each array of ``got`` equals ``want``'s within ``tol`` of the largest |value| (and has its shape)."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


def test_every_op_with_fast_kernels_has_cases_and_both_modules_have_its_pair():
    assert {c.op for c in CASES} == set(kernels.OPS)
    for module in (kernels.cpu, kernels.cuda):
        for op in kernels.OPS:
            assert callable(getattr(module, f"{op}_forward")) and callable(getattr(module, f"{op}_backward"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fast_kernel_equals_reference(case, device):
    """float64: the same numbers up to rounding; float32: both within float32 rounding of the float64 result
    (relative to the largest value: the batch of two makes batch norm's dx cancel to a few digits)."""
    ref = run(case, "float64", device, "reference")
    assert_same(run(case, "float64", device, "fast"), ref, 1e-10)
    for mode in ("fast", "reference"):
        out = run(case, "float32", device, mode)
        assert all(a.dtype == np.float32 for a in out)
        assert_same(out, ref, 1e-3)


# the CPU conv kernel's inner paths: (PLANES_MAX_CHANNELS, FULL_CORRELATION_MAX_RATIO, KEEP_COLUMNS_BYTES,
# CHUNK_BYTES).  The cases' inputs are NCHW arrays with 2-4 channels, which it reads as planes (the input
# image's path); with 0 they go through the NHWC columns of every later layer.  Ratio 10 takes the full
# correlation for dx wherever the stride allows, 0 never; 0 bytes kept rebuilds the forward's columns in
# backward; 1 byte a chunk builds the columns one image at a time.
CONV_PATHS = {"planes-full-kept": (4, 10.0, 2**30, 4 * 2**20), "nhwc-full-kept": (0, 10.0, 2**30, 4 * 2**20),
              "nhwc-col2im-rebuilt": (0, 0.0, 0, 4 * 2**20), "planes-col2im-rebuilt": (4, 0.0, 0, 4 * 2**20),
              "nhwc-full-chunked": (0, 10.0, 0, 1), "planes-col2im-chunked": (4, 0.0, 0, 1)}


@pytest.mark.parametrize("path", list(CONV_PATHS))
@pytest.mark.parametrize("case", [c for c in CASES if c.op == "conv2d"], ids=lambda c: c.name)
def test_every_path_of_the_cpu_conv_kernel_equals_reference(case, path, monkeypatch):
    built = []

    class Recording(cpu.Columns):
        def __init__(self, x, pads, kernel, stride, dilation, out_hw, planes=False, ones=False, keep=False):
            super().__init__(x, pads, kernel, stride, dilation, out_hw, planes, ones, keep)
            built.append((id(x), planes, len(self.ranges)))

    for name, value in zip(("PLANES_MAX_CHANNELS", "FULL_CORRELATION_MAX_RATIO", "KEEP_COLUMNS_BYTES",
                            "CHUNK_BYTES"), CONV_PATHS[path]):
        monkeypatch.setattr(cpu, name, value)
    monkeypatch.setattr(cpu, "Columns", Recording)
    assert_same(run(case, "float64", "cpu", "fast"), run(case, "float64", "cpu", "reference"), 1e-10)
    forward = built[0]
    assert forward[1] is path.startswith("planes")
    # the weight gradient rebuilds the forward's columns (from the same input) only when they were not kept
    assert len([b for b in built[1:] if b[0] == forward[0]]) == (0 if path.endswith("kept") else 1)
    if path.endswith("chunked") and case.inputs(np.random.default_rng(0))[0].shape[0] > 1:
        assert forward[2] > 1


def test_the_cpu_conv_kernel_keeps_no_padded_copy_of_its_input(monkeypatch):
    """Each chunk of images is padded into a small reused buffer: backward keeps the input itself."""
    monkeypatch.setattr(cpu, "CHUNK_BYTES", 1)          # one image a chunk
    monkeypatch.setattr(cpu, "KEEP_COLUMNS_BYTES", 0)
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.standard_normal((5, 6, 7, 8), dtype=np.float32)).transpose(0, 3, 1, 2)  # NHWC
    w = rng.standard_normal((4, 8, 3, 3), dtype=np.float32)
    _, saved = cpu.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), (6, 7))
    assert saved.cols is None and np.shares_memory(saved.x, x)
    cols = cpu.Columns(saved.x, saved.pads, (3, 3), (1, 1), (1, 1), (6, 7))
    assert len(cols.ranges) == 5 and cols.pbuf.shape == (1, 8, 9, 8)


@pytest.mark.parametrize("op,args", [
    ("conv2d", lambda x, w, b: minidl.ops.conv2d(x, w, b, padding=1)),
    ("max_pool2d", lambda x, w, b: minidl.ops.max_pool2d(x, 2)),
    ("avg_pool2d", lambda x, w, b: minidl.ops.avg_pool2d(x, 3, 2, 1)),
    ("batch_norm", lambda x, w, b: minidl.nn.functional.batch_norm(x, None, None, w[:, 0, 0, 0], b, True)),
    ("batch_norm_eval", lambda x, w, b: minidl.nn.functional.batch_norm(
        x, minidl.zeros(3), minidl.ones(3), w[:, 0, 0, 0], b, False)),
])
def test_an_empty_batch_goes_forward_and_back_on_both(op, args, ops_mode):
    x = minidl.Tensor(np.zeros((0, 3, 6, 5), np.float32), requires_grad=True)
    w = minidl.Tensor(np.ones((3, 3, 3, 3), np.float32), requires_grad=True)
    b = minidl.Tensor(np.ones(3, np.float32), requires_grad=True)
    y = args(x, w, b)
    assert y.shape[0] == 0 and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.shape == x.shape
    for t in (w, b):
        if t.grad is not None:
            assert t.grad.shape == t.shape and not t.grad.numpy().any()


def test_set_ops_switches_all_ops_or_the_named_ones():
    try:
        minidl.set_ops("reference")
        assert minidl.get_ops() == "reference" and kernels.choose("conv2d", np.zeros(1)) is None
        minidl.set_ops("fast", ["max_pool2d"])
        assert minidl.get_ops() == "mixed"
        assert kernels.choose("max_pool2d", np.zeros(1)) is cpu and kernels.choose("conv2d", np.zeros(1)) is None
        minidl.set_ops("fast")
        assert minidl.get_ops() == "fast" and kernels.choose("conv2d", np.zeros(1)) is cpu
        with pytest.raises(ValueError, match="'fast'.*'reference'.*got 'slow'"):
            minidl.set_ops("slow")
        with pytest.raises(ValueError, match="no fast kernels for \\['relu'\\]"):
            minidl.set_ops("reference", ["relu"])
    finally:
        minidl.set_ops(os.environ.get("MINIDL_OPS", "fast"))


def test_an_op_keeps_the_implementation_it_ran_forward_with():
    x = minidl.Tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)), requires_grad=True)
    y = minidl.ops.max_pool2d(x, 2)
    try:
        minidl.set_ops("reference")
        y.sum().backward()      # forward ran on the fast kernel: so does backward
    finally:
        minidl.set_ops(os.environ.get("MINIDL_OPS", "fast"))
    assert x.grad.numpy().sum() == 2 * 3 * 9


def test_minidl_ops_environment_variable():
    code = "import minidl; print(minidl.get_ops())"
    env = dict(os.environ, PYTHONPATH=ROOT, MINIDL_OPS="reference")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.stdout.strip() == "reference", out.stderr
    env["MINIDL_OPS"] = "fastest"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode != 0 and "MINIDL_OPS must be 'fast' (the default) or 'reference', got 'fastest'" in out.stderr


@pytest.mark.parametrize("shape", [(32, 4, 8, 8), (64, 512)])
def test_cpu_batch_norm_statistics_keep_float32_digits_with_a_large_mean_and_an_outlier(shape):
    """The shifted-data mean and variance: a mean 100 spreads away, and the first sample's first value 30 spreads
    off the mean (a shift by that one value would lose digits to (mu - k)^2)."""
    x = (100 + np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    x[(0, slice(None)) + (0,) * (len(shape) - 2)] = 130
    c = x.shape[1]
    _, mean, var, _ = cpu.batch_norm_forward(x, np.ones(c, np.float32), np.zeros(c, np.float32), 1e-5)
    axes = (0,) + tuple(range(2, len(shape)))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=axes), rtol=1e-6)
    np.testing.assert_allclose(var, x64.var(axis=axes), rtol=1e-5)
