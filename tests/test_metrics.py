"""Metrics against hand-computed values, and classification_report character for character
against scikit-learn's documented output (sklearn is not a dependency; the strings are literal)."""
import numpy as np
import pytest

import minidl as mdl
from minidl import metrics


Y_TRUE = [0, 1, 2, 2, 2]
Y_PRED = [0, 0, 2, 2, 1]

# the example of sklearn.metrics.classification_report's docstring, verbatim
SKLEARN_DOC_REPORT = """\
              precision    recall  f1-score   support

     class 0       0.50      1.00      0.67         1
     class 1       0.00      0.00      0.00         1
     class 2       1.00      0.67      0.80         3

    accuracy                           0.60         5
   macro avg       0.50      0.56      0.49         5
weighted avg       0.70      0.60      0.61         5
"""


def test_classification_report_matches_sklearn_docstring():
    rep = metrics.classification_report(Y_TRUE, Y_PRED, target_names=["class 0", "class 1", "class 2"])
    assert rep == SKLEARN_DOC_REPORT


def test_classification_report_digits_and_default_names():
    # hand computed: class 0 p=1/2 r=1 f=2/3; class 1 all 0; class 2 p=1 r=2/3 f=4/5
    rep = metrics.classification_report(Y_TRUE, Y_PRED, digits=4)
    expected = (
        "              precision    recall  f1-score   support\n\n"
        "           0     0.5000    1.0000    0.6667         1\n"
        "           1     0.0000    0.0000    0.0000         1\n"
        "           2     1.0000    0.6667    0.8000         3\n\n"
        "    accuracy                         0.6000         5\n"
        "   macro avg     0.5000    0.5556    0.4889         5\n"
        "weighted avg     0.7000    0.6000    0.6133         5\n")
    assert rep == expected


def test_classification_report_dict_and_long_names():
    d = metrics.classification_report(Y_TRUE, Y_PRED, output_dict=True)
    assert d["accuracy"] == pytest.approx(0.6)
    assert d["2"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1-score": pytest.approx(0.8), "support": 3}
    assert d["macro avg"]["f1-score"] == pytest.approx((2 / 3 + 0 + 0.8) / 3)
    assert d["weighted avg"]["precision"] == pytest.approx((0.5 * 1 + 0 * 1 + 1.0 * 3) / 5)
    rep = metrics.classification_report([0, 1], [0, 1], target_names=["a very long class name", "b"])
    lines = rep.splitlines()
    assert lines[0] == " " * 23 + " precision    recall  f1-score   support"
    assert lines[2] == "a very long class name       1.00      1.00      1.00         1"
    with pytest.raises(ValueError, match="target_names has 2 names but there are 3 labels"):
        metrics.classification_report(Y_TRUE, Y_PRED, target_names=["a", "b"])


def test_confusion_matrix_rows_true_cols_pred():
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 0, 0], [0, 1, 2]])
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, num_classes=4)
    assert cm.shape == (4, 4) and cm.sum() == 5 and cm[3].sum() == 0
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, labels=[2, 0])  # order given, label 1 left out
    np.testing.assert_array_equal(cm, [[2, 0], [0, 1]])


def test_precision_recall_f1_averages():
    p, r, f, s = metrics.precision_recall_fscore_support(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(p, [0.5, 0.0, 1.0])
    np.testing.assert_allclose(r, [1.0, 0.0, 2 / 3])
    np.testing.assert_allclose(f, [2 / 3, 0.0, 0.8])
    np.testing.assert_array_equal(s, [1, 1, 3])
    assert metrics.precision_recall_fscore_support(Y_TRUE, Y_PRED, average="micro")[:3] == pytest.approx((0.6,) * 3)
    with pytest.raises(ValueError, match="average must be"):
        metrics.precision_recall_fscore_support(Y_TRUE, Y_PRED, average="samples")


def test_accuracy_and_topk_from_scores():
    logits = mdl.tensor(np.array([[0.1, 0.7, 0.2],    # top1 1, top2 {1, 2}
                                  [0.5, 0.2, 0.3],    # top1 0, top2 {0, 2}
                                  [0.3, 0.3, 0.4],    # top1 2, top2 {2, 0}
                                  [0.9, 0.05, 0.05]], dtype=np.float32))
    y = mdl.tensor(np.array([1, 2, 1, 0]))
    assert metrics.accuracy(logits, y) == pytest.approx(0.5)
    assert metrics.topk_accuracy(logits, y, k=1) == pytest.approx(0.5)
    assert metrics.topk_accuracy(logits, y, k=2) == pytest.approx(0.75)
    assert metrics.topk_accuracy(logits, y, k=3) == pytest.approx(1.0)
    assert metrics.accuracy([1, 2, 3], np.array([1, 2, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must be in 1..3"):
        metrics.topk_accuracy(logits, y, k=4)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.accuracy([1, 2], [1])
    with pytest.raises(TypeError, match="integer class indices"):
        metrics.accuracy(np.array([0.5, 1.0]), [0, 1])
