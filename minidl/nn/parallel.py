"""``DistributedDataParallel``: one model replica per rank, gradients averaged over the ranks during backward.

As PyTorch's DDP (and Horovod's tensor fusion): the wrapper broadcasts rank 0's parameters and buffers when it
wraps, so every replica starts equal; each rank then runs forward and backward on its share of the batch, and
after ``loss.backward()`` every parameter's ``.grad`` holds the mean of the ranks' gradients, so that the
optimizer steps (identical on every rank) keep the replicas equal.  A training loop does not change.

Gradients travel in flat buckets of about ``bucket_cap_mb`` (parameters in reverse order of registration,
roughly the order backward finishes them; one dtype and device per bucket): a post-accumulate-grad hook on each
parameter copies its gradient into its bucket, and a full bucket's all-reduce starts there and then (an MPI
Iallreduce, or NCCL on a stream of its own), while backward goes on with the layers below.  Buckets start in
index order on every rank, whatever order they fill in, so the ranks' collectives always match.  When the last
bucket has started, the hook waits for all of them and gives each parameter a ``.grad`` that is a view of its
bucket (a fresh bucket each step, so a gradient kept from an earlier step is never overwritten).

``no_sync()`` skips the averaging (gradient accumulation): gradients add up locally, and the first backward
outside the block averages the accumulated sums.
"""
from __future__ import annotations

import contextlib

from minidl import backend
from minidl import distributed as dist
from minidl.autograd import Tensor
from minidl.nn.module import Module


class _Bucket:
    """Parameters whose gradients travel together in one flat array."""

    def __init__(self, params):
        self.params = params
        self.offsets, n = [], 0
        for p in params:
            self.offsets.append(n)
            n += p.data.size
        self.numel = n
        self.buffer = None   # this step's flat gradients
        self.pending = 0     # parameters whose gradient has not arrived yet this step
        self.arrived = set()  # indices of those that have
        self.work = None     # the started all-reduce


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over the default process group
    (``minidl.distributed.init_process_group`` first).

    ``broadcast_buffers``: before every forward, overwrite the buffers (BatchNorm's running statistics) with rank
    0's, so that every replica normalises, evaluates and checkpoints alike.  ``bucket_cap_mb``: bucket size in
    MiB (PyTorch's 25 by default; see benchmarks/README.md, "Distributed", for what the measured costs recommend).
    The wrapped model is ``.module`` (``state_dict`` keys start with ``module.``, as in PyTorch).
    """

    def __init__(self, module: Module, broadcast_buffers: bool = True, bucket_cap_mb: float = 25.0,
                 process_group=None):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a minidl Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.process_group = process_group if process_group is not None else dist.group()
        self.broadcast_buffers = bool(broadcast_buffers)
        self.bucket_cap_mb = float(bucket_cap_mb)
        self.require_backward_grad_sync = True
        self._broadcast_coalesced(list(module.parameters()) + list(module.buffers()))
        params = [p for p in module.parameters() if p.requires_grad]
        self._buckets = self._make_buckets(params, int(self.bucket_cap_mb * 2**20))
        self._where = {id(p): (b, i) for b in self._buckets for i, p in enumerate(b.params)}
        self._hooks = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params]
        self._in_step = False      # some gradient of this step has arrived, not all buckets are reduced
        self._next_bucket = 0      # the next bucket to start (they start in index order)

    @staticmethod
    def _make_buckets(params, cap_bytes):
        buckets, current, size, key = [], [], 0, None
        for p in reversed(params):
            k = (p.data.dtype, p.device)
            nbytes = p.data.nbytes
            if current and (k != key or size + nbytes > cap_bytes):
                buckets.append(_Bucket(current))
                current, size = [], 0
            current.append(p)
            size += nbytes
            key = k
        if current:
            buckets.append(_Bucket(current))
        return buckets

    # ------------------------------------------------------------ forward
    def forward(self, *args, **kwargs):
        if self._in_step:
            missing = [name for name, p in self.module.named_parameters()
                       if id(p) in self._where and self._where[id(p)][1] not in self._where[id(p)][0].arrived]
            raise RuntimeError(
                "DistributedDataParallel: the previous backward did not produce a gradient for every parameter, so "
                "their averaging never finished; every parameter that requires grad must take part in the loss "
                "(freeze the others with requires_grad_(False) before wrapping). Parameters without a gradient: "
                + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
        if self.broadcast_buffers and self.process_group.size > 1:
            self.sync_buffers()
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Within this block backward leaves gradients local (they accumulate); the first backward after it
        averages the accumulated gradients."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # ------------------------------------------------------------ gradient averaging
    def _grad_ready(self, p):
        if not self.require_backward_grad_sync:
            return
        if not self._in_step:
            self._start_step()
        bucket, i = self._where[id(p)]
        off, n = bucket.offsets[i], p.data.size
        bucket.buffer[off:off + n] = p.grad.data.reshape(-1)
        bucket.arrived.add(i)
        bucket.pending -= 1
        while self._next_bucket < len(self._buckets) and self._buckets[self._next_bucket].pending == 0:
            b = self._buckets[self._next_bucket]
            b.work = self.process_group.all_reduce(b.buffer, "mean", async_op=True)
            self._next_bucket += 1
        if self._next_bucket == len(self._buckets):
            self._finish_step()

    def _start_step(self):
        for b in self._buckets:
            xp = backend.xp_for(b.params[0].device)
            b.buffer = xp.empty(b.numel, dtype=b.params[0].data.dtype)
            b.pending, b.arrived, b.work = len(b.params), set(), None
        self._next_bucket = 0
        self._in_step = True

    def _finish_step(self):
        for b in self._buckets:
            b.work.wait()
            for p, off in zip(b.params, b.offsets):
                p.grad = Tensor(b.buffer[off:off + p.data.size].reshape(p.data.shape))
            b.buffer, b.work = None, None
        self._in_step = False

    # ------------------------------------------------------------ broadcasting
    def sync_buffers(self):
        """Overwrite the buffers with rank 0's now (what every forward does with ``broadcast_buffers``); call it
        before evaluating ``.module`` on each rank's shard of a data set, so that every shard sees one model."""
        self._broadcast_coalesced(list(self.module.buffers()))

    def _broadcast_coalesced(self, tensors):
        """Overwrite ``tensors`` (in place) with rank 0's, one broadcast per (device, dtype)."""
        groups = {}
        for t in tensors:
            groups.setdefault((t.device, t.data.dtype), []).append(t)
        for (device, dtype), ts in groups.items():
            xp = backend.xp_for(device)
            flat = xp.concatenate([t.data.reshape(-1) for t in ts]) if len(ts) > 1 else xp.array(ts[0].data).reshape(-1)
            self.process_group.broadcast(flat, src=0)
            off = 0
            for t in ts:
                n = t.data.size
                t.data[...] = flat[off:off + n].reshape(t.data.shape)
                t._bump_version()
                off += n

    def extra_repr(self):
        return (f"world_size={self.process_group.size}, buckets={len(self._buckets)}, "
                f"bucket_cap_mb={self.bucket_cap_mb:g}, broadcast_buffers={self.broadcast_buffers}")
