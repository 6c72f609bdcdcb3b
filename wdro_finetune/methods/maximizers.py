"""Inner maximisers: where a base method's adversarial examples come from.

- :class:`PointwiseMaximizer`: PGD over the eps-ball of each sample (l_inf or l_2).
- :class:`WassersteinMaximizer`: W-PGD-budget over a W_2 ball of radius delta around the batch:
  per-sample budgets b_i with sqrt(mean b_i^2) <= delta over the (global) batch.
- :class:`KnapsackMaximizer`: W-PGD-knapsack over the same ball: per-sample radii from estimated distances
  to the boundary, allocated like the exact W_2 worst case (``attacks/knapsack_inner.py``).
- :class:`SoftBallMaximizer`: no hard ball; the attacker pays a transport cost w ||x' - x||_p^q.
- :class:`NoiseFgsmMaximizer`: N-FGSM, one step from wide noise without projection (single-step training).
- :class:`RadiusRamp`: wraps one of them; its radius grows linearly over the first training steps.

All: ``__call__(model, x, objective, generator, labels) -> x_adv`` with x (N, C, H, W) in [0, 1],
``objective(logits_adv) -> (N,)`` to maximise, ``labels`` (N,) the batch's labels (None: unknown; only the
knapsack maximiser uses them). The model runs in eval mode inside.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from ..attacks.knapsack_inner import MARGIN_FACTOR, w_pgd_knapsack
from ..attacks.pointwise import noise_fgsm_maximize, pgd_maximize
from ..attacks.transport import TransportCost, soft_ball_maximize
from ..attacks.wasserstein_budget import w_pgd_budget

Objective = Callable[[torch.Tensor], torch.Tensor]


class _ScalesEps:
    """``scaled(factor)``: a copy with ``eps`` and an explicit ``step_size`` times factor (the eps warm-up)."""

    def scaled(self, factor: float):
        return replace(self, eps=self.eps * factor,
                       step_size=None if self.step_size is None else self.step_size * factor)


class _ScalesDelta:
    """``scaled(factor)``: a copy with ``delta`` and the per-image ``budget_cap`` times factor (the warm-up)."""

    def scaled(self, factor: float):
        return replace(self, delta=self.delta * factor,
                       budget_cap=None if self.budget_cap is None else self.budget_cap * factor)


@dataclass(frozen=True)
class PointwiseMaximizer(_ScalesEps):
    """K-step PGD in the eps-ball; ``start`` 'normal' (TRADES: x + 0.001 N(0,1)) or 'uniform'."""

    eps: float
    norm: str = "Linf"
    steps: int = 10
    step_size: float | None = None  # default 2.5 * eps / steps
    start: str = "normal"
    threat: str = "pointwise"

    def __call__(self, model: nn.Module, x: torch.Tensor, objective: Objective,
                 generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        step = self.step_size if self.step_size is not None else 2.5 * self.eps / max(1, self.steps)
        return pgd_maximize(model, x, objective, eps=self.eps, norm=self.norm, steps=self.steps, step_size=step,
                            start=self.start, generator=generator)


@dataclass(frozen=True)
class NoiseFgsmMaximizer(_ScalesEps):
    """N-FGSM: uniform noise in the (noise_scale * eps)-ball, one step of ``step_size`` (default eps), no
    projection to the eps-ball."""

    eps: float
    norm: str = "Linf"
    noise_scale: float = 2.0
    step_size: float | None = None
    threat: str = "pointwise"

    def __call__(self, model: nn.Module, x: torch.Tensor, objective: Objective,
                 generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        return noise_fgsm_maximize(model, x, objective, eps=self.eps, norm=self.norm, noise_scale=self.noise_scale,
                                   step_size=self.step_size, generator=generator)


@dataclass(frozen=True)
class WassersteinMaximizer(_ScalesDelta):
    """W-PGD-budget (training) over the W_2 ball of radius ``delta`` (same pixel units as eps)."""

    delta: float
    norm: str = "Linf"
    steps: int = 10
    step_size_dir: float = 0.3
    momentum: float = 0.0
    budget_cap: float | None = None
    stop_flipped: bool = False
    threat: str = "w2"

    def __call__(self, model: nn.Module, x: torch.Tensor, objective: Objective,
                 generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        return w_pgd_budget(model, x, objective, delta=self.delta, norm=self.norm, steps=self.steps,
                            step_size_dir=self.step_size_dir, momentum=self.momentum,
                            budget_cap=self.budget_cap, stop_flipped=self.stop_flipped, generator=generator)


@dataclass(frozen=True)
class KnapsackMaximizer(_ScalesDelta):
    """W-PGD-knapsack (training) over the W_2 ball of radius ``delta``: radii by the knapsack rule on estimated
    distances to the boundary (margins to ``labels``), then K-step PGD inside them. Deterministic: no random
    start, so ``generator`` is unused."""

    delta: float
    norm: str = "Linf"
    steps: int = 10
    budget_cap: float | None = None
    margin_factor: float = MARGIN_FACTOR
    threat: str = "w2"

    def __call__(self, model: nn.Module, x: torch.Tensor, objective: Objective,
                 generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        return w_pgd_knapsack(model, x, objective, delta=self.delta, norm=self.norm, steps=self.steps,
                              budget_cap=self.budget_cap, labels=labels, margin_factor=self.margin_factor)


@dataclass(frozen=True)
class SoftBallMaximizer(_ScalesEps):
    """K signed-gradient steps on objective - cost(x' - x), only box-clipped; the step size
    defaults to 2.5 * eps / steps, so eps sets the scale of the moves, not a limit."""

    eps: float
    cost: TransportCost
    norm: str = "Linf"
    steps: int = 10
    step_size: float | None = None
    threat: str = "pointwise"

    def __call__(self, model: nn.Module, x: torch.Tensor, objective: Objective,
                 generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        step = self.step_size if self.step_size is not None else 2.5 * self.eps / max(1, self.steps)
        return soft_ball_maximize(model, x, objective, self.cost, norm=self.norm, steps=self.steps, step_size=step,
                                  generator=generator)


class RadiusRamp:
    """Epsilon warm-up: at training step s (0-based) the wrapped maximiser runs with its radius and step sizes
    times min(1, (s + 1) / ramp_steps). The factor depends on the step only, so resumed runs are exact.
    Call :meth:`set_step` before each step."""

    def __init__(self, inner, ramp_steps: int):
        if ramp_steps < 1:
            raise ValueError(f"ramp_steps must be >= 1, got {ramp_steps}")
        self.inner, self.ramp_steps, self.factor = inner, int(ramp_steps), 1.0

    def set_step(self, step: int) -> None:
        self.factor = min(1.0, (step + 1) / self.ramp_steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, objective: Objective,
                 generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        attack = self.inner if self.factor == 1.0 else self.inner.scaled(self.factor)
        return attack(model, x, objective, generator, labels)
