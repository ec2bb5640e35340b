"""Every plot writes a non-empty, valid PNG."""
import numpy as np
import pytest

import minidl as mdl
from minidl import viz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 50 and im.size[1] > 50
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 50  # not a blank canvas


HISTORY = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 1 - 0.5 / e, "val_acc": 1 - 0.6 / e}
           for e in range(1, 6)]


def test_history_plot_accepts_rows_and_columns(tmp_path):
    assert_png(viz.plot_history(HISTORY, tmp_path / "curves.png", title="run"))
    cols = {"train_loss": [1.0, 0.5], "val_loss": [1.1, None], "train_acc": [0.5, 0.7]}
    assert_png(viz.plot_history(cols, tmp_path / "sub" / "curves2.png"))
    with pytest.raises(ValueError, match="empty"):
        viz.plot_history([], tmp_path / "x.png")


def test_confusion_matrix_plot(tmp_path):
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    assert_png(viz.plot_confusion_matrix(cm, tmp_path / "cm.png", class_names=["cat", "dog", "frog"]))
    assert_png(viz.plot_confusion_matrix(cm, tmp_path / "cmn.png", normalize=True))
    with pytest.raises(ValueError, match="2 class names for a 3x3"):
        viz.plot_confusion_matrix(cm, tmp_path / "bad.png", class_names=["a", "b"])


def test_image_grids(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.random((10, 1, 28, 28)).astype(np.float32)
    rgb = rng.normal(size=(7, 3, 32, 32)).astype(np.float32)  # normalised: min-max per image
    preds, labels = np.array([1, 2, 3, 4, 5, 6, 7]), np.array([1, 0, 3, 0, 5, 0, 7])
    assert_png(viz.plot_predictions(mdl.tensor(rgb), preds, labels, tmp_path / "pred.png",
                                    class_names=[str(i) for i in range(10)]))
    ok, bad = viz.plot_correct_and_misclassified(gray[:7], preds, labels, tmp_path / "ok.png", tmp_path / "bad.png", n=5)
    assert_png(ok)
    assert_png(bad)
    none_wrong = viz.plot_correct_and_misclassified(gray[:3], [0, 1, 2], [0, 1, 2], tmp_path / "a.png", tmp_path / "b.png")
    assert none_wrong[1] is None and not (tmp_path / "b.png").exists()
    assert_png(viz.plot_dataset_samples((gray * 255).astype(np.uint8), np.arange(10), tmp_path / "samples.png"))
    with pytest.raises(ValueError, match="differ in number"):
        viz.plot_predictions(rgb, preds[:3], labels, tmp_path / "x.png")


def test_sweep_plot(tmp_path):
    runs = {"sgd-tanh": HISTORY, "adam-leaky": [dict(r, val_acc=r["val_acc"] * 0.9) for r in HISTORY]}
    assert_png(viz.plot_sweep(runs, tmp_path / "sweep.png"))


def _small_cnn():
    nn = pytest.importorskip("minidl.nn")
    if not hasattr(nn, "Conv2d"):
        pytest.skip("minidl.nn.Conv2d is not there yet (nn/conv branches not merged)")
    mdl.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 3 * 3, 10))


def test_feature_maps_and_weight_histograms(tmp_path):
    model = _small_cnn()
    model.train()
    img = np.random.default_rng(1).random((1, 12, 12)).astype(np.float32)
    maps = viz.conv_feature_maps(model, img)
    assert [m.shape for _, m in maps] == [(4, 10, 10), (6, 3, 3)]
    assert model.training  # mode restored
    paths = viz.plot_feature_maps(model, img, tmp_path / "fmaps")
    assert len(paths) == 2
    for p in paths:
        assert_png(p)
    out = model(mdl.tensor(img[None]))  # the wrapped forwards are gone: the model still works
    assert out.shape == (1, 10)
    assert_png(viz.plot_weight_histograms(model, tmp_path / "weights.png"))


@pytest.fixture
def figures(monkeypatch):
    """The Figures that viz saves, kept for their texts."""
    kept = []
    save = viz._save

    def keep(fig, path, tight=True):
        kept.append(fig)
        return save(fig, path, tight)
    monkeypatch.setattr(viz, "_save", keep)
    return kept


def _texts(fig):
    sup = fig._suptitle.get_text() if fig._suptitle is not None else ""
    return sup, [ax.get_title() for ax in fig.axes]


def test_grid_titles_say_how_many_of_how_many(tmp_path, figures):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    preds = labels.copy()
    preds[:164] = (labels[:164] + 1) % 10            # 164 mistakes, 236 right
    images = rng.random((400, 1, 8, 8)).astype(np.float32)
    viz.plot_correct_and_misclassified(images, preds, labels, tmp_path / "ok.png", tmp_path / "bad.png", n=5)
    assert [_texts(f)[0] for f in figures] == ["correctly classified (5 of 236)", "misclassified (5 of 164)"]


def test_weight_histograms_name_the_layer(tmp_path, figures):
    viz.plot_weight_histograms(_small_cnn(), tmp_path / "weights.png")
    titles = [t.split("\n")[0] for t in _texts(figures[0])[1] if t]
    assert titles[:2] == ["Conv2d 0.weight (4, 1, 3, 3)", "Conv2d 0.bias (4,)"]
    assert "Linear 6.weight (10, 54)" in titles
