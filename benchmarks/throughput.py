"""Training and inference throughput of four reference nets, minidl next to PyTorch in one run.

    python -m benchmarks.throughput [--device cpu] [--batch 64 128] [--nets A B C D] [--ops fast reference]
                                    [--profile] [--json out]

Nets (float32, inputs NCHW):
  A  CIFAR-10 CNN  Conv(3,32,3)-ReLU-Conv(32,32,3)-ReLU-MaxPool2-Conv(32,64,3)-ReLU-Conv(64,64,3)-ReLU-MaxPool2
                   -Flatten-Linear(1600,512)-ReLU-Dropout(0.5)-Linear(512,10)
  B  MNIST CNN     Conv(1,10,5)-MaxPool2-ReLU-Conv(10,20,5)-Dropout2d-MaxPool2-ReLU-Linear(320,50)-ReLU-Dropout-Linear(50,10)
  C  MLP           3072-3072(tanh)-1000(tanh)-10
  D  BN-ConvNet    [Conv3x3(p1)-BN-ReLU]x2-Pool-Drop.25-[Conv3x3(p1)-BN-ReLU]x2 (64)-Pool-Drop.25-Linear(4096,512)-BN-ReLU
                   -Drop.5-Linear(512,10)

Training step = forward + cross-entropy + backward + SGD(lr 0.01, momentum 0.9) step; inference = forward
in eval mode without a graph.  Each figure is the median img/s over ``--runs`` timed runs after warm-up;
all runners (minidl under each ``--ops`` setting, then PyTorch) alternate, so machine noise hits them alike.
``--ops`` takes one or more settings: ``fast`` (the default), ``reference`` (every op on its textbook
reference, minidl/ops), or ``reference:OP,OP`` (those ops on their references, the rest fast), so one run
shows what each fast kernel buys.  Peak memory of one training step is measured in a fresh subprocess per
framework as the peak resident set size (VmHWM, reset before the step) minus the RSS just before the step
(model, data and imports already loaded); for minidl the tracemalloc peak of NumPy allocations in a step is
given too.  PyTorch is used only if importable, with its default thread count.  minidl's malloc thresholds
(``backend.set_malloc_thresholds``, which minidl's training loop sets) are set for the whole process.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import minidl
from minidl import backend, kernels

try:
    import torch
except ImportError:  # PyTorch is a reference only
    torch = None

INPUT = {"A": (3, 32, 32), "B": (1, 28, 28), "C": (3, 32, 32), "D": (3, 32, 32)}


def build(nn, net):
    """The reference net ``net`` from the layer namespace ``nn`` (torch.nn or minidl's)."""
    S = nn.Sequential
    if net == "A":
        return S(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                 nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                 nn.Flatten(), nn.Linear(1600, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 10))
    if net == "B":
        return S(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(10, 20, 5), nn.Dropout2d(0.5),
                 nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Dropout(0.5),
                 nn.Linear(50, 10))
    if net == "C":
        return S(nn.Flatten(), nn.Linear(3072, 3072), nn.Tanh(), nn.Linear(3072, 1000), nn.Tanh(),
                 nn.Linear(1000, 10))
    if net == "D":
        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        return S(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), nn.Dropout(0.25),
                 *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
                 nn.Linear(4096, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 10))
    raise ValueError(f"unknown net {net!r}: expected one of A, B, C, D")


def minidl_namespace():
    """(nn, SGD class, description): minidl.nn and minidl.optim when they have the layers, else the stand-in."""
    need = ("Sequential", "Conv2d", "Linear", "ReLU", "Tanh", "MaxPool2d", "Flatten", "Dropout", "Dropout2d",
            "BatchNorm2d", "BatchNorm1d")
    try:
        from minidl import nn, optim
        if all(hasattr(nn, n) for n in need) and hasattr(optim, "SGD"):
            return nn, optim.SGD, "minidl.nn + minidl.optim"
    except ImportError:
        pass
    from benchmarks import _minimal_nn
    return _minimal_nn, _minimal_nn.SGD, "benchmarks/_minimal_nn.py (minidl.nn not available yet)"


# ------------------------------------------------------------------ one framework's steps
def apply_ops(setting):
    """Put minidl's ops on ``setting``: 'fast', 'reference', or 'reference:OP,OP' (those ops only)."""
    kernels.set_ops("fast")
    if setting == "reference":
        kernels.set_ops("reference")
    elif setting.startswith("reference:"):
        kernels.set_ops("reference", setting.split(":", 1)[1].split(","))
    elif setting != "fast":
        raise ValueError(f"--ops settings are 'fast', 'reference' or 'reference:OP,OP', got {setting!r}")


class MinidlRunner:
    def __init__(self, net, batch, device, seed=0, ops="fast"):
        nn, SGD, self.impl = minidl_namespace()
        apply_ops(ops)
        self.name = "minidl" if ops == "fast" else f"minidl[{ops}]"
        self.ops = ops
        self.model = build(nn, net)
        if device != "cpu":
            self.model.to(device)
        self.opt = SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(seed)
        self.x = minidl.Tensor(rng.standard_normal((batch,) + INPUT[net], dtype=np.float32), device=device)
        self.y = minidl.Tensor(rng.integers(0, 10, batch), device=device)
        self.device = device

    def train_step(self):
        apply_ops(self.ops)
        self.model.train()
        self.opt.zero_grad()
        loss = minidl.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def infer(self, x):
        apply_ops(self.ops)
        self.model.eval()
        with minidl.no_grad():
            return self.model(x)

    def sync(self):
        backend.synchronize(self.device)


class TorchRunner:
    name = "torch"

    def __init__(self, net, batch, device, seed=0):
        torch.manual_seed(seed)
        self.device = device
        self.model = build(torch.nn, net).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(seed)
        self.x = torch.tensor(rng.standard_normal((batch,) + INPUT[net], dtype=np.float32), device=device)
        self.y = torch.tensor(rng.integers(0, 10, batch), device=device)

    def train_step(self):
        self.model.train()
        self.opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def infer(self, x):
        self.model.eval()
        with torch.no_grad():
            return self.model(x)

    def sync(self):
        if self.device != "cpu":
            torch.cuda.synchronize()


def _timed(fn, steps, sync):
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return time.perf_counter() - t


# Pause before each timed run, so that the other framework's idle threads have gone to sleep: OpenBLAS's
# workers spin for about 0.1 s after a GEMM before they sleep, and slowed the PyTorch run that came right after
# minidl's (benchmarks/README.md, "Method").
SETTLE_S = 0.25


def settle():
    time.sleep(SETTLE_S)


def measure(runners, fn_of, batch, runs, warmup, min_run_s=0.3):
    """Median img/s of each runner; the runners' timed runs alternate, each after a pause (``SETTLE_S``)."""
    steps = {}
    for r in runners:
        fn = fn_of(r)
        settle()
        t = min(_timed(fn, 1, r.sync) for _ in range(warmup))
        steps[r.name] = max(1, math.ceil(min_run_s / max(t, 1e-6)))
    times = collections.defaultdict(list)
    for _ in range(runs):
        for r in runners:
            settle()
            times[r.name].append(_timed(fn_of(r), steps[r.name], r.sync) / steps[r.name])
    return {name: batch / statistics.median(ts) for name, ts in times.items()}


# ------------------------------------------------------------------ memory (subprocess)
def _status_mb(key):
    """VmRSS (resident now) or VmHWM (peak resident since start or since the last reset), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def _memory_child(net, batch, framework, device):
    """Runs in a fresh process: peak RSS during the first training step above the RSS before it (the peak
    mark VmHWM is reset first through /proc/self/clear_refs; ru_maxrss would carry the parent's peak over
    fork+exec); for minidl also the tracemalloc peak of a second step.  ``framework``: 'torch', 'minidl' or
    'minidl[SETTING]' (an --ops setting)."""
    backend.set_malloc_thresholds()
    if framework == "torch":
        runner = TorchRunner(net, batch, device)
    else:
        runner = MinidlRunner(net, batch, device, ops=framework[7:-1] if framework != "minidl" else "fast")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mb("VmRSS")
    runner.train_step()
    out = {"rss_peak_delta_mb": round(_status_mb("VmHWM") - before, 1)}
    if framework != "torch":
        import tracemalloc
        tracemalloc.start()
        runner.train_step()
        out["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    print(json.dumps(out))


def memory(net, batch, framework, device):
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--_memory", net, str(batch), framework,
           "--device", device]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)) or ".")
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ per-layer profile
def _medians(per_step):
    """{label: median over steps} from a list of per-step {label: seconds} dicts."""
    labels = {k for d in per_step for k in d}
    return {k: statistics.median(d.get(k, 0.0) for d in per_step) for k in labels}


def profile_minidl(runner, steps=7):
    """Per-layer forward and backward seconds per step, medians over ``steps`` steps (backward: time spent in
    the backward of the ops the layer made)."""
    from minidl.autograd import Function
    fwd, bwd = collections.defaultdict(float), collections.defaultdict(float)
    current = [None]
    original = Function.__call__

    def call(self, *inputs):
        out = original(self, *inputs)
        if out._ctx is self:
            label, inner = current[0], self.backward

            def timed(gy):
                t = time.perf_counter()
                r = inner(gy)
                bwd[label] += time.perf_counter() - t
                return r
            self.backward = timed
        return out

    layers = list(runner.model)
    labels = [f"{i:2d} {type(m).__name__}" for i, m in enumerate(layers)]
    other = collections.defaultdict(float)
    apply_ops(runner.ops)
    Function.__call__ = call
    settle()
    try:
        runner.train_step()  # warm-up
        hist = []
        for _ in range(steps):
            fwd.clear(), bwd.clear(), other.clear()
            runner.model.train()
            runner.opt.zero_grad()
            x = runner.x
            for label, m in zip(labels, layers):
                current[0] = label
                t = time.perf_counter()
                x = m(x)
                fwd[label] += time.perf_counter() - t
            current[0] = "loss"
            t = time.perf_counter()
            loss = minidl.cross_entropy(x, runner.y)
            fwd["loss"] += time.perf_counter() - t
            t = time.perf_counter()
            loss.backward()
            other["backward total"] += time.perf_counter() - t
            t = time.perf_counter()
            runner.opt.step()
            other["optimizer step"] += time.perf_counter() - t
            hist.append((dict(fwd), dict(bwd), dict(other)))
    finally:
        Function.__call__ = original
    return tuple(_medians([h[i] for h in hist]) for i in range(3)) + (labels + ["loss"],)


def profile_torch(runner, steps=7):
    """Per-layer forward and backward seconds per step (medians) from module hooks (backward of layer i = time
    from its output gradient arriving to the next layer down receiving its own)."""
    layers = list(runner.model)
    labels = [f"{i:2d} {type(m).__name__}" for i, m in enumerate(layers)]
    fwd, bwd = collections.defaultdict(float), collections.defaultdict(float)
    stamps = {}
    handles = [m.register_full_backward_pre_hook(lambda mod, g, i=i: stamps.__setitem__(i, time.perf_counter()))
               for i, m in enumerate(layers)]
    other = collections.defaultdict(float)
    settle()
    try:
        runner.train_step()
        hist = []
        for _ in range(steps):
            fwd.clear(), bwd.clear(), other.clear()
            runner.model.train()
            runner.opt.zero_grad()
            x = runner.x
            for label, m in zip(labels, layers):
                t = time.perf_counter()
                x = m(x)
                fwd[label] += time.perf_counter() - t
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(x, runner.y)
            fwd["loss"] += time.perf_counter() - t
            stamps.clear()
            t0 = time.perf_counter()
            loss.backward()
            end = time.perf_counter()
            other["backward total"] += end - t0
            for i, label in enumerate(labels):
                if i in stamps:
                    bwd[label] += (stamps[i - 1] if i - 1 in stamps else end) - stamps[i]
            t = time.perf_counter()
            runner.opt.step()
            other["optimizer step"] += time.perf_counter() - t
            hist.append((dict(fwd), dict(bwd), dict(other)))
    finally:
        for h in handles:
            h.remove()
    return tuple(_medians([h[i] for h in hist]) for i in range(3)) + (labels + ["loss"],)


def print_profile(net, batch, results):
    print(f"\nprofile of net {net}, batch {batch} (ms per training step, medians over steps)")
    names = list(results)
    header = f"{'layer':<18}" + "".join(f"{n + ' fwd':>13}{n + ' bwd':>13}" for n in names)
    print(header)
    labels = results[names[0]][3]
    for label in labels:
        row = f"{label:<18}"
        for n in names:
            fwd, bwd = results[n][0], results[n][1]
            row += f"{fwd.get(label, 0) * 1e3:13.2f}{bwd.get(label, 0) * 1e3:13.2f}"
        print(row)
    for key in ("backward total", "optimizer step"):
        print(f"{key:<18}" + "".join(f"{results[n][2].get(key, 0) * 1e3:26.2f}" for n in names))


# ------------------------------------------------------------------ main
def openblas_core():
    """The kernel set OpenBLAS chose at load time (e.g. 'SkylakeX', or 'Haswell' where the CPU or
    OPENBLAS_CORETYPE says so; the AVX-512 kernels ran this machine's GEMMs ~1.25x faster), or None."""
    import ctypes
    import glob
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


def machine():
    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
    blas = cfg.get("Build Dependencies", {}).get("blas", {}) if isinstance(cfg, dict) else {}
    info["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["blas_kernels"] = openblas_core()
    info["host_allocator"] = backend.host_allocator   # minidl's malloc thresholds hold for PyTorch's runs too
    info["ops"] = kernels.get_ops()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():  # the GPU the cuda figures ran on
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv=None):
    global SETTLE_S
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--nets", nargs="+", default=["A", "B", "C", "D"])
    p.add_argument("--batch", nargs="+", type=int, default=[64, 128], help="training batch sizes")
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--ops", nargs="+", default=["fast"],
                   help="minidl's ops: fast, reference, or reference:OP,OP; several settings alternate in one run")
    p.add_argument("--runs", type=int, default=7, help="timed runs per figure (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--profile", action="store_true", help="print a per-layer forward/backward breakdown")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help=f"seconds of pause before each timed run (default {SETTLE_S}; see SETTLE_S)")
    p.add_argument("--json", default=None, help="results file (default benchmarks/results/<date>-<device>.json)")
    p.add_argument("--_memory", nargs=3, metavar=("NET", "BATCH", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = backend.check_device(args.device)
    SETTLE_S = args.settle
    if args._memory:
        net, batch, fw = args._memory
        return _memory_child(net, int(batch), fw, device)
    for setting in args.ops:
        apply_ops(setting)      # a bad setting fails here, before anything is measured
    backend.set_malloc_thresholds()

    use_torch = torch is not None and not args.no_torch
    if torch is None:
        print("PyTorch is not importable: minidl figures only, no ratios")
    if use_torch and device == "cuda" and not torch.cuda.is_available():
        print("PyTorch has no CUDA here: minidl figures only")
        use_torch = False
    info = machine()
    impl = minidl_namespace()[2]
    print(f"minidl layers from {impl}; device {device}; {info.get('cpu', '?')}, {info['cpus']} CPUs, "
          f"BLAS {info['blas']} ({info['blas_kernels'] or 'kernels unknown'} kernels); malloc "
          + ("thresholds set by minidl for both frameworks" if isinstance(info["host_allocator"], dict)
             else str(info["host_allocator"]))
          + (f"; torch {info['torch']} with {info['torch_threads']} threads" if use_torch else ""))
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device, "machine": info,
               "command": "python -m benchmarks.throughput " + " ".join(sys.argv[1:] if argv is None else argv),
               "minidl_layers": impl, "ops": args.ops, "runs": args.runs, "settle_s": SETTLE_S, "nets": {}}
    names = ["minidl" if o == "fast" else f"minidl[{o}]" for o in args.ops]
    print("\n" + f"{'net':<4}{'what':<16}" + "".join(f"{n + ' img/s':>{max(14, len(n) + 7)}}{'ratio':>7}" for n in names)
          + (f"{'torch img/s':>13}" if use_torch else ""))

    def make(net, batch):
        return [MinidlRunner(net, batch, device, ops=o) for o in args.ops] + (
            [TorchRunner(net, batch, device)] if use_torch else [])

    for net in args.nets:
        entry = results["nets"][net] = {}
        for batch in args.batch:
            runners = make(net, batch)
            r = measure(runners, lambda run: run.train_step, batch, args.runs, args.warmup)
            entry[f"train_{batch}"] = _row(net, f"train b{batch}", r, names)
            if args.profile:
                prof = {n: profile_minidl(run) for n, run in zip(names, runners)}
                if use_torch:
                    prof["torch"] = profile_torch(runners[-1])
                print_profile(net, batch, prof)
        runners = make(net, args.infer_batch)
        r = measure(runners, lambda run: (lambda: run.infer(run.x)), args.infer_batch, args.runs, args.warmup)
        entry[f"infer_{args.infer_batch}"] = _row(net, f"infer b{args.infer_batch}", r, names)
        if not args.no_memory and device == "cpu":
            b = max(args.batch)
            mem = {"batch": b}
            for n in names + (["torch"] if use_torch else []):
                mem[n] = memory(net, b, n, device)
            cells = ""
            for n in names:
                m, t = mem[n].get("rss_peak_delta_mb"), mem.get("torch", {}).get("rss_peak_delta_mb")
                ratio = round(m / t, 2) if m is not None and t else None
                mem["ratio" if n == "minidl" else f"{n}_ratio"] = ratio
                cells += f"{_fmt(m):>{max(14, len(n) + 7)}}{_fmt(ratio, 2):>7}"
            print(f"{net:<4}{'peak MB b' + str(b):<16}{cells}{_fmt(mem.get('torch', {}).get('rss_peak_delta_mb')):>13}"
                  f"   (RSS delta)")
            entry["peak_memory"] = mem
    apply_ops("fast")
    path = args.json or os.path.join(os.path.dirname(__file__), "results",
                                     time.strftime("%Y%m%d-%H%M", time.gmtime()) + f"-{device}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults written to {path}")
    return results


def _fmt(v, digits=0):
    return "-" if v is None else f"{v:.{digits}f}"


def _row(net, what, r, names=("minidl",)):
    """One figure's row: each minidl setting's img/s and ratio to PyTorch (keys 'minidl_img_s' and 'ratio' for
    the default setting, '<name>_img_s' and '<name>_ratio' for the others), and PyTorch's img/s."""
    row, cells = {}, ""
    for n in names:
        ratio = round(r[n] / r["torch"], 3) if "torch" in r else None
        row[f"{n}_img_s"] = round(r[n], 1)
        row["ratio" if n == "minidl" else f"{n}_ratio"] = ratio
        cells += f"{r[n]:>{max(14, len(n) + 7)}.0f}{_fmt(ratio, 2):>7}"
    if "torch" in r:
        row["torch_img_s"] = round(r["torch"], 1)
    print(f"{net:<4}{what:<16}{cells}{_fmt(r.get('torch')):>13}", flush=True)
    return row


if __name__ == "__main__":
    main()
