"""A stand-in for CuPy on the CPU, strict where CuPy is, to run minidl's GPU code paths without a GPU.

``install()`` puts this module where minidl.backend keeps CuPy: arrays of the subclass ``ndarray`` below are
then "on the GPU" (``device == 'cuda'``), every op takes its CuPy branch, and the kernels of
minidl/kernels/cuda.py run through tests/kernel_emulator.py.  It is NumPy underneath, so it says nothing about
CuPy's own API or speed; what it does check:

* mixing devices: a ufunc or array function given a NumPy (host) array next to a device array raises
  TypeError, as CuPy does; so does indexing a device array with a NumPy index array;
* NumPy called on device data (``np.something(device_array)``) raises TypeError: code must use ``xp``;
* host synchronisation: every read of device data by the host (``.get()``, ``.item()``, ``float()``,
  ``int()``, ``bool()``, ``tolist()``) is counted in ``SYNCS``, so a test can assert that a training step
  makes none.

``MINIDL_FAKE_CUPY=1 python -m pytest tests/`` runs the whole suite with it (tests/conftest.py installs it),
so every test parametrised by ``device`` also runs its 'cuda' case here.
"""
from __future__ import annotations

import sys
import types

import numpy as np

from tests import kernel_emulator as E

SYNCS = {"count": 0}


def _host(a):
    """A NumPy (host) array or scalar that CuPy would refuse next to device arrays (0-d arrays pass as scalars)."""
    return type(a) is np.ndarray and a.ndim > 0


def _unwrap(a):
    if isinstance(a, ndarray):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_unwrap(v) for v in a)
    return a


def _wrap(r):
    if type(r) is np.ndarray:
        return r.view(ndarray)
    if isinstance(r, np.generic):  # CuPy gives 0-d device arrays where NumPy gives scalars
        return np.asarray(r).view(ndarray)
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    return r


def _check_no_host(args, what):
    for a in args:
        if _host(a):
            raise TypeError(f"fake cupy: {what} got a NumPy array of shape {a.shape} next to device arrays "
                            f"(CuPy refuses to mix host and device arrays)")
        if isinstance(a, (list, tuple)):
            _check_no_host(a, what)


class MemoryPointer:
    """What a CuPy array's ``.data`` is: a pointer to device memory, not an array (nor a buffer)."""

    def __init__(self, ptr):
        self.ptr = ptr


class ndarray(np.ndarray):
    """A NumPy array that stands for one in GPU memory."""

    @property
    def data(self):  # as CuPy: a MemoryPointer, so code that takes x.data of an array by mistake is caught
        return MemoryPointer(self.__array_interface__["data"][0])

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check_no_host(inputs + (out or ()), f"{ufunc.__name__}.{method}")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        result = getattr(ufunc, method)(*(_unwrap(a) for a in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(f"fake cupy: numpy.{func.__name__} was called on device data; use the array module "
                        f"of the data (xp = backend.get_array_module(x))")

    def __getitem__(self, idx):
        _check_no_host(idx if isinstance(idx, tuple) else (idx,), "indexing")
        base, idx = self.view(np.ndarray), _unwrap(idx)
        try:
            return _wrap(np.ndarray.__getitem__(base, idx))
        except IndexError:  # CuPy wraps out-of-bounds integer array indices around instead of raising
            items = idx if isinstance(idx, tuple) else (idx,)
            if any(i is None or i is Ellipsis for i in items):
                raise
            wrapped = tuple(i % base.shape[k] if isinstance(i, np.ndarray) and i.dtype.kind in "iu" else i
                            for k, i in enumerate(items))
            return _wrap(np.ndarray.__getitem__(base, wrapped))

    def __setitem__(self, idx, value):
        _check_no_host((idx if isinstance(idx, tuple) else (idx,)) + (value,), "assignment by index")
        np.ndarray.__setitem__(self.view(np.ndarray), _unwrap(idx), _unwrap(value))

    # ---- reads by the host: counted
    def get(self, stream=None):
        SYNCS["count"] += 1
        return np.array(self.view(np.ndarray), copy=True)

    def item(self, *args):
        SYNCS["count"] += 1
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        SYNCS["count"] += 1
        return self.view(np.ndarray).tolist()

    def __float__(self):
        SYNCS["count"] += 1
        return float(self.view(np.ndarray))

    def __int__(self):
        SYNCS["count"] += 1
        return int(self.view(np.ndarray))

    def __bool__(self):
        SYNCS["count"] += 1
        return bool(self.view(np.ndarray))

    def __index__(self):
        SYNCS["count"] += 1
        return self.view(np.ndarray).__index__()


# ---------------------------------------------------------------- the module's functions
def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return np.array(_unwrap(a), dtype=dtype, copy=True).view(ndarray)  # a host-to-device copy


def array(a, dtype=None, copy=True):
    return np.array(_unwrap(a), dtype=dtype, copy=True).view(ndarray)


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def _wrapped(fn, name):
    def call(*args, **kwargs):
        _check_no_host(args, name)
        _check_no_host(tuple(kwargs.values()), name)
        return _wrap(fn(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()}))
    call.__name__ = name
    return call


def __getattr__(name):  # everything else: NumPy's function, with device arrays in and out
    obj = getattr(np, name)
    if isinstance(obj, np.ufunc) or not callable(obj) or isinstance(obj, type):
        return obj
    return _wrapped(obj, name)


class _StrideTricks:
    as_strided = staticmethod(_wrapped(np.lib.stride_tricks.as_strided, "as_strided"))


lib = types.SimpleNamespace(stride_tricks=_StrideTricks())


class _Generator:
    def __init__(self, seed=None):
        self._g = np.random.default_rng(seed)

    def __getattr__(self, name):
        return _wrapped(getattr(self._g, name), name)


random = types.SimpleNamespace(default_rng=_Generator, seed=lambda seed=None: None)


class _Stream:
    def synchronize(self):
        pass


cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                             get_current_stream=lambda: _Stream())


class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        self.spec = _spec(name, in_params, out_params, operation)

    def __call__(self, *args, size=None):
        _check_no_host(args, self.spec.name)
        return _wrap(E.run_elementwise(self.spec, *(_unwrap(a) for a in args)))


class ReductionKernel:
    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name="reduce", **kw):
        from minidl.kernels.cuda import ReductionSpec
        self.spec = ReductionSpec(name, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity)

    def __call__(self, *args, axis=None):
        _check_no_host(args, self.spec.name)
        return _wrap(E.run_reduction(self.spec, *(_unwrap(a) for a in args), axis=axis))


def _spec(name, in_params, out_params, body):
    from minidl.kernels.cuda import Spec
    return Spec(name, in_params, out_params, body)


def install(monkeypatch=None):
    """Make minidl.backend use this module as CuPy (with ``monkeypatch``, undone after the test)."""
    from minidl import backend
    me = sys.modules[__name__]
    import minidl.kernels.cuda as K
    if monkeypatch is not None:  # everything restored after the test, real CuPy's compiled kernels included
        monkeypatch.setattr(backend, "_cupy", me)
        monkeypatch.setattr(backend, "_CUPY_IMPORT_ERROR", None)
        monkeypatch.setattr(backend, "_generators", {})
        monkeypatch.setattr(K, "_compiled", {})
    else:
        backend._cupy, backend._CUPY_IMPORT_ERROR = me, None
        backend._generators.clear()
        K._compiled.clear()
    return me


def use_references(monkeypatch):
    """Swap the kernel launchers of minidl/kernels/cuda.py for their array-expression references (fast; the
    emulated kernels are exact but take seconds per real-sized layer): for whole runs on the stand-in."""
    import minidl.kernels.cuda as K
    for name in ("im2col", "col2im", "maxpool_forward", "maxpool_backward", "bn_stats", "bn_normalize", "bn_sums",
                 "bn_backward"):
        monkeypatch.setattr(K, name, getattr(K, name + "_ref"))

    def sgd_update(p, g, state, group):
        a = K.sgd_args(group)
        first = "momentum_buffer" not in state
        buf = state.setdefault("momentum_buffer", __getattr__("empty_like")(p)) if a["momentum"] else None
        K.sgd_ref(p, g, buf, first=first, **a)

    def adam_update(p, g, state, group):
        if not state:
            state.update(step=0, exp_avg=__getattr__("zeros_like")(p), exp_avg_sq=__getattr__("zeros_like")(p))
        state["step"] += 1
        K.adam_ref(p, g, state["exp_avg"], state["exp_avg_sq"], **K.adam_args(group, state["step"]))

    monkeypatch.setattr(K, "sgd_update", sgd_update)
    monkeypatch.setattr(K, "adam_update", adam_update)
