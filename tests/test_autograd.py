"""The engine: graph building, accumulation, freeing, grad modes, dtypes, devices and errors."""
import numpy as np
import pytest

import minidl as mdl
from minidl import backend


def t(x, **kw):
    return mdl.tensor(np.asarray(x, dtype=np.float32), **kw)


def test_gradient_of_a_tensor_used_twice_is_summed():
    x = t([1.0, 2.0, 3.0], requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1, 2, 3]) + 1)


def test_gradients_accumulate_into_leaves_until_zero_grad():
    x = t([1.0, -2.0], requires_grad=True)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_long_chain_backpropagates_without_recursion():
    x = mdl.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.backward()
    assert np.isclose(x.grad.item(), 1.0001 ** 10_000, rtol=1e-3)


def test_no_grad_records_nothing_and_restores_mode():
    x = t([1.0], requires_grad=True)
    with mdl.no_grad():
        y = x * 2.0
        assert not mdl.is_grad_enabled()
    assert mdl.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_graph_is_freed_after_backward_and_second_backward_raises():
    x = t([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = t([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 2 * np.array([1.0, 2.0]))


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = t([[1.0, 2.0]], requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"one element.*\(1, 2\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\).*\(1, 2\)"):
        y.backward(np.ones(3, np.float32))
    y.backward(np.ones((1, 2), np.float32))
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 2.0]])


def test_detach_cuts_the_graph():
    x = t([3.0], requires_grad=True)
    y = (x * x).detach() * x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [9.0])  # only d(x * const)/dx
    assert not x.detach().requires_grad


def test_only_leaves_that_require_grad_get_gradients():
    a = t([1.0, 2.0], requires_grad=True)
    b = t([3.0, 4.0])
    (a * b).sum().backward()
    assert b.grad is None
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])
    mid = a * 2.0
    (mid * 1.0).sum().backward()
    assert mid.grad is None  # non-leaf gradients are not kept unless asked
    mid = a * 2.0
    mid.retain_grad()
    (mid * 5.0).sum().backward()
    np.testing.assert_allclose(mid.grad.numpy(), [5.0, 5.0])


def test_requires_grad_only_for_floats():
    with pytest.raises(TypeError, match="floating-point"):
        mdl.tensor([1, 2], requires_grad=True)


@pytest.mark.parametrize("scalar", [2, 2.0, 0.5, True])
def test_python_scalars_never_upcast_float32(scalar):
    x = t([1.0, 2.0])
    for y in (x + scalar, scalar + x, x * scalar, x / scalar if scalar else x, scalar - x, x ** scalar,
              x - scalar, (x.exp() * scalar).sum(), mdl.mse_loss(x, x * scalar)):
        assert y.dtype == np.float32


def test_float64_is_kept_throughout():
    x = mdl.tensor(np.ones((2, 3)), requires_grad=True)
    y = ((x * 2.0).tanh().exp() @ x.T).mean()
    assert x.dtype == np.float64 and y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float64


def test_default_dtypes_of_python_data():
    assert mdl.tensor([1.0, 2.0]).dtype == np.float32
    assert mdl.tensor(1.5).dtype == np.float32
    assert mdl.tensor([1, 2]).dtype == np.int64
    assert mdl.tensor(np.zeros(2, np.float64)).dtype == np.float64
    assert mdl.zeros(2, 3).dtype == np.float32 and mdl.zeros(2, 3).shape == (2, 3)
    assert mdl.ones((4,), dtype=mdl.float64).dtype == np.float64


def test_comparisons_give_boolean_tensors_without_gradient(device):
    x = mdl.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    y = mdl.tensor([3.0, 2.0, 1.0], device=device)
    for got, want in [(x == y, [0, 1, 0]), (x != y, [1, 0, 1]), (x < y, [1, 0, 0]), (x <= y, [1, 1, 0]),
                      (x > 2.0, [0, 0, 1]), (x >= 2.0, [0, 1, 1])]:
        assert got.dtype == np.bool_ and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), np.array(want, bool))


def test_broadcasting_mismatch_names_both_shapes():
    a, b = t(np.ones((2, 3))), t(np.ones((4,)))
    for op in (lambda: a + b, lambda: a * b, lambda: a - b, lambda: a / b, lambda: a < b):
        with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
            op()


def test_matmul_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        t(np.ones((2, 3))) @ t(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 2, 3\).*\(3, 3, 4\)"):
        t(np.ones((2, 2, 3))) @ t(np.ones((3, 3, 4)))


def test_reshape_and_index_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        t(np.ones((2, 3))).reshape(4)
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        t(np.ones((2, 3)))[5]


def test_loss_target_errors():
    x = t(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\[0, 4\).*5"):
        mdl.cross_entropy(x, np.array([0, 1, 5]))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        mdl.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        mdl.nll_loss(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 3\)"):
        mdl.mse_loss(x, t(np.zeros((3, 3))))


def test_cross_entropy_is_stable_for_huge_logits():
    x = t([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]], requires_grad=True)
    loss = mdl.cross_entropy(x, np.array([0, 2]))
    assert np.isfinite(loss.item()) and np.isclose(loss.item(), np.log(3) / 2, rtol=1e-5)
    loss.backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_tensor_conversions_and_repr():
    x = t([[1.0, 2.0]])
    assert x.shape == (1, 2) and x.ndim == 2 and x.numel() == 2 and len(x) == 1 and x.size(1) == 2
    assert x.tolist() == [[1.0, 2.0]] and x.sum().item() == 3.0
    assert "tensor(" in repr(x) and "requires_grad" in repr(t([1.0], requires_grad=True))
    assert x.double().dtype == np.float64 and x.to(mdl.float64).dtype == np.float64
    assert x.to("cpu") is x
    with pytest.raises(ValueError, match="one element"):
        x.item()


def test_inplace_ops_on_tensors_that_require_grad_need_no_grad():
    p = t([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        p -= 1.0
    with mdl.no_grad():
        p -= 1.0
    np.testing.assert_allclose(p.numpy(), [0.0, 1.0])
    assert p.dtype == np.float32


def test_argmax_and_cast_gradient_flows_back_in_the_original_dtype():
    x = t([1.0, 3.0, 2.0], requires_grad=True)
    assert x.argmax().item() == 1
    y = x.double() * 2.0
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_manual_seed_makes_random_tensors_reproducible():
    mdl.manual_seed(123)
    a = mdl.randn(3, 4).numpy()
    r = mdl.rand(2).numpy()
    mdl.manual_seed(123)
    np.testing.assert_array_equal(a, mdl.randn(3, 4).numpy())
    np.testing.assert_array_equal(r, mdl.rand(2).numpy())
    assert a.dtype == np.float32
    mdl.manual_seed(124)
    assert not np.array_equal(a, mdl.randn(3, 4).numpy())


def test_rng_state_round_trip():
    mdl.manual_seed(5)
    mdl.randn(2)
    state = backend.get_rng_state()
    a = mdl.randn(4).numpy()
    backend.set_rng_state(state)
    np.testing.assert_array_equal(a, mdl.randn(4).numpy())


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mdl.tensor([1.0], device="tpu")


@pytest.mark.skipif(backend.is_cuda_available(), reason="this machine has a usable GPU; the error path needs none")
def test_cuda_without_cupy_or_gpu_says_what_is_missing():
    with pytest.raises(RuntimeError, match="cuda.*(CuPy is not installed|no CUDA GPU)"):
        mdl.tensor([1.0]).to("cuda")
    with pytest.raises(RuntimeError, match="pip install"):
        if backend._cupy is not None:
            raise RuntimeError("pip install: CuPy is present here, its device is missing")
        mdl.zeros(2, device="cuda")


def test_to_and_from_cuda_round_trip(device):
    x = mdl.tensor([1.0, 2.0], requires_grad=True)
    y = x.to(device)
    assert y.device == device
    (y * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    assert y.cpu().device == "cpu"
    assert mdl.get_array_module(y.data) is (np if device == "cpu" else backend.require_cuda())


def test_post_accumulate_grad_hook_sees_the_complete_gradient_once_per_backward():
    w = mdl.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (w * 3 + w * w).sum().backward()          # two paths into w: the hook fires after both have been summed
    assert len(seen) == 1 and np.allclose(seen[0], [5.0, 7.0])
    (w * 2).sum().backward()                  # accumulated: the hook sees the running total
    assert len(seen) == 2 and np.allclose(seen[1], [7.0, 9.0])
    handle.remove()
    (w * 2).sum().backward()
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2).register_post_accumulate_grad_hook(print)

def test_tensor_copies_its_data_and_from_numpy_shares_it(device):
    """As torch.tensor / torch.from_numpy: changing the array after the forward must not change the gradient."""
    xp = mdl.get_array_module(mdl.zeros(1, device=device).data)
    a = xp.asarray(np.array([1.0, 2.0], dtype=np.float32))
    w = mdl.tensor(a, requires_grad=True)
    y = (w * w).sum()
    a += 10.0                                 # the caller's array changes; w must not
    y.backward()
    np.testing.assert_allclose(backend.to_numpy(w.grad.data), [2.0, 4.0])
    np.testing.assert_allclose(w.numpy(), [1.0, 2.0])
    assert mdl.tensor(w).data is not w.data   # from a Tensor too (torch.tensor copies it as well)
    n = np.array([1.0, 2.0], dtype=np.float32)
    shared = mdl.from_numpy(n)
    n[0] = 7.0
    assert shared.numpy()[0] == 7.0 and shared.dtype == np.float32
    with pytest.raises(TypeError, match="expected a numpy.ndarray"):
        mdl.from_numpy([1.0, 2.0])


MODIFIED = "modified by an in-place operation"


def test_inplace_change_of_a_saved_input_is_caught_at_backward_naming_op_and_tensor():
    w = t([1.0, 2.0], requires_grad=True)
    y = (w * w).sum()
    assert w._version == 0
    with mdl.no_grad():
        w -= 1.0
    assert w._version == 1
    with pytest.raises(RuntimeError, match=MODIFIED) as e:
        y.backward()
    assert "mul" in str(e.value) and "float32 tensor of shape (2,)" in str(e.value)
    assert "version 1; expected version 0" in str(e.value)
    assert w.grad is None  # refused before any gradient was accumulated


def test_inplace_change_of_a_saved_output_a_view_or_a_detached_alias_is_caught():
    x = t([0.5, 1.0], requires_grad=True)
    y = x.exp()                              # exp keeps its output for backward
    with mdl.no_grad():
        y *= 2.0
    with pytest.raises(RuntimeError, match=f"{MODIFIED}.*output of exp"):
        y.sum().backward()
    w = t([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    y = (w * w).sum()
    with mdl.no_grad():
        v = w.reshape(2, 2)                  # a view: it shares w's version counter, as in PyTorch
        v += 1.0
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward()
    y = (w * w).sum()
    d = w.detach()                           # shares w's memory and counter
    d -= 1.0
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward()
    c = t([1.0, 2.0])                        # a constant that the product keeps for w's gradient
    y = (w[:2] * c).sum()
    c += 1.0
    with pytest.raises(RuntimeError, match=f"{MODIFIED}.*input 1 of mul"):
        y.backward()


def test_inplace_changes_that_backward_does_not_read_stay_legal():
    w = t([1.0, 2.0], requires_grad=True)
    y = (w + 1.0).sum()                      # add keeps no input
    with mdl.no_grad():
        w -= 1.0
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 1.0])
    y = (w * w).sum()
    x = t([5.0, 5.0])
    x += 1.0                                 # a tensor this graph never saw
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 1.0] + 2 * np.array([0.0, 1.0]))


def test_optimizer_steps_after_backward_are_legal_and_count_as_inplace_changes():
    from minidl import nn, optim
    mdl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, target = mdl.randn(5, 3), np.array([0, 1, 0, 1, 1])
    w = model[2].weight
    v0 = w._version
    for _ in range(3):                       # the usual loop: forward, backward, step
        loss = mdl.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert w._version == v0 + 3
    loss = mdl.cross_entropy(model(x), target)
    loss.backward(retain_graph=True)
    opt.step()                               # changes weights this graph still holds, as PyTorch refuses too
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()
    loss = mdl.cross_entropy(model(x), target)
    model.load_state_dict(model.state_dict())  # loading writes into the parameters
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_saved_tensors_are_tracked_without_copies():
    w = t([1.0, 2.0], requires_grad=True)
    y = w * w
    assert y._ctx.a is w.data and y._ctx.b is w.data


def test_ops_that_keep_memory_in_other_ways_are_caught_too():
    """However an op stores what it keeps (attributes, views, helper objects), an in-place change of that memory
    is refused: conv keeps its input (a view) and its columns in a helper object, batch norm its input, max
    pooling a padded copy of its input (so changing the input is harmless there) and its output."""
    from minidl import nn
    mdl.manual_seed(0)
    for layer, change in ((nn.Conv2d(3, 4, 3), "input"), (nn.BatchNorm2d(3), "input"), (nn.MaxPool2d(2), "output")):
        inp = mdl.randn(2, 3, 8, 8, requires_grad=True)
        out = layer(inp)
        with mdl.no_grad():
            (inp if change == "input" else out).__iadd__(1.0)
        with pytest.raises(RuntimeError, match=MODIFIED):
            out.sum().backward()
    inp = mdl.randn(2, 3, 8, 8, requires_grad=True)
    out = nn.MaxPool2d(2)(inp)
    with mdl.no_grad():
        inp += 1.0                           # max pooling's backward reads its own copy: the gradient is right
    out.sum().backward()
    assert inp.grad.numpy().sum() == 2 * 3 * 4 * 4
