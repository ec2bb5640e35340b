"""A registered experiment trained in minidl and in PyTorch side by side, from the same weights, on the same batches.

    python -m benchmarks.twin NAME [--variant LABEL] [--epochs E] [--seed S] [--limit N] [--threads T]

Not a speed figure: an outcome comparison, to tell a minidl bug from a property of the experiment (its data copy,
its hyper-parameters, its luck).  The experiment's network is built in minidl, mirrored layer for layer in
PyTorch (``to_torch``), and both start from PyTorch's default initialisation for the seed; each step gives both
the same batch from the experiment's own data pipeline (split, normalisation, augmentation), and each trains with
the experiment's optimizer; only the dropout masks differ.  After every epoch it prints both networks' validation
accuracy, and at the end their accuracy on the test set and on the training images (in evaluation mode).  Needs
the experiment's data under $MINIDL_DATA and PyTorch.
"""
from __future__ import annotations

import argparse

import numpy as np

import minidl as mdl
from experiments.registry import EXPERIMENTS, MODELS
from experiments.runner import OPTIMIZERS, load_data, make_optimizer
from minidl.data import DataLoader

# minidl layer -> the same layer in PyTorch, built from the minidl module's own attributes
_LAYERS = {
    "Conv2d": lambda nn, m: nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                      m.dilation, bias=m.bias is not None),
    "Linear": lambda nn, m: nn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    "MaxPool2d": lambda nn, m: nn.MaxPool2d(m.kernel_size, m.stride, m.padding),
    "AvgPool2d": lambda nn, m: nn.AvgPool2d(m.kernel_size, m.stride, m.padding),
    "BatchNorm1d": lambda nn, m: nn.BatchNorm1d(m.num_features, m.eps, m.momentum),
    "BatchNorm2d": lambda nn, m: nn.BatchNorm2d(m.num_features, m.eps, m.momentum),
    "ReLU": lambda nn, m: nn.ReLU(),
    "LeakyReLU": lambda nn, m: nn.LeakyReLU(m.negative_slope),
    "Tanh": lambda nn, m: nn.Tanh(),
    "Sigmoid": lambda nn, m: nn.Sigmoid(),
    "Softmax": lambda nn, m: nn.Softmax(m.dim),
    "Flatten": lambda nn, m: nn.Flatten(m.start_dim, m.end_dim),
    "Dropout": lambda nn, m: nn.Dropout(m.p),
    "Dropout2d": lambda nn, m: nn.Dropout2d(m.p),
}


def to_torch(torch, model):
    """The PyTorch twin of a minidl ``Sequential`` (same layers, same state-dict keys), freshly initialised."""
    kind = type(model).__name__
    if kind != "Sequential":
        raise TypeError(f"to_torch mirrors a minidl Sequential, got {kind}")
    layers = []
    for m in model:
        name = type(m).__name__
        if name not in _LAYERS:
            raise TypeError(f"to_torch has no PyTorch twin for minidl's {name}; known: {sorted(_LAYERS)}")
        layers.append(_LAYERS[name](torch.nn, m))
    return torch.nn.Sequential(*layers)


def twin_models(torch, model):
    """(PyTorch twin, ``model``), with ``model`` given the twin's default-initialised weights."""
    twin = to_torch(torch, model)
    model.load_state_dict({k: mdl.tensor(v.detach().numpy()) for k, v in twin.state_dict().items()})
    return twin, model


def torch_optimizer(torch, params, cfg: dict):
    """The experiment's optimizer in PyTorch (minidl's optimizer classes and arguments are named as PyTorch's)."""
    cfg = dict(cfg)
    return getattr(torch.optim, OPTIMIZERS[cfg.pop("name")].__name__)(params, **cfg)


def accuracy(torch, twin, model, dataset):
    """Percent correct of the PyTorch twin and of the minidl model on ``dataset``, in evaluation mode."""
    twin.eval(), model.eval()
    right = [0, 0]
    with torch.no_grad(), mdl.no_grad():
        for x, y in DataLoader(dataset, batch_size=500):
            y = y.numpy()
            right[0] += int((twin(torch.from_numpy(x.numpy())).argmax(1).numpy() == y).sum())
            right[1] += int((model(x).numpy().argmax(1) == y).sum())
    return [100 * r / len(dataset) for r in right]


def experiment(name, variant):
    """The registered experiment ``name``, or the variant ``variant`` of a sweep (which must name one)."""
    exp = EXPERIMENTS[name]
    variants = exp.variants()
    labels = ", ".join(sorted(variants))
    if variants and variant is None:
        raise SystemExit(f"{name} is a sweep: choose --variant from {labels}")
    if not variants and variant is not None:
        raise SystemExit(f"{name} is not a sweep: --variant {variant!r} names nothing")
    if variant is not None and variant not in variants:
        raise SystemExit(f"{name} has no variant {variant!r}; its variants: {labels}")
    return exp if variant is None else variants[variant]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name", choices=sorted(EXPERIMENTS), metavar="NAME", help="a registered experiment")
    p.add_argument("--variant", default=None, help="a sweep's variant, by its label (a sweep needs one)")
    p.add_argument("--epochs", type=int, default=None, help="default: the experiment's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (a quick check)")
    p.add_argument("--threads", type=int, default=1, help="PyTorch's intra-op threads")
    a = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("benchmarks.twin compares with PyTorch: pip install torch")
    torch.set_num_threads(a.threads)
    exp = experiment(a.name, a.variant)
    torch.manual_seed(a.seed)
    mdl.manual_seed(a.seed)
    train, val, test, train_eval, _, info = load_data(exp, limit=a.limit)
    twin, model = twin_models(torch, MODELS[exp.model](**exp.model_kwargs))
    topt, mopt = torch_optimizer(torch, twin.parameters(), exp.optimizer), make_optimizer(model.parameters(),
                                                                                          exp.optimizer)
    tloss, mloss = torch.nn.CrossEntropyLoss(), mdl.nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size=exp.batch_size, shuffle=True, seed=a.seed)
    label = a.name if a.variant is None else f"{a.name} {a.variant}"
    print(f"{label}, seed {a.seed}: {info['n_train']} training, {info['n_val']} validation images, "
          f"batch {exp.batch_size}, {exp.optimizer}")
    best = [(0.0, 0), (0.0, 0)]
    for epoch in range(1, (a.epochs or exp.epochs) + 1):
        twin.train(), model.train()
        for x, y in loader:
            topt.zero_grad()
            tloss(twin(torch.from_numpy(x.numpy())), torch.from_numpy(y.numpy())).backward()
            topt.step()
            mopt.zero_grad()
            mloss(model(x), y).backward()
            mopt.step()
        accs = accuracy(torch, twin, model, val)
        best = [b if b[0] >= acc else (acc, epoch) for b, acc in zip(best, accs)]  # the first best epoch
        print(f"epoch {epoch}: validation  PyTorch {accs[0]:.2f}%  minidl {accs[1]:.2f}%", flush=True)
    tests, trains = accuracy(torch, twin, model, test), accuracy(torch, twin, model, train_eval)
    for name, (acc, ep), t, r in zip(("PyTorch", "minidl"), best, tests, trains):
        print(f"{name}: best validation {acc:.2f}% (epoch {ep}), final test {t:.2f}%, training images {r:.2f}%")


if __name__ == "__main__":
    main()
