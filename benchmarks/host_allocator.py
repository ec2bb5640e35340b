"""minidl's training step with and without its glibc malloc thresholds (``backend.set_malloc_thresholds``).

    python -m benchmarks.host_allocator [--nets A B C D] [--batch 64 128] [--rounds 3]

Each measurement runs in a fresh process with only minidl in it (PyTorch is kept out: its allocations
would move glibc's adaptive thresholds): once with the thresholds set, as minidl's training loop sets them,
once with MINIDL_MALLOC=system (glibc's defaults), alternating for ``--rounds`` rounds.  Each child times 12
training steps of the net after 3 warm-up steps and counts the minor page faults they took
(getrusage); the table gives medians over rounds of the children's median step times.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def child(net, batch, steps=12, warmup=3):
    import resource
    import time
    sys.modules["torch"] = None          # the throughput module then runs without PyTorch
    from benchmarks.throughput import MinidlRunner
    from minidl import backend
    backend.set_malloc_thresholds()
    runner = MinidlRunner(net, batch, "cpu")
    for _ in range(warmup):
        runner.train_step()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        runner.train_step()
        times.append(time.perf_counter() - t0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    print(json.dumps({"ms": 1e3 * statistics.median(times), "faults_per_step": faults / steps,
                      "allocator": str(backend.host_allocator)}))


def run(net, batch, system):
    env = dict(os.environ)
    env.pop("MINIDL_MALLOC", None)
    if system:
        env["MINIDL_MALLOC"] = "system"
    res = subprocess.run([sys.executable, "-m", "benchmarks.host_allocator", "--_child", net, str(batch)],
                         capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if res.returncode != 0:
        raise RuntimeError(f"child {net} b{batch} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", nargs="+", default=["A", "B", "C", "D"])
    p.add_argument("--batch", nargs="+", type=int, default=[64, 128])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        return child(args._child[0], int(args._child[1]))
    print(f"{'net':<4}{'batch':>6}{'minidl ms':>11}{'faults':>8}{'glibc ms':>10}{'faults':>8}{'speed-up':>10}")
    for net in args.nets:
        for batch in args.batch:
            ours, system = [], []
            for _ in range(args.rounds):
                ours.append(run(net, batch, False))
                system.append(run(net, batch, True))
            a = statistics.median(r["ms"] for r in ours)
            b = statistics.median(r["ms"] for r in system)
            fa = statistics.median(r["faults_per_step"] for r in ours)
            fb = statistics.median(r["faults_per_step"] for r in system)
            print(f"{net:<4}{batch:>6}{a:>11.1f}{fa:>8.0f}{b:>10.1f}{fb:>8.0f}{b / a:>9.2f}x")
    print(f"(minidl: {ours[-1]['allocator']}; glibc: {system[-1]['allocator']})")


if __name__ == "__main__":
    main()
