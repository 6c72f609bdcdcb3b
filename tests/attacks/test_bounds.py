"""Attack-free sensitivity figures (A, V(0), W(0), Upsilon) and the accuracy-ratio bounds."""

from __future__ import annotations

import math

import pytest
import torch

from wdro_finetune.attacks.bounds import CleanSensitivity, accuracy_ratio_bounds, clean_sensitivity
from wdro_finetune.attacks.losses import get_attack_loss
from wdro_finetune.attacks.pointwise import per_sample_norm
from wdro_finetune.attacks.wasserstein_eval import w_pgd

INF = math.inf


@pytest.mark.parametrize("norm, p, loss", [("Linf", 2, "ce"), ("L2", INF, "redlr"), ("L2", 2, "dlr")])
def test_clean_figures_match_a_per_sample_loop(trained_model, mnist_test, norm, p, loss):
    x, y = mnist_test[0][:96], mnist_test[1][:96]
    stats = clean_sensitivity(trained_model, x, y, p=p, norm=norm, loss=loss, batch_size=40)
    loss_fn, q = get_attack_loss(loss), 2 if p == 2 else 1
    grad_norms, values, correct = [], [], []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        logits = trained_model(xi)
        value = loss_fn(logits, y[i:i + 1])
        (grad,) = torch.autograd.grad(value.sum(), xi)
        grad_norms.append(per_sample_norm(grad, "L1" if norm == "Linf" else "L2").item())
        values.append(value.item())
        correct.append(logits.argmax(dim=1).item() == y[i].item())
    grad_norms, values, correct = torch.tensor(grad_norms), torch.tensor(values), torch.tensor(correct)
    assert stats.upsilon == pytest.approx(grad_norms.double().pow(q).mean().pow(1 / q).item(), rel=1e-4)
    assert stats.accuracy == pytest.approx(correct.float().mean().item())
    assert stats.mean_loss == pytest.approx(values.mean().item(), rel=1e-5, abs=1e-7)
    assert stats.misclassified_loss == pytest.approx(values[~correct].mean().item(), rel=1e-5, abs=1e-7)
    assert stats.n == 96


def test_lower_bound_is_below_upper_bound_on_the_trained_model(trained_model, mnist_test):
    x, y = mnist_test[0][:256], mnist_test[1][:256]
    stats = clean_sensitivity(trained_model, x, y, p=2, norm="Linf", loss="redlr")
    assert stats.misclassified_loss == 0.0 and stats.mean_loss < 0.0  # ReDLR: 0 exactly where wrong
    for delta in (0.02, 0.05):
        w_fgsm = w_pgd(trained_model, x, y, delta=delta, p=2, norm="Linf", loss="redlr", attack="fgsm")
        attacked = w_pgd(trained_model, x, y, delta=delta, p=2, norm="Linf", loss="redlr", steps=10)
        bounds = accuracy_ratio_bounds(stats, delta, attacked_loss=w_fgsm.loss_per_iterate[-1],
                                       attacked_accuracy=attacked.accuracy)
        assert bounds.lower <= bounds.upper <= 1.0


def test_bounds_follow_the_formulas_on_given_figures():
    stats = CleanSensitivity(accuracy=0.8, mean_loss=0.5, misclassified_loss=2.5, upsilon=4.0, n=100, p=2.0,
                             norm="Linf")
    bounds = accuracy_ratio_bounds(stats, 0.1, attacked_loss=1.0, attacked_accuracy=0.7)
    # gap = 2; (2.5 - 1.0) / 2 = 0.75; (2 - 0.1 * 4) / 2 = 0.8
    assert bounds.lower == pytest.approx(0.75)
    assert bounds.upper == pytest.approx(0.875)
    assert stats.first_order_loss(0.1) == pytest.approx(0.9)
    first_order = accuracy_ratio_bounds(stats, 0.1, attacked_loss=0.6)
    assert first_order.lower == pytest.approx(0.8) and math.isnan(first_order.upper)


def test_w0_is_undefined_when_nothing_is_misclassified(trained_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    with torch.no_grad():
        keep = trained_model(x).argmax(dim=1) == y
    stats = clean_sensitivity(trained_model, x[keep], y[keep], p=2, norm="Linf")
    assert stats.accuracy == 1.0 and math.isnan(stats.misclassified_loss)
    assert math.isnan(accuracy_ratio_bounds(stats, 0.1, attacked_loss=1.0).lower)
