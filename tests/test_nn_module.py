"""nn.Module mechanics: registration, traversal, modes, devices, state_dict, repr, summary, containers."""
from collections import OrderedDict

import numpy as np
import pytest

import minidl
from minidl import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.fc2 = nn.Linear(3, 2, bias=False)
        self.scale = nn.Parameter(minidl.ones(2))
        self.register_buffer("steps", minidl.zeros(1))
        self.register_buffer("cache", minidl.zeros(2), persistent=False)
        self.not_registered = minidl.zeros(5)  # a plain Tensor attribute: neither parameter nor buffer

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.bn(self.fc1(x)))) * self.scale


def cifar_cnn():
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(1600, 512), nn.ReLU(), nn.Linear(512, 10))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 3072), nn.ReLU(), nn.Linear(3072, 1000), nn.ReLU(),
                         nn.Linear(1000, 10))


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 4), nn.ReLU(),
                         nn.MaxPool2d(3), nn.Conv2d(64, 120, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(120, 120), nn.ReLU(), nn.Linear(120, 10))


# ------------------------------------------------------------------ registration and traversal
def test_parameters_buffers_and_children_are_registered_in_order():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "fc1.weight", "fc1.bias", "bn.weight", "bn.bias",
                                                      "fc2.weight"]
    assert [n for n, _ in net.named_buffers()] == ["steps", "cache", "bn.running_mean", "bn.running_var",
                                                   "bn.num_batches_tracked"]
    assert [n for n, _ in net.named_children()] == ["fc1", "bn", "fc2"]
    assert [n for n, _ in net.named_modules()] == ["", "fc1", "bn", "fc2"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert not any(b.requires_grad for b in net.buffers())
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert net.fc2.bias is None and "fc2.bias" not in net.state_dict()
    assert len(list(net.modules())) == 4


def test_reassigning_and_deleting_attributes_updates_the_registry():
    net = Net()
    net.fc1 = nn.Linear(4, 3, bias=False)
    assert "fc1.bias" not in dict(net.named_parameters())
    net.steps = minidl.ones(1)
    assert net.state_dict()["steps"].item() == 1
    with pytest.raises(TypeError, match="parameter 'scale'.*Parameter or None"):
        net.scale = minidl.ones(2)
    with pytest.raises(TypeError, match="buffer 'steps'.*Tensor or None"):
        net.steps = 3
    del net.fc2
    assert "fc2" not in dict(net.named_children())
    with pytest.raises(AttributeError, match="'Net' object has no attribute 'fc2'"):
        net.fc2


def test_assigning_before_super_init_says_so():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Broken()


def test_shared_parameter_is_listed_once():
    fc = nn.Linear(3, 3)
    seq = nn.Sequential(fc, nn.ReLU(), fc)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_get_submodule_and_apply():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 3)))
    assert net.get_submodule("1.0").out_features == 3
    with pytest.raises(AttributeError, match="no submodule '5'"):
        net.get_submodule("5")
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Linear", "Sequential", "Sequential"]


# ------------------------------------------------------------------ modes, gradients, devices
def test_train_and_eval_propagate_to_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.bn.eval()
    assert net.training and not net.bn.training


def test_zero_grad_and_requires_grad():
    net = Net()
    out = net(minidl.randn(5, 4)).sum()
    out.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_to_cpu_and_dtype_moves_in_place():
    net = Net()
    params = list(net.parameters())
    ids = [id(p) for p in params]
    net(minidl.randn(5, 4)).sum().backward()
    assert net.to("cpu") is net
    assert [id(p) for p in net.parameters()] == ids and all(p.device == "cpu" for p in params)
    net.to(np.float64)
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    assert net.bn.running_mean.dtype == np.float64
    assert net.bn.num_batches_tracked.dtype == np.int64      # integer buffers keep their dtype
    assert net(minidl.randn(5, 4, dtype=np.float64)).dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to(device="cpu", dtype=np.float64)
    assert net.fc1.weight.dtype == np.float64
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        net.to(device="tpu")
    with pytest.raises(TypeError, match="floating-point"):
        net.to(np.int64)


def test_to_cuda_without_a_gpu_says_what_is_missing():
    if minidl.is_cuda_available():
        net = Net().to("cuda")
        assert all(p.device == "cuda" for p in net.parameters())
        assert net(minidl.randn(3, 4, device="cuda")).device == "cuda"
    else:
        with pytest.raises(RuntimeError, match="'cuda' was requested"):
            Net().to("cuda")


# ------------------------------------------------------------------ state_dict
def test_state_dict_holds_params_and_persistent_buffers_sharing_memory():
    net = Net()
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["scale", "steps", "fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "bn.running_mean",
                        "bn.running_var", "bn.num_batches_tracked", "fc2.weight"]
    assert all(not t.requires_grad and not isinstance(t, nn.Parameter) for t in sd.values())
    assert sd["fc1.weight"].data is net.fc1.weight.data
    assert net.state_dict(keep_vars=True)["fc1.weight"] is net.fc1.weight


def test_state_dict_round_trip_reproduces_outputs():
    minidl.manual_seed(0)
    a = Net()
    a.train()
    for _ in range(3):  # move running statistics away from their initial values
        a(minidl.randn(8, 4))
    minidl.manual_seed(1)
    b = Net()
    x = minidl.randn(6, 4)
    a.eval(), b.eval()
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    params_before = [id(p) for p in b.parameters()]
    result = b.load_state_dict({k: v.numpy().copy() for k, v in a.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert [id(p) for p in b.parameters()] == params_before  # copied in place
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and va.dtype == vb.dtype
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert b.bn.num_batches_tracked.item() == 3


def test_load_state_dict_lists_every_problem_at_once_and_copies_nothing():
    net = Net()
    sd = net.state_dict()
    bad = OrderedDict((k, v.numpy().copy() + 1) for k, v in sd.items())
    del bad["fc1.bias"], bad["steps"]
    bad["extra.weight"] = np.zeros(3)
    bad["fc2.weight"] = np.zeros((3, 2))
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError) as err:
        net.load_state_dict(bad)
    msg = str(err.value)
    assert "Error(s) in loading state_dict for Net" in msg
    assert 'Missing key(s) in state_dict: "steps", "fc1.bias".' in msg
    assert 'Unexpected key(s) in state_dict: "extra.weight".' in msg
    assert "size mismatch for fc2.weight: copying a tensor of shape (3, 2) from the state_dict, " \
           "the shape in the current model is (2, 3)" in msg
    for k, v in net.state_dict().items():  # nothing was copied
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_load_state_dict_non_strict_reports_keys_but_still_rejects_shape_mismatch():
    net = Net()
    partial = {"fc1.weight": np.full((3, 4), 0.5), "other": np.zeros(1)}
    result = net.load_state_dict(partial, strict=False)
    assert result.unexpected_keys == ["other"] and "fc1.bias" in result.missing_keys
    assert np.all(net.fc1.weight.numpy() == 0.5) and net.fc1.weight.dtype == np.float32
    with pytest.raises(RuntimeError, match="size mismatch for fc1.weight"):
        net.load_state_dict({"fc1.weight": np.zeros((4, 3))}, strict=False)
    with pytest.raises(TypeError, match="mapping"):
        net.load_state_dict([1, 2])


# ------------------------------------------------------------------ repr
def test_repr_reads_like_pytorch():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 16, 10, bias=False))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
        "  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (2): ReLU()\n"
        "  (3): MaxPool2d(kernel_size=2, stride=2, padding=0)\n"
        "  (4): Flatten(start_dim=1, end_dim=-1)\n"
        "  (5): Dropout(p=0.25)\n"
        "  (6): Linear(in_features=128, out_features=10, bias=False)\n"
        ")")
    nested = repr(nn.Sequential(nn.Sequential(nn.Tanh())))
    assert nested == "Sequential(\n  (0): Sequential(\n    (0): Tanh()\n  )\n)"
    assert repr(nn.Parameter(minidl.zeros(1))).startswith("Parameter containing:\ntensor(")


# ------------------------------------------------------------------ summary
@pytest.mark.parametrize("build,shape,count", [(cifar_cnn, (3, 32, 32), 890_410), (mlp, (3, 32, 32), 12_523_266),
                                               (small_cnn, (3, 32, 32), 81_834)],
                         ids=["cifar-cnn", "mlp-3072-3072-1000-10", "small-cnn"])
def test_summary_parameter_counts_from_the_issue(build, shape, count):
    s = build().summary(shape, print_fn=None)
    assert s.total_params == count and s.trainable_params == count and s.non_trainable_params == 0
    assert f"Total params: {count:,}" in s.text
    assert sum(r[2] for r in s.rows) == count


def test_summary_table_matches_torchsummary_layout():
    printed = []
    s = cifar_cnn().summary((3, 32, 32), print_fn=printed.append)
    assert printed == [s.text] and str(s) == s.text
    lines = s.text.split("\n")
    assert lines[1] == "        Layer (type)               Output Shape         Param #"
    assert lines[3] == "            Conv2d-1           [-1, 32, 30, 30]             896"
    assert "        MaxPool2d-10             [-1, 64, 5, 5]               0" in lines
    assert "           Linear-12                  [-1, 512]         819,712" in lines
    # sizes in MB: input 3*32*32*4 bytes; activations: sum of the 14 outputs, twice (value and gradient)
    acts = 2 * (32 * 30 * 30 + 32 * 28 * 28) + 32 * 14 * 14 + 2 * (64 * 12 * 12 + 64 * 10 * 10) + 64 * 25 \
        + 1600 + 512 * 2 + 10
    assert s.input_size_mb == pytest.approx(3 * 32 * 32 * 4 / 2**20)
    assert s.forward_backward_size_mb == pytest.approx(2 * acts * 4 / 2**20)
    assert s.params_size_mb == pytest.approx(890_410 * 4 / 2**20)
    assert "Input size (MB): 0.01" in lines and "Forward/backward pass size (MB): 1.14" in lines
    assert "Params size (MB): 3.40" in lines and "Estimated Total Size (MB): 4.55" in lines
    with_batch = cifar_cnn().summary((3, 32, 32), batch_size=16, print_fn=None)
    assert with_batch.rows[0][1] == [16, 32, 30, 30]
    assert with_batch.forward_backward_size_mb == pytest.approx(16 * s.forward_backward_size_mb)


def test_summary_resnets_and_frozen_parameters():
    r18 = nn.resnet18().summary((3, 32, 32), print_fn=None)
    assert r18.total_params == 11_173_962            # the usual CIFAR ResNet-18 (kuangliu/pytorch-cifar)
    assert f"{r18.total_size_mb:.2f}" == "53.89"      # as torchsummary on the torch twin (test_nn_torch.py)
    r20 = nn.resnet20()
    assert r20.summary((3, 32, 32), print_fn=None).total_params == 269_722   # He et al.: 0.27M
    assert nn.resnet20(shortcut="B").summary((3, 32, 32), print_fn=None).total_params == 272_474
    r20.fc.requires_grad_(False)
    s = r20.summary((3, 32, 32), print_fn=None)
    assert s.trainable_params == 269_722 - 650 and s.non_trainable_params == 650


def test_summary_leaves_the_model_as_it_was():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    net.train()
    net[1].eval()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    net.summary((4,), print_fn=None)
    assert net.training and net[0].training and not net[1].training and net[2].training
    assert all(not m._forward_hooks for m in net.modules())
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_summary_of_a_single_layer_and_of_several_inputs():
    s = nn.Linear(5, 2).summary((5,), print_fn=None)
    assert s.rows == [("Linear-1", [-1, 2], 12)]
    assert nn.summary(nn.Linear(5, 2), (5,), print_fn=None).rows == s.rows  # the function form

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    s = Two().summary([(3,), (4,)], print_fn=None)
    assert [r[0] for r in s.rows] == ["Linear-1", "Linear-2"] and s.total_params == 18
    assert s.input_size_mb == pytest.approx(7 * 4 / 2**20)


# ------------------------------------------------------------------ containers
def test_sequential_indexing_len_append_slice_delete():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and seq[-1].out_features == 4
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is seq[0]
    seq.append(nn.Tanh())
    assert len(seq) == 4 and list(seq._modules) == ["0", "1", "2", "3"]
    assert seq(minidl.randn(5, 2)).shape == (5, 4)
    del seq[1]
    assert list(seq._modules) == ["0", "1", "2"] and isinstance(seq[1], nn.Linear)
    seq[2] = nn.Sigmoid()
    assert isinstance(seq[2], nn.Sigmoid)
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"] and isinstance(named.act, nn.ReLU)
    with pytest.raises(IndexError, match="index 7 is out of range for a Sequential of length 3"):
        seq[7]
    with pytest.raises(TypeError, match="Sequential takes Modules, got a int at position 0"):
        nn.Sequential(3)


def test_module_list_registers_its_modules():
    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(3, 3) for _ in range(2)])
            self.layers.append(nn.Linear(3, 1))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    t = Tower()
    assert len(t.layers) == 3 and len(list(t.parameters())) == 6
    assert list(t.state_dict())[:2] == ["layers.0.weight", "layers.0.bias"]
    assert t(minidl.randn(2, 3)).shape == (2, 1)
    t.layers.insert(0, nn.Identity())
    assert isinstance(t.layers[0], nn.Identity) and t.layers[3].out_features == 1
    assert isinstance(t.layers[1:], nn.ModuleList) and len(t.layers[1:]) == 3
    with pytest.raises(NotImplementedError, match="iterate"):
        t.layers(minidl.randn(2, 3))


def test_forward_hooks_can_be_removed():
    fc = nn.Linear(2, 2)
    seen = []
    h = fc.register_forward_hook(lambda m, inp, out: seen.append(out.shape))
    fc(minidl.randn(3, 2))
    h.remove()
    fc(minidl.randn(3, 2))
    assert seen == [(3, 2)]


def test_deepcopy_and_pickle_give_independent_equal_models():
    import copy
    import pickle
    net = Net().eval()
    x = minidl.randn(3, 4)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert clone.fc1.weight is not net.fc1.weight and isinstance(clone.fc1.weight, nn.Parameter)
        np.testing.assert_array_equal(clone(x).numpy(), net(x).numpy())
        clone.fc1.weight.data[...] = 0
        assert net.fc1.weight.numpy().any()


def test_functional_reexports_the_functional_api():
    F = nn.functional
    for name in F.__all__:
        assert callable(getattr(F, name)), name
    for name in ("relu", "conv2d", "max_pool2d", "cross_entropy", "dropout", "batch_norm", "linear", "softmax"):
        assert name in F.__all__
    x = minidl.randn(4, 3)
    np.testing.assert_allclose(F.softmax(x, dim=1).numpy().sum(1), 1, rtol=1e-6)
    assert F.dropout(x, 0.5, training=False) is x
    rm, rv = minidl.zeros(3), minidl.ones(3)
    y = F.batch_norm(x, rm, rv, training=True)
    np.testing.assert_allclose(y.numpy().mean(0), 0, atol=1e-6)
    # against the exact mean, to float32's rounding relative to the spread (the mean of 4 values can be near 0)
    np.testing.assert_allclose(rm.numpy(), 0.1 * x.numpy().mean(0, dtype=np.float64), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="both running_mean and running_var"):
        F.batch_norm(x, rm, None)
