"""Run a registered experiment: data, model, training, evaluation, plots and a report.

``run(name, ...)`` writes ``OUT/NAME/`` with config.json, history.json/csv, metrics.json,
model_summary.txt, classification_report.txt, the plots (PNG) and report.md; a sweep writes one
such folder per variant under ``OUT/NAME/`` plus the comparison plot and the best variant's
figures at the top.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import time

import numpy as np

import minidl as mdl
from minidl import distributed as dist
from minidl import metrics, nn, optim, viz
from minidl.train import Trainer, evaluate, json_ready

from experiments.registry import DATASETS, MODELS, Experiment, get

SMOKE_LIMIT = 128


class RunError(ValueError):
    """A run that cannot start as asked (a bad option, a resume that does not match the earlier run); nothing
    was written.  The CLI prints it as one line and exits with status 2."""


# ----------------------------------------------------------------- data
def _dataset_class(name):
    from minidl import data
    return {"mnist": data.MNIST, "fashion-mnist": data.FashionMNIST, "cifar10": data.CIFAR10,
            "cifar100": data.CIFAR100}[name]


def _synthetic(dataset, n_train, n_test, seed):
    """Random uint8 images of the dataset's shape whose class shifts the mean brightness of a
    class-specific band, so that a model can learn something in one epoch."""
    from minidl.data import ArrayDataset
    shape, classes, _ = DATASETS[dataset]
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 160, (n,) + shape).astype(np.int64)
        rows = (y * shape[1] // classes)
        for i in range(n):
            x[i, :, rows[i]:rows[i] + max(1, shape[1] // classes), :] += 90
        return ArrayDataset(np.clip(x, 0, 255).astype(np.uint8), y, classes=[f"class {c}" for c in range(classes)],
                            layout="NCHW")
    return make(n_train), make(n_test)


def augmentations(names) -> list:
    """The transforms named in an experiment's ``augment`` or ``eval_augment`` list."""
    from minidl.data import transforms as T
    out = []
    for a in names:
        if a == "hflip":
            out.append(T.RandomHorizontalFlip())
        elif a == "crop4":
            out.append(T.RandomCrop(32, padding=4))
        elif a == "resize40-crop32":
            out += [T.Resize(40), T.RandomCrop(32)]
        else:
            raise ValueError(f"unknown augmentation {a!r}")
    return out


def _not_found(errors):
    """One DatasetNotFoundError naming the missing files of both splits."""
    from minidl.data import DatasetNotFoundError
    first = errors[0]
    missing = list(dict.fromkeys(m for e in errors for m in e.missing))
    alternative = f", or {first.alternative}," if first.alternative else ""
    return DatasetNotFoundError(
        f"{first.dataset} not found: missing {', '.join(missing)} in {first.folder}. Put the official files "
        f"there{alternative} or set MINIDL_DATA (or pass data_dir=) to the folder that holds them, or pass "
        f"download=True.", dataset=first.dataset, missing=missing, folder=first.folder, alternative=first.alternative)


def load_data(exp: Experiment, data_dir=None, limit=None, source="real", seed=0, download=False):
    """(train, val, test) Subsets with their transforms, the class names and a description of the
    data used.  ``source``: 'real' (error when absent), 'synthetic', or 'auto' (real when present).
    ``download=True`` fetches missing real data from the official servers (source 'real' only)."""
    from minidl.data import DatasetNotFoundError, Subset, mean_std
    from minidl.data import transforms as T
    if source not in ("real", "synthetic", "auto"):
        raise ValueError(f"source must be 'real', 'synthetic' or 'auto', got {source!r}")
    used = source
    if source != "synthetic":
        cls = _dataset_class(exp.dataset)
        fetch = download and source == "real"
        found, errors = [], []
        for train in (True, False):  # both splits, so that the error names every missing file
            try:
                found.append(cls(root=data_dir, train=train, download=fetch))
            except DatasetNotFoundError as e:
                errors.append(e)
        if not errors:
            (full_train, full_test), used = found, "real"
        elif source == "real":
            raise _not_found(errors)
        else:
            used = "synthetic"
    if used == "synthetic":
        n = limit or SMOKE_LIMIT
        full_train, full_test = _synthetic(exp.dataset, n + max(n // 4, 32), max(n // 2, 64), seed)

    kind = exp.split.get("kind")
    n_tr = len(full_train)
    test_base = full_test
    if kind == "first_last":
        a, b = exp.split["train"], exp.split["val"]
        if a + b > n_tr:  # synthetic data: keep the proportions
            a = n_tr * a // (a + b)
            b = n_tr - a
        tr_idx, va_idx, va_base = np.arange(a), np.arange(n_tr - b, n_tr), full_train
        te_idx = np.arange(len(full_test))
    elif kind == "test_as_val":
        tr_idx, va_idx, va_base = np.arange(n_tr), np.arange(len(full_test)), full_test
        te_idx = np.arange(len(full_test))
    elif kind == "test_random":
        perm = np.random.default_rng(exp.split.get("seed", 42)).permutation(len(full_test))
        k = int(round(exp.split["val_frac"] * len(full_test)))
        tr_idx, va_idx, va_base = np.arange(n_tr), np.sort(perm[:k]), full_test
        # "test": "all" measures the test accuracy on the whole test set, validation part included
        te_idx = np.arange(len(full_test)) if exp.split.get("test") == "all" else np.sort(perm[k:])
    else:
        raise ValueError(f"unknown split kind {kind!r}")
    if limit:
        small = max(limit // 4, 32)
        tr_idx, va_idx, te_idx = tr_idx[:limit], va_idx[:small], te_idx[:small]

    train_raw = Subset(full_train, tr_idx)
    if exp.normalize == "computed":
        mean, std = mean_std(train_raw)
    elif exp.normalize is None:
        mean, std = None, None
    else:
        mean, std = exp.normalize
    norm = [T.Normalize(mean, std)] if mean is not None else []
    aug, eval_aug = augmentations(exp.augment), augmentations(exp.eval_augment)
    train_tf = T.Compose(aug + norm) if aug or norm else None
    eval_tf = T.Compose(eval_aug + norm) if eval_aug or norm else None
    train = Subset(full_train, tr_idx, transform=train_tf)
    val = Subset(va_base, va_idx, transform=eval_tf)
    test = Subset(test_base, te_idx, transform=eval_tf)
    train_eval = Subset(full_train, tr_idx, transform=eval_tf)  # for training-set accuracy, as evaluation sees it
    info = {"source": used, "dataset": DATASETS[exp.dataset][2], "root": data_dir,
            "n_train": len(train), "n_val": len(val), "n_test": len(test),
            "val_is_test": kind == "test_as_val", "test_includes_val": exp.split.get("test") == "all",
            "normalize": None if mean is None else {"mean": list(map(float, np.atleast_1d(mean))),
                                                    "std": list(map(float, np.atleast_1d(std)))}}
    classes = list(getattr(full_train, "classes", [str(c) for c in range(DATASETS[exp.dataset][1])]))
    return train, val, test, train_eval, classes, info


# ----------------------------------------------------------------- optimizer
OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop}


def make_optimizer(params, cfg: dict):
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, **cfg)


# ----------------------------------------------------------------- one run
def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _json(path, obj):
    with open(path, "w") as f:
        json.dump(json_ready(obj), f, indent=2, default=str, allow_nan=False)


def run_title(exp: Experiment, epochs: int) -> str:
    """The experiment's title with the number of epochs it names replaced by ``epochs``, those the run trained
    (an ``--epochs 1`` run of a "5 epochs" experiment must not say 5)."""
    return re.sub(r"\b\d+ epochs\b", f"{epochs} epoch{'' if epochs == 1 else 's'}", exp.title)


def _pct(x):
    return None if x is None else round(100.0 * x, 2)


def _shard(dataset, rank, world):
    """Rank ``rank``'s contiguous share of ``dataset`` (shares differ by at most one sample; in rank order they
    are the whole set, so outputs gathered in rank order are in the set's order)."""
    from minidl.data import Subset
    return Subset(dataset, np.array_split(np.arange(len(dataset)), world)[rank])


def check_options(epochs=None, limit=None, seed=0, num_workers=0, device="cpu"):
    """Raise RunError, naming the option as the CLI spells it and what it allows, for a value out of range."""
    def integer(v, least):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= least
    for flag, value, least, what, optional in (("--epochs", epochs, 1, "", True),
                                               ("--limit", limit, 1, " (the number of training samples)", True),
                                               ("--seed", seed, 0, "", False),
                                               ("--workers", num_workers, 0, " (DataLoader threads)", False)):
        if not (optional and value is None) and not integer(value, least):
            raise RunError(f"{flag} must be an integer >= {least}{what}, got {value!r}")
    name = str(device)
    if name != "cpu" and not name.startswith("cuda"):
        raise RunError(f"--device must be cpu or cuda, got {device!r}")
    if name.startswith("cuda") and mdl.backend.cupy_status() is not None:
        raise RunError(f"--device {name}: {mdl.backend.cupy_status()}")


# What run_single writes.  A fresh run first removes the earlier run's, so that a folder never shows two runs
# at once (an earlier misclassified.png or feature map beside a run that made none).
RUN_FILES = ("config.json", "model_summary.txt", "samples.png", "history.json", "history.csv", "last.ckpt",
             "best.ckpt", "classification_report.txt", "confusion_matrix.csv", "confusion_matrix.png", "metrics.json",
             "curves.png", "predictions.png", "correct.png", "misclassified.png", "weights.png", "report.md")
FEATURE_MAPS = re.compile(r"feature_maps_conv\d+\.png")


def _clear_earlier_run(out_dir):
    if not os.path.isdir(out_dir):
        return
    for f in os.listdir(out_dir):
        if f in RUN_FILES or FEATURE_MAPS.fullmatch(f):
            os.remove(os.path.join(out_dir, f))


# What the registry says about an experiment, not what it trains: a newer minidl may reword it, and a run
# resumes under the new words.
DESCRIPTION_FIELDS = ("title", "published", "notes", "report", "report_says", "report_params", "layer_table",
                      "deviations")


def _comparable(config: dict) -> dict:
    """A config as config.json holds it, without what may change between a run and its resumption."""
    config = json.loads(json.dumps(json_ready(config), default=str))
    for key in ("command", "epochs") + DESCRIPTION_FIELDS:
        config.pop(key, None)
    if isinstance(config.get("data"), dict):
        config["data"].pop("root", None)  # the same files may be reached from another folder
    return config


def _differences(earlier, now, where="") -> list:
    if isinstance(earlier, dict) and isinstance(now, dict):
        return [d for k in sorted(set(earlier) | set(now), key=str)
                for d in _differences(earlier.get(k), now.get(k), f"{where}{k}.")]
    return [] if earlier == now else [f"{where[:-1]} {json.dumps(earlier)} -> {json.dumps(now)}"]


def _check_resume(out_dir, last, config: dict) -> str | None:
    """Refuse (RunError) to resume ``out_dir`` with a configuration other than the one it ran with; more (or
    fewer, down to the checkpoint's) epochs are allowed.  Returns the sentence that says so, or None."""
    from minidl import io
    try:
        with open(os.path.join(out_dir, "config.json")) as f:
            earlier = json.load(f)
        done = io.load_checkpoint(last, restore_rng=False)["epoch"]
    except (OSError, ValueError) as e:
        raise RunError(f"--resume: cannot read the earlier run in {out_dir} ({e}); run without --resume to start "
                       f"over") from e
    diffs = _differences(_comparable(earlier), _comparable(config))
    if diffs:
        raise RunError(f"--resume: {out_dir} ran with other settings ({'; '.join(diffs)}): resuming would mix two "
                       f"runs; resume with the earlier settings, or run without --resume to start over (with another "
                       f"--out to keep this run)")
    if config["epochs"] < done:
        raise RunError(f"--resume: {last} is already at epoch {done}; --epochs {config['epochs']} is fewer (ask for "
                       f"{done} or more)")
    if config["epochs"] != earlier.get("epochs"):
        how = "extending" if config["epochs"] > (earlier.get("epochs") or 0) else "shortening"
        return (f"resuming {out_dir} at epoch {done}: {how} the run from {earlier.get('epochs')} to "
                f"{config['epochs']} epochs")
    return None


def run_single(exp: Experiment, out_dir, device="cpu", data_dir=None, seed=0, limit=None, source="real",
               progress=True, command=None, num_workers=0, resume=False, download=False, distributed=False):
    """One run.  ``distributed``: this process is one rank of a data-parallel job (the default process group is
    initialised): each rank trains on its share of every batch (the configured batch is the global one), BatchNorm
    layers become SyncBatchNorm, evaluation is sharded, and only rank 0 writes ``out_dir``."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    main = rank == 0
    t_start = time.perf_counter()
    mdl.manual_seed(seed)
    if distributed and not main:
        dist.barrier()  # rank 0 reads (and downloads) the data first
    train, val, test, train_eval, classes, info = load_data(exp, data_dir, limit, source, seed, download)
    if distributed and main:
        dist.barrier()
    from minidl.data import DataLoader, DistributedSampler
    eval_bs = max(exp.batch_size, 500)
    if exp.batch_size % world:
        raise ValueError(f"{exp.name}: the batch of {exp.batch_size} does not split evenly over {world} ranks; "
                         f"use a number of ranks that divides it")
    if distributed:
        train_loader = DataLoader(train, batch_size=exp.batch_size // world, seed=seed, device=device,
                                  sampler=DistributedSampler(train, seed=seed), num_workers=num_workers)
        val, test_part, eval_part = (_shard(d, rank, world) for d in (val, test, train_eval))
    else:
        train_loader = DataLoader(train, batch_size=exp.batch_size, shuffle=True, seed=seed, device=device,
                                  num_workers=num_workers)
        test_part, eval_part = test, train_eval
    val_loader = DataLoader(val, batch_size=eval_bs, device=device, num_workers=num_workers)
    test_loader = DataLoader(test_part, batch_size=eval_bs, device=device, num_workers=num_workers)

    model = MODELS[exp.model](**exp.model_kwargs).to(device)
    if distributed:  # batch statistics of the global batch, as one process would compute them
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    shape = DATASETS[exp.dataset][0]
    n_params = int(sum(p.numel() for p in model.parameters()))
    opt = make_optimizer(model.parameters(), exp.optimizer)
    config = dict(exp.config(), seed=seed, device=device, data=info, limit=limit, params=n_params,
                  command=command)
    if distributed:
        config["distributed"] = {"world_size": world, "backend": dist.get_backend(),
                                 "batch_per_rank": exp.batch_size // world, "sync_batch_norm": True}
    last = os.path.join(out_dir, "last.ckpt")
    summary = None
    if main:  # rank 0's view of the shared folder decides for every rank
        if resume is True and not os.path.isfile(last):
            raise RunError(f"--resume: no checkpoint {last} to resume from")
        resume = bool(resume) and os.path.isfile(last)  # "auto" (sweep variants): resume when there is one
        if resume:
            said = _check_resume(out_dir, last, config)
            if said:
                print(said, flush=True)
        else:
            _clear_earlier_run(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        summary = model.summary(shape, print_fn=None)
        _write(os.path.join(out_dir, "model_summary.txt"), f"{model!r}\n\n{summary}\n")
        _json(os.path.join(out_dir, "config.json"), config)
        # dataset samples (raw images, before normalisation)
        k = min(16, len(train))
        xs, ys = train.get_batch(np.arange(k))
        viz.plot_dataset_samples(xs, ys, os.path.join(out_dir, "samples.png"), class_names=classes, ncols=8)
    if distributed:
        resume = dist.broadcast_object(resume)

    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    trainer = Trainer(net, opt, train_loader, val_loader, device=device, out_dir=out_dir, progress=progress,
                      monitor="val_acc")
    t_train = time.perf_counter()
    history = trainer.fit(exp.epochs, resume=last if resume else None)
    # the epochs' own times (training and validation), so that a resumed run counts the epochs before it too
    train_time = sum(r.get("time_s") or 0.0 for r in history)
    earlier = train_time - (time.perf_counter() - t_train) if resume else 0.0

    if distributed:
        net.sync_buffers()
    ev = evaluate(model, test_loader, device=device, return_outputs=True, sharded=distributed)
    train_acc = None
    if exp.report_train_acc:
        tl = DataLoader(eval_part, batch_size=eval_bs, device=device, num_workers=num_workers)
        train_acc = _pct(evaluate(model, tl, device=device, sharded=distributed)["acc"])
    if not main:  # the other ranks have done their share; rank 0 writes the results
        return {"experiment": exp.name, "test_acc": _pct(ev["acc"]), "rank": rank}
    logits, targets = ev["logits"], ev["targets"]
    preds = logits.argmax(axis=1)
    labels = list(range(len(classes)))
    report = metrics.classification_report(targets, preds, labels=labels, target_names=classes, digits=4)
    _write(os.path.join(out_dir, "classification_report.txt"), report)
    cm = metrics.confusion_matrix(targets, preds, num_classes=len(classes))
    np.savetxt(os.path.join(out_dir, "confusion_matrix.csv"), cm, fmt="%d", delimiter=",")

    result = {
        "experiment": exp.name, "title": run_title(exp, len(history)), "dataset": info["dataset"],
        "data_source": info["source"],
        "published": exp.published or None,
        "test_acc": _pct(ev["acc"]), "test_loss": ev["loss"],
        "best_val_acc": _pct(trainer.best_value) if trainer.monitor == "val_acc" else None,
        "best_epoch": trainer.best_epoch,
        "final_val_acc": _pct(history[-1]["val_acc"]) if history else None,
        "final_train_acc_running": _pct(history[-1]["train_acc"]) if history else None,
        "epochs": len(history), "device": device, "seed": seed, "limit": limit,
        "n_train": info["n_train"], "n_val": info["n_val"], "n_test": info["n_test"], "params": n_params,
        "train_time_s": round(train_time, 1),
    }
    if len(classes) > 10:
        result["test_top5_acc"] = _pct(metrics.topk_accuracy(logits, targets, k=5))
    if distributed:
        result["world_size"] = world
    if train_acc is not None:
        result["train_acc"] = train_acc

    # plots
    viz.plot_history(history, os.path.join(out_dir, "curves.png"), title=result["title"])
    viz.plot_confusion_matrix(cm, os.path.join(out_dir, "confusion_matrix.png"), class_names=classes
                              if len(classes) <= 20 else None)
    n_show = min(exp.n_predictions, len(targets))  # a random sample: correct.png already shows the first ones
    shown = np.sort(np.random.default_rng(seed).choice(len(targets), n_show, replace=False))
    raw_test, _ = test.get_batch(shown)
    wrong = int((preds[shown] != targets[shown]).sum())
    viz.plot_predictions(raw_test, preds[shown], targets[shown], os.path.join(out_dir, "predictions.png"),
                         class_names=classes, ncols=min(8, n_show),
                         suptitle=f"predictions on {n_show} random test images ({wrong} wrong)")
    raw_first, _ = test.get_batch(np.arange(min(len(test), 500)))
    m = len(raw_first)
    viz.plot_correct_and_misclassified(raw_first, preds[:m], targets[:m], os.path.join(out_dir, "correct.png"),
                                       os.path.join(out_dir, "misclassified.png"), n=5, class_names=classes)
    first_x, _ = next(iter(test_loader))
    fmaps = []
    if any(type(mod).__name__ == "Conv2d" for mod in model.modules()):
        fmaps = viz.plot_feature_maps(model, first_x.numpy()[0], os.path.join(out_dir, "feature_maps"))
    viz.plot_weight_histograms(model, os.path.join(out_dir, "weights.png"))
    result["wall_time_s"] = round(time.perf_counter() - t_start + max(earlier, 0.0), 1)
    if resume:
        result["resumed"] = True
    result["plots"] = sorted(f for f in os.listdir(out_dir) if f.endswith(".png"))
    result["environment"] = {"python": platform.python_version(), "numpy": np.__version__,
                             "machine": platform.machine(), "cpus": os.cpu_count()}
    _json(os.path.join(out_dir, "metrics.json"), result)
    _write(os.path.join(out_dir, "report.md"), render_report(exp, config, result, history, report, summary, fmaps))
    return result


# ----------------------------------------------------------------- report
def _fmt(v, suffix=""):
    return "-" if v is None else f"{v}{suffix}"


def render_report(exp, config, result, history, report, summary, fmaps, extra_md=""):
    pub = exp.published.get("text") if exp.published else "none published"
    lines = [f"# {exp.name}: {run_title(exp, result['epochs'])}", ""]
    registered = get(exp.name).epochs
    if result["epochs"] != registered:
        lines += [f"> Trained for {result['epochs']} epoch{'' if result['epochs'] == 1 else 's'}; the experiment is "
                  f"registered for {registered} epochs (changed by `--epochs` or `--smoke`).", ""]
    if result["data_source"] != "real":
        lines += ["> **Smoke run on synthetic data** (the real dataset was not found): the numbers below "
                  "say nothing about the model.", ""]
    if result.get("limit"):
        lines += [f"> Run on a subset: `--limit {result['limit']}`.", ""]
    lines += ["| | |", "|---|---|",
              f"| dataset | {result['dataset']} ({result['n_train']} train / {result['n_val']} val / "
              f"{result['n_test']} test) |",
              f"| published | {pub} |",
              f"| minidl test accuracy | {_fmt(result['test_acc'], '%')} |",
              f"| best validation accuracy | {_fmt(result['best_val_acc'], '%')} (epoch {result['best_epoch']}) |",
              f"| final validation accuracy | {_fmt(result['final_val_acc'], '%')} |"]
    if "train_acc" in result:
        lines.append(f"| training-set accuracy (eval mode) | {_fmt(result['train_acc'], '%')} |")
    if "test_top5_acc" in result:
        lines.append(f"| test top-5 accuracy | {_fmt(result['test_top5_acc'], '%')} |")
    lines += [f"| epochs | {result['epochs']} |", f"| parameters | {result['params']:,} |",
              f"| device | {result['device']} |", f"| training time | {result['train_time_s']} s |",
              f"| wall time (all) | {result['wall_time_s']} s |", f"| seed | {result['seed']} |", ""]
    if config.get("command"):
        lines += ["Command:", "", "```", config["command"], "```", ""]
    lines += ["## Configuration", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(config[k], default=str)}` |" for k in (
        "model", "model_kwargs", "epochs", "batch_size", "optimizer", "split", "normalize", "augment")]
    lines += ["", "(all of it in config.json)", ""]
    if exp.notes:
        lines += ["Choices and notes:", ""] + [f"- {n}" for n in exp.notes] + [""]
    if extra_md:
        lines += [extra_md, ""]
    lines += ["## Learning curves", "", "![curves](curves.png)", "",
              "Training loss and accuracy are running means over each epoch in training mode (dropout "
              "active, weights changing); validation ones are measured after the epoch in eval mode.", "",
              "| epoch | train loss | train acc | val loss | val acc | lr | time (s) |",
              "|---|---|---|---|---|---|---|"]
    for r in history:
        lines.append(f"| {r['epoch']} | {r['train_loss']:.4f} | {_fmt(_pct(r['train_acc']))} | "
                     f"{r['val_loss']:.4f} | {_fmt(_pct(r['val_acc']))} | {r['lr']:.3g} | {r['time_s']:.1f} |")
    lines += ["", "## Test set", "", "Classification report:", "", "```", report.rstrip(), "```", "",
              "![confusion matrix](confusion_matrix.png)", "", "Random test images with predictions:", "",
              "![predictions](predictions.png)", ""]
    for f, what in (("correct.png", "Correctly classified"), ("misclassified.png", "Misclassified")):
        if f in result.get("plots", []):
            lines += [f"{what}:", "", f"![{what.lower()}]({f})", ""]
        else:
            lines += [f"{what}: none among the first 500 test images.", ""]
    if fmaps:
        lines += ["## Feature maps", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in fmaps] + [""]
    lines += ["## Weights", "", "![weights](weights.png)", "", "## Training samples", "", "![samples](samples.png)", "",
              "## Model", "", "```", str(summary).rstrip(), "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------- entry point
def run(name, epochs=None, device="cpu", data_dir=None, out="runs", seed=0, limit=None, source="real",
        smoke=False, progress=True, command=None, num_workers=0, resume=False, download=False,
        distributed=False) -> dict:
    """Run experiment ``name`` (a sweep runs every variant) and return its metrics dict.

    ``resume=True`` continues from ``OUT/NAME/last.ckpt`` (written after every epoch): the run ends
    as an uninterrupted one with the same seed would (same config and data required).
    ``distributed=True``: this process is one rank of ``mpiexec -n N``; the default process group is initialised
    here (NCCL on 'cuda', else MPI) unless it already is, and the ranks train one model together (see
    ``run_single``); every rank reads the data and, to resume, OUT (a file system they share).
    Options out of range, and a resume with another configuration than the folder's (more epochs are allowed),
    raise RunError before anything is written; a fresh run first removes the earlier run's files from its folder."""
    check_options(epochs, limit, seed, num_workers, device)
    exp = get(name)
    if smoke:
        limit = exp.smoke.get("limit") or limit or SMOKE_LIMIT
        exp = exp.with_overrides({k: v for k, v in exp.smoke.items() if k != "limit"})
        epochs = 1 if epochs is None else epochs
    if epochs is not None:
        exp = exp.with_overrides({"epochs": int(epochs)})
    device = mdl.backend.check_device(device)
    out_dir = os.path.join(out, exp.name)
    if command is None:
        command = "python -m experiments " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py") else None
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "mpi")
    main = not distributed or dist.get_rank() == 0
    kw = dict(device=device, data_dir=data_dir, seed=seed, limit=limit, source=source, progress=progress,
              command=command, num_workers=num_workers, resume=resume, download=download, distributed=distributed)
    if not exp.sweep:
        return run_single(exp, out_dir, **kw)

    results, histories = {}, {}
    for label, vexp in exp.variants().items():
        if progress and main:
            print(f"== {exp.name}: {label}", flush=True)
        results[label] = run_single(vexp, os.path.join(out_dir, label), **dict(kw, resume="auto" if resume else False))
        if main:
            with open(os.path.join(out_dir, label, "history.json")) as f:
                histories[label] = json.load(f)
    if not main:
        return {"experiment": exp.name, "variants": results, "rank": dist.get_rank()}
    viz.plot_sweep(histories, os.path.join(out_dir, "sweep.png"), title=run_title(exp, exp.epochs))
    best = max(results, key=lambda k: (results[k]["best_val_acc"] or -1))
    for f in ("confusion_matrix.png", "curves.png", "classification_report.txt", "history.json", "history.csv",
              "model_summary.txt"):
        shutil.copy(os.path.join(out_dir, best, f), os.path.join(out_dir, f))
    summary = dict(results[best])
    summary.update({"experiment": exp.name, "title": run_title(exp, exp.epochs), "best_variant": best,
                    "variants": {k: {m: v[m] for m in ("test_acc", "best_val_acc", "best_epoch", "final_val_acc",
                                                        "train_time_s", "wall_time_s")} for k, v in results.items()},
                    # each variant's wall time counts its sessions before a resume; this process's would not
                    "wall_time_s": round(sum(v["wall_time_s"] for v in results.values()), 1),
                    "train_time_s": round(sum(v["train_time_s"] for v in results.values()), 1),
                    "plots": sorted(f for f in os.listdir(out_dir) if f.endswith(".png"))})
    _json(os.path.join(out_dir, "metrics.json"), summary)
    _json(os.path.join(out_dir, "config.json"), dict(exp.config(), seed=seed, device=device, limit=limit,
                                                     command=command))
    pub = exp.published.get("text") if exp.published else "none published"
    lines = [f"# {exp.name}: {run_title(exp, exp.epochs)}", "",
             f"Published: {pub}. Best variant by validation accuracy: "
             f"**{best}** (test {results[best]['test_acc']}%).", ""]
    if summary["data_source"] != "real":
        lines += ["> **Smoke run on synthetic data**: the numbers say nothing about the models.", ""]
    lines += ["| variant | best val acc | epoch | final val acc | test acc | train time (s) | report |",
              "|---|---|---|---|---|---|---|"]
    for k, v in results.items():
        lines.append(f"| {k} | {_fmt(v['best_val_acc'], '%')} | {v['best_epoch']} | {_fmt(v['final_val_acc'], '%')} | "
                     f"{_fmt(v['test_acc'], '%')} | {v['train_time_s']} | [{k}/report.md]({k}/report.md) |")
    with open(os.path.join(out_dir, "classification_report.txt")) as f:
        rep = f.read()
    lines += ["", "![sweep](sweep.png)", "", f"## Best run ({best})", "", "![curves](curves.png)", "",
              "![confusion matrix](confusion_matrix.png)", "", "```", rep.rstrip(), "```", ""]
    if exp.notes:
        lines += ["Choices and notes:", ""] + [f"- {n}" for n in exp.notes] + [""]
    _write(os.path.join(out_dir, "report.md"), "\n".join(lines))
    return summary


def rerender_report(run_dir) -> str:
    """Rewrite ``run_dir/report.md`` of a finished single run from its files (after a change of the
    report's layout; nothing is re-run)."""
    def read(f):
        with open(os.path.join(run_dir, f)) as fh:
            return fh.read()
    config, result = json.loads(read("config.json")), json.loads(read("metrics.json"))
    exp = get(config["name"]).with_overrides({k: config[k] for k in Experiment.__dataclass_fields__
                                              if k in config and k != "name"})
    history = json.loads(read("history.json"))
    summary = read("model_summary.txt").split("\n\n", 1)[-1]
    fmaps = sorted(f for f in result.get("plots", []) if f.startswith("feature_maps_"))
    text = render_report(exp, config, result, history, read("classification_report.txt"), summary, fmaps)
    _write(os.path.join(run_dir, "report.md"), text)
    return text
