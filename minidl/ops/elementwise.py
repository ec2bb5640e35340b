"""Elementwise functions of one tensor: exp, log, sqrt, abs, clip and the activations."""
import numpy as np

from minidl import backend
from minidl.autograd import Function


class Exp(Function):
    """y = e^x;  dx = gy * y"""
    name = "exp"
    floating = ("input",)

    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    """y = ln x;  dx = gy / x"""
    name = "log"
    floating = ("input",)

    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x


class Sqrt(Function):
    """y = sqrt(x);  dx = gy / (2 y)"""
    name = "sqrt"
    floating = ("input",)

    def forward(self, x):
        self.y = backend.get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return gy / (2 * self.y)


class Abs(Function):
    """y = |x|;  dx = gy * sign(x), with sign(NaN) = 0 as in PyTorch"""
    name = "abs"

    def forward(self, x):
        self.x = x
        return abs(x)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return gy * xp.nan_to_num(xp.sign(self.x))   # NumPy's sign(NaN) is NaN


class Clip(Function):
    """y = min(max(x, lo), hi);  dx = gy where lo <= x <= hi, else 0"""
    name = "clip"

    def __init__(self, lo=None, hi=None):
        if lo is None and hi is None:
            raise ValueError("clip: give at least one of min and max")
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.x = x
        lo = None if self.lo is None else x.dtype.type(self.lo)
        hi = None if self.hi is None else x.dtype.type(self.hi)
        return xp.clip(x, lo, hi)

    def backward(self, gy):
        inside = True
        if self.lo is not None:
            inside = self.x >= self.lo
        if self.hi is not None:
            inside = inside & (self.x <= self.hi)
        return gy * inside


class Tanh(Function):
    """y = tanh x;  dx = gy * (1 - y^2)"""
    name = "tanh"
    floating = ("input",)

    def forward(self, x):
        self.y = backend.get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dx = gy * y * (1 - y)

    Small values keep their digits (float32 sigmoid(-20) = 2.06e-9, so log(sigmoid(x)) stays finite); where
    e^-x overflows (x < -88 in float32) y = 1 / inf = 0, its limit, as in PyTorch.  Computed in place in one
    new array."""
    name = "sigmoid"
    floating = ("input",)

    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.negative(x)
        with np.errstate(over="ignore"):
            xp.exp(y, out=y)
        y += 1
        self.y = xp.reciprocal(y, out=y)
        return y

    def backward(self, gy):
        return gy * self.y * (1 - self.y)


class ReLU(Function):
    """y = max(x, 0);  dx = 0 where x <= 0, else gy  (PyTorch's mask: a NaN passes its gradient on)
    = gy * [y != 0], as y >= 0 or NaN.

    Backward writes the mask [y != 0] as 1.0/0.0 straight into the new dx and multiplies by gy in place:
    two float passes and no bool temporary to allocate and cast, the same numbers as gy * (y != 0), bit for
    bit (tests/test_pool_relu.py)."""
    name = "relu"

    def forward(self, x):
        self.y = backend.get_array_module(x).maximum(x, 0)
        return self.y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        dx = xp.not_equal(self.y, 0, out=xp.empty_like(gy))
        dx *= gy
        return dx


class LeakyReLU(Function):
    """y = x if x > 0 else a*x;  dx = gy if x > 0 else a*gy"""
    name = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        self.a = negative_slope

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.pos = x > 0
        return xp.where(self.pos, x, x * x.dtype.type(self.a))

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return xp.where(self.pos, gy, gy * gy.dtype.type(self.a))
