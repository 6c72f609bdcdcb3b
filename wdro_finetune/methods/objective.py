"""A training objective = base loss + inner maximiser + re-weighting (+ regulariser).

    loss = t * mean CE(f(x), y) + (1 - t) * aggregate(per_sample - cost(x' - x))  [+ regulariser]

with ``aggregate`` the batch mean (``--reweight none``) or an ARMOR_D aggregator, and ``cost`` the
optional transport cost of the soft-ball maximiser (constant in the weights, so it only changes
which samples the aggregator weights up). Each part is a
small object with one job; :func:`method_label` names the composition for records, e.g.
``wdro-trades+armor-kl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..attacks.base import Attack
from ..attacks.transport import TransportCost
from ..models.features import FeatureHook
from ..distributed import unwrap
from .base import LossOutput
from .reweight import Aggregator, MeanAggregator, mix_with_clean


class BaseLoss(Protocol):
    """A base loss; ``maximizer`` is its inner attack, None for a base that makes its own examples (UDR)."""

    name: str
    maximizer: Attack | None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> LossOutput: ...


class Regularizer(Protocol):
    """Adds a term computed from the base method's outputs (no extra forward pass)."""

    label: str

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: LossOutput,
                 captured: list[torch.Tensor], index: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class StepResult:
    loss: torch.Tensor
    out: LossOutput
    stats: dict[str, float]


class TrainingObjective(nn.Module):
    """Composes the parts; an ``nn.Module`` so learned re-weighting scalars are in its state_dict."""

    def __init__(self, base: BaseLoss, threat: str, aggregator: Aggregator | None = None, reweight: str = "none",
                 mix_t: float = 0.0, regularizer: Regularizer | None = None, cost: TransportCost | None = None,
                 inner: str = "budget"):
        super().__init__()
        self.base, self.threat, self.mix_t, self.regularizer, self.cost = base, threat, mix_t, regularizer, cost
        self.inner = inner  # the W_2 inner maximiser's name (budget: W-PGD-budget), for the label
        # an nn.Module base (UDR) becomes a submodule: its buffers are saved in checkpoints
        self.aggregator, self.reweight = aggregator or MeanAggregator(), reweight

    @property
    def label(self) -> str:
        return method_label(self.base.name, self.threat, self.reweight,
                            self.regularizer.label if self.regularizer else None, self.inner)

    def set_step(self, step: int) -> None:
        """Tell step-dependent parts (an eps warm-up of the inner maximiser) the training step about to run."""
        if self.base.maximizer is not None:
            self.base.maximizer.set_step(step)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None, index: torch.Tensor | None = None) -> StepResult:
        """One step's loss for the batch x (B, C, H, W), y (B,); ``index`` (B,): the batch's rows in the
        training set (for parts with per-image data: invariance positives, stored sensitivity examples)."""
        if self.base.maximizer is not None:
            self.base.maximizer.select(index)
        captured: list[torch.Tensor] = []
        if self.regularizer is not None:
            with FeatureHook(unwrap(model), training_only=True) as hook:
                out = self.base(model, x, y, generator)
            captured = hook.pop()
        else:
            out = self.base(model, x, y, generator)
        per_sample = out.per_sample
        stats = dict(out.stats, loss_mean=per_sample.mean().item())
        if self.cost is not None:
            transport = self.cost(out.x_adv - x)
            per_sample = per_sample - transport
            stats["transport_cost"] = transport.mean().item()
        agg = self.aggregator(per_sample)
        loss = mix_with_clean(agg, out.clean_ce.mean(), self.mix_t) if self.mix_t else agg
        if self.regularizer is not None:
            reg, reg_stats = self.regularizer(model, x, y, out, captured, index)
            loss = loss + reg
            stats.update(reg_stats)
        return StepResult(loss, out, stats)


def method_label(base: str, threat: str, reweight: str | None = None, regularizer: str | None = None,
                 inner: str = "budget") -> str:
    """``[wdro-[<inner>-]]<base>[+<reweight>][+<regularizer>]``, e.g. ``wdro-trades+armor-kl+triplet-sa``
    (W-PGD-budget) or ``wdro-knapsack-trades`` (another W_2 inner maximiser)."""
    label = ("wdro-" + ("" if inner == "budget" else inner + "-") if threat == "w2" else "") + base
    for part in (reweight, regularizer):
        if part and part != "none":
            label += "+" + part
    return label
