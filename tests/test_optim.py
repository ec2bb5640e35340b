"""Optimizers: three-step sequences computed by hand, dtypes, parameter groups, state_dict, errors,
and (where torch is importable) agreement with torch.optim."""
import math

import numpy as np
import pytest

import minidl as mdl
from minidl import backend
from minidl.optim import SGD, Adam, AdamW, Optimizer, RMSprop

try:
    import torch
except Exception as e:  # torch is only a reference here, never a dependency
    torch = None
    _TORCH_WHY = f"torch is not importable ({e})"
else:
    _TORCH_WHY = ""


def run(opt_cls, p0, grads, device="cpu", dtype=np.float64, **kw):
    """Feed the given gradients to an optimizer for len(grads) steps; return the parameter after each."""
    p = mdl.Tensor(np.array(p0, dtype=dtype), requires_grad=True, device=device)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = mdl.Tensor(np.array(g, dtype=dtype), device=device)
        opt.step()
        out.append(p.numpy().copy())
    return np.array(out), p, opt


# ---------------------------------------------------------------- sequences computed by hand
# Two elements per parameter: element 0 sees gradients 1, 0.5, -1 and starts at 1;
# element 1 sees -2, -2, -2 and starts at -2.
P0 = [1.0, -2.0]
GRADS = [[1.0, -2.0], [0.5, -2.0], [-1.0, -2.0]]


def test_sgd_plain_by_hand():
    # p <- p - 0.1 g:  1 -> 0.9 -> 0.85 -> 0.95;  -2 -> -1.8 -> -1.6 -> -1.4
    got, _, _ = run(SGD, P0, GRADS, lr=0.1)
    np.testing.assert_allclose(got, [[0.9, -1.8], [0.85, -1.6], [0.95, -1.4]], rtol=0, atol=1e-12)


def test_sgd_momentum_by_hand():
    # lr 0.1, momentum 0.9, element 0:
    # t1: b = g = 1                      p = 1 - 0.1*1 = 0.9
    # t2: b = 0.9*1 + 0.5 = 1.4          p = 0.9 - 0.14 = 0.76
    # t3: b = 0.9*1.4 - 1 = 0.26         p = 0.76 - 0.026 = 0.734
    # element 1: b = -2, -3.8, -5.42;    p = -1.8, -1.42, -0.878
    got, p, opt = run(SGD, P0, GRADS, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(got, [[0.9, -1.8], [0.76, -1.42], [0.734, -0.878]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [0.26, -5.42], rtol=0, atol=1e-12)


def test_sgd_nesterov_by_hand():
    # lr 0.1, momentum 0.9, nesterov: d = g + 0.9 b, element 0:
    # t1: b = 1,    d = 1 + 0.9       = 1.9     p = 1 - 0.19 = 0.81
    # t2: b = 1.4,  d = 0.5 + 1.26    = 1.76    p = 0.81 - 0.176 = 0.634
    # t3: b = 0.26, d = -1 + 0.234    = -0.766  p = 0.634 + 0.0766 = 0.7106
    # element 1: b = -2, -3.8, -5.42; d = -3.8, -5.42, -6.878; p = -1.62, -1.078, -0.3902
    got, _, _ = run(SGD, P0, GRADS, lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(got, [[0.81, -1.62], [0.634, -1.078], [0.7106, -0.3902]], rtol=0, atol=1e-12)


def test_sgd_weight_decay_and_dampening_by_hand():
    # lr 0.1, momentum 0.9, dampening 0.5, weight_decay 0.1 (g' = g + 0.1 p), element 0 only:
    # t1: g' = 1 + 0.1          = 1.1        b = 1.1 (no dampening on the first step)   p = 1 - 0.11 = 0.89
    # t2: g' = 0.5 + 0.089      = 0.589      b = 0.99 + 0.2945 = 1.2845                  p = 0.89 - 0.12845 = 0.76155
    # t3: g' = -1 + 0.076155    = -0.923845  b = 1.15605 - 0.4619225 = 0.6941275         p = 0.76155 - 0.06941275
    got, _, _ = run(SGD, [1.0], [[1.0], [0.5], [-1.0]], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1)
    np.testing.assert_allclose(got[:, 0], [0.89, 0.76155, 0.69213725], rtol=0, atol=1e-12)


def test_adam_by_hand_with_bias_correction():
    # lr 0.1, betas (0.9, 0.999), eps 1e-8.  Element 0 (g = 1, 0.5, -1):
    # t1: m = 0.1,   v = 0.001;     bias corrections 1 - 0.9 = 0.1, 1 - 0.999 = 0.001
    #     p = 1 - 0.1 * (0.1/0.1) / (sqrt(0.001/0.001) + 1e-8)            = 0.900000001
    # t2: m = 0.09 + 0.05 = 0.14,   v = 0.000999 + 0.00025 = 0.001249;    corrections 0.19, 0.001999
    #     p = 0.900000001 - 0.1 * (0.14/0.19) / (sqrt(0.001249/0.001999) + 1e-8)
    # t3: m = 0.126 - 0.1 = 0.026,  v = 0.001247751 + 0.001 = 0.002247751; corrections 0.271, 0.002997001
    #     p = p2 - 0.1 * (0.026/0.271) / (sqrt(0.002247751/0.002997001) + 1e-8)
    # Element 1 (constant g = -2): bias correction makes m_hat = -2 and v_hat = 4 exactly, so every
    # step moves by 0.1 * 2 / (2 + 1e-8): -1.9000000005, -1.800000001, -1.7000000015.
    p1 = 1 - 0.1 * 1 / (1 + 1e-8)
    p2 = p1 - 0.1 * (0.14 / 0.19) / (math.sqrt(0.001249 / 0.001999) + 1e-8)
    p3 = p2 - 0.1 * (0.026 / 0.271) / (math.sqrt(0.002247751 / 0.002997001) + 1e-8)
    np.testing.assert_allclose([p1, p2, p3], [0.900000001, 0.8067820382981611, 0.7957037312938717], rtol=1e-12)
    got, p, opt = run(Adam, P0, GRADS, lr=0.1)
    np.testing.assert_allclose(got[:, 0], [p1, p2, p3], rtol=1e-12)
    np.testing.assert_allclose(got[:, 1], [-1.9000000005, -1.800000001, -1.7000000015], rtol=1e-12)
    st = opt.state[p]
    assert st["step"] == 3
    np.testing.assert_allclose(st["exp_avg"], [0.026, -0.542], rtol=1e-12)   # m3 = 0.9*(-0.38) - 0.2
    np.testing.assert_allclose(st["exp_avg_sq"], [0.002247751, 0.011988004], rtol=1e-12)
    assert "max_exp_avg_sq" not in st


def test_adam_l2_weight_decay_by_hand():
    # weight_decay 0.1 folds 0.1 p into the gradient; element 0 (g = 1, 0.5, -1):
    # t1: g' = 1.1, m = 0.11, v = 0.00121;  the first Adam step is lr * g'/|g'|: p = 1 - 0.1 * 1.1/(1.1 + 1e-8)
    # t2: g' = 0.5 + 0.1 p1, m = 0.099 + 0.1 g', v = 0.000999*1.21 + 0.001 g'^2 ...
    p1 = 1 - 0.1 * 1.1 / (1.1 + 1e-8)
    g2 = 0.5 + 0.1 * p1
    m2, v2 = 0.9 * 0.11 + 0.1 * g2, 0.999 * 0.00121 + 0.001 * g2 ** 2
    p2 = p1 - 0.1 * (m2 / 0.19) / (math.sqrt(v2 / 0.001999) + 1e-8)
    g3 = -1 + 0.1 * p2
    m3, v3 = 0.9 * m2 + 0.1 * g3, 0.999 * v2 + 0.001 * g3 ** 2
    p3 = p2 - 0.1 * (m3 / 0.271) / (math.sqrt(v3 / 0.002997001) + 1e-8)
    np.testing.assert_allclose([p1, p2, p3], [0.9000000009090909, 0.8057717968921709, 0.7850508045178748], rtol=1e-12)
    got, _, _ = run(Adam, [1.0], [[1.0], [0.5], [-1.0]], lr=0.1, weight_decay=0.1)
    np.testing.assert_allclose(got[:, 0], [p1, p2, p3], rtol=1e-12)


def test_adamw_decoupled_weight_decay_by_hand():
    # AdamW shrinks p by (1 - lr*wd) = 0.99 first, then takes the plain Adam step of test_adam_by_hand:
    # t1: p = 0.99 * 1 - 0.1/(1 + 1e-8)                                       = 0.890000001
    # t2: p = 0.99 * p1 - 0.1 * (0.14/0.19) / (sqrt(0.001249/0.001999) + 1e-8)
    # t3: p = 0.99 * p2 - 0.1 * (0.026/0.271) / (sqrt(0.002247751/0.002997001) + 1e-8)
    p1 = 0.99 * 1 - 0.1 / (1 + 1e-8)
    p2 = 0.99 * p1 - 0.1 * (0.14 / 0.19) / (math.sqrt(0.001249 / 0.001999) + 1e-8)
    p3 = 0.99 * p2 - 0.1 * (0.026 / 0.271) / (math.sqrt(0.002247751 / 0.002997001) + 1e-8)
    np.testing.assert_allclose([p1, p2, p3], [0.890000001, 0.7878820382881611, 0.7689249109009901], rtol=1e-12)
    got, _, _ = run(AdamW, [1.0], [[1.0], [0.5], [-1.0]], lr=0.1, weight_decay=0.1)
    np.testing.assert_allclose(got[:, 0], [p1, p2, p3], rtol=1e-12)
    assert AdamW([mdl.Tensor([1.0], requires_grad=True)]).defaults["weight_decay"] == 1e-2


def test_adam_amsgrad_by_hand():
    # betas (0.9, 0.5) so that v falls: g = 2, 0.1, 0.1 -> v = 2, 1.005, 0.5075 while max(v) stays 2;
    # m = 0.2, 0.19, 0.181; corrections 1 - 0.9^t = 0.1, 0.19, 0.271 and 1 - 0.5^t = 0.5, 0.75, 0.875.
    # amsgrad:  p_t = p_{t-1} - 0.1 * (m/bc1) / (sqrt(2/bc2) + 1e-8)
    # plain:    p_t = p_{t-1} - 0.1 * (m/bc1) / (sqrt(v/bc2) + 1e-8)
    a1 = 1 - 0.1 * (0.2 / 0.1) / (math.sqrt(2 / 0.5) + 1e-8)
    a2 = a1 - 0.1 * (0.19 / 0.19) / (math.sqrt(2 / 0.75) + 1e-8)
    a3 = a2 - 0.1 * (0.181 / 0.271) / (math.sqrt(2 / 0.875) + 1e-8)
    b2 = a1 - 0.1 * (0.19 / 0.19) / (math.sqrt(1.005 / 0.75) + 1e-8)
    b3 = b2 - 0.1 * (0.181 / 0.271) / (math.sqrt(0.5075 / 0.875) + 1e-8)
    np.testing.assert_allclose([a1, a2, a3], [0.9000000005, 0.8387627573054205, 0.7945855447468235], rtol=1e-12)
    np.testing.assert_allclose([b2, b3], [0.8136131586881326, 0.725914029405694], rtol=1e-12)
    grads = [[2.0], [0.1], [0.1]]
    got, p, opt = run(Adam, [1.0], grads, lr=0.1, betas=(0.9, 0.5), amsgrad=True)
    np.testing.assert_allclose(got[:, 0], [a1, a2, a3], rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["max_exp_avg_sq"], [2.0], rtol=1e-12)
    got, _, _ = run(Adam, [1.0], grads, lr=0.1, betas=(0.9, 0.5))
    np.testing.assert_allclose(got[:, 0], [a1, b2, b3], rtol=1e-12)


def test_rmsprop_by_hand():
    # lr 0.01, alpha 0.99: s = 0.01 g1^2, then 0.99 s + 0.01 g^2; p <- p - 0.01 g / (sqrt(s) + 1e-8)
    # t1: s = 0.01                     p = 1 - 0.01 * 1 / (0.1 + 1e-8)
    # t2: s = 0.0099 + 0.0025 = 0.0124 p = p1 - 0.01 * 0.5 / (sqrt(0.0124) + 1e-8)
    # t3: s = 0.012276 + 0.01          p = p2 + 0.01 / (sqrt(0.022276) + 1e-8)
    p1 = 1 - 0.01 / (0.1 + 1e-8)
    p2 = p1 - 0.005 / (math.sqrt(0.0124) + 1e-8)
    p3 = p2 + 0.01 / (math.sqrt(0.022276) + 1e-8)
    np.testing.assert_allclose([p1, p2, p3], [0.9000000099999991, 0.855098688525563, 0.9220997011195861], rtol=1e-12)
    got, p, opt = run(RMSprop, [1.0], [[1.0], [0.5], [-1.0]], lr=0.01)
    np.testing.assert_allclose(got[:, 0], [p1, p2, p3], rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["square_avg"], [0.022276], rtol=1e-12)


def test_rmsprop_centered_momentum_weight_decay_by_hand():
    # lr 0.01, alpha 0.5, weight_decay 0.1, momentum 0.9, centered:
    # g' = g + 0.1 p; s = 0.5 s + 0.5 g'^2; a = 0.5 a + 0.5 g'; b = 0.9 b + g' / (sqrt(s - a^2) + 1e-8); p -= 0.01 b
    # t1: g' = 1.1, s = 0.605, a = 0.55, s - a^2 = 0.3025 = 0.55^2, b = 1.1/0.55 = 2, p = 1 - 0.02 = 0.98
    g1 = 1.1
    s1, a1 = 0.5 * g1 ** 2, 0.5 * g1
    b1 = g1 / (math.sqrt(s1 - a1 ** 2) + 1e-8)
    p1 = 1 - 0.01 * b1
    g2 = 0.5 + 0.1 * p1
    s2, a2 = 0.5 * s1 + 0.5 * g2 ** 2, 0.5 * a1 + 0.5 * g2
    b2 = 0.9 * b1 + g2 / (math.sqrt(s2 - a2 ** 2) + 1e-8)
    p2 = p1 - 0.01 * b2
    g3 = -1 + 0.1 * p2
    s3, a3 = 0.5 * s2 + 0.5 * g3 ** 2, 0.5 * a2 + 0.5 * g3
    b3 = 0.9 * b2 + g3 / (math.sqrt(s3 - a3 ** 2) + 1e-8)
    p3 = p2 - 0.01 * b3
    np.testing.assert_allclose([p1, p2, p3], [0.9800000003636363, 0.9466528379733533, 0.9281102459717948], rtol=1e-12)
    got, p, opt = run(RMSprop, [1.0], [[1.0], [0.5], [-1.0]], lr=0.01, alpha=0.5, weight_decay=0.1, momentum=0.9,
                      centered=True)
    np.testing.assert_allclose(got[:, 0], [p1, p2, p3], rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["grad_avg"], [a3], rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [b3], rtol=1e-12)


def test_maximize_flips_the_gradient():
    got, _, _ = run(SGD, P0, GRADS, lr=0.1, maximize=True)
    np.testing.assert_allclose(got[-1], [1.05, -2.6], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- behaviour
ALL = [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
       (SGD, dict(lr=0.1)),
       (Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True)),
       (AdamW, dict(lr=0.01)),
       (RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01))]
IDS = ["sgd-nesterov", "sgd", "adam-amsgrad", "adamw", "rmsprop-centered"]


@pytest.mark.parametrize("cls,kw", ALL, ids=IDS)
def test_float32_stays_float32_in_place_and_grad_untouched(cls, kw, device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    p = mdl.Tensor(x.astype(np.float32), requires_grad=True, device=device)
    data_before = p.data
    opt = cls([p], **kw)
    ref64, _, _ = run(cls, x, [x * 0.5 + 0.1 * t for t in range(3)], dtype=np.float64, **kw)
    for t in range(3):
        g = backend.to_device((x * 0.5 + 0.1 * t).astype(np.float32), device)
        g_copy = g.copy()
        p.grad = mdl.Tensor(g)
        opt.step()
        assert (p.grad.data == g_copy).all(), "the optimizer wrote into the gradient array"
        assert p.data is data_before, "the update must be in place on p.data"
        assert p.dtype == np.float32
        for k, v in opt.state[p].items():
            if k != "step":
                assert v.dtype == np.float32, f"state {k} became {v.dtype}"
                assert backend.device_of(v) == device
    np.testing.assert_allclose(p.numpy(), ref64[-1], rtol=1e-5, atol=1e-6)


def test_shared_gradient_array_is_safe():
    """Two parameters whose .grad share one array: both get the right update, the array is untouched."""
    g = np.array([1.0, -1.0])
    a = mdl.Tensor([1.0, 2.0], requires_grad=True, dtype=np.float64)
    b = mdl.Tensor([3.0, 4.0], requires_grad=True, dtype=np.float64)
    opt = SGD([a, b], lr=0.5, momentum=0.9, weight_decay=0.1)
    a.grad, b.grad = mdl.Tensor(g), mdl.Tensor(g)
    opt.step()
    np.testing.assert_array_equal(g, [1.0, -1.0])
    np.testing.assert_allclose(a.numpy(), [1 - 0.5 * 1.1, 2 - 0.5 * (-1 + 0.2)])
    np.testing.assert_allclose(b.numpy(), [3 - 0.5 * 1.3, 4 - 0.5 * (-1 + 0.4)])
    # the momentum buffer is a copy, not the gradient itself
    assert opt.state[a]["momentum_buffer"] is not g


def test_trains_a_linear_regression():
    rng = np.random.default_rng(1)
    X = mdl.Tensor(rng.standard_normal((64, 3)))
    w_true = np.array([[1.5], [-2.0], [0.5]], dtype=np.float32)
    y = mdl.Tensor(X.numpy() @ w_true)
    for cls, kw in [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=0.05)), (AdamW, dict(lr=0.05, weight_decay=0)),
                    (RMSprop, dict(lr=0.01))]:
        w = mdl.Tensor(np.zeros((3, 1), np.float32), requires_grad=True)
        opt = cls([w], **kw)
        for _ in range(300):
            opt.zero_grad()
            loss = ((X @ w - y) ** 2).mean()
            loss.backward()
            opt.step()
        assert float(loss) < 1e-4, f"{cls.__name__} did not fit: loss {float(loss)}"
        np.testing.assert_allclose(w.numpy(), w_true, atol=1e-2)


def test_param_groups_with_their_own_lr_and_weight_decay():
    w = mdl.Tensor([1.0, 1.0], requires_grad=True, dtype=np.float64)
    bias = mdl.Tensor([1.0], requires_grad=True, dtype=np.float64)
    opt = SGD([{"params": [w], "weight_decay": 0.5}, {"params": [bias], "lr": 0.2}], lr=0.1, weight_decay=0.0)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["weight_decay"] == 0.5
    assert opt.param_groups[1]["lr"] == 0.2 and opt.param_groups[1]["weight_decay"] == 0.0
    w.grad = mdl.Tensor(np.zeros(2))
    bias.grad = mdl.Tensor(np.ones(1))
    opt.step()
    np.testing.assert_allclose(w.numpy(), [1 - 0.1 * 0.5, 1 - 0.1 * 0.5])  # decayed by the L2 term only
    np.testing.assert_allclose(bias.numpy(), [1 - 0.2])                     # its own lr, no decay
    opt.add_param_group({"params": mdl.Tensor([0.0], requires_grad=True), "momentum": 0.9})
    assert opt.param_groups[2]["lr"] == 0.1 and opt.param_groups[2]["momentum"] == 0.9
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [w]})


def test_zero_grad_and_params_without_grad():
    a = mdl.Tensor([1.0, 2.0], requires_grad=True)
    b = mdl.Tensor([3.0], requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    a.grad = mdl.Tensor(np.ones(2, np.float32))
    opt.step()
    assert b not in opt.state and b.numpy()[0] == 3.0  # no gradient: untouched, no state
    old = a.grad.data
    opt.zero_grad(set_to_none=False)
    assert a.grad is not None and (a.grad.data == 0).all() and a.grad.dtype == np.float32
    assert (old == 1).all(), "zero_grad(set_to_none=False) must not zero the shared old array in place"
    assert b.grad is None
    opt.zero_grad()
    assert a.grad is None


def test_step_with_closure_returns_the_loss():
    w = mdl.Tensor([2.0], requires_grad=True)
    opt = SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert float(loss) == 4.0
    assert w.numpy()[0] == 2.0 - 0.25 * 4.0


@pytest.mark.parametrize("cls,kw", ALL, ids=IDS)
def test_state_dict_round_trip_continues_identically(cls, kw):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    grads = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(6)]
    p = mdl.Tensor(x.copy(), requires_grad=True)
    q = mdl.Tensor(np.zeros(2, np.float32), requires_grad=True)  # never gets a gradient: no state
    opt = cls([{"params": [q]}, {"params": [p], "lr": kw["lr"] * 0.5}], **kw)
    for g in grads[:3]:
        p.grad = mdl.Tensor(g)
        opt.step()
    sd = opt.state_dict()
    assert list(sd["state"]) == [1], "state is keyed by the parameter's index across groups"
    assert sd["param_groups"][0]["params"] == [0] and sd["param_groups"][1]["params"] == [1]
    p2 = mdl.Tensor(p.numpy().copy(), requires_grad=True)
    q2 = mdl.Tensor(np.zeros(2, np.float32), requires_grad=True)
    opt2 = cls([{"params": [q2]}, {"params": [p2]}], **kw)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[1]["lr"] == kw["lr"] * 0.5 and opt2.param_groups[1]["params"][0] is p2
    for k, v in opt.state[p].items():  # a copy, not an alias
        if k != "step":
            assert opt2.state[p2][k] is not v
            np.testing.assert_array_equal(opt2.state[p2][k], v)
    for g in grads[3:]:
        p.grad, p2.grad = mdl.Tensor(g), mdl.Tensor(g.copy())
        opt.step()
        opt2.step()
    np.testing.assert_array_equal(p.numpy(), p2.numpy())


def test_load_state_dict_casts_to_the_parameter_dtype_and_checks_shapes():
    p = mdl.Tensor([1.0, 2.0], requires_grad=True, dtype=np.float64)
    opt = Adam([p])
    p.grad = mdl.Tensor(np.ones(2))
    opt.step()
    sd = opt.state_dict()
    p32 = mdl.Tensor([1.0, 2.0], requires_grad=True)
    opt32 = Adam([p32])
    opt32.load_state_dict(sd)
    assert opt32.state[p32]["exp_avg"].dtype == np.float32 and opt32.state[p32]["step"] == 1
    with pytest.raises(ValueError, match="has 1 parameter groups, this optimizer has 2"):
        Adam([{"params": [mdl.Tensor([1.0], requires_grad=True)]},
              {"params": [mdl.Tensor([1.0], requires_grad=True)]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="has 1 parameters, this optimizer's has 2"):
        Adam([mdl.Tensor([1.0], requires_grad=True), mdl.Tensor([1.0], requires_grad=True)]).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


def test_bad_arguments_raise_clear_errors():
    p = mdl.Tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="learning rate"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="params\\[1\\].*ndarray"):
        SGD([p, np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="not a leaf"):
        SGD([p * 2], lr=0.1)
    opt = SGD([p], lr=0.1)
    p.grad = mdl.Tensor(np.ones(1))  # float64 gradient for a float32 parameter
    with pytest.raises(TypeError, match="dtype float64 for a parameter of dtype float32"):
        opt.step()
    p.grad = mdl.Tensor(np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"shape \(2,\) for a parameter of shape \(1,\)"):
        opt.step()
    assert isinstance(SGD([p]), Optimizer) and SGD([p]).defaults["lr"] == 1e-3
    assert "lr: 0.001" in repr(SGD([p]))


# ---------------------------------------------------------------- against torch.optim
TORCH_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.05)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.8, centered=True, weight_decay=0.1)),
]


@pytest.mark.skipif(torch is None, reason=_TORCH_WHY or "torch available")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kw", TORCH_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TORCH_CASES)])
def test_matches_torch_optim(name, kw, dtype):
    import minidl.optim as mo
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5)).astype(dtype)
    grads = [rng.standard_normal((4, 5)).astype(dtype) for _ in range(8)]
    p = mdl.Tensor(x.copy(), requires_grad=True)
    tp = torch.tensor(x.copy(), requires_grad=True)
    opt, topt = getattr(mo, name)([p], **kw), getattr(torch.optim, name)([tp], **kw)
    for g in grads:
        p.grad = mdl.Tensor(g)
        tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    assert p.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), **tol)


# ---------------------------------------------------------------- chunked updates
CHUNK_CASES = TORCH_CASES + [("SGD", dict(lr=0.1, momentum=0.9, maximize=True)),
                             ("Adam", dict(lr=0.01, maximize=True, weight_decay=0.1))]


@pytest.mark.parametrize("name,kw", CHUNK_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CHUNK_CASES)])
def test_chunked_update_is_bit_identical_to_whole_array_passes(name, kw, monkeypatch):
    """Large parameters are updated CHUNK elements at a time (minidl.optim.optimizer.chunks); with a chunk
    of 7 elements (a ragged last chunk too) and with one chunk, three steps give the same bits; a
    non-contiguous parameter is updated whole and correctly."""
    from minidl.optim import optimizer
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 9)).astype(np.float32)
    grads = [rng.standard_normal((5, 9)).astype(np.float32) for _ in range(3)]
    cls = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop}[name]
    results = {}
    for chunk in (7, 10 ** 9):
        monkeypatch.setattr(optimizer, "CHUNK", chunk)
        results[chunk], _, _ = run(cls, x, grads, dtype=np.float32, **kw)
    np.testing.assert_array_equal(results[7], results[10 ** 9])
    # a transposed (F-ordered) parameter: no reshape view exists, so it is one chunk; it must still move
    monkeypatch.setattr(optimizer, "CHUNK", 7)
    p = mdl.Tensor(np.asfortranarray(x), requires_grad=True)
    opt = cls([p], **kw)
    for g in grads:
        p.grad = mdl.Tensor(np.asfortranarray(g))
        opt.step()
    np.testing.assert_array_equal(p.numpy(), results[7][-1])


def test_chunks_splits_contiguous_arrays_and_passes_none_through(monkeypatch):
    from minidl.optim import optimizer
    monkeypatch.setattr(optimizer, "CHUNK", 4)
    a, b = np.arange(10.0), np.arange(10.0) * 2
    got = list(optimizer.chunks(a, None, b))
    assert [len(c[0]) for c in got] == [4, 4, 2] and all(c[1] is None for c in got)
    for ca, _, cb in got:
        assert np.shares_memory(ca, a) and (cb == 2 * ca).all()
    assert list(optimizer.chunks(a[::2], b[::2]))[0][0].base is a   # not contiguous: one whole chunk
