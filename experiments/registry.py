"""The registry of named experiments: each homework configuration, its hyper-parameters and the
figure its report published.

An ``Experiment`` is plain data (JSON-able config) plus a model builder name; ``runner.run`` turns
it into a training run.  Hyper-parameters a report leaves out are chosen here and marked in
``notes`` so that config.json says which numbers are the report's and which are ours.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

# ----------------------------------------------------------------- models


def mnist_cnn(fc_dropout=0.5, softmax_output=False, num_classes=10, in_channels=1):
    """Conv(1,10,5)-MaxPool-ReLU-Conv(10,20,5)-Dropout2d-MaxPool-ReLU-FC(320,50)-ReLU-Dropout-FC(50,10)
    (the PyTorch MNIST example's network; 21,840 parameters).  ``fc_dropout=None`` leaves out the
    dropout after FC(320,50); ``softmax_output`` ends the network in a softmax, so that the loss
    (cross-entropy of logits) gets probabilities, as report 002's code did."""
    from minidl import nn
    layers = [nn.Conv2d(in_channels, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
              nn.Conv2d(10, 20, 5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU(),
              nn.Flatten(), nn.Linear(320, 50), nn.ReLU()]
    if fc_dropout:
        layers.append(nn.Dropout(fc_dropout))
    layers.append(nn.Linear(50, num_classes))
    if softmax_output:
        layers.append(nn.Softmax(dim=1))
    return nn.Sequential(*layers)


_ACTS = {"relu": "ReLU", "tanh": "Tanh", "leaky_relu": "LeakyReLU", "sigmoid": "Sigmoid"}


def _act(name):
    from minidl import nn
    return getattr(nn, _ACTS[name])()


def mlp(in_features, hidden, num_classes, activation="relu", dropout=None):
    """Flatten, then Linear-activation per hidden width, then Linear to the classes."""
    from minidl import nn
    layers, prev = [nn.Flatten()], in_features
    for h in hidden:
        layers += [nn.Linear(prev, h), _act(activation)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        prev = h
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def cifar10_cnn(pool_dropout=None, fc1_dropout=None, num_classes=10):
    """Conv32-Conv32-Pool-Conv64-Conv64-Pool-FC512-FC10, 3x3 'valid' convolutions, ReLU (890,410
    parameters, report 000's table); ``pool_dropout``: a Dropout after each max-pool; ``fc1_dropout``: one
    after FC512's activation."""
    from minidl import nn
    def pool():
        return [nn.MaxPool2d(2)] + ([nn.Dropout(pool_dropout)] if pool_dropout else [])
    layers = [nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), *pool(),
              nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), *pool(),
              nn.Flatten(), nn.Linear(64 * 5 * 5, 512), nn.ReLU()]
    if fc1_dropout:
        layers.append(nn.Dropout(fc1_dropout))
    layers.append(nn.Linear(512, num_classes))
    return nn.Sequential(*layers)


def cifar100_cnn(widths=(32, 32, 32, 64), fc=(4096, 4096), batchnorm=False, dropout=None, num_classes=100):
    """Report 001's CNN: four 3x3 'valid' convolutions with ReLU (and BatchNorm after each ReLU with
    ``batchnorm``: ``bn(relu(conv(x)))``), one 2x2 max-pool, FC layers of ``fc`` units with ReLU,
    optional dropout before the last layer."""
    from minidl import nn
    layers, c = [], 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3), nn.ReLU()]
        if batchnorm:
            layers.append(nn.BatchNorm2d(w))
        c = w
    layers += [nn.MaxPool2d(2), nn.Flatten()]
    prev = c * 12 * 12
    for h in fc:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def lenet(num_classes=10):
    """Conv(3,12,5)-ReLU-Pool-Conv(12,24,5)-ReLU-Pool-FC(600,120)-ReLU-FC(120,84)-ReLU-FC(84,10)."""
    from minidl import nn
    return nn.Sequential(nn.Conv2d(3, 12, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(12, 24, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(600, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, num_classes))


def bn_convnet(activation="relu", num_classes=10, width=32):
    """Conv32-BN-act-Conv32-BN-act-Pool-Drop.25-Conv64-BN-act-Conv64-BN-act-Pool-Drop.25-FC512-BN-act-Drop.5-FC10,
    3x3 convolutions with padding 1."""
    from minidl import nn
    w1, w2 = width, 2 * width
    return nn.Sequential(
        nn.Conv2d(3, w1, 3, padding=1), nn.BatchNorm2d(w1), _act(activation),
        nn.Conv2d(w1, w1, 3, padding=1), nn.BatchNorm2d(w1), _act(activation), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(w1, w2, 3, padding=1), nn.BatchNorm2d(w2), _act(activation),
        nn.Conv2d(w2, w2, 3, padding=1), nn.BatchNorm2d(w2), _act(activation), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(w2 * 8 * 8, 512), nn.BatchNorm1d(512), _act(activation), nn.Dropout(0.5),
        nn.Linear(512, num_classes))


# Keras' defaults, for report 004's models: Glorot-uniform weights and zero biases in Dense and Conv2D,
# BatchNormalization with epsilon 1e-3 and momentum 0.99 (PyTorch's convention: 1 - 0.99 = 0.01).
KERAS_BN_EPS = 1e-3


def keras_init(model):
    """Re-initialise ``model``'s Linear and Conv2d layers as Keras does (glorot_uniform, zeros)."""
    from minidl import nn
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def keras_mlp(in_features, hidden, num_classes, activation="tanh"):
    """``mlp`` with Keras' initialisation (report 004's Dense network)."""
    return keras_init(mlp(in_features, hidden, num_classes, activation))


def keras_cnn(dropout=None, batchnorm=False, bn_momentum=0.01, num_classes=10):
    """Report 004's CNN (81,834 parameters, its table): Conv 5x5/32-ReLU-Pool 2, Conv 4x4/64-ReLU-Pool 3,
    Conv 2x2/120-ReLU-Pool 2, Dense 120-ReLU, Dense 10 ('valid' convolutions, 32->28->14->11->3->2->1).
    ``dropout``: a dropout after each pooling; ``batchnorm``: a BatchNorm after each convolution's
    activation (Keras' Conv2D(activation='relu') followed by BatchNormalization())."""
    from minidl import nn
    layers, c = [], 3
    for w, k, pool in ((32, 5, 2), (64, 4, 3), (120, 2, 2)):
        layers += [nn.Conv2d(c, w, k), nn.ReLU()]
        if batchnorm:
            layers.append(nn.BatchNorm2d(w, eps=KERAS_BN_EPS, momentum=bn_momentum))
        layers.append(nn.MaxPool2d(pool))
        if dropout:
            layers.append(nn.Dropout(dropout))
        c = w
    layers += [nn.Flatten(), nn.Linear(120, 120), nn.ReLU(), nn.Linear(120, num_classes)]
    return keras_init(nn.Sequential(*layers))


def keras_own(widths=(32, 64, 128), dropouts=(0.05, 0.10, 0.15), dense=272, bn_momentum=0.25, num_classes=10):
    """Report 004's own design as its text describes it: stacks of Conv 3x3 ('same') - BatchNorm - ReLU -
    MaxPool 2 - Dropout (rates 0.05 to 0.15), then Dense - ReLU - Dropout 0.5 - Dense 10; Keras'
    initialisation and BatchNorm epsilon, BatchNorm momentum 0.75 in Keras' convention (0.25 here)."""
    from minidl import nn
    layers, c, side = [], 3, 32
    for w, p in zip(widths, dropouts):
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w, eps=KERAS_BN_EPS, momentum=bn_momentum),
                   nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(p)]
        c, side = w, side // 2
    layers += [nn.Flatten(), nn.Linear(c * side * side, dense), nn.ReLU(), nn.Dropout(0.5),
               nn.Linear(dense, num_classes)]
    return keras_init(nn.Sequential(*layers))


def resnet18(num_classes=100):
    """The CIFAR ResNet-18 of minidl.nn (3x3 stem, no max-pool), trained from scratch."""
    from minidl import nn
    return nn.resnet18(num_classes=num_classes)


MODELS = {f.__name__: f for f in (mnist_cnn, mlp, cifar10_cnn, cifar100_cnn, lenet, bn_convnet, keras_mlp,
                                     keras_cnn, keras_own, resnet18)}


# ----------------------------------------------------------------- experiments
DATASETS = {  # name -> (image shape, classes, note for the results table)
    "mnist": ((1, 28, 28), 10, "MNIST"),
    "fashion-mnist": ((1, 28, 28), 10, "Fashion-MNIST"),
    "cifar10": ((3, 32, 32), 10, "CIFAR-10 (JPEG copy)"),
    "cifar100": ((3, 32, 32), 100, "CIFAR-100"),
}
DATASET_DEVIATIONS = {  # what every experiment on the dataset does differently from its report, and why
    "cifar10": "CIFAR-10 here is a JPEG copy of the set (labels exact, pixels lossy), not the official files the "
               "report loaded",
    "cifar100": "CIFAR-100 is not on these machines: the configuration is checked (parameter counts, one training "
                "step on synthetic data of its shape) but not run",
}


@dataclass
class Experiment:
    name: str
    title: str
    dataset: str
    model: str                       # a key of MODELS
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 64
    optimizer: dict = field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    split: dict = field(default_factory=lambda: {"kind": "test_as_val"})
    normalize: object = None          # None, "computed", or [mean, std] (per-channel lists or scalars)
    augment: list = field(default_factory=list)   # "hflip", "crop4", "resize40-crop32"
    eval_augment: list = field(default_factory=list)  # the same, applied to the validation and test images too
    published: dict = field(default_factory=dict)  # {"metric": ..., "value": percent, "text": ...}
    report_train_acc: bool = False    # also measure accuracy on the whole training set
    n_predictions: int = 16           # test images shown with predictions
    sweep: list = field(default_factory=list)      # [{"label": ..., overrides...}]
    smoke: dict = field(default_factory=dict)      # overrides for smoke runs (narrower model, "limit")
    notes: list = field(default_factory=list)     # choices where the report is silent, and why
    # what the report says (results/FIDELITY.md is generated from these):
    report: str = ""                  # "000 §1.3.5": the report (../shared/seeds/000_*.txt) and where in it
    report_says: str = ""             # the configuration in the report's words
    report_params: dict = field(default_factory=dict)  # {"total": n, "trainable": n} where the report prints them
    layer_table: list = field(default_factory=list)    # [[layer type, output shape (C, H, W) or (F,), params]]
    deviations: list = field(default_factory=list)     # what minidl does differently from the report, and why

    def config(self) -> dict:
        return copy.deepcopy(asdict(self))

    def with_overrides(self, overrides: dict) -> "Experiment":
        cfg = self.config()
        for k, v in overrides.items():
            if k == "label":
                continue
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = {**cfg[k], **v}
            else:
                cfg[k] = v
        return Experiment(**cfg)

    def variants(self) -> dict:
        """A sweep's variants by label, each an experiment of its own (same name, no sweep), in the sweep's order."""
        return {v["label"]: self.with_overrides({**v, "sweep": []}) for v in self.sweep}


EXPERIMENTS: dict = {}


def register(exp: Experiment) -> Experiment:
    if exp.name in EXPERIMENTS:
        raise ValueError(f"experiment {exp.name!r} registered twice")
    if exp.model not in MODELS:
        raise ValueError(f"experiment {exp.name!r}: unknown model {exp.model!r}")
    if exp.dataset not in DATASETS:
        raise ValueError(f"experiment {exp.name!r}: unknown dataset {exp.dataset!r}")
    EXPERIMENTS[exp.name] = exp
    return exp


def get(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"no experiment named {name!r}; `python -m experiments list` lists them") from None


DEFAULT = "mnist-cnn-logits"  # the faithful mnist-cnn may stall a class (see its deviations)


def _pub(metric, value, text):
    return {"metric": metric, "value": value, "text": text}


# ---- MNIST: report 002 §1 (PyTorch)
_MNIST = dict(dataset="mnist", split={"kind": "first_last", "train": 55000, "val": 5000},
              normalize=[[0.1307], [0.3081]], batch_size=100, epochs=5,
              optimizer={"name": "adam", "lr": 1e-3})
_MNIST_SAYS = ("conv1 10 maps, max_pool2d, conv2 20 maps with dropout, fc1 to 50, output layer of 10 "
               "probabilities; kernel 5, pooling stride 2; train 55,000 / validation 5,000; batch 100, learning "
               "rate 0.001, 5 epochs, Adam (§1-4)")
_MNIST_NOTES = ["the model's output is a softmax fed to the cross-entropy, which takes it as logits: the report "
                "'outputs 10 probabilities' and its losses show it (a softmax then cross-entropy cannot go below "
                "-log(e/(e+9)) = 1.4612; the report's test loss is 1.4957 at 96.56%): model option "
                "softmax_output=True reproduces it (False for logits)",
                "no dropout after fc1 (the report names dropout at conv2 only); conv2's is the PyTorch MNIST "
                "example's Dropout2d(0.5), ReLU after each max-pool as there",
                "Normalize with MNIST's mean/std 0.1307/0.3081 (not stated in the report)",
                "validation: the last 5,000 training images (the split's method is not stated)"]
register(Experiment("mnist-cnn", "MNIST CNN (Adam 1e-3, 5 epochs, softmax fed to the cross-entropy)",
                    model="mnist_cnn", model_kwargs={"fc_dropout": None, "softmax_output": True},
                    published=_pub("test_acc", 96.56, "test 96.56%"), n_predictions=16, **_MNIST,
                    report="002 §1-1", report_says=_MNIST_SAYS + "; training loss 1.7453 to 1.5427, test loss "
                    "1.4957 and accuracy 96.56% after epoch 5",
                    notes=_MNIST_NOTES))
register(Experiment("mnist-cnn-l2", "MNIST CNN with L2 weight decay 1e-4 (softmax fed to the cross-entropy)",
                    model="mnist_cnn", model_kwargs={"fc_dropout": None, "softmax_output": True},
                    published=_pub("test_acc", 97.22, "test 97.22%"),
                    **dict(_MNIST, optimizer={"name": "adam", "lr": 1e-3, "weight_decay": 1e-4}),
                    report="002 §1-4", report_says=_MNIST_SAYS + "; adds weight_decay=1e-4 to Adam; test loss "
                    "1.4894 and accuracy 97.22% after epoch 5",
                    notes=_MNIST_NOTES + ["weight decay as coupled L2 in Adam (PyTorch's weight_decay)"]))
register(Experiment("mnist-cnn-logits", "MNIST CNN of report 002 with logits into the cross-entropy (the default)",
                    model="mnist_cnn", model_kwargs={"fc_dropout": None, "softmax_output": False},
                    published=_pub("test_acc", 96.56, "test 96.56% (with softmax outputs)"), n_predictions=16,
                    **_MNIST, report="002 §1-1", report_says=_MNIST_SAYS,
                    notes=_MNIST_NOTES[1:],
                    deviations=["logits into the cross-entropy, as PyTorch's CrossEntropyLoss expects, where the report "
                                "fed it softmax outputs (mnist-cnn reproduces that): a softmax output can saturate "
                                "for a class and stall its learning (mnist-cnn never predicts one of the digits in 7 "
                                "of 10 seeds here, and the same network in PyTorch in 6 of 10: python -m "
                                "benchmarks.softmax_into_ce; the report's own L2 run stalls near 85% for two "
                                "epochs); this is "
                                "the experiment that `python -m experiments run` runs by default"]))
register(Experiment("mnist-mlp", "MNIST MLP 784-200-10", model="mlp",
                    model_kwargs={"in_features": 784, "hidden": [200], "num_classes": 10},
                    published=_pub("test_acc", 96.0, "about 96%"), **_MNIST,
                    report="004 Q3", report_says="'the first assignment' (MNIST): one hidden layer of 200 neurons, "
                    "96% test accuracy; nothing else",
                    notes=["activation, optimizer, batch and epochs not stated: ReLU, Adam 1e-3, batch 100, 5 epochs "
                           "as the MNIST CNN"]))
register(Experiment("fashion-mnist-cnn", "Fashion-MNIST with the MNIST CNN (extra)", model="mnist_cnn",
                    published={}, **dict(_MNIST, dataset="fashion-mnist", normalize=[[0.2860], [0.3530]]),
                    notes=["no report: the PyTorch MNIST example's network (dropout after fc1, logits) on "
                           "Fashion-MNIST; Normalize with Fashion-MNIST's mean/std 0.2860/0.3530"]))

# ---- CIFAR-10 CNN: report 000 (PyTorch)
_C10 = dict(dataset="cifar10", model="cifar10_cnn", split={"kind": "first_last", "train": 49000, "val": 1000},
            normalize=[[0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.262]], batch_size=32,
            optimizer={"name": "sgd", "lr": 0.001, "momentum": 0.9},
            report_params={"total": 890_410, "trainable": 890_410},
            layer_table=[["Conv2d", [32, 30, 30], 896], ["Conv2d", [32, 28, 28], 9248], ["MaxPool2d", [32, 14, 14], 0],
                         ["Conv2d", [64, 12, 12], 18496], ["Conv2d", [64, 10, 10], 36928],
                         ["MaxPool2d", [64, 5, 5], 0], ["Linear", [512], 819712], ["Linear", [10], 5130]])
_C10_SAYS = ("torchsummary table (Conv2d 32-32, MaxPool, Conv2d 64-64, MaxPool, Linear 512, Linear 10; 890,410 "
             "parameters), 'default values for the hyper-parameters where not specified'; Normalize with given "
             "values, close to the computed mean (0.4914, 0.4822, 0.4465) and std (0.247, 0.243, 0.262); "
             "validation: the last 1,000 training images, training: the first 49,000 (SubsetRandomSampler)")
_C10_NOTES = ["Normalize with the mean and std the report printed (it says they are very close to the given "
              "values it used)",
              "the 'given hyper-parameters' are not in the report: SGD with momentum 0.9 (§1.4.2 names its "
              "velocity), learning rate 0.001 (§1.3.7 'increases the learning rate to 0.002', so it was lower), "
              "batch 32 (not stated; the report logs every 200 steps, so an epoch had many); a public copy of "
              "this assignment's code (the same network, split and 200-step log) sets batch_size = 32, "
              "learning_rate = 0.001, momentum = 0.9",
              "ReLU after each convolution and after FC512 (the table lists no activation modules: F.relu)"]
_DROP_NOTE = ("where 'the dropout' sat is not stated: a Dropout(p) after each of the two max-pooling layers, where "
              "two public solutions of this assignment put it, and §1.3.7 adds one more *after* the first "
              "fully-connected layer; one dropout before FC512 alone (p = 0.2) peaked at 74.8% at epoch 20 and "
              "then fell as the network memorised its training images (98% by epoch 46), where the report's "
              "curves still rose at epochs 77-91")
register(Experiment("cifar10-cnn", "CIFAR-10 CNN Conv32-Conv32-Pool-Conv64-Conv64-Pool-FC512-FC10", epochs=20,
                    published=_pub("best_val_acc", 74.8, "best val 74.8% (epoch 18), final 73.8%"),
                    report="000 §1.2-1.3.4", report_says=_C10_SAYS + "; best validation 74.8% at epoch 18, "
                    "final 73.8%", **_C10,
                    notes=_C10_NOTES + ["20 epochs: not stated; the best epoch was 18"]))
for _p, _v, _extra in ((0.2, 80.1, " (epoch 89)"), (0.5, 83.0, " (epoch 77)"),
                       (0.8, 76.2, " (epoch 91); test 73.67% (§1.3.6)")):
    register(Experiment(f"cifar10-cnn-dropout{_p}", f"CIFAR-10 CNN, dropout {_p} after each pooling, 100 epochs",
                        model_kwargs={"pool_dropout": _p}, epochs=100,
                        published=_pub("best_val_acc", _v, f"best val {_v}%{_extra}"),
                        report="000 §1.3.5" + ("-1.3.6" if _p == 0.8 else ""),
                        report_says=f"the same network with a dropout of p = {_p}, trained for 100 epochs; best "
                                    f"validation {_v}%{_extra}", **_C10, notes=_C10_NOTES + [_DROP_NOTE]))
register(Experiment("cifar10-cnn-dropout-lr0.002", "CIFAR-10 CNN, lr 0.002, dropout 0.5 after each pooling and after "
                    "FC512, 100 epochs", model_kwargs={"pool_dropout": 0.5, "fc1_dropout": 0.5}, epochs=100,
                    published=_pub("test_acc", 81.79, "test 81.79%"), n_predictions=7,
                    report="000 §1.3.7", report_says="100 epochs, learning rate 0.002, dropout p = 0.5, and a "
                    "dropout layer added after the first fully-connected layer; test 81.79%",
                    **dict(_C10, optimizer={"name": "sgd", "lr": 0.002, "momentum": 0.9}),
                    notes=[_C10_NOTES[0], "SGD with momentum 0.9 (§1.4.2 names its velocity) at the stated "
                           "learning rate 0.002; batch 32 (not stated; the report logs every 200 steps)",
                           _C10_NOTES[2], _DROP_NOTE + "; the added one is Dropout(0.5) after FC512's ReLU",
                           "7 test images with predictions as in the report"]))

# ---- CIFAR-100: report 001 (PyTorch); every run trains on all 50,000 images (196 steps at batch 256,
# 390 at 128) and prints "Accuracy of the network on the test set" after each epoch
_C100 = dict(dataset="cifar100", split={"kind": "test_as_val"}, normalize="computed",
             batch_size=256, epochs=20, optimizer={"name": "adam", "lr": 1e-4})
_C100_SAYS = "epochs 20, batch 256 (196 updates an epoch), learning rate 0.0001"
_C100_NOTES = ["optimizer not stated for lr 0.0001: Adam (the report's best run names Adam, at 0.001)",
               "trained on all 50,000 training images; the test set is the per-epoch figure the report prints "
               "(validation = test, no model selection on it); the published figure is the last epoch's",
               "normalised with the mean/std of the training images (not stated)"]
_CNN_NOTES = ["3x3 'valid' convolutions, 2x2 max-pool, ReLU everywhere (kernel, padding and activation not "
              "stated)"]
_SMOKE_C100 = {"model_kwargs": {"widths": [8, 8, 8, 16], "fc": [64, 64]}}  # up to 600M parameters at full width
_3A = [128, 128, 128, 256]
_CNN_SAYS = "4 convolutions, a pooling layer on the last one, 2 fc layers of 4096 neurons"
register(Experiment("cifar100-mlp", "CIFAR-100 MLP 3072-4096-4096-100", model="mlp",
                    model_kwargs={"in_features": 3072, "hidden": [4096, 4096], "num_classes": 100},
                    published=_pub("test_acc", 26.0, "26%"), **_C100,
                    report="001 Point 1",
                    report_says="2 hidden layers of 4096; " + _C100_SAYS + "; 26% after 20 epochs",
                    notes=_C100_NOTES + ["ReLU (not stated)"]))
register(Experiment("cifar100-cnn", "CIFAR-100 CNN conv 32/32/32/64, pool, FC 4096 x2", model="cifar100_cnn",
                    published=_pub("test_acc", 29.0, "29%"), smoke=_SMOKE_C100, **_C100,
                    report="001 Point 2", report_says=_CNN_SAYS + ", 32 maps for the first 3 and 64 for the last; "
                    + _C100_SAYS + "; 29%", notes=_C100_NOTES + _CNN_NOTES))
for _w, _p, _v in ((_3A, "a", 33.0), ([256, 256, 256, 512], "b", 34.0), ([512, 512, 512, 1024], "c", 36.0)):
    register(Experiment(f"cifar100-cnn-{_w[0]}", f"CIFAR-100 CNN conv {'/'.join(map(str, _w))} (3{_p})",
                        model="cifar100_cnn", model_kwargs={"widths": _w}, published=_pub("test_acc", _v, f"{_v:g}%"),
                        smoke=_SMOKE_C100, **_C100, report=f"001 Point 3{_p}",
                        report_says=f"the Point 2 network with {'/'.join(map(str, _w))} filters; {_v:g}%",
                        notes=_C100_NOTES + _CNN_NOTES))
_BN_SAYS = "the 3a network (128/128/128/256) with batch norm after each convolution: x = bn(F.relu(conv(x)))"
_BN_NOTES = _C100_NOTES + _CNN_NOTES + ["BatchNorm2d with PyTorch's defaults (momentum 0.1)"]
register(Experiment("cifar100-cnn-bn", "CIFAR-100 CNN 3a with BatchNorm after each conv's ReLU",
                    model="cifar100_cnn", model_kwargs={"widths": _3A, "batchnorm": True},
                    published=_pub("test_acc", 40.0, "40%"), smoke=_SMOKE_C100, **_C100,
                    report="001 Point 4a", report_says=_BN_SAYS + "; 40%", notes=_BN_NOTES))
register(Experiment("cifar100-cnn-bn-fc8192", "CIFAR-100 CNN 3a with BatchNorm, last hidden FC 8192, batch 128",
                    model="cifar100_cnn", model_kwargs={"widths": _3A, "batchnorm": True, "fc": [4096, 8192]},
                    published=_pub("test_acc", 38.0, "38% after epoch 20 (42% at epochs 8 and 10)"),
                    smoke=_SMOKE_C100, **dict(_C100, batch_size=128),
                    report="001 Point 4b", report_says="the 4a network with the last fully-connected layer widened "
                    "from 4096 to 8192; its log counts 390 steps an epoch (batch 128); 38% after epoch 20",
                    notes=_BN_NOTES + ["batch 128: the log's 390 steps an epoch (50,000 / 128)"]))
register(Experiment("cifar100-cnn-bn-dropout", "CIFAR-100 CNN 3a with BatchNorm and dropout 0.5 before the last layer",
                    model="cifar100_cnn", model_kwargs={"widths": _3A, "batchnorm": True, "dropout": 0.5},
                    published={}, smoke=_SMOKE_C100, **_C100,
                    report="001 Point 4c", report_says="the 4a network with nn.Dropout(0.5) just before the last "
                    "fully-connected layer; no figure ('dropout does not add any value')",
                    notes=_BN_NOTES + ["no figure published for this one"]))
register(Experiment("cifar100-cnn-dropout", "CIFAR-100 CNN 3a with dropout 0.5 before the last layer, no BatchNorm",
                    model="cifar100_cnn", model_kwargs={"widths": _3A, "dropout": 0.5},
                    published=_pub("test_acc", None, "'results similar to those of point 4a' (40%); no figure"),
                    smoke=_SMOKE_C100, **_C100,
                    report="001 Point 4c", report_says="'removing the layers of the batch normalization and adding "
                    "only the dropout you can see results similar to those of point 4a'",
                    notes=_C100_NOTES + _CNN_NOTES + ["the dropout of Point 4c (0.5, before the last layer)"]))
register(Experiment("cifar100-cnn-flip", "CIFAR-100 CNN 3a with horizontal-flip augmentation", model="cifar100_cnn",
                    model_kwargs={"widths": _3A}, augment=["hflip"], published=_pub("test_acc", 36.0, "36%"),
                    smoke=_SMOKE_C100, **_C100,
                    report="001 Point 5a", report_says="the 3a configuration with transforms.RandomHorizontalFlip() in "
                    "the training transform; 36%", notes=_C100_NOTES + _CNN_NOTES))
register(Experiment("cifar100-cnn-crop", "CIFAR-100 CNN 3a, resize to 40 then random crop 32", model="cifar100_cnn",
                    model_kwargs={"widths": _3A}, augment=["resize40-crop32"], published=_pub("test_acc", 38.0, "38%"),
                    smoke=_SMOKE_C100, **_C100,
                    report="001 Point 5b", report_says="the 3a configuration with transforms.Resize((40, 40)), "
                    "transforms.RandomCrop([32, 32]) in the training transform; 38%",
                    notes=_C100_NOTES + _CNN_NOTES + ["test images are not resized (the transforms are in the "
                                                      "training transform only)"]))
register(Experiment("cifar100-resnet18", "CIFAR-100 ResNet-18 from scratch, batch 128, 10 epochs", model="resnet18",
                    published=_pub("test_acc", 72.0, "72% after epoch 10 (79% at epochs 5-8; fine-tuned ImageNet "
                                   "weights)"),
                    smoke={"limit": 32, "batch_size": 16}, **dict(_C100, batch_size=128, epochs=10),
                    report="001 Point 6", report_says="a ResNet pretrained on ImageNet, fine-tuned; its log: 390 steps "
                    "an epoch (batch 128), 10 epochs, 72% after the last (79% at best)",
                    notes=_C100_NOTES + ["batch 128 and 10 epochs from the log",
                                         "which ResNet is not stated: ResNet-18, minidl's CIFAR variant (3x3 stem, no "
                                         "max-pool), for 32x32 inputs"],
                    deviations=["the report fine-tuned ImageNet-pretrained weights; none exist here, so minidl trains "
                                "from scratch and its figure is not comparable"]))
register(Experiment("cifar100-best", "CIFAR-100 report's best: 3a, BatchNorm, dropout 0.8, flips, Adam 1e-3, batch 128",
                    model="cifar100_cnn", model_kwargs={"widths": _3A, "batchnorm": True, "dropout": 0.8},
                    augment=["hflip"], published=_pub("test_acc", 52.0, "52%"), smoke=_SMOKE_C100,
                    **dict(_C100, batch_size=128, optimizer={"name": "adam", "lr": 1e-3}),
                    report="001 'Better CNN found freely'", report_says="Adam, learning rate 0.001, 'batch size at 12' "
                    "(its log: 390 steps an epoch, batch 128), batch norm after each convolution, dropout 0.8 before "
                    "the last fully-connected layer, random horizontal flips; 52%",
                    notes=_BN_NOTES[1:] + [
                        "batch 128: the log's 390 steps an epoch (the text's 'batch size at 12' is cut short)",
                        "the 3a widths with batch norm after each ReLU: the report's best 'from the points' is 4a, and "
                        "this run adds to it"]))

# ---- CIFAR-10 LeNet: report 002 §2 (PyTorch); its 'test' figures are accuracies on the training images
_LENET = dict(dataset="cifar10", model="lenet", split={"kind": "test_as_val"}, normalize=[[0.5] * 3, [0.5] * 3],
              batch_size=32, epochs=35, report_train_acc=True)
_LENET_SAYS = ("conv1 3->12 5x5, max-pool 2x2, conv2 12->24 5x5, fc1 600->120, fc2 120->84, fc3 84->10; batch 32, "
               "learning rate 0.001, 35 epochs; ToTensor + Normalize((0.5,)*3, (0.5,)*3); its 'Test set' lines "
               "count out of 50,000, i.e. they measure the training images")
_LENET_NOTES = ["ReLU after conv1, conv2, fc1 and fc2 (activations not named in the report)",
                "trained on all 50,000 training images; the report's figure is the accuracy on them (eval mode, "
                "after the last epoch): minidl reports it and the test-set accuracy both",
                "the test set doubles as the validation set (no model selection on it)"]
register(Experiment("cifar10-lenet", "CIFAR-10 LeNet, SGD momentum 0.9, 35 epochs",
                    published=_pub("train_acc", 90.41, "90.41% on the 50,000 training images"),
                    optimizer={"name": "sgd", "lr": 1e-3, "momentum": 0.9}, **_LENET,
                    report="002 §2-1", report_says=_LENET_SAYS + "; 90.41% after epoch 35",
                    notes=["optimizer not named for this run: SGD with momentum 0.9, as §2-4 says it used for "
                           "CIFAR-10 ('Adam is faster, but had lower accuracy results'): the report's first epoch "
                           "(training loss 2.2377, accuracy 17.75%) is SGD's (minidl's earlier runs of this net: "
                           "SGD 2.26 and 14.8%, Adam at 0.001 1.54 and 43.5%)"]
                    + _LENET_NOTES))
register(Experiment("cifar10-lenet-l2", "CIFAR-10 LeNet, SGD momentum 0.9, weight decay 1e-4, 35 epochs",
                    published=_pub("train_acc", 88.73, "88.73% on the 50,000 training images"),
                    optimizer={"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4}, **_LENET,
                    report="002 §2-4", report_says=_LENET_SAYS + "; adds weight_decay=1e-4 with SGD, momentum "
                    "0.9; 88.73% after epoch 35", notes=_LENET_NOTES))

# ---- CIFAR-10 BN-ConvNet sweep: report 003 (PyTorch)
register(Experiment("cifar10-bnconv-sweep", "CIFAR-10 BN-ConvNet, {SGD, Adam} x {LeakyReLU, Tanh}, lr 1e-4",
                    dataset="cifar10", model="bn_convnet",
                    split={"kind": "test_random", "val_frac": 0.8, "seed": 42, "test": "all"},
                    normalize=[[0.5] * 3, [0.5] * 3], augment=["hflip", "crop4"], eval_augment=["crop4"],
                    batch_size=128, epochs=30, optimizer={"name": "adam", "lr": 1e-4},
                    published=_pub("test_acc", 76.0, "best 76% (classification report over the 10,000 test images)"),
                    sweep=[{"label": "sgd-leakyrelu", "optimizer": {"name": "sgd", "lr": 1e-4},
                            "model_kwargs": {"activation": "leaky_relu"}},
                           {"label": "sgd-tanh", "optimizer": {"name": "sgd", "lr": 1e-4},
                            "model_kwargs": {"activation": "tanh"}},
                           {"label": "adam-tanh", "optimizer": {"name": "adam", "lr": 1e-4},
                            "model_kwargs": {"activation": "tanh"}},
                           {"label": "adam-leakyrelu", "optimizer": {"name": "adam", "lr": 1e-4},
                            "model_kwargs": {"activation": "leaky_relu"}}],
                    smoke={"model_kwargs": {"width": 8}},
                    report="003", report_says="conv1 32 3x3 pad 1, bn1, conv2 32, bn2, pool, dropout 0.25, conv3 64, "
                    "bn3, conv4 64, bn4, pool, dropout 0.25, fc1 512, bn5, dropout 0.5, fc2 10; lr 0.0001 with SGD or "
                    "Adam, LeakyReLU or Tanh; batch 128; train: RandomHorizontalFlip, RandomCrop(32, padding=4), "
                    "Normalize(0.5, 0.5); validation and test: RandomCrop(32, padding=4), Normalize(0.5, 0.5); the "
                    "test images split 80% validation / 20% test with seed 42; the best model's classification "
                    "report (support 1,000 per class, 10,000 in all): accuracy 0.76",
                    notes=["activation after each batch norm (conv-BN-act; 'applying the activation function at each "
                           "step')", "SGD without momentum (PyTorch's default; the report names none)",
                           "epochs not stated: 30",
                           "validation: 80% of the test images (8,000, drawn with seed 42); the test figure, like the "
                           "report's classification report, covers all 10,000 test images",
                           "the best run (by validation accuracy) gets the confusion matrix and classification "
                           "report"],
                    deviations=["the 80/20 draw uses NumPy's default_rng(42), not the report's np.random.seed(42) "
                                "code (not shown), so the 8,000 validation images differ"]))

# ---- CIFAR-10 in Keras: report 004 (TBMI26); Keras' defaults (batch 32, glorot init, BatchNorm eps 1e-3)
_KERAS = dict(dataset="cifar10", split={"kind": "first_last", "train": 45000, "val": 5000},
              normalize=[[0.0] * 3, [1.0] * 3], batch_size=32, epochs=25,
              optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-6})
_KSGD_SAYS = ("SGD, momentum 0.9, Nesterov, 'a weight decay of 1e-6', learning rate 0.01, categorical "
              "cross-entropy, softmax output")
_KNOTES = ["inputs scaled to [0, 1] (not stated; the usual Keras preprocessing)",
           "validation: the last 5,000 training images (Keras' validation_split takes the last part; the "
           "fraction is not stated)", "batch 32 (Keras' default; not stated)",
           "'a weight decay of 1e-6' as the report says, PyTorch's coupled L2; Keras' SGD of the time had no "
           "weight decay, and its decay=1e-6 argument was a per-step learning-rate decay lr/(1 + 1e-6 t), 3.4% "
           "lower after 25 epochs of 1,407 steps: either changes little",
           "Keras' initialisation: Glorot-uniform weights, zero biases"]
_KCNN = dict(_KERAS, model="keras_cnn", report_params={"total": 81_834, "trainable": 81_834},
             layer_table=[["Conv2d", [32, 28, 28], 2432], ["MaxPool2d", [32, 14, 14], 0],
                          ["Conv2d", [64, 11, 11], 32832], ["MaxPool2d", [64, 3, 3], 0],
                          ["Conv2d", [120, 2, 2], 30840], ["MaxPool2d", [120, 1, 1], 0],
                          ["Flatten", [120], 0], ["Linear", [120], 14520], ["Linear", [10], 1210]])
_KCNN_SAYS = ("Keras table: Conv2D 32 (28x28, 2,432 parameters: 5x5), MaxPooling2D to 14x14, Conv2D 64 (11x11, "
              "32,832: 4x4), MaxPooling2D to 3x3, Conv2D 120 (2x2, 30,840: 2x2), MaxPooling2D to 1x1, Flatten, "
              "Dense 120, Dense 10; 81,834 parameters; ReLU hidden, softmax output; " + _KSGD_SAYS)
_KCNN_NOTES = _KNOTES + ["the pool sizes are not printed: 2, 3 and 2 give the printed shapes 14, 3 and 1 with Keras' "
                         "default stride (= pool size)", "epochs not stated: 25, the limit of the report's own design"]
register(Experiment("cifar10-keras-mlp", "CIFAR-10 Keras-style MLP 3072-3072-1000-10 tanh", model="keras_mlp",
                    model_kwargs={"in_features": 3072, "hidden": [3072, 1000], "num_classes": 10, "activation": "tanh"},
                    published=_pub("test_acc", 47.0, "47% (assignment: >= 45%)"),
                    smoke={"model_kwargs": {"hidden": [256, 128]}}, **_KERAS,
                    report="004 Q2-3", report_says="Keras table: Flatten (3072), Dense 3072, Dense 1000, Dense 10; "
                    "12,523,266 parameters; tanh hidden, softmax output; " + _KSGD_SAYS + "; about 47% test",
                    report_params={"total": 12_523_266, "trainable": 12_523_266},
                    layer_table=[["Flatten", [3072], 0], ["Linear", [3072], 9_440_256], ["Linear", [1000], 3_073_000],
                                 ["Linear", [10], 10_010]],
                    notes=_KNOTES + ["epochs not stated: 25, the limit of the report's own design"]))
register(Experiment("cifar10-keras-cnn", "CIFAR-10 Keras-style CNN (81,834 parameters)",
                    published=_pub("test_acc", 63.07, "63.07% (assignment: >= 62%)"), **_KCNN,
                    report="004 Q4, Q6", report_says=_KCNN_SAYS + "; test 63.07% (training 75.59%, validation 64.13%)",
                    notes=_KCNN_NOTES))
register(Experiment("cifar10-keras-cnn-dropout", "CIFAR-10 Keras-style CNN, dropout 0.2 after each pooling",
                    model_kwargs={"dropout": 0.2}, published=_pub("test_acc", 63.24, "63.24%"), **_KCNN,
                    report="004 Q5-6", report_says="the Q4 CNN with dropout layers of rate 0.2 after each max-pooling "
                    "layer; test 63.24% (training 60.61%, validation 63.61%)", notes=_KCNN_NOTES))
register(Experiment("cifar10-keras-cnn-bn", "CIFAR-10 Keras-style CNN with BatchNorm, 15 epochs",
                    model_kwargs={"batchnorm": True}, published={},
                    **dict(_KCNN, epochs=15, report_params={}, layer_table=[]),  # the report's table is Q4's
                    report="004 Q7", report_says="the Q4 CNN 'with added BatchNorm layers'; evaluation 'after 15 "
                    "epochs'; no figure",
                    notes=_KNOTES + ["where the BatchNorm layers went is not stated: one after each convolution, after "
                                     "its ReLU (Keras' Conv2D(activation='relu') then BatchNormalization()), "
                                     "momentum 0.99 in Keras' convention (0.01 here)", "no figure published"]))
register(Experiment("cifar10-own", "CIFAR-10 report 004's own design: conv-BN-ReLU-pool-dropout stacks, 25 epochs",
                    model="keras_own", published=_pub("test_acc", 78.2, "78.2% (goal: >= 75% in <= 25 epochs)"),
                    smoke={"model_kwargs": {"widths": [8, 8, 8], "dense": 16}}, **_KERAS,
                    report="004 Q9", report_says="stacks of convolution + batch normalization + ReLU + max-pooling "
                    "+ dropout (0.05 to 0.15 after convolutions), downsampled into a Dense layer, dropout 0.5 after "
                    "it; batch-norm momentum 0.75 (Keras); 654,454 parameters, 654,068 trainable; at most 25 epochs; "
                    "test 78.2%",
                    report_params={"total": 654_454, "trainable": 654_068, "layers_unknown": True},
                    notes=_KNOTES[:-1] + [
                        "three stacks, Conv 3x3 'same' of 32, 64 and 128 filters, dropouts 0.05, 0.10 and 0.15; "
                        "Dense 272 (ReLU); the widths are minidl's: 272 brings the size near the report's",
                        "batch-norm momentum 0.75 in Keras' convention is 0.25 in PyTorch's; epsilon 1e-3 (Keras)",
                        "optimizer not stated: the SGD of the report's other models", "no augmentation (none named)",
                        "25 epochs, the task's limit"],
                    deviations=["the report gives no layer table, only 654,454 parameters of which 654,068 trainable: "
                                "its 386 non-trainable ones are batch-norm moving statistics of 193 channels, an odd "
                                "number (some normalised layer had an odd width), and a search of conv-BN-ReLU-pool-"
                                "dropout stacks (3x3 convolutions of widths multiples of 8, one or two a stack, 'same' "
                                "or 'valid', one Dense layer with or without batch norm) found no layout with both "
                                "counts: minidl's design has 653,754 parameters and 448 batch-norm statistics "
                                "(654,202 in Keras' count)"]))
