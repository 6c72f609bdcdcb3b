"""W-PGD-budget (Bai, He, Jiang & Obloj) as an :class:`~.base.Attack`: the training inner maximiser over the
W_2 ball of radius ``delta`` around one (global) batch (:func:`~.wasserstein.w_pgd_budget`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Attack
from .losses import AttackLoss
from .ramp import ScalesDelta
from .wasserstein_budget import w_pgd_budget


@dataclass(frozen=True)
class WPGDBudget(ScalesDelta, Attack):
    """Per-sample budgets b_i with sqrt(mean b_i^2) <= delta over the global batch (pixel units of [0, 1],
    ground norm ``norm``), each <= ``budget_cap`` (None: only the [0, 1] box); ``stop_flipped``: budgets of
    images whose prediction flipped stop growing. ``steps`` forward + backward passes (+ one forward)."""

    delta: float
    norm: str = "Linf"
    steps: int = 10
    step_size_dir: float = 0.3
    momentum: float = 0.0
    budget_cap: float | None = None
    stop_flipped: bool = False

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss,
                generator: torch.Generator | None) -> torch.Tensor:
        return w_pgd_budget(model, x, lambda logits: loss(logits, y), delta=self.delta, norm=self.norm,
                            steps=self.steps, step_size_dir=self.step_size_dir, momentum=self.momentum,
                            budget_cap=self.budget_cap, stop_flipped=self.stop_flipped, generator=generator)
