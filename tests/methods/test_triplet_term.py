"""The triplet term composes with any base method and costs no extra forward pass."""

from __future__ import annotations

import torch

from wdro_finetune.methods.factory import build_objective
from wdro_finetune.models.builtin import SmallCNN
from wdro_finetune.train.config import make_finetune_config


class _Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def _calls(**options) -> tuple[int, str, dict]:
    torch.manual_seed(0)
    model = _Counting(SmallCNN()).train()
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    objective = build_objective(make_finetune_config(dict(model="m", dataset="mnist", inner_steps=2, **options)))
    result = objective(model, x, y, torch.Generator().manual_seed(0))
    result.loss.backward()
    return model.calls, objective.label, result.stats


def test_triplet_sa_adds_no_forward_pass_and_a_positive_term():
    for options in ({}, {"threat": "w2"}, {"reweight": "armor-kl"}, {"method": "mart"}, {"method": "pgd-at"}):
        base_calls, _, _ = _calls(**options)
        calls, label, stats = _calls(triplet="sa", **options)
        assert calls == base_calls, options
        assert label.endswith("+triplet-sa")
        assert stats["triplet_sa"] >= 0 and stats["valid_fraction_sa"] == 1.0
    assert _calls(triplet="sa", threat="w2", reweight="armor-kl")[1] == "wdro-trades+armor-kl+triplet-sa"
