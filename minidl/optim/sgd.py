"""Stochastic gradient descent with momentum (PyTorch's update rule)."""
from __future__ import annotations

from minidl import kernels
from minidl.optim.optimizer import Optimizer, _check_hyper, chunks


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
        if p.device == "cuda" and kernels.get_ops() != "reference":  # CuPy: one fused kernel (minidl/kernels/cuda.py)
            return kernels.cuda.sgd_update(p.data, g, state, group)
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
        first = momentum != 0 and "momentum_buffer" not in state
        if first:
            state["momentum_buffer"] = p.xp.empty_like(p.data)
        buf = state.get("momentum_buffer") if momentum != 0 else None
        for pc, gc, bc in chunks(p.data, g, buf):    # the same arithmetic, one cache-sized chunk at a time
            if group["maximize"]:
                gc = -gc
            if weight_decay != 0:
                gc = weight_decay * pc + gc          # a new array: the gradient itself is never written
            if momentum != 0:
                if first:
                    bc[...] = gc
                else:
                    bc *= momentum
                    bc += gc if dampening == 0 else (1.0 - dampening) * gc
                gc = gc + momentum * bc if group["nesterov"] else bc
            pc -= lr * gc
