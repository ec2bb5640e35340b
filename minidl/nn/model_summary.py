"""``summary(model, input_shape)``: a torchsummary-style table of a model.

One forward pass of a zero input (evaluation mode, no graph; the model's modes and
buffers are left as they were) records each layer's output shape through forward
hooks.  Rows list every module except the model itself and plain containers
(``is_container``: Sequential, ModuleList), numbered in the order they ran, as torchsummary does.
Sizes in MB (2**20 bytes) are for ``batch_size`` samples (one when it is -1):
input, forward/backward pass (every listed output twice: value and gradient),
parameters, and their sum.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minidl import backend
from minidl.autograd import Tensor, get_default_dtype, no_grad

_RULE = "-" * 64
_DOUBLE_RULE = "=" * 64


@dataclass
class ModelSummary:
    """What ``summary`` printed, as numbers; ``str()`` gives the table."""
    rows: list = field(default_factory=list)  # (layer name, output shape, number of parameters)
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    input_size_mb: float = 0.0
    forward_backward_size_mb: float = 0.0
    params_size_mb: float = 0.0
    total_size_mb: float = 0.0
    text: str = ""

    def __str__(self):
        return self.text

    def __repr__(self):
        return (f"ModelSummary(total_params={self.total_params:,}, trainable_params={self.trainable_params:,}, "
                f"estimated_total_size_mb={self.total_size_mb:.2f})")


def _shape_list(out, batch_size):
    if isinstance(out, (tuple, list)):
        return [_shape_list(o, batch_size) for o in out]
    if isinstance(out, Tensor):
        return [batch_size] + list(out.shape[1:])
    return []


def _numel(shape):
    if shape and isinstance(shape[0], list):
        return sum(_numel(s) for s in shape)
    return int(np.prod([abs(d) for d in shape])) if shape else 0


def summary(model, input_shape, batch_size: int = -1, device=None, dtype=None, print_fn=print) -> ModelSummary:
    """Print a table ``Layer (type) | Output Shape | Param #`` for ``model`` applied to one
    input of ``input_shape`` (without the batch axis; a list of shapes for several inputs)
    and return a ``ModelSummary``.  ``device`` defaults to where the model's parameters are;
    ``print_fn=None`` prints nothing."""
    if batch_size != -1 and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be -1 (unspecified) or a positive int, got {batch_size!r}")
    shapes = [tuple(input_shape)] if all(isinstance(d, int) for d in input_shape) else [tuple(s) for s in input_shape]
    params = list(model.parameters())
    if device is None:
        device = params[0].device if params else "cpu"
    dtype = np.dtype(dtype) if dtype is not None else (params[0].dtype if params else get_default_dtype())
    xp = backend.xp_for(device)
    itemsize = dtype.itemsize

    rows, handles = [], []
    leaf_model = next(model.children(), None) is None

    def hook(module, inputs, out):
        name = f"{type(module).__name__}-{len(rows) + 1}"
        n = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((name, _shape_list(out, batch_size), n))

    for m in model.modules():
        if (m is model and not leaf_model) or m.is_container:
            continue
        handles.append(m.register_forward_hook(hook))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with no_grad():
            model(*[Tensor(xp.zeros((1,) + s, dtype=dtype)) for s in shapes])
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.__dict__["training"] = mode

    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    n = 1 if batch_size == -1 else batch_size
    mb = 1024.0 ** 2
    input_mb = sum(int(np.prod(s)) for s in shapes) * n * itemsize / mb
    activations = sum(_numel(shape) for _, shape, _ in rows)
    fwd_bwd_mb = 2.0 * activations * itemsize / mb  # the shapes already hold the batch size
    params_mb = total * itemsize / mb
    total_mb = input_mb + fwd_bwd_mb + params_mb

    lines = [_RULE, "{:>20}  {:>25} {:>15}".format("Layer (type)", "Output Shape", "Param #"), _DOUBLE_RULE]
    for name, shape, count in rows:
        lines.append("{:>20}  {:>25} {:>15}".format(name, str(shape), f"{count:,}"))
    lines += [_DOUBLE_RULE,
              f"Total params: {total:,}",
              f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}",
              _RULE,
              f"Input size (MB): {input_mb:0.2f}",
              f"Forward/backward pass size (MB): {fwd_bwd_mb:0.2f}",
              f"Params size (MB): {params_mb:0.2f}",
              f"Estimated Total Size (MB): {total_mb:0.2f}",
              _RULE]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return ModelSummary(rows, total, trainable, total - trainable, input_mb, fwd_bwd_mb, params_mb, total_mb, text)
