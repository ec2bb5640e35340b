"""MNIST and Fashion-MNIST from their official IDX files (raw or ``.gz``).

IDX format (LeCun et al.): a 4-byte magic ``00 00 TT DD`` (TT = element type, 0x08 = uint8;
DD = number of dimensions), DD big-endian int32 sizes, then the elements in C order.  Files are
looked for, raw first then ``.gz``, in ``ROOT/mnist/`` (``ROOT/fashion-mnist/``), torchvision's
``ROOT/MNIST/raw/`` (``ROOT/FashionMNIST/raw/``).  Every file is validated
(magic, type, dims, exact byte length, label range, sample counts) before use.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from minidl.data.dataset import ArrayDataset
from minidl.data.download import (DatasetFormatError, DatasetNotFoundError, DownloadError, download_url,
                                  extract_archive, resolve_root)

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a writable array; DatasetFormatError names the file."""
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DatasetFormatError(f"{path}: corrupted or truncated gzip data ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DatasetFormatError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}; expected "
                                 "00 00 TT DD with a known element type TT)")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetFormatError(f"{path}: {what}: its header says {dims} of {dtype} = {expected} bytes, "
                                 f"the file has {len(raw)}")
    return np.frombuffer(bytearray(raw[header:]), dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


class MNIST(ArrayDataset):
    """MNIST handwritten digits: 60,000 training and 10,000 test images, 28x28 uint8, labels 0-9.

    ``MNIST(root=None, train=True, transform=None, target_transform=None, download=False)``, as
    torchvision.  ``.data`` (N, 28, 28) uint8, ``.targets`` int64, ``.classes``.  ``root`` defaults
    to ``$MINIDL_DATA`` else ``~/.cache/minidl``.
    """

    folder = "mnist"
    torchvision_folder = "MNIST"
    mirrors = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
    resources = [("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                 ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                 ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                 ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")]
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
               "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]
    expected_sizes = {"train": 60000, "test": 10000}
    image_shape = (28, 28)
    _layout = "NHW"

    def __init__(self, root=None, train: bool = True, transform=None, target_transform=None, download: bool = False):
        self.root = resolve_root(root)
        self.train = bool(train)
        self.split = "train" if self.train else "test"
        prefix = "train" if self.train else "t10k"
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        paths = [self._find(n) for n in names]
        if None in paths and download:
            self.download()
            paths = [self._find(n) for n in names]
        if None in paths:
            missing = [n for n, p in zip(names, paths) if p is None]
            raise DatasetNotFoundError(
                f"{type(self).__name__} {self.split} files not found: missing {', '.join(missing)} (raw or .gz). "
                f"Put the official IDX files {names[0]}[.gz] and {names[1]}[.gz] in "
                f"{os.path.join(self.root, self.folder)} (looked in {', '.join(self._dirs())}), set MINIDL_DATA to "
                f"the folder that holds '{self.folder}/', or pass download=True.",
                dataset=type(self).__name__, missing=[f"{n}[.gz]" for n in missing],
                folder=os.path.join(self.root, self.folder))
        images, labels = self._load(*paths)
        super().__init__(images, labels, transform, target_transform)

    def _dirs(self):
        return [os.path.join(self.root, self.folder), os.path.join(self.root, self.torchvision_folder, "raw")]

    def _find(self, name):
        for d in self._dirs():
            for candidate in (os.path.join(d, name), os.path.join(d, name + ".gz")):
                if os.path.isfile(candidate):
                    return candidate
        return None

    def _load(self, image_path, label_path):
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != self.image_shape:
            raise DatasetFormatError(f"{image_path}: expected uint8 images of shape (N, {self.image_shape[0]}, "
                                     f"{self.image_shape[1]}), got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise DatasetFormatError(f"{label_path}: expected a 1-D uint8 label file, "
                                     f"got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise DatasetFormatError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
        want = self.expected_sizes.get(self.split)
        if want is not None and len(labels) != want:
            raise DatasetFormatError(f"{image_path}: {len(images)} samples, but the {type(self).__name__} "
                                     f"{self.split} set has {want}")
        if len(labels) and labels.max() >= len(self.classes):
            raise DatasetFormatError(f"{label_path}: label {int(labels.max())} out of range 0..{len(self.classes) - 1}")
        return images, labels.astype(np.int64)

    def download(self):
        """Fetch the four official .gz files (MD5-checked) into ROOT/<folder>/ and decompress them."""
        folder = os.path.join(self.root, self.folder)
        for name, md5 in self.resources:
            raw = os.path.join(folder, name[:-3])
            if os.path.isfile(raw):
                continue
            try:
                gz = download_url([m + name for m in self.mirrors], os.path.join(folder, name), md5=md5)
            except DownloadError as e:
                raise DownloadError(f"{e}\nWithout network access, put the official files {name} (or {name[:-3]}) "
                                    f"in {folder} yourself.") from None
            extract_archive(gz, folder)


class FashionMNIST(MNIST):
    """Fashion-MNIST (Zalando): the MNIST format and sizes, 10 clothing classes."""

    folder = "fashion-mnist"
    torchvision_folder = "FashionMNIST"
    mirrors = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
    resources = [("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                 ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                 ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                 ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")]
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
