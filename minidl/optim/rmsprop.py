"""RMSprop (PyTorch's update rule)."""
from __future__ import annotations

from minidl.optim.optimizer import Optimizer, _check_hyper, chunks


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), optionally centered and with momentum, as ``torch.optim.RMSprop``.

    Per step with gradient ``g`` of parameter ``p``::

        g <- g + weight_decay * p
        s <- alpha * s + (1 - alpha) * g^2
        a <- alpha * a + (1 - alpha) * g;  denom = sqrt(s - a^2) + eps    (centered)
                                           denom = sqrt(s) + eps          (otherwise)
        b <- momentum * b + g / denom;  p <- p - lr * b                   (momentum > 0)
        p <- p - lr * g / denom                                           (otherwise)
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, *, maximize: bool = False):
        _check_hyper("learning rate", lr, lr >= 0.0, "lr >= 0")
        _check_hyper("epsilon", eps, eps >= 0.0, "eps >= 0")
        _check_hyper("alpha", alpha, alpha >= 0.0, "alpha >= 0")
        _check_hyper("momentum", momentum, momentum >= 0.0, "momentum >= 0")
        _check_hyper("weight_decay", weight_decay, weight_decay >= 0.0, "weight_decay >= 0")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _update(self, p, g, group, state):
        xp = p.xp
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        weight_decay, momentum = float(group["weight_decay"]), float(group["momentum"])
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
        if momentum > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = xp.zeros_like(p.data)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        for pc, g, s, a, b in chunks(p.data, g, state["square_avg"], state.get("grad_avg"),
                                     state.get("momentum_buffer")):   # one cache-sized chunk at a time
            if group["maximize"]:
                g = -g
            if weight_decay != 0:
                g = g + weight_decay * pc            # a new array: the gradient itself is never written
            s *= alpha
            s += (1.0 - alpha) * (g * g)
            if group["centered"]:
                a *= alpha
                a += (1.0 - alpha) * g
                denom = xp.sqrt(s - a * a)
            else:
                denom = xp.sqrt(s)
            denom += eps
            if momentum > 0:
                b *= momentum
                b += g / denom
                pc -= lr * b
            else:
                pc -= lr * (g / denom)
