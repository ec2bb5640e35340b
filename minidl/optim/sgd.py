"""Stochastic gradient descent with momentum (PyTorch's update rule)."""
from __future__ import annotations

from minidl.optim.optimizer import Optimizer, _check_hyper


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and coupled L2 weight decay, as ``torch.optim.SGD``.

    Per step, with gradient ``g`` of parameter ``p`` and momentum buffer ``b``::

        g <- g + weight_decay * p                       (L2 penalty folded into the gradient)
        b <- g  on the first step, else  momentum * b + (1 - dampening) * g
        d <- g + momentum * b  if nesterov, else  b     (d = g when momentum == 0)
        p <- p - lr * d
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        _check_hyper("learning rate", lr, lr >= 0.0, "lr >= 0")
        _check_hyper("momentum", momentum, momentum >= 0.0, "momentum >= 0")
        _check_hyper("weight_decay", weight_decay, weight_decay >= 0.0, "weight_decay >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum requires momentum > 0 and dampening == 0, "
                             f"got momentum={momentum!r}, dampening={dampening!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update(self, p, g, group, state):
        if p.device == "cuda":  # CuPy: the same step in one fused kernel (minidl/cuda_kernels.py)
            from minidl import cuda_kernels
            return cuda_kernels.sgd_update(p.data, g, state, group)
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
        if group["maximize"]:
            g = -g
        if weight_decay != 0:
            decayed = weight_decay * p.data          # g + weight_decay * p in a new array:
            decayed += g                             # the gradient itself is never written
            g = decayed
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= momentum
                buf += g if dampening == 0 else (1.0 - dampening) * g
            if group["nesterov"]:
                d = momentum * buf                   # g + momentum * b
                d += g
                g = d
            else:
                g = buf
        p.data -= lr * g
