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
    import minidl.ops.conv as conv
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
