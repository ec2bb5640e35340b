"""Every registered experiment is built as its report built it: the parameter counts and layer tables
the reports print, the layer order and rates their text gives, one training step of each on tiny
synthetic data, and results/FIDELITY.md generated from the registry."""
import os

import numpy as np
import pytest

from experiments import registry
from experiments.fidelity import fidelity_table, model_params
from experiments.runner import load_data, make_optimizer
from minidl import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# cifar100_cnn reaches 600M parameters at the report's widths: its layer order and training step are
# checked at the experiment's smoke widths (the order does not depend on them)
TOO_BIG = ("cifar100_cnn",)


def build(exp):
    if exp.model in TOO_BIG:
        exp = exp.with_overrides({"model_kwargs": exp.smoke["model_kwargs"]})
    return registry.MODELS[exp.model](**exp.model_kwargs)


def layer_types(model):
    return [type(m).__name__ for m in model.modules() if not isinstance(m, nn.Sequential)]


@pytest.mark.parametrize("name", [n for n, e in registry.EXPERIMENTS.items() if e.report_params])
def test_parameter_count_is_the_reports(name):
    exp = registry.get(name)
    n, stats = model_params(exp)
    want = exp.report_params
    if want.get("layers_unknown"):  # only totals printed: the deviation gives minidl's counts beside them
        text = " ".join(exp.deviations)
        assert f"{want['total']:,}" in text and f"{want['trainable']:,}" in text
        assert f"{n:,} parameters" in text and f"{stats:,} batch-norm statistics" in text
        assert f"{n + stats:,} in Keras' count" in text
    else:
        assert n == want["trainable"]
        assert n + stats == want["total"]  # Keras counts batch-norm statistics as non-trainable parameters


@pytest.mark.parametrize("name", [n for n, e in registry.EXPERIMENTS.items() if e.layer_table])
def test_layer_table_is_the_reports(name):
    exp = registry.get(name)
    rows = build(exp).summary(registry.DATASETS[exp.dataset][0], print_fn=None).rows
    kinds = {t for t, _, _ in exp.layer_table}
    got = [[r[0].rsplit("-", 1)[0], r[1][1:], r[2]] for r in rows if r[0].rsplit("-", 1)[0] in kinds]
    assert got == exp.layer_table


def _seq(text):
    return text.split()


CONV4 = "Conv2d ReLU Conv2d ReLU MaxPool2d Conv2d ReLU Conv2d ReLU MaxPool2d Flatten"
C100_BN = "Conv2d ReLU BatchNorm2d " * 4 + "MaxPool2d Flatten Linear ReLU Linear ReLU"
KERAS_CNN = "Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Flatten Linear ReLU Linear"
BN_CONV = ("Conv2d BatchNorm2d {a} Conv2d BatchNorm2d {a} MaxPool2d Dropout Conv2d BatchNorm2d {a} Conv2d BatchNorm2d "
           "{a} MaxPool2d Dropout Flatten Linear BatchNorm1d {a} Dropout Linear")
# the layers in the order each report describes them (activation modules included)
ORDER = {
    "mnist-cnn": "Conv2d MaxPool2d ReLU Conv2d Dropout2d MaxPool2d ReLU Flatten Linear ReLU Linear Softmax",
    "cifar10-cnn": CONV4 + " Linear ReLU Linear",
    # report 000's dropout runs: a Dropout after each max-pool; §1.3.7 adds one after FC512's ReLU
    "cifar10-cnn-dropout0.5": CONV4.replace("MaxPool2d", "MaxPool2d Dropout") + " Linear ReLU Linear",
    "cifar10-cnn-dropout-lr0.002": CONV4.replace("MaxPool2d", "MaxPool2d Dropout") + " Linear ReLU Dropout Linear",
    "cifar100-mlp": "Flatten Linear ReLU Linear ReLU Linear",
    "cifar100-cnn": "Conv2d ReLU " * 4 + "MaxPool2d Flatten Linear ReLU Linear ReLU Linear",
    "cifar100-cnn-bn": C100_BN + " Linear",
    "cifar100-cnn-bn-dropout": C100_BN + " Dropout Linear",
    "cifar100-cnn-dropout": "Conv2d ReLU " * 4 + "MaxPool2d Flatten Linear ReLU Linear ReLU Dropout Linear",
    "cifar100-best": C100_BN + " Dropout Linear",
    "cifar10-lenet": "Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Flatten Linear ReLU Linear ReLU Linear",
    "cifar10-keras-mlp": "Flatten Linear Tanh Linear Tanh Linear",
    "cifar10-keras-cnn": KERAS_CNN,
    "cifar10-keras-cnn-dropout": KERAS_CNN.replace("MaxPool2d", "MaxPool2d Dropout"),
    "cifar10-keras-cnn-bn": KERAS_CNN.replace("ReLU MaxPool2d", "ReLU BatchNorm2d MaxPool2d"),
    "cifar10-own": "Conv2d BatchNorm2d ReLU MaxPool2d Dropout " * 3 + "Flatten Linear ReLU Dropout Linear",
}


@pytest.mark.parametrize("name", sorted(ORDER))
def test_layers_come_in_the_reports_order(name):
    assert layer_types(build(registry.get(name))) == _seq(ORDER[name])


def test_the_sweep_variants_are_the_reports_network_with_each_activation():
    exp = registry.get("cifar10-bnconv-sweep")
    acts = {"leaky_relu": "LeakyReLU", "tanh": "Tanh"}
    for v in exp.sweep:
        a = acts[v["model_kwargs"]["activation"]]
        assert layer_types(build(exp.with_overrides(v))) == _seq(BN_CONV.format(a=a))
    assert {(v["optimizer"]["name"], v["model_kwargs"]["activation"]) for v in exp.sweep} == {
        (o, a) for o in ("sgd", "adam") for a in acts}


def test_rates_and_batch_norm_settings_are_the_reports():
    def rates(name):
        return [m.p for m in build(registry.get(name)).modules() if isinstance(m, nn.Dropout)]

    def bn(name):
        return {(m.momentum, m.eps) for m in build(registry.get(name)).modules()
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))}
    assert rates("cifar10-cnn-dropout0.8") == [0.8, 0.8]
    assert rates("cifar10-cnn-dropout-lr0.002") == [0.5, 0.5, 0.5]
    assert rates("cifar10-keras-cnn-dropout") == [0.2, 0.2, 0.2]
    assert rates("cifar10-own") == [0.05, 0.10, 0.15, 0.5]
    assert rates("cifar100-best") == [0.8]
    assert bn("cifar10-own") == {(0.25, 1e-3)}       # Keras momentum 0.75
    assert bn("cifar10-keras-cnn-bn") == {(0.01, 1e-3)}  # Keras' default 0.99
    assert bn("cifar100-cnn-bn") == {(0.1, 1e-5)}    # PyTorch's default
    # 4b widens only the last hidden layer (built here at small widths: 4096 x 8192 is 34M parameters)
    assert registry.get("cifar100-cnn-bn-fc8192").model_kwargs["fc"] == [4096, 8192]
    fc = [m for m in registry.MODELS["cifar100_cnn"](widths=[4, 4, 4, 8], fc=[16, 32]).modules()
          if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fc] == [(8 * 12 * 12, 16), (16, 32), (32, 100)]


def test_settings_the_issue_lists():
    g = registry.get
    assert g("cifar10-cnn").optimizer == {"name": "sgd", "lr": 0.001, "momentum": 0.9}
    assert g("cifar10-cnn-dropout-lr0.002").optimizer["lr"] == 0.002
    assert g("cifar10-keras-cnn-bn").epochs == 15
    for n in ("cifar100-cnn-bn-fc8192", "cifar100-best", "cifar100-resnet18"):
        assert g(n).batch_size == 128, n
    for n, e in registry.EXPERIMENTS.items():
        if e.dataset == "cifar100":
            assert e.split == {"kind": "test_as_val"}, n  # all 50,000 training images
        if n.startswith("cifar100-cnn-") and n not in ("cifar100-cnn-256", "cifar100-cnn-512"):
            assert e.model_kwargs["widths"] == [128, 128, 128, 256], n  # 3a's widths
    assert g("cifar10-lenet").optimizer["name"] == g("cifar10-lenet-l2").optimizer["name"] == "sgd"
    sweep = g("cifar10-bnconv-sweep")
    assert sweep.eval_augment == ["crop4"] and sweep.split["test"] == "all"
    assert not any(isinstance(m, nn.Dropout) for m in build(g("mnist-cnn")).modules())


def test_softmax_output_gives_probabilities_to_the_loss():
    import minidl as mdl
    model = build(registry.get("mnist-cnn")).eval()
    p = model(mdl.Tensor(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    loss = mdl.ops.cross_entropy(mdl.Tensor(p), mdl.Tensor(np.array([0, 1, 2])))
    assert float(loss.numpy()) >= np.log(9 + np.e) - 1 - 1e-6  # -log(e/(e+9)): its floor


def test_eval_augment_crops_validation_and_test_images_and_test_all_keeps_the_whole_test_set():
    exp = registry.get("cifar10-bnconv-sweep")
    train, val, test, _, _, info = load_data(exp, limit=None, source="synthetic", seed=0)
    assert info["test_includes_val"] and len(test) == len(test.dataset) and len(val) < len(test)
    for ds in (val, test):
        assert [type(t).__name__ for t in ds.transform.transforms] == ["RandomCrop", "Normalize"]
    x, _ = test.get_batch(np.arange(4))
    a = test.transform(x, rng=np.random.default_rng(1))
    b = test.transform(x, rng=np.random.default_rng(2))
    assert not np.array_equal(a, b)  # the crop is random at evaluation too


def _variants():
    for name, exp in registry.EXPERIMENTS.items():
        if exp.sweep:
            for v in exp.sweep:
                yield f"{name}/{v['label']}", exp.with_overrides(v)
        else:
            yield name, exp


@pytest.mark.parametrize("name,exp", list(_variants()), ids=[n for n, _ in _variants()])
def test_every_experiment_takes_a_training_step(name, exp):
    from minidl.data import DataLoader, Subset
    from minidl.train import Trainer
    train, *_ = load_data(exp, limit=8, source="synthetic", seed=0)
    model = build(exp)
    opt = make_optimizer(model.parameters(), exp.optimizer)
    loader = DataLoader(Subset(train, np.arange(4)), batch_size=4, shuffle=True, seed=0)
    before = [p.numpy().copy() for p in model.parameters()]
    loss, acc = Trainer(model, opt, loader, progress=False, checkpoint=False).train_epoch(1)
    assert np.isfinite(loss) and 0 <= acc <= 1
    assert any(not np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters()))


def test_every_experiment_says_where_its_report_states_it():
    for name, exp in registry.EXPERIMENTS.items():
        if name == "fashion-mnist-cnn":
            assert not exp.report and not exp.published  # an extra: no report
            continue
        assert exp.report[:3] in ("000", "001", "002", "003", "004") and exp.report_says, name


def test_fidelity_md_is_the_generated_one():
    with open(os.path.join(ROOT, "results", "FIDELITY.md")) as f:
        assert f.read() == fidelity_table(), "regenerate: python -m experiments fidelity --write results/FIDELITY.md"
