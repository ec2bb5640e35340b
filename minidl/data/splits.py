"""Splitting a dataset: first-N / last-M, seeded random splits (optionally stratified by label), Subset."""
from __future__ import annotations

import math

import numpy as np

from minidl.backend import default_generator
from minidl.data.dataset import Subset

__all__ = ["Subset", "first_last_split", "random_split", "split_lengths"]


def first_last_split(dataset, n_first: int, n_last: int | None = None):
    """``(Subset(first n_first samples), Subset(last n_last samples))``; ``n_last`` defaults to the rest.

    E.g. ``train, val = first_last_split(CIFAR10(train=True), 49000, 1000)``.
    """
    n = len(dataset)
    if n_last is None:
        n_last = n - n_first
    if n_first < 0 or n_last < 0 or n_first + n_last > n:
        raise ValueError(f"cannot take the first {n_first} and the last {n_last} of {n} samples")
    return Subset(dataset, np.arange(n_first)), Subset(dataset, np.arange(n - n_last, n))


def split_lengths(n: int, lengths) -> list:
    """Integer lengths summing to ``n``: ints as given, or fractions summing to 1 (PyTorch's rule:
    floor each, then hand out the remainder one by one from the first)."""
    lengths = list(lengths)
    if all(isinstance(v, (int, np.integer)) for v in lengths):
        if sum(lengths) != n or min(lengths) < 0:
            raise ValueError(f"lengths {lengths} must be non-negative and sum to the dataset length {n}")
        return [int(v) for v in lengths]
    if not math.isclose(sum(lengths), 1.0, abs_tol=1e-6) or min(lengths) < 0:
        raise ValueError(f"fractional lengths {lengths} must be non-negative and sum to 1")
    out = [int(math.floor(n * f)) for f in lengths]
    for i in range(n - sum(out)):
        out[i % len(out)] += 1
    return out


def _stratified_order(labels: np.ndarray, gen) -> np.ndarray:
    """A random order of all indices in which every prefix holds each class in proportion (within one).

    Shuffle each class, give its k-th member (of n_c) the key (k + 0.5) / n_c, sort by key
    (ties in random order): consecutive chunks of this order are stratified samples.
    """
    keys = np.empty(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keys[gen.permutation(members)] = (np.arange(len(members)) + 0.5) / len(members)
    tie = gen.random(len(labels))
    return np.lexsort((tie, keys))


def random_split(dataset, lengths, seed: int | None = None, generator=None, stratify=False):
    """Split ``dataset`` into non-overlapping random Subsets of the given ``lengths``.

    ``lengths``: ints summing to ``len(dataset)`` or fractions summing to 1 (e.g. ``[0.8, 0.2]``).
    ``seed`` or ``generator`` (a numpy Generator) make it reproducible; default minidl's generator.
    ``stratify``: False; True to keep each class's share equal in every part (within one sample),
    using ``dataset.targets``; or an array of labels to stratify by.
    """
    n = len(dataset)
    sizes = split_lengths(n, lengths)
    if generator is None:
        generator = np.random.default_rng(seed) if seed is not None else default_generator(np)
    if stratify is False or stratify is None:
        order = generator.permutation(n)
    else:
        labels = np.asarray(dataset.targets if stratify is True else stratify).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"stratify labels have length {len(labels)}, the dataset {n}")
        order = _stratified_order(labels, generator)
    bounds = np.cumsum([0] + sizes)
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
