"""Per-sample attack losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from wdro_finetune.attacks.losses import cross_entropy, dlr, get_attack_loss, kl_divergence, redlr


def test_dlr_matches_hand_computed_values_on_three_classes():
    logits = torch.tensor([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    # correct: -(3 - 1) / (3 - 0); misclassified: -(1 - 3) / (3 - 0)
    assert torch.allclose(dlr(logits, y), torch.tensor([-2.0 / 3.0, 2.0 / 3.0]))


def test_dlr_matches_hand_computed_values_on_four_classes():
    logits = torch.tensor([[1.0, 4.0, 2.0, 0.0], [1.0, 4.0, 2.0, 0.0], [1.0, 4.0, 2.0, 0.0]])
    y = torch.tensor([1, 2, 3])
    # sorted: 4, 2, 1, 0 -> denominator z(1) - z(3) = 3
    expected = torch.tensor([-(4.0 - 2.0) / 3.0, -(2.0 - 4.0) / 3.0, -(0.0 - 4.0) / 3.0])
    assert torch.allclose(dlr(logits, y), expected)


def test_redlr_equals_dlr_on_correct_points_and_is_zero_on_misclassified_ones():
    logits = torch.tensor([[1.0, 4.0, 2.0, 0.0], [1.0, 4.0, 2.0, 0.0], [5.0, 1.0, 0.5, 0.0]])
    y = torch.tensor([1, 2, 0])
    expected = torch.tensor([-(4.0 - 2.0) / 3.0, 0.0, -(5.0 - 1.0) / (5.0 - 0.5)])
    assert torch.allclose(redlr(logits, y), expected)


def test_dlr_losses_need_three_classes():
    with pytest.raises(ValueError, match="3 classes"):
        dlr(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.1, 10.0), shift=st.floats(-5.0, 5.0))
def test_dlr_and_redlr_are_invariant_to_positive_affine_maps_of_logits(seed, scale, shift):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 5, (8,), generator=generator)
    for loss in (dlr, redlr):
        assert torch.allclose(loss(scale * logits + shift, y), loss(logits, y), atol=1e-6)
    assert (redlr(logits, y) <= 0).all() and (redlr(logits, y) >= -1).all()


def test_cross_entropy_is_per_sample():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    expected = torch.tensor([-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))), math.log(3.0)])
    assert torch.allclose(cross_entropy(logits, y), expected)


def test_kl_divergence_matches_definition_and_vanishes_on_equal_logits():
    clean = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    adv = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    p, q = F.softmax(clean, dim=1), F.softmax(adv, dim=1)
    expected = (p * (p / q).log()).sum(dim=1)
    result = kl_divergence(clean, adv)
    assert result.shape == (2,)
    assert torch.allclose(result, expected, atol=1e-6)
    assert result[1].abs() < 1e-7


def test_get_attack_loss_resolves_names_and_passes_callables_through():
    assert get_attack_loss("ce") is cross_entropy
    assert get_attack_loss("DLR") is dlr
    assert get_attack_loss("redlr") is redlr

    def custom(logits, y):
        return logits.sum(dim=1)

    assert get_attack_loss(custom) is custom
    with pytest.raises(ValueError, match="unknown attack loss"):
        get_attack_loss("hinge")
