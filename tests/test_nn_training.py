"""The layers learn together: small models fitted with a hand-written SGD step on synthetic
data (the optimizers live in minidl.optim; this checks the layers, not an optimizer)."""
import numpy as np

import minidl
from minidl import nn


def sgd_step(model, lr):
    with minidl.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    model.zero_grad()


def accuracy(model, x, y):
    with minidl.no_grad():
        return float((model(x).numpy().argmax(1) == y.numpy()).mean())


def test_mlp_with_batchnorm_and_dropout_separates_three_blobs():
    minidl.manual_seed(0)
    rng = np.random.default_rng(0)
    centres = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    labels = rng.integers(0, 3, 300)
    x = minidl.Tensor((centres[labels] + 0.5 * rng.standard_normal((300, 2))).astype(np.float32))
    y = minidl.Tensor(labels)
    model = nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
    loss_fn = nn.CrossEntropyLoss()
    first = None
    for step in range(150):
        loss = loss_fn(model(x), y)
        first = loss.item() if first is None else first
        loss.backward()
        sgd_step(model, 0.1)
    assert loss.item() < 0.3 * first
    model.eval()
    assert accuracy(model, x, y) > 0.95


def test_small_cnn_tells_horizontal_from_vertical_bars():
    minidl.manual_seed(1)
    rng = np.random.default_rng(1)
    n = 64
    images = 0.1 * rng.standard_normal((n, 1, 8, 8))
    labels = rng.integers(0, 2, n)
    for i, (lab, pos) in enumerate(zip(labels, rng.integers(1, 7, n))):
        if lab:
            images[i, 0, :, pos] += 1.0   # vertical bar
        else:
            images[i, 0, pos, :] += 1.0   # horizontal bar
    x, y = minidl.Tensor(images.astype(np.float32)), minidl.Tensor(labels)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    for step in range(60):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        sgd_step(model, 0.2)
    model.eval()
    assert accuracy(model, x, y) > 0.95
