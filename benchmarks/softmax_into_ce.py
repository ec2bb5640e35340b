"""Report 002's MNIST CNN with softmax outputs fed to the cross-entropy, in minidl and in PyTorch, seed by seed.

    python -m benchmarks.softmax_into_ce [--seeds 0 10] [--epochs 5] [--limit N]

Not a speed figure: an outcome comparison, to tell a minidl bug from a property of the model.  The report's
code ended its network in a softmax and gave those probabilities to CrossEntropyLoss, which takes logits
(``python -m experiments run mnist-cnn`` reproduces it).  Through two softmaxes the gradient a class receives
is scaled by its own probability, so a class pushed near probability 0 early can stay there: the network
never predicts it, and the test accuracy stops near 89%.  For each seed both frameworks start from the same
weights (PyTorch's default initialisation, copied into minidl), see the batches in the same order and train
with Adam 1e-3, batch 100, on the first 55,000 MNIST training images (the experiment's split and
normalisation); only the dropout masks differ.  Each line gives the test accuracy and the classes whose
test recall is below 50%.  Needs MNIST under $MINIDL_DATA and PyTorch installed.
"""
from __future__ import annotations

import argparse

import numpy as np

import minidl as mdl
from benchmarks import twin
from experiments.registry import mnist_cnn
from minidl.data.mnist import MNIST


def load(limit=None):
    """(x_train, y_train, x_test, y_test) as the experiment normalises them: first 55,000 for training."""
    def prep(ds):
        x = (ds.data.astype(np.float32) / 255 - np.float32(0.1307)) / np.float32(0.3081)
        return x[:, None], ds.targets.astype(np.int64)
    x, y = prep(MNIST(train=True))
    xt, yt = prep(MNIST(train=False))
    n = min(55000, limit or 55000)
    return x[:n], y[:n], xt, yt


def stalled(pred, y):
    """Classes whose recall is below 50%."""
    return [c for c in range(10) if (pred[y == c] == c).mean() < 0.5]


def twin_models(torch, seed):
    """The network in PyTorch with its default initialisation for ``seed``, and in minidl with the same weights."""
    torch.manual_seed(seed)
    mdl.manual_seed(seed)
    return twin.twin_models(torch, mnist_cnn(fc_dropout=None, softmax_output=True))


def run_seed(torch, seed, data, epochs):
    x, y, xt, yt = data
    tm, mm = twin_models(torch, seed)
    topt, mopt = torch.optim.Adam(tm.parameters(), 1e-3), mdl.optim.Adam(mm.parameters(), 1e-3)
    tloss, mloss = torch.nn.CrossEntropyLoss(), mdl.nn.CrossEntropyLoss()
    order = np.random.default_rng(seed)
    for _ in range(epochs):
        tm.train(), mm.train()
        for idx in np.array_split(order.permutation(len(x)), max(1, len(x) // 100)):
            topt.zero_grad()
            tloss(tm(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
            topt.step()
            mopt.zero_grad()
            mloss(mm(mdl.tensor(x[idx])), mdl.tensor(y[idx])).backward()
            mopt.step()
    tm.eval(), mm.eval()
    with torch.no_grad():
        tpred = tm(torch.from_numpy(xt)).argmax(1).numpy()
    with mdl.no_grad():
        mpred = np.concatenate([mm(mdl.tensor(xt[i:i + 1000])).numpy().argmax(1) for i in range(0, len(xt), 1000)])
    return [(100 * float((p == yt).mean()), stalled(p, yt)) for p in (mpred, tpred)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs=2, default=[0, 10], metavar=("FIRST", "END"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (a quick check)")
    a = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("benchmarks.softmax_into_ce compares with PyTorch: pip install torch")
    torch.set_num_threads(1)
    data = load(a.limit)
    counts = [0, 0]
    for seed in range(*a.seeds):
        results = run_seed(torch, seed, data, a.epochs)
        for i, (_, s) in enumerate(results):
            counts[i] += bool(s)
        print(f"seed {seed}: " + "   ".join(f"{name} test {acc:.2f}% stalled classes {s or '-'}"
                                            for name, (acc, s) in zip(("minidl", "PyTorch"), results)), flush=True)
    n = a.seeds[1] - a.seeds[0]
    print(f"runs with a stalled class: minidl {counts[0]} of {n}, PyTorch {counts[1]} of {n}")


if __name__ == "__main__":
    main()
