"""BatchNorm1d and BatchNorm2d: batch statistics in training, running statistics in evaluation."""
from minidl import backend
from minidl.autograd import Tensor, get_default_dtype, int64
from minidl.nn import functional as F
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter


class _BatchNorm(Module):
    _expected = ()  # accepted input ranks

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        xp = backend.xp_for(device or "cpu")
        dtype = dtype or get_default_dtype()
        if affine:
            self.weight = Parameter(Tensor(xp.ones(num_features, dtype=dtype)))
            self.bias = Parameter(Tensor(xp.zeros(num_features, dtype=dtype)))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(xp.zeros(num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(xp.ones(num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(xp.zeros((), dtype=int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            for buf, value in ((self.running_mean, 0), (self.running_var, 1), (self.num_batches_tracked, 0)):
                buf.data[...] = value
                buf._bump_version()

    def forward(self, x):
        if x.ndim not in self._expected or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects input of shape "
                             f"{self._shape_text()}, got {tuple(x.shape)}")
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=self.momentum, eps=self.eps,
                            num_batches_tracked=self.num_batches_tracked)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input, per channel C."""
    _expected = (2, 3)

    def _shape_text(self):
        return f"(N, {self.num_features}) or (N, {self.num_features}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input, per channel C."""
    _expected = (4,)

    def _shape_text(self):
        return f"(N, {self.num_features}, H, W)"
