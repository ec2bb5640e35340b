"""``Module``: the base class of every layer and model.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it (PyTorch's
convention); ``register_buffer`` registers state that is saved but not learned
(BatchNorm's running statistics).  From the registry come ``parameters()``,
``state_dict()``, ``to(device)``, ``train()/eval()`` and the ``repr``.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from minidl import backend
from minidl.autograd import HookHandle, Tensor
from minidl.nn.model_summary import summary
from minidl.nn.parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(text: str, n: int) -> str:
    lines = text.split("\n")
    return lines[0] if len(lines) == 1 else "\n".join([lines[0]] + [" " * n + line for line in lines[1:]])


def _parse_to(args, kwargs):
    """(device, dtype) from ``to('cuda')``, ``to(float64)``, ``to('cpu', float32)`` or keywords."""
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, str) and (a == "cpu" or a.startswith("cuda")):
            device = a
        elif a is not None:
            try:
                dtype = np.dtype(a)
            except TypeError:
                raise TypeError(f"to() expects a device ('cpu', 'cuda') or a dtype, got {a!r}") from None
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise TypeError(f"Module.to() only casts to floating-point dtypes, got {np.dtype(dtype)}")
    return (backend.check_device(device) if device is not None else None), dtype


def _value_array(value):
    """The array held by a state_dict value: a Tensor, a NumPy/CuPy array, a scalar or
    anything with ``.numpy()`` (a torch tensor, for instance)."""
    if isinstance(value, Tensor):
        return value.data
    if backend.is_array(value):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # e.g. a torch.Tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


class Module:
    """Base class of layers and models: subclasses set attributes in ``__init__`` (after
    calling ``super().__init__()``) and define ``forward``."""

    is_container = False
    """True for plain containers (Sequential, ModuleList), which only hold other modules: ``summary()`` gives
    them no row, as torchsummary."""

    def __init__(self):
        d = self.__dict__
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent"] = set()
        d["_modules"] = OrderedDict()
        d["_forward_hooks"] = OrderedDict()
        d["training"] = True

    # ------------------------------------------------------------ registration
    def _stores(self):
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning "
                                 f"parameters, buffers or submodules") from None

    def _unregister(self, name):
        params, buffers, modules = self._stores()
        params.pop(name, None)
        buffers.pop(name, None)
        modules.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._unregister(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._unregister(name)
            self._modules[name] = value
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} as parameter {name!r} of "
                                f"{type(self).__name__} (a Parameter or None was expected)")
            self._parameters[name] = None
        elif "_modules" in self.__dict__ and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} as submodule {name!r} of "
                                f"{type(self).__name__} (a Module or None was expected)")
            self._modules[name] = None
        elif "_buffers" in self.__dict__ and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign a {type(value).__name__} as buffer {name!r} of "
                                f"{type(self).__name__} (a Tensor or None was expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # called only when ordinary lookup fails
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                del d[store][name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def _check_name(self, name, kind):
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{kind} name must be a non-empty string without '.', got {name!r}")
        if name in self.__dict__ and not any(name in s for s in self._stores()):
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")

    def register_parameter(self, name: str, param: Parameter | None):
        """Register ``param`` (or None: an absent optional parameter such as a bias)."""
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        self._unregister(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True):
        """Register state that is not learned (``state_dict`` holds it unless ``persistent=False``)."""
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got {type(tensor).__name__}")
        self._unregister(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None):
        self._check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module or None, got {type(module).__name__}")
        self._unregister(name)
        self._modules[name] = module

    register_module = add_module

    # ------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            r = hook(self, args, out)
            if r is not None:
                out = r
        return out

    def register_forward_hook(self, hook) -> HookHandle:
        """Call ``hook(module, inputs, output)`` after every forward; a non-None result replaces the output."""
        handle = HookHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------ traversal
    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "", _memo=None):
        """(name, module) for this module and every descendant, each module once."""
        memo = set() if _memo is None else _memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self.named_children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def _named_members(self, store, prefix, recurse):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in mods:
            for name, t in m.__dict__[store].items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), t

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """(name, Parameter) pairs, dotted names as in ``state_dict``; a shared parameter once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        m = self
        for part in target.split(".") if target else []:
            if part not in m._modules or m._modules[part] is None:
                raise AttributeError(f"{type(m).__name__} has no submodule {part!r} (looking up {target!r})")
            m = m._modules[part]
        return m

    def apply(self, fn):
        """Call ``fn`` on every submodule (children first) and on self; return self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ modes and devices
    def train(self, mode: bool = True):
        """Training mode (batch statistics, dropout on) or, with ``mode=False``, evaluation mode."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) expects a bool, got {type(mode).__name__}")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag: bool = True):
        """Freeze (``False``) or unfreeze every parameter."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self, set_to_none: bool = True):
        """Drop every parameter's gradient (or set it to zeros with ``set_to_none=False``)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = Tensor(p.xp.zeros_like(p.data))

    def to(self, *args, **kwargs):
        """Move every parameter and buffer to a device and/or cast the floating-point ones
        to a dtype, in place: the Parameter objects stay the same (an optimizer built
        before still holds them).  Returns self.  ``model.to('cuda')``, ``model.to(float64)``."""
        device, dtype = _parse_to(args, kwargs)

        def convert(a):
            if device is not None:
                a = backend.to_device(a, device)
            if dtype is not None and a.dtype.kind == "f" and a.dtype != dtype:
                a = a.astype(dtype)
            return a

        for m in self.modules():
            for p in m._parameters.values():
                if p is None:
                    continue
                p.data = convert(p.data)
                if p.grad is not None:
                    p.grad = Tensor(convert(p.grad.data))
            for b in m._buffers.values():
                if b is not None:
                    b.data = convert(b.data)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    # ------------------------------------------------------------ state
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """OrderedDict of dotted name -> Tensor for every parameter and persistent buffer.
        The tensors share memory with the module (detached unless ``keep_vars``)."""
        out = OrderedDict()
        self._save_to(out, prefix, keep_vars)
        return out

    def _save_to(self, out, prefix, keep_vars):
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else Tensor(p.data)
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b if keep_vars else Tensor(b.data)
        for name, m in self.named_children():
            m._save_to(out, f"{prefix}{name}.", keep_vars)

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values into this module's parameters and buffers (in place, cast to their
        dtype and device).  Nothing is copied if any error is found: with ``strict`` (the
        default) missing and unexpected keys are errors; a shape mismatch always is, and so is a
        value that is not a number array.  One RuntimeError lists every problem.  Returns
        (missing_keys, unexpected_keys)."""
        arrays, keys = self._check_state_dict(state_dict, strict)
        self._copy_checked(arrays)
        return keys

    def _check_state_dict(self, state_dict, strict: bool = True):
        """The checks of ``load_state_dict``, changing nothing: ([(tensor, array to copy)], IncompatibleKeys)."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict expects a mapping of name -> tensor, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        arrays, mismatched = {}, []
        for k, t in own.items():
            if k in state_dict:
                a = _value_array(state_dict[k])
                if tuple(a.shape) != tuple(t.shape):
                    mismatched.append(f"size mismatch for {k}: copying a tensor of shape {tuple(a.shape)} "
                                      f"from the state_dict, the shape in the current model is {tuple(t.shape)}")
                elif a.dtype.kind not in ("biuf" if t.dtype.kind != "c" else "biufc"):
                    mismatched.append(f"dtype mismatch for {k}: copying a tensor of dtype {a.dtype} from the "
                                      f"state_dict into one of dtype {t.dtype}")
                arrays[k] = a
        problems = []
        if strict and missing:
            problems.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            problems.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        problems += mismatched
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(problems))
        return [(own[k], a) for k, a in arrays.items()], IncompatibleKeys(missing, unexpected)

    @staticmethod
    def _copy_checked(arrays: list):
        """Copy the arrays that ``_check_state_dict`` returned into their tensors."""
        for t, a in arrays:
            t.data[...] = backend.to_device(a, t.device).astype(t.dtype, copy=False)
            t._bump_version()

    # ------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """The layer's settings, shown inside the parentheses of its repr."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({name}): {_addindent(repr(m), 2)}" for name, m in self._modules.items()]
        if not children and len(lines) <= 1:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines + children) + "\n)"

    def summary(self, input_shape, batch_size: int = -1, device=None, dtype=None, print_fn=print):
        """Print (and return) a torchsummary-style table of this model: each layer's type,
        output shape and parameter count, the totals, and memory estimates in MB.
        ``input_shape`` excludes the batch axis, e.g. ``(3, 32, 32)``; see ``minidl.nn.model_summary``."""
        return summary(self, input_shape, batch_size=batch_size, device=device, dtype=dtype, print_fn=print_fn)
