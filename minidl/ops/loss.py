"""Softmax, log-softmax and the losses: cross-entropy (fused with log-softmax), NLL, MSE."""
from minidl import backend
from minidl.autograd import Function
from minidl.ops.reduce import normalize_axes

REDUCTIONS = ("mean", "sum", "none")


def _log_softmax(x, axis):
    """log softmax(x) = x - max - log sum exp(x - max): no overflow for large logits."""
    xp = backend.get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


class Softmax(Function):
    """y_i = e^{x_i} / sum_j e^{x_j};  dx = y * (gy - sum_j gy_j y_j)"""
    name = "softmax"
    floating = ("input",)

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.axis = normalize_axes(self.axis, x.ndim)   # (axis,), or () for a 0-d x
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy):
        return self.y * (gy - (gy * self.y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - log sum_j e^{x_j};  dx = gy - softmax(x) * sum_j gy_j"""
    name = "log_softmax"
    floating = ("input",)

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.axis = normalize_axes(self.axis, x.ndim)   # (axis,), or () for a 0-d x
        self.y = _log_softmax(x, self.axis)
        return self.y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


def _check_targets(x, t, what):
    if x.ndim != 2:
        raise ValueError(f"{what}: expected input of shape (N, C), got {tuple(x.shape)}")
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"{what}: expected targets of shape ({x.shape[0]},) (one class index per row), "
                         f"got {tuple(t.shape)}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{what}: targets must be integer class indices, got dtype {t.dtype}")
    if t.size and backend.device_of(t) == "cpu" and (int(t.min()) < 0 or int(t.max()) >= x.shape[1]):
        raise ValueError(f"{what}: target class indices must lie in [0, {x.shape[1]}), "
                         f"got values from {int(t.min())} to {int(t.max())}")


def _nan_where_invalid(loss, t, c):
    """The per-sample loss with NaN where the class index t lies outside [0, c).  On a GPU this replaces the
    range check of ``_check_targets``, which would stop the host every step (reading t.min() and t.max()):
    a bad target then shows as a NaN loss (CuPy's indexing wraps it around instead of raising)."""
    if backend.device_of(t) == "cpu":  # checked (and raised on) by _check_targets
        return loss
    return nan_where_invalid(loss, t, c)


def nan_where_invalid(loss, t, c):
    xp = backend.get_array_module(loss)
    return xp.where((t >= 0) & (t < c), loss, loss.dtype.type("nan"))


def _reduce(loss, reduction, n):
    if reduction == "mean" and n == 0:   # the mean of no losses: NaN, as PyTorch (without NumPy's 0/0 warning)
        return backend.get_array_module(loss).full((), float("nan"), dtype=loss.dtype)
    if reduction == "mean":
        return loss.sum() / loss.dtype.type(n)
    if reduction == "sum":
        return loss.sum()
    return loss


def _reduction_grad(gy, reduction, n, shape):
    """dL/dloss_i for each sample, from the gradient of the reduced loss."""
    xp = backend.get_array_module(gy)
    if reduction == "none":
        return gy.reshape(shape)
    scale = gy / gy.dtype.type(n) if reduction == "mean" and n else gy
    return xp.broadcast_to(scale, shape)


class CrossEntropy(Function):
    """Cross-entropy of logits x (N, C) against class indices t (N,), with an optional
    label smoothing e:  loss_n = -(1-e) logp[n, t_n] - (e/C) sum_c logp[n, c],  logp = log_softmax(x).
    dx = (softmax(x) - (1-e) onehot(t) - e/C) * dloss_n.  Targets get no gradient."""
    name = "cross_entropy"
    floating = ("input",)

    def __init__(self, reduction="mean", label_smoothing=0.0):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
        self.reduction, self.eps = reduction, label_smoothing

    def forward(self, x, t):
        _check_targets(x, t, "cross_entropy")
        xp = backend.get_array_module(x)
        self.t = t
        self.logp = _log_softmax(x, 1)
        n, c = x.shape
        loss = -self.logp[xp.arange(n), t]
        if self.eps:
            loss = loss * x.dtype.type(1 - self.eps) - self.logp.sum(axis=1) * x.dtype.type(self.eps / c)
        return _reduce(_nan_where_invalid(loss, t, c), self.reduction, n)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        n, c = self.logp.shape
        g = xp.exp(self.logp)
        g[xp.arange(n), self.t] -= g.dtype.type(1 - self.eps)
        if self.eps:
            g -= g.dtype.type(self.eps / c)
        g *= _reduction_grad(gy, self.reduction, n, (n,))[:, None]
        return g, None


class NLLLoss(Function):
    """Negative log-likelihood of log-probabilities x (N, C) at class indices t (N,):
    loss_n = -x[n, t_n];  dx[n, t_n] = -dloss_n, zero elsewhere."""
    name = "nll_loss"
    floating = ("input",)

    def __init__(self, reduction="mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, x, t):
        _check_targets(x, t, "nll_loss")
        xp = backend.get_array_module(x)
        self.t, self.x_shape = t, x.shape
        loss = _nan_where_invalid(-x[xp.arange(x.shape[0]), t], t, x.shape[1])
        return _reduce(loss, self.reduction, x.shape[0])

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        n = self.x_shape[0]
        g = xp.zeros(self.x_shape, dtype=gy.dtype)
        g[xp.arange(n), self.t] = -_reduction_grad(gy, self.reduction, n, (n,))
        return g, None


class MSELoss(Function):
    """loss = (x - y)^2, reduced;  dx = 2 (x - y) dloss,  dy = -dx"""
    name = "mse_loss"
    floating = ("input", "target")

    def __init__(self, reduction="mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, x, y):
        if x.shape != y.shape:
            raise ValueError(f"mse_loss: input shape {tuple(x.shape)} and target shape {tuple(y.shape)} must be equal")
        self.diff = x - y
        return _reduce(self.diff * self.diff, self.reduction, x.size)

    def backward(self, gy):
        g = _reduction_grad(gy, self.reduction, self.diff.size, self.diff.shape) * (2 * self.diff)
        return g, (-g if self.needs_input_grad[1] else None)
