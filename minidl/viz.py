"""Plots of a training run, written as PNG files with matplotlib's non-interactive Agg canvas.

Every function takes plain data (NumPy/CuPy arrays, Tensors, lists, history dicts) or a model,
writes one PNG (or one per conv layer for feature maps) and returns the path(s) written.  Figures
are built with ``matplotlib.figure.Figure`` directly, so importing this module never changes the
global pyplot backend and nothing is ever shown on screen.

Images are NCHW (or NHW / CHW / HW); each image is rescaled to [0, 1] for display (min-max per image
when its values leave [0, 1], as after ``Normalize``) unless ``mean``/``std`` are given to undo the
normalisation.
"""
from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from minidl import backend
from minidl.autograd import Tensor, no_grad


def _np(x) -> np.ndarray:
    if not backend.is_array(x):  # a Tensor (an array's own .data is its buffer, not the array)
        x = getattr(x, "data", x)
    return backend.to_numpy(x) if backend.is_array(x) else np.asarray(x)


def _save(fig: Figure, path, tight: bool = True) -> str:
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path, format="png", dpi=fig.dpi, bbox_inches="tight" if tight else None)
    return path


def _grid(n: int, ncols: int | None = None):
    ncols = ncols or min(n, 8) or 1
    return max(1, math.ceil(n / ncols)), ncols


def _to_display(img, mean=None, std=None) -> np.ndarray:
    """One image as HW (gray) or HWC (RGB) floats in [0, 1]."""
    a = _np(img).astype(np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):  # CHW -> HWC
        if std is not None:
            a = a * np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)
        if mean is not None:
            a = a + np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
        a = a.transpose(1, 2, 0)
    elif a.ndim == 3 and a.shape[0] in (1, 3):  # ambiguous (e.g. 3x3x3): treat as CHW
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (C, H, W), (H, W, C) or (H, W), got {a.shape}")
    if _np(img).dtype == np.uint8:
        return a / 255.0
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > 1:
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a


def _history_columns(history) -> dict:
    """History as {key: list}: accepts {key: list} or a list of per-epoch dicts."""
    if isinstance(history, dict):
        if "epochs" in history and isinstance(history["epochs"], list):
            history = history["epochs"]
        else:
            return {k: list(v) for k, v in history.items()}
    cols: dict = {}
    for row in history:
        for k, v in row.items():
            cols.setdefault(k, []).append(v)
    return cols


# ----------------------------------------------------------------- learning curves
def plot_history(history, path, title: str | None = None) -> str:
    """Training vs validation loss (left) and accuracy (right) per epoch.

    ``history`` is a list of per-epoch dicts or a dict of lists with keys among ``train_loss``,
    ``val_loss``, ``train_acc``, ``val_acc`` (and optionally ``epoch``).
    """
    h = _history_columns(history)
    n = max((len(v) for v in h.values()), default=0)
    if n == 0:
        raise ValueError("history is empty: nothing to plot")
    epochs = h.get("epoch", list(range(1, n + 1)))
    fig = Figure(figsize=(11, 4), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{metric}"
            vals = h.get(key)
            if vals is None or all(v is None for v in vals):
                continue
            xs = [e for e, v in zip(epochs, vals) if v is not None]
            ys = [v for v in vals if v is not None]
            ax.plot(xs, ys, style, label={"train": "training", "val": "validation"}[split], markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"training vs validation {label}")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.subplots_adjust(top=0.82 if title else 0.9, wspace=0.25)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ----------------------------------------------------------------- confusion matrix
def plot_confusion_matrix(cm, path, class_names=None, normalize: bool = False, title: str | None = None) -> str:
    """Heat map of a confusion matrix (true class on rows, predicted on columns), counts written
    in the cells (row-normalised fractions with ``normalize=True``)."""
    cm = _np(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    shown = cm.astype(np.float64)
    if normalize:
        rows = shown.sum(axis=1, keepdims=True)
        shown = np.divide(shown, rows, out=np.zeros_like(shown), where=rows != 0)
    size = min(12.0, max(5.0, 0.45 * n + 2))
    fig = Figure(figsize=(size + 1, size), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    step = max(1, n // 25)  # at most ~25 labelled ticks per axis (CIFAR-100: every 4th class)
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([names[i] for i in ticks], rotation=45, ha="right", fontsize=8 if n > 12 else 10)
    ax.set_yticklabels([names[i] for i in ticks], fontsize=8 if n > 12 else 10)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    if n <= 30:
        thresh = shown.max() / 2 if shown.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if n > 12 else 9,
                        color="white" if shown[i, j] > thresh else "black")
    return _save(fig, path)


# ----------------------------------------------------------------- image grids
def _mosaic(tiles, ncols, gap_top, gap=2, fill=1.0):
    """Tile equally-sized HW or HWC images into one array with ``gap_top`` blank rows above each
    tile (room for its title); returns the mosaic and each tile's (x centre, y top)."""
    h, w = tiles[0].shape[:2]
    rgb = any(t.ndim == 3 for t in tiles)
    rows, cols = _grid(len(tiles), ncols)
    ch, cw = h + gap_top + gap, w + gap
    canvas = np.full((rows * ch, cols * cw) + ((3,) if rgb else ()), fill, dtype=np.float64)
    anchors = []
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * ch + gap_top, c * cw
        if rgb and t.ndim == 2:
            t = np.repeat(t[..., None], 3, axis=2)
        canvas[y:y + h, x:x + w] = t
        anchors.append((x + w / 2 - 0.5, y - 0.5))
    return canvas, anchors, (rows, cols)


def plot_image_grid(images, path, titles=None, title_colors=None, ncols: int | None = None, suptitle=None,
                    mean=None, std=None, cmap="gray", cell_inches: float = 1.5) -> str:
    """A grid of images, each with an optional title (and title colour), drawn as one mosaic."""
    imgs = _np(images)
    n = len(imgs)
    if n == 0:
        raise ValueError("no images to plot")
    tiles = [_to_display(im, mean, std) for im in imgs]
    if len({t.shape[:2] for t in tiles}) != 1:
        raise ValueError("all images of a grid must have the same height and width")
    h, w = tiles[0].shape[:2]
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    gap_top = int(round(h * 0.22 * lines)) if lines else 2
    canvas, anchors, (rows, cols) = _mosaic(tiles, ncols, gap_top)
    width = cols * cell_inches
    height = width * canvas.shape[0] / canvas.shape[1] + (0.35 if suptitle else 0)
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1 - (0.35 / height if suptitle else 0)))
    ax.imshow(canvas, cmap=cmap if canvas.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
              aspect="auto")
    ax.axis("off")
    if titles is not None:
        for i, (x, y) in enumerate(anchors):
            ax.text(x, y, str(titles[i]), ha="center", va="bottom", fontsize=8,
                    color=title_colors[i] if title_colors is not None else "black")
    if suptitle:
        fig.suptitle(suptitle, y=1 - 0.05 / height, va="top")
    return _save(fig, path, tight=False)


def _name(c, class_names):
    c = int(c)
    return str(class_names[c]) if class_names is not None else str(c)


def plot_predictions(images, preds, labels, path, class_names=None, ncols=None, suptitle=None,
                     mean=None, std=None) -> str:
    """Test images titled 'pred: X / true: Y', green where right and red where wrong."""
    preds, labels = _np(preds).astype(int), _np(labels).astype(int)
    if not len(_np(images)) == len(preds) == len(labels):
        raise ValueError(f"images, predictions and labels differ in number: "
                         f"{len(_np(images))}, {len(preds)}, {len(labels)}")
    titles = [f"pred: {_name(p, class_names)}\ntrue: {_name(t, class_names)}" for p, t in zip(preds, labels)]
    colors = ["green" if p == t else "red" for p, t in zip(preds, labels)]
    return plot_image_grid(images, path, titles, colors, ncols=ncols, suptitle=suptitle, mean=mean, std=std)


def plot_correct_and_misclassified(images, preds, labels, path_correct, path_wrong, n: int = 5,
                                   class_names=None, mean=None, std=None):
    """Two grids: the first ``n`` correctly classified images and the first ``n`` misclassified
    ones, titled with how many of how many (``misclassified (5 of 164)``).  Returns the paths written
    (None for a grid with no image, e.g. no mistakes)."""
    imgs, preds, labels = _np(images), _np(preds).astype(int), _np(labels).astype(int)
    out = []
    for path, mask, what in ((path_correct, preds == labels, "correctly classified"),
                             (path_wrong, preds != labels, "misclassified")):
        idx = np.flatnonzero(mask)[:n]
        if len(idx) == 0:
            out.append(None)
            continue
        out.append(plot_predictions(imgs[idx], preds[idx], labels[idx], path, class_names,
                                    ncols=len(idx), suptitle=f"{what} ({len(idx)} of {int(mask.sum())})",
                                    mean=mean, std=std))
    return tuple(out)


def plot_dataset_samples(images, labels, path, class_names=None, ncols=None, mean=None, std=None) -> str:
    """A grid of dataset samples titled with their class."""
    labels = _np(labels).astype(int)
    return plot_image_grid(images, path, [_name(c, class_names) for c in labels], ncols=ncols,
                           suptitle="dataset samples", mean=mean, std=std)


# ----------------------------------------------------------------- model internals
def _named_modules(model):
    if hasattr(model, "named_modules"):
        return list(model.named_modules())
    raise TypeError(f"expected a minidl.nn.Module, got {type(model).__name__}")


def conv_feature_maps(model, image) -> list:
    """[(layer name, feature maps (C, H, W) as NumPy)] of every Conv2d layer of ``model`` for one
    image (C, H, W), captured by forward hooks during one eval-mode forward pass (the model's
    train/eval mode is restored)."""
    x = _np(image)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image of shape (C, H, W) or (1, C, H, W), got {x.shape}")
    convs = [(n, m) for n, m in _named_modules(model) if type(m).__name__ == "Conv2d"]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer")
    captured: dict = {}

    def hook(module, inputs, out, _names={id(m): n for n, m in convs}):
        captured[_names[id(module)]] = _np(out)[0]

    handles = [m.register_forward_hook(hook) for _, m in convs]
    was_training = getattr(model, "training", False)
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    device = params[0].device if params else "cpu"
    try:
        if hasattr(model, "eval"):
            model.eval()
        with no_grad():
            model(Tensor(backend.to_device(x.astype(np.float32, copy=False), device)))
    finally:
        for h in handles:
            h.remove()
        if was_training and hasattr(model, "train"):
            model.train()
    return [(name, captured[name]) for name, _ in convs if name in captured]


def plot_feature_maps(model, image, path_prefix, max_maps: int = 32, ncols: int = 8) -> list:
    """One PNG per conv layer in forward order, ``{path_prefix}_conv1.png``, ``_conv2.png``, ...:
    the input image and up to ``max_maps`` channels of that layer's output for ``image`` (each
    channel min-max scaled).  Returns the paths written."""
    paths = []
    img = _to_display(_np(image).reshape(_np(image).shape[-3:]))
    for i, (name, maps) in enumerate(conv_feature_maps(model, image), 1):
        k = min(max_maps, maps.shape[0])
        tiles = []
        for c in range(k):
            m = maps[c].astype(np.float64)
            lo, hi = m.min(), m.max()
            tiles.append((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))
        canvas, _, (rows, cols) = _mosaic(tiles, min(ncols, k), gap_top=1, gap=1, fill=np.nan)
        grid_w = 1.2 * cols
        grid_h = grid_w * canvas.shape[0] / canvas.shape[1]
        fig = Figure(figsize=(grid_w + 2.0, max(grid_h, 1.8) + 0.4), dpi=100)
        W, H = fig.get_size_inches()
        ax_in = fig.add_axes((0.1 / W, (H - 0.4 - 1.6) / H, 1.6 / W, 1.6 / H))
        ax_in.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax_in.set_title("input", fontsize=8)
        ax_in.axis("off")
        ax = fig.add_axes((1.9 / W, (H - 0.4 - grid_h) / H, grid_w / W, grid_h / H))
        ax.imshow(canvas, cmap="viridis", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.axis("off")
        fig.suptitle(f"feature maps of conv{i} (layer {name!r}): first {k} of {maps.shape[0]} channels, "
                     f"{maps.shape[1]}x{maps.shape[2]}", fontsize=10)
        paths.append(_save(fig, f"{os.fspath(path_prefix)}_conv{i}.png", tight=False))
    return paths


def plot_weight_histograms(model, path, bins: int = 50) -> str:
    """Histograms of every parameter (weights and biases of every layer), one panel each, titled with the
    layer's type and the parameter's name (``Conv2d 0.weight``)."""
    named = list(model.named_parameters())
    layer = {path: type(m).__name__ for path, m in _named_modules(model)}
    if not named:
        raise ValueError(f"{type(model).__name__} has no parameters")
    rows, cols = _grid(len(named), 4)
    fig = Figure(figsize=(3.2 * cols, 1.9 * rows + 0.5), dpi=80)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    fig.subplots_adjust(left=0.03, right=0.98, bottom=0.3 / (1.9 * rows + 0.5), top=1 - 0.7 / (1.9 * rows + 0.5),
                        wspace=0.12, hspace=0.75)
    for ax in axes[len(named):]:
        ax.axis("off")
    for ax, (name, p) in zip(axes, named):
        v = _np(p).ravel().astype(np.float64)
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
        if hi - lo < 1e-8 * max(1.0, abs(lo)):  # constant (e.g. fresh BatchNorm weights): a unit-wide range
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
        ax.stairs(counts, edges, fill=True, color="tab:orange" if name.endswith("bias") else "tab:blue")
        owner = layer.get(name.rpartition(".")[0], type(model).__name__)
        ax.set_title(f"{owner} {name} {tuple(_np(p).shape)}\nmean {v.mean():.3g}, std {v.std():.3g}", fontsize=8)
        ax.set_yticks([])  # counts: the shape is what matters
        ax.set_xticks([lo, 0.0, hi] if lo < 0 < hi else [lo, hi])
        ax.xaxis.set_major_formatter("{x:.2g}")
        ax.tick_params(labelsize=7)
    fig.suptitle("parameter histograms (weights blue, biases orange)")
    return _save(fig, path, tight=False)


# ----------------------------------------------------------------- sweeps
def plot_sweep(histories: dict, path, title: str | None = None) -> str:
    """Compare the runs of a sweep: validation accuracy (left) and validation loss (right) per
    epoch, one line per run.  ``histories`` maps run name -> history (as ``plot_history``); runs
    without validation data fall back to training curves."""
    if not histories:
        raise ValueError("no runs to compare")
    fig = Figure(figsize=(11, 4), dpi=100)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for run, hist in histories.items():
        h = _history_columns(hist)
        for ax, metric in ((ax_acc, "acc"), (ax_loss, "loss")):
            vals = h.get(f"val_{metric}") or h.get(f"train_{metric}")
            if not vals:
                continue
            epochs = h.get("epoch", list(range(1, len(vals) + 1)))
            ax.plot(epochs, vals, "-o", markersize=3, label=run)
    for ax, label in ((ax_acc, "validation accuracy"), (ax_loss, "validation loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title or "sweep comparison")
    return _save(fig, path)
