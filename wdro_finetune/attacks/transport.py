"""Transport-cost (soft-ball) inner maximisation, the OT-cost variant of ARMOR_D's transport step.

Instead of a hard eps-ball, the attacker pays ``weight * ||x' - x||_p^q`` per sample and maximises
J(f(x')) - weight * ||x' - x||_p^q by signed-gradient (l_inf) or normalised-gradient (l_2) steps,
clipped only to the [0, 1] box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._mode import eval_mode
from .base import Attack
from .losses import AttackLoss
from .pointwise import Objective, ascent_direction, check_norm, default_step, input_gradient
from .ramp import ScalesEps


@dataclass(frozen=True)
class TransportCost:
    """c(d) = weight * ||d_i||_p^q per sample: d (N, C, H, W) -> (N,); p in {1, 2, inf}, q > 0."""

    weight: float
    p: float = 2.0
    q: float = 2.0

    def __post_init__(self) -> None:
        if self.weight < 0 or self.q <= 0 or self.p not in (1.0, 2.0, math.inf):
            raise ValueError(f"transport cost needs weight >= 0, q > 0 and p in 1, 2, inf; got {self}")

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.linalg.vector_norm(delta.flatten(1), ord=self.p, dim=1).pow(self.q)

    def gradient(self, delta: torch.Tensor) -> torch.Tensor:
        """d/d(delta) of sum_i c(delta_i), (N, C, H, W); zero where delta_i = 0."""
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self(d).sum(), d)
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def soft_ball_maximize(model: nn.Module, x: torch.Tensor, objective: Objective, cost: TransportCost, *,
                       norm: str = "Linf", steps: int = 10, step_size: float,
                       start_std: float = 0.001, generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise objective(f(x')) - cost(x' - x) per sample: x (N, C, H, W) in [0, 1] -> x' detached.

    Start x + start_std * N(0, 1) (the TRADES start); each step moves by ``step_size`` along the
    steepest-ascent unit direction (``norm``) of the penalised objective, then clips to [0, 1].
    """
    norm = check_norm(norm)
    x0 = x.detach()
    device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    x_adv = (x0 + start_std * noise).clamp(0.0, 1.0)
    with eval_mode(model):
        for _ in range(steps):
            grad, _, _ = input_gradient(model, x_adv, objective)
            grad = grad - cost.gradient(x_adv - x0)
            x_adv = (x_adv + step_size * ascent_direction(grad, norm)).clamp_(0.0, 1.0)
    return x_adv.detach()


@dataclass(frozen=True)
class SoftBallAttack(ScalesEps, Attack):
    """:func:`soft_ball_maximize` as an attack: K steps on loss - cost(x' - x), only box-clipped; the step
    defaults to :func:`~.pointwise.default_step` (eps sets the scale of the moves, not a limit)."""

    eps: float
    cost: TransportCost
    norm: str = "Linf"
    steps: int = 10
    step_size: float | None = None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss,
                generator: torch.Generator | None) -> torch.Tensor:
        step = self.step_size if self.step_size is not None else default_step(self.eps, self.steps)
        return soft_ball_maximize(model, x, lambda logits: loss(logits, y), self.cost, norm=self.norm,
                                  steps=self.steps, step_size=step, generator=generator)
