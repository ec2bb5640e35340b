"""Image transforms applied to a whole batch at once, on NumPy or CuPy arrays.

Every transform takes a batch ``x`` of shape (N, C, H, W) (uint8 or float) and returns a batch;
the array module is the batch's own (``xp = get_array_module(x)``), so the same pipeline runs on
the GPU after the loader has moved the uint8 batch there.  Random transforms draw per-sample
choices (N flips, N crop offsets) from a host ``numpy.random.Generator``: the ``rng`` argument
when given (the DataLoader passes one seeded per batch, so results depend only on its seed), else
minidl's default generator (``minidl.manual_seed``).  Random draws never depend on the backend:
the same seed gives the same augmentation on the CPU and on the GPU.

Names and arguments follow torchvision.transforms.
"""
from __future__ import annotations

import numbers

import numpy as _host_np  # host-side random draws and index bookkeeping only

from minidl.backend import default_generator, get_array_module

__all__ = ["Transform", "Compose", "ToFloat", "Normalize", "RandomHorizontalFlip", "RandomVerticalFlip",
           "Pad", "RandomCrop", "CenterCrop", "Resize", "Lambda", "apply_transform",
           "MNIST_MEAN", "MNIST_STD", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD"]

# Commonly quoted per-channel statistics of the training sets (in [0, 1] units).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _check_batch(x, who: str):
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{who} expects a batch of shape (N, C, H, W), got shape {getattr(x, 'shape', type(x))}")


def _pair(v, name: str) -> tuple:
    if isinstance(v, numbers.Integral):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(a, numbers.Integral) for a in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")


def apply_transform(t, x, rng=None):
    """Call ``t`` on a batch: minidl transforms get ``rng``; any other callable is called as ``t(x)``."""
    return t(x, rng=rng) if isinstance(t, Transform) else t(x)


class Transform:
    """Base class.  ``__call__(x, rng=None)`` maps a batch (N, C, H, W) to a batch."""

    def __call__(self, x, rng=None):
        raise NotImplementedError

    @staticmethod
    def _rng(rng):
        return rng if rng is not None else default_generator(_host_np)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply ``transforms`` in order, passing the same generator to each."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = apply_transform(t, x, rng)
        return x

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class Lambda(Transform):
    """Wrap a function of the batch (and optionally ``rng=``) as a transform."""

    def __init__(self, fn, takes_rng: bool = False):
        self.fn, self.takes_rng = fn, takes_rng

    def __call__(self, x, rng=None):
        return self.fn(x, rng=self._rng(rng)) if self.takes_rng else self.fn(x)


class ToFloat(Transform):
    """uint8 in [0, 255] -> float32 in [0, 1] (x / 255); a float batch is only cast to ``dtype``."""

    def __init__(self, dtype="float32"):
        self.dtype = dtype

    def __call__(self, x, rng=None):
        xp = get_array_module(x)
        if x.dtype == xp.uint8:
            return x.astype(self.dtype) * xp.asarray(1 / 255, dtype=self.dtype)
        if x.dtype.kind != "f":
            raise TypeError(f"ToFloat expects uint8 or floating images, got dtype {x.dtype}")
        return x.astype(self.dtype, copy=False)


class Normalize(Transform):
    """y[:, c] = (x[:, c] - mean[c]) / std[c].  A uint8 batch is first scaled to [0, 1] (ToFloat)."""

    def __init__(self, mean, std):
        self.mean = tuple(float(m) for m in (mean if isinstance(mean, (tuple, list)) else [mean]))
        self.std = tuple(float(s) for s in (std if isinstance(std, (tuple, list)) else [std]))
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, x, rng=None):
        _check_batch(x, "Normalize")
        xp = get_array_module(x)
        if x.dtype.kind != "f":
            x = ToFloat()(x)
        c = x.shape[1]
        if len(self.mean) not in (1, c):
            raise ValueError(f"Normalize has {len(self.mean)} channel statistics but the batch has {c} channels "
                             f"(shape {x.shape})")
        mean = xp.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        inv_std = (1 / xp.asarray(self.std, dtype=_host_np.float64)).astype(x.dtype).reshape(1, -1, 1, 1)
        return (x - mean) * inv_std


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p`` (an independent draw per image)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, x, rng=None):
        _check_batch(x, type(self).__name__)
        xp = get_array_module(x)
        flip = xp.asarray(self._rng(rng).random(x.shape[0]) < self.p).reshape(-1, 1, 1, 1)
        return xp.where(flip, self._flipped(x), x)

    @staticmethod
    def _flipped(x):
        return x[..., ::-1]


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror each image top-bottom with probability ``p``."""

    @staticmethod
    def _flipped(x):
        return x[..., ::-1, :]


_PAD_MODES = {"constant": "constant", "edge": "edge", "reflect": "reflect", "symmetric": "symmetric"}


def _padding4(padding) -> tuple:
    """torchvision's padding: int (all sides), (left/right, top/bottom) or (left, top, right, bottom)."""
    if isinstance(padding, numbers.Integral):
        p = int(padding)
        return p, p, p, p
    if isinstance(padding, (tuple, list)) and len(padding) in (2, 4):
        p = tuple(int(v) for v in padding)
        return p if len(p) == 4 else (p[0], p[1], p[0], p[1])
    raise TypeError(f"padding must be an int, a pair or a 4-tuple, got {padding!r}")


def _pad(x, left, top, right, bottom, fill=0, padding_mode="constant"):
    if padding_mode not in _PAD_MODES:
        raise ValueError(f"padding_mode must be one of {sorted(_PAD_MODES)}, got {padding_mode!r}")
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"padding must be non-negative, got {(left, top, right, bottom)}")
    if left == top == right == bottom == 0:
        return x
    xp = get_array_module(x)
    width = ((0, 0), (0, 0), (top, bottom), (left, right))
    if padding_mode == "constant":
        return xp.pad(x, width, mode="constant", constant_values=fill)
    return xp.pad(x, width, mode=_PAD_MODES[padding_mode])


class Pad(Transform):
    """Pad every image: ``padding`` as torchvision; ``padding_mode`` constant (``fill``), edge, reflect, symmetric."""

    def __init__(self, padding, fill=0, padding_mode="constant"):
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode
        self._p = _padding4(padding)
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode must be one of {sorted(_PAD_MODES)}, got {padding_mode!r}")

    def __call__(self, x, rng=None):
        _check_batch(x, "Pad")
        return _pad(x, *self._p, fill=self.fill, padding_mode=self.padding_mode)


def _crop_windows(x, top, left, h: int, w: int):
    """out[n] = x[n, :, top[n]:top[n]+h, left[n]:left[n]+w], as one gather over a strided window view."""
    xp = get_array_module(x)
    n, c, hh, ww = x.shape
    sn, sc, sh, sw = x.strides
    windows = xp.lib.stride_tricks.as_strided(x, shape=(n, c, hh - h + 1, ww - w + 1, h, w),
                                               strides=(sn, sc, sh, sw, sh, sw))
    rows = xp.arange(n)
    return windows[rows, :, xp.asarray(top), xp.asarray(left)]  # (N, C, h, w): advanced axes come first


class RandomCrop(Transform):
    """Pad (optionally), then cut an independent random ``size`` window out of each image.

    Arguments as torchvision: ``size`` int or (h, w); ``padding``; ``pad_if_needed``; ``fill``;
    ``padding_mode`` in constant, edge, reflect, symmetric.
    """

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        self.size = _pair(size, "size")
        self.padding, self.pad_if_needed, self.fill, self.padding_mode = padding, pad_if_needed, fill, padding_mode
        self._p = _padding4(padding) if padding is not None else (0, 0, 0, 0)
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode must be one of {sorted(_PAD_MODES)}, got {padding_mode!r}")

    def __call__(self, x, rng=None):
        _check_batch(x, "RandomCrop")
        x = _pad(x, *self._p, fill=self.fill, padding_mode=self.padding_mode)
        h, w = self.size
        if self.pad_if_needed and (x.shape[2] < h or x.shape[3] < w):
            dh, dw = max(h - x.shape[2], 0), max(w - x.shape[3], 0)
            x = _pad(x, dw, dh, dw, dh, fill=self.fill, padding_mode=self.padding_mode)
        n, _, hh, ww = x.shape
        if hh < h or ww < w:
            raise ValueError(f"RandomCrop size {self.size} is larger than the (padded) images {(hh, ww)}")
        gen = self._rng(rng)
        top = gen.integers(0, hh - h + 1, size=n)
        left = gen.integers(0, ww - w + 1, size=n)
        return _crop_windows(x, top, left, h, w)


class CenterCrop(Transform):
    """Cut the central ``size`` window (torchvision rounds the offset)."""

    def __init__(self, size):
        self.size = _pair(size, "size")

    def __call__(self, x, rng=None):
        _check_batch(x, "CenterCrop")
        h, w = self.size
        hh, ww = x.shape[2:]
        if hh < h or ww < w:
            raise ValueError(f"CenterCrop size {self.size} is larger than the images {(hh, ww)}")
        top, left = int(round((hh - h) / 2.0)), int(round((ww - w) / 2.0))
        return x[:, :, top:top + h, left:left + w]


def _source_index(xp, n_out: int, n_in: int, mode: str):
    """Source rows for resizing n_in -> n_out: (i0, i1, weight of i1) for bilinear, i0 for nearest."""
    scale = n_in / n_out
    dst = _host_np.arange(n_out, dtype=_host_np.float64)
    if mode == "nearest":  # PyTorch 'nearest': floor(dst * scale)
        return xp.asarray(_host_np.minimum(_host_np.floor(dst * scale).astype(_host_np.int64), n_in - 1))
    # bilinear, align_corners=False: sample at the pixel centre, src = (dst + 0.5) * scale - 0.5
    src = _host_np.clip((dst + 0.5) * scale - 0.5, 0, n_in - 1)
    i0 = _host_np.floor(src).astype(_host_np.int64)
    i1 = _host_np.minimum(i0 + 1, n_in - 1)
    return xp.asarray(i0), xp.asarray(i1), xp.asarray((src - i0).astype(_host_np.float32))


class Resize(Transform):
    """Resize every image to ``size``, bilinear (half-pixel centres, align_corners=False) or nearest.

    ``size`` (h, w), or an int: the shorter side becomes ``size`` keeping the aspect ratio (a square
    image becomes size x size).  uint8 input is interpolated in float32 and rounded back to uint8;
    no antialiasing (exact for upsampling, as PyTorch's ``interpolate``).
    """

    def __init__(self, size, interpolation: str = "bilinear"):
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.size = int(size) if isinstance(size, numbers.Integral) else _pair(size, "size")
        self.interpolation = interpolation

    def _out_size(self, hh, ww):
        if isinstance(self.size, tuple):
            return self.size
        s = self.size
        return (s, max(1, int(s * ww / hh))) if hh <= ww else (max(1, int(s * hh / ww)), s)

    def __call__(self, x, rng=None):
        _check_batch(x, "Resize")
        xp = get_array_module(x)
        hh, ww = x.shape[2:]
        h, w = self._out_size(hh, ww)
        if (h, w) == (hh, ww):
            return x
        if self.interpolation == "nearest":
            return x[:, :, _source_index(xp, h, hh, "nearest")][:, :, :, _source_index(xp, w, ww, "nearest")]
        dtype = x.dtype
        xf = x.astype(xp.float32) if dtype.kind != "f" else x
        r0, r1, wr = _source_index(xp, h, hh, "bilinear")
        c0, c1, wc = _source_index(xp, w, ww, "bilinear")
        wr, wc = wr.astype(xf.dtype), wc.astype(xf.dtype)
        one = xp.asarray(1, dtype=xf.dtype)
        rows = xf[:, :, r0] * (one - wr)[:, None] + xf[:, :, r1] * wr[:, None]
        out = rows[..., c0] * (one - wc) + rows[..., c1] * wc
        if dtype == xp.uint8:
            return xp.clip(xp.rint(out), 0, 255).astype(xp.uint8)
        return out.astype(dtype, copy=False)
