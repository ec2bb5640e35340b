"""Losses as modules: CrossEntropyLoss, NLLLoss, MSELoss (``reduction`` 'mean', 'sum' or 'none')."""
from minidl.nn import functional as F
from minidl.nn.module import Module
from minidl.ops.loss import REDUCTIONS


class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross-entropy of logits (N, C) against class indices (N,), optionally with label smoothing:
    the target distribution is (1 - e) onehot + e / C."""

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.reduction, self.label_smoothing)

    def extra_repr(self):
        parts = [super().extra_repr()] + ([f"label_smoothing={self.label_smoothing}"] if self.label_smoothing else [])
        return ", ".join(p for p in parts if p)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (N, C) (e.g. from LogSoftmax) at class indices (N,)."""

    def forward(self, input, target):
        return F.nll_loss(input, target, self.reduction)


class MSELoss(_Loss):
    """Squared error (input - target)^2, averaged (or summed) over all elements."""

    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)
