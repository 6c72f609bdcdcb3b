"""ARMOR_D aggregators against brute force and hand computations (float64 unless stated)."""

import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wdro_finetune.methods.reweight import (
    ArmorAlpha,
    ArmorKL,
    ArmorKLLearned,
    MeanAggregator,
    aggregator_param_groups,
    mix_with_clean,
)
from wdro_finetune.methods.parts import make_aggregator


def _losses(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def _set_lambda_exactly(agg, value):
    """Write raw_lambda in float64 so that softplus(raw) = value to double precision (init is float32)."""
    with torch.no_grad():
        agg.raw_lambda.copy_(torch.log(torch.expm1(torch.tensor(value, dtype=torch.float64))))


def _logmeanexp(x):
    return torch.logsumexp(x, dim=0) - math.log(x.numel())


def _brute_force_kl(losses: np.ndarray, eps: float, kappa: float, lam_max: float, step: float):
    """min over the grid lambda = 0, step, 2 step, ..., lam_max of eps*lam + T*logmeanexp(L/T), T = lam + kappa."""
    lam = np.arange(0.0, lam_max + step / 2, step)
    t = lam + kappa
    values = np.empty_like(lam)
    positive = t > 0
    z = losses[None, :] / t[positive, None]
    zmax = z.max(axis=1, keepdims=True)
    lme = zmax[:, 0] + np.log(np.exp(z - zmax).mean(axis=1))
    values[positive] = eps * lam[positive] + t[positive] * lme
    values[~positive] = losses.max()
    best = values.argmin()
    return values[best], lam[best]


# ---------------------------------------------------------------- ArmorKL

@pytest.mark.parametrize("eps,kappa", [(0.02, 0.0), (0.02, 0.1), (0.3, 0.0), (0.3, 0.1), (1.0, 0.0), (1.0, 0.5)])
def test_armor_kl_value_matches_brute_force_grid_within_1e_6(eps, kappa):
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.0, 5.0, size=16)
    brute_value, brute_lam = _brute_force_kl(losses, eps, kappa, lam_max=40.0, step=1e-4)
    agg = ArmorKL(eps=eps, kappa=kappa)
    value = agg(torch.tensor(losses)).item()
    lam = agg.last_lambda.item()
    assert 0.0 < brute_lam < 40.0 or brute_lam == 0.0
    # exact minimiser: never above the grid minimum, and within 1e-6 of it (grid spacing 1e-4)
    assert value <= brute_value + 1e-12
    assert value == pytest.approx(brute_value, abs=1e-6)
    assert lam == pytest.approx(brute_lam, abs=2e-3)


def test_armor_kl_lambda_solves_first_order_condition():
    losses = torch.tensor([0.1, 0.7, 1.9, 2.4, 0.3, 3.3], dtype=torch.float64)
    agg = ArmorKL(eps=0.05, kappa=0.1)
    agg(losses)
    lam = agg.last_lambda.item()
    assert lam > 0
    w = torch.softmax(losses / (lam + 0.1), dim=0)
    kl = (w * torch.log(w * losses.numel())).sum().item()
    assert kl == pytest.approx(0.05, abs=1e-9)  # phi'(lambda*) = eps - KL(w || uniform) = 0


@pytest.mark.parametrize("eps,kappa", [(0.02, 0.1), (0.2, 0.0), (5.0, 0.3)])
def test_armor_kl_gradient_is_softmax_at_optimal_temperature(eps, kappa):
    losses = _losses(np.random.default_rng(1).uniform(0, 3, size=10).tolist())
    agg = ArmorKL(eps=eps, kappa=kappa)
    (grad,) = torch.autograd.grad(agg(losses), losses)
    expected = torch.softmax(losses.detach() / (agg.last_lambda + kappa), dim=0)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(agg.weights(losses), expected, rtol=0, atol=1e-12)


def test_armor_kl_with_kappa_0_and_eps_at_least_log_n_is_the_max():
    losses = _losses([0.5, 2.0, 1.25, 0.0, 1.9])
    agg = ArmorKL(eps=math.log(5), kappa=0.0)
    value = agg(losses)
    assert agg.last_lambda.item() == 0.0
    assert value.item() == 2.0
    (grad,) = torch.autograd.grad(value, losses)
    assert grad.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_armor_kl_at_lambda_0_equals_kappa_logmeanexp():
    losses = _losses([0.5, 2.0, 1.25, 0.0, 1.9])
    agg = ArmorKL(eps=math.log(5) + 0.1, kappa=0.4)  # eps >= log N >= KL(w || uniform): lambda* = 0
    value = agg(losses)
    assert agg.last_lambda.item() == 0.0
    assert value.item() == pytest.approx((0.4 * _logmeanexp(losses.detach() / 0.4)).item(), abs=1e-12)


@pytest.mark.parametrize("kappa", [0.0, 0.1])
def test_armor_kl_of_equal_losses_is_their_common_value(kappa):
    agg = ArmorKL(eps=0.02, kappa=kappa)
    assert agg(_losses([1.7] * 6)).item() == pytest.approx(1.7, abs=1e-12)
    assert agg.last_lambda.item() == 0.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 20.0, allow_nan=False), min_size=1, max_size=40),
    st.floats(1e-3, 3.0),
    st.sampled_from([0.0, 0.05, 0.5]),
)
def test_armor_kl_is_never_below_the_mean_and_is_a_minimum(values, eps, kappa):
    losses = torch.tensor(values, dtype=torch.float64)
    agg = ArmorKL(eps=eps, kappa=kappa)
    value = agg(losses).item()
    lam = agg.last_lambda.item()
    assert value >= losses.mean().item() - 1e-9
    assert value <= losses.max().item() + eps * lam + 1e-9

    def phi(lam_):
        return eps * lam_ + (lam_ + kappa) * _logmeanexp(losses / (lam_ + kappa)).item()

    for neighbour in (lam - 1e-4, lam + 1e-4):  # a local (hence, phi convex, global) minimum over lambda >= 0
        if neighbour + kappa > 0 and neighbour >= 0:
            assert value <= phi(neighbour) + 1e-12
    if agg.last_lambda.item() == 0.0 and kappa > 0:
        assert value == pytest.approx((kappa * _logmeanexp(losses / kappa)).item(), rel=1e-12, abs=1e-12)


def test_armor_kl_cap_hit_is_counted_and_logged_once_per_epoch(caplog):
    losses = torch.tensor([0.0, 10.0, 5.0, 2.0], dtype=torch.float64)
    agg = ArmorKL(eps=1e-8, kappa=0.0, lambda_cap=20.0)  # root near lambda ~ 3e4, far beyond the cap
    for _ in range(3):
        agg(losses)
    assert agg.last_lambda.item() == 20.0
    assert agg.cap_hits == 3
    with caplog.at_level(logging.WARNING, logger="wdro_finetune.methods.reweight"):
        assert agg.reset_epoch() == 3
        assert agg.reset_epoch() == 0
    assert len(caplog.records) == 1 and "lambda_cap=20" in caplog.records[0].getMessage()
    assert agg.cap_hits == 0


def test_armor_kl_runs_without_host_sync_on_meta_tensors():
    # any .item()/int() on a tensor raises on the meta device: the root finding is sync-free
    out = ArmorKL(eps=0.02, kappa=0.1)(torch.empty(64, device="meta", requires_grad=True))
    assert out.shape == () and out.is_meta


def test_armor_kl_keeps_float32_dtype_and_finite_gradient():
    losses = (torch.rand(128, generator=torch.Generator().manual_seed(0)) * 4).requires_grad_()
    value = ArmorKL(eps=0.02, kappa=0.1)(losses)
    assert value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(losses.grad).all() and losses.grad.sum().item() == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- learned variants

def test_armor_kl_learned_matches_hand_computation():
    # lambda = 2, L = [0, 2 ln 3]: L/lambda = [0, ln 3], mean exp = (1 + 3)/2 = 2
    # value = 0.1*2 + 2*ln 2 = 1.5862943611; weights = [1, 3]/4; d/dlambda = 0.1 + ln 2 - 0.75 ln 3 = -0.0308120
    agg = ArmorKLLearned(eps=0.1, lambda0=2.0, lambda_min=0.0).double()
    _set_lambda_exactly(agg, 2.0)
    losses = _losses([0.0, 2 * math.log(3)])
    assert agg.lam.item() == pytest.approx(2.0, abs=1e-12)
    value = agg(losses)
    assert value.item() == pytest.approx(1.5862943611, abs=1e-9)
    grad_l, grad_raw = torch.autograd.grad(value, [losses, agg.raw_lambda])
    torch.testing.assert_close(grad_l, torch.tensor([0.25, 0.75], dtype=torch.float64))
    dlam_draw = torch.sigmoid(agg.raw_lambda.detach()).item()
    assert grad_raw.item() / dlam_draw == pytest.approx(0.1 + math.log(2) - 0.75 * math.log(3), abs=1e-9)


def test_learned_parameters_round_trip_through_state_dict():
    source = ArmorAlpha(eps=0.5, alpha=6.0, lambda0=1.0, nu0=-0.35)
    with torch.no_grad():
        source.raw_lambda.add_(0.37)
        source.nu.sub_(0.2)
    target = ArmorAlpha(eps=0.5, alpha=6.0)
    target.load_state_dict(source.state_dict())
    assert set(source.state_dict()) == {"raw_lambda", "nu"}
    assert target.lam.item() == source.lam.item() and target.nu.item() == pytest.approx(-0.55)

    kl_source = ArmorKLLearned(eps=0.02, lambda0=3.0)
    kl_target = ArmorKLLearned(eps=0.02, lambda0=1.0)
    kl_target.load_state_dict(kl_source.state_dict())
    assert kl_target.lam.item() == pytest.approx(3.0, abs=1e-6)


def test_armor_alpha_matches_hand_computation_on_three_samples():
    # alpha = 2: f*(y) = relu(y)^2 / 2 + 1/2.  eps = 0.5, lambda = 1, nu = 0.5, L = [0.2, 1.0, 2.5]
    # y = L - nu = [-0.3, 0.5, 2.0]; f* = [0.5, 0.625, 2.5]; mean = 3.625/3 = 1.2083333
    # value = 0.5*1 + 0.5 + 1.2083333 = 2.2083333
    # dL_i = f*'(y_i)/3 = relu(y_i)/3 = [0, 1/6, 2/3]; dnu = 1 - mean f*' = 1 - 2.5/3 = 1/6
    # dlambda = eps + mean f* - mean(f*'(y) y) = 0.5 + 1.2083333 - (0.25 + 4)/3 = 0.2916667
    agg = ArmorAlpha(eps=0.5, alpha=2.0, lambda0=1.0, nu0=0.5, lambda_min=0.0).double()
    _set_lambda_exactly(agg, 1.0)
    losses = _losses([0.2, 1.0, 2.5])
    value = agg(losses)
    assert value.item() == pytest.approx(2.2083333333, abs=1e-9)
    grad_l, grad_nu, grad_raw = torch.autograd.grad(value, [losses, agg.nu, agg.raw_lambda])
    torch.testing.assert_close(grad_l, torch.tensor([0.0, 1 / 6, 2 / 3], dtype=torch.float64))
    assert grad_nu.item() == pytest.approx(1 / 6, abs=1e-12)
    assert grad_raw.item() / torch.sigmoid(agg.raw_lambda.detach()).item() == pytest.approx(0.2916666667, abs=1e-9)
    torch.testing.assert_close(agg.weights(losses), grad_l)


@pytest.mark.parametrize("alpha", [1.5, 6.0, 10.0])
def test_armor_alpha_gives_zero_weight_below_nu(alpha):
    agg = ArmorAlpha(eps=0.5, alpha=alpha, lambda0=0.7, nu0=1.0).double()
    losses = _losses([0.1, 0.99, 1.0, 1.3, 4.0])
    (grad,) = torch.autograd.grad(agg(losses), losses)
    assert grad[:3].tolist() == [0.0, 0.0, 0.0]
    assert (grad[3:] > 0).all()


# ---------------------------------------------------------------- shared interface

@pytest.mark.parametrize(
    "name,params",
    [
        ("none", {}),
        ("armor-kl", {"eps": 0.02, "kappa": 0.1}),
        ("armor-kl", {"eps": 10.0, "kappa": 0.0}),
        ("armor-kl-learned", {"eps": 0.02, "lambda0": 0.8}),
        ("armor-alpha", {"eps": 0.5, "alpha": 6.0, "lambda0": 1.0, "nu0": -0.35}),
    ],
)
def test_weights_equal_autograd_gradient(name, params):
    agg = make_aggregator(name, **params).double()
    losses = _losses([0.3, 2.2, 1.1, 0.05, 1.7, 0.9])
    (grad,) = torch.autograd.grad(agg(losses), losses)
    torch.testing.assert_close(agg.weights(losses), grad, rtol=0, atol=1e-12)


def test_make_aggregator_names_and_learned_parameter_groups():
    assert isinstance(make_aggregator("none"), MeanAggregator)
    assert make_aggregator("none")(_losses([1.0, 2.0, 6.0])).item() == 3.0
    assert aggregator_param_groups(make_aggregator("armor-kl", eps=0.1), lr=1e-3) == []
    alpha = make_aggregator("armor-alpha", eps=0.5, alpha=6.0)
    (group,) = aggregator_param_groups(alpha, lr=4e-6, weight_decay=0.0)
    assert group["lr"] == 4e-6 and group["weight_decay"] == 0.0
    assert [id(p) for p in group["params"]] == [id(alpha.raw_lambda), id(alpha.nu)]
    with pytest.raises(ValueError, match="unknown aggregator"):
        make_aggregator("armor-chi2")


def test_mix_with_clean_is_convex_combination():
    assert mix_with_clean(torch.tensor(4.0), torch.tensor(2.0), 0.25).item() == 0.25 * 2.0 + 0.75 * 4.0
    with pytest.raises(ValueError):
        mix_with_clean(torch.tensor(4.0), torch.tensor(2.0), 1.5)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        ArmorKL(eps=0.0)
    with pytest.raises(ValueError):
        ArmorAlpha(eps=0.5, alpha=1.0)
    with pytest.raises(ValueError, match="shape"):
        ArmorKL(eps=0.1)(torch.zeros(2, 3))
