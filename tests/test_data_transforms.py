"""Batched transforms: properties that can fail, on every backend (NumPy; CuPy where a GPU is present)."""
import numpy as np
import pytest

from minidl.backend import to_device, to_numpy
from minidl.data import transforms as T


def _batch(device, n=16, c=3, h=8, w=10, seed=0, dtype=np.uint8):
    x = np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w)).astype(dtype)
    return x, to_device(x, device)


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_to_float(device):
    x, xd = _batch(device)
    y = T.ToFloat()(xd)
    assert y.dtype == np.float32
    np.testing.assert_allclose(to_numpy(y), x / 255.0, rtol=1e-6)
    assert to_numpy(y).min() >= 0 and to_numpy(y).max() <= 1
    np.testing.assert_array_equal(to_numpy(T.ToFloat()(y)), to_numpy(y))  # float stays as is


def test_normalize_gives_zero_mean_unit_std(device):
    x, xd = _batch(device, n=64)
    xf = x / 255.0
    mean, std = xf.mean(axis=(0, 2, 3)), xf.std(axis=(0, 2, 3))
    y = to_numpy(T.Normalize(tuple(mean), tuple(std))(xd))  # uint8 in: scaled to [0, 1] first
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, atol=1e-5)
    np.testing.assert_allclose(y[:, 1], (xf[:, 1] - mean[1]) / std[1], atol=1e-5)


def test_normalize_checks_channels():
    with pytest.raises(ValueError, match="2 channel statistics but the batch has 3"):
        T.Normalize((0.5, 0.5), (0.2, 0.2))(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="positive"):
        T.Normalize(0.5, 0.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        T.Normalize(0.5, 0.5)(np.zeros((3, 4, 4), np.float32))


def test_flip_really_mirrors(device):
    x, xd = _batch(device)
    np.testing.assert_array_equal(to_numpy(T.RandomHorizontalFlip(p=1.0)(xd)), x[:, :, :, ::-1])
    np.testing.assert_array_equal(to_numpy(T.RandomHorizontalFlip(p=0.0)(xd)), x)
    np.testing.assert_array_equal(to_numpy(T.RandomVerticalFlip(p=1.0)(xd)), x[:, :, ::-1, :])
    y = to_numpy(T.RandomHorizontalFlip(p=0.5)(xd, rng=_rng(1)))
    flipped = np.array([(y[i] == x[i, :, :, ::-1]).all() for i in range(len(x))])
    kept = np.array([(y[i] == x[i]).all() for i in range(len(x))])
    assert (flipped | kept).all() and flipped.any() and kept.any()
    np.testing.assert_array_equal(flipped, _rng(1).random(len(x)) < 0.5)  # one independent draw per image


def test_flip_frequency():
    x = np.arange(2 * 5, dtype=np.uint8).reshape(1, 1, 2, 5).repeat(4000, axis=0)
    y = T.RandomHorizontalFlip(p=0.3)(x, rng=_rng(2))
    frac = (y[:, 0, 0, 0] == 4).mean()
    assert 0.27 < frac < 0.33


def _reference_crop(x, size, pad, mode, fill, rng):
    """Loop-per-image reference: pad with np.pad, take the window at the same random offsets."""
    n = len(x)
    kw = {"constant_values": fill} if mode == "constant" else {}
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode, **kw)
    top = rng.integers(0, xp.shape[2] - size[0] + 1, size=n)
    left = rng.integers(0, xp.shape[3] - size[1] + 1, size=n)
    return np.stack([xp[i, :, top[i]:top[i] + size[0], left[i]:left[i] + size[1]] for i in range(n)])


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_random_crop_matches_per_image_reference(device, mode):
    x, xd = _batch(device, n=32, h=8, w=8)
    y = to_numpy(T.RandomCrop(8, padding=3, padding_mode=mode)(xd, rng=_rng(5)))
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(y, _reference_crop(x, (8, 8), 3, mode, 0, _rng(5)))


def test_random_crop_pads_with_zeros_and_keeps_shape(device):
    x = np.full((200, 3, 32, 32), 255, np.uint8)
    y = to_numpy(T.RandomCrop(32, padding=4)(to_device(x, device), rng=_rng(0)))
    assert y.shape == (200, 3, 32, 32)
    assert set(np.unique(y)) == {0, 255}  # only the image and the zero padding
    # each image: a 32x32 window of the padded image, so zeros form whole rows/columns at the border
    for img in y[:, 0]:
        rows, cols = (img == 255).any(axis=1), (img == 255).any(axis=0)
        assert rows.sum() >= 28 and cols.sum() >= 28
        assert (img[np.ix_(rows, cols)] == 255).all() and (img[~rows] == 0).all() and (img[:, ~cols] == 0).all()
    # the offsets vary: some images are shifted, some not
    shifted = (y[:, 0] == 0).any(axis=(1, 2))
    assert shifted.any() and (~shifted).any()


def test_random_crop_sizes_and_fill():
    x = np.ones((4, 1, 6, 6), np.float32)
    assert T.RandomCrop((4, 5))(x, rng=_rng()).shape == (4, 1, 4, 5)
    y = T.RandomCrop(10, pad_if_needed=True, fill=-1.0)(x, rng=_rng())
    assert y.shape == (4, 1, 10, 10) and (y == -1).sum() == 4 * (100 - 36)
    with pytest.raises(ValueError, match="larger than"):
        T.RandomCrop(7)(x)
    with pytest.raises(ValueError, match="padding_mode"):
        T.RandomCrop(4, padding=1, padding_mode="wrap")


def test_center_crop():
    x = np.arange(2 * 1 * 6 * 6).reshape(2, 1, 6, 6)
    np.testing.assert_array_equal(T.CenterCrop(4)(x), x[:, :, 1:5, 1:5])


def test_resize_bilinear_formula_and_constants(device):
    # along a row the image is a linear ramp in x: bilinear resizing keeps it linear inside,
    # clamped at the borders: out[j] = clip((j + 0.5) * w_in / w_out - 0.5, 0, w_in - 1) * 10
    w_in, w_out = 8, 20
    ramp = np.tile(np.arange(w_in, dtype=np.float32) * 10, (2, 3, 5, 1))
    y = to_numpy(T.Resize((5, w_out))(to_device(ramp, device)))
    want = np.clip((np.arange(w_out) + 0.5) * w_in / w_out - 0.5, 0, w_in - 1) * 10
    np.testing.assert_allclose(y, np.broadcast_to(want, y.shape), rtol=1e-5, atol=1e-4)
    const = np.full((2, 3, 32, 32), 77, np.uint8)
    r = to_numpy(T.Resize(40)(to_device(const, device)))
    assert r.shape == (2, 3, 40, 40) and r.dtype == np.uint8 and (r == 77).all()


def test_resize_nearest_duplicates_pixels(device):
    x, xd = _batch(device, n=2, h=4, w=5)
    y = to_numpy(T.Resize((8, 10), interpolation="nearest")(xd))
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))


def test_resize_matches_torch_interpolate():
    torch = pytest.importorskip("torch", reason="torch (a reference for checks only) is not installed")
    x = np.random.default_rng(0).random((3, 2, 32, 32)).astype(np.float32)
    for size in ((40, 40), (20, 27)):
        want = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                               align_corners=False).numpy()
        np.testing.assert_allclose(T.Resize(size)(x), want, atol=1e-5)
        want = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="nearest").numpy()
        np.testing.assert_array_equal(T.Resize(size, interpolation="nearest")(x), want)


def test_resize_then_random_crop_40_to_32(device):
    x, xd = _batch(device, n=8, h=32, w=32)
    y = T.Compose([T.Resize(40), T.RandomCrop(32), T.ToFloat()])(xd, rng=_rng())
    assert y.shape == (8, 3, 32, 32) and y.dtype == np.float32


def test_pipeline_is_deterministic_given_a_seed(device):
    x, xd = _batch(device, n=32, h=32, w=32)
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.Normalize((0.5,) * 3, (0.25,) * 3)])
    a, b = to_numpy(tf(xd, rng=_rng(7))), to_numpy(tf(xd, rng=_rng(7)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, to_numpy(tf(xd, rng=_rng(8))))
    # the same seed gives the same augmentation on the CPU and on the GPU
    np.testing.assert_allclose(a, tf(x, rng=_rng(7)), atol=1e-6)


def test_plain_callables_compose():
    x = np.ones((2, 1, 3, 3), np.float32)
    y = T.Compose([lambda b: b * 2, T.Lambda(lambda b: b + 1)])(x)
    assert (y == 3).all()
