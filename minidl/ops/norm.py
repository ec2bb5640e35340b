"""Batch normalisation: per-channel statistics over every axis but axis 1 of x (N, C, ...).

Training mode normalises with the batch's mean and biased variance and keeps both (``mean``, ``var``), so
that the caller can update running statistics (minidl.nn.functional.batch_norm); evaluation mode
normalises with given running statistics.  Both are written the textbook way here; unless
``minidl.set_ops("reference")`` is in force they hand the same arrays to a fast kernel (minidl/kernels).
"""
from minidl import backend, kernels
from minidl.autograd import Function


def _check(x, what, **vectors):
    """The shape (1, C, 1, ...) of per-channel values broadcast against x, after checking x and the vectors."""
    if x.ndim < 2:
        raise ValueError(f"{what} expects input of shape (N, C) or (N, C, ...), got {tuple(x.shape)}")
    c = x.shape[1]
    for name, v in vectors.items():
        if v.shape != (c,):
            raise ValueError(f"{what}: {name} must have shape ({c},) for input with {c} channels "
                             f"(shape {tuple(x.shape)}), got {tuple(v.shape)}")
    return (1, c) + (1,) * (x.ndim - 2)


class BatchNorm(Function):
    """Training mode, over the m = N H W values of each channel (every axis but 1):

        mu = (1/m) sum x,   var = (1/m) sum (x - mu)^2  (biased; both sums in float64: in float32 a mean
        large against the spread loses the spread's digits),   xhat = (x - mu) / sqrt(var + eps)
        y = gamma xhat + beta
        dbeta = sum gy,   dgamma = sum gy xhat
        dx = gamma / (m sqrt(var + eps)) (m gy - dbeta - xhat dgamma)

    An empty batch (m = 0) gives an empty y and zero gradients, and no statistics (``mean`` is None)."""
    name = "batch_norm"
    floating = ("input", "weight", "bias")

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, gamma, beta):
        shape = _check(x, "batch_norm", weight=gamma, bias=beta)
        self.m, self.axes = x.size // x.shape[1], (0,) + tuple(range(2, x.ndim))
        if self.m == 1:
            raise ValueError(f"batch_norm in training mode needs more than one value per channel, "
                             f"got input of shape {tuple(x.shape)}")
        if self.m == 0:  # nothing to normalise, as PyTorch
            self.mean = self.var = None
            return x.copy()
        self.fast = kernels.choose(self.name, x)    # a fast kernel module, or None: the reference below
        if self.fast:
            y, self.mean, self.var, self.saved = self.fast.batch_norm_forward(x, gamma, beta, self.eps)
            return y
        mu = x.mean(axis=self.axes, keepdims=True, dtype="float64").astype(x.dtype)
        var = ((x - mu) ** 2).mean(axis=self.axes, keepdims=True, dtype="float64").astype(x.dtype)
        self.std = backend.get_array_module(x).sqrt(var + self.eps)
        self.xhat = (x - mu) / self.std
        self.gamma, self.mean, self.var = gamma.reshape(shape), mu.reshape(-1), var.reshape(-1)
        return self.gamma * self.xhat + beta.reshape(shape)

    def backward(self, gy):
        if self.m == 0:
            xp = backend.get_array_module(gy)
            return gy.copy(), xp.zeros(gy.shape[1], gy.dtype), xp.zeros(gy.shape[1], gy.dtype)
        if self.fast:
            return self.fast.batch_norm_backward(gy, self.saved, self.needs_input_grad)
        m, shape = self.m, self.gamma.shape
        dbeta = gy.sum(axis=self.axes)
        dgamma = (gy * self.xhat).sum(axis=self.axes)
        dx = self.gamma / (m * self.std) * (m * gy - dbeta.reshape(shape) - self.xhat * dgamma.reshape(shape))
        return dx, dgamma, dbeta


class BatchNormEval(Function):
    """Normalisation with fixed running statistics rm, rv (no gradient for them):

        xhat = (x - rm) / sqrt(rv + eps),   y = gamma xhat + beta
        dx = gy gamma / sqrt(rv + eps),   dgamma = sum gy xhat,   dbeta = sum gy"""
    name = "batch_norm_eval"
    floating = ("input", "weight", "bias")

    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, gamma, beta, running_mean, running_var):
        shape = _check(x, "batch_norm", weight=gamma, bias=beta, running_mean=running_mean,
                       running_var=running_var)
        self.fast = kernels.choose(self.name, x)    # a fast kernel module, or None: the reference below
        if self.fast:
            y, self.saved = self.fast.batch_norm_eval_forward(x, gamma, beta, running_mean, running_var, self.eps)
            return y
        rm, rv = running_mean.astype(x.dtype).reshape(shape), running_var.astype(x.dtype).reshape(shape)
        self.std = backend.get_array_module(x).sqrt(rv + self.eps)
        self.xhat = (x - rm) / self.std
        self.gamma, self.axes = gamma.reshape(shape), (0,) + tuple(range(2, x.ndim))
        return self.gamma * self.xhat + beta.reshape(shape)

    def backward(self, gy):
        if self.fast:
            return self.fast.batch_norm_eval_backward(gy, self.saved, self.needs_input_grad)
        dx = gy * self.gamma / self.std
        return dx, (gy * self.xhat).sum(axis=self.axes), gy.sum(axis=self.axes), None, None
