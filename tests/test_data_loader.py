"""DataLoader, samplers, splits and statistics on in-memory datasets."""
import numpy as np
import pytest

import minidl
from minidl.data import (ArrayDataset, BatchSampler, DataLoader, RandomSampler, SequentialSampler, Subset,
                         SubsetRandomSampler, WeightedRandomSampler, first_last_split, mean_std, random_split)
from minidl.data import transforms as T


def _dataset(n=103, c=3, hw=6, n_classes=5, transform=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, c, hw, hw), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256  # recover which sample a row came from
    x[:, 1, 0, 0] = np.arange(n) // 256
    y = np.arange(n) % n_classes
    return ArrayDataset(x, y, transform=transform, classes=[f"c{i}" for i in range(n_classes)])


def _ids(xb):
    a = np.asarray(xb.numpy() if hasattr(xb, "numpy") else xb)
    if a.dtype != np.uint8:
        a = np.rint(a * 255).astype(np.int64)
    return a[:, 0, 0, 0].astype(np.int64) + 256 * a[:, 1, 0, 0].astype(np.int64)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_each_sample_once_per_epoch(num_workers, drop_last, device):
    ds = _dataset()
    loader = DataLoader(ds, batch_size=10, shuffle=True, seed=0, drop_last=drop_last, num_workers=num_workers,
                        device=device)
    assert len(loader) == (10 if drop_last else 11)
    epochs = []
    for _ in range(2):
        seen, sizes = [], []
        for xb, yb in loader:
            assert isinstance(xb, minidl.Tensor) and xb.dtype == np.float32 and xb.device == device
            assert yb.dtype == np.int64 and xb.shape[1:] == (3, 6, 6)
            ids = _ids(xb)
            np.testing.assert_array_equal(yb.numpy(), ids % 5)  # labels travel with their images
            seen.append(ids)
            sizes.append(len(ids))
        seen = np.concatenate(seen)
        assert len(seen) == len(np.unique(seen))  # nobody twice
        if drop_last:
            assert sizes == [10] * 10
        else:
            assert sorted(seen) == list(range(103)) and sizes == [10] * 10 + [3]
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_sequential_order_and_float_conversion():
    ds = _dataset(n=25)
    batches = list(DataLoader(ds, batch_size=8))
    np.testing.assert_array_equal(np.concatenate([_ids(x) for x, _ in batches]), np.arange(25))
    x = batches[0][0].numpy()
    np.testing.assert_allclose(x, ds.get_batch(range(8))[0] / 255.0, rtol=1e-6)
    raw = next(iter(DataLoader(ds, batch_size=8, dtype=None)))[0]
    assert raw.dtype == np.uint8


def test_seeded_loader_is_reproducible_whatever_the_threads():
    tf = T.Compose([T.RandomCrop(6, padding=2), T.RandomHorizontalFlip(), T.Normalize((0.5,) * 3, (0.2,) * 3)])

    def run(seed, workers):
        loader = DataLoader(_dataset(transform=tf), batch_size=16, shuffle=True, seed=seed, num_workers=workers)
        return [np.concatenate([x.numpy().ravel() for x, _ in loader]) for _ in range(2)]

    a, b, c = run(3, 0), run(3, 2), run(4, 0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])  # augmentation differs between epochs


def test_default_generator_follows_manual_seed():
    def first_batch():
        return _ids(next(iter(DataLoader(_dataset(), batch_size=20, shuffle=True)))[0])

    minidl.manual_seed(11)
    a = first_batch()
    minidl.manual_seed(11)
    np.testing.assert_array_equal(a, first_batch())


def test_early_break_and_worker_errors():
    ds = _dataset()
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert sum(len(y) for _, y in loader) == 103  # a fresh epoch after a break

    def bad(x):
        raise RuntimeError("boom in transform")

    with pytest.raises(RuntimeError, match="boom in transform"):
        list(DataLoader(_dataset(transform=bad), batch_size=4, num_workers=2))


def test_argument_errors():
    ds = _dataset()
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, shuffle=True, sampler=SequentialSampler(ds))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=-1)


def test_samplers():
    ds = _dataset(n=20)
    got = np.concatenate([_ids(x) for x, _ in DataLoader(ds, batch_size=3,
                                                           sampler=SubsetRandomSampler([1, 5, 7, 11],
                                                           generator=np.random.default_rng(0)))])
    assert sorted(got) == [1, 5, 7, 11]
    w = np.zeros(20)
    w[[2, 3]] = 1
    s = WeightedRandomSampler(w, num_samples=50, generator=np.random.default_rng(0))
    idx = s.index_array()
    assert len(idx) == 50 and set(idx) == {2, 3}
    r = RandomSampler(ds, replacement=True, num_samples=7, generator=np.random.default_rng(0))
    assert len(list(r)) == 7
    r = RandomSampler(ds, num_samples=45, generator=np.random.default_rng(0))
    assert np.bincount(r.index_array(), minlength=20).min() >= 2  # more than an epoch: whole permutations
    bs = BatchSampler(SequentialSampler(ds), 6, drop_last=False)
    assert [len(b) for b in bs] == [6, 6, 6, 2] and len(bs) == 4
    custom = [np.array([0, 1]), np.array([5])]
    assert [list(_ids(x)) for x, _ in DataLoader(ds, batch_sampler=custom)] == [[0, 1], [5]]


def test_plain_map_style_dataset():
    class Pairs:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i, np.float32), i

    xs, ys = zip(*DataLoader(Pairs(), batch_size=2))
    assert [y.numpy().tolist() for y in ys] == [[0, 1], [2, 3], [4]]
    assert xs[0].shape == (2, 1, 2, 2) and float(xs[2].numpy()[0, 0, 0, 0]) == 4


def test_timeout_as_pytorch():
    """timeout > 0: how long to wait for a batch from the worker threads, then RuntimeError (PyTorch's words);
    the value is checked: >= 0, and only with workers (PyTorch refuses it without, at iteration)."""
    import threading
    release = threading.Event()

    class Slow:
        def __len__(self):
            return 6

        def __getitem__(self, i):
            if i == 4:
                release.wait(60)             # held until the test has seen the timeout
            return np.full((1, 2, 2), i, np.float32), i

    loader = DataLoader(Slow(), batch_size=2, num_workers=1, timeout=0.2)
    got = []
    try:
        with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0\.2 seconds"):
            for _, y in loader:
                got.append(y.numpy().tolist())
        assert got == [[0, 1], [2, 3]] and not release.is_set()
    finally:
        release.set()
    release.set()
    assert [y.numpy().tolist() for _, y in loader] == [[0, 1], [2, 3], [4, 5]]  # fast enough: as without
    ds = _dataset()
    with pytest.raises(ValueError, match="timeout option should be non-negative"):
        DataLoader(ds, num_workers=2, timeout=-1)
    with pytest.raises(ValueError, match="timeout.*num_workers > 0"):
        DataLoader(ds, timeout=5)
    with pytest.raises(TypeError, match="timeout"):
        DataLoader(ds, num_workers=2, timeout="5")
    assert DataLoader(ds, timeout=0).timeout == 0


# ---------------------------------------------------------------- splits
def test_first_last_split():
    ds = _dataset(n=50)
    train, val = first_last_split(ds, 45, 5)
    assert len(train) == 45 and len(val) == 5
    np.testing.assert_array_equal(_ids(val.get_batch(range(5))[0]), np.arange(45, 50))
    np.testing.assert_array_equal(val.targets, np.arange(45, 50) % 5)
    a, b = first_last_split(ds, 30)
    assert len(b) == 20
    with pytest.raises(ValueError, match="cannot take"):
        first_last_split(ds, 40, 20)


def test_random_split_seeded_disjoint_and_fractions():
    ds = _dataset(n=103)
    parts = random_split(ds, [0.8, 0.2], seed=0)
    assert [len(p) for p in parts] == [83, 20]
    ids = np.concatenate([p.indices for p in parts])
    assert sorted(ids) == list(range(103))
    again = random_split(ds, [0.8, 0.2], seed=0)
    np.testing.assert_array_equal(parts[1].indices, again[1].indices)
    assert not np.array_equal(parts[1].indices, random_split(ds, [0.8, 0.2], seed=1)[1].indices)
    assert [len(p) for p in random_split(ds, [50, 50, 3], seed=0)] == [50, 50, 3]
    with pytest.raises(ValueError, match="sum"):
        random_split(ds, [50, 50])


def test_stratified_split_keeps_class_shares():
    y = np.repeat(np.arange(4), [40, 30, 20, 10])
    ds = ArrayDataset(np.zeros((100, 1, 2, 2), np.uint8), y)
    a, b = random_split(ds, [0.8, 0.2], seed=0, stratify=True)
    assert len(a) == 80 and len(b) == 20
    np.testing.assert_array_equal(np.bincount(b.targets, minlength=4), [8, 6, 4, 2])
    assert sorted(np.concatenate([a.indices, b.indices])) == list(range(100))
    # odd sizes: each class's share within one sample of proportional
    parts = random_split(ds, [33, 33, 34], seed=3, stratify=y)
    for p in parts:
        counts = np.bincount(p.targets, minlength=4)
        assert np.all(np.abs(counts - len(p) * np.array([0.4, 0.3, 0.2, 0.1])) <= 1)


def test_subset_transform_override():
    tf_train = T.Lambda(lambda x: (x * 0 + 1).astype(np.float32))
    ds = _dataset(n=10, transform=T.ToFloat())
    train, val = Subset(ds, range(5), transform=tf_train), Subset(ds, range(5, 10))
    assert (next(iter(DataLoader(train, batch_size=5)))[0].numpy() == 1).all()
    np.testing.assert_allclose(next(iter(DataLoader(val, batch_size=5)))[0].numpy(),
                               ds.get_batch(range(5, 10))[0] / 255.0, rtol=1e-6)
    assert val.classes == ds.classes and val[0][1] == 0


# ---------------------------------------------------------------- statistics
def test_mean_std_matches_numpy():
    ds = _dataset(n=300)
    x = ds.get_batch(range(300))[0] / 255.0
    mean, std = mean_std(ds, batch_size=64)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-10)
    f = ArrayDataset(x.astype(np.float32), np.zeros(300, np.int64))
    np.testing.assert_allclose(mean_std(f)[1], x.std(axis=(0, 2, 3)), rtol=1e-5)
