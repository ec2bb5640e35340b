"""Which array module holds the data: NumPy on the CPU, CuPy on an NVIDIA GPU.

Everything that does array math on tensor data asks this module for ``xp``
(``get_array_module``) instead of importing numpy, so the same code runs on both
backends.  This is the only module that imports CuPy.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

import numpy as np

try:  # CuPy is optional: pip install "minidl[gpu]"
    import cupy as _cupy
except Exception as _e:  # ImportError, or a broken CUDA install
    _cupy = None
    _CUPY_IMPORT_ERROR = _e
else:
    _CUPY_IMPORT_ERROR = None

DEVICES = ("cpu", "cuda")
_CUPY_INSTALL_HINT = ('install it with `pip install "minidl[gpu]"` '
                      "(or the cupy-cudaXXx wheel that matches your CUDA version)")


def cupy_status() -> str | None:
    """None when CuPy can run on a GPU here, else a sentence saying what is missing."""
    if _cupy is None:
        return f"CuPy is not installed ({_CUPY_IMPORT_ERROR}); {_CUPY_INSTALL_HINT}"
    try:
        n = _cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        return f"CuPy is installed but no CUDA GPU is usable ({e})"
    if n == 0:
        return "CuPy is installed but no CUDA GPU is visible"
    return None


def is_cuda_available() -> bool:
    return cupy_status() is None


def require_cuda():
    """Return the cupy module, or raise a RuntimeError that says what is missing."""
    why = cupy_status()
    if why is not None:
        raise RuntimeError(f"device 'cuda' was requested but {why}")
    return _cupy


def check_device(device) -> str:
    """Normalise a device name ('cpu', 'cuda', 'cuda:0', None) to 'cpu' or 'cuda'."""
    if device is None:
        return "cpu"
    name = str(device)
    if name.startswith("cuda"):
        require_cuda()
        return "cuda"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def get_array_module(*arrays):
    """``numpy`` or ``cupy``: cupy if any argument is a CuPy array (Chainer's idiom)."""
    if _cupy is not None:
        for a in arrays:
            # an array itself, or a Tensor's .data (an array's own .data is its buffer: a memoryview or a
            # CuPy MemoryPointer, so it must not replace the array)
            if isinstance(a, _cupy.ndarray) or isinstance(getattr(a, "data", None), _cupy.ndarray):
                return _cupy
    return np


def nccl():
    """CuPy's NCCL module (``cupy.cuda.nccl``), or a RuntimeError that says what is missing."""
    cupy = require_cuda()
    try:
        from cupy.cuda import nccl as _nccl
    except Exception as e:  # CuPy built without NCCL
        raise RuntimeError(f"CuPy cannot load NCCL ({e}); install the NCCL wheel that matches your CUDA "
                           f"(`pip install nvidia-nccl-cu12`, or -cu13)") from None
    if not getattr(_nccl, "available", True):
        raise RuntimeError("CuPy was built without NCCL; install the NCCL wheel that matches your CUDA "
                           "(`pip install nvidia-nccl-cu12`, or -cu13)")
    return cupy, _nccl


def xp_for(device: str):
    """The array module of a device name."""
    return require_cuda() if check_device(device) == "cuda" else np


def device_of(array) -> str:
    return "cuda" if _cupy is not None and isinstance(array, _cupy.ndarray) else "cpu"


def to_device(array, device: str):
    """Move an array to 'cpu' or 'cuda' (no copy when it is already there)."""
    device = check_device(device)
    if device == "cuda":
        return require_cuda().asarray(array)
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return array.get()
    return np.asarray(array)


def to_numpy(array) -> np.ndarray:
    """A NumPy array of ``array`` wherever it lives (copies from the GPU)."""
    return to_device(array, "cpu")


def is_array(obj) -> bool:
    return isinstance(obj, np.ndarray) or (_cupy is not None and isinstance(obj, _cupy.ndarray))


def scatter_add(a, index, values):
    """``a[index] += values`` in place, summing over repeated indices (``numpy.add.at``; on CuPy its
    ``add.at`` (CuPy >= 12) or else ``cupyx.scatter_add``, which behave the same)."""
    if isinstance(a, np.ndarray):
        np.add.at(a, index, values)
        return
    at = getattr(_cupy.add, "at", None)
    if at is not None:
        at(a, index, values)
    else:
        import cupyx
        cupyx.scatter_add(a, index, values)


def synchronize(device: str = "cuda"):
    """Wait for queued GPU work to finish (for timing); a no-op on the CPU."""
    if device == "cuda" and _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()


# ---------------------------------------------------------------- random numbers
_seed = None
_generators: dict = {}


def manual_seed(seed: int):
    """Seed minidl's random generators on every backend (and NumPy's global RNG)."""
    global _seed
    _seed = int(seed)
    _generators.clear()
    np.random.seed(_seed % 2**32)
    if _cupy is not None and is_cuda_available():
        _cupy.random.seed(_seed)


def default_generator(xp=np):
    """The generator that layers (dropout, init) draw from on the backend ``xp``."""
    gen = _generators.get(xp.__name__)
    if gen is None:
        gen = xp.random.default_rng(_seed)
        _generators[xp.__name__] = gen
    return gen


def get_rng_state() -> dict:
    """The CPU generator's state, as plain JSON-able data (for checkpoints)."""
    gen = default_generator(np)
    return {"seed": _seed, "bit_generator": gen.bit_generator.state}


def set_rng_state(state: dict):
    global _seed
    _seed = state.get("seed")
    gen = default_generator(np)
    gen.bit_generator.state = state["bit_generator"]


def broadcast_shapes(*shapes) -> tuple:
    """The shape that ``shapes`` broadcast to (host-side shape arithmetic, any backend)."""
    return np.broadcast_shapes(*shapes)


# ---------------------------------------------------------------- host memory
# Opt-in, process-wide: a training step allocates every activation and gradient afresh and frees them when the
# graph goes; with glibc's default thresholds much of that memory goes back to the kernel at each step's end and
# is faulted back in, a zeroed page at a time, in the next (python -m benchmarks.host_allocator).
MMAP_THRESHOLD = 32 * 2**20     # blocks up to this size stay on the heap (glibc's largest allowed value)
TRIM_THRESHOLD = 2**30          # the heap is trimmed only when this much is free at its top
host_allocator = "left alone: set_malloc_thresholds() was not called"
"""What ``set_malloc_thresholds`` did: the thresholds it set, or why it left the allocator alone."""


def set_malloc_thresholds():
    """Keep a training step's freed memory with the process: set glibc malloc's mmap threshold to
    MMAP_THRESHOLD and its trim threshold to TRIM_THRESHOLD, for the whole process.  ``import minidl`` does
    not call this; the experiments CLI and ``Trainer.fit`` do.  The allocator is left alone where glibc's own
    MALLOC_* variables or GLIBC_TUNABLES are set, where MINIDL_MALLOC=system, and off glibc.  Returns (and
    keeps in ``host_allocator``) the thresholds set, or a sentence saying why it left the allocator alone."""
    global host_allocator
    own = [k for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
           if k in os.environ]
    choice = os.environ.get("MINIDL_MALLOC", "minidl")
    if choice not in ("minidl", "system"):
        raise ValueError(f"MINIDL_MALLOC must be 'minidl' (the default: set glibc's malloc thresholds) or "
                         f"'system' (leave glibc's defaults), got {choice!r}")
    if choice == "system":
        host_allocator = "left alone: MINIDL_MALLOC=system"
    elif own:
        host_allocator = f"left alone: {', '.join(own)} set in the environment"
    elif not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        host_allocator = (f"left alone: the C library is not glibc ({sys.platform}, "
                          f"{platform.libc_ver()[0] or 'unknown'})")
    else:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError) as e:
            host_allocator = f"left alone: mallopt not found ({e})"
        else:
            m_trim_threshold, m_mmap_threshold = -1, -3       # from glibc's malloc.h
            if mallopt(m_mmap_threshold, MMAP_THRESHOLD) != 1 or mallopt(m_trim_threshold, TRIM_THRESHOLD) != 1:
                host_allocator = "left alone: mallopt refused the thresholds"
            else:
                host_allocator = {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    return host_allocator
