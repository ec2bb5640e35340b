"""Synchronised batch normalisation: the statistics of the whole batch that the ranks hold between them.

The op takes ``reduce``, a function that sums a float64 vector over the ranks in place (the layer passes the
process group's all-reduce; one process passes the identity, and the op is then batch_norm), so ops import no
communication code.
"""
from minidl import backend
from minidl.autograd import Function


def channel_sum(a):
    """sum of a over every axis but the channel axis 1"""
    return a.sum(axis=(0,) + tuple(range(2, a.ndim)))


def channel_dot(a, b):
    """sum of a * b over every axis but the channel axis 1"""
    return channel_sum(a * b)


class SyncBatchNorm(Function):
    """Rank r holds x_r of shape (N_r, C, ...), m_r = N_r * H * W positions per channel; R(.) sums over the ranks.
    M = R(m_r),  mu = R(sum x_r) / M,  var = R(sum (x_r - mu)^2) / M  (two passes and two all-reduces, as
    batch_norm's two passes: no cancellation; sum x_r as m_r k_r + sum (x_r - k_r), k_r one value of each
    channel, so that a mean large against the spread loses no digits to float32),
    xhat = (x - mu) / sqrt(var + eps),  y = gamma xhat + beta.
    dx = gamma / (M sqrt(var + eps)) * (M gy - R(sum gy) - xhat R(sum gy xhat))  (one all-reduce of both sums);
    dgamma = sum gy xhat,  dbeta = sum gy  over this rank's share only, as in PyTorch's SyncBatchNorm: the
    data-parallel wrapper averages them with every other parameter's gradient.
    Sums are local as in batch_norm (sum gy xhat = s sum gy (x - mu), s = 1 / sqrt(var + eps)); what crosses
    ranks is reduced in float64.  ``self.mean``, ``self.var`` (biased) and ``self.count`` (M, a 0-d
    float64 array, left on the device) serve the running statistics."""
    name = "sync_batch_norm"

    def __init__(self, reduce, eps=1e-5):
        self.reduce, self.eps = reduce, eps

    def forward(self, x, gamma, beta):
        if x.ndim < 2:
            raise ValueError(f"sync_batch_norm expects input of shape (N, C) or (N, C, ...), got {tuple(x.shape)}")
        c = x.shape[1]
        for what, v in (("weight", gamma), ("bias", beta)):
            if v.shape != (c,):
                raise ValueError(f"sync_batch_norm: {what} must have shape ({c},) for input of shape "
                                 f"{tuple(x.shape)}, got {tuple(v.shape)}")
        xp = backend.get_array_module(x)
        dt = x.dtype.type
        self.shape = (1, c) + (1,) * (x.ndim - 2)
        m = x.size // c if c else 0
        k = x[(0, slice(None)) + (0,) * (x.ndim - 2)] if m else xp.zeros(c, x.dtype)   # one value of each channel
        y = x - k.reshape(self.shape)                 # x - k, then x - mu, scaled and shifted, all in place
        sums = xp.empty(c + 1, dtype="float64")
        sums[:c] = channel_sum(y) + m * k.astype("float64")   # sum x, summing x - k in float32 (as batch_norm)
        sums[c] = m
        self.reduce(sums)
        self.count = sums[c]
        mean = sums[:c] / self.count
        y -= (mean - k).astype(x.dtype).reshape(self.shape)
        self.mean = mean.astype(x.dtype)
        self.var = (self.reduce(channel_dot(y, y).astype("float64")) / self.count).astype(x.dtype)
        self.inv_std = 1 / xp.sqrt(self.var + dt(self.eps))
        y *= (gamma * self.inv_std).reshape(self.shape)
        y += beta.reshape(self.shape)
        self.x, self.gamma = x, gamma
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        c = gy.shape[1]
        sum_gy = channel_sum(gy)
        xc = self.x - self.mean.reshape(self.shape)
        sum_gy_xhat = self.inv_std * channel_dot(gy, xc)
        gx = None
        if self.needs_input_grad[0]:
            both = self.reduce(xp.concatenate([sum_gy, sum_gy_xhat]).astype("float64"))
            m = self.count.astype(gy.dtype)
            total_gy, total_gy_xhat = both[:c].astype(gy.dtype), both[c:].astype(gy.dtype)
            gx = xc                                      # dx = a (gy + p xc - R(sum gy) / M), as batch_norm's
            gx *= (-self.inv_std * total_gy_xhat / m).reshape(self.shape)
            gx += gy
            gx -= (total_gy / m).reshape(self.shape)
            gx *= (self.gamma * self.inv_std).reshape(self.shape)
        return gx, sum_gy_xhat, sum_gy
