"""Gradient-check cases for the core ops (minidl/ops/{arith,elementwise,reduce,shape,loss}.py)."""
import numpy as np

import minidl as mdl
from minidl import ops
from tests.gradcases import Case, away_from_zero, distinct, normal


def positive(*shape):
    return lambda rng: [rng.uniform(0.5, 2.0, shape)]


def _log_softmax(x, axis=-1):
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _ce(x, t, reduction="mean", eps=0.0):
    logp = _log_softmax(x, 1)
    loss = -(1 - eps) * logp[np.arange(len(t)), t] - eps / x.shape[1] * logp.sum(1)
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


def _inputs(*makers):
    return lambda rng: [m(rng) for m in makers]


def n(*shape):
    return lambda rng: rng.standard_normal(shape)


def targets(n_rows, classes):
    return lambda rng: rng.integers(0, classes, n_rows)


CASES = [
    # arithmetic with broadcasting
    Case("add", "same", lambda a, b: a + b, _inputs(n(3, 4), n(3, 4)), lambda a, b: a + b),
    Case("add", "broadcast", lambda a, b: a + b, _inputs(n(2, 3, 4), n(3, 1)), lambda a, b: a + b),
    Case("add", "scalar", lambda a: 2.5 + a, _inputs(n(3, 4)), lambda a: 2.5 + a),
    Case("sub", "broadcast", lambda a, b: a - b, _inputs(n(4, 1), n(1, 5)), lambda a, b: a - b),
    Case("sub", "rscalar", lambda a: 1.0 - a, _inputs(n(3)), lambda a: 1.0 - a),
    Case("mul", "broadcast", lambda a, b: a * b, _inputs(n(2, 3, 4), n(4)), lambda a, b: a * b),
    Case("mul", "scalar", lambda a: a * 3.0, _inputs(n(5)), lambda a: a * 3.0),
    Case("div", "broadcast", lambda a, b: a / b, lambda rng: [rng.standard_normal((3, 4)), rng.uniform(0.5, 2, (4,))],
         lambda a, b: a / b),
    Case("div", "rscalar", lambda a: 2.0 / a, positive(3, 2), lambda a: 2.0 / a),
    Case("pow", "scalar-exponent", lambda a: a ** 3, _inputs(n(3, 4)), lambda a: a ** 3),
    Case("pow", "fractional", lambda a: a ** 1.5, positive(4), lambda a: a ** 1.5),
    Case("pow", "tensor-exponent", lambda a, b: a ** b,
         lambda rng: [rng.uniform(0.5, 2, (3, 4)), rng.standard_normal((4,))], lambda a, b: a ** b),
    Case("pow", "scalar-base", lambda b: 2.0 ** b, _inputs(n(3)), lambda b: 2.0 ** b),
    Case("neg", "plain", lambda a: -a, _inputs(n(2, 3)), lambda a: -a),
    Case("matmul", "2d", lambda a, b: a @ b, _inputs(n(3, 4), n(4, 5)), lambda a, b: a @ b),
    Case("matmul", "2d-tall", lambda a, b: a @ b, _inputs(n(5, 4), n(4, 3)), lambda a, b: a @ b),
    Case("matmul", "batched", lambda a, b: a @ b, _inputs(n(2, 3, 4), n(2, 4, 5)), lambda a, b: a @ b),
    Case("matmul", "broadcast-batch", lambda a, b: a @ b, _inputs(n(2, 1, 3, 4), n(5, 4, 2)), lambda a, b: a @ b),
    Case("matmul", "vector-matrix", lambda a, b: a @ b, _inputs(n(4), n(2, 4, 3)), lambda a, b: a @ b),
    Case("matmul", "matrix-vector", lambda a, b: a @ b, _inputs(n(3, 4), n(4)), lambda a, b: a @ b),
    Case("matmul", "vector-vector", lambda a, b: a @ b, _inputs(n(4), n(4)), lambda a, b: a @ b),
    Case("cast", "to-float32-and-back", lambda a: ops.cast(ops.cast(a, mdl.float32), a.dtype),
         _inputs(n(3, 4)), lambda a: a.astype(np.float32).astype(a.dtype), check=dict(eps=1e-2, atol=1e-5, rtol=1e-3)),
    Case("to_device", "cpu", lambda a: ops.to_device(a, "cpu") * 2.0, _inputs(n(3)), lambda a: 2 * a),
    # elementwise
    Case("exp", "plain", lambda a: a.exp(), _inputs(n(3, 4)), np.exp),
    Case("log", "plain", lambda a: a.log(), positive(3, 4), np.log),
    Case("sqrt", "plain", lambda a: a.sqrt(), positive(3, 4), np.sqrt),
    Case("abs", "plain", lambda a: abs(a), lambda rng: [away_from_zero((3, 4), rng)], np.abs),
    Case("clip", "both", lambda a: a.clip(-0.5, 0.5), lambda rng: [distinct((4, 5), rng, 0.07) + 0.013],
         lambda a: np.clip(a, -0.5, 0.5)),
    Case("clip", "min-only", lambda a: a.clip(min=0.0), lambda rng: [away_from_zero((6,), rng)],
         lambda a: np.maximum(a, 0)),
    Case("tanh", "plain", lambda a: a.tanh(), _inputs(n(3, 4)), np.tanh),
    Case("sigmoid", "plain", lambda a: a.sigmoid(), lambda rng: [rng.standard_normal((3, 4)) * 3],
         lambda a: 1 / (1 + np.exp(-a))),
    Case("relu", "plain", lambda a: a.relu(), lambda rng: [away_from_zero((3, 4), rng)], lambda a: np.maximum(a, 0)),
    Case("leaky_relu", "default", lambda a: mdl.leaky_relu(a), lambda rng: [away_from_zero((3, 4), rng)],
         lambda a: np.where(a > 0, a, 0.01 * a)),
    Case("leaky_relu", "slope-0.2", lambda a: mdl.leaky_relu(a, 0.2), lambda rng: [away_from_zero((5,), rng)],
         lambda a: np.where(a > 0, a, 0.2 * a)),
    # reductions
    Case("sum", "all", lambda a: a.sum(), _inputs(n(3, 4)), lambda a: a.sum()),
    Case("sum", "axis", lambda a: a.sum(1), _inputs(n(3, 4, 2)), lambda a: a.sum(1)),
    Case("sum", "axes-keepdims", lambda a: a.sum((0, 2), keepdims=True), _inputs(n(3, 4, 2)),
         lambda a: a.sum((0, 2), keepdims=True)),
    Case("sum", "negative-axis", lambda a: a.sum(-1), _inputs(n(3, 4)), lambda a: a.sum(-1)),
    Case("mean", "all", lambda a: a.mean(), _inputs(n(3, 4)), lambda a: a.mean()),
    Case("mean", "axis-keepdims", lambda a: a.mean(0, keepdims=True), _inputs(n(3, 4)),
         lambda a: a.mean(0, keepdims=True)),
    Case("mean", "axes", lambda a: a.mean((1, 2)), _inputs(n(2, 3, 4)), lambda a: a.mean((1, 2))),
    Case("max", "all", lambda a: a.max(), lambda rng: [distinct((3, 4), rng)], lambda a: a.max()),
    Case("max", "axis", lambda a: a.max(1), lambda rng: [distinct((3, 4, 2), rng)], lambda a: a.max(1)),
    Case("max", "axes-keepdims", lambda a: a.max((0, 2), keepdims=True), lambda rng: [distinct((3, 4, 2), rng)],
         lambda a: a.max((0, 2), keepdims=True)),
    Case("min", "all", lambda a: a.min(), lambda rng: [distinct((3, 4), rng)], lambda a: a.min()),
    Case("min", "axis-keepdims", lambda a: a.min(-1, keepdims=True), lambda rng: [distinct((3, 4), rng)],
         lambda a: a.min(-1, keepdims=True)),
    Case("var", "all-unbiased", lambda a: a.var(), _inputs(n(3, 4)), lambda a: a.var(ddof=1)),
    Case("var", "axis-biased", lambda a: a.var(0, correction=0), _inputs(n(5, 3)), lambda a: a.var(0)),
    Case("var", "axes-keepdims", lambda a: a.var((0, 2), keepdims=True), _inputs(n(3, 2, 4)),
         lambda a: a.var((0, 2), keepdims=True, ddof=1)),
    # shapes
    Case("reshape", "plain", lambda a: a.reshape(4, 3), _inputs(n(2, 6)), lambda a: a.reshape(4, 3)),
    Case("reshape", "infer", lambda a: a.reshape((-1, 2)), _inputs(n(2, 3, 2)), lambda a: a.reshape(-1, 2)),
    Case("reshape", "flatten", lambda a: a.flatten(1), _inputs(n(2, 3, 4)), lambda a: a.reshape(2, 12)),
    Case("reshape", "squeeze", lambda a: a.squeeze(), _inputs(n(3, 1, 4, 1)), lambda a: a.squeeze()),
    Case("reshape", "squeeze-axis", lambda a: a.squeeze(1), _inputs(n(3, 1, 1)), lambda a: a.squeeze(1)),
    Case("reshape", "unsqueeze", lambda a: a.unsqueeze(-1), _inputs(n(3, 4)), lambda a: a[..., None]),
    Case("permute", "3d", lambda a: a.permute(2, 0, 1), _inputs(n(2, 3, 4)), lambda a: a.transpose(2, 0, 1)),
    Case("permute", "transpose-swap", lambda a: a.transpose(0, 2), _inputs(n(2, 3, 4)),
         lambda a: a.swapaxes(0, 2)),
    Case("permute", "T", lambda a: a.T, _inputs(n(3, 5)), lambda a: a.T),
    Case("getitem", "int", lambda a: a[1], _inputs(n(3, 4)), lambda a: a[1]),
    Case("getitem", "slices", lambda a: a[1:, ::2], _inputs(n(4, 5)), lambda a: a[1:, ::2]),
    Case("getitem", "ellipsis-none", lambda a: a[..., None, 0], _inputs(n(2, 3, 4)), lambda a: a[..., None, 0]),
    Case("getitem", "fancy-repeats", lambda a: a[np.array([0, 2, 0, 1])], _inputs(n(3, 4)),
         lambda a: a[np.array([0, 2, 0, 1])]),
    Case("getitem", "bool-mask", lambda a: a[np.array([True, False, True])], _inputs(n(3, 2)),
         lambda a: a[np.array([True, False, True])]),
    Case("getitem", "pairs", lambda a: a[np.arange(3), np.array([1, 0, 1])], _inputs(n(3, 2)),
         lambda a: a[np.arange(3), np.array([1, 0, 1])]),
    Case("concatenate", "axis0", lambda a, b: mdl.concatenate([a, b]), _inputs(n(2, 3), n(4, 3)),
         lambda a, b: np.concatenate([a, b])),
    Case("concatenate", "axis1-three", lambda a, b, c: mdl.cat([a, b, c], axis=1), _inputs(n(2, 1), n(2, 3), n(2, 2)),
         lambda a, b, c: np.concatenate([a, b, c], 1)),
    Case("stack", "axis0", lambda a, b: mdl.stack([a, b]), _inputs(n(2, 3), n(2, 3)), lambda a, b: np.stack([a, b])),
    Case("stack", "axis-last", lambda a, b: mdl.stack([a, b], axis=-1), _inputs(n(2, 3), n(2, 3)),
         lambda a, b: np.stack([a, b], -1)),
    # softmax and losses
    Case("softmax", "last", lambda a: a.softmax(), _inputs(n(3, 5)),
         lambda a: np.exp(_log_softmax(a))),
    Case("softmax", "axis0", lambda a: mdl.softmax(a, 0), _inputs(n(4, 3)), lambda a: np.exp(_log_softmax(a, 0))),
    Case("log_softmax", "last", lambda a: a.log_softmax(), _inputs(n(3, 5)), _log_softmax),
    Case("log_softmax", "axis1-3d", lambda a: mdl.log_softmax(a, 1), _inputs(n(2, 4, 3)),
         lambda a: _log_softmax(a, 1)),
    Case("cross_entropy", "mean", lambda x, t: mdl.cross_entropy(x, t), _inputs(n(6, 4), targets(6, 4)), _ce),
    Case("cross_entropy", "sum", lambda x, t: mdl.cross_entropy(x, t, reduction="sum"),
         _inputs(n(5, 3), targets(5, 3)), lambda x, t: _ce(x, t, "sum")),
    Case("cross_entropy", "none", lambda x, t: mdl.cross_entropy(x, t, reduction="none"),
         _inputs(n(5, 3), targets(5, 3)), lambda x, t: _ce(x, t, "none")),
    Case("cross_entropy", "label-smoothing", lambda x, t: mdl.cross_entropy(x, t, label_smoothing=0.1),
         _inputs(n(5, 4), targets(5, 4)), lambda x, t: _ce(x, t, eps=0.1)),
    Case("cross_entropy", "large-logits", lambda x, t: mdl.cross_entropy(x * 1000.0, t),
         _inputs(n(4, 3), targets(4, 3)), lambda x, t: _ce(x * 1000.0, t), check=dict(eps=1e-9, atol=1e-4)),
    Case("nll_loss", "mean", lambda x, t: mdl.nll_loss(x, t), _inputs(n(5, 4), targets(5, 4)),
         lambda x, t: -x[np.arange(5), t].mean()),
    Case("nll_loss", "none", lambda x, t: mdl.nll_loss(x.log_softmax(), t, reduction="none"),
         _inputs(n(5, 4), targets(5, 4)), lambda x, t: -_log_softmax(x)[np.arange(5), t]),
    Case("mse_loss", "mean", lambda x, y: mdl.mse_loss(x, y), _inputs(n(3, 4), n(3, 4)),
         lambda x, y: ((x - y) ** 2).mean()),
    Case("mse_loss", "sum", lambda x, y: mdl.mse_loss(x, y, reduction="sum"), _inputs(n(5), n(5)),
         lambda x, y: ((x - y) ** 2).sum()),
    Case("mse_loss", "none", lambda x, y: mdl.mse_loss(x, y, reduction="none"), _inputs(n(2, 3), n(2, 3)),
         lambda x, y: (x - y) ** 2),
]
