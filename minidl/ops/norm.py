"""Batch normalisation: per-channel statistics over every axis but axis 1 (N, C, ...).

Training mode normalises with the batch's mean and biased variance and reports both
(``self.mean``, ``self.var``) so the caller can update running statistics; evaluation
mode normalises with given running statistics.  Both have closed-form backwards.
"""
from minidl import backend
from minidl.autograd import Function
from minidl.ops.reduce import channel_dot, channel_sum


def _layout(x, what):
    if x.ndim < 2:
        raise ValueError(f"{what} expects input of shape (N, C) or (N, C, ...), got {tuple(x.shape)}")
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)  # the shape of per-channel values broadcast against x


def _check_channel_vectors(x, what, **vectors):
    c = x.shape[1]
    for name, v in vectors.items():
        if v.shape != (c,):
            raise ValueError(f"{what}: {name} must have shape ({c},) for input with {c} channels "
                             f"(shape {tuple(x.shape)}), got {tuple(v.shape)}")


class BatchNorm(Function):
    """Batch statistics over the m = N*H*W positions of each channel:
    mu = mean x, var = mean (x - mu)^2 (biased), xhat = (x - mu) / sqrt(var + eps), y = gamma xhat + beta.
    dbeta = sum gy,  dgamma = sum gy xhat,
    dx = gamma / (m sqrt(var + eps)) * (m gy - sum gy - xhat sum(gy xhat)).

    On the CPU, with s = 1 / sqrt(var + eps), each step is one reduction or one pass over the data:
    forward y = x - mu, var = mean y^2 (two passes, so no cancellation), y *= gamma s, y += beta;
    xhat is not kept: backward takes sum gy xhat = s (sum gy x - mu sum gy) and
    dx = a (gy + p x + q) with a = gamma s, p = -s sum(gy xhat) / m, q = -sum gy / m - p mu.
    Reductions are einsums, elementwise steps broadcast per-channel vectors (channels-last memory,
    as conv2d returns, stays channels-last)."""
    name = "batch_norm"

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, gamma, beta):
        if backend.device_of(x) == "cuda":  # CuPy: fused normalisation kernels (minidl/cuda_kernels.py)
            from minidl import cuda_kernels
            return cuda_kernels.batch_norm_forward(self, x, gamma, beta)
        xp = backend.get_array_module(x)
        self.setup(x, gamma, beta)
        m = x.dtype.type(self.m)
        self.mean = channel_sum(x) / m
        y = x - self.mean.reshape(self.shape)                    # x - mu, scaled and shifted in place below
        self.var = channel_dot(y, y) / m
        self.inv_std = 1 / xp.sqrt(self.var + x.dtype.type(self.eps))
        y *= (gamma * self.inv_std).reshape(self.shape)
        y += beta.reshape(self.shape)
        self.x, self.gamma = x, gamma
        return y

    def setup(self, x, gamma, beta):
        """Check the shapes and set ``shape`` (per-channel broadcast) and the count ``m`` per channel (shared by the
        NumPy and the CuPy forward)."""
        self.shape = _layout(x, "batch_norm")
        _check_channel_vectors(x, "batch_norm", weight=gamma, bias=beta)
        self.m = x.size // x.shape[1]
        if self.m <= 1:
            raise ValueError(f"batch_norm in training mode needs more than one value per channel, "
                             f"got input of shape {tuple(x.shape)}")

    def backward(self, gy):
        if hasattr(self, "gpu_saved"):
            from minidl import cuda_kernels
            return cuda_kernels.batch_norm_backward(self, gy)
        m = gy.dtype.type(self.m)
        sum_gy = channel_sum(gy)
        sum_gy_xhat = self.inv_std * (channel_dot(gy, self.x) - self.mean * sum_gy)
        gx = None
        if self.needs_input_grad[0]:  # a (gy + p x + q): one pass writing gx, three in place
            p = -self.inv_std * sum_gy_xhat / m
            gx = self.x * p.reshape(self.shape)
            gx += gy
            gx += (-sum_gy / m - p * self.mean).reshape(self.shape)
            gx *= (self.gamma * self.inv_std).reshape(self.shape)
        return gx, sum_gy_xhat, sum_gy


class BatchNormEval(Function):
    """Normalisation with fixed running statistics rm, rv:
    y = gamma (x - rm) / sqrt(rv + eps) + beta;
    dx = gy gamma / sqrt(rv + eps),  dgamma = sum gy xhat,  dbeta = sum gy.  rm, rv get no gradient."""
    name = "batch_norm_eval"

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, gamma, beta, running_mean, running_var):
        xp = backend.get_array_module(x)
        self.shape = _layout(x, "batch_norm")
        _check_channel_vectors(x, "batch_norm", weight=gamma, bias=beta,
                               running_mean=running_mean, running_var=running_var)
        rm = running_mean.astype(x.dtype, copy=False)
        rv = running_var.astype(x.dtype, copy=False)
        self.inv_std = 1 / xp.sqrt(rv + x.dtype.type(self.eps))
        self.gamma, self.x, self.rm = gamma, x, rm
        scale = gamma * self.inv_std
        y = x * scale.reshape(self.shape)
        y += (beta - rm * scale).reshape(self.shape)
        return y

    def backward(self, gy):
        gx = gy * (self.gamma * self.inv_std).reshape(self.shape) if self.needs_input_grad[0] else None
        sum_gy = channel_sum(gy) if self.needs_input_grad[1] or self.needs_input_grad[2] else None
        ggamma = None
        if self.needs_input_grad[1]:  # sum gy xhat = s (sum gy x - rm sum gy): no xhat array
            ggamma = self.inv_std * (channel_dot(gy, self.x) - self.rm * sum_gy)
        return gx, ggamma, sum_gy if self.needs_input_grad[2] else None, None, None
