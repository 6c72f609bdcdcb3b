"""Base training losses with per-sample values, so any re-weighting can consume them.

Each base: ``__call__(model, x, y, generator) -> LossOutput``; the model is in train mode on
entry (the inner maximiser switches to eval mode for the attack and back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks._mode import eval_mode
from ..attacks.losses import cross_entropy, kl_divergence
from ..train.distributed import unwrap
from .maximizers import PointwiseMaximizer, WassersteinMaximizer

Maximizer = PointwiseMaximizer | WassersteinMaximizer


@dataclass
class LossOutput:
    """per_sample: (N,) losses to aggregate; clean_ce: (N,) CE on clean inputs (for ARMOR's mix);
    logits_clean / logits_adv: (N, K) from the training-mode forwards; x_adv: (N, C, H, W)."""

    per_sample: torch.Tensor
    clean_ce: torch.Tensor
    logits_clean: torch.Tensor
    logits_adv: torch.Tensor
    x_adv: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


class Trades:
    """TRADES (Zhang et al. 2019): L_i = CE(f(x_i), y_i) + beta * KL(f(x_i) || f(x'_i)), with x'
    maximising the KL (pointwise PGD, or W-PGD-budget for W-DRO TRADES)."""

    name = "trades"

    def __init__(self, maximizer: Maximizer, beta: float = 6.0):
        self.maximizer, self.beta = maximizer, beta

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> LossOutput:
        plain = unwrap(model)  # attacks never go through the DDP wrapper
        with torch.no_grad(), eval_mode(plain):
            target = plain(x)
        x_adv = self.maximizer(plain, x, lambda logits: kl_divergence(target, logits), generator)
        logits_clean, logits_adv = model(x), model(x_adv)
        ce = F.cross_entropy(logits_clean, y, reduction="none")
        kl = kl_divergence(logits_clean, logits_adv)
        return LossOutput(ce + self.beta * kl, ce, logits_clean, logits_adv, x_adv,
                          {"ce": ce.mean().item(), "kl": kl.mean().item()})


class AdversarialCE:
    """PGD-AT (Madry et al. 2018) / FGSM-AT with random start (Wong et al. 2020):
    L_i = CE(f(x'_i), y_i), x' maximising CE. The clean forward is only used for statistics."""

    def __init__(self, maximizer: Maximizer, name: str = "pgd-at"):
        self.maximizer, self.name = maximizer, name

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> LossOutput:
        x_adv = self.maximizer(unwrap(model), x, lambda logits: cross_entropy(logits, y), generator)
        logits_clean, logits_adv = model(x), model(x_adv)
        ce_clean = F.cross_entropy(logits_clean, y, reduction="none")
        ce_adv = F.cross_entropy(logits_adv, y, reduction="none")
        return LossOutput(ce_adv, ce_clean, logits_clean, logits_adv, x_adv, {"ce_adv": ce_adv.mean().item()})
