"""Every registered op: forward against its NumPy formula (float32 and float64, dtype asserted)
and backward against central differences in float64, on every backend."""
import numpy as np
import pytest

import minidl as mdl
from minidl import backend
from tests.gradcases import all_cases

CASES = all_cases()
IDS = [c.name for c in CASES]


def _make(case, dtype, device, seed=0):
    arrays = case.inputs(np.random.default_rng(seed))
    tensors = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            tensors.append(mdl.Tensor(a.astype(dtype), requires_grad=True, device=device))
        else:
            tensors.append(mdl.Tensor(a, device=device))
    return arrays, tensors


def test_every_registered_op_has_a_gradient_check_case():
    covered = {c.op for c in CASES}
    missing = sorted(set(mdl.OP_REGISTRY) - covered)
    assert not missing, f"ops without a gradient-check case in tests/cases_*.py: {missing}"
    unknown = sorted(covered - set(mdl.OP_REGISTRY))
    assert not unknown, f"cases name ops that are not registered: {unknown}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_formula(case, dtype, device):
    if case.ref is None:
        pytest.skip(f"{case.name} has no closed-form NumPy formula; its forward is checked in its own test file")
    arrays, tensors = _make(case, dtype, device)
    out = case.fn(*tensors)
    assert out.dtype == np.dtype(dtype), f"{case.name}: output dtype {out.dtype}, expected {dtype}"
    assert out.device == (device if case.op != "to_device" else "cpu")  # the to_device case moves to the CPU
    expected = case.ref(*[np.asarray(a) for a in arrays])
    tol = case.f32_tol if dtype == "float32" else 1e-10
    np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_central_differences(case, device):
    _, tensors = _make(case, "float64", device)
    assert mdl.gradcheck(case.fn, tensors, **case.check)


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(mdl.Function):  # no registry name: this op exists only for this test
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return gy * 3 * self.x  # should be 2 * x

    x = mdl.Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    with pytest.raises(mdl.GradcheckError) as err:
        mdl.gradcheck(lambda a: WrongSquare()(a), [x], names=["x"])
    msg = str(err.value)
    assert "x" in msg and "worst element" in msg and "analytic" in msg and "numerical" in msg
    assert mdl.gradcheck(lambda a: WrongSquare()(a), [x], raise_exception=False) is False


def test_gradcheck_samples_large_inputs_and_uses_random_upstream():
    calls = []
    x = mdl.Tensor(np.random.default_rng(0).standard_normal(1000), requires_grad=True)

    def fn(a):
        calls.append(1)
        return a.softmax()  # its plain sum has zero gradient: only a random upstream tests it

    assert mdl.gradcheck(fn, [x], max_elements=10)
    assert len(calls) == 1 + 2 * 10


def test_gradcheck_rejects_float32_inputs():
    x = mdl.Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        mdl.gradcheck(lambda a: a * 2.0, [x])
