"""The fully connected layer as one op (cs231n's affine_forward/affine_backward)."""
from minidl.autograd import Function
from minidl.ops.arith import gemm


class Linear(Function):
    """y = x W^T + b  with x (..., in), W (out, in), b (out,);
    dx = gy W,  dW = gy^T x  and  db = sum gy, both summed over all leading axes of x.

    One op rather than matmul(x, W.T) + b: dW comes out in W's own (out, in) layout, contiguous,
    so the optimizer's passes over it run at full speed, and no broadcast bias gradient is formed."""
    name = "linear"
    floating = ("input", "weight", "bias")

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        y = gemm(x, w.T) if x.ndim == 2 else x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        need = self.needs_input_grad
        gx = (gemm(gy, self.w) if gy.ndim == 2 else gy @ self.w) if need[0] else None
        g2 = gy.reshape(-1, gy.shape[-1])  # dW stays gy^T x: contiguous in W's layout, for the optimizer
        gw = g2.T @ self.x.reshape(-1, self.x.shape[-1]) if need[1] else None
        gb = g2.sum(axis=0) if len(need) > 2 and need[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """y = x W^T + b (see ``Linear``)."""
    return Linear()(x, weight) if bias is None else Linear()(x, weight, bias)
