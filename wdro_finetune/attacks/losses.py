"""Per-sample attack losses: ``loss(logits, y) -> (N,)``, larger means more adversarial.

Shapes: ``logits`` (N, K) float (raw scores, not softmax), ``y`` (N,) int64 class indices.

- ``cross_entropy``: -log softmax(z)_y.
- ``dlr``: Croce & Hein (2020) Difference of Logits Ratio, as in AutoAttack,
  -(z_y - max_{k != y} z_k) / (z_(1) - z_(3) + 1e-12) with z_(1) >= z_(2) >= ... sorted; needs K >= 3.
- ``redlr``: Bai, He, Jiang & Obloj (2023) rectified DLR: -(z_y - z_(2)) / (z_(1) - z_(3) + 1e-12)
  when argmax z = y, else 0, so an attack spends no effort on points already misclassified.
- ``kl_divergence``: KL(softmax(clean) || softmax(adv)) per sample (the TRADES inner objective).
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

AttackLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossSpec = Union[str, AttackLoss]

_DLR_EPS = 1e-12


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy: logits (N, K), y (N,) -> (N,)."""
    return F.cross_entropy(logits, y, reduction="none")


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample DLR loss (Croce & Hein 2020): logits (N, K >= 3), y (N,) -> (N,) in [-1, inf)."""
    top, z_y = _top3_and_true(logits, y)
    best_other = torch.where(top[:, 0] == z_y, top[:, 1], top[:, 0])
    return -(z_y - best_other) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def redlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ReDLR loss: logits (N, K >= 3), y (N,) -> (N,) in [-1, 0]; 0 where argmax != y."""
    top, z_y = _top3_and_true(logits, y)
    value = -(z_y - top[:, 1]) / (top[:, 0] - top[:, 2] + _DLR_EPS)
    correct = logits.argmax(dim=1) == y
    return torch.where(correct, value, torch.zeros_like(value))


def kl_divergence(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits_clean) || softmax(logits_adv)) per sample: (N, K), (N, K) -> (N,) >= 0."""
    log_p = F.log_softmax(logits_clean, dim=1)
    log_q = F.log_softmax(logits_adv, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


_LOSSES: dict[str, AttackLoss] = {"ce": cross_entropy, "dlr": dlr, "redlr": redlr}
LOSS_NAMES = tuple(_LOSSES)  # the names ``get_attack_loss`` knows


def get_attack_loss(name: LossSpec) -> AttackLoss:
    """Return the loss called ``name`` ('ce' | 'dlr' | 'redlr'); a callable is returned unchanged."""
    if callable(name):
        return name
    try:
        return _LOSSES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown attack loss {name!r}; expected one of {sorted(_LOSSES)}") from None


def _top3_and_true(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Three largest logits, descending (N, 3), and the true-class logit (N,)."""
    if logits.shape[1] < 3:
        raise ValueError(f"DLR-type losses need at least 3 classes, got {logits.shape[1]}")
    top = logits.topk(3, dim=1).values
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    return top, z_y
