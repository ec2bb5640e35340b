"""Samplers: which dataset indices an epoch visits, in what order (PyTorch's names).

All index bookkeeping is on the host.  Random samplers draw from a ``numpy.random.Generator``
(``generator=``; default: minidl's, seeded by ``minidl.manual_seed``).  Each sampler can give the
whole epoch as one int64 array (``index_array()``), which ``BatchSampler`` cuts into batches.
"""
from __future__ import annotations

import numpy as np

from minidl.backend import default_generator


class Sampler:
    """Base class: ``__iter__`` yields dataset indices; ``__len__`` counts them."""

    def index_array(self) -> np.ndarray:
        return np.fromiter(iter(self), dtype=np.int64)

    def __iter__(self):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class _ArraySampler(Sampler):
    def __iter__(self):
        return iter(self.index_array().tolist())


class SequentialSampler(_ArraySampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def index_array(self):
        return np.arange(len(self.data_source), dtype=np.int64)

    def __len__(self):
        return len(self.data_source)


class RandomSampler(_ArraySampler):
    """A fresh random permutation each epoch (or ``num_samples`` draws with replacement)."""

    def __init__(self, data_source, replacement: bool = False, num_samples: int | None = None, generator=None):
        self.data_source, self.replacement, self.generator = data_source, bool(replacement), generator
        self._num_samples = num_samples
        if num_samples is not None and (not isinstance(num_samples, (int, np.integer)) or num_samples <= 0):
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else int(self._num_samples)

    def index_array(self):
        gen = self.generator if self.generator is not None else default_generator(np)
        n = len(self.data_source)
        if self.replacement:
            return gen.integers(0, n, size=self.num_samples, dtype=np.int64)
        reps = -(-self.num_samples // n) if n else 0
        return np.concatenate([gen.permutation(n) for _ in range(reps)])[:self.num_samples].astype(np.int64) \
            if reps else np.zeros(0, np.int64)

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(_ArraySampler):
    """The given ``indices`` in a fresh random order each epoch."""

    def __init__(self, indices, generator=None):
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.generator = generator

    def index_array(self):
        gen = self.generator if self.generator is not None else default_generator(np)
        return self.indices[gen.permutation(len(self.indices))]

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(_ArraySampler):
    """``num_samples`` indices drawn with probability proportional to ``weights``."""

    def __init__(self, weights, num_samples: int, replacement: bool = True, generator=None):
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size == 0 or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        if not replacement and num_samples > np.count_nonzero(w):
            raise ValueError(f"cannot draw {num_samples} samples without replacement from "
                             f"{np.count_nonzero(w)} non-zero weights")
        self.weights, self.num_samples, self.replacement, self.generator = w, int(num_samples), replacement, generator

    def index_array(self):
        gen = self.generator if self.generator is not None else default_generator(np)
        return gen.choice(len(self.weights), size=self.num_samples, replace=self.replacement,
                          p=self.weights / self.weights.sum()).astype(np.int64)

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Cut the sampler's epoch into int64 index arrays of ``batch_size`` (the last one shorter unless drop_last)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool = False):
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), bool(drop_last)

    def __iter__(self):
        idx = self.sampler.index_array() if hasattr(self.sampler, "index_array") \
            else np.fromiter(iter(self.sampler), dtype=np.int64)
        n = len(idx)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            yield idx[start:start + self.batch_size]

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class DistributedSampler(_ArraySampler):
    """This rank's share of ``dataset`` for data-parallel training (PyTorch's semantics).

    Each epoch the indices (shuffled with a generator seeded by ``seed + epoch``, the same on every rank; call
    ``set_epoch(epoch)`` before each epoch) are padded by repeating their start to a multiple of
    ``num_replicas`` (or, with ``drop_last``, cut to one), and rank r takes every ``num_replicas``-th from r on: the
    ranks' shares partition the (padded or cut) epoch.  ``num_replicas`` and ``rank`` default to the default
    process group's (``minidl.distributed.init_process_group``).
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            from minidl import distributed as dist
            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler: give num_replicas and rank, or call "
                                   "minidl.distributed.init_process_group() first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.epoch = bool(shuffle), int(seed), bool(drop_last), 0
        n = len(dataset)
        if self.drop_last:  # the tail that does not fill a round is dropped
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int):
        """Shuffle differently each epoch (the same way on every rank)."""
        self.epoch = int(epoch)

    def index_array(self):
        n = len(self.dataset)
        if self.shuffle:
            idx = np.random.default_rng(self.seed + self.epoch).permutation(n).astype(np.int64)
        else:
            idx = np.arange(n, dtype=np.int64)
        if self.total_size > n:  # pad with the epoch's first indices (repeated if the padding is longer than n)
            idx = np.resize(idx, self.total_size)
        return idx[:self.total_size][self.rank::self.num_replicas]

    def __len__(self):
        return self.num_samples
