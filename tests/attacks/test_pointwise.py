"""Pointwise FGSM / PGD: threat-model constraints, effect on a trained MNIST CNN, ball projection."""

from __future__ import annotations

import torch
from torch import nn

from wdro_finetune.attacks.losses import kl_divergence
from wdro_finetune.attacks.pointwise import fgsm, pgd, pgd_maximize, per_sample_norm, project_to_ball


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def test_linf_pgd_stays_in_ball_and_box_and_lowers_accuracy(trained_model, mnist_test):
    x, y = mnist_test[0][:256], mnist_test[1][:256]
    generator = torch.Generator().manual_seed(0)
    x_adv = pgd(trained_model, x, y, eps=0.1, norm="Linf", steps=10, step_size=0.025, generator=generator)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    clean, attacked = accuracy(trained_model, x, y), accuracy(trained_model, x_adv, y)
    assert clean > 0.85
    assert attacked < clean - 0.3


def test_fgsm_respects_both_norms_and_lowers_accuracy(trained_model, mnist_test):
    x, y = mnist_test[0][:256], mnist_test[1][:256]
    x_inf = fgsm(trained_model, x, y, eps=0.1, norm="Linf")
    x_two = fgsm(trained_model, x, y, eps=1.5, norm="L2", loss="dlr")
    assert per_sample_norm(x_inf - x, "Linf").max() <= 0.1 + 1e-6
    assert per_sample_norm(x_two - x, "L2").max() <= 1.5 + 1e-5
    assert accuracy(trained_model, x_inf, y) < accuracy(trained_model, x, y) - 0.1


def test_l2_projection_is_onto_the_ball_not_the_sphere():
    x0 = torch.zeros(2, 1, 4, 4)
    inside = torch.full((1, 1, 4, 4), 0.1)  # norm 0.4
    outside = torch.full((1, 1, 4, 4), 1.0)  # norm 4
    projected = project_to_ball(torch.cat([inside, outside]), x0, 1.0, "L2")
    assert torch.equal(projected[0], inside[0])
    assert torch.isclose(per_sample_norm(projected[1:], "L2"), torch.tensor([1.0])).all()


def test_l2_pgd_with_small_steps_stays_strictly_inside_the_ball(trained_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    x_adv = pgd(trained_model, x, y, eps=2.0, norm="L2", steps=3, step_size=0.05, random_start=False)
    norms = per_sample_norm(x_adv - x, "L2")
    assert norms.max() <= 3 * 0.05 + 1e-5  # a sphere projection would give norms of 2.0
    assert norms.min() > 0.0


def test_pgd_accepts_a_callable_loss_and_keeps_parameter_gradients_untouched(trained_model, mnist_test):
    x, y = mnist_test[0][:32], mnist_test[1][:32]

    def margin(logits, labels):
        return -logits.gather(1, labels.view(-1, 1)).squeeze(1)

    x_adv = pgd(trained_model, x, y, eps=0.1, norm="Linf", steps=2, step_size=0.05, loss=margin)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert all(parameter.grad is None for parameter in trained_model.parameters())


class ModeRecorder(nn.Module):
    """Linear classifier that records the training flag it saw in each forward pass."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(16, 3)
        self.frozen = nn.BatchNorm1d(3).eval()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return self.linear(x.flatten(1))


def test_attack_runs_in_eval_mode_and_restores_each_module_mode():
    model = ModeRecorder().train()
    model.frozen.eval()
    x = torch.rand(4, 1, 4, 4)
    pgd(model, x, torch.zeros(4, dtype=torch.long), eps=0.1, norm="Linf", steps=2, step_size=0.05)
    assert model.seen == [False, False]
    assert model.training and model.linear.training and not model.frozen.training


def test_pgd_maximize_from_trades_start_raises_kl_inside_ball(trained_model, mnist_test):
    x = mnist_test[0][:128]
    with torch.no_grad():
        clean = trained_model(x)
    generator = torch.Generator().manual_seed(0)
    x_adv = pgd_maximize(trained_model, x, lambda z: kl_divergence(clean, z), eps=0.1, norm="Linf",
                         steps=5, step_size=0.03, start="normal", generator=generator)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        assert kl_divergence(clean, trained_model(x_adv)).mean() > 0.1


def test_random_start_is_reproducible_with_a_generator(trained_model, mnist_test):
    x, y = mnist_test[0][:16], mnist_test[1][:16]
    runs = [pgd(trained_model, x, y, eps=0.5, norm="L2", steps=1, step_size=0.1,
                generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert per_sample_norm(runs[0] - x, "L2").max() <= 0.5 + 1e-5
