"""Inner-maximiser options: the pointwise step size and the eps warm-up (RadiusRamp); the inner maximisers are
Attack objects called with the base's loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wdro_finetune.errors import UserError
from wdro_finetune.methods.factory import build_objective
from wdro_finetune.attacks.budget_inner import WPGDBudget
from wdro_finetune.attacks.knapsack_inner import WPGDKnapsack
from wdro_finetune.attacks.pointwise import PGD, NoiseFGSM
from wdro_finetune.attacks.ramp import RadiusRamp
from wdro_finetune.config.finetune import make_finetune_config

BASE = dict(model="mnist-smallcnn", dataset="mnist", eps=0.3, steps=10)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def _ce(logits, y):
    return nn.functional.cross_entropy(logits, y, reduction="none")


def test_the_ramp_scales_the_radius_linearly_then_holds_it():
    x = torch.rand(32, 1, 4, 4)
    y = torch.randint(0, 3, (32,))
    ramp = RadiusRamp(PGD(eps=0.3, steps=1, step_size=0.375, start="uniform"), ramp_steps=4)
    largest = []
    for step in range(6):
        ramp.set_step(step)
        x_adv = ramp(_model(), x, y, loss=_ce, generator=torch.Generator().manual_seed(step))
        largest.append((x_adv - x).abs().max().item())
    limits = [0.075, 0.15, 0.225, 0.3, 0.3, 0.3]
    for got, limit in zip(largest, limits):
        assert got <= limit + 1e-6
        assert got >= 0.9 * limit  # FGSM with a step of 1.25 eps reaches the (scaled) ball's surface
    assert ramp.factor == 1.0


def test_a_ramped_attack_equals_the_attack_built_at_the_smaller_radius():
    x = torch.rand(8, 1, 4, 4)
    y = torch.randint(0, 3, (8,))
    model = _model()
    ramp = RadiusRamp(PGD(eps=0.2, steps=3, start="uniform"), ramp_steps=10)
    ramp.set_step(4)  # factor 0.5
    got = ramp(model, x, y, loss=_ce, generator=torch.Generator().manual_seed(1))
    want = PGD(eps=0.1, steps=3, start="uniform")(model, x, y, loss=_ce, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, want)
    w2 = WPGDBudget(delta=0.1, budget_cap=0.3).scaled(0.5)
    assert (w2.delta, w2.budget_cap) == (0.05, 0.15)


def test_factory_passes_step_size_and_ramp():
    obj = build_objective(make_finetune_config(dict(BASE, method="fgsm-at", inner_step_size=0.3)))
    assert obj.base.maximizer.options.step_size == 0.3
    fgsm = build_objective(make_finetune_config(dict(BASE, method="fgsm-at"))).base.maximizer
    assert fgsm.options.random_start and fgsm.options.step_size == pytest.approx(0.375)
    ramped = build_objective(make_finetune_config(dict(BASE, method="trades", eps_ramp=5))).base.maximizer
    assert isinstance(ramped, RadiusRamp) and ramped.inner.options.eps == 0.3


@pytest.mark.parametrize("options, match", [
    (dict(eps_ramp=-1), "eps-ramp"),
    (dict(inner_step_size=0), "inner-step-size"),
    (dict(method="udr", eps_ramp=3), "eps-ramp"),
    (dict(threat="w2", inner_step_size=0.1), "inner-step-size"),
])
def test_bad_values_are_user_errors(options, match):
    with pytest.raises(UserError, match=match):
        build_objective(make_finetune_config(dict(BASE, **options)))


def test_n_fgsm_steps_from_wide_noise_without_projection():
    torch.manual_seed(1)
    x = torch.rand(64, 1, 4, 4)
    y = torch.randint(0, 3, (64,))
    model = _model()
    got = NoiseFGSM(eps=0.1)(model, x, y, loss=_ce, generator=torch.Generator().manual_seed(5))
    # by hand: uniform noise in the 2*eps box from the same generator, then one signed step of eps, clip to [0, 1]
    noise = 0.2 * (2.0 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) - 1.0)
    x_noise = (x + noise).clamp(0.0, 1.0).requires_grad_(True)
    nn.functional.cross_entropy(model(x_noise), y, reduction="sum").backward()
    want = (x_noise.detach() + 0.1 * x_noise.grad.sign()).clamp(0.0, 1.0)
    assert torch.allclose(got, want, atol=1e-6)
    dist = (got - x).abs().amax(dim=(1, 2, 3))
    assert dist.max() <= 0.3 + 1e-6 and dist.max() > 0.1  # beyond eps: no projection
    assert got.min() >= 0 and got.max() <= 1


def test_n_fgsm_is_a_method():
    obj = build_objective(make_finetune_config(dict(BASE, method="n-fgsm-at")))
    assert isinstance(obj.base.maximizer, NoiseFGSM) and obj.label == "n-fgsm-at"


# ---------------------------------------------------------------- --w2-inner knapsack

W2K = dict(BASE, threat="w2", w2_inner="knapsack", delta=0.1, inner_steps=3)


def test_factory_builds_the_knapsack_maximizer_with_delta_cap_and_ramp():
    maximizer = build_objective(make_finetune_config(dict(W2K, w2_budget_cap=0.3))).base.maximizer
    assert isinstance(maximizer, WPGDKnapsack)
    assert (maximizer.delta, maximizer.budget_cap, maximizer.steps, maximizer.norm) == (0.1, 0.3, 3, "Linf")
    assert maximizer.scaled(0.5) == WPGDKnapsack(delta=0.05, budget_cap=0.15, steps=3)
    ramped = build_objective(make_finetune_config(dict(W2K, eps_ramp=4))).base.maximizer
    assert isinstance(ramped, RadiusRamp) and isinstance(ramped.inner, WPGDKnapsack)
    default = build_objective(make_finetune_config(dict(BASE, threat="w2"))).base.maximizer
    assert isinstance(default, WPGDBudget)  # W-PGD-budget stays the default


def test_knapsack_composes_with_armor_and_the_triplet_term_and_gets_the_labels():
    from wdro_finetune.attacks._mode import eval_mode
    from wdro_finetune.attacks.knapsack_inner import w_pgd_knapsack
    from wdro_finetune.attacks.losses import kl_divergence
    from wdro_finetune.models.builtin import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN().train()
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    objective = build_objective(make_finetune_config(dict(W2K, reweight="armor-kl", triplet="sa")))
    assert objective.label == "wdro-knapsack-trades+armor-kl+triplet-sa"
    result = objective(model, x, y, torch.Generator().manual_seed(0))
    result.loss.backward()
    assert torch.isfinite(result.loss) and result.stats["triplet_sa"] >= 0
    with torch.no_grad(), eval_mode(model):
        target = model(x)
    direct = w_pgd_knapsack(model, x, lambda z: kl_divergence(target, z), delta=0.1, steps=3, labels=y,
                            budget_cap=0.3)  # the default cap: max(eps, delta)
    assert torch.equal(result.out.x_adv, direct)
    assert model.training  # the attack restored the training mode


@pytest.mark.parametrize("options, match", [
    (dict(w2_inner="greedy"), "--w2-inner must be one of budget, knapsack"),
    (dict(w2_inner="knapsack"), "--threat w2"),
    (dict(threat="w2", w2_inner="knapsack", w2_stop_flipped=True), "--w2-stop-flipped"),
])
def test_bad_w2_inner_values_are_user_errors(options, match):
    from wdro_finetune.methods.parts import PART_CHOICES

    with pytest.raises(UserError, match=match):
        make_finetune_config(dict(BASE, **options), PART_CHOICES)
