"""The AutoAttack ensemble as an Attack object, called directly on a small CNN trained on real MNIST (conftest):
x_adv in the eps-ball and [0, 1], lower accuracy than clean, the model in eval mode during the attack and its
modes and frozen parameters restored afterwards."""

from __future__ import annotations

import pytest
import torch

from wdro_finetune.attacks import make_attack
from wdro_finetune.attacks.autoattack import AutoAttackEnsemble
from wdro_finetune.attacks.pointwise import per_sample_norm

N = 16


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm, eps", [("Linf", 0.2), ("L2", 2.0)])
def test_the_ensemble_stays_in_the_ball_lowers_accuracy_and_restores_the_model(trained_model, mnist_test, norm, eps):
    x, y = mnist_test[0][:N], mnist_test[1][:N]
    attack = make_attack("autoattack", eps=eps, norm=norm, version="fast", batch_size=N)
    assert isinstance(attack, AutoAttackEnsemble)
    modes = []
    hook = trained_model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    trained_model.train()
    trained_model[0].weight.requires_grad_(False)
    try:
        x_adv = attack(trained_model, x, y)
    finally:
        hook.remove()
        training_after = [m.training for m in trained_model.modules()]
        frozen_after = [p.requires_grad for p in trained_model.parameters()]
        trained_model[0].weight.requires_grad_(True)
        trained_model.eval()
    assert modes and not any(modes), "the attack runs the model in eval mode"
    assert all(training_after) and frozen_after == [False, True, True, True, True, True]
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert per_sample_norm(x_adv - x, norm).max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean, robust = _accuracy(trained_model, x, y), _accuracy(trained_model, x_adv, y)
    assert clean >= 0.8 and robust < clean - 0.25


def test_labels_are_the_predictions_on_the_adversarial_examples(trained_model, mnist_test):
    x, y = mnist_test[0][:N], mnist_test[1][:N]
    attack = AutoAttackEnsemble(eps=0.2, version="fast", batch_size=N)
    y_adv = attack.labels(trained_model, x, y)
    with torch.no_grad():
        want = trained_model(attack(trained_model, x, y)).argmax(1)
    assert y_adv.dtype == torch.int64 and torch.equal(y_adv, want)  # seeded: the same x_adv on each call
