"""Fast kernels for the hot ops, and the one switch between them and the textbook references.

Every op in minidl/ops is written the textbook way (conv2d: pad, im2col, one GEMM; backward dW = col^T gy,
db = sum gy, dx = col2im(gy W^T)).  For conv2d, max_pool2d, avg_pool2d, batch_norm and batch_norm_eval the
same arrays can instead go to a fast kernel: ``cpu`` (NumPy: NHWC memory, chunked columns, tiled pooling,
einsum sums) or ``cuda`` (CuPy: CUDA kernels).  A kernel is a pair of plain functions of arrays,
``<op>_forward(...) -> (y, saved)`` and ``<op>_backward(gy, saved, needs)``, and gives the reference's
numbers (tests/test_kernels.py runs the whole case suite through both).

The op asks ``choose(op_name, x)`` once, in its forward (Chainer's forward_cpu/forward_gpu split), and its
backward follows that choice.  ``set_ops("reference")`` (or ``MINIDL_OPS=reference`` in the environment)
runs every op on its reference (and SGD and Adam on their array expressions rather than ``cuda``'s fused
updates); ``python -m benchmarks.throughput --ops reference`` shows what the fast
kernels buy (benchmarks/README.md).
"""
from __future__ import annotations

import os

from minidl import backend
from minidl.kernels import cpu, cuda

MODES = ("fast", "reference")
OPS = ("conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "batch_norm_eval")
"""The ops that have fast kernels (in both ``cpu`` and ``cuda``)."""


def _check_mode(mode, where):
    if mode not in MODES:
        raise ValueError(f"{where} must be 'fast' (the default) or 'reference', got {mode!r}")
    return mode


_reference = set(OPS) if _check_mode(os.environ.get("MINIDL_OPS", "fast"), "MINIDL_OPS") == "reference" else set()
"""The ops that run on their references now."""


def set_ops(mode: str, ops=None):
    """Run the ops on their fast kernels ("fast", the default) or on their textbook references ("reference").
    With ``ops`` (names from ``OPS``), only those change: ``set_ops("reference", ["max_pool2d"])`` runs max
    pooling on its reference and leaves the others as they were.  An op already in a graph keeps the
    implementation it ran forward with."""
    _check_mode(mode, "set_ops(mode)")
    names = set(OPS) if ops is None else set([ops] if isinstance(ops, str) else ops)
    unknown = sorted(names - set(OPS))
    if unknown:
        raise ValueError(f"set_ops: no fast kernels for {unknown}; the ops that have them are {list(OPS)}")
    if mode == "reference":
        _reference.update(names)
    else:
        _reference.difference_update(names)


def get_ops() -> str:
    """"fast", "reference", or "mixed" (after ``set_ops`` for some ops only)."""
    return "reference" if _reference == set(OPS) else "mixed" if _reference else "fast"


def choose(op_name: str, x):
    """The fast kernel module for op ``op_name`` on data ``x`` (``cpu`` for a NumPy array, ``cuda`` for a CuPy
    one), or None where the op runs its reference."""
    if op_name in _reference:
        return None
    return cuda if backend.device_of(x) == "cuda" else cpu
