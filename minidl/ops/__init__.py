"""Every differentiable op, as a plain function of tensors.

Each function here builds the op's ``Function`` (forward and backward side by side
in the submodule named for its kind) and applies it.  ``Tensor`` methods and
operators call these.
"""
import builtins
import operator

from minidl.autograd import Tensor
from minidl.ops.conv import Conv2d, conv2d
from minidl.ops.pool import (AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, adaptive_avg_pool2d, avg_pool2d,
                             max_pool2d)
from minidl.ops.arith import Add, Cast, Div, MatMul, Mul, Neg, Pow, Sub, ToDevice, compare
from minidl.ops.elementwise import Abs, Clip, Exp, LeakyReLU, Log, ReLU, Sigmoid, Sqrt, Tanh
from minidl.ops.loss import CrossEntropy, LogSoftmax, MSELoss, NLLLoss, Softmax
from minidl.ops.reduce import Max, Mean, Min, Sum, Var
from minidl.ops.shape import Concatenate, GetItem, Permute, Reshape, Stack, wrap_dim


def _t(x):
    return x if isinstance(x, Tensor) else Tensor(x)


# arithmetic (broadcasting)
def add(a, b): return Add()(a, b)
def sub(a, b): return Sub()(a, b)
def mul(a, b): return Mul()(a, b)
def div(a, b): return Div()(a, b)
def pow(a, b): return Pow()(a, b)  # noqa: A001
def neg(x): return Neg()(x)
def matmul(a, b): return MatMul()(a, b)
def cast(x, dtype): return Cast(dtype)(x)
def to_device(x, device): return ToDevice(device)(x)


# comparisons: boolean tensors, no gradient
def eq(a, b): return compare(operator.eq, a, b)
def ne(a, b): return compare(operator.ne, a, b)
def lt(a, b): return compare(operator.lt, a, b)
def le(a, b): return compare(operator.le, a, b)
def gt(a, b): return compare(operator.gt, a, b)
def ge(a, b): return compare(operator.ge, a, b)


# elementwise
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)
def abs(x): return Abs()(x)  # noqa: A001
def clip(x, min=None, max=None): return Clip(min, max)(x)  # noqa: A002
clamp = clip
def tanh(x): return Tanh()(x)
def sigmoid(x): return Sigmoid()(x)
def relu(x): return ReLU()(x)
def leaky_relu(x, negative_slope=0.01): return LeakyReLU(negative_slope)(x)


# reductions
def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)  # noqa: A001
def mean(x, axis=None, keepdims=False): return Mean(axis, keepdims)(x)
def max(x, axis=None, keepdims=False): return Max(axis, keepdims)(x)  # noqa: A001
def min(x, axis=None, keepdims=False): return Min(axis, keepdims)(x)  # noqa: A001
def var(x, axis=None, keepdims=False, correction=1): return Var(axis, keepdims, correction)(x)


# shapes
def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def permute(x, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Permute(axes)(x)


def transpose(x, dim0=None, dim1=None):
    """Swap two axes (PyTorch's ``transpose(dim0, dim1)``), or reverse all of them (``.T``)."""
    axes = list(range(x.ndim))
    if dim0 is None and dim1 is None:
        axes.reverse()
    elif dim0 is None or dim1 is None:
        raise ValueError("transpose takes two axes to swap, or none to reverse all")
    else:
        dim0, dim1 = wrap_dim(dim0, x.ndim), wrap_dim(dim1, x.ndim)
        if x.ndim:  # a 0-d tensor takes dims 0 and -1 and has no axes to swap
            axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return Permute(axes)(x)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes start_dim..end_dim into one."""
    s, e = wrap_dim(start_dim, x.ndim), wrap_dim(end_dim, x.ndim)
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                         f"for a tensor of shape {tuple(x.shape)}")
    if x.ndim == 0:
        return reshape(x, 1)
    n = 1
    for d in x.shape[s:e + 1]:
        n *= d
    return reshape(x, x.shape[:s] + (n,) + x.shape[e + 1:])


def squeeze(x, axis=None):
    if axis is None:
        return reshape(x, tuple(d for d in x.shape if d != 1))
    axes = [wrap_dim(a, x.ndim) for a in ((axis,) if isinstance(axis, int) else axis)]
    return reshape(x, tuple(d for i, d in enumerate(x.shape) if not (i in axes and d == 1)))


def unsqueeze(x, axis):
    axis = wrap_dim(axis, x.ndim + 1)   # the new axis may also go after the last
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def getitem(x, idx): return GetItem(idx)(x)
def concatenate(tensors, axis=0): return Concatenate(axis)(*tensors)
cat = concatenate
def stack(tensors, axis=0): return Stack(axis)(*tensors)


# softmax and losses
def softmax(x, axis=-1): return Softmax(axis)(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """Mean (or summed, or per-sample) cross-entropy of logits (N, C) and class indices (N,)."""
    return CrossEntropy(reduction, label_smoothing)(logits, _t(target))


def nll_loss(log_probs, target, reduction="mean"):
    return NLLLoss(reduction)(log_probs, _t(target))


def mse_loss(input, target, reduction="mean"):
    return MSELoss(reduction)(input, target)


del builtins
