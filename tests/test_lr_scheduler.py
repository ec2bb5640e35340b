"""Learning-rate schedulers against their closed forms (and torch.optim.lr_scheduler where importable)."""
import math
import warnings

import numpy as np
import pytest

import minidl as mdl
from minidl.optim import SGD, Adam
from minidl.optim import lr_scheduler as S

try:
    import torch
except Exception as e:
    torch = None
    _TORCH_WHY = f"torch is not importable ({e})"
else:
    _TORCH_WHY = ""


def make_opt(lrs=(1.0,), cls=SGD, **kw):
    groups = [{"params": [mdl.Tensor([0.0], requires_grad=True)], "lr": lr} for lr in lrs]
    return cls(groups, **kw)


def lrs_over(sched, n):
    """The learning rates in force during epochs 0..n-1 (step() after each epoch)."""
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr())
        sched.optimizer.step()
        sched.step()
    return np.array(out)


def test_step_lr():
    opt = make_opt((1.0, 0.5))
    got = lrs_over(S.StepLR(opt, step_size=3, gamma=0.1), 8)
    want = [[1.0 * 0.1 ** (t // 3), 0.5 * 0.1 ** (t // 3)] for t in range(8)]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    np.testing.assert_allclose(got[:, 0], [1, 1, 1, .1, .1, .1, .01, .01], rtol=1e-15)
    assert opt.param_groups[1]["initial_lr"] == 0.5


def test_multistep_lr():
    got = lrs_over(S.MultiStepLR(make_opt(), milestones=[5, 2], gamma=0.5), 8)[:, 0]
    np.testing.assert_allclose(got, [1, 1, .5, .5, .5, .25, .25, .25], rtol=1e-15)


def test_exponential_lr():
    got = lrs_over(S.ExponentialLR(make_opt((0.2,)), gamma=0.9), 6)[:, 0]
    np.testing.assert_allclose(got, [0.2 * 0.9 ** t for t in range(6)], rtol=1e-15)


def test_cosine_annealing_lr():
    got = lrs_over(S.CosineAnnealingLR(make_opt((0.1,)), T_max=10, eta_min=0.001), 21)[:, 0]
    want = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(21)]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert got[0] == 0.1 and abs(got[10] - 0.001) < 1e-15 and abs(got[5] - 0.0505) < 1e-15
    assert abs(got[20] - 0.1) < 1e-15  # past T_max the cosine comes back up, as PyTorch


def test_linear_warmup():
    got = lrs_over(S.LinearLR(make_opt((0.3,))), 8)[:, 0]  # start_factor 1/3 over 5 iterations
    want = [0.3 * (1 / 3 + (2 / 3) * min(t, 5) / 5) for t in range(8)]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    np.testing.assert_allclose(got[[0, 5, 7]], [0.1, 0.3, 0.3], rtol=1e-14)
    got = lrs_over(S.LinearLR(make_opt((1.0,)), start_factor=1.0, end_factor=0.0, total_iters=4), 6)[:, 0]
    np.testing.assert_allclose(got, [1, .75, .5, .25, 0, 0], atol=1e-15)


def test_sequential_warmup_into_cosine():
    opt = make_opt((0.1,))
    warm = S.LinearLR(opt, start_factor=0.1, total_iters=4)
    cos = S.CosineAnnealingLR(opt, T_max=6)
    sched = S.SequentialLR(opt, [warm, cos], milestones=[4])
    got = lrs_over(sched, 11)[:, 0]
    want = [0.1 * (0.1 + 0.9 * t / 4) for t in range(4)] + [0.1 * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(7)]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert got[0] == pytest.approx(0.01) and got[4] == pytest.approx(0.1) and got[10] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="milestones"):
        S.SequentialLR(opt, [warm, cos], milestones=[])


def one_cycle_closed_form(t, total, max_lr, pct=0.3, div=25.0, final_div=1e4):
    lo, hi = max_lr / div, max_lr
    up_end = pct * total - 1
    cos_anneal = lambda a, b, x: b + (a - b) * (1 + math.cos(math.pi * x)) / 2  # noqa: E731
    if t <= up_end:
        return cos_anneal(lo, hi, t / up_end), cos_anneal(0.95, 0.85, t / up_end)
    x = (t - up_end) / (total - 1 - up_end)
    return cos_anneal(hi, lo / final_div, x), cos_anneal(0.85, 0.95, x)


def test_one_cycle_lr_and_momentum():
    opt = make_opt((1.0,), momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=0.5, total_steps=20)
    lrs, moms = [], []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        moms.append(opt.param_groups[0]["momentum"])
        sched.step()
    want = [one_cycle_closed_form(t, 20, 0.5) for t in range(20)]
    np.testing.assert_allclose(lrs, [w[0] for w in want], rtol=1e-14)
    np.testing.assert_allclose(moms, [w[1] for w in want], rtol=1e-14)
    assert lrs[0] == pytest.approx(0.02) and lrs[5] == pytest.approx(0.5) and lrs[19] == pytest.approx(0.02 / 1e4)
    assert moms[0] == pytest.approx(0.95) and moms[5] == pytest.approx(0.85) and moms[19] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="total_steps is 20"):
        sched.step()
    no_momentum = mdl.optim.Optimizer([mdl.Tensor([0.0], requires_grad=True)], {"lr": 0.1})
    with pytest.raises(ValueError, match="cycle_momentum"):
        S.OneCycleLR(no_momentum, max_lr=0.1, total_steps=10)
    S.OneCycleLR(no_momentum, max_lr=0.1, total_steps=10, cycle_momentum=False)


def test_one_cycle_cycles_adam_beta1():
    opt = make_opt((1.0,), cls=Adam)
    sched = S.OneCycleLR(opt, max_lr=0.01, epochs=2, steps_per_epoch=5, anneal_strategy="linear")
    assert opt.param_groups[0]["betas"] == (0.95, 0.999)
    assert sched.total_steps == 10
    for _ in range(2):
        sched.step()  # linear: up_end = 2, so step 2 is the peak
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.85) and sched.get_last_lr()[0] == pytest.approx(0.01)


def test_reduce_lr_on_plateau():
    opt = make_opt((1.0,))
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    # losses: improvements at epochs 1-2, then 3 bad epochs (> patience 2) -> halve at epoch 5;
    # cooldown 1 swallows epoch 6; epochs 7, 8, 9 bad -> halve again at epoch 9 (0.25); then min_lr holds 0.2
    losses = [10, 9, 8, 8, 8.0, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]
    got = []
    for loss in losses:
        sched.step(loss)
        got.append(sched.get_last_lr()[0])
    assert got == [1, 1, 1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .25, .2, .2]
    assert sched.best == 8
    # mode 'max' with an absolute threshold: 0.5 -> 0.55 is not better than 0.5 + 0.1
    opt = make_opt((1.0,))
    sched = S.ReduceLROnPlateau(opt, mode="max", patience=0, threshold=0.1, threshold_mode="abs")
    sched.step(0.5)
    sched.step(0.55)
    assert sched.get_last_lr() == [pytest.approx(0.1)]
    with pytest.raises(ValueError, match="factor"):
        S.ReduceLROnPlateau(opt, factor=1.0)


@pytest.mark.parametrize("build", [
    lambda o: S.StepLR(o, 2), lambda o: S.MultiStepLR(o, [1, 3]), lambda o: S.ExponentialLR(o, 0.8),
    lambda o: S.CosineAnnealingLR(o, 7), lambda o: S.LinearLR(o, 0.25, total_iters=3),
    lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.5, total_iters=2), S.ExponentialLR(o, 0.7)], [2]),
    lambda o: S.OneCycleLR(o, max_lr=[0.3, 0.6], total_steps=12), lambda o: S.ReduceLROnPlateau(o, patience=0),
], ids=["step", "multistep", "exp", "cos", "linear", "sequential", "onecycle", "plateau"])
def test_state_dict_round_trip(build):
    def make():
        opt = make_opt((0.5, 1.0), momentum=0.9)
        return opt, build(opt)

    def advance(opt, sched, k):
        out = []
        for i in range(k):
            opt.step()
            sched.step(10.0 - i % 2) if isinstance(sched, S.ReduceLROnPlateau) else sched.step()
            out.append(sched.get_last_lr() + [g.get("momentum") for g in opt.param_groups])
        return out
    opt, sched = make()
    advance(opt, sched, 4)
    sd, osd = sched.state_dict(), opt.state_dict()
    assert "optimizer" not in sd
    rest = advance(opt, sched, 5)
    opt2, sched2 = make()
    opt2.load_state_dict(osd)
    sched2.load_state_dict(sd)
    assert advance(opt2, sched2, 5) == rest


def test_resuming_needs_initial_lr_and_an_optimizer():
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(make_opt(), 2, last_epoch=3)
    with pytest.raises(TypeError, match="Optimizer"):
        S.StepLR(object(), 2)
    opt = make_opt()
    S.StepLR(opt, 2)
    resumed = S.StepLR(opt, 2, last_epoch=3)  # continues at epoch 4
    assert resumed.last_epoch == 4 and resumed.get_last_lr() == [pytest.approx(0.01)]


# ---------------------------------------------------------------- against torch.optim.lr_scheduler
TORCH_CASES = {
    "step": lambda m, o: m.StepLR(o, step_size=3, gamma=0.3),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[2, 7, 9], gamma=0.5),
    "exp": lambda m, o: m.ExponentialLR(o, gamma=0.93),
    "cos": lambda m, o: m.CosineAnnealingLR(o, T_max=9, eta_min=0.01),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=6),
    "sequential": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=5),
                                                 m.CosineAnnealingLR(o, T_max=20)], milestones=[5]),
    "onecycle": lambda m, o: m.OneCycleLR(o, max_lr=[0.4, 0.8], total_steps=25),
    "onecycle3": lambda m, o: m.OneCycleLR(o, max_lr=0.4, total_steps=25, three_phase=True, pct_start=0.25),
}


@pytest.mark.skipif(torch is None, reason=_TORCH_WHY or "torch available")
@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_matches_torch(name):
    opt = make_opt((0.5, 1.0), momentum=0.9)
    topt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in (0.5, 1.0)],
                           momentum=0.9)
    sched, tsched = TORCH_CASES[name](S, opt), TORCH_CASES[name](torch.optim.lr_scheduler, topt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(25):
            np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose([g["momentum"] for g in opt.param_groups],
                                       [g["momentum"] for g in topt.param_groups], rtol=1e-12)
            topt.step()
            sched.step()
            tsched.step()


@pytest.mark.skipif(torch is None, reason=_TORCH_WHY or "torch available")
def test_plateau_matches_torch():
    opt = make_opt((0.5,))
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    kw = dict(factor=0.3, patience=2, cooldown=2, threshold=0.01, min_lr=0.01)
    sched, tsched = S.ReduceLROnPlateau(opt, **kw), torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    losses = np.random.default_rng(0).uniform(0.9, 1.1, 40) * np.linspace(2, 1, 40)
    for loss in losses:
        sched.step(loss)
        tsched.step(loss)
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)
