"""W-PGD-budget: the W_2 training inner maximiser of Bai, He, Jiang & Obloj (2025) over one (global) batch.

Threat model as in :mod:`.wasserstein_eval`: labels never move, the ground cost is ||x - x'||_r (r = inf: 'Linf',
r = 2: 'L2') and only sqrt(mean_i ||x'_i - x_i||_r^2) <= delta is bounded. The attack writes
x'_i = x_i + b_i * a_i with per-sample budgets sqrt(mean b^2) <= delta (over all ranks under
torch.distributed) and directions a_i in the unit l_inf (or l_2) ball.

Shapes: x (N, C, H, W) float32 in [0, 1]; model(x) -> logits (N, K); delta in pixel units of [0, 1].
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..distributed import global_sums
from ._mode import eval_mode
from .pointwise import Objective, ascent_direction, check_norm, input_gradient, project_to_ball, per_sample_view
from .wasserstein_eval import dual_exponent

_BUDGET_STEP_FACTOR = 4.0  # eta_b = 4 * delta / K (W-PGD-budget default)




def w_pgd_budget(model: nn.Module, x: torch.Tensor, objective: Objective, *, delta: float,
                 norm: str = "Linf", steps: int = 10, step_size_dir: float = 0.3, momentum: float = 0.0,
                 eta: float | None = None, p: float = 2, start_std: float = 0.001, keep_best: bool = True,
                 budget_cap: float | None = None, stop_flipped: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Training inner maximiser over a (global) batch; returns x_adv (N, C, H, W) in [0, 1], detached.

    x'_i = clip_[0,1](x_i + b_i a_i), a_i in [-1, 1]^d ('Linf') or the unit l_2 ball ('L2'),
    budgets b_i >= 0 with sqrt(mean_i b_i^2) = delta (mean over all ranks under torch.distributed),
    so dist(x', x) <= delta. Start: b_i = delta, a = start_std * N(0, 1) / delta (the TRADES start).
    Each of ``steps`` steps (one forward + backward): a <- clip(a + step_size_dir * sign(grad_a)
    + momentum * (a - a_prev)) (l_2: normalised gradient, projection onto the unit ball); with
    g_b = dJ/db_i, b <- b + eta * g_b / sqrt(mean g_b^2) (the q = 2 dual step), b <- max(0, b)
    rescaled to sqrt(mean b^2) = delta; eta defaults to 4 delta / steps. p = inf keeps b_i = delta.
    ``budget_cap`` (>= delta): also b_i <= cap (water-filling: the uncapped budgets are scaled up
    until the RMS is delta again, or all non-zero budgets sit at the cap), so no image gets more than a
    pointwise cap-ball perturbation.
    ``stop_flipped``: g_b_i = 0 once image i's prediction differs from its prediction at the first
    iterate (about the clean one), so the budget stops flowing into images already pushed across the
    boundary (the analogue of ReDLR being zero on misclassified points); the rescaling then moves
    budget to images not yet flipped.
    ``objective(logits_adv) -> (N,)``, e.g. KL to the clean logits. ``keep_best``: return the
    iterate (0..steps) with the largest mean objective, which costs one extra forward pass for the
    last iterate; otherwise return the last iterate (exactly ``steps`` forward + backward passes).
    Under DistributedDataParallel pass the wrapped module (``ddp.module``): the attack differentiates
    with respect to the input only, which a DDP wrapper would take for an unfinished reduction.
    """
    norm = check_norm(norm)
    q = dual_exponent(p)
    x0 = x.detach()
    if delta <= 0 or steps < 1:
        return x0.clone()
    if budget_cap is not None and budget_cap < delta:
        raise ValueError(f"budget_cap {budget_cap} < delta {delta}")
    eta = _BUDGET_STEP_FACTOR * delta / steps if eta is None else eta
    a = _initial_direction(x0, delta, norm, start_std, generator)
    budgets = torch.full((x0.shape[0],), float(delta), dtype=x0.dtype, device=x0.device)
    best = _BestIterate()
    a_prev = a
    reference = None
    with eval_mode(model):
        for _ in range(steps):
            grad_a, grad_b, values, x_adv, logits = _budget_gradients(model, x0, a, budgets, objective)
            if stop_flipped:
                predicted = logits.argmax(dim=1)
                if reference is None:
                    reference = predicted
                grad_b = grad_b.masked_fill(predicted != reference, 0.0)
            mean_value, grad_b_square_mean = _global_means(values, grad_b)
            best.offer(mean_value, x_adv)
            a, a_prev = _direction_step(a, a_prev, grad_a, step_size_dir, momentum, norm), a
            if q == 2:
                budgets = _budget_step(budgets, grad_b, eta, delta, grad_b_square_mean, budget_cap)
        x_adv = _compose(x0, a, budgets)
        if not keep_best:
            return x_adv
        with torch.no_grad():
            best.offer(_global_means(objective(model(x_adv)), None)[0], x_adv)
    return best.x


def rescale_budgets(budgets: torch.Tensor, delta: float, cap: float | None = None, *,
                    sums: Callable[..., list[float]] = global_sums) -> torch.Tensor:
    """max(0, b) rescaled so that sqrt(mean b^2) = delta over all ranks (all delta if b <= 0).

    With ``cap`` (>= delta): min(cap, s * b) with the scale s >= 0 that makes the RMS exactly delta,
    found by fixed-point iteration on the capped set (it only grows, so at most N + 1 rounds).
    ``sums``: how sums are taken (``distributed.local_sums`` for a vector every rank holds whole).
    """
    budgets = budgets.clamp_min(0.0)
    square_sum, count = sums(budgets.double().square().sum().item(), budgets.numel(),
                                    device=budgets.device)
    rms = math.sqrt(square_sum / max(count, 1.0))
    if rms == 0.0:
        return torch.full_like(budgets, float(delta))
    scale = delta / rms
    if cap is None:
        return budgets * scale
    target = count * delta * delta
    for _ in range(int(count) + 1):
        capped = budgets * scale >= cap
        free_sum, n_capped = sums(budgets[~capped].double().square().sum().item(),
                                         capped.sum().item(), device=budgets.device)
        remaining = target - n_capped * cap * cap
        if free_sum == 0.0 or remaining <= 0.0:
            break
        new_scale = math.sqrt(remaining / free_sum)
        if new_scale <= scale * (1 + 1e-12):
            scale = max(scale, new_scale)
            break
        scale = new_scale
    return (budgets * scale).clamp_max(cap)


class _BestIterate:
    """The iterate with the largest mean objective seen so far (the first one on ties)."""

    def __init__(self) -> None:
        self.value = -math.inf
        self.x: torch.Tensor | None = None

    def offer(self, mean_value: float, x_adv: torch.Tensor) -> None:
        if self.x is None or mean_value > self.value:
            self.value, self.x = mean_value, x_adv


def _global_means(values: torch.Tensor, grad_b: torch.Tensor | None) -> tuple[float, float]:
    """(mean objective, mean g_b^2) over the global batch, with one collective."""
    grad_term = 0.0 if grad_b is None else grad_b.double().square().sum().item()
    value_sum, grad_sum, count = global_sums(values.double().sum().item(), grad_term, values.numel(),
                                             device=values.device)
    count = max(count, 1.0)
    return value_sum / count, grad_sum / count


def _budget_gradients(model: nn.Module, x0: torch.Tensor, a: torch.Tensor, budgets: torch.Tensor,
                      objective: Objective
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward + backward: (grad_a, grad_b (N,), objective values (N,), x_adv, logits (N, K)), detached.

    g = dJ/dx' at the clipped image x'. grad_a = b * g passes straight through the [0, 1] clip (as
    PGD steps and then clips), so a coordinate clipped at 0 or 1 can still move back inside;
    grad_b = sum of g * a over the coordinates not clipped, the exact derivative.
    """
    unclipped = x0 + per_sample_view(budgets, a) * a
    x_adv = unclipped.clamp(0.0, 1.0)
    grad, values, logits = input_gradient(model, x_adv, objective)
    inside = (unclipped >= 0.0) & (unclipped <= 1.0)
    grad_b = (grad * a).masked_fill_(~inside, 0.0).flatten(1).sum(dim=1)
    return grad * per_sample_view(budgets, grad), grad_b, values, x_adv, logits


def _compose(x0: torch.Tensor, a: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    return (x0 + per_sample_view(budgets, a) * a).clamp(0.0, 1.0)


def _direction_step(a: torch.Tensor, a_prev: torch.Tensor, grad_a: torch.Tensor, step: float,
                    momentum: float, norm: str) -> torch.Tensor:
    moved = a + step * ascent_direction(grad_a, norm)
    if momentum:
        moved = moved + momentum * (a - a_prev)
    if norm == "Linf":
        return moved.clamp_(-1.0, 1.0)
    return project_to_ball(moved, torch.zeros_like(moved), 1.0, "L2")


def _budget_step(budgets: torch.Tensor, grad_b: torch.Tensor, eta: float, delta: float,
                 grad_square_mean: float, cap: float | None = None) -> torch.Tensor:
    """b <- rescale(max(0, b + eta g_b^(q-1) (mean g_b^q)^(1/q-1))) for q = 2: eta g_b / sqrt(mean g_b^2)."""
    if grad_square_mean > 0.0:
        budgets = budgets + (eta / math.sqrt(grad_square_mean)) * grad_b
    return rescale_budgets(budgets, delta, cap)


def _initial_direction(x0: torch.Tensor, delta: float, norm: str, std: float,
                       generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    a = noise.mul_(std / delta)
    if norm == "Linf":
        return a.clamp_(-1.0, 1.0)
    return project_to_ball(a, torch.zeros_like(a), 1.0, "L2")
