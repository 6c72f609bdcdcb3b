"""W-PGD-knapsack: a W_2 training adversary that spends its budget the way the exact worst case does.

Setting. One (global) training batch of N images x_i with labels y_i (the clean predictions when no labels
are given), the W_2 ball of radius delta with ground norm ||.||_r (r = inf: 'Linf', r = 2: 'L2') and +inf
across labels: an attack chooses per-sample perturbations with sqrt(mean_i ||x'_i - x_i||_r^2) <= delta.
The objective to maximise is per sample, e.g. TRADES's J_i = KL(f(x_i) || f(x'_i)).

Derivation. For the 0-1 loss the worst case over that ball is a fractional knapsack over the minimal
adversarial distances d_i (``attacks/knapsack.py``): in order of d_i ascending, move points wholly onto their
nearest misclassified point while (1/N) sum d_i^2 <= delta^2, the last one fractionally. In training:

1. d_i is ESTIMATED from two passes the attack makes anyway. Pass 1 (forward + backward at x_i): the
   margin m_i = max(0, z_y - max_{k != y} z_k) (0: misclassified, no budget needed) and g_i = grad_x m_i
   give the first-order (DeepFool) estimate  dhat_i = m_i / ||g_i||_s  (s = 1 for l_inf, 2 for l_2).
   Pass 2 is a probe along the steepest descent of the margin, x^p_i = clip_[0,1](x_i - t_i u_i), u_i =
   sign(g_i) (l_inf) or g_i / ||g_i||_2 (l_2), t_i = min(factor * dhat_i, t_max), t_max = min(cap, twice
   the largest radius the same allocation gives on dhat); its logits give the margin m^p_i at the
   travelled distance tau_i = ||x^p_i - x_i||_r and the secant along the probe line
   dtil_i = tau_i m_i / (m_i - m^p_i) (+inf if the margin did not fall), which sees the [0, 1] clip and the
   curvature along the line: an interpolation where the probe flipped (then d_i <= tau_i is verified), an
   extrapolation elsewhere. Against verified minimal distances (benchmarks/RESULTS.md, median ratios) dhat
   is biased either way: 0.74 on a plain CNN, 1.02 on the bundled CIFAR-10 model, 2.5 on the bundled MNIST
   one; dtil gives 1.07, 1.09 and 1.7 (3.9 where the cap stops the MNIST probe short of every boundary:
   those images cannot flip inside the cap anyway).
2. A batch image cannot be split (no fractional mass) and the inner attack must land beyond the boundary:
   image i asks for  rho_i = factor * dtil_i  (``margin_factor``, default 1.25, screened on other training
   images than the benchmark's), or tau_i where the probe already flipped it closer (verified). In order of
   rho ascending each image gets min(rho_i, cap, sqrt(remaining budget)) until N delta^2 is spent: the
   images given rho_i wholly are the knapsack's flips (as many as the budget allows); the next one gets the
   remainder. Why the remainder goes to the nearest image rather than spread thin: below the boundary
   J_i(r) ~ c (r / d_i)^2, so budget r^2 buys c / d_i^2 of J, most for the nearest image; the same order
   serves flips and J. Images with rho_i > cap cannot flip inside the cap: once the flips are paid, the budget
   left goes to them at the cap (the pointwise threat) in order of J measured at the probe, highest first
   (the flips cannot change any more, so J decides). The images left get radius 0 (clean CE only, as in the
   worst case, which does not move them). If every image is served, all radii grow together to RMS delta.
3. Inside these radii the pointwise attack maximises J: K - 1 ascent steps of 2.5 r_i / (K - 1) (sign for
   l_inf, normalised for l_2) from the probe projected into its ball, keeping per sample the iterate with
   the largest J_i (a per-sample choice is feasible: every iterate lies in its own ball).

Exact: the allocation given rho (the most flips that fit, = brute force over subsets); sqrt(mean r^2) <=
delta, r_i <= cap, x' in its ball and [0, 1]. Under torchrun the rho of all ranks are gathered and every
rank computes the same allocation of the global batch. Estimated: dtil, so an image may not flip inside
its radius (budget wasted) or would have flipped with less; the J maximisation is PGD. Cost: ``steps``
forward + backward passes and one forward (the last iterate's J), as W-PGD-budget with ``keep_best``.

Shapes: x (N, C, H, W) float32 in [0, 1]; labels (N,) int64; objective(logits (N, K)) -> (N,); radii (N,)
in pixel units of [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..distributed import all_gather_cat, global_max, local_sums
from ._mode import eval_mode
from .base import Attack
from .losses import AttackLoss
from .minimal_norm import _margin
from .pointwise import (Objective, ascent_direction, check_norm, default_step, input_gradient, per_sample_norm,
                        per_sample_view, project_to_ball)
from .ramp import ScalesDelta
from .wasserstein_budget import rescale_budgets

MARGIN_FACTOR = 1.25  # radius asked for = factor * estimated distance (docstring, point 2)
_PROBE_REACH = 2.0  # t_max = this times the largest first-order radius (docstring, point 1)
_DUAL = {"Linf": "L1", "L2": "L2"}


@dataclass(frozen=True)
class KnapsackAttack:
    """Outcome of :func:`w_pgd_knapsack_details` (this rank's rows): ``x_adv`` (N, C, H, W); ``radii`` (N,)
    allocated; ``estimate`` (N,) dtil (dhat without the probe); ``first_order`` (N,) dhat; ``required`` (N,)
    rho; ``values`` (N,) the objective at x_adv. Distances in float64, inf where no estimate exists."""

    x_adv: torch.Tensor
    radii: torch.Tensor
    estimate: torch.Tensor
    first_order: torch.Tensor
    required: torch.Tensor
    values: torch.Tensor


def w_pgd_knapsack(model: nn.Module, x: torch.Tensor, objective: Objective, *, delta: float,
                   norm: str = "Linf", steps: int = 10, budget_cap: float | None = None,
                   labels: torch.Tensor | None = None, margin_factor: float = MARGIN_FACTOR,
                   probe: bool = True) -> torch.Tensor:
    """The knapsack inner maximiser (module docstring); returns x_adv (N, C, H, W) in [0, 1], detached.

    ``delta``: W_2 radius over the global batch (all ranks under torch.distributed); ``budget_cap`` (>= delta):
    no radius above it; ``labels``: for the margins (None: the clean predictions); ``probe=False``: allocate
    from dhat alone. Under DistributedDataParallel pass the wrapped module (``ddp.module``).
    """
    return w_pgd_knapsack_details(model, x, objective, delta=delta, norm=norm, steps=steps, budget_cap=budget_cap,
                                  labels=labels, margin_factor=margin_factor, probe=probe).x_adv


def w_pgd_knapsack_details(model: nn.Module, x: torch.Tensor, objective: Objective, *, delta: float,
                           norm: str = "Linf", steps: int = 10, budget_cap: float | None = None,
                           labels: torch.Tensor | None = None, margin_factor: float = MARGIN_FACTOR,
                           probe: bool = True) -> KnapsackAttack:
    """:func:`w_pgd_knapsack` with its radii and distance estimates (for tests and benchmarks)."""
    norm = check_norm(norm)
    _check(delta, steps, budget_cap, margin_factor)
    x0 = x.detach()
    if delta == 0 or steps == 0:
        zeros = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
        with torch.no_grad(), eval_mode(model):
            return KnapsackAttack(x0.clone(), zeros, zeros, zeros, zeros, objective(model(x0)).detach())
    with eval_mode(model):
        m0, g0, logits0 = _margin_and_gradient(model, x0, labels)
        labels = logits0.argmax(1) if labels is None else labels
        best = _PerSampleBest(x0, objective(logits0).detach())
        first = _first_order_distance(m0, g0, norm)
        direction = -ascent_direction(g0, norm)
        required = margin_factor * first
        radii = global_knapsack_radii(required, delta, budget_cap)
        estimate, grad = first, None
        if probe and steps >= 2:
            t_max = _PROBE_REACH * global_max(float(radii.max()) if radii.numel() else 0.0, device=x0.device)
            t = required.clamp(max=min(t_max, math.inf if budget_cap is None else budget_cap))
            x_probe, tau, estimate, grad, values = _probe(model, x0, direction, t, m0, labels, objective, norm)
            required = torch.where(estimate <= tau, torch.minimum(margin_factor * estimate, tau),
                                   margin_factor * estimate)
            radii = global_knapsack_radii(required, delta, budget_cap, priority=values)
            best.offer(x_probe, values, tau <= radii * (1 + 1e-6))
            x_adv = project_to_ball(x_probe, x0, radii, norm).clamp(0.0, 1.0)
        else:
            x_adv = (x0 + per_sample_view(radii.to(x0.dtype), x0) * direction).clamp(0.0, 1.0)
        _pgd_in_radii(model, x0, x_adv, grad, radii, objective, steps - 1, norm, best)
    return KnapsackAttack(best.x, radii, estimate, first, required, best.values)


@dataclass(frozen=True)
class WPGDKnapsack(ScalesDelta, Attack):
    """:func:`w_pgd_knapsack` as an attack (the margins are taken to the labels ``y``). Deterministic: no random
    start, so ``generator`` is unused."""

    delta: float
    norm: str = "Linf"
    steps: int = 10
    budget_cap: float | None = None
    margin_factor: float = MARGIN_FACTOR

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss,
                generator: torch.Generator | None) -> torch.Tensor:
        return w_pgd_knapsack(model, x, lambda logits: loss(logits, y), delta=self.delta, norm=self.norm,
                              steps=self.steps, budget_cap=self.budget_cap, labels=y,
                              margin_factor=self.margin_factor)


def knapsack_radii(required: torch.Tensor, delta: float, cap: float | None = None,
                   priority: torch.Tensor | None = None) -> torch.Tensor:
    """Radii (N,) float64 for the required radii ``rho`` (N,) of ONE whole batch (gather ranks first).

    Order: the images with rho_i <= cap by rho ascending, then the others by ``priority`` descending (e.g.
    the objective measured at the probe; default: rho ascending). In that order each image gets
    min(rho_i, cap, sqrt(what remains of the budget N delta^2)) until the budget is spent; the rest get 0.
    The images given rho_i <= cap wholly are the knapsack's flips: the most images whose rho fit. If every
    image is served, the radii are scaled up together to RMS delta under the cap.
    """
    rho = required.double()
    n = rho.numel()
    radii = torch.zeros_like(rho)
    if n == 0 or delta == 0:
        return radii
    limit = math.inf if cap is None else cap
    flippable = rho <= limit
    order = torch.argsort(rho, stable=True)
    tail = order[~flippable[order]]
    if priority is not None:
        tail = tail[torch.argsort(-priority.double()[tail], stable=True)]
    order = torch.cat([order[flippable[order]], tail])
    wanted = rho[order].clamp(max=limit)
    cost = torch.cumsum(wanted.square(), 0)
    budget = n * delta * delta
    whole = int((cost <= budget * (1 + 1e-12)).sum())  # cost is non-decreasing: a prefix
    radii[order[:whole]] = wanted[:whole]
    if whole == n:
        return rescale_budgets(radii, delta, cap, sums=local_sums) if radii.sum() > 0 else radii
    spent = float(cost[whole - 1]) if whole else 0.0
    radii[order[whole]] = math.sqrt(max(budget - spent, 0.0))
    return radii


def global_knapsack_radii(required: torch.Tensor, delta: float, cap: float | None = None,
                          priority: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`knapsack_radii` over the global batch (rho, priority gathered from every rank); this rank's rows."""
    everything, offset = all_gather_cat(required.double())
    if priority is not None:
        priority = all_gather_cat(priority.double())[0]
    return knapsack_radii(everything, delta, cap, priority)[offset:offset + required.numel()].to(required.device)


# ----------------------------------------------------------------------------- internals


def _check(delta: float, steps: int, cap: float | None, factor: float) -> None:
    if not 0 <= delta < math.inf:
        raise ValueError(f"delta must be finite and >= 0, got {delta}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if cap is not None and not cap >= delta:
        raise ValueError(f"budget_cap {cap} < delta {delta}")
    if not 1.0 <= factor < math.inf:
        raise ValueError(f"margin_factor must be finite and >= 1, got {factor}")


def _margin_and_gradient(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean margin (N,) float64 to ``labels`` (None: the predicted class), 0 where misclassified; its input
    gradient (N, C, H, W); the clean logits (N, K)."""
    def margin(z: torch.Tensor) -> torch.Tensor:
        return _margin(z, z.detach().argmax(1) if labels is None else labels)

    grad, m, logits = input_gradient(model, x0, margin)
    return m.double().clamp_min(0.0), grad, logits


def _first_order_distance(margin: torch.Tensor, grad: torch.Tensor, norm: str) -> torch.Tensor:
    """dhat = m / ||g||_s (N,) float64; inf where the gradient vanishes and m > 0."""
    dual = per_sample_norm(grad, _DUAL[norm]).double()
    return torch.where(dual > 0, margin / dual.clamp_min(1e-300), torch.where(margin > 0, math.inf, 0.0))


def _probe(model: nn.Module, x0: torch.Tensor, direction: torch.Tensor, t: torch.Tensor, m0: torch.Tensor,
           labels: torch.Tensor, objective: Objective, norm: str) -> tuple[torch.Tensor, ...]:
    """Pass 2 (one forward + backward): x^p = clip(x0 + t u), the travelled tau (N,), the secant estimate dtil (N,),
    and the objective's gradient (N, C, H, W) and values (N,) at x^p."""
    x_probe = (x0 + per_sample_view(t.to(x0.dtype), x0) * direction).clamp(0.0, 1.0)
    grad, values, logits = input_gradient(model, x_probe, objective)
    tau = per_sample_norm(x_probe - x0, norm).double()
    return x_probe, tau, _secant_distance(m0, _margin(logits, labels).double(), tau), grad, values


def _secant_distance(m0: torch.Tensor, m_probe: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """tau m0 / (m0 - m_probe) (N,) where the margin fell along the probe, else inf; 0 where m0 = 0."""
    drop = m0 - m_probe
    estimate = torch.where(drop > 0, tau * m0 / drop.clamp_min(1e-300), torch.full_like(m0, math.inf))
    return torch.where(m0 > 0, estimate, torch.zeros_like(m0))


def _pgd_in_radii(model: nn.Module, x0: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor | None,
                  radii: torch.Tensor, objective: Objective, steps: int, norm: str, best: "_PerSampleBest") -> None:
    """``steps`` ascent steps of 2.5 r_i / steps on the objective inside the per-sample balls, each iterate
    offered to ``best``; ``grad``: the gradient for the first step (the probe's), else computed at ``x_adv``."""
    r = radii.to(x0.dtype)
    step = per_sample_view(default_step(r, steps), x0)
    for k in range(steps):
        if grad is None or k > 0:
            grad, values, _ = input_gradient(model, x_adv, objective)
            best.offer(x_adv, values)
        x_adv = project_to_ball(x_adv + step * ascent_direction(grad, norm), x0, r, norm).clamp(0.0, 1.0)
    with torch.no_grad():
        best.offer(x_adv, objective(model(x_adv)).detach())


class _PerSampleBest:
    """Per sample, the iterate with the largest objective so far (the first one on ties)."""

    def __init__(self, x0: torch.Tensor, values: torch.Tensor):
        self.x, self.values = x0.clone(), values.clone()

    def offer(self, x_adv: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor | None = None) -> None:
        better = values > self.values
        if allowed is not None:
            better &= allowed
        self.x[better] = x_adv[better].to(self.x.dtype)
        self.values = torch.where(better, values, self.values)
