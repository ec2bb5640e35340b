"""Dataset statistics: per-channel mean and standard deviation (for Normalize)."""
from __future__ import annotations

import numpy as np

from minidl.backend import is_array, to_numpy


def mean_std(dataset, batch_size: int = 2000):
    """Per-channel mean and (population) std over every pixel of every image, in [0, 1] units for uint8.

    mean_c = sum(x_c) / M,  std_c = sqrt(sum(x_c^2) / M - mean_c^2), M = N * H * W.  uint8 data is
    summed exactly in integers; the images are read raw through ``get_batch`` (no transforms).
    Returns ``(mean, std)`` as tuples of floats, one per channel.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot compute statistics of an empty dataset")
    s = q = None
    count = 0
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        if hasattr(dataset, "get_batch"):
            x = to_numpy(dataset.get_batch(idx)[0])
        else:
            x = np.stack([to_numpy(_array(dataset[int(i)][0])) for i in idx])
        if x.ndim != 4:
            raise ValueError(f"expected image batches of shape (N, C, H, W), got {x.shape}")
        if x.dtype == np.uint8:
            xs = x.astype(np.uint64)
            bs, bq = xs.sum(axis=(0, 2, 3)), (xs * xs).sum(axis=(0, 2, 3))
        else:
            xs = x.astype(np.float64)
            bs, bq = xs.sum(axis=(0, 2, 3)), (xs * xs).sum(axis=(0, 2, 3))
        s, q = (bs, bq) if s is None else (s + bs, q + bq)
        count += x.shape[0] * x.shape[2] * x.shape[3]
        scale = 255.0 if x.dtype == np.uint8 else 1.0
    mean = s.astype(np.float64) / count / scale
    var = np.maximum(q.astype(np.float64) / count / scale ** 2 - mean ** 2, 0.0)
    return tuple(float(m) for m in mean), tuple(float(v) for v in np.sqrt(var))


def _array(v):
    """A Tensor's array, or an array itself (not its .data buffer, which for CuPy is a pointer)."""
    return v if is_array(v) else getattr(v, "data", v)
