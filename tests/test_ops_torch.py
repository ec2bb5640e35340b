"""Ops against PyTorch, on the cases where a differential fuzzer (49,000 random cases against PyTorch 2.13) found
the two apart: which dims are refused, 0-d tensors, pow at base 0, sigmoid's tail, batch norm's float32
accuracy and where a NaN sends its gradient.  Each test runs both libraries on the same input and
compares what they give (a value and its gradients, or the kind of error).  Skipped where torch is absent: it
is a reference for these checks only, never a dependency."""
import numpy as np
import pytest

import minidl

torch = pytest.importorskip("torch", reason="torch is not installed (it is only a reference for these checks)")

# minidl's spelling -> PyTorch's, for the expressions below
TORCH_SPELLING = {".max(": ".amax(", ".min(": ".amin(", "axis=": "dim=", "keepdims=": "keepdim="}
# what minidl raises where PyTorch raises: an IndexError for a dim out of range in both; PyTorch's generic
# RuntimeError for a bad argument is minidl's ValueError
REFUSALS = {IndexError: IndexError, RuntimeError: ValueError}


def outcome(lib, expr, a):
    """Evaluate ``expr`` with x = a tensor of ``a`` in ``lib`` (minidl or torch, as ``lib`` and ``nn``):
    (the value, x's gradient for an upstream gradient of finite values 0.5-2.5) or the class of the error
    raised."""
    mine = lib is minidl
    if not mine:
        for ours, theirs in TORCH_SPELLING.items():
            expr = expr.replace(ours, theirs)
    x = minidl.Tensor(a, requires_grad=True) if mine else torch.tensor(a, requires_grad=True)
    try:
        y = eval(expr, {"x": x, "lib": lib, "nn": lib.nn})
    except Exception as e:  # noqa: BLE001 - which error is what the test compares
        return type(e)
    value = y.numpy() if mine else y.detach().numpy()
    gy = (1.5 + np.cos(np.arange(value.size))).reshape(value.shape).astype(a.dtype)
    y.backward(gy if mine else torch.tensor(gy))
    return value, x.grad.numpy()


def assert_same_outcome(expr, a):
    theirs, mine = outcome(torch, expr, a), outcome(minidl, expr, a)
    if isinstance(theirs, type):
        said = mine.__name__ if isinstance(mine, type) else f"a result of shape {mine[0].shape}"
        assert mine is REFUSALS.get(theirs, theirs), f"{expr}: torch raises {theirs.__name__}, minidl gives {said}"
        return
    assert not isinstance(mine, type), f"{expr}: torch accepts it, minidl raises {mine.__name__}"
    for got, want in zip(mine, theirs):
        assert got.shape == want.shape and got.dtype == want.dtype, expr
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=expr)


SHAPE = (2, 4, 1)
OUT_OF_RANGE = [  # on x of SHAPE: PyTorch refuses a dim outside [-ndim, ndim) with IndexError ([-ndim-1, ndim] for
    "x.squeeze(-5)", "x.squeeze(3)", "x.squeeze(-3)", "x.squeeze(2)",   # unsqueeze and stack); the edges pass
    "x.unsqueeze(5)", "x.unsqueeze(-5)", "x.unsqueeze(4)", "x.unsqueeze(3)", "x.unsqueeze(-4)",
    "x.flatten(0, -5)", "x.flatten(3)", "x.flatten(-3, 1)", "x.flatten(2, 1)",
    "x.transpose(0, 3)", "x.transpose(-4, 0)", "x.transpose(-1, 0)", "x.permute(0, 1, 3)", "x.permute(-1, 0, 1)",
    "x.sum(3)", "x.sum(-4)", "x.mean(3)", "x.max(-4)", "x.min(3)", "x.var(3)", "x.sum((0, 3))",
    "x.softmax(3)", "x.log_softmax(-4)", "lib.cat([x, x], 3)", "lib.cat([x, x], -4)", "lib.stack([x, x], 4)",
    "lib.stack([x, x], -5)", "lib.stack([x, x], 3)",
]


@pytest.mark.parametrize("expr", OUT_OF_RANGE)
def test_out_of_range_dims_are_refused_as_in_pytorch(expr):
    assert_same_outcome(expr, np.random.default_rng(0).standard_normal(SHAPE))


@pytest.mark.parametrize("shape", [(3,), (2, 3), ()], ids=str)
def test_flatten_layer_refuses_input_without_the_axes_it_merges(shape):
    """nn.Flatten() merges axes 1..-1: a 1-D (or 0-d) input has no axis 1."""
    assert_same_outcome("nn.Flatten()(x)", np.ones(shape))


REPEATED = ["x.sum((0, 0))", "x.sum((0, -3))", "x.mean((1, 1))", "x.max((0, 0))", "x.min((2, -1))",
            "x.var((0, 0))", "x.sum((0, 1), keepdims=True)", "x.var((-1, 0))", "x.permute(0, 0, 1)"]


@pytest.mark.parametrize("expr", REPEATED)
def test_a_dim_named_twice_is_refused_as_in_pytorch(expr):
    assert_same_outcome(expr, np.random.default_rng(1).standard_normal(SHAPE))


SCALAR = [  # on a 0-d x: PyTorch takes dim 0 and -1 as if x had one axis, and refuses 1 and -2
    "x.sum(-1)", "x.sum(0)", "x.sum(1)", "x.sum((0, -1))", "x.sum(0, keepdims=True)", "x.mean(0)", "x.mean(-2)",
    "x.max(0)", "x.min(-1)", "x.max(0, keepdims=True)", "x.var(0)", "x.var(0, correction=0)",
    "x.var(-1, keepdims=True)", "x.sum()", "x.var()",
    "x.transpose(0, 0)", "x.transpose(0, -1)", "x.transpose(0, 1)", "x.permute(())", "x.permute(0)",
    "x.squeeze()", "x.squeeze(0)", "x.squeeze(-1)", "x.squeeze(1)", "x.unsqueeze(0)", "x.unsqueeze(-1)",
    "x.unsqueeze(1)", "x.unsqueeze(-2)", "x.flatten()", "x.flatten(0, 0)", "x.flatten(-1, 0)", "x.flatten(1)",
    "x.softmax(0)", "x.log_softmax(-1)", "x.softmax(1)", "lib.stack([x, x], 0)", "lib.stack([x, x], -1)",
    "lib.stack([x, x], 1)", "lib.cat([x, x])",
]


@pytest.mark.filterwarnings("ignore:var.*degrees of freedom", "ignore::RuntimeWarning")  # both warn of var(one value)
@pytest.mark.parametrize("expr", SCALAR)
def test_a_0d_tensor_takes_dim_0_and_minus_1_as_in_pytorch(expr):
    assert_same_outcome(expr, np.array(0.7))


POINTS = [0.0, -0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 3.0, -2.0]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # log of 0 and of negatives, 0 to negative powers: on purpose
def test_pow_and_both_its_gradients_match_pytorch_at_base_zero():
    """d(a^b)/da = b a^(b-1) is 0 where b = 0 (not 0 * a^-1 = NaN at a = 0), and d(a^b)/db = a^b ln a is 0 where
    a = 0 and b >= 0 (not 0 * -inf): PyTorch's rule.  Every pair of POINTS, as tensors both."""
    a, b = (v.ravel() for v in np.meshgrid(POINTS, POINTS))
    got, want = [], []
    for lib, out in ((minidl, got), (torch, want)):
        ta, tb = (lib.tensor(v, requires_grad=True) for v in (a, b))
        y = ta ** tb
        y.sum().backward()
        out += [t.detach().numpy() if lib is torch else t.numpy() for t in (y, ta.grad, tb.grad)]
    for what, g, w in zip(("a ** b", "d/da", "d/db"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=0, equal_nan=True, err_msg=f"{what} at a, b = {a}, {b}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("expr", ["x ** 0", "x ** 0.0", "x ** 2", "x ** 1", "x ** 0.5", "x ** -1", "0.0 ** x",
                                  "2.0 ** x", "(-1.0) ** x"])
def test_pow_with_a_constant_matches_pytorch(expr):
    """(Not at -0.0: PyTorch computes x^-0.5 as rsqrt, -inf at -0.0, where IEEE's pow gives +inf.)"""
    assert_same_outcome(expr, np.array([p for p in POINTS if p or not np.signbit(p)]))


def test_sigmoid_keeps_the_digits_of_small_values_as_pytorch():
    """float32 sigmoid(-20) is 2.06e-9, not 0 (as (1 + tanh(x/2)) / 2 gives), so log(sigmoid(x)) and its
    gradient stay finite; on x in [-88, 88], where float32 e^-x does not overflow (below it both give 0), and
    log on [-80, 88] (at -88, 1 / sigmoid(x) nears float32's largest value)."""
    x = np.linspace(-88, 88, 1761, dtype=np.float32)
    y = minidl.Tensor(x).sigmoid().numpy()
    assert y.dtype == np.float32 and y[680] == pytest.approx(2.0611537e-9, rel=1e-6)   # x = -20
    np.testing.assert_allclose(y, torch.tensor(x).sigmoid().numpy(), rtol=1e-6, atol=0)
    log_sigmoid, grad = outcome(minidl, "x.sigmoid().log()", x[80:])
    assert np.isfinite(log_sigmoid).all() and np.isfinite(grad).all()
    assert_same_outcome("x.sigmoid().log()", x[80:])


F32_EPS = float(np.finfo(np.float32).eps)


def batch_norm_inputs(mean):
    """mean + randn(32, 4, 8, 8) and an upstream gradient 1 + randn, in float32."""
    rng = np.random.default_rng(5)
    x = (mean + rng.standard_normal((32, 4, 8, 8))).astype(np.float32)
    return x, (1 + rng.standard_normal(x.shape)).astype(np.float32)


def torch_batch_norm(x, gy, dtype):
    """[y, dx, dweight, dbias, running_mean, running_var] of torch's BatchNorm2d in training, in ``dtype``."""
    layer = torch.nn.BatchNorm2d(x.shape[1]).to(dtype)
    tx = torch.tensor(x, dtype=dtype, requires_grad=True)
    y = layer(tx)
    y.backward(torch.tensor(gy, dtype=dtype))
    out = [y, tx.grad, layer.weight.grad, layer.bias.grad, layer.running_mean, layer.running_var]
    return [t.detach().numpy() for t in out]


def assert_as_accurate_as_pytorch(x, gy, mine, names):
    """Each of ``mine`` (minidl's float32 results, named ``names``) within twice PyTorch's float32 error and a
    few float32 roundings, both against PyTorch in float64 on the same float32 input.  (dbias = sum gy does
    not involve x: PyTorch's CPU kernel sums it in float64, minidl in float32, within sqrt(m) roundings.)"""
    exact, theirs = (torch_batch_norm(x, gy, d) for d in (torch.float64, torch.float32))
    for name, t, m, e in zip(names, theirs, mine, exact):
        err_t, err_m = (float(np.abs(a - e).max() / np.abs(e).max()) for a in (t, m))
        bound = np.sqrt(x.size / x.shape[1]) * F32_EPS if name == "dbias" else 2 * err_t + 4 * F32_EPS
        assert m.dtype == np.float32 and err_m <= bound, \
            f"{name}: error {err_m:.2g} against float64, PyTorch's {err_t:.2g}"


@pytest.mark.parametrize("mean", [100, 1000])
def test_batch_norm_in_float32_is_as_accurate_as_pytorchs_when_the_mean_is_large(mean, device, ops_mode):
    """BatchNorm2d in training on mean + randn(32, 4, 8, 8): y, every gradient and the running statistics.
    A float32 sum of x (the mean) or of gy x (dweight) loses the digits that the spread lives in: 3-7 times
    PyTorch's error in dweight at mean 100, 7-10 times at 1000."""
    x, gy = batch_norm_inputs(mean)
    layer = minidl.nn.BatchNorm2d(4).to(device)
    tx = minidl.Tensor(x, requires_grad=True, device=device)
    y = layer(tx)
    y.backward(minidl.Tensor(gy, device=device))
    mine = [t.numpy() for t in (y, tx.grad, layer.weight.grad, layer.bias.grad, layer.running_mean,
                                layer.running_var)]
    assert_as_accurate_as_pytorch(x, gy, mine, ("y", "dx", "dweight", "dbias", "running_mean", "running_var"))


@pytest.mark.parametrize("ranks", [1, 2])
def test_sync_batch_norm_in_float32_is_as_accurate_as_pytorchs_when_the_mean_is_large(ranks, device):
    """The same for SyncBatchNorm's op, in one process: the sum over the ranks that it is given is the identity
    (one rank) or doubles (two ranks holding the same share: the whole batch [x; x] has x's statistics)."""
    from minidl.ops.sync_batch_norm import SyncBatchNorm

    def reduce(a):
        a *= ranks
        return a

    x, gy = batch_norm_inputs(100)
    ts = [minidl.Tensor(a, requires_grad=True, device=device) for a in (x, np.ones(4, np.float32),
                                                                       np.zeros(4, np.float32))]
    y = SyncBatchNorm(reduce)(*ts)
    y.backward(minidl.Tensor(gy, device=device))
    assert_as_accurate_as_pytorch(x, gy, [y.numpy()] + [t.grad.numpy() for t in ts], ("y", "dx", "dweight", "dbias"))


NAN = float("nan")
WITH_NAN = np.array([NAN, -1.0, 0.0, -0.0, 2.0, np.inf, -np.inf, 0.5])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # inf - inf, sqrt of negatives: on purpose
@pytest.mark.parametrize("expr", ["x.relu()", "x.abs()", "nn.functional.leaky_relu(x, 0.1)", "x.clip(0, 1)",
                                  "x.clip(min=0)", "x.sigmoid()", "x.tanh()", "x.exp()", "x.sqrt()"])
def test_elementwise_gradients_at_nan_are_pytorchs(expr):
    """PyTorch passes the gradient through ReLU at NaN (its mask is x <= 0, false at NaN), gives abs 0 there
    (sign(NaN) = 0), LeakyReLU the slope and clamp 0."""
    assert_same_outcome(expr, WITH_NAN)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("which", ["max", "min"])
def test_max_and_min_send_the_gradient_to_a_nan_as_pytorch(which):
    """A NaN is the maximum (and the minimum): x.max() shares the gradient among the NaNs as torch's x.max()
    does, and x.max(axis) sends each slice's to its NaN as torch's x.max(dim).values (one NaN a slice and no
    ties here: with ties minidl shares the gradient as torch's amax, where max(dim) picks one)."""
    for axis in (None, 1, 0):
        x = np.array([[1.0, NAN, 3.0], [4.0, 2.0, 0.0], [NAN, 5.0, NAN]])[:3 if axis is None else 2]
        mx, tx = minidl.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y = getattr(mx, which)() if axis is None else getattr(mx, which)(axis)
        ty = getattr(tx, which)() if axis is None else getattr(tx, which)(axis).values
        gy = np.arange(1.0, 1.0 + y.numpy().size).reshape(y.shape)
        y.backward(gy)
        ty.backward(torch.tensor(gy))
        np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
        np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy(), err_msg=f"{which}(axis={axis})")


@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)])
def test_max_pool_sends_the_gradient_to_a_nan_as_pytorch(k, s, p, device, ops_mode):
    """PyTorch's scan of a window takes a value that is greater or NaN: the gradient goes to the window's first
    maximum, or to its last NaN.  Windows with one NaN, two NaNs, NaN beside -inf, none; overlapping ones."""
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6) % 7
    x[0, 0, 0, 1] = x[0, 0, 3, 3] = x[0, 0, 2, 2] = x[1, 2, 5, 5] = NAN
    x[0, 1, 1, 1] = x[1, 2, 4, 4] = -np.inf
    mx = minidl.Tensor(x, requires_grad=True, device=device)
    tx = torch.tensor(x, requires_grad=True)
    y, ty = minidl.nn.functional.max_pool2d(mx, k, s, p), torch.nn.functional.max_pool2d(tx, k, s, p)
    gy = np.arange(1.0, 1.0 + y.numpy().size, dtype=np.float32).reshape(y.shape)
    y.backward(minidl.Tensor(gy, device=device))
    ty.backward(torch.tensor(gy))
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())
