"""DataLoader: batches of (images, labels) as minidl Tensors, optionally on the GPU, prefetched by threads.

Per batch: one gather of uint8 images with ``dataset.get_batch(indices)`` (NCHW), a move to
``device`` while still uint8 (4x less to copy than float32), ``dataset.transform`` applied to the
whole batch there (NumPy or CuPy), then conversion to ``dtype`` (uint8 is scaled to [0, 1] as by
ToFloat).  Labels come as an int64 Tensor on the same device.

Reproducibility: the loader owns a ``numpy.random.Generator`` (``seed=`` or ``generator=``; by
default one drawn from minidl's generator, so ``minidl.manual_seed`` fixes it).  Each epoch it
draws the shuffling order and one augmentation seed; batch ``i`` of the epoch augments with a
generator seeded by (epoch seed, i).  The batches are therefore identical whatever
``num_workers`` is and however the threads are scheduled.

``num_workers`` > 0 prepares batches in that many background *threads* (NumPy and CuPy release
the GIL in copies and ufuncs), keeping up to ``num_workers * prefetch_factor`` batches ready.
``timeout`` > 0 (seconds, as PyTorch's) bounds the wait for each batch from them; past it, iteration
raises RuntimeError and the late batch's thread is left to finish on its own (a thread cannot be stopped).
"""
from __future__ import annotations

import collections
import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

import numpy as np

from minidl.autograd import Tensor
from minidl.backend import check_device, default_generator, to_device
from minidl.data.dataset import stack_items
from minidl.data.sampler import BatchSampler, RandomSampler, SequentialSampler
from minidl.data.transforms import ToFloat, apply_transform


class DataLoader:
    """Iterate over ``dataset`` in batches of ``(images Tensor, labels int64 Tensor)``.

    Arguments (PyTorch's names): ``batch_size=1``, ``shuffle=False``, ``sampler``, ``batch_sampler``,
    ``num_workers=0`` (threads here), ``drop_last=False``, ``timeout=0`` (no limit), ``prefetch_factor=2``,
    ``generator``;
    and ``seed`` (seeds the loader's own generator), ``device`` ('cpu' or 'cuda'), ``dtype``
    ('float32' by default; ``None`` leaves the transform's output dtype, e.g. uint8).
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, sampler=None, batch_sampler=None,
                 num_workers: int = 0, drop_last: bool = False, device=None, seed: int | None = None,
                 generator=None, dtype="float32", prefetch_factor: int = 2, timeout: float = 0):
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler is mutually exclusive with batch_size, shuffle, sampler and drop_last")
        elif shuffle and sampler is not None:
            raise ValueError("sampler and shuffle=True are mutually exclusive: the sampler decides the order")
        if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if not isinstance(prefetch_factor, (int, np.integer)) or prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be an int >= 1, got {prefetch_factor!r}")
        if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        if not timeout >= 0 or not math.isfinite(timeout):
            raise ValueError(f"timeout option should be non-negative (and finite), got {timeout!r}")
        if timeout > 0 and num_workers == 0:  # PyTorch refuses this too (when iterating)
            raise ValueError(f"timeout={timeout!r} bounds the wait for worker threads: it needs num_workers > 0")
        self.timeout = timeout
        if generator is None:
            generator = np.random.default_rng(seed if seed is not None
                                              else int(default_generator(np).integers(2 ** 63)))
        elif seed is not None:
            raise ValueError("pass either seed or generator, not both")
        self.dataset = dataset
        self.generator = generator
        self.device = check_device(device)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.num_workers, self.prefetch_factor = int(num_workers), int(prefetch_factor)
        if batch_sampler is None:
            if sampler is None:
                sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.batch_size = getattr(batch_sampler, "batch_size", None)
        self.drop_last = getattr(batch_sampler, "drop_last", False)

    def __len__(self):
        return len(self.batch_sampler)

    def _load(self, indices, seed):
        ds = self.dataset
        if hasattr(ds, "get_batch"):
            x, y = ds.get_batch(indices)
            transform, target_transform = getattr(ds, "transform", None), getattr(ds, "target_transform", None)
        else:  # any map-style dataset: its items are final
            x, y = stack_items([ds[int(i)] for i in indices])
            transform = target_transform = None
        x = to_device(x, self.device)
        if transform is not None:
            x = apply_transform(transform, x, rng=np.random.default_rng(seed))
        if self.dtype is not None and x.dtype != self.dtype:
            x = ToFloat(self.dtype)(x) if x.dtype == np.uint8 else x.astype(self.dtype)
        if target_transform is not None:
            y = target_transform(y)
        return Tensor(x), Tensor(to_device(y, self.device))

    def __iter__(self):
        batches = list(self.batch_sampler)  # draws this epoch's order now, in the caller's thread
        epoch_seed = int(self.generator.integers(2 ** 63))
        jobs = [(np.asarray(idx, dtype=np.int64), (epoch_seed, i)) for i, idx in enumerate(batches)]
        if self.num_workers == 0:
            for idx, seed in jobs:
                yield self._load(idx, seed)
            return
        pool = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="minidl-loader")
        pending = collections.deque()
        todo = iter(jobs)
        timed_out = False
        try:
            for job in todo:
                pending.append(pool.submit(self._load, *job))
                if len(pending) >= self.num_workers * self.prefetch_factor:
                    break
            while pending:
                try:
                    batch = pending.popleft().result(timeout=self.timeout or None)
                except FuturesTimeout:
                    timed_out = True
                    raise RuntimeError(f"DataLoader timed out after {self.timeout} seconds") from None
                for job in todo:
                    pending.append(pool.submit(self._load, *job))
                    break
                yield batch
        finally:  # also when the consumer stops early: drop queued work, wait for running batches (not a late one)
            for f in pending:
                f.cancel()
            pool.shutdown(wait=not timed_out)

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"batches={len(self)}, device={self.device!r}, num_workers={self.num_workers}"
                + (f", timeout={self.timeout}" if self.timeout else "") + ")")
