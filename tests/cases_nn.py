"""Gradient-check cases for the ops of minidl/ops/dropout.py and minidl/ops/norm.py, each
against a plain NumPy formula.

Dropout's mask is fixed by reseeding inside ``fn`` (every call draws the same mask).  Its
cases carry no ``ref`` for tests/test_ops.py, because the mask depends on the backend's
generator; tests/test_nn_ops.py checks their forward against ``ref_dropout`` (NumPy's
generator from the same seed) on the CPU and against the form of inverted dropout on CuPy.
"""
import numpy as np

import minidl
from minidl.ops.dropout import Dropout, Dropout2d
from minidl.ops.linear import linear
from minidl.ops.norm import BatchNorm, BatchNormEval
from tests.gradcases import Case

SEED = 1234


def _seeded(op_cls, p):
    def fn(x):
        minidl.manual_seed(SEED)  # the same mask at every call: gradcheck sees one fixed function
        return op_cls(p)(x)
    fn.p = p
    return fn


def ref_dropout(x, p, channels=False):
    shape = x.shape[:2] + (1,) * (x.ndim - 2) if channels else x.shape
    u = np.random.default_rng(SEED).random(shape, dtype=np.float32)
    return x * (u >= p) / (1 - p)


def dropout_case(op, cls, id, shape, p):
    return Case(op, id, _seeded(cls, p), lambda rng: [rng.standard_normal(shape)], None)


def ref_batch_norm(x, g, b, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)  # biased variance
    return (x - mu) / np.sqrt(var + eps) * g.reshape(shape) + b.reshape(shape)


def ref_batch_norm_eval(x, g, b, rm, rv, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + eps) * g.reshape(shape) + b.reshape(shape)


def bn_inputs(shape, scale=3.0):
    def make(rng):
        c = shape[1]
        x = rng.standard_normal(shape) * scale + rng.standard_normal((1, c) + (1,) * (len(shape) - 2))
        return [x, rng.uniform(0.5, 1.5, c), rng.standard_normal(c)]
    return make


def bn_eval_case(id, shape, eps=1e-5):
    rng = np.random.default_rng(5)
    c = shape[1]
    rm, rv = rng.standard_normal(c), rng.uniform(0.2, 3.0, c)

    def fn(x, g, b):
        return BatchNormEval(eps)(x, g, b, minidl.Tensor(rm.astype(x.dtype), device=x.device),
                                  minidl.Tensor(rv.astype(x.dtype), device=x.device))
    return Case("batch_norm_eval", id, fn, bn_inputs(shape), lambda x, g, b: ref_batch_norm_eval(x, g, b, rm, rv, eps))


CASES = [
    dropout_case("dropout", Dropout, "p0.5-2d", (6, 7), 0.5),
    dropout_case("dropout", Dropout, "p0.2-4d", (2, 3, 4, 5), 0.2),
    dropout_case("dropout", Dropout, "p0.9", (40,), 0.9),
    dropout_case("dropout2d", Dropout2d, "p0.5-4d", (4, 5, 3, 2), 0.5),
    dropout_case("dropout2d", Dropout2d, "p0.3-3d", (3, 6, 4), 0.3),
    Case("batch_norm", "NC", lambda x, g, b: BatchNorm()(x, g, b), bn_inputs((8, 3)), ref_batch_norm,
         check=dict(atol=1e-5)),
    Case("batch_norm", "NCL", lambda x, g, b: BatchNorm()(x, g, b), bn_inputs((4, 3, 5)), ref_batch_norm,
         check=dict(atol=1e-5)),
    Case("batch_norm", "NCHW", lambda x, g, b: BatchNorm()(x, g, b), bn_inputs((3, 4, 5, 2)), ref_batch_norm,
         check=dict(atol=1e-5)),
    Case("batch_norm", "NCHW-batch2-1x1", lambda x, g, b: BatchNorm()(x, g, b), bn_inputs((2, 3, 1, 1)),
         ref_batch_norm, check=dict(atol=1e-5)),
    Case("batch_norm", "eps0.1", lambda x, g, b: BatchNorm(0.1)(x, g, b), bn_inputs((5, 2, 3, 3), scale=0.3),
         lambda x, g, b: ref_batch_norm(x, g, b, 0.1), check=dict(atol=1e-5)),
    bn_eval_case("NC", (6, 4)),
    bn_eval_case("NCHW", (2, 3, 4, 5)),
    bn_eval_case("NCL-eps0.1", (3, 2, 5), eps=0.1),
]


CASES += [
    Case("linear", "bias", linear, lambda rng: [rng.standard_normal((4, 5)), rng.standard_normal((3, 5)),
                                               rng.standard_normal(3)], lambda x, w, b: x @ w.T + b),
    Case("linear", "no-bias", linear, lambda rng: [rng.standard_normal((2, 5)), rng.standard_normal((3, 5))],
         lambda x, w: x @ w.T),
    Case("linear", "leading-axes", linear, lambda rng: [rng.standard_normal((2, 3, 4)), rng.standard_normal((6, 4)),
                                                       rng.standard_normal(6)], lambda x, w, b: x @ w.T + b),
    Case("linear", "1d-input", linear, lambda rng: [rng.standard_normal(4), rng.standard_normal((2, 4)),
                                                   rng.standard_normal(2)], lambda x, w, b: x @ w.T + b),
]
