"""minidl's GPU code paths end to end on the CPU, through the CuPy stand-in of tests/fake_cupy.py.

The stand-in is NumPy underneath, so these tests say nothing of CuPy itself; they check minidl's side:
every op, layer and optimizer takes its GPU branch without mixing host and device arrays or calling NumPy
on device data, a training step reads nothing back to the host, and the results equal the CPU's.
"""
import numpy as np
import pytest

import minidl
from minidl import backend, nn, optim
from tests import fake_cupy


@pytest.fixture
def gpu(monkeypatch):
    fake_cupy.install(monkeypatch)
    assert backend.cupy_status() is None
    return fake_cupy


def _net(seed, p_drop=0.0):
    # no conv bias before batch norm: its exact gradient is zero, so what it gets is rounding noise, which
    # Adam's normalisation blows up to steps of size lr, different on each path
    minidl.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(p_drop), nn.Flatten(), nn.Linear(4 * 3 * 3, 5))


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 3, 6, 6)).astype(np.float32), np.array([0, 4, 2])


def _step(model, opt, x, y):
    loss = minidl.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


@pytest.mark.parametrize("make_opt", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
                                      lambda ps: optim.Adam(ps, lr=1e-2), lambda ps: optim.AdamW(ps, lr=1e-2)],
                         ids=["sgd", "adam", "adamw"])
def test_training_steps_on_the_gpu_path_equal_the_cpu(gpu, make_opt):
    x, y = _data()
    cpu, dev = _net(1), _net(1).to("cuda")
    assert all(p.device == "cuda" for p in dev.parameters())
    opt_cpu, opt_dev = make_opt(cpu.parameters()), make_opt(dev.parameters())
    xd, yd = minidl.Tensor(x, device="cuda"), minidl.Tensor(y, device="cuda")
    for _ in range(2):
        lc, ld = _step(cpu, opt_cpu, minidl.Tensor(x), minidl.Tensor(y)), _step(dev, opt_dev, xd, yd)
        np.testing.assert_allclose(ld.item(), lc.item(), rtol=1e-5)
    for (name, a), (_, b) in zip(cpu.state_dict().items(), dev.state_dict().items()):
        assert b.device == "cuda", name
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=2e-5, atol=2e-6, err_msg=name)


def test_a_training_step_reads_nothing_back_from_the_gpu(gpu):
    model = _net(2, p_drop=0.3).to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = _data()
    xd, yd = minidl.Tensor(x, device="cuda"), minidl.Tensor(y, device="cuda")
    _step(model, opt, xd, yd)  # first step: buffers created
    gpu.SYNCS["count"] = 0
    for _ in range(2):
        loss = _step(model, opt, xd, yd)
    assert gpu.SYNCS["count"] == 0, f"{gpu.SYNCS['count']} host reads of device data in two training steps"
    assert np.isfinite(loss.item()) and gpu.SYNCS["count"] == 1


def test_bad_targets_give_a_nan_loss_on_the_gpu_without_a_host_read(gpu):
    logits = minidl.Tensor(np.zeros((3, 4), dtype=np.float32), device="cuda")
    gpu.SYNCS["count"] = 0
    loss = minidl.cross_entropy(logits, minidl.Tensor(np.array([0, 4, 1]), device="cuda"), reduction="none")
    assert gpu.SYNCS["count"] == 0
    np.testing.assert_array_equal(np.isnan(loss.numpy()), [False, True, False])
    with pytest.raises(ValueError, match="must lie in"):  # on the CPU the check still raises
        minidl.cross_entropy(minidl.Tensor(np.zeros((3, 4), dtype=np.float32)), np.array([0, 4, 1]))


def test_indexing_with_host_index_arrays_on_the_gpu(gpu):
    x = minidl.Tensor(np.arange(12, dtype=np.float64).reshape(4, 3), requires_grad=True, device="cuda")
    idx = np.array([0, 2, 0])  # a host index, repeated: the gradient scatter-adds
    y = x[idx, 1:]
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), np.arange(12.0).reshape(4, 3)[idx, 1:])
    np.testing.assert_array_equal(x.grad.numpy()[:, 1], [2, 0, 1, 0])


def test_batch_norm_cumulative_average_stays_on_the_gpu(gpu):
    bn_cpu, bn_dev = nn.BatchNorm1d(3, momentum=None), nn.BatchNorm1d(3, momentum=None).to("cuda")
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((5, 3)).astype(np.float32)
        bn_cpu(minidl.Tensor(x))
        gpu.SYNCS["count"] = 0
        bn_dev(minidl.Tensor(x, device="cuda"))
        assert gpu.SYNCS["count"] == 0
    np.testing.assert_allclose(bn_dev.running_mean.numpy(), bn_cpu.running_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bn_dev.running_var.numpy(), bn_cpu.running_var.numpy(), rtol=1e-6)


def test_checkpoint_saved_from_the_gpu_loads_on_the_cpu(gpu, tmp_path):
    model = _net(3).to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data()
    _step(model, opt, minidl.Tensor(x, device="cuda"), minidl.Tensor(y, device="cuda"))
    minidl.io.save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1)
    cpu = _net(4)
    opt_cpu = optim.SGD(cpu.parameters(), lr=0.1, momentum=0.9)
    minidl.io.load_checkpoint(tmp_path / "c.npz", cpu, opt_cpu)
    for (name, a), (_, b) in zip(model.state_dict().items(), cpu.state_dict().items()):
        assert b.device == "cpu"
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=name)


def test_the_stand_in_refuses_what_cupy_refuses(gpu):
    d = gpu.asarray(np.ones(3))
    with pytest.raises(TypeError, match="mix host and device"):
        d + np.ones(3)
    with pytest.raises(TypeError, match="numpy.concatenate was called on device data"):
        np.concatenate([d, d])
    gpu.SYNCS["count"] = 0
    float(d.sum())
    assert gpu.SYNCS["count"] == 1


def test_the_experiments_cli_runs_on_the_gpu_path(gpu, monkeypatch, tmp_path):
    """`python -m experiments run ... --device cuda` end to end (training, evaluation, plots, report, resume) on
    the stand-in, with the kernels' references for speed: what the GPU session's experiment phase runs."""
    from experiments.__main__ import main
    gpu.use_references(monkeypatch)
    args = ["run", "cifar10-cnn-dropout0.5", "--device", "cuda", "--synthetic", "--smoke", "--out", str(tmp_path),
            "--quiet"]
    assert main(args) in (0, None)
    assert main(args + ["--epochs", "2", "--resume"]) in (0, None)
    import json
    metrics = json.loads((tmp_path / "cifar10-cnn-dropout0.5" / "metrics.json").read_text())
    assert metrics["device"] == "cuda" and metrics["epochs"] == 2


def test_metrics_and_plots_read_raw_device_arrays(gpu):
    from minidl import metrics, viz
    logits = gpu.asarray(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=np.float32))
    targets = gpu.asarray(np.array([1, 0, 0]))
    assert metrics.accuracy(logits, targets) == 2 / 3
    np.testing.assert_array_equal(metrics.confusion_matrix(targets, logits.argmax(axis=1)), [[1, 1], [0, 1]])
    np.testing.assert_array_equal(viz._np(targets), [1, 0, 0])
