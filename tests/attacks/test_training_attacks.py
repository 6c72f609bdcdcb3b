"""The training inner maximisers as Attack objects: the same iterates as the functions they wrap, and the
contract (eval mode, frozen parameters, restored afterwards)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wdro_finetune.attacks.budget_inner import WPGDBudget
from wdro_finetune.attacks.knapsack_inner import WPGDKnapsack, w_pgd_knapsack
from wdro_finetune.attacks.losses import cross_entropy
from wdro_finetune.attacks.pointwise import FGSM, PGD, NoiseFGSM, default_step, pgd_maximize
from wdro_finetune.attacks.ramp import RadiusRamp
from wdro_finetune.attacks.transport import SoftBallAttack, TransportCost, soft_ball_maximize
from wdro_finetune.attacks.wasserstein_budget import w_pgd_budget


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, 3))


def _data():
    torch.manual_seed(1)
    return torch.rand(12, 1, 4, 4), torch.randint(0, 3, (12,))


ATTACKS = [PGD(eps=0.1, steps=3, start="normal"), FGSM.with_random_start(0.1), FGSM(eps=0.1), NoiseFGSM(eps=0.1),
           SoftBallAttack(0.1, TransportCost(1.0)), WPGDBudget(0.1, steps=3), WPGDKnapsack(0.1, steps=3),
           RadiusRamp(PGD(eps=0.1, steps=2), 4)]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: type(a).__name__)
def test_the_contract_restores_mode_and_parameters_and_stays_in_the_box(attack):
    model, (x, y) = _model().train(), _data()
    model[1].weight.requires_grad_(False)
    x_adv = attack(model, x, y, loss=cross_entropy, generator=torch.Generator().manual_seed(0))
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert all(p.grad is None for p in model.parameters())
    assert x_adv.shape == x.shape and not x_adv.requires_grad and 0 <= x_adv.min() and x_adv.max() <= 1


def test_the_attacks_make_the_iterates_of_the_functions_they_wrap():
    model, (x, y) = _model(), _data()
    objective = lambda z: cross_entropy(z, y)  # noqa: E731
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    pgd = PGD(eps=0.1, steps=3, start="uniform")(model, x, y, loss=cross_entropy, generator=gen())
    assert torch.equal(pgd, pgd_maximize(model.eval(), x, objective, eps=0.1, steps=3, step_size=default_step(0.1, 3),
                                         start="uniform", generator=gen()))
    fgsm = FGSM.with_random_start(0.1)(model, x, y, loss=cross_entropy, generator=gen())
    assert torch.equal(fgsm, pgd_maximize(model, x, objective, eps=0.1, steps=1, step_size=0.125, start="uniform",
                                          generator=gen()))
    cost = TransportCost(2.0)
    soft = SoftBallAttack(0.1, cost, steps=2)(model, x, y, loss=cross_entropy, generator=gen())
    assert torch.equal(soft, soft_ball_maximize(model, x, objective, cost, steps=2, step_size=default_step(0.1, 2),
                                                generator=gen()))
    budget = WPGDBudget(0.1, steps=3, budget_cap=0.2)(model, x, y, loss=cross_entropy, generator=gen())
    assert torch.equal(budget, w_pgd_budget(model, x, objective, delta=0.1, steps=3, budget_cap=0.2, generator=gen()))
    knapsack = WPGDKnapsack(0.1, steps=3)(model, x, y, loss=cross_entropy)
    assert torch.equal(knapsack, w_pgd_knapsack(model, x, objective, delta=0.1, steps=3, labels=y))
    assert default_step(0.3, 10) == pytest.approx(0.075) and default_step(0.3, 0) == pytest.approx(0.75)
