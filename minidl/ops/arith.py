"""Arithmetic with broadcasting, matrix products, casts and comparisons.

Broadcasting rule for every backward here: the gradient of an input that was
broadcast is summed over the broadcast axes (``unbroadcast``).
"""
from minidl import backend
from minidl.autograd import Function, Tensor, _constant_like


def unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``: over leading axes and over axes where ``shape`` has 1."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _check_broadcast(a, b, what):
    try:
        return backend.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together") from None


def gemm(a, b):
    """a @ b for matrices a (m, k) and b (k, n), computed as (b^T a^T)^T when m < n: the same numbers,
    returned as a transposed (F-ordered) view.  Why: multi-threaded OpenBLAS runs the wide orientation (few
    rows, many columns, long k) several times slower than the tall one whenever another process wants a core
    (``python -m benchmarks.gemm_orientation``)."""
    if a.shape[0] < b.shape[1]:
        return (b.T @ a.T).T
    return a @ b


class _Binary(Function):
    """Elementwise op of two broadcastable inputs; keeps their shapes for ``unbroadcast``."""

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        try:
            return self.compute(a, b)
        except ValueError:
            _check_broadcast(a, b, self.name)
            raise


class Add(_Binary):
    """y = a + b;  da = gy,  db = gy"""
    name = "add"

    def compute(self, a, b):
        return a + b

    def backward(self, gy):
        return unbroadcast(gy, self.a_shape), unbroadcast(gy, self.b_shape)


class Sub(_Binary):
    """y = a - b;  da = gy,  db = -gy"""
    name = "sub"

    def compute(self, a, b):
        return a - b

    def backward(self, gy):
        gb = unbroadcast(-gy, self.b_shape) if self.needs_input_grad[1] else None
        return unbroadcast(gy, self.a_shape), gb


class Mul(_Binary):
    """y = a * b;  da = gy * b,  db = gy * a"""
    name = "mul"

    def compute(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        ga = unbroadcast(gy * self.b, self.a_shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(gy * self.a, self.b_shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(_Binary):
    """y = a / b;  da = gy / b,  db = -gy * a / b^2"""
    name = "div"

    def compute(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = unbroadcast(gy / self.b, self.a_shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(-gy * self.a / (self.b * self.b), self.b_shape) if self.needs_input_grad[1] else None
        return ga, gb


class Pow(_Binary):
    """y = a ** b;  da = gy * b * a^(b-1),  db = gy * y * ln a,
    each 0 where its product would be 0 times an infinity, as in PyTorch: da where b = 0 (a^-1 at a = 0),
    db where a = 0 and b >= 0 (ln 0 = -inf)."""
    name = "pow"

    def compute(self, a, b):
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        a, b = self.a, self.b
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = unbroadcast(gy * xp.where(b == 0, 0, b * a ** (b - 1)), self.a_shape)
        if self.needs_input_grad[1]:
            gb = unbroadcast(gy * xp.where((a == 0) & (b >= 0), 0, self.y * xp.log(a)), self.b_shape)
        return ga, gb


class Neg(Function):
    """y = -x;  dx = -gy"""
    name = "neg"

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class MatMul(Function):
    """y = a @ b (batched, broadcasting leading axes; 1-D operands as in NumPy);
    da = gy @ b^T,  db = a^T @ gy, summed over broadcast batch axes."""
    name = "matmul"

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned "
                             f"(last axis of the first must equal {'the second-to-last' if b.ndim > 1 else 'the only'} "
                             f"axis of the second)")
        self.a, self.b = a, b
        if a.ndim == 2 and b.ndim == 2:
            return gemm(a, b)
        try:
            return a @ b
        except ValueError:
            raise ValueError(f"matmul: the batch axes of shapes {tuple(a.shape)} and {tuple(b.shape)} "
                             f"cannot be broadcast together") from None

    def backward(self, gy):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a          # (..., m, k): a 1-D operand as a matrix
        b2 = b[:, None] if b.ndim == 1 else b          # (..., k, n)
        batch = backend.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        gy = gy.reshape(batch + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = gemm(gy, b2.T) if gy.ndim == 2 and b2.ndim == 2 else gy @ b2.swapaxes(-1, -2)
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = unbroadcast(a2.swapaxes(-1, -2) @ gy, b2.shape).reshape(b.shape)
        return ga, gb


class Cast(Function):
    """y = x as another dtype;  dx = gy as x's dtype"""
    name = "cast"

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.x_dtype)


class ToDevice(Function):
    """y = x copied to another device;  dx = gy copied back"""
    name = "to_device"

    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.x_device = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy):
        return backend.to_device(gy, self.x_device)


def compare(op, a, b):
    """Elementwise comparison: a boolean tensor, outside the graph (no gradient)."""
    x = a.data if isinstance(a, Tensor) else a
    ref = a if isinstance(a, Tensor) else b
    y = b.data if isinstance(b, Tensor) else _constant_like(b, ref)
    if not isinstance(a, Tensor):
        x = _constant_like(a, ref)
    try:
        return Tensor(op(x, y))
    except ValueError:
        _check_broadcast(x, y, "comparison")
        raise
