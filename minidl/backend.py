"""Which array module holds the data: NumPy on the CPU, CuPy on an NVIDIA GPU.

Everything that does array math on tensor data asks this module for ``xp``
(``get_array_module``) instead of importing numpy, so the same code runs on both
backends.  This is the only module that imports CuPy.
"""
from __future__ import annotations

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
