"""The gradient-check cases: one or more per registered op, collected from tests/cases_*.py.

Each module ``tests/cases_<area>.py`` defines ``CASES``, a list of ``Case``.  The suite
(test_ops.py) checks every case's forward against its NumPy formula in float32 and
float64 and its backward with ``minidl.gradcheck`` in float64, on every backend; and it
fails when an op in ``minidl.OP_REGISTRY`` has no case.
"""
from __future__ import annotations

import glob
import importlib
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Case:
    op: str                      # the OP_REGISTRY name this case exercises
    id: str                      # short description, unique per op
    fn: Callable                 # (*tensors) -> tensor, built from minidl ops
    inputs: Callable             # rng -> list of NumPy arrays; float arrays become tensors that require grad,
                                 # integer and bool arrays become constant tensors
    ref: Callable | None = None  # (*float64 arrays) -> the expected forward output (a NumPy formula)
    check: dict = field(default_factory=dict)  # extra gradcheck keyword arguments (eps, atol, rtol, ...)
    f32_tol: float = 1e-5        # relative tolerance of the float32 forward against the float64 formula

    @property
    def name(self):
        return f"{self.op}-{self.id}"


def all_cases() -> list[Case]:
    cases = []
    here = os.path.dirname(__file__)
    for path in sorted(glob.glob(os.path.join(here, "cases_*.py"))):
        mod = importlib.import_module(f"tests.{os.path.basename(path)[:-3]}")
        cases.extend(mod.CASES)
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {dup}"
    return cases


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def distinct(shape, rng, scale=0.1):
    """Values at least ``scale`` apart (no ties for max/min/pooling, no kinks at 0)."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2 + 0.5) * scale).reshape(shape)


def away_from_zero(shape, rng, margin=0.1):
    """Normal samples pushed at least ``margin`` away from 0 (for relu, abs)."""
    x = rng.standard_normal(shape)
    return x + np.sign(x) * margin
