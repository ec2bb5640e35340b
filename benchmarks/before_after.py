"""minidl at an earlier commit against minidl now, with PyTorch beside both, in one process.

    python -m benchmarks.before_after REV [--nets A B C D] [--what train64 train128 infer256] [--runs 7]

The package at git revision REV is exported to a temporary folder and imported under another name
(``minidl_before``), so that both versions build the same reference nets (``benchmarks.throughput.build``) and
their timed runs alternate with PyTorch's (``throughput.measure``: a pause before each run, medians).  It
prints img/s of each and the ratios before/PyTorch, now/PyTorch and now/before; machine noise moves the
img/s, and the ratios much less.  Both run with minidl's malloc thresholds set (as minidl's training loop
sets them).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

import minidl
from benchmarks import throughput as tp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_revision(rev, folder):
    """minidl at git revision ``rev``, exported into ``folder`` and imported as the package minidl_before."""
    archive = os.path.join(folder, "src.tar")
    subprocess.run(["git", "archive", "-o", archive, rev, "minidl"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    os.rename(os.path.join(folder, "minidl"), os.path.join(folder, "minidl_before"))
    for base, _, files in os.walk(os.path.join(folder, "minidl_before")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(base, f)
                with open(path) as fh:
                    text = fh.read()
                with open(path, "w") as fh:
                    fh.write(re.sub(r"\bminidl\b", "minidl_before", text))
    sys.path.insert(0, folder)
    return importlib.import_module("minidl_before")


class BeforeRunner:
    """benchmarks.throughput.MinidlRunner for another copy of the package."""

    name = "before"

    def __init__(self, pkg, net, batch, seed=0):
        from importlib import import_module
        nn, optim = import_module(pkg.__name__ + ".nn"), import_module(pkg.__name__ + ".optim")
        self.pkg, self.model = pkg, tp.build(nn, net)
        self.opt = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(seed)
        self.x = pkg.Tensor(rng.standard_normal((batch,) + tp.INPUT[net], dtype=np.float32))
        self.y = pkg.Tensor(rng.integers(0, 10, batch))

    def train_step(self):
        self.model.train()
        self.opt.zero_grad()
        loss = self.pkg.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def infer(self, x):
        self.model.eval()
        with self.pkg.no_grad():
            return self.model(x)

    def sync(self):
        pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rev", help="the earlier git revision (a commit, branch or tag)")
    p.add_argument("--nets", nargs="+", default=["A", "B", "C", "D"])
    p.add_argument("--what", nargs="+", default=["train64", "train128", "infer256"],
                   help="trainB (a training step at batch B) or inferB (inference at batch B)")
    p.add_argument("--runs", type=int, default=7, help="timed runs per figure (median)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if tp.torch is None:
        p.error("PyTorch is not importable: it is the yardstick of these ratios")
    with tempfile.TemporaryDirectory() as folder:
        before = import_revision(args.rev, folder)
        minidl.backend.set_malloc_thresholds()
        print(f"before: {args.rev}; now: the working tree; BLAS kernels {tp.openblas_core()}")
        print(f"{'net':<4}{'what':<10}{'before':>8}{'now':>8}{'torch':>8}{'b/torch':>9}{'now/torch':>10}{'now/b':>7}")
        out = {}
        for net in args.nets:
            for what in args.what:
                m = re.fullmatch(r"(train|infer)(\d+)", what)
                if m is None:
                    p.error(f"--what takes trainB or inferB (B a batch size), got {what!r}")
                train, batch = m.group(1) == "train", int(m.group(2))
                now = tp.MinidlRunner(net, batch, "cpu")
                now.name = "now"
                runners = [BeforeRunner(before, net, batch), now, tp.TorchRunner(net, batch, "cpu")]
                fn = (lambda r: r.train_step) if train else (lambda r: (lambda: r.infer(r.x)))
                r = tp.measure(runners, fn, batch, args.runs, 2)
                out[f"{net} {what}"] = r
                print(f"{net:<4}{what:<10}{r['before']:8.0f}{r['now']:8.0f}{r['torch']:8.0f}"
                      f"{r['before'] / r['torch']:9.2f}{r['now'] / r['torch']:10.2f}{r['now'] / r['before']:7.2f}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rev": args.rev, "runs": args.runs, "img_s": out}, f, indent=1)
    return out


if __name__ == "__main__":
    main()
