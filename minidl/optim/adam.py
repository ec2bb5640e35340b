"""Adam (L2 weight decay) and AdamW (decoupled weight decay), as PyTorch."""
from __future__ import annotations

import math

from minidl import kernels
from minidl.optim.optimizer import Optimizer, _check_hyper, chunks


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, optional AMSGrad, as ``torch.optim.Adam``.

    Per step ``t = 1, 2, ...`` with gradient ``g`` of parameter ``p``::

        g <- g + weight_decay * p           (coupled L2; AdamW instead does p <- p * (1 - lr * weight_decay))
        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2
        v_max <- max(v_max, v)              (amsgrad; then v_max replaces v below)
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, *, maximize: bool = False, decoupled_weight_decay: bool = False):
        _check_hyper("learning rate", lr, lr >= 0.0, "lr >= 0")
        _check_hyper("epsilon", eps, eps >= 0.0, "eps >= 0")
        betas = tuple(betas)
        _check_hyper("betas", betas, len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
                     "two values in [0, 1)")
        _check_hyper("weight_decay", weight_decay, weight_decay >= 0.0, "weight_decay >= 0")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, p, g, group, state):
        if p.device == "cuda" and not group["amsgrad"] and kernels.get_ops() != "reference":  # minidl/kernels/cuda.py
            return kernels.cuda.adam_update(p.data, g, state, group)
        xp = p.xp
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        bias_correction1 = 1.0 - beta1 ** t
        bias_correction2 = 1.0 - beta2 ** t
        decoupled = weight_decay != 0 and group["decoupled_weight_decay"]
        for pc, g, m, v, v_max in chunks(p.data, g, state["exp_avg"], state["exp_avg_sq"],
                                         state.get("max_exp_avg_sq")):   # one cache-sized chunk at a time
            if group["maximize"]:
                g = -g
            if decoupled:
                pc *= 1.0 - lr * weight_decay
            elif weight_decay != 0:
                g = pc * weight_decay + g            # a new array: the gradient itself is never written
            scratch = xp.multiply(g, 1.0 - beta1)    # the one temporary array of the step
            m *= beta1
            m += scratch
            xp.multiply(g, g, out=scratch)
            scratch *= 1.0 - beta2
            v *= beta2
            v += scratch
            if group["amsgrad"]:
                v = xp.maximum(v_max, v, out=v_max)
            denom = xp.sqrt(v, out=scratch)
            denom /= math.sqrt(bias_correction2)
            denom += eps
            step = xp.divide(m, denom, out=scratch)
            step *= lr / bias_correction1
            pc -= step


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``:
    ``p <- p * (1 - lr * weight_decay)`` before the Adam step, instead of an L2 term in the gradient."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True)
