"""``Conv2d``: a module over ``minidl.ops.conv.conv2d`` (im2col + one GEMM)."""
from minidl.nn import functional as F
from minidl.nn import init
from minidl.nn.linear import _empty
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from minidl.ops.conv import pair


class Conv2d(Module):
    """2-D convolution (cross-correlation) of NCHW input: weight (out_channels, in_channels, kH, kW),
    bias (out_channels,), PyTorch's default initialisation.  ``padding`` is an int, a pair or 'same'
    (stride 1 only, as PyTorch)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"Conv2d needs positive channel counts, got in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "Conv2d: kernel_size")
        self.stride = pair(stride, "Conv2d: stride")
        self.dilation = pair(dilation, "Conv2d: dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), got stride {self.stride}")
            self.padding = (0, 0) if padding == "valid" else padding
        else:
            self.padding = pair(padding, "Conv2d: padding", minimum=0)
        self.weight = Parameter(_empty((out_channels, in_channels) + self.kernel_size, device, dtype))
        if bias:
            self.bias = Parameter(_empty((out_channels,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        return s
