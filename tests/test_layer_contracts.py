"""What every layer and floating-point op promises, as PyTorch does: an empty batch (N = 0) goes forward and
back; integer, bool, complex and float16 input is refused with a TypeError naming the dtypes; non-positive
kernel sizes and strides are refused with a ValueError when the layer is built; tensors hold numbers only."""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.nn import functional as F

try:
    import torch
except ImportError:  # a reference only
    torch = None

# layer name: (build, input shape without the batch axis); every Module in minidl.nn must have an entry
LAYERS = {
    "Linear": (lambda: nn.Linear(5, 3), (5,)),
    "Identity": (lambda: nn.Identity(), (5,)),
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 7, 6)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (3, 6, 6)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, 2, 1), (3, 6, 6)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (3, 6, 6)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(4), (4, 5)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), (3, 4, 4)),
    "SyncBatchNorm": (lambda: nn.SyncBatchNorm(3), (3, 4, 4)),   # without a process group: one process
    "Dropout": (lambda: nn.Dropout(0.5), (3, 4)),
    "Dropout2d": (lambda: nn.Dropout2d(0.5), (3, 4, 4)),
    "ReLU": (lambda: nn.ReLU(), (4,)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), (4,)),
    "Tanh": (lambda: nn.Tanh(), (4,)),
    "Sigmoid": (lambda: nn.Sigmoid(), (4,)),
    "Softmax": (lambda: nn.Softmax(1), (4,)),
    "LogSoftmax": (lambda: nn.LogSoftmax(1), (4,)),
    "Flatten": (lambda: nn.Flatten(), (3, 2, 2)),
    "Sequential": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(2 * 4 * 4, 3)), (1, 6, 6)),
    "ModuleList": (None, None),   # holds modules; no forward of its own
    "BasicBlock": (lambda: nn.BasicBlock(4, 8, stride=2), (4, 6, 6)),
    "PadShortcut": (lambda: nn.PadShortcut(4, 8, stride=2), (4, 6, 6)),
    "ResNet": (lambda: nn.resnet20(num_classes=3), (3, 8, 8)),
    "CrossEntropyLoss": (None, None),   # losses: see test_losses_of_an_empty_batch
    "NLLLoss": (None, None),
    "MSELoss": (None, None),
}


# PyTorch's counterparts, for the output shape of an empty batch
TORCH_LAYERS = {} if torch is None else {
    "Linear": lambda: torch.nn.Linear(5, 3), "Identity": torch.nn.Identity,
    "Conv2d": lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), "MaxPool2d": lambda: torch.nn.MaxPool2d(2),
    "AvgPool2d": lambda: torch.nn.AvgPool2d(3, 2, 1), "AdaptiveAvgPool2d": lambda: torch.nn.AdaptiveAvgPool2d((2, 3)),
    "BatchNorm1d": lambda: torch.nn.BatchNorm1d(4), "BatchNorm2d": lambda: torch.nn.BatchNorm2d(3),
    "Dropout": torch.nn.Dropout, "Dropout2d": torch.nn.Dropout2d, "ReLU": torch.nn.ReLU,
    "LeakyReLU": torch.nn.LeakyReLU, "Tanh": torch.nn.Tanh, "Sigmoid": torch.nn.Sigmoid,
    "Softmax": lambda: torch.nn.Softmax(1), "LogSoftmax": lambda: torch.nn.LogSoftmax(1), "Flatten": torch.nn.Flatten,
    "Sequential": lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                              torch.nn.Flatten(), torch.nn.Linear(32, 3))}


def test_every_layer_has_an_entry():
    modules = {name for name in nn.__all__ if isinstance(getattr(nn, name), type)
               and issubclass(getattr(nn, name), nn.Module) and name not in ("Module",)}
    assert modules == set(LAYERS), modules ^ set(LAYERS)


@pytest.mark.parametrize("name", [n for n, (build, _) in LAYERS.items() if build is not None])
def test_an_empty_batch_goes_forward_and_back(name, ops_mode):
    build, shape = LAYERS[name]
    minidl.manual_seed(0)
    layer = build().train()
    x = minidl.Tensor(np.zeros((0,) + shape, np.float32), requires_grad=True)
    y = layer(x)
    assert y.shape[0] == 0 and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.shape == x.shape
    for p in layer.parameters():
        assert p.grad is None or (p.grad.shape == p.shape and not p.grad.numpy().any()), name
    if torch is not None and name in TORCH_LAYERS:   # the output shape PyTorch gives
        assert tuple(TORCH_LAYERS[name]()(torch.zeros((0,) + shape)).shape) == y.shape


def test_an_empty_batch_leaves_the_running_statistics_alone_and_counts_it():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.data[...] = 0.5
    bn(minidl.Tensor(np.zeros((0, 3, 4, 4), np.float32)))
    np.testing.assert_array_equal(bn.running_mean.numpy(), 0.5)
    np.testing.assert_array_equal(bn.running_var.numpy(), 1.0)
    assert int(bn.num_batches_tracked.item()) == 1   # as PyTorch


def test_losses_of_an_empty_batch():
    logits = minidl.Tensor(np.zeros((0, 4), np.float32), requires_grad=True)
    target = minidl.Tensor(np.zeros(0, np.int64))
    for loss in (nn.CrossEntropyLoss(), nn.NLLLoss(), nn.CrossEntropyLoss(reduction="sum")):
        value = loss(logits, target)
        assert value.shape == () and (np.isnan(value.item()) or value.item() == 0)   # mean: nan, sum: 0
    total = nn.CrossEntropyLoss(reduction="sum")(logits, target)
    total.backward()
    assert logits.grad.shape == (0, 4)
    assert nn.MSELoss(reduction="sum")(logits, minidl.zeros(0, 4)).item() == 0


# ------------------------------------------------------------------ dtypes
FLOAT_LAYERS = {
    "Linear": (lambda: nn.Linear(4, 3), (2, 4), "linear"),
    "Conv2d": (lambda: nn.Conv2d(3, 2, 3), (2, 3, 5, 5), "conv2d"),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 3, 4, 4), "max_pool2d"),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), (2, 3, 4, 4), "avg_pool2d"),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 4), "adaptive_avg_pool2d"),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), (4, 3), "batch_norm"),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), (2, 3, 4, 4), "batch_norm"),
    "BatchNorm2d-eval": (lambda: nn.BatchNorm2d(3).eval(), (2, 3, 4, 4), "batch_norm_eval"),
    "Dropout": (lambda: nn.Dropout(0.5), (2, 3), "dropout"),
    "Dropout2d": (lambda: nn.Dropout2d(0.5), (2, 3, 4, 4), "dropout2d"),
    "Tanh": (lambda: nn.Tanh(), (2, 3), "tanh"),
    "Sigmoid": (lambda: nn.Sigmoid(), (2, 3), "sigmoid"),
    "Softmax": (lambda: nn.Softmax(1), (2, 3), "softmax"),
    "LogSoftmax": (lambda: nn.LogSoftmax(1), (2, 3), "log_softmax"),
}
BAD_DTYPES = ["int64", "int32", "uint8", "bool", "complex64", "float16"]


@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("name", list(FLOAT_LAYERS))
def test_float_layers_refuse_other_dtypes_naming_them(name, dtype, ops_mode):
    build, shape, op = FLOAT_LAYERS[name]
    x = minidl.Tensor(np.ones(shape).astype(dtype))
    with pytest.raises(TypeError, match=rf"^{op}: input has dtype {dtype}.*float32 or float64") as err:
        build()(x)
    if name in ("Linear", "Conv2d"):     # a layer with weights names theirs too, as PyTorch does
        assert "weight has dtype float32" in str(err.value)


@pytest.mark.parametrize("fn,op", [
    (minidl.exp, "exp"), (minidl.log, "log"), (minidl.sqrt, "sqrt"), (minidl.tanh, "tanh"),
    (minidl.sigmoid, "sigmoid"), (minidl.softmax, "softmax"), (minidl.log_softmax, "log_softmax"),
    (minidl.mean, "mean"), (minidl.var, "var"),
    (lambda x: minidl.cross_entropy(x, np.array([0, 1])), "cross_entropy"),
    (lambda x: minidl.nll_loss(x, np.array([0, 1])), "nll_loss"),
    (lambda x: minidl.mse_loss(x, x), "mse_loss"),
])
@pytest.mark.parametrize("dtype", ["int64", "bool", "complex128", "float16"])
def test_float_ops_refuse_other_dtypes(fn, op, dtype):
    with pytest.raises(TypeError, match=rf"^{op}: input has dtype {dtype}"):
        fn(minidl.Tensor(np.ones((2, 3)).astype(dtype)))


def test_mixed_float_dtypes_are_refused_naming_both():
    layer = nn.Linear(4, 3)   # float32 parameters
    with pytest.raises(TypeError, match="linear: input has dtype float64 but weight has dtype float32"):
        layer(minidl.Tensor(np.ones((2, 4))))
    assert layer(minidl.Tensor(np.ones((2, 4), np.float32))).dtype == np.float32
    assert layer.double()(minidl.Tensor(np.ones((2, 4)))).dtype == np.float64


def test_integer_arithmetic_stays_integer_as_in_pytorch():
    """The rule is for floating-point ops; sums, products, maxima and shapes of integer tensors stay allowed."""
    t = minidl.tensor([[1, 2], [3, 4]])
    assert (t + 1).dtype == np.int64 and (t * t).sum().item() == 30 and t.max().item() == 4
    assert minidl.relu(t - 2).tolist() == [[0, 0], [1, 2]]


@pytest.mark.parametrize("data", ["abc", ["a", "b"], None, [object()], {"a": 1}])
def test_tensors_hold_numbers_only(data):
    with pytest.raises(TypeError, match="a tensor holds numbers"):
        minidl.tensor(data)


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize("build,match", [
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size must be >= 1, got 0"),
    (lambda: nn.Conv2d(3, 4, (3, -1)), r"kernel_size must be >= 1, got \(3, -1\)"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), "stride must be >= 1, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=0), "dilation must be >= 1, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), "padding must be >= 0, got -1"),
    (lambda: nn.MaxPool2d(0), "kernel_size must be >= 1, got 0"),
    (lambda: nn.MaxPool2d(2, stride=0), "stride must be >= 1, got 0"),
    (lambda: nn.AvgPool2d(-1), "kernel_size must be >= 1, got -1"),
    (lambda: nn.AdaptiveAvgPool2d(0), "output_size must be >= 1, got 0"),
    (lambda: F.conv2d(minidl.zeros(1, 3, 5, 5), minidl.zeros(2, 3, 3, 3), stride=0), "stride must be >= 1"),
    (lambda: F.max_pool2d(minidl.zeros(1, 3, 5, 5), 0), "kernel_size must be >= 1"),
    (lambda: F.conv2d(minidl.zeros(1, 3, 5, 5), minidl.zeros(2, 3, 0, 3)), "kernel size must be >= 1"),
])
def test_non_positive_sizes_are_refused_with_a_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("build", [lambda: nn.Conv2d(3, 4, 2.5), lambda: nn.MaxPool2d("2"),
                                   lambda: nn.Conv2d(3, 4, 3, stride=True)])
def test_sizes_of_another_type_are_a_type_error(build):
    with pytest.raises(TypeError, match="must be an int or a pair of ints"):
        build()
