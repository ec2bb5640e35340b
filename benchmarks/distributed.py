"""Data-parallel costs on this machine, and what they predict for a cluster.

    python -m benchmarks.distributed [--ranks 1 2 3] [--nets A B C D] [--batch 64] [--runs 5] [--threads 1]
                                     [--json out]

For each rank count it starts ``mpiexec -n N python -m benchmarks.distributed --worker ...`` (the mpiexec of
``pip install 'minidl[dist]'``; OpenBLAS gets ``--threads`` threads per rank, 1 by default) and measures:

* all-reduce (sum, float32, minidl.distributed's MPI group) time against message size, 4 KB to 64 MB: the
  median over ``--runs`` timed runs of the mean time per call;
* for the reference nets A-D of benchmarks/throughput.py, one training step (forward, cross-entropy, backward,
  SGD with momentum) at ``--batch`` images per rank (weak scaling), plain (inside ``no_sync``: no gradient
  traffic) and wrapped in DistributedDataParallel (25 MB buckets, PyTorch's default, and 1 MB buckets); runs
  alternate, each after a pause, and the median per step is taken.  The gradient-sync overhead is
  (DDP step - plain step) / DDP step.

Then it fits the alpha-beta model of a ring all-reduce to the 2-rank all-reduce times (t = 2 alpha + n beta for
p = 2: alpha a per-message latency, beta seconds per byte) and predicts, for p = 8..64 ranks, the time
t_p(n) = 2(p-1) alpha + 2 (p-1)/p n beta of each net's gradient all-reduce and the resulting share of the step,
with the measured alpha and beta, and with an assumed network link (stated in the output), and the smallest
bucket whose latency stays under 10% of its transfer time.  benchmarks/README.md ("Distributed") has the
figures and the assumptions.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
# An assumed inter-node link for the second prediction (not measured here): 10 Gb/s Ethernet with TCP,
# 25 us per message, 1.25 GB/s.
NET_ALPHA, NET_BETA = 25e-6, 1 / 1.25e9


# ------------------------------------------------------------------ inside the MPI job
def _allreduce_times(group, runs):
    out = {}
    for nbytes in SIZES:
        a = np.ones(nbytes // 4, np.float32)
        group.all_reduce(a)  # warm-up (and first-touch of the pages)
        per_run = []
        for _ in range(runs):
            group.barrier()
            reps, t0 = 0, time.perf_counter()
            while True:
                group.all_reduce(a)
                reps += 1
                elapsed = time.perf_counter() - t0
                # every rank must run the same number of calls: rank 0 decides when the run ends
                done = group.broadcast_object(elapsed > 0.15 and reps >= 3, 0)
                if done:
                    break
            per_run.append(elapsed / reps)
        out[nbytes] = statistics.median(per_run)
    return out


def _step_times(group, net, batch, runs):
    import minidl
    from benchmarks.throughput import INPUT, build, settle
    from minidl import nn, optim
    minidl.manual_seed(0)
    rng = np.random.default_rng(group.rank)
    x = minidl.Tensor(rng.standard_normal((batch,) + INPUT[net], dtype=np.float32))
    y = minidl.Tensor(rng.integers(0, 10, batch))
    variants = {}
    for name, cap in (("ddp_25mb", 25.0), ("ddp_1mb", 1.0)):
        model = build(nn, net)
        variants[name] = (nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap),
                          optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    ddp0 = variants["ddp_25mb"][0]
    plain_model = build(nn, net)
    plain = (plain_model, optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9))

    def step(model, opt):
        opt.zero_grad()
        minidl.cross_entropy(model(x), y).backward()
        opt.step()

    def timed(name, steps):
        model, opt = plain if name == "plain" else variants[name]
        group.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            step(model, opt)
        group.barrier()
        return (time.perf_counter() - t0) / steps

    for name in ("plain", "ddp_25mb", "ddp_1mb"):  # warm-up, and the number of steps for ~0.5 s runs
        timed(name, 1)
    steps = max(2, min(20, int(group.broadcast_object(0.5 / timed("plain", 2), 0))))
    times = {k: [] for k in ("plain", "ddp_25mb", "ddp_1mb")}
    for _ in range(runs):
        for name in times:
            settle()
            times[name].append(timed(name, steps))
    grad_bytes = sum(p.data.nbytes for p in plain_model.parameters())
    return {"grad_bytes": grad_bytes, "buckets_25mb": len(ddp0._buckets), "steps": steps,
            **{k: statistics.median(v) for k, v in times.items()}}


def worker(args):
    import minidl.distributed as dist
    from benchmarks.throughput import machine
    group = dist.init_process_group("mpi")
    result = {"ranks": group.size, "allreduce_s": _allreduce_times(group, args.runs), "nets": {}}
    for net in args.nets:
        result["nets"][net] = _step_times(group, net, args.batch, args.runs)
    if group.rank == 0:
        result["machine"] = machine()
        result["blas_threads_per_rank"] = os.environ.get("OPENBLAS_NUM_THREADS")
        print("RESULT " + json.dumps(result), flush=True)
    dist.destroy_process_group()


# ------------------------------------------------------------------ the model
def fit_alpha_beta(times: dict):
    """alpha, beta of t = 2 alpha + n beta (a 2-rank ring all-reduce) by least squares on the measured sizes,
    relative errors weighted alike (each point divided by its time)."""
    n = np.array(sorted(times), dtype=float)
    t = np.array([times[k] for k in sorted(times)])
    A = np.stack([2 * np.ones_like(n), n], axis=1) / t[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(A, np.ones_like(n), rcond=None)
    return float(alpha), float(beta)


def ring_time(nbytes, p, alpha, beta, buckets=1):
    return buckets * 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * beta


def min_bucket(p, alpha, beta, share=0.1):
    """The smallest bucket whose latency 2(p-1) alpha is at most ``share`` of its transfer 2(p-1)/p b beta."""
    return p * alpha / (share * beta)


def report(results, nets):
    lines = []
    by_ranks = {r["ranks"]: r for r in results}
    m = results[0]["machine"]
    lines.append(f"machine: {m.get('cpu')}, {m.get('cpus')} CPUs, numpy {m.get('numpy')} ({m.get('blas')}, "
                 f"kernels {m.get('blas_kernels')}), python {m.get('python')}")
    lines.append("")
    lines.append("all-reduce (sum, float32), median time per call:")
    lines.append("")
    lines.append("| message | " + " | ".join(f"{p} rank{'s' if p > 1 else ''}" for p in sorted(by_ranks)) + " |")
    lines.append("|---:|" + "---:|" * len(by_ranks))
    for nbytes in SIZES:
        cells = []
        for p in sorted(by_ranks):
            t = by_ranks[p]["allreduce_s"][str(nbytes)] if str(nbytes) in by_ranks[p]["allreduce_s"] \
                else by_ranks[p]["allreduce_s"][nbytes]
            cells.append(f"{t * 1e3:.3f} ms ({nbytes / t / 1e9:.2f} GB/s)")
        lines.append(f"| {_size(nbytes)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("training step per rank (batch per rank as given), median; overhead = (DDP - plain) / DDP:")
    lines.append("")
    lines.append("| net | gradients | ranks | BLAS threads/rank | plain step | DDP 25 MB | overhead | DDP 1 MB | overhead |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for net in nets:
        for p in sorted(by_ranks):
            r = by_ranks[p]["nets"][net]
            lines.append(f"| {net} | {_size(r['grad_bytes'])} | {p} | {by_ranks[p].get('blas_threads_per_rank')} | "
                         f"{r['plain'] * 1e3:.1f} ms | {r['ddp_25mb'] * 1e3:.1f} ms | "
                         f"{_pct((r['ddp_25mb'] - r['plain']) / r['ddp_25mb'])} | {r['ddp_1mb'] * 1e3:.1f} ms | "
                         f"{_pct((r['ddp_1mb'] - r['plain']) / r['ddp_1mb'])} |")
    if 2 in by_ranks:
        times2 = {int(k): v for k, v in by_ranks[2]["allreduce_s"].items()}
        alpha, beta = fit_alpha_beta(times2)
        lines.append("")
        lines.append(f"alpha-beta fit to the 2-rank all-reduce (t = 2 alpha + n beta): alpha = {alpha * 1e6:.1f} us, "
                     f"beta = {beta * 1e9:.3f} ns/B ({1 / beta / 1e9:.2f} GB/s)")
        lines.append(f"assumed network link: alpha = {NET_ALPHA * 1e6:.0f} us, beta = {NET_BETA * 1e9:.2f} ns/B "
                     f"({1 / NET_BETA / 1e9:.2f} GB/s)")
        lines.append("")
        lines.append("predicted gradient all-reduce per step (ring, one bucket per 25 MB) and its share of the "
                     "step (plain 1-rank step as compute, no overlap): measured alpha, beta | assumed link")
        lines.append("")
        ps = (8, 16, 32, 64)
        lines.append("| net | step (1 rank) | " + " | ".join(f"p = {p}" for p in ps) + " |")
        lines.append("|---|---:|" + "---:|" * len(ps))
        compute = by_ranks[min(by_ranks)]["nets"]
        for net in nets:
            s, tc = compute[net]["grad_bytes"], compute[net]["plain"]
            k = max(1, -(-s // (25 << 20)))
            cells = []
            for p in ps:
                a = ring_time(s, p, alpha, beta, k)
                b = ring_time(s, p, NET_ALPHA, NET_BETA, k)
                cells.append(f"{a * 1e3:.2f} ms ({_pct(a / (tc + a))}) / {b * 1e3:.1f} ms ({_pct(b / (tc + b))})")
            lines.append(f"| {net} | {tc * 1e3:.1f} ms | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("smallest bucket with latency <= 10% of its transfer time: " + ", ".join(
            f"p = {p}: {_size(min_bucket(p, alpha, beta))} (measured) / {_size(min_bucket(p, NET_ALPHA, NET_BETA))} "
            f"(assumed link)" for p in ps))
    return "\n".join(lines)


def _size(n):
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} GB"


def _pct(x):
    return f"{100 * x:.1f}%"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--nets", nargs="+", default=["A", "B", "C", "D"])
    p.add_argument("--batch", type=int, default=64, help="images per rank")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads per rank (default 1: every rank count computes on one core per rank)")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    import minidl.distributed as dist
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = []
    for n in args.ranks:
        cmd, env = dist.mpiexec_command(n, [sys.executable, "-m", "benchmarks.distributed", "--worker", "--nets",
                                            *args.nets, "--batch", args.batch, "--runs", args.runs])
        threads = str(args.threads)
        env.update(PYTHONPATH=root + os.pathsep + env.get("PYTHONPATH", ""), OPENBLAS_NUM_THREADS=threads,
                   OMP_NUM_THREADS=threads)
        print(f"== {n} rank(s): {' '.join(cmd)}", file=sys.stderr, flush=True)
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT "))))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(report(results, args.nets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
