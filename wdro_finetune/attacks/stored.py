"""Stored examples as an inner maximiser: the rows of a fixed table for the batch's training images, instead of
an attack run at every step (the static sensitivity examples of Ovalle et al.'s Table 1, made once by
:mod:`wdro_finetune.train.sensitivity_store`)."""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack
from .losses import AttackLoss

_SLACK = 1e-5  # relative tolerance of the ball check (float rounding of x + eps)


class StoredExamples(Attack):
    """x_adv = table[index], ``index`` (B,) the batch's rows in the training set, given by :meth:`select` before
    each call. ``table``: (N_train, C, H, W) in [0, 1] on the CPU, row i within ``eps`` (``norm`` 'Linf' | 'L2',
    pixel units of [0, 1]) of training image i. The model, the loss and the generator are not used: the examples
    do not follow the weights. A row outside the ball around its batch image is an error (a table that is not the
    batch's, e.g. an augmented batch)."""

    def __init__(self, table: torch.Tensor, eps: float, norm: str = "Linf"):
        self.table, self.eps, self.norm = table, float(eps), norm
        self.index: torch.Tensor | None = None

    def select(self, index: torch.Tensor | None) -> None:
        """The training-set rows (B,) of the next batch."""
        self.index = index

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss,
                generator: torch.Generator | None) -> torch.Tensor:
        if self.index is None:
            raise RuntimeError("stored examples need the training indices of the batch (select(index))")
        rows = self.table[self.index.cpu()].to(device=x.device, dtype=x.dtype)
        if rows.shape != x.shape:
            raise RuntimeError(f"stored examples {tuple(rows.shape)} do not match the batch {tuple(x.shape)}")
        delta = (rows - x).flatten(1)
        size = delta.abs().amax(1) if self.norm == "Linf" else delta.norm(dim=1)
        if bool((size > self.eps * (1 + _SLACK) + 1e-6).any()):
            raise RuntimeError(f"stored examples lie outside the {self.norm} ball of radius {self.eps:g} around "
                               f"the batch images: they are not this batch's")
        return rows
