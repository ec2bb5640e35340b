"""Classification metrics: accuracy, top-k accuracy, confusion matrix, precision/recall/F1,
and ``classification_report`` printed exactly as scikit-learn prints it.

Metrics are host-side bookkeeping on label vectors: inputs may be Tensors, NumPy or CuPy arrays or
lists; they are brought to NumPy first.  Conventions follow scikit-learn: the confusion matrix has
true labels on rows and predictions on columns; a ratio whose denominator is 0 counts as
``zero_division`` (0.0 by default, without a warning).
"""
from __future__ import annotations

import numpy as np

from minidl import backend


def _np(x) -> np.ndarray:
    """A NumPy array of a Tensor, a NumPy/CuPy array or a list."""
    x = getattr(x, "data", x)
    if backend.is_array(x):
        return backend.to_numpy(x)
    return np.asarray(x)


def _labels_1d(x, what: str) -> np.ndarray:
    a = _np(x)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D vector of class indices, got shape {a.shape}")
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and a.size and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{what} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _pred_and_true(output, target):
    """Predicted class per sample (argmax over dim 1 if ``output`` holds scores) and the targets."""
    out = _np(output)
    if out.ndim == 2:
        out = out.argmax(axis=1)
    pred = _labels_1d(out, "predictions")
    true = _labels_1d(target, "targets")
    if pred.shape != true.shape:
        raise ValueError(f"predictions and targets differ in length: {pred.shape[0]} vs {true.shape[0]}")
    return pred, true


def accuracy(output, target) -> float:
    """Fraction of samples whose prediction equals the target.

    ``output`` is either a vector of predicted classes (N,) or scores/logits (N, C), argmax'd.
    """
    pred, true = _pred_and_true(output, target)
    if true.size == 0:
        raise ValueError("accuracy of an empty set of samples is undefined")
    return float((pred == true).mean())


def topk_accuracy(output, target, k: int = 5) -> float:
    """Fraction of samples whose target is among the ``k`` highest scores of ``output`` (N, C).

    Ties are broken as ``argsort`` breaks them (stable, lower class index first among equals).
    """
    scores = _np(output)
    true = _labels_1d(target, "targets")
    if scores.ndim != 2:
        raise ValueError(f"top-k accuracy needs scores of shape (N, C), got {scores.shape}")
    if scores.shape[0] != true.shape[0]:
        raise ValueError(f"scores and targets differ in length: {scores.shape[0]} vs {true.shape[0]}")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1]} (the number of classes), got {k}")
    if true.size == 0:
        raise ValueError("accuracy of an empty set of samples is undefined")
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((topk == true[:, None]).any(axis=1).mean())


def _resolve_labels(true, pred, labels, num_classes=None):
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    if num_classes is not None:
        return np.arange(num_classes)
    return np.union1d(true, pred)


def confusion_matrix(y_true, y_pred, labels=None, num_classes: int | None = None) -> np.ndarray:
    """C[i, j] = number of samples of true class ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` defaults to ``range(num_classes)`` when given, else to the sorted union of the labels
    seen (as scikit-learn).  Samples whose label is not in ``labels`` are left out.
    """
    pred, true = _pred_and_true(y_pred, y_true)
    labels = _resolve_labels(true, pred, labels, num_classes)
    n = len(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]

    def position(v):  # index of each value in ``labels``, -1 where absent
        if n == 0:
            return np.full(v.shape, -1, dtype=np.int64)
        i = np.minimum(np.searchsorted(sorted_labels, v), n - 1)
        return np.where(sorted_labels[i] == v, order[i], -1)

    ti, pi = position(true), position(pred)
    keep = (ti >= 0) & (pi >= 0)
    return np.bincount(ti[keep] * n + pi[keep], minlength=n * n).reshape(n, n).astype(np.int64)


def _divide(num, den, zero_division):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_fscore_support(y_true, y_pred, labels=None, average=None, num_classes=None,
                                    zero_division: float = 0.0):
    """Per-class precision, recall, F1 and support (``average=None``), or their
    ``'macro'`` (unweighted mean over classes), ``'weighted'`` (mean weighted by support) or
    ``'micro'`` (from the summed counts; equals accuracy when every label is counted) average.

    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN).
    Averages return support None, as scikit-learn.
    """
    cm = confusion_matrix(y_true, y_pred, labels=labels, num_classes=num_classes)
    tp = np.diag(cm).astype(np.float64)
    pred_pos = cm.sum(axis=0).astype(np.float64)   # TP + FP
    support = cm.sum(axis=1)                         # TP + FN
    if average == "micro":
        tp, pred_pos, true_pos = tp.sum(), pred_pos.sum(), support.sum()
        p = _divide(tp, pred_pos, zero_division)
        r = _divide(tp, true_pos, zero_division)
        f = _divide(2 * tp, pred_pos + true_pos, zero_division)
        return float(p), float(r), float(f), None
    p = _divide(tp, pred_pos, zero_division)
    r = _divide(tp, support, zero_division)
    f = _divide(2 * tp, pred_pos + support, zero_division)
    if average is None:
        return p, r, f, support
    if average == "macro":
        return float(p.mean()), float(r.mean()), float(f.mean()), None
    if average == "weighted":
        total = support.sum()
        if total == 0:
            return float(zero_division), float(zero_division), float(zero_division), None
        w = support / total
        return float(p @ w), float(r @ w), float(f @ w), None
    raise ValueError(f"average must be None, 'micro', 'macro' or 'weighted', got {average!r}")


def classification_report(y_true, y_pred, labels=None, target_names=None, digits: int = 2,
                          output_dict: bool = False, zero_division: float = 0.0, num_classes=None):
    """Per-class precision, recall, F1 and support, then accuracy, macro and weighted averages,
    laid out character for character as ``sklearn.metrics.classification_report``.

    ``y_pred`` may be class indices (N,) or scores (N, C).  ``labels`` defaults to the sorted union of
    the labels seen; ``target_names`` names them in that order.  With ``output_dict=True`` returns
    the same numbers as a dict (keys as scikit-learn's).
    """
    pred, true = _pred_and_true(y_pred, y_true)
    labels_given = labels is not None or num_classes is not None
    labels = _resolve_labels(true, pred, labels, num_classes)
    if target_names is None:
        target_names = [str(int(c)) for c in labels]
    else:
        target_names = [str(t) for t in target_names]
        if len(target_names) != len(labels):
            raise ValueError(f"target_names has {len(target_names)} names but there are {len(labels)} "
                             f"labels ({list(map(int, labels))}); pass labels= to choose them")
    p, r, f, s = precision_recall_fscore_support(true, pred, labels=labels, zero_division=zero_division)
    # the micro average is the accuracy when every label seen is a reported label
    micro_is_accuracy = not labels_given or set(labels.tolist()) >= set(np.union1d(true, pred).tolist())
    averages = []
    for avg in ("micro", "macro", "weighted"):
        heading = "accuracy" if (avg == "micro" and micro_is_accuracy) else avg + " avg"
        ap, ar, af, _ = precision_recall_fscore_support(true, pred, labels=labels, average=avg,
                                                        zero_division=zero_division)
        averages.append((heading, ap, ar, af, int(s.sum())))

    if output_dict:
        out = {name: {"precision": float(a), "recall": float(b), "f1-score": float(c), "support": int(d)}
               for name, a, b, c, d in zip(target_names, p, r, f, s)}
        for heading, ap, ar, af, sup in averages:
            if heading == "accuracy":
                out["accuracy"] = af
            else:
                out[heading] = {"precision": ap, "recall": ar, "f1-score": af, "support": sup}
        return out

    headers = ["precision", "recall", "f1-score", "support"]
    width = max(max((len(n) for n in target_names), default=0), len("weighted avg"), digits)
    head_fmt = "{:>{width}s} " + " {:>9}" * len(headers)
    report = head_fmt.format("", *headers, width=width) + "\n\n"
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    for name, a, b, c, d in zip(target_names, p, r, f, s):
        report += row_fmt.format(name, a, b, c, int(d), width=width, digits=digits)
    report += "\n"
    for heading, ap, ar, af, sup in averages:
        if heading == "accuracy":
            fmt = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
            report += fmt.format(heading, "", "", af, sup, width=width, digits=digits)
        else:
            report += row_fmt.format(heading, ap, ar, af, sup, width=width, digits=digits)
    return report
