"""Small dataset files in the official formats, written by the tests (never the real data)."""
import gzip
import io
import os
import pickle
import tarfile

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: 00 00 08 ndim, big-endian int32 dims, then uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.tobytes()


def write_file(path, data: bytes, gz: bool = False) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if gz:
        path += ".gz"
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return path


def mnist_arrays(n, seed, n_classes=10):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, n_classes, size=n).astype(np.uint8)


def write_mnist(folder, n_train=20, n_test=10, gz=False):
    """IDX files for a tiny MNIST in ``folder``; returns {"train": (images, labels), "test": ...}."""
    out = {}
    for split, prefix, n, seed in (("train", "train", n_train, 1), ("test", "t10k", n_test, 2)):
        x, y = mnist_arrays(n, seed)
        write_file(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), idx_bytes(x), gz)
        write_file(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), idx_bytes(y), gz)
        out[split] = (x, y)
    return out


def cifar_batch(n, seed, label_keys, protocol=2, bytes_keys=True):
    """A pickled CIFAR batch dict: 'data' (n, 3072) uint8 and label lists."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    d = {"data": data, "batch_label": "test batch"}
    labels = {}
    for key, k in label_keys.items():
        labels[key] = rng.integers(0, k, size=n).tolist()
        d[key] = labels[key]
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    return pickle.dumps(d, protocol=protocol), data, labels


def cifar10_files(per_batch=4, n_test=10):
    """{filename: bytes} of a tiny cifar-10-batches-py and the arrays, images NHWC."""
    files, train_x, train_y = {}, [], []
    for i in range(1, 6):
        blob, data, labels = cifar_batch(per_batch, 10 + i, {"labels": 10})
        files[f"data_batch_{i}"] = blob
        train_x.append(data)
        train_y += labels["labels"]
    blob, test_data, test_labels = cifar_batch(n_test, 20, {"labels": 10}, protocol=4, bytes_keys=False)
    files["test_batch"] = blob
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_NAMES],
                                          b"num_vis": 3072}, protocol=2)
    nhwc = lambda d: d.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # noqa: E731
    return files, {"train": (nhwc(np.concatenate(train_x)), np.array(train_y)),
                   "test": (nhwc(test_data), np.array(test_labels["labels"]))}


def cifar100_files(n_train=12, n_test=6):
    keys = {"fine_labels": 100, "coarse_labels": 20}
    files, arrays = {}, {}
    for split, n, seed in (("train", n_train, 30), ("test", n_test, 31)):
        blob, data, labels = cifar_batch(n, seed, keys)
        files[split] = blob
        arrays[split] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    files["meta"] = pickle.dumps({"fine_label_names": [f"fine{i}" for i in range(100)],
                                  "coarse_label_names": [f"coarse{i}" for i in range(20)]}, protocol=2)
    return files, arrays


def write_folder(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, blob in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)


def tar_gz_bytes(base_folder, files) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{base_folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()
