"""Dropout: zero each element (or each whole channel) with probability p, scale the rest by 1/(1-p).

The keep mask is drawn in float32 from ``backend.default_generator`` of the input's
backend, whatever the input dtype, so a seed fixes the mask for float32 and float64
alike.  Evaluation mode is the identity and never reaches these ops (see
``minidl.nn.functional.dropout``).
"""
from minidl import backend
from minidl.autograd import Function


def _check_p(p):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must lie in [0, 1], got {p}")
    return float(p)


def _scaled_keep_mask(x, shape, p):
    """m / (1 - p) with m_i = 1 where a uniform draw u_i >= p (probability 1 - p), else 0."""
    xp = backend.get_array_module(x)
    u = backend.default_generator(xp).random(shape, dtype=xp.float32)
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    return (u >= p).astype(x.dtype) * x.dtype.type(scale)


class Dropout(Function):
    """Inverted dropout: y = x * m / (1 - p), m_i ~ Bernoulli(1 - p) per element;
    dx = gy * m / (1 - p)"""
    name = "dropout"
    floating = ("input",)

    def __init__(self, p=0.5):
        self.p = _check_p(p)

    def forward(self, x):
        self.mask = _scaled_keep_mask(x, x.shape, self.p)
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


class Dropout2d(Function):
    """Channel dropout on (N, C, ...): y[n, c] = x[n, c] * m[n, c] / (1 - p), one Bernoulli(1 - p)
    draw per (sample, channel), so whole feature maps are zeroed;  dx = gy * m / (1 - p)"""
    name = "dropout2d"
    floating = ("input",)

    def __init__(self, p=0.5):
        self.p = _check_p(p)

    def forward(self, x):
        if x.ndim < 3:
            raise ValueError(f"dropout2d expects input of shape (N, C, H, W) (or (N, C, L)), got {tuple(x.shape)}")
        self.mask = _scaled_keep_mask(x, x.shape[:2] + (1,) * (x.ndim - 2), self.p)
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask
