"""python -m experiments run: a short demo training run on a tiny built-in problem
(two interleaved spirals), until the experiment registry exists."""
import sys

import numpy as np

import minidl as mdl


def spirals(n=300, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1, n)
        t = np.linspace(c * 4, (c + 1) * 4, n) + rng.normal(0, 0.2, n)
        x.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
        y.append(np.full(n, c))
    return np.concatenate(x).astype(np.float32), np.concatenate(y)


def demo(steps=2000, lr=0.5):
    mdl.manual_seed(0)
    x, y = spirals()
    xt = mdl.tensor(x)
    w1 = mdl.tensor(np.random.default_rng(1).normal(0, 0.5, (2, 64)).astype(np.float32), requires_grad=True)
    b1 = mdl.zeros(64, requires_grad=True)
    w2 = mdl.tensor(np.random.default_rng(2).normal(0, 0.1, (64, 3)).astype(np.float32), requires_grad=True)
    b2 = mdl.zeros(3, requires_grad=True)
    for step in range(steps + 1):
        logits = (xt @ w1 + b1).relu() @ w2 + b2
        loss = mdl.cross_entropy(logits, y)
        for p in (w1, b1, w2, b2):
            p.grad = None
        loss.backward()
        with mdl.no_grad():
            for p in (w1, b1, w2, b2):
                p -= lr * p.grad
        if step % 500 == 0:
            acc = float((logits.argmax(1).numpy() == y).mean())
            print(f"step {step:5d}  loss {loss.item():.4f}  accuracy {acc:.3f}")
    return acc


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run",):
        sys.exit("usage: python -m experiments run")
    demo()
