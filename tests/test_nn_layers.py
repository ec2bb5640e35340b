"""Every layer gradient-checked in float64 through its module (input and parameters), over
several configurations; train/eval behaviour of Dropout and BatchNorm; initialisation."""
import math

import numpy as np
import pytest

import minidl
from minidl import nn
from tests.gradcases import away_from_zero, distinct


def T(a, grad=True):
    return minidl.Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def check_module(layer, x, max_elements=40, restore_buffers=False, reseed=None, **kw):
    """gradcheck of layer(x) with respect to x and every parameter, in float64.  With
    restore_buffers, the buffers (running statistics) are put back after each probe, so
    that the hundreds of forward passes of the check leave them as one pass would."""
    layer.double()
    params = list(layer.named_parameters())
    buffers = list(layer.buffers())

    def fn(x, *ps):
        saved = [b.data.copy() for b in buffers] if restore_buffers else None
        if reseed is not None:
            minidl.manual_seed(reseed)
        y = layer(x)
        if restore_buffers:
            for b, s in zip(buffers, saved):
                b.data[...] = s
        return y

    inputs = [T(x)] + [p for _, p in params]
    names = ["input"] + [n for n, _ in params]
    assert minidl.gradcheck(fn, inputs, names=names, max_elements=max_elements, **kw)


# ------------------------------------------------------------------ Linear
@pytest.mark.parametrize("shape,bias", [((5, 4), True), ((1, 4), True), ((5, 4), False), ((2, 3, 4), True)],
                         ids=["batch5", "batch1", "no-bias", "3d-input"])
def test_linear_gradcheck(shape, bias):
    minidl.manual_seed(0)
    layer = nn.Linear(4, 3, bias=bias)
    check_module(layer, np.random.default_rng(0).standard_normal(shape))
    assert layer(T(np.zeros(shape), grad=False)).shape == shape[:-1] + (3,)


def test_linear_formula_and_error():
    layer = nn.Linear(3, 2)
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    y = layer(minidl.Tensor(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), x @ layer.weight.numpy().T + layer.bias.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(4, 5\).*5 features.*\(2, 3\) expects 3"):
        layer(minidl.zeros(4, 5))


# ------------------------------------------------------------------ Conv2d
CONV_CONFIGS = [
    dict(cin=2, cout=3, k=3, stride=1, padding=0, dilation=1, bias=True, x=(2, 2, 6, 5)),
    dict(cin=2, cout=3, k=3, stride=2, padding=1, dilation=1, bias=True, x=(2, 2, 7, 6)),
    dict(cin=2, cout=2, k=3, stride=1, padding="same", dilation=1, bias=False, x=(1, 2, 5, 7)),
    dict(cin=2, cout=2, k=3, stride=1, padding="same", dilation=2, bias=True, x=(2, 2, 7, 6)),
    dict(cin=3, cout=2, k=1, stride=1, padding=0, dilation=1, bias=True, x=(2, 3, 4, 3)),
    dict(cin=1, cout=2, k=5, stride=2, padding=2, dilation=1, bias=True, x=(1, 1, 9, 8)),
    dict(cin=2, cout=2, k=(3, 2), stride=(2, 1), padding=(1, 0), dilation=1, bias=True, x=(2, 2, 6, 5)),
    dict(cin=2, cout=2, k=3, stride=1, padding=1, dilation=2, bias=True, x=(1, 2, 6, 6)),
]


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=lambda c: f"k{c['k']}-s{c['stride']}-p{c['padding']}-d{c['dilation']}"
                         f"-{'bias' if c['bias'] else 'nobias'}-x{'x'.join(map(str, c['x']))}")
def test_conv2d_gradcheck(cfg):
    minidl.manual_seed(0)
    layer = nn.Conv2d(cfg["cin"], cfg["cout"], cfg["k"], stride=cfg["stride"], padding=cfg["padding"],
                      dilation=cfg["dilation"], bias=cfg["bias"])
    check_module(layer, np.random.default_rng(0).standard_normal(cfg["x"]), max_elements=30)


def test_conv2d_same_padding_keeps_size_and_errors_are_clear():
    layer = nn.Conv2d(3, 4, 4, padding="same")
    assert layer(minidl.zeros(2, 3, 7, 6)).shape == (2, 4, 7, 6)
    assert nn.Conv2d(3, 4, 3, padding="valid")(minidl.zeros(1, 3, 5, 5)).shape == (1, 4, 3, 3)
    with pytest.raises(ValueError, match=r"same.*stride 1"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(2, 4, 8, 8\)"):
        nn.Conv2d(3, 4, 3)(minidl.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair"):
        nn.Conv2d(3, 4, (3, 3, 3))


# ------------------------------------------------------------------ pooling
POOL_CONFIGS = [(nn.MaxPool2d, dict(kernel_size=2)), (nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1)),
                (nn.MaxPool2d, dict(kernel_size=3, stride=1)), (nn.AvgPool2d, dict(kernel_size=2)),
                (nn.AvgPool2d, dict(kernel_size=3, stride=2, padding=1)), (nn.AvgPool2d, dict(kernel_size=(3, 2), stride=1)),
                (nn.AdaptiveAvgPool2d, dict(output_size=1)), (nn.AdaptiveAvgPool2d, dict(output_size=(2, 3)))]


@pytest.mark.parametrize("cls,kw", POOL_CONFIGS, ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 2, 6, 6)], ids=["non-square", "batch1"])
def test_pooling_gradcheck(cls, kw, shape):
    layer = cls(**kw)
    check_module(layer, distinct(shape, np.random.default_rng(0)))  # distinct values: no max ties


def test_pooling_stride_defaults_to_kernel():
    assert nn.MaxPool2d(3).stride == 3 and nn.AvgPool2d(2, 1).stride == 1
    assert nn.MaxPool2d(2)(minidl.zeros(1, 1, 8, 6)).shape == (1, 1, 4, 3)
    assert nn.AdaptiveAvgPool2d(1)(minidl.zeros(2, 5, 7, 3)).shape == (2, 5, 1, 1)


# ------------------------------------------------------------------ activations, Flatten, Identity
ACTIVATIONS = [nn.ReLU(), nn.LeakyReLU(), nn.LeakyReLU(0.2), nn.Tanh(), nn.Sigmoid(), nn.Softmax(dim=1),
               nn.Softmax(dim=-1), nn.LogSoftmax(dim=1), nn.Flatten(), nn.Flatten(0, 2), nn.Identity()]


@pytest.mark.parametrize("layer", ACTIVATIONS, ids=repr)
def test_activation_gradcheck(layer):
    check_module(layer, away_from_zero((3, 4, 2), np.random.default_rng(0)))


def test_activation_formulas():
    x = np.linspace(-3, 3, 13).reshape(1, 13)
    t = T(x, grad=False)
    np.testing.assert_allclose(nn.ReLU()(t).numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(nn.LeakyReLU(0.1)(t).numpy(), np.where(x > 0, x, 0.1 * x))
    np.testing.assert_allclose(nn.Tanh()(t).numpy(), np.tanh(x))
    np.testing.assert_allclose(nn.Sigmoid()(t).numpy(), 1 / (1 + np.exp(-x)))
    e = np.exp(x - x.max())
    np.testing.assert_allclose(nn.Softmax(dim=1)(t).numpy(), e / e.sum())
    np.testing.assert_allclose(nn.LogSoftmax(dim=1)(t).numpy(), np.log(e / e.sum()))
    assert nn.Flatten()(minidl.zeros(2, 3, 4, 5)).shape == (2, 60)
    assert nn.Flatten(2)(minidl.zeros(2, 3, 4, 5)).shape == (2, 3, 20)
    x4 = minidl.randn(2, 3, 4, 5)
    assert np.allclose(nn.Softmax()(x4).numpy().sum(axis=1), 1)  # PyTorch's implicit dim: 1 for 4-D input


# ------------------------------------------------------------------ Dropout
@pytest.mark.parametrize("cls,shape,p", [(nn.Dropout, (4, 6), 0.5), (nn.Dropout, (2, 3, 4, 4), 0.2),
                                         (nn.Dropout2d, (3, 4, 3, 3), 0.5), (nn.Dropout2d, (2, 5, 4, 3), 0.3)])
def test_dropout_gradcheck_with_a_fixed_mask(cls, shape, p):
    layer = cls(p).train()
    check_module(layer, np.random.default_rng(0).standard_normal(shape), reseed=11)


def test_dropout_is_identity_in_eval_and_random_in_train():
    x = minidl.randn(20, 30)
    for layer in (nn.Dropout(0.5), nn.Dropout2d(0.5)):
        xx = x.reshape(20, 30, 1, 1) if isinstance(layer, nn.Dropout2d) else x
        layer.eval()
        assert layer(xx) is xx
        layer.train()
        y = layer(xx).numpy()
        assert 0.3 < (y == 0).mean() < 0.7
        np.testing.assert_allclose(y[y != 0], 2 * xx.numpy()[y != 0], rtol=1e-6)
    assert nn.Dropout(0.0)(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nn.Dropout(-0.1)


# ------------------------------------------------------------------ BatchNorm
BN_CONFIGS = [(nn.BatchNorm1d, (8, 3), {}), (nn.BatchNorm1d, (4, 3, 5), {}), (nn.BatchNorm2d, (3, 4, 3, 2), {}),
              (nn.BatchNorm2d, (2, 2, 1, 1), {}), (nn.BatchNorm2d, (2, 3, 4, 4), dict(affine=False)),
              (nn.BatchNorm2d, (4, 2, 2, 3), dict(momentum=None)),
              (nn.BatchNorm1d, (6, 2), dict(track_running_stats=False, eps=0.1))]
BN_IDS = ["1d-NC", "1d-NCL", "2d", "2d-batch2-1x1", "2d-no-affine", "2d-cumulative", "1d-no-running-stats"]


def _bn_input(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 2 + rng.standard_normal((1, shape[1]) + (1,) * (len(shape) - 2))


@pytest.mark.parametrize("cls,shape,kw", BN_CONFIGS, ids=BN_IDS)
def test_batchnorm_training_gradcheck_restores_running_stats(cls, shape, kw):
    bn = cls(shape[1], **kw).train()
    if bn.affine:  # move gamma and beta away from 1 and 0
        bn.weight.data[...] = np.linspace(0.5, 1.5, shape[1])
        bn.bias.data[...] = np.linspace(-1, 1, shape[1])
    before = {k: v.numpy().copy() for k, v in bn.state_dict().items()}
    check_module(bn, _bn_input(shape), restore_buffers=True, atol=1e-5)
    for k, v in bn.state_dict().items():  # hundreds of probes, and the running statistics did not move
        np.testing.assert_array_equal(v.numpy(), before[k])


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (5, 3)), (nn.BatchNorm1d, (2, 3, 4)),
                                       (nn.BatchNorm2d, (2, 3, 3, 3)), (nn.BatchNorm2d, (1, 2, 2, 2))],
                         ids=["1d-NC", "1d-NCL", "2d", "2d-batch1"])
def test_batchnorm_eval_gradcheck(cls, shape):
    bn = cls(shape[1])
    rng = np.random.default_rng(3)
    bn.running_mean.data[...] = rng.standard_normal(shape[1])
    bn.running_var.data[...] = rng.uniform(0.5, 2, shape[1])
    bn.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    bn.eval()
    check_module(bn, _bn_input(shape))


def test_batchnorm_running_statistics_follow_pytorch_rule():
    bn = nn.BatchNorm2d(3)
    xs = [_bn_input((4, 3, 2, 2), seed=s) for s in range(3)]
    rm, rv = np.zeros(3), np.ones(3)
    for x in xs:
        y = bn(minidl.Tensor(x.astype(np.float32))).numpy()
        mu, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        np.testing.assert_allclose(y, (x - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), atol=1e-5)
        rm = 0.9 * rm + 0.1 * mu
        rv = 0.9 * rv + 0.1 * var * 16 / 15  # unbiased variance for the running estimate
    np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-5)
    assert bn.num_batches_tracked.item() == 3
    bn.eval()
    x = _bn_input((2, 3, 2, 2), seed=9)
    y = bn(minidl.Tensor(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(y, (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5), rtol=1e-4, atol=1e-5)
    assert bn.num_batches_tracked.item() == 3  # evaluation leaves the statistics alone


def test_batchnorm_cumulative_average_and_no_running_stats():
    bn = nn.BatchNorm1d(2, momentum=None)
    xs = [_bn_input((5, 2), seed=s) for s in range(4)]
    for x in xs:
        bn(minidl.Tensor(x.astype(np.float32)))
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-5)
    free = nn.BatchNorm1d(2, track_running_stats=False).eval()
    assert free.running_mean is None and list(free.state_dict()) == ["weight", "bias"]
    y = free(minidl.Tensor(xs[0].astype(np.float32))).numpy()  # batch statistics even in eval mode, as PyTorch
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-6)


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\) expects input of shape \(N, 3, H, W\), got \(2, 3\)"):
        nn.BatchNorm2d(3)(minidl.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(N, 4\) or \(N, 4, L\), got \(2, 3\)"):
        nn.BatchNorm1d(4)(minidl.zeros(2, 3))
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3)(minidl.zeros(1, 3))


# ------------------------------------------------------------------ losses
def test_loss_modules_gradcheck_and_values():
    rng = np.random.default_rng(0)
    logits, target = rng.standard_normal((6, 4)), minidl.Tensor(rng.integers(0, 4, 6))
    for loss in (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.1),
                 nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss(reduction="none")):
        assert minidl.gradcheck(lambda x: loss(x, target), [T(logits)])
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    t = target.numpy()
    assert nn.CrossEntropyLoss()(T(logits), target).item() == pytest.approx(-logp[np.arange(6), t].mean())
    smooth = -(0.9 * logp[np.arange(6), t] + 0.1 / 4 * logp.sum(1)).mean()
    assert nn.CrossEntropyLoss(label_smoothing=0.1)(T(logits), target).item() == pytest.approx(smooth)
    assert nn.NLLLoss()(T(logp), target).item() == pytest.approx(-logp[np.arange(6), t].mean())
    assert minidl.gradcheck(lambda x: nn.NLLLoss(reduction="none")(x, target), [T(logp)])
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    assert nn.MSELoss()(T(a), T(b)).item() == pytest.approx(((a - b) ** 2).mean())
    assert minidl.gradcheck(lambda x, y: nn.MSELoss(reduction="sum")(x, y), [T(a), T(b)])
    assert repr(nn.CrossEntropyLoss(label_smoothing=0.1)) == "CrossEntropyLoss(label_smoothing=0.1)"
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="avg")
    # targets given as a plain list or NumPy array are accepted
    assert nn.CrossEntropyLoss()(T(logits), list(t)).item() == pytest.approx(-logp[np.arange(6), t].mean())


# ------------------------------------------------------------------ composite models
def test_sequential_mlp_gradcheck():
    minidl.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.LogSoftmax(dim=1))
    check_module(mlp, np.random.default_rng(0).standard_normal((3, 5)), max_elements=20)


@pytest.mark.parametrize("in_planes,planes,stride,shortcut", [(3, 3, 1, "B"), (3, 4, 2, "B"), (2, 4, 2, "A")],
                         ids=["identity", "projection-B", "padding-A"])
def test_basic_block_gradcheck(in_planes, planes, stride, shortcut):
    minidl.manual_seed(0)
    block = nn.BasicBlock(in_planes, planes, stride, shortcut).train()
    check_module(block, np.random.default_rng(0).standard_normal((2, in_planes, 5, 4)), max_elements=12,
                 restore_buffers=True, atol=1e-5)
    block.eval()
    check_module(block, np.random.default_rng(1).standard_normal((2, in_planes, 5, 4)), max_elements=12)


def test_resnet_shapes_and_names():
    r20 = nn.resnet20()
    assert r20(minidl.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len([m for m in r20.modules() if isinstance(m, nn.Conv2d)]) == 19  # 19 conv + 1 fc = 20 layers
    r18 = nn.resnet18(num_classes=100)
    names = list(r18.state_dict())
    assert names[:2] == ["conv1.weight", "bn1.weight"] and "layer2.0.downsample.0.weight" in names
    assert names[-2:] == ["fc.weight", "fc.bias"] and r18.fc.out_features == 100
    assert r18.summary((3, 32, 32), print_fn=None).rows[-1] == ("Linear-50", [-1, 100], 51_300)
    with pytest.raises(ValueError, match="shortcut must be 'A'.*'B'"):
        nn.BasicBlock(3, 4, shortcut="C")


# ------------------------------------------------------------------ initialisation
def test_default_init_of_linear_and_conv_is_pytorchs():
    minidl.manual_seed(0)
    fc = nn.Linear(400, 300)
    conv = nn.Conv2d(16, 64, 5)
    for layer, fan_in in ((fc, 400), (conv, 16 * 25)):
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)): gain sqrt(2/6), bound gain*sqrt(3/fan_in)
        w, b = layer.weight.numpy(), layer.bias.numpy()
        assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(b).max() <= bound
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
        assert np.abs(w).max() > 0.98 * bound and np.abs(b).max() > 0.8 * bound


def test_init_is_seeded_and_keeps_dtype():
    minidl.manual_seed(5)
    a = nn.Linear(10, 10).weight.numpy().copy()
    minidl.manual_seed(5)
    b = nn.Linear(10, 10).weight.numpy()
    np.testing.assert_array_equal(a, b)
    t = minidl.zeros(3, 4, dtype=np.float64)
    nn.init.kaiming_normal_(t)
    assert t.dtype == np.float64 and t.numpy().std() > 0


@pytest.mark.parametrize("fn,kw,check", [
    (nn.init.kaiming_normal_, dict(nonlinearity="relu"), lambda w, fi, fo: w.std() / math.sqrt(2 / fi)),
    (nn.init.kaiming_normal_, dict(mode="fan_out", nonlinearity="relu"), lambda w, fi, fo: w.std() / math.sqrt(2 / fo)),
    (nn.init.kaiming_uniform_, dict(nonlinearity="relu"), lambda w, fi, fo: np.abs(w).max() / math.sqrt(6 / fi)),
    (nn.init.xavier_uniform_, {}, lambda w, fi, fo: np.abs(w).max() / math.sqrt(6 / (fi + fo))),
    (nn.init.xavier_normal_, dict(gain=2.0), lambda w, fi, fo: w.std() / (2 * math.sqrt(2 / (fi + fo)))),
])
def test_kaiming_and_xavier_scales(fn, kw, check):
    minidl.manual_seed(0)
    w = minidl.zeros(128, 64, 3, 3)
    fn(w, **kw)
    fan_in, fan_out = nn.init.calculate_fan_in_and_fan_out(w)
    assert (fan_in, fan_out) == (64 * 9, 128 * 9)
    assert check(w.numpy(), fan_in, fan_out) == pytest.approx(1.0, abs=0.01)


def test_init_helpers_and_errors():
    assert nn.init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    t = minidl.zeros(2, 2)
    assert np.all(nn.init.ones_(t).numpy() == 1) and np.all(nn.init.constant_(t, 0.5).numpy() == 0.5)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(minidl.zeros(5))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        nn.init.calculate_gain("swish")
    with pytest.raises(ValueError, match="fan_in"):
        nn.init.kaiming_normal_(t, mode="fan")
