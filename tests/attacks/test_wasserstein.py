"""W-PGD / W-FGSM / W-PGD-budget: threat-model constraints, equivalence with PGD for p = inf,
dataset-wide coupling (batch size, 2 gloo processes) and strength on a trained MNIST CNN."""

from __future__ import annotations

import math

import pytest
import torch
from gloo import run_in_two_processes
from hypothesis import given, settings, strategies as st
from torch import nn

from wdro_finetune.attacks.losses import cross_entropy, kl_divergence
from wdro_finetune.attacks.pointwise import per_sample_norm, pgd, pgd_maximize
from wdro_finetune.attacks.wasserstein_eval import dataset_distance, project_w_ball, w_pgd
from wdro_finetune.attacks.wasserstein_budget import rescale_budgets, w_pgd_budget

INF = math.inf
TOLERANCE = 1 + 1e-5


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@pytest.mark.parametrize("norm, delta", [("Linf", 0.1), ("L2", 1.0)])
def test_w_pgd_with_p_inf_reproduces_pointwise_pgd_iterates(trained_model, mnist_test, norm, delta):
    x, y = mnist_test[0][:128], mnist_test[1][:128]
    steps = 5
    result = w_pgd(trained_model, x, y, delta=delta, p=INF, norm=norm, steps=steps, batch_size=128)
    step_size = 1.875 * delta / steps
    iterates = [pgd(trained_model, x, y, eps=delta, norm=norm, steps=t, step_size=step_size, random_start=False)
                for t in range(steps + 1)]
    assert result.accuracy_per_iterate == tuple(accuracy(trained_model, x_t, y) for x_t in iterates)
    assert torch.allclose(result.x_adv, iterates[result.worst_iterate], atol=1e-6)
    assert result.accuracy == min(result.accuracy_per_iterate)


@pytest.mark.parametrize("norm, delta", [("Linf", 0.05), ("L2", 1.0)])
def test_w2_accuracy_is_at_most_winf_accuracy_which_is_at_most_clean(trained_model, mnist_test, norm, delta):
    x, y = mnist_test[0][:256], mnist_test[1][:256]
    w2 = w_pgd(trained_model, x, y, delta=delta, p=2, norm=norm, steps=10, loss="redlr")
    winf = w_pgd(trained_model, x, y, delta=delta, p=INF, norm=norm, steps=10, loss="redlr")
    clean = accuracy(trained_model, x, y)
    assert w2.accuracy <= winf.accuracy < clean
    assert w2.distance <= delta * TOLERANCE and winf.distance <= delta * TOLERANCE
    assert w2.correct.float().mean().item() == pytest.approx(w2.accuracy)


def test_w_pgd_result_does_not_depend_on_the_batch_size(trained_model, mnist_test):
    x, y = mnist_test[0][:256], mnist_test[1][:256]
    whole = w_pgd(trained_model, x, y, delta=0.05, p=2, norm="Linf", steps=5, batch_size=256)
    quarters = w_pgd(trained_model, x, y, delta=0.05, p=2, norm="Linf", steps=5, batch_size=64)
    assert quarters.accuracy_per_iterate == whole.accuracy_per_iterate
    assert torch.equal(quarters.correct, whole.correct)
    assert torch.allclose(quarters.x_adv, whole.x_adv, atol=1e-5)
    assert quarters.distance == pytest.approx(whole.distance, rel=1e-5)
    assert quarters.max_loss == pytest.approx(whole.max_loss, rel=1e-5)


def test_w2_redlr_spends_no_budget_on_misclassified_points_and_uneven_budget_on_others(trained_model, mnist_test):
    x, y = mnist_test[0][:256], mnist_test[1][:256]
    with torch.no_grad():
        wrong = trained_model(x).argmax(dim=1) != y
    calls: list[tuple[int, int]] = []
    result = w_pgd(trained_model, x, y, delta=0.05, p=2, norm="Linf", steps=4, loss="redlr",
                   progress=lambda step, total: calls.append((step, total)))
    norms = per_sample_norm(result.x_adv - x, "Linf")
    assert wrong.any() and (norms[wrong] == 0).all()
    assert norms[~wrong].std() > 0.2 * norms[~wrong].mean()
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_w_fgsm_takes_one_step_with_the_whole_budget(trained_model, mnist_test):
    x, y = mnist_test[0][:128], mnist_test[1][:128]
    result = w_pgd(trained_model, x, y, delta=1.0, p=2, norm="L2", attack="fgsm")
    assert len(result.accuracy_per_iterate) == 2
    assert 0.5 < result.distance <= TOLERANCE
    assert result.loss_per_iterate[1] > result.loss_per_iterate[0]


def test_w_pgd_rejects_unsupported_settings_and_leaves_its_input_alone(trained_model, mnist_test):
    x, y = mnist_test[0][:8].clone(), mnist_test[1][:8]
    with pytest.raises(ValueError, match="p must be 2 or inf"):
        w_pgd(trained_model, x, y, delta=0.1, p=1)
    with pytest.raises(ValueError, match="unknown attack"):
        w_pgd(trained_model, x, y, delta=0.1, attack="cw")
    with pytest.raises(ValueError, match="unknown norm"):
        w_pgd(trained_model, x, y, delta=0.1, norm="L1")
    w_pgd(trained_model, x, y, delta=0.1, steps=2)
    assert torch.equal(x, mnist_test[0][:8])


def tiny_model(d: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 3))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 12), side=st.integers(2, 5),
       delta=st.floats(0.01, 1.0), norm=st.sampled_from(["Linf", "L2"]), p=st.sampled_from([2, INF]),
       spread=st.floats(0.0, 3.0))
def test_w_ball_projection_lands_within_delta_and_in_the_box(seed, n, side, delta, norm, p, spread):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 1, side, side, generator=generator)
    x_adv = x0 + spread * torch.randn(n, 1, side, side, generator=generator)
    projected = project_w_ball(x_adv, x0, delta=delta, norm=norm, p=p)
    assert dataset_distance(projected, x0, norm=norm, p=p) <= delta * TOLERANCE
    assert projected.min() >= 0.0 and projected.max() <= 1.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 10), side=st.integers(2, 5), delta=st.floats(0.01, 1.0),
       norm=st.sampled_from(["Linf", "L2"]), steps=st.integers(1, 3), loss=st.sampled_from(["ce", "dlr", "redlr"]))
def test_w_pgd_output_lies_in_the_w2_ball_and_the_box(seed, n, side, delta, norm, steps, loss):
    x = torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % 3
    result = w_pgd(tiny_model(side * side, seed), x, y, delta=delta, p=2, norm=norm, steps=steps, loss=loss,
                   batch_size=4)
    assert result.distance <= delta * TOLERANCE
    assert dataset_distance(result.x_adv, x, norm=norm) <= delta * TOLERANCE
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 10), delta=st.floats(0.01, 1.0),
       norm=st.sampled_from(["Linf", "L2"]), steps=st.integers(1, 4), keep_best=st.booleans())
def test_w_pgd_budget_respects_the_rms_budget(seed, n, delta, norm, steps, keep_best):
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % 3
    x_adv = w_pgd_budget(tiny_model(16, seed), x, lambda z: cross_entropy(z, y), delta=delta, norm=norm,
                         steps=steps, keep_best=keep_best, generator=torch.Generator().manual_seed(seed))
    assert dataset_distance(x_adv, x, norm=norm) <= delta * TOLERANCE
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@settings(max_examples=20, deadline=None)
@given(budgets=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=16), delta=st.floats(0.0, 2.0))
def test_rescaled_budgets_are_nonnegative_with_rms_delta(budgets, delta):
    rescaled = rescale_budgets(torch.tensor(budgets, dtype=torch.float64), delta)
    assert (rescaled >= 0).all()
    assert rescaled.square().mean().sqrt().item() <= delta * TOLERANCE + 1e-12
    assert rescaled.square().mean().sqrt().item() == pytest.approx(delta, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(budgets=st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), min_size=1, max_size=16),
       delta=st.floats(0.01, 0.5), cap_factor=st.floats(1.0, 4.0))
def test_capped_budgets_keep_rms_delta_and_respect_the_cap(budgets, delta, cap_factor):
    cap = delta * cap_factor
    rescaled = rescale_budgets(torch.tensor(budgets, dtype=torch.float64), delta, cap)
    assert (rescaled >= 0).all() and (rescaled <= cap + 1e-12).all()
    rms = rescaled.square().mean().sqrt().item()
    assert rms <= delta * TOLERANCE
    fillable = sum(b > 0 for b in budgets) * cap**2 >= len(budgets) * delta**2 or not any(budgets)
    if fillable:  # zero budgets stay zero, so the RMS reaches delta only if the others can hold it
        assert rms == pytest.approx(delta, abs=1e-9)


def test_capped_budgets_water_fill_by_hand():
    # b = (4, 1, 1, 0) with delta^2 = 1, cap 1.5: the first saturates (1.5^2 = 2.25), the two ones share
    # 4 - 2.25 = 1.75 equally -> sqrt(0.875) each, the zero stays zero.
    rescaled = rescale_budgets(torch.tensor([4.0, 1.0, 1.0, 0.0], dtype=torch.float64), 1.0, 1.5)
    expected = torch.tensor([1.5, math.sqrt(0.875), math.sqrt(0.875), 0.0], dtype=torch.float64)
    torch.testing.assert_close(rescaled, expected)


def test_w_pgd_budget_with_a_cap_bounds_every_perturbation(trained_model, mnist_test):
    x = mnist_test[0][:128]
    with torch.no_grad():
        clean = trained_model(x)
    objective = lambda logits: kl_divergence(clean, logits)  # noqa: E731
    free = w_pgd_budget(trained_model, x, objective, delta=0.1, norm="Linf", steps=10,
                        generator=torch.Generator().manual_seed(0))
    capped = w_pgd_budget(trained_model, x, objective, delta=0.1, norm="Linf", steps=10, budget_cap=0.2,
                          generator=torch.Generator().manual_seed(0))
    assert per_sample_norm(free - x, "Linf").max() > 0.2  # without the cap the budget concentrates
    assert per_sample_norm(capped - x, "Linf").max() <= 0.2 + 1e-6
    assert dataset_distance(capped, x, norm="Linf") <= 0.1 * TOLERANCE


def test_w_pgd_budget_stop_flipped_spreads_the_budget_over_more_images(trained_model, mnist_test):
    # Without the rule the KL keeps rewarding budget on images already pushed across the boundary; with
    # it their budgets stop growing, so at the same W_2 radius more images change prediction.
    x = mnist_test[0][:128]
    with torch.no_grad():
        clean = trained_model(x)
    objective = lambda logits: kl_divergence(clean, logits)  # noqa: E731
    flipped = {}
    for rule in (False, True):
        x_adv = w_pgd_budget(trained_model, x, objective, delta=0.1, norm="Linf", steps=10, stop_flipped=rule,
                             generator=torch.Generator().manual_seed(0))
        assert dataset_distance(x_adv, x, norm="Linf") <= 0.1 * TOLERANCE
        with torch.no_grad():
            flipped[rule] = (trained_model(x_adv).argmax(1) != clean.argmax(1)).sum().item()
    assert flipped[True] >= flipped[False] + 5, flipped


def test_w_pgd_budget_finds_larger_kl_than_pointwise_pgd_at_the_same_radius(trained_model, mnist_test):
    x = mnist_test[0][:256]
    delta = 0.1
    with torch.no_grad():
        clean = trained_model(x)

    def objective(logits):
        return kl_divergence(clean, logits)

    x_budget = w_pgd_budget(trained_model, x, objective, delta=delta, norm="Linf", steps=10,
                            generator=torch.Generator().manual_seed(0))
    x_pgd = pgd_maximize(trained_model, x, objective, eps=delta, norm="Linf", steps=10, step_size=delta / 4,
                         start="normal", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kl_budget, kl_pgd = objective(trained_model(x_budget)).mean(), objective(trained_model(x_pgd)).mean()
    assert kl_budget > 1.2 * kl_pgd
    assert dataset_distance(x_budget, x, norm="Linf") <= delta * TOLERANCE


def test_w_pgd_budget_with_p_inf_is_pointwise(trained_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    x_adv = w_pgd_budget(trained_model, x, lambda z: cross_entropy(z, y), delta=0.1, norm="Linf", steps=3, p=INF,
                         generator=torch.Generator().manual_seed(0))
    assert per_sample_norm(x_adv - x, "Linf").max() <= 0.1 + 1e-6


# ----------------------------------------------------------------------------- two gloo processes

W_PGD_ARGS = dict(delta=0.05, p=2, norm="Linf", steps=4, loss="ce", batch_size=32)
BUDGET_ARGS = dict(delta=0.1, norm="Linf", steps=3, start_std=0.0)


def run_shard(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    result = w_pgd(model, x, y, **W_PGD_ARGS)
    budget = w_pgd_budget(model, x, lambda z: cross_entropy(z, y), **BUDGET_ARGS)
    return {"correct": result.correct, "x_adv": result.x_adv, "accuracies": result.accuracy_per_iterate,
            "distance": result.distance, "max_loss": result.max_loss, "n": result.n, "budget": budget}


def test_two_gloo_processes_give_the_single_process_result(trained_model, mnist_test):
    x, y = mnist_test[0][:128], mnist_test[1][:128]
    single = run_shard(trained_model, x, y)
    shards = run_in_two_processes(run_shard, trained_model, x, y, split=64)
    assert all(shard["n"] == 128 for shard in shards)
    for shard in shards:
        assert shard["accuracies"] == pytest.approx(single["accuracies"], abs=1.5 / 128)
        assert shard["distance"] == pytest.approx(single["distance"], rel=1e-5)
        assert shard["max_loss"] == pytest.approx(single["max_loss"], rel=1e-4)
    assert torch.allclose(torch.cat([s["x_adv"] for s in shards]), single["x_adv"], atol=1e-4)
    assert (torch.cat([s["correct"] for s in shards]) != single["correct"]).sum() <= 1
    assert torch.allclose(torch.cat([s["budget"] for s in shards]), single["budget"], atol=1e-4)
