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
interrupted save never leaves a half-written checkpoint under the final name; the temporary files
that killed saves leave behind are removed by the next save of the same checkpoint.
"""
from __future__ import annotations

import json
import numbers
import os
import re
import tempfile
import zipfile
from collections import OrderedDict

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

import numpy as np

from minidl import backend
from minidl.autograd import Tensor
from minidl.optim.optimizer import _same_kind

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "CheckpointMismatchError"]

FORMAT = "minidl-checkpoint"
VERSION = 1
_META = "__meta__"
_MARKERS = ("__array__", "__tensor__", "__scalar__", "__tuple__", "__items__")

_UMASK = os.umask(0)  # read the process umask (mkstemp creates files 0600; saved files get the usual mode)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: a file that is corrupt, truncated, foreign or crafted, or a state that
    does not fit the model, optimizer or scheduler given.  When it is raised nothing has been loaded."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """A checkpoint whose model state does not fit the model: also the RuntimeError that
    ``Module.load_state_dict`` raises, as PyTorch's does."""


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
    name = os.path.basename(path)
    _remove_leftovers(folder, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:  # held until the rename: tells a concurrent save that this file is not a leftover
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
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


def _remove_leftovers(folder: str, name: str):
    """Remove the temporary files that earlier saves of checkpoint ``name`` left in ``folder`` when they were
    killed mid-write: those that no live save holds locked (a kill releases the lock)."""
    if fcntl is None:  # no flock (not POSIX): leftovers stay
        return
    pattern = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp")  # mkstemp's names, as above
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry):
            continue
        leftover = os.path.join(folder, entry)
        try:
            fd = os.open(leftover, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(leftover)
        except OSError:  # locked: a save in progress
            pass
        finally:
            os.close(fd)


# ---------------------------------------------------------------- load
def _read(path: str):
    """The arrays and the decoded JSON of a checkpoint file, or a CheckpointError naming the file."""
    # zipfile, zlib and NumPy raise many kinds of error on damaged or crafted files (BadZipFile, NotImplementedError
    # for unsupported flag bits, RuntimeError for encrypted members, MemoryError for absurd sizes, ...)
    bad = Exception
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
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: its metadata is corrupt "
                              f"({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path!r} is not a minidl checkpoint (format {found!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path!r} is a minidl checkpoint of version {meta.get('version')!r}; "
                              f"this minidl reads version {VERSION}")
    return arrays, meta


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, map_location="cpu", *,
                    device=None, restore_rng: bool = True, strict: bool = True, validate=None) -> dict:
    """Read a checkpoint written by ``save_checkpoint``; load it into ``model``, ``optimizer`` and
    ``scheduler`` when given, and restore the RNG states unless ``restore_rng=False``.

    All or nothing: the file, its layout, the model's keys and shapes, the optimizer's groups, settings and
    buffers, the scheduler's state and the RNG states are all checked before anything is loaded, so a
    CheckpointError (a ValueError; naming the file) leaves every object and generator as it was.  A model that
    does not fit raises CheckpointMismatchError, which is also PyTorch's RuntimeError.  ``validate(ckpt)``,
    when given, is one more check of the decoded checkpoint (a ValueError or TypeError refuses it).

    Arrays go to each model tensor's own device (the checkpoint may come from either backend);
    everything not loaded into an object lands on ``map_location`` (alias ``device``; default 'cpu').
    ``strict`` goes to ``model.load_state_dict``.  Returns the checkpoint as a dict: ``model``,
    ``optimizer``, ``scheduler`` (state dicts, when saved), ``epoch``, ``extra`` and ``rng``.  Loading never
    unpickles anything.
    """
    path = os.fspath(path)
    location = backend.check_device(device if device is not None else map_location)
    arrays, meta = _read(path)
    try:  # RNG states stay on the host whatever map_location says
        ckpt = {k: _decode(v, arrays, "cpu" if k == "rng" else location) for k, v in meta.items()}
        _check_layout(ckpt)
    except Exception as e:  # crafted metadata: wrong types, dangling references, nesting too deep to decode
        raise CheckpointError(f"cannot read checkpoint {path!r}: its metadata does not match its arrays or a "
                              f"checkpoint's layout ({type(e).__name__}: {e})") from e
    if ckpt.get("model") is not None:
        ckpt["model"] = OrderedDict(ckpt["model"])
    for name, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None and ckpt.get(name) is None:
            has = [k for k in ("model", "optimizer", "scheduler") if ckpt.get(k) is not None]
            raise CheckpointError(f"checkpoint {path!r} holds no {name} state (it has: {', '.join(has) or 'none'})")

    # 1. check everything; nothing changes here
    model_arrays = None
    if model is not None:
        current = model.state_dict()
        state = OrderedDict()
        for k, v in ckpt["model"].items():
            if k in current and v.device != current[k].device:
                v = Tensor(backend.to_device(v.data, current[k].device))
            state[k] = v
        try:
            model_arrays, _ = model._check_state_dict(state, strict=strict)
        except (RuntimeError, TypeError, ValueError) as e:
            raise CheckpointMismatchError(f"checkpoint {path!r} does not fit the model: {e}") from e
    what = None
    try:
        if optimizer is not None:
            what = "optimizer"
            opt_state = optimizer._check_state_dict(ckpt["optimizer"])  # copies of the buffers, not yet installed
        if scheduler is not None:
            what = "scheduler"
            _check_like(ckpt["scheduler"], scheduler.state_dict(), "its state")
        if restore_rng and ckpt.get("rng") is not None:
            what = "random generators"
            _check_rng(ckpt["rng"])
        if validate is not None:
            what = "run"
            validate(ckpt)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {path!r} does not fit the {what}: {e}") from e

    # 2. load: nothing below depends on the file's content in a way that can fail
    if model is not None:
        model._copy_checked(model_arrays)
    if optimizer is not None:
        optimizer.param_groups, optimizer.state = opt_state  # what optimizer.load_state_dict installs
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng and ckpt.get("rng") is not None:
        backend.set_rng_state(ckpt["rng"]["minidl"])
        np.random.set_state(ckpt["rng"]["numpy"])
    return ckpt


def _check_layout(ckpt: dict):
    """The types of a decoded checkpoint's top-level entries (what ``save_checkpoint`` writes)."""
    model = ckpt.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise TypeError(f"'model' is a {type(model).__name__}, not a dict of name -> tensor")
        for k, v in model.items():
            if not isinstance(k, str) or not isinstance(v, Tensor):
                raise TypeError(f"'model' entry {k!r} is a {type(v).__name__}, not a tensor")
    for key in ("optimizer", "scheduler", "rng"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise TypeError(f"{key!r} is a {type(ckpt[key]).__name__}, not a dict")
    epoch = ckpt.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral)):
        raise TypeError(f"'epoch' is {epoch!r:.60}, not an integer")


def _check_like(saved, like, where: str):
    """Raise unless ``saved`` has the structure of ``like`` (a state dict of the object it is to be loaded into):
    the same dict keys, lists of dicts of the same length, values of the same kind."""
    if isinstance(like, dict):
        if not isinstance(saved, dict) or set(saved) != set(like):
            got = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{where} has {got}, expected the keys {sorted(map(str, like))}")
        for k in like:
            _check_like(saved[k], like[k], f"{where}[{k!r}]")
    elif isinstance(like, (list, tuple)) and like and all(isinstance(v, dict) for v in like):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(like):
            raise ValueError(f"{where} is {saved!r:.60}, expected a list of {len(like)} states")
        for i, (s, l) in enumerate(zip(saved, like)):
            _check_like(s, l, f"{where}[{i}]")
    elif isinstance(like, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or (like and not all(_same_kind(v, like[0]) for v in saved)):
            raise ValueError(f"{where} is {saved!r:.60}, expected a list like {like!r:.60}")
    elif not _same_kind(saved, like):
        raise ValueError(f"{where} is {saved!r:.60}, expected a value like {like!r:.60}")


def _check_rng(rng: dict):
    """Set the saved generator states on scratch generators: an error here leaves the real ones alone."""
    mine = rng.get("minidl")
    if not isinstance(mine, dict) or "bit_generator" not in mine:
        raise TypeError(f"the minidl generator state is {mine!r:.60}, not a dict with a 'bit_generator' state")
    seed = mine.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"the minidl seed is {seed!r:.60}, not an integer")
    type(backend.default_generator(np).bit_generator)().state = mine["bit_generator"]
    np.random.RandomState().set_state(rng.get("numpy"))
