"""results/FIDELITY.md: how each registered experiment compares with the report it reproduces.

    python -m experiments fidelity [--write results/FIDELITY.md]

One row per experiment, generated from the registry alone: the report and where in it, what the
report states, what minidl runs (model, parameters where the report prints them, optimizer, batch,
epochs, data split and preprocessing, the figure compared), the choices made where the report is
silent, and each deviation with its reason.
"""
from __future__ import annotations

from experiments.registry import DATASET_DEVIATIONS, EXPERIMENTS, MODELS

HEADER = """# Fidelity of the experiments to the reports

Generated from `experiments/registry.py` by `python -m experiments fidelity --write results/FIDELITY.md`
(a test checks that this file is the generated one). The reports are `../shared/seeds/000_*.txt` to
`004_*.txt`. "Choices" are settings the report does not state, with the reason for each; "deviations" are
where minidl does not do what the report did, and why. Batch-norm momentum is given in PyTorch's convention
(Keras' 0.99 is PyTorch's 0.01).
"""

_OPT_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
_AUG = {"hflip": "random horizontal flip", "crop4": "random 32x32 crop of the image padded by 4",
        "resize40-crop32": "resize to 40x40, random 32x32 crop"}
_METRIC = {"test_acc": "test accuracy", "best_val_acc": "best validation accuracy",
           "train_acc": "accuracy on the training images"}


def describe_optimizer(cfg: dict) -> str:
    cfg = dict(cfg)
    text = f"{_OPT_NAMES.get(cfg.pop('name'), '?')} lr {cfg.pop('lr')}"
    if cfg.pop("nesterov", False):
        text += ", Nesterov"
    return text + "".join(f", {k.replace('_', ' ')} {v}" for k, v in cfg.items())


def describe_split(split: dict) -> str:
    kind = split["kind"]
    if kind == "first_last":
        return f"train on the first {split['train']:,} training images, validate on the last {split['val']:,}"
    if kind == "test_as_val":
        return "train on all training images; the test set is the validation set"
    if kind == "test_random":
        test = ("the whole test set" if split.get("test") == "all"
                else f"the other {1 - split['val_frac']:.0%} of the test images")
        return (f"train on all training images; validate on {split['val_frac']:.0%} of the test images "
                f"(seed {split['seed']}); test on {test}")
    return kind


def describe_normalize(norm) -> str:
    if norm is None:
        return "no normalisation"
    if norm == "computed":
        return "normalised with the training images' mean and std"
    mean, std = norm
    if all(m == 0 for m in mean) and all(s == 1 for s in std):
        return "scaled to [0, 1]"
    return f"Normalize(mean {tuple(mean)}, std {tuple(std)})"


def model_params(exp):
    """(trainable parameters, batch-norm running statistics) of the full-size model."""
    model = MODELS[exp.model](**exp.model_kwargs)
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in model.parameters()), stats


def describe_run(exp) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in exp.model_kwargs.items())
    parts = [f"{exp.title}: `{exp.model}({kwargs})`"]
    if exp.report_params:
        n, stats = model_params(exp)
        text = f"{n:,} parameters"
        if stats:
            text += f" (+ {stats:,} batch-norm statistics: {n + stats:,} in Keras' count)"
        parts.append(text)
    parts.append(f"{describe_optimizer(exp.optimizer)}, batch {exp.batch_size}, {exp.epochs} epochs")
    parts.append(describe_split(exp.split))
    parts.append(describe_normalize(exp.normalize))
    if exp.augment:
        parts.append("training images: " + ", ".join(_AUG[a] for a in exp.augment))
    if exp.eval_augment:
        parts.append("validation and test images: " + ", ".join(_AUG[a] for a in exp.eval_augment))
    if exp.sweep:
        parts.append("variants: " + ", ".join(v["label"] for v in exp.sweep))
    if exp.published:
        parts.append(f"compared: {_METRIC[exp.published['metric']]}")
    return "; ".join(parts)


def _cell(items) -> str:
    items = [items] if isinstance(items, str) else list(items)
    text = "<br>".join(f"- {i}" for i in items) if len(items) > 1 else (items[0] if items else "-")
    return text.replace("|", "\\|").replace("\n", " ")


def fidelity_table() -> str:
    lines = [HEADER, "| Experiment | Report | The report states | minidl runs | Choices where the report is silent "
             "| Deviations and why |", "|---|---|---|---|---|---|"]
    for name, exp in EXPERIMENTS.items():
        deviations = list(exp.deviations)
        if exp.dataset in DATASET_DEVIATIONS:
            deviations.append(DATASET_DEVIATIONS[exp.dataset])
        says = exp.report_says or "no report: an extra experiment"
        lines.append("| " + " | ".join([f"`{name}`", _cell(exp.report or "-"), _cell(says), _cell(describe_run(exp)),
                                       _cell(exp.notes), _cell(deviations or "none")]) + " |")
    return "\n".join(lines) + "\n"
