"""Soft-ball transport cost (ARMOR_D's OT-cost variant): cost values, the attack, and the objective."""

from __future__ import annotations

import math

import pytest
import torch

from wdro_finetune.attacks.losses import cross_entropy
from wdro_finetune.attacks.pointwise import per_sample_norm
from wdro_finetune.attacks.transport import TransportCost, soft_ball_maximize
from wdro_finetune.errors import UserError
from wdro_finetune.methods.factory import build_objective
from wdro_finetune.config.finetune import make_finetune_config


def test_cost_matches_hand_computation():
    d = torch.tensor([[3.0, -4.0], [0.0, 0.0], [1.0, 1.0]]).reshape(3, 1, 1, 2)
    torch.testing.assert_close(TransportCost(0.5, 2, 2)(d), torch.tensor([12.5, 0.0, 1.0]))
    torch.testing.assert_close(TransportCost(1.0, 1, 1)(d), torch.tensor([7.0, 0.0, 2.0]))
    torch.testing.assert_close(TransportCost(2.0, math.inf, 3)(d), torch.tensor([128.0, 0.0, 2.0]))
    # gradient of 0.5 * ||d||_2^2 is d; finite (zero) at d = 0
    torch.testing.assert_close(TransportCost(0.5, 2, 2).gradient(d), d)
    assert torch.equal(TransportCost(1.0, 2, 1).gradient(torch.zeros(1, 1, 1, 2)), torch.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError):
        TransportCost(1.0, 3, 2)


def test_the_cost_weight_controls_how_far_the_attack_moves(trained_smallcnn, mnist_test_first64):
    x, y = mnist_test_first64
    objective = lambda logits: cross_entropy(logits, y)  # noqa: E731

    def moved(weight):
        x_adv = soft_ball_maximize(trained_smallcnn, x, objective, TransportCost(weight, 2, 2), steps=10,
                                   step_size=0.05, generator=torch.Generator().manual_seed(0))
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        return per_sample_norm(x_adv - x, "L2").mean().item(), cross_entropy(trained_smallcnn(x_adv), y).mean().item()

    far, loss_far = moved(0.0)
    near, loss_near = moved(50.0)
    # no cost: plain sign ascent, 10 steps of 0.05 with no ball (l_inf up to 0.5); a heavy cost keeps it close
    assert near < 0.5 * far
    assert loss_far > loss_near > cross_entropy(trained_smallcnn(x), y).mean().item()


def test_objective_subtracts_the_cost_before_aggregating(trained_smallcnn, mnist_test_first64):
    x, y = mnist_test_first64
    cfg = make_finetune_config({"model": "mnist-smallcnn", "dataset": "mnist", "method": "trades",
                                "reweight": "armor-kl", "armor_cost_weight": 2.0, "armor_cost_p": "inf",
                                "armor_cost_q": 1, "inner_steps": 3})
    objective = build_objective(cfg)
    assert objective.cost == TransportCost(2.0, math.inf, 1.0)
    torch.manual_seed(0)
    result = objective(trained_smallcnn, x, y, torch.Generator().manual_seed(1))
    cost = 2.0 * per_sample_norm(result.out.x_adv - x, "Linf")
    expected = 0.5 * result.out.clean_ce.mean() + 0.5 * objective.aggregator(result.out.per_sample - cost)
    torch.testing.assert_close(result.loss, expected)
    assert result.stats["transport_cost"] == pytest.approx(cost.mean().item(), rel=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"threat": "w2", "armor_cost_weight": 1}, "pointwise"),
    ({"method": "udr", "armor_cost_weight": 1}, "udr"),
    ({"armor_cost_p": 3, "armor_cost_weight": 1}, "1, 2 or inf"),
    ({"armor_cost_weight": -1}, ">= 0"),
])
def test_bad_transport_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        build_objective(make_finetune_config({"model": "mnist-smallcnn", "dataset": "mnist", **options}))
