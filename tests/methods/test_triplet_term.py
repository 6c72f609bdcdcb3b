"""The triplet term composes with any base method and costs no extra forward pass."""

from __future__ import annotations

import torch

from wdro_finetune.methods.factory import build_objective
from wdro_finetune.models.builtin import SmallCNN
from wdro_finetune.config.finetune import make_finetune_config


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
    for options in ({}, {"threat": "w2"}, {"threat": "w2", "w2_inner": "knapsack"}, {"reweight": "armor-kl"},
                    {"method": "mart"}, {"method": "pgd-at"}):
        base_calls, _, _ = _calls(**options)
        calls, label, stats = _calls(triplet="sa", **options)
        assert calls == base_calls, options
        assert label.endswith("+triplet-sa")
        assert stats["triplet_sa"] >= 0 and stats["valid_fraction_sa"] == 1.0
    assert _calls(triplet="sa", threat="w2", reweight="armor-kl")[1] == "wdro-trades+armor-kl+triplet-sa"


def _ia_objective(triplet: str, positives: torch.Tensor, **options):
    cfg = make_finetune_config(dict(model="m", dataset="mnist", inner_steps=2, triplet=triplet, **options))
    return build_objective(cfg, positives)


def test_triplet_ia_uses_the_positive_of_each_training_index_and_one_extra_forward():
    from wdro_finetune.methods.triplet import AngularTripletRegularizer
    from wdro_finetune.models.features import FeatureHook

    torch.manual_seed(0)
    net = SmallCNN().train()  # no dropout or batch norm: training-mode features can be recomputed
    positives = torch.rand(40, 1, 28, 28)
    x, y, index = torch.rand(16, 1, 28, 28), torch.arange(16) % 10, torch.arange(16) * 2 + 3
    model = _Counting(net)
    objective = _ia_objective("sa+ia", positives, triplet_weight_sa=0.25, triplet_weight_ia=0.75,
                              triplet_norm_weight=1e-3)
    result = objective(model, x, y, torch.Generator().manual_seed(0), index)
    assert objective.label == "trades+triplet-sa+ia"
    plain = _Counting(net)
    _ia_objective("sa", positives)(plain, x, y, torch.Generator().manual_seed(0), index)
    assert model.calls == plain.calls + 1  # L_ia: one extra forward, of the invariance examples
    with FeatureHook(net) as hook:
        net(x), net(result.out.x_adv), net(positives[index])
    h_clean, h_sens, h_inv = hook.pop()
    expected, _ = AngularTripletRegularizer(weight_sa=0.25, weight_ia=0.75, norm_weight=1e-3, margin=0.05)(
        h_clean, y, h_sens=h_sens, h_inv=h_inv)
    assert result.stats["triplet_ia"] > 0
    base = _ia_objective("none", positives)(net, x, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.loss - base.loss, expected, rtol=1e-5, atol=1e-6)


def test_triplet_ia_alone_and_its_requirements():
    import pytest

    from wdro_finetune.errors import UserError

    objective = _ia_objective("ia", torch.rand(20, 1, 28, 28), threat="w2", reweight="armor-kl")
    assert objective.label == "wdro-trades+armor-kl+triplet-ia"
    result = objective(SmallCNN().train(), torch.rand(8, 1, 28, 28), torch.arange(8), None, torch.arange(8))
    assert "triplet_sa" not in result.stats and result.stats["triplet_ia"] >= 0
    with pytest.raises(UserError, match="invariance examples"):
        _ia_objective("sa+ia", None)


def test_triplet_distance_option_picks_absolute_or_signed_cosine():
    absolute = _ia_objective("sa", None).regularizer.reg.triplet
    signed = _ia_objective("sa", None, triplet_distance="cosine").regularizer.reg.triplet
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    assert absolute.distance(a, b).item() == 0.0 and signed.distance(a, b).item() == 2.0
