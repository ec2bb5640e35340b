"""minidl.distributed, DistributedDataParallel, DistributedSampler and SyncBatchNorm, on real MPI jobs.

Each test starts ``mpiexec -n N python -m tests.distributed_checks ...`` (tests/distributed_checks.py holds the
checks, which compare every rank's share with a one-process reference) in its own session, bounded in time: on
a timeout the whole process group is killed and the test fails.  They need mpi4py and an mpiexec (``pip install
-e '.[test]'`` installs both, from PyPI) and skip, saying so, without them; the NCCL ones need CuPy with NCCL
and one GPU per rank.
"""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import minidl.distributed as dist
from minidl import backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120  # seconds for one job; a healthy one takes 1-3 s here
CPU_CHECKS = ["collectives", "ddp", "ddp_sync_bn", "no_sync", "unused", "sampler", "sync_bn", "trainer"]


def mpi_missing():
    if not dist.is_available():
        return f"mpi4py is not installed; {dist.INSTALL_HINT}"
    try:
        dist.mpiexec_command(1, [])
    except RuntimeError as e:
        return str(e)
    return None


def run_job(nprocs, *args, timeout=TIMEOUT, module="tests.distributed_checks"):
    """Run ``python -m MODULE ARGS`` on ``nprocs`` ranks; returns (exit code, output)."""
    cmd, env = dist.mpiexec_command(nprocs, [sys.executable, "-m", module, *args])
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"  # N ranks share this machine's cores
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the {nprocs}-rank job {args} did not end within {timeout} s (a hang):\n{out[-3000:]}")
    return proc.returncode, out


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=f"no MPI: {mpi_missing()}")


@needs_mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_mpi_jobs_match_one_process(nprocs):
    """Collectives; one DDP step on N ranks = one process on the whole batch, and bit-identical parameters after
    several steps (with plain layers, and with SyncBatchNorm); no_sync; the sampler's partition; SyncBatchNorm
    against BatchNorm on the whole batch; the Trainer (history, sharded validation, rank 0 writing, resume)."""
    code, out = run_job(nprocs, "mpi", "cpu", *CPU_CHECKS)
    assert code == 0, out[-4000:]
    for name in CPU_CHECKS:
        assert f"ok {name} (world size {nprocs}" in out, out[-4000:]


@needs_mpi
def test_a_failing_rank_ends_the_job_and_is_named():
    code, out = run_job(3, "mpi", "cpu", "fail", timeout=60)
    assert code != 0, out
    assert "rank 2 of 3 failed (ValueError: a deliberate failure on the last rank)" in out, out
    assert "unreachable" not in out


@needs_mpi
def test_distributed_experiment_writes_one_run_whose_test_metrics_are_a_single_process_evaluation(tmp_path):
    """`mpiexec -n 2 python -m experiments run cifar100-cnn-bn --distributed` (a smoke run on synthetic data; its
    BatchNorm layers become SyncBatchNorm): one run folder, written by rank 0; its sharded test evaluation equals
    one process evaluating the saved model."""
    import json

    from experiments.registry import MODELS, get
    from experiments.runner import SMOKE_LIMIT, load_data
    from minidl.data import DataLoader
    from minidl.io import load_checkpoint
    from minidl.train import evaluate
    code, out = run_job(2, "run", "cifar100-cnn-bn", "--smoke", "--synthetic", "--distributed", "--quiet",
                        "--out", str(tmp_path), module="experiments")
    assert code == 0, out[-4000:]
    assert os.listdir(tmp_path) == ["cifar100-cnn-bn"] and out.count(": test accuracy") == 1, out[-2000:]
    run_dir = tmp_path / "cifar100-cnn-bn"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "mpi", "batch_per_rank": 128,
                                     "sync_batch_norm": True}, config
    assert "SyncBatchNorm" in (run_dir / "model_summary.txt").read_text()
    exp = get("cifar100-cnn-bn")
    exp = exp.with_overrides({k: v for k, v in exp.smoke.items() if k != "limit"})
    _, _, test, _, _, _ = load_data(exp, limit=exp.smoke.get("limit") or SMOKE_LIMIT, source="synthetic", seed=0)
    model = MODELS[exp.model](**exp.model_kwargs)
    load_checkpoint(str(run_dir / "last.ckpt"), model=model)
    ev = evaluate(model, DataLoader(test, batch_size=7))
    assert metrics["test_acc"] == round(100 * ev["acc"], 2) and np.isclose(metrics["test_loss"], ev["loss"]), \
        (metrics, ev)


def test_missing_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` now raises ImportError
    with pytest.raises(RuntimeError, match=r"needs mpi4py and an MPI library.*pip install 'minidl\[dist\]'"):
        dist.init_process_group("mpi")
    assert not dist.is_initialized()


def test_errors_before_any_job():
    with pytest.raises(ValueError, match="backend must be one of"):
        dist.init_process_group("gloo")
    with pytest.raises(RuntimeError, match="not initialized; call minidl.distributed.init_process_group"):
        dist.get_rank()


def _nccl_missing(nprocs):
    why = mpi_missing() or backend.cupy_status()
    if why:
        return why
    try:
        _, _ = backend.nccl()
        n = backend.require_cuda().cuda.runtime.getDeviceCount()
    except RuntimeError as e:
        return str(e)
    if n < nprocs:
        return f"NCCL needs one GPU per rank: {nprocs} ranks, {n} GPU(s) here"
    return None


@pytest.mark.parametrize("nprocs", [1, 2])
def test_nccl_jobs_match_one_process(nprocs):
    why = _nccl_missing(nprocs)
    if why:
        pytest.skip(f"NCCL test on {nprocs} rank(s) skipped: {why}")
    checks = ["collectives", "ddp", "ddp_sync_bn", "no_sync", "sync_bn"]
    code, out = run_job(nprocs, "nccl", "cuda", *checks)
    assert code == 0, out[-4000:]
    for name in checks:
        assert f"ok {name} (world size {nprocs}, backend nccl" in out, out[-4000:]


@needs_mpi
def test_mpi_backend_on_gpu_tensors():
    why = backend.cupy_status()
    if why:
        pytest.skip(f"CuPy backend not available: {why}")
    code, out = run_job(2, "mpi", "cuda", "collectives", "ddp", "sync_bn")
    assert code == 0, out[-4000:]


def test_benchmark_alpha_beta_model():
    """benchmarks/distributed.py's ring model: the fit recovers alpha and beta, the bucket bound holds."""
    from benchmarks.distributed import SIZES, fit_alpha_beta, min_bucket, ring_time
    alpha, beta = 30e-6, 2e-9
    fitted = fit_alpha_beta({n: 2 * alpha + n * beta for n in SIZES})
    assert fitted == pytest.approx((alpha, beta), rel=1e-6)
    assert ring_time(1e6, 2, alpha, beta) == pytest.approx(2 * alpha + 1e6 * beta)
    assert ring_time(1e6, 8, alpha, beta, buckets=2) == pytest.approx(2 * 2 * 7 * alpha + 2 * 7 / 8 * 1e6 * beta)
    b = min_bucket(64, alpha, beta)
    assert 2 * 63 * alpha == pytest.approx(0.1 * 2 * 63 / 64 * b * beta)


def test_distributed_sampler_partitions_as_pytorchs():
    """Without a job: explicit num_replicas and rank.  Padding repeats the epoch's start; drop_last cuts the
    tail; set_epoch reshuffles; shuffle=False strides through 0..n-1."""
    from minidl.data import ArrayDataset, DistributedSampler
    ds = ArrayDataset(np.zeros((10, 1, 1, 1), np.uint8), np.arange(10))
    shares = [DistributedSampler(ds, 4, r, shuffle=False).index_array().tolist() for r in range(4)]
    assert shares == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]
    cut = [DistributedSampler(ds, 4, r, shuffle=False, drop_last=True).index_array().tolist() for r in range(4)]
    assert cut == [[0, 4], [1, 5], [2, 6], [3, 7]]
    s = DistributedSampler(ds, 3, 1, seed=5)
    first = s.index_array()
    s.set_epoch(1)
    assert len(s) == len(first) == 4 and not np.array_equal(first, s.index_array())
    whole = np.concatenate([DistributedSampler(ds, 3, r, seed=5).index_array() for r in range(3)])
    assert sorted(set(whole.tolist())) == list(range(10)) and len(whole) == 12
    with pytest.raises(ValueError, match="rank should be in the interval"):
        DistributedSampler(ds, 2, 2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(ds)
