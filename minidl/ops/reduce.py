"""Reductions over axes: sum, mean, max, min, var (axis = int, tuple or None; keepdims)."""
from minidl import backend
from minidl.autograd import Function
from minidl.ops.shape import wrap_dim


def normalize_axes(axis, ndim):
    """``axis`` (None, int or tuple, negative allowed: ``wrap_dim``) as a sorted tuple of non-negative axes;
    an axis named twice is refused, as in PyTorch.  A 0-d tensor takes axis 0 (or -1) and has no axis to
    reduce: ()."""
    if axis is None:
        return tuple(range(ndim))
    axes = [wrap_dim(a, ndim) for a in ((axis,) if isinstance(axis, int) else axis)]
    for a in axes:
        if axes.count(a) > 1:
            raise ValueError(f"axis={axis}: axis {a} of the {ndim}-d tensor appears more than once")
    return tuple(sorted(axes)) if ndim else ()


class _Reduce(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        self.axes = normalize_axes(self.axis, x.ndim)
        return self.reduce(x, self.axes)

    def expand(self, g):
        """Put the reduced axes back (as size 1) so ``g`` broadcasts against x."""
        if not self.keepdims:
            shape = list(self.x_shape)
            for a in self.axes:
                shape[a] = 1
            g = g.reshape(shape)
        return g


class Sum(_Reduce):
    """y = sum_i x_i;  dx_i = gy"""
    name = "sum"

    def reduce(self, x, axes):
        return x.sum(axis=axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return xp.broadcast_to(self.expand(gy), self.x_shape)


class Mean(_Reduce):
    """y = (1/n) sum_i x_i;  dx_i = gy / n"""
    name = "mean"
    floating = ("input",)

    def reduce(self, x, axes):
        self.n = 1
        for a in axes:
            self.n *= x.shape[a]
        return x.mean(axis=axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return xp.broadcast_to(self.expand(gy) / gy.dtype.type(self.n), self.x_shape)


class Max(_Reduce):
    """y = max_i x_i;  dx_i = gy / (number of maxima) where x_i is a maximum, else 0.
    A NaN is the maximum where there is one (as in PyTorch: max() shares gy among the NaNs)."""
    name = "max"

    def reduce(self, x, axes):
        if x.size == 0:
            raise ValueError("max of an empty tensor")
        self.x = x
        self.y = x.max(axis=axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape([s for i, s in enumerate(x.shape) if i not in axes])

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        mask = (self.x == self.y) | (xp.isnan(self.x) & xp.isnan(self.y))
        count = mask.sum(axis=self.axes, keepdims=True).astype(gy.dtype)
        return mask * (self.expand(gy) / count)


class Min(Max):
    """y = min_i x_i;  dx_i = gy / (number of minima) where x_i is a minimum (or a NaN, as for max), else 0"""
    name = "min"

    def reduce(self, x, axes):
        if x.size == 0:
            raise ValueError("min of an empty tensor")
        self.x = x
        self.y = x.min(axis=axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape([s for i, s in enumerate(x.shape) if i not in axes])


class Var(_Reduce):
    """y = sum_i (x_i - mean)^2 / (n - correction);  dx_i = gy * 2 (x_i - mean) / (n - correction).
    ``correction=1`` (the default, as in PyTorch) is the unbiased estimate; 0 the population variance."""
    name = "var"
    floating = ("input",)

    def __init__(self, axis=None, keepdims=False, correction=1):
        super().__init__(axis, keepdims)
        self.correction = correction

    def reduce(self, x, axes):
        n = 1
        for a in axes:
            n *= x.shape[a]
        self.denom = x.dtype.type(max(n - self.correction, 0))
        self.centered = x - x.mean(axis=axes, keepdims=True)
        return (self.centered * self.centered).sum(axis=axes, keepdims=self.keepdims) / self.denom

    def backward(self, gy):
        return self.expand(gy) * self.centered * (2 / self.denom)
