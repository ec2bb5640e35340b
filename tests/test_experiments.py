"""Every registered experiment smoke-runs (one epoch on a small subset: real data where
MINIDL_DATA has it, else small synthetic data of the right shape) and writes every artefact;
the CLI lists, runs and tabulates."""
import json
import os

import pytest

from experiments import registry
from experiments.__main__ import main
from experiments.results import results_table
from experiments.runner import run
from tests.test_viz import assert_png

DATA = os.environ.get("MINIDL_DATA")
ARTEFACTS = ["config.json", "history.csv", "history.json", "metrics.json", "model_summary.txt", "report.md",
             "classification_report.txt", "curves.png", "confusion_matrix.png", "weights.png"]
RUN_ARTEFACTS = ARTEFACTS + ["predictions.png", "samples.png", "confusion_matrix.csv", "last.ckpt", "best.ckpt"]


def check_run_dir(d, exp):
    for f in RUN_ARTEFACTS:
        assert os.path.getsize(os.path.join(d, f)) > 0, f
    files = os.listdir(d)
    assert "correct.png" in files or "misclassified.png" in files
    for f in files:
        if f.endswith(".png"):
            assert_png(os.path.join(d, f))
    m = json.load(open(os.path.join(d, "metrics.json")))
    assert 0 <= m["test_acc"] <= 100 and m["epochs"] == 1 and m["n_train"] <= 128
    if exp.model not in ("mlp", "keras_mlp"):
        assert any(f.startswith("feature_maps_") for f in os.listdir(d))
    report = open(os.path.join(d, "report.md")).read()
    assert "![curves](curves.png)" in report and "precision" in report
    return m


@pytest.mark.parametrize("name", list(registry.EXPERIMENTS))
def test_experiment_smoke_run_writes_every_artefact(name, tmp_path):
    exp = registry.get(name)
    m = run(name, smoke=True, out=tmp_path, source="auto", data_dir=DATA, progress=False)
    d = tmp_path / name
    for f in ARTEFACTS if not exp.sweep else [f for f in ARTEFACTS if f != "weights.png"] + ["sweep.png"]:
        assert os.path.getsize(d / f) > 0, f
    assert m["experiment"] == name and m["epochs"] == 1
    if DATA and exp.dataset in ("mnist", "cifar10"):
        assert m["data_source"] == "real"
    if exp.sweep:
        assert_png(d / "sweep.png")
        assert set(m["variants"]) == {v["label"] for v in exp.sweep}
        for v in exp.sweep:
            check_run_dir(d / v["label"], exp)
    else:
        check_run_dir(d, exp)
    if exp.report_train_acc:
        assert "train_acc" in m


def test_registry_records_published_figures_and_configs():
    # the default (the README's first command) is the report's MNIST CNN with logits into the cross-entropy:
    # the faithful mnist-cnn feeds softmax outputs to it, and with seed 0 never learns the digit 5 in 5 epochs
    assert registry.DEFAULT == "mnist-cnn-logits" and registry.DEFAULT in registry.EXPERIMENTS
    default, faithful = registry.get("mnist-cnn-logits"), registry.get("mnist-cnn")
    assert default.model_kwargs == dict(faithful.model_kwargs, softmax_output=False)
    differ = ("name", "title", "model_kwargs", "notes", "deviations", "published", "report_says")
    assert ({k: v for k, v in default.config().items() if k not in differ} ==
            {k: v for k, v in faithful.config().items() if k not in differ})
    assert registry.get("mnist-cnn").published["value"] == 96.56
    assert registry.get("mnist-cnn-l2").optimizer["weight_decay"] == 1e-4
    assert registry.get("cifar10-cnn-dropout-lr0.002").n_predictions == 7
    # the architecture's parameter count given in the issue
    m = registry.MODELS["cifar10_cnn"]()
    assert sum(p.numel() for p in m.parameters()) == 890_410
    assert sum(p.numel() for p in registry.MODELS["mnist_cnn"]().parameters()) == 21_840
    with pytest.raises(KeyError, match="no experiment named 'nope'"):
        registry.get("nope")


def test_cli_list_run_and_results(tmp_path, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mnist-cnn-logits" in out and "(default)" in out and "96.56%" in out
    # no NAME: the default experiment (the MNIST CNN with logits), here as a synthetic smoke run
    assert main(["run", "--smoke", "--synthetic", "--quiet", "--out", str(tmp_path), "--seed", "3"]) == 0
    m = json.load(open(tmp_path / "mnist-cnn-logits" / "metrics.json"))
    assert m["data_source"] == "synthetic" and m["seed"] == 3
    cfg = json.load(open(tmp_path / "mnist-cnn-logits" / "config.json"))
    assert cfg["command"].startswith("python -m experiments run --smoke")
    from experiments.runner import rerender_report
    report = (tmp_path / "mnist-cnn-logits" / "report.md").read_text()
    assert rerender_report(tmp_path / "mnist-cnn-logits") == report  # rebuilt from the files alone
    table = results_table(tmp_path, data_dir=str(tmp_path))
    lines = table.splitlines()
    assert lines[0].startswith("| Experiment | Dataset | Published | minidl |")
    assert len(lines) == 2 + len(registry.EXPERIMENTS)
    row = {l.split(" | ")[0][2:]: l for l in lines[2:]}
    assert "not run yet (smoke run only)" in row["mnist-cnn-logits"]
    assert "not run yet" in row["mnist-mlp"]
    assert "awaiting the real CIFAR-100 data" in row["cifar100-cnn"]
    assert "CIFAR-10 (JPEG copy)" in row["cifar10-cnn"]


def fake_full_run(out, name="mnist-cnn", config=None):
    """OUT/NAME/ as a finished real-data run leaves it: metrics.json and config.json (``config``,
    default the registered experiment's)."""
    d = out / name
    d.mkdir(exist_ok=True)
    json.dump({"experiment": name, "data_source": "real", "limit": None, "test_acc": 98.5,
               "best_val_acc": 98.7, "best_epoch": 5, "final_val_acc": 98.7, "epochs": 5, "device": "cpu",
               "wall_time_s": 300.0}, open(d / "metrics.json", "w"))
    json.dump(registry.get(name).config() if config is None else config, open(d / "config.json", "w"))
    return d


def table_row(out, name="mnist-cnn"):
    return next(l for l in results_table(out).splitlines() if l.startswith(f"| {name} |"))


def test_results_table_reports_a_full_run(tmp_path):
    d = fake_full_run(tmp_path)
    table = results_table(tmp_path)
    assert table_row(tmp_path) == "| mnist-cnn | MNIST | test 96.56% | test 98.50% | 5 | cpu | 5.0 min |"
    (d / "last.ckpt").write_bytes(b"x")
    (d / "curves.png").write_bytes(b"x")
    from experiments.results import export_runs
    assert export_runs(tmp_path, tmp_path / "exported") == ["mnist-cnn"]
    assert sorted(os.listdir(tmp_path / "exported" / "mnist-cnn")) == ["config.json", "curves.png", "metrics.json"]
    assert results_table(tmp_path / "exported") == table


def test_results_table_does_not_show_a_run_made_under_other_settings(tmp_path):
    cfg = registry.get("mnist-cnn").config()
    del cfg["eval_augment"]  # a config.json written before the field existed: its default
    d = fake_full_run(tmp_path, config=dict(cfg, batch_size=7, optimizer={"name": "sgd", "lr": 0.1}))
    row = table_row(tmp_path)
    assert "98.50" not in row and "not run yet (the run in" in row
    assert "used other settings: batch_size, optimizer)" in row
    fake_full_run(tmp_path, config=cfg)
    assert "test 98.50%" in table_row(tmp_path)
    (d / "config.json").unlink()  # no config: nothing says what ran
    assert "not run yet" in table_row(tmp_path)


def test_cli_resume_matches_an_uninterrupted_run(tmp_path):
    import numpy as np
    from minidl import io
    base = ["run", "mnist-cnn", "--smoke", "--synthetic", "--quiet", "--seed", "1"]
    assert main(base + ["--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--epochs", "1", "--out", str(tmp_path / "b")]) == 0   # stopped after epoch 1
    assert main(base + ["--epochs", "2", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a = io.load_checkpoint(tmp_path / "a" / "mnist-cnn" / "last.ckpt")
    b = io.load_checkpoint(tmp_path / "b" / "mnist-cnn" / "last.ckpt")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k].numpy(), b["model"][k].numpy(), err_msg=k)
    ha = json.load(open(tmp_path / "a" / "mnist-cnn" / "history.json"))
    hb = json.load(open(tmp_path / "b" / "mnist-cnn" / "history.json"))
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]


def test_a_resumed_sweep_counts_the_wall_time_of_its_earlier_sessions(tmp_path):
    # a single run adds the time before a resume to its wall time; a sweep's is its variants' together, so a
    # sweep resumed for its last epochs is not reported as taking only the last session's minutes
    base = ["run", "cifar10-bnconv-sweep", "--smoke", "--synthetic", "--quiet", "--out", str(tmp_path)]
    assert main(base + ["--epochs", "2"]) == 0
    first = json.load(open(tmp_path / "cifar10-bnconv-sweep" / "metrics.json"))
    assert main(base + ["--epochs", "2", "--resume"]) == 0  # every variant done: evaluated again, not trained
    m = json.load(open(tmp_path / "cifar10-bnconv-sweep" / "metrics.json"))
    walls = [v["wall_time_s"] for v in m["variants"].values()]
    assert m["wall_time_s"] == pytest.approx(sum(walls), abs=0.1)
    assert all(v["wall_time_s"] >= v["train_time_s"] for v in m["variants"].values())
    assert m["wall_time_s"] > first["train_time_s"] and m["train_time_s"] == first["train_time_s"]


def test_cli_missing_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "mnist-cnn", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path), "--quiet",
              "--no-download"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "MNIST not found" in err and "--smoke --synthetic" in err


def test_cli_downloads_missing_data_by_default_and_says_where_to_put_it_when_that_fails(tmp_path, capsys,
                                                                                          monkeypatch):
    from minidl.data import MNIST
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/mnist/"])  # nothing listens there: refused at once
    with pytest.raises(SystemExit) as e:
        main(["run", "mnist-cnn", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "could not download train-images-idx3-ubyte.gz" in err and "127.0.0.1:9/mnist/" in err
    assert "put the official files" in err
    assert not any(p.name.endswith(".gz") for p in (tmp_path / "none").rglob("*"))  # nothing half-written


def test_run_files_hold_valid_json_whatever_the_numbers(tmp_path):
    from experiments.runner import _json
    _json(tmp_path / "metrics.json", {"test_loss": float("nan"), "best": float("inf"), "list": [1.0, float("-inf")]})

    def refuse(name):
        raise ValueError(f"bare {name}")
    assert json.load(open(tmp_path / "metrics.json"), parse_constant=refuse) == {
        "test_loss": None, "best": None, "list": [1.0, None]}


def _snapshot(d):
    return {f: (d / f).read_bytes() for f in sorted(os.listdir(d))}


def test_cli_resume_refuses_a_changed_configuration_and_says_when_it_extends_the_epochs(tmp_path, capsys):
    common = ["run", "mnist-mlp", "--synthetic", "--quiet", "--out", str(tmp_path)]
    assert main(common + ["--limit", "64", "--epochs", "1", "--seed", "1"]) == 0
    d = tmp_path / "mnist-mlp"
    before = _snapshot(d)
    capsys.readouterr()
    for changed, said in ((["--limit", "64", "--seed", "2"], "seed 1 -> 2"),
                          (["--limit", "96", "--seed", "1"], "limit 64 -> 96")):
        with pytest.raises(SystemExit) as e:
            main(common + changed + ["--epochs", "1", "--resume"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert said in err and "--resume" in err and len(err.strip().splitlines()) == 1, err
        assert _snapshot(d) == before, "a refused resume changed the run's folder"
    same = common + ["--limit", "64", "--seed", "1", "--resume"]
    assert main(same + ["--epochs", "2"]) == 0
    assert "extending the run from 1 to 2 epochs" in capsys.readouterr().out
    assert json.load(open(d / "metrics.json"))["epochs"] == 2 and json.load(open(d / "config.json"))["epochs"] == 2
    with pytest.raises(SystemExit) as e:                     # fewer epochs than the checkpoint holds
        main(same + ["--epochs", "1"])
    assert e.value.code == 2 and "already at epoch 2" in capsys.readouterr().err


def test_cli_resume_ignores_the_experiments_description_but_not_its_training_settings(tmp_path, capsys):
    """A run resumes after the registry's words about it changed (notes, title, the report's figures: a newer
    minidl may reword them); a changed optimizer is still refused."""
    common = ["run", "mnist-mlp", "--synthetic", "--quiet", "--limit", "64", "--out", str(tmp_path)]
    assert main(common + ["--epochs", "1"]) == 0
    path = tmp_path / "mnist-mlp" / "config.json"
    config = json.load(open(path))
    for key in ("title", "notes", "report", "report_says", "deviations"):
        config[key] = "older wording"
    config["published"] = {"metric": "test_acc", "value": 1.0, "text": "older figure"}
    json.dump(config, open(path, "w"))
    capsys.readouterr()
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    config = json.load(open(path))
    config["optimizer"]["lr"] = 0.5
    json.dump(config, open(path, "w"))
    with pytest.raises(SystemExit) as e:
        main(common + ["--epochs", "3", "--resume"])
    assert e.value.code == 2 and "optimizer" in capsys.readouterr().err


@pytest.mark.parametrize("bad,flag", [(["--epochs", "0"], "--epochs"), (["--epochs", "-3"], "--epochs"),
                                      (["--limit", "-5"], "--limit"), (["--limit", "0"], "--limit"),
                                      (["--device", "gpu"], "--device"), (["--workers", "-2"], "--workers"),
                                      (["--seed", "-1"], "--seed")])
def test_cli_refuses_bad_values_before_writing_anything(tmp_path, capsys, bad, flag):
    common = ["run", "mnist-mlp", "--synthetic", "--quiet", "--limit", "64", "--out", str(tmp_path)]
    assert main(common + ["--epochs", "1"]) == 0
    d = tmp_path / "mnist-mlp"
    before = _snapshot(d)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(common + ["--epochs", "1"] + bad)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "Traceback" not in err, err
    assert _snapshot(d) == before, "a refused command changed the earlier run's folder"


@pytest.mark.skipif(__import__("minidl").backend.is_cuda_available(), reason="needs a machine without a usable GPU")
def test_cli_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "mnist-mlp", "--synthetic", "--quiet", "--out", str(tmp_path), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--device cuda" in err and "CuPy" in err
    assert not os.listdir(tmp_path)


def test_a_fresh_run_leaves_nothing_of_the_earlier_one(tmp_path):
    """Files that only some runs write (misclassified.png, feature maps, ...) do not survive into the next run."""
    common = ["run", "mnist-mlp", "--synthetic", "--quiet", "--limit", "64", "--out", str(tmp_path)]
    assert main(common + ["--epochs", "1"]) == 0
    d = tmp_path / "mnist-mlp"
    (d / "feature_maps_conv1.png").write_bytes((d / "curves.png").read_bytes())  # as an earlier CNN run left
    (d / "notes.txt").write_text("the user's own file")
    assert main(common + ["--epochs", "1", "--seed", "3"]) == 0
    assert not (d / "feature_maps_conv1.png").exists() and (d / "notes.txt").exists()
    m = json.load(open(d / "metrics.json"))
    assert "feature_maps_conv1.png" not in m["plots"] and "feature_maps_conv1.png" not in open(d / "report.md").read()


def test_cli_offline_without_data_names_every_missing_file_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        main(["run", "mnist-cnn", "--data-dir", str(tmp_path / "none"), "--out", str(out), "--quiet",
              "--no-download"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert f in err, f
    assert "MINIDL_DATA" in err and "--data-dir" in err and "without --no-download" in err
    assert "download=True" not in err
    assert not out.exists() or not os.listdir(out), "a failed run left a folder behind"


def test_a_run_with_other_epochs_says_the_epochs_it_ran(tmp_path, monkeypatch):
    from experiments import runner
    titles = []
    plot_history = runner.viz.plot_history
    monkeypatch.setattr(runner.viz, "plot_history", lambda h, p, title=None: titles.append(title) or
                        plot_history(h, p, title=title))
    assert "5 epochs" in registry.get("mnist-cnn").title
    run("mnist-cnn", epochs=1, limit=64, source="synthetic", out=tmp_path, progress=False)
    report = open(tmp_path / "mnist-cnn" / "report.md").read()
    heading = report.splitlines()[0]
    assert "1 epoch" in heading and "5 epochs" not in heading and "5 epochs" not in titles[0]
    assert "1 epoch" in titles[0] and "registered for 5 epochs" in report


def test_predictions_grid_has_a_title_and_is_not_the_correct_grid_again(tmp_path, monkeypatch):
    import numpy as np
    from experiments import runner
    calls = {}
    plot = runner.viz.plot_predictions

    def record(images, preds, labels, path, *args, suptitle=None, **kw):
        calls[os.path.basename(path)] = (np.asarray(images), suptitle)
        return plot(images, preds, labels, path, *args, suptitle=suptitle, **kw)
    monkeypatch.setattr(runner.viz, "plot_predictions", record)
    run("mnist-cnn", epochs=1, limit=256, source="synthetic", out=tmp_path, progress=False)
    shown, title = calls["predictions.png"]
    assert title and f"{len(shown)} random test images" in title and "wrong" in title
    correct, _ = calls["correct.png"]
    assert not np.array_equal(shown[:len(correct)], correct), "predictions.png repeats correct.png"
