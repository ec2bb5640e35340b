"""The training loop: learning, history files, best/early stopping, schedulers, NaN stop, and
bit-for-bit resume (model, optimizer, dropout RNG and loader shuffling all restored)."""
import copy
import csv
import json

import numpy as np
import pytest

import minidl as mdl
from minidl import nn, optim
from minidl.train import Trainer, evaluate, fit


class ShuffleLoader:
    """A minimal loader: shuffles with its own generator and exposes state_dict like DataLoader."""

    def __init__(self, x, y, batch_size, shuffle=True, seed=0):
        self.x, self.y, self.bs, self.shuffle = x, y, batch_size, shuffle
        self.generator = np.random.default_rng(seed)

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __iter__(self):
        idx = self.generator.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        for i in range(0, len(idx), self.bs):
            j = idx[i:i + self.bs]
            yield mdl.tensor(self.x[j]), mdl.tensor(self.y[j])

    def state_dict(self):
        return {"generator": copy.deepcopy(self.generator.bit_generator.state)}

    def load_state_dict(self, state):
        self.generator.bit_generator.state = state["generator"]


def blobs(n=240, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.2, (classes, d))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return x, y.astype(np.int64)


def make(seed=0, lr=0.05, p=0.3, loader_seed=1):
    mdl.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = blobs()
    train = ShuffleLoader(x[:200], y[:200], 16, seed=loader_seed)
    val = ShuffleLoader(x[200:], y[200:], 64, shuffle=False)
    return model, opt, train, val


def weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_fit_learns_and_writes_history(tmp_path):
    model, opt, train, val = make()
    tr = fit(model, opt, train, 4, val_loader=val, out_dir=tmp_path, progress=False, checkpoint=False)
    h = tr.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["val_acc"] > 0.8
    assert tr.best_epoch in (1, 2, 3, 4) and tr.best_value == max(r["val_acc"] for r in h)
    ev = evaluate(model, val, return_outputs=True)
    assert ev["n"] == 40 and ev["logits"].shape == (40, 3) and ev["acc"] == pytest.approx(h[-1]["val_acc"])
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == 4 and float(rows[-1]["val_acc"]) == pytest.approx(h[-1]["val_acc"])
    assert list(rows[0])[:5] == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert json.load(open(tmp_path / "history.json"))[-1]["val_loss"] == pytest.approx(h[-1]["val_loss"])


def test_evaluate_matches_a_direct_computation():
    model, _, _, val = make()
    ev = evaluate(model, val)
    model.eval()
    logits = model(mdl.tensor(val.x))
    assert ev["loss"] == pytest.approx(float(mdl.cross_entropy(logits, mdl.tensor(val.y)).item()), rel=1e-5)
    assert ev["acc"] == pytest.approx(float((logits.numpy().argmax(1) == val.y).mean()))


def _resume_roundtrip(restore_rng=True):
    model, opt, train, val = make()
    full = Trainer(model, opt, train, val, progress=False)
    full.fit(2)
    state = copy.deepcopy(full.state_dict())
    full.fit(5)
    # a fresh process: other init, other RNG state, loader at its start
    model2, opt2, train2, val2 = make(seed=123, loader_seed=99)
    if not restore_rng:
        state = dict(state, rng=copy.deepcopy(mdl.backend.get_rng_state()), extra=dict(state["extra"], train_loader=None))
    resumed = Trainer(model2, opt2, train2, val2, progress=False)
    resumed.load_state_dict(state)
    resumed.fit(5)
    return full, resumed


def test_resume_is_bit_identical():
    full, resumed = _resume_roundtrip()
    a, b = weights(full.model), weights(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]


def test_resume_without_rng_state_differs():
    """The RNG/loader state in the checkpoint is what makes resume exact: without it, it is not."""
    full, resumed = _resume_roundtrip(restore_rng=False)
    a, b = weights(full.model), weights(resumed.model)
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_resume_from_checkpoint_file(tmp_path):
    pytest.importorskip("minidl.io", reason="minidl.io (optim branch) not merged yet")
    model, opt, train, val = make()
    full = Trainer(model, opt, train, val, progress=False)
    full.fit(5)
    model1, opt1, train1, val1 = make()
    Trainer(model1, opt1, train1, val1, progress=False, out_dir=tmp_path).fit(2)  # "stopped after epoch 2"
    assert (tmp_path / "last.ckpt").exists() and (tmp_path / "best.ckpt").exists()
    model2, opt2, train2, val2 = make(seed=7, loader_seed=8)
    resumed = Trainer(model2, opt2, train2, val2, progress=False, out_dir=tmp_path)
    resumed.fit(5, resume=tmp_path / "last.ckpt")
    a, b = weights(full.model), weights(resumed.model)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_early_stopping_and_monitor():
    model, _, train, val = make()
    opt = optim.SGD(model.parameters(), lr=0.0)  # nothing changes: val_acc never improves after epoch 1
    tr = Trainer(model, opt, train, val, early_stopping=2, progress=False)
    tr.fit(10)
    assert tr.stopped_early and len(tr.history) == 3 and tr.best_epoch == 1
    tr2 = Trainer(model, opt, train, None, progress=False)
    assert tr2.monitor == "train_acc"  # no validation loader: monitors training
    with pytest.raises(ValueError, match="monitor must be"):
        Trainer(model, opt, train, val, monitor="acc")


def test_schedulers_are_stepped():
    model, opt, train, val = make()
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    tr = fit(model, opt, train, 3, val_loader=val, scheduler=sched, progress=False)
    assert [r["lr"] for r in tr.history] == pytest.approx([0.05, 0.025, 0.0125])
    model, _, train, val = make()
    opt = optim.SGD(model.parameters(), lr=0.1)
    plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0)
    tr = fit(model, opt, train, 3, val_loader=val, scheduler=plateau, monitor="val_loss", progress=False)
    # lr halves after every epoch whose val_loss did not improve on the best so far
    lrs = [r["lr"] for r in tr.history] + [opt.param_groups[0]["lr"]]
    losses = [r["val_loss"] for r in tr.history]
    for i in range(3):
        improved = losses[i] < min(losses[:i], default=np.inf)
        assert lrs[i + 1] == pytest.approx(lrs[i] * (1.0 if improved else 0.5))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_naming_epoch_and_step():
    x, y = blobs()
    x[2 * 16 + 5] = np.inf  # a sample of the third batch
    mdl.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    opt = optim.SGD(model.parameters(), lr=0.01)
    loader = ShuffleLoader(x, y, 16, shuffle=False)
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 3\b"):
        fit(model, opt, loader, 2, progress=False)


def test_progress_bar_runs(capsys):
    model, opt, train, val = make()
    fit(model, opt, train, 1, val_loader=val, progress=True)
    out = capsys.readouterr()
    assert "epoch 1" in out.out and "val loss" in out.out
    assert "loss=" in out.err and "acc=" in out.err  # the tqdm bar's live postfix


def test_resume_with_dataloader_and_augmentation():
    """With minidl's DataLoader (its own shuffling generator, per-batch augmentation seeds) and dropout."""
    from minidl.data import ArrayDataset, DataLoader, transforms as T

    def build(seed, loader_seed):
        mdl.manual_seed(seed)
        rng = np.random.default_rng(0)
        ds = ArrayDataset(rng.integers(0, 256, (96, 1, 6, 6), dtype=np.uint8), rng.integers(0, 3, 96),
                          transform=T.Compose([T.RandomHorizontalFlip(), T.Normalize(0.5, 0.25)]))
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 3))
        opt = optim.Adam(model.parameters(), lr=1e-2)
        return Trainer(model, opt, DataLoader(ds, batch_size=16, shuffle=True, seed=loader_seed), progress=False)

    full = build(0, 5)
    full.fit(2)
    state = copy.deepcopy(full.state_dict())
    full.fit(4)
    resumed = build(1, 6)
    resumed.load_state_dict(state)
    resumed.fit(4)
    a, b = weights(full.model), weights(resumed.model)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"{path} holds a bare {name}: not JSON")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_an_update_that_overflows_stops_before_any_checkpoint_is_written(tmp_path):
    """Epoch 2's one step has a finite loss but an lr that sends the weights to inf: the run stops naming
    the epoch and the parameters, and the folder still holds epoch 1's checkpoints and history."""
    from minidl.io import load_checkpoint
    from minidl.optim import lr_scheduler as S
    mdl.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    opt = optim.SGD(model.parameters(), lr=0.05)
    sched = S.MultiStepLR(opt, milestones=[1], gamma=1e40)    # lr 5e38 in epoch 2: beyond float32
    x, y = blobs()
    train = ShuffleLoader(x[:200], y[:200], 200)               # one step per epoch
    val = ShuffleLoader(x[200:], y[200:], 64, shuffle=False)
    with pytest.raises(FloatingPointError, match=r"epoch 2.*0\.weight") as e:
        fit(model, opt, train, 3, val_loader=val, scheduler=sched, out_dir=tmp_path, progress=False)
    assert "not written" in str(e.value)
    history = _strict_json(tmp_path / "history.json")
    assert [r["epoch"] for r in history] == [1]
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = load_checkpoint(tmp_path / name, restore_rng=False)
        assert ckpt["epoch"] == 1
        assert all(np.isfinite(t.numpy()).all() for t in ckpt["model"].values())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_validation_loss_stops_the_run(tmp_path):
    model, opt, train, val = make()
    val.x = val.x.copy()
    val.x[3] = np.nan
    with pytest.raises(FloatingPointError, match=r"validation loss.*nan.*epoch 1"):
        fit(model, opt, train, 2, val_loader=val, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "last.ckpt").exists() and not (tmp_path / "best.ckpt").exists()


def test_history_json_is_always_valid_json(tmp_path):
    from minidl.train import save_history
    rows = [{"epoch": 1, "train_loss": 0.5, "train_acc": None, "val_loss": float("nan"), "val_acc": float("inf"),
             "lr": 0.1, "time_s": 1.0}]
    save_history(rows, tmp_path)
    back = _strict_json(tmp_path / "history.json")
    assert back[0]["val_loss"] is None and back[0]["val_acc"] is None and back[0]["train_loss"] == 0.5


@pytest.mark.parametrize("change", ["history a number", "best_epoch a string", "loader state garbage", "epoch < 0"])
def test_resuming_a_crafted_checkpoint_changes_nothing(tmp_path, change):
    from minidl.data import ArrayDataset, DataLoader
    from minidl.io import CheckpointError, load_checkpoint, save_checkpoint

    def trainer(seed):
        mdl.manual_seed(seed)
        rng = np.random.default_rng(0)
        ds = ArrayDataset(rng.integers(0, 256, (32, 1, 4, 4), dtype=np.uint8), rng.integers(0, 3, 32))
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        return Trainer(model, optim.SGD(model.parameters(), lr=0.1), DataLoader(ds, batch_size=8, shuffle=True,
                                                                                seed=seed), progress=False)
    done = trainer(0)
    done.fit(1)
    path = done.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = load_checkpoint(path, restore_rng=False)
    extra = ckpt["extra"]
    if change == "history a number":
        extra["history"] = 5
    elif change == "best_epoch a string":
        extra["best_epoch"] = "one"
    elif change == "loader state garbage":
        extra["train_loader"] = {"generator": {"bit_generator": "PCG64", "state": 3}}
    save_checkpoint(tmp_path / "crafted.ckpt", done.model, done.optimizer, epoch=-1 if change == "epoch < 0" else 1,
                    extra=extra)
    fresh = trainer(1)
    before = {k: v.numpy().copy() for k, v in fresh.model.state_dict().items()}
    loader_state = copy.deepcopy(fresh.train_loader.generator.bit_generator.state)
    with pytest.raises(CheckpointError, match="crafted.ckpt"):
        fresh.resume(tmp_path / "crafted.ckpt")
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in fresh.model.state_dict().items())
    assert fresh.train_loader.generator.bit_generator.state == loader_state and fresh.epoch == 0
