"""The functional API, with PyTorch's names and arguments (``import minidl.nn.functional as F``).

Each function applies ops from ``minidl.ops``; the layers in ``minidl.nn`` are thin
modules that hold parameters and call these.
"""
from __future__ import annotations

from minidl import backend, ops
from minidl.autograd import Tensor
from minidl.ops.dropout import Dropout as _Dropout
from minidl.ops.dropout import Dropout2d as _Dropout2d
from minidl.ops.linear import linear as _linear
from minidl.ops.norm import BatchNorm as _BatchNorm
from minidl.ops.norm import BatchNormEval as _BatchNormEval

__all__ = ["linear", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "dropout", "dropout2d",
           "batch_norm", "relu", "leaky_relu", "tanh", "sigmoid", "softmax", "log_softmax", "flatten",
           "cross_entropy", "nll_loss", "mse_loss"]


# ------------------------------------------------------------------ linear and convolution
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with x (..., in_features), W (out_features, in_features), b (out_features,)."""
    if input.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input of shape {tuple(input.shape)} has {input.shape[-1] if input.ndim else 0} "
                         f"features, the weight of shape {tuple(weight.shape)} expects {weight.shape[1]}")
    return _linear(input, weight, bias)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation of NCHW input with weight (C_out, C_in, kH, kW) (``minidl.ops.conv``);
    padding is an int, a pair or 'same'."""
    return ops.conv2d(input, weight, bias, stride=stride, padding=padding, dilation=dilation)


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """Maximum over each window (stride defaults to the kernel size)."""
    return ops.max_pool2d(input, kernel_size, stride=stride, padding=padding)


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """Mean over each window, zero padding counted (count_include_pad=True, as PyTorch)."""
    return ops.avg_pool2d(input, kernel_size, stride=stride, padding=padding)


def adaptive_avg_pool2d(input, output_size=1):
    """Average pooling to a fixed output size (1: global average pooling)."""
    return ops.adaptive_avg_pool2d(input, output_size)


# ------------------------------------------------------------------ regularisation and normalisation
def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) in training; identity otherwise."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must lie in [0, 1], got {p}")
    return _Dropout(p)(input) if training and p > 0 else input


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero whole channels (N, C) with probability p and scale the rest by 1/(1-p) in training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must lie in [0, 1], got {p}")
    return _Dropout2d(p)(input) if training and p > 0 else input


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float | None = 0.1, eps: float = 1e-5,
               num_batches_tracked: Tensor | None = None) -> Tensor:
    """Normalise each channel (axis 1).  In training (or without running statistics) use the
    batch's mean and biased variance, and update the running statistics in place:
    r <- (1 - momentum) r + momentum * stat, with the unbiased variance m/(m-1) var for
    running_var (PyTorch's rule); momentum=None takes a cumulative average over
    ``num_batches_tracked`` batches.  Otherwise normalise with the running statistics."""
    xp = input.xp
    c = input.shape[1] if input.ndim >= 2 else 0
    gamma = weight if weight is not None else xp.ones(c, dtype=input.dtype)
    beta = bias if bias is not None else xp.zeros(c, dtype=input.dtype)
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if not training and running_mean is not None:
        return _BatchNormEval(eps)(input, gamma, beta, running_mean, running_var)
    op = _BatchNorm(eps)
    out = op(input, gamma, beta)
    if training and running_mean is not None:
        _update_running_stats(running_mean, running_var, num_batches_tracked, momentum, op.mean, op.var, op.m)
    return out


def _update_running_stats(running_mean, running_var, num_batches_tracked, momentum, mean, var, count):
    """r <- (1 - momentum) r + momentum * stat in place, with the unbiased variance count/(count-1) var for
    running_var; momentum=None: a cumulative average over ``num_batches_tracked`` batches.  ``count`` (values
    per channel) is an int, or a 0-d array left on the device (SyncBatchNorm's, summed over the ranks)."""
    if num_batches_tracked is not None:
        num_batches_tracked.data += 1
        num_batches_tracked._bump_version()
    if momentum is None:
        if num_batches_tracked is None:
            raise ValueError("batch_norm with momentum=None (cumulative average) needs num_batches_tracked")
        # 1/n as a 0-d array on the tensor's device: reading n back (.item()) would stop the GPU each step
        factor = 1.0 / num_batches_tracked.data.astype("float64")
    else:
        factor = float(momentum)
    if mean is None:   # an empty batch has no statistics: PyTorch only counts it
        return
    unbiased = var * _as_dtype(count / (count - 1), var.dtype)
    for buf, stat in ((running_mean, mean), (running_var, unbiased)):
        a = buf.data
        a *= _as_dtype(1.0 - factor, a.dtype)
        a += stat.astype(a.dtype, copy=False) * _as_dtype(factor, a.dtype)
        buf._bump_version()


def _as_dtype(v, dtype):
    """A Python float or a 0-d array (NumPy or CuPy) as a scalar of ``dtype``, without leaving the device."""
    return dtype.type(v) if isinstance(v, float) else v.astype(dtype)


# ------------------------------------------------------------------ activations
def relu(input: Tensor) -> Tensor:
    return ops.relu(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return ops.leaky_relu(input, negative_slope)


def tanh(input: Tensor) -> Tensor:
    return ops.tanh(input)


def sigmoid(input: Tensor) -> Tensor:
    return ops.sigmoid(input)


def _softmax_dim(ndim):
    """PyTorch's choice when no dim is given: 0 for 0-, 1- and 3-D input, else 1."""
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    return ops.softmax(input, _softmax_dim(input.ndim) if dim is None else dim)


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:
    return ops.log_softmax(input, _softmax_dim(input.ndim) if dim is None else dim)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return ops.flatten(input, start_dim, end_dim)


# ------------------------------------------------------------------ losses
def cross_entropy(input: Tensor, target, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits (N, C) against class indices (N,), through a fused log-softmax."""
    return ops.cross_entropy(input, _on_device(target, input), reduction=reduction, label_smoothing=label_smoothing)


def nll_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities (N, C) at class indices (N,)."""
    return ops.nll_loss(input, _on_device(target, input), reduction=reduction)


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error (reduction 'mean', 'sum' or 'none')."""
    return ops.mse_loss(input, target, reduction=reduction)


def _on_device(target, ref: Tensor):
    """Class-index targets as a Tensor on the logits' device."""
    t = target if isinstance(target, Tensor) else Tensor(target)
    if t.device != ref.device:
        t = Tensor(backend.to_device(t.data, ref.device))
    return t
