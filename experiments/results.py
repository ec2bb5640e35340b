"""The README's Results table, generated from the runs' metrics.json files.

    python -m experiments results [--out runs] [--data-dir D] [--write results.md]

One row per registered experiment: its published figure, minidl's figure from OUT/NAME/metrics.json
(full-length runs on the real data only; a smoke or subset run does not count), epochs, device and
wall time.  Rows without a run say so; CIFAR-100 rows say they await the real data when it is absent.
"""
from __future__ import annotations

import json
import os

from experiments.registry import DATASETS, EXPERIMENTS, Experiment

# The settings that decide what a run trains and measures; a run made under other values of any of
# them is not a run of the experiment as registered now (the epochs are compared separately).
TRAINING_FIELDS = ("dataset", "model", "model_kwargs", "batch_size", "optimizer", "split", "normalize", "augment",
                   "eval_augment", "sweep")


def changed_settings(exp, run_config: dict) -> list:
    """The TRAINING_FIELDS in which ``run_config`` (a run's config.json) differs from ``exp``; a field
    the run's config lacks (written before the field existed) counts as its default."""
    now = exp.config()
    changed = []
    for k in TRAINING_FIELDS:
        f = Experiment.__dataclass_fields__[k]
        default = f.default_factory() if callable(f.default_factory) else f.default
        if run_config.get(k, default) != now[k]:
            changed.append(k)
    return changed


def _cifar100_present(data_dir=None) -> bool:
    from minidl.data import default_root
    root = data_dir or default_root()
    return (os.path.isdir(os.path.join(root, "cifar-100-python"))
            or os.path.isfile(os.path.join(root, "cifar-100-python.tar.gz")))


def _duration(s) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def minidl_figure(exp, m: dict) -> str:
    """minidl's result in the terms of the published figure (plus the test accuracy)."""
    metric = (exp.published or {}).get("metric", "test_acc")
    test = f"test {m['test_acc']:.2f}%"
    if metric == "best_val_acc" and m.get("best_val_acc") is not None:
        return (f"best val {m['best_val_acc']:.2f}% (epoch {m['best_epoch']}), final val "
                f"{m['final_val_acc']:.2f}%; {test}")
    if metric == "train_acc" and m.get("train_acc") is not None:
        return f"train {m['train_acc']:.2f}%, {test}"
    if m.get("best_variant"):
        return f"{test} (best: {m['best_variant']})"
    return test


def collect(out="runs") -> dict:
    """{name: metrics.json} of OUT's runs, each with its config.json under the key "config" ({} if none)."""
    runs = {}
    for name in EXPERIMENTS:
        path = os.path.join(out, name, "metrics.json")
        if os.path.isfile(path):
            with open(path) as f:
                runs[name] = json.load(f)
            cfg = os.path.join(out, name, "config.json")
            runs[name]["config"] = {}
            if os.path.isfile(cfg):
                with open(cfg) as f:
                    runs[name]["config"] = json.load(f)
    return runs


def results_table(out="runs", data_dir=None) -> str:
    runs = collect(out)
    c100 = _cifar100_present(data_dir)
    lines = ["| Experiment | Dataset | Published | minidl | Epochs | Device | Wall time |",
             "|---|---|---|---|---|---|---|"]
    for name, exp in EXPERIMENTS.items():
        pub = (exp.published or {}).get("text", "-")
        dataset = DATASETS[exp.dataset][2]
        m = runs.get(name)
        full = m is not None and m.get("data_source") == "real" and not m.get("limit")
        changed = changed_settings(exp, m["config"]) if full else []
        if full and not changed:
            fig = minidl_figure(exp, m)
            if m["epochs"] < exp.epochs:
                fig += f" ({m['epochs']} of {exp.epochs} epochs)"
            row = [name, dataset, pub, fig, str(m["epochs"]), m["device"], _duration(m.get("wall_time_s"))]
        else:
            if exp.dataset == "cifar100" and not c100:
                why = "awaiting the real CIFAR-100 data"
            elif changed:
                why = f"not run yet (the run in {out} used other settings: {', '.join(changed)})"
            elif m is not None:
                why = "not run yet (smoke run only)"
            else:
                why = "not run yet"
            row = [name, dataset, pub, why, str(exp.epochs), "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


KEEP = (".json", ".csv", ".md", ".txt", ".png")


def export_runs(out="runs", dest="results") -> list:
    """Copy the full-length real-data runs of ``out`` to ``dest`` without their checkpoints (the
    files a repository can keep: metrics, config, history, report, plots); returns the names."""
    import shutil
    done = []
    for name, m in collect(out).items():
        if m.get("data_source") != "real" or m.get("limit"):
            continue
        src, dst = os.path.join(out, name), os.path.join(dest, name)
        for root, _, files in os.walk(src):
            for f in files:
                if f.endswith(KEEP):
                    rel = os.path.relpath(os.path.join(root, f), src)
                    os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
                    shutil.copy2(os.path.join(root, f), os.path.join(dst, rel))
        done.append(name)
    return done
