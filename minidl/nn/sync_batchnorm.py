"""``SyncBatchNorm``: batch normalisation whose batch statistics are those of the whole batch that the ranks of a
data-parallel job hold between them (PyTorch's SyncBatchNorm, ChainerMN's MultiNodeBatchNormalization), and
``convert_sync_batchnorm`` to swap it in for a model's BatchNorm layers."""
from minidl import distributed as dist
from minidl.nn import functional as F
from minidl.nn.module import Module
from minidl.nn.normalization import _BatchNorm
from minidl.ops.sync_batch_norm import SyncBatchNorm as _SyncBatchNorm


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation of (N, C, ...) input, per channel C, with the mean and variance of the whole batch
    across the ranks of ``process_group`` (default: the default group) in training; running statistics in
    evaluation.  With one rank, or without a process group, it is BatchNorm."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _shape_text(self):
        return f"(N, {self.num_features}, ...)"

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm({self.num_features}) expects input of shape {self._shape_text()}, "
                             f"got {tuple(x.shape)}")
        group = self.process_group or (dist.group() if dist.is_initialized() else None)
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats or group is None or group.size == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=use_batch_stats, momentum=self.momentum, eps=self.eps,
                                num_batches_tracked=self.num_batches_tracked)

        def reduce(a):
            group.all_reduce(a, "sum")
            return a
        xp = x.xp
        gamma = self.weight if self.weight is not None else xp.ones(self.num_features, dtype=x.dtype)
        beta = self.bias if self.bias is not None else xp.zeros(self.num_features, dtype=x.dtype)
        op = _SyncBatchNorm(reduce, self.eps)
        out = op(x, gamma, beta)
        if self.training and self.running_mean is not None:
            F._update_running_stats(self.running_mean, self.running_var, self.num_batches_tracked, self.momentum,
                                    op.mean, op.var, op.count)
        return out

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group=None) -> Module:
        """``module`` with every BatchNorm layer replaced by a SyncBatchNorm that shares its parameters and
        buffers (the same objects, so an optimizer built before still holds them); returns the new root."""
        out = module
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group)
            for name in ("weight", "bias"):
                out._parameters[name] = module._parameters[name]
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                out._buffers[name] = module._buffers[name]
            out.train(module.training)
        for name, child in list(module.named_children()):
            out._modules[name] = cls.convert_sync_batchnorm(child, process_group)  # in place: keeps the order
        return out
