"""Datasets read from small files written in each official format, and rejected when damaged."""
import os
import pickle

import numpy as np
import pytest

from minidl.data import CIFAR10, CIFAR100, MNIST, DatasetFormatError, DatasetNotFoundError, FashionMNIST, read_idx
from minidl.data.download import default_root
from tests import datafiles as F


@pytest.fixture
def small_sizes(monkeypatch):
    """The loaders check the official sample counts; the tiny test files have these instead."""
    monkeypatch.setattr(MNIST, "expected_sizes", {"train": 20, "test": 10})
    monkeypatch.setattr(CIFAR10, "expected_sizes", {"train": 20, "test": 10})
    monkeypatch.setattr(CIFAR100, "expected_sizes", {"train": 12, "test": 6})


# ---------------------------------------------------------------- MNIST / Fashion-MNIST
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_mnist_reads_idx_files(tmp_path, small_sizes, gz, train):
    arrays = F.write_mnist(str(tmp_path / "mnist"), gz=gz)
    ds = MNIST(tmp_path, train=train)
    x, y = arrays["train" if train else "test"]
    assert len(ds) == len(x)
    assert ds.data.shape == x.shape and ds.data.dtype == np.uint8
    np.testing.assert_array_equal(ds.data, x)
    np.testing.assert_array_equal(ds.targets, y)
    assert ds.targets.dtype == np.int64 and len(ds.classes) == 10
    xb, yb = ds.get_batch([3, 0, 7])
    assert xb.shape == (3, 1, 28, 28) and xb.dtype == np.uint8 and xb.flags.c_contiguous
    np.testing.assert_array_equal(xb[:, 0], x[[3, 0, 7]])
    np.testing.assert_array_equal(yb, y[[3, 0, 7]])
    img, label = ds[5]
    assert img.shape == (1, 28, 28) and label == int(y[5]) and isinstance(label, int)


def test_mnist_torchvision_layout_and_fashion_folder(tmp_path, small_sizes):
    arrays = F.write_mnist(str(tmp_path / "MNIST" / "raw"), gz=True)
    np.testing.assert_array_equal(MNIST(tmp_path).data, arrays["train"][0])
    fashion = F.write_mnist(str(tmp_path / "fashion-mnist"))
    ds = FashionMNIST(tmp_path, train=False)
    np.testing.assert_array_equal(ds.data, fashion["test"][0])
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_root_defaults_to_env(tmp_path, small_sizes, monkeypatch):
    F.write_mnist(str(tmp_path / "mnist"))
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path))
    assert default_root() == str(tmp_path)
    assert MNIST().root == str(tmp_path) and len(MNIST()) == 20
    monkeypatch.delenv("MINIDL_DATA")
    assert default_root() == os.path.join(os.path.expanduser("~"), ".cache", "minidl")


def test_missing_files_name_what_and_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        MNIST(tmp_path, train=True)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert str(tmp_path / "mnist") in msg and "download=True" in msg
    with pytest.raises(DatasetNotFoundError) as e:
        CIFAR10(tmp_path, train=False)
    msg = str(e.value)
    assert "test_batch" in msg and "batches.meta" in msg and str(tmp_path / "cifar-10-batches-py") in msg
    assert "cifar-10-python.tar.gz" in msg


def _mnist_damage_cases():
    x, y = F.mnist_arrays(20, 1)
    good_images, good_labels = F.idx_bytes(x), F.idx_bytes(y)
    return {
        "truncated images": ("train-images-idx3-ubyte", good_images[:-100], "truncated"),
        "trailing bytes": ("train-images-idx3-ubyte", good_images + b"\0" * 5, "trailing"),
        "truncated header": ("train-labels-idx1-ubyte", good_labels[:6], "header"),
        "bad magic": ("train-images-idx3-ubyte", b"\x12\x34" + good_images[2:], "not an IDX"),
        "empty": ("train-labels-idx1-ubyte", b"", "not an IDX"),
        "wrong image size": ("train-images-idx3-ubyte", F.idx_bytes(np.zeros((20, 27, 28))), "shape"),
        "labels 2-D": ("train-labels-idx1-ubyte", F.idx_bytes(np.zeros((20, 1))), "1-D"),
        "label out of range": ("train-labels-idx1-ubyte", F.idx_bytes(np.full(20, 10)), "out of range"),
        "count mismatch": ("train-labels-idx1-ubyte", F.idx_bytes(y[:19]), "labels"),
    }


@pytest.mark.parametrize("case", sorted(_mnist_damage_cases()))
def test_damaged_idx_file_is_named_in_the_error(tmp_path, small_sizes, case):
    F.write_mnist(str(tmp_path / "mnist"))
    name, blob, words = _mnist_damage_cases()[case]
    path = tmp_path / "mnist" / name
    path.write_bytes(blob)
    with pytest.raises(DatasetFormatError) as e:
        MNIST(tmp_path)
    assert str(path) in str(e.value) or (case == "count mismatch" and "train-images" in str(e.value))
    assert words in str(e.value)


def test_official_counts_are_checked(tmp_path):
    F.write_mnist(str(tmp_path / "mnist"))  # 20 samples where MNIST has 60,000
    with pytest.raises(DatasetFormatError, match="60000"):
        MNIST(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_gzip_is_named(tmp_path, small_sizes, damage):
    F.write_mnist(str(tmp_path / "mnist"), gz=True)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    else:
        blob[len(blob) // 2] ^= 0xFF
        blob[len(blob) // 2 + 1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetFormatError, match=str(path)):
        MNIST(tmp_path)


def test_read_idx_other_types(tmp_path):
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    p = tmp_path / "a.idx"
    p.write_bytes(bytes([0, 0, 0x0C, 2]) + np.asarray(a.shape, ">i4").tobytes() + a.tobytes())
    out = read_idx(p)
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.int32 and out.flags.writeable


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100
@pytest.mark.parametrize("source", ["folder", "archive"])
def test_cifar10_folder_and_archive(tmp_path, small_sizes, source):
    files, arrays = F.cifar10_files()
    if source == "folder":
        F.write_folder(str(tmp_path / "cifar-10-batches-py"), files)
    else:
        (tmp_path / "cifar-10-python.tar.gz").write_bytes(F.tar_gz_bytes("cifar-10-batches-py", files))
    for train, split in ((True, "train"), (False, "test")):
        ds = CIFAR10(tmp_path, train=train)
        x, y = arrays[split]
        assert ds.data.shape == x.shape == (len(y), 32, 32, 3) and ds.data.dtype == np.uint8
        np.testing.assert_array_equal(ds.data, x)
        np.testing.assert_array_equal(ds.targets, y)
        assert ds.classes == F.CIFAR10_NAMES
        xb, yb = ds.get_batch(np.array([2, 1]))
        assert xb.shape == (2, 3, 32, 32) and xb.flags.c_contiguous
        np.testing.assert_array_equal(xb, x[[2, 1]].transpose(0, 3, 1, 2))
        # the first 1024 values of a row are the red plane, row-major
        raw = pickle.loads(files["test_batch" if not train else "data_batch_1"])
        raw = raw.get("data", raw.get(b"data"))
        np.testing.assert_array_equal(ds.get_batch([0])[0][0, 0].ravel(), raw[0, :1024])


def test_cifar100_fine_and_coarse(tmp_path, small_sizes):
    files, arrays = F.cifar100_files()
    F.write_folder(str(tmp_path / "cifar-100-python"), files)
    ds = CIFAR100(tmp_path, train=True)
    x, labels = arrays["train"]
    np.testing.assert_array_equal(ds.data, x)
    np.testing.assert_array_equal(ds.targets, labels["fine_labels"])
    np.testing.assert_array_equal(ds.coarse_targets, labels["coarse_labels"])
    assert len(ds.classes) == 100 and ds.classes[7] == "fine7" and ds.coarse_classes[3] == "coarse3"
    coarse = CIFAR100(tmp_path, train=False, label_type="coarse")
    np.testing.assert_array_equal(coarse.targets, arrays["test"][1]["coarse_labels"])
    assert len(coarse.classes) == 20
    with pytest.raises(ValueError, match="label_type"):
        CIFAR100(tmp_path, label_type="medium")


def _cifar_damage_cases():
    files, _ = F.cifar10_files()
    good = files["data_batch_3"]
    d = pickle.loads(good)

    def edit(**changes):
        e = dict(d)
        for k, v in changes.items():
            if v is None:
                del e[k.encode()]
            else:
                e[k.encode()] = v
        return pickle.dumps(e, protocol=2)

    return {
        "truncated": (good[: len(good) // 2], "truncated"),
        "garbage": (b"this is not a pickle", "cannot unpickle"),
        "missing labels": (edit(labels=None), "missing key"),
        "wrong width": (edit(data=np.zeros((4, 3000), np.uint8)), "(N, 3072)"),
        "wrong dtype": (edit(data=np.zeros((4, 3072), np.float32)), "uint8"),
        "label count": (edit(labels=[1, 2, 3]), "integer labels"),
        "label range": (edit(labels=[0, 1, 2, 10]), "outside 0..9"),
        "not a dict": (pickle.dumps([1, 2, 3]), "dict"),
        "code in pickle": (pickle.dumps(os.getcwd, protocol=2), "refusing"),
    }


@pytest.mark.parametrize("case", sorted(_cifar_damage_cases()))
def test_damaged_cifar_batch_is_named(tmp_path, small_sizes, case):
    files, _ = F.cifar10_files()
    blob, words = _cifar_damage_cases()[case]
    files["data_batch_3"] = blob
    F.write_folder(str(tmp_path / "cifar-10-batches-py"), files)
    with pytest.raises(DatasetFormatError) as e:
        CIFAR10(tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in str(e.value)
    assert words in str(e.value)


def test_damaged_cifar_meta_and_counts(tmp_path, small_sizes, monkeypatch):
    files, _ = F.cifar10_files()
    files["batches.meta"] = pickle.dumps({"label_names": ["a", "b"]})
    F.write_folder(str(tmp_path / "cifar-10-batches-py"), files)
    with pytest.raises(DatasetFormatError, match="batches.meta.*10 names"):
        CIFAR10(tmp_path)
    monkeypatch.setattr(CIFAR10, "expected_sizes", {"train": 50000, "test": 10000})
    files["batches.meta"] = F.cifar10_files()[0]["batches.meta"]
    F.write_folder(str(tmp_path / "cifar-10-batches-py"), files)
    with pytest.raises(DatasetFormatError, match="50000"):
        CIFAR10(tmp_path)


def test_truncated_cifar_archive_is_named(tmp_path, small_sizes):
    files, _ = F.cifar10_files()
    blob = F.tar_gz_bytes("cifar-10-batches-py", files)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(DatasetFormatError, match=str(archive)):
        CIFAR10(tmp_path)


def test_data_setter_keeps_layout(tmp_path, small_sizes):
    files, arrays = F.cifar10_files()
    F.write_folder(str(tmp_path / "cifar-10-batches-py"), files)
    ds = CIFAR10(tmp_path)
    ds.data, ds.targets = ds.data[:5], ds.targets[:5]  # the homework idiom for a small subset
    assert len(ds) == 5 and ds.get_batch([4])[0].shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(ds.get_batch([4])[0][0], arrays["train"][0][4].transpose(2, 0, 1))
    np.testing.assert_allclose(ds.data.mean(axis=(0, 1, 2)), arrays["train"][0][:5].mean(axis=(0, 1, 2)))


def test_pickles_from_numpy1_and_python2_load(tmp_path, small_sizes):
    """The official files were pickled by Python 2 / NumPy 1 ('numpy.core.multiarray', protocol 2)."""
    files, arrays = F.cifar10_files()
    for name in files:  # GLOBAL opcodes are newline-terminated text, so the module name can be swapped
        files[name] = files[name].replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in files["data_batch_1"]
    F.write_folder(str(tmp_path / "cifar-10-batches-py"), files)
    np.testing.assert_array_equal(CIFAR10(tmp_path).data, arrays["train"][0])


class _Alloc:
    """Pickles as a call of ``fn(*args)``: how a crafted file makes the unpickler build something large."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _bombs():
    import struct
    from numpy._core.multiarray import _reconstruct
    big = bytes(100_000)
    return {
        # 47 bytes: PROTO 2, GLOBAL builtins bytearray, BININT 400_000_000, TUPLE1, REDUCE, STOP
        "bytearray(400_000_000)": b"\x80\x02cbuiltins\nbytearray\nJ" + struct.pack("<i", 400_000_000) + b"\x85R.",
        "uninitialised array": pickle.dumps(_Alloc(_reconstruct, np.ndarray, (400_000_000,), b"b"), protocol=2),
        "array called directly": pickle.dumps(_Alloc(np.ndarray, (400_000_000,)), protocol=2),
        "one string copied 200 times": pickle.dumps([_Alloc(bytearray, big) for _ in range(200)], protocol=3),
        "reconstructor of an array": pickle.dumps(_Alloc(__import__("copyreg")._reconstructor, np.ndarray, np.ndarray,
                                                         (400_000_000,)), protocol=2),
    }


@pytest.mark.parametrize("case", sorted(_bombs()))
def test_the_dataset_unpickler_builds_no_more_than_the_file_holds(case):
    import tracemalloc
    from minidl.data.cifar import load_pickle
    blob = _bombs()[case]
    assert len(blob) < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DatasetFormatError, match=r"where\.pkl.*(more than|refusing)"):
            load_pickle(blob, "where.pkl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(blob) + 2_000_000, f"{peak} bytes allocated for a {len(blob)}-byte file"
