"""Check an op's backward against central differences.

    gradcheck(fn, [x, w, b])

``fn`` maps tensors to a tensor.  A random upstream gradient G (never an implicit
sum: the sum of a softmax has zero gradient) defines the scalar L = sum(fn(...) * G).
For every input that requires a gradient, the analytic dL/dx from ``backward`` is
compared with (L(x + eps e_i) - L(x - eps e_i)) / (2 eps) at each element i, or at a
random sample of ``max_elements`` elements of a large input.  Run it in float64.
"""
from __future__ import annotations

import numpy as np

from minidl import backend
from minidl.autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the numerical one."""


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4,
              max_elements: int = 64, seed: int = 0, names=None, raise_exception: bool = True) -> bool:
    """True when every input's gradient matches; otherwise raise ``GradcheckError`` naming
    the input, its worst element, the analytic and the numerical value (or return False
    with ``raise_exception=False``).  An element passes when
    |analytic - numerical| <= atol + rtol * max(|analytic|, |numerical|)."""
    inputs = list(inputs)
    names = list(names) if names is not None else [f"input {i}" for i in range(len(inputs))]
    for name, x in zip(names, inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs for accurate differences; {name} is {x.dtype}")
    rng = np.random.default_rng(seed)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires a gradient")

    out = fn(*inputs)
    xp = backend.get_array_module(out.data)
    upstream = xp.asarray(rng.standard_normal(out.shape)).astype(out.dtype)
    for i in checked:
        inputs[i].grad = None
    out.backward(upstream)
    analytic = {i: (inputs[i].grad.data if inputs[i].grad is not None else xp.zeros_like(inputs[i].data))
                for i in checked}

    def loss():
        with no_grad():
            return float((fn(*inputs).data * upstream).sum())

    for i in checked:
        x = inputs[i]
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs x
        n = flat.size
        picks = np.arange(n) if n <= max_elements else rng.choice(n, max_elements, replace=False)
        a_all = backend.to_numpy(analytic[i]).reshape(-1)
        worst, worst_excess = None, -np.inf
        for k in picks:
            k = int(k)
            orig = flat[k].item()
            flat[k] = orig + eps
            up = loss()
            flat[k] = orig - eps
            down = loss()
            flat[k] = orig
            num = (up - down) / (2 * eps)
            ana = float(a_all[k])
            err = abs(ana - num)
            excess = err - (atol + rtol * max(abs(ana), abs(num)))
            if excess > worst_excess:
                worst, worst_excess = (k, ana, num, err), excess
        if worst_excess > 0:
            k, ana, num, err = worst
            where = tuple(int(j) for j in np.unravel_index(k, x.shape)) if x.ndim else ()
            rel = err / max(abs(ana), abs(num), 1e-300)
            msg = (f"gradcheck failed for {names[i]} (shape {tuple(x.shape)}): worst element {where}: "
                   f"analytic {ana:.10g}, numerical {num:.10g}, abs. error {err:.3g}, rel. error {rel:.3g} "
                   f"(atol {atol}, rtol {rtol}, eps {eps}; {len(picks)} of {n} elements checked)")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
