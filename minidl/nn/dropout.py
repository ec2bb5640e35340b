"""Dropout modules: identity in evaluation mode, inverted dropout in training mode."""
from minidl.nn import functional as F
from minidl.nn.module import Module


class _DropoutNd(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must lie in [0, 1], got {p}")
        self.p = p

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_DropoutNd):
    """Zero each element with probability p during training and scale the rest by 1/(1-p)."""

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class Dropout2d(_DropoutNd):
    """Zero whole channels of (N, C, H, W) input with probability p during training; scale the rest by 1/(1-p)."""

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)
