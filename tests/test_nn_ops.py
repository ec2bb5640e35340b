"""The ops of minidl/ops/dropout.py and minidl/ops/norm.py beyond their gradient-check cases
(tests/cases_nn.py, run by tests/test_ops.py): the dropout cases' forward, the properties
of the masks, batch statistics and errors."""
import numpy as np
import pytest

import minidl
from minidl.ops.dropout import Dropout, Dropout2d
from minidl.ops.norm import BatchNorm
from tests.cases_nn import CASES, ref_dropout

DROPOUT_CASES = [c for c in CASES if c.op in ("dropout", "dropout2d")]


@pytest.mark.parametrize("case", DROPOUT_CASES, ids=lambda c: c.name)
def test_dropout_case_forward(case, device):
    """The forward of the dropout cases (whose gradients tests/test_ops.py checks)."""
    x = case.inputs(np.random.default_rng(0))[0]
    p = case.fn.p
    expected = ref_dropout(x, p, channels=case.op == "dropout2d")
    for dtype, tol in ((np.float32, 1e-6), (np.float64, 1e-12)):
        y = case.fn(minidl.Tensor(x.astype(dtype), device=device))
        assert y.dtype == dtype and y.device == device
        y = y.numpy()
        if device == "cuda":  # CuPy's generator draws other numbers than NumPy's: check the form
            assert np.all((y == 0) | np.isclose(y, x / (1 - p), rtol=tol))
        else:
            np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)


def test_every_nn_op_has_a_case():
    ops = {c.op for c in CASES}
    for name in ("dropout", "dropout2d", "batch_norm", "batch_norm_eval"):
        assert name in minidl.OP_REGISTRY and name in ops


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zeroes_a_fraction_p_and_keeps_the_mean(p):
    minidl.manual_seed(0)
    x = minidl.ones(200, 500)
    y = Dropout(p)(x).numpy()
    assert y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, np.float32(1 / (1 - p))}
    assert abs((y == 0).mean() - p) < 0.01           # 100,000 draws: std of the fraction < 0.0016
    assert abs(y.mean() - 1.0) < 0.03                # inverted scaling keeps the expectation


def test_dropout2d_zeroes_whole_channels():
    minidl.manual_seed(1)
    y = Dropout2d(0.5)(minidl.ones(30, 20, 4, 3)).numpy()
    per_channel = y.reshape(30, 20, -1)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # each map all 0 or all 2
    assert 0.4 < (per_channel[:, :, 0] == 0).mean() < 0.6


def test_dropout_mask_is_the_same_for_both_dtypes_and_seeds_repeat():
    x = np.random.default_rng(0).standard_normal((10, 10))
    outs = []
    for dtype in (np.float32, np.float64, np.float32):
        minidl.manual_seed(3)
        outs.append(Dropout(0.5)(minidl.Tensor(x.astype(dtype))).numpy() == 0)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    minidl.manual_seed(4)
    assert not np.array_equal(outs[0], Dropout(0.5)(minidl.Tensor(x)).numpy() == 0)


def test_dropout_p_one_gives_zeros_and_bad_p_raises():
    assert np.all(Dropout(1.0)(minidl.ones(3, 3)).numpy() == 0)
    with pytest.raises(ValueError, match=r"\[0, 1\].*1.5"):
        Dropout(1.5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Dropout2d(0.5)(minidl.ones(3, 3))


def test_batch_norm_reports_batch_mean_and_biased_variance():
    x = np.random.default_rng(0).standard_normal((6, 3, 2, 2))
    op = BatchNorm()
    op(minidl.Tensor(x), minidl.ones(3, dtype=np.float64), minidl.zeros(3, dtype=np.float64))
    np.testing.assert_allclose(op.mean, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(op.var, x.var(axis=(0, 2, 3)))


def test_batch_norm_errors_name_shapes():
    with pytest.raises(ValueError, match=r"more than one value per channel.*\(1, 3\)"):
        BatchNorm()(minidl.zeros(1, 3), minidl.ones(3), minidl.zeros(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*\(4,\)"):
        BatchNorm()(minidl.zeros(2, 3), minidl.ones(4), minidl.zeros(3))
