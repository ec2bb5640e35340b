"""Gradient-check cases for conv2d and the pooling ops, each against a plain NumPy reference.

The references do not use im2col: convolution is a sum over kernel offsets of
einsum products of shifted input slices; pooling loops over output pixels.
"""
import numpy as np

from minidl.ops.conv import conv2d, pair
from minidl.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from tests.gradcases import Case, distinct


def ref_conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """y[n,k,i,j] = b[k] + sum_{c,p,q} w[k,c,p,q] xpad[n,c,s i + d p, s j + d q], one einsum per (p, q)."""
    (s1, s2), (d1, d2) = pair(stride, "size", 0), pair(dilation, "size", 0)
    k, c, kh, kw = w.shape
    if padding == "same":
        th, tw = d1 * (kh - 1), d2 * (kw - 1)
        pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    else:
        ph, pw = pair(padding, "size", 0)
        pads = ((ph, ph), (pw, pw))
    xpad = np.pad(x, ((0, 0), (0, 0)) + pads)
    hp, wp = xpad.shape[2:]
    ho, wo = (hp - d1 * (kh - 1) - 1) // s1 + 1, (wp - d2 * (kw - 1) - 1) // s2 + 1
    y = np.zeros((x.shape[0], k, ho, wo))
    for p in range(kh):
        for q in range(kw):
            patch = xpad[:, :, d1 * p:d1 * p + s1 * (ho - 1) + 1:s1, d2 * q:d2 * q + s2 * (wo - 1) + 1:s2]
            y += np.einsum("nchw,kc->nkhw", patch, w[:, :, p, q])
    if b is not None:
        y += b[None, :, None, None]
    return y


def ref_pool(x, kernel_size, stride=None, padding=0, mode="max"):
    """Loop over output pixels; padding is -inf for max, 0 (counted) for avg."""
    (kh, kw) = pair(kernel_size, "size", 0)
    (s1, s2) = pair(stride if stride is not None else kernel_size, "size", 0)
    ph, pw = pair(padding, "size", 0)
    fill = -np.inf if mode == "max" else 0.0
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = (xpad.shape[2] - kh) // s1 + 1, (xpad.shape[3] - kw) // s2 + 1
    y = np.empty(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xpad[:, :, i * s1:i * s1 + kh, j * s2:j * s2 + kw]
            y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.mean(axis=(2, 3))
    return y


def ref_adaptive_avg(x, out):
    oh, ow = pair(out, "size", 0)
    h, w = x.shape[2:]
    y = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            a, b = i * h // oh, -(-(i + 1) * h // oh)
            e, f = j * w // ow, -(-(j + 1) * w // ow)
            y[:, :, i, j] = x[:, :, a:b, e:f].mean(axis=(2, 3))
    return y


def conv_case(id, xshape, wshape, bias=True, **kw):
    def inputs(rng):
        arrs = [rng.standard_normal(xshape), rng.standard_normal(wshape) * 0.5]
        return arrs + [rng.standard_normal(wshape[0])] if bias else arrs
    return Case("conv2d", id, lambda *t: conv2d(*t, **kw), inputs,
                ref=lambda *a: ref_conv2d(*a, **kw), f32_tol=1e-4)


def pool_case(op, fn, id, xshape, mode, **kw):
    return Case(op, id, lambda x: fn(x, **kw), lambda rng: [distinct(xshape, rng)],
                ref=lambda x: ref_pool(x, mode=mode, **kw))


CASES = [
    conv_case("k3-s1-p0", (2, 3, 7, 6), (4, 3, 3, 3)),
    conv_case("k3-s1-p1", (2, 3, 6, 6), (4, 3, 3, 3), padding=1),
    conv_case("k3-s2-p1", (2, 3, 7, 8), (5, 3, 3, 3), stride=2, padding=1),
    conv_case("k3-same-dil2", (1, 2, 7, 9), (3, 2, 3, 3), padding="same", dilation=2),
    conv_case("k5-same-nobias", (2, 2, 6, 7), (3, 2, 5, 5), bias=False, padding="same"),
    conv_case("k1-s2-batch1", (1, 4, 5, 6), (3, 4, 1, 1), stride=2),
    conv_case("k2-same-even", (2, 2, 5, 6), (3, 2, 2, 2), padding="same"),
    conv_case("k1-p1-stride1-col2im", (2, 3, 4, 5), (2, 3, 1, 1), padding=1),
    conv_case("k3x2-pair-args", (2, 3, 9, 7), (2, 3, 3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    conv_case("k5-s2-p2-dil2-nobias", (1, 2, 11, 10), (2, 2, 5, 5), bias=False, stride=2, padding=2, dilation=2),
    pool_case("max_pool2d", max_pool2d, "k2", (2, 3, 6, 8), "max", kernel_size=2),
    pool_case("max_pool2d", max_pool2d, "k3-s2-overlap-p1", (2, 2, 7, 6), "max", kernel_size=3, stride=2, padding=1),
    pool_case("max_pool2d", max_pool2d, "k3-s1-overlap", (1, 2, 5, 6), "max", kernel_size=3, stride=1),
    pool_case("max_pool2d", max_pool2d, "k3x2-odd", (2, 2, 7, 5), "max", kernel_size=(3, 2)),
    pool_case("avg_pool2d", avg_pool2d, "k2", (2, 3, 6, 8), "avg", kernel_size=2),
    pool_case("avg_pool2d", avg_pool2d, "k3-s2-overlap-p1", (2, 2, 7, 6), "avg", kernel_size=3, stride=2, padding=1),
    pool_case("avg_pool2d", avg_pool2d, "k3-s1-p1", (1, 2, 5, 6), "avg", kernel_size=3, stride=1, padding=1),
    Case("adaptive_avg_pool2d", "global", lambda x: adaptive_avg_pool2d(x, 1), lambda rng: [rng.standard_normal((2, 3, 5, 4))],
         ref=lambda x: ref_adaptive_avg(x, 1)),
    Case("adaptive_avg_pool2d", "3x2-uneven", lambda x: adaptive_avg_pool2d(x, (3, 2)),
         lambda rng: [rng.standard_normal((2, 2, 7, 5))], ref=lambda x: ref_adaptive_avg(x, (3, 2))),
]
