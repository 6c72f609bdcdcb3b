"""The eps warm-up of training: :class:`RadiusRamp` runs an attack at a growing fraction of its radius.

An attack that can be ramped has ``scaled(factor)``: a copy whose radius (and explicit step sizes, per-image
caps) are ``factor`` times its own; the mixins :class:`ScalesEps` (eps-balls) and :class:`ScalesDelta` (W_2
balls) give it to frozen dataclass attacks; the configured pointwise attacks (:mod:`.pointwise`) have their own.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .base import Attack
from .losses import AttackLoss


class ScalesEps:
    """``scaled(factor)``: a copy with ``eps`` and an explicit ``step_size`` times factor."""

    def scaled(self, factor: float):
        return replace(self, eps=self.eps * factor,
                       step_size=None if self.step_size is None else self.step_size * factor)


class ScalesDelta:
    """``scaled(factor)``: a copy with ``delta`` and the per-image ``budget_cap`` times factor."""

    def scaled(self, factor: float):
        return replace(self, delta=self.delta * factor,
                       budget_cap=None if self.budget_cap is None else self.budget_cap * factor)


class RadiusRamp(Attack):
    """Epsilon warm-up: at training step s (0-based) the wrapped attack runs with its radius and step sizes
    times min(1, (s + 1) / ramp_steps). The factor depends on the step only, so resumed runs are exact.
    Call :meth:`set_step` before each step."""

    def __init__(self, inner: Attack, ramp_steps: int):
        if ramp_steps < 1:
            raise ValueError(f"ramp_steps must be >= 1, got {ramp_steps}")
        self.inner, self.ramp_steps, self.factor = inner, int(ramp_steps), 1.0

    def set_step(self, step: int) -> None:
        self.factor = min(1.0, (step + 1) / self.ramp_steps)
        self.inner.set_step(step)

    def select(self, index: torch.Tensor | None) -> None:
        self.inner.select(index)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss,
                generator: torch.Generator | None) -> torch.Tensor:
        attack = self.inner if self.factor == 1.0 else self.inner.scaled(self.factor)
        return attack.perturb(model, x, y, loss, generator)
