"""MART and UDR per-sample losses against hand computations; UDR's soft ball."""

from __future__ import annotations

import math

import pytest
import torch

from wdro_finetune.methods.base import Udr, mart_terms
from wdro_finetune.methods.factory import build_objective
from wdro_finetune.config.finetune import make_finetune_config


def test_mart_terms_match_hand_computation():
    logits_clean = torch.tensor([[2.0, 0.0, -1.0]])
    logits_adv = torch.tensor([[0.5, 1.0, 0.0]])
    y = torch.tensor([0])
    bce, klw = mart_terms(logits_clean, logits_adv, y)
    za = [0.5, 1.0, 0.0]
    pa = [math.exp(v) / sum(math.exp(u) for u in za) for v in za]
    zc = [2.0, 0.0, -1.0]
    pc = [math.exp(v) / sum(math.exp(u) for u in zc) for v in zc]
    hand_bce = -math.log(pa[0]) - math.log(1 - max(pa[1], pa[2]))
    hand_kl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pc, pa))
    assert bce.item() == pytest.approx(hand_bce, rel=1e-6)
    assert klw.item() == pytest.approx(hand_kl * (1 - pc[0]), rel=1e-6)


def test_udr_cost_is_zero_inside_the_hard_ball_and_quadratic_outside():
    udr = Udr(eps=0.1)
    d = torch.tensor([[[[0.05, -0.1], [0.3, -0.25]]]])
    # outside parts: 0.3 - 0.1 = 0.2 and 0.25 - 0.1 = 0.15 -> 0.5 * (0.04 + 0.0225)
    assert udr.cost(d).item() == pytest.approx(0.5 * (0.04 + 0.0225), rel=1e-6)
    assert udr.cost(0.09 * torch.ones(2, 1, 3, 3)).tolist() == [0.0, 0.0]


class _Steep(torch.nn.Module):
    """logit_1 - logit_0 = w * mean(x): CE for class 0 grows with every pixel."""

    def __init__(self, w: float):
        super().__init__()
        self.w = w

    def forward(self, x):
        s = self.w * x.flatten(1).mean(1)
        return torch.stack([torch.zeros_like(s), s], 1)


def test_udr_soft_ball_leaves_the_hard_ball_only_when_it_pays():
    x, y = torch.full((4, 1, 4, 4), 0.5), torch.zeros(4, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    # lambda = 1: each step's penalty gradient removes the whole excess, so the excess stays below one
    # step size a = 2.5 * eps / steps
    strict = Udr(eps=0.1, steps=20, lam0=1.0).attack(_Steep(5.0), x, y, gen)
    assert (strict - x).abs().max().item() <= 0.1 + 2.5 * 0.1 / 20 + 1e-6
    # no penalty: the sign-gradient steps walk straight out of the eps-ball
    free = Udr(eps=0.1, steps=20, lam0=0.0).attack(_Steep(5.0), x, y, torch.Generator().manual_seed(0))
    assert (free - x).abs().max().item() > 0.2


def test_udr_lambda_is_saved_with_the_objective_and_adapts_every_10_steps():
    cfg = make_finetune_config(dict(model="m", dataset="mnist", method="udr", inner_steps=1))
    objective = build_objective(cfg)
    assert "base.lam" in objective.state_dict()
    udr = objective.base
    for _ in range(10):
        udr._adapt(torch.full((2, 1, 2, 2), 0.5))  # mean |d| = 0.5 > eps 0.3 -> lambda grows by 0.02 * 0.2
    assert float(udr.lam) == pytest.approx(1.0 + 0.02 * 0.2)
    assert objective.label == "udr"


def test_method_labels_compose():
    cfg = make_finetune_config(dict(model="m", dataset="mnist", method="trades", threat="w2", reweight="armor-kl"))
    assert build_objective(cfg).label == "wdro-trades+armor-kl"
    cfg = make_finetune_config(dict(model="m", dataset="mnist", method="mart", reweight="armor-alpha"))
    assert build_objective(cfg).label == "mart+armor-alpha"
