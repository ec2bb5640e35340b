"""``Linear``: y = x W^T + b."""
from minidl import backend
from minidl.autograd import Tensor, get_default_dtype
from minidl.nn import functional as F
from minidl.nn import init
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter


def _empty(shape, device, dtype):
    xp = backend.xp_for(device)
    return Tensor(xp.zeros(shape, dtype=dtype or get_default_dtype()))


class Linear(Module):
    """Fully connected layer: weight (out_features, in_features), bias (out_features,),
    initialised as PyTorch does (U(-1/sqrt(in_features), 1/sqrt(in_features)) for both)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear needs positive in_features and out_features, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_empty((out_features, in_features), device, dtype))
        if bias:
            self.bias = Parameter(_empty((out_features,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """y = x (a placeholder that takes any arguments)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x
