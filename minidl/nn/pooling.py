"""Pooling modules over ``minidl.ops.pool``: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d."""
from minidl.nn import functional as F
from minidl.nn.module import Module
from minidl.ops import pool


class _Pool2d(Module):
    op = None   # the op class, which checks the settings as it is built

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.op(kernel_size, stride, padding)   # a bad kernel_size, stride or padding fails here, not in forward
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Maximum over kernel_size windows of NCHW input (stride defaults to kernel_size; padding counts as -inf)."""
    op = pool.MaxPool2d

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """Mean over kernel_size windows of NCHW input (stride defaults to kernel_size; zero padding counted)."""
    op = pool.AvgPool2d

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pooling of NCHW input to output_size (1: global average pooling, output (N, C, 1, 1))."""

    def __init__(self, output_size=1):
        super().__init__()
        pool.AdaptiveAvgPool2d(output_size)     # checks output_size
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
