"""The Optimizer base class: parameter groups, per-parameter state, zero_grad and state_dict.

As in PyTorch, an optimizer holds ``param_groups`` (a list of dicts, each with its
``params`` and its own hyperparameters such as ``lr`` and ``weight_decay``) and
``state`` (a dict parameter -> dict of buffers such as ``momentum_buffer``).
Subclasses implement ``_update``; they update ``p.data`` in place with the array
module of the parameter (NumPy or CuPy) and never write into ``p.grad.data``,
whose array may be shared with other tensors; ``step`` counts each update in the
parameter's version counter, so a graph that still holds the old values refuses backward.
"""
from __future__ import annotations

import numbers

import numpy as np

from minidl import backend
from minidl.autograd import Tensor, enable_grad

CHUNK = 1 << 16  # elements per chunk of an update: a few float32 chunks of 256 KB stay in the L2 cache


class Optimizer:
    """Base class of all optimizers.

    ``params`` is an iterable of Tensors, or of dicts ``{"params": [...], "lr": ..., ...}``
    whose keys override ``defaults`` for that group (e.g. no weight decay on biases).
    Buffers are created on the parameter's device at its first step, so, as in PyTorch, move the
    model (``model.to('cuda')``) before training with it; ``load_state_dict`` puts loaded buffers
    on each parameter's current device.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}          # Tensor -> {name: array or number}; Tensors hash by identity
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError("params should be an iterable of Tensors or of dicts, got a single Tensor "
                            "(wrap it in a list: [tensor])")
        if isinstance(params, dict):
            raise TypeError("params should be an iterable of Tensors or of dicts, got one dict "
                            "(wrap it in a list: [{'params': ...}])")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict):
        """Add a group of parameters with its own hyperparameters (missing ones come from ``defaults``)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("a parameter group needs a 'params' entry")
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters must be an ordered collection (a set's order changes between "
                            "runs, which would scramble state_dict); use a list")
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but params[{i}] of the group is a "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"params[{i}] is not a leaf tensor (it was computed by an op); "
                                 f"optimize leaves, e.g. the result of .detach().requires_grad_()")
            if p.dtype.kind not in "fc":
                raise TypeError(f"params[{i}] has dtype {p.dtype}; only floating-point tensors can be optimized")
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("a parameter group contains the same parameter more than once")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self.param_groups.append(group)

    # ------------------------------------------------------------------ gradients
    def zero_grad(self, set_to_none: bool = True):
        """Clear the gradients of all parameters.  ``set_to_none=False`` puts fresh zero arrays
        instead of ``None`` (never zeroing the old arrays in place: they may be shared)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad = Tensor(p.grad.xp.zeros_like(p.grad.data))

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` (optional) re-evaluates the
        model and returns the loss, which ``step`` returns."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if g.shape != p.data.shape:
                    raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {p.data.shape}")
                if g.dtype != p.data.dtype:
                    raise TypeError(f"gradient of dtype {g.dtype} for a parameter of dtype {p.data.dtype}; "
                                    f"assign a gradient of the parameter's dtype")
                self._update(p, g, group, self.state.setdefault(p, {}))
                p._bump_version()
        return loss

    def _update(self, p: Tensor, g, group: dict, state: dict):
        """Update one parameter ``p`` in place from its gradient array ``g`` (read-only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict:
        """``{"state": {index: {name: value}}, "param_groups": [{..., "params": [indices]}]}``,
        parameters numbered in order across groups, as PyTorch.  Arrays are the live buffers
        (not copies), again as PyTorch; ``minidl.io.save_checkpoint`` copies them to the host."""
        index, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Load hyperparameters and buffers saved by ``state_dict``.  Buffers are copied onto each
        parameter's device, floating-point ones cast to the parameter's dtype.  Everything is checked
        first (the groups' sizes and settings, each buffer's shape): on an error nothing changes."""
        self.param_groups, self.state = self._check_state_dict(state_dict)

    def _check_state_dict(self, state_dict: dict):
        """The checks and copies of ``load_state_dict``, changing nothing: (param_groups, state) to install.
        A ValueError or TypeError says what does not fit, e.g. the state of another kind of optimizer."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("an optimizer state_dict is a dict with 'state' and 'param_groups' entries, got "
                             + (f"keys {sorted(map(str, state_dict))}" if isinstance(state_dict, dict)
                                else type(state_dict).__name__))
        saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(saved_groups, (list, tuple)) or not all(isinstance(g, dict) for g in saved_groups):
            raise TypeError("the state dict's 'param_groups' must be a list of dicts")
        if not isinstance(saved_state, dict) or not all(isinstance(v, dict) for v in saved_state.values()):
            raise TypeError("the state dict's 'state' must be a dict of parameter index -> dict of buffers")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index = {}
        for i, (mine, saved) in enumerate(zip(self.param_groups, saved_groups)):
            params = saved.get("params")
            if not isinstance(params, (list, tuple)) or not all(type(j) is int for j in params):
                raise TypeError(f"parameter group {i} of the loaded state dict needs 'params', a list of parameter "
                                f"indices, got {params!r:.60}")
            if len(mine["params"]) != len(params):
                raise ValueError(f"parameter group {i} of the loaded state dict has {len(params)} "
                                 f"parameters, this optimizer's has {len(mine['params'])}")
            lacking = [k for k in self.defaults if k not in saved]
            foreign = sorted(set(saved) - set(self.defaults) - set(mine) - {"params"})
            if lacking and foreign:  # another optimizer's settings (only lacking: an older minidl's, filled below)
                raise ValueError(f"parameter group {i} of the loaded state dict has {', '.join(foreign)} and lacks "
                                 f"{', '.join(lacking)}: it is not the state of a {type(self).__name__}")
            for k, default in self.defaults.items():
                if k in saved and not _same_kind(saved[k], default):
                    raise TypeError(f"parameter group {i} of the loaded state dict has {k} = {saved[k]!r:.60}; "
                                    f"a {type(self).__name__} takes a value like {default!r}")
            for idx, p in zip(params, mine["params"]):
                by_index[idx] = p
        new_state = {}
        for idx, s in saved_state.items():
            if idx not in by_index:
                raise ValueError(f"loaded state dict has state for parameter {idx!r}, which no group lists")
            p = by_index[idx]
            for k, v in s.items():
                v = v.data if isinstance(v, Tensor) else v
                if backend.is_array(v) and v.ndim and (tuple(v.shape) != tuple(p.shape) or v.dtype.kind not in "biuf"):
                    raise ValueError(f"loaded state dict has a {k} of {v.dtype} {tuple(v.shape)} for parameter {idx}, "
                                     f"of shape {tuple(p.shape)}")
            new_state[p] = {k: _copy_like(v, p, k) for k, v in s.items()}
        new_groups = []
        for mine, saved in zip(self.param_groups, saved_groups):
            group = {k: mine[k] for k in self.defaults if k not in saved}  # settings newer than the checkpoint
            group.update((k, v) for k, v in saved.items() if k != "params")
            group["params"] = mine["params"]
            new_groups.append(group)
        return new_groups, new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"


def chunks(*arrays):
    """Matching flat slices of ``CHUNK`` elements of same-shaped arrays (``None`` passes through as None).

    An update written as several in-place ufunc passes (``b *= momentum; b += g; p -= lr * b``) over a
    large parameter streams the whole of every array through memory on each pass; taken chunk by chunk,
    each pass finds its operands still in the cache (``python -m benchmarks.throughput --nets C --profile``,
    "optimizer step").  The updates stay
    elementwise, so the result is the same, bit for bit, as one pass over whole arrays; arrays that are
    small, not C-contiguous (a reshape would copy), or on the GPU (one kernel launch per chunk would
    cost more than it saves) come whole, as one chunk.
    """
    live = [a for a in arrays if a is not None]
    if live[0].size <= CHUNK or not all(backend.device_of(a) == "cpu" and a.flags.c_contiguous for a in live):
        yield arrays
        return
    flat = [None if a is None else a.reshape(-1) for a in arrays]
    for start in range(0, live[0].size, CHUNK):
        yield tuple(None if f is None else f[start:start + CHUNK] for f in flat)


def _same_kind(value, like) -> bool:
    """Whether a loaded hyperparameter is of the kind of this optimizer's default (a number, a flag, a tuple of
    numbers, ...); None on either side fits anything."""
    if value is None or like is None:
        return True
    flags = (bool, np.bool_)
    if isinstance(like, flags) or isinstance(value, flags):
        return isinstance(like, flags) and isinstance(value, flags)
    if isinstance(like, numbers.Real):
        return isinstance(value, numbers.Real)
    if isinstance(like, (tuple, list)):
        return isinstance(value, (tuple, list)) and len(value) == len(like) and all(map(_same_kind, value, like))
    return type(value) is type(like)


def _check_hyper(name: str, value, ok: bool, expected: str):
    """Raise a ValueError naming a bad hyperparameter."""
    if not ok:
        raise ValueError(f"invalid {name}: {value!r} (expected {expected})")


def _copy_like(value, p: Tensor, key: str):
    """A copy of a saved buffer on ``p``'s device; floating arrays take ``p``'s dtype (not 'step')."""
    if isinstance(value, Tensor):
        value = value.data
    if not backend.is_array(value):
        return value
    arr = value.copy() if backend.device_of(value) == p.device else backend.to_device(value, p.device)
    if arr.dtype.kind == "f" and key != "step" and arr.dtype != p.dtype:
        arr = arr.astype(p.dtype)
    return arr
