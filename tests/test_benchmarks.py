"""The benchmark's reference nets: they build from minidl.nn, run one training step, and match PyTorch's
parameter counts (no timing here: speed is measured by ``python -m benchmarks.throughput`` only)."""
import numpy as np
import pytest

import minidl
from benchmarks import throughput

try:
    import torch
except ImportError:  # a reference only
    torch = None


@pytest.mark.parametrize("net", ["A", "B", "C", "D"])
def test_reference_net_trains_one_step(net):
    runner = throughput.MinidlRunner(net, 4, "cpu")
    before = [p.data.copy() for p in runner.model.parameters()]
    loss = runner.train_step()
    assert np.isfinite(loss.item())
    assert any(not np.array_equal(b, p.data) for b, p in zip(before, runner.model.parameters()))
    out = runner.infer(runner.x)
    assert out.shape == (4, 10) and out.dtype == minidl.float32


@pytest.mark.skipif(torch is None, reason="torch is not installed (it is only a reference)")
@pytest.mark.parametrize("net", ["A", "B", "C", "D"])
def test_reference_nets_have_torchs_parameter_counts(net):
    nn, _, _ = throughput.minidl_namespace()
    ours = sum(p.data.size for p in throughput.build(nn, net).parameters())
    theirs = sum(p.numel() for p in throughput.build(torch.nn, net).parameters())
    assert ours == theirs
    if net == "A":
        assert ours == 890_410


def test_conv_chunks_runs_and_restores_the_chunk_size(capsys, monkeypatch):
    """The chunk-size benchmark runs on a tiny layer list and leaves CHUNK_BYTES as it found it."""
    from benchmarks import conv_chunks
    from minidl.kernels import cpu as conv
    monkeypatch.setattr(conv_chunks, "LAYERS", [(2, 6, 6, 3, 4, 1)])
    monkeypatch.setattr(conv_chunks, "FIRST_LAYERS", [(2, 3, 7, 4, 3, 1)])
    before = conv.CHUNK_BYTES, conv.KEEP_COLUMNS_BYTES
    conv_chunks.main(["--runs", "1", "--sizes", "0.001", "1"])
    out = capsys.readouterr().out
    assert (conv.CHUNK_BYTES, conv.KEEP_COLUMNS_BYTES) == before
    lines = out.strip().splitlines()
    assert "(2, 6, 6, 3, 4, 1)" in out and any(line.startswith("sum".rjust(26)) for line in lines)
    assert lines[-1].startswith(str((2, 3, 7, 4, 3, 1)).rjust(26))


def test_conv_input_grad_benchmark_runs_and_both_ways_agree(capsys, monkeypatch):
    """The benchmark checks that both dx methods agree before timing them; run it on two tiny layers."""
    from benchmarks import conv_input_grad
    monkeypatch.setattr(conv_input_grad, "LAYERS", [("t1", 2, 3, 6, 4, 3, 0), ("t2", 2, 3, 6, 4, 3, 1)])
    conv_input_grad.main(["--runs", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].split()[-1] == "col2im" and lines[-1].split()[-1] == "full"   # 36/16 > 1.25; 1.0


def test_measure_pauses_before_every_timed_run(monkeypatch):
    """The runners alternate, and each timed run (and each warm-up) starts after a pause, so that the other
    framework's spinning BLAS threads are asleep by then (throughput.SETTLE_S)."""
    events = []

    class Runner:
        def __init__(self, name):
            self.name = name

        def step(self):
            events.append(self.name)

        def sync(self):
            pass
    monkeypatch.setattr(throughput, "settle", lambda: events.append("pause"))
    out = throughput.measure([Runner("a"), Runner("b")], lambda r: r.step, batch=8, runs=3, warmup=1,
                             min_run_s=0.0)
    assert set(out) == {"a", "b"}
    assert events == ["pause", "a", "pause", "b"] + ["pause", "a", "pause", "b"] * 3


def test_gemm_bound_lists_the_products_the_ops_make(monkeypatch):
    """benchmarks.gemm_bound's list of one step's GEMMs is what minidl's ops multiply: run each conv layer of
    nets A, B and D forward and backward (small chunks, so that chunking shows), recording every np.matmul
    call and every chunk of the weight gradient; the Linear layers' products are checked by B's and C's
    FLOPs, counted by hand."""
    from benchmarks import gemm_bound
    from minidl.kernels import cpu as conv
    from minidl.nn import functional as F
    monkeypatch.setattr(conv, "CHUNK_BYTES", 2**16)
    monkeypatch.setattr(conv, "KEEP_COLUMNS_BYTES", 2**18)
    calls = []
    real_matmul, real_wgrad = np.matmul, conv.conv_weight_grad

    def matmul(a, b, *args, **kwargs):
        count = b.shape[0] if b.ndim == 3 else 1
        calls.append((a.shape[-2:], b.shape[-2:], count))
        return real_matmul(a, b, *args, **kwargs)

    def weight_grad(cols, g):
        k = g.shape[3]
        for _, _, col in cols:
            rows, width = col.shape
            calls.append(((width, rows), (rows, k), 1) if width >= k else ((k, rows), (rows, width), 1))
        return real_wgrad(cols, g)
    monkeypatch.setattr(np, "matmul", matmul)
    monkeypatch.setattr(conv, "conv_weight_grad", weight_grad)
    n = 3
    rng = np.random.default_rng(0)
    for net in "ABD":
        for i, layer in enumerate(gemm_bound.layers(net)):
            if layer[0] != "conv":
                continue
            _, cin, k, ks, pad, size = layer
            x = minidl.Tensor(rng.standard_normal((n, cin, size, size), dtype=np.float32), requires_grad=i > 0)
            w = minidl.Tensor(rng.standard_normal((k, cin, ks, ks), dtype=np.float32), requires_grad=True)
            bias = minidl.Tensor(np.zeros(k, np.float32), requires_grad=True)
            calls.clear()
            F.conv2d(x, w, bias, padding=pad).sum().backward()
            listed = [(p.a, p.b, p.count) for p in gemm_bound._conv_products(n, *layer[1:], first=i == 0)]
            assert sorted(calls) == sorted(listed), (net, layer)
            assert len(listed) > 3 or i == 0     # the later layers come in several chunks
    # B at batch 8 by hand: conv 1->10 5x5 (24x24 out; y and dW, no dx), conv 10->20 5x5 (8x8 out; y, dW and
    # dx by col2im: 25 products gy @ W_pq^T), Linear 320->50 and 50->10 (y, dW, dx)
    flops = 2 * 8 * (24 * 24 * 26 * 10 * 2 + 8 * 8 * 251 * 20 * 2 + 8 * 8 * 20 * 10 * 25
                     + 320 * 50 * 3 + 50 * 10 * 3)
    assert sum(2 * p.a[0] * p.a[1] * p.b[1] * p.count for p in gemm_bound.products("B", 8)) == flops
    # C: the first Linear needs no dx (the input image needs no gradient)
    flops = 2 * 8 * (3072 * 3072 * 2 + 3072 * 1000 * 3 + 1000 * 10 * 3)
    assert sum(2 * p.a[0] * p.a[1] * p.b[1] * p.count for p in gemm_bound.products("C", 8)) == flops


def test_gemm_bound_runs(monkeypatch, capsys):
    from benchmarks import gemm_bound
    monkeypatch.setattr(throughput, "SETTLE_S", 0.0)
    rows = gemm_bound.main(["--nets", "B", "--batch", "4", "--runs", "1", "--reps", "1"])
    (row,) = rows
    # one listed product of B's second conv stands for its 25 col2im offsets
    assert row["net"] == "B" and row["batch"] == 4 and row["gemms"] == len(gemm_bound.products("B", 4)) + 24
    assert 0 < row["gemm_ms"] and 0 < row["minidl_ms"]
    assert (row["torch_ms"] is None) == (throughput.torch is None)
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["B", "4"]


def test_kernels_benchmark_times_every_fast_kernel_on_the_nets_shapes(capsys):
    """benchmarks/kernels.py: reference and fast kernel of every op that has one, on shapes read off the nets."""
    from benchmarks import kernels as bench
    rows = bench.main(["--nets", "B", "D", "--batch", "2", "--runs", "1"])
    assert {r["op"] for r in rows} == set(minidl.kernels.OPS)
    assert all(r["fwd_ref"] > 0 and r["fwd_fast"] > 0 and r["bwd_ref"] > 0 and r["bwd_fast"] > 0 for r in rows)
    assert ("B0 Conv2d", "conv2d", (1, 28, 28)) in {(r["layer"], r["op"], r["shape"]) for r in rows}
    assert minidl.get_ops() == "fast"


def test_throughput_compares_ops_settings_in_one_run(tmp_path, capsys):
    out = throughput.main(["--nets", "B", "--batch", "4", "--infer-batch", "4", "--runs", "1", "--warmup", "1",
                           "--no-memory", "--no-torch", "--settle", "0", "--ops", "fast", "reference",
                           "reference:conv2d", "--json", str(tmp_path / "t.json")])
    row = out["nets"]["B"]["train_4"]
    assert {"minidl_img_s", "minidl[reference]_img_s", "minidl[reference:conv2d]_img_s"} <= set(row)
    assert minidl.get_ops() == "fast"
    with pytest.raises(ValueError, match="reference:OP,OP"):
        throughput.main(["--ops", "slow", "--no-torch"])


@pytest.mark.skipif(throughput.torch is None, reason="torch is not installed (it is the yardstick of the ratios)")
def test_before_after_runs_an_earlier_commit_beside_the_working_tree(capsys, monkeypatch):
    import os
    import subprocess
    from benchmarks import before_after
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    monkeypatch.setattr(throughput, "SETTLE_S", 0.0)
    out = before_after.main(["HEAD", "--nets", "B", "--what", "train4", "infer4", "--runs", "1"])
    assert set(out) == {"B train4", "B infer4"} and all(set(r) == {"before", "now", "torch"} for r in out.values())
    assert "minidl_before" in {m.split(".")[0] for m in __import__("sys").modules}


@pytest.mark.skipif(torch is None, reason="torch is not installed (softmax_into_ce compares with it)")
def test_softmax_into_ce_starts_both_frameworks_from_the_same_network(monkeypatch, capsys):
    from benchmarks import softmax_into_ce as sce
    tm, mm = sce.twin_models(torch, 3)
    tm.eval(), mm.eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mm(minidl.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    y = np.arange(20) % 10
    assert sce.stalled(np.where(y == 4, 5, y), y) == [4] and sce.stalled(y, y) == []
    rng = np.random.default_rng(1)
    fake = (rng.standard_normal((200, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 200),
            rng.standard_normal((50, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 50))
    monkeypatch.setattr(sce, "load", lambda limit: fake)
    sce.main(["--seeds", "0", "1", "--epochs", "1"])
    out = capsys.readouterr().out
    assert out.startswith("seed 0: minidl test ") and "PyTorch test" in out and "of 1, PyTorch" in out


_TWINNED = ["mnist-cnn", "mnist-mlp", "cifar10-cnn-dropout-lr0.002", "cifar10-lenet", "cifar10-bnconv-sweep",
            "cifar10-keras-cnn-bn", "cifar10-own"]


@pytest.mark.skipif(torch is None, reason="torch is not installed (benchmarks.twin compares with it)")
@pytest.mark.parametrize("name", _TWINNED)
def test_twin_starts_both_frameworks_from_the_same_network(name):
    from benchmarks import twin
    from experiments.registry import DATASETS, EXPERIMENTS, MODELS
    exp = EXPERIMENTS[name]
    torch.manual_seed(0)
    tm, mm = twin.twin_models(torch, MODELS[exp.model](**exp.model_kwargs))
    tm.eval(), mm.eval()
    x = np.random.default_rng(0).standard_normal((3,) + tuple(DATASETS[exp.dataset][0])).astype(np.float32)
    with torch.no_grad():
        expected = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mm(minidl.tensor(x)).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch is None, reason="torch is not installed (benchmarks.twin compares with it)")
@pytest.mark.parametrize("opt", [{"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.5},
                                 {"name": "adam", "lr": 0.01, "betas": (0.8, 0.9)}])
def test_twin_optimizers_take_the_same_steps(opt):
    # float64: Adam steps ~lr wherever a gradient is not 0, however small, so float32 rounding of near-zero
    # gradients would move a few weights by a good part of a step
    from benchmarks import twin
    from experiments.registry import cifar10_cnn
    from experiments.runner import make_optimizer
    torch.manual_seed(1)
    tm, mm = twin.twin_models(torch, cifar10_cnn())
    tm, mm = tm.double(), mm.double()
    topt, mopt = twin.torch_optimizer(torch, tm.parameters(), opt), make_optimizer(mm.parameters(), opt)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 3, 32, 32)), rng.integers(0, 10, 4)
    for _ in range(3):
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        topt.step()
        mopt.zero_grad()
        minidl.nn.CrossEntropyLoss()(mm(minidl.tensor(x)), minidl.tensor(y)).backward()
        mopt.step()
    for (k, t), (_, m) in zip(tm.state_dict().items(), mm.state_dict().items()):
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.skipif(torch is None, reason="torch is not installed (benchmarks.twin compares with it)")
def test_twin_refuses_a_network_it_cannot_mirror():
    from benchmarks import twin
    with pytest.raises(TypeError, match="mirrors a minidl Sequential, got ResNet"):
        twin.to_torch(torch, minidl.nn.resnet18(num_classes=10))
    with pytest.raises(TypeError, match="no PyTorch twin for minidl's Identity"):
        twin.to_torch(torch, minidl.nn.Sequential(minidl.nn.Linear(2, 2), minidl.nn.Identity()))


@pytest.mark.skipif(torch is None, reason="torch is not installed (benchmarks.twin compares with it)")
def test_twin_trains_both_and_reports_each(monkeypatch, capsys):
    from benchmarks import twin
    from experiments import runner
    monkeypatch.setattr(twin, "load_data", lambda exp, limit: runner.load_data(exp, limit=64, source="synthetic"))
    twin.main(["cifar10-cnn", "--epochs", "2", "--limit", "64"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cifar10-cnn, seed 0: 64 training, ")
    assert out[1].startswith("epoch 1: validation  PyTorch ") and out[2].startswith("epoch 2: ")
    assert out[3].startswith("PyTorch: best validation ") and out[4].startswith("minidl: best validation ")


def test_twin_trains_a_sweep_variant_by_its_label():
    # a sweep's own settings are none of its variants (cifar10-bnconv-sweep's are Adam with ReLU), so the twin
    # asks which variant to train and refuses a label the experiment does not have
    from benchmarks import twin
    exp = twin.experiment("cifar10-bnconv-sweep", "sgd-tanh")
    assert exp.optimizer == {"name": "sgd", "lr": 1e-4} and exp.model_kwargs == {"activation": "tanh"}
    assert exp.sweep == [] and exp.name == "cifar10-bnconv-sweep" and exp.epochs == 30
    with pytest.raises(SystemExit, match="a sweep: choose --variant from adam-leakyrelu, adam-tanh, sgd-leakyrelu"):
        twin.experiment("cifar10-bnconv-sweep", None)
    with pytest.raises(SystemExit, match="no variant 'adam'; its variants: adam-leakyrelu, adam-tanh"):
        twin.experiment("cifar10-bnconv-sweep", "adam")
    with pytest.raises(SystemExit, match="cifar10-cnn is not a sweep: --variant 'adam-tanh' names nothing"):
        twin.experiment("cifar10-cnn", "adam-tanh")
    from experiments.registry import EXPERIMENTS
    assert twin.experiment("cifar10-cnn", None) is EXPERIMENTS["cifar10-cnn"]
