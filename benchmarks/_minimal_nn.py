"""A stand-in for ``minidl.nn`` / ``minidl.optim`` with just what the benchmark nets need.

Used only while those packages lack the layers (they are written in parallel); the
benchmark prefers the real ones (see ``benchmarks.throughput.minidl_namespace``).
Layer names and signatures follow PyTorch so the same net builders serve both.
"""
from __future__ import annotations

import math

import numpy as np

import minidl
from minidl.autograd import Function
from minidl.ops.conv import conv2d  # noqa: F401  (swappable for A/B runs)
from minidl.ops.pool import max_pool2d


class Module:
    training = True

    def parameters(self):
        return []

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)


def _uniform(shape, bound, rng):
    return minidl.Tensor(rng.uniform(-bound, bound, shape).astype(np.float32), requires_grad=True)


_rng = np.random.default_rng(0)


class Conv2d(Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, bias=True):
        bound = 1 / math.sqrt(cin * k * k)
        self.weight = _uniform((cout, cin, k, k), bound, _rng)
        self.bias = _uniform((cout,), bound, _rng) if bias else None
        self.stride, self.padding = stride, padding

    def parameters(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def __call__(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)


class Linear(Module):
    def __init__(self, cin, cout):
        bound = 1 / math.sqrt(cin)
        self.weight = _uniform((cout, cin), bound, _rng)
        self.bias = _uniform((cout,), bound, _rng)

    def parameters(self):
        return [self.weight, self.bias]

    def __call__(self, x):
        return x @ self.weight.T + self.bias


class ReLU(Module):
    def __call__(self, x):
        return minidl.relu(x)


class Tanh(Module):
    def __call__(self, x):
        return minidl.tanh(x)


class Flatten(Module):
    def __call__(self, x):
        return x.reshape(x.shape[0], -1)


class MaxPool2d(Module):
    def __init__(self, k, stride=None, padding=0):
        self.k, self.stride, self.padding = k, stride, padding

    def __call__(self, x):
        return max_pool2d(x, self.k, self.stride, self.padding)


class _Mask(Function):
    """y = x * mask;  dx = gy * mask  (the mask holds 0 or 1/(1-p))."""

    def __init__(self, mask):
        self.mask = mask

    def forward(self, x):
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


class Dropout(Module):
    channel = False

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, x):
        if not self.training or self.p == 0:
            return x
        shape = x.shape[:2] + (1,) * (x.ndim - 2) if self.channel else x.shape
        keep = (_rng.random(shape, dtype=np.float32) >= self.p).astype(np.float32) / np.float32(1 - self.p)
        return _Mask(keep)(x)


class Dropout2d(Dropout):
    channel = True


class _BatchNorm(Function):
    """Training-mode batch norm over all axes but 1: y = gamma (x - mu) / sqrt(var + eps) + beta."""

    def forward(self, x, g, b):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        self.axes, self.shape, self.m = axes, shape, x.size // x.shape[1]
        mu = x.mean(axis=axes)
        xc = x - mu.reshape(shape)
        var = (xc * xc).mean(axis=axes)
        self.inv = (1 / np.sqrt(var + np.float32(1e-5))).astype(x.dtype)
        self.xhat, self.g = xc * self.inv.reshape(shape), g
        return self.xhat * g.reshape(shape) + b.reshape(shape)

    def backward(self, gy):
        sg, sgx = gy.sum(axis=self.axes), (gy * self.xhat).sum(axis=self.axes)
        m = gy.dtype.type(self.m)
        k = (self.g * self.inv / m).reshape(self.shape)
        return k * (m * gy - sg.reshape(self.shape) - self.xhat * sgx.reshape(self.shape)), sgx, sg


class BatchNorm2d(Module):
    def __init__(self, c):
        self.weight = minidl.Tensor(np.ones(c, np.float32), requires_grad=True)
        self.bias = minidl.Tensor(np.zeros(c, np.float32), requires_grad=True)

    def parameters(self):
        return [self.weight, self.bias]

    def __call__(self, x):
        return _BatchNorm()(x, self.weight, self.bias)  # (running statistics are not kept: speed only)


BatchNorm1d = BatchNorm2d


class Sequential(Module):
    def __init__(self, *layers):
        self.layers = list(layers)

    def __iter__(self):
        return iter(self.layers)

    def parameters(self):
        return [p for m in self.layers for p in m.parameters()]

    def train(self, mode=True):
        for m in self.layers:
            m.train(mode)
        return super().train(mode)

    def __call__(self, x):
        for m in self.layers:
            x = m(x)
        return x


class SGD:
    """p <- p - lr b,  b <- momentum b + g (PyTorch's rule, no dampening)."""

    def __init__(self, params, lr, momentum=0.0):
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.bufs = [None] * len(self.params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        lr, mom = np.float32(self.lr), np.float32(self.momentum)
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.data
            if self.bufs[i] is None:
                self.bufs[i] = g.copy()
            else:
                self.bufs[i] *= mom
                self.bufs[i] += g
            p.data -= lr * self.bufs[i]


class _Optim:
    SGD = SGD
