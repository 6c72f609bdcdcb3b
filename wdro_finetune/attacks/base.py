"""The one attack contract (torchattacks style), used by training, evaluation, the hold-out check and the
embedding plots alike::

    x_adv = attack(model, x, y)                      # x: (N, C, H, W) float in [0, 1], y: (N,) int64
    x_adv = attack(model, x, y, loss=my_loss)        # maximise my_loss(logits_adv, y) -> (N,) instead

The model runs in eval mode with its parameters frozen for the duration (each module's mode and each
parameter's ``requires_grad`` restored afterwards: :meth:`Attack.__call__` is the only place that does it);
``x_adv`` is detached, in [0, 1], on x's device. A subclass implements :meth:`perturb` only and carries a
docstring with the paper, the norm and the budget units (pixel units of [0, 1]).
"""

from __future__ import annotations

import torch
from torch import nn

from ._mode import eval_mode, frozen_parameters
from .losses import AttackLoss, cross_entropy  # AttackLoss: logits (N, K), labels (N,) -> (N,) to maximise


class Attack:
    """Base class: ``loss`` (default cross-entropy) is the attack's own objective."""

    loss: AttackLoss = staticmethod(cross_entropy)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: AttackLoss | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        with eval_mode(model), frozen_parameters(model):
            x_adv = self.perturb(model, x, y, loss or self.loss, generator)
        return x_adv.detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss,
                generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def set_step(self, step: int) -> None:
        """As an inner maximiser: the training step about to run (used by step-dependent attacks, e.g. an eps
        warm-up; others ignore it)."""

    def select(self, index: torch.Tensor | None) -> None:
        """As an inner maximiser: the next batch's rows (B,) in the training set (used by attacks with per-image
        data, e.g. stored examples; others ignore it)."""
