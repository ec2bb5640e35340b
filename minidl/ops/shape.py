"""Ops that move elements without changing them: reshape, permute, indexing, concatenate, stack."""
from minidl import backend
from minidl.autograd import Function, Tensor


def wrap_dim(dim, ndim):
    """``dim`` (negative counts from the end) as an axis in [0, ndim), PyTorch's rule: a dim outside
    [-ndim, ndim) is an IndexError, and a 0-d tensor takes 0 and -1 as if it had one axis (giving 0)."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim % n


class Reshape(Function):
    """y = x viewed with a new shape;  dx = gy viewed with x's shape"""
    name = "reshape"

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {tuple(x.shape)} ({x.size} elements) "
                             f"into shape {tuple(self.shape)}") from None

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class Permute(Function):
    """y = x with its axes reordered;  dx = gy with the inverse order"""
    name = "permute"

    def __init__(self, axes):
        self.axes = tuple(axes)

    def forward(self, x):
        if sorted(wrap_dim(a, x.ndim) for a in self.axes) != list(range(x.ndim)):
            raise ValueError(f"permute: {self.axes} is not a permutation of the {x.ndim} axes of shape {tuple(x.shape)}")
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a % len(self.axes)] = i
        return gy.transpose(inverse)


def _plain_index(idx):
    """Index with Tensors replaced by their arrays."""
    if isinstance(idx, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    return idx.data if isinstance(idx, Tensor) else idx


def _index_to_device(idx, device):
    """An index with its arrays (NumPy arrays, lists of ints or bools) moved to ``device``."""
    def move(i):
        if backend.is_array(i) or (isinstance(i, list) and i and not any(isinstance(e, slice) for e in i)):
            return backend.to_device(i, device)
        return i
    return tuple(move(i) for i in idx) if isinstance(idx, tuple) else move(idx)


def _is_basic(idx):
    """True for basic indexing (ints, slices, None, Ellipsis): no element is selected twice."""
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


class GetItem(Function):
    """y = x[idx];  dx = zeros with gy added at idx (scatter-add when an index repeats)"""
    name = "getitem"

    def __init__(self, idx):
        self.idx = _plain_index(idx)

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        if backend.device_of(x) == "cuda":  # index arrays (NumPy, lists) go to the GPU with the data
            self.idx = _index_to_device(self.idx, "cuda")
        try:
            return x[self.idx]
        except IndexError as e:
            raise IndexError(f"index {self.idx!r} is invalid for a tensor of shape {tuple(x.shape)}: {e}") from None

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        if _is_basic(self.idx):
            gx[self.idx] = gy
        else:
            backend.scatter_add(gx, self.idx, gy)
        return gx


class Concatenate(Function):
    """y = [x1, x2, ...] joined along ``axis``;  dxk = the slice of gy that xk filled"""
    name = "concatenate"

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = backend.get_array_module(*xs)
        if xs[0].ndim == 0:
            raise ValueError("concatenate: 0-d tensors have no axis to join along; stack them instead")
        self.axis = wrap_dim(self.axis, xs[0].ndim)
        self.sizes = [x.shape[self.axis] for x in xs]
        try:
            return xp.concatenate(xs, axis=self.axis)
        except ValueError:
            raise ValueError(f"concatenate along axis {self.axis}: shapes {[tuple(x.shape) for x in xs]} "
                             f"must agree except on that axis") from None

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        bounds = [0]
        for s in self.sizes:
            bounds.append(bounds[-1] + s)
        return tuple(xp.split(gy, bounds[1:-1], axis=self.axis))


class Stack(Function):
    """y = [x1, x2, ...] stacked along a new ``axis``;  dxk = gy taken at k on that axis"""
    name = "stack"

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = backend.get_array_module(*xs)
        self.axis = wrap_dim(self.axis, xs[0].ndim + 1)   # the new axis may also go after the last
        try:
            return xp.stack(xs, axis=self.axis)
        except ValueError:
            raise ValueError(f"stack: all shapes must be equal, got {[tuple(x.shape) for x in xs]}") from None

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return tuple(xp.moveaxis(gy, self.axis, 0))
