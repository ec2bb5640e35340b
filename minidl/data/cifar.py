"""CIFAR-10 and CIFAR-100, "python version", from the extracted folder or straight from the .tar.gz.

Format (Krizhevsky 2009): each batch file is a pickled dict with ``data`` (uint8, N x 3072: the
1024 red, then green, then blue values of a 32x32 image, row-major) and the labels (``labels`` for
CIFAR-10; ``fine_labels`` and ``coarse_labels`` for CIFAR-100); the meta file holds the class
names.  ``data.reshape(N, 3, 32, 32)`` is NCHW with no copy; ``.data`` shows it as (N, 32, 32, 3)
like torchvision.  Pickles are read with an unpickler that only allows the NumPy array
reconstructors (a dataset file cannot run code) and lets a file build no more bytes than it holds,
and every key, dtype, shape, label range and count is checked; a bad file raises DatasetFormatError
naming it.

Lookup order: ``ROOT/cifar-10-batches-py/`` (``ROOT/cifar-100-python/``), then the archive
``ROOT/cifar-10-python.tar.gz`` (``ROOT/cifar-100-python.tar.gz``), then ``download=True``
(MD5-checked archive, then extracted).  Extracted batch files are *not* MD5-checked, so copies
such as the JPEG re-encoding in shared/datasets load as long as their format is right.
"""
from __future__ import annotations

import codecs
import copyreg
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from minidl.data.dataset import ArrayDataset
from minidl.data.download import (DatasetFormatError, DatasetNotFoundError, DownloadError, download_url,
                                  extract_archive, resolve_root)

_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"), ("builtins", "bytearray"),
            # generic reconstruction of plain objects (any class it names still has to pass this list)
            ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"), ("builtins", "object"),
            ("__builtin__", "object")}
_SLACK = 1 << 20  # bytes a file may build beyond its own size (dtypes, small headers)


class _ArrayType:
    """What a pickle gets for ``numpy.ndarray``: a name that only ``_reconstruct`` turns into the class, so that
    the file cannot call ``ndarray(shape)`` or ``ndarray.__new__`` to allocate an array of any size."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("refusing to call numpy.ndarray: an array of any size, not one the file holds")


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _text_bytes(value) -> int:
    return len(value) * (1 if isinstance(value, (bytes, bytearray, memoryview)) else 4)


class _SafeUnpickler(pickle.Unpickler):
    """Only NumPy arrays, dtypes and builtin containers: a dataset file cannot import arbitrary code, and what it
    builds (arrays, byte strings) may not add up to more than the file's size (plus ``_SLACK``): 47 bytes asking
    for ``bytearray(400_000_000)`` are refused before anything is allocated."""

    def __init__(self, file, budget: int, **kwargs):
        super().__init__(file, **kwargs)
        self.budget, self.size = budget, budget - _SLACK

    def find_class(self, module, name):
        if module.startswith("numpy.core."):  # pickles written by NumPy 1.x
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not an array type")
        if (module, name) == ("numpy", "ndarray"):
            return _ArrayType
        if name == "_reconstruct":
            return self._bounded(self._reconstruct, lambda cls, shape, dtype: _nbytes(shape, dtype), name)
        if name == "_reconstructor":
            return self._reconstructor
        if name == "bytearray":
            return self._bounded(bytearray, self._bytearray_size, name)
        if name == "encode":
            return self._bounded(codecs.encode, lambda value, *args: _text_bytes(value), "encode")
        if name == "scalar":
            return self._bounded(np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar,
                                 lambda dtype, *args: np.dtype(dtype).itemsize, name)
        if module.startswith("numpy._core.") and not hasattr(np, "_core"):  # NumPy < 2
            module = "numpy.core." + module[len("numpy._core."):]
        return super().find_class(module, name)  # dtype, _frombuffer (a view of bytes already built), object

    def _bounded(self, build, size_of, what):
        def call(*args):
            n = size_of(*args)
            if n > self.budget:
                raise pickle.UnpicklingError(f"refusing to build {what} of {n:,} bytes: more than a file of "
                                             f"{self.size:,} bytes can hold")
            self.budget -= n
            return build(*args)
        return call

    @staticmethod
    def _reconstruct(cls, shape, dtype):
        if cls is not _ArrayType:
            raise pickle.UnpicklingError(f"refusing to reconstruct a {getattr(cls, '__name__', cls)}: not an array")
        multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
        return multiarray._reconstruct(np.ndarray, shape, dtype)

    @staticmethod
    def _reconstructor(cls, base, state):
        if base is not object:  # e.g. base ndarray or bytearray would allocate whatever ``state`` says
            raise pickle.UnpicklingError(f"refusing to reconstruct from a {getattr(base, '__name__', base)}")
        return copyreg._reconstructor(cls, base, state)

    @staticmethod
    def _bytearray_size(value=b"", *args) -> int:
        if isinstance(value, int):
            return value
        if isinstance(value, (str, bytes, bytearray, memoryview)):
            return _text_bytes(value)
        if hasattr(value, "__len__"):
            return len(value)
        raise pickle.UnpicklingError(f"refusing to build a bytearray from a {type(value).__name__}")


def load_pickle(blob: bytes, where: str) -> dict:
    """Unpickle a CIFAR file (Python 2 or 3 pickles) into a dict with str keys."""
    try:
        obj = _SafeUnpickler(io.BytesIO(blob), len(blob) + _SLACK, encoding="latin1").load()
    except Exception as e:  # truncated files raise EOFError, UnpicklingError, ValueError, ...
        refused = isinstance(e, pickle.UnpicklingError) and str(e).startswith("refusing")
        raise DatasetFormatError(f"{where}: cannot unpickle ({type(e).__name__}: {e})"
                                 + ("" if refused else "; the file is truncated or corrupted")) from e
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _names(value, where, key, n):
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise DatasetFormatError(f"{where}: '{key}' must be a list of {n} names, got "
                                 f"{type(value).__name__} of length {len(value) if hasattr(value, '__len__') else '?'}")
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in value]


class CIFAR10(ArrayDataset):
    """CIFAR-10: 50,000 training and 10,000 test 32x32 colour images in 10 classes.

    ``CIFAR10(root=None, train=True, transform=None, target_transform=None, download=False)``, as
    torchvision.  ``.data`` (N, 32, 32, 3) uint8 (a view of NCHW storage), ``.targets`` int64,
    ``.classes`` from ``batches.meta``.
    """

    base_folder = "cifar-10-batches-py"
    filename = "cifar-10-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    tgz_md5 = "c58f30108f718f92721af3b95e74349a"
    train_list = [f"data_batch_{i}" for i in range(1, 6)]
    test_list = ["test_batch"]
    meta_file = "batches.meta"
    label_keys = {"labels": 10}            # key in each batch -> number of classes
    meta_keys = {"label_names": 10}        # key in the meta file -> number of names
    expected_sizes = {"train": 50000, "test": 10000}
    _layout = "NHWC"

    def __init__(self, root=None, train: bool = True, transform=None, target_transform=None, download: bool = False):
        self.root = resolve_root(root)
        self.train = bool(train)
        self.split = "train" if self.train else "test"
        files = (self.train_list if self.train else self.test_list) + [self.meta_file]
        folder = os.path.join(self.root, self.base_folder)
        archive = os.path.join(self.root, self.filename)
        if not self._folder_complete(folder, files) and download:
            self.download()  # keeps an archive already there when its MD5 is the published one
        if self._folder_complete(folder, files):
            blobs = {}
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    blobs[name] = (f.read(), os.path.join(folder, name))
        elif os.path.isfile(archive):
            blobs = self._read_archive(archive, files)
        else:
            missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
            raise DatasetNotFoundError(
                f"{type(self).__name__} {self.split} files not found: missing {', '.join(missing)} in {folder}, and no "
                f"archive {archive}. Put the official python-version files ({', '.join(files)}) in {folder} or the "
                f"archive {self.filename} in {self.root}, set MINIDL_DATA to the folder that holds them, or pass "
                f"download=True.", dataset=type(self).__name__, missing=missing, folder=folder,
                alternative=f"the archive {self.filename} in {self.root}")
        images, labels, meta = self._parse(blobs, files)
        self._set_labels(labels, meta)
        super().__init__(images, self.targets, transform, target_transform)

    @staticmethod
    def _folder_complete(folder, files):
        return all(os.path.isfile(os.path.join(folder, f)) for f in files)

    def _read_archive(self, archive, files):
        blobs = {}
        try:
            with tarfile.open(archive, "r:*") as tar:
                for name in files:
                    member = f"{self.base_folder}/{name}"
                    try:
                        f = tar.extractfile(member)
                    except KeyError:
                        f = None
                    if f is None:
                        raise DatasetFormatError(f"{archive}: has no file {member}")
                    blobs[name] = (f.read(), f"{archive}:{member}")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DatasetFormatError(f"{archive}: cannot read the archive ({type(e).__name__}: {e}); it is truncated "
                                     "or corrupted: delete it and download again") from e
        return blobs

    def _parse(self, blobs, files):
        meta_blob, meta_where = blobs[self.meta_file]
        meta_dict = load_pickle(meta_blob, meta_where)
        meta = {}
        for key, n in self.meta_keys.items():
            if key not in meta_dict:
                raise DatasetFormatError(f"{meta_where}: missing key '{key}' (has {sorted(meta_dict)})")
            meta[key] = _names(meta_dict[key], meta_where, key, n)
        images, labels = [], {k: [] for k in self.label_keys}
        for name in files[:-1]:
            blob, where = blobs[name]
            d = load_pickle(blob, where)
            missing = [k for k in ("data", *self.label_keys) if k not in d]
            if missing:
                raise DatasetFormatError(f"{where}: missing key(s) {missing} (has {sorted(d)})")
            data = d["data"]
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetFormatError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), got "
                                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
            for key, n_classes in self.label_keys.items():
                try:
                    y = np.asarray(d[key])
                except Exception as e:
                    raise DatasetFormatError(f"{where}: '{key}' is not a list of ints ({e})") from e
                if y.ndim != 1 or (y.size and y.dtype.kind not in "iu") or len(y) != len(data):
                    raise DatasetFormatError(f"{where}: '{key}' must hold {len(data)} integer labels, got "
                                             f"{y.dtype} {y.shape}")
                if y.size and (y.min() < 0 or y.max() >= n_classes):
                    raise DatasetFormatError(f"{where}: '{key}' has labels outside 0..{n_classes - 1} "
                                             f"(min {y.min()}, max {y.max()})")
                labels[key].append(y.astype(np.int64))
            images.append(data.reshape(-1, 3, 32, 32))
        images = images[0] if len(images) == 1 else np.concatenate(images)
        labels = {k: np.concatenate(v) for k, v in labels.items()}
        want = self.expected_sizes.get(self.split)
        if want is not None and len(images) != want:
            where = ", ".join(blobs[n][1] for n in files[:-1])
            raise DatasetFormatError(f"{where}: {len(images)} samples, but the {type(self).__name__} {self.split} "
                                     f"set has {want}")
        return images.transpose(0, 2, 3, 1), labels, meta

    def _set_labels(self, labels, meta):
        self.targets = labels["labels"]
        self.classes = meta["label_names"]

    def download(self):
        """Fetch the official archive (MD5-checked) into ROOT and extract it there."""
        try:
            archive = download_url(self.url, os.path.join(self.root, self.filename), md5=self.tgz_md5)
        except DownloadError as e:
            raise DownloadError(f"{e}\nWithout network access, put {self.filename} in {self.root} or its extracted "
                                f"{self.base_folder}/ folder there yourself.") from None
        extract_archive(archive, self.root)


class CIFAR100(CIFAR10):
    """CIFAR-100: 100 fine classes grouped into 20 coarse superclasses; 50,000 train, 10,000 test.

    ``label_type`` "fine" (default, as torchvision) or "coarse" picks ``.targets``/``.classes``;
    both are always available as ``fine_targets``/``coarse_targets`` and
    ``fine_classes``/``coarse_classes``.
    """

    base_folder = "cifar-100-python"
    filename = "cifar-100-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    tgz_md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    train_list = ["train"]
    test_list = ["test"]
    meta_file = "meta"
    label_keys = {"fine_labels": 100, "coarse_labels": 20}
    meta_keys = {"fine_label_names": 100, "coarse_label_names": 20}

    def __init__(self, root=None, train: bool = True, transform=None, target_transform=None, download: bool = False,
                 label_type: str = "fine"):
        if label_type not in ("fine", "coarse"):
            raise ValueError(f"label_type must be 'fine' or 'coarse', got {label_type!r}")
        self.label_type = label_type
        super().__init__(root, train, transform, target_transform, download)

    def _set_labels(self, labels, meta):
        self.fine_targets, self.coarse_targets = labels["fine_labels"], labels["coarse_labels"]
        self.fine_classes, self.coarse_classes = meta["fine_label_names"], meta["coarse_label_names"]
        self.targets = self.fine_targets if self.label_type == "fine" else self.coarse_targets
        self.classes = self.fine_classes if self.label_type == "fine" else self.coarse_classes
