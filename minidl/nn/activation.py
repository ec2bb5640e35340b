"""Activation modules and Flatten."""
from minidl.nn import functional as F
from minidl.nn.module import Module


class ReLU(Module):
    """y = max(x, 0)"""

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    """y = x if x > 0 else negative_slope * x"""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """y = tanh(x)"""

    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x))"""

    def forward(self, x):
        return F.sigmoid(x)


class Softmax(Module):
    """y = exp(x) / sum exp(x) along ``dim`` (None: PyTorch's implicit choice, axis 1 for 2-D and 4-D input)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """y = x - log sum exp(x) along ``dim``"""

    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Flatten(Module):
    """Merge axes start_dim..end_dim (by default all but the batch axis) into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
