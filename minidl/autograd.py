"""The engine: ``Tensor``, ``Function`` and reverse-mode differentiation.

A ``Tensor`` wraps an array (NumPy or CuPy) and remembers the ``Function`` that
made it.  Each ``Function`` subclass implements ``forward`` and ``backward`` on
raw arrays, side by side (see ``minidl/ops``).  ``Tensor.backward`` walks the
graph in reverse topological order, iteratively (no recursion, so a chain of any
length works), sums gradients where a tensor is used twice, accumulates into
leaves' ``.grad`` and frees the graph unless ``retain_graph=True``.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from minidl import backend

# ----------------------------------------------------------------- grad mode
_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    prev = is_grad_enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = prev


def no_grad():
    """Context manager (and decorator) under which no graph is recorded."""
    return _grad_mode(False)


def enable_grad():
    return _grad_mode(True)


# ----------------------------------------------------------------- dtypes
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int64 = np.dtype("int64")
_default_dtype = float32


def set_default_dtype(dtype):
    global _default_dtype
    _default_dtype = np.dtype(dtype)


def get_default_dtype():
    return _default_dtype


def _as_array(data, dtype=None, device=None):
    """Turn user data into an array on ``device``.  Python floats and lists of floats
    become the default dtype (float32), as in ``torch.tensor``; arrays keep theirs."""
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_array(data):
        arr = data if dtype is None else data.astype(dtype, copy=False)
    elif isinstance(data, np.generic):  # a NumPy scalar (e.g. from a full reduction) keeps its dtype
        arr = np.asarray(data, dtype=dtype)
    else:
        arr = np.asarray(data)
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        elif arr.dtype.kind == "f":
            arr = arr.astype(_default_dtype, copy=False)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(int64, copy=False)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"a tensor holds numbers (bool, int, float or complex), got {type(data).__name__} data "
                        f"of dtype {arr.dtype}")
    if device is not None:
        arr = backend.to_device(arr, device)
    return arr


# ----------------------------------------------------------------- Function
OP_REGISTRY: dict[str, type] = {}
"""Every differentiable op, by name; the test suite checks each has a gradient check."""


class Function:
    """One differentiable operation.

    Subclasses implement ``forward(*arrays) -> array`` and
    ``backward(grad_output) -> grad_input or tuple of them`` (``None`` for an
    input that needs no gradient; ``self.needs_input_grad`` says which do).
    Non-tensor arguments (axis, stride, ...) go to ``__init__``.  Whatever
    backward needs is stored on ``self`` during forward.
    """

    name: str | None = None  # registry name; None for abstract helpers
    floating: tuple = ()     # names of the inputs that must be floating-point tensors (``check_floating``)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name:
            if name in OP_REGISTRY and OP_REGISTRY[name] is not cls:
                raise RuntimeError(f"two ops registered as {name!r}: {OP_REGISTRY[name]} and {cls}")
            OP_REGISTRY[name] = cls

    def __call__(self, *inputs) -> "Tensor":
        tensors = [x if isinstance(x, Tensor) else None for x in inputs]
        ref = next((t for t in tensors if t is not None), None)
        arrays = []
        for x, t in zip(inputs, tensors):
            if t is not None:
                arrays.append(t.data)
            else:  # a constant (Python scalar or array): take the dtype/device of the tensor inputs
                arrays.append(_constant_like(x, ref))
        if self.floating:
            check_floating(self, arrays)
        out = self.forward(*arrays)
        needs = tuple(t is not None and t.requires_grad for t in tensors)
        if is_grad_enabled() and any(needs):
            self.inputs = tensors
            self.needs_input_grad = needs
            result = Tensor(out, requires_grad=True, _ctx=self)
            _share_version_of_view(result, tensors)
            self._versions = tuple([0 if t is None else t._vc[0] for t in tensors] + [result._vc[0]])
            return result
        result = Tensor(out)
        _share_version_of_view(result, tensors)
        return result

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def __repr__(self):
        return f"<{type(self).__name__}>"


FLOATING = (float32, float64)
"""The dtypes that floating-point ops take: float16 is refused too (NumPy has no float16 GEMM and computes
it in software; convert with ``.float()``)."""


def check_floating(op, arrays):
    """PyTorch's rule for floating-point ops (convolution, pooling, normalisation, dropout, linear, exp, log,
    softmax, losses, mean, ...): the inputs named in ``op.floating`` are float32 or float64, all of one dtype.
    Integer, bool, complex and float16 input is a TypeError naming the dtypes, not a silent cast."""
    named = [(n, a) for n, a in zip(op.floating, arrays) if a is not None]
    for name, a in named:
        other = next(((n, b.dtype) for n, b in named if b.dtype != a.dtype), None)
        if a.dtype not in FLOATING or other is not None:
            against = f" but {other[0]} has dtype {other[1]}" if other is not None else ""
            raise TypeError(f"{op.name}: {name} has dtype {a.dtype}{against}; {op.name} takes float32 or float64 "
                            f"tensors of one dtype (convert with .float() or .double())")


# ----------------------------------------------------------------- version counters
# As PyTorch's: every in-place change of a tensor's memory adds one to its counter (views share it).  An op
# records its inputs' and its output's versions; backward refuses to run an op when one moved and the op kept
# that tensor's memory for backward.  Which memory an op keeps is read off the arrays it stored on itself (no
# op declares them), by identity of the memory's owner, and only once a version has moved: no array is copied
# or compared, and the usual step costs one small tuple per op.

def _array_types() -> tuple:
    return (np.ndarray,) if backend._cupy is None else (np.ndarray, backend._cupy.ndarray)


def _memory_owner(a, arrays: tuple):
    """The array that owns ``a``'s memory (``a`` itself, or the base at the end of its chain of views)."""
    b = a.base
    while isinstance(b, arrays):
        a, b = b, b.base
    return a


def _share_version_of_view(result: "Tensor", tensors):
    """An op's output that is a view of (or is) an input's array shares that input's version counter."""
    out = result.data
    if out.base is None:
        for t in tensors:
            if t is not None and t.data is out:
                result._vc = t._vc
                return
        return
    arrays = _array_types()
    owner = _memory_owner(out, arrays)
    for t in tensors:
        if t is not None and _memory_owner(t.data, arrays) is owner:
            result._vc = t._vc
            return


def _kept_memory(fn, arrays: tuple) -> set:
    """ids of the memory owners of the arrays an op stored for backward: its attributes, the items of tuples,
    lists and dicts among them, and the attributes of minidl's own helper objects (e.g. conv's Columns) one
    level down."""
    kept = set()
    for key, v in fn.__dict__.items():
        if isinstance(v, arrays):
            kept.add(id(_memory_owner(v, arrays)))
        elif isinstance(v, (tuple, list, dict)):
            if key != "inputs":
                items = v.values() if isinstance(v, dict) else v
                kept.update(id(_memory_owner(a, arrays)) for a in items if isinstance(a, arrays))
        elif hasattr(v, "__dict__") and type(v).__module__.startswith("minidl.") \
                and not isinstance(v, (Tensor, Function)):
            kept.update(id(_memory_owner(a, arrays)) for a in vars(v).values() if isinstance(a, arrays))
    return kept


def _check_versions(t: "Tensor", ctx: Function):
    """Raise if a tensor whose memory ``ctx`` (the op that made ``t``) kept was changed in place since."""
    versions = ctx.__dict__.get("_versions")
    if versions is None:  # a node built by hand, not by Function.__call__
        return
    for x, v in zip(ctx.inputs, versions):
        if x is not None and x._vc[0] != v:
            break
    else:
        if t._vc[0] == versions[-1]:
            return  # the usual case: nothing moved
    moved = [(f"input {i}", x, v) for i, (x, v) in enumerate(zip(ctx.inputs, versions))
             if x is not None and x._vc[0] != v]
    if t._vc[0] != versions[-1]:
        moved.append(("the output", t, versions[-1]))
    arrays = _array_types()
    kept = _kept_memory(ctx, arrays)
    for what, tensor, version in moved:
        if id(_memory_owner(tensor.data, arrays)) in kept:
            raise RuntimeError(
                f"one of the tensors needed for gradient computation has been modified by an in-place operation: "
                f"{what} of {ctx.name or type(ctx).__name__}, a {tensor.dtype} tensor of shape {tuple(tensor.shape)}"
                f"{' (a leaf that requires grad)' if tensor.is_leaf and tensor.requires_grad else ''}, is at "
                f"version {tensor._vc[0]}; expected version {version} instead. Change it out of place "
                f"(x = x - 1 rather than x -= 1), or compute the forward again after the change.")


def _constant_like(x, ref):
    """A constant operand as an array matching the reference tensor's dtype and device.
    Python scalars take the tensor's dtype (a scalar never upcasts float32)."""
    if ref is None:
        return _as_array(x)
    xp = backend.get_array_module(ref.data)
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        dtype = ref.data.dtype if (ref.data.dtype.kind == "f" or isinstance(x, (bool, int))) else None
        if xp is not np:  # a fill kernel on the GPU's queue, not a host-to-device copy per scalar
            return xp.full((), x, dtype=dtype)
        return xp.asarray(x, dtype=dtype)
    if backend.is_array(x) or isinstance(x, np.generic):
        return xp.asarray(x)
    return xp.asarray(_as_array(x))


# ----------------------------------------------------------------- Tensor
class HookHandle:
    """Returned when a hook is registered (on a tensor, or a module's forward); ``remove()`` unregisters it."""
    _next_id = 0

    def __init__(self, hooks: dict):
        self.hooks, self.id = hooks, HookHandle._next_id
        HookHandle._next_id += 1

    def remove(self):
        self.hooks.pop(self.id, None)


class Tensor:
    """An n-dimensional array that can record the operations applied to it."""

    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__
    _post_grad_hooks: dict = {}  # per leaf once a hook is registered (see register_post_accumulate_grad_hook)

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None, _ctx: Function | None = None):
        self.data = _as_array(data, dtype, device)
        self.grad: Tensor | None = None
        self._ctx = _ctx
        self._freed = False
        self._retains_grad = False
        self._vc = [0]  # the version counter: in-place changes so far (shared with views of the same memory)
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and self.data.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.data.dtype}")

    # ---- basic properties
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor's memory has had (PyTorch's ``_version``)."""
        return self._vc[0]

    def _bump_version(self):
        """Record an in-place change of ``self.data``'s memory: library code that writes into ``.data``
        directly (optimizers, init, ``load_state_dict``) calls this."""
        self._vc[0] += 1

    @property
    def xp(self):
        return backend.get_array_module(self.data)

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), precision=4, separator=", ", prefix="tensor(")
        extra = "" if self.dtype == float32 else f", dtype={self.dtype}"
        extra += "" if self.device == "cpu" else f", device='{self.device}'"
        extra += ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}{extra})"

    # ---- conversion
    def numpy(self) -> np.ndarray:
        """A NumPy array of the data (a copy from the GPU; the array itself on the CPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def to(self, device=None, dtype=None) -> "Tensor":
        """A copy on ``device`` and/or in ``dtype`` (``self`` when nothing changes).
        The copy is differentiable: gradients flow back to ``self``."""
        if isinstance(device, (np.dtype, type)) or (isinstance(device, str) and device not in ("cpu",) and not device.startswith("cuda")):
            device, dtype = None, device
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = ops.cast(out, np.dtype(dtype))
        if device is not None and backend.check_device(device) != self.device:
            out = ops.to_device(out, backend.check_device(device))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=float32)

    def double(self):
        return self.to(dtype=float64)

    def astype(self, dtype):
        return self.to(dtype=dtype)

    # ---- graph
    def detach(self) -> "Tensor":
        """The same data (and version counter), cut from the graph."""
        out = Tensor(self.data)
        out._vc = self._vc
        return out

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only change leaf tensors; use detach() first")
        self.requires_grad = flag
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        self._retains_grad = True

    def zero_grad(self):
        self.grad = None

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` on this leaf each time a backward has accumulated its ``.grad`` (PyTorch's name):
        its gradient for that backward is then complete.  Returns a handle whose ``remove()`` unregisters it."""
        if not self.is_leaf:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        if "_post_grad_hooks" not in self.__dict__:
            self._post_grad_hooks = {}
        handle = HookHandle(self._post_grad_hooks)
        self._post_grad_hooks[handle.id] = hook
        return handle

    def backward(self, gradient=None, retain_graph: bool = False):
        """Reverse-mode differentiation of this tensor with respect to every leaf
        that requires a gradient.  ``gradient`` is dL/dself; it may be omitted only
        for a tensor with one element."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation has requires_grad=True)")
        xp = self.xp
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a tensor with one element, got shape "
                                   f"{self.shape}; pass gradient= of that shape (e.g. loss.sum() first)")
            g = xp.ones_like(self.data)
        else:
            g = _as_array(gradient, dtype=self.dtype)
            g = xp.asarray(g)
            if g.shape != self.shape:
                raise ValueError(f"backward(): gradient has shape {g.shape}, expected the tensor's shape {self.shape}")
        _run_backward(self, g, retain_graph)

    # ---- operators (defined in minidl/ops)
    def __add__(self, o): return ops.add(self, o)
    def __radd__(self, o): return ops.add(o, self)
    def __sub__(self, o): return ops.sub(self, o)
    def __rsub__(self, o): return ops.sub(o, self)
    def __mul__(self, o): return ops.mul(self, o)
    def __rmul__(self, o): return ops.mul(o, self)
    def __truediv__(self, o): return ops.div(self, o)
    def __rtruediv__(self, o): return ops.div(o, self)
    def __neg__(self): return ops.neg(self)
    def __pow__(self, o): return ops.pow(self, o)
    def __rpow__(self, o): return ops.pow(o, self)
    def __matmul__(self, o): return ops.matmul(self, o)
    def __rmatmul__(self, o): return ops.matmul(o, self)
    def __getitem__(self, idx): return ops.getitem(self, idx)
    def __abs__(self): return ops.abs(self)
    def __eq__(self, o): return ops.eq(self, o)  # noqa: E704
    def __ne__(self, o): return ops.ne(self, o)
    def __lt__(self, o): return ops.lt(self, o)
    def __le__(self, o): return ops.le(self, o)
    def __gt__(self, o): return ops.gt(self, o)
    def __ge__(self, o): return ops.ge(self, o)
    __hash__ = object.__hash__

    def __iadd__(self, o):
        self._check_inplace()
        self.data += _constant_like(o.data if isinstance(o, Tensor) else o, self)
        self._bump_version()
        return self

    def __isub__(self, o):
        self._check_inplace()
        self.data -= _constant_like(o.data if isinstance(o, Tensor) else o, self)
        self._bump_version()
        return self

    def __imul__(self, o):
        self._check_inplace()
        self.data *= _constant_like(o.data if isinstance(o, Tensor) else o, self)
        self._bump_version()
        return self

    def _check_inplace(self):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("in-place operation on a tensor that requires grad; wrap it in minidl.no_grad()")

    @property
    def T(self): return ops.transpose(self)

    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return ops.min(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, correction=1): return ops.var(self, axis, keepdims, correction)
    def argmax(self, axis=None, keepdims=False): return Tensor(self.data.argmax(axis=axis, keepdims=keepdims))
    def argmin(self, axis=None, keepdims=False): return Tensor(self.data.argmin(axis=axis, keepdims=keepdims))
    def reshape(self, *shape): return ops.reshape(self, *shape)
    def view(self, *shape): return ops.reshape(self, *shape)
    def transpose(self, *axes): return ops.transpose(self, *axes)
    def permute(self, *axes): return ops.permute(self, *axes)
    def flatten(self, start_dim=0, end_dim=-1): return ops.flatten(self, start_dim, end_dim)
    def squeeze(self, axis=None): return ops.squeeze(self, axis)
    def unsqueeze(self, axis): return ops.unsqueeze(self, axis)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def abs(self): return ops.abs(self)
    def clip(self, min=None, max=None): return ops.clip(self, min, max)
    clamp = clip
    def tanh(self): return ops.tanh(self)
    def sigmoid(self): return ops.sigmoid(self)
    def relu(self): return ops.relu(self)
    def softmax(self, axis=-1): return ops.softmax(self, axis)
    def log_softmax(self, axis=-1): return ops.log_softmax(self, axis)


def _run_backward(root: Tensor, grad, retain_graph: bool):
    # 1. reverse topological order by an iterative depth-first search
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        ctx = t._ctx
        if ctx is not None:
            if t._freed:
                raise RuntimeError("Trying to backward through the graph a second time: its saved arrays were "
                                   "freed after the first backward; pass retain_graph=True to the first call")
            _check_versions(t, ctx)  # for the whole graph before any gradient is summed
            for inp in ctx.inputs:
                if inp is not None and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    # 2. propagate, outputs first; sum gradients of tensors used more than once
    grads = {id(root): grad}
    for t in reversed(order):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        ctx = t._ctx
        if ctx is None or t._retains_grad:
            if t.grad is None:
                t.grad = Tensor(g)
            else:
                t.grad.data = t.grad.data + g
            if ctx is None:
                for hook in tuple(t._post_grad_hooks.values()):
                    hook(t)
                continue
        gxs = ctx.backward(g)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        for inp, gx, need in zip(ctx.inputs, gxs, ctx.needs_input_grad):
            if not need or gx is None:
                continue
            if gx.shape != inp.data.shape:
                raise RuntimeError(f"{type(ctx).__name__}.backward returned a gradient of shape {gx.shape} "
                                   f"for an input of shape {inp.data.shape}")
            if gx.dtype != inp.data.dtype:
                gx = gx.astype(inp.data.dtype)
            key = id(inp)
            grads[key] = grads[key] + gx if key in grads else gx
        if not retain_graph:  # drop saved arrays and links to inputs: memory comes back now
            ctx.__dict__ = {"inputs": None, "needs_input_grad": ctx.needs_input_grad}
            t._freed = True


def tensor(data, dtype=None, requires_grad=False, device=None) -> Tensor:
    """Make a tensor from data (lists, scalars, NumPy/CuPy arrays, Tensors), as ``torch.tensor``: the data
    is always copied, so changing the array afterwards changes neither the tensor nor its gradients
    (``from_numpy`` shares instead)."""
    source = data.data if isinstance(data, Tensor) else data
    out = Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
    if out.data is source:  # no conversion made a new array
        out.data = out.data.copy()
    return out


def from_numpy(array) -> Tensor:
    """A tensor sharing ``array``'s memory (a NumPy array, kept in its dtype), as ``torch.from_numpy``:
    changes to one show in the other."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


from minidl import ops  # noqa: E402  (the ops need Tensor and Function, defined above)
