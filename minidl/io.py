"""Checkpoints: model, optimizer, scheduler, epoch and RNG state in one ``.npz`` file, without pickle.

Layout of the file (a standard NumPy ``.npz``, i.e. a zip of ``.npy`` arrays):

- ``__meta__``: a uint8 array holding UTF-8 JSON, the whole checkpoint as a tree of dicts,
  lists, numbers, strings, booleans and None; every array in it is replaced by a reference
  ``{"__array__": "a7"}`` (``__tensor__`` for a Tensor, ``__scalar__`` for a NumPy scalar),
  tuples by ``{"__tuple__": [...]}``, and dicts whose keys are not all strings (an optimizer's
  state is keyed by parameter index) by ``{"__items__": [[key, value], ...]}``;
- ``a0``, ``a1``, ...: the arrays, copied to the host.

Loading uses ``np.load(allow_pickle=False)`` and ``json``: no code object is ever
unpickled, so opening an untrusted checkpoint cannot run code.  The file is written to a
temporary file in the same directory, flushed to disk and renamed over the target, so an
interrupted save never leaves a half-written checkpoint under the final name.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

from minidl import backend
from minidl.autograd import Tensor

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]

FORMAT = "minidl-checkpoint"
VERSION = 1
_META = "__meta__"
_MARKERS = ("__array__", "__tensor__", "__scalar__", "__tuple__", "__items__")

_UMASK = os.umask(0)  # read the process umask (mkstemp creates files 0600; saved files get the usual mode)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """A file that is not a readable minidl checkpoint (corrupt, truncated or foreign)."""


# ---------------------------------------------------------------- encoding to JSON + arrays
def _encode(obj, arrays: dict, where: str):
    if obj is None or isinstance(obj, (bool, str, int, float)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, Tensor):
        return {"__tensor__": _store(obj.data, arrays, where)}
    if backend.is_array(obj):
        return {"__array__": _store(obj, arrays, where)}
    if isinstance(obj, np.generic):
        return {"__scalar__": _store(np.asarray(obj), arrays, where)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in obj):
            return {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in obj.items()}
        return {"__items__": [[_encode(k, arrays, f"{where} key"), _encode(v, arrays, f"{where}[{k!r}]")]
                              for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} at {where} in a checkpoint: checkpoints hold arrays, "
                    f"Tensors, numbers, strings, bools, None, and lists, tuples and dicts of these (no pickle)")


def _store(array, arrays: dict, where: str) -> str:
    host = backend.to_numpy(array)
    if host.dtype.hasobject:
        raise TypeError(f"cannot store an object array at {where} in a checkpoint (it would need pickle)")
    key = f"a{len(arrays)}"
    arrays[key] = host
    return key


def _decode(obj, arrays: dict, device: str):
    if isinstance(obj, list):
        return [_decode(v, arrays, device) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (marker, value), = obj.items()
        if marker == "__tensor__":
            return Tensor(backend.to_device(arrays[value], device))
        if marker == "__array__":
            return backend.to_device(arrays[value], device)
        if marker == "__scalar__":
            return arrays[value][()]
        if marker == "__tuple__":
            return tuple(_decode(v, arrays, device) for v in value)
        if marker == "__items__":
            return {_decode(k, arrays, device): _decode(v, arrays, device) for k, v in value}
    return {k: _decode(v, arrays, device) for k, v in obj.items()}


# ---------------------------------------------------------------- save
def save_checkpoint(path, model=None, optimizer=None, scheduler=None, epoch=None, extra=None):
    """Write ``model.state_dict()``, ``optimizer.state_dict()``, ``scheduler.state_dict()``, ``epoch``,
    ``extra`` (any JSON-like data, arrays and Tensors allowed) and the RNG states (minidl's generator
    and NumPy's global one) to ``path`` as one ``.npz``, atomically.  Arrays are copied to the host;
    the model, optimizer and scheduler are not changed."""
    payload = {"format": FORMAT, "version": VERSION, "epoch": epoch, "extra": extra,
               "rng": {"minidl": backend.get_rng_state(), "numpy": np.random.get_state(legacy=False)}}
    if model is not None:
        payload["model"] = OrderedDict(model.state_dict())
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    arrays: dict = {}
    meta = _encode(payload, arrays, "checkpoint")
    arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    _atomic_savez(os.fspath(path), arrays)


def _atomic_savez(path: str, arrays: dict):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not possible on every OS/filesystem
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------- load
def _read(path: str):
    """The arrays and the decoded JSON of a checkpoint file, or a CheckpointError naming the file."""
    bad = (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError)
    try:
        z = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except bad as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: the file is corrupt, truncated or not a "
                              f"checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} holds a single .npy array, not a minidl checkpoint (.npz)")
    try:
        with z:
            arrays = {k: z[k] for k in z.files}  # reads every entry: a zip CRC mismatch raises here
    except bad as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: the file is corrupt or truncated "
                              f"({type(e).__name__}: {e})") from e
    if _META not in arrays:
        raise CheckpointError(f"{path!r} is an .npz file but not a minidl checkpoint (no {_META!r} entry)")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: its metadata is corrupt ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path!r} is not a minidl checkpoint (format {found!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path!r} is a minidl checkpoint of version {meta.get('version')!r}; "
                              f"this minidl reads version {VERSION}")
    return arrays, meta


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, map_location="cpu", *,
                    device=None, restore_rng: bool = True, strict: bool = True) -> dict:
    """Read a checkpoint written by ``save_checkpoint``; load it into ``model``, ``optimizer`` and
    ``scheduler`` when given (in that order), and restore the RNG states unless ``restore_rng=False``.

    Arrays go to each model tensor's own device (the checkpoint may come from either backend);
    everything not loaded into an object lands on ``map_location`` (alias ``device``; default 'cpu').
    ``strict`` goes to ``model.load_state_dict``.  Returns the checkpoint as a dict: ``model``,
    ``optimizer``, ``scheduler`` (state dicts, when saved), ``epoch``, ``extra`` and ``rng``.  A corrupt or truncated file raises CheckpointError
    (a ValueError) naming the file; loading never unpickles anything.
    """
    path = os.fspath(path)
    location = backend.check_device(device if device is not None else map_location)
    arrays, meta = _read(path)
    try:  # RNG states stay on the host whatever map_location says
        ckpt = {k: _decode(v, arrays, "cpu" if k == "rng" else location) for k, v in meta.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: its metadata does not match its arrays "
                              f"({type(e).__name__}: {e})") from e
    if "model" in ckpt:
        ckpt["model"] = OrderedDict(ckpt["model"])
    for name, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None and ckpt.get(name) is None:
            has = [k for k in ("model", "optimizer", "scheduler") if ckpt.get(k) is not None]
            raise CheckpointError(f"checkpoint {path!r} holds no {name} state (it has: {', '.join(has) or 'none'})")
    if model is not None:
        current = model.state_dict()
        state = OrderedDict()
        for k, v in ckpt["model"].items():
            if k in current and isinstance(v, Tensor) and v.device != current[k].device:
                v = Tensor(backend.to_device(v.data, current[k].device))
            state[k] = v
        model.load_state_dict(state, strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])  # moves buffers to each parameter's device
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng and ckpt.get("rng"):
        backend.set_rng_state(ckpt["rng"]["minidl"])
        np.random.set_state(ckpt["rng"]["numpy"])
    return ckpt
