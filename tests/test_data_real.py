"""Real datasets: run when MINIDL_DATA points at them (``prepare.py DEST`` lays them out), skip otherwise."""
import os

import numpy as np
import pytest

from minidl.data import CIFAR10, MNIST, DataLoader, FashionMNIST, first_last_split, mean_std
from minidl.data import transforms as T

ROOT = os.environ.get("MINIDL_DATA")


def _need(sub):
    if not ROOT:
        pytest.skip("real-data test: set MINIDL_DATA to a folder laid out by shared/datasets/prepare.py")
    if not os.path.isdir(os.path.join(ROOT, sub)):
        pytest.skip(f"real-data test: {os.path.join(ROOT, sub)} is not there")


def test_mnist_counts_and_mean():
    _need("mnist")
    train, test = MNIST(ROOT, train=True), MNIST(ROOT, train=False)
    assert len(train) == 60000 and len(test) == 10000
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(train.targets), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                                                5851, 5949])
    mean, std = mean_std(train)
    assert round(mean[0], 4) == 0.1307 and round(std[0], 4) == 0.3081
    x, y = next(iter(DataLoader(train, batch_size=256)))
    assert x.shape == (256, 1, 28, 28) and y.numpy()[:5].tolist() == [5, 0, 4, 1, 9]


def test_cifar10_counts_classes_and_stats():
    _need("cifar-10-batches-py")
    train, test = CIFAR10(ROOT, train=True), CIFAR10(ROOT, train=False)
    assert len(train) == 50000 and len(test) == 10000
    assert train.data.shape == (50000, 32, 32, 3)
    assert train.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert (np.bincount(train.targets) == 5000).all() and (np.bincount(test.targets) == 1000).all()
    assert test.targets[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the official test order
    mean, std = mean_std(train)
    np.testing.assert_allclose(mean, (0.4914, 0.4822, 0.4465), atol=1e-3)  # JPEG copy: (0.4913, 0.4821, 0.4465)
    np.testing.assert_allclose(std, (0.247, 0.243, 0.262), atol=3e-3)      # JPEG copy: (0.2452, 0.2428, 0.2606)
    tr, val = first_last_split(train, 49000, 1000)
    assert len(tr) == 49000 and len(val) == 1000
    train.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                 T.Normalize(T.CIFAR10_MEAN, T.CIFAR10_STD)])
    n = 0
    for x, y in DataLoader(tr, batch_size=1000, shuffle=True, seed=0):
        assert x.shape[1:] == (3, 32, 32) and x.dtype == np.float32
        n += len(y)
    assert n == 49000


def test_fashion_mnist_counts():
    _need("fashion-mnist")
    train, test = FashionMNIST(ROOT, train=True), FashionMNIST(ROOT, train=False)
    assert len(train) == 60000 and len(test) == 10000
    assert (np.bincount(train.targets) == 6000).all() and (np.bincount(test.targets) == 1000).all()
