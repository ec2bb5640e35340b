"""Dataset protocol, in-memory image datasets and Subset.

A dataset is anything with ``__len__`` and ``__getitem__`` (PyTorch's map-style protocol).
minidl's datasets also have the batched fast path ``get_batch(indices) -> (images, labels)``:
one NumPy gather returning uint8 images in NCHW and int64 labels, *before* transforms.  The
DataLoader calls it and then applies ``dataset.transform`` to the whole batch at once.
"""
from __future__ import annotations

import numpy as np

from minidl.data.transforms import apply_transform


class Dataset:
    """Base class: subclasses define ``__len__`` and ``__getitem__`` (and optionally ``get_batch``)."""

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


def _as_indices(indices, n: int) -> np.ndarray:
    """Host int64 index array from a list/array/range/slice, bounds-checked against ``n`` (negatives wrap)."""
    if isinstance(indices, slice):
        return np.arange(n, dtype=np.int64)[indices]
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean mask of shape {idx.shape} does not match a dataset of length {n}")
        return np.flatnonzero(idx).astype(np.int64)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64).reshape(-1)
    if idx.min() < -n or idx.max() >= n:
        raise IndexError(f"index out of range for a dataset of length {n}: min {idx.min()}, max {idx.max()}")
    return np.where(idx < 0, idx + n, idx)


class ArrayDataset(Dataset):
    """Images and integer labels held in memory as arrays.

    ``images``: uint8 (or float) array in the layout named by ``layout`` ("NCHW", "NHWC" or "NHW" for
    single-channel images); stored internally as an NCHW view so that ``get_batch`` is one gather.
    ``.data`` gives the images back in the dataset's public layout (torchvision's: MNIST (N, 28, 28),
    CIFAR (N, 32, 32, 3)); ``.targets`` is an int64 array; ``.classes`` a list of names.
    """

    _layout = "NCHW"
    classes = None

    def __init__(self, images, targets, transform=None, target_transform=None, classes=None, layout=None):
        if layout is not None:
            self._layout = layout
        self.data = images
        targets = np.asarray(targets)
        if targets.ndim != 1 or targets.dtype.kind not in "iu":
            raise TypeError(f"targets must be a 1-D integer array, got shape {targets.shape} dtype {targets.dtype}")
        if len(targets) != len(self._images):
            raise ValueError(f"{len(self._images)} images but {len(targets)} targets")
        self.targets = targets.astype(np.int64, copy=False)
        self.transform = transform
        self.target_transform = target_transform
        if classes is not None:
            self.classes = list(classes)

    # ---- the public layout of .data <-> the internal NCHW view
    @property
    def data(self):
        if self._layout == "NHWC":
            return self._images.transpose(0, 2, 3, 1)
        if self._layout == "NHW":
            return self._images[:, 0]
        return self._images

    @data.setter
    def data(self, images):
        images = np.asarray(images)
        want = {"NCHW": 4, "NHWC": 4, "NHW": 3}[self._layout]
        if images.ndim != want:
            raise ValueError(f"images must be a {want}-D array in {self._layout} layout, got shape {images.shape}")
        if self._layout == "NHWC":
            images = images.transpose(0, 3, 1, 2)
        elif self._layout == "NHW":
            images = images[:, None]
        self._images = images

    @property
    def class_to_idx(self) -> dict:
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self):
        return len(self._images)

    def get_batch(self, indices):
        """(images uint8 NCHW contiguous, labels int64) for ``indices``, before any transform."""
        idx = _as_indices(indices, len(self))
        return np.ascontiguousarray(self._images[idx]), self.targets[idx]

    def __getitem__(self, index):
        """(image CHW after ``transform``, label as int after ``target_transform``)."""
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}; use get_batch for many")
        x, y = self.get_batch([index])
        if self.transform is not None:
            x = apply_transform(self.transform, x)
        if self.target_transform is not None:
            y = self.target_transform(y)
        y = y[0]
        return x[0], (int(y) if np.ndim(y) == 0 else y)

    def __repr__(self):
        lines = [f"Dataset {type(self).__name__}", f"    Number of datapoints: {len(self)}"]
        if getattr(self, "root", None):
            lines.append(f"    Root location: {self.root}")
        if getattr(self, "split", None):
            lines.append(f"    Split: {self.split}")
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        return "\n".join(lines)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (in that order).

    ``transform`` overrides the parent's (e.g. augment the training part of a split, not the
    validation part); by default the parent's transform applies.
    """

    def __init__(self, dataset, indices, transform=None):
        self.dataset = dataset
        self.indices = _as_indices(indices, len(dataset))
        self._transform = transform

    @property
    def transform(self):
        if self._transform is not None:
            return self._transform
        return getattr(self.dataset, "transform", None) if hasattr(self.dataset, "get_batch") else None

    @transform.setter
    def transform(self, t):
        self._transform = t

    @property
    def target_transform(self):
        return getattr(self.dataset, "target_transform", None) if hasattr(self.dataset, "get_batch") else None

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if self._transform is None or not hasattr(self.dataset, "get_batch"):
            return self.dataset[int(self.indices[index])]
        x, y = self.get_batch([index])
        x = apply_transform(self._transform, x)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x[0], int(y[0])

    def get_batch(self, indices):
        idx = self.indices[_as_indices(indices, len(self))]
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(idx)
        return stack_items([self.dataset[int(i)] for i in idx])

    @property
    def targets(self):
        return np.asarray(self.dataset.targets)[self.indices]

    @property
    def data(self):
        return self.dataset.data[self.indices]

    @property
    def classes(self):
        return self.dataset.classes

    def __repr__(self):
        return f"Subset({len(self)} of {type(self.dataset).__name__} with {len(self.dataset)})"


def stack_items(items):
    """Stack a list of ``(x, y)`` samples into ``(xs, ys int64)``: the loader's path for plain datasets."""
    if not items:
        raise ValueError("cannot build a batch from no samples")
    try:
        xs = [x.data if hasattr(x, "grad") else x for x, _ in items]  # accept minidl Tensors too
    except (TypeError, ValueError) as e:
        raise TypeError("dataset items must be (input, label) pairs") from e
    from minidl.backend import get_array_module
    xp = get_array_module(*xs)
    ys = [y.item() if hasattr(y, "item") else y for _, y in items]
    return xp.stack([xp.asarray(x) for x in xs]), np.asarray(ys, dtype=np.int64)
